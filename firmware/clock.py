# Monotonic time since boot on MicroPython and CPython, kept in small integers: a 32-bit
# port's small ints end at 2**30 (ms: 12.4 days), and past them every number is a heap
# object (an allocation, and at last a GC pause, e.g. between the HC-SR04's trigger and
# time_pulse_us). So:
# - ticks(): ms since boot modulo 2**30, as time.ticks_ms() (MICROPY_PY_TIME_TICKS_PERIOD),
#   and ticks_diff(a, b) (time.ticks_diff): for intervals and timeouts (up to 2**29 ms, 6.2 days);
# - seconds(): whole seconds since boot (a small int for 34 years);
# - ms(): the full uptime for a frame's uptime field (a big int after 12.4 days: once a frame).
# Boards hand the node a clock; the sim board's virtual clock has the same methods, so a
# 6-hour scenario runs in seconds.
import time

try:
    _ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    _ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
    _ticks_add = time.ticks_add  # type: ignore[attr-defined]
    _sleep_ms = time.sleep_ms  # type: ignore[attr-defined]
except AttributeError:  # CPython: the same arithmetic as py/modtime.c

    _monotonic = getattr(time, "monotonic")  # noqa: B009 - CPython only; the MicroPython stubs lack it

    def _ticks_ms():
        return int(_monotonic() * 1000) & 0x3FFFFFFF

    def _ticks_diff(a, b):
        return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000

    def _ticks_add(a, d):
        return (a + d) & 0x3FFFFFFF

    def _sleep_ms(ms):
        time.sleep(ms / 1000)


def ticks_diff(a, b):
    # a - b for two ticks() (or two plain ms of a simulated clock) up to 2**29 ms apart
    return _ticks_diff(a, b)


class Clock:
    def __init__(self):
        self._last = _ticks_ms()
        self._off = _ticks_diff(0, self._last)  # ticks() = ticks_ms() + _off: 0 at this object's start
        self._s = 0  # whole seconds since start
        self._rem = 0  # and ms past them (0..999)
        self._unix_offset = None  # set by a "time" command: unix seconds = offset + seconds()

    def _advance(self):
        # fold the ticks since the last call into seconds + ms (at least once per 6.2 days:
        # the node does every cycle)
        now = _ticks_ms()
        r = self._rem + _ticks_diff(now, self._last)
        self._last = now
        self._s += r // 1000
        self._rem = r % 1000
        return now

    def ticks(self):
        return _ticks_add(self._advance(), self._off)

    def irq_ms(self):
        # ms ticks an interrupt handler may read: no state (ticks() folds the uptime, which
        # an interrupt in the middle would tear), comparable only with ticks_diff to each other
        return _ticks_ms()

    def seconds(self):
        self._advance()
        return self._s

    def ms(self):
        self._advance()
        return self._s * 1000 + self._rem

    def sleep_ms(self, ms):
        if ms > 0:
            _sleep_ms(ms)

    def resume(self, ms, unix_offset=None):
        # after a deep-sleep wake: the boot's uptime goes on from ms, its time offset with it
        now = self._last = _ticks_ms()
        self._s = ms // 1000
        self._rem = ms % 1000
        self._off = _ticks_diff(ms & 0x3FFFFFFF, now)
        self._unix_offset = unix_offset

    def set_time(self, unix_s):
        self._unix_offset = unix_s - self.seconds()

    def time_s(self):
        # Unix seconds, or None while the node has no clock
        if self._unix_offset is None:
            return None
        return self._unix_offset + self.seconds()


def clock_or_new(clock):
    # A part's clock: the one it was given (the board's), or, made without one (a test, the
    # REPL), a Clock of its own
    return Clock() if clock is None else clock
