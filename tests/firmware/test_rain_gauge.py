# The tipping-bucket rain gauge (firmware/drivers/tipping_bucket.py): the pulse counter and its
# debounce on the real MicroPython VM, the simulated gauge on the sim board driven by the
# world's rain, the node's "rain" records, and the gateway's forecast taking them.
import pytest

from firmware import config
from protocol import message as msg
from tests.support import mpvm

KEY = "00" * 16
GAUGE = {"kind": "tipping_bucket", "pin": 22}

# The reed switch per the TE525 data sheet: closed ~135 ms per tip, bounce settled within
# 0.75 ms (single bounces up to 0.25 ms), at the closing and again at the opening. Times in
# us; the driver's clock is in ms, so the bounce of one closing lands in the same ms or the
# next. Tips 1440 ms apart: 0.2 mm at 500 mm/h, more than any recorded minute intensity.
DEBOUNCE_ON_MICROPYTHON = """
import micropython
from firmware.drivers.tipping_bucket import TippingBucket

class Pin:
    IRQ_FALLING = 2
    def __init__(self):
        self.handler = None
        self.level = 1
    def irq(self, trigger=None, handler=None, hard=False):
        assert trigger == self.IRQ_FALLING and hard
        self.handler = handler
    def value(self):
        return self.level

class Clock:
    us = 0
    def irq_ms(self):
        return self.us // 1000

pin = Pin()
clock = Clock()
g = TippingBucket(pin, clock.irq_ms, 300)

def edge(us, level):
    clock.us = us
    was = pin.level
    pin.level = level
    if was and not level:
        micropython.heap_lock()  # a hard IRQ may not allocate: this raises if the handler does
        try:
            pin.handler(pin)
        finally:
            micropython.heap_unlock()

def tip(t, bounce_us=(250, 500), closed_us=135000):
    # closing: closed, open again for a moment, closed; ~135 ms later the opening: open,
    # closed again for a moment, open. 3 falling edges, one tip
    edge(t, 0)
    for i, b in enumerate(bounce_us):
        edge(t + b, i % 2 == 0)
    t += closed_us
    edge(t, 1)
    for i, b in enumerate(bounce_us):
        edge(t + b, i % 2 == 1)

t = 5000000
for i in range(50):
    tip(t)
    t += 1440000
print("TIPS", g.tips, "BOUNCES", g.bounces)
# at 600 mm/h (1.2 s between tips) every tip still counts; a switch that chatters for 40 ms
# at its closing counts once
g3 = TippingBucket(pin, clock.irq_ms, 300)
t = 10000000
for i in range(20):
    tip(t, bounce_us=tuple(range(1000, 40000, 1000)))
    t += 1200000
print("CHATTER", g3.tips)
"""


@pytest.mark.micropython
def test_debounce_counts_each_tip_once_on_micropython():
    out = mpvm.run(DEBOUNCE_ON_MICROPYTHON).stdout.split()
    v = dict(zip(out[0::2], out[1::2], strict=False))
    # each tip: 2 falling edges at the closing and 1 at the opening; one counts
    assert v["TIPS"] == "50" and v["BOUNCES"] == "100", out
    assert v["CHATTER"] == "20", out


def test_debounce_across_the_ticks_wrap():
    # the board's ms ticks wrap at 2**30 (firmware/clock.py): tips on both sides count once each
    from firmware.drivers.tipping_bucket import TippingBucket
    from firmware.sim.devices import TippingBucketSim

    class Pin:
        IRQ_FALLING = TippingBucketSim.IRQ_FALLING

        def irq(self, trigger=None, handler=None, hard=False):
            self.handler = handler

    now = [0x3FFFFFFF - 1000]
    pin = Pin()
    g = TippingBucket(pin, lambda: now[0] & 0x3FFFFFFF, 300)
    for _ in range(4):
        for dt in (0, 0, 135):  # the closing, its bounce, the opening's bounce
            now[0] += dt
            pin.handler(pin)
        now[0] += 1440 - 135
    assert g.tips == 4 and g.bounces == 8


def test_a_gauge_is_checked_like_any_sensor():
    cfg = config.validate({"node": "n", "key": KEY, "sleep": "none", "sensors": [GAUGE]})
    assert cfg["sensors"][0] == {"kind": "tipping_bucket", "pin": 22, "mm_per_tip": 0.2, "debounce_ms": 300}
    for raw, words in (
        ({"sensors": [{"kind": "tipping_bucket"}], "sleep": "none"}, "sensors[0]: pin is required"),
        ({"sensors": [dict(GAUGE, mm_per_tip=0)], "sleep": "none"}, "mm_per_tip must be a number in (0, 10]"),
        ({"sensors": [GAUGE]}, 'a tipping_bucket counts while the node waits: set "sleep": "none"'),
        ({"sensors": [GAUGE], "sleep": "deep"}, '"sleep": "none"'),
        ({"sensors": {"level": GAUGE}, "sleep": "none"}, "sensors.level.kind must be one of a02yyuw"),
    ):
        with pytest.raises(config.ConfigError) as e:
            config.validate(dict({"node": "n", "key": KEY}, **raw))
        assert words in str(e.value), (raw, str(e.value))


def run_storm(rig, hours=2.5):
    r = rig({"interval_s": 60, "heartbeat_s": 60, "sleep": "none", "sensors": [{"kind": "a02yyuw"}, GAUGE]},
            rain_start_s=1800, rain_rise_s=3600, rain_mm_h=24.0, spike_p=0, dropout_p=0)
    r.run(hours)
    return r


def test_the_sim_gauge_tips_arrive_as_rain_records(rig):
    # the world rains 24 mm/h for an hour from 15 min (its runoff reaches the shaft 15 min
    # later): the node's frames carry the rain it counted, 0.2 mm per tip, bounce and all
    r = run_storm(rig)
    gauge = r.board.on_pins[22]
    part = r.node.sampler.sensors[-1][0].part
    assert gauge.tips == int(24.0 / 0.2) == 120  # the whole event fell
    assert part.tips == gauge.tips and part.bounces == 2 * gauge.tips
    rain = r.values("rain")
    assert rain[0] == 0 and rain[-1] == pytest.approx(0.024, abs=1e-7)
    assert all(b >= a for a, b in zip(rain, rain[1:], strict=False))  # a counter
    # the frame ahead of the level's rise: rain counted well before the shaft fills
    first_rain = next(d["uptime_ms"] for d in r.gw.decoded if dict((x[0], x[2]) for x in d["records"])["rain"])
    first_rise = next(d["uptime_ms"] for d in r.gw.decoded
                      if dict((x[0], x[2]) for x in d["records"])["l"] > 0.5)
    assert first_rise - first_rain > 15 * 60000
    # the records: l, d, rain, b; quality fine; the unit implied by the registered name
    d = r.gw.decoded[-1]
    assert [x[0] for x in d["records"]] == ["l", "d", "rain", "b"] and not d["quality"]
    assert all(1 not in x for x in d["records"])


def test_a_stuck_switch_is_a_fault(rig):
    r = rig({"interval_s": 60, "heartbeat_s": 60, "sleep": "none", "sensors": [GAUGE]})
    r.run(0.05)
    r.board.on_pins[22].value = lambda: 0  # shorted: closed for good
    n = len(r.gw.decoded)
    r.run(0.1)
    late = r.gw.decoded[n:]
    assert not late[0]["quality"] and all(d["quality"][0][2] == msg.Q_FAULT for d in late[1:])


def test_the_gateway_forecast_takes_the_nodes_rain(rig, tmp_path):
    from gateway.forecast import Forecasts
    from gateway.outputs import Frame

    r = run_storm(rig, 1.0)
    fo = Forecasts("cn", "gw", state_path=str(tmp_path / "f.json"))
    for d in r.gw.decoded:
        fo.messages(Frame("sew-07", d, b"", d["uptime_ms"] / 1000 + 1, d["uptime_ms"] / 1000, "uptime", "test"))
    model = fo.nodes["sew-07"].rain
    assert model is not None and model.totals["sew-07"] == pytest.approx(r.values("rain")[-1])
    assert sum(mm for _t0, _t, mm in fo.nodes["sew-07"]._rain_log) > 0


def test_over_lora_a_frame_with_rain_goes_in_the_full_format():
    # the compact profile (SPEC.md 13) has no field for rain: the LoRa link sends such a frame
    # in full, and the frames without it compact as before
    from firmware.lora_link import LoraLink
    from firmware.sim.world import VirtualClock
    from protocol import compact, senml

    class Modem:
        def get_time_on_air_us(self, n):
            return n * 1000

    key = bytes(16)
    link = LoraLink(Modem(), "sew-07", VirtualClock())
    rain = link.encode(key, "sew-07", 1, 0, 1000, [senml.record("l", 0.5), senml.record("rain", 0.0012)])
    d = msg.decode(rain, {"sew-07": key}.get)
    assert [(r[0], r[2]) for r in d["records"]] == [("l", 0.5), ("rain", 0.0012)]
    level = link.encode(key, "sew-07", 1, 1, 2000, [senml.record("l", 0.5)])
    assert len(compact.to_air(level)) < len(compact.to_air(rain))  # compact on the air; the other full
    assert msg.decode(level, {"sew-07": key}.get)["records"] == [{0: "l", 2: 0.5}]
