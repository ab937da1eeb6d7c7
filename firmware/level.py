# Geometry and physics of a level measurement: the speed of sound in air from its
# temperature, and level above the shaft invert from the distance to the water; and the
# level sensor every level driver is (Level: a filtered burst -> the level records).
import math

from firmware import filters
from firmware.sensors import Base, f32
from protocol.senml import record

SPEED_0C_MM_S = 331300  # speed of sound in dry air at 0 °C


def speed_of_sound_mm_s(temp_c):
    # c = 331.3 m/s * sqrt(1 + T/273.15); 20 °C -> 343.2 m/s. Without a temperature, 20 °C.
    if temp_c is None:
        temp_c = 20.0
    return int(SPEED_0C_MM_S * math.sqrt(1 + temp_c / 273.15))


def level_from_distance_mm(mount_mm, distance_mm):
    # mount_mm: sensor face height above the invert (from the config)
    return mount_mm - distance_mm


def bounded(part, mm):
    # A distance part's mm -> mm, or None with part.reason "blind" (nearer than its min_mm:
    # the blind zone) or "range" (beyond its max_mm), counted in part.errors: no distance
    r = "blind" if mm < part.min_mm else "range" if mm > part.max_mm else None
    if r is None:
        return mm
    part.errors[r] += 1
    part.reason = r
    return None


# The settings every level sensor takes (its driver adds its own): N samples a cycle,
# filtered into one value (firmware/filters.py), and report-on-change by delta_mm
FILTER = {
    "samples": ("i", 5, 1, 32), "max_dev_mm": ("i", 60, 0, 100000), "delta_mm": ("i", 10, 0, 100000),
    "ema_alpha": ("f", None, 0, 1), "clamp_mm": ("r", None, 0, 100000),
}
# ... and those of a distance sensor (level = mount_mm - distance): the shaft's depth at the
# sensor, and the readings it trusts (min_mm a margin over the parts' blind zones of 30 to
# 250 mm: the A02YYUW's, the JSN-SR04T's)
DISTANCE = {"mount_mm": ("i", 3000, 0, 100000), "min_mm": ("i", 250, 0, 100000), "max_mm": ("i", 4500, 0, 100000)}


def settings(*tables):
    out = {}
    for t in tables:
        for k in t:
            out[k] = t[k]
    return out


class Level(Base):
    # The level sensor of the contract (firmware/sensors.py) over a part with read_mm(speed)
    # and reason: one burst of N samples with the speed of sound of the measured air,
    # filtered into one value with quality [taken, rejected, status]. A driver subclasses it
    # with open() (and start(ctx), what the part needs before a burst). DISTANCE: the part
    # measures the distance down to the water (else the level itself); AUX: the second
    # record, (name, units per SI unit), of `aux` (the distance in mm, or the loop current in uA)
    DISTANCE = True
    AUX = ("d", 1000)

    def __init__(self, board, s):
        super().__init__(board, s)
        clamp = s["clamp_mm"] or (None, None)
        self.burst = filters.Burst(s["samples"], max_dev=s["max_dev_mm"], lo=clamp[0], hi=clamp[1],
                                   ema_alpha=s["ema_alpha"])
        self.mm = None  # the last good level
        self.aux = None

    def start(self, ctx):
        pass

    def read(self, ctx, out):
        b = self.burst
        b.start()
        drv = self.part
        if drv is None:
            return self._records(out, [0, 0, filters.FAULT])
        self.start(ctx)
        speed = speed_of_sound_mm_s(ctx.temp_c)
        blind = beyond = partial = 0
        for _ in range(b.n):
            v = drv.read_mm(speed)
            r = drv.reason
            if r == "blind":
                blind += 1
            elif r == "range":
                if v is None:
                    beyond += 1
                else:
                    partial += 1  # a 4-20 mA value just outside 3.8..20.5 mA
            b.add(v, r in ("blind", "range"))
        value, taken, rejected, status = b.result()
        if value is None and status == filters.RANGE:
            # blind zone: the water is at least this high (an overflow); beyond range: this low
            if self.DISTANCE:
                value = self.s["min_mm"] if blind >= beyond else self.s["max_mm"]
            else:
                status = filters.FAULT
        if partial and status == filters.OK:
            status = filters.RANGE
        if not self.DISTANCE:
            self.aux = drv.current_ua
        if value is None:
            return self._records(out, [taken, rejected, filters.FAULT])
        value = int(value)
        if self.DISTANCE:
            self.aux = value
            self.mm = level_from_distance_mm(self.s["mount_mm"], value)
        else:
            self.mm = value
        return self._records(out, None if status == filters.OK and not rejected else [taken, rejected, status])

    def _records(self, out, q):
        # the last good level (and its second record) -> out; this reading's quality
        if self.mm is not None:
            out.append(record("l", f32(self.mm / 1000)))
            a = self.AUX
            if self.aux is not None:
                out.append(record(a[0], f32(self.aux / a[1])))
        return q
