# The fleet end to end, bounded (bench/fleet_bench.py is the full run): a real 3-server
# JetStream cluster, 3 gateways as real processes, 20 nodes each heard by 2 or 3 of them,
# one kill -9 of a server and of a gateway while frames flow, and the relay feeding MQTT.
# An independent reader of the stream and an independent MQTT subscriber each see every
# frame exactly once.
import collections
import json
import pathlib
import threading
import time
import urllib.request

import pytest

from gateway import config
from gateway.files import write_private
from gateway.keys import format_keys
from gateway.relay import Relay
from tests.gateway.conftest import GatewayProcess, Subscriber, wait_for
from tests.support.broker import free_port
from tests.support.udpnode import HeardByMany, run_nodes
from tools.natscluster import Cluster, stream_frames

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NODES = {f"n{i:02d}": bytes([i + 1]) * 16 for i in range(20)}


def write(directory, text):
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / "keys.toml", format_keys(NODES))
    path = directory / "config.toml"
    write_private(path, text)
    return path


def nats_section(urls):
    servers = ", ".join(f'"{u}"' for u in urls)
    return (f'[nats]\nservers = [{servers}]\nstream = "CN"\nsubject_prefix = "cn"\nack_timeout_s = 3\n'
            'heartbeat_s = 0.5\n')


def gateway_config(directory, gw_id, urls, udp):
    return write(directory, f'[gateway]\nid = "{gw_id}"\ndata_dir = "var"\n\n{nats_section(urls)}\n'
                            f'[[ingest]]\nkind = "udp"\nlisten = "127.0.0.1:{udp}"\n\n'
                            '[nodes]\nkeys_file = "keys.toml"\n')


def relay_config(directory, urls, mqtt_url, web_port):
    return write(directory, f'[relay]\nid = "relay-1"\ndata_dir = "var"\n\n{nats_section(urls)}\n'
                            f'[mqtt]\nurl = "{mqtt_url}"\ntopic_prefix = "cn"\nreconnect_min_s = 0.1\n'
                            'reconnect_max_s = 0.5\nstate_interval_s = 1\n\n'
                            '[nodes]\nkeys_file = "keys.toml"\n\n'
                            f'[web]\nlisten = "127.0.0.1:{web_port}"\n')


def test_fleet_exactly_once_through_kill9_of_a_server_and_a_gateway(tmp_path, mosquitto):
    frames = 150  # per node: 3,000 in all
    cluster = Cluster(tmp_path / "nats").start()
    gws, ports = [], []
    relay = None
    sub = Subscriber(mosquitto.port, topic="cn/nodes/+/up")
    try:
        for i in range(3):
            ports.append(free_port(__import__("socket").SOCK_DGRAM))
            gws.append(GatewayProcess(gateway_config(tmp_path / f"gw{i}", f"gw-{i}", cluster.urls, ports[i])))
            gws[-1].start(wait_port=ports[i])
        web = free_port()
        relay = Relay(config.load(relay_config(tmp_path / "relay", cluster.urls, mosquitto.url, web),
                                  role="relay")).start()
        addr = [("127.0.0.1", p) for p in ports]
        # node i is heard by gateways i % 3 and (i + 1) % 3, every third node by all three
        nodes = [HeardByMany(n, k, addr if i % 3 == 0 else [addr[i % 3], addr[(i + 1) % 3]])
                 for i, (n, k) in enumerate(NODES.items())]
        acked = lambda: sum(len(n.acknowledged()) for n in nodes)  # noqa: E731
        faults = []

        def chaos():
            if wait_for(lambda: acked() >= 800, 60):
                cluster.kill9(1)
                faults.append(("server n2 killed", acked()))
                time.sleep(1.0)
                cluster.start_server(1)
            if wait_for(lambda: acked() >= 1800, 60):
                gws[2].kill9()
                faults.append(("gateway gw-2 killed", acked()))
                time.sleep(1.0)
                gws[2].start(wait_port=ports[2])

        t = threading.Thread(target=chaos, daemon=True)
        t.start()
        assert all(run_nodes(nodes, frames, deadline_s=70, rate=15))
        t.join(30)
        assert len(faults) == 2, faults
        want = {(n, 1, s) for n in NODES for s in range(frames)}
        # the independent MQTT subscriber: every frame once (no duplicate up message)
        assert sub.wait(lambda: len(sub.ups()) >= len(want), 60), (len(sub.ups()), relay.counters)
        time.sleep(1.0)  # a duplicate would arrive now
        got = collections.Counter((j["node"], j["boot"], j["seq"]) for j in sub.ups())
        assert set(got) == want and max(got.values()) == 1, (len(got), got.most_common(3))
        # the independent reader of the stream: every frame once
        seen = stream_frames(cluster.urls, "CN")
        assert set(seen) == want and max(seen.values()) == 1
        # the fleet page: 3 gateways alive, every node heard by the gateways it reaches
        assert wait_for(lambda: sum(g["alive"] for g in relay.fleet_status()["gateways"]) == 3, 10)
        fleet = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{web}/api/fleet", timeout=5).read())
        heard = {n["id"]: {h["gateway"] for h in n["heard_by"]} for n in fleet["nodes"]}
        assert heard["n00"] == {"gw-0", "gw-1", "gw-2"} and heard["n01"] == {"gw-1", "gw-2"}
        page = urllib.request.urlopen(f"http://127.0.0.1:{web}/fleet", timeout=5).read().decode()
        assert "gw-2" in page and "n19" in page
    finally:
        sub.close()
        if relay is not None:
            relay.stop()
        for g in gws:
            g.terminate()
        cluster.stop()
