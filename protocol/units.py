# The SenML units registry (IANA "SenML Units"): the units of RFC 8428 section 12.1 and
# the primary units RFC 8798 section 2 added. A record's "u" must be one of them, or a
# consumer cannot know what the number means (SPEC.md section 5). Units the RFC marks as
# NOT RECOMMENDED for new producers (g, l, l/s, Bspl, %, 1/min, beat/min, beats) are still
# registered, so consumers must accept them; citynode's own names never use them.
# A separate module so that nodes, which never check units, do not carry the table.

RFC8428 = (
    "m", "kg", "g", "s", "A", "K", "cd", "mol", "Hz", "rad", "sr", "N", "Pa", "J", "W", "C", "V", "F",
    "Ohm", "S", "Wb", "T", "H", "Cel", "lm", "lx", "Bq", "Gy", "Sv", "kat", "m2", "m3", "l", "m/s",
    "m/s2", "m3/s", "l/s", "W/m2", "cd/m2", "bit", "bit/s", "lat", "lon", "pH", "dB", "dBW", "Bspl",
    "count", "/", "%", "%RH", "%EL", "EL", "1/s", "1/min", "beat/min", "beats", "S/m",
)
RFC8798 = ("B", "VA", "VAs", "var", "vars", "J/m", "kg/m3", "deg")

UNITS = frozenset(RFC8428 + RFC8798)


def registered(unit):
    return unit in UNITS
