# One sampling burst per cycle: climate from the BME280 (one forced conversion), then N
# level samples with the speed of sound of the measured air temperature, filtered into
# one value with quality [taken, rejected, status]; then the SenML records of a frame,
# quantised as SPEC section 3 says. A sensor that fails setup is retried now and then.
import struct

from firmware import filters, level, sensors
from protocol.senml import record

RETRY_SETUP_MS = 600000  # try a missing sensor again every 10 minutes


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def f16(x):
    return struct.unpack("e", struct.pack("e", x))[0]


class Sampler:
    def __init__(self, board, cfg):
        self.board = board
        self.clock = board.clock
        s = cfg["sensors"]
        self.climate_cfg = s.get("climate")
        self.level_cfg = s.get("level")
        self.climate = None
        self.level = None
        self._tried_ms = {}
        lc = self.level_cfg or {}
        self.is_distance = lc.get("kind") in sensors.DISTANCE_KINDS
        self.mount_mm = lc.get("mount_mm", 3000)
        self.min_mm = lc.get("min_mm", 30)
        self.max_mm = lc.get("max_mm", 4500)
        clamp = lc.get("clamp_mm") or (None, None)
        self.burst = filters.Burst(lc.get("samples", 5), max_dev=lc.get("max_dev_mm", 60), lo=clamp[0], hi=clamp[1],
                                   ema_alpha=lc.get("ema_alpha"))
        hb = cfg["heartbeat_s"]  # None: a frame every cycle (firmware/config.py)
        self.reporter = filters.Reporter(lc.get("delta_mm", 10), hb * 1000 if hb else None)
        # last results
        self.temp_c = self.pressure_pa = self.humidity_rh = None
        self.climate_q = None  # [taken, rejected, status] when not ok
        self.level_mm = self.distance_mm = self.current_ua = None
        self.level_q = None
        self.faults = 0

    def _due(self, name, conf):
        # set up a sensor now? (configured, and not tried in the last RETRY_SETUP_MS)
        now = self.clock.ms()
        last = self._tried_ms.get(name)
        if conf is None or (last is not None and now - last < RETRY_SETUP_MS):
            return False
        self._tried_ms[name] = now
        return True

    def sample(self):
        if self.climate is None and self._due("climate", self.climate_cfg):
            self.climate = sensors.build_climate(self.board, self.climate_cfg)
        if self.level is None and self._due("level", self.level_cfg):
            self.level = sensors.build(self.board, self.level_cfg)
        self._sample_climate()
        self._sample_level()

    def _sample_climate(self):
        if self.climate_cfg is None:
            return
        t = p = h = None
        if self.climate is not None:
            t, p, h = self.climate.read()
        if t is None:
            self.faults += 1
            self.climate_q = [1, 1, filters.FAULT]  # the records keep the last good values
            return
        self.climate_q = None
        self.temp_c = t
        self.pressure_pa = p
        self.humidity_rh = h

    def _sample_level(self):
        if self.level_cfg is None:
            return
        drv = self.level
        b = self.burst
        b.start()
        if drv is None:
            self.level_q = [0, 0, filters.FAULT]
            self.faults += 1
            return
        speed = level.speed_of_sound_mm_s(self.temp_c)
        if hasattr(drv, "air_pa"):  # a non-vented pressure probe corrects for the air pressure
            setattr(drv, "air_pa", self.pressure_pa)  # noqa: B010 - not every driver has it
        flush = getattr(drv, "flush", None)
        if flush is not None:
            flush()
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
            value = self.min_mm if blind >= beyond else self.max_mm
            if not self.is_distance:
                value = None
                status = filters.FAULT
        if partial and status == filters.OK:
            status = filters.RANGE
        self.current_ua = getattr(drv, "current_ua", None)
        if value is None:
            self.faults += 1
            self.level_q = [taken, rejected, filters.FAULT]
            return
        value = int(value)
        if self.is_distance:
            self.distance_mm = value
            self.level_mm = level.level_from_distance_mm(self.mount_mm, value)
        else:
            self.level_mm = value
        self.level_q = None if status == filters.OK and not rejected else [taken, rejected, status]

    def records(self, battery_mv=None):
        # -> (records, quality) for a frame; quality only for records that are not fine
        recs = []
        quality = {}
        if self.temp_c is not None:
            q = self.climate_q
            recs.append(record("t", f32(round(self.temp_c, 2))))
            if q:
                quality[len(recs) - 1] = q
            if self.humidity_rh is not None:
                recs.append(record("h", f16(self.humidity_rh)))
            if self.pressure_pa is not None:
                recs.append(record("p", int(self.pressure_pa + 0.5)))
        if self.level_mm is not None:
            recs.append(record("l", f32(self.level_mm / 1000)))
            if self.level_q:
                quality[len(recs) - 1] = self.level_q
            if self.is_distance and self.distance_mm is not None:
                recs.append(record("d", f32(self.distance_mm / 1000)))
            elif self.current_ua is not None:
                recs.append(record("i", f32(self.current_ua / 1000000)))
        if battery_mv is not None:
            recs.append(record("b", f16(battery_mv / 1000)))
        return recs, quality
