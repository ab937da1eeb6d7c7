# One sampling round per cycle over the sensors of the node config (firmware/sensors.py has
# their contract): the one that gives the air first (the others correct for its temperature
# and pressure), then the rest in config order. Each read gives its records and their
# quality; the frame's records are theirs in that order, then the battery. The level reading
# the storm policy takes is the one the LEVEL sensor gives. A sensor whose part fails to open
# is tried again now and then.
from firmware import filters, sensors
from firmware.sensors import f16, f32  # noqa: F401 - the node quantises its records with them
from protocol.senml import record

RETRY_SETUP_MS = 600000  # try a missing sensor again every 10 minutes


class Sampler:
    def __init__(self, board, cfg):
        self.board = board
        self.clock = board.clock
        # [sensor, its caps, its kind, ms its part was last tried]
        self.sensors = []
        self.level = None  # the sensor that gives the level reading
        for s in sensors.sensor_list(cfg):
            try:
                drv = sensors.driver(s["kind"])
                sen = drv.Sensor(board, s)
            except (ImportError, ValueError, KeyError) as ex:
                board.log("sensor %s: %s" % (s["kind"], ex))
                continue
            e = [sen, drv.CAPS, s["kind"], None]
            if drv.CAPS & sensors.AIR:
                self.sensors.insert(0, e)
            else:
                self.sensors.append(e)
            if drv.CAPS & sensors.LEVEL:
                self.level = sen
        lv = self.level
        hb = cfg["heartbeat_s"]  # None: a frame every cycle (firmware/config.py)
        self.reporter = filters.Reporter(lv.s["delta_mm"] if lv else 0, hb * 1000 if hb else None)
        self.ema = lv.burst.ema if lv else None  # what a deep sleep keeps of the filter (node.py)
        # the air the AIR sensor measured (None without one), and the level reading
        self.temp_c = self.pressure_pa = None
        self.level_mm = None
        self.level_q = None  # [taken, rejected, status] when not ok
        self.faults = 0
        # this cycle's records and their quality (index -> [taken, rejected, status]), kept
        # from one cycle to the next (no new list a cycle); n: how many the sensors gave
        self.recs = []
        self.quality = {}
        self.n = 0

    def _due(self, e):
        # open a missing part now? (not tried in the last RETRY_SETUP_MS)
        now = self.clock.ms()
        if e[3] is not None and now - e[3] < RETRY_SETUP_MS:
            return False
        e[3] = now
        return True

    def sample(self):
        recs = self.recs
        quality = self.quality
        recs.clear()
        quality.clear()
        for e in self.sensors:
            sen = e[0]
            if sen.part is None and self._due(e):
                try:
                    sen.open()
                except (OSError, ValueError, AttributeError, ImportError, KeyError) as ex:
                    self.board.log("sensor %s: %s" % (e[2], ex))
            n = len(recs)
            q = sen.read(self, recs)
            if q is not None:
                if q[2] == filters.FAULT:
                    self.faults += 1
                if len(recs) > n:
                    quality[n] = q
            if e[1] & sensors.LEVEL:
                self.level_mm = sen.mm
                self.level_q = q
        self.n = len(recs)

    def records(self, battery_mv=None):
        # -> (records, quality) for a frame: the sensors' of this cycle, then the battery;
        # quality only for records that are not fine
        recs = self.recs
        while len(recs) > self.n:
            recs.pop()
        if battery_mv is not None:
            recs.append(record("b", f16(battery_mv / 1000)))
        return recs, self.quality
