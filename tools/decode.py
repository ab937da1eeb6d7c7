# `citynode decode HEX|BASE64|-`: a frame in CBOR diagnostic notation and as readings.
import argparse
import base64
import binascii
import sys

from protocol import cbor, cobs, cose, message, senml
from protocol.cbor import FrameError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("frame", help="the frame as hex or base64, or - to read it from stdin")
    p.add_argument("--keys", help="keys file; with it the MAC is verified")


def diag(obj: object) -> str:
    # CBOR diagnostic notation (RFC 8949 section 8)
    if isinstance(obj, cbor.Tag):
        return f"{obj.tag}({diag(obj.value)})"
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, bytes):
        try:
            inner = cbor.loads(obj)
            if isinstance(inner, dict | list):
                return f"<< {diag(inner)} >>"
        except FrameError:
            pass
        return f"h'{obj.hex()}'"
    if isinstance(obj, str):
        return '"' + obj.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(obj, list):
        return "[" + ", ".join(diag(x) for x in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{diag(k)}: {diag(v)}" for k, v in obj.items()) + "}"
    return repr(obj)


def parse_input(text: str) -> bytes:
    # hex (with or without 0x, spaces or colons), base64 (line breaks and spaces allowed: the
    # MQTT "frame" field as pasted) or a serial capture (with 0x00 delimiters, as hex) -> COSE bytes
    text = text.strip()
    if not text:
        raise ValueError("no frame given (empty input); give it as hex or base64, or pipe it to -")
    compact = "".join(text.split())
    hexits = compact.replace(":", "")
    if hexits[:2].lower() == "0x":
        hexits = hexits[2:]
    raw = None
    try:
        raw = bytes.fromhex(hexits)
    except ValueError:
        try:
            raw = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("input is neither hex nor base64") from None
    if not raw:
        raise ValueError("no frame given (empty input); give it as hex or base64, or pipe it to -")
    if raw[:1] == b"\x00":  # a serial frame: strip COBS and CRC
        for kind, body in cobs.Deframer().feed(raw):
            if kind == "frame":
                return body
        raise ValueError("serial capture holds no frame with a valid CRC")
    return raw


def run(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.frame == "-" else args.frame
    from tools.cli import EXIT_FAILED, CliError, UsageError

    try:
        raw = parse_input(text)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"{len(raw)} bytes")
    try:
        obj = cbor.loads(raw)
    except FrameError as e:
        raise CliError(f"not a valid frame: {e}") from None
    print(diag(obj))
    try:
        kid, _protected, payload, _tag = cose.parse(raw)
        m = message.parse_payload(payload)
    except FrameError as e:
        raise CliError(f"not a valid citynode message: {e}") from None
    node = kid.decode(errors="replace")
    status = 0
    if args.keys:
        from tools.cli import load_keys_option

        keys = load_keys_option(args.keys)
        try:
            message.decode(raw, getattr(keys, "verifier", keys.get))
            print(f"MAC: ok (key of {node})")
        except FrameError as e:
            print(f"MAC: FAILED ({e})")
            status = EXIT_FAILED
    else:
        print("MAC: not checked (give --keys FILE to verify it)")
    head = {k: v for k, v in m.items() if k not in ("records",)}
    print(f"node {node}: " + ", ".join(f"{k}={v}" for k, v in head.items() if v not in (None, {}, 0) or k == "seq"))
    for rec in senml.to_json(m.get("records") or []):
        value = rec.get("v", rec.get("vs", rec.get("vb")))
        print(f"  {rec['n']:<4} {value} {rec.get('u', '')}")
    if m.get("records"):
        from gateway.conform import RecordCheck

        bad = RecordCheck().check(m["records"])
        if bad:  # valid on the wire, but no SenML a consumer accepts: the gateway refuses it
            print(f"SenML: the gateway refuses this frame (payload): {bad}")
            status = EXIT_FAILED
    return status
