# A LoRa radio modem on a serial port (firmware/modem.py on a Pico with Waveshare's
# Pico-LoRa-SX1262 HAT): it passes each packet it hears, with its RSSI and SNR, as a serial
# frame `7e | rssi | snr x 4 | packet` (SPEC.md 13.5), and transmits the packets the gateway
# sends it the same way (`7e | packet`), under the gateway's own duty cycle, which the modem
# keeps. Compact packets are rebuilt into the COSE_Mac0 of the node their address names and
# go to the pipeline like any frame; the pipeline's ACKs go back compact.
import logging
from collections.abc import Callable, Mapping
from typing import Any

from protocol import compact, message
from protocol.cbor import FrameError

log = logging.getLogger("citynode.gateway")


class AddressBook:
    # LoRa packets name their node by a 4-byte address (SPEC.md 13.1): the COSE_Mac0 a packet
    # stands for, rebuilt for the node with that address (the one whose MAC verifies when two
    # nodes share it). Follows the gateway's keys as SIGHUP replaces them.
    def __init__(self, keys: Callable[[], Mapping[str, bytes]]) -> None:
        self.keys = keys
        self._by_addr: tuple[dict, object] = ({}, None)

    def frame(self, air: bytes) -> bytes:
        a = compact.addr_of(air)
        if a is None:
            return air  # a full message sent as it is
        keys = self.keys()
        table, built = self._by_addr
        if built is not keys:
            table = {}
            for node in keys:
                table.setdefault(compact.address(node), []).append(node)
            self._by_addr = (table, keys)
        nodes = table.get(a)
        if not nodes:
            raise FrameError("unknown", "no node with address %s" % a.hex())
        frames = [compact.from_air(air, n) for n in nodes]
        return next((f for f in frames if _verifies(f, keys)), frames[0]) if len(frames) > 1 else frames[0]

    def downlink(self, msg: bytes) -> bytes:
        # the pipeline's ACK or command -> the packet for the air: a compact ACK; the operator's
        # compact signed command itself, without the relay around it (SPEC.md 13.6: at most 45
        # bytes, and its MAC is the operator's); others as they are
        keys = self.keys()
        d = message.decode(msg, keys.get)
        if d["type"] == "ack":
            msg = compact.encode_ack(keys[d["node"]], d["node"], d["boot"], d["seq"], d["cum"])
        elif d["type"] == "cmd" and d.get("signed") and compact.is_command(d["signed"]):
            msg = d["signed"]
        return compact.to_air(msg)


class Radio:
    def __init__(self, link: Any) -> None:
        # link: the SerialLink (submit, reject, keys(), name)
        self.link = link
        self.book = AddressBook(link.keys)
        self.counts = {"packets": 0, "frames": 0, "downlinks": 0}
        log.info("%s: a LoRa radio modem", link.name)

    def describe(self, addr: tuple) -> str:
        # addr: ("lora", rssi dBm, snr dB) of the packet the frame came in
        return "%s lora rssi %s snr %s" % (self.link.name, addr[1], addr[2])

    def reception(self, addr: tuple) -> dict[str, float]:
        return {"rssi_dbm": addr[1], "snr_db": addr[2]}

    def received(self, body: bytes, now: float) -> None:
        got = compact.modem_parse(body)
        if got is None:
            self.link.reject("short", self.link.name, "radio modem frame too short")
            return
        air, rssi, snr = got
        self.counts["packets"] += 1
        addr = ("lora", rssi, snr)
        try:
            frame = self.book.frame(air)
        except FrameError as e:
            self.link.reject(e.reason, self.describe(addr), str(e))
            return
        self.counts["frames"] += 1
        self.link.submit((frame, self.link, addr, now))

    def downlink(self, addr: tuple, msg: bytes) -> bytes | None:
        # the pipeline's ACK or command -> the serial frame body for the modem (compact when it can be)
        try:
            air = self.book.downlink(msg)
        except (FrameError, KeyError):
            return None
        self.counts["downlinks"] += 1
        return bytes((compact.MODEM,)) + air


def _verifies(frame: bytes, keys: Mapping[str, bytes]) -> bool:
    try:
        message.decode(frame, keys.get)
        return True
    except FrameError:
        return False
