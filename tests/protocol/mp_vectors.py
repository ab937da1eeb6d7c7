# The protocol tests on the real MicroPython VM (run by tests/protocol/test_micropython.py).
# Every golden vector: valid ones decode and verify (portable HMAC: MicroPython has no hmac
# module) to their "decoded" content and re-encode byte for byte,
# invalid ones are refused with their reason; serial streams deframe to their events; CRC and
# COBS agree with the vectors; mutated vectors raise nothing but FrameError. Then the heap cost
# of encoding and MACing one typical frame. `--bench [N]` prints speed and heap figures only.
# Prints "KEY value" lines the pytest side reads; "FAIL ..." lines on mismatches.
import gc
import json
import sys
import time

from protocol import cobs, cose, message, senml
from protocol.cbor import FrameError
from tests.protocol import vecs

failures = 0


def fail(what):
    global failures
    failures += 1
    print("FAIL", what)


def check_message(v):
    frame = vecs.unhex(v["frame"])
    try:
        m = message.decode(frame, vecs.key_for(v))
    except FrameError as e:
        if v["valid"]:
            fail("%s: %s" % (v["name"], e))
        elif e.reason != v["reason"]:
            fail("%s: reason %s, expected %s" % (v["name"], e.reason, v["reason"]))
        return
    if not v["valid"]:
        fail("%s: decoded, expected reason %s" % (v["name"], v["reason"]))
        return
    if vecs.to_json(m) != v["decoded"]:
        fail("%s: decoded %r" % (v["name"], m))
    if vecs.reencode(v) != frame:
        fail("%s: re-encoded bytes differ" % v["name"])
    serial = cobs.encode(frame)
    if serial != vecs.unhex(v["serial"]):
        fail("%s: serial encoding differs" % v["name"])
    if cobs.Deframer().feed(serial) != [("frame", frame)]:
        fail("%s: deframing its serial encoding" % v["name"])


def check_stream(v):
    d = cobs.Deframer()
    events = []
    for kind, value in d.feed(vecs.unhex(v["stream"])):
        events.append([kind, value.hex() if kind != "noise" else value])
    if events != v["events"] or d.counts != v["counts"]:
        fail("%s: events %r counts %r" % (v["name"], events, d.counts))


class Lcg:
    # a tiny deterministic random source (the same sequence on every run)
    def __init__(self, seed):
        self.x = seed

    def next(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return self.x % n


def mutate(rnd, data):
    data = bytearray(data)
    for _ in range(1 + rnd.next(3)):
        op = rnd.next(4)
        at = rnd.next(len(data)) if data else 0
        if op == 0 and data:
            data[at] ^= 1 << rnd.next(8)
        elif op == 1:
            data = data[:at]
        elif op == 2:
            data = data[:at] + bytes([rnd.next(256) for _ in range(1 + rnd.next(4))]) + data[at:]
        elif data:
            data[at] = (0x00, 0x18, 0x1B, 0x1F, 0x9F, 0xBF, 0xD1, 0xF7, 0xFF)[rnd.next(9)]
    return bytes(data)


def only_frame_errors(what, data, key_for):
    from protocol import cbor

    for fn in (cbor.loads, cose.parse, message.parse_payload, lambda d: message.decode(d, key_for)):
        try:
            fn(data)
        except FrameError:
            pass
        except Exception as e:  # noqa: BLE001 - exactly what this test looks for
            fail("%s %s: %r raised %r" % (what, data.hex(), fn, e))
    try:
        cobs.Deframer().feed(data)
        cobs.Deframer().feed(cobs.encode(data[:512]) + data)
    except Exception as e:  # noqa: BLE001
        fail("%s: deframer raised %r" % (what, e))


def each_file(fn, *args):
    # fn(vectors, *args) for each vector file in turn, one call per file, so that a file's
    # vectors are garbage once fn returns: MicroPython's GC is conservative, and a stale slot in
    # a frame that is still running (a generator's, a finished loop's) would keep them alive.
    for name in vecs.files():
        fn(vecs.load_file(name), *args)
        gc.collect()


def check_file(vectors, counts):
    for v in vectors:
        if "frame" in v:
            check_message(v)
            counts["valid" if v["valid"] else "invalid"] += 1
        elif "token" in v:
            from tests.protocol.signed_vecs import check_signed

            bad = check_signed(v)
            if bad:
                fail("%s: %s" % (v["name"], bad))
            counts["signed"] += 1
        else:
            check_stream(v)
            counts["streams"] += 1


def fuzz_cases(name):
    # the valid vectors of one file as bytes only (the parsed file goes when this returns)
    return [(vecs.unhex(v["frame"]), vecs.unhex(v["key"]), vecs.unhex(v["payload"]), v["node"].encode(),
             vecs.key_for(v)) for v in vecs.load_file(name) if v.get("valid")]


def fuzz_file(name, rnd, rounds, count):
    # Mutated vectors (and mutated payloads MACed again, to reach the checks behind the MAC)
    # raise nothing but FrameError on this VM either. Only the bytes under test are kept: the
    # parsed vector file (tens of KB of dicts, which no device holds) is dropped first.
    cases = fuzz_cases(name)
    gc.collect()
    for frame, key, payload, kid, key_for in cases:
        for _ in range(rounds):
            only_frame_errors("mutated frame", mutate(rnd, frame), key_for)
            try:
                signed = cose.sign(key, kid, mutate(rnd, payload))
            except FrameError:
                continue
            only_frame_errors("mutated payload", signed, key_for)
            count[0] += 2


def check_crc_hmac():
    if cobs.crc16(b"123456789") != 0x29B1 or cobs.crc16_portable(b"123456789") != 0x29B1:
        fail("CRC-16/CCITT-FALSE check value")
    # RFC 4231 test case 2: key "Jefe"
    mac = cose.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    if mac.hex() != "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843":
        fail("HMAC-SHA256 RFC 4231 case 2")
    # RFC 4231 test case 6: a 131-byte key (hashed first)
    mac = cose.hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")
    if mac.hex() != "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54":
        fail("HMAC-SHA256 RFC 4231 case 6")
    for n in range(0, 600, 37):
        data = bytes((i * 7 + n) & 0xFF for i in range(n))
        if cobs.cobs_decode(cobs.cobs_encode(data)) != data or cobs.cobs_encode(data).find(b"\x00") >= 0:
            fail("COBS round trip of %d bytes" % n)
    print("crc_hmac_cobs ok")


def typical():
    # the typical frame vector (SPEC.md section 3): (key, records as the firmware quantises them, frame)
    with open(vecs.FOLDER + "/data.json") as fh:
        v = json.load(fh)[0]
    return vecs.unhex(v["key"]), vecs.from_json(v["decoded"])["records"], vecs.unhex(v["frame"])


def heap_cost():
    # Heap bytes allocated while encoding and MACing one typical frame (the GC held off, so
    # nothing is collected in between), and what stays allocated afterwards (the frame).
    key, recs, expected = typical()
    gc.collect()
    message.encode_data(key, "sew-07", 3, 1234, 3600123, recs)  # warm up (first-call allocations)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    frame = message.encode_data(key, "sew-07", 3, 1234, 3600123, recs)
    during = gc.mem_alloc() - before
    gc.enable()
    gc.collect()
    kept = gc.mem_alloc() - before
    if frame != expected:
        fail("typical frame differs from its vector")
    print("frame_bytes", len(frame))
    print("heap_encode_mac", during)
    print("heap_kept", kept)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    recs = [senml.record(r[0], r[2]) for r in recs]
    print("heap_records", gc.mem_alloc() - before)
    gc.enable()


def speed(n):
    key, recs, _ = typical()
    gc.collect()
    t0 = time.ticks_us()
    for i in range(n):
        message.encode_data(key, "sew-07", 3, i, i * 1000, recs)
    dt = time.ticks_diff(time.ticks_us(), t0)
    print("encode_mac_per_s", int(n * 1000000 // dt))
    keys = {"sew-07": key}.get
    frame = message.encode_data(key, "sew-07", 3, 1, 1000, recs)
    t0 = time.ticks_us()
    for _ in range(n):
        message.decode(frame, keys)
    dt = time.ticks_diff(time.ticks_us(), t0)
    print("decode_verify_per_s", int(n * 1000000 // dt))


def main(argv):
    if "--bench" in argv:
        heap_cost()
        speed(int(argv[-1]) if argv[-1].isdigit() else 500)
        return 0
    counts = {"valid": 0, "invalid": 0, "streams": 0, "signed": 0}
    each_file(check_file, counts)
    for k in counts:
        print(k, counts[k])
    check_crc_hmac()
    fuzzed = [0]
    rnd = Lcg(2)
    for name in vecs.files():
        fuzz_file(name, rnd, 100, fuzzed)
        gc.collect()
    print("fuzzed", fuzzed[0])
    heap_cost()
    print("failures", failures)
    return 1 if failures else 0


sys.exit(main(sys.argv))
