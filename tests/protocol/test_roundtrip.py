# Random messages through the encoders and back through decode() (SPEC.md section 6), and the
# gateway's fast path for data payloads against the general path.
import cbor2
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocol import cbor, cose, fast, message, senml
from protocol.cbor import FrameError
from tests.protocol.strategies import U32, any_value, data_frames, keys, nodes


def encode_or_skip(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except FrameError as e:
        assume(e.reason != "oversize")  # random content may exceed 512 bytes
        raise


@settings(max_examples=300, deadline=None)
@given(data_frames())
def test_data_frames_round_trip(case):
    key, node, args, kw, expected = case
    frame = encode_or_skip(message.encode_data, key, node, **args, **kw)
    assert len(frame) <= cose.MAX_MESSAGE
    m = message.decode(frame, {node: key}.get)
    assert m.pop("node") == node
    assert m == expected
    _, _, payload, _ = cose.parse(frame)
    assert payload == cbor2.dumps(cbor2.loads(payload), canonical=True)  # deterministic encoding


@settings(max_examples=100, deadline=None)
@given(keys, nodes, U32, U32, st.one_of(st.none(), U32))
def test_acks_round_trip(key, node, boot, seq, cum):
    m = message.decode(message.encode_ack(key, node, boot, seq, cum=cum), {node: key}.get)
    assert m == {"type": "ack", "boot": boot, "seq": seq, "cum": cum, "node": node}


@settings(max_examples=100, deadline=None)
@given(keys, nodes, U32, U32, st.sampled_from(message.OPS), st.one_of(st.none(), any_value))
def test_commands_round_trip(key, node, boot, cmd_id, op, arg):
    frame = encode_or_skip(message.encode_cmd, key, node, boot, cmd_id, op, arg)
    m = message.decode(frame, {node: key}.get)
    assert m == {"type": "cmd", "boot": boot, "cmd_id": cmd_id, "op": op, "arg": arg, "node": node}


@settings(max_examples=50, deadline=None)
@given(data_frames(), keys)
def test_another_key_never_verifies(case, other):
    key, node, args, kw, _ = case
    assume(other != key)
    frame = encode_or_skip(message.encode_data, key, node, **args, **kw)
    with pytest.raises(FrameError) as e:
        message.decode(frame, {node: other}.get)
    assert e.value.reason == "mac"


def general(payload):
    return message._check(cbor.loads(payload))


typical_values = st.one_of(st.integers(0, (1 << 64) - 1), st.floats(allow_nan=False, allow_infinity=False),
                           st.floats(width=32, allow_nan=False, allow_infinity=False),
                           st.floats(width=16, allow_nan=False, allow_infinity=False))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.one_of(st.none(), st.sampled_from(["Cel", "m", "x"])),
                          typical_values), min_size=1, max_size=23),
       U32, U32, st.integers(0, (1 << 64) - 1), st.one_of(st.none(), st.integers(0, (1 << 64) - 1)),
       st.integers(0, message.MAX_U32))
def test_fast_path_takes_the_usual_payloads_and_agrees(recs, boot, seq, uptime, time_s, flags):
    records = [senml.record(n, v, unit=u) for n, u, v in recs]
    payload = message.data_payload(boot, seq, uptime, records, time_s=time_s, flags=flags)
    quick = fast.data(payload)
    assume(all(len(r[senml.N].encode()) < 24 for r in records))
    assert quick is not None, payload.hex()
    assert quick == general(payload)


def test_fast_path_declines_what_it_does_not_know():
    recs = [senml.record("t", 1.5)]
    for kw in ({"quality": {0: [1, 1, 1]}}, {"info": {1: "fw"}}, {"cmd_result": [1, 0]}):
        payload = message.data_payload(1, 2, 3, recs, **kw)
        assert fast.data(payload) is None
        assert message.parse_payload(payload) == general(payload)
    for rec in ({0: "t", 2: -1}, {0: "t", 3: "x"}, {0: "t", 2: 1, 6: 5}, {0: "x" * 24, 2: 1}):
        payload = message.data_payload(1, 2, 3, [rec])
        assert fast.data(payload) is None
        assert message.parse_payload(payload) == general(payload)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False) | st.floats(width=32, allow_nan=False, allow_infinity=False)
       | st.floats(width=16, allow_nan=False, allow_infinity=False))
def test_json_numbers_are_the_same_from_the_cache(x):
    # the gateway keeps each float's JSON form; a cached answer is the computed one, sign and all
    senml._NUMBERS.clear()
    first = senml.json_number(x)
    assert senml.json_number(x) == first and str(senml.json_number(x)) == str(first)
    assert first == senml._shortest(x) if x else str(first) == str(x)  # -0.0 stays -0.0
    assert senml.json_number(-x) == -first


def test_a_binary32_near_its_largest_number_has_a_json_form():
    # 3.4025e38 is a binary32; a shorter decimal rounds past FLT_MAX, which struct refuses
    # to pack: json_number raised OverflowError and the gateway refused the frame
    x = 3.4025001647762064e+38
    assert senml.json_number(x) == senml.json_number(x) and float(senml.json_number(x)) == pytest.approx(x, rel=1e-6)


def test_a_known_node_id_is_still_checked_once_and_a_bad_one_always():
    key = bytes(16)
    good = message.encode_data(key, "sew-01", 1, 0, 5, [senml.record("l", 1.5)])
    assert message.decode(good, lambda n: key)["node"] == "sew-01"
    assert "sew-01" in message._ids_ok
    bad = message.encode_data(key, "sew-01", 1, 1, 5, [senml.record("l", 1.5)]).replace(b"sew-01", b"sew/01")
    for _ in range(2):
        with pytest.raises(FrameError) as e:
            message.decode(bad, lambda n: key)
        assert e.value.reason == "kid"
    assert "sew/01" not in message._ids_ok


def test_a_text_label_with_a_senml_labels_name_is_refused_not_relabelled():
    # An extension field (a text label, SPEC.md 5) named as a SenML label ("n", "v", "bn", ...)
    # would be that label twice in SenML JSON: to_json raised TypeError for a list under "n" and,
    # for a text "n", overwrote the record's name (the gateway then popped it into "ext": the pack
    # lost the name). The one record check refuses the frame (payload, one line naming the label).
    key, node = b"k" * 16, "sew-07"
    for label in senml.JSON_LABELS.values():
        for value in ("h", ["x"], 7):
            frame = message.encode_data(key, node, 1, 2, 3, [{0: "t", 2: 1.5, label: value}])
            with pytest.raises(FrameError) as e:
                message.decode(frame, lambda n: key)
            assert e.value.reason == "payload" and repr(label) in str(e.value) and "\n" not in str(e.value)
    for label in ("N", "nn", "vx", "bn2", "q"):  # extensions that are no SenML label pass, the name kept
        m = message.decode(message.encode_data(key, node, 1, 2, 3, [{0: "t", 2: 1.5, label: ["x"]}]), lambda n: key)
        assert senml.to_json(m["records"])[0]["n"] == "t"
