# A test-side node: builds real frames with protocol.message.encode_data, sends them over
# UDP, verifies the gateway's ACKs (MAC included) and resends what is not ACKed, oldest
# first, like the firmware's offline buffer. Used until `citynode simulate` lands.
import select
import socket
import threading
import time

from protocol import message, senml
from protocol.cbor import FrameError


def level_m(seq):
    # the reading a test can check end to end: frame seq -> water level
    return round(0.25 + (seq % 500) / 1000, 3)


def make_frame(key, node, boot, seq, backlog=False):
    info = {message.I_FW: "test-0.1", message.I_RESET: "power", message.I_INTERVAL: 60,
            message.I_LEVEL_MM: [2200, 1200]} if seq == 0 else None
    return message.encode_data(key, node, boot, seq, 1000 + seq * 100,
                               [senml.record("l", level_m(seq)), senml.record("b", 3.7)],
                               flags=message.F_BACKLOG if backlog else 0, info=info)


class UdpNode:
    def __init__(self, node, key, gateway, boot=1, window=32, resend_s=0.3):
        self.node = node
        self.key = key
        self.gateway = gateway  # (host, port), may be changed while running
        self.boot = boot
        self.window = window
        self.resend_s = resend_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.acked = set()
        self.cum = -1
        self.outstanding = {}  # seq -> (frame, last sent monotonic)
        self.sent = 0
        self.sent_at = {}  # seq -> first send time (time.time()), for latency
        self.commands = []  # decoded commands from the gateway
        self.bad_replies = 0
        self.frames = {}

    def frame(self, seq):
        f = self.frames.get(seq)
        if f is None:
            f = self.frames[seq] = make_frame(self.key, self.node, self.boot, seq)
        return f

    def _send(self, seq, frame):
        try:
            self.sock.sendto(frame, self.gateway)
        except OSError:
            pass
        self.sent += 1
        self.outstanding[seq] = (frame, time.monotonic())
        self.sent_at.setdefault(seq, time.time())

    def _receive(self, timeout):
        r, _, _ = select.select([self.sock], [], [], timeout)
        while r:
            try:
                data, _ = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            try:
                m = message.decode(data, lambda n: self.key if n == self.node else None)
            except FrameError:
                self.bad_replies += 1
                continue
            if m["type"] == "ack" and m["boot"] == self.boot:
                self.acked.add(m["seq"])
                self.outstanding.pop(m["seq"], None)
                if m["cum"] is not None and m["cum"] > self.cum:
                    for s in [s for s in self.outstanding if s <= m["cum"]]:
                        del self.outstanding[s]
                    self.cum = m["cum"]
            elif m["type"] == "cmd":
                self.commands.append(m)

    def acknowledged(self):
        # every seq the gateway confirmed, one by one or through cum
        return self.acked | set(range(self.cum + 1))

    def done(self, count, start=0):
        return all(s in self.acked or s <= self.cum for s in range(start, start + count))

    def run(self, count, start=0, rate=None, deadline_s=60.0, stop=None):
        # Send seqs start..start+count-1 until every one is ACKed. -> True when all are.
        deadline = time.monotonic() + deadline_s
        nxt = start
        t0 = time.monotonic()
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            now = time.monotonic()
            while nxt < start + count and len(self.outstanding) < self.window and (
                    rate is None or nxt - start < (now - t0) * rate + 1):
                self._send(nxt, self.frame(nxt))
                nxt += 1
            for seq in sorted(self.outstanding)[: self.window]:
                frame, at = self.outstanding[seq]
                if now - at > self.resend_s:
                    self._send(seq, frame)
            if nxt >= start + count and not self.outstanding:
                return self.done(count, start)
            self._receive(0.01)
        return self.done(count, start)

    def send_raw(self, data):
        self.sock.sendto(data, self.gateway)

    def close(self):
        self.sock.close()


class HeardByMany(UdpNode):
    # A node several gateways hear (LoRa reaches several roofs): every transmission reaches
    # each of `gateways`; an ACK from any of them counts, as on the air.
    def __init__(self, node, key, gateways, **kw):
        super().__init__(node, key, gateways[0], **kw)
        self.gateways = list(gateways)

    def _send(self, seq, frame):
        for gw in self.gateways:
            try:
                self.sock.sendto(frame, gw)
            except OSError:
                pass
        self.sent += 1
        self.outstanding[seq] = (frame, time.monotonic())
        self.sent_at.setdefault(seq, time.time())


def run_nodes(nodes, count, deadline_s=60.0, rate=None):
    # Run several nodes in threads; -> list of bools (all ACKed) in node order.
    results = [False] * len(nodes)

    def one(i):
        results[i] = nodes[i].run(count, rate=rate, deadline_s=deadline_s)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline_s + 5)
    return results
