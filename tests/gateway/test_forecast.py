# The overflow forecast (gateway/forecast.py) on level series with a known crossing: a
# clean storm, a noisy one, a data gap with a late backlog, a falling level and a sensor
# fault. The storm is the simulated world's hydrograph (firmware sim world: a raised-cosine
# rise, then an exponential drain) written out here so the truth is exact.
import json
import math
import random
import tempfile

import pytest

from gateway.forecast import NodeForecast, Settings

ALARM = 2.2


def storm_level(t, start=3600, rise=3600, peak=2.7, base=0.18):
    x = t - start
    if x <= 0:
        return base
    if x < rise:
        return base + peak * (1 - math.cos(math.pi * x / rise)) / 2
    return base + peak * math.exp(-(x - rise) / 2400)


def crossing(fn, alarm=ALARM):
    t = 0
    while fn(t) < alarm:
        t += 1
    return t


def feed(fc, times, fn, noise=0.0, seed=1, quality=None):
    # -> [(t, forecast)] after each reading, as the gateway computes it
    rng = random.Random(seed)
    out = []
    for t in times:
        q = quality(t) if quality else 0
        fc.add(t, fn(t) + rng.gauss(0, noise), quality=q, storm=fn(t) > 1.2)
        out.append((t, fc.forecast()))
    return out


def node_times(fn, until, normal=300, storm=30):
    # the node's rhythm: every 5 min, every 30 s once the level rises fast or is high
    t, prev, out = 0, fn(0), []
    fast = False
    while t <= until:
        out.append(t)
        cur = fn(t)
        fast = cur > 1.2 or (cur - prev) * 60 / (normal if not fast else storm) * 1000 > 20
        prev = cur
        t += storm if fast else normal
    return out


def first_warning(results):
    for t, f in results:
        if f["warning"]:
            return t, f
    return None, None


def test_clean_storm_warns_well_ahead_of_the_crossing():
    cross = crossing(storm_level)
    res = feed(NodeForecast(ALARM), node_times(storm_level, cross), storm_level)
    t, f = first_warning(res)
    assert t is not None, "no warning before the crossing"
    assert cross - t >= 15 * 60, f"only {cross - t} s lead"
    # the warning comes when the earliest plausible crossing is within the lead time
    assert f["eta_early_s"] <= 900 <= f["eta_s"] + 120 and f["confidence"] >= 0.4 and f["raised"]
    assert f["rate_mm_min"] > 20 and "rising" in f["why"] and "alarm level 2.20 m" in f["why"]
    assert f["inputs"]["readings"] >= 3
    # the projected time is honest: the forecast ETA at the warning is within 50 % of the truth
    assert abs(f["eta_s"] - (cross - t)) <= 0.5 * (cross - t)


def test_noisy_storm_still_warns_and_no_single_reading_raises_it():
    cross = crossing(storm_level)
    res = feed(NodeForecast(ALARM), node_times(storm_level, cross), storm_level, noise=0.02, seed=3)
    t, _ = first_warning(res)
    assert t is not None and cross - t >= 5 * 60
    # one wild reading in dry weather forecasts an early crossing once, but does not warn
    fc = NodeForecast(ALARM)
    for t in range(0, 3000, 300):
        fc.add(t, 0.18)
        fc.forecast()
    fc.add(3000, 1.5)  # a multipath echo that got through
    f = fc.forecast()
    assert not f["warning"]
    fc.add(3300, 0.18)
    assert not fc.forecast()["warning"]


def test_data_gap_then_late_backlog_out_of_order():
    cross = crossing(storm_level)
    times = node_times(storm_level, cross)
    outage = [t for t in times if 4000 <= t < 5200]
    live = [t for t in times if t not in outage]
    fc = NodeForecast(ALARM)
    warned = None
    for t in live:
        if t >= 5200 and outage:
            # the backlog arrives after the link is back, newest first (the node's order may vary)
            for b in reversed(outage):
                fc.add(b, storm_level(b))
            outage = []
        fc.add(t, storm_level(t))
        f = fc.forecast()
        if f["warning"] and warned is None:
            warned = t
    assert warned is not None and cross - warned >= 5 * 60
    assert [p[0] for p in fc.points] == sorted(p[0] for p in fc.points)
    # a stale series lowers confidence: the same readings seen an hour later
    fresh = fc.forecast(now_s=fc.newest_t)["confidence"]
    stale = fc.forecast(now_s=fc.newest_t + 3600)["confidence"]
    assert stale < fresh


def test_falling_level_forecasts_no_crossing_and_clears_the_warning():
    cross = crossing(storm_level)
    fc = NodeForecast(ALARM)
    res = feed(fc, node_times(storm_level, cross - 60), storm_level)
    assert res[-1][1]["warning"]
    # the rain stops: the level falls from just below the alarm
    def falling(t):
        return 2.1 - (t - cross) * 0.0005

    after = feed(fc, range(cross, cross + 1800, 30), falling)
    last = after[-1][1]
    assert last["eta_s"] is None and not last["warning"]
    assert any(f.get("cleared") for _, f in after)
    assert "falling" in last["why"]
    assert last["rate_mm_min"] < 0


def test_a_rise_that_slows_below_the_alarm_is_no_crossing():
    def small(t):
        return storm_level(t, peak=1.6)  # peaks at 1.78 m, below 2.2 m

    res = feed(NodeForecast(ALARM), node_times(small, 4 * 3600), small)
    assert not any(f["warning"] for _, f in res)


def test_sensor_fault_readings_are_left_out_and_counted():
    cross = crossing(storm_level)
    times = node_times(storm_level, cross)

    def quality(t):
        return 2 if 5000 <= t < 5600 else 0  # Q_FAULT: the record carries the last value

    def faulty(t):
        return 0.0 if 5000 <= t < 5600 else storm_level(t)  # what a faulted probe reads

    fc = NodeForecast(ALARM)
    res = feed(fc, times, faulty, quality=quality)
    assert all(p[1] > 0 for p in fc.points)
    skipped = [f["inputs"]["skipped"] for t, f in res if 5000 <= t < 5600]
    assert skipped and all(s == 1 for s in skipped)
    t, _ = first_warning(res)
    assert t is not None and cross - t >= 5 * 60


def test_at_or_above_the_alarm_the_eta_is_zero():
    fc = NodeForecast(ALARM)
    for i in range(12):
        fc.add(i * 30, 2.0 + i * 0.03)
    f = fc.forecast()
    assert f["level_m"] >= 2.2 and f["eta_s"] == 0 and f["eta_early_s"] == 0 and f["warning"]
    assert "at or above the alarm level" in f["why"]


def test_no_readings_and_one_reading_say_so():
    fc = NodeForecast(ALARM)
    f = fc.forecast()
    assert f["eta_s"] is None and f["level_m"] is None and "No valid" in f["why"]
    fc.add(10, 0.5)
    f = fc.forecast()
    assert f["eta_s"] is None and "rate of rise is not known" in f["why"]


@pytest.mark.parametrize("pts, eta", [([(0, 1.0), (60, 1.1)], 660.0), ([(0, 1.0), (60, 0.9)], None),
                                      ([(0, 2.0), (60, 2.3)], 0.0), ([(0, 1.0)], None),
                                      ([(0, 0.0), (60, 1.0), (700, 1.0), (760, 1.1)], 660.0)])
def test_bench_baseline_is_the_least_squares_line_of_the_last_10_minutes(pts, eta):
    from bench.forecast_bench import line_eta

    got = line_eta(pts, ALARM)
    assert got == pytest.approx(eta) if eta is not None else got is None


def test_settings_change_the_lead_time():
    cross = crossing(storm_level)
    times = node_times(storm_level, cross)
    short = first_warning(feed(NodeForecast(ALARM, Settings(lead_s=300)), times, storm_level))[0]
    long = first_warning(feed(NodeForecast(ALARM, Settings(lead_s=1800)), times, storm_level))[0]
    assert long < short


# ---- the gateway: forecasts retained at P/nodes/<node>/forecast, warnings as events


def _storm_frames(key, node, now, n=30, step_s=30):
    # a node with a clock sends a storm rising 60 mm/min from 1.0 m, storm mode on
    from protocol import message, senml

    out = []
    for i in range(n):
        t = int(now) - (n - i) * step_s
        lvl = round(1.0 + 0.06 * i * step_s / 60, 3)
        out.append(message.encode_data(key, node, 1, i, 1000 + i * step_s * 1000,
                                       [senml.record("l", lvl), senml.record("b", 3.7)],
                                       time_s=t, flags=message.F_STORM))
    return out


@pytest.mark.integration
def test_gateway_publishes_retained_forecast_and_a_warning_event(gateway_factory, subscriber, mosquitto):
    import socket
    import time

    from tests.gateway.conftest import NODES, Subscriber

    gw = gateway_factory()
    node, key = next(iter(NODES.items()))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for frame in _storm_frames(key, node, time.time()):
            sock.sendto(frame, gw.udp_addresses[0])
            time.sleep(0.002)
    finally:
        sock.close()
    assert subscriber.wait(lambda: any(j["event"] == "overflow_warning" for _, j in subscriber.on("/event")))
    ev = [j for _, j in subscriber.on("/event")][-1]
    assert ev["node"] == node and ev["alarm_m"] == 2.2 and "rising" in ev["why"]
    fcs = [j for t, j in subscriber.on("/forecast") if t == f"cn/nodes/{node}/forecast"]
    last = fcs[-1]
    assert last["warning"] and last["eta_s"] is not None and 0 < last["eta_s"] < 30 * 60
    assert 50 < last["rate_mm_min"] < 70 and last["inputs"]["readings"] >= 5
    assert set(last) >= {"eta_s", "level_m", "rate_mm_min", "confidence", "inputs", "why", "alarm_m"}
    # retained: a consumer that connects later gets the latest forecast at once
    late = Subscriber(mosquitto.port, topic=f"cn/nodes/{node}/forecast", client_id="late-forecast")
    try:
        assert late.wait(lambda: late.on("/forecast"))
        with late.lock:
            assert late.messages[0][2] is True  # the retain flag
    finally:
        late.close()
    # frames without a level reading get no forecast
    assert all(t.endswith(f"/{node}/forecast") for t, _ in subscriber.on("/forecast"))


def test_forecast_config_section(tmp_path, capsys):
    from gateway import config
    from tests.gateway.conftest import check_config, write_config

    path = write_config(tmp_path, "mqtt://127.0.0.1:1883", extra_top="")
    text = path.read_text() + "\n[forecast]\nlead_min = 20\nalarm_m = 1.8\n"
    path.write_text(text)
    s = config.load(path)
    assert s.forecast.lead_s == 1200 and s.forecast.alarm_m == 1.8 and s.forecast.enabled
    path.write_text(text.replace("lead_min = 20", "lead_min = 0"))
    assert check_config(path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[forecast] lead_min" in err[0]


def test_a_flood_of_readings_keeps_memory_bounded_and_fits_rarely():
    # a node reporting every 0.1 s (or a load test): at most MAX_POINTS kept, one forecast
    # per 10 s of reading time, and the forecast still sees the trend
    from gateway.forecast import MAX_POINTS, Forecasts
    from gateway.outputs import Frame

    fo = Forecasts("cn", "gw")
    out = []
    for i in range(5000):
        m = {"records": [{0: "l", 2: 1.0 + i * 0.0001}], "quality": {}, "flags": 1, "boot": 1, "seq": i,
             "uptime_ms": i * 100}
        out += fo.messages(Frame("sew-01", m, b"", 1000.0 + i * 0.1, 1000.0 + i * 0.1, "uptime", "udp"))
    assert len(fo.nodes["sew-01"].points) == MAX_POINTS
    forecasts = [p for t, p in out if t == "cn/nodes/sew-01/forecast"]
    assert 45 <= len(forecasts) <= 51  # 500 s of readings, one forecast per 10 s
    assert b'"rate_mm_min":60.0' in forecasts[-1]


# ---- the failures of issue 22, each reproduced on the forecaster of before


def dry(fc, t0, t1, step=60, level=0.3, noise=0.008, seed=5, storm=False):
    rng = random.Random(seed)
    out = []
    for t in range(t0, t1, step):
        fc.add(t, level + rng.gauss(0, noise), storm=storm)
        out.append(fc.forecast())
    return out


def test_two_false_echoes_in_a_row_in_dry_weather_raise_no_warning():
    # the pair trips the node's storm flag; neither the flag nor the pair may warn,
    # not at once and not later, when the pair sits in the trend's window
    for step, height in ((60, 1.9), (15, 2.1), (60, 1.2)):
        fc = NodeForecast(ALARM)
        res = dry(fc, 0, 3600, step)
        t = 3600
        for _ in range(2):
            fc.add(t, height, storm=True)
            res.append(fc.forecast())
            t += step
        res += dry(fc, t, t + 1800, step, storm=True, seed=6)
        assert not any(f["warning"] for f in res), (step, height)
        assert all(f["eta_s"] is None for f in res[-20:])
        assert fc.echoes and any(abs(e[0] - height) < 0.01 for e in fc.echoes)


def storm_readings(step, cross_after_s, fn):
    return [(t, fn(t)) for t in range(0, cross_after_s + 600, step)]


def test_a_false_echo_pair_in_a_storm_does_not_clear_a_good_warning():
    cross = crossing(storm_level)
    fc = NodeForecast(ALARM)
    echo_t = cross - 11 * 60
    raised = None
    t = 0
    while t < cross:
        y = storm_level(t) + random.Random(t).gauss(0, 0.008)
        if echo_t <= t < echo_t + 20:
            y = 2.6  # above the alarm, twice in a row
        fc.add(t, y, storm=storm_level(t) > 1.2)
        f = fc.forecast()
        if f["warning"] and raised is None:
            raised = t
        if raised is not None:
            assert f["warning"] and not f.get("cleared"), (t - cross, f["why"])
        t += 10 if storm_level(t) > 0.5 else 60  # the node's storm interval
    assert raised is not None and cross - raised >= 10 * 60


def surcharge_level(t, crown=1.6, slow_mm_min=45):
    # 100 mm/min up to the pipe crown, then slower as the water backs up into the pipes
    if t < 600:
        return 0.3
    lv = 0.3 + (t - 600) / 60 * 0.1
    if lv <= crown:
        return lv
    t_crown = 600 + (crown - 0.3) / 0.1 * 60
    return crown + (t - t_crown) / 60 * slow_mm_min / 1000


@pytest.mark.parametrize("crown, slow", [(1.6, 45), (1.6, 30), (1.9, 30), (2.0, 45)])
def test_a_rise_that_slows_near_the_alarm_is_not_read_as_a_peak(crown, slow):
    def fn(t):
        return surcharge_level(t, crown, slow)

    cross = crossing(fn)
    fc = NodeForecast(ALARM)
    rng = random.Random(2)
    raised = None
    for t in range(0, cross + 60, 15):
        fc.add(t, fn(t) + rng.gauss(0, 0.005), storm=t > 600)
        f = fc.forecast()
        if f["warning"] and raised is None:
            raised = t
        if raised is not None and t < cross:
            assert f["warning"] and f["eta_s"] is not None, (t - cross, f["why"])
            assert "peak below" not in f["why"], (t - cross, f["why"])
    assert raised is not None and cross - raised >= 5 * 60


def test_ten_second_readings_keep_the_documented_15_minute_window():
    fc = NodeForecast(ALARM)
    for t in range(0, 1800, 10):
        fc.add(t, 0.3 + t * 0.00005)
    f = fc.forecast()
    assert f["inputs"]["span_s"] >= 15 * 60 - 10 and f["inputs"]["readings"] >= 90


def _storm_cases():
    # (name, [(t, level)]) level series that made the contract contradict itself before
    rng = random.Random(11)
    cases = []
    for peak in (1.95, 2.05, 2.15, 2.5, 3.2):
        def fn(t, peak=peak):
            return storm_level(t, peak=peak - 0.18, rise=2400)
        pts = []
        for t in range(0, 3 * 3600, 15):
            y = fn(t) + rng.gauss(0, 0.01)
            if rng.random() < 0.02:
                y = rng.uniform(0.5, 3.0)
            pts.append((t, y))
        cases.append(("storm to %.2f m" % peak, pts))
    # a fast rise to just under the alarm, then flat: the warning must not stand without an ETA
    cases.append(("flat under the alarm", [(t, min(2.15, 0.3 + t * 0.002)) for t in range(0, 7200, 30)]))
    # a sudden drop while warned (the shaft drains): never "rising" at a negative rate
    cases.append(("drain", [(t, 0.3 + t * 0.0015 if t < 1100 else 1.95 - (t - 1100) * 0.001)
                            for t in range(0, 2400, 10)]))
    return cases


@pytest.mark.parametrize("name, pts", _storm_cases(), ids=[c[0] for c in _storm_cases()])
def test_the_forecast_contract_holds_on_every_forecast(name, pts):
    fc = NodeForecast(ALARM)
    for t, y in pts:
        fc.add(t, y, storm=y > 1.2)
        f = fc.forecast(now_s=t + 2)
        if f["eta_s"] is not None and f["eta_early_s"] is not None:
            assert f["eta_early_s"] <= f["eta_s"], f
        if f["warning"]:
            assert f["eta_s"] is not None and f["eta_early_s"] is not None, f
        r = f["rate_mm_min"]
        if r is not None:
            why = f["why"]
            assert ("rising" in why) == (r >= 0.5) and ("falling" in why) == (r <= -0.5), f
            assert "-" not in why.split(":")[0], f  # never "rising -6968 mm/min"
        assert f["why"].endswith(".") and f["why"].count(". ") == 0, f["why"]
    last = fc.forecast(now_s=pts[-1][0] + 2)
    if pts[-1][1] < pts[-20][1]:
        assert not last["warning"] and last["eta_s"] is None


def test_the_forecast_state_survives_a_gateway_restart(tmp_path):
    from gateway.forecast import Forecasts
    from gateway.outputs import Frame

    path = tmp_path / "forecast.json"

    def frame(t, y):
        m = {"records": [{0: "l", 2: y}], "quality": {}, "flags": 1, "boot": 1, "seq": 0, "uptime_ms": 0}
        return Frame("sew-01", m, b"", t + 1.0, float(t), "node", "test")

    fo = Forecasts("cn", "gw", state_path=str(path))
    events = []
    for t in range(0, 1200, 15):
        events += [b for tp, b in fo.messages(frame(t, 0.5 + t * 0.001)) if tp.endswith("/event")]
    assert len(events) == 1 and b'"overflow_warning"' in events[0]
    rate = fo.nodes["sew-01"].model.x[1]
    # the gateway stops (after its last periodic save) and starts again
    fo2 = Forecasts("cn", "gw", state_path=str(path))
    fc = fo2.nodes["sew-01"]
    assert fc.warning and fc.model is not None and abs(fc.model.x[1] - rate) < 0.01
    after = []
    for t in range(1200, 1400, 15):
        after += fo2.messages(frame(t, 0.5 + t * 0.001))
    assert after and not any(tp.endswith("/event") for tp, _ in after)  # no second "raised"
    f = fo2.nodes["sew-01"].last
    assert f["warning"] and 50 < f["rate_mm_min"] < 70
    # a damaged state file: the gateway starts afresh and says so
    path.write_text("{not json")
    fo3 = Forecasts("cn", "gw", state_path=str(path))
    assert fo3.nodes == {} and fo3.load_error


# ---- rain gauges in the catchment (bench/forecast_world.py's flash floods)


def _first_lead(sc, with_rain):
    import copy

    from bench import forecast_bench as fb
    from gateway import forecast

    def strip(rows):
        return [r[:5] + ((r[5] if with_rain else None),) for r in rows]

    sc = copy.copy(sc)
    sc.history, sc.readings, sc.restarts = strip(sc.history), strip(sc.readings), []
    with tempfile.TemporaryDirectory() as tmp:
        ours, _ = fb.run(sc, forecast, Settings(), tmp)
    return fb.lead_at(sc.cross, ours)


def test_a_rain_gauge_warns_flash_floods_ahead_that_the_level_cannot():
    from bench import forecast_world as world

    with_rain, without = [], []
    for seed in range(4):
        sc = world.scenario("flash flood", 0, random.Random(seed))
        with_rain.append(_first_lead(sc, True))
        without.append(_first_lead(sc, False))
    # 7-10 min after the rain starts: the level alone warns less than 5 min ahead
    assert all(x is None or x < 300 for x in without), without
    # the gauge's rain, through what the shaft's rain model learned from its past storm,
    # warns every one of them earlier, by a minute on average, and some 5 min ahead
    assert all(a is not None and (b is None or a >= b) for a, b in zip(with_rain, without, strict=True))
    assert sum(a - (b or 0) for a, b in zip(with_rain, without, strict=True)) / 4 >= 45, (with_rain, without)
    assert any(a >= 300 for a in with_rain), with_rain


def test_rain_of_the_gauges_configured_for_a_catchment_reaches_its_shaft(tmp_path):
    from gateway.forecast import Forecasts
    from gateway.outputs import Frame

    def frame(node, t, recs):
        m = {"records": recs, "quality": {}, "flags": 0, "boot": 1, "seq": 0, "uptime_ms": 0}
        return Frame(node, m, b"", t + 1.0, float(t), "node", "test")

    fo = Forecasts("cn", "gw", state_path=str(tmp_path / "f.json"), rain_gauges={"sew-01": ["rg-01", "rg-02"]})
    fo.messages(frame("rg-01", 0, [{0: "rain", 2: 0.010}]))
    fo.messages(frame("rg-01", 60, [{0: "rain", 2: 0.0104}]))  # 0.4 mm
    fo.messages(frame("rg-02", 60, [{0: "rain", 2: 0.002}]))
    fo.messages(frame("rg-02", 120, [{0: "rain", 2: 0.0002}]))  # counting again from 0: 0.2 mm
    out = fo.messages(frame("sew-01", 120, [{0: "l", 2: 0.3}, {0: "rain", 2: 0.5}]))  # not its catchment
    assert set(fo.nodes) == {"sew-01"}  # the gauges feed the shaft; they get no forecast of their own
    rain = fo.nodes["sew-01"].rain
    assert set(rain.totals) == {"rg-01", "rg-02"}
    assert rain.bin_mm == pytest.approx((0.4 + 0.2) / 2)  # each of the two gauges counts half
    assert out == []  # one level reading: nothing to say yet
    # a node's own gauge counts for its own shaft when nothing is configured
    fo2 = Forecasts("cn", "gw")
    fo2.messages(frame("sew-02", 0, [{0: "l", 2: 0.3}, {0: "rain", 2: 0.001}]))
    fo2.messages(frame("sew-02", 60, [{0: "l", 2: 0.3}, {0: "rain", 2: 0.0016}]))
    assert fo2.nodes["sew-02"].rain.bin_mm == pytest.approx(0.6)
    # what the rain model learned is kept across a restart
    fo.save()
    again = Forecasts("cn", "gw", state_path=str(tmp_path / "f.json"))
    assert again.nodes["sew-01"].rain.totals == rain.totals


def test_forecast_config_rain_gauges(tmp_path):
    from gateway import config
    from tests.gateway.conftest import write_config

    path = write_config(tmp_path, "mqtt://127.0.0.1:1883", extra_top="")
    base = path.read_text()
    path.write_text(base + '\n[forecast]\nrain_gauges = {"sew-01" = ["rg-01"]}\n')
    assert config.load(path).forecast.rain_gauges == (("sew-01", ("rg-01",)),)
    path.write_text(base + '\n[forecast]\nrain_gauges = {"sew-01" = []}\n')
    with pytest.raises(config.ConfigError, match="rain_gauges"):
        config.load(path)


def test_a_rain_counter_older_than_the_last_one_is_no_new_rain_and_an_outage_s_rain_is_spread():
    # A LoRa node sends its newest frame before its backlog (SPEC 13.3): a gauge's counter can
    # arrive after a newer one. Smaller than that one, it read as a gauge that started counting
    # again: its whole count taken as new rain for the rain model. And the first counter after
    # an outage holds all of the outage's rain: as fallen in the last minutes, "if it rains on
    # like this" made an hour's rain a cloudburst.
    fc = NodeForecast(ALARM)
    for t in range(0, 1500, 300):  # 0.5 mm every 5 minutes, the level steady
        fc.add(t, 0.3)
        fc.add_rain("rg", t, 0.0005 * (t // 300))
        fc.forecast()
    fc.add(5040, 0.3)  # the level of the first frames after an hour's outage
    fc.add(5100, 0.3)
    fc.add_rain("rg", 5100, 0.0005 * 17)  # 6.5 mm since the last counter, 65 minutes before
    binned = fc.rain.bin_mm
    f = fc.forecast()
    assert f["inputs"]["rain_15min_mm"] == 1.5, f["inputs"]  # the 15 minutes' share, not 6.5 mm
    assert abs(binned - 6.5) < 1e-9  # all of it fell: the rain model gets it all
    for t in range(1500, 5100, 300):  # the backlog, older counters
        fc.add(t, 0.3)
        fc.add_rain("rg", t, 0.0005 * (t // 300))
    assert fc.rain.bin_mm == 0.0 and fc.rain.totals["rg"] == 0.0005 * 17  # none of it new rain
    assert fc.forecast()["inputs"]["rain_15min_mm"] == 1.5
    # and after a restart from the state file the same
    st = json.loads(json.dumps(fc.state()))
    again = NodeForecast.from_state(st)
    again.add_rain("rg", 4800, 0.0005 * 16)
    assert again.rain.bin_mm == 0.0


def test_a_late_reading_within_the_window_replays_from_the_state_before_it():
    # A storm read every 5 minutes, a 25-minute outage as it peaks; its 5 readings arrive after
    # newer ones, one with each new reading, 10 minutes apart (a LoRa node sends its newest frame
    # first, SPEC 13.3). Each forecast must be the one of the same readings come in time order.
    # Replayed from the filter's state before the late reading it is; replayed from the first
    # reading kept it was not (after the peak -12 mm/min where in order 7, then -79 where -44).
    times = list(range(0, 9600, 300))
    outage = [t for t in times if 4800 <= t < 6300]
    late = NodeForecast(ALARM)
    held, known = list(outage), []
    compared = 0
    for t in times:
        if t in outage:
            continue
        late.add(t, storm_level(t))
        known.append(t)
        if held and t >= 6300 and (t - 6300) % 600 == 0:
            late.add(held[0], storm_level(held[0]))  # after the newer one
            known.append(held.pop(0))
        b = late.forecast(now_s=t)
        in_order = NodeForecast(ALARM)
        for k in sorted(known):
            in_order.add(k, storm_level(k))
            a = in_order.forecast(now_s=k)
        a = in_order.forecast(now_s=t)
        if a["rate_mm_min"] is None:  # one reading: no rate yet
            assert b["rate_mm_min"] is None
            continue
        assert abs(a["rate_mm_min"] - b["rate_mm_min"]) <= 1.0 and a["warning"] == b["warning"], (t, a, b)
        compared += t >= 6300
    assert compared >= 10 and not held
