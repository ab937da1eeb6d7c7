# The independent COSE check (SPEC.md section 4.4). Runs in .venv-pycose (pycose 1.1.0 with
# cbor2 < 6; pycose 1.1 does not work with cbor2 6), never imports citynode code:
#   .venv-pycose/bin/python tests/pycose_check.py protocol/vectors
# For every message vector, pycose decodes the COSE_Mac0 and verifies its tag with the vector's key:
#   - a valid vector must verify;
#   - an invalid vector with "mac_ok": false must be rejected (wrong structure, alg, key or MAC);
#   - an invalid vector with "mac_ok": true must verify: pycose is a lenient COSE library, so this
#     proves the vector breaks only the stricter citynode rule its reason names.
# Prints one line per failure and a summary line; exits 1 on any failure.
import json
import pathlib
import sys
from importlib.metadata import version

from pycose.keys import SymmetricKey
from pycose.messages import Mac0Message


def pycose_verifies(frame, key):
    try:
        msg = Mac0Message.decode(frame)
        msg.key = SymmetricKey(k=key)
        return bool(msg.verify_tag())
    except Exception:  # noqa: BLE001 - any refusal by pycose counts as "rejected"
        return False


def main(folder):
    counts = {"verified": 0, "rejected": 0, "failed": 0}
    for path in sorted(pathlib.Path(folder).glob("*.json")):
        for v in json.loads(path.read_text()):
            if "token" in v:  # a signed command (SPEC 6.7): verified with the node's command key
                ok = pycose_verifies(bytes.fromhex(v["token"]), bytes.fromhex(v["command_key"]))
                expected = v["mac_ok"]
            elif "frame" not in v:
                continue  # a serial stream vector
            else:
                ok = pycose_verifies(bytes.fromhex(v["frame"]), bytes.fromhex(v["key"]))
                expected = v["valid"] or v["mac_ok"]
            if ok != expected:
                counts["failed"] += 1
                print("FAIL %s: %s: pycose %s" % (path.name, v["name"], "verified" if ok else "rejected"))
            else:
                counts["verified" if ok else "rejected"] += 1
    print("pycose %s with cbor2 %s: %d verified as expected, %d rejected as expected, %d failed"
          % (version("pycose"), version("cbor2"), counts["verified"], counts["rejected"], counts["failed"]))
    return 1 if counts["failed"] or not counts["verified"] or not counts["rejected"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "protocol/vectors"))
