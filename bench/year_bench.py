# A year of one node on the sim board, time compressed: the real firmware (CPython), the
# simulated shaft and its sensors on the board's virtual clock, and a real UDP link to a
# gateway (firmware/sim/gateway.py behind a loopback socket) that the node knows by host name
# only, asked of a real DNS server on loopback (tests/support/dns.py, dnspython). Over the
# year: brown-outs (power cuts at random moments, some in the middle of a flash write),
# gateway outages of hours to days, and a DHCP change that moves the gateway to another
# address. Run by hand (not in CI):
#   .venv/bin/python bench/year_bench.py [--days 365] [--interval 900] [--seed 1]
# It prints frames made and delivered, lost (a seq of a boot the gateway never got), delivered
# twice (the gateway's duplicates: resends it had already), dropped by the node (counted),
# resets by cause, and the node's state at the end (healthy: not in safe mode, no failed boot).
import argparse
import pathlib
import random
import socket
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware import config  # noqa: E402
from firmware.links import UdpLink  # noqa: E402
from firmware.node import Node, Reset  # noqa: E402
from firmware.sim.board import PowerCut, SimBoard  # noqa: E402
from firmware.sim.gateway import SimGateway  # noqa: E402
from firmware.uplink import Pace  # noqa: E402
from tests.support.dns import DnsServer  # noqa: E402

KEY = bytes(range(16))
NODE = "sew-07"
DAY_S = 86400


class UdpGateway:
    # the sim gateway behind a UDP socket on `ip`; drops what comes while `down()` says so
    def __init__(self, gw, ip, port, down):
        self.gw = gw
        self.down = down
        self.dropped = 0
        self.sock = None
        self.port = port
        self.move(ip)
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def move(self, ip):
        # a DHCP change: the old address goes silent, the gateway answers on the new one
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, self.port))
        self.port = s.getsockname()[1]
        s.settimeout(0.05)
        old, self.sock = self.sock, s
        if old is not None:
            old.close()

    def _run(self):
        while not self._stop:
            s = self.sock
            try:
                data, peer = s.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            if self.down():
                self.dropped += 1
                continue
            for r in self.gw(data):
                try:
                    s.sendto(r, peer)
                except OSError:
                    pass

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=365)
    ap.add_argument("--interval", type=int, default=900, help="node interval, s (%(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    total_s = a.days * DAY_S
    # outages: every ~3 weeks, from 2 hours to 4 days (a 512-slot buffer holds 5.3 days at 15 min)
    outages = []
    t = rnd.uniform(5, 15) * DAY_S
    while t < total_s - 5 * DAY_S:
        length = rnd.choice((2 * 3600, 8 * 3600, DAY_S, 2 * DAY_S, 4 * DAY_S))
        outages.append((t, t + length))
        t += length + rnd.uniform(10, 30) * DAY_S
    # brown-outs: every ~5 days at a random moment; one in three in the middle of a flash write
    cuts = sorted(rnd.uniform(DAY_S, total_s - DAY_S) for _ in range(int(a.days / 5)))
    dhcp_at = total_s * 0.6

    flash = tempfile.mkdtemp(prefix="year-")
    board = SimBoard(flash, seed=a.seed, rain_start_s=None)
    clock = board.clock
    cfg = config.validate({"node": NODE, "key": KEY.hex(), "interval_s": a.interval, "storm_interval_s": 60,
                           "heartbeat_s": a.interval, "watchdog_ms": 30000,
                           "link": {"kind": "udp", "host": "gw.city.example", "port": 5683}})
    gwsim = SimGateway({NODE: KEY})
    udp = UdpGateway(gwsim, "127.0.0.1", 0, lambda: any(s <= clock.ms() / 1000 < e for s, e in outages))
    dns = DnsServer(ip="127.0.0.1")
    port = udp.port
    node = None
    boots = 0
    causes = {}
    cut_count = 0
    wall = time.monotonic()
    moved = False
    counts = {"dropped": 0, "torn": 0, "flash": 0}
    link_counts = {"moved": 0, "dns": 0}
    made = {}  # boot -> frames the node made in it (its seq when it ended)

    def tally(n):
        # what a boot leaves when it ends: its buffer's and link's counts, the frames it made
        for k in counts:
            counts[k] += n.uplink.buffer.counts.get(k, 0)
        for k in link_counts:
            link_counts[k] += n.uplink.link.counts[k]
        made[n.health.boot] = n.seq

    try:
        while clock.ms() / 1000 < total_s:
            now_s = clock.ms() / 1000
            if not moved and now_s >= dhcp_at:
                udp.move("127.0.0.2")
                dns.ip = "127.0.0.2"
                moved = True
            if node is None:
                # ACKs come within ms over loopback: a cycle listens 20 ms for them
                link = UdpLink("gw.city.example", port, dns=dns.addr, clock=clock, pace=Pace(clock, timeout_ms=20))
                node = Node(board, cfg, link)
                try:
                    node.start()
                except (Reset, PowerCut):
                    node = None
                    continue
                boots += 1
                causes[node.health.reset_cause] = causes.get(node.health.reset_cause, 0) + 1
            try:
                if cuts and now_s >= cuts[0]:
                    cuts.pop(0)
                    cut_count += 1
                    if rnd.random() < 1 / 3:
                        board.cut_after = rnd.randrange(0, 200)  # the next flash write dies half way
                    else:
                        raise PowerCut()
                wait = node.step()
                node.sleep(wait)
            except (Reset, PowerCut) as e:
                if isinstance(e, Reset) and e.cause == "watchdog":
                    board.watchdog_bite()
                tally(node)
                node.uplink.buffer.close()
                node.uplink.link.close()
                node = None
                board.cut_after = None
                clock.sleep_ms(1000)
        # the end: the gateway is up; drain what waits (bounded)
        for _ in range(200):
            if node is None or not node.uplink.buffer.live:
                break
            node.sleep(node.step())
        end = node
    finally:
        udp.close()
        dns.close()
    tally(end)
    per_boot = {}
    for d in gwsim.decoded:
        per_boot.setdefault(d["boot"], set()).add(d["seq"])
    lost = sum(n - len(per_boot.get(b, ())) for b, n in made.items())
    extra = sum(1 for b, ss in per_boot.items() for x in ss if x >= made.get(b, 0))  # never made: must be 0
    print("sim year: %.0f days at %d s, %d outages (%s), %d brown-outs, DHCP change at day %.0f; %.0f s wall" % (
        a.days, a.interval, len(outages), ", ".join("%.1f h" % ((e - s) / 3600) for s, e in outages), cut_count,
        dhcp_at / DAY_S, time.monotonic() - wall))
    print("frames made %d (node side), delivered once %d, lost %d, unknown to the node %d, dropped by the node %d, "
          "torn %d, flash errors %d" % (sum(made.values()), gwsim.accepted, lost, extra, counts["dropped"],
                                         counts["torn"], counts["flash"]))
    print("boots %d by cause %s; resends the gateway already had %d (answered again, kept once); "
          "link moved %d, dns failures %d" % (boots, causes, gwsim.duplicates, link_counts["moved"],
                                               link_counts["dns"]))
    print("end: safe mode %s, failed boots in a row %d, buffer %d frames, offline %s" % (
        end.health.safe, end.health.unhealthy, end.uplink.buffer.live, end.uplink.offline))


if __name__ == "__main__":
    main()
