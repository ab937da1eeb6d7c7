# Strict, bounded CBOR (RFC 8949) for the subset citynode needs (SPEC.md section 3).
# Runs unchanged on MicroPython and CPython: only struct is used.
#
# Encoder: definite lengths, shortest integer heads, floats in the shortest of
# binary16/32/64 that holds the value exactly (what cbor2 does with canonical=True).
# Map keys are written in canonical order (length-first), so the bytes never depend on
# dict order, which MicroPython does not keep.
# The encoder refuses (FrameError) what the decoder would refuse: other tags, map keys
# that are not integers or text, nesting deeper than MAX_DEPTH.
#
# Decoder: accepts only well-formed, preferred-serialisation input of the subset and
# raises FrameError(reason) for anything else. It never raises another exception type.
# Floats of any width are accepted; map keys need not be in canonical order.
import struct

MAX_DEPTH = 8  # arrays, maps and tags nest at most 8 levels (the outermost is level 1)


class FrameError(ValueError):
    # One error type for every bad input. `reason` is a short counter name
    # (see SPEC.md "Reject reasons"); str(err) adds the detail.
    def __init__(self, reason, detail=""):
        super().__init__(reason + ": " + detail if detail else reason)
        self.reason = reason


TAG_MAC0 = 17  # the one tag of the subset: COSE_Mac0 (RFC 9052), as protocol.cose.TAG_MAC0


class Tag:
    # A CBOR tag (major type 6). Only tag 17 (COSE_Mac0) is used by the SPEC.
    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and other.tag == self.tag and other.value == self.value

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


# ---------------------------------------------------------------- encoder


def _head(out, major, n):
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:  # byte by byte: no temporary object on MicroPython's heap
        out.append(mt | 25)
        out.append(n >> 8)
        out.append(n & 0xFF)
    elif n < 0x100000000:
        out.append(mt | 26)
        out.append(n >> 24)
        out.append((n >> 16) & 0xFF)
        out.append((n >> 8) & 0xFF)
        out.append(n & 0xFF)
    elif n < 0x10000000000000000:
        out.append(mt | 27)
        out.extend(struct.pack(">Q", n))
    else:
        raise FrameError("range", "integer does not fit 64 bits")


def _float(out, x):
    if x != x:  # NaN: the canonical half-precision quiet NaN
        out.extend(b"\xf9\x7e\x00")
        return
    for code, fmt in ((0xF9, ">e"), (0xFA, ">f")):
        try:
            b = struct.pack(fmt, x)
            if struct.unpack(fmt, b)[0] == x:
                out.append(code)
                out.extend(b)
                return
        except (OverflowError, ValueError):
            pass
    out.append(0xFB)
    out.extend(struct.pack(">d", x))


def _uint_keys(m):
    # The keys of m in ascending order when all are unsigned integers (the usual case, where
    # numeric order is canonical order), else None.
    for k in m:
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            return None
    return sorted(m)


def _canonical_pairs(m):
    # [(encoded key, key)] in canonical order: RFC 8949 section 4.2.3 length-first ordering,
    # what cbor2 writes with canonical=True
    pairs = []
    for k in m:
        if not isinstance(k, (int, str)) or isinstance(k, bool):
            raise FrameError("type", "map key must be an integer or text")
        pairs.append((dumps(k), k))
    pairs.sort(key=_canonical)
    return pairs


def _canonical(pair):
    return len(pair[0]), pair[0]


def _enc(out, obj, depth):
    # depth of obj: 0 for the outermost item. Encodes only what loads() accepts back.
    if obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(out, 0, obj)
        else:
            _head(out, 1, -1 - obj)
    elif isinstance(obj, float):
        _float(out, obj)
    elif isinstance(obj, str):
        try:
            b = obj.encode()
        except UnicodeError:
            raise FrameError("utf8", "text cannot be encoded as UTF-8")
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(out, 2, len(obj))
        out.extend(obj)
    elif depth >= MAX_DEPTH and isinstance(obj, (list, tuple, dict, Tag)):
        raise FrameError("depth", "nested deeper than %d" % MAX_DEPTH)
    elif isinstance(obj, (list, tuple)):
        _head(out, 4, len(obj))
        for item in obj:
            _enc(out, item, depth + 1)
    elif isinstance(obj, dict):
        # keys in canonical order whatever order the dict iterates in (MicroPython's dicts
        # do not keep insertion order), so the bytes are deterministic
        _head(out, 5, len(obj))
        keys = _uint_keys(obj)
        if keys is not None:
            for k in keys:
                _head(out, 0, k)
                _enc(out, obj[k], depth + 1)
        else:
            for kb, k in _canonical_pairs(obj):
                out.extend(kb)
                _enc(out, obj[k], depth + 1)
    elif isinstance(obj, Tag):
        if obj.tag != TAG_MAC0 or depth:
            raise FrameError("tag", "only tag 17, only as the outermost item")
        _head(out, 6, obj.tag)
        _enc(out, obj.value, depth + 1)
    else:
        raise FrameError("type", "cannot encode %s" % type(obj).__name__)


def dumps(obj):
    out = bytearray()
    _enc(out, obj, 0)
    return bytes(out)


def dump_into(out, obj):
    # Append the encoding of obj to a bytearray the caller owns (no extra copy).
    _enc(out, obj, 0)


def head(major, n):
    # The bytes of one CBOR head, e.g. head(2, 5) for a 5-byte bstr.
    out = bytearray()
    _head(out, major, n)
    return bytes(out)


# ---------------------------------------------------------------- decoder

_MINIMUM = (0, 24, 0x100, 0x10000, 0x100000000)  # smallest value allowed per extra length


def _arg(buf, pos, ai, end):
    # Returns (argument, next position) for additional info ai at buf[pos].
    if ai < 24:
        return ai, pos
    if ai > 27:
        raise FrameError("type", "indefinite length or reserved additional info %d" % ai)
    size = 1 << (ai - 24)
    if pos + size > end:
        raise FrameError("truncated", "head needs %d more bytes" % size)
    n = 0
    for i in range(pos, pos + size):
        n = (n << 8) | buf[i]
    if n < _MINIMUM[ai - 23]:
        raise FrameError("overlong", "integer or length not in its shortest form")
    return n, pos + size


def _simple(buf, pos, end, ib):
    # major type 7: false, true, null and floats of any width; nothing else is in the subset
    if ib == 0xF4:
        return False, pos
    if ib == 0xF5:
        return True, pos
    if ib == 0xF6:
        return None, pos
    if not 0xF9 <= ib <= 0xFB:
        raise FrameError("type", "simple value or break 0x%02x not in the subset" % ib)
    size = 1 << (ib - 0xF8)
    if pos + size > end:
        raise FrameError("truncated", "float needs %d bytes" % size)
    return struct.unpack_from(">e" if size == 2 else (">f" if size == 4 else ">d"), buf, pos)[0], pos + size


def _dec(buf, pos, end, depth):
    # buf is bytes; depth is the nesting level of the item at pos (0 for the outermost)
    if pos >= end:
        raise FrameError("truncated", "data item expected at offset %d" % pos)
    ib = buf[pos]
    major = ib >> 5
    if major == 7:
        return _simple(buf, pos + 1, end, ib)
    n, pos = _arg(buf, pos + 1, ib & 0x1F, end)
    if major == 0:
        return n, pos
    if major == 1:
        return -1 - n, pos
    if major == 2 or major == 3:
        if n > end - pos:
            raise FrameError("truncated", "string of %d bytes, %d left" % (n, end - pos))
        raw = buf[pos : pos + n]
        if major == 2:
            return raw, pos + n
        try:
            return raw.decode(), pos + n
        except UnicodeError:
            raise FrameError("utf8", "text string is not valid UTF-8")
    if depth >= MAX_DEPTH:
        raise FrameError("depth", "nested deeper than %d" % MAX_DEPTH)
    depth += 1
    if major == 4:
        if n > end - pos:  # every item takes at least one byte
            raise FrameError("truncated", "array of %d items, %d bytes left" % (n, end - pos))
        items = []
        for _ in range(n):
            item, pos = _dec(buf, pos, end, depth)
            items.append(item)
        return items, pos
    if major == 5:
        if 2 * n > end - pos:
            raise FrameError("truncated", "map of %d pairs, %d bytes left" % (n, end - pos))
        m = {}
        for _ in range(n):
            k, pos = _dec(buf, pos, end, depth)
            if not isinstance(k, (int, str)) or isinstance(k, bool):
                raise FrameError("type", "map key must be an integer or text")
            if k in m:
                raise FrameError("dupkey", "map key %r repeated" % (k,))
            m[k], pos = _dec(buf, pos, end, depth)
        return m, pos
    # major 6: tags; only tag 17 (COSE_Mac0), only as the outermost item
    if n != TAG_MAC0:
        raise FrameError("tag", "tag %d not in the subset (only 17)" % n)
    if depth != 1:
        raise FrameError("tag", "tag 17 is allowed only as the outermost item")
    value, pos = _dec(buf, pos, end, depth)
    return Tag(n, value), pos


def loads(buf):
    # Decode exactly one data item that fills buf; raise FrameError otherwise.
    if not isinstance(buf, bytes):
        if not isinstance(buf, (bytearray, memoryview)):
            raise FrameError("type", "expected bytes")
        buf = bytes(buf)
    end = len(buf)
    obj, pos = _dec(buf, 0, end, 0)
    if pos != end:
        raise FrameError("trailing", "%d bytes after the data item" % (end - pos))
    return obj
