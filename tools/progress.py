# A plain text progress bar on stderr: redrawn in place on a terminal, one line per
# step otherwise (CI logs, pipes), so long work always shows that it moves.
import sys
import time
from typing import TextIO


class Bar:
    def __init__(self, label: str, total: int, unit: str = "", stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.total = max(1, total)
        self.unit = unit
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._last_pct = 0  # off a terminal the first line comes at a quarter

    def update(self, done: int, note: str = "") -> None:
        self.done = min(done, self.total)
        pct = self.done * 100 // self.total
        if not self.tty and pct // 25 == self._last_pct // 25 and self.done < self.total:
            return  # off a terminal: a line per quarter is enough
        self._last_pct = pct
        fill = self.done * self.width // self.total
        bar = "#" * fill + "." * (self.width - fill)
        text = f"{self.label:<10} [{bar}] {pct:3d}% {self.done}/{self.total}{self.unit} {note}"
        if self.tty:
            self.stream.write("\r" + text[:120].ljust(80))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def step(self, n: int = 1, note: str = "") -> None:
        self.update(self.done + n, note)

    def finish(self, note: str = "") -> float:
        if self.tty or self.done < self.total or note:
            self._last_pct = -100
            self.update(self.total, note)
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()
        return time.monotonic() - self.started
