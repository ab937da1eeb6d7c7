# A live status site for the browser tests. (Interim: status from simulated node
# state; replaced by a real gateway with simulated nodes once the gateway lands.)
import math
import threading
import time

from gateway.web.history import History
from gateway.web.server import StatusWeb

HOSTILE_ID = "<b>evil<i>\"'&amp;"


class Site:
    def __init__(self, tmp, nodes, stale_after_s=4):
        self.nodes = nodes
        self.stale_after_s = stale_after_s
        self.history = History(tmp / "history.sqlite", flush_s=0.2).start()
        self.state = {n: {"id": n, "last_seen": None, "accepted": 0, "rejected": {}, "gaps": 0,
                          "thresholds": {"alarm_m": 0.8, "storm_m": 0.5}} for n in nodes}
        self.silent = set()
        self.stop_evt = threading.Event()
        self.web = StatusWeb(listen="127.0.0.1:0", status_fn=self.status, history=self.history,
                             stale_after_s=stale_after_s).start()
        self.url = self.web.url
        self.thread = threading.Thread(target=self.feed, daemon=True)
        self.thread.start()

    def status(self):
        return {"gateway": {"id": "gw-test", "version": "test", "broker_connected": True, "uptime_s": 1,
                            "outbox_depth": 0, "frames_per_s": 1.0},
                "nodes": [dict(s) for s in self.state.values()]}

    def feed(self):
        i = 0
        while not self.stop_evt.wait(0.3):
            i += 1
            for n in self.nodes:
                if n in self.silent:
                    continue
                now = time.time()
                level = 0.3 + 0.3 * math.sin(i / 10)
                self.history.add(n, now, {"l": level, "t": 20 + math.cos(i / 20)}, flags=1 if level > 0.5 else 0)
                st = self.state[n]
                st["last_seen"] = now
                st["accepted"] += 1

    def silence(self, node):
        self.silent.add(node)

    def close(self):
        self.stop_evt.set()
        self.thread.join(2)
        self.web.stop()
        self.history.close()
