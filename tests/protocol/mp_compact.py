# The compact LoRa vectors (protocol/vectors/compact.json, SPEC.md 13) on the real MicroPython
# VM, as a LoRa node meets them: each packet rebuilt into its COSE_Mac0 and verified (portable
# HMAC), decoded to its "decoded" content, built again by the compact encoders byte for byte
# and cut to the same packet; invalid packets refused with their reason. Run by
# tests/protocol/test_compact.py; prints "KEY value" lines and "FAIL ..." on mismatches.
from protocol import compact, message
from protocol.cbor import FrameError
from tests.protocol import vecs

failures = 0
counts = {"valid": 0, "invalid": 0}


def fail(what):
    global failures
    failures += 1
    print("FAIL", what)


def reencode(v):
    d = vecs.from_json(v["decoded"])
    key = vecs.unhex(v["key"])
    if v["profile"] == "full":
        return vecs.reencode(v)
    if d["type"] == "ack":
        return compact.encode_ack(key, d["node"], d["boot"], d["seq"], d["cum"])
    return compact.encode_data(key, d["node"], d["boot"], d["seq"], d["uptime_ms"], d["records"],
                               time_s=d["time"], quality=d["quality"], flags=d["flags"], info=d["info"],
                               cmd_result=d["cmd_result"], key_version=v.get("key_version", 0))


for v in vecs.load_file("compact.json"):
    air = vecs.unhex(v["air"])
    try:
        m = message.decode(compact.from_air(air, v["node"]), vecs.key_for(v))
    except FrameError as e:
        if v["valid"] or e.reason != v["reason"]:
            fail("%s: refused with %s" % (v["name"], e))
        counts["invalid"] += 1
        continue
    if not v["valid"]:
        fail("%s: decoded, expected reason %s" % (v["name"], v["reason"]))
        continue
    counts["valid"] += 1
    if vecs.to_json(m) != v["decoded"]:
        fail("%s: decoded %r" % (v["name"], m))
    frame = reencode(v)
    if frame != vecs.unhex(v["frame"]):
        fail("%s: re-encoded frame differs" % v["name"])
    elif compact.to_air(frame) != air:
        fail("%s: packet differs" % v["name"])

for k in counts:
    print(k, counts[k])
print("failures", failures)
