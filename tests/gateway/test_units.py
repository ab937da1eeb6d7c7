# Unit checks of gateway pieces that have an independent reference.
import random

import pytest

from gateway import dedup
from gateway.acks import encode_ack
from gateway.downlink import CommandError, Downlink, Unsigned, parse_command
from gateway.outputs import iso
from protocol import command, message
from tests.gateway.conftest import COMMAND_KEYS
from tools.command import down_payload


def test_fast_ack_is_byte_identical_to_protocol():
    rng = random.Random(1)
    for _ in range(500):
        key = rng.randbytes(rng.choice((16, 32, 64)))
        node = "n" + str(rng.randrange(10**rng.randrange(1, 9)))
        boot, seq = rng.randrange(2**rng.randrange(1, 33)), rng.randrange(2**rng.randrange(1, 33))
        cum = rng.choice((None, rng.randrange(2**rng.randrange(1, 33))))
        assert encode_ack(key, node, boot, seq, cum) == message.encode_ack(key, node, boot, seq, cum)


def test_dedup_window_cum_and_replays():
    st = None
    for seq in (0, 1, 2, 5, 4):
        assert dedup.classify(st, 7, seq) == dedup.NEW
        st = dedup.advance(st, 7, seq)
    assert (st.hwm, st.cum, st.gaps) == (5, 2, 1)  # 3 is missing
    assert dedup.classify(st, 7, 4) == dedup.DUP and dedup.classify(st, 7, 0) == dedup.DUP
    assert dedup.classify(st, 7, 3) == dedup.NEW
    st = dedup.advance(st, 7, 3)
    assert (st.cum, st.gaps) == (5, 0)
    assert dedup.classify(st, 6, 100) == dedup.REPLAY  # an older boot
    st = dedup.advance(st, 7, 5 + dedup.WINDOW + 10)  # far ahead: 6.. are gaps, below the window soon
    assert dedup.classify(st, 7, 6) == dedup.REPLAY  # below the window and never stored
    assert dedup.classify(st, 7, 5) == dedup.DUP  # below the window but <= cum: stored
    assert dedup.classify(st, 8, 0) == dedup.NEW
    new = dedup.advance(st, 8, 0)
    assert (new.boot, new.hwm, new.cum) == (8, 0, 0)
    row = new.to_row()
    again = dedup.SeqState.from_row(*row)
    assert (again.boot, again.hwm, again.cum, again.bits, again.gaps) == (8, 0, 0, 1, new.gaps)


def test_dedup_tells_a_regressed_boot_from_a_retransmission():
    # frames are given whole; only their last TAG_LEN bytes (the MAC tag) are compared
    a, b = b"frame one" + b"A" * dedup.TAG_LEN, b"frame one" + b"B" * dedup.TAG_LEN
    st = None
    for seq in range(3):
        st = dedup.advance(st, 1, seq, a if seq == 0 else b"x" * 20)
    assert (st.first, st.tag) == (0, dedup.tag_of(a)) and dedup.tag_of(a) == b"A" * dedup.TAG_LEN
    assert dedup.classify(st, 1, 0, a) == dedup.DUP  # the same bytes again: a retransmission or replay
    assert dedup.classify(st, 1, 0, b) == dedup.REGRESSED  # same (boot, seq), other bytes: a new life
    assert dedup.classify(st, 1, 1, b) == dedup.DUP  # only the boot's first frame is compared
    assert dedup.min_boot(st) == 2
    st2 = dedup.restart(st)
    assert dedup.classify(st2, 1, 1, b) == dedup.REPLAY and dedup.min_boot(st2) == 2
    assert dedup.classify(st2, 2, 0, b) == dedup.NEW
    st3 = dedup.advance(st2, 2, 0, b)
    assert (st3.boot, st3.hwm, st3.cum, st3.first, st3.tag, st3.gaps) == (2, 0, 0, 0, dedup.tag_of(b), 0)
    assert dedup.min_boot(st3) == 3
    again = dedup.SeqState.from_row(*st3.to_row())
    assert (again.boot, again.hwm, again.cum, again.bits, again.first, again.tag) == (2, 0, 0, 1, 0, dedup.tag_of(b))
    old_row = st3.to_row()[:3] + (st3.to_row()[3][: dedup.WINDOW // 8], st3.to_row()[4])  # written before tags
    old = dedup.SeqState.from_row(*old_row)
    assert (old.first, old.tag) == (-1, b"") and dedup.classify(old, 2, 0, a) == dedup.DUP
    assert dedup.advance(old, 2, 1, a).tag == dedup.tag_of(a)  # the next stored frame becomes the boot's reference


def test_dedup_regressed_boot_when_the_old_lifes_seq_0_came_late():
    # the old life's seq 0 was overtaken by seq 1 (so seq 1 is the first stored frame) and
    # filled in later: a new life's seq 0 with other bytes is still told from a duplicate
    old0, old1, new0 = (b"frame" + bytes([i]) * dedup.TAG_LEN for i in (1, 2, 3))
    st = dedup.advance(None, 4, 1, old1)
    assert dedup.classify(st, 4, 0, old0) == dedup.NEW
    st = dedup.advance(st, 4, 0, old0)
    assert (st.first, st.cum) == (1, 1)
    assert dedup.classify(st, 4, 0, old0) == dedup.DUP  # a retransmission of the old seq 0
    assert dedup.classify(st, 4, 0, new0) == dedup.REGRESSED
    again = dedup.SeqState.from_row(*st.to_row())
    assert (again.first, again.tag, again.tag0) == (1, dedup.tag_of(old1), dedup.tag_of(old0))
    assert dedup.classify(again, 4, 0, new0) == dedup.REGRESSED


def _signed(op, arg=None, node="n", counter=7):
    return down_payload(COMMAND_KEYS["sew-01"], node, 1, counter, op, arg).encode()


@pytest.mark.parametrize("payload,error", [
    (_signed("interval", 60), None),
    (_signed("interval", 0), CommandError),  # the one checker (protocol/command.py): out_of_range
    (_signed("thresholds", {"alarm_m": 0.8}), None),
    (_signed("thresholds", {"alarm": 0.8}), CommandError),
    (_signed("reboot"), None),
    (_signed("reboot", 1), CommandError),
    (_signed("time", 1790000000), None),
    (_signed("format"), CommandError),
    (_signed("interval", 60, node="m"), CommandError),  # signed for another node than the topic's
    (b'{"cose": "d1"}', CommandError),
    (b'{"cose": "zz"}', CommandError),
    (b"not json", CommandError),
    (b"[]", CommandError),
    (b'{"op": "interval", "arg": 60}', Unsigned),  # the unsigned form of earlier versions
    (b'{"op": "reboot"}', Unsigned),
])
def test_command_validation(payload, error):
    if error is None:
        counter, op, _arg, token = parse_command(payload, "n")
        assert counter == 7 and command.peek(token)[1]["op"] == op
    else:
        with pytest.raises(error):
            parse_command(payload, "n")


def test_downlink_queue_resend_done_and_expiry():
    d = Downlink(max_per_node=2, attempts=2)
    assert d.add("n", 11, "interval", b"t11") and d.add("n", 10, "reboot", b"t10")
    assert not d.add("n", 10, "reboot", b"t10")  # a redelivery of the same: not queued twice
    with pytest.raises(CommandError):
        d.add("n", 12, "time", b"t12")  # the queue is full
    send, done, expired = d.heard("n", (10, 0))  # a result from before: 10 is not sent yet, so not done
    assert send == [(10, b"t10"), (11, b"t11")] and (done, expired) == (0, 0)  # lowest counter first
    send, done, expired = d.heard("n", (10, 0))  # the node applied 10
    assert send == [(11, b"t11")] and done == 1
    send, done, expired = d.heard("n", (10, 0))
    assert send == [] and expired == 1 and d.depth() == 0
    put, dele, cnt = d.take_changes()
    assert set(dele) == {("n", 10), ("n", 11)} and cnt == [("n", 11)]


def test_a_forged_result_does_not_clear_the_queue():
    # A forged command with a huge counter is refused by the node (bad_signature) and reported:
    # that result completes only the forged command, not the genuine ones queued before it.
    d = Downlink(max_per_node=4, attempts=5)
    d.add("n", 100, "interval", b"genuine")
    d.add("n", 0xFFFFFFFF, "interval", b"forged")
    send, done, _ = d.heard("n", (5000, command.APPLIED))  # an older result completes nothing not yet sent
    assert send == [(100, b"genuine"), (0xFFFFFFFF, b"forged")] and done == 0
    send, done, _ = d.heard("n", (0xFFFFFFFF, command.BAD_SIGNATURE))
    assert send == [(100, b"genuine")] and done == 1
    send, done, _ = d.heard("n", (200, command.APPLIED))  # a later command applied: 100 would be a replay
    assert send == [] and done == 1


def test_iso_times():
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1790000000.2506) == "2026-09-21T14:13:20.251Z"
    assert iso(1790000000.9996) == "2026-09-21T14:13:21.000Z"


def test_json_never_fails_on_values_json_lacks():
    from gateway.outputs import _dumps

    assert _dumps({"a": float("nan"), "b": b"\x01", 3: [float("inf"), 1.5]}) == b'{"a":null,"b":"AQ==","3":[null,1.5]}'
