# `citynode monitor (--port PORT | --udp HOST:PORT) [--keys FILE]`: what a node sends, live.
# One row per frame (node, boot/seq, gaps, MAC, flags, readings) and the node's console
# lines as they come; a summary per node at the end. Passive: it never answers a node.
from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from gateway.labels import FLAGS
from protocol import cobs, cose, message, senml
from protocol.cbor import FrameError
from tools.cli import CliError, UsageError, hostport, hostport_arg, positive

# the envelope's words for the flags (gateway/labels.py), the alarm in capitals to stand out
FLAG_NAMES = tuple((bit, name.upper() if bit == message.F_ALARM else name) for bit, name in FLAGS)
IDLE_FLUSH_S = 0.2  # console text without a delimiter is shown after this much quiet


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--port", help="serial port, e.g. /dev/ttyUSB0")
    src.add_argument("--udp", metavar="HOST:PORT", type=hostport_arg,
                     help="listen for UDP frames here (instead of the gateway)")
    p.add_argument("--baud", type=positive(int), default=115200, help="serial baud rate (%(default)s)")
    p.add_argument("--keys", help="gateway keys file: verify each frame's MAC")
    p.add_argument("--count", type=positive(int), help="stop after this many frames")
    p.add_argument("--duration", type=positive(float), help="stop after this many seconds")
    p.add_argument("--hex", action="store_true",
                   help="print each frame's bytes as hex under its line (for citynode decode)")


class FrameTable:
    # Decodes frames and keeps per-node counts: frames, MAC ok/failed, gaps, resends
    def __init__(self, keys: Any = None, out: TextIO | None = None, hex_frames: bool = False) -> None:
        self.keys = keys
        self.key_for = getattr(keys, "verifier", None) or (keys.get if keys is not None else None)
        self.hex_frames = hex_frames  # a line "  hex <frame>" under each frame: citynode decode takes it
        self.out = out or sys.stdout
        self.nodes = {}  # node -> dict of counts and last (boot, seq)
        self.rejects = {}
        self.frames = 0
        self._header = False

    def _node(self, node: str) -> dict[str, Any]:
        return self.nodes.setdefault(node, {"frames": 0, "mac_ok": 0, "mac_failed": 0, "gaps": 0,
                                            "resent": 0, "boot": None, "seq": None})

    def row(self, text: str) -> None:
        if not self._header:
            self.out.write(f"{'time':8} {'node':12} {'boot/seq':>10} {'gap':>6} {'MAC':6} {'flags':8} readings\n")
            self._header = True
        self.out.write(text + "\n")
        self.out.flush()

    def console(self, text: bytes, source: str = "") -> None:
        line = text.decode("utf-8", "replace").rstrip("\r\n")
        for part in line.splitlines() or [""]:
            self.out.write(f"{time.strftime('%H:%M:%S')} {source}| {part}\n")
        self.out.flush()

    def noise(self, reason: str) -> None:
        self.rejects[reason] = self.rejects.get(reason, 0) + 1

    def frame(self, raw: bytes) -> dict[str, Any] | None:
        now = time.strftime("%H:%M:%S")
        try:
            kid, _prot, payload, _tag = cose.parse(raw)
            m = message.parse_payload(payload)
            node = kid.decode()
        except (FrameError, UnicodeError) as e:
            reason = getattr(e, "reason", "kid")
            self.noise(reason)
            self.row(f"{now:8} {'?':12} {'':>10} {'':>6} {'-':6} {'':8} rejected: {reason} ({len(raw)} bytes)")
            self._hex(raw)
            return None
        mac = "-"
        st = self._node(node)
        if self.keys is not None:
            try:
                message.decode(raw, self.key_for)
                mac = "ok"
                st["mac_ok"] += 1
            except FrameError as e:
                mac = "FAILED" if e.reason == "mac" else e.reason
                st["mac_failed"] += 1
        if m["type"] != "data":
            self.row(f"{now:8} {node:12} {m['boot']:>5}/{m.get('seq', '-')!s:<4} {'':>6} {mac:6} {m['type']}")
            self._hex(raw)
            return m
        gap = self._gap(st, m["boot"], m["seq"])
        st["frames"] += 1
        self.frames += 1
        flags = ",".join(name for bit, name in FLAG_NAMES if m["flags"] & bit)
        readings = " ".join(f"{r['n']}={r.get('v', r.get('vs', r.get('vb')))}{r.get('u', '')}"
                            for r in senml.to_json(m["records"]))
        if m["info"]:
            readings += "  info " + " ".join(f"{k}={v}" for k, v in sorted(m["info"].items()))
        if m["cmd_result"]:
            readings += "  cmd %d -> %d" % tuple(m["cmd_result"])
        self.row(f"{now:8} {node:12} {m['boot']:>5}/{m['seq']:<4} {gap:>6} {mac:6} {flags:8} {readings}")
        self._hex(raw)
        m["node"] = node
        return m

    def _hex(self, raw: bytes) -> None:
        if self.hex_frames:
            self.out.write(f"{'':8} hex {bytes(raw).hex()}\n")
            self.out.flush()

    def _gap(self, st: dict[str, Any], boot: int, seq: int) -> str:
        last_boot, last_seq = st["boot"], st["seq"]
        if last_boot is None or boot != last_boot:
            st["boot"], st["seq"] = boot, seq
            return "boot" if last_boot is not None else ""
        if seq <= last_seq:
            st["resent"] += 1
            return "resend"
        st["seq"] = seq
        if seq > last_seq + 1:
            st["gaps"] += seq - last_seq - 1
            return f"+{seq - last_seq - 1}"
        return ""

    def summary(self) -> list[str]:
        lines = []
        for node, st in sorted(self.nodes.items()):
            mac = f", MAC ok {st['mac_ok']} failed {st['mac_failed']}" if self.keys is not None else ""
            lines.append(f"{node}: {st['frames']} frames{mac}, {st['gaps']} missing seq, {st['resent']} resent")
        if self.rejects:
            lines.append("rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(self.rejects.items())))
        lines.append(f"{self.frames} frames from {len(self.nodes)} nodes")
        return lines


def open_port(port: str, baud: int) -> Any:
    # exclusive: while the monitor watches a port, `citynode flash` (and a second monitor)
    # is told "port busy" instead of fighting over the bytes
    from tools.ports import open_exclusive

    return open_exclusive(port, baud)


def watch_serial(ser: Any, port: str, baud: int, table: FrameTable, stop: Callable[[], object]) -> None:
    import serial

    deframer = cobs.Deframer()
    quiet_since = time.monotonic()
    try:
        while not stop():
            try:
                data = ser.read(4096)
            except serial.SerialException:
                table.console(b"[port went away; waiting for it to come back]", "monitor ")
                ser.close()
                ser = None
                ser = reopen(port, baud, stop)
                if ser is None:
                    return
                continue
            if data:
                quiet_since = time.monotonic()
                for kind, body in deframer.feed(data):
                    if kind == "frame":
                        table.frame(body)
                    elif kind == "text":
                        table.console(body)
                    else:
                        table.noise(body)
            elif time.monotonic() - quiet_since > IDLE_FLUSH_S:
                text = deframer.pending_text()
                if text:
                    table.console(text)
    finally:
        if ser is not None:
            ser.close()


def reopen(port: str, baud: int, stop: Callable[[], object]) -> Any:
    while not stop():
        try:
            return open_port(port, baud)
        except CliError:
            time.sleep(0.5)
    return None


def open_udp(addr: str) -> socket.socket:
    host, port = hostport(addr, "--udp")
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except socket.gaierror:
        raise UsageError(f"--udp {addr}: cannot resolve {host!r}; give an address such as 127.0.0.1:5683") from None
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind(sockaddr)
    except OSError as e:
        sock.close()
        raise CliError(f"cannot listen on {addr}: {e.strerror} (is the gateway or another monitor there?)") \
            from None
    return sock


def watch_udp(sock: socket.socket, table: FrameTable, stop: Callable[[], object]) -> None:
    with sock:
        sock.settimeout(0.1)
        while not stop():
            try:
                data, _ = sock.recvfrom(cobs.MAX_MESSAGE + 1)
            except TimeoutError:
                continue
            if len(data) > cobs.MAX_MESSAGE:
                table.noise("oversize")
                continue
            table.frame(data)


def run(args: argparse.Namespace) -> int:
    keys = None
    if args.keys:
        from tools.cli import load_keys_option

        keys = load_keys_option(args.keys)
    table = FrameTable(keys, hex_frames=args.hex)
    deadline = time.monotonic() + args.duration if args.duration else None

    def stop():
        return (deadline is not None and time.monotonic() >= deadline) or \
            (args.count is not None and table.frames >= args.count)

    source = args.port or args.udp
    opened = open_port(args.port, args.baud) if args.port else open_udp(args.udp)  # CliError: one line
    print(f"monitoring {source}" + (f" with keys from {args.keys}" if keys else " (no --keys: MAC not checked)"),
          file=sys.stderr)
    import serial

    try:
        if args.port:
            watch_serial(opened, args.port, args.baud, table, stop)
        else:
            watch_udp(opened, table, stop)
    except KeyboardInterrupt:
        pass
    except (OSError, serial.SerialException) as e:
        raise CliError(f"cannot use {source}: {getattr(e, 'strerror', None) or e}") from None
    finally:
        for line in table.summary():
            print(line)
    return 0
