# Evaluation of the overflow early warning (gateway/forecast.py) on the simulated world.
#
# Each scenario runs the real node firmware (sampler, filters, storm mode, offline buffer)
# on the sim board against an in-process gateway, in virtual time; the forecaster sees the
# level readings in the order the gateway receives them (a link outage delivers a late
# backlog), dated by the node's uptime as the gateway dates them (SPEC section 8). The
# ground truth is the world's own water level, not a reading: the moment it really
# crosses the node's alarm level.
#
#   storms:   >= 50 seeded storms of varied shape: rise 20 min .. 3 h, peaks below and
#             above the alarm, fast or slow drains, one or two rain pulses, echo noise and
#             spikes, some with a link outage during the rise
#   dry days: 7 days of dry weather for each of 4 nodes (diurnal flow, echo noise, spikes)
#
# Reported for ours and for the naive baseline (the line through the last two readings,
# the same lead time and the same warning rule) in the same run: lead time at the real
# crossing (median, 10th percentile), crossings warned >= 5 min ahead, misses, false
# warnings per dry week per node, and false warnings in storms that stay below the alarm.
#
#   python bench/forecast_bench.py [--storms N] [--dry-days D] [--quick]
import argparse
import math
import os
import random
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from firmware import config  # noqa: E402
from firmware.sim.board import Runner, SimBoard  # noqa: E402
from firmware.sim.gateway import SimGateway  # noqa: E402
from firmware.sim.link import SimLink  # noqa: E402
from firmware.sim.world import VirtualClock, World  # noqa: E402
from gateway.forecast import NodeForecast, Settings, baseline  # noqa: E402
from protocol import message as msg  # noqa: E402

KEY = bytes(range(16))
NODE = "sew-01"
ALARM_MM = 2200
GOAL_MEDIAN_S, GOAL_WARNED, GOAL_FALSE = 15 * 60, 0.90, 1.0


class PulseWorld(World):
    # The sim world with a storm made of rain pulses [(start_s, rise_s, peak_mm, tau_s)]:
    # each the world's own shape (raised-cosine rise, exponential drain), summed.
    pulses = ()

    def rain_mm(self):
        t = self.t_s()
        total = 0.0
        for start, rise, peak, tau in self.pulses:
            x = t - start
            if x <= 0:
                continue
            if x < rise:
                total += peak * (1 - math.cos(math.pi * x / rise)) / 2
            else:
                total += peak * math.exp(-(x - rise) / tau)
        return total


def make_world(clock, pulses, **params):
    w = PulseWorld(clock, **params)
    w.pulses = tuple(pulses)
    return w


def true_crossing(pulses, params, until_s):
    # first whole second at which the world's true level reaches the alarm, or None
    clock = VirtualClock()
    w = make_world(clock, pulses, **params)
    t = 0
    while t <= until_s:
        clock.now_ms = t * 1000
        if w.level_mm() >= ALARM_MM:
            return t
        t += 1 if t >= pulses[0][0] else 60
    return None


def run_node(pulses, params, hours, flash):
    # -> [(t_s, level_m, status, storm)] in arrival order, t by the node's uptime
    cfg = config.validate({"node": NODE, "key": KEY.hex(), "interval_s": 300, "storm_interval_s": 30})
    out = []

    def sink(raw, d):
        recs = d["records"]
        for i, r in enumerate(recs):
            if r.get(0) == "l":
                q = d["quality"].get(i)
                out.append((d["uptime_ms"] / 1000 + (r.get(6) or 0), r.get(2), q[2] if q else msg.Q_OK,
                            bool(d["flags"] & msg.F_STORM)))

    gw = SimGateway({NODE: KEY}, sink=sink)
    clock = VirtualClock()
    world = make_world(clock, pulses, **params)
    board = SimBoard(flash, world=world, clock=clock)
    link = SimLink(board.world, board.clock, gw)
    Runner(board, cfg, link).run(int(hours * 3600 * 1000))
    return out


class Warner:
    # the warning rule for a forecast that only gives an ETA (the baseline): the same lead
    # time, two in a row to raise, cleared beyond twice the lead time
    def __init__(self, lead_s):
        self.lead_s = lead_s
        self.warning = False
        self.near = 0

    def update(self, eta):
        self.near = self.near + 1 if eta is not None and eta <= self.lead_s else 0
        raised = False
        if not self.warning and (self.near >= 2 or eta == 0):
            self.warning = raised = True
        elif self.warning and (eta is None or eta > 2 * self.lead_s):
            self.warning = False
        return raised


def score(readings, settings):
    # -> (ours, baseline): each a list of (raise time, clear time or None)
    fc = NodeForecast(ALARM_MM / 1000, settings)
    base = Warner(settings.lead_s)
    good = []
    ours, theirs = [], []
    for t, level, status, storm in readings:
        fc.add(t, level, status, storm)
        f = fc.forecast()
        if f.get("raised"):
            ours.append([t, None])
        if f.get("cleared") and ours:
            ours[-1][1] = t
        if status not in (msg.Q_FAULT, msg.Q_RANGE) and level is not None:
            good.append((t, level))
            good.sort()
        was = base.warning
        raised = base.update(baseline(good[-2:], ALARM_MM / 1000))
        if raised:
            theirs.append([t, None])
        elif was and not base.warning:
            theirs[-1][1] = t
    return ours, theirs


def lead_at(cross, warnings):
    # lead time of the warning that is on when the level really crosses (None: a miss)
    for raised, cleared in warnings:
        if raised <= cross and (cleared is None or cleared > cross):
            return cross - raised
    return None


def storms(n, seed=7):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        start = rng.uniform(2, 5) * 3600
        # rise time of the runoff: 1 in 10 a flash flood (20 min), else 30 min .. 3 h
        rise = (1200 if i % 10 == 9 else rng.choice((1800, 2700, 3600, 5400, 7200, 10800))) * rng.uniform(0.85, 1.15)
        peak = rng.uniform(1700, 4200)  # extra depth: below ~2020 mm the alarm is never reached
        tau = rng.uniform(1200, 7200)
        pulses = [(start, rise, peak, tau)]
        if i % 5 == 3:  # a second burst of rain: the level pauses, then rises again
            pulses[0] = (start, rise, peak * 0.55, tau)
            pulses.append((start + rise * rng.uniform(0.8, 1.6), rise * rng.uniform(0.7, 1.0), peak * 0.6, tau))
        params = {"seed": 1000 + i, "echo_noise_mm": rng.choice((3.0, 3.0, 8.0)),
                  "spike_p": rng.choice((0.0, 0.03, 0.06)), "dropout_p": rng.choice((0.0, 0.03))}
        if i % 5 == 2:  # the uplink fails during the rise: the readings arrive late, as a backlog
            params["outages"] = ((start + rise * 0.3, start + rise * 0.3 + rng.uniform(600, 1800)),)
        out.append((pulses, params))
    return out


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def fmt_min(s):
    return "-" if s is None else "%.1f min" % (s / 60)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--storms", type=int, default=60)
    ap.add_argument("--dry-days", type=int, default=7)
    ap.add_argument("--dry-nodes", type=int, default=4)
    ap.add_argument("--lead-min", type=float, default=15)
    ap.add_argument("--seed", type=int, default=7, help="seed of the storm set and the dry nodes")
    ap.add_argument("--quick", action="store_true", help="10 storms, 1 dry day, 1 node (a smoke run)")
    a = ap.parse_args(argv)
    if a.quick:
        a.storms, a.dry_days, a.dry_nodes = 10, 1, 1
    settings = Settings(lead_s=a.lead_min * 60)
    t0 = time.time()
    res = {"ours": {"leads": [], "miss": 0, "false_storm": 0, "false_dry": 0},
           "baseline": {"leads": [], "miss": 0, "false_storm": 0, "false_dry": 0}}
    crossings = below = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (pulses, params) in enumerate(storms(a.storms, a.seed)):
            end_s = pulses[-1][0] + pulses[-1][1] + 3600
            cross = true_crossing(pulses, params, end_s)
            readings = run_node(pulses, params, end_s / 3600, os.path.join(tmp, "s%d" % i))
            for name, warnings in zip(("ours", "baseline"), score(readings, settings), strict=True):
                r = res[name]
                if cross is None:
                    r["false_storm"] += len(warnings)
                    continue
                lead = lead_at(cross, warnings)
                if lead is None:
                    r["miss"] += 1
                else:
                    r["leads"].append(lead)
                # a warning that came and went before the crossing was a false one too
                r["false_storm"] += sum(1 for w in warnings if w[1] is not None and w[1] <= cross)
            crossings += cross is not None
            below += cross is None
        dry_weeks = a.dry_days * a.dry_nodes / 7
        for n in range(a.dry_nodes):
            params = {"seed": 500 + 10 * a.seed + n, "spike_p": 0.05, "dropout_p": 0.03, "echo_noise_mm": 5.0}
            readings = run_node([(1e12, 1, 0, 1)], params, a.dry_days * 24, os.path.join(tmp, "d%d" % n))
            for name, warnings in zip(("ours", "baseline"), score(readings, settings), strict=True):
                res[name]["false_dry"] += len(warnings)

    print("forecast: %d storms (%d cross the %.2f m alarm, %d stay below), %d dry days x %d nodes, "
          "lead time %g min; %.0f s" % (a.storms, crossings, ALARM_MM / 1000, below, a.dry_days, a.dry_nodes,
                                         a.lead_min, time.time() - t0))
    print("%-9s %12s %12s %14s %7s %16s %18s" % ("", "median lead", "p10 lead", "warned >=5min", "misses",
                                                  "false/dry week", "false in storms"))
    for name in ("ours", "baseline"):
        r = res[name]
        warned = sum(1 for x in r["leads"] if x >= 300)
        print("%-9s %12s %12s %8d (%3.0f%%) %7d %16.2f %18d" % (
            name, fmt_min(pct(r["leads"], 50)), fmt_min(pct(r["leads"], 10)), warned,
            100 * warned / max(1, crossings), r["miss"], r["false_dry"] / dry_weeks, r["false_storm"]))
    r = res["ours"]
    med = pct(r["leads"], 50) or 0
    warned = sum(1 for x in r["leads"] if x >= 300) / max(1, crossings)
    false = r["false_dry"] / dry_weeks
    print("goals: median lead %s / %s = %.2f (>= 1), warned >= 5 min %.0f%% / %.0f%% = %.2f (>= 1), "
          "false per dry week %.2f / %.0f (<= 1)" % (fmt_min(med), fmt_min(GOAL_MEDIAN_S), med / GOAL_MEDIAN_S,
                                                    100 * warned, 100 * GOAL_WARNED, warned / GOAL_WARNED, false,
                                                    GOAL_FALSE))
    ok = med >= GOAL_MEDIAN_S and warned >= GOAL_WARNED and false <= GOAL_FALSE
    print("forecast goals %s" % ("met" if ok else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
