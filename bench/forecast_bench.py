# Evaluation of the overflow early warning (gateway/forecast.py) on its own world
# (bench/forecast_world.py, written apart from firmware/sim): seeded storms of eight
# classes and dry weeks with pumps and false echoes, read by a node with storm mode,
# delivered over a link with delays, outages (late backlog) and gateway restarts.
#
# The forecaster runs as in the gateway: Forecasts.messages() for each frame as it
# arrives, its state kept in a state file, and rebuilt from that file at each restart
# (what a gateway crash leaves). A warning counts from the moment it was published (the
# frame's arrival), not from its reading's time. The ground truth is the world's true
# level: the moment it crosses the alarm level.
#
# In the same run, the same frames go to a baseline: a least-squares line through the
# readings of the last 10 minutes (quality fault left out), with the same lead time and
# the same warning rule (two forecasts in a row raise it; cleared beyond twice the lead).
#
# Reported per class and overall: lead time at the crossing (median, 10th percentile),
# crossings warned >= 5 min ahead, misses, warnings in storms that stayed below the alarm
# (near misses), warnings that came and went before a crossing, and false warnings per
# dry week per node.
#
#   python bench/forecast_bench.py [--storms N] [--dry-days D] [--dry-nodes K] [--quick]
#                                  [--model PATH]   (another forecast.py, e.g. an older one)
import argparse
import importlib.util
import inspect
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import forecast_world as world  # noqa: E402
from gateway.forecast import fit_line  # noqa: E402
from gateway.outputs import Frame  # noqa: E402

NODE = "sew-01"
LEAD_OK_S = 300


def load_model(path):
    if not path:
        from gateway import forecast
        return forecast
    spec = importlib.util.spec_from_file_location("forecast_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def line_eta(points, alarm_m, window_s=600.0):
    # the baseline: least-squares line through the readings of the last window_s seconds
    # -> seconds from the newest reading to the alarm level, 0 at or above, None: no crossing
    if not points:
        return None
    line = fit_line([p for p in points if p[0] >= points[-1][0] - window_s])
    if line is None:
        return None
    level, rate = line[0], line[1] / 60
    if level >= alarm_m:
        return 0.0
    return None if rate <= 0 else (alarm_m - level) / rate


class Warner:
    # the warning rule for the baseline's ETA: two forecasts in a row within the lead
    # time raise it (one at the alarm), cleared once beyond twice the lead time
    def __init__(self, lead_s):
        self.lead_s = lead_s
        self.warning = False
        self.near = 0

    def update(self, eta):
        self.near = self.near + 1 if eta is not None and eta <= self.lead_s else 0
        if not self.warning and (self.near >= 2 or eta == 0):
            self.warning = True
            return "raised"
        if self.warning and (eta is None or eta > 2 * self.lead_s):
            self.warning = False
            return "cleared"
        return None


def frame(t, level, q, storm, arrive, rain_m=None):
    recs = [{0: "l", 2: level}]
    if rain_m is not None:
        recs.append({0: "rain", 2: rain_m})
    m = {"records": recs, "quality": {0: (0, 0, q)} if q else {}, "flags": 1 if storm else 0,
         "boot": 1, "seq": 0, "uptime_ms": 0}
    return Frame(NODE, m, b"", arrive, t, "node", "bench")


def run(sc, model, settings, state_dir):
    # -> (ours, baseline): each a list of [raised at, cleared at or None], publication times
    kw = {}
    persist = "state_path" in inspect.signature(model.Forecasts).parameters
    path = os.path.join(state_dir, "forecast-%d.json" % id(sc))
    if persist:
        kw["state_path"] = path
        if os.path.exists(path):
            os.unlink(path)

    def new():
        return model.Forecasts("cn", "gw", settings, world.ALARM_M, **kw)

    fo = new()
    for arrive, t, level, q, storm, rain_m in sc.history:  # the shaft's past: learnt from, not scored
        fo.messages(frame(t, level, q, storm, arrive, rain_m))
    restarts = list(sc.restarts)
    ours, theirs = [], []
    base = Warner(settings.lead_s)
    good = []
    last_base = None
    for arrive, t, level, q, storm, rain_m in sc.readings:
        if restarts and arrive >= restarts[0][1]:
            restarts.pop(0)
            fo = new()  # the gateway restarted: what its state file kept, nothing more
        for topic, body in fo.messages(frame(t, level, q, storm, arrive, rain_m)):
            if topic.endswith("/event"):
                if b'"overflow_warning"' in body:
                    ours.append([arrive, None])
                elif ours and ours[-1][1] is None:
                    ours[-1][1] = arrive
        if q == 0:
            if not good or t >= good[-1][0]:
                good.append((t, level))
            else:
                good.append((t, level))
                good.sort()
            if len(good) > 400:
                del good[:100]
        if last_base is not None and t - last_base < 10:
            continue  # the same pace as the gateway's forecasts
        last_base = t
        eta = line_eta(good, world.ALARM_M)
        if eta is not None:
            eta = max(0.0, eta - (arrive - good[-1][0]))
        r = base.update(eta)
        if r == "raised":
            theirs.append([arrive, None])
        elif r == "cleared":
            theirs[-1][1] = arrive
    return ours, theirs


def lead_at(cross, warnings):
    # lead of the warning that is on when the level crosses (None: a miss)
    for raised, cleared in warnings:
        if raised <= cross and (cleared is None or cleared > cross):
            return cross - raised
    return None


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def fmt_min(s):
    return "-" if s is None else "%.1f" % (s / 60)


def new_tally():
    return {"n": 0, "crossings": 0, "leads": [], "warned": 0, "miss": 0, "below_warned": 0, "early_false": 0,
            "raised": 0}


def tally(t, sc, warnings):
    t["n"] += 1
    t["raised"] += len(warnings)
    if sc.cross is None:
        t["below_warned"] += bool(warnings)
        return
    t["crossings"] += 1
    lead = lead_at(sc.cross, warnings)
    if lead is None:
        t["miss"] += 1
    else:
        t["leads"].append(lead)
        t["warned"] += lead >= LEAD_OK_S
    t["early_false"] += sum(1 for w in warnings if w[1] is not None and w[1] <= sc.cross)


def main(argv=None):
    ap = argparse.ArgumentParser(description="overflow forecast on bench/forecast_world.py")
    ap.add_argument("--storms", type=int, default=220)
    ap.add_argument("--dry-days", type=int, default=14)
    ap.add_argument("--dry-nodes", type=int, default=4)
    ap.add_argument("--lead-min", type=float, default=15)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="16 storms, 2 dry days, 1 node (a smoke run)")
    ap.add_argument("--model", help="a forecast module to evaluate instead of gateway/forecast.py")
    a = ap.parse_args(argv)
    if a.quick:
        a.storms, a.dry_days, a.dry_nodes = 16, 2, 1
    if a.storms < 1 or a.dry_days < 0 or a.dry_nodes < 0 or a.lead_min <= 0:
        print("forecast bench: --storms must be >= 1, --dry-days/--dry-nodes >= 0, --lead-min > 0", file=sys.stderr)
        return 2
    try:
        model = load_model(a.model)
    except (OSError, ImportError, SyntaxError) as e:
        print("forecast bench: cannot load %s: %s" % (a.model, e), file=sys.stderr)
        return 2
    settings = model.Settings(lead_s=a.lead_min * 60)
    t0 = time.time()
    scs = world.storms(a.storms, a.seed)
    t_world = time.time() - t0
    classes = [c for c, _ in world.CLASSES]
    res = {name: {c: new_tally() for c in classes + ["all"]} for name in ("ours", "line")}
    dry_false = {"ours": 0, "line": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for sc in scs:
            for name, warnings in zip(("ours", "line"), run(sc, model, settings, tmp), strict=True):
                tally(res[name][sc.cls], sc, warnings)
                tally(res[name]["all"], sc, warnings)
        dry = world.dry_weeks(a.dry_days, a.dry_nodes, a.seed)
        for sc in dry:
            for name, warnings in zip(("ours", "line"), run(sc, model, settings, tmp), strict=True):
                dry_false[name] += len(warnings)
    weeks = a.dry_days * a.dry_nodes / 7
    print("forecast: %d storms, %d dry days x %d nodes, lead time %g min; world %.0f s, total %.0f s"
          % (a.storms, a.dry_days, a.dry_nodes, a.lead_min, t_world, time.time() - t0))
    print("| class | model | storms | crossings | median lead min | p10 lead min | warned >= 5 min | misses "
          "| warned, stayed below | cleared before crossing | warnings raised |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in classes + ["all"]:
        for name in ("ours", "line"):
            t = res[name][c]
            below = t["n"] - t["crossings"]
            print("| %s | %s | %d | %d | %s | %s | %s | %d | %s | %d | %d |" % (
                c, name, t["n"], t["crossings"], fmt_min(pct(t["leads"], 50)), fmt_min(pct(t["leads"], 10)),
                "%d (%.0f %%)" % (t["warned"], 100 * t["warned"] / t["crossings"]) if t["crossings"] else "-",
                t["miss"], "%d of %d" % (t["below_warned"], below) if below else "-", t["early_false"],
                t["raised"]))
    if weeks:
        print("false warnings per dry week per node: ours %.2f, line %.2f (%d and %d in %g node-weeks)"
              % (dry_false["ours"] / weeks, dry_false["line"] / weeks, dry_false["ours"], dry_false["line"], weeks))

    def nonflash(name):
        leads, n, warned = [], 0, 0
        for c in classes:
            if c != "flash flood":
                t = res[name][c]
                leads += t["leads"]
                n += t["crossings"]
                warned += t["warned"]
        return warned / max(1, n), pct(leads, 50) or 0

    (w_o, m_o), (w_l, m_l) = nonflash("ours"), nonflash("line")
    false = dry_false["ours"] / weeks if weeks else 0.0
    ok = w_o >= 0.9 and w_o >= w_l and m_o > m_l and false <= 1.0
    print("goals (non-flash crossings): warned >= 5 min %.0f %% (>= 90 %% and >= line's %.0f %%), median lead "
          "%s min (> line's %s), false per dry week %.2f (<= 1): %s"
          % (100 * w_o, 100 * w_l, fmt_min(m_o), fmt_min(m_l), false, "met" if ok else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
