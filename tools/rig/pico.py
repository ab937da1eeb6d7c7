# The emulated Raspberry Pi Pico: the real MicroPython v1.28.0 rp2 image on npm rp2040js,
# run by tools/rig/pico/runner.mjs (Node.js) in its own process, behind a pty like a Pico on
# USB (`citynode flash`, `citynode monitor`, mpremote and the gateway's serial ingest open
# the pty path as they would /dev/ttyACM0). This side owns the pty, powers the board on,
# cuts its power, and drives its sensors from the simulated world (firmware/sim): BME280
# raw values on I2C0, A02YYUW frames on UART1 at 9600 baud, the 4-20 mA probe on ADC0,
# trigger/echo pulses and a tipping-bucket rain gauge's reed switch on GPIO22, all as
# functions of the world at the board's emulated time.
#
# The images come from the rig folder: $CITYNODE_RIG_DIR, else ../shared/rig next to the
# repository (see hil_tests/README.md); their checksums are checked against its SHA256SUMS.
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import selectors
import shutil
import socket
import subprocess
import threading
import time
import tty
from collections.abc import Callable
from typing import Any, Self

from firmware.drivers.hydrostatic import SETTINGS as HYDROSTATIC
from tools.cli import UsageError
from tools.rig.board import MARK_SPEED, PtyOutput, _set_speed, piped

REPO = pathlib.Path(__file__).resolve().parents[2]
RUNNER_DIR = pathlib.Path(__file__).with_name("pico")
RUNNER = RUNNER_DIR / "runner.mjs"
IMAGE = "RPI_PICO-v1.28.0.uf2"
BOOTROM = "bootrom-rp2040-b1.bin"
FLASH_BYTES = 2 * 1024 * 1024
SHUNT_OHM = 150  # the 4-20 mA loop's shunt to GND (hil_tests/README.md wiring)
PROBE_SPAN_MM = HYDROSTATIC["span_mm"][1]  # level at 20 mA: the probe a config's default span says
ADC_CHANNEL = 0  # GPIO26, firmware/boards/rp2.py loop_adc
RAIN_GPIO = 22  # the rain gauge's reed switch to GND (runner.mjs rainGauge; config "pin": 22)
RAIN_MM_PER_TIP = 0.2  # a Davis rain collector with its metric adapter
# How long the emulated Pico may stay silent inside one raw-REPL command (tools.upload.BoardFs
# wait_s; hil_tests pass it to citynode flash as --timeout): it runs a command in about 1.5 s
# that a Pico runs in tens of ms (a sha256 of 40 files), and ten times slower on a loaded core
REPL_WAIT_S = 60


class RigMissing(UsageError):
    # what this machine lacks to run the emulated Pico, in one line (exit 2)
    pass


def rig_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CITYNODE_RIG_DIR") or REPO.parent / "shared" / "rig")


_checked = {}


def find_images() -> tuple[pathlib.Path, pathlib.Path]:
    # -> (image, bootrom) paths, checked against SHA256SUMS; RigMissing names what is missing
    d = rig_dir()
    if str(d) in _checked:
        return _checked[str(d)]
    sums_file = d / "SHA256SUMS"
    if not sums_file.is_file():
        raise RigMissing(f"no Pico images: {sums_file} not found (set CITYNODE_RIG_DIR to the folder with "
                         f"{IMAGE}, {BOOTROM} and SHA256SUMS)")
    sums = {}
    for line in sums_file.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0]
    out = []
    for name in (IMAGE, BOOTROM):
        p = d / name
        if not p.is_file():
            raise RigMissing(f"no Pico image: {p} not found (CITYNODE_RIG_DIR={d})")
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if sums.get(name) != digest:
            raise RigMissing(f"{p}: sha256 {digest[:16]}... does not match {sums_file}")
        out.append(p)
    _checked[str(d)] = tuple(out)
    return _checked[str(d)]


def node_binary() -> str:
    exe = shutil.which("node") or shutil.which("nodejs")
    if not exe:
        raise RigMissing("no Node.js: the emulated Pico needs `node` (apt-get install nodejs npm)")
    if not (RUNNER_DIR / "node_modules" / "rp2040js" / "package.json").is_file():
        raise RigMissing(f"rp2040js not installed: run `npm ci` in {RUNNER_DIR} (make does it)")
    return exe


def check() -> str | None:
    # -> None when the emulated Pico can run here, else the one-line reason
    try:
        find_images()
        node_binary()
    except RigMissing as e:
        return str(e)
    return None


class EmulatedClock:
    # the world's clock: the board's emulated milliseconds, times `speed` (a storm in minutes)
    def __init__(self, rig: PicoRig, speed: float = 1.0, start_ms: int = 0) -> None:
        self.rig = rig
        self.speed = speed
        self.start_ms = start_ms

    def ms(self) -> int:
        return int(self.start_ms + self.rig.emulated_ms * self.speed)

    def sleep_ms(self, ms: int) -> None:
        pass


class RigClock:
    def __init__(self, rig: PicoRig) -> None:
        self.rig = rig

    def ms(self) -> int:
        return int(self.rig.emulated_ms)


class PicoWorld:
    # the simulated world as the board's sensors see it (firmware/sim/world.py)
    def __init__(self, rig: PicoRig, speed: float = 1.0, **params: Any) -> None:
        from firmware.sim.devices import DATASHEET_CALIB, BME280Sim, LoopAdc, UltrasonicUart, calib_bytes
        from firmware.sim.world import World

        self.clock = EmulatedClock(rig, speed, params.pop("start_ms", 0))
        self.world = World(self.clock, **params)
        self.bme = BME280Sim(self.world)
        self.calib = calib_bytes(DATASHEET_CALIB)
        self.sonar = UltrasonicUart(self.world, RigClock(rig))
        self.loop = LoopAdc(self.world, shunt_ohm=SHUNT_OHM, span_mm=PROBE_SPAN_MM)
        self._buf = bytearray(256)

    def first(self) -> dict[str, str]:
        a, b = self.calib
        return {"calib": a.hex(), "calib_h": b.hex()}

    def update(self) -> dict[str, Any]:
        from firmware.level import speed_of_sound_mm_s

        w = self.world
        m: dict[str, Any] = {"bme280": list(self.bme._invert())}
        n = self.sonar.readinto(self._buf)
        if n:
            m["uart1"] = bytes(self._buf[:n]).hex()
        m["adc"] = [ADC_CHANNEL, self.loop.read_u16() >> 4]  # the RP2040 ADC has 12 bits
        d = w.echo_mm()
        m["echo_us"] = 0 if d is None else int(2 * d * 1e6 / speed_of_sound_mm_s(w.temp_c()))
        m["rain_tips"] = int(w.rain_fallen_mm() / RAIN_MM_PER_TIP)  # the runner makes each one not yet made
        return m


class PicoRig(PtyOutput):
    # An emulated Pico on a pty. The board powers on when the port is first opened (as a
    # board is plugged in when the terminal is ready), keeps running while the port is
    # closed (what it prints then is dropped: no USB host reads it), and keeps its flash in
    # `flash_file` across resets, power cuts and runs.
    def __init__(self, flash_file: str | os.PathLike[str], world: dict[str, Any] | None = None,
                 log: Callable[[str], None] | None = None, power_on_open: bool = True) -> None:
        self.flash_file = str(flash_file)
        self.world_params = dict(world or {})
        self.log = log
        self.power_on_open = power_on_open
        self.port = ""  # the pty's path, from start() on
        self.emulated_ms = 0.0
        self.counters = {}
        self.events = []  # control events from the runner, oldest first (boot, power_cut, report)
        self.listeners = []  # callables given every control event (tools/rig/lora_air.py: the radio)
        self.boots = 0
        self.dropped = 0
        self.exit_status = None
        self._proc = None
        self._ctl = None
        self._ctl_buf = b""
        self._out = bytearray()
        self._to_dev = bytearray()
        self._connected = False
        self._world = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = None
        self._requests = []

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        self.image, self.bootrom = find_images()
        self.node = node_binary()
        self._master, slave = os.openpty()
        tty.setraw(slave)
        _set_speed(slave, MARK_SPEED)
        self.port = os.ttyname(slave)
        os.close(slave)  # POLLHUP on the master then says whether a host holds the port
        os.set_blocking(self._master, False)
        self._wake_r, self._wake_w = os.pipe()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        if not self.power_on_open:
            self._power_on()
        self._thread = threading.Thread(target=self._loop, name="pico-rig", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        super().stop()  # PtyOutput: thread, emulator, pty, wake pipe
        self._sel.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ what tests and tools call

    def power_cut(self) -> None:
        # pull the plug: the runner dies at once; the flash file keeps what was written
        self._request("cut")

    def power_on(self) -> None:
        self._request("on")

    def cut_during_flash_write(self) -> None:
        # the power fails half way through the board's next flash page program
        self.control({"cut": "program"})

    def control(self, msg: dict[str, Any]) -> None:
        with self._lock:
            ctl = self._ctl
        if ctl is not None:
            try:
                ctl.sendall((json.dumps(msg) + "\n").encode())
            except OSError:
                pass

    def report(self, timeout: int = 5) -> dict[str, Any]:
        # -> the runner's counters now: erases, programs, program_bytes, watchdog_resets, resets, boots, ms
        n = len(self.events)
        self.control({"report": True})
        return self.wait_event(lambda e: e["ev"] == "report", timeout, start=n)

    def wait_event(self, pred: Callable[[dict[str, Any]], bool], timeout: float, start: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events[start:]:
                    if pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the emulated Pico sent no such event within %s s" % timeout)
                self._cond.wait(left)

    @property
    def world(self) -> Any:
        # the simulated world the board's sensors see now (firmware/sim/world.py World)
        return self._world.world if self._world is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------ the runner process

    def _request(self, what: str) -> None:
        with self._lock:
            self._requests.append(what)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _power_on(self) -> None:
        self._kill()
        ours, theirs = socket.socketpair()
        proc = self._proc = subprocess.Popen(
            [self.node, str(RUNNER), "--image", str(self.image), "--bootrom", str(self.bootrom),
             "--flash", self.flash_file, "--ctl-fd", str(theirs.fileno())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, pass_fds=(theirs.fileno(),))
        theirs.close()
        ours.setblocking(False)
        with self._lock:
            self._ctl = ours
            self._ctl_buf = b""
            self.exit_status = None
        self._to_dev.clear()
        dev_in, dev_out = piped(proc.stdin), piped(proc.stdout)
        os.set_blocking(dev_out.fileno(), False)
        os.set_blocking(dev_in.fileno(), False)
        self._sel.register(dev_out, selectors.EVENT_READ, "dev")
        self._sel.register(ours, selectors.EVENT_READ, "ctl")
        world = self._world = PicoWorld(self, **self.world_params)
        self.control(world.first())
        self.control(world.update())

    def _kill(self) -> None:
        p, self._proc = self._proc, None
        with self._lock:
            ctl, self._ctl = self._ctl, None
        for f in (p.stdout if p else None, ctl):
            if f is not None:
                try:
                    self._sel.unregister(f)
                except (KeyError, ValueError):
                    pass
        if ctl is not None:
            ctl.close()
        if p is None:
            return
        if p.poll() is None:
            p.kill()
        p.wait()
        self.exit_status = p.returncode
        for f in (piped(p.stdin), piped(p.stdout)):
            try:
                f.close()
            except OSError:
                pass

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._step()
        finally:
            self._kill()

    def _step(self) -> None:
        if not self._connected and self._host_attached():
            self._wait_for_client_setup()
            self._connected = True
            self._sel.register(self._master, selectors.EVENT_READ, "port")
            if self._proc is None and self.power_on_open and self.boots == 0:
                self._power_on()
        with self._lock:
            requests, self._requests = self._requests, []
        for r in requests:
            if r == "cut":
                self._kill()
                self._event({"ev": "power_off"})
            elif r == "on":
                self._power_on()
        self._flush_out()
        self._flush_dev()
        timeout = 0.02 if (not self._connected or self._out or self._to_dev) else 0.5
        for key, _ in self._sel.select(timeout):
            if key.data == "wake":
                os.read(self._wake_r, 64)
            elif key.data == "port":
                self._read_port()
            elif key.data == "dev":
                self._read_dev()
            elif key.data == "ctl":
                self._read_ctl()

    def _read_port(self) -> None:
        data = self._read_host()
        if data and self._proc is not None:
            self._to_dev += data

    def _flush_dev(self) -> None:
        while self._to_dev and self._proc is not None:
            try:
                n = os.write(piped(self._proc.stdin).fileno(), self._to_dev[:65536])
            except BlockingIOError:
                return
            except OSError:
                self._to_dev.clear()
                return
            del self._to_dev[:n]

    def _read_dev(self) -> None:
        if self._proc is None:
            return  # powered off since select() said it was readable
        try:
            data = os.read(piped(self._proc.stdout).fileno(), 65536)
        except BlockingIOError:
            return
        if not data:
            self._runner_exited()
            return
        self._emit(data)

    def _read_ctl(self) -> None:
        ctl = self._ctl
        if ctl is None:
            return  # powered off since select() said it was readable
        try:
            data = ctl.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            try:
                self._sel.unregister(ctl)
            except (KeyError, ValueError):
                pass
            return
        self._ctl_buf += data
        *lines, self._ctl_buf = self._ctl_buf.split(b"\n")
        for line in lines:
            if line.strip():
                self._event(json.loads(line))

    def _event(self, e: dict[str, Any]) -> None:
        ev = e.get("ev")
        if "ms" in e:
            self.emulated_ms = e["ms"]
        for listen in self.listeners:
            listen(e)
        if ev and ev.startswith("lora_"):
            return  # radio traffic: for the air, not kept
        if ev in ("tick", "boot") and self._world is not None:
            self.control(self._world.update())
        with self._cond:
            self.counters = {k: v for k, v in e.items() if k != "ev"} or self.counters
            if ev == "boot":
                self.boots += 1
            if ev != "tick":
                self.events.append(e)
                if self.log:
                    self.log("event " + json.dumps(e))
            self._cond.notify_all()

    def _runner_exited(self) -> None:
        p = self._proc
        self._kill()
        if self.log:
            self.log("runner exited with status %s" % (p.returncode if p else None))
        self._event({"ev": "exit", "status": p.returncode if p else None})


# ------------------------------------------------------------ the board's REPL (tests, bench)


def stop_at_boot(port: str, timeout: int = 20) -> Any:
    # Opening the port powers the rig's board on; Ctrl-C every 50 ms stops main.py during its
    # imports, before the node takes the console (micropython.kbd_intr(-1)), as a technician
    # would at a board's boot. -> the raw REPL (tools.upload.BoardFs), with a clean slate.
    import serial
    from mpremote.transport_serial import SerialTransport

    from tools.upload import BoardFs

    t = SerialTransport(port, baudrate=115200, timeout=1)
    ser = t.serial
    assert isinstance(ser, serial.SerialBase)  # the port itself (mpremote puts an intercept there only to mount)
    ser.timeout = 0.05
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (b"KeyboardInterrupt" in seen and seen.endswith(b">>> ")):
        ser.write(b"\x03")
        seen += ser.read(4096)
    ser.timeout = 1  # mpremote's raw-paste reads expect its own timeout back
    if not seen.endswith(b">>> "):
        t.close()
        raise AssertionError("the board never stopped at its REPL; it said %r" % seen[-600:])
    fs = BoardFs(t, wait_s=REPL_WAIT_S)
    if not fs.enter(10):
        t.close()
        raise AssertionError("no raw REPL after Ctrl-C; the board said %r" % seen[-600:])
    # a Ctrl-C that landed in the frozen _boot.py left the filesystem unmounted: mount it as
    # _boot.py does (ports/rp2/modules/_boot.py: LittleFS v2 on rp2.Flash())
    fs.exec("import os\ntry:\n os.stat('config.json')\nexcept OSError:\n import rp2, vfs\n"
            " vfs.mount(vfs.VfsLfs2(rp2.Flash(), progsize=256), '/')")
    return fs


# The node as firmware/main.py builds it (importing firmware.main itself on a board runs main()),
# on a link to a gateway that is away, so that `backlog` frames wait in flash. Measured after
# start and after the backlog: free and used heap (gc), and the largest free block
# (micropython.mem_info's "max free sz", in GC blocks of 16 bytes on a 32-bit port).
# `hide`: the buffer's folder holds frames the host wrote (tools/rig/pico_fs.py); they are
# set aside while the node starts (one rename each way), for the figure of an empty start.
HEAP_PROBE = """
import gc, micropython, os
from firmware import load_config
from firmware.node import Node
cfg = load_config()
Board = __import__('firmware.boards.' + cfg['board'], None, None, ['Board']).Board
class Away:
    def send(self, m):
        return True
    def poll(self, t):
        return []
if %(hide)d:
    os.rename('buffer.bin.d', 'preloaded.d')
node = Node(Board(), cfg, Away())
node.start()
gc.collect()
print('HEAP start', gc.mem_free(), gc.mem_alloc())
micropython.mem_info()
if %(hide)d:
    os.rmdir('buffer.bin.d')
    os.rename('preloaded.d', 'buffer.bin.d')
for _ in range(%(backlog)d):
    node.report()
    node.health.feed()
gc.collect()
print('HEAP backlog', gc.mem_free(), gc.mem_alloc(), node.uplink.buffer.live, node.health.boot)
micropython.mem_info()
"""


def _heap_probe(t: Any, backlog: int, hide: bool) -> dict[str, Any]:
    import re

    out, err = t.exec_raw(HEAP_PROBE % {"backlog": backlog, "hide": hide}, timeout=600)
    text = (out + err).decode(errors="replace")
    got = re.findall(r"HEAP (start|backlog) (\d+) (\d+).*?max free sz: (\d+)", text, re.S)
    live = re.search(r"HEAP backlog \d+ \d+ (\d+) (\d+)", text)
    if len(got) != 2 or not live:
        raise AssertionError("the heap probe printed no figures: %r" % text[-600:])
    figures: dict[str, Any] = {k: (int(free), int(used), int(blocks) * 16) for k, free, used, blocks in got}
    figures["live"] = int(live.group(1))
    figures["boot"] = int(live.group(2))  # the boot those frames carry
    return figures


def heap_budget(port: str, backlog: int = 300, preloaded: bool = False) -> dict[str, Any]:
    # -> {"start": (free, used, largest_free), "backlog": (free, used, largest_free), "live": frames,
    #     "boot": the boot counter the probe's node ran as}
    # in bytes, on the board at `port`; backlog: frames the node makes. preloaded: the buffer
    # already holds frames (pico_fs.preload_backlog): "start" is then measured with them set
    # aside, and after a soft reset (a fresh heap, as at a reboot into an outage; main.py does
    # not run from the raw REPL) a new node scans them at its start ("start_backlog") and
    # makes `backlog` more ("backlog")
    fs = stop_at_boot(port)
    try:
        figures = _heap_probe(fs.t, 0 if preloaded else backlog, preloaded)
        if preloaded:
            fs.t.enter_raw_repl(soft_reset=True)
            after = _heap_probe(fs.t, backlog, False)
            after["start_backlog"] = after.pop("start")
            after["start"] = figures["start"]
            figures = after
    finally:
        fs.t.close()
    return figures


def free_heap_after_start(port: str) -> tuple[Any, Any]:
    # -> (free, used) heap bytes after the node was built and started on the board at `port`
    start = heap_budget(port, backlog=0)["start"]
    return start[0], start[1]


# What each module costs the heap on the board: the node started as the heap probe starts it
# (which modules that loads, lazy imports included), then after a soft reset (a fresh heap)
# those modules imported one at a time, each after the ones it imports at its top, and the
# steps of the start itself, a first cycle, and the link module the probe's stand-in link
# spares (firmware.links): gc.mem_alloc() after a collection, before and after each, and of
# that what its names took (micropython.qstr_info: a name pool that fills doubles into a new one).
IMPORT_PROBE = """
import gc, micropython
gc.collect()
a = gc.mem_alloc()
def cost(what):
    global a
    gc.collect()
    b = gc.mem_alloc()
    print('COST', what, b - a)
    micropython.qstr_info()
    a = b
micropython.qstr_info()
for m in %(modules)r:
    __import__(m)
    cost(m)
from firmware import load_config
from firmware.node import Node
cfg = load_config()
cost('(load_config())')
Board = __import__('firmware.boards.' + cfg['board'], None, None, ['Board']).Board
board = Board()
cost('(Board())')
class Away:
    def send(self, m):
        return True
    def poll(self, t):
        return []
node = Node(board, cfg, Away())
cost('(Node())')
node.start()
cost('(node.start())')
print('TOTAL', gc.mem_alloc())
node.step()
cost('(node.step())')
import firmware.links
cost('(firmware.links)')
"""

# the modules the node loaded (the heap probe's node, no backlog)
MODULES_PROBE = HEAP_PROBE % {"backlog": 0, "hide": 0} + """
import sys
print('MODULES', ' '.join(sorted(k for k in sys.modules)))
"""


def _top_imports(name: str, known: set[str]) -> list[str]:
    # the modules of `known` that module `name` imports at its top (not in its functions)
    import ast

    base = REPO / name.replace(".", "/")
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    out = []
    parts = name.split(".")
    for i in range(1, len(parts)):
        out.append(".".join(parts[:i]))  # its packages first
    todo = list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
            out += [node.module + "." + a.name for a in node.names]
        elif isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + getattr(node, "handlers", []) + getattr(node, "finalbody", [])
        elif isinstance(node, ast.ExceptHandler):
            todo += node.body
    return [m for m in out if m in known and m != name]


def import_costs(port: str) -> tuple[list[tuple[str, int, int]], int]:
    # -> ([(module or start step, bytes it added to the heap, of them for its names)], bytes in
    # use after start) on the board at `port`, its node's modules in an order where each comes
    # after what it imports
    import re

    fs = stop_at_boot(port)
    try:
        out, err = fs.t.exec_raw(MODULES_PROBE, timeout=600)
        m = re.search(r"MODULES (.*)", (out + err).decode(errors="replace"))
        if not m:
            raise AssertionError("the module probe printed nothing: %r" % (out + err)[-600:])
        known = {n for n in m.group(1).split() if n.split(".")[0] in ("firmware", "protocol")}
        order: list[str] = []

        def visit(n: str, path: tuple[str, ...] = ()) -> None:
            if n in order or n in path:
                return
            for d in _top_imports(n, known):
                visit(d, path + (n,))
            order.append(n)

        for n in sorted(known):
            visit(n)
        fs.t.enter_raw_repl(soft_reset=True)
        out, err = fs.t.exec_raw(IMPORT_PROBE % {"modules": order}, timeout=600)
    finally:
        fs.t.close()
    text = (out + err).decode(errors="replace")
    total = re.search(r"TOTAL (\d+)", text)
    if not total:
        raise AssertionError("the import probe printed no figures: %r" % text[-600:])
    names = [int(n) for n in re.findall(r"n_total_bytes=(\d+)", text)]
    got = re.findall(r"COST (\S+) (-?\d+)", text)
    return [(w, int(b), names[i + 1] - names[i]) for i, (w, b) in enumerate(got)], int(total.group(1))
