# The simulated world behind the sim board: a sewer shaft with a diurnal air temperature,
# dry-weather flow, and a rain event that fills the shaft and drains it again; plus
# ultrasonic echo noise, multipath spikes, dropouts and link outages. Everything is a
# function of virtual time and a seed, so a scenario runs the same on CPython and
# MicroPython and a 6-hour storm takes seconds.
import math

from firmware.lora_link import xorshift32


class Rng:
    # xorshift32 (as the LoRa link's jitter): the same sequence on every runtime
    def __init__(self, seed):
        self.s = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1

    def u32(self):
        self.s = s = xorshift32(self.s)
        return s

    def uniform(self):
        return self.u32() / 4294967296

    def chance(self, p):
        return p > 0 and self.uniform() < p

    def noise(self, sigma):
        # roughly normal: sum of 4 uniforms, variance scaled to sigma^2
        return (self.uniform() + self.uniform() + self.uniform() + self.uniform() - 2) * 1.7320508 * sigma


class VirtualClock:
    # Milliseconds since boot that move only when the node sleeps or waits
    def __init__(self, start_ms=0):
        self.now_ms = start_ms
        self._unix_offset = None
        self.edge_ms = None  # the time of the edge a simulated part hands a pin's handler

    def ms(self):
        return self.now_ms

    def ticks(self):
        # ms modulo 2**30, as a board's clock gives them (firmware/clock.py): the node's
        # intervals wrap here every 12.4 days of virtual time, as they do on the ports
        return self.now_ms & 0x3FFFFFFF

    def irq_ms(self):
        # what an interrupt handler reads (firmware/clock.py Clock.irq_ms): the time of the
        # edge a simulated part delivers after the fact (it happened between two of the
        # node's steps), else now
        return (self.now_ms if self.edge_ms is None else self.edge_ms) & 0x3FFFFFFF

    def seconds(self):
        return self.now_ms // 1000

    def sleep_ms(self, ms):
        if ms > 0:
            self.now_ms += int(ms)

    def set_time(self, unix_s):
        self._unix_offset = unix_s - self.now_ms // 1000

    def time_s(self):
        if self._unix_offset is None:
            return None
        return self._unix_offset + self.now_ms // 1000


DEFAULTS = {
    "seed": 1,
    "day_start_s": 6 * 3600,  # time of day at virtual time 0 (06:00)
    "temp_mean_c": 14.0,
    "temp_swing_c": 6.0,  # diurnal half amplitude, warmest at 15:00
    "pressure_pa": 101325,
    "mount_mm": 3000,  # level sensor face above the shaft invert
    "base_mm": 180,  # dry-weather flow depth
    "rain_start_s": None,  # virtual second the rain's runoff arrives; None: dry all along
    "rain_rise_s": 3600,
    "rain_peak_mm": 2700,  # extra depth at the peak (the shaft overflows near mount - blind zone)
    "drain_tau_s": 2400,
    # the rain at the surface whose runoff that is: it starts rain_lag_s (the catchment's lag)
    # before the runoff arrives and falls at rain_mm_h for rain_rise_s (a rain gauge sees it)
    "rain_lag_s": 900,
    "rain_mm_h": 30.0,
    "echo_noise_mm": 3.0,
    "spike_p": 0.03,  # a multipath echo: half the true distance
    "dropout_p": 0.03,  # no echo at all
    "outages": (),  # ((start_s, end_s), ...) when the uplink is down
    "battery_mv": 3700,
}


class World:
    def __init__(self, clock, **params):
        p = dict(DEFAULTS)
        for k in params:
            if k not in p:
                raise ValueError("unknown world parameter %s" % k)
            p[k] = params[k]
        self.p = p
        self.clock = clock
        self.rng = Rng(p["seed"])
        self.probe_fault = None  # None, "open" (0 mA) or "short" (25 mA) for the 4-20 mA probe

    def t_s(self):
        return self.clock.ms() / 1000

    def temp_c(self):
        day = (self.p["day_start_s"] + self.t_s()) % 86400
        return self.p["temp_mean_c"] + self.p["temp_swing_c"] * math.sin(2 * math.pi * (day - 9 * 3600) / 86400)

    def rain_mm(self):
        # extra water depth from the rain event: smooth rise, then exponential drain
        start = self.p["rain_start_s"]
        if start is None:
            return 0.0
        t = self.t_s() - start
        if t <= 0:
            return 0.0
        rise = self.p["rain_rise_s"]
        peak = self.p["rain_peak_mm"]
        if t < rise:
            return peak * (1 - math.cos(math.pi * t / rise)) / 2
        return peak * math.exp(-(t - rise) / self.p["drain_tau_s"])

    def rain_fallen_mm(self, at_s=None):
        # rain at the surface since virtual time 0 (mm), now or at virtual second at_s: the
        # block rain behind the event
        start = self.p["rain_start_s"]
        if start is None:
            return 0.0
        t = (self.t_s() if at_s is None else at_s) - (start - self.p["rain_lag_s"])
        return max(0.0, min(t, self.p["rain_rise_s"])) * self.p["rain_mm_h"] / 3600

    def level_mm(self):
        day = (self.p["day_start_s"] + self.t_s()) % 86400
        dry = self.p["base_mm"] * (1 + 0.3 * math.sin(2 * math.pi * (day - 8 * 3600) / 86400))
        return dry + self.rain_mm()

    def distance_mm(self):
        return self.p["mount_mm"] - self.level_mm()

    def humidity_rh(self):
        wet = min(self.rain_mm() / 100, 15)
        return max(5.0, min(100.0, 80 - (self.temp_c() - self.p["temp_mean_c"]) * 2.5 + wet))

    def pressure_pa(self):
        # a slow synoptic wave, lower while it rains
        return self.p["pressure_pa"] - 150 * math.sin(self.t_s() / 40000) - self.rain_mm() / 10

    def echo_mm(self):
        # what one ultrasonic ping measures, or None for a lost echo
        d = self.distance_mm()
        if self.rng.chance(self.p["dropout_p"]):
            return None
        if self.rng.chance(self.p["spike_p"]):
            return d / 2
        return d + self.rng.noise(self.p["echo_noise_mm"])

    def link_up(self):
        t = self.t_s()
        for start, end in self.p["outages"]:
            if start <= t < end:
                return False
        return True

    def battery_mv(self):
        return self.p["battery_mv"]
