# A simulated node: the real firmware on the sim board, runnable on MicroPython and CPython.
#
#   micropython firmware/sim/run.py storm --flash DIR [--hours 8] [--seed 1]
#       full storm scenario against an in-process gateway; prints FRAME <hex> per frame
#   micropython firmware/sim/run.py serial --flash DIR
#       a node on a serial line: stdin/stdout is its UART (COBS frames, console text between)
#   micropython firmware/sim/run.py udp --flash DIR --frames K [--rate R] [--timeout S] [--window W]
#       send K frames to the gateway in DIR/config.json, as fast as ACKs come back
#
# DIR is the node's flash: config.json (from `citynode provision` or `citynode simulate`),
# state.json (boot counter), buffer.bin (offline buffer). (CPython: python -m firmware.sim.run ...)
import sys

from firmware import config
from firmware.clock import Clock
from firmware.health import HEALTHY_AFTER
from firmware.links import UartLink, UdpLink
from firmware.node import Node, Reset
from firmware.sim.board import Runner, SimBoard, StdioUart
from firmware.sim.link import SimLink
from firmware.uplink import Pace

OPTIONS = {"--flash": None, "--hours": "8", "--seed": "1", "--frames": "10", "--rate": None, "--timeout": "30",
           "--window": "16", "--node": None, "--key": None, "--interval": None}


def parse(argv):
    if not argv or argv[0] not in ("storm", "serial", "udp"):
        raise SystemExit("usage: firmware.sim.run storm|serial|udp --flash DIR [options]; see firmware/README.md")
    opts = dict(OPTIONS)
    i = 1
    while i < len(argv):
        if argv[i] not in opts or i + 1 >= len(argv):
            raise SystemExit("sim.run: unknown option or missing value: %s" % argv[i])
        opts[argv[i]] = argv[i + 1]
        i += 2
    if not opts["--flash"]:
        raise SystemExit("sim.run: --flash DIR is required")
    return argv[0], opts


def load_config(board, opts, link):
    raw = None
    try:
        import json

        with open(board.path(config.CONFIG_NAME)) as f:
            raw = json.loads(f.read())
    except OSError:
        raw = {}
    if opts["--node"]:
        raw["node"] = opts["--node"]
    if opts["--key"]:
        raw["key"] = opts["--key"]
    if opts["--interval"]:
        raw["interval_s"] = int(opts["--interval"])
        raw["storm_interval_s"] = min(raw.get("storm_interval_s", 30), raw["interval_s"])
    if link:
        raw["link"] = link
    raw["board"] = SimBoard.name
    return config.validate(raw)


def storm(opts):
    # dry weather, rain, overflow alarm, drain, with the link dropping out twice
    hour = 3600
    board = SimBoard(opts["--flash"], seed=int(opts["--seed"]), rain_start_s=2 * hour,
                     outages=((int(1.5 * hour), int(2.2 * hour)), (int(3.2 * hour), int(3.6 * hour))),
                     log=lambda t: print("LOG " + t))
    cfg = load_config(board, opts, None)

    def sink(message, d):
        print("FRAME " + message.hex())

    from firmware.sim.gateway import SimGateway

    gw = SimGateway({cfg["node"]: cfg["key_bytes"]}, sink=sink)
    runner = Runner(board, cfg, SimLink(board.world, board.clock, gw))
    node = runner.run(int(float(opts["--hours"]) * hour * 1000))
    if node is None:
        raise SystemExit("storm: the node never booted")
    import gc

    gc.collect()
    print("DONE accepted=%d duplicates=%d rejects=%d boot=%d seq=%d live=%d free=%d" % (
        gw.accepted, gw.duplicates, len(gw.rejects), node.health.boot, node.seq, node.uplink.buffer.live,
        gc.mem_free()))


def serial(opts):
    # stdout carries COBS frames and console lines; stdin brings ACKs and commands
    uart = StdioUart()

    def console(text):
        uart.write((text + "\n").encode())

    board = SimBoard(opts["--flash"], seed=int(opts["--seed"]), log=console)
    cfg = load_config(board, opts, {"kind": "uart"})
    # the world runs on virtual time; waiting for ACKs takes real time (the gateway is real)
    real = Clock()
    link = UartLink(uart, real, Pace(real))  # resend timers in real time
    console("citynode sim board ready (node %s)" % cfg["node"])
    node = Runner(board, cfg, link).run(int(float(opts["--hours"]) * 3600 * 1000))
    if node is not None:
        console("sim done: %d frames, %d unacknowledged" % (node.seq, node.uplink.buffer.live))


def lan_node(board, cfg, link, real, window):
    # a started node next to its gateway, making a frame every cycle: ACKs come in
    # milliseconds, so it resends sooner than in the field, and a cycle does not wait for
    # them (the caller polls the link); resend timers run on `real` while the world runs on
    # the board clock
    link.pace = Pace(real, window, 500, 0, True)
    node = Node(board, cfg, link)
    node.start()
    return node


class Blaster:
    # Drives one node for `citynode simulate`: K frames, as many in flight as the node's
    # window allows, optionally at `rate` frames/s. The node's own loop makes them: node.run
    # on a link paced by lan_node (each cycle samples, reports, sends and counts towards
    # health; no ACK wait inside a cycle: the caller polls the link), paused while the window
    # is full or the rate is ahead; the simulated world moves on by the interval between cycles.
    def __init__(self, node, frames, rate=None, real=None):
        self.node = node
        self.frames = frames
        self.rate = rate
        self.real = real or node.uplink.pace.clock
        self.base = node.counts["frames"]
        self.reset = None  # the cause, when the node reset (the simulation ends there)
        self.t0 = self.real.ms()

    @property
    def made(self):
        return self.node.counts["frames"] - self.base

    def paused(self):
        if self.made >= self.frames or self.node.uplink.buffer.live >= self.node.uplink.pace.window:
            return True
        return bool(self.rate) and self.real.ms() < self.t0 + self.made * 1000 / self.rate

    def step(self):
        if self.reset:
            return
        try:
            self.node.run(stop=self.paused)
            self.node.uplink.transmit(self.node.receive)
        except Reset as r:
            self.reset = r.cause

    def done(self):
        return bool(self.reset) or (self.made >= self.frames and self.node.uplink.buffer.live == 0)

    def unacked(self):
        return max(0, self.frames - self.made) + self.node.uplink.buffer.live

    def summary(self):
        # a line for the end of the run when something beyond counting frames happened
        node = self.node
        notes = []
        if self.reset:
            notes.append("the node reset (%s) after %d frame(s); the simulation stopped there" % (
                self.reset, self.made))
        if node.health.safe:
            notes.append("boot %d is in SAFE MODE (boots in a row that never completed %d cycles); frames "
                         "carry no sensor values" % (node.health.boot, HEALTHY_AFTER))
        if node.counts["renumbered"]:
            notes.append("the gateway had seen a higher boot (node state deleted?): moved on to boot %d, "
                         "%d frame(s) resent under it" % (node.health.boot, node.counts["renumbered"]))
        if not self.done():
            if not node.uplink.link.counts["received"]:
                notes.append("no reply from the gateway: it refuses a node whose key it does not have "
                             "(or another key) without a word; or nothing listens at that address")
            elif node.uplink.rejects:
                notes.append("replies refused by the node: %s" % ", ".join(
                    "%s %d" % (k, node.uplink.rejects[k]) for k in sorted(node.uplink.rejects)))
        return "; ".join(notes) or None


def lan_config(node, key_hex, host, port):
    # the config of a simulated node next to a gateway on UDP (`citynode simulate` writes it)
    return {"node": node, "key": key_hex, "board": SimBoard.name, "interval_s": 60, "storm_interval_s": 30,
            "heartbeat_s": 60, "link": {"kind": "udp", "host": host, "port": port}, "buffer_slots": 512}


def result(b):
    # -> (node, boot, frames made, acked, unacked, resent, note or None, reset cause or None)
    n = b.node
    return (n.cfg["node"], n.health.boot, b.made, n.counts["acked"], b.unacked(), n.counts["resent"], b.summary(),
            b.reset)


def drive(nodes, frames, rate=None, window=16, timeout_ms=30000):
    # The one driver loop of the simulated LAN nodes (`sim.run udp` on MicroPython, and
    # `citynode simulate` with any number of nodes in one CPython process): nodes is
    # [(board, cfg)], each with a udp link in cfg; every node makes `frames` frames, at most
    # `window` in flight, at `rate` frames/s (None: as fast as ACKs come). Each turn steps every
    # node not yet done, then reads the replies of those whose socket is readable (one
    # select.poll over all of them, at most 5 ms). -> [result(b)] in the order of nodes, once
    # every frame is ACKed or timeout_ms has passed; the links and buffers are closed.
    import select

    real = Clock()
    blasters = []
    poller = select.poll()
    by_fd = {}  # CPython's poll() says the file descriptor,
    by_obj = {}  # MicroPython's the object registered
    try:
        for board, cfg in nodes:
            link = UdpLink(cfg["link"]["host"], cfg["link"]["port"])
            b = Blaster(lan_node(board, cfg, link, real, window), frames, rate, real)
            blasters.append(b)
            poller.register(link.sock, select.POLLIN)
            by_obj[id(link.sock)] = b
            fileno = getattr(link.sock, "fileno", None)  # CPython's; MicroPython's socket may lack it
            if fileno is not None:
                by_fd[fileno()] = b
        deadline = real.ms() + timeout_ms
        while real.ms() < deadline:
            busy = [b for b in blasters if not b.done()]
            if not busy:
                break
            for b in busy:
                b.step()
            for ev in poller.poll(5):
                k = ev[0]
                b = by_fd.get(k) if isinstance(k, int) else by_obj.get(id(k))
                if b is not None:
                    b.node.receive(b.node.uplink.link.poll(0))
        return [result(b) for b in blasters]
    finally:
        for b in blasters:
            b.node.uplink.buffer.close()
            b.node.uplink.link.close()


def udp(opts):
    board = SimBoard(opts["--flash"], seed=int(opts["--seed"]), log=print)
    cfg = load_config(board, opts, None)
    if cfg["link"]["kind"] != "udp":
        raise SystemExit("sim.run udp: the config's link must be udp with host and port")
    node, boot, made, acked, unacked, resent, note, reset = drive(
        [(board, cfg)], int(opts["--frames"]), float(opts["--rate"]) if opts["--rate"] else None,
        int(opts["--window"]), int(float(opts["--timeout"]) * 1000))[0]
    if note:
        print("NOTE " + note)
    print("RESULT node=%s boot=%d sent=%d acked=%d unacked=%d resent=%d" % (node, boot, made, acked, unacked, resent))
    return 1 if unacked or reset else 0


def main(argv):
    mode, opts = parse(argv)
    if mode == "storm":
        storm(opts)
        return 0
    if mode == "serial":
        serial(opts)
        return 0
    return udp(opts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
