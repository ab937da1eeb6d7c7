# Overflow early warning: per node, a transparent forecast of when the wastewater level
# reaches the node's alarm threshold. The model is deliberately simple, so that a city
# can say why a warning was raised: a least-squares fit of the recent level readings
# (a line, and a parabola once there are enough of them), extrapolated to the alarm
# level. No learned weights, no hidden state beyond the last half hour of readings.
#
# How a forecast is made (docs/forecast.md has the reasoning and the evaluation):
# 1. Readings with a fault or out-of-range quality are left out; readings are kept in
#    time order whatever order they arrive in (a backlog after a link outage arrives late).
# 2. The fit uses the readings of the last `fit_s` seconds (at least `min_points`, reaching
#    back at most `window_s`): level now, rate of rise now, and its change (curvature).
# 3. Projection: level(tau) = L + r*tau + k*a*tau^2/2, with the curvature damped (k) and
#    only trusted from 5 readings on; the first tau where it meets the alarm level is the
#    ETA. A rise that is slowing may peak below the alarm: then no crossing is forecast.
# 4. Confidence in [0, 1] is the product of plain factors: how many readings, how well the
#    fit explains them, how fresh the newest is, and whether the node itself is in storm
#    mode. A warning needs the earliest plausible crossing (eta_early_s: the rate raised by
#    its standard error, the rise of the last 5 minutes alone if that is faster, the full
#    curvature of an accelerating rise) within lead_s and confidence >= min_confidence, on
#    two forecasts in a row, or on one while the node reports storm mode (one noisy
#    reading never warns); it clears once no crossing is forecast within twice the lead
#    time and the level is clear_below_m under the alarm.
import bisect
import math

from gateway.outputs import _dumps as dumps
from gateway.outputs import iso

# readings kept per node at most (40 minutes at the storm interval of 30 s is 80)
MAX_POINTS = 240
MAX_FIT = 60  # readings in one fit at most (15 minutes at 30 s is 30)

# quality statuses that exclude a reading (protocol.message Q_FAULT, Q_RANGE)
BAD_QUALITY = (2, 3)


class Settings:
    __slots__ = ("lead_s", "window_s", "fit_s", "short_s", "min_points", "min_rate_mm_min", "curvature",
                 "min_confidence", "horizon_s", "interval_s", "caution", "outlier_m", "clear_below_m")

    def __init__(self, lead_s=900.0, window_s=2400.0, fit_s=900.0, min_points=3, min_rate_mm_min=2.0,
                 curvature=0.5, min_confidence=0.4, horizon_s=4 * 3600.0, interval_s=300.0, caution=1.0,
                 short_s=300.0, outlier_m=0.15, clear_below_m=0.1):
        self.lead_s = lead_s  # warn when the alarm is forecast within this many seconds
        self.window_s = window_s  # readings older than this (behind the newest) are forgotten
        self.fit_s = fit_s  # the fit uses readings this recent, if there are min_points of them
        self.min_points = min_points
        self.min_rate_mm_min = min_rate_mm_min  # slower rises are "steady": no crossing forecast
        self.curvature = curvature  # how much of the fitted curvature the projection uses (0..1)
        self.min_confidence = min_confidence
        self.horizon_s = horizon_s  # no ETA is forecast further ahead than this
        self.interval_s = interval_s  # the node's normal reporting interval (freshness)
        # the warning uses the earliest plausible crossing: the rate raised by `caution`
        # standard errors and the whole (not damped) curvature of an accelerating rise
        self.caution = caution
        self.short_s = short_s  # the recent trend, for a rise that sets in fast (storm mode)
        self.outlier_m = outlier_m  # a reading this far off the trend of the rest is left out
        self.clear_below_m = clear_below_m  # a warning holds until the level is this far below the alarm


def _time(p):
    return p[0]


def _sums(points, t0):
    # one pass: sums of x^k (k = 0..4), y*x^k (k = 0..2) and y^2, x in minutes before t0
    s0 = s1 = s2 = s3 = s4 = y0 = y1 = y2 = yy = 0.0
    for t, y in points:
        x = (t - t0) / 60.0  # minutes keep the sums well scaled
        x2 = x * x
        s0 += 1
        s1 += x
        s2 += x2
        s3 += x2 * x
        s4 += x2 * x2
        y0 += y
        y1 += y * x
        y2 += y * x2
        yy += y * y
    return (s0, s1, s2, s3, s4), (y0, y1, y2), yy


def _fit(points, t0, degree, sums=None):
    # Least squares of level on (t - t0) for degree 1 or 2 -> (coefficients low to high, rms
    # residual, standard error of the slope at t0 per minute), or None when singular.
    sx, sy, yy = sums or _sums(points, t0)
    n = degree + 1
    m = [[sx[i + j] for j in range(n)] + [sy[i]] for i in range(n)]
    for c in range(n):  # Gauss-Jordan with partial pivoting; n <= 3
        piv = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[piv][c]) < 1e-12:
            return None
        m[c], m[piv] = m[piv], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                for j in range(c, n + 1):
                    m[r][j] -= f * m[c][j]
    coef = [m[i][n] / m[i][i] for i in range(n)]
    ss = max(0.0, yy - sum(coef[i] * sy[i] for i in range(n)))  # residual sum of squares
    count = sx[0]
    rms = math.sqrt(ss / max(1.0, count - n))
    mean = sx[1] / count
    sxx = sx[2] - count * mean * mean
    se = rms / math.sqrt(sxx) if sxx > 1e-12 else float("inf")
    return coef, rms, se


def _despike(points, limit_m):
    # Leave out isolated readings (a multipath echo that got past the node's filter): a
    # reading more than limit_m away from what its neighbours say (the median of up to two
    # on each side; for the newest, the line through the two before it) and more than
    # three times the neighbours' own step. A real rise moves the neighbours too, so it is
    # kept; a jump in the newest reading waits for the next one to confirm it.
    # -> (kept points, number left out)
    n = len(points)
    if n < 4:
        return points, 0
    ys = [p[1] for p in points]
    keep = []
    for i in range(n):
        y = ys[i]
        if i == n - 1:
            a, b = ys[i - 2], ys[i - 1]
            ref = 2 * b - a
            step = abs(b - a)
        else:
            nb = ys[max(0, i - 2):i] + ys[i + 1:i + 3]
            lo, hi = min(nb), max(nb)
            m = len(nb)
            # the median of 2..4 neighbours without sorting
            ref = (sum(nb) - lo - hi) / (m - 2) if m > 2 else (lo + hi) / 2
            if m == 3:
                ref = sum(nb) - lo - hi
            step = hi - lo
        if abs(y - ref) <= max(limit_m, 3 * step):
            keep.append(points[i])
    if len(keep) < n - max(1, n // 4):
        return points, 0  # too many "spikes": that is the signal, not noise
    return keep, n - len(keep)


def _first_crossing(level, rate, acc, target, horizon_min):
    # smallest tau in (0, horizon] minutes with level + rate*tau + acc*tau^2/2 >= target
    gap = target - level
    if gap <= 0:
        return 0.0
    if abs(acc) < 1e-12:
        if rate <= 0:
            return None
        tau = gap / rate
    else:
        a, b, c = acc / 2, rate, -gap
        disc = b * b - 4 * a * c
        if disc < 0:
            return None  # the parabola peaks below the target
        r = math.sqrt(disc)
        roots = [x for x in ((-b - r) / (2 * a), (-b + r) / (2 * a)) if x > 0]
        if not roots:
            return None
        tau = min(roots)
        if acc < 0 and rate - (-acc) * tau < 0:
            return None  # the crossing would come after the projected peak: not reached
    return tau if tau <= horizon_min else None


class NodeForecast:
    # The forecast state of one node. add() readings, forecast() when something changed.
    def __init__(self, alarm_m, settings=None):
        self.alarm_m = alarm_m
        self.s = settings or Settings()
        self.points = []  # [(t_s, level_m)] good readings, time order, within window_s
        self.skipped = 0  # readings left out for their quality since the last forecast
        self.storm = False
        self.warning = False
        self._near = 0  # consecutive forecasts inside the lead time
        self.newest_t = None
        self.last = None  # the last published forecast (the gateway's output keeps it here)
        self.trend = None  # (time, level m, rate m/min, curvature m/min^2) of the last fit

    def add(self, t_s, level_m, quality=0, storm=None):
        if storm is not None and (self.newest_t is None or t_s >= self.newest_t):
            self.storm = bool(storm)
        if quality in BAD_QUALITY or level_m is None or not math.isfinite(level_m):
            self.skipped += 1
            return False
        pts = self.points
        if not pts or t_s > pts[-1][0]:
            pts.append((t_s, level_m))  # the usual case: a newer reading
        else:
            i = len(pts)
            while i > 0 and pts[i - 1][0] > t_s:  # late arrivals are few: walk back from the end
                i -= 1
            if i > 0 and pts[i - 1][0] == t_s:
                pts[i - 1] = (t_s, level_m)  # the same reading again (a resend)
            else:
                pts.insert(i, (t_s, level_m))
        newest = pts[-1][0]
        self.newest_t = newest
        # forget what is older than the window, and beyond MAX_POINTS the oldest (a node
        # that reports every few seconds, or a flood): the list stays short, so cheap to trim
        cut = max(0, len(pts) - MAX_POINTS)
        while cut < len(pts) and pts[cut][0] < newest - self.s.window_s:
            cut += 1
        if cut:
            del pts[:cut]
        return True

    def forecast(self, now_s=None):
        # -> dict for P/nodes/<node>/forecast; now_s (default: the newest reading's time)
        # shortens the ETA by the time passed since that reading.
        s = self.s
        pts = self.points
        self.trend = None
        out = {"alarm_m": self.alarm_m, "eta_s": None, "level_m": None, "rate_mm_min": None,
               "confidence": 0.0, "warning": False}
        skipped, self.skipped = self.skipped, 0
        if not pts:
            out["inputs"] = {"readings": 0, "skipped": skipped}
            out["why"] = "No valid level readings in the last %d minutes." % (s.window_s // 60)
            return self._warn(out, None)
        newest = pts[-1][0]
        recent = pts[max(bisect.bisect_left(pts, newest - s.fit_s, key=_time), len(pts) - MAX_FIT):]
        if len(recent) < s.min_points:
            recent = pts[-s.min_points:]
        recent, outliers = _despike(recent, s.outlier_m)
        n = len(recent)
        age = 0.0 if now_s is None else max(0.0, now_s - newest)
        inputs = {"readings": n, "span_s": round(newest - recent[0][0], 1), "skipped": skipped,
                  "outliers": outliers, "age_s": round(age, 1), "storm": self.storm, "model": "level"}
        out["inputs"] = inputs
        level = recent[-1][1]
        if n < 2:
            out["level_m"] = round(level, 4)
            out["why"] = "Only one valid level reading: the rate of rise is not known yet."
            return self._warn(out, None)
        sums = _sums(recent, newest)
        fit1 = _fit(recent, newest, 1, sums)
        if fit1 is None:
            return self._warn(out, None)
        (level, rate), rms, se = fit1
        acc = acc_full = 0.0
        if n >= 5 and s.curvature > 0:
            fit2 = _fit(recent, newest, 2, sums)
            if fit2 is not None:
                (l2, r2, half_acc), rms2, _ = fit2
                level, rate, acc_full, rms = l2, r2, 2 * half_acc, rms2
                acc = acc_full * s.curvature
                inputs["model"] = "parabola"
        level = max(level, min(p[1] for p in recent[-2:]))  # never below the last two readings
        rate_mm = rate * 1000
        out["level_m"] = round(level, 4)
        out["rate_mm_min"] = round(rate_mm, 2)
        self.trend = (newest, level, rate, acc)
        inputs["accel_mm_min2"] = round(acc * 1000, 3)
        inputs["rms_mm"] = round(rms * 1000, 2)

        # confidence: readings, fit quality against the rise it projects, freshness, storm mode
        c_n = min(1.0, (n - 1) / 4)
        rise = abs(rate) * 10 + 1e-6  # the rise over 10 minutes, m
        c_fit = 1.0 / (1.0 + (2 * rms / rise) ** 2)
        c_age = 1.0 if age <= s.interval_s else max(0.0, 1 - (age - s.interval_s) / s.window_s)
        c_storm = 1.0 if self.storm else 0.8
        conf = c_n * c_fit * c_age * c_storm
        out["confidence"] = round(conf, 3)

        # the earliest plausible crossing, for the warning (None: none within the horizon)
        if math.isfinite(se) and n >= 3:
            hi_rate = rate + s.caution * se
            hi_acc = acc_full if acc_full > 0 else acc
            tau_hi = _first_crossing(level, hi_rate, hi_acc, self.alarm_m, s.horizon_s / 60)
            early = None if tau_hi is None else max(0.0, tau_hi * 60 - age)
        else:
            early = None
        short = recent[bisect.bisect_left(recent, newest - s.short_s, key=_time):]
        if len(short) >= 5:  # the last minutes alone: a rise that has just set in
            fit_s = _fit(short, newest, 1)
            if fit_s is not None and fit_s[0][1] > rate:
                tau_s = _first_crossing(level, fit_s[0][1] + s.caution * fit_s[2], 0.0, self.alarm_m,
                                        s.horizon_s / 60)
                if tau_s is not None and (early is None or tau_s * 60 - age < early):
                    early = max(0.0, tau_s * 60 - age)
                    inputs["short_rate_mm_min"] = round(fit_s[0][1] * 1000, 2)
        out["eta_early_s"] = None if early is None else round(early)

        if level >= self.alarm_m:
            out["eta_s"] = 0
            out["eta_early_s"] = 0
            out["why"] = "Level %.2f m is at or above the alarm level %.2f m." % (level, self.alarm_m)
            return self._warn(out, 0.0)
        if rate_mm < s.min_rate_mm_min and acc <= 0:
            out["eta_early_s"] = None
            out["why"] = ("Level %.2f m is steady or falling (%+.1f mm/min over %d readings): "
                          "no crossing of %.2f m is forecast." % (level, rate_mm, n, self.alarm_m))
            return self._warn(out, None)
        tau = _first_crossing(level, max(rate, 0.0) if acc > 0 else rate, acc, self.alarm_m, s.horizon_s / 60)
        if tau is None:
            why = ("Level %.2f m rising %.1f mm/min but slowing (%.2f mm/min per min): "
                   "it is projected to peak below the alarm level %.2f m." if acc < 0 else
                   "Level %.2f m rising %.1f mm/min: the alarm level %.2f m is more than %d h away.")
            out["why"] = (why % (level, rate_mm, acc * 1000, self.alarm_m) if acc < 0
                          else why % (level, rate_mm, self.alarm_m, s.horizon_s // 3600))
            return self._warn(out, early)
        eta = max(0.0, tau * 60 - age)
        out["eta_s"] = round(eta)
        trend = ("accelerating" if acc > 0 else "slowing") if acc else "steadily"
        out["why"] = ("Level %.2f m rising %.1f mm/min (%s) over the last %d readings: the alarm level "
                      "%.2f m is projected in %d min." % (level, rate_mm, trend, n, self.alarm_m, round(eta / 60)))
        if early is not None and early < eta - 60:
            out["why"] = out["why"][:-1] + ", possibly in %d min." % round(early / 60)
        return self._warn(out, early if early is not None else eta)

    def projection(self, step_s=60.0, max_s=3600.0):
        # the projected level [[t, level_m], ...] from the last fit, until it reaches the
        # alarm level, peaks, or max_s (for the status page's level chart); [] without a trend
        if self.trend is None:
            return []
        t0, level, rate, acc = self.trend
        if rate <= 0 and acc <= 0:
            return []
        out = [[t0, round(level, 4)]]
        tau = 0.0
        while tau < max_s and level < self.alarm_m:
            tau += step_s
            m = tau / 60
            if acc < 0 and rate + acc * m <= 0:
                break  # the projected peak
            level = out[0][1] + rate * m + acc * m * m / 2
            out.append([t0 + tau, round(min(level, self.alarm_m), 4)])
        return out

    def _warn(self, out, eta):
        # eta: the earliest plausible crossing in seconds (0: at the alarm), or None
        s = self.s
        near = eta is not None and eta <= s.lead_s and out["confidence"] >= s.min_confidence
        if eta == 0.0:
            near = True
            self._near = 2
        self._near = self._near + 1 if near else 0
        level = out["level_m"]
        # two forecasts in a row raise it; one is enough while the node itself reports storm
        # mode (its own sampler saw the rise) and the trend rests on at least 4 readings
        need = 1 if self.storm and out["inputs"].get("readings", 0) >= 4 else 2
        if not self.warning and self._near >= need:
            self.warning = True
            out["raised"] = True
        elif (self.warning and (eta is None or eta > 2 * s.lead_s)
              and (level is None or level < self.alarm_m - s.clear_below_m)):
            self.warning = False
            out["cleared"] = True
        out["warning"] = self.warning
        return out


def baseline(points, alarm_m):
    # The naive forecast the evaluation compares against: linear extrapolation of the last
    # two readings. -> ETA seconds from the newest reading, or None.
    if len(points) < 2:
        return None
    (t0, y0), (t1, y1) = points[-2], points[-1]
    if y1 >= alarm_m:
        return 0.0
    if t1 <= t0 or y1 <= y0:
        return None
    return (alarm_m - y1) * (t1 - t0) / (y1 - y0)


class Forecasts:
    # Gateway output (see gateway/outputs.py): for each frame with a level reading ("l"),
    # the node's forecast, retained at P/nodes/<node>/forecast, and an event at
    # P/nodes/<node>/event when a warning is raised or cleared. Both go through the outbox
    # like every output, so a warning is as durable as the readings that raised it.
    # The alarm level is the one the node reported (info key 5), else `alarm_m`.
    # A new forecast once the newest reading is `min_step_s` newer than the one the last
    # forecast used: every reading counts, but a burst of frames dated within seconds (a
    # load test, a node without a clock flooding) costs one fit, not one per frame.
    def __init__(self, prefix, gateway_id, settings=None, alarm_m=2.2, thresholds_fn=None, min_step_s=10.0):
        self.prefix = prefix
        self.gateway_id = gateway_id
        self.s = settings or Settings()
        self.alarm_m = alarm_m
        self.thresholds_fn = thresholds_fn  # node -> {"alarm_m": ...} or None
        self.min_step_s = min_step_s
        self.nodes = {}  # node -> NodeForecast
        self._last = {}  # node -> time of the newest reading its last forecast used

    def messages(self, f):
        m = f.msg
        recs = m["records"]
        found = False
        fc = self.nodes.get(f.node)
        for i, rec in enumerate(recs):
            if rec.get(0) != "l":
                continue
            v = rec.get(2)
            if not isinstance(v, int | float) or isinstance(v, bool):
                continue
            if fc is None:
                fc = self.nodes[f.node] = NodeForecast(self.alarm_m, self.s)
            q = m["quality"].get(i)
            fc.add(f.time_s + (rec.get(6) or 0), float(v), q[2] if q else 0, bool(m["flags"] & 1))
            found = True
        if not found or len(fc.points) < 2:
            return []  # nothing to say yet: no outbox row (it counts against [outbox] max_messages)
        last = self._last.get(f.node)
        if last is not None and fc.newest_t - last < self.min_step_s:
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
        if out.get("raised") or out.get("cleared"):
            event = {"node": f.node, "event": "overflow_warning" if out.get("raised") else "overflow_warning_cleared",
                     "time": iso(f.received), "eta_s": out["eta_s"], "eta_early_s": out.get("eta_early_s"),
                     "level_m": out["level_m"], "alarm_m": out["alarm_m"], "why": out["why"],
                     "gateway": self.gateway_id}
            msgs.append((f"{self.prefix}/nodes/{f.node}/event", dumps(event)))
        return msgs

