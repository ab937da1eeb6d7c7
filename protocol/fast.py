# The gateway's hot path, CPython only (cose.py and message.py import it unless they run on
# MicroPython, so it costs a node no heap). Each reader takes bytes exactly in the form our
# encoder writes them and returns None for anything else, which the strict general path
# (cbor.loads plus the checks in cose.py and message.py) then judges. Whatever a reader
# accepts, the general path accepts with the same result: tests/protocol check this on random,
# mutated and golden input. About 4x faster than the general path for a typical frame.
import hashlib
import hmac
import struct

_MAX_U32 = 0xFFFFFFFF
_PROTECTED_PREFIX = b"\xa2\x01\x04\x04"  # {1: 4 (alg HMAC 256/64), 4: kid}, as cose.sign writes it
_FLOATS = {0xF9: (">e", 4), 0xFA: (">f", 6), 0xFB: (">d", 10)}  # head -> (format, size incl. key 2 and head)
_UINTS = {0x19: (">H", 3, 0x100), 0x1A: (">I", 5, 0x10000), 0x1B: (">Q", 9, 0x100000000)}
_KEYED = {}  # key -> (inner, outer): SHA-256 states after the padded key block (RFC 2104 section 4)
_KEYED_MAX = 1024


def hmac_sha256(key, msg):
    # HMAC-SHA256 from the two keyed hash states, kept per key: about twice as fast as
    # hmac.digest for a frame-sized message.
    states = _KEYED.get(key) if isinstance(key, bytes) else None
    if states is None:
        if not isinstance(key, bytes):
            return hmac.digest(key, msg, "sha256")
        if len(_KEYED) >= _KEYED_MAX:
            _KEYED.clear()
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\x00")
        states = _KEYED[key] = (hashlib.sha256(bytes(b ^ 0x36 for b in block)),
                                hashlib.sha256(bytes(b ^ 0x5C for b in block)))
    inner = states[0].copy()
    inner.update(msg)
    outer = states[1].copy()
    outer.update(inner.digest())
    return outer.digest()


def _bstr_at(buf, pos, end):
    # A byte string head in its shortest form at buf[pos] -> (start, stop) of its content,
    # or None when there is none or the string does not end by `end`.
    ib = buf[pos]
    if 0x40 <= ib < 0x58:
        start = pos + 1
        n = ib - 0x40
    elif ib == 0x58 and pos + 1 < end:
        start = pos + 2
        n = buf[pos + 1]
        if n < 24:
            return None
    elif ib == 0x59 and pos + 2 < end:
        start = pos + 3
        n = (buf[pos + 1] << 8) | buf[pos + 2]
        if n < 0x100:
            return None
    else:
        return None
    if start + n > end:
        return None
    return start, start + n


def envelope(msg):
    # A COSE_Mac0 message (bytes) exactly as cose.sign writes it, sliced in place:
    #   d1 84 <bstr {1: 4, 4: <bstr kid>, ?10: <bstr key version>}> a0 <bstr payload> 48 <8-byte tag>
    # -> (kid, protected, payload, tag) as cose.parse returns them, or None.
    n = len(msg)
    if n < 16 or msg[0] != 0xD1 or msg[1] != 0x84 or msg[n - 9] != 0x48:
        return None
    end = n - 9  # the MAC tag's head
    p = _bstr_at(msg, 2, end - 2)
    if p is None or msg[p[1]] != 0xA0:
        return None
    q = _bstr_at(msg, p[1] + 1, end)
    if q is None or q[1] != end:
        return None
    protected = msg[p[0] : p[1]]
    n = len(protected)
    if n < 6 or protected[1:4] != _PROTECTED_PREFIX[1:]:
        return None
    k = _bstr_at(protected, 4, n)
    if k is None or k[0] == k[1]:
        return None
    if protected[0] == 0xA3:  # {1: 4, 4: kid, 10: key version of 1..4 bytes} (SPEC.md 4.1)
        kv = k[1]
        if kv + 3 > n or protected[kv] != 0x0A or not 0x41 <= protected[kv + 1] <= 0x44 \
                or kv + 2 + protected[kv + 1] - 0x40 != n or protected[kv + 2] == 0:
            return None
    elif protected[0] != 0xA2 or k[1] != n:
        return None
    return protected[k[0] : k[1]], protected, msg[q[0] : q[1]], msg[end + 1 :]


def _uint(b, pos):
    # An unsigned integer in its shortest form at b[pos] -> (value, next) or (None, pos)
    ib = b[pos]
    if ib < 0x18:
        return ib, pos + 1
    if ib == 0x18:
        v = b[pos + 1]
        return (v, pos + 2) if v >= 0x18 else (None, pos)
    f = _UINTS.get(ib)
    if f is None:
        return None, pos
    v = struct.unpack_from(f[0], b, pos + 1)[0]
    return (v, pos + f[1]) if v >= f[2] else (None, pos)


def data(b):
    # A data payload (bytes) exactly as message.data_payload writes the usual frame:
    #   {0: 1, 1: boot, 2: seq, 3: uptime_ms, ?4: time, 5: [1*23 {0: name, ?1: unit, 2: number}], ?7: flags}
    # names and units of at most 23 bytes, values finite, keys as numbered in SPEC.md section 6.1.
    # -> the message dict message.parse_payload returns, or None. Reads past the end raise
    # IndexError or struct.error, which mean None too.
    try:
        if not (0xA5 <= b[0] <= 0xA7 and b[1] == 0 and b[2] == 1 and b[3] == 1):  # {0: 1 (data), 1: ...
            return None
        boot, pos = _uint(b, 4)
        if boot is None or boot > _MAX_U32 or b[pos] != 2:
            return None
        seq, pos = _uint(b, pos + 1)
        if seq is None or seq > _MAX_U32 or b[pos] != 3:
            return None
        uptime, pos = _uint(b, pos + 1)
        if uptime is None:
            return None
        pairs = b[0] - 0xA5  # optional pairs left: time and flags
        time_s = None
        if b[pos] == 4:
            time_s, pos = _uint(b, pos + 1)
            if time_s is None:
                return None
            pairs -= 1
        n = b[pos + 1] - 0x80
        if b[pos] != 5 or not 0 < n < 24:
            return None
        pos += 2
        records = []
        for _ in range(n):
            h = b[pos]
            e = b[pos + 2] - 0x5D + pos  # end of the name: text head 0x61..0x77 at pos + 2
            if b[pos + 1] != 0 or e <= pos + 3 or e > pos + 26 or (h != 0xA2 and h != 0xA3):
                return None
            rec = {0: b[pos + 3 : e].decode()}
            pos = e
            if h == 0xA3:  # {0: name, 1: unit, 2: v}
                e = b[pos + 1] - 0x5E + pos  # end of the unit: text head 0x60..0x77 at pos + 1
                if b[pos] != 1 or e < pos + 2 or e > pos + 25:
                    return None
                rec[1] = b[pos + 2 : e].decode()
                pos = e
            if b[pos] != 2:
                return None
            f = _FLOATS.get(b[pos + 1])
            if f is not None:
                v = struct.unpack_from(f[0], b, pos + 2)[0]
                if v - v != 0:  # NaN or infinite
                    return None
                pos += f[1]
            else:
                v, pos = _uint(b, pos + 1)
                if v is None:
                    return None
            rec[2] = v
            records.append(rec)
        flags = 0
        if pairs and pos < len(b) and b[pos] == 7:
            flags, pos = _uint(b, pos + 1)
            if flags is None or flags > _MAX_U32:
                return None
            pairs -= 1
        if pairs or pos != len(b):
            return None
    except (IndexError, UnicodeError, struct.error):
        return None
    return {"type": "data", "boot": boot, "seq": seq, "uptime_ms": uptime, "time": time_s,
            "records": records, "quality": {}, "flags": flags, "info": {}, "cmd_result": None}
