# The REPL keys of the virtual rig's board (a mixin of rig.board.VirtualRig): what a
# MicroPython board does with each byte at the friendly prompt ">>> " and in raw mode.
#   friendly: line editing, Enter runs the line, Ctrl-A raw mode, Ctrl-B banner, Ctrl-C new
#             prompt, Ctrl-D soft reset (boot.py and main.py run again)
#   raw:      bytes collect a block; Ctrl-D runs it (OK<out>\x04<err>\x04>) or, with no block,
#             soft-resets; \x05 A \x01 (raw-paste) is refused with R\x00; Ctrl-B back to ">>> "
from collections.abc import Callable

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"

# states of the board that the REPL keys move between
FRIENDLY = "friendly"  # ">>> "
FRIENDLY_EXEC = "friendly-exec"
RAW = "raw"
EXEC = "exec"  # a raw REPL block runs
RESETTING = "resetting"  # soft reset from raw mode: fresh interpreter, back to raw


class ReplKeys:
    # needs from the board: self._line (bytearray), self.banner, self.state, _emit(bytes),
    # _command(kind, code), _spawn(mode), _power_on()
    _line: bytearray
    banner: bytes
    state: str
    _emit: Callable[[bytes], None]
    _command: Callable[[bytes, bytes], None]
    _spawn: Callable[[str], None]
    _power_on: Callable[[], None]

    def _friendly_byte(self, b: int) -> None:
        line = self._line
        if b in (13, 10):
            self._emit(b"\r\n")
            if line.strip():
                self._command(b"S", bytes(line))
                self.state = FRIENDLY_EXEC
            else:
                self._emit(b">>> ")
            line.clear()
        elif b == 1:  # Ctrl-A
            line.clear()
            self._emit(b"\r\n" + RAW_BANNER)
            self.state = RAW
        elif b == 2:  # Ctrl-B
            line.clear()
            self._emit(b"\r\n" + self.banner + b">>> ")
        elif b == 3:  # Ctrl-C
            line.clear()
            self._emit(b"\r\n>>> ")
        elif b == 4:  # Ctrl-D: soft reset, then boot.py and main.py
            line.clear()
            self._emit(b"\r\nMPY: soft reboot\r\n")
            self._power_on()
        elif b in (8, 127):
            if line:
                line.pop()
                self._emit(b"\x08 \x08")
        elif 32 <= b < 127 or b == 9:
            line.append(b)
            self._emit(bytes([b]))

    def _raw_byte(self, b: int) -> None:
        line = self._line
        if b == 1:  # Ctrl-A: a fresh raw REPL, or the raw-paste request \x05 A \x01
            if bytes(line) == b"\x05A":
                self._emit(b"R\x00")  # raw-paste not supported: the host falls back to plain raw mode
            else:
                self._emit(RAW_BANNER)
            line.clear()
        elif b == 2:  # Ctrl-B: friendly REPL
            line.clear()
            self._emit(b"\r\n" + self.banner + b">>> ")
            self.state = FRIENDLY
        elif b == 3:  # Ctrl-C: drop the block typed so far
            line.clear()
        elif b == 4:  # Ctrl-D: run the block, or soft reset when there is none
            if line:
                self._emit(b"OK")
                self._command(b"E", bytes(line))
                self.state = EXEC
            else:
                self._emit(b"OK\r\nMPY: soft reboot\r\n")
                self._spawn("raw")
                self.state = RESETTING
            line.clear()
        else:
            line.append(b)
