# A live status site for the browser tests: a real gateway (with its status page on a
# free loopback port) behind a real mosquitto, fed over UDP by simulated nodes that run
# the real firmware code (tools.fleet: sim board, compressed time, storm scenario).
import secrets
import threading

from gateway.config import parse
from gateway.daemon import Gateway
from gateway.keys import format_keys
from tests.support.broker import Mosquitto, free_port
from tools import fleet

# A hostile node id: legal on the wire (printable ASCII, no space / + #), HTML if unescaped.
HOSTILE_ID = "<b>evil<i>'&amp;"


class Site:
    def __init__(self, tmp, nodes, stale_after_s=4):
        self.nodes = nodes
        self.stale_after_s = stale_after_s
        self.broker = Mosquitto(tmp / "mosquitto").start()
        keys = {n: secrets.token_bytes(16) for n in nodes}
        (tmp / "keys.toml").write_text(format_keys(keys))
        udp = free_port()
        settings = parse({
            "gateway": {"id": "gw-web-test", "data_dir": str(tmp / "var"), "log_level": "warning"},
            "mqtt": {"url": self.broker.url, "topic_prefix": "cn"},
            "ingest": [{"kind": "udp", "listen": f"127.0.0.1:{udp}"}],
            "nodes": {"keys_file": str(tmp / "keys.toml")},
            "web": {"listen": "127.0.0.1:0", "stale_after_s": float(stale_after_s)},
        }, str(tmp / "gateway.toml"))
        self.gateway = Gateway(settings, keys).start()
        self.url = self.gateway.web.url
        self.stops = {n: threading.Event() for n in nodes}
        self.sims = []
        for i, n in enumerate(nodes):
            sim = fleet.SimNode(i, n, keys[n], ("127.0.0.1", udp), str(tmp / "nodes"), stop=self.stops[n])
            sim.start()
            self.sims.append(sim)

    def silence(self, node):
        # the node stops sending (as if its battery died)
        self.stops[node].set()

    def close(self):
        for ev in self.stops.values():
            ev.set()
        for sim in self.sims:
            sim.join(3)
        self.gateway.stop()
        self.broker.stop()
        errors = [f"{s.node_id}: {s.error}" for s in self.sims if s.error]
        assert not errors, errors
