# The golden vectors of protocol/vectors (SPEC.md section 11), loaded for the tests.
# Runs on CPython and on MicroPython (tests/protocol/mp_vectors.py imports it): json, os only.
import json
import os

from protocol import message

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
FOLDER = HERE + "/../../protocol/vectors"


def files(folder=FOLDER):
    # compact.json (the LoRa profile, SPEC.md 13) has its own tests: test_compact.py, mp_compact.py
    return sorted(f for f in os.listdir(folder) if f.endswith(".json") and f != "compact.json")


def load_file(name, folder=FOLDER):
    # the vectors of one file, each with "file" added
    with open(folder + "/" + name) as fh:
        vectors = json.load(fh)
    for v in vectors:
        v["file"] = name
    return vectors


def load(folder=FOLDER):
    # -> (message vectors, serial stream vectors); signed commands: signed()
    messages = []
    streams = []
    for name in files(folder):
        for v in load_file(name, folder):
            if "frame" in v:
                messages.append(v)
            elif "stream" in v:
                streams.append(v)
    return messages, streams


def unhex(s):
    return bytes.fromhex(s)


def _intkey(k):
    # JSON object keys that are decimal integers stand for CBOR integer keys
    if k and (k.isdigit() or (k[0] == "-" and k[1:].isdigit())):
        return int(k)
    return k


def from_json(obj):
    # the "decoded" JSON of a vector -> the Python values decode() returns
    if isinstance(obj, dict):
        return {_intkey(k): from_json(obj[k]) for k in obj}
    if isinstance(obj, list):
        return [from_json(x) for x in obj]
    return obj


def to_json(obj):
    # decode() output -> the JSON form of a vector's "decoded" (bytes: hex)
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dict):
        return {(str(k) if isinstance(k, int) else k): to_json(obj[k]) for k in obj}
    if isinstance(obj, (list, tuple)):
        return [to_json(x) for x in obj]
    return obj


def reencode(v):
    # Build the vector's message again from its decoded content with the protocol encoders
    d = from_json(v["decoded"])
    key = unhex(v["key"])
    node = d["node"]
    if d["type"] == "data":
        return message.encode_data(key, node, d["boot"], d["seq"], d["uptime_ms"], d["records"],
                                   time_s=d["time"], quality=d["quality"], flags=d["flags"],
                                   info=d["info"], cmd_result=d["cmd_result"], key_version=v.get("key_version", 0))
    if d["type"] == "ack":
        return message.encode_ack(key, node, d["boot"], d["seq"], d["cum"])
    if d["type"] == "boot":
        return message.encode_boot(key, node, d["boot"], d["seq"], d["min_boot"])
    if d["type"] == "retired":  # keyring.encode_retired is gateway side only (test_vectors checks it)
        return message.cose.sign(key, node.encode(), message.dumps({0: 5, 1: d["boot"], 2: d["seq"],
                                                                    15: d["key_version"]}))
    if "signed" in d:
        return message.encode_signed(key, node, d["boot"], d["cmd_id"], unhex(d["signed"]))
    return message.encode_cmd(key, node, d["boot"], d["cmd_id"], d["op"], d["arg"])


def key_for(v):
    # the receiver's key table for one vector: only the vector's node is known
    keys = {v["node"]: unhex(v["key"])}
    return keys.get
