# The CBOR subset (SPEC.md section 3): the encoder writes what cbor2.dumps(canonical=True)
# writes, the decoder reads what cbor2.loads reads, and refuses everything outside the subset.
import math

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import cbor
from protocol.cbor import FrameError, Tag
from tests.protocol.strategies import INTS, depth, values


def to_cbor2(obj):
    # our Tag -> cbor2's CBORTag, for cbor2.dumps
    if isinstance(obj, Tag):
        return cbor2.CBORTag(obj.tag, to_cbor2(obj.value))
    if isinstance(obj, list):
        return [to_cbor2(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_cbor2(v) for k, v in obj.items()}
    return obj


def plain(obj):
    # cbor2 6 gives tuples and frozendicts inside tags: compare as lists and dicts
    if isinstance(obj, cbor2.CBORTag):
        return Tag(obj.tag, plain(obj.value))
    if isinstance(obj, list | tuple):
        return [plain(x) for x in obj]
    if hasattr(obj, "keys"):
        return {k: plain(obj[k]) for k in obj}
    return obj


def same(a, b):
    # equality that treats NaN as equal to NaN and tells 0.0 from -0.0
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, Tag) and isinstance(b, Tag):
        return a.tag == b.tag and same(a.value, b.value)
    return type(a) is type(b) and a == b


items = st.one_of(values, values.filter(lambda v: depth(v) < cbor.MAX_DEPTH).map(lambda v: Tag(17, v)))


@settings(max_examples=400, deadline=None)
@given(items)
def test_encoder_is_cbor2_canonical_and_decoders_agree(obj):
    ours = cbor.dumps(obj)
    assert ours == cbor2.dumps(to_cbor2(obj), canonical=True)
    assert same(cbor.loads(ours), obj)
    assert same(plain(cbor2.loads(ours)), cbor.loads(ours))


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.one_of(INTS, st.text(max_size=5)), INTS, max_size=8))
def test_map_keys_written_in_canonical_order_whatever_the_dict_order(d):
    shuffled = dict(reversed(list(d.items())))
    assert cbor.dumps(shuffled) == cbor.dumps(d) == cbor2.dumps(d, canonical=True)


@pytest.mark.parametrize("x", [0.0, -0.0, 1.5, 65504.0, 65520.0, 1e-7, 5.960464477539063e-08, 3.4028234663852886e38,
                               1e300, float("inf"), float("-inf"), float("nan"), 21.53, 0.1])
def test_float_widths(x):
    assert cbor.dumps(x) == cbor2.dumps(x, canonical=True)
    assert same(cbor.loads(cbor.dumps(x)), x)


def test_floats_of_any_width_are_read():
    assert cbor.loads(bytes.fromhex("fb3ff8000000000000")) == 1.5  # binary64 where binary16 would do
    assert cbor.loads(bytes.fromhex("fa3fc00000")) == 1.5


@pytest.mark.parametrize("hexdata, reason", [
    ("", "truncated"),
    ("18", "truncated"),
    ("1904", "truncated"),
    ("62 61", "truncated"),
    ("82 01", "truncated"),
    ("a1 01", "truncated"),
    ("fa 0000", "truncated"),
    ("01 02", "trailing"),
    ("18 17", "overlong"),
    ("19 00ff", "overlong"),
    ("1a 0000ffff", "overlong"),
    ("1b 00000000ffffffff", "overlong"),
    ("38 00", "overlong"),
    ("58 01 00", "overlong"),
    ("98 00", "overlong"),
    ("9f ff", "type"),
    ("bf ff", "type"),
    ("5f ff", "type"),
    ("7f ff", "type"),
    ("1c", "type"),
    ("ff", "type"),
    ("f7", "type"),
    ("f0", "type"),
    ("f8 20", "type"),
    ("a1 f6 01", "type"),
    ("a1 f93c00 01", "type"),
    ("a1 40 01", "type"),
    ("a1 80 01", "type"),
    ("c1 00", "tag"),
    ("d8 18 40", "tag"),
    ("81 d1 00", "tag"),
    ("d1 d1 00", "tag"),
    ("61 ff", "utf8"),
    ("62 c0 80", "utf8"),
    ("a2 01 00 01 00", "dupkey"),
    ("a2 61 61 00 61 61 00", "dupkey"),
    ("81" * 9 + "00", "depth"),
    ("d1" + "81" * 8 + "00", "depth"),
])
def test_decoder_refuses_with_reason(hexdata, reason):
    with pytest.raises(FrameError) as e:
        cbor.loads(bytes.fromhex(hexdata.replace(" ", "")))
    assert e.value.reason == reason


def test_depth_limit_is_eight_levels():
    assert cbor.loads(bytes.fromhex("81" * 8 + "00")) == [[[[[[[[0]]]]]]]]
    assert cbor.loads(bytes.fromhex("d1" + "81" * 7 + "00")).value == [[[[[[[0]]]]]]]
    eight = [[[[[[[[0]]]]]]]]
    assert cbor.dumps(eight) == bytes.fromhex("81" * 8 + "00")
    with pytest.raises(FrameError) as e:
        cbor.dumps([eight])
    assert e.value.reason == "depth"


@pytest.mark.parametrize("obj, reason", [
    ({1.5: 1}, "type"), ({None: 1}, "type"), ({True: 1}, "type"), ({b"k": 1}, "type"),
    ([Tag(17, 1)], "tag"), (Tag(18, 1), "tag"), (1 << 64, "range"), (-(1 << 64) - 1, "range"),
    (object(), "type"), ("\ud800", "utf8"),
])
def test_encoder_refuses_what_the_decoder_would(obj, reason):
    with pytest.raises(FrameError) as e:
        cbor.dumps(obj)
    assert e.value.reason == reason


def test_decoder_takes_bytearray_and_memoryview():
    data = cbor.dumps({0: [1, "a", b"b"]})
    assert cbor.loads(bytearray(data)) == cbor.loads(memoryview(data)) == {0: [1, "a", b"b"]}
    with pytest.raises(FrameError):
        cbor.loads("a0")
