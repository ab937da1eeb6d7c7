# The one module that knows paho-mqtt's private internals; everything else in the gateway
# uses paho's public API. What the publisher (gateway/mqtt.py) gets from here:
#   Client(...)              paho's client, its socket wrapped in a BufferedSocket
#   Client.publish_outbox    a lean QoS 1 PUBLISH of an outbox row -> message id
#   Client.on_outbox_puback  (message id) -> True when it was an outbox publish
#   Client.read_all()        every packet readable now, like loop_read()
#   require()                refuses (PahoIncompatible, one line) a paho whose internals differ
#
# paho 2.x makes four system calls per QoS 1 message: a send() for each PUBLISH, and
# three recv() calls for each PUBACK (packet type, length, body). Measured in the gateway
# at saturation that was ~45 us of ~130 us per frame. BufferedSocket sits between paho and
# its socket: it reads up to 64 KiB at a time and serves paho's small reads from memory,
# and it collects paho's writes until flush(), which the publisher's loop calls before it
# sleeps in select(). Client installs it through paho's socket factory.
#
# Client.publish_outbox is the outbox rows' QoS 1 publish without paho's per-message
# objects (MQTTMessage, MQTTMessageInfo, and a ReasonCode and Properties per PUBACK even on
# MQTT 3.1.1, ~20 us per message here): the PUBLISH packet is written directly (MQTT 3.1.1
# section 3.3, message id from paho's own generator), and its PUBACK goes to
# on_outbox_puback. Client.read_all takes every packet that is readable now in one call:
# a run of PUBACKs for outbox publishes (4 bytes each, MQTT 3.1.1 section 3.4) is parsed
# straight from the buffer, any other packet goes through paho's reader (paho's own
# loop_read takes one packet per call, i.e. a select() and a loop turn per PUBACK: ~50 us
# per frame at saturation). Everything else (connect, will, subscribe, keepalive, the retained
# states) stays paho's.
#
# The internals it relies on are listed in INTERNALS and checked by require() before the
# first client is made: a paho release that renamed or re-shaped one is refused with a line
# that says which, instead of a publisher that fails in odd ways later. paho-mqtt is pinned
# to SUPPORTED in pyproject.toml; tests/gateway/test_paho_adapter.py checks the installed
# version (and how paho's own code uses these internals) and runs the client against a real
# mosquitto, so an upgrade fails there first.
from __future__ import annotations

import functools
import importlib.metadata
import inspect
import socket
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from gateway import InstallError

READ_SIZE = 65536
SUPPORTED = ((2, 1), (3, 0))  # paho-mqtt versions: at least the first, below the second (pyproject.toml)
# paho.mqtt.client.Client's private methods used here: name -> its parameters
METHODS = {"_create_socket": ("self",), "_mid_generate": ("self",), "_handle_pubackcomp": ("self", "cmd")}
# and the attributes of a new client: name -> what it must be
ATTRIBUTES = {"_sock": "None before connect()", "_in_packet": "a dict with 'command' and 'packet'",
              "_last_bytes_received": "a number (paho's keepalive clock)"}
INTERNALS = tuple(METHODS) + tuple(ATTRIBUTES) + ("paho.mqtt.client.time_func",)


class PahoIncompatible(InstallError, ValueError):
    # the daemon's start reports it in one line (`cannot start: ...`, gateway/cli.py), exit 78
    pass


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split(".")[:2]:
        digits = "".join(c for c in p if c.isdigit()) if p else ""
        parts.append(int(digits or 0))
    return tuple(parts)


def version_problem(version: str | None = None) -> str | None:
    # -> why the installed (or the given) paho-mqtt version is not the one this module knows, or None
    if version is None:
        try:
            version = importlib.metadata.version("paho-mqtt")
        except importlib.metadata.PackageNotFoundError:
            return "paho-mqtt is not installed"
    v = _version(version)
    if not SUPPORTED[0] <= v < SUPPORTED[1]:
        lo, hi = (".".join(map(str, x)) for x in SUPPORTED)
        return f"paho-mqtt {version} is installed; gateway/paho_adapter.py is written for >={lo},<{hi}"
    return None


def problems(client_cls: type | None = None, module: Any = None, version: str | None = None) -> list[str]:
    # -> what is not as this module relies on, for the installed paho (or the given class,
    # module and version): an empty list when all is in place
    module = module if module is not None else mqtt
    cls: Any = client_cls if client_cls is not None else module.Client
    out = []
    vp = version_problem(version)
    if vp:
        out.append(vp)
    for name, params in METHODS.items():
        fn = getattr(cls, name, None)
        if not callable(fn):
            out.append(f"Client.{name} is missing")
            continue
        try:
            got = tuple(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            got = None
        if got != params:
            out.append(f"Client.{name} takes {got}, expected {params}")
    try:
        c = cls(module.CallbackAPIVersion.VERSION2)
    except Exception as e:  # noqa: BLE001 - any failure is the answer
        out.append(f"Client(CallbackAPIVersion.VERSION2) fails: {e!r}")
        return out
    if getattr(c, "_sock", 0) is not None:
        out.append(f"Client._sock is not {ATTRIBUTES['_sock']}")
    packet = getattr(c, "_in_packet", None)
    if not (isinstance(packet, dict) and "command" in packet and "packet" in packet):
        out.append(f"Client._in_packet is not {ATTRIBUTES['_in_packet']}")
    if not isinstance(getattr(c, "_last_bytes_received", None), int | float):
        out.append(f"Client._last_bytes_received is not {ATTRIBUTES['_last_bytes_received']}")
    if not callable(getattr(module, "time_func", None)):
        out.append("paho.mqtt.client.time_func is missing")
    return out


@functools.cache
def require() -> None:
    # before the first client: the installed paho is the one this module was written for, or
    # PahoIncompatible saying what differs (checked once per process)
    found = problems()
    if found:
        raise PahoIncompatible("the installed paho-mqtt does not fit gateway/paho_adapter.py: " + "; ".join(found)
                               + " (install the version pyproject.toml pins, paho-mqtt>=2.1,<3)")
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class BufferedSocket:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._in = b""
        self._pos = 0
        self._out = bytearray()

    # ------------------------------------------------------------ what paho calls

    def recv(self, n: int) -> bytes | bytearray:
        buf, pos = self._in, self._pos
        if pos >= len(buf):
            buf = self.sock.recv(READ_SIZE)  # BlockingIOError / SSLWantReadError reach paho as before
            if not buf:
                return buf  # the broker closed the connection
            self._in, pos = buf, 0
        self._pos = pos + n
        return buf[pos:pos + n]

    def buffered(self) -> int:
        return len(self._in) - self._pos

    def fill(self) -> int:
        # one recv from the socket into an empty buffer: -> bytes read, 0 when none are
        # readable now, -1 when the broker closed the connection
        try:
            buf = self.sock.recv(READ_SIZE)
        except _WOULD_BLOCK:
            return 0
        if not buf:
            return -1
        self._in, self._pos = buf, 0
        return len(buf)

    def take_pubacks(self, hook: Callable[[int], bool]) -> int:
        # consume the PUBACKs at the head of the buffer that hook(message id) claims; -> how many
        buf, pos = self._in, self._pos
        end = len(buf) - 3
        start = pos
        while pos < end and buf[pos] == 0x40 and buf[pos + 1] == 2 and hook((buf[pos + 2] << 8) | buf[pos + 3]):
            pos += 4
        self._pos = pos
        return (pos - start) >> 2

    def send(self, data: bytes) -> int:
        self._out += data
        return len(data)

    def pending(self) -> int:
        # bytes readable without the socket: ours, and those an ssl socket has decrypted
        n = len(self._in) - self._pos
        if n > 0:
            return n
        inner = getattr(self.sock, "pending", None)
        return inner() if inner is not None else 0

    def close(self) -> None:
        try:
            self.flush()  # a DISCONNECT paho just wrote; best effort, never blocks
        except OSError:
            pass
        self.sock.close()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def fileno(self) -> int:
        return self.sock.fileno()

    def __getattr__(self, name: str) -> Any:  # anything else paho may ask a socket (getpeername, ...)
        return getattr(self.sock, name)

    # ------------------------------------------------------------ what the publisher calls

    def want_write(self) -> bool:
        return bool(self._out)

    def flush(self) -> bool:
        # Write what paho queued. -> True when all of it went; False when the kernel's
        # buffer is full (select for writing, then flush again). OSError: connection lost.
        out = self._out
        while out:
            try:
                n = self.sock.send(out)
            except _WOULD_BLOCK:
                return False
            except ValueError:  # closed meanwhile
                out.clear()
                raise OSError("socket closed") from None
            del out[:n]
        return True


def _remaining_length(n: int) -> bytes:
    # MQTT 3.1.1 section 2.2.3: 7 bits per byte, least significant first
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


class Client(mqtt.Client):
    # paho's client with its socket wrapped in a BufferedSocket, and a lean QoS 1 publish
    # for outbox rows (see above)
    on_outbox_puback: Callable[[int], bool] | None = None  # (message id) -> True when it was an outbox publish

    def __new__(cls, *args: Any, **kw: Any) -> Client:  # noqa: ARG004 - paho's __init__ takes them
        require()  # before an instance exists: a refused one leaves nothing for paho's __del__
        return super().__new__(cls)

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if isinstance(sock, socket.socket):  # plain TCP and ssl.SSLSocket (a subclass)
            return BufferedSocket(sock)
        return sock

    def publish_outbox(self, topic: str, payload: bytes, retain: bool = False) -> int | None:
        # -> the message id, or None when there is no connection
        sock = self._sock
        if not isinstance(sock, BufferedSocket):
            return None
        heads = self.__dict__.setdefault("_outbox_heads", {})
        head = heads.get((topic, retain))
        if head is None:
            t = topic.encode()
            if not t or len(t) > 65535 or b"+" in t or b"#" in t:
                raise ValueError(f"not a topic to publish to: {topic!r}")
            head = heads[(topic, retain)] = (0x33 if retain else 0x32, len(t).to_bytes(2, "big") + t)
        if isinstance(payload, str):
            payload = payload.encode()
        mid = self._mid_generate()
        sock.send(b"".join((bytes((head[0],)), _remaining_length(len(head[1]) + 2 + len(payload)), head[1],
                            mid.to_bytes(2, "big"), payload)))
        return mid

    def read_all(self, max_reads: int = 8) -> MQTTErrorCode:
        # Everything readable now (select() said so): -> paho's error code, as loop_read's.
        # PUBACKs of outbox publishes come from the buffer without paho, other packets (and
        # a packet split between two reads) through paho's loop_read, one packet per call.
        sock = self._sock
        hook = self.on_outbox_puback
        if not isinstance(sock, BufferedSocket) or hook is None:
            return self.loop_read()
        reads = 0
        short = False  # the last read did not fill the buffer: the socket had no more then
        while True:
            if self._in_packet["command"] == 0 and sock.take_pubacks(hook):
                self._last_bytes_received = mqtt.time_func()  # paho's keepalive clock
            if sock.buffered() > 0:
                rc = self.loop_read()
                if rc:
                    return rc
                continue
            inner = getattr(sock.sock, "pending", None)  # TLS: decrypted bytes wait in the ssl object
            if (short or reads >= max_reads) and not (inner is not None and inner()):
                return MQTTErrorCode.MQTT_ERR_SUCCESS  # select() says when more comes
            reads += 1
            try:
                got = sock.fill()
            except OSError:
                got = -1
            if got == 0:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            if got < 0:
                return self.loop_read()  # paho reads the end of the connection itself and says so
            short = got < READ_SIZE

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        hook = self.on_outbox_puback
        if cmd == "PUBACK" and hook is not None:
            pkt = self._in_packet["packet"]
            if len(pkt) >= 2 and hook((pkt[0] << 8) | pkt[1]):
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_pubackcomp(cmd)
