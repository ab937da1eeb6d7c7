# Writes protocol/vectors/*.json, the golden vectors of SPEC.md section 11.
# Deterministic: fixed keys (derived from the node id), fixed values, no clock, no randomness.
# Run `python tools/make_vectors.py` after a deliberate wire change; `--check` fails when the
# checked-in files differ from what this script writes (tests/protocol runs it).
import argparse
import hashlib
import json
import pathlib
import struct
import sys
from collections.abc import Sequence
from typing import Any

from protocol import cbor, cobs, command, compact, cose, keyring, message, senml
from protocol.cbor import FrameError

OUT = pathlib.Path(__file__).resolve().parent.parent / "protocol" / "vectors"


def key_of(node: str, size: int = 32) -> bytes:
    # A fixed test key per node: SHA-256 chain of "citynode vector key <node>", cut to size bytes
    out = b""
    block = ("citynode vector key " + node).encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return out[:size]


def f32(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


def f16(x: float) -> float:
    return struct.unpack(">e", struct.pack(">e", x))[0]


def typical_records(t: float = 21.53, h: float = 48.5, p: int = 101325, level: float = 0.412, dist: float = 1.588,
                    batt: float = 3.71) -> list[dict[Any, Any]]:
    # The typical sewer node of SPEC.md section 3: BME280, ultrasonic level, battery.
    # Quantised as the firmware does: t, l, d binary32; h, b binary16; p integer pascals.
    R = senml.record
    return [R("t", f32(t)), R("h", f16(h)), R("p", p), R("l", f32(level)), R("d", f32(dist)), R("b", f16(batt))]


# ---------------------------------------------------------------- JSON form of decoded messages


def jsonable(obj: object) -> Any:
    # decode() output -> JSON: integer map keys become decimal strings (SPEC.md section 11)
    if isinstance(obj, dict):
        return {str(k) if isinstance(k, int) else k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(x) for x in obj]
    if isinstance(obj, bytes):
        return obj.hex()  # a signed command inside a relayed one
    return obj


def hexs(b: bytes | bytearray) -> str:
    return bytes(b).hex()


# ---------------------------------------------------------------- valid vectors


def message_vector(name: str, node: str, key: bytes, frame: bytes, **extra: Any) -> dict[str, Any]:
    keys = {node: key}
    m = message.decode(frame, keys.get)
    _, _, payload, _ = cose.parse(frame)
    v = {"name": name, "valid": True, "node": node, "key": hexs(key), "frame": hexs(frame),
         "size": len(frame), "payload": hexs(payload), "decoded": jsonable(m), "serial": hexs(cobs.encode(frame))}
    if m["type"] == "data":
        v["senml_json"] = senml.to_json(m["records"], base_name=node + ":", base_time=m["time"])
    v.update(extra)
    return v


def data_vectors() -> list[dict[str, Any]]:
    out = []
    key = key_of("sew-07")
    recs = typical_records()
    frame = message.encode_data(key, "sew-07", 3, 1234, 3600123, recs)
    json_size = len(json.dumps(senml.to_json(recs, base_name="sew-07:"), separators=(",", ":")))
    out.append(message_vector("typical 6-reading frame (sewer node: BME280, level, battery)", "sew-07", key, frame,
                              senml_json_size=json_size))

    recs: list[dict[int, Any]] = [
        senml.record("t", f32(8.25)),
        senml.record("l", f32(1.874)),
        senml.record("i", f32(0.01264)),
        senml.record("w", f32(12.5), unit="Cel"),  # unregistered name: the unit is sent
        senml.record("pump", True),
        senml.record("state", "ok"),
    ]
    recs[1][senml.T] = -30  # sampled 30 s before the frame's time
    frame = message.encode_data(
        key, "sew-07", 4, 0, 1520, recs, time_s=1767225600,
        quality={1: [10, 3, message.Q_DEGRADED], 2: [10, 0, message.Q_RANGE]},
        flags=message.F_STORM | message.F_ALARM,
        info={message.I_FW: "1.0.0", message.I_RESET: "power-on", message.I_BOARD: "esp32", message.I_INTERVAL: 300},
        cmd_result=[17, 0])
    out.append(message_vector("first frame after boot: time, quality, flags, info, cmd_result, unit, vb, vs, t",
                              "sew-07", key, frame))

    air = key_of("air-01", 16)
    frame = message.encode_data(air, "air-01", 0, 0, 0, [senml.record("b", f16(3.3))])
    out.append(message_vector("minimal: one record, 16-byte key", "air-01", air, frame))

    node = "basin-north-east-" + "0" * 14 + "1"  # 32 characters, the longest node id
    big = key_of(node, 24)  # pycose takes 16, 24 or 32-byte keys only; longer ones are tested in tests/protocol
    recs = [senml.record("x%02d" % i, f32(-12.5 - i)) for i in range(31)]
    recs.append(senml.record("abcdefghijklmnopqrstuvwx", -40))  # 24-character name, negative integer
    frame = message.encode_data(big, node, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, recs,
                                flags=message.F_BACKLOG)
    out.append(message_vector("limits: 32 records, 32-character kid, 24-byte key, largest counters", node, big, frame))

    # a shaft node with a tipping-bucket gauge: the rain counted since it started (registered
    # name "rain", its unit m implied: 61 tips of 0.2 mm)
    key = key_of("sew-09")
    recs = [senml.record("l", f32(0.733)), senml.record("rain", f32(61 * 0.2 / 1000)), senml.record("b", f16(3.69))]
    frame = message.encode_data(key, "sew-09", 2, 57, 1800250, recs)
    out.append(message_vector("rain gauge node: level and the rain counted since it started", "sew-09", key, frame))
    return out


def ack_vectors() -> list[dict[str, Any]]:
    key = key_of("sew-07")
    return [
        message_vector("ACK without cum", "sew-07", key, message.encode_ack(key, "sew-07", 3, 1234)),
        message_vector("ACK with cum", "sew-07", key, message.encode_ack(key, "sew-07", 3, 1240, cum=1238)),
    ]


def cmd_vectors() -> list[dict[str, Any]]:
    key = key_of("sew-07")
    thresholds = {"alarm_m": f16(1.5), "storm_m": f16(1.25), "rise_mm_min": 20}  # canonical key order
    signed_interval = command.sign(command_key_of("sew-07"), "sew-07", 3, 1767225600, "interval", 60)
    return [
        message_vector("command interval", "sew-07", key, message.encode_cmd(key, "sew-07", 3, 18, "interval", 60)),
        message_vector("command thresholds", "sew-07", key,
                       message.encode_cmd(key, "sew-07", 3, 19, "thresholds", thresholds)),
        message_vector("command reboot", "sew-07", key, message.encode_cmd(key, "sew-07", 3, 20, "reboot")),
        message_vector("command time", "sew-07", key,
                       message.encode_cmd(key, "sew-07", 3, 21, "time", 1767225600)),
        message_vector("relayed signed command (SPEC 6.7): interval 60 for boot 3, counter 1767225600", "sew-07",
                       key, message.encode_signed(key, "sew-07", 3, 1767225600, signed_interval)),
    ]


def command_key_of(node: str) -> bytes:
    # the operator's command key of a vector node: another fixed key, never the node's key
    return key_of("command " + node)


def signed_vectors() -> list[dict[str, Any]]:
    # SPEC.md 6.7: signed commands and the node's verdict on each, for a node "sew-07" in
    # boot 3 that last applied counter 1767225600, with a shaft 3000 mm deep, its clock at
    # 1767229200 and a time step limit of 3600 s
    node, ck, state = signed_state()
    c = 1767225601
    th = {"alarm_m": f16(2.5), "storm_m": f16(1.5), "rise_mm_min": 30}

    def sign(counter: int = c, op: str = "interval", arg: Any = 60, key: bytes = ck, to: str = node,
             boot: int = 3) -> bytes:
        return command.sign(key, to, boot, counter, op, arg)

    prot = cose.protected_header(node.encode())
    wrong_type = cbor.dumps({0: 3, 1: 3, 11: c, 12: "interval", 13: 60})
    cases = [
        ("interval 60", sign(), True),
        ("thresholds alarm 2.5 m, storm 1.5 m, rise 30 mm/min", sign(op="thresholds", arg=th), True),
        ("reboot", sign(op="reboot", arg=None), True),
        ("time: 30 minutes ahead", sign(op="time", arg=1767231000), True),
        ("the last command applied again (a resend or a replay)", sign(counter=state["last"]), True),
        ("an older counter", sign(counter=state["last"] - 5), True),
        ("signed for boot 2", sign(boot=2), True),
        ("signed with the node's uplink key (what a gateway can make)", sign(key=key_of(node)), False),
        ("signed for another node with its command key", sign(to="sew-08", key=command_key_of("sew-08")), False),
        ("interval 86401", sign(arg=86401), True),
        ("interval as text", sign(arg="60"), True),
        ("unknown op", sign(op="selfdestruct", arg=None), True),
        ("alarm 3.5 m in a 3 m shaft", sign(op="thresholds", arg={"alarm_m": f16(3.5)}), True),
        ("negative storm level", sign(op="thresholds", arg={"storm_m": -1}), True),
        ("time: 20 hours ahead", sign(op="time", arg=1767229200 + 72000), True),
        ("payload of type 3, not 6", signed(ck, prot, wrong_type), True),
        ("truncated", sign()[:-3], False),
    ]
    out = []
    for name, token, mac_ok in cases:
        out.append(signed_vector(name, node, ck, state, token, mac_ok))
    assert {v["result"] for v in out} == set(range(len(command.RESULTS))) - {command.UNSIGNED, command.NO_KEY}
    return out


def signed_state() -> tuple[str, bytes, dict[str, Any]]:
    node = "sew-07"
    return node, command_key_of(node), {"node": node, "boot": 3, "last": 1767225600, "depth_mm": 3000,
                                        "now_s": 1767229200, "step_s": 3600}


def signed_vector(name: str, node: str, ck: bytes, state: dict[str, Any], token: bytes, mac_ok: bool
                  ) -> dict[str, Any]:
    code, f = command.decide(token, node, ck, state["boot"], state["last"], None, state["depth_mm"],
                             state["now_s"], state["step_s"])
    try:
        payload = cose.parse(token)[2].hex()
    except FrameError:
        payload = None
    return {"name": name, "node": node, "command_key": hexs(ck), "token": hexs(token), "size": len(token),
            "payload": payload, "fields": f, "state": state, "result": code, "result_name": command.RESULTS[code],
            "mac_ok": mac_ok}


def compact_signed_vectors() -> list[dict[str, Any]]:
    # SPEC.md 13.6: the commands of signed_vectors in the compact form for LoRa (the same node
    # state), each with its packet on the air ("air", "air_size") and "encoded": whether
    # command.sign_compact makes the token (the others are built by hand, as a forger or a broken
    # operator tool would). A file of its own: a device heap loads one file at a time.
    node, ck, state = signed_state()
    c = state["last"] + 1
    prot = cose.protected_header(node.encode())

    def sign(counter: int = c, op: str = "interval", arg: Any = 60, key: bytes = ck, to: str = node,
             boot: int = 3) -> bytes:
        return command.sign_compact(key, to, boot, counter, op, arg)

    def raw(p: list[Any]) -> bytes:
        return signed(ck, prot, cbor.dumps(p))

    u32 = 0xFFFFFFFF
    cases = [
        ("compact interval 60", sign(), True, True),
        ("compact thresholds alarm 2.5 m, storm 1.5 m, rise 30 mm/min",
         sign(op="thresholds", arg={"alarm_m": 2.5, "storm_m": 1.5, "rise_mm_min": 30}), True, True),
        ("compact reboot", sign(op="reboot", arg=None), True, True),
        ("compact time: 30 minutes ahead", sign(op="time", arg=1767231000), True, True),
        ("compact largest: thresholds at their bounds, largest boot and counter",
         command.sign_compact(ck, node, u32, u32, "thresholds", {"alarm_m": 100, "storm_m": 100,
                                                                  "rise_mm_min": 100000}), True, True),
        ("compact: an older counter", sign(counter=state["last"] - 5), True, True),
        ("compact: the last command applied again", sign(counter=state["last"]), True, True),
        ("compact: signed for boot 2", sign(boot=2), True, True),
        ("compact: signed with the node's uplink key (what a gateway can make)", sign(key=key_of(node)), False, True),
        ("compact: signed for another node with its command key",
         sign(to="sew-08", key=command_key_of("sew-08")), False, True),
        ("compact: interval 86401", sign(arg=86401), True, True),
        ("compact: alarm 3.5 m in a 3 m shaft", sign(op="thresholds", arg={"alarm_m": 3.5}), True, True),
        ("compact: time 20 hours ahead", sign(op="time", arg=1767229200 + 72000), True, True),
        ("compact: unknown op code 9", raw([6, 3, c, 9]), True, False),
        ("compact: threshold key 4", raw([6, 3, c, 2, {4: 100}]), True, False),
        ("compact: threshold in metres as a float", raw([6, 3, c, 2, {1: 2.5}]), True, False),
        ("compact: reboot with an argument", raw([6, 3, c, 3, 1]), True, False),
        ("compact: op as text", raw([6, 3, c, "interval", 60]), True, False),
        ("compact: counter 0", raw([6, 3, 0, 1, 60]), True, False),
        ("compact: one element too many", raw([6, 3, c, 1, 60, 0]), True, False),
    ]
    out = []
    for name, token, mac_ok, encoded in cases:
        v = signed_vector(name, node, ck, state, token, mac_ok)
        v["profile"] = "compact"
        v["encoded"] = encoded
        air = compact.to_air(token)
        assert air[0] == compact.PROFILE and compact.from_air(air, cose.parse(token)[0].decode()) == token
        v["air"] = hexs(air)
        v["air_size"] = len(air)
        out.append(v)
    assert max(v["air_size"] for v in out) <= 51  # LoRaWAN EU868 DR0-2
    assert {v["result"] for v in out} == set(range(len(command.RESULTS))) - {command.UNSIGNED, command.NO_KEY}
    return out


def boot_vectors() -> list[dict[str, Any]]:
    # SPEC.md 6.5: the gateway refused data frame (boot 1, seq 0); the node moves to boot 8
    # and sends that frame again renumbered (boot 8, seq 0), every other field the same
    key = key_of("sew-07")
    old = message.encode_data(key, "sew-07", 1, 0, 5000, typical_records())
    # SPEC.md 4.1 and 6.6: a node whose key was rotated to version 2 names it in the protected
    # header; the gateway, holding version 2 only, answers a frame MACed under version 1 with
    # "retired", MACed with the version 2 key
    rotated = key_of("sew-07 key version 2")
    old_key = key_of("sew-07")
    return [
        message_vector("boot behind: lowest boot accepted 8", "sew-07", key,
                       message.encode_boot(key, "sew-07", 1, 0, 8)),
        message_vector("a data frame of boot 1 renumbered to boot 8 seq 0", "sew-07", key,
                       message.renumber(key, "sew-07", old, 8, 0), renumbered_from=hexs(old)),
        message_vector("a data frame MACed with key version 2 (kid context h'02')", "sew-07", rotated,
                       message.encode_data(rotated, "sew-07", 9, 0, 1200, typical_records(), key_version=2),
                       key_version=2),
        message_vector("retired: frame boot 3 seq 1234 was MACed with a key version no longer held; now 2",
                       "sew-07", rotated, keyring.encode_retired(rotated, "sew-07", 3, 1234, 2),
                       retired_frame=hexs(message.encode_data(old_key, "sew-07", 3, 1234, 3600123, typical_records(),
                                                              key_version=1))),
    ]


# ---------------------------------------------------------------- invalid vectors


def bhead(n: int) -> bytes:
    return cbor.head(2, n)


def envelope(protected: bytes, payload: bytes, tag: bytes, *, outer: bytes = b"\xd1\x84",
             unprotected: bytes = b"\xa0", prot_head: bytes | None = None, pay_head: bytes | None = None,
             tag_head: bytes = b"\x48", trailer: bytes = b"") -> bytes:
    # COSE_Mac0 bytes assembled by hand, so single faults can be placed anywhere
    return b"".join((outer, prot_head or bhead(len(protected)), protected, unprotected,
                     pay_head or bhead(len(payload)), payload, tag_head, tag, trailer))


def signed(key: bytes, protected: bytes, payload: bytes, **kw: Any) -> bytes:
    return envelope(protected, payload, cose.mac0_tag(key, protected, payload), **kw)


def refused(name: str, frame: bytes, node: str | None, key: bytes, reason: str) -> None:
    # an invalid vector must be refused with its reason by a receiver that knows node's key
    try:
        message.decode(frame, {node: key}.get)
    except FrameError as e:
        assert e.reason == reason, (name, e.reason, reason, str(e))
    else:
        raise AssertionError("invalid vector %r decodes" % name)


def invalid_vectors() -> list[dict[str, Any]]:
    node = "sew-07"
    key = key_of(node)
    other = key_of("sew-08")
    prot = cose.protected_header(node.encode())
    pay = message.data_payload(3, 1234, 3600123, typical_records())
    good = message.encode_data(key, node, 3, 1234, 3600123, typical_records())
    tag = cose.mac0_tag(key, prot, pay)

    def payload_map(**fields: Any) -> dict[Any, Any]:
        # a data payload map with single fields replaced (None removes one)
        p = {0: 1, 1: 3, 2: 1234, 3: 3600123, 5: typical_records()}
        for k, v in fields.items():
            k = int(k[1:])
            if v is None:
                p.pop(k)
            else:
                p[k] = v
        return dict(sorted(p.items()))

    def pm(**fields: Any) -> bytes:
        return signed(key, prot, cbor.dumps(payload_map(**fields)))

    flipped_tag = bytearray(good)
    flipped_tag[-1] ^= 0x01
    flipped_payload = bytearray(good)
    flipped_payload[len(good) - 20] ^= 0x10
    indefinite_records = bytearray(pay)
    at = pay.index(b"\x05\x86") + 1
    indefinite_records[at : at + 1] = b"\x9f"
    indefinite_records += b"\xff"
    overlong_seq = pay.replace(b"\x02\x19\x04\xd2", b"\x02\x1a\x00\x00\x04\xd2")
    dup_key = b"\xa6" + pay[1:] + b"\x02\x00"
    def plus(extra: bytes) -> bytes:
        # the typical payload with one more pair appended, as raw CBOR (the encoder refuses these)
        return bytes([pay[0] + 1]) + pay[1:] + extra

    deep = plus(b"\x08\xa1\x01" + b"\x81" * 7 + b"\x00")  # payload, info, 7 arrays: 9 levels (limit 8)
    big = message.data_payload(3, 1, 1, typical_records(), info={1: "x" * 440})
    tagged_inner = plus(b"\x08\xd1\xa0")  # 8: 17({}): tag 17 inside the payload
    kid_slash = cose.protected_header(b"sew/07")
    kid_bad_utf8 = cose.protected_header(b"sew-\xff")
    kid_not_senml = cose.protected_header(b"sew@07")

    # (name, frame, reason, mac_ok): mac_ok is true when a lenient COSE verifier (pycose) accepts the
    # message and its MAC under `key`: the vector fails only by the stricter citynode rule its reason names.
    cases = [
        ("bad tag: 18 (COSE_Sign1) instead of 17", envelope(prot, pay, tag, outer=b"\xd2\x84"), "tag", False),
        ("untagged COSE_Mac0 array", envelope(prot, pay, tag, outer=b"\x84"), "tag", False),
        ("not CBOR COSE at all: a bare map", bytes.fromhex("a10102"), "tag", False),
        ("truncated: last byte missing", good[:-1], "truncated", False),
        ("truncated: half a frame", good[: len(good) // 2], "truncated", False),
        ("empty datagram", b"", "truncated", False),
        ("wrong kid: MAC made with another node's key", signed(other, prot, pay), "mac", False),
        ("unknown kid: a node the receiver has no key for",
         message.encode_data(other, "sew-08", 3, 1234, 3600123, typical_records()), "unknown", False),
        ("bad MAC: last tag bit flipped", bytes(flipped_tag), "mac", False),
        ("bad MAC: payload bit flipped", bytes(flipped_payload), "mac", False),
        ("MAC tag of 7 bytes", envelope(prot, pay, tag[:7], tag_head=b"\x47"), "cose", False),
        ("trailing byte after the COSE_Mac0", good + b"\x00", "trailing", True),
        ("overlong head: payload length as 2 bytes",
         signed(key, prot, pay, pay_head=b"\x59" + struct.pack(">H", len(pay))), "overlong", True),
        ("overlong head: array(4) as 98 04", signed(key, prot, pay, outer=b"\xd1\x98\x04"), "overlong", True),
        ("overlong head inside the MACed payload: seq as 4 bytes", signed(key, prot, overlong_seq), "overlong", True),
        ("indefinite length: COSE array 9f..ff", signed(key, prot, pay, outer=b"\xd1\x9f", trailer=b"\xff"),
         "type", True),
        ("indefinite length inside the payload: records 9f..ff", signed(key, prot, bytes(indefinite_records)),
         "type", True),
        ("unknown message type 9", pm(k0=9), "version", True),
        ("oversize: 513..", signed(key, prot, big), "oversize", True),
        ("alg not 4: 5 (HMAC 256/256) with an 8-byte tag",
         signed(key, cbor.dumps({1: 5, 4: b"sew-07"}), pay), "alg", False),
        ("alg missing", signed(key, cbor.dumps({4: b"sew-07"}), pay), "alg", False),
        ("non-empty unprotected header: kid there too", signed(key, prot, pay, unprotected=b"\xa1\x04\x46sew-07"),
         "cose", True),
        ("kid with '/': not a node id", signed(key, kid_slash, pay), "kid", True),
        ("kid not UTF-8", signed(key, kid_bad_utf8, pay), "kid", True),
        ("kid 'sew@07': printable, but not a SenML name", signed(key, kid_not_senml, pay), "kid", True),
        ("key version with a leading zero byte (label 10 = h'0002')",
         signed(key, cbor.dumps({1: 4, 4: b"sew-07", 10: b"\x00\x02"}), pay), "kid", True),
        ("key version of 5 bytes", signed(key, cbor.dumps({1: 4, 4: b"sew-07", 10: b"\x01" * 5}), pay), "kid", True),
        ("key version as an integer, not a byte string", signed(key, cbor.dumps({1: 4, 4: b"sew-07", 10: 2}), pay),
         "kid", False),  # pycose knows label 10 (RFC 8613 kid context) as a byte string
        ("duplicate key in the payload (seq twice)", signed(key, prot, dup_key), "dupkey", True),
        ("nesting deeper than 8 levels in info", signed(key, prot, deep), "depth", True),
        ("tag 17 inside the payload", signed(key, prot, tagged_inner), "tag", True),
        ("name not UTF-8", signed(key, prot, pay.replace(b"\xa2\x00\x61\x74", b"\xa2\x00\x61\xff")), "utf8", True),
        ("simple value undefined (f7) as seq", signed(key, prot, pay.replace(b"\x02\x19\x04\xd2", b"\x02\xf7")),
         "type", True),
        ("seq above 2^32-1", pm(k2=1 << 32), "payload", True),
        ("records missing", pm(k5=None), "payload", True),
        ("record without a value", pm(k5=[{0: "t"}]), "payload", True),
        ("record with two values", pm(k5=[{0: "t", 2: 1, 3: "x"}]), "payload", True),
        ("NaN reading", pm(k5=[{0: "t", 2: float("nan")}]), "payload", True),
        ("base name label -2 in a record", pm(k5=[{-2: "x:", 0: "t", 2: 1}]), "payload", True),
        ("text label 'n' in a record: a SenML label's name as an extension", pm(k5=[{0: "t", 2: 1, "n": "h"}]),
         "payload", True),
        ("quality for a record that does not exist", pm(k6={6: [1, 0, 0]}), "payload", True),
        ("cmd with an unknown op", signed(key, prot, cbor.dumps({0: 3, 1: 3, 11: 1, 12: "selfdestruct"})),
         "payload", True),
        ("payload is an array, not a map", signed(key, prot, cbor.dumps([1, 3, 1234])), "payload", True),
    ]
    out = []
    for name, frame, reason, mac_ok in cases:
        if name.startswith("oversize"):
            name = "oversize: %d-byte message (limit %d)" % (len(frame), cose.MAX_MESSAGE)
        refused(name, frame, node, key, reason)
        out.append({"name": name, "valid": False, "node": node, "key": hexs(key), "frame": hexs(frame),
                    "reason": reason, "mac_ok": mac_ok})
    return out


# ---------------------------------------------------------------- compact LoRa profile (SPEC.md 13)


def air_vector(name: str, node: str, key: bytes, frame: bytes, **extra: Any) -> dict[str, Any]:
    # a message vector plus its LoRa form: "air" is what goes on the radio, "frame" the full
    # COSE_Mac0 both ends rebuild from it (stored, forwarded, checked by pycose)
    v = message_vector(name, node, key, frame, **extra)
    air = compact.to_air(frame)
    assert compact.from_air(air, node) == frame
    v["profile"] = "compact" if air != frame else "full"
    v["air"] = hexs(air)
    v["air_size"] = len(air)
    return v


def compact_vectors() -> list[dict[str, Any]]:
    node = "sew-07"
    key = key_of(node)
    recs = typical_records()
    out = [
        air_vector("compact typical: level + climate (t, h, p, l, d, b)", node, key,
                   compact.encode_data(key, node, 3, 1234, 3600123, recs)),
        air_vector("compact typical in storm mode with an alarm (flags)", node, key,
                   compact.encode_data(key, node, 3, 1235, 3660123, recs,
                                       flags=message.F_STORM | message.F_ALARM)),
        air_vector("compact: only the level changed (unchanged readings left out)", node, key,
                   compact.encode_data(key, node, 3, 1236, 3720123, [senml.record("l", f32(0.415))])),
        air_vector("compact smallest: one reading, first frame counters", node, key,
                   compact.encode_data(key, node, 0, 0, 0, [senml.record("l", 0.0)])),
        air_vector("compact first frame after boot: time, quality, flags, info, cmd_result, loop current", node,
                   key, compact.encode_data(
                       key, node, 4, 0, 1520, [senml.record("t", f32(8.25)), senml.record("l", f32(1.874)),
                                               senml.record("i", f32(0.01264))],
                       time_s=1767225600, quality={1: [10, 3, message.Q_DEGRADED]},
                       flags=message.F_STORM,
                       info={message.I_FW: "1.0.0", message.I_RESET: "power-on", message.I_BOARD: "rp2",
                             message.I_INTERVAL: 300, message.I_LEVEL_MM: [1500, 1250]},
                       cmd_result=[17, 0])),
    ]
    every = [senml.record("t", f32(-40.0)), senml.record("h", 100.0), senml.record("p", 110000),
             senml.record("l", f32(-2.5)), senml.record("d", f32(10.0)), senml.record("b", 4.2),
             senml.record("i", f32(0.02))]
    out.append(air_vector("compact largest without info: every reading, time, flags, cmd_result, largest counters",
                          node, key, compact.encode_data(
                              key, node, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, every, time_s=0xFFFFFFFF,
                              flags=message.F_STORM | message.F_ALARM | message.F_BACKLOG,
                              cmd_result=[0xFFFFFFFF, 2])))
    rotated = key_of("sew-07 rotated")
    out.append(air_vector("compact typical with a rotated key: key version 2 (SPEC 4.5)", node, rotated,
                          compact.encode_data(rotated, node, 9, 0, 1200, recs, key_version=2), key_version=2))
    out.append(air_vector("compact ACK with cum", node, key, compact.encode_ack(key, node, 3, 1240, cum=1238)))
    out.append(air_vector("compact ACK without cum", node, key, compact.encode_ack(key, node, 3, 1234)))
    out.append(air_vector("full message on the air: a command", node, key,
                          message.encode_cmd(key, node, 3, 18, "interval", 300)))
    # a shaft with a tipping-bucket gauge (the readings of data.json's rain gauge vector): rain
    # has mask bit 12, which a type 1 frame cannot carry, so the frame is type 8 (SPEC 13.2)
    rain = [senml.record("l", f32(0.733)), senml.record("rain", f32(61 * 0.2 / 1000)), senml.record("b", f16(3.69))]
    out.append(air_vector("compact rain gauge: level, rain since start, battery (type 8)", node, key,
                          compact.encode_data(key, node, 3, 1237, 3780123, rain)))
    good = compact.to_air(out[0]["frame"] and bytes.fromhex(out[0]["frame"]))
    flipped = bytearray(good)
    flipped[-1] ^= 1
    prot = cose.protected_header(node.encode())

    def air_of(payload: bytes, k: bytes = key) -> bytes:
        return b"".join((b"\x01", compact.address(node), payload, cose.mac0_tag(k, prot, payload)))

    typ = cbor.loads(cose.parse(bytes.fromhex(out[0]["frame"]))[2])
    assert isinstance(typ, list)  # a compact payload is a CBOR array (SPEC 13.2)
    # (name, air, reason, rebuilt frame's MAC verifies): no "frame" when none can be rebuilt
    cases = [
        ("unknown profile byte 0x06", b"\x06" + good[1:], "version", None),
        ("key version with a leading zero byte", b"\x02\x00" + good[1:], "kid", None),
        ("truncated: shorter than profile, address, one byte and a tag", good[:13], "truncated", None),
        ("oversize: 256 bytes", b"\x01" + bytes(255), "oversize", None),
        ("address of another node", b"\x01" + compact.address("sew-08") + good[5:], "unknown", None),
        ("bad MAC: last tag bit flipped", bytes(flipped), "mac", False),
        ("MAC made with another node's key", air_of(cbor.dumps(typ), key_of("sew-08")), "mac", False),
        ("mask names 6 values, 5 follow", air_of(cbor.dumps(typ[:-1])), "payload", True),
        ("unknown mask bit 12", air_of(cbor.dumps(typ[:4] + [typ[4] | 1 << 12] + typ[5:] + [0])), "payload", True),
        ("reading as a float, not an integer", air_of(cbor.dumps(typ[:5] + [21.5] + typ[6:])), "payload", True),
        ("humidity negative", air_of(cbor.dumps(typ[:6] + [-1] + typ[7:])), "payload", True),
        ("no reading", air_of(cbor.dumps([1, 3, 1234, 3600, 0])), "payload", True),
        ("unknown compact message type 7", air_of(cbor.dumps([7, 3, 1234])), "version", True),
        ("type 8 without a reading of bit 12 (a type 1 frame in disguise)",
         air_of(cbor.dumps([8] + typ[1:])), "payload", True),
        ("type 8: unknown mask bit 13", air_of(cbor.dumps([8] + typ[1:4] + [typ[4] | 3 << 12] + typ[5:] + [1, 0])),
         "payload", True),
    ]
    for name, air, reason, mac_ok in cases:
        v = {"name": name, "valid": False, "node": node, "key": hexs(key), "air": hexs(air), "reason": reason}
        try:
            frame = compact.from_air(air, node)
        except FrameError as e:
            assert e.reason == reason and mac_ok is None, (name, e)
        else:
            assert mac_ok is not None, name
            refused(name, frame, node, key, reason)
            v["frame"] = hexs(frame)
            v["mac_ok"] = mac_ok
        out.append(v)
    return out


# ---------------------------------------------------------------- serial streams


def frame_of_size(size: int) -> bytes:
    # a valid data frame of exactly `size` bytes (an info text sized to fit)
    key = key_of("sew-07")
    for n in range(size):
        f = message.encode_data(key, "sew-07", 3, 7, 7, typical_records(), info={1: "y" * n})
        if len(f) == size:
            return f
    raise AssertionError("no frame of %d bytes" % size)


def serial_vectors() -> list[dict[str, Any]]:
    key = key_of("sew-07")
    f1 = message.encode_data(key, "sew-07", 3, 1, 1000, typical_records())
    f2 = message.encode_data(key, "sew-07", 3, 2, 61000, typical_records(t=21.6))
    fmax = frame_of_size(cose.MAX_MESSAGE)
    e1, e2 = cobs.encode(f1), cobs.encode(f2)
    bad_crc = bytearray(e1)
    bad_crc[len(e1) // 2] = 0xFF if bad_crc[len(e1) // 2] != 0xFF else 0xFE
    # (name, stream, the kinds of events it must give)
    streams = [
        ("two frames with console text between", b"boot: sew-07 fw 1.0.0\r\n" + e1 + b"sampling\n" + e2,
         ["text", "frame", "text", "frame"]),
        ("noise before a frame: resync at the next delimiter", bytes(range(1, 40)) + b"\x00\x01\x02\x03" + e1,
         ["noise", "noise", "frame"]),
        ("CRC error, then a good frame", bytes(bad_crc) + e2, ["noise crc", "frame"]),
        ("COBS error (code byte past the end), then a good frame", b"\x00\x05\x01\x02" + e1,
         ["noise cobs", "frame"]),
        ("short chunk, then a good frame", b"\x00\x02\x05" + e1, ["noise short", "frame"]),
        ("oversize chunk dropped up to the next delimiter", b"\x00" + bytes([0x01, 0xFE]) * 300 + e2,
         ["noise oversize", "frame"]),
        ("largest message: 512 bytes", cobs.encode(fmax), ["frame"]),
        ("long console line passed on as text", b"x" * 600 + e1, ["text", "text", "frame"]),
    ]
    out = []
    for name, stream, kinds in streams:
        d = cobs.Deframer()
        events = [[k, v.hex() if isinstance(v, bytes | bytearray) else v] for k, v in d.feed(stream)]
        got = [k + " " + v if k == "noise" and " " in kinds[i] else k for i, (k, v) in enumerate(events)] \
            if len(events) == len(kinds) else events
        assert got == kinds, (name, events)
        out.append({"name": name, "stream": hexs(stream), "events": events, "counts": d.counts})
    return out


# ---------------------------------------------------------------- files


def render(vectors: object) -> str:
    return json.dumps(vectors, indent=1, ensure_ascii=False) + "\n"


def build() -> dict[str, Any]:
    return {
        "data.json": data_vectors(),
        "ack.json": ack_vectors(),
        "cmd.json": cmd_vectors(),
        "boot.json": boot_vectors(),
        "signed.json": signed_vectors(),
        "signed_compact.json": compact_signed_vectors(),
        "invalid.json": invalid_vectors(),
        "serial.json": serial_vectors(),
        "compact.json": compact_vectors(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="fail if the checked-in vectors differ")
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    args = ap.parse_args(argv)
    stale = []
    for fname, vectors in build().items():
        path = args.out / fname
        text = render(vectors)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(fname)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print("%s: %d vectors" % (path, len(vectors)))
    if stale:
        print("stale vectors: %s (run python tools/make_vectors.py)" % ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
