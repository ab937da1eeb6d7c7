# What consumers get: strict SenML (names, units), and times that are distinct per node and
# say how they were found. The strict validator (tests/support/senml_strict.py) is the judge.
import time

import pytest

from gateway.conform import RecordCheck
from gateway.outputs import Envelope, Frame
from gateway.timing import FrameClock
from protocol import message, senml, units
from tests.gateway.conftest import NODES
from tests.support.senml_strict import REGISTERED_UNITS, UpChecker, check_pack
from tests.support.udpnode import UdpNode

T0 = 1_790_000_000.0


def test_unit_registry_matches_the_rfc_tables():
    # protocol/units.py against the validator's own copy, written from RFC 8428 12.1 and RFC 8798 2
    assert units.UNITS == REGISTERED_UNITS and len(units.UNITS) == 58 + 8
    for name, (unit, _) in senml.NAMES.items():
        assert unit in units.UNITS, name


@pytest.mark.parametrize("rec,fault", [
    (senml.record("temp 1", 1.0, unit="Cel"), "not a SenML name"),
    (senml.record("Wärme", 1.0, unit="Cel"), "not a SenML name"),
    (senml.record("t", 21.5, unit="degC"), "not in the SenML units registry"),
    (senml.record("w", 1.0, unit="°C"), "not in the SenML units registry"),
])
def test_bad_names_and_units_are_refused(rec, fault):
    check = RecordCheck().check
    assert fault in check([senml.record("l", 0.5), rec])
    assert check([senml.record("l", 0.5), senml.record("w", 12.5, unit="Cel"), senml.record("a/b:c_d.e-1", 1)]) is None
    assert check([senml.record("x", 1, unit="beat/min"), senml.record("y", 1, unit="kg/m3")]) is None  # registered


def envelope(node, m, t, source, received=None):
    raw = message.encode_data(NODES["sew-01"], node, m["boot"], m["seq"], m["uptime_ms"], m["records"])
    return Envelope("cn", "gw").messages(Frame(node, m, raw, received or t, t, source, "test"))[0]


def msg(boot, seq, uptime_ms, flags=0, records=None, time_s=None):
    return {"type": "data", "boot": boot, "seq": seq, "uptime_ms": uptime_ms, "time": time_s,
            "records": records or [senml.record("l", 0.5), senml.record("b", 3.7)], "quality": {},
            "flags": flags, "info": {}, "cmd_result": None}


def test_the_validator_can_fail():
    # it is a judge only if it says no: every rule it checks, broken once
    assert check_pack([{"bn": "n:", "bt": T0, "n": "l", "v": 1, "u": "m"}, {"n": "b", "v": 3.7, "u": "V"}])[0] == []
    bad = [
        [{"bn": "n:", "bt": T0, "n": "temp 1", "v": 1}],
        [{"bn": "_n:", "bt": T0, "n": "l", "v": 1}],
        [{"bn": "n:", "bt": T0, "n": "t", "v": 1, "u": "degC"}],
        [{"bn": "n:", "bt": T0, "n": "l", "v": 1, "vs": "x"}],
        [{"bn": "n:", "bt": T0, "n": "l"}],
        [{"bn": "n:", "bt": 5, "n": "l", "v": 1}],  # relative time
        [{"bn": "n:", "bt": "now", "n": "l", "v": 1}],
        [{"bn": "n:", "bt": T0, "n": "l", "v": 1, "raw_x": 2}],
        [{"bn": "n:", "bt": T0, "n": "l", "v": 1, "x_": 2}],
        [{"bn": "n:", "bt": T0, "n": "l", "v": 1}, {"n": "l", "v": 2}],  # same name and time twice
        [{"bn": "n:", "bt": T0, "n": "l", "vb": 1}],
        [],
    ]
    for pack in bad:
        assert check_pack(pack)[0], pack
    up = UpChecker()
    up.check("t", {"boot": 1, "seq": 1, "senml": [{"bn": "n:", "bt": T0, "n": "l", "v": 1}]})
    up.check("t", {"boot": 1, "seq": 1, "senml": [{"bn": "n:", "bt": T0, "n": "l", "v": 1}]})  # a resend
    assert up.problems == []
    up.check("t", {"boot": 1, "seq": 2, "senml": [{"bn": "n:", "bt": T0, "n": "l", "v": 2}]})
    assert len(up.problems) == 1 and "also in frame boot 1 seq 1" in up.problems[0]


def test_extension_labels_leave_the_pack():
    m = msg(1, 0, 1000, records=[dict(senml.record("l", 0.5), raw_x=b"\x01")])
    topic, body = envelope("sew-01", m, T0, "received")
    import json

    j = json.loads(body)
    assert j["ext"] == {"0": {"raw_x": "AQ=="}} and check_pack(j["senml"])[0] == []


def test_buffered_frames_get_distinct_times_from_their_uptime():
    clock = FrameClock()
    # boot 3: live frames 60 s apart, then frames 4..7 arrive together from the backlog
    assert clock.fix("n", msg(3, 0, 10_000), T0) == (T0, "received")
    assert clock.fix("n", msg(3, 1, 70_000), T0 + 60) == (T0 + 60, "received")
    got = [clock.fix("n", msg(3, s, 70_000 + 60_000 * (s - 1), flags=message.F_BACKLOG), T0 + 400)
           for s in (2, 3, 4)]
    # dated against the newest live frame (seq 1), never later than their reception
    assert got == [(T0 + 120, "uptime"), (T0 + 180, "uptime"), (T0 + 240, "uptime")]
    # a resend of seq 0 without the backlog flag is still dated by its uptime, not by arrival
    assert clock.fix("n", msg(3, 0, 10_000), T0 + 500) == (T0 - 0.001, "uptime")  # T0 is taken: 1 ms before


def test_earlier_boots_are_uncertain_and_every_time_is_distinct():
    clock = FrameClock()
    assert clock.fix("n", msg(5, 9, 600_000), T0) == (T0, "received")  # boot 5 started at T0 - 600 s
    # boot 4, never heard live: before boot 5 began, in uptime order, marked uncertain
    t1, s1 = clock.fix("n", msg(4, 0, 1_000, flags=message.F_BACKLOG), T0 + 1)
    t2, s2 = clock.fix("n", msg(4, 1, 31_000, flags=message.F_BACKLOG), T0 + 1)
    assert s1 == s2 == "uncertain" and t1 < T0 - 600 and t2 < T0 - 600 and t1 != t2
    # many frames in the same millisecond: all distinct
    times = [clock.fix("n", msg(5, 10 + i, 600_001 + i), T0 + 2)[0] for i in range(50)]
    backlog = [clock.fix("n", msg(6, i, 5, flags=message.F_BACKLOG), T0 + 2)[0] for i in range(50)]
    every = times + backlog + [t1, t2, T0]
    assert len(set(every)) == len(every)


def test_a_live_frame_received_before_its_anchor_never_goes_back_in_time():
    # reception times from clocks that disagree (the relay's gateways; a clock stepped back):
    # a live frame newer in uptime than its boot's anchor is dated just after the anchor
    clock = FrameClock()
    assert clock.fix("n", msg(2, 0, 10_000), T0) == (T0, "received")
    assert clock.fix("n", msg(2, 1, 10_100), T0 - 0.15) == (T0 + 0.001, "received")
    assert clock.fix("n", msg(2, 2, 10_200), T0 - 0.05) == (T0 + 0.002, "received")
    assert clock.fix("n", msg(2, 3, 10_300), T0 + 0.3) == (T0 + 0.3, "received")  # the clocks agree again
    # a resend (uptime below the anchor) is still placed by its uptime, before it
    assert clock.fix("n", msg(2, 2, 10_200), T0 + 1) == (T0 + 0.2, "uptime")


def test_a_node_clock_wins_when_plausible():
    warned = []
    clock = FrameClock(warn=lambda node, t: warned.append(t))
    assert clock.fix("n", msg(1, 0, 5, time_s=1_790_000_100), T0) == (1_790_000_100.0, "node")
    assert clock.fix("n", msg(1, 1, 6, time_s=5), T0) == (T0, "received") and warned == [5]


def test_bad_names_and_units_are_refused_and_counted_end_to_end(gateway_factory, subscriber):
    gw = gateway_factory()
    key = NODES["sew-01"]
    node = UdpNode("sew-01", key, gw.udp_addresses[0])
    bad = [[senml.record("temp 1", 21.5, unit="Cel")], [senml.record("Wärme", 21.5, unit="Cel")],
           [senml.record("t", 21.5, unit="degC")]]
    for i, recs in enumerate(bad):
        node.send_raw(message.encode_data(key, "sew-01", 9, i, 1000 * i, recs))
    assert node.run(3, start=0, deadline_s=10)  # good frames of boot 1 still pass, ACKed
    assert subscriber.wait(lambda: len(subscriber.ups()) == 3)
    assert gw.counters()["rejected"] == {"payload": 3}
    assert all(u["boot"] == 1 for u in subscriber.ups())


def test_buffered_frames_across_two_boots_get_distinct_times_end_to_end(gateway_factory, subscriber):
    # The field report: 8 frames across two boots shared one timestamp. Here a node's link comes
    # back: its newest frame of boot 1, then 4 buffered frames of boot 1, then boot 2's buffer
    # (the gateway never heard boot 2 live) and its first live frame. The subscriber's strict
    # checker also fails the test if two frames of the node share a (name, time).
    gw = gateway_factory()
    key = NODES["sew-01"]
    node = UdpNode("sew-01", key, gw.udp_addresses[0])
    recs = [senml.record("l", 0.5), senml.record("b", 3.7)]
    B = message.F_BACKLOG
    frames = [(1, 5, 310_000, 0)] + [(1, s, 10_000 + 60_000 * s, B) for s in (1, 2, 3, 4)] \
        + [(2, s, 5_000 + 60_000 * s, B) for s in (0, 1, 2)] + [(2, 3, 185_000, 0)]
    for boot, seq, up, flags in frames:
        node.send_raw(message.encode_data(key, "sew-01", boot, seq, up, recs, flags=flags))
    assert subscriber.wait(lambda: len(subscriber.ups()) == len(frames))
    ups = {(u["boot"], u["seq"]): u for u in subscriber.ups()}
    anchor = ups[1, 5]["senml"][0]["bt"]
    assert ups[1, 5]["time_source"] == "received"
    for s in (1, 2, 3, 4):  # placed by uptime against the newest live frame: 60 s apart, exactly
        assert ups[1, s]["time_source"] == "uptime"
        assert ups[1, s]["senml"][0]["bt"] == pytest.approx(anchor - (310_000 - 10_000 - 60_000 * s) / 1000)
    assert {ups[2, s]["time_source"] for s in (0, 1, 2)} == {"uncertain"}
    times = [u["senml"][0]["bt"] for u in ups.values()]
    assert len(set(times)) == len(times)


def test_a_restart_keeps_the_anchor_and_never_reuses_a_time():
    t0 = int(T0 * 1000)
    clock = FrameClock(saved={"n": (t0 + 5, (1, 600_000, t0))})
    # buffered while the gateway was down: still dated by uptime against the stored anchor
    assert clock.fix("n", msg(1, 1, 660_000, flags=message.F_BACKLOG), T0 + 300) == (T0 + 60, "uptime")
    # dated before the latest time the previous run gave: after it instead, uncertain
    assert clock.fix("n", msg(1, 2, 600_002, flags=message.F_BACKLOG), T0 + 300) == ((t0 + 6) / 1000, "uncertain")
    assert clock.saved_of(["n", "other"]) == [("n", t0 + 60_000, 1, 600_000, t0)]


def test_buffered_frames_after_a_gateway_restart_are_dated_by_uptime(gateway_factory, subscriber):
    # a power cut on the roof: the node keeps sampling, the gateway comes back with its anchor
    key = NODES["sew-01"]
    recs = [senml.record("l", 0.5)]
    gw = gateway_factory()
    node = UdpNode("sew-01", key, gw.udp_addresses[0])
    t_live = time.time()
    node.send_raw(message.encode_data(key, "sew-01", 1, 0, 600_000, recs))
    assert subscriber.wait(lambda: len(subscriber.ups()) == 1)
    gw.stop()
    time.sleep(0.5)  # the cut lasts longer than the 300 ms below (a restart alone can be quicker)
    gw = gateway_factory()
    node.gateway = gw.udp_addresses[0]
    up = 600_000 + int((time.time() - t_live) * 1000) - 300  # sampled 300 ms ago, while no gateway listened
    node.send_raw(message.encode_data(key, "sew-01", 1, 1, up, recs, flags=message.F_BACKLOG))
    assert subscriber.wait(lambda: len(subscriber.ups()) == 2)
    ups = {u["seq"]: u for u in subscriber.ups()}
    assert ups[1]["time_source"] == "uptime"
    assert ups[1]["senml"][0]["bt"] == pytest.approx(ups[0]["senml"][0]["bt"] + (up - 600_000) / 1000, abs=0.002)


class _CountingSet(set):
    looks = 0

    def __contains__(self, x):
        _CountingSet.looks += 1
        return set.__contains__(self, x)


def _naive_claim(used, order, floor, ms, earlier, kept):
    # the plain walk the clock must agree with: nearest free millisecond
    step = -1 if earlier else 1
    while ms in used:
        ms += step
        if ms <= floor and step < 0:
            ms, step = floor + 1, 1
    used.add(ms)
    order.append(ms)
    if len(order) > kept:
        used.discard(order.pop(0))
    return ms


def test_claims_agree_with_the_plain_walk_and_stay_cheap_in_a_flood():
    import random

    from gateway import timing
    rng = random.Random(7)
    clock = FrameClock(saved={"n": (1_000_500, None)})
    clock.fix("n", msg(1, 0, 5), T0)  # creates the node (floor 1_000_500)
    st = clock.nodes["n"]
    used, order = set(st.used), list(st.order)
    for i in range(6000):  # forward and backward claims around a moving point, with eviction
        ms = 1_000_000 + i // 3 + rng.randrange(-40, 40)
        earlier = rng.random() < 0.3
        assert clock._claim(st, ms, earlier, []) == _naive_claim(used, order, st.floor, ms, earlier, timing.USED_KEPT)
    # a node far faster than a frame per millisecond: live times run ahead of the clock, and
    # each claim must not walk the whole run of taken milliseconds (it walked up to 2,048)
    clock = FrameClock()
    clock.fix("f", msg(1, 0, 5), T0)
    st = clock.nodes["f"]
    st.used = _CountingSet(st.used)
    _CountingSet.looks = 0
    n = timing.USED_KEPT  # distinct within what the clock remembers
    times = [clock.fix("f", msg(1, 1 + i, 6 + i), T0 + i / 5000)[0] for i in range(n)]
    assert len(set(times)) == len(times) and times == sorted(times)
    assert _CountingSet.looks < 4 * n, f"{_CountingSet.looks} lookups for {n} frames"


def _clock_state(clock):
    return ({n: (dict(st.anchors), set(st.used), list(st.order), st.floor, st.top, st.live_boot, st.run)
             for n, st in clock.nodes.items()}, dict(clock.saved))


class _Frames:
    # frames of three nodes as a pipeline's batches bring them: live and buffered, reboots,
    # an earlier boot now and then, a node clock now and then, several in one millisecond
    def __init__(self, seed):
        import random

        self.rng = random.Random(seed)
        self.up = {"a": 600_000, "b": 1_000, "c": 50}
        self.boot = {"a": 1, "b": 1, "c": 3}
        self.now = T0

    def batch(self, n):
        rng, up, boot = self.rng, self.up, self.boot
        out = []
        for _ in range(n):
            node = rng.choice("abc")
            self.now += rng.choice((0.0, 0.0005, 0.2))
            r = rng.random()
            if r < 0.05:
                boot[node] += 1  # a reboot: a new anchor, old ones pushed out (BOOTS_KEPT)
                up[node] = 100
            up[node] += rng.choice((0, 1, 200, 60_000))
            flags = message.F_BACKLOG if r < 0.3 else 0
            t = int(self.now) if r > 0.9 else None  # now and then a node clock
            b = boot[node] - (1 if r < 0.1 and boot[node] > 1 else 0)  # now and then an earlier boot
            out.append((node, msg(b, 0, max(0, up[node] - (rng.randrange(5_000) if flags else 0)),
                                  flags=flags, time_s=t), self.now))
        return out


def _saved_clock():
    t0 = int(T0 * 1000)
    return FrameClock(saved={"a": (t0 + 5, (1, 600_000, t0)), "z": (t0, None)})


def test_a_failed_commit_gives_its_times_back_exactly():
    # the pipeline and the relay date a batch, then commit it: undo() after a failed commit must
    # leave the clock as it was before the batch (every node, its anchors, the milliseconds it
    # remembers, the stored clock of nodes first seen in it), so the batch comes again with the
    # same times; kept() after a commit that worked keeps them
    from gateway import timing
    clock = _saved_clock()
    gen = _Frames(11)

    def date(frames):
        return [clock.fix(node, m, received) for node, m, received in frames]

    for size in (1, 40, 3, timing.USED_KEPT + 300, 7):  # one batch longer than the clock remembers
        frames = gen.batch(size)
        before = _clock_state(clock)
        first = date(frames)
        assert _clock_state(clock) != before
        clock.undo()  # the commit failed
        assert _clock_state(clock) == before
        assert date(frames) == first  # redelivered: the same times
        clock.kept()  # stored
        clock.undo()  # a later failure gives back nothing that was stored
        assert _clock_state(clock) != before
        assert date(frames[:1])[0] != first[0]  # a resend of a stored frame takes another millisecond
        clock.kept()
    assert "z" in clock.saved and "a" not in clock.saved


def test_a_frame_not_stored_gives_its_time_back_alone():
    # the pipeline dates a frame, then its outputs: when the envelope cannot be made the frame is
    # refused (gateway/registry.py), and give_back() must leave the clock as though that frame had
    # never come, while the rest of its batch keeps its times (and undo() still gives them back)
    from gateway import timing
    clock, plain = _saved_clock(), _saved_clock()  # plain dates only the frames that are kept
    gen = _Frames(12)
    rng = gen.rng
    given_back = 0
    for size in (1, 40, 3, timing.USED_KEPT + 300, 7):
        frames = gen.batch(size)
        before = _clock_state(clock)
        times, kept = [], []
        for node, m, received in frames:
            t = clock.fix(node, m, received)
            if rng.random() < 0.3:
                clock.give_back()
                clock.give_back()  # once only: the frame before it stays dated
                given_back += 1
            else:
                times.append(t)
                kept.append((node, m, received))
        if size == 40:
            clock.undo()  # the batch's commit failed: nothing of it stands
            assert _clock_state(clock) == before
            continue
        assert times == [plain.fix(node, m, received) for node, m, received in kept]
        assert _clock_state(clock) == _clock_state(plain)
        clock.kept()
        plain.kept()
        clock.give_back()  # nothing after kept()
        assert _clock_state(clock) == _clock_state(plain)
    assert given_back > 500
