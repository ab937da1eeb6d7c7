# DFRobot A02YYUW / JSN-SR04T (mode 2) ultrasonic distance over UART. The sensor streams
# 4-byte frames about every 100 ms: 0xFF, distance_hi, distance_lo, checksum, where
# checksum = (0xFF + hi + lo) & 0xFF and distance is in mm. Takes a machine.UART-like object
# (any, readinto). A bad checksum drops only the 0xFF it started from, so the parser finds
# the next frame inside the bytes.
# Speed of sound: the A02YYUW compensates for temperature itself, so by default its distance
# is taken as it is; compensate=True rescales a sensor that reports at a fixed 343 m/s
# (the JSN-SR04T) to the speed of sound of the measured air.
from firmware import level
from firmware.clock import clock_or_new
from firmware.sensors import LEVEL

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:

    def const(x):  # CPython stand-in for micropython.const
        return x


_HEADER = const(0xFF)
REF_SPEED_MM_S = const(343000)  # the sensor converts echo time at about 343 m/s (20 °C)


class A02YYUW:
    def __init__(self, uart, min_mm=30, max_mm=4500, timeout_ms=300, clock=None, compensate=False):
        # min_mm: blind zone (A02YYUW 30 mm, JSN-SR04T about 200 mm); max_mm: range end
        self.uart = uart
        self.min_mm = min_mm
        self.max_mm = max_mm
        self.timeout_ms = timeout_ms
        self.compensate = compensate
        self.clock = clock_or_new(clock)
        self._rx = bytearray(32)
        self._frame = bytearray(4)
        self._fill = 0
        self._latest = -1  # raw mm of the newest valid frame not yet returned
        self.reason = None  # why the last read_mm gave None: blind, range, timeout
        self.errors = {"checksum": 0, "junk": 0, "timeout": 0, "blind": 0, "range": 0}

    def feed(self, data, n):
        # Parse n bytes; remembers the newest valid distance. Returns frames found.
        found = 0
        f = self._frame
        for i in range(n):
            b = data[i]
            if self._fill == 0:
                if b == _HEADER:
                    f[0] = b
                    self._fill = 1
                else:
                    self.errors["junk"] += 1
                continue
            f[self._fill] = b
            self._fill += 1
            if self._fill < 4:
                continue
            if (_HEADER + f[1] + f[2]) & 0xFF == f[3]:
                self._latest = (f[1] << 8) | f[2]
                self._fill = 0
                found += 1
                continue
            self.errors["checksum"] += 1
            # resync: restart at the next 0xFF inside the rejected frame, if any
            self._fill = 0
            for j in (1, 2, 3):
                if f[j] == _HEADER:
                    k = 0
                    for m in range(j, 4):
                        f[k] = f[m]
                        k += 1
                    self._fill = k
                    break
        return found

    def _drain(self):
        # at most 8 reads per call: a UART spewing bytes cannot hold the loop
        found = 0
        for _ in range(8):
            if not self.uart.any():
                break
            n = self.uart.readinto(self._rx)
            if not n:
                break
            found += self.feed(self._rx, n)
        return found

    def flush(self):
        # Forget frames that waited in the UART FIFO (stale after a sleep), and the part of
        # one they ended with: completed by the next frame's bytes it could pass its checksum
        self._drain()
        self._latest = -1
        self._fill = 0

    def read_raw_mm(self):
        # Next distance frame as the sensor reports it, or None after timeout_ms
        waited = 0
        while True:
            self._drain()
            if self._latest >= 0:
                raw = self._latest
                self._latest = -1
                return raw
            if waited >= self.timeout_ms:
                self.errors["timeout"] += 1
                self.reason = "timeout"
                return None
            # frames come every 100 ms: looking every 20 ms costs little and adds little delay
            self.clock.sleep_ms(20)
            waited += 20

    def read_mm(self, speed_mm_s=REF_SPEED_MM_S):
        # Distance in mm (with compensate: rescaled to the speed of sound of the measured air),
        # or None with self.reason set (blind zone and beyond range are not distances).
        self.reason = None
        raw = self.read_raw_mm()
        if raw is None:
            return None
        mm = raw * speed_mm_s // REF_SPEED_MM_S if self.compensate else raw
        return level.bounded(self, mm)


# ---------------------------------------------------------------- the sensor (firmware/sensors.py)

# compensate: rescale to the speed of sound of the measured air (the A02YYUW compensates for
# the air temperature itself: correcting again is ~50 mm off at 3 m for 10 °C)
SETTINGS = level.settings(level.FILTER, level.DISTANCE, {"compensate": ("b", False, 0, 0)})
CAPS = LEVEL
DEPTH = "mount_mm"


class Sensor(level.Level):
    def open(self):
        s = self.s
        self.part = A02YYUW(self.board.sensor_uart(s), min_mm=s["min_mm"], max_mm=s["max_mm"],
                            clock=self.board.clock, compensate=s["compensate"])

    def start(self, ctx):
        self.part.flush()  # frames that waited in the FIFO (a sleep) are no reading of now
