# The node's storm-mode trigger (firmware/policy.py) at short intervals: the rise is taken
# against a reading at least a minute old and must show on two readings in a row when they
# come less than a minute apart, so noise between readings 10 s apart is no rise; a jump
# ten times the storm rise must still be there on the next reading.
import random

from firmware.policy import Policy

CFG = {"interval_s": 10, "storm_interval_s": 10,
       "thresholds": {"alarm_mm": 2200, "storm_mm": 1200, "rise_mm_min": 20, "hysteresis_mm": 100}}


def run(levels, step_ms=10000):
    p = Policy(CFG, lambda *_: None)
    on = []
    for i, lvl in enumerate(levels):
        p.due(lvl, i * step_ms)
        on.append(p.storm)
    return on


def test_noise_at_a_10_s_interval_does_not_turn_storm_mode_on():
    rng = random.Random(4)
    # an hour of dry weather at 300 mm with 3-6 mm of echo noise (the sim world's, after the
    # node's burst filter): a 5 mm step in 10 s read as 30 mm/min turned storm mode on before
    for sigma in (3, 6):
        assert not any(run([300 + round(rng.gauss(0, sigma)) for _ in range(360)])), sigma


def test_a_real_rise_turns_it_on_within_two_minutes():
    levels = [300] * 30 + [300 + 30 * i // 6 for i in range(1, 60)]  # 30 mm/min from minute 5
    on = run(levels)
    first = on.index(True)
    assert 30 < first <= 30 + 12


def test_one_false_echo_does_not_two_do():
    base = [300] * 30
    assert not any(run(base + [1100] + base))  # an 800 mm jump, gone at the next reading
    # at the 5-minute interval one reading still does (160 mm/min): a real rise cannot wait
    # another 5 minutes, and the gateway's forecast does not take the storm flag on trust
    assert any(run(base + [1100] + base, step_ms=300000))
    assert any(run(base + [1100, 1100] + base))  # still there 10 s later: a jump, taken as one
