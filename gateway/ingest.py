# Links: where frames come from and where ACKs and commands go back. A link hands
# (message bytes, link, address, received time) to submit(); submit() refuses when the
# bounded input queue is full (counted, not ACKed, so the node keeps the frame and resends
# it). send(addr, message) answers on the link. A serial link runs a reader thread; the UDP
# sockets are read by the pipeline thread.
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self, TypeAlias

import serial

from gateway import osthread
from protocol import cobs
from protocol.compact import MODEM

MODEM_BYTE = bytes((MODEM,))

if TYPE_CHECKING:
    from gateway.config import IngestSettings

log = logging.getLogger("citynode.gateway")

# submit((message bytes, link, address, received time)) -> False when the input queue is full;
# reject(reason, where, detail)
Submit: TypeAlias = Callable[[tuple[bytes, Any, Any, float]], object]
Reject: TypeAlias = Callable[[str, str, str], object]

UDP_RCVBUF = 4 * 1024 * 1024  # ride out bursts; the kernel caps it at net.core.rmem_max


class UdpLink:
    # Read by the pipeline thread itself (gateway/pipeline.py poll): it select()s on the
    # socket and calls drain(), so a frame wakes one thread, and no datagram waits for a
    # reader thread to get the interpreter lock. No thread of its own.
    kind = "udp"

    def __init__(self, host: str, port: int, submit: Submit, reject: Reject) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()[:2]
        self.name = f"udp {host}:{self.address[1]}"
        self.submit = submit
        self.reject = reject
        self._stop = threading.Event()

    def start(self) -> Self:
        return self

    def describe(self, addr: tuple[Any, ...]) -> str:
        return f"udp {addr[0]}:{addr[1]}"

    def drain(self, limit: int = 4096) -> None:
        # Everything readable now (at most limit datagrams) to submit; never blocks. After
        # stop() nothing is read.
        if self._stop.is_set():
            return
        recv = self.sock.recvfrom
        submit = self.submit
        for _ in range(limit):
            try:
                data, addr = recv(4096)  # anything above MAX_MESSAGE is refused as oversize below
            except OSError:  # BlockingIOError: nothing more now
                return
            if addr is None:
                return  # shut down by stop()
            if len(data) > cobs.MAX_MESSAGE:
                self.reject("oversize", self.describe(addr), f"{len(data)} bytes")
                continue
            submit((data, self, addr, time.time()))

    def send(self, addr: tuple[Any, ...], message: bytes) -> bool:
        try:
            self.sock.sendto(message, socket.MSG_DONTWAIT, addr)  # never block the pipeline on a full buffer
            return True
        except OSError:
            return False

    def stop(self) -> None:
        # nothing more is read; the pipeline may still select() on the socket and send ACKs
        # on it until it stops: close() after that
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()

    def kernel_drops(self) -> int | None:
        # datagrams the kernel dropped for this socket (its receive buffer was full), from the
        # `drops` column of /proc/net/udp or udp6; None where there is none (not Linux)
        try:
            inode = str(os.fstat(self.sock.fileno()).st_ino)
            for name in ("/proc/net/udp", "/proc/net/udp6"):
                with open(name) as f:
                    next(f)
                    for line in f:
                        cols = line.split()
                        if len(cols) > 12 and cols[9] == inode:
                            return int(cols[-1])
        except (OSError, ValueError, StopIteration):
            pass
        return None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


class SerialLink:
    # One serial port (USB adapter, RS-485, pty). A port that fails or is missing is
    # reopened with backoff; a fresh Deframer resynchronises on the next 0x00.
    kind = "serial"
    BACKOFF_MIN_S = 0.2
    BACKOFF_MAX_S = 5.0

    def __init__(self, port: str, baudrate: int, submit: Submit, reject: Reject,
                 keys: Callable[[], Mapping[str, bytes]] | None = None) -> None:
        self.port = port
        self.baudrate = baudrate
        self.name = f"serial {port}"
        self.submit = submit
        self.reject = reject
        self.keys = keys or dict  # keys() -> node -> key: a radio modem's packets name nodes by address
        self.radio: Any = None  # a LoRa radio modem on this port (gateway/radio.py), once it sent a packet
        self.ser = None
        self.opened = 0  # times the port was (re)opened, for tests and the status page
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ingest-{self.name}", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def describe(self, addr: object) -> str:
        if isinstance(addr, tuple) and self.radio is not None:
            return self.radio.describe(addr)
        return self.name

    def reception(self, addr: object) -> dict[str, float] | None:
        # RSSI and SNR of a frame a radio modem heard (gateway/radio.py), None for plain serial
        if isinstance(addr, tuple) and self.radio is not None:
            return self.radio.reception(addr)
        return None

    def _open(self) -> serial.Serial:
        ser = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0.25, write_timeout=0.5)
        with self._lock:
            self.ser = ser
        self.opened += 1
        return ser

    def _close(self) -> None:
        with self._lock:
            ser, self.ser = self.ser, None
        if ser is not None:
            try:
                ser.close()
            except (OSError, serial.SerialException):
                pass

    def _run(self) -> None:
        osthread.name("cn-serial")
        backoff = self.BACKOFF_MIN_S
        last_error = None
        while not self._stop.is_set():
            try:
                ser = self._open()
            except (OSError, ValueError, serial.SerialException) as e:
                if str(e) != last_error:
                    log.warning("%s: cannot open (%s); retrying with backoff", self.name, e)
                    last_error = str(e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.BACKOFF_MAX_S)
                continue
            log.info("%s: open at %d baud", self.name, self.baudrate)
            backoff, last_error = self.BACKOFF_MIN_S, None
            try:
                self._read(ser)
            except (OSError, serial.SerialException) as e:
                log.warning("%s: lost (%s); reopening", self.name, e)
            self._close()

    def _read(self, ser: serial.Serial) -> None:
        deframer = cobs.Deframer()
        while not self._stop.is_set():
            data = ser.read(1)
            if not data:
                continue
            waiting = ser.in_waiting
            if waiting:
                data += ser.read(waiting)
            now = time.time()
            for kind, value in deframer.feed(data):
                if kind == "frame":
                    if value[:1] == MODEM_BYTE:  # a packet from a LoRa radio modem (SPEC.md 13.5)
                        if self.radio is None:
                            from gateway.radio import Radio

                            self.radio = Radio(self)
                        self.radio.received(value, now)
                        continue
                    self.submit((value, self, None, now))
                elif kind == "noise":
                    self.reject(value, self.name, "serial noise")
                else:
                    log.debug("%s console: %s", self.name, value.decode("ascii", "replace").rstrip())

    def send(self, addr: object, message: bytes) -> bool:
        if isinstance(addr, tuple) and self.radio is not None:
            body = self.radio.downlink(addr, message)  # compact, behind the modem byte
            if body is None:
                return False
            message = body
        with self._lock:
            ser = self.ser
            if ser is None:
                return False
            try:
                ser.write(cobs.encode(message))
                return True
            except (OSError, serial.SerialException):
                return False  # the reader notices the loss and reopens

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._close()


def open_links(settings_list: Iterable[IngestSettings], submit: Submit, reject: Reject,
               keys: Callable[[], Mapping[str, bytes]] | None = None) -> list[Any]:
    # keys() -> the current node -> key dict (the ChirpStack ingest maps LoRa addresses to nodes)
    links = []
    for i, s in enumerate(settings_list):
        if s.kind == "chirpstack":
            from gateway.chirpstack import ChirpStackLink

            links.append(ChirpStackLink(s, submit, reject, keys or dict))
            continue
        if s.kind == "udp":
            assert s.listen is not None  # config.py: a udp link has listen, a serial one port
            try:
                links.append(UdpLink(s.listen[0], s.listen[1], submit, reject))
            except OSError as e:
                for link in links:
                    if isinstance(link, UdpLink):
                        link.sock.close()
                raise OSError(f"[ingest.{i}] listen {s.listen[0]}:{s.listen[1]}: {e.strerror or e}") from None
        else:
            assert s.port is not None
            links.append(SerialLink(s.port, s.baudrate, submit, reject, keys))  # opened (and retried) by its thread
    return links
