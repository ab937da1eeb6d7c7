# Links as the real ports behave (MicroPython 1.28 sources), and the rule that no fault in
# a link is fatal to the node loop: it is counted, and the node keeps its cadence.
import os

import pytest

from firmware import config
from firmware.links import StdioUart, UartLink, UdpLink
from firmware.sim.board import Runner, SimBoard
from firmware.sim.gateway import SimGateway
from protocol import cobs
from tests.firmware.conftest import KEY, NODE

HOUR_MS = 3600 * 1000


class PortStdoutBuffer:
    # sys.stdout.buffer on RP2 and ESP32: the FileIO type of shared/runtime/sys_stdio_mphal.c
    # (stdio_buffer_obj_type). Its methods are those of stdio_locals_dict_table: read, readinto,
    # readline, readlines, write, close, __enter__, __exit__ -- no flush. write() returns what
    # mp_hal_stdout_tx_strn returns (ports/rp2/mphalport.c): every byte while a USB host is
    # attached, 0 when nothing took the bytes (no host, no UART REPL).
    def __init__(self, host=None):
        self.host = host  # callable(bytes) standing for the USB host, or None: not attached

    def write(self, data):
        if self.host is None:
            return 0
        self.host(bytes(data))
        return len(data)

    def read(self, n=-1):
        raise AssertionError("the node reads stdin, not stdout")

    def readinto(self, buf):
        raise AssertionError("the node reads stdin, not stdout")

    def readline(self):
        raise AssertionError("the node reads stdin, not stdout")

    def readlines(self):
        raise AssertionError("the node reads stdin, not stdout")

    def close(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return None


class UsbHost:
    # the technician's laptop or the gateway at the far end of the USB cable: deframes what
    # the node writes, passes each frame to a gateway and writes the replies to the node's stdin
    def __init__(self, gateway):
        self.gateway = gateway
        self.deframer = cobs.Deframer()
        r, w = os.pipe()
        self.stdin = os.fdopen(r, "rb", buffering=0)  # the node's sys.stdin.buffer
        self._w = w
        self.frames = 0

    def __call__(self, data):
        for kind, body in self.deframer.feed(data):
            if kind == "frame":
                self.frames += 1
                for reply in self.gateway(body):
                    os.write(self._w, cobs.encode(reply))

    def close(self):
        self.stdin.close()
        os.close(self._w)


def console_node(tmp_path, host, hours=2):
    cfg = config.validate({"node": NODE, "key": KEY.hex(), "interval_s": 300, "storm_interval_s": 30,
                           "heartbeat_s": 300, "watchdog_ms": 8388})
    board = SimBoard(str(tmp_path / "flash"))
    stdin = host.stdin if host is not None else open(os.devnull, "rb")
    link = UartLink(StdioUart(rx=stdin, tx=PortStdoutBuffer(host)), board.clock)
    node = Runner(board, cfg, link).run(board.clock.ms() + int(hours * HOUR_MS))
    return board, link, node


def test_usb_console_link_on_the_port_stdout_sends_every_interval(tmp_path):
    # on main this raised AttributeError: 'FileIO' object has no attribute 'flush' in every
    # send, and after 5 failed cycles the node reset itself (seen on the emulated Pico)
    gw = SimGateway({NODE: KEY})
    host = UsbHost(gw)
    try:
        board, link, node = console_node(tmp_path, host, hours=2)
    finally:
        host.close()
    assert board.resets == [] and node.counts["loop_errors"] == 0
    assert link.counts["error"] == 0 and link.counts["short"] == 0
    seqs = sorted(d["seq"] for d in gw.decoded)
    assert seqs == list(range(len(seqs))) and len(seqs) >= 2 * 3600 // 300
    assert gw.duplicates == 0 and node.uplink.buffer.live == 0  # every frame ACKed over the same console


def test_console_with_no_usb_host_counts_short_writes_and_keeps_the_frames(tmp_path):
    # nobody on the cable: the port writes 0 bytes; the frames wait in flash, the node runs on
    board, link, node = console_node(tmp_path, None, hours=1)
    assert board.resets == [] and node.counts["loop_errors"] == 0
    assert link.counts["short"] >= 1 and link.counts["sent"] == 0
    assert node.uplink.buffer.live == node.counts["frames"] >= 3600 // 300


class FaultyUart:
    # any exception a port or a driver bug could raise from a UART, on every call
    def __init__(self, exc):
        self.exc = exc

    def any(self):
        raise self.exc

    def readinto(self, buf):
        raise self.exc

    def write(self, data):
        raise self.exc


@pytest.mark.parametrize("exc", [AttributeError("flush"), ValueError("bad"), OSError(5), MemoryError(),
                                 TypeError("x")])
def test_no_exception_in_a_link_is_fatal_to_the_loop(tmp_path, exc):
    cfg = config.validate({"node": NODE, "key": KEY.hex(), "interval_s": 300, "storm_interval_s": 30,
                           "heartbeat_s": 300})
    board = SimBoard(str(tmp_path / "flash"))
    link = UartLink(FaultyUart(exc), board.clock)
    node = Runner(board, cfg, link).run(board.clock.ms() + 2 * HOUR_MS)
    assert board.resets == [] and node.counts["loop_errors"] == 0
    assert link.counts["error"] >= node.counts["frames"] >= 2 * 3600 // 300
    assert isinstance(link.last_error, type(exc))


class FaultySocket:
    def __init__(self, exc):
        self.exc = exc

    def sendto(self, data, addr):
        raise self.exc

    def recv(self, n):
        raise self.exc

    def close(self):
        pass


def test_udp_link_counts_any_send_fault(tmp_path):
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        link = UdpLink("127.0.0.1", 9, sock=sock)
        link.sock = FaultySocket(ValueError("port bug"))
        assert link.send(b"x") is False and link.counts["error"] == 1
        assert isinstance(link.last_error, ValueError)
    finally:
        sock.close()


@pytest.mark.micropython
def test_console_link_on_the_micropython_vm_with_a_flushless_stdout():
    # the same link code on the real VM, its tx a FileIO with the port's methods (no flush)
    from tests.support import mpvm

    script = (
        "from firmware.links import StdioUart, UartLink\n"
        "from protocol import cobs\n"
        "import sys\n"
        "class FileIO:\n"
        "    def __init__(self): self.out = bytearray()\n"
        "    def write(self, b):\n"
        "        self.out.extend(b)\n"
        "        return len(b)\n"
        "    def readinto(self, b): return 0\n"
        "    def close(self): pass\n"
        "tx = FileIO()\n"
        "link = UartLink(StdioUart(rx=sys.stdin.buffer, tx=tx))\n"
        "ok = link.send(b'hello')\n"
        "print(ok, link.counts['sent'], link.counts['error'], cobs.Deframer().feed(bytes(tx.out)))\n"
    )
    p = mpvm.run(script, input="")
    assert p.stdout.split("\n")[0] == "True 1 0 [('frame', b'hello')]", p.stdout


class ConsoleLine:
    # the board's own console (StdioUart over USB: console = True), with a technician's
    # Ctrl-C arriving at a given moment of the board's clock
    console = True

    def __init__(self, clock):
        self.clock = clock
        self.at_ms = None
        self.data = bytearray()

    def type_at(self, ms, data):
        self.at_ms = ms
        self.data += data

    def any(self):
        return len(self.data) if self.at_ms is not None and self.clock.ms() >= self.at_ms else 0

    def readinto(self, buf):
        n = min(len(buf), self.any())
        buf[:n] = self.data[:n]
        del self.data[:n]
        return n

    def write(self, data):
        return len(data)


def test_a_node_on_its_console_stops_at_ctrl_c_while_it_sleeps(tmp_path):
    # on main a console node slept its whole interval (minutes) without looking at the line:
    # `citynode flash` and mpremote waited for the next cycle, and timed out
    cfg = config.validate({"node": NODE, "key": KEY.hex(), "interval_s": 300, "storm_interval_s": 30})
    board = SimBoard(str(tmp_path / "flash"))
    line = ConsoleLine(board.clock)
    node = Runner(board, cfg, UartLink(line, board.clock)).run(board.clock.ms() + 1)  # started, one cycle
    t0 = board.clock.ms()
    line.type_at(t0 + 10000, b"\r\x03\x03")  # mpremote's interrupt, 10 s into a 300 s sleep
    with pytest.raises(KeyboardInterrupt):
        node.sleep(300000)
    assert 10000 <= board.clock.ms() - t0 <= 10100


def test_udp_link_moves_to_its_fallback_gateway_and_back(tmp_path):
    # real sockets: the first gateway is silent, the fallback answers; after 4 sends without an
    # answer the link moves over; once the first answers one of its probes, the link returns
    import socket

    def sock():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(1.0)
        return s

    first, second, node = sock(), sock(), sock()
    try:
        link = UdpLink("127.0.0.1", first.getsockname()[1], sock=node,
                       fallback=[("127.0.0.1", second.getsockname()[1])])

        def answer(gw):
            data, addr = gw.recvfrom(2048)
            gw.sendto(b"ack " + data, addr)

        for i in range(4):  # unanswered: the first gateway is down
            assert link.send(b"f%d" % i)
            assert link.poll(10) == []
        assert link.gw == 0 and link.counts["switch"] == 0
        assert link.send(b"f4") and link.gw == 1 and link.counts["switch"] == 1
        answer(second)
        assert link.poll(500) == [b"ack f4"] and link.quiet == 0
        first.settimeout(0.05)
        assert [first.recvfrom(2048)[0] for _ in range(4)] == [b"f0", b"f1", b"f2", b"f3"]  # unanswered
        probes = []
        for i in range(5, 20):  # on the fallback; every 8th frame also probes the first gateway
            assert link.send(b"f%d" % i)
            answer(second)
            link.poll(500)
            try:
                probes.append(first.recvfrom(2048)[0])
            except TimeoutError:
                pass
        assert probes == [b"f8", b"f16"] and link.gw == 1
        for i in range(20, 40):  # the first gateway is back: it answers the next probe
            assert link.send(b"f%d" % i)
            try:
                answer(first)
            except TimeoutError:
                pass
            answer(second)
            link.poll(200)
            if link.gw == 0:
                break
        assert link.gw == 0 and link.counts["switch"] == 2 and link.home is None
        assert link.send(b"last")
        assert first.recvfrom(2048)[0] == b"last"  # home again
    finally:
        for s in (first, second, node):
            s.close()


def test_a_fallback_gateway_in_the_node_config_is_checked():
    base = {"node": NODE, "key": KEY.hex(), "link": {"kind": "udp", "host": "gw1", "port": 5683}}
    cfg = config.validate(dict(base, link=dict(base["link"], fallback=[{"host": "gw2", "port": 5683}])))
    assert cfg["link"]["fallback"] == [{"host": "gw2", "port": 5683}]
    for bad in ([{"host": "gw2"}], [{"port": 1}], "gw2", [{"host": "gw", "port": 1}] * 4):
        with pytest.raises(config.ConfigError, match="fallback"):
            config.validate(dict(base, link=dict(base["link"], fallback=bad)))
