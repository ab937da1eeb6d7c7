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
import math

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


def _fit(points, t0, degree):
    # Least squares of level on (t - t0) for degree 1 or 2 -> (coefficients low to high, rms
    # residual) or None when the system is singular (all readings at one time).
    n = degree + 1
    # normal equations: sums of x^k for k = 0..2*degree and of y*x^k for k = 0..degree
    sx = [0.0] * (2 * degree + 1)
    sy = [0.0] * n
    for t, y in points:
        x = (t - t0) / 60.0  # minutes keep the sums well scaled
        p = 1.0
        for k in range(2 * degree + 1):
            sx[k] += p
            if k < n:
                sy[k] += y * p
            p *= x
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
    ss = 0.0
    for t, y in points:
        x = (t - t0) / 60.0
        e = y - sum(c * x ** k for k, c in enumerate(coef))
        ss += e * e
    dof = max(1, len(points) - n)
    rms = math.sqrt(ss / dof)
    # standard error of the slope at t0 (per minute), from the line's spread in time
    mean = sx[1] / sx[0]
    sxx = sx[2] - sx[0] * mean * mean
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
        if i == n - 1:
            ref = 2 * ys[i - 1] - ys[i - 2]
            step = abs(ys[i - 1] - ys[i - 2])
        else:
            nb = ys[max(0, i - 2):i] + ys[i + 1:i + 3]
            nb.sort()
            m = len(nb)
            ref = nb[m // 2] if m % 2 else (nb[m // 2 - 1] + nb[m // 2]) / 2
            step = nb[-1] - nb[0]
        if abs(ys[i] - ref) <= max(limit_m, 3 * step):
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

    def add(self, t_s, level_m, quality=0, storm=None):
        if storm is not None and (self.newest_t is None or t_s >= self.newest_t):
            self.storm = bool(storm)
        if quality in BAD_QUALITY or level_m is None or not math.isfinite(level_m):
            self.skipped += 1
            return False
        pts = self.points
        i = len(pts)
        while i > 0 and pts[i - 1][0] > t_s:  # late arrivals are few: walk back from the end
            i -= 1
        if i > 0 and pts[i - 1][0] == t_s:
            pts[i - 1] = (t_s, level_m)  # the same reading again (a resend)
        else:
            pts.insert(i, (t_s, level_m))
        newest = pts[-1][0]
        self.newest_t = newest
        cut = 0
        while pts[cut][0] < newest - self.s.window_s:
            cut += 1
        if cut:
            del pts[:cut]
        return True

    def forecast(self, now_s=None):
        # -> dict for P/nodes/<node>/forecast; now_s (default: the newest reading's time)
        # shortens the ETA by the time passed since that reading.
        s = self.s
        pts = self.points
        out = {"alarm_m": self.alarm_m, "eta_s": None, "level_m": None, "rate_mm_min": None,
               "confidence": 0.0, "warning": False}
        skipped, self.skipped = self.skipped, 0
        if not pts:
            out["inputs"] = {"readings": 0, "skipped": skipped}
            out["why"] = "No valid level readings in the last %d minutes." % (s.window_s // 60)
            return self._warn(out, None)
        newest = pts[-1][0]
        recent = [p for p in pts if p[0] >= newest - s.fit_s]
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
        fit1 = _fit(recent, newest, 1)
        if fit1 is None:
            return self._warn(out, None)
        (level, rate), rms, se = fit1
        acc = acc_full = 0.0
        if n >= 5 and s.curvature > 0:
            fit2 = _fit(recent, newest, 2)
            if fit2 is not None:
                (l2, r2, half_acc), rms2, _ = fit2
                level, rate, acc_full, rms = l2, r2, 2 * half_acc, rms2
                acc = acc_full * s.curvature
                inputs["model"] = "parabola"
        level = max(level, min(p[1] for p in recent[-2:]))  # never below the last two readings
        rate_mm = rate * 1000
        out["level_m"] = round(level, 4)
        out["rate_mm_min"] = round(rate_mm, 2)
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
        short = [p for p in recent if p[0] >= newest - s.short_s]
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
