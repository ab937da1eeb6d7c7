# citynode messages (SPEC.md section 6): the payload of every COSE_Mac0 is a CBOR map
# with small integer keys. Data frames go node -> gateway; ACKs and commands go back.
import sys

from protocol import cose, senml
from protocol.cbor import FrameError, dumps, loads

if sys.implementation.name == "micropython":  # a node: keep the gateway's hot path off its heap
    _fast_data = None
    _ids_ok = ()
else:
    from protocol.fast import data as _fast_data

    _ids_ok = set()  # node ids that passed check_node_id: a fleet's few hundred, one lookup a frame

PROTOCOL_VERSION = 1

# message types (key 0); a new protocol version gets new type numbers
DATA = 1
ACK = 2
CMD = 3
BOOT = 4  # gateway -> node: that boot is behind; move past min_boot and resend (SPEC 6.5)
RETIRED = 5  # gateway -> node: that frame's key version is no longer held; discard it (SPEC 6.6)
OPS = ("interval", "thresholds", "reboot", "time")  # command ops (checked in protocol/command.py)
# what the operator may set, in a node's config and by command (SPEC 6.7), defined once here
INTERVAL_MAX = 86400  # s: a reporting interval is 1..INTERVAL_MAX
THRESHOLD_MAX = 100000  # a level threshold in mm, the storm rise in mm/min: 0..THRESHOLD_MAX
TYPE_NAMES = {DATA: "data", ACK: "ack", CMD: "cmd", BOOT: "boot", RETIRED: "retired"}

# payload keys
K_TYPE = 0
K_BOOT = 1
K_SEQ = 2
K_UPTIME = 3
K_TIME = 4
K_RECORDS = 5
K_QUALITY = 6
K_FLAGS = 7
K_INFO = 8
K_CMD_RESULT = 9
K_CUM = 10
K_CMD_ID = 11
K_OP = 12
K_ARG = 13
K_MIN_BOOT = 14
K_KEY_VERSION = 15  # retired: the key version the gateway holds for the node now
K_SIGNED = 16  # command: the operator's signed command (protocol/command.py, SPEC 6.7)

# info map keys (data frames, usually the first after boot)
I_FW = 1  # firmware version, text
I_RESET = 2  # reset cause, text
I_BOARD = 3  # board name, text
I_INTERVAL = 4  # reporting interval in seconds
I_LEVEL_MM = 5  # level thresholds [alarm_mm, storm_mm], for charts and operators
# info key 6: frames the node discarded because the gateway no longer holds their key (SPEC 6.6)
# health (SPEC 6.1): sent with the boot frame and hourly
I_HEAP = 7  # [free bytes, largest free block bytes] of the node's heap
I_BUFFER = 8  # offline buffer [frames, bytes, torn, dropped]
I_FLASH_ERRORS = 9  # flash writes that failed (other than a full filesystem)
I_RESETS = 10  # {reset cause: count} since the node's flash state began
I_SAFE_S = 11  # seconds in safe mode in this boot

# flags (data frames)
F_STORM = 1  # storm mode: sampling faster because the level rises
F_ALARM = 2  # a level threshold is crossed; sent at once
F_SAFE = 4  # safe mode after repeated boot failures
F_BACKLOG = 8  # sent from the offline buffer, not live

# quality status values
Q_OK = 0
Q_DEGRADED = 1  # some samples rejected, value still valid
Q_FAULT = 2  # sensor fault; the record carries the last value or none
Q_RANGE = 3  # out of the sensor's range (e.g. blind zone)


MAX_U32 = 0xFFFFFFFF
MAX_U64 = 0xFFFFFFFFFFFFFFFF
NODE_ID_MAX = 32
KEY_MIN = 16  # bytes of a node key or a command key (SPEC.md section 2): the node's config,
KEY_MAX = 64  # the gateway's keys file and `citynode provision` check it with these


def check_node_id(node):
    # Node ids become MQTT topic levels, COSE kids and SenML base names ("<id>:"), so an
    # id is a SenML name (RFC 8428 4.5.1) without "/": a letter or digit, then letters,
    # digits and - : . _ (protocol/names.py has the rule for record names).
    if not isinstance(node, str) or not 0 < len(node) <= NODE_ID_MAX:
        return False
    for i, c in enumerate(node):
        if not (("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")):
            if i == 0 or c not in "-:._":
                return False
    return True


def _bad(detail):
    raise FrameError("payload", detail)


def _is_uint(v, limit):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= limit


def _uint(p, k, name, limit, required=True):
    v = p.get(k)
    if v is None and not required:
        return None
    if not _is_uint(v, limit):
        _bad("%s must be an unsigned integer up to %d" % (name, limit))
    return v


# ---------------------------------------------------------------- building


def data_payload(boot, seq, uptime_ms, records, time_s=None, quality=None, flags=0,
                 info=None, cmd_result=None):
    # records: list of senml.record(...) maps; quality: {record index: [taken, rejected, status]}
    p = {K_TYPE: DATA, K_BOOT: boot, K_SEQ: seq, K_UPTIME: uptime_ms}
    if time_s is not None:
        p[K_TIME] = time_s
    p[K_RECORDS] = records
    if quality:
        p[K_QUALITY] = quality
    if flags:
        p[K_FLAGS] = flags
    if info:
        p[K_INFO] = info
    if cmd_result is not None:
        p[K_CMD_RESULT] = cmd_result
    return dumps(p)


def encode_data(key, node, boot, seq, uptime_ms, records, key_version=0, **kw):
    # key_version: the version of the node's key, named in the header when not 0 (SPEC 4.1)
    return cose.sign(key, node.encode(), data_payload(boot, seq, uptime_ms, records, **kw), key_version)


def encode_ack(key, node, boot, seq, cum=None):
    # seq: the frame now durable at the gateway; cum: every seq <= cum of this boot is durable
    p = {K_TYPE: ACK, K_BOOT: boot, K_SEQ: seq}
    if cum is not None:
        p[K_CUM] = cum
    return cose.sign(key, node.encode(), dumps(p))


def encode_cmd(key, node, boot, cmd_id, op, arg=None):
    # A command for one boot of a node; cmd_id increases per command, so replays are refused.
    p = {K_TYPE: CMD, K_BOOT: boot, K_CMD_ID: cmd_id, K_OP: op}
    if arg is not None:
        p[K_ARG] = arg
    return cose.sign(key, node.encode(), dumps(p))


def encode_signed(key, node, boot, cmd_id, token):
    # The gateway's relay of an operator's signed command (token) to one boot of a node
    # (SPEC 6.3): MACed with the node's key like an ACK; cmd_id is the token's counter
    return cose.sign(key, node.encode(), dumps({K_TYPE: CMD, K_BOOT: boot, K_CMD_ID: cmd_id, K_SIGNED: token}))


def encode_boot(key, node, boot, seq, min_boot):
    # The gateway did not take data frame (boot, seq): its boot is behind (SPEC.md 6.5)
    return cose.sign(key, node.encode(), dumps({K_TYPE: BOOT, K_BOOT: boot, K_SEQ: seq, K_MIN_BOOT: min_boot}))


def renumber(key, node, frame, boot, seq, key_version=0):
    # One of this node's data frames again under another (boot, seq), all else kept (SPEC 6.5)
    p = loads(cose.parse(frame)[2])
    p[K_BOOT] = boot
    p[K_SEQ] = seq
    return cose.sign(key, node.encode(), dumps(p), key_version)


# ---------------------------------------------------------------- parsing


def _check(p):
    # A decoded payload map -> message dict (keys: type, boot, seq, ...). Raises FrameError.
    if isinstance(p, list):  # the compact LoRa profile (SPEC.md section 13)
        from protocol import compact

        return compact.check(p)
    if not isinstance(p, dict):
        _bad("payload must be a map")
    for k in p:
        if not isinstance(k, int) or isinstance(k, bool):
            _bad("payload keys must be integers")
    t = p.get(K_TYPE)
    if not isinstance(t, int) or t not in TYPE_NAMES:
        raise FrameError("version", "message type %r unknown to protocol version %d" % (t, PROTOCOL_VERSION))
    m = {"type": TYPE_NAMES[t], "boot": _uint(p, K_BOOT, "boot", MAX_U32)}
    if t == DATA:
        m["seq"] = _uint(p, K_SEQ, "seq", MAX_U32)
        m["uptime_ms"] = _uint(p, K_UPTIME, "uptime_ms", MAX_U64)
        m["time"] = _uint(p, K_TIME, "time", MAX_U64, False)
        records = p.get(K_RECORDS)
        senml.check_records(records, _bad)
        m["records"] = records
        q = p.get(K_QUALITY)
        if q is not None:
            if not isinstance(q, dict):
                _bad("quality must be a map")
            for i in q:
                v = q[i]
                if not isinstance(i, int) or not 0 <= i < len(records) or not isinstance(v, list) \
                        or len(v) != 3 or not all(_is_uint(x, MAX_U64) for x in v):
                    _bad("quality entries are record index -> [taken, rejected, status]")
        m["quality"] = q or {}
        m["flags"] = _uint(p, K_FLAGS, "flags", MAX_U32, False) or 0
        info = p.get(K_INFO)
        if info is not None:
            if not isinstance(info, dict):
                _bad("info must be a map")
            for k in info:
                if not _is_uint(k, MAX_U32):
                    _bad("info keys must be unsigned integers")
        m["info"] = info or {}
        cr = p.get(K_CMD_RESULT)
        if cr is not None and not (isinstance(cr, list) and len(cr) == 2 and _is_uint(cr[0], MAX_U32)
                                   and _is_uint(cr[1], MAX_U32)):
            _bad("cmd_result must be [cmd_id, status]")
        m["cmd_result"] = cr
    elif t == ACK:
        m["seq"] = _uint(p, K_SEQ, "seq", MAX_U32)
        m["cum"] = _uint(p, K_CUM, "cum", MAX_U32, False)
    elif t == BOOT:
        m["seq"] = _uint(p, K_SEQ, "seq", MAX_U32)
        m["min_boot"] = _uint(p, K_MIN_BOOT, "min_boot", MAX_U32)
    elif t == RETIRED:
        m["seq"] = _uint(p, K_SEQ, "seq", MAX_U32)
        m["key_version"] = _uint(p, K_KEY_VERSION, "key_version", MAX_U32)
    else:
        m["cmd_id"] = _uint(p, K_CMD_ID, "cmd_id", MAX_U32)
        signed = p.get(K_SIGNED)
        if signed is not None:
            if not isinstance(signed, bytes):
                _bad("signed: not bytes")
            m["signed"] = signed  # checked by the node with its command key (protocol/command.py)
            m["op"] = m["arg"] = None
        else:
            op = p.get(K_OP)
            if not isinstance(op, str) or op not in OPS:
                _bad("unknown command %r" % (op,))
            m["op"] = op
            m["arg"] = p.get(K_ARG)
    return m


def parse_payload(payload):
    # payload bytes -> message dict (keys: type, boot, seq, ...). Raises FrameError.
    m = _fast_data(payload) if _fast_data is not None and isinstance(payload, bytes) else None
    return m if m is not None else _check(loads(payload))


def decode(msg, key_for):
    # Verify and parse one COSE message. key_for(node id str) -> key bytes or None.
    # Returns the message dict with "node" added. Raises FrameError(reason).
    def lookup(kid):
        try:
            node = kid.decode()
        except UnicodeError:
            raise FrameError("kid", "kid is not text")
        if node not in _ids_ok:
            if not check_node_id(node):
                raise FrameError("kid", "kid is not a valid node id")
            if _fast_data is not None:
                if len(_ids_ok) >= 4096:
                    _ids_ok.clear()
                _ids_ok.add(node)
        return key_for(node)

    kid, payload = cose.verify(msg, lookup)
    m = parse_payload(payload)
    m["node"] = kid.decode()
    return m
