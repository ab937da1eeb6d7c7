# Overflow early warning: per node, a transparent forecast of when the wastewater level
# reaches the node's alarm level. docs/forecast.md has the reasoning and the evaluation.
#
# How a forecast is made:
# 1. Input. Readings with a fault or out-of-range quality are left out and counted; the
#    rest are kept in time order whatever order they arrive in (a backlog after a link
#    outage arrives late: the shaft model is then replayed over the kept readings, from its
#    state after the last reading before the late one when that is one of the last SNAPS); one older
#    than the window kept (a LoRa backlog sent after newer frames) is left out, no replay.
# 2. Robust filter. Each reading is checked against what the shaft model expects at its
#    time (its innovation, against the model's own uncertainty and the shaft's noise).
#    One that is off is held, not used: a jump must persist, and the bigger the jump the
#    longer (its size at the shaft's maximum plausible rise rate, plus a minute), before
#    it is taken as the level; a held reading that the next ones contradict was a false
#    echo, and its height is remembered: heights that come back are the shaft's fixed
#    false echoes (a ladder rung, an inlet), and a jump to one of them must persist longer.
#    The node's storm flag does not change any of this.
# 3. Shaft model. A Kalman filter over level, rate of rise and its change (the rate's
#    change decays over `accel_tau_min`, as the inflow of a storm does), per shaft; it
#    learns the shaft's reading noise, its fastest confirmed rise and its fixed echoes.
# 4. Projection of the model's state forward: the first time the level reaches the alarm
#    is `eta_s`. A slowing rise may peak below the alarm. Near the alarm, a level that is
#    still rising fast is projected with its rate alone: a rise that slows there (a shaft
#    that surcharges, water backing up into the pipes) is not read as a peak.
# 5. Earliest plausible crossing (`eta_early_s`, never later than `eta_s`): the rate
#    raised by its standard error, the rise never taken as slowing; and where rain gauges
#    report for the shaft's catchment, the crossing the shaft's rain model (RainModel,
#    learned from its past events) expects if the rain goes on as in the last 5 minutes.
# 6. Warning: `eta_early_s` within the lead time with enough confidence, on two forecasts
#    in a row (at the alarm level, on one); cleared when no crossing is plausible at all,
#    or none within twice the lead time on three forecasts in a row, unless the level is
#    near the alarm and still rising fast. While a warning is on, `eta_s` is never null:
#    where the central projection peaks below the alarm, it is the earliest plausible
#    crossing the warning stands on.
# The state of every node (model, learned shaft figures, warning) is kept in a JSON file
# in the data_dir, so a restarted gateway carries on where it stopped.
from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from gateway.labels import BAD_QUALITY
from gateway.outputs import _dumps as dumps
from gateway.outputs import iso
from gateway.registry import Output
from protocol import senml
from protocol.message import F_STORM

if TYPE_CHECKING:
    from gateway.outputs import Frame

MAX_POINTS = 240  # readings kept per node at most (40 min at 10 s)
SNAPS = 8  # filter states kept, after each of the last readings, for a late reading's replay
RAIN = "rain"  # a tipping-bucket rain gauge's record: rain since it started counting, in m (SPEC.md 5)
STATE_VERSION = 1


class Settings:
    __slots__ = ("lead_s", "window_s", "min_confidence", "horizon_s", "interval_s", "caution",
                 "noise_m", "max_rise_mm_min", "jerk", "accel_tau_min", "near_m", "fast_mm_min",
                 "echo_tol_m", "min_rate_mm_min", "rain_on_min", "raise_over_s", "rearm_s")

    def __init__(self, lead_s: float = 900.0, window_s: float = 2400.0, min_confidence: float = 0.4,
                 horizon_s: float = 4 * 3600.0, interval_s: float = 300.0,
                 caution: float = 1.0, noise_m: float = 0.01, max_rise_mm_min: float = 300.0, jerk: float = 3e-4,
                 accel_tau_min: float = 10.0, near_m: float = 0.5, fast_mm_min: float = 10.0,
                 echo_tol_m: float = 0.03, min_rate_mm_min: float = 2.0, rain_on_min: int = 10,
                 raise_over_s: float = 30.0, rearm_s: float = 1800.0) -> None:
        self.lead_s = lead_s  # warn when the alarm is plausible within this many seconds
        self.window_s = window_s  # readings kept (for a late backlog's replay and the inputs)
        self.min_confidence = min_confidence
        self.horizon_s = horizon_s  # no ETA is forecast further ahead than this
        self.interval_s = interval_s  # the node's normal reporting interval (freshness)
        self.caution = caution  # standard errors of the rate added for the earliest crossing
        self.noise_m = noise_m  # the reading noise assumed until the shaft's own is learned
        self.max_rise_mm_min = max_rise_mm_min  # fastest plausible rise until a faster one is confirmed
        self.jerk = jerk  # m/min^3: how fast the model lets the rate's change itself change
        self.accel_tau_min = accel_tau_min  # the rate's change decays over this many minutes
        self.near_m = near_m  # within this of the alarm a fast rise is not read as slowing
        self.fast_mm_min = fast_mm_min  # what rising "fast" means there
        self.echo_tol_m = echo_tol_m  # readings this close to a remembered false echo height
        self.min_rate_mm_min = min_rate_mm_min  # slower rises are "steady"
        self.rain_on_min = rain_on_min  # the earliest crossing from rain: it rains on this long
        self.raise_over_s = raise_over_s  # the two forecasts that raise a warning span this much
        self.rearm_s = rearm_s  # this long after a clear, a warning needs half the lead time


class Model:
    # Kalman filter over x = [level m, rate m/min, rate change m/min^2]; P its covariance.
    __slots__ = ("t", "x", "P")

    def __init__(self, t: float, level: float, noise: float) -> None:
        self.t = t
        self.x = [level, 0.0, 0.0]
        self.P = [[noise * noise * 4, 0.0, 0.0], [0.0, 0.01 ** 2, 0.0], [0.0, 0.0, 0.002 ** 2]]

    def predicted(self, t: float, s: Settings) -> tuple[list[float], list[list[float]]]:
        # -> (x, P) at time t (not stored)
        dt = max(0.0, (t - self.t) / 60.0)
        if dt == 0:
            return list(self.x), [row[:] for row in self.P]
        rho = math.exp(-dt / s.accel_tau_min)
        g = s.accel_tau_min * (1 - rho)  # integral of the decaying rate change over dt
        g2 = s.accel_tau_min * (dt - g)
        F = ((1.0, dt, g2), (0.0, 1.0, g), (0.0, 0.0, rho))
        h, r, a = self.x
        x = [h + dt * r + g2 * a, r + g * a, rho * a]
        P = self.P
        FP = [[sum(F[i][k] * P[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
        q = s.jerk * s.jerk
        d2, d3 = dt * dt, dt * dt * dt
        Q = ((q * d3 * d2 / 20, q * d2 * d2 / 8, q * d3 / 6), (q * d2 * d2 / 8, q * d3 / 3, q * d2 / 2),
             (q * d3 / 6, q * d2 / 2, q * dt))
        P2 = [[sum(FP[i][k] * F[j][k] for k in range(3)) + Q[i][j] for j in range(3)] for i in range(3)]
        return x, P2

    def update(self, t: float, y: float, noise: float, s: Settings) -> None:
        x, P = self.predicted(t, s)
        S = P[0][0] + noise * noise
        k = [P[i][0] / S for i in range(3)]
        v = y - x[0]
        self.x = [x[i] + k[i] * v for i in range(3)]
        self.P = [[P[i][j] - k[i] * P[0][j] for j in range(3)] for i in range(3)]
        self.t = t


def _time(p: Sequence[float]) -> float:
    return p[0]


def fit_line(pts: Sequence[Sequence[float]]) -> tuple[float, float, float] | None:
    # least-squares line through [(t_s, level_m)] -> (level at the last time, rate m/min,
    # largest residual m), None when the times are all the same
    n = len(pts)
    t1 = pts[-1][0]
    mx = sum(p[0] - t1 for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - t1 - mx) ** 2 for p in pts)
    if sxx <= 0:
        return None
    b = sum((p[0] - t1 - mx) * (p[1] - my) for p in pts) / sxx
    worst = max(abs(p[1] - my - b * (p[0] - t1 - mx)) for p in pts) if n > 2 else 0.0
    return my - b * mx, b * 60, worst


def project(level: float, rate: float, acc: float, tau_min: float, s: Settings) -> float:
    # level after tau_min minutes with the rate change decaying over accel_tau_min
    g = s.accel_tau_min * (1 - math.exp(-tau_min / s.accel_tau_min))
    return level + rate * tau_min + acc * s.accel_tau_min * (tau_min - g)


def first_crossing(level: float, rate: float, acc: float, target: float, s: Settings) -> float | None:
    # -> minutes until level(tau) first reaches target (0: there already), None: not
    # within the horizon, or the projection peaks below it first
    if level >= target:
        return 0.0
    horizon = s.horizon_s / 60
    if project(level, max(rate, 0.0), max(acc, 0.0), horizon, s) < target:
        return None  # not even the rise without its slowing gets there
    prev_tau, prev = 0.0, level
    tau = 0.0
    while tau < horizon:
        tau = min(horizon, tau + (0.5 if tau < 20 else 1.0 if tau < 60 else 5.0))
        lv = project(level, rate, acc, tau, s)
        if lv >= target:
            return prev_tau + (tau - prev_tau) * (target - prev) / (lv - prev)
        rate_then = rate + acc * s.accel_tau_min * (1 - math.exp(-tau / s.accel_tau_min))
        if rate_then <= 0:
            return None  # the projected peak is below the target
        prev_tau, prev = tau, lv
    return None


LAGS_MIN = (4, 6, 8, 11, 15, 20, 25, 30, 40)  # catchment lags the rain model tries, minutes


class RainModel:
    # How a shaft answers the rain of the gauges in its catchment, learned from its past
    # events: dh/dt = gain * R(t) - (h - h_dry) / T, with R the gauges' rain (mm/min)
    # routed through a cascade of 3 linear reservoirs whose response peaks after the
    # catchment lag L. For every candidate lag, gain and 1/T by least squares of the shaft
    # model's rate of rise on R and on the level over its dry-weather level, one sample a
    # minute while water from the rain is in the catchment, older events weighing less
    # (forgetting 0.2 % a sample); the lag that explains the rise best is the shaft's.
    # The projection routes the rain already fallen (none assumed to come) through it.
    __slots__ = ("totals", "at", "minute", "bin_mm", "cas", "sums", "h_dry", "samples", "fit", "last_rain")

    def __init__(self) -> None:
        self.totals = {}  # gauge -> its last counter (m of rain since it started)
        self.at = {}  # gauge -> the time of that counter
        self.minute = None  # the minute the cascades have reached
        self.bin_mm = 0.0  # rain of the current minute, mm
        self.cas = [[0.0, 0.0, 0.0] for _ in LAGS_MIN]  # mm in each reservoir, per lag
        self.sums = [[0.0] * 6 for _ in LAGS_MIN]  # xx, xz, zz, xy, zy, yy per lag
        self.h_dry = None  # the shaft's dry-weather level, m
        self.samples = 0.0  # weighted samples with rain routed to the shaft
        self.fit = None  # (lag index, gain m per mm, 1/T per min, r2) once calibrated
        self.last_rain = None  # time of the last tip

    def add(self, gauge: str, t_s: float, total_m: float, n_gauges: int = 1) -> float | None:
        # a gauge's counter; the difference to its last one is new rain (a smaller one: the
        # gauge restarted counting). Rain of n gauges counts 1/n each. A counter older than the
        # last one taken (frames out of order: a LoRa node sends its newest frame before its
        # backlog) is no new rain, and no restart: its rain is in the newer one's difference.
        # -> the time since which the new rain fell (the counter before), None: none
        at = self.at.get(gauge)
        if at is not None and t_s <= at:
            return None
        self.at[gauge] = t_s
        prev = self.totals.get(gauge)
        self.totals[gauge] = total_m
        if prev is None or total_m == prev:
            return None
        mm = (total_m - prev if total_m > prev else total_m) * 1000 / n_gauges
        self.bin_mm += mm
        self.last_rain = t_s
        return t_s if at is None else at

    def step(self, t_s: float, level: float, rate: float | None) -> None:
        # advance the cascades to t_s minute by minute; learn from (level, rate) when given
        m = int(t_s // 60)
        if self.minute is None:
            self.minute = m
        if self.h_dry is None or level < self.h_dry:
            self.h_dry = level
        elif rate is not None and abs(rate) < 0.002 and self.bin_mm == 0:
            self.h_dry += (level - self.h_dry) * 0.002  # follows a dry-weather level that rises
        steps = min(240, m - self.minute)
        for _ in range(steps):
            q_in = self.bin_mm / steps if self.bin_mm else 0.0
            for c, lag in zip(self.cas, LAGS_MIN, strict=True):
                k = lag / 2.0
                q = q_in
                for j in range(3):
                    out = c[j] / k
                    c[j] += q - out
                    q = out
        if steps > 0:
            self.bin_mm = 0.0
            self.minute = m
            if rate is not None and self.cas[-1][2] + self.cas[-1][1] > 0.05:
                self._learn(level, rate, self.h_dry)

    def _learn(self, level: float, rate: float, h_dry: float) -> None:
        z = -(level - h_dry)
        for c, sm, lag in zip(self.cas, self.sums, LAGS_MIN, strict=True):
            x = c[2] / (lag / 2.0)  # the routed rain now, mm/min
            for i, v in enumerate((x * x, x * z, z * z, x * rate, z * rate, rate * rate)):
                sm[i] = sm[i] * 0.998 + v
        self.samples = self.samples * 0.998 + 1
        best = None
        for i, sm in enumerate(self.sums):
            xx, xz, zz, xy, zy, yy = sm
            det = xx * zz - xz * xz
            if det <= 1e-12 or yy <= 0:
                continue
            g = (xy * zz - zy * xz) / det
            c = (zy * xx - xy * xz) / det
            if g <= 0 or c < 0:
                continue
            r2 = (g * xy + c * zy) / yy
            if best is None or r2 > best[3]:
                best = (i, g, c, r2)
        self.fit = best if best is not None and self.samples >= 40 else None

    def crossing(self, level: float, target: float, rain_mm_min: float = 0.0, rain_min: float = 0,
                 horizon_min: int = 90) -> float | None:
        # -> minutes until the rain already fallen, and rain_mm_min for rain_min more
        # minutes, brings the level to target, or None
        if self.fit is None or self.h_dry is None:
            return None
        i, g, c, _ = self.fit
        k = LAGS_MIN[i] / 2.0
        cas = list(self.cas[i])
        if self.bin_mm:
            cas[0] += self.bin_mm
        h = level
        for tau in range(1, horizon_min + 1):
            q = rain_mm_min if tau <= rain_min else 0.0
            for j in range(3):
                out = cas[j] / k
                cas[j] += q - out
                q = out
            h += g * q - c * (h - self.h_dry)
            if h >= target:
                return float(tau)
            if q < 1e-4 and tau > LAGS_MIN[i] * 2:
                return None
        return None

    def state(self) -> dict[str, Any]:
        return {"totals": self.totals, "at": self.at, "minute": self.minute, "bin_mm": self.bin_mm, "cas": self.cas,
                "sums": self.sums, "h_dry": self.h_dry, "samples": self.samples, "last_rain": self.last_rain}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> RainModel:
        r = cls()
        r.totals = {str(k): float(v) for k, v in d.get("totals", {}).items()}
        r.at = {str(k): float(v) for k, v in d.get("at", {}).items()}  # (not in states from before it)
        r.minute = d.get("minute")
        r.bin_mm = float(d.get("bin_mm", 0.0))
        if len(d.get("cas", ())) == len(LAGS_MIN):
            r.cas = [[float(v) for v in c] for c in d["cas"]]
            r.sums = [[float(v) for v in sm] for sm in d["sums"]]
        r.h_dry = d.get("h_dry")
        r.samples = float(d.get("samples", 0.0))
        r.last_rain = d.get("last_rain")
        return r


class NodeForecast:
    # The forecast state of one node. add() readings, forecast() when something changed.
    def __init__(self, alarm_m: float, settings: Settings | None = None) -> None:
        self.alarm_m = alarm_m
        self.s = settings or Settings()
        self.points = []  # [(t_s, level_m)] good-quality readings, time order, within window_s
        self.skipped = 0  # readings left out for their quality since the last forecast
        self.storm = False
        self.warning = False
        self._near = 0  # consecutive forecasts with a plausible crossing inside the lead time
        self._far = 0  # consecutive forecasts, while warned, with none within twice the lead time
        self._near_t = None  # reading time of the first of the _near forecasts
        self._far_t = None  # reading time of the first of the _far forecasts
        self._cleared_t = None  # reading time the last warning was cleared
        self.newest_t = None
        self.last = None  # the last published forecast (the gateway's output keeps it here)
        self.trend = None  # (time, level m, rate m/min, rate change m/min^2) of the last forecast
        # learned per shaft
        self.noise = self.s.noise_m
        self.max_rate = self.s.max_rise_mm_min / 1000  # m/min
        self.echoes = []  # [[height m, times seen]] false echo heights
        # the filter
        self.model = None
        self.pending = []  # [(t, level)] readings held as a possible jump
        self._raw = []  # the last 5 readings the model saw, held or not
        self.rejected = 0  # readings taken as false echoes since the last forecast
        self.rain = None  # RainModel once a gauge reports for this shaft
        self._rain_log = []  # [(since, t, mm)]: rain that fell from since to t, of the last 15 minutes
        self._jump = 0.0  # how far the first held reading was off the model
        self._done = 0  # how many of self.points the model has seen
        self._replay = False
        self._late = math.inf  # the oldest time a reading came in before newer ones since the model ran
        self._snaps = []  # [(t, (model t, x, P, pending, raw, jump))] after each of the last SNAPS readings

    # ---- input

    def add(self, t_s: float, level_m: float, quality: int = 0, storm: bool | None = None) -> bool:
        if storm is not None and (self.newest_t is None or t_s >= self.newest_t):
            self.storm = bool(storm)
        if quality in BAD_QUALITY or level_m is None or not math.isfinite(level_m):
            self.skipped += 1
            return False
        pts = self.points
        if pts and t_s < pts[-1][0] - self.s.window_s:
            # older than the readings kept (a backlog drained after newer readings, as a LoRa
            # node sends it): history for the store, nothing for the forecast, whose model must
            # not be replayed for it (a replay starts again from the readings kept, rate unknown)
            return False
        if not pts or t_s > pts[-1][0]:
            pts.append((t_s, level_m))
        else:
            i = len(pts)
            while i > 0 and pts[i - 1][0] > t_s:  # late arrivals are few: walk back from the end
                i -= 1
            if i > 0 and pts[i - 1][0] == t_s:
                if pts[i - 1][1] == level_m:
                    return True  # the same reading again (a resend)
                pts[i - 1] = (t_s, level_m)
            else:
                pts.insert(i, (t_s, level_m))
            self._replay = True  # the model has to see the readings in time order
            self._late = min(self._late, t_s)
        newest = pts[-1][0]
        self.newest_t = newest
        cut = max(0, len(pts) - MAX_POINTS)
        while cut < len(pts) and pts[cut][0] < newest - self.s.window_s:
            cut += 1
        if cut:
            del pts[:cut]
            self._done = max(0, self._done - cut)
        return True

    def _run_model(self) -> None:
        pts = self.points
        snaps = self._snaps
        if self._replay:
            # from the state after the last reading before the late one, else from the start
            self._replay = False
            late, self._late = self._late, math.inf
            while snaps and snaps[-1][0] >= late:
                snaps.pop()
            if snaps:
                t, (mt, x, P, pend, raw, self._jump) = snaps[-1]
                self.model = Model(mt, 0.0, self.noise) if mt is not None else None
                if self.model is not None:
                    self.model.x, self.model.P = list(x), [row[:] for row in P]
                self.pending, self._raw = list(pend), list(raw)
                self._done = bisect.bisect_right(pts, t, key=_time)
            else:
                self.model, self.pending, self._done, self._raw = None, [], 0, []
        for t, y in pts[self._done:]:
            self._step(t, y)
            m = self.model
            snaps.append((t, (None, None, None, tuple(self.pending), tuple(self._raw), self._jump) if m is None
                          else (m.t, m.x, m.P, tuple(self.pending), tuple(self._raw), self._jump)))
            if len(snaps) > SNAPS:
                del snaps[0]
        self._done = len(pts)

    def _step(self, t: float, y: float) -> None:
        s = self.s
        m = self.model
        raw = self._raw
        raw.append((t, y))
        if len(raw) > 5:
            del raw[0]
        if m is None:
            self.model = Model(t, y, self.noise)
            return
        x, P = m.predicted(t, s)
        sd = math.sqrt(P[0][0] + self.noise * self.noise)
        gate = max(4 * sd, 5 * self.noise, 0.03)
        if abs(y - x[0]) > gate and len(raw) == 5:
            # off the model, but on the line of the readings just before it, which agree
            # with each other: the model fell behind a change of the rise (not a jump, not
            # an echo: those stand off their neighbours); it starts again from that line
            line = fit_line(raw)
            if line is not None and line[2] <= gate and not self._known_echo(y):
                if self.pending:
                    self.pending = []
                self.model = Model(t, line[0], self.noise)
                self.model.x[1] = line[1]
                self.model.P[1][1] = max((gate * 60 / max(30.0, t - raw[0][0])) ** 2, 0.005 ** 2)
                return
        if abs(y - x[0]) <= gate:
            if self.pending:
                self._forget_pending()
            m.update(t, y, self.noise, s)
            # the shaft's noise, learned from the innovations of calm readings
            if abs(x[1]) < 0.005:
                self.noise = min(0.05, max(0.002, self.noise + (min(abs(y - x[0]), 3 * self.noise) * 1.2533
                                                                - self.noise) * 0.01))
            return
        pend = self.pending
        if pend and (y - x[0]) * (pend[-1][1] - x[0]) < 0:
            self._forget_pending()  # the other way: the held ones were not the level
        if not pend:
            self._jump = abs(y - x[0])  # the size of the jump, as first seen
        pend.append((t, y))
        jump = self._jump
        need_s = 60 + 60 * jump / self.max_rate
        need_n = 2
        if self._known_echo(pend[0][1]):
            need_s, need_n = 2 * need_s, 4
        span = pend[-1][0] - pend[0][0]
        # the held readings must persist and agree with each other (lie on a line): then
        # the level really moved, and the model starts again from that line. A rise that
        # is continuous (three to six held readings on a line that leaves the model's level
        # after its last reading) needs no more: a false echo jumps, and comes back flat.
        line = fit_line(pend[-6:]) if len(pend) >= 3 else None
        up = pend[-1][1] > m.x[0]
        continuous = False
        if line is not None and line[2] <= gate and (line[1] > 0) == up and len(pend) <= 6:
            back = (line[0] - line[1] * (pend[-1][0] - m.t) / 60 - m.x[0]) * (1 if up else -1)
            continuous = back <= gate  # the line leaves the model's level after its last reading
        if continuous or (len(pend) >= need_n and span >= need_s):
            line = line or fit_line(pend[-6:])
            if line is not None and (line[2] <= gate or span >= need_s + 600):
                level, rate, _ = line
                if rate > self.max_rate:
                    self.max_rate = min(5.0, rate * 1.5)
                self.model = Model(pend[-1][0], level, self.noise)
                self.model.x[1] = rate
                self.model.P[1][1] = max(rate * rate / 4, 0.005 ** 2)
                self.pending = []

    def _forget_pending(self) -> None:
        # the held readings were false echoes: count them and remember their heights
        tol = self.s.echo_tol_m
        for _, y in self.pending:
            self.rejected += 1
            for e in self.echoes:
                if abs(e[0] - y) <= tol:
                    e[0] += (y - e[0]) / (e[1] + 1)
                    e[1] += 1
                    break
            else:
                self.echoes.append([y, 1])
        if len(self.echoes) > 32:  # keep the heights seen most often
            self.echoes.sort(key=lambda e: -e[1])
            del self.echoes[24:]
        self.pending = []

    def _known_echo(self, y: float) -> bool:
        tol = self.s.echo_tol_m
        return any(e[1] >= 3 and abs(e[0] - y) <= tol for e in self.echoes)

    # ---- output

    def forecast(self, now_s: float | None = None) -> dict[str, Any]:
        # -> dict for P/nodes/<node>/forecast; now_s (default: the newest reading's time)
        # shortens the ETA by the time passed since the model's newest reading.
        s = self.s
        self.trend = None
        out = {"alarm_m": self.alarm_m, "eta_s": None, "eta_early_s": None, "level_m": None, "rate_mm_min": None,
               "confidence": 0.0, "warning": False}
        skipped, self.skipped = self.skipped, 0
        self._run_model()
        rejected, self.rejected = self.rejected, 0
        m = self.model
        if m is None:
            out["inputs"] = {"readings": 0, "skipped": skipped}
            out["why"] = "No valid level readings in the last %d minutes." % (s.window_s // 60)
            return self._warn(out, None, None)
        newest = m.t
        recent = self.points[bisect.bisect_left(self.points, newest - 900, key=_time):]
        n = len(recent)
        age = 0.0 if now_s is None else max(0.0, now_s - newest)
        inputs = {"readings": n, "span_s": round(newest - recent[0][0], 1) if recent else 0.0, "skipped": skipped,
                  "outliers": rejected, "held": len(self.pending), "age_s": round(age, 1), "storm": self.storm,
                  "model": "shaft", "noise_mm": round(self.noise * 1000, 1),
                  "echo_heights_m": sorted(round(e[0], 2) for e in self.echoes if e[1] >= 3)}
        out["inputs"] = inputs
        level, rate, acc = m.x
        sd_rate = math.sqrt(max(0.0, m.P[1][1]))
        out["level_m"] = round(level, 4)
        if n < 2 and len(self.points) < 2:
            out["why"] = "Only one valid level reading: the rate of rise is not known yet."
            return self._warn(out, None, None)
        rate_mm = round(rate * 1000, 1)  # the words below follow the published figure
        out["rate_mm_min"] = rate_mm
        inputs["accel_mm_min2"] = round(acc * 1000, 2)
        inputs["rate_sd_mm_min"] = round(sd_rate * 1000, 1)
        self.trend = (newest, level, rate, acc)

        # confidence: readings, the rise against the noise, freshness, the node's storm mode
        c_n = min(1.0, max(0, n - 1) / 4)
        rise = abs(rate) * 10 + 1e-6  # the rise over 10 minutes, m
        c_fit = 1.0 / (1.0 + (2 * self.noise / rise) ** 2)
        c_age = 1.0 if age <= s.interval_s else max(0.0, 1 - (age - s.interval_s) / s.window_s)
        c_storm = 1.0 if self.storm else 0.9
        conf = c_n * c_fit * c_age * c_storm
        out["confidence"] = round(conf, 3)

        words = "rising" if rate_mm >= 0.5 else "falling" if rate_mm <= -0.5 else "steady"
        head = "Level %.2f m, %s %.0f mm/min" % (level, words, abs(rate_mm)) if words != "steady" else \
            "Level %.2f m, steady" % level
        if level >= self.alarm_m:
            out["eta_s"] = out["eta_early_s"] = 0
            out["why"] = "%s, is at or above the alarm level %.2f m." % (head, self.alarm_m)
            return self._warn(out, 0.0, False)
        near_fast = self.alarm_m - level <= s.near_m and rate_mm >= s.fast_mm_min
        acc_c = max(acc, 0.0) if near_fast else acc
        tau = None
        if rate_mm >= s.min_rate_mm_min or acc_c > 0:
            tau = first_crossing(level, rate, acc_c, self.alarm_m, s)
        tau_e = first_crossing(level, rate + s.caution * sd_rate, max(acc, 0.0), self.alarm_m, s)
        eta = None if tau is None else max(0.0, tau * 60 - age)
        early = None if tau_e is None else max(0.0, tau_e * 60 - age)
        if eta is not None and (early is None or early > eta):
            early = eta
        rain_eta = None
        if self.rain is not None:
            r = self.rain
            r.step(newest, level, rate)
            # while it rains: the rain fallen, and as much as in the last 5 minutes for
            # another `rain_on_min` minutes
            tau_r = None
            if self._recent_rain(newest) > 0:
                tau_r = r.crossing(level, self.alarm_m, self._recent_rain(newest, 300) / 5, s.rain_on_min)
            if tau_r is not None:
                rain_eta = max(0.0, tau_r * 60 - age)
                if early is None or rain_eta < early:
                    early = rain_eta
                else:
                    rain_eta = None  # the level's own trend is the earlier one
            self._rain_inputs(r, inputs, newest)
        out["eta_s"] = None if eta is None else round(eta)
        out["eta_early_s"] = None if early is None else round(early)
        if eta is not None:
            why = "%s: the alarm level %.2f m is expected in about %d min" % (head, self.alarm_m, round(eta / 60))
            if early is not None and early < eta - 60:
                why += ", possibly in %d min" % round(early / 60)
            if near_fast and acc < 0:
                why += " (the rise slows, but not enough to stop short of it)"
        elif words == "rising" and acc < 0:
            why = "%s and slowing: it is expected to peak below the alarm level %.2f m" % (head, self.alarm_m)
        elif words == "rising":
            why = "%s: the alarm level %.2f m is more than %d h away" % (head, self.alarm_m, s.horizon_s // 3600)
        else:
            why = "%s: no rise towards the alarm level %.2f m" % (head, self.alarm_m)
        if rain_eta is not None:
            why += "; the rain at the gauge (%.1f mm in the last 15 min) may bring it to the alarm level in " \
                   "about %d min if it rains on like this" % (inputs["rain_15min_mm"], round(rain_eta / 60))
        if self.pending:
            why += "; %d reading(s) at %.2f m wait for the next ones to confirm them" % (
                len(self.pending), self.pending[-1][1])
        out["why"] = why + "."
        hold = None
        if self.warning:
            tau_h = first_crossing(level, rate + 3 * s.caution * sd_rate, max(acc, 0.0), self.alarm_m, s)
            hold = None if tau_h is None else max(0.0, tau_h * 60 - age)
        return self._warn(out, early, near_fast, rain_eta, hold)

    def projection(self, step_s: float = 60.0, max_s: float = 3600.0) -> list[Any]:
        # the projected level [[t, level_m], ...] of the last forecast, until it reaches the
        # alarm level, peaks, or max_s (for the status page's level chart); [] without a rise
        if self.trend is None:
            return []
        t0, level, rate, acc = self.trend
        if rate <= 0 and acc <= 0:
            return []
        s = self.s
        out = [[t0, round(level, 4)]]
        tau = 0.0
        lv = level
        while tau < max_s and lv < self.alarm_m:
            tau += step_s
            m = tau / 60
            if rate + acc * s.accel_tau_min * (1 - math.exp(-m / s.accel_tau_min)) <= 0:
                break  # the projected peak
            lv = project(level, rate, acc, m, s)
            out.append([t0 + tau, round(min(lv, self.alarm_m), 4)])
        return out

    def _rain_inputs(self, r: RainModel, inputs: Any, now: float) -> Any:
        inputs["rain_15min_mm"] = round(self._recent_rain(now), 1)
        if r.fit is not None:
            inputs["rain_lag_min"] = LAGS_MIN[r.fit[0]]
            inputs["rain_fit_r2"] = round(r.fit[3], 2)

    def _recent_rain(self, now: float, span_s: float = 900) -> float:
        # the rain of the last span_s: the part of each counter's rain that fell in it, taken as
        # falling evenly since the counter before (after an outage the first counter holds all
        # of its rain: not as fallen in the last minutes, which the rain model carries on)
        lo = now - span_s
        return sum(mm if t0 >= lo or t <= t0 else mm * (t - lo) / (t - t0) for t0, t, mm in self._rain_log if t >= lo)

    def add_rain(self, gauge: str, t_s: float, total_m: float, n_gauges: int = 1) -> None:
        # the counter of a tipping-bucket gauge in this shaft's catchment ("rain", m)
        if self.rain is None:
            self.rain = RainModel()
        before = self.rain.bin_mm
        since = self.rain.add(gauge, t_s, total_m, n_gauges)
        if since is not None and self.rain.bin_mm > before:
            self._rain_log.append((since, t_s, self.rain.bin_mm - before))
        while self._rain_log and self._rain_log[0][1] < t_s - 900:
            self._rain_log.pop(0)

    def _warn(self, out: dict[str, Any], early: float | None, near_fast: bool | None,
              rain_eta: float | None = None,
              hold: Any = None) -> dict[str, Any]:
        # early: the earliest plausible crossing in seconds (0: at the alarm), or None;
        # rain_eta: when that comes from the rain model (its own confidence: its fit)
        s = self.s
        conf = out["confidence"]
        if rain_eta is not None and self.rain is not None and self.rain.fit is not None:
            conf = max(conf, self.rain.fit[3])
        t = self.model.t if self.model is not None else 0.0
        # a warning that was cleared in the last half hour comes back only on half the lead
        # time (a level that hovers under the alarm does not raise it again and again)
        lead = s.lead_s / 2 if self._cleared_t is not None and t - self._cleared_t < s.rearm_s else s.lead_s
        near = early is not None and early <= lead and conf >= s.min_confidence
        # raised on two forecasts in a row over at least 30 s of readings (a pump's
        # short push, read every 10 s, is not a storm), or at once at the alarm level
        # (a crossing from the rain model needs no span: rain gauges do not echo)
        if not near:
            self._near, self._near_t = 0, None
            span = False
        else:
            self._near += 1
            near_t = self._near_t = t if self._near_t is None else self._near_t
            span = t - near_t >= s.raise_over_s or rain_eta is not None
        if not self.warning and ((self._near >= 2 and span) or early == 0.0):
            self.warning = True
            out["raised"] = True
        if self.warning and early is None and hold is not None:
            # a warning holds while a crossing stays plausible at all: the rate raised by
            # three standard errors (a model that has just turned round is not sure of it)
            early = hold
            out["eta_early_s"] = round(hold)
            out["why"] = out["why"][:-1] + "; the warning holds while the alarm level stays within reach."
        far = early is None or early > 2 * s.lead_s
        far_t = None  # since when crossings are far, on this forecast and the ones before it
        if self.warning and far:
            self._far += 1
            far_t = self._far_t = t if self._far_t is None else self._far_t
        else:
            self._far, self._far_t = 0, None
        if self.warning and not near_fast and (early is None or (far_t is not None and self._far >= 3
                                                                  and t - far_t >= 120)):
            # no crossing plausible at all, or none within twice the lead time on 3 forecasts
            # in a row over 2 minutes of readings
            self.warning = False
            self._far, self._far_t = 0, None
            self._cleared_t = t
            out["cleared"] = True
        out["warning"] = self.warning
        if self.warning and out["eta_s"] is None:
            out["eta_s"] = out["eta_early_s"]  # the warning stands on the earliest plausible crossing
        return out

    # ---- state that survives a restart

    def state(self) -> dict[str, Any]:
        m = self.model
        return {"alarm_m": self.alarm_m, "points": self.points, "storm": self.storm, "warning": self.warning,
                "near": self._near, "noise": self.noise, "max_rate": self.max_rate, "echoes": self.echoes,
                "model": None if m is None else {"t": m.t, "x": m.x, "P": m.P}, "pending": self.pending,
                "rain": None if self.rain is None else self.rain.state()}

    @classmethod
    def from_state(cls, d: dict[str, Any], settings: Settings | None = None) -> NodeForecast:
        fc = cls(float(d["alarm_m"]), settings)
        fc.points = [(float(t), float(y)) for t, y in d.get("points", [])][-MAX_POINTS:]
        fc.newest_t = fc.points[-1][0] if fc.points else None
        fc.storm = bool(d.get("storm"))
        fc.warning = bool(d.get("warning"))
        fc._near = int(d.get("near", 0))
        fc.noise = float(d.get("noise", fc.noise))
        fc.max_rate = float(d.get("max_rate", fc.max_rate))
        fc.echoes = [[float(h), int(c)] for h, c in d.get("echoes", [])]
        if d.get("rain"):
            fc.rain = RainModel.from_state(d["rain"])
        m = d.get("model")
        if m:
            fc.model = Model(float(m["t"]), 0.0, fc.noise)
            fc.model.x = [float(v) for v in m["x"]]
            fc.model.P = [[float(v) for v in row] for row in m["P"]]
            fc.pending = [(float(t), float(y)) for t, y in d.get("pending", [])]
            fc._done = sum(1 for p in fc.points if p[0] <= fc.model.t or p in fc.pending)
        return fc


class Forecasts(Output):
    # Gateway output (see gateway/outputs.py): for each frame with a level reading ("l"),
    # the node's forecast, retained at P/nodes/<node>/forecast, and an event at
    # P/nodes/<node>/event when a warning is raised or cleared. Both go through the outbox
    # like every output, so a warning is as durable as the readings that raised it.
    # The alarm level is the one the node reported (info key 5), else `alarm_m`.
    # A new forecast once the newest reading is `min_step_s` newer than the one the last
    # forecast used: every reading counts, but a burst of frames dated within seconds (a
    # load test, a node without a clock flooding) costs one forecast, not one per frame.
    # state_path: the JSON file the forecast state is kept in (written on every warning
    # change and at most every save_every_s otherwise; read at start).
    def __init__(self, prefix: str, gateway_id: str, settings: Settings | None = None, alarm_m: float = 2.2,
                 thresholds_fn: Callable[[str], dict[str, float] | None] | None = None,
                 min_step_s: float = 10.0, state_path: str | os.PathLike[str] | None = None,
                 save_every_s: float = 300.0, rain_gauges: Any = None) -> None:
        self.prefix = prefix
        self.gateway_id = gateway_id
        self.s = settings or Settings()
        self.alarm_m = alarm_m
        self.thresholds_fn = thresholds_fn  # node -> {"alarm_m": ...} or None
        self.min_step_s = min_step_s
        self.nodes = {}  # node -> NodeForecast
        self._last = {}  # node -> time of the newest reading its last forecast used
        # shaft node -> its catchment's gauge nodes; and the other way round
        self.rain_gauges = {k: tuple(v) for k, v in (rain_gauges or {}).items()}
        self._shafts_of = {}
        for shaft, gauges in self.rain_gauges.items():
            for g in gauges:
                self._shafts_of.setdefault(g, []).append(shaft)
        self.state_path = state_path
        self.save_every_s = save_every_s
        self._saved = None
        self.load_error = None
        if state_path:
            self._load(state_path)

    def _load(self, state_path: str | os.PathLike[str]) -> None:
        try:
            with open(state_path, encoding="utf-8") as f:
                d = json.load(f)
            if d.get("version") != STATE_VERSION:
                raise ValueError("version %r" % d.get("version"))
            for node, st in d["nodes"].items():
                fc = NodeForecast.from_state(st, self.s)
                fc.last = st.get("last")
                self.nodes[node] = fc
                self._last[node] = st.get("last_t")
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            # a damaged file: start afresh (the forecasts need a few readings again)
            self.nodes, self._last = {}, {}
            self.load_error = "%s: %s" % (state_path, e)

    def save(self) -> None:
        if not self.state_path:
            return
        d = {"version": STATE_VERSION, "nodes": {}}
        for node, fc in self.nodes.items():
            st = fc.state()
            st["last"] = fc.last
            st["last_t"] = self._last.get(node)
            d["nodes"][node] = st
        tmp = "%s.tmp" % self.state_path
        text = json.dumps(d, separators=(",", ":"))  # dumps: the C encoder (dump streams in Python)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.state_path)

    def _rain(self, gauge: str, t: float, total_m: float) -> None:
        # a gauge's counter goes to the shafts whose catchment it is in (its own node's
        # shaft when none is configured for it)
        shafts = self._shafts_of.get(gauge) or ([] if gauge in self.rain_gauges else [gauge])
        for shaft in shafts:
            fc = self.nodes.get(shaft)
            if fc is None:
                fc = self.nodes[shaft] = NodeForecast(self.alarm_m, self.s)
            fc.add_rain(gauge, t, total_m, len(self.rain_gauges.get(shaft, ())) or 1)

    def messages(self, f: Frame) -> list[tuple[str, bytes]]:
        m = f.msg
        recs = m["records"]
        found = False
        fc = self.nodes.get(f.node)
        for i, rec in enumerate(recs):
            name = rec.get(senml.N)
            if name != "l" and name != RAIN:
                continue
            v = rec.get(senml.V)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                continue
            q = m["quality"].get(i)
            if name == RAIN:
                if rec.get(senml.U, "m") == "m" and not (q and q[2] in BAD_QUALITY):  # rain in m; faulty: left out
                    self._rain(f.node, f.time_s + (rec.get(senml.T) or 0), float(v))
                continue
            if fc is None:  # (a gauge on the node may have made it just now)
                fc = self.nodes.get(f.node) or self.nodes.setdefault(f.node, NodeForecast(self.alarm_m, self.s))
            fc.add(f.time_s + (rec.get(senml.T) or 0), float(v), q[2] if q else 0, bool(m["flags"] & F_STORM))
            found = True
        if fc is None or not found or len(fc.points) < 2:
            return []  # nothing to say yet: no outbox row (it counts against [outbox] max_messages)
        last = self._last.get(f.node)
        if last is not None and fc.newest_t - last < self.min_step_s and fc.newest_t >= last:
            return []
        self._last[f.node] = fc.newest_t
        th = self.thresholds_fn(f.node) if self.thresholds_fn else None
        if th and th.get("alarm_m"):
            fc.alarm_m = th["alarm_m"]
        out = fc.forecast(now_s=f.received)
        body = {"node": f.node, "time": iso(f.received), "at": iso(fc.newest_t), "gateway": self.gateway_id}
        body.update(out)
        fc.last = body
        msgs = [(f"{self.prefix}/nodes/{f.node}/forecast", dumps(body))]
        changed = out.get("raised") or out.get("cleared")
        if changed:
            event = {"node": f.node, "event": "overflow_warning" if out.get("raised") else "overflow_warning_cleared",
                     "time": iso(f.received), "eta_s": out["eta_s"], "eta_early_s": out.get("eta_early_s"),
                     "level_m": out["level_m"], "alarm_m": out["alarm_m"], "why": out["why"],
                     "gateway": self.gateway_id}
            msgs.append((f"{self.prefix}/nodes/{f.node}/event", dumps(event)))
        if self.state_path and (changed or self._saved is None or f.received - self._saved >= self.save_every_s):
            self._saved = f.received
            try:
                self.save()
            except OSError:
                pass  # a full disk: the forecasts go on, the next save tries again
        return msgs
