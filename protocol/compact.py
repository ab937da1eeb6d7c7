# The compact frame profile for LoRa (SPEC.md section 13). The message is the same
# COSE_Mac0 with HMAC 256/64 and the node id as kid in the protected header, but its
# payload is a CBOR array of integers (a presence mask and fixed-point readings) instead of
# the map of SenML records, and on the air the envelope is cut to a profile byte and a
# 4-byte node address:
#     air = 0x01 + n | key version (n bytes, 0..4) | addr (SHA-256(node id)[:4]) | payload | tag (8 bytes)
# Both ends rebuild the full COSE_Mac0 (protected header {1: 4, 4: kid, ?10: key version})
# from the air bytes and the node id the address names, so the MAC, dedup, replay window and the stored frame
# are those of any other link, and pycose verifies the rebuilt message.
import hashlib

from protocol import cose, keyring
from protocol.cbor import FrameError, dumps

PROFILE = 0x01  # first byte of a compact message on the air, plus the key version's length (SPEC 4.5);
# a full message starts with 0xd1 (tag 17)
ADDR_LEN = 4
MAX_AIR = 255  # largest LoRa packet (SX126x/SX127x payload length register)
MIN_AIR = 1 + ADDR_LEN + 1 + cose.MAC_LEN

DATA = 1  # payload[0]: compact data frame
ACK = 2  # payload[0]: compact ACK
DATA_X = 8  # payload[0]: compact data frame with a reading of bit 12 and up (rain), which DATA cannot
# carry: a receiver that predates it refuses it with `version` instead of misreading it (SPEC 13.2)
CMD = 6  # payload[0]: an operator's compact signed command (protocol/command.py sign_compact, SPEC 13.6),
# MACed with the node's command key, never with its key: a receiver's compact.check refuses it (`version`)

# presence-mask bits of a data frame, in the order their values follow the mask
B_FLAGS = 0
B_TIME = 1
B_QUALITY = 9
B_INFO = 10
B_CMD_RESULT = 11
MASK_ALL = 0xFFF  # the bits of a DATA frame
_BITS_X = 13  # the bits of a DATA_X frame (0-12)

# readings: name -> (mask bit, scale). On the air round(value * scale) as an integer:
# t in 0.01 degC, h in 0.5 %RH, p in Pa, l and d in mm, b in mV, i in uA, rain in 0.01 mm
# (tips of 0.1 and 0.2 mm exact, of 0.01 in (0.254 mm) within 0.005 mm; 3 bytes up to 655 mm).
READINGS = {"t": (2, 100), "h": (3, 2), "p": (4, 1), "l": (5, 1000), "d": (6, 1000), "b": (7, 1000),
            "i": (8, 1000000), "rain": (12, 100000)}
_SIGNED = "tld"  # the others are unsigned
_BY_BIT = {}
for _n in READINGS:
    _BY_BIT[READINGS[_n][0]] = _n

_MAX_U32 = 0xFFFFFFFF
_MAX_U64 = 0xFFFFFFFFFFFFFFFF
_MAX_I32 = 0x7FFFFFFF


def _bad(detail):
    raise FrameError("payload", detail)


def address(node):
    # node id (str) -> its 4-byte address on the air
    return hashlib.sha256(node.encode()).digest()[:ADDR_LEN]


# ---------------------------------------------------------------- building


def data_payload(boot, seq, uptime_ms, records, time_s=None, quality=None, flags=0, info=None,
                 cmd_result=None):
    # The same arguments as message.data_payload; records are SenML maps {0: name, 2: number}
    # of the names in READINGS, at most one each. FrameError("payload") for anything the
    # profile cannot carry (the caller then sends a full frame).
    vals = {}
    index_bit = {}
    for i in range(len(records)):
        rec = records[i]
        name = rec.get(0)
        entry = READINGS.get(name)
        v = rec.get(2)
        if entry is None or len(rec) != 2 or v is None or isinstance(v, bool) or entry[0] in vals:
            _bad("record %r has no compact form" % (name,))
        if v - v != 0:
            _bad("reading %r is not finite" % (name,))
        vals[entry[0]] = int(round(v * entry[1]))
        index_bit[i] = entry[0]
    if not vals:
        _bad("a compact data frame carries at least one reading")
    if flags:
        vals[B_FLAGS] = flags
    if time_s is not None:
        vals[B_TIME] = time_s
    if quality:
        q = {}
        for i in quality:
            q[index_bit[i]] = quality[i]
        vals[B_QUALITY] = q
    if info:
        vals[B_INFO] = info
    if cmd_result is not None:
        vals[B_CMD_RESULT] = cmd_result
    mask = 0
    out = [DATA_X if 12 in vals else DATA, boot, seq, uptime_ms // 1000, 0]
    for bit in range(_BITS_X):
        if bit in vals:
            mask |= 1 << bit
            out.append(vals[bit])
    out[4] = mask
    return dumps(out)


def encode_data(key, node, boot, seq, uptime_ms, records, key_version=0, **kw):
    # -> the full COSE_Mac0 (kept in the node's buffer like any frame); to_air() cuts it
    return cose.sign(key, node.encode(), data_payload(boot, seq, uptime_ms, records, **kw), key_version)


def encode_ack(key, node, boot, seq, cum=None):
    p = [ACK, boot, seq]
    if cum is not None:
        p.append(cum)
    return cose.sign(key, node.encode(), dumps(p))


# ---------------------------------------------------------------- air form


def to_air(msg):
    # A full COSE_Mac0 -> the bytes to send on LoRa: compact when the payload is a compact
    # array and the protected header is the usual {1: 4, 4: kid}; else the message unchanged.
    kid, protected, payload, tag = cose.parse(msg)
    kv = keyring.key_version(protected)
    if payload[:1] and payload[0] >> 5 == 4 and protected == cose.protected_header(kid, kv):
        n = 0
        while kv >> (8 * n):
            n += 1
        kvb = bytes((kv >> (8 * (n - 1 - i))) & 0xFF for i in range(n))
        air = b"".join((bytes((PROFILE + n,)), kvb, address(kid.decode()), payload, tag))
    else:
        air = msg
    if len(air) > MAX_AIR:
        raise FrameError("oversize", "%d bytes do not fit a LoRa packet of %d" % (len(air), MAX_AIR))
    return air


def _split(air):
    # -> (key version, addr, payload, tag) of a compact packet, None for a full message
    if len(air) > MAX_AIR:
        raise FrameError("oversize", "LoRa packet of %d bytes" % len(air))
    if air[:1] == b"\xd1":
        return None
    n = air[0] - PROFILE if air else -1
    if not 0 <= n <= 4:
        raise FrameError("version", "unknown LoRa profile byte")
    if len(air) < MIN_AIR + n:
        raise FrameError("truncated", "compact message of %d bytes" % len(air))
    kv = 0
    for i in range(n):
        kv = (kv << 8) | air[1 + i]
    if n and not air[1]:
        raise FrameError("kid", "key version with a leading zero byte")
    a = 1 + n + ADDR_LEN
    return kv, air[1 + n:a], air[a:-cose.MAC_LEN], air[-cose.MAC_LEN:]


def is_command(msg):
    # whether a (rebuilt) COSE_Mac0 is a compact signed command: its payload an array that starts
    # with 6. Only a hint for routing: the node verifies it with its command key (firmware/commands.py)
    try:
        payload = cose.parse(msg)[2]
    except FrameError:
        return False
    return len(payload) > 1 and payload[0] >> 5 == 4 and payload[1] == CMD


def addr_of(air):
    # the node address of a compact message, None for a full message; FrameError for neither
    parts = _split(bytes(air))
    return parts[1] if parts else None


def from_air(air, node):
    # LoRa packet -> the full COSE_Mac0 it stands for, rebuilt for node id `node` (the one the
    # address names; a receiver that knows several with one address tries each: only the
    # right one's MAC verifies). A full message is returned as it came.
    air = bytes(air)
    parts = _split(air)
    if parts is None:
        return air
    kv, a, payload, tag = parts
    if a != address(node):
        raise FrameError("unknown", "address is not that of %s" % node)
    return cose.assemble(cose.protected_header(node.encode(), kv), payload, tag)


# ---------------------------------------------------------------- parsing


def _uint(v, limit, name):
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= limit:
        _bad("%s must be an unsigned integer up to %d" % (name, limit))
    return v


def check(p):
    # A compact payload (a CBOR array, decoded) -> the message dict message.parse_payload
    # gives for the same frame in full form: readings as SenML records {0: name, 2: value}.
    t = p[0] if p else None
    if t == ACK:
        if not 3 <= len(p) <= 4:
            _bad("a compact ACK is [2, boot, seq, ?cum]")
        return {"type": "ack", "boot": _uint(p[1], _MAX_U32, "boot"), "seq": _uint(p[2], _MAX_U32, "seq"),
                "cum": _uint(p[3], _MAX_U32, "cum") if len(p) == 4 else None}
    if t != DATA and t != DATA_X:
        raise FrameError("version", "unknown compact message %r" % (t,))
    if len(p) < 6:
        _bad("a compact data frame is [%d, boot, seq, uptime_s, mask, 1*values]" % t)
    mask = _uint(p[4], MASK_ALL if t == DATA else (1 << _BITS_X) - 1, "mask")
    if t == DATA_X and not mask >> 12:
        _bad("a compact data frame of type 8 carries a reading of bit 12 or up")  # else it is type 1
    n = 0
    for bit in range(_BITS_X):
        if mask >> bit & 1:
            n += 1
    if len(p) != 5 + n:
        _bad("the mask names %d values, the frame has %d" % (n, len(p) - 5))
    m = {"type": "data", "boot": _uint(p[1], _MAX_U32, "boot"), "seq": _uint(p[2], _MAX_U32, "seq"),
         "uptime_ms": _uint(p[3], _MAX_U64 // 1000, "uptime_s") * 1000, "time": None, "flags": 0,
         "quality": {}, "info": {}, "cmd_result": None}
    records = []
    record_at = {}  # mask bit -> record index
    pos = 5
    for bit in range(_BITS_X):
        if not mask >> bit & 1:
            continue
        v = p[pos]
        pos += 1
        name = _BY_BIT.get(bit)
        if name is not None:
            scale = READINGS[name][1]
            if not isinstance(v, int) or isinstance(v, bool) or not (
                    -_MAX_I32 - 1 <= v <= _MAX_I32 if name in _SIGNED else 0 <= v <= _MAX_U32):
                _bad("reading %s must be a 32-bit integer (unsigned but for t, l, d)" % name)
            record_at[bit] = len(records)
            records.append({0: name, 2: v if scale == 1 else v / scale})
        elif bit == B_FLAGS:
            m["flags"] = _uint(v, _MAX_U32, "flags")
        elif bit == B_TIME:
            m["time"] = _uint(v, _MAX_U64, "time")
        elif bit == B_QUALITY:
            if not isinstance(v, dict):
                _bad("quality must be a map")
            q = {}
            for b in v:
                e = v[b]
                if b not in record_at or not isinstance(e, list) or len(e) != 3:
                    _bad("quality entries are reading bit -> [taken, rejected, status]")
                for x in e:
                    _uint(x, _MAX_U64, "quality")
                q[record_at[b]] = e
            m["quality"] = q
        elif bit == B_INFO:
            if not isinstance(v, dict):
                _bad("info must be a map")
            for k in v:
                _uint(k, _MAX_U32, "info key")
            m["info"] = v
        else:
            if not (isinstance(v, list) and len(v) == 2):
                _bad("cmd_result must be [cmd_id, status]")
            _uint(v[0], _MAX_U32, "cmd_id")
            _uint(v[1], _MAX_U32, "status")
            m["cmd_result"] = v
    if not records:
        _bad("a compact data frame carries at least one reading")
    m["records"] = records
    return m


# ---------------------------------------------------------------- radio modem framing (SPEC.md 13.5)

MODEM = 0x7E  # first byte of a serial frame between a radio modem and its gateway


def modem_uplink(air, rssi_dbm, snr_db4):
    # a packet the modem received -> the body of its serial frame: 7e | rssi | snr x 4 | packet
    return bytes((MODEM, max(-128, min(127, rssi_dbm)) & 0xFF, max(-128, min(127, snr_db4)) & 0xFF)) + bytes(air)


def modem_parse(body):
    # the body of a modem's serial frame -> (packet, rssi dBm, snr dB), or None if it is no modem frame
    if len(body) < 4 or body[0] != MODEM:
        return None
    r, q = body[1], body[2]
    return bytes(body[3:]), r - 256 if r > 127 else r, (q - 256 if q > 127 else q) / 4
