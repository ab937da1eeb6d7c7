# `citynode demo --fleet`: a city in one command, on 127.0.0.1. A 3-server NATS JetStream
# cluster (tools/natscluster.py), 3 gateways publishing into its R3 stream, the relay
# (gateway/relay.py) feeding the MQTT broker the demo's table reads, and simulated nodes
# (the real firmware) each heard by 2 or 3 gateways, as LoRa reaches several roofs: every
# transmission reaches each of them (AirLink). The relay's fleet page shows who hears whom.
import threading
from collections.abc import Sequence
from typing import Any, Self

from firmware.links import UdpLink
from tools import fleet

GATEWAYS = 3
STREAM = "CITYNODE"


class AirLink(UdpLink):
    # the firmware's UDP link, but each datagram reaches several gateways (the air); the
    # ACK of any of them counts, as on a radio channel
    def __init__(self, addresses: Sequence[tuple[str, int]]) -> None:
        super().__init__(*addresses[0])
        self.others = [a for a in addresses[1:]]

    def send(self, message: bytes) -> bool:
        ok = super().send(message)
        for host, port in self.others:
            try:
                self.sock.sendto(message, (host, port))
            except OSError:
                pass
        return ok


class AirNode(fleet.SimNode):
    def __init__(self, index: int, node: str, key: bytes, gateways: Sequence[tuple[str, int]], flash_dir: str,
                 stop: threading.Event | None = None) -> None:
        super().__init__(index, node, key, gateways[0], flash_dir, stop=stop)
        self.gateways = gateways

    def make_link(self) -> AirLink:
        return AirLink(self.gateways)


def heard_by(i: int, addresses: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    # node i: gateways i % 3 and i + 1 % 3; every third node all three
    n = len(addresses)
    return list(addresses) if i % 3 == 0 else [addresses[i % n], addresses[(i + 1) % n]]


class Fleet:
    def __init__(self, tmp: str, keys: dict[str, bytes], mqtt_url: str, web: str | None = None,
                 prefix: str = "citynode") -> None:
        self.tmp = tmp
        self.keys = keys
        self.mqtt_url = mqtt_url
        self.web = web
        self.prefix = prefix
        self.cluster = None
        self.gateways = []
        self.relay = None

    def start(self) -> Self:
        from gateway.config import parse
        from gateway.daemon import Gateway
        from gateway.files import write_private
        from gateway.keys import format_keys
        from gateway.relay import Relay
        from tools.demo import free_udp_port
        from tools.natscluster import Cluster

        keys_file = f"{self.tmp}/keys.toml"
        write_private(keys_file, format_keys(self.keys))
        self.cluster = Cluster(f"{self.tmp}/nats").start()
        nats = {"servers": self.cluster.urls, "stream": STREAM, "subject_prefix": self.prefix, "heartbeat_s": 1.0}
        for i in range(GATEWAYS):
            port = free_udp_port()
            s = parse({"gateway": {"id": f"gw-{i + 1}", "data_dir": f"{self.tmp}/gw-{i + 1}", "log_level": "warning"},
                       "nats": nats, "ingest": [{"kind": "udp", "listen": f"127.0.0.1:{port}"}],
                       "nodes": {"keys_file": keys_file}}, f"{self.tmp}/gw-{i + 1}.toml")
            self.gateways.append(Gateway(s, self.keys).start())
        s = parse({"relay": {"id": "relay", "data_dir": f"{self.tmp}/relay", "log_level": "warning"}, "nats": nats,
                   "mqtt": {"url": self.mqtt_url, "topic_prefix": self.prefix},
                   "nodes": {"keys_file": keys_file},
                   **({"web": {"listen": self.web, "stale_after_s": 30.0}} if self.web else {})},
                  f"{self.tmp}/relay.toml", role="relay")
        self.relay = Relay(s, self.keys).start()
        return self

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [gw.udp_addresses[0] for gw in self.gateways]

    def nodes(self, stop: threading.Event) -> list[AirNode]:
        addrs = [("127.0.0.1", a[1]) for a in self.addresses]
        return [AirNode(i, node, key, heard_by(i, addrs), f"{self.tmp}/nodes", stop=stop)
                for i, (node, key) in enumerate(sorted(self.keys.items()))]

    def counters(self) -> dict[str, Any]:
        rejected = {}
        for gw in self.gateways:
            for k, v in (gw.counters().get("rejected") or {}).items():
                rejected[k] = rejected.get(k, 0) + v
        return {"rejected": rejected, "relay": dict(self.relay.counters) if self.relay else {}}

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        for gw in self.gateways:
            gw.stop()
        if self.cluster is not None:
            self.cluster.stop()
