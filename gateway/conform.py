# What a verified frame must also be before the gateway forwards it: SenML that RFC 8428
# allows. The wire format (protocol/) accepts any text as a record name or unit; consumers
# do not. A record name, appended to the base name "<node>:", must keep it a SenML name
# (RFC 8428 section 4.5.1), and a unit must be in the SenML units registry (RFC 8428 section
# 12.1, RFC 8798). A record's time offset `t` (SPEC.md section 5: relative to the frame's
# time, which the gateway fixes) must be a relative time as RFC 8428 section 4.5.3 reads it,
# under 2^28 s (8.5 years) either way: from 2^28 on SenML reads a time as absolute, and a
# finite offset such as 1e300 puts the reading where no time format reaches (the `up`
# envelope's and SensorThings' ISO 8601 times stop at the year 9999). A frame that breaks
# any of these is refused with reason `payload` and counted (SPEC.md section 5); it is not
# ACKed, so the node keeps it, as for any other refusal.
from collections.abc import Iterable, Mapping

from protocol import senml
from protocol.names import valid_part
from protocol.units import UNITS

_N, _U, _T = senml.N, senml.U, senml.T
T_MAX_S = 2**28  # RFC 8428 4.5.3: a time from 2^28 s on is absolute, below it relative
_CACHE_MAX = 4096


class RecordCheck:
    # check(records) -> None, or one line saying what is wrong. Names and units that passed
    # are remembered: a fleet uses a handful, so the usual frame costs one set lookup a record.
    def __init__(self) -> None:
        self.ok: set[tuple[object, object]] = set()

    def check(self, records: Iterable[Mapping[int, object]]) -> str | None:
        ok = self.ok
        for rec in records:
            name = rec.get(_N)
            unit = rec.get(_U)
            dt = rec.get(_T)
            if isinstance(dt, int | float) and not -T_MAX_S < dt < T_MAX_S:  # a finite number (protocol/senml.py)
                return (f"record {name!r} time offset t = {dt!r} s is no relative SenML time (RFC 8428 4.5.3: "
                        "under 2^28 s either way)")
            if (name, unit) in ok:
                continue
            bad = _fault(name, unit)
            if bad:
                return bad
            if len(ok) >= _CACHE_MAX:
                ok.clear()
            ok.add((name, unit))
        return None


def _fault(name: object, unit: object) -> str | None:
    if not valid_part(name):
        return (f"record name {name!r} is not a SenML name (RFC 8428 4.5.1: letters, digits and - : . / _ "
                "only)")
    if unit is not None and unit not in UNITS:
        return f"unit {unit!r} of record {name!r} is not in the SenML units registry (RFC 8428 12.1, RFC 8798)"
    return None
