# The node's storm and alarm policy, and the settings the operator may change (interval and
# thresholds, by the gateway's commands): storm mode with hysteresis, the alarm at once,
# how long to wait until the next cycle, and the flags a frame carries. It consumes one
# level reading per cycle (mm, or None when there is no good one) and knows no sensor.
from firmware.clock import ticks_diff
from protocol import message as msg


class Policy:
    def __init__(self, cfg, log):
        th = cfg["thresholds"]
        self.interval_ms = cfg["interval_s"] * 1000
        self.storm_interval_ms = cfg["storm_interval_s"] * 1000
        self.alarm_mm = th["alarm_mm"]
        self.storm_mm = th["storm_mm"]
        self.rise_mm_min = th["rise_mm_min"]
        self.hysteresis_mm = th["hysteresis_mm"]
        self.log = log
        self.storm = False
        self.alarm = False
        self.calm_cycles = 0
        self.prev_level = None  # the reference reading of the rise, and its ticks
        self.prev_ms = 0
        self.ups = 0  # readings in a row rising at least rise_mm_min
        self.last_ms = None  # ticks of the last reading

    def due(self, level_mm, now):
        # one level reading (mm; None: no good one) at `now` (ticks, firmware/clock.py) -> True
        # when a frame is due
        lvl = level_mm
        due = False
        if lvl is not None:
            # the rise against a reading at least a minute old (the reference moves on once
            # it is, unless the level rises): at a 10 s interval the noise between two readings is no rise. Storm
            # mode on a rise needs two readings in a row when they come less than a minute
            # apart, or when the rise is a jump (over 10 times the storm rise)
            rise = 0
            short = self.last_ms is not None and ticks_diff(now, self.last_ms) < 60000
            self.last_ms = now
            if self.prev_level is None:
                self.prev_level, self.prev_ms = lvl, now
            else:
                dt = ticks_diff(now, self.prev_ms)
                rise = (lvl - self.prev_level) * 60000 // max(60000, dt)
                if dt >= 60000 and rise < self.rise_mm_min:  # a rise is measured from before it
                    self.prev_level, self.prev_ms = lvl, now
            self.ups = self.ups + 1 if rise >= self.rise_mm_min else 0
            need = 2 if short or rise > 10 * self.rise_mm_min else 1
            if not self.storm and (lvl >= self.storm_mm or self.ups >= need):
                self.storm = True
                self.calm_cycles = 0
                self.log("storm mode on: level %d mm, rising %d mm/min" % (lvl, rise))
            elif self.storm:
                calm = lvl < self.storm_mm - self.hysteresis_mm and rise < self.rise_mm_min // 2
                self.calm_cycles = self.calm_cycles + 1 if calm else 0
                if self.calm_cycles >= 3:
                    self.storm = False
                    self.log("storm mode off: level %d mm" % lvl)
            if not self.alarm and lvl >= self.alarm_mm:
                self.alarm = True
                due = True  # an alarm goes out at once
                self.log("ALARM: level %d mm >= %d mm" % (lvl, self.alarm_mm))
            elif self.alarm and lvl < self.alarm_mm - self.hysteresis_mm:
                self.alarm = False
                due = True
                self.log("alarm cleared: level %d mm" % lvl)
        return due or self.storm

    def flags(self):
        # -> (the flags of the next frame, ms to the next cycle: the interval of the mode it is in)
        wait = self.storm_interval_ms if self.storm or self.alarm else self.interval_ms
        return (msg.F_STORM if self.storm else 0) | (msg.F_ALARM if self.alarm else 0), wait

    def settings(self, cfg, st=None):
        # What the commands set: -> a map for state.json; settings(cfg, st) restores that map
        # (those the gateway set outlive a reset, unless the config on flash changed since:
        # a technician's new config wins)
        names = ("interval_ms", "storm_interval_ms", "alarm_mm", "storm_mm", "rise_mm_min")
        th = cfg["thresholds"]  # the config's own: a kept map counts only while they are unchanged
        base = [cfg["interval_s"], cfg["storm_interval_s"], th["alarm_mm"], th["storm_mm"], th["rise_mm_min"]]
        if st is None:
            st = {"base": base}
            for k in names:
                st[k] = getattr(self, k)
            return st
        if isinstance(st, dict) and st.get("base") == base:
            for k in names:
                if isinstance(st.get(k), int):
                    setattr(self, k, st[k])

    def command(self, op, arg):
        # an operator's "interval" (s) or "thresholds" ({alarm_m, storm_m, rise_mm_min})
        # command, its argument already checked (protocol/command.py, firmware/commands.py)
        if op == "interval":
            self.interval_ms = arg * 1000
            self.storm_interval_ms = min(self.storm_interval_ms, self.interval_ms)
            return
        for k in arg:
            v = arg[k]
            if k == "rise_mm_min":
                self.rise_mm_min = int(v)
            elif k == "alarm_m":
                self.alarm_mm = int(round(v * 1000))  # 1.001 m is 1001 mm (int() cut it to 1000)
            else:
                self.storm_mm = int(round(v * 1000))
