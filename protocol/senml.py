# SenML (RFC 8428) records with the CBOR integer labels of section 6, and the
# citynode name registry: a registered name implies its SenML unit, so frames may
# leave "u" out (SPEC.md section 5). Conversion to SenML JSON restores every unit.
import struct

# RFC 8428 Table 4
BVER = -1
BN = -2
BT = -3
BU = -4
BV = -5
BS = -6
N = 0
U = 1
V = 2
VS = 3
VB = 4
S = 5
T = 6
UT = 7
VD = 8

JSON_LABELS = {
    BVER: "bver", BN: "bn", BT: "bt", BU: "bu", BV: "bv", BS: "bs",
    N: "n", U: "u", V: "v", VS: "vs", VB: "vb", S: "s", T: "t", UT: "ut", VD: "vd",
}

# name -> (SenML unit, its title in the gateway's outputs). Units from the SenML units
# registry (RFC 8428 12.1); what each one measures: SPEC.md section 5. The one list of names.
NAMES = {
    "t": ("Cel", "Temperature"),
    "h": ("%RH", "Humidity"),
    "p": ("Pa", "Pressure"),
    "l": ("m", "Water level"),
    "d": ("m", "Distance to water"),
    "b": ("V", "Battery"),
    "i": ("A", "Loop current"),
    "r": ("dBW", "Signal strength"),
    "rain": ("m", "Rain"),
}

MAX_RECORDS = 32
MAX_NAME = 24


def unit_of(name):
    entry = NAMES.get(name)
    return entry[0] if entry else None


def record(name, value, unit=None):
    # One record in CBOR form. The unit is written only when it is not implied by the name.
    r = {N: name}
    if unit is not None and unit != unit_of(name):
        r[U] = unit
    if isinstance(value, bool):
        r[VB] = value
    elif isinstance(value, str):
        r[VS] = value
    else:
        r[V] = value
    return r


def _narrow(x, fmt):
    try:
        return struct.unpack(fmt, struct.pack(fmt, x))[0] == x
    except (OverflowError, ValueError):
        return False


_NUMBERS = {}  # float -> its JSON form: readings repeat (a level in mm, a battery in mV)
_NUMBERS_MAX = 4096


def json_number(x):
    # A float as the shortest decimal that round-trips at the narrowest IEEE width
    # holding it exactly, so a binary32 21.53 reads 21.53, not 21.530000686645508.
    if not isinstance(x, float) or x != x or x in (float("inf"), float("-inf")):
        return x
    if not x:
        return x  # 0.0 and -0.0 are one dict key, and each is its own form
    got = _NUMBERS.get(x)
    if got is None:
        if len(_NUMBERS) >= _NUMBERS_MAX:
            _NUMBERS.clear()
        got = _NUMBERS[x] = _shortest(x)
    return got


def _shortest(x):
    for fmt in (">e", ">f"):
        if _narrow(x, fmt):
            for digits in range(3, 10):
                s = float("%.*g" % (digits, x))
                try:
                    if struct.unpack(fmt, struct.pack(fmt, s))[0] == x:
                        return s
                except OverflowError:  # s rounded past the width's largest number
                    pass
    return x


def to_json(records, base_name=None, base_time=None):
    # CBOR-labelled records -> SenML JSON records (dicts with string labels),
    # units filled in from the registry. base_name/base_time go in the first record.
    out = []
    for rec in records:
        j = {}
        if not out:
            if base_name is not None:
                j["bn"] = base_name
            if base_time is not None:
                j["bt"] = base_time
        for k in rec:
            if k == V:
                j["v"] = json_number(rec[k])
            else:
                j[JSON_LABELS.get(k, k)] = rec[k]
        if "u" not in j:
            entry = NAMES.get(j.get("n"))
            if entry:
                j["u"] = entry[0]
        out.append(j)
    return out


def _finite(v):
    # an int or a float that SenML JSON can carry (no NaN, no infinity)
    if isinstance(v, bool):
        return False
    if isinstance(v, float):
        return v - v == 0
    return isinstance(v, int)


def check_records(records, error):
    # Validates a SenML pack from the wire; calls error(detail) (which raises) on the first fault.
    if not isinstance(records, list) or not records or len(records) > MAX_RECORDS:
        error("records must be a list of 1..%d SenML records" % MAX_RECORDS)
    for rec in records:
        if not isinstance(rec, dict):
            error("a SenML record must be a map")
        name = rec.get(N)
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            error("record needs a name (label 0) of 1..%d characters" % MAX_NAME)
        values = 0
        for k in rec:
            v = rec[k]
            if isinstance(k, str):
                if k.endswith("_"):
                    error("must-understand label %r not supported" % k)
                if k in JSON_LABELS.values():  # scanned: 15 labels, and only for a text label
                    error("record %r: text label %r is a SenML label's name, not an extension (RFC 8428 6)"
                          % (name, k))
                continue
            if k == V:
                if not _finite(v):
                    error("v must be a finite number")
                values += 1
            elif k == VS:
                if not isinstance(v, str):
                    error("vs must be text")
                values += 1
            elif k == VB:
                if not isinstance(v, bool):
                    error("vb must be a boolean")
                values += 1
            elif k == U:
                if not isinstance(v, str):
                    error("u must be text")
            elif k == T:
                if not _finite(v):
                    error("t must be a finite number")
            elif k != N:
                error("SenML label %r not allowed in a citynode record" % k)
        if values != 1:
            error("record %r needs exactly one value" % name)
