# The virtual rig: a simulated board on "USB serial". It owns a pty (its slave path is the
# port a technician or a test opens) and, behind it, a MicroPython process (rig/agent.py)
# with a host folder as the board's flash. Like a board it prints what main.py prints
# (console lines and COBS frames), stops main.py on Ctrl-C, and speaks the MicroPython
# raw REPL (the keys are in rig/repl.py), so mpremote and `citynode flash` work against it:
#   Ctrl-A raw mode ("raw REPL; CTRL-B to exit\r\n>"), Ctrl-D runs the block and answers
#   OK<stdout>\x04<stderr>\x04>, raw-paste is refused (R\x00), Ctrl-B back to the friendly
#   REPL, Ctrl-D at ">>> " or in raw mode with no code = soft reset (a fresh interpreter).
# The board powers on when the port is first opened (pyserial flushes input on open, so
# anything printed earlier would be lost), and keeps running while the port is closed;
# what it prints meanwhile is dropped, as a board with no USB host attached would.
import os
import pathlib
import selectors
import signal
import subprocess
import termios
import threading
import time
import tty
from collections.abc import Callable
from typing import IO, Self

from protocol import cobs
from tools import procs
from tools.rig.repl import EXEC, FRIENDLY, FRIENDLY_EXEC, RAW, RAW_BANNER, RESETTING, ReplKeys

AGENT = str(pathlib.Path(__file__).with_name("agent.py"))
# pyserial flushes the input when it opens a port, right after setting the line up: the rig
# marks the line with an odd speed and waits until the client has replaced it (then the
# flush is microseconds away), or SETTLE_MAX_S for clients that set nothing (cat, screen -R)
MARK_SPEED = termios.B50
SETTLE_S = 0.05
SETTLE_MAX_S = 1.0
MAX_PENDING = 1 << 20  # output kept while the host is slow to read; oldest dropped beyond
INTERRUPT_GRACE_S = 2.0  # a program that ignores Ctrl-C this long is killed (like a watchdog)

# states
OFF = "off"  # not powered: nobody has opened the port yet
STARTING = "starting"  # the interpreter starts; input waits (a Ctrl-C now would kill it outright)
RUNNING = "running"  # boot.py / main.py run; input is the program's UART
INTERRUPTING = "interrupting"  # Ctrl-C sent, waiting for the REPL


def piped(f: IO[bytes] | None) -> IO[bytes]:
    # a child's stdin, stdout or stderr made with subprocess.PIPE (never None then)
    assert f is not None
    return f


class PtyOutput:
    # The pty's host side, shared by the rigs. What the board writes: kept while no host has
    # the port open (then dropped and counted), bounded to MAX_PENDING, written without
    # blocking. What the rig that mixes it in provides:
    _out: bytearray
    _connected: bool
    _master: int  # the pty's host side
    _sel: selectors.BaseSelector
    log: Callable[[str], None] | None
    dropped: int
    _stop: threading.Event
    _thread: threading.Thread | None
    _wake_r: int
    _wake_w: int

    def _kill(self) -> None:  # ends the device process
        raise NotImplementedError

    def stop(self) -> None:
        # the rig's thread (woken through the wake pipe), the device process, the pty
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread:
            self._thread.join(5)
        self._kill()
        for fd in (self._master, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _host_attached(self) -> bool:
        import select

        p = select.poll()
        p.register(self._master, select.POLLIN)
        return not any(ev & select.POLLHUP for _fd, ev in p.poll(0))

    def _read_host(self):
        # -> what the host wrote, or None; a closed port is noted and the board runs on
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return None
        except OSError:  # EIO: the last client closed the port
            data = b""
        if not data:
            self._connected = False
            self._sel.unregister(self._master)
            _set_speed(self._master, MARK_SPEED)  # so the next open is seen being set up
            self._out.clear()
            if self.log:
                self.log("port closed by the host; the board keeps running")
            return None
        return data

    def _wait_for_client_setup(self) -> None:
        deadline = time.monotonic() + SETTLE_MAX_S
        while time.monotonic() < deadline:
            try:
                if termios.tcgetattr(self._master)[4] != MARK_SPEED:
                    break
            except termios.error:
                break
            time.sleep(0.01)
        time.sleep(SETTLE_S)

    def _emit(self, data: bytes) -> None:
        if not self._connected:
            self.dropped += len(data)
            return
        self._out += data
        if len(self._out) > MAX_PENDING:
            cut = len(self._out) - MAX_PENDING
            self.dropped += cut
            del self._out[:cut]

    def _flush_out(self) -> None:
        while self._out and self._connected:
            try:
                n = os.write(self._master, self._out[:4096])
            except BlockingIOError:
                return
            except OSError:
                self._connected = False
                return
            del self._out[:n]


class VirtualRig(ReplKeys, PtyOutput):
    def __init__(self, flash_dir: str | os.PathLike[str], board: str = "sim", heap: str = "256k",
                 micropython: str | None = None, log: Callable[[str], None] | None = None) -> None:
        self.flash = str(pathlib.Path(flash_dir).resolve())
        self.board = board
        self.heap = heap
        self.micropython = micropython or procs.micropython_binary()
        self.log = log  # callable(str) for the rig's own diagnostics, or None
        self.banner = ("MicroPython on citynode virtual rig; %s board with unix port\r\n"
                       'Type "help()" for more information.\r\n' % board).encode()
        self.state = OFF
        self.port = ""  # the pty's path, from start() on
        self.boots = 0  # soft and hard boots so far (tests read it)
        self.dropped = 0  # output bytes dropped while no host had the port open
        self._proc = None
        self._line = bytearray()  # REPL input being typed
        self._held = bytearray()  # input that arrived while the board was changing state
        self._out = bytearray()
        self._in_frame = False  # inside a COBS frame on the UART (a 0x03 there is data, not Ctrl-C)
        self._frame_len = 0
        self._connected = False
        self._interrupt_at = 0.0
        self._reset_requested = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        os.makedirs(self.flash, exist_ok=True)
        self._master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF mangling of binary frames before a client sets it
        _set_speed(slave, MARK_SPEED)
        self.port = os.ttyname(slave)
        os.close(slave)  # keep no slave open: POLLHUP then tells us whether a host holds the port
        os.set_blocking(self._master, False)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name="virtual-rig", daemon=True)
        self._thread.start()
        return self

    def hard_reset(self) -> None:
        # the reset button: from another thread
        with self._lock:
            self._reset_requested = True
        os.write(self._wake_w, b"x")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the interpreter process

    def _spawn(self, mode: str) -> None:
        self._kill()
        env = dict(os.environ, MICROPYPATH=os.pathsep.join([self.flash, self.flash + "/lib", ".frozen"]),
                   RIG_BANNER=self.banner.decode())
        proc = self._proc = subprocess.Popen(
            [self.micropython, "-X", "heapsize=" + self.heap, AGENT, self.flash, self.board, mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.flash, env=env)
        self.boots += 1
        self._stderr_buf = b""
        self._open_pipes = 2
        for f in (piped(proc.stdout), piped(proc.stderr)):
            os.set_blocking(f.fileno(), False)
            self._sel.register(f, selectors.EVENT_READ, "proc")

    def _kill(self) -> None:
        p, self._proc = self._proc, None
        if p is None:
            return
        for f in (piped(p.stdout), piped(p.stderr)):
            try:
                self._sel.unregister(f)
            except (KeyError, ValueError, AttributeError):  # AttributeError: before the loop made _sel
                pass
        if p.poll() is None:
            p.kill()
        p.wait()
        for f in (piped(p.stdin), piped(p.stdout), piped(p.stderr)):
            try:
                f.close()
            except OSError:
                pass

    def _to_proc(self, data: bytes) -> None:
        if self._proc is None:
            return  # the program ended; its exit is handled by the loop
        try:
            stdin = piped(self._proc.stdin)
            stdin.write(data)
            stdin.flush()
        except OSError:
            pass  # the program ended; its exit is handled by the loop

    def _command(self, kind: bytes, code: bytes) -> None:
        self._to_proc(b"%s %d\n" % (kind, len(code)) + code)

    # ------------------------------------------------------------ output to the port

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                self._step()
        finally:
            self._kill()
            self._sel.close()

    def _step(self) -> None:
        if not self._connected:
            if self._host_attached():
                self._wait_for_client_setup()
                self._connected = True
                self._in_frame = False
                self._sel.register(self._master, selectors.EVENT_READ, "port")
                if self.state == OFF:
                    self._power_on()
        with self._lock:
            reset, self._reset_requested = self._reset_requested, False
        if reset:
            self._power_on()
        if self.state == INTERRUPTING and time.monotonic() - self._interrupt_at > INTERRUPT_GRACE_S:
            self._spawn("repl")  # main.py ignored Ctrl-C: a fresh interpreter at the REPL instead
        if self._out and self._connected:
            self._flush_out()
        timeout = 0.05 if (not self._connected or self._out or self.state == INTERRUPTING) else 0.5
        for key, _ in self._sel.select(timeout):
            if key.data == "wake":
                os.read(self._wake_r, 64)
            elif key.data == "port":
                self._read_port()
            elif self._proc is not None:
                proc = self._proc
                f = next((f for f in (piped(proc.stdout), piped(proc.stderr)) if f is key.fileobj), None)
                if f is not None:
                    self._read_proc(proc, f)

    def _read_port(self) -> None:
        data = self._read_host()
        if data:
            self._input(data)

    def _read_proc(self, proc: subprocess.Popen[bytes], f: IO[bytes]) -> None:
        try:
            data = os.read(f.fileno(), 65536)
        except BlockingIOError:
            return
        if not data:
            self._sel.unregister(f)
            self._open_pipes -= 1
            if self._open_pipes == 0:
                self._proc_exited(proc)
            return
        if f is proc.stdout:
            self._emit(data)
            return
        # The agent writes its output before the control line, but on another pipe:
        # relay what stdout already holds first, or a prompt could overtake the output.
        self._drain_stdout(proc)
        self._stderr_buf += data
        *lines, self._stderr_buf = self._stderr_buf.split(b"\n")
        for line in lines:
            if line.startswith(b"@@rig "):
                self._control(line[6:].decode())
            else:
                self._emit(line + b"\r\n")  # the interpreter's own complaints, on the console

    def _drain_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        while True:
            try:
                data = os.read(piped(proc.stdout).fileno(), 65536)
            except (BlockingIOError, ValueError):
                return
            if not data:
                return
            self._emit(data)

    def _proc_exited(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        code = proc.returncode
        if self.log:
            self.log("interpreter exited with %s in state %s" % (code, self.state))
        if self.state == INTERRUPTING:  # stopped by the Ctrl-C itself: the REPL comes up
            self._spawn("repl")
        else:  # main.py ended the process (machine.reset, a crash): a board resets and boots again
            self._power_on()

    def _power_on(self) -> None:
        self._line.clear()
        self._held.clear()
        self._spawn("boot")
        self.state = STARTING

    def _control(self, what: str) -> None:
        if what == "running":
            self.state = RUNNING
            self._in_frame = False
        elif what == "repl":
            self.state = FRIENDLY
            self._emit(b">>> ")
        elif what == "idle":
            if self.state == RESETTING:
                self._emit(RAW_BANNER)
                self.state = RAW
            elif self.state == EXEC:
                self._emit(b">")
                self.state = RAW
            elif self.state in (FRIENDLY_EXEC, INTERRUPTING):
                self._emit(b">>> ")
                self.state = FRIENDLY
        if self._held and self.state in (FRIENDLY, RAW, RUNNING):
            held, self._held = bytes(self._held), bytearray()
            self._input(held)

    # ------------------------------------------------------------ input from the port

    def _input(self, data: bytes) -> None:
        if self.state in (OFF, STARTING):
            self._held += data
            return
        if self.state == RUNNING:
            data = self._uart_input(data)
            if not data:
                return
        for i in range(len(data)):
            if self.state in (STARTING, INTERRUPTING, FRIENDLY_EXEC, RESETTING, RUNNING):
                self._held += data[i:]
                return
            if self.state == EXEC:
                if data[i] == 3 and self._proc is not None:
                    self._proc.send_signal(signal.SIGINT)
                continue  # a raw REPL block reads no input here
            if self.state == FRIENDLY:
                self._friendly_byte(data[i])
            else:
                self._raw_byte(data[i])

    def _uart_input(self, data: bytes) -> bytes:
        # pass bytes to the running program; a Ctrl-C outside a COBS frame interrupts it
        # and the rest is REPL input. -> the bytes left for the REPL
        for i, b in enumerate(data):
            if b == 0:
                self._in_frame = not self._in_frame
                self._frame_len = 0
            elif self._in_frame:
                self._frame_len += 1
                if self._frame_len > cobs.MAX_ENCODED:  # no frame is this long: a stray 0x00 misled us
                    self._in_frame = False
            if b == 3 and not self._in_frame:
                self._to_proc(data[:i])
                self._interrupt()
                return data[i + 1:]
        self._to_proc(data)
        return b""

    def _interrupt(self) -> None:
        self.state = INTERRUPTING
        self._interrupt_at = time.monotonic()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)


def _set_speed(fd: int, speed: int) -> None:
    try:
        attrs = termios.tcgetattr(fd)
        attrs[4] = attrs[5] = speed
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except termios.error:
        pass
