# Operator commands (SPEC.md section 6.7): signed by the operator with the node's command
# key, a key the gateway never holds; the gateway only relays them (inside a type 3
# message, section 6.3). The one checker of ops and arguments: the node, the gateway and
# `citynode command` all call check(), and a result code names each reason once.
from protocol import cose
from protocol.cbor import FrameError, dumps, loads
from protocol.message import INTERVAL_MAX, OPS, THRESHOLD_MAX

OPCMD = 6  # payload type of a signed command; never a link message of its own
THRESHOLD_KEYS = ("alarm_m", "storm_m", "rise_mm_min")
U32 = 0xFFFFFFFF

# result codes: the status in a data frame's cmd_result [cmd_id, status]; RESULTS[code] names it
APPLIED = 0
BAD_ARG = 1  # the argument has the wrong type or shape for its op
UNKNOWN_OP = 2
OUT_OF_RANGE = 3  # interval outside 1..INTERVAL_MAX, a threshold outside 0..THRESHOLD_MAX (mm), time 0
BEYOND_DEPTH = 4  # a level threshold deeper than the shaft the node is configured for
TIME_STEP = 5  # the new time is further from the node's clock than its configured limit
UNSIGNED = 6  # a command without the operator's signature
BAD_SIGNATURE = 7  # the signature does not verify with the node's command key
OTHER_NODE = 8  # signed for another node
OTHER_BOOT = 9  # signed for another boot of this node (an old command, or one held back)
REPLAY = 10  # its counter is not above the last one this node applied
MALFORMED = 11  # not a signed command in the form of section 6.7
NO_KEY = 12  # the node has no command key: it takes no command
RESULTS = ("applied", "bad_arg", "unknown_op", "out_of_range", "beyond_depth", "time_step", "unsigned",
           "bad_signature", "other_node", "other_boot", "replay", "malformed", "no_key")


def _uint(v, hi=U32):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= hi


def _number(v):
    return not isinstance(v, bool) and isinstance(v, (int, float)) and v == v  # not NaN


def check(op, arg, depth_mm=None, now_s=None, step_s=None):
    # -> result code of a command's op and argument. depth_mm: the shaft's depth (level
    # thresholds must lie within it); now_s, step_s: the node's clock and the largest step
    # a time command may move it. None skips that check (the gateway and the CLI know neither).
    if op not in OPS:
        return UNKNOWN_OP
    if op == "interval":
        if not isinstance(arg, int) or isinstance(arg, bool):
            return BAD_ARG
        return APPLIED if 1 <= arg <= INTERVAL_MAX else OUT_OF_RANGE
    if op == "thresholds":
        if not isinstance(arg, dict) or not arg:
            return BAD_ARG
        for k in arg:
            if k not in THRESHOLD_KEYS or not _number(arg[k]):
                return BAD_ARG
        for k in arg:
            v = arg[k]
            if v < 0 or (v if k == "rise_mm_min" else v * 1000) > THRESHOLD_MAX:
                return OUT_OF_RANGE
        for k in arg:
            # in whole mm, as the node applies it (firmware/policy.py): 2.999 m is 2999 mm, not 2998.9999
            if k != "rise_mm_min" and depth_mm is not None and round(arg[k] * 1000) > depth_mm:
                return BEYOND_DEPTH
        return APPLIED
    if op == "reboot":
        return APPLIED if arg is None else BAD_ARG
    if op == "time":
        if not isinstance(arg, int) or isinstance(arg, bool):
            return BAD_ARG
        if not 0 < arg <= U32:
            return OUT_OF_RANGE
        if now_s is not None and step_s is not None and abs(arg - now_s) > step_s:
            return TIME_STEP
    return APPLIED


def sign(command_key, node, boot, counter, op, arg=None):
    # -> the signed command (COSE_Mac0 bytes) for one boot of one node; counter 1..2^32-1
    # grows with every command the operator signs for that node
    if not _uint(boot) or not _uint(counter) or not counter:
        raise FrameError("payload", "boot and counter must be unsigned 32-bit integers, counter above 0")
    p = {0: OPCMD, 1: boot, 11: counter, 12: op}
    if arg is not None:
        p[13] = arg
    return cose.sign(command_key, node.encode(), dumps(p))


def sign_compact(command_key, node, boot, counter, op, arg=None):
    # The same command in the compact form for LoRa (SPEC 13.6): the payload a CBOR array
    # [6, boot, counter, op code, ?arg], thresholds as {1: alarm_mm, 2: storm_mm, 3: rise_mm_min}
    # in whole units (rounded); at most 45 bytes on the air. FrameError for what it cannot carry.
    if not _uint(boot) or not _uint(counter) or not counter:
        raise FrameError("payload", "boot and counter must be unsigned 32-bit integers, counter above 0")
    if op not in OPS:
        raise FrameError("payload", "unknown op %r" % (op,))
    p = [OPCMD, boot, counter, OPS.index(op) + 1]
    if op == "thresholds" and isinstance(arg, dict):
        th = {}
        for k in arg:
            if k not in THRESHOLD_KEYS or not _number(arg[k]):
                raise FrameError("payload", "thresholds are alarm_m, storm_m, rise_mm_min: numbers")
            i = THRESHOLD_KEYS.index(k)
            th[i + 1] = int(round(arg[k] * (1 if i == 2 else 1000)))
        arg = th
    if arg is not None:
        p.append(arg)
    return cose.sign(command_key, node.encode(), dumps(p))


def peek(token):
    # The fields of a signed command, unverified (the gateway and the CLI, which hold no key or
    # do not need it): -> (node, {"boot", "counter", "op", "arg"}). Raises FrameError.
    kid, _, payload, _ = cose.parse(token)
    try:
        node = kid.decode()
    except UnicodeError:
        raise FrameError("kid", "kid is not text")
    return node, _fields(loads(payload))


def _fields(p):
    if isinstance(p, list):
        return _compact_fields(p)
    if not isinstance(p, dict) or p.get(0) != OPCMD:
        raise FrameError("payload", "not a signed command (type 6)")
    boot = p.get(1)
    counter = p.get(11)
    op = p.get(12)
    if not _uint(boot) or not _uint(counter) or not counter or not isinstance(op, str):
        raise FrameError("payload", "a signed command needs boot, counter above 0 and op")
    return {"boot": boot, "counter": counter, "op": op, "arg": p.get(13)}


def _compact_fields(p):
    # [6, boot, counter, op code, ?arg] -> the fields of the same command in full form; an op
    # code other than 1..4 stays a number (unknown_op), thresholds that are not a map of
    # 1..3 -> integer become None (bad_arg)
    if not 4 <= len(p) <= 5 or p[0] != OPCMD or not _uint(p[1]) or not _uint(p[2]) or not p[2] or not _uint(p[3]):
        raise FrameError("payload", "a compact signed command is [6, boot, counter above 0, op code, ?arg]")
    code = p[3]
    op = OPS[code - 1] if 1 <= code <= len(OPS) else code
    arg = p[4] if len(p) == 5 else None
    if op == "thresholds":
        th = {} if isinstance(arg, dict) else None
        for k in arg if th is not None else ():
            v = arg[k]
            if not isinstance(k, int) or not 1 <= k <= 3 or not isinstance(v, int) or isinstance(v, bool):
                th = None
                break
            th[THRESHOLD_KEYS[k - 1]] = v if k == 3 else v / 1000
        arg = th
    return {"boot": p[1], "counter": p[2], "op": op, "arg": arg}


def decide(token, node, command_key, boot, last, cmd_id=None, depth_mm=None, now_s=None, step_s=None):
    # The node's whole check of a signed command (SPEC 6.7), in this order: a key, the form,
    # the node, the signature, cmd_id (the relay's copy of the counter), the boot, the counter
    # (above last, the highest applied), the argument (check above). -> (result code, fields
    # or None); REPLAY with fields whose counter equals last is a resend of the last command.
    if command_key is None:
        return NO_KEY, None
    if not isinstance(token, (bytes, bytearray)):
        return MALFORMED, None
    want = node.encode()
    try:
        f = _fields(loads(cose.verify(bytes(token), lambda k: command_key if k == want else None)[1]))
    except FrameError as e:
        r = e.reason
        return (OTHER_NODE if r == "unknown" else BAD_SIGNATURE if r == "mac" else MALFORMED), None
    if cmd_id is not None and f["counter"] != cmd_id:
        return MALFORMED, f
    if f["boot"] != boot:
        return OTHER_BOOT, f
    if f["counter"] <= last:
        return REPLAY, f
    return check(f["op"], f["arg"], depth_mm, now_s, step_s), f
