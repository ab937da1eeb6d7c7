# A strict RFC 8428 validator for SenML JSON packs, written from the RFC's text and not from
# the gateway's code, so that it can disagree with it. The integration tests' MQTT subscriber
# runs it on every `up` message (tests/gateway/conftest.py).
#   names: section 4.5.1 (regex below, on the resolved name bn + n)
#   units: section 12.1 table 6, and RFC 8798 section 2 table 1
#   values: section 4.2 (at most one of v/vs/vb/vd; a record without one needs s), 4.3 (types)
#   time:   section 4.5.3 (bt + t; below 2**28 is relative to now), and citynode's rule that the
#           gateway's records carry absolute times (section 8 of protocol/SPEC.md)
import base64
import math
import re

NAME = re.compile(r"[A-Za-z0-9][-:./A-Za-z0-9_]*")
REGISTERED_UNITS = set("""
m kg g s A K cd mol Hz rad sr N Pa J W C V F Ohm S Wb T H Cel lm lx Bq Gy Sv kat m2 m3 l m/s m/s2 m3/s l/s
W/m2 cd/m2 bit bit/s lat lon pH dB dBW Bspl count / % %RH %EL EL 1/s 1/min beat/min beats S/m
B VA VAs var vars J/m kg/m3 deg
""".split())
NUMBER_LABELS = ("bt", "bv", "bs", "v", "s", "t", "ut")
TEXT_LABELS = ("bn", "bu", "n", "u", "vs", "vd")
KNOWN = set(NUMBER_LABELS + TEXT_LABELS + ("bver", "vb"))
RELATIVE_LIMIT = 2 ** 28


def _number(x):
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def check_pack(pack, absolute_time=True):
    # -> list of problems (empty when the pack is valid), and the resolved records
    # [(name, time, value)] for cross-message checks.
    problems = []
    resolved = []
    if not isinstance(pack, list) or not pack:
        return ["a pack is a non-empty array of records"], resolved
    bn, bt, bu = "", 0, None
    for i, rec in enumerate(pack):
        where = f"record {i}"
        if not isinstance(rec, dict):
            problems.append(f"{where}: not an object")
            continue
        for label, value in rec.items():
            if label.endswith("_"):
                problems.append(f"{where}: must-understand label {label!r}")
            elif label in NUMBER_LABELS and not _number(value):
                problems.append(f"{where}: {label} must be a finite number, got {value!r}")
            elif label in TEXT_LABELS and not isinstance(value, str):
                problems.append(f"{where}: {label} must be a string, got {value!r}")
            elif label == "vb" and not isinstance(value, bool):
                problems.append(f"{where}: vb must be true or false, got {value!r}")
            elif label == "bver" and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                problems.append(f"{where}: bver must be a positive integer")
            elif label not in KNOWN:
                problems.append(f"{where}: label {label!r} is not in the SenML labels registry")
        if problems:
            continue
        bn = rec.get("bn", bn)
        bt = rec.get("bt", bt)
        bu = rec.get("bu", bu)
        name = bn + rec.get("n", "")
        if not NAME.fullmatch(name):
            problems.append(f"{where}: name {name!r} breaks RFC 8428 4.5.1")
        unit = rec.get("u", bu)
        if unit is not None and unit not in REGISTERED_UNITS:
            problems.append(f"{where}: unit {unit!r} is not in the SenML units registry")
        values = [k for k in ("v", "vs", "vb", "vd") if k in rec]
        if len(values) > 1:
            problems.append(f"{where}: more than one value field {values}")
        if not values and "s" not in rec:
            problems.append(f"{where}: no value and no sum")
        if "vd" in rec:
            try:
                base64.urlsafe_b64decode(rec["vd"] + "=" * (-len(rec["vd"]) % 4))
            except ValueError:
                problems.append(f"{where}: vd is not base64url")
            if "=" in rec["vd"]:
                problems.append(f"{where}: vd must be base64url without padding")
        t = bt + rec.get("t", 0)
        if absolute_time and t < RELATIVE_LIMIT:
            problems.append(f"{where}: time {t} is relative (below 2**28), the gateway must give absolute time")
        value = rec.get("v", rec.get("vs", rec.get("vb", rec.get("vd", rec.get("s")))))
        resolved.append((name, t, value))
    seen = set()
    for name, t, _ in resolved:
        if (name, t) in seen:
            problems.append(f"two records named {name!r} at time {t} in one pack")
        seen.add((name, t))
    return problems, resolved


class UpChecker:
    # Every `up` envelope of a run: its senml pack valid, and no two different frames of a
    # node with a record of the same resolved name and time (a consumer keyed on (name, time)
    # would overwrite one with the other). The same frame again (a resend) is fine.
    def __init__(self):
        self.problems = []
        self.checked = 0
        self.seen = {}  # (resolved name, time) -> (boot, seq)

    def check(self, topic, envelope):
        self.checked += 1
        where = f"{topic} boot {envelope.get('boot')} seq {envelope.get('seq')}"
        problems, resolved = check_pack(envelope.get("senml"))
        self.problems.extend(f"{where}: {p}" for p in problems)
        frame = (envelope.get("boot"), envelope.get("seq"))
        for name, t, _ in resolved:
            other = self.seen.setdefault((name, round(t, 3)), frame)
            if other != frame:
                self.problems.append(f"{where}: {name} at {t} also in frame boot {other[0]} seq {other[1]}")
