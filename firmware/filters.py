# Per-sensor filtering and reporting (configurable per sensor): median of N samples,
# outlier rejection around that median, clamp, EMA, and report-on-change with a
# heartbeat. Each burst gives a value plus quality: samples taken, rejected, status.
# Buffers are allocated once per sensor, not per sample.

# quality status values: the protocol's (SPEC.md 6.1), defined once in protocol.message
from firmware.clock import ticks_diff
from protocol.message import Q_DEGRADED as DEGRADED  # noqa: F401 - used by the sampler
from protocol.message import Q_FAULT as FAULT
from protocol.message import Q_OK as OK
from protocol.message import Q_RANGE as RANGE


def clamp(x, lo, hi):
    if lo is not None and x < lo:
        return lo
    if hi is not None and x > hi:
        return hi
    return x


def median_of(buf, n):
    # Median of buf[0:n]; sorts that part of buf in place (insertion sort: n is small)
    for i in range(1, n):
        v = buf[i]
        j = i - 1
        while j >= 0 and buf[j] > v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v
    if n & 1:
        return buf[n // 2]
    return (buf[n // 2 - 1] + buf[n // 2]) / 2


class Ema:
    # Exponential moving average; alpha 1.0 = no smoothing
    def __init__(self, alpha):
        if not 0 < alpha <= 1:
            raise ValueError("EMA alpha must be in (0, 1]")
        self.alpha = alpha
        self.value = None

    def update(self, x):
        if self.value is None:
            self.value = x
        else:
            self.value += self.alpha * (x - self.value)
        return self.value

    def reset(self):
        self.value = None


class Burst:
    # Collects up to n samples of one sensor, then reduces them to one value.
    def __init__(self, n, max_dev=None, lo=None, hi=None, ema_alpha=None, min_valid=None):
        if n < 1:
            raise ValueError("a burst needs at least one sample")
        self.n = n
        self.max_dev = max_dev  # a sample further than this from the median is an outlier
        self.lo = lo
        self.hi = hi
        self.ema = Ema(ema_alpha) if ema_alpha and ema_alpha < 1 else None
        self.min_valid = min_valid or (n // 2 + 1)  # fewer good samples than this: fault
        self._buf = [0] * n
        self.count = 0
        self.taken = 0
        self.missing = 0
        self.out_of_range = 0

    def start(self):
        self.count = 0
        self.taken = 0
        self.missing = 0
        self.out_of_range = 0

    def add(self, value, out_of_range=False):
        # value None = a failed sample; out_of_range marks a blind-zone/range reading
        self.taken += 1
        if value is None:
            self.missing += 1
            if out_of_range:
                self.out_of_range += 1
        elif self.count < self.n:
            self._buf[self.count] = value
            self.count += 1

    def result(self):
        # -> (value or None, taken, rejected, status)
        buf = self._buf
        n = self.count
        rejected = self.missing
        if n < self.min_valid:
            status = RANGE if self.out_of_range * 2 >= self.taken and self.out_of_range else FAULT
            return None, self.taken, self.missing, status
        med = median_of(buf, n)
        if self.max_dev is not None:
            kept = 0
            for i in range(n):
                v = buf[i]
                if -self.max_dev <= v - med <= self.max_dev:
                    buf[kept] = v
                    kept += 1
            rejected += n - kept
            if kept < self.min_valid:
                return None, self.taken, rejected, FAULT
            if kept != n:
                med = median_of(buf, kept)
        value = clamp(med, self.lo, self.hi)
        status = OK if rejected == 0 else DEGRADED
        if value != med:
            status = RANGE
        if self.ema is not None:
            value = self.ema.update(value)
        return value, self.taken, rejected, status


class Reporter:
    # Report-on-change: a value is due when it moved by delta since the last report,
    # or when heartbeat_ms passed (so a silent node is a dead node, not a calm one).
    # heartbeat_ms None: every value is due (a frame per cycle, the default).
    def __init__(self, delta, heartbeat_ms):
        self.delta = delta
        self.heartbeat_ms = heartbeat_ms
        self.last_value = None
        self.last_ms = None

    def due(self, value, now_ms):
        if self.heartbeat_ms is None or self.last_ms is None or ticks_diff(now_ms, self.last_ms) >= self.heartbeat_ms:
            return True
        if value is None or self.last_value is None:
            return value is not self.last_value
        return abs(value - self.last_value) >= self.delta

    def reported(self, value, now_ms):
        self.last_value = value
        self.last_ms = now_ms
