# A live status site for the browser tests: a real gateway (with its status page on a
# free loopback port) behind a real mosquitto, fed over UDP by simulated nodes that run
# the real firmware code (tools.fleet: sim board, compressed time, storm scenario).
import secrets
import socket
import threading

from gateway.config import parse
from gateway.daemon import Gateway
from gateway.files import write_private
from gateway.keys import format_keys
from protocol import message, senml
from tests.support.broker import Mosquitto, free_port
from tools import fleet

# Text a node controls that the page shows: HTML if unescaped. A node id can no longer
# carry it (ids are SenML names, refused at the gateway with reason `kid`), so a node sends
# it as its firmware version, which is free text on the wire (SPEC.md section 6.1, info).
HOSTILE_TEXT = "<b>evil<i>'&amp;<img src=x onerror=\"window.__xss=1\">"
HOSTILE_ID = "<b>evil<i>'&amp;"


class RawNode(threading.Thread):
    # A node built from protocol.message alone (not the firmware), so it can say what the
    # firmware never would: a hostile firmware version, and one frame under a hostile kid.
    def __init__(self, node, key, gateway, stop):
        super().__init__(name=f"raw-{node}", daemon=True)
        self.node_id, self.key, self.gateway, self.stop_event = node, key, gateway, stop
        self.error = None

    def run(self):
        # its health (SPEC 6.1 info 7-11), with HTML as a reset cause
        info = {message.I_FW: HOSTILE_TEXT, message.I_LEVEL_MM: [2200, 1200], message.I_HEAP: [102400, 65536],
                message.I_BUFFER: [3, 330, 0, 1], message.I_FLASH_ERRORS: 2,
                message.I_RESETS: {"power_on": 4, HOSTILE_TEXT[:24]: 1}, message.I_SAFE_S: 0}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode_data(self.key, HOSTILE_ID, 1, 0, 0, [senml.record("l", 0.5)]), self.gateway)
            seq = 0
            while not self.stop_event.is_set():  # bounded by the site's stop event
                recs = [senml.record("l", round(0.3 + seq % 7 / 10, 1)), senml.record("b", 3.7)]
                s.sendto(message.encode_data(self.key, self.node_id, 1, seq, 1000 * seq, recs, info=info),
                         self.gateway)
                seq += 1
                self.stop_event.wait(0.5)


class RisingNode(RawNode):
    # A node with a clock whose shaft fills at 60 mm/min: 30 readings 30 s apart ending now,
    # sent at once, then quiet. The gateway forecasts the alarm level (2.2 m) within minutes.
    def run(self):
        import time

        now = int(time.time())
        info = {message.I_FW: "test-0.1", message.I_LEVEL_MM: [2200, 1200]}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(30):
                recs = [senml.record("l", round(1.0 + 0.03 * i, 3)), senml.record("b", 3.7)]
                s.sendto(message.encode_data(self.key, self.node_id, 1, i, 1000 + 30000 * i, recs,
                                             time_s=now - 30 * (29 - i), flags=message.F_STORM,
                                             info=info if i == 0 else None), self.gateway)
                time.sleep(0.005)


class Site:
    def __init__(self, tmp, nodes, stale_after_s=4, hostile_firmware=None, rising=(), silent=()):
        # hostile_firmware: one of `nodes` that is a RawNode sending HOSTILE_TEXT as its firmware;
        # silent: nodes in the keys file that never send (their node is never started)
        self.nodes = nodes
        self.stale_after_s = stale_after_s
        self.broker = Mosquitto(tmp / "mosquitto").start()
        keys = {n: secrets.token_bytes(16) for n in nodes}
        write_private(tmp / "keys.toml", format_keys(keys))
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
            if n in silent:
                continue
            if n == hostile_firmware or n in rising:
                kind = RawNode if n == hostile_firmware else RisingNode
                sim = kind(n, keys[n], ("127.0.0.1", udp), self.stops[n])
                sim.start()
                self.sims.append(sim)
                continue
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
