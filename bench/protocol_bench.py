#!/usr/bin/env python3
# Protocol benchmark (a script, not a test): on the same N typical 6-reading frames from
# several nodes, decode+verify frames/s on CPython for
#   (a) the gateway path: message.decode(frame, keys.get) with the CPython fast readers
#   (b) the general strict path: the same call with the CPython fast readers of protocol/fast.py
#       switched off (cbor.loads + the checks, as on MicroPython, HMAC still from hashlib/hmac)
#   (c) the raw baseline: cbor2.loads(frame), hmac.digest over the MAC structure, compare_digest,
#       cbor2.loads(payload): what decoding and verifying costs with no checks at all
#   (c0) (c) without decoding the payload (the envelope and the MAC only), for reference
# and their ratios measured in this run. Then encode+MAC frames/s and heap bytes per frame on
# MicroPython (the real VM, unix port), and bytes per typical frame against the same
# readings as SenML JSON.
#
#   .venv/bin/python bench/protocol_bench.py            # ~20 s
#   .venv/bin/python bench/protocol_bench.py --frames 50000 --rounds 7
import argparse
import hmac
import json
import pathlib
import re
import sys
import time
from importlib.metadata import version

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cbor2  # noqa: E402

from protocol import cobs, cose, message, senml  # noqa: E402
from tests.support import mpvm  # noqa: E402
from tools.make_vectors import key_of, typical_records  # noqa: E402


def make_frames(n, nodes):
    keys = {f"sew-{i:02d}": key_of(f"sew-{i:02d}") for i in range(nodes)}
    names = sorted(keys)
    frames = []
    for i in range(n):
        node = names[i % nodes]
        recs = typical_records(t=18 + (i % 700) / 100, h=40 + (i % 40), p=100000 + i % 3000,
                               level=0.2 + (i % 500) / 1000, dist=1.8 - (i % 500) / 1000, batt=3.3 + (i % 90) / 100)
        frames.append(message.encode_data(keys[node], node, 3, i // nodes, 1000 * i, recs))
    return keys, frames


def raw_baseline(frames, keys_by_kid):
    loads, digest, same = cbor2.loads, hmac.digest, hmac.compare_digest
    for f in frames:
        prot, _unprot, payload, tag = loads(f).value
        kid = loads(prot)[4]
        mac_input = b"\x84\x64MAC0" + cbor2.dumps(prot) + b"\x40" + cbor2.dumps(payload)
        if not same(digest(keys_by_kid[kid], mac_input, "sha256")[:8], tag):
            raise AssertionError("raw baseline: MAC")
        loads(payload)


def raw_envelope_only(frames, keys_by_kid):
    loads, digest, same = cbor2.loads, hmac.digest, hmac.compare_digest
    for f in frames:
        prot, _unprot, payload, tag = loads(f).value
        mac_input = b"\x84\x64MAC0" + cbor2.dumps(prot) + b"\x40" + cbor2.dumps(payload)
        if not same(digest(keys_by_kid[loads(prot)[4]], mac_input, "sha256")[:8], tag):
            raise AssertionError("raw baseline: MAC")


def gateway_path(frames, keys):
    decode, get = message.decode, keys.get
    for f in frames:
        decode(f, get)


class general_path:  # noqa: N801 - used as a context manager
    # switch the CPython fast readers off: the strict general path MicroPython runs
    def __enter__(self):
        self.saved = message._fast_data, cose._fast_envelope
        message._fast_data = cose._fast_envelope = None

    def __exit__(self, *exc):
        message._fast_data, cose._fast_envelope = self.saved


def general(frames, keys):
    with general_path():
        decode, get = message.decode, keys.get
        for f in frames:
            decode(f, get)


def best_rate(fn, frames, arg, rounds):
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(frames, arg)
        best = min(best, time.perf_counter() - t0)
    return len(frames) / best


def micropython_figures(n):
    proc = mpvm.run(ROOT / "tests" / "protocol" / "mp_vectors.py", "--bench", n, timeout=300)
    return {k: int(v) for k, v in re.findall(r"^(\w+) (\d+)$", proc.stdout, re.M)}


def main(argv=None):
    ap = argparse.ArgumentParser(description="citynode protocol benchmark")
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5, help="best of this many runs per path")
    ap.add_argument("--mp-frames", type=int, default=2000)
    args = ap.parse_args(argv)

    keys, frames = make_frames(args.frames, args.nodes)
    keys_by_kid = {k.encode(): v for k, v in keys.items()}
    # every path agrees on every frame before anything is timed
    with general_path():
        slow = [message.decode(f, keys.get) for f in frames[: args.nodes * 3]]
    assert slow == [message.decode(f, keys.get) for f in frames[: args.nodes * 3]]

    rates = {"a": [], "b": [], "c": [], "c0": []}
    for _ in range(args.rounds):  # interleaved, so drift in machine load hits every path alike
        rates["a"].append(best_rate(gateway_path, frames, keys, 1))
        rates["b"].append(best_rate(general, frames, keys, 1))
        rates["c"].append(best_rate(raw_baseline, frames, keys_by_kid, 1))
        rates["c0"].append(best_rate(raw_envelope_only, frames, keys_by_kid, 1))
    a, b, c, c0 = (max(rates[k]) for k in ("a", "b", "c", "c0"))

    typical = json.loads((ROOT / "protocol" / "vectors" / "data.json").read_text())[0]
    frame = bytes.fromhex(typical["frame"])
    recs = [senml.record(r["0"], r["2"]) for r in typical["decoded"]["records"]]
    as_json = json.dumps(senml.to_json(recs, base_name="sew-07:"), separators=(",", ":"))
    as_json_bt = json.dumps(senml.to_json(recs, base_name="sew-07:", base_time=1767225600), separators=(",", ":"))

    print(f"CPython {sys.version.split()[0]}, cbor2 {version('cbor2')}, {args.frames} typical frames from "
          f"{args.nodes} nodes, best of {args.rounds}")
    print(f"  (a) gateway path  message.decode(frame, keys.get), fast readers:   {a:>9,.0f} frames/s")
    print(f"  (b) general strict path (fast readers off, as on MicroPython):       {b:>9,.0f} frames/s")
    print(f"  (c) raw cbor2.loads + hmac + cbor2.loads(payload), no checks:        {c:>9,.0f} frames/s")
    print(f"  (c0) raw envelope + hmac only, payload not decoded:                  {c0:>9,.0f} frames/s")
    print(f"  ratio (a)/(c) = {a / c:.2f}   (b)/(c) = {b / c:.2f}   (a)/(c0) = {a / c0:.2f}   goal (a)/(c) >= 0.50")

    mp = micropython_figures(args.mp_frames)
    print(f"MicroPython (unix port, heap {mpvm.HEAP}), {args.mp_frames} frames:")
    print(f"  encode+MAC: {mp['encode_mac_per_s']:,} frames/s   decode+verify: {mp['decode_verify_per_s']:,} frames/s")
    print(f"  heap allocated to encode+MAC one typical frame: {mp['heap_encode_mac']} bytes"
          f" (kept afterwards: {mp['heap_kept']}; building its 6 records: {mp['heap_records']})")

    print("Size of the typical 6-reading frame (sew-07: t f32, h f16, p int, l f32, d f32, b f16):")
    print(f"  COSE_Mac0 (UDP datagram): {len(frame)} bytes; on serial (COBS+CRC+delimiters): "
          f"{len(cobs.encode(frame))} bytes")
    print(f"  same readings as SenML JSON: {len(as_json)} bytes ({len(as_json) / len(frame):.1f}x);"
          f" with bt: {len(as_json_bt)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
