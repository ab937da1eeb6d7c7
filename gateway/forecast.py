# Overflow early warning: per node, a transparent forecast of when the wastewater level
# reaches the node's alarm level. docs/forecast.md has the reasoning and the evaluation.
#
# How a forecast is made:
# 1. Input. Readings with a fault or out-of-range quality are left out and counted; the
#    rest are kept in time order whatever order they arrive in (a backlog after a link
#    outage arrives late: the shaft model is then replayed over the kept readings).
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
#    raised by its standard error, the rise never taken as slowing.
# 6. Warning: `eta_early_s` within the lead time with enough confidence, on two forecasts
#    in a row (at the alarm level, on one); cleared when no crossing is plausible within
#    twice the lead time, unless the level is near the alarm and still rising fast. While
#    a warning is on, `eta_s` is never null: where the central projection peaks below the
#    alarm, it is the earliest plausible crossing the warning stands on.
# The state of every node (model, learned shaft figures, warning) is kept in a JSON file
# in the data_dir, so a restarted gateway carries on where it stopped.
import json
import math
import os

from gateway.outputs import _dumps as dumps
from gateway.outputs import iso

MAX_POINTS = 240  # readings kept per node at most (40 min at 10 s)
BAD_QUALITY = (2, 3)  # quality statuses that exclude a reading (protocol.message Q_FAULT, Q_RANGE)
STATE_VERSION = 1


class Settings:
    __slots__ = ("lead_s", "window_s", "min_confidence", "horizon_s", "interval_s", "caution",
                 "noise_m", "max_rise_mm_min", "jerk", "accel_tau_min", "near_m", "fast_mm_min",
                 "echo_tol_m", "min_rate_mm_min")

    def __init__(self, lead_s: float = 900.0, window_s: float = 2400.0, min_confidence: float = 0.4,
                 horizon_s=4 * 3600.0, interval_s: float = 300.0,
                 caution: float = 1.0, noise_m: float = 0.01, max_rise_mm_min: float = 300.0, jerk: float = 3e-4,
                 accel_tau_min: float = 10.0, near_m: float = 0.5, fast_mm_min: float = 10.0,
                 echo_tol_m: float = 0.03, min_rate_mm_min: float = 2.0) -> None:
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


class Model:
    # Kalman filter over x = [level m, rate m/min, rate change m/min^2]; P its covariance.
    __slots__ = ("t", "x", "P")

    def __init__(self, t, level, noise) -> None:
        self.t = t
        self.x = [level, 0.0, 0.0]
        self.P = [[noise * noise * 4, 0.0, 0.0], [0.0, 0.01 ** 2, 0.0], [0.0, 0.0, 0.002 ** 2]]

    def predicted(self, t, s):
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

    def update(self, t, y, noise, s) -> None:
        x, P = self.predicted(t, s)
        S = P[0][0] + noise * noise
        k = [P[i][0] / S for i in range(3)]
        v = y - x[0]
        self.x = [x[i] + k[i] * v for i in range(3)]
        self.P = [[P[i][j] - k[i] * P[0][j] for j in range(3)] for i in range(3)]
        self.t = t


def fit_line(pts):
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


def project(level, rate, acc, tau_min, s):
    # level after tau_min minutes with the rate change decaying over accel_tau_min
    g = s.accel_tau_min * (1 - math.exp(-tau_min / s.accel_tau_min))
    return level + rate * tau_min + acc * s.accel_tau_min * (tau_min - g)


def first_crossing(level, rate, acc, target, s):
    # -> minutes until level(tau) first reaches target (0: there already), None: not
    # within the horizon, or the projection peaks below it first
    if level >= target:
        return 0.0
    horizon = s.horizon_s / 60
    prev_tau, prev = 0.0, level
    tau = 0.0
    while tau < horizon:
        tau = min(horizon, tau + (0.5 if tau < 30 else 2.0))
        lv = project(level, rate, acc, tau, s)
        if lv >= target:
            return prev_tau + (tau - prev_tau) * (target - prev) / (lv - prev)
        rate_then = rate + acc * s.accel_tau_min * (1 - math.exp(-tau / s.accel_tau_min))
        if rate_then <= 0:
            return None  # the projected peak is below the target
        prev_tau, prev = tau, lv
    return None


class NodeForecast:
    # The forecast state of one node. add() readings, forecast() when something changed.
    def __init__(self, alarm_m, settings=None) -> None:
        self.alarm_m = alarm_m
        self.s = settings or Settings()
        self.points = []  # [(t_s, level_m)] good-quality readings, time order, within window_s
        self.skipped = 0  # readings left out for their quality since the last forecast
        self.storm = False
        self.warning = False
        self._near = 0  # consecutive forecasts with a plausible crossing inside the lead time
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
        self.rejected = 0  # readings taken as false echoes since the last forecast
        self._jump = 0.0  # how far the first held reading was off the model
        self._done = 0  # how many of self.points the model has seen
        self._replay = False

    # ---- input

    def add(self, t_s, level_m, quality: int = 0, storm=None) -> bool:
        if storm is not None and (self.newest_t is None or t_s >= self.newest_t):
            self.storm = bool(storm)
        if quality in BAD_QUALITY or level_m is None or not math.isfinite(level_m):
            self.skipped += 1
            return False
        pts = self.points
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
        if self._replay:
            self._replay = False
            self.model, self.pending, self._done = None, [], 0
        for t, y in pts[self._done:]:
            self._step(t, y)
        self._done = len(pts)

    def _step(self, t, y) -> None:
        s = self.s
        m = self.model
        if m is None:
            self.model = Model(t, y, self.noise)
            return
        x, P = m.predicted(t, s)
        sd = math.sqrt(P[0][0] + self.noise * self.noise)
        gate = max(4 * sd, 5 * self.noise, 0.03)
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
        # the level really moved, and the model starts again from that line
        if len(pend) >= need_n and span >= need_s:
            line = fit_line(pend[-6:])
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

    def _known_echo(self, y):
        tol = self.s.echo_tol_m
        return any(e[1] >= 3 and abs(e[0] - y) <= tol for e in self.echoes)

    # ---- output

    def forecast(self, now_s=None):
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
        recent = [p for p in self.points if p[0] >= newest - 900]
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
        if self.pending:
            why += "; %d reading(s) at %.2f m wait for the next ones to confirm them" % (
                len(self.pending), self.pending[-1][1])
        out["why"] = why + "."
        return self._warn(out, early, near_fast)

    def projection(self, step_s: float = 60.0, max_s: float = 3600.0):
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

    def _warn(self, out, early, near_fast):
        # early: the earliest plausible crossing in seconds (0: at the alarm), or None
        s = self.s
        near = early is not None and early <= s.lead_s and out["confidence"] >= s.min_confidence
        self._near = self._near + 1 if near else 0
        if not self.warning and (self._near >= 2 or early == 0.0):
            self.warning = True
            out["raised"] = True
        elif self.warning and not near_fast and (early is None or early > 2 * s.lead_s):
            self.warning = False
            out["cleared"] = True
        out["warning"] = self.warning
        if self.warning and out["eta_s"] is None:
            out["eta_s"] = out["eta_early_s"]  # the warning stands on the earliest plausible crossing
        return out

    # ---- state that survives a restart

    def state(self):
        m = self.model
        return {"alarm_m": self.alarm_m, "points": self.points, "storm": self.storm, "warning": self.warning,
                "near": self._near, "noise": self.noise, "max_rate": self.max_rate, "echoes": self.echoes,
                "model": None if m is None else {"t": m.t, "x": m.x, "P": m.P}, "pending": self.pending}

    @classmethod
    def from_state(cls, d, settings=None):
        fc = cls(float(d["alarm_m"]), settings)
        fc.points = [(float(t), float(y)) for t, y in d.get("points", [])][-MAX_POINTS:]
        fc.newest_t = fc.points[-1][0] if fc.points else None
        fc.storm = bool(d.get("storm"))
        fc.warning = bool(d.get("warning"))
        fc._near = int(d.get("near", 0))
        fc.noise = float(d.get("noise", fc.noise))
        fc.max_rate = float(d.get("max_rate", fc.max_rate))
        fc.echoes = [[float(h), int(c)] for h, c in d.get("echoes", [])]
        m = d.get("model")
        if m:
            fc.model = Model(float(m["t"]), 0.0, fc.noise)
            fc.model.x = [float(v) for v in m["x"]]
            fc.model.P = [[float(v) for v in row] for row in m["P"]]
            fc.pending = [(float(t), float(y)) for t, y in d.get("pending", [])]
            fc._done = sum(1 for p in fc.points if p[0] <= fc.model.t or p in fc.pending)
        return fc


class Forecasts:
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
    def __init__(self, prefix, gateway_id, settings=None, alarm_m: float = 2.2, thresholds_fn=None,
                 min_step_s: float = 10.0,
                 state_path=None, save_every_s: float = 300.0) -> None:
        self.prefix = prefix
        self.gateway_id = gateway_id
        self.s = settings or Settings()
        self.alarm_m = alarm_m
        self.thresholds_fn = thresholds_fn  # node -> {"alarm_m": ...} or None
        self.min_step_s = min_step_s
        self.nodes = {}  # node -> NodeForecast
        self._last = {}  # node -> time of the newest reading its last forecast used
        self.state_path = state_path
        self.save_every_s = save_every_s
        self._saved = None
        self.load_error = None
        if state_path:
            self._load()

    def _load(self):
        try:
            with open(self.state_path, encoding="utf-8") as f:
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
            self.load_error = "%s: %s" % (self.state_path, e)

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
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(d, f, separators=(",", ":"))
        os.replace(tmp, self.state_path)

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
