# Random and mutated bytes never raise anything but FrameError from the decoders, and never
# anything at all from the serial deframer. Mutations start from the golden vectors; those of
# the payload are MACed again so they reach the payload checks behind the MAC.
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import cbor, cobs, cose, fast, message
from protocol.cbor import FrameError
from tests.protocol import vecs

MESSAGES, STREAMS = vecs.load()
VALID = [v for v in MESSAGES if v["valid"]]
SEEDS = [vecs.unhex(v["frame"]) for v in MESSAGES if v["frame"]]
KEYS = {v["node"]: vecs.unhex(v["key"]) for v in VALID}


@st.composite
def mutated(draw, seeds):
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0x17, 0x18, 0x1B, 0x1F, 0x5F, 0x9F, 0xBF, 0xC0, 0xD1, 0xF7, 0xFF,
                                             draw(st.integers(0, 255))]))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


def only_frame_errors(data):
    for fn in (cbor.loads, cose.parse, message.parse_payload, lambda d: message.decode(d, KEYS.get)):
        try:
            fn(data)
        except FrameError:
            pass


def general_envelope(msg):
    # the general reader (cbor.loads and the structure checks, what MicroPython runs), or None
    try:
        protected, payload, tag = cose._decode_envelope(msg)
        return cose._kid(protected), protected, payload, tag
    except FrameError:
        return None


def envelope_agrees(msg):
    # whatever protocol/fast.py's envelope reader accepts, the general reader accepts alike
    quick = fast.envelope(msg)
    if quick is not None:
        assert quick == general_envelope(msg), msg.hex()
    return quick is not None


def test_fast_envelope_reads_every_valid_vector_like_the_general_reader():
    frames = [vecs.unhex(v["frame"]) for v in VALID]
    assert all(envelope_agrees(f) for f in frames)  # the fast path is taken, not only skipped
    assert all(cose.parse(f) == general_envelope(f) for f in frames)


def fast_path_agrees(payload):
    # whatever the fast path accepts, the general path accepts with the same result
    quick = fast.data(payload)
    if quick is not None:
        assert quick == message._check(cbor.loads(payload)), payload.hex()


inputs = st.one_of(st.binary(max_size=600), mutated(SEEDS))


@settings(max_examples=1500, deadline=None)
@given(inputs)
def test_decoders_raise_only_frame_error(data):
    only_frame_errors(data)
    fast_path_agrees(data)
    envelope_agrees(data)


def nan_equal(a, b):
    # == that treats NaN as equal to NaN (a command argument may carry one)
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(nan_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(nan_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_nan_equal():
    nan = float("nan")
    assert nan_equal({"a": [nan, 1]}, {"a": [nan, 1]})
    assert not nan_equal({"a": [nan, 1]}, {"a": [nan, 2]})
    assert not nan_equal(1, 1.0) and not nan_equal(True, 1)


PAYLOADS = [vecs.unhex(v["payload"]) for v in VALID]


@settings(max_examples=1500, deadline=None)
@given(mutated(PAYLOADS))
def test_mutated_payloads_behind_a_good_mac(payload):
    fast_path_agrees(payload)
    for v in VALID[:1]:
        key = vecs.unhex(v["key"])
        try:
            frame = cose.sign(key, v["node"].encode(), payload)
        except FrameError:
            continue  # oversize
        only_frame_errors(frame)
        try:
            message.decode(frame, vecs.key_for(v))
        except FrameError:
            continue


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=700), mutated([vecs.unhex(v["serial"]) for v in VALID])), max_size=6),
       st.integers(1, 64))
def test_deframer_never_raises_and_resyncs(chunks, piece):
    d = cobs.Deframer()
    stream = b"".join(chunks)
    for i in range(0, len(stream), piece):
        for kind, _value in d.feed(stream[i : i + piece]):
            assert kind in ("frame", "text", "noise")
    d.pending_text()
    good = vecs.unhex(VALID[0]["frame"])
    assert ("frame", good) in d.feed(cobs.encode(good))  # back in step after any garbage
