# A serial "USB adapter" for tests: a pty whose slave is reached through a stable
# symlink (like /dev/serial/by-id/...). unplug() closes the master and removes the
# link, plug() makes a new pty behind the same path. SerialNode speaks the serial
# framing on the master side: COBS frames out, ACKs and commands back.
import os
import select
import time
import tty

from protocol import cobs, message
from protocol.cbor import FrameError
from tests.support.udpnode import make_frame


class PtyPort:
    def __init__(self, link_path):
        self.path = str(link_path)
        self.master = None
        self.plug()

    def plug(self):
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo or line editing before the gateway configures the port
        name = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(master, False)
        tmp = self.path + ".new"
        os.symlink(name, tmp)
        os.replace(tmp, self.path)
        self.master = master

    def unplug(self):
        os.unlink(self.path)
        os.close(self.master)
        self.master = None

    def write(self, data):
        view = memoryview(data)
        deadline = time.monotonic() + 5
        while view and time.monotonic() < deadline:
            try:
                n = os.write(self.master, view)
                view = view[n:]
            except (BlockingIOError, OSError):
                time.sleep(0.005)

    def read(self, timeout):
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return b""
        try:
            return os.read(self.master, 4096)
        except OSError:  # EIO while the gateway has the slave closed
            time.sleep(timeout)
            return b""

    def close(self):
        if self.master is not None:
            self.unplug()


class SerialNode:
    def __init__(self, node, key, port, boot=1, resend_s=0.3):
        self.node, self.key, self.port, self.boot = node, key, port, boot
        self.resend_s = resend_s
        self.deframer = cobs.Deframer()
        self.acked = set()
        self.commands = []

    def poll(self, timeout=0.01):
        for kind, msg in self.deframer.feed(self.port.read(timeout)):
            if kind != "frame":
                continue
            try:
                m = message.decode(msg, lambda n: self.key if n == self.node else None)
            except FrameError:
                continue
            if m["type"] == "ack":
                self.acked.add(m["seq"])
                if m["cum"] is not None:
                    self.acked.update(range(m["cum"] + 1))
            elif m["type"] == "cmd":
                self.commands.append(m)

    def run(self, seqs, deadline_s=20.0, window=16):
        # send each seq until ACKed; -> True when all are
        seqs = list(seqs)
        last = {}
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            todo = [s for s in seqs if s not in self.acked]
            if not todo:
                return True
            now = time.monotonic()
            for s in todo[:window]:
                if now - last.get(s, 0) > self.resend_s:
                    self.port.write(cobs.encode(make_frame(self.key, self.node, self.boot, s)))
                    last[s] = now
            self.poll(0.02)
        return all(s in self.acked for s in seqs)
