# Hypothesis strategies shared by the protocol tests.
import cbor2
from hypothesis import strategies as st

from protocol import cbor, message, senml

U32 = st.integers(0, message.MAX_U32)
U64 = st.integers(0, message.MAX_U64)
INTS = st.integers(-(1 << 64), (1 << 64) - 1)
# node ids (protocol.names.NODE_ID_RULE): a letter or digit, then letters, digits and - : . _
ID_FIRST = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_CHARS = ID_FIRST + "-:._"
nodes = st.builds(lambda a, b: a + b, st.sampled_from(ID_FIRST), st.text(ID_CHARS, max_size=31))
keys = st.binary(min_size=16, max_size=64)
finite = st.floats(allow_nan=False, allow_infinity=False)


def depth(obj):
    # nesting levels of containers (a scalar is 0, [] is 1)
    if isinstance(obj, (list, tuple)):
        return 1 + max((depth(x) for x in obj), default=0)
    if isinstance(obj, dict):
        return 1 + max((depth(v) for v in obj.values()), default=0)
    if isinstance(obj, (cbor.Tag, cbor2.CBORTag)):
        return 1 + depth(obj.value)
    return 0


def canonical_dict(pairs):
    # a dict whose keys iterate in canonical (length-first) order, like cbor2 canonical=True writes them
    d = dict(pairs)
    return {k: d[k] for k in sorted(d, key=lambda k: (len(cbor2.dumps(k)), cbor2.dumps(k)))}


scalars = st.one_of(INTS, st.binary(max_size=40), st.text(max_size=30), st.booleans(), st.none(),
                    st.floats(allow_nan=False, width=16), st.floats(allow_nan=False, width=32),
                    st.floats(allow_nan=False))
map_keys = st.one_of(INTS, st.text(max_size=12))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.lists(st.tuples(map_keys, inner), max_size=6).map(canonical_dict)),
    max_leaves=25,
).filter(lambda x: depth(x) <= cbor.MAX_DEPTH)

any_value = st.recursive(  # what "any" fields (info values, command arguments, extensions) may carry
    st.one_of(st.integers(0, 1 << 40), st.text(max_size=20), st.booleans(), st.none(), finite),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8,
)
names = st.one_of(st.sampled_from(sorted(senml.NAMES)), st.text(min_size=1, max_size=24))
numbers = st.one_of(st.integers(-(1 << 64), (1 << 64) - 1), finite,
                    st.floats(width=32, allow_nan=False, allow_infinity=False),
                    st.floats(width=16, allow_nan=False, allow_infinity=False))


@st.composite
def records(draw, max_size=8):
    out = []
    for _ in range(draw(st.integers(1, max_size))):
        kind = draw(st.sampled_from(["v", "v", "v", "v", "vs", "vb"]))
        value = draw({"v": numbers, "vs": st.text(max_size=10), "vb": st.booleans()}[kind])
        unit = draw(st.one_of(st.none(), st.sampled_from(["Cel", "m", "V", "%RH", "Pa", "A", "count"])))
        rec = senml.record(draw(names), value, unit=unit)
        if draw(st.integers(0, 9)) == 0:
            rec[senml.T] = draw(st.one_of(st.integers(-86400, 86400), finite))
        if draw(st.integers(0, 9)) == 0:
            rec[draw(st.text(min_size=1, max_size=6).filter(lambda s: not s.endswith("_")))] = draw(any_value)
        out.append(rec)
    return out


@st.composite
def data_frames(draw):
    # -> (key, node, encode_data keyword arguments, expected decode() dict)
    recs = draw(records())
    kw = {}
    if draw(st.booleans()):
        kw["time_s"] = draw(U64)
    if draw(st.integers(0, 3)) == 0:
        kw["quality"] = draw(st.dictionaries(st.integers(0, len(recs) - 1), st.lists(U64, min_size=3, max_size=3),
                                             max_size=3))
    if draw(st.booleans()):
        kw["flags"] = draw(U32)
    if draw(st.integers(0, 3)) == 0:
        kw["info"] = draw(st.dictionaries(U32, any_value, max_size=4))
    if draw(st.integers(0, 3)) == 0:
        kw["cmd_result"] = [draw(U32), draw(U32)]
    args = dict(boot=draw(U32), seq=draw(U32), uptime_ms=draw(U64), records=recs)
    expected = {"type": "data", "boot": args["boot"], "seq": args["seq"], "uptime_ms": args["uptime_ms"],
                "time": kw.get("time_s"), "records": recs, "quality": kw.get("quality") or {},
                "flags": kw.get("flags") or 0, "info": kw.get("info") or {}, "cmd_result": kw.get("cmd_result")}
    return draw(keys), draw(nodes), args, kw, expected
