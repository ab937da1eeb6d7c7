# Monotonic milliseconds since boot that never wrap, and sleep, on MicroPython and CPython.
# Boards hand the node a clock; the sim board's virtual clock has the same methods, so a
# 6-hour scenario runs in seconds.
import time

try:
    _ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    _ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
    _sleep_ms = time.sleep_ms  # type: ignore[attr-defined]
except AttributeError:  # CPython

    _monotonic = getattr(time, "monotonic")  # noqa: B009 - CPython only; the MicroPython stubs lack it

    def _ticks_ms():
        return int(_monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b

    def _sleep_ms(ms):
        time.sleep(ms / 1000)


class Clock:
    def __init__(self):
        self._last = _ticks_ms()
        self._ms = 0  # ms since this object was made; ticks_ms wraps on the device, this does not
        self._unix_offset = None  # set by a "time" command: unix seconds = offset + ms // 1000

    def ms(self):
        now = _ticks_ms()
        self._ms += _ticks_diff(now, self._last)
        self._last = now
        return self._ms

    def sleep_ms(self, ms):
        if ms > 0:
            _sleep_ms(ms)

    def resume(self, ms, unix_offset=None):
        # after a deep-sleep wake: the boot's uptime goes on from ms, its time offset with it
        self._last = _ticks_ms()
        self._ms = ms
        self._unix_offset = unix_offset

    def set_time(self, unix_s):
        self._unix_offset = unix_s - self.ms() // 1000

    def time_s(self):
        # Unix seconds, or None while the node has no clock
        if self._unix_offset is None:
            return None
        return self._unix_offset + self.ms() // 1000
