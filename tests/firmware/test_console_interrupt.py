# A board whose link is its USB console: 0x03 bytes inside ACKs and commands must not stop
# the node, while a technician's Ctrl-C (or mpremote's "\r\x03\x03") between frames still does.
import pytest

from firmware.links import UartLink
from protocol import cobs, message

KEY = bytes(range(16))


class ConsoleUart:
    console = True

    def __init__(self, data):
        self.data = bytearray(data)
        self.written = bytearray()

    def any(self):
        return len(self.data)

    def readinto(self, buf):
        n = min(len(buf), len(self.data))
        buf[:n] = self.data[:n]
        del self.data[:n]
        return n

    def write(self, data):
        self.written.extend(data)
        return len(data)


def acks_with_0x03(count):
    # ACKs whose serial encoding contains 0x03 bytes (about one in ten does)
    out = []
    seq = 0
    while len(out) < count:
        wire = cobs.encode(message.encode_ack(KEY, "sew-07", 1, seq, cum=seq))
        if 3 in wire:
            out.append(wire)
        seq += 1
    return out


def test_0x03_inside_frames_is_data():
    wires = acks_with_0x03(5)
    link = UartLink(ConsoleUart(b"".join(wires)))
    got = link.poll(0)
    assert [message.decode(m, lambda n: KEY)["type"] for m in got] == ["ack"] * 5


@pytest.mark.parametrize("typed", [b"\r\x03", b"\x03\x03", b"\r\x03\x03", b"\r\n\x03"],
                         ids=["mpremote", "twice", "cr-twice", "crlf"])
def test_ctrl_c_between_frames_interrupts(typed):
    wire = acks_with_0x03(1)[0]
    link = UartLink(ConsoleUart(wire + typed))
    with pytest.raises(KeyboardInterrupt):
        link.poll(0)


@pytest.mark.parametrize("noise", [b"\x03", b"\x00\x03", b"\x03\x00\x03\x00", b"\x00\x03\x11\x03"],
                         ids=["lone", "after-delimiter", "two-lone", "inside-junk"])
def test_a_lone_0x03_on_the_line_is_data(noise):
    # line noise between frames: counted as noise, the node goes on (main dropped to the REPL)
    wire = acks_with_0x03(1)[0]
    link = UartLink(ConsoleUart(wire + noise + wire))
    got = link.poll(0)
    assert len(got) == 2


def test_a_plain_uart_never_interrupts():
    uart = ConsoleUart(b"\x03")
    uart.console = False  # a separate RS-485 UART, not the console
    assert UartLink(uart).poll(0) == []
