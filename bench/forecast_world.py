# The evaluation world of the overflow forecast (bench/forecast_bench.py), written apart
# from firmware/sim so that the forecaster is not tuned to the world it was built on.
#
# Rain: design storms of the two shapes of DWA-A 118 (Euler type II: the 5-minute depth
# increments of the depth-duration curve, the largest at one third of the duration, the
# rest falling away from it; and a block rain of constant intensity) with depths from a
# KOSTRA-like depth-duration-frequency curve h(D, T) = u(D) (1 + 0.44 ln T), u(D) =
# 16.5 mm (D / 60 min)^0.35 (about 10 mm in 15 min and 17 mm in an hour once a year,
# 2.5 times that once in 30 years, the shape of the KOSTRA-DWD tables for a German city).
# Runoff: the rain on the connected impervious area after an initial loss, through a Nash
# cascade of 3 linear reservoirs whose unit hydrograph peaks after the catchment lag
# (10-40 min). Dry-weather flow with its daily pattern; an upstream pumping station that
# starts when its wet well is full and pushes a fixed flow for some minutes.
# The shaft: a nonlinear reservoir. Below the pipe crown the outflow follows the pipe's
# part-full rating and the storage is the pipe reach's; above the crown the pipe runs
# under pressure (outflow grows with the square root of the head) and the water backs up
# into the upstream pipes, so the storage per metre grows and the rise slows (surcharge).
# The sensor: an ultrasonic level sensor read every 60 s, every 10-15 s while the node's
# storm mode is on (the node's own rule: level >= 1.2 m, a rise >= 20 mm/min against the
# reading a minute before twice in a row, or 2 rain gauge tips within a minute; off after
# 3 calm readings), with 5-15 mm noise, false echoes (random heights
# and fixed heights of the shaft's structures, some twice in a row) and dropouts (a
# reading of quality fault). The link: a frame reaches the gateway 0.2-3 s after its
# reading; an outage holds the frames back and delivers them late, as a backlog; a
# gateway restart holds them for up to 2 minutes and restarts the forecaster.
#
# Everything is seeded: a storm is the same on every run.
import math
import random

DT = 5.0  # seconds per step of the hydraulics
ALARM_M = 2.2
STORM_M, RISE_MM_MIN = 1.2, 20


def ddf_mm(d_min, t_years):
    # KOSTRA-like rain depth of duration d_min minutes and return period t_years
    return 16.5 * (d_min / 60.0) ** 0.35 * (1 + 0.44 * math.log(t_years))


def euler2(d_min, t_years):
    # -> rain depths per 5-minute block (mm), DWA-A 118 Euler type II
    n = max(1, int(round(d_min / 5)))
    inc = [ddf_mm(5 * (k + 1), t_years) - ddf_mm(5 * k, t_years) for k in range(n)]  # falling
    peak = n // 3
    blocks = [0.0] * n
    blocks[peak] = inc[0]
    before = sorted(inc[1:peak + 1])  # the next largest rise towards the peak
    blocks[:peak] = before
    blocks[peak + 1:] = inc[peak + 1:]
    return blocks


def block(d_min, t_years):
    n = max(1, int(round(d_min / 5)))
    return [ddf_mm(d_min, t_years) / n] * n


class Rain:
    # rain intensity (mm per second) over time from [(start_s, [mm per 5-min block])]
    def __init__(self, events):
        self.events = events

    def rate(self, t):
        r = 0.0
        for start, blocks in self.events:
            k = int((t - start) // 300)
            if 0 <= k < len(blocks):
                r += blocks[k] / 300.0
        return r

    def start(self):
        return min(s for s, _ in self.events) if self.events else None

    def depth(self, t):
        # rain fallen until t, mm
        d = 0.0
        for start, blocks in self.events:
            x = (t - start) / 300.0
            if x <= 0:
                continue
            k = int(x)
            d += sum(blocks[:k]) + (blocks[k] * (x - k) if k < len(blocks) else 0.0)
        return d


class Gauge:
    # a tipping-bucket rain gauge at the catchment: 0.2 mm per tip, catching 80-120 % of
    # the catchment's mean rain (a gauge is a point, the rain is not uniform)
    MM_PER_TIP = 0.2

    def __init__(self, rng, rain):
        self.rain = rain
        self.catch = rng.uniform(0.8, 1.2)

    def total_m(self, t):
        return int(self.rain.depth(t) * self.catch / self.MM_PER_TIP) * self.MM_PER_TIP / 1000


class Shaft:
    # one sewer shaft with its catchment; all lengths m, flows m^3/s, times s
    def __init__(self, rng, lag_s=None, area_m2=None, dry=False):
        self.pipe_d = rng.uniform(0.8, 1.4)  # the outgoing pipe's diameter: the crown
        self.q_full = 0.55 * self.pipe_d ** 2.67  # part-full capacity (Manning, ~3 permille)
        self.store = rng.uniform(40, 120)  # m^2 of pipe reach storage per metre below the crown
        self.backup = rng.uniform(1.0, 3.0)  # above the crown: storage grows this much per pipe_d
        self.head = rng.uniform(1.5, 4.0)  # m of head that doubles the pressure flow
        self.ground = 3.6  # the street: above it the water spreads out
        self.lag_s = lag_s if lag_s is not None else rng.uniform(600, 2400)
        self.area = area_m2 if area_m2 is not None else rng.uniform(2e4, 8e4)  # impervious m^2
        self.runoff = rng.uniform(0.7, 0.9)
        self.loss_mm = rng.uniform(0.5, 2.0)  # initial loss (wetting, depressions)
        self.dwf = rng.uniform(0.01, 0.04) * self.q_full / 0.3  # mean dry-weather flow
        self.pump_q = rng.uniform(0.3, 1.0) * self.dwf * 3 if rng.random() < 0.8 else 0.0
        self.pump_well = rng.uniform(20, 60)  # m^3 between the pump's start and stop
        self.pump_in = rng.uniform(0.2, 0.5) * self.dwf
        self.dry = dry

    def outflow(self, h):
        if h <= 0:
            return 0.0
        d = self.pipe_d
        if h <= d:
            return self.q_full * (h / d) ** 1.6
        return self.q_full * math.sqrt(1 + (h - d) / self.head)

    def area_at(self, h):
        d = self.pipe_d
        if h <= d:
            return self.store
        if h >= self.ground:
            return self.store * 50
        return self.store * (1 + self.backup * (h - d) / d)

    def diurnal(self, t):
        # dry-weather flow pattern over the day: low at 4 h, peaks at 8 h and 20 h
        hour = (t / 3600.0) % 24
        return (1 + 0.45 * math.cos(2 * math.pi * (hour - 8) / 24) + 0.2 * math.cos(4 * math.pi * (hour - 8) / 24))

    def run(self, rain, t_end, t0=0.0, scale=1.0, dt=DT):
        # -> list of true levels, one per dt from t0 (the first is the dry equilibrium)
        n_cas = 3
        k = self.lag_s / (n_cas - 1)  # the Nash cascade peaks at (n - 1) k
        cas = [0.0] * n_cas  # m^3 in each reservoir
        h = self._equilibrium(self.dwf * self.diurnal(t0))
        well, pump_on = self.pump_well * 0.5, False
        lost = 0.0
        out = []
        t = t0
        while t <= t_end:
            out.append(h)
            r = rain.rate(t) if rain else 0.0  # mm/s
            eff = r
            if lost < self.loss_mm:
                take = min(eff * dt, self.loss_mm - lost)
                lost += take
                eff -= take / dt
            q_in = eff / 1000.0 * self.area * scale * self.runoff  # m^3/s into the cascade
            for i in range(n_cas):
                q_out = cas[i] / k
                cas[i] += (q_in - q_out) * dt
                q_in = q_out
            q = q_in + self.dwf * self.diurnal(t)
            if self.pump_q:
                well += self.pump_in * dt
                if not pump_on and well >= self.pump_well:
                    pump_on = True
                if pump_on:
                    well -= self.pump_q * dt
                    q += self.pump_q
                    if well <= 0:
                        pump_on = False
            h = min(self.ground + 0.2, max(0.0, h + (q - self.outflow(h)) * dt / self.area_at(h)))  # the street
            t += dt
        return out

    def _equilibrium(self, q):
        lo, hi = 0.0, self.pipe_d
        for _ in range(30):
            mid = (lo + hi) / 2
            if self.outflow(mid) < q:
                lo = mid
            else:
                hi = mid
        return lo


def level_at(levels, t0, t):
    i = (t - t0) / DT
    j = int(i)
    if j >= len(levels) - 1:
        return levels[-1]
    return levels[j] + (levels[j + 1] - levels[j]) * (i - j)


def crossing(levels, t0, alarm=ALARM_M, dt=DT):
    # the first time (s) the true level reaches the alarm, interpolated, or None
    for i in range(1, len(levels)):
        if levels[i] >= alarm > levels[i - 1]:
            return t0 + (i - 1 + (alarm - levels[i - 1]) / (levels[i] - levels[i - 1])) * dt
    return None


class Sensor:
    # the node: what it reads and when (storm mode), and when each frame reaches the gateway
    def __init__(self, rng, noise_m=None, echo_p=None):
        self.rng = rng
        self.noise = noise_m if noise_m is not None else rng.uniform(0.005, 0.015)
        self.echo_p = echo_p if echo_p is not None else rng.uniform(0.002, 0.008)
        self.fixed = [rng.uniform(0.9, 2.8) for _ in range(rng.choice((1, 1, 2)))]  # ladder, inlet, benching
        self.fixed_p = rng.uniform(0.002, 0.008)
        self.repeat_p = 0.3  # a false echo comes again with the next reading
        self.dropout_p = rng.uniform(0.005, 0.03)
        self.storm_every = rng.choice((10, 15))

    def readings(self, levels, t0, t_end, outages=(), restarts=(), delay=(0.2, 3.0), gauge=None):
        # -> [(arrival_s, t_s, level_m, quality, storm, rain_m or None)] in arrival order;
        # rain_m: the gauge's tips since the node started, in m of rain
        rng = self.rng
        out = []
        t = t0 + rng.uniform(0, 60)
        storm, calm, ups, hist = False, 0, 0, []
        echo = None  # the false echo that may come again
        while t <= t_end:
            true = level_at(levels, t0, t)
            v = true + rng.gauss(0, self.noise)
            q = 0
            if echo is not None and rng.random() < self.repeat_p:
                v = echo + rng.gauss(0, 0.003)
                echo = None
            else:
                echo = None
                x = rng.random()
                if x < self.echo_p:
                    v = echo = rng.uniform(true + 0.3, 3.2)
                elif x < self.echo_p + self.fixed_p:
                    above = [f for f in self.fixed if f > true + 0.1]
                    if above:
                        v = echo = rng.choice(above) + rng.gauss(0, 0.003)
                elif x < self.echo_p + self.fixed_p + self.dropout_p:
                    v, q = 0.0, 2  # no echo: the node marks the reading faulty
            v = round(max(0.0, v), 3)
            if q == 0:  # the node's storm mode: a rise >= 20 mm/min against the reading a minute
                # before, twice in a row (a filtered firmware rule), or the level at 1.2 m
                while len(hist) > 1 and hist[1][0] <= t - 55:
                    hist.pop(0)
                rise = (v - hist[0][1]) * 60 / max(1.0, t - hist[0][0]) if hist and t - hist[0][0] >= 55 else 0.0
                hist.append((t, v))
                ups = ups + 1 if rise * 1000 >= RISE_MM_MIN else 0
                # a node with a rain gauge also goes to storm mode on 2 tips within a minute
                wet = gauge is not None and gauge.total_m(t) - gauge.total_m(t - 60) >= 0.0004 - 1e-9
                if not storm and (v >= STORM_M or ups >= 2 or wet):
                    storm, calm = True, 0
                elif storm:
                    calm = calm + 1 if v < STORM_M - 0.1 and rise * 1000 < RISE_MM_MIN / 2 and not wet else 0
                    if calm >= 3:
                        storm = False
            arrive = t + rng.uniform(*delay)
            for a, b in outages:
                if a <= arrive < b:
                    arrive = b + rng.uniform(1, 30)  # the backlog after the link is back
            for a, b in restarts:
                if a <= arrive < b:
                    arrive = b + rng.uniform(0.5, 5)
            out.append((arrive, t, v, q, storm, None if gauge is None else round(gauge.total_m(t), 4)))
            t += self.storm_every if storm else 60
        out.sort(key=lambda r: r[0])
        return out


# ---- the scenarios


class Scenario:
    __slots__ = ("name", "cls", "levels", "t0", "t_end", "readings", "cross", "rain_start", "restarts",
                 "peak", "shaft", "rain", "scale", "gauge", "history")


def _storm(rng, cls, i):
    t_rain = rng.uniform(2, 4) * 3600 + rng.uniform(0, 3600)
    shaft = Shaft(rng)
    if cls == "design storm":
        d, tr = rng.choice((30, 60, 90, 120, 180)), rng.choice((1, 2, 3, 5, 10, 20, 30))
        events = [(t_rain, euler2(d, tr))]
    elif cls == "block rain":
        d, tr = rng.choice((15, 30, 60, 90, 120)), rng.choice((1, 2, 5, 10, 30))
        events = [(t_rain, block(d, tr))]
    elif cls == "flash flood":
        shaft = Shaft(rng, lag_s=rng.uniform(600, 720))
        shaft.store = rng.uniform(8, 15)  # a small, steep catchment into a short pipe reach
        events = [(t_rain, euler2(rng.choice((15, 20, 30)), rng.choice((10, 20, 30))))]
    elif cls == "two bursts":
        d1, d2 = rng.choice((30, 45, 60)), rng.choice((20, 30, 60))
        gap = rng.uniform(30, 90) * 60
        events = [(t_rain, euler2(d1, rng.choice((1, 2, 3)))),
                  (t_rain + d1 * 60 + gap, euler2(d2, rng.choice((2, 5, 10))))]
    elif cls == "near miss":
        d, tr = rng.choice((30, 60, 120)), rng.choice((1, 2, 5, 10))
        events = [(t_rain, euler2(d, tr) if rng.random() < 0.6 else block(d, tr))]
    elif cls == "slow rise":
        shaft = Shaft(rng, lag_s=rng.uniform(1800, 2400))
        events = [(t_rain, block(rng.choice((180, 240, 360)), rng.choice((1, 2, 5))))]
    else:  # outage: a design storm whose rise is partly held back by the link
        d, tr = rng.choice((60, 90, 120)), rng.choice((2, 5, 10, 30))
        events = [(t_rain, euler2(d, tr))]
    rain = Rain(events)
    t_end = max(s + len(b) * 300 for s, b in events) + shaft.lag_s * 3 + 3600
    sc = Scenario()
    sc.name, sc.cls, sc.t0, sc.t_end, sc.shaft, sc.rain = "%s %d" % (cls, i), cls, 0.0, t_end, shaft, rain
    sc.rain_start = t_rain
    sc.scale = _fit_scale(rng, cls, shaft, rain, t_end, t_rain)
    sc.levels = shaft.run(rain, t_end, scale=sc.scale)
    sc.cross = crossing(sc.levels, 0.0)
    sc.peak = max(sc.levels)
    return sc


def _fit_scale(rng, cls, shaft, rain, t_end, t_rain):
    # the connected area (a factor on the drawn one) that gives the class its defining
    # property: the peak 5-20 cm under the alarm for a near miss, the crossing 7-10 min
    # after the rain starts for a flash flood, else the peak 0.1-1.2 m over the alarm
    def peak(scale):  # coarser steps for the search
        lv = shaft.run(rain, t_end, scale=scale, dt=2 * DT)
        return max(lv), crossing(lv, 0.0, dt=2 * DT)

    if cls == "near miss":
        target = ALARM_M - rng.uniform(0.05, 0.2)
        return _search(0.05, 20.0, lambda f: peak(f)[0] < target)[0]
    if cls == "flash flood":
        # the crossing 7-10 min after the rain starts
        want = rng.uniform(420, 600)

        def late(f):
            c = peak(f)[1]
            return c is None or c - t_rain > want

        return _search(0.2, 200.0, late)[1]
    # every other class crosses, at 0.1-1.2 m over the alarm at the peak
    want = ALARM_M + rng.uniform(0.1, 1.2)
    return _search(0.05, 50.0, lambda f: peak(f)[0] < want)[1]


def _search(lo, hi, too_small, steps=18):
    # geometric bisection of the area factor: -> (largest too small, smallest big enough)
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        if too_small(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


CLASSES = (("design storm", 0.27), ("block rain", 0.18), ("flash flood", 0.12), ("two bursts", 0.12),
           ("near miss", 0.14), ("slow rise", 0.08), ("outage", 0.09))


def storms(n, seed=7):
    # -> n scenarios, the classes in the proportions above; 1 in 4 with a gateway restart
    rng = random.Random(seed)
    plan = []
    for cls, share in CLASSES:
        plan += [cls] * max(1, round(n * share))
    plan = (plan * 2)[:n]
    return [scenario(cls, i, random.Random(rng.random())) for i, cls in enumerate(plan)]


def scenario(cls, i, r):
    # one storm of class cls, the i-th of its set (restarts, gauges), drawn from r
    sc = _storm(r, cls, i)
    sensor = Sensor(r)
    outages = []
    if cls == "outage":
        ref = sc.cross if sc.cross is not None else sc.rain_start + 1800
        a = ref - r.uniform(20, 45) * 60  # during the rise; the backlog comes before or after the crossing
        outages.append((a, a + r.uniform(10, 30) * 60))
    restarts = []
    if i % 4 == 1:
        ref = sc.cross if sc.cross is not None else sc.rain_start + 1800
        a = ref - r.uniform(2, 25) * 60
        restarts.append((a, a + r.uniform(10, 120)))
    sc.restarts = restarts
    # a rain gauge in the catchment of every flash-flood shaft and of every other one
    # otherwise; a shaft with a gauge has a past: an earlier storm a day before, from
    # which the forecaster may learn how the shaft answers the gauge's rain
    sc.gauge = Gauge(r, sc.rain) if cls == "flash flood" or i % 2 == 0 else None
    sc.history = []
    if sc.gauge is not None:
        shower = r.uniform(0.25, 0.7)  # most past rain is lighter than a design storm
        past = Rain([(3600.0, [b * shower for b in euler2(r.choice((30, 60, 90)), 1)])])
        levels = sc.shaft.run(past, 6 * 3600.0, scale=sc.scale)
        gauge = Gauge(r, past)
        gauge.catch = sc.gauge.catch
        sc.history = [(a - 86400, t - 86400, v, q, st, rn) for a, t, v, q, st, rn in
                      sensor.readings(levels, 0.0, 6 * 3600.0, gauge=gauge)]
    sc.readings = sensor.readings(sc.levels, 0.0, sc.t_end, outages, restarts, gauge=sc.gauge)
    return sc


def dry_weeks(days, nodes, seed=7):
    # -> one scenario per node: `days` of dry weather with pumps and false echoes
    out = []
    for n in range(nodes):
        r = random.Random(seed * 1000 + n)
        shaft = Shaft(r, dry=True)
        if not shaft.pump_q:
            shaft.pump_q = r.uniform(0.3, 1.0) * shaft.dwf * 3
        sensor = Sensor(r, echo_p=r.uniform(0.004, 0.01))
        sc = Scenario()
        sc.name, sc.cls, sc.t0, sc.t_end, sc.shaft, sc.rain = "dry node %d" % n, "dry", 0.0, days * 86400.0, shaft, None
        sc.gauge, sc.history = None, []
        sc.levels = shaft.run(None, sc.t_end)
        sc.cross, sc.peak, sc.rain_start, sc.scale = crossing(sc.levels, 0.0), max(sc.levels), None, 1.0
        restarts = [(d * 86400 + r.uniform(0, 86400),) * 2 for d in range(days) if r.random() < 0.3]
        sc.restarts = [(a, a + r.uniform(10, 120)) for a, _ in restarts]
        outages = [(a, a + r.uniform(600, 3600)) for a in (r.uniform(0, sc.t_end) for _ in range(days // 3))]
        sc.readings = sensor.readings(sc.levels, 0.0, sc.t_end, outages, sc.restarts)
        out.append(sc)
    return out
