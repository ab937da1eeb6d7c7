# The node: boot bookkeeping, the sampling loop, storm mode and alarms, the offline
# buffer and its backlog, ACKs and commands. Runs on any board (esp32, rp2, linux, sim).
#
# Every frame goes to the flash buffer before it is sent; the gateway's ACK removes it.
# Unacknowledged frames are resent oldest first with the exact same bytes. While no ACK
# comes back (link down) the node only probes with the oldest frame each cycle and marks
# new frames as backlog, so the gateway dates them from uptime, not from arrival.
from array import array

from firmware import filters
from firmware.buffer import Buffer
from firmware.clock import ticks_diff
from firmware.sampler import Sampler, f16
from firmware.state import State
from protocol import message as msg
from protocol.cbor import FrameError

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:

    def const(x):  # CPython stand-in for micropython.const
        return x


FIRMWARE_VERSION = "0.1.0"
HEALTHY_AFTER = 2  # cycles a boot completes before it can count as good (a deep-sleep wake: one)
HEALTHY_MS = 600000  # and this long up, with a frame acknowledged (or the link down: no fault of the node)
SAFE_RETRY_MS = 6 * 3600000  # healthy this long in safe mode, the node tries normal mode again,
SAFE_RETRY_MAX_MS = 7 * 86400000  # waiting twice as long after each try that failed, up to a week
# An underscored const() is no global and no interned name on the device (see tools/upload.py)
_WINDOW = const(8)  # frames in flight while the gateway answers
_RETRY_MS = const(3000)  # resend a frame not acknowledged after this long
_ACK_WAIT_MS = const(300)  # how long to listen after sending
_OFFLINE_AFTER = const(3)  # sends in a row without any ACK: the link is down
_CYCLE_BUDGET = const(40)  # send/listen rounds per cycle for draining a backlog
_HEALTH_MS = const(3600000)  # the node's health rides in a frame at least this often
_PROBE_MS = const(86400000)  # the largest free heap block is probed at boot and then daily


class Reset(Exception):
    # raised by a board's reset()/deepsleep() where the hardware would restart (sim, tests)
    def __init__(self, cause):
        super().__init__(cause)
        self.cause = cause


class Node:
    def __init__(self, board, cfg, link=None, link_clock=None, window=_WINDOW, retry_ms=_RETRY_MS):
        # link_clock: times resends (default: the board clock; a simulation whose sensors run
        # on virtual time passes a real clock here). window: frames in flight; retry_ms: resend
        # after this long without an ACK (a simulation next to its gateway resends sooner).
        self.board = board
        self.cfg = cfg
        self.clock = board.clock
        # ms modulo 2**30 for every interval (firmware/clock.py): small ints however long the
        # node is up; the full uptime (clock.ms()) only goes into frames. A simulated clock
        # without ticks() counts plain ms, which ticks_diff takes as well.
        self._now = getattr(board.clock, "ticks", board.clock.ms)
        self.link_clock = link_clock or board.clock
        self.window = window
        self.retry_ms = retry_ms
        self.node_id = cfg["node"]
        self.key = cfg["key_bytes"]
        self.interval_ms = cfg["interval_s"] * 1000
        self.storm_interval_ms = cfg["storm_interval_s"] * 1000
        th = cfg["thresholds"]
        self.alarm_mm = th["alarm_mm"]
        self.storm_mm = th["storm_mm"]
        self.rise_mm_min = th["rise_mm_min"]
        self.hysteresis_mm = th["hysteresis_mm"]
        self.state = State(board.path("state.json"), board.open)
        self.buffer = Buffer(board.path("buffer.bin"), cfg["buffer_slots"], cfg["slot_bytes"], board.open,
                             self.feed)  # fed between file operations of long buffer loops
        # when each slot was last sent, in 64 ms ticks of the link clock, + 1, modulo 2**16
        # (0: not yet). 16 bits are enough to tell "retry_ms ago or longer" and take 1 KB less
        # heap than ms in 32 (512 slots); a frame unsent for a multiple of 70 min waits once more.
        self.sent_ms = array("H", bytes(2 * cfg["buffer_slots"]))
        self.link = link if link is not None else board.uplink(cfg)
        if getattr(self.link, "feed", 0) is None:
            self.link.feed = self.feed  # LoRa waits seconds on the air: it feeds the watchdog meanwhile
        self.sampler = None  # stays None in safe mode: no sensor code runs
        self.wdt = None
        self.boot = 0
        self.seq = 0
        self.safe = False
        self.storm = False
        self.alarm = False
        self.calm_cycles = 0
        self.prev_level = None
        self.prev_ms = 0
        self.cycles = 0
        self.errors = 0  # cycles failed in a row
        self.offline = False
        self.unanswered = 0
        self.last_cmd_id = 0
        self.cmd_result = None
        self.send_info = True
        self.force_report = False
        self.reboot_pending = False
        self.last_report_ms = None
        self.counts = {"frames": 0, "acked": 0, "resent": 0, "rejects": 0, "cmd_ignored": 0, "cmd_refused": 0,
                       "loop_errors": 0,
                       "renumbered": 0, "discarded": 0}
        self.rejects = {}
        self.reset_cause = "unknown"
        self.unhealthy = 0
        self.safe_tries = 0  # tries of normal mode from safe mode that failed (state.json)
        self.resets = {}  # reset cause -> boots (state.json)
        self.health_ms = None  # when the last frame with the node's health was made
        self.largest_ms = None  # when the largest free heap block was last probed
        self.largest = 0

    # ------------------------------------------------------------ boot

    def start(self):
        st = self.state.load()
        cause = self.board.reset_cause()
        note = st.get("note")
        if note:
            cause = note
        wake = self._woken(st) if cause == "deepsleep" else None
        if wake is not None:
            # same boot, woken from deep sleep: continue its sequence numbers and its uptime
            self.boot = st["boot"]
            self.seq = wake[1]
            self.last_cmd_id = max(wake[2], _count(st.get("cmd")))
            self.send_info = False
            unhealthy = wake[3]
        else:
            self.boot = st.get("boot", 0) + 1
            # the last command counter applied, and never below the operator's counter when
            # this config was made: a wiped flash does not take back old commands (SPEC 6.6)
            self.last_cmd_id = max(_count(st.get("cmd")), self.cfg.get("cmd_floor", 0))
            # counted until this boot proves healthy; a boot the power cut short (power-on, an
            # ESP32's brown-out: both PWRON_RESET) proved nothing either way and is not counted
            prev = st.get("unhealthy", 0)
            unhealthy = prev if cause == "power_on" and prev else prev + 1
        self.reset_cause = cause
        # safe mode after safe_after failed boots in a row; a try of normal mode after healthy
        # hours in safe mode starts with one failure to spare
        self.safe = unhealthy > self.cfg["safe_after"] and cause != "safe_retry"
        self.safe_tries = st.get("safe_tries", 0)
        # interval and thresholds set by the gateway outlive a reset, unless the config on
        # flash changed since (a technician's new config wins)
        kept = st.get("set")
        if isinstance(kept, dict) and kept.get("base") == self._config_base():
            for k in ("interval_ms", "storm_interval_ms", "alarm_mm", "storm_mm", "rise_mm_min"):
                if isinstance(kept.get(k), int):
                    setattr(self, k, kept[k])
        self.unhealthy = unhealthy
        resume = getattr(self.clock, "resume", None)
        if wake is not None and resume is not None:
            resume(wake[4], wake[5])  # before anything times itself on the clock
        resets = st.get("resets")
        self.resets = resets = resets if isinstance(resets, dict) else {}
        if wake is None:
            resets[cause] = resets.get(cause, 0) + 1  # health: resets by cause (a wake is none)
        if wake is None or st.get("sleeping"):
            # the new boot counter is on flash before any frame carries it (a wake kept in
            # RTC memory writes nothing here: no flash wear per wake)
            self.state.save(boot=self.boot, unhealthy=unhealthy, note=None, sleeping=None, wake=None,
                            resets=resets)
        self.wdt = self.board.watchdog(self.cfg["watchdog_ms"])
        if not self.safe:
            self.sampler = Sampler(self.board, self.cfg)
        if wake is not None:
            # the rest of what the sleep kept: storm and alarm with their hysteresis, the
            # rise rate, the report and filter state
            self.storm, self.alarm, self.calm_cycles, self.prev_level, self.prev_ms = wake[6:11]
            self.last_report_ms, self.offline = wake[11:13]
            if self.sampler is not None:
                rep = self.sampler.reporter
                rep.last_value, rep.last_ms = wake[13:15]
                if self.sampler.burst.ema is not None:
                    self.sampler.burst.ema.value = wake[15]
        self.board.log("citynode %s node %s boot %d reset %s%s" % (
            FIRMWARE_VERSION, self.node_id, self.boot, cause, " SAFE MODE" if self.safe else ""))

    # ------------------------------------------------------------ one cycle

    def step(self, report=False, timeout_ms=_ACK_WAIT_MS):
        # The node's one driver (run(), the simulators and the fleet all call it): one cycle
        # of sample, report when due (always with report=True), send and listen (for ACKs up
        # to timeout_ms at a time; 0: only what already arrived), and the boot's health.
        # Returns ms until the next cycle, less what this one took (a fixed cadence). A failing
        # cycle is counted, logged and retried; five in a row reset the board.
        # (One function, not two: every name a device module adds is a qstr, see upload.py.)
        started = self._now()
        try:
            self.feed()
            report = report or self.force_report or self.send_info or self.cmd_result is not None
            s = self.sampler
            if s is None:
                last = self.last_report_ms
                report = report or last is None or ticks_diff(started, last) >= self.interval_ms
            else:
                s.sample()
                self.feed()
                report = self._evaluate(started, s) or report
            if report:
                self.report(started)
            self.transmit(timeout_ms)
            self.cycles += 1
            self._health()
            if self.reboot_pending:
                self.board.log("rebooting on command")
                self.state.save(note="command")
                self.board.reset()
            self.errors = 0
        except Reset:
            raise
        except Exception as e:  # noqa: BLE001 - the node must survive any one bad cycle
            self.errors += 1
            self.counts["loop_errors"] += 1
            self.board.log("cycle failed: %r" % (e,))
            if self.errors >= 5:
                self.state.save(note="loop_errors")
                self.board.reset()
            return 5000
        wait = self.storm_interval_ms if self.storm or self.alarm else self.interval_ms
        fit = getattr(self.link, "fit", None)
        if fit is not None:
            wait = fit(wait, self)  # LoRa: stretched to the duty cycle, and its window and resends (lora_link.py)
        return max(0, wait - ticks_diff(self._now(), started))

    def _health(self):
        # A boot is healthy once it has completed HEALTHY_AFTER cycles, been up HEALTHY_MS and
        # had a frame acknowledged (or its link is down: an outage is not the node's fault).
        # Normal mode: the failure count is cleared. Safe mode: once healthy for the retry
        # time, the node resets into normal mode; a try that fails doubles the next wait.
        if not (self.safe or self.unhealthy or self.safe_tries):
            return  # healthy already
        up = self.clock.ms()
        if self.cycles < HEALTHY_AFTER or up < HEALTHY_MS or not (self.counts["acked"] or self.offline):
            return
        if not self.safe:
            if self.unhealthy or self.safe_tries:
                self.state.save(unhealthy=0, safe_tries=None)
                self.unhealthy = self.safe_tries = 0
            return
        if up >= min(SAFE_RETRY_MS << min(self.safe_tries, 5), SAFE_RETRY_MAX_MS):
            self.board.log("safe mode: healthy for %d h, trying normal mode" % (up // 3600000))
            self.state.save(unhealthy=self.cfg["safe_after"], safe_tries=self.safe_tries + 1, note="safe_retry")
            self.board.reset()

    def _evaluate(self, now, s):
        # storm mode with hysteresis and the alarm threshold; -> True when a frame is due
        lvl = s.level_mm
        due = False
        if lvl is not None and (s.level_q is None or s.level_q[2] != filters.FAULT):
            rise = 0
            if self.prev_level is not None:
                rise = (lvl - self.prev_level) * 60000 // max(1, ticks_diff(now, self.prev_ms))
            self.prev_level = lvl
            self.prev_ms = now
            if not self.storm and (lvl >= self.storm_mm or rise >= self.rise_mm_min):
                self.storm = True
                self.calm_cycles = 0
                self.board.log("storm mode on: level %d mm, rising %d mm/min" % (lvl, rise))
            elif self.storm:
                calm = lvl < self.storm_mm - self.hysteresis_mm and rise < self.rise_mm_min // 2
                self.calm_cycles = self.calm_cycles + 1 if calm else 0
                if self.calm_cycles >= 3:
                    self.storm = False
                    self.board.log("storm mode off: level %d mm" % lvl)
            if not self.alarm and lvl >= self.alarm_mm:
                self.alarm = True
                due = True  # an alarm goes out at once
                self.board.log("ALARM: level %d mm >= %d mm" % (lvl, self.alarm_mm))
            elif self.alarm and lvl < self.alarm_mm - self.hysteresis_mm:
                self.alarm = False
                due = True
                self.board.log("alarm cleared: level %d mm" % lvl)
        if self.storm:
            due = True
        if s.reporter.due(lvl, now):
            due = True
        return due

    def report(self, cycle_ms=None):
        # Encode one data frame, store it in the buffer, and let transmit() send it
        now = self.clock.ms()  # the uptime the frame carries
        t = self._now()
        cycle_ms = t if cycle_ms is None else cycle_ms
        battery = self.board.battery_mv()
        s = self.sampler
        if s is None:
            from protocol.senml import record

            recs = [record("b", f16(battery / 1000))] if battery is not None else [record("status", "safe")]
            quality = None
        else:
            recs, quality = s.records(battery)
            if not recs:
                recs = [record_status("no sensor")]
            s.reporter.reported(s.level_mm, cycle_ms)
        flags = (msg.F_STORM if self.storm else 0) | (msg.F_ALARM if self.alarm else 0)
        flags |= (msg.F_SAFE if self.safe else 0) | (msg.F_BACKLOG if self.offline else 0)
        info = None
        if self.send_info:
            info = {msg.I_FW: FIRMWARE_VERSION, msg.I_RESET: self.reset_cause, msg.I_BOARD: self.board.name,
                    msg.I_INTERVAL: self.interval_ms // 1000, msg.I_LEVEL_MM: [self.alarm_mm, self.storm_mm]}
            if self.counts["discarded"]:
                info[6] = self.counts["discarded"]  # SPEC.md 6.1: frames discarded for a retired key
        if self.send_info or self.health_ms is None or ticks_diff(t, self.health_ms) >= _HEALTH_MS:
            info = self._health_info(info or {}, t)
        # a LoRa link encodes in the compact profile (SPEC.md 13) and adds info 12, others in full
        encode = getattr(self.link, "encode", msg.encode_data)
        frame = encode(self.key, self.node_id, self.boot, self.seq, now, recs, self.cfg["key_version"],
                       time_s=self.clock.time_s(), quality=quality, flags=flags, info=info, cmd_result=self.cmd_result)
        slot = self.buffer.put(self.boot, self.seq, frame)
        if slot < 0:
            self.link.send(frame)  # too big for a slot: live only
        else:
            self.sent_ms[slot] = 0
        self.seq += 1
        self.counts["frames"] += 1
        self.send_info = False
        self.cmd_result = None
        self.force_report = False
        self.last_report_ms = cycle_ms
        return frame

    def _health_info(self, info, now):
        # the node's health (SPEC 6.1 info 7-11), with the boot frame and then hourly
        self.health_ms = now
        import gc

        free = getattr(gc, "mem_free", None)  # MicroPython only: the CPython sim has no heap to report
        if free is not None:
            if self.largest_ms is None or ticks_diff(now, self.largest_ms) >= _PROBE_MS:
                self.largest_ms = now
                self.largest = _largest_free()
            info[msg.I_HEAP] = [free(), self.largest]
        b = self.buffer
        c = b.counts
        info[msg.I_BUFFER] = [b.live, b.bytes, c["torn"], c["dropped"]]
        info[msg.I_FLASH_ERRORS] = c["flash"]
        info[msg.I_RESETS] = self.resets
        info[msg.I_SAFE_S] = self.clock.ms() // 1000 if self.safe else 0
        return info

    # ------------------------------------------------------------ link

    def pump(self):
        # Send what is due from the buffer, oldest first. Returns frames sent.
        tick = (self.link_clock.ms() >> 6) + 1
        retry = self.retry_ms >> 6
        limit = 1 if self.offline else self.window
        sent = inflight = 0
        pos = 0
        buf = self.buffer
        while sent + inflight < limit:
            slot, pos = buf.oldest(pos)
            if slot < 0:
                break
            pos += 1
            last = self.sent_ms[slot]
            if last and ((tick - last) & 0xFFFF) < retry:
                inflight += 1
                continue
            self.feed()  # a send may block up to a lookup's bound (links.py): never 8 in a row unfed
            if self.link.send(buf.frame(slot)) is None:
                break  # not now (the LoRa duty cycle): it stays due, and the link is not down
            if last:
                self.counts["resent"] += 1
            self.sent_ms[slot] = (tick & 0xFFFF) or 1
            sent += 1
            self.unanswered += 1
            if self.unanswered >= _OFFLINE_AFTER and not self.offline:
                self.offline = True
                self.board.log("link down: no ACK for %d frames" % self.unanswered)
        return sent

    def transmit(self, timeout_ms=_ACK_WAIT_MS):
        # Send and listen until the buffer is empty, the link is quiet, or the budget is spent
        for _ in range(_CYCLE_BUDGET):
            self.feed()
            sent = self.pump()
            if not sent and not self.buffer.live:
                break
            got = self.receive(self.link.poll(timeout_ms))
            if not got and not sent:
                break
            if not got and self.offline:
                break

    def receive(self, messages):
        n = 0
        for m in messages:
            try:
                d = msg.decode(m, self._key_for)
            except FrameError as e:
                self.counts["rejects"] += 1
                self.rejects[e.reason] = self.rejects.get(e.reason, 0) + 1
                continue
            n += 1
            self.unanswered = 0  # the gateway answered: the link works, whatever it said
            if self.offline:
                self.offline = False
                self.board.log("link up: %d frames in backlog" % self.buffer.live)
            if d["type"] == "ack":
                self.counts["acked"] += self.buffer.ack(d["boot"], d["seq"], d["cum"])
            elif d["type"] == "cmd":
                self.command(d)
            elif d["type"] in ("boot", "retired"):
                self.behind(d)
        return n

    def behind(self, d):
        # The gateway did not take frame (boot, seq): that boot is behind what it has seen (a
        # wiped or replaced flash began again at boot 1). Move the boot counter past min_boot
        # (on flash before any frame carries it), then resend the frame renumbered under the
        # current boot. Only frames the gateway names are renumbered: none is forwarded twice.
        buf = self.buffer
        pos = 0
        while True:
            slot, pos = buf.oldest(pos)
            if slot < 0:
                return  # not (or no longer) ours to resend
            if buf.boot[slot] == d["boot"] and buf.seq[slot] == d["seq"]:
                break
            pos += 1
        kv = self.cfg["key_version"]
        if "min_boot" not in d:
            # retired (SPEC.md 6.6): the gateway no longer holds the key this frame was MACed with
            # (the node was re-keyed), so it can never be taken: drop it, count it, say so. A
            # frame MACed with the current key is kept whatever the message says.
            frame = buf.frame(slot)
            cose = msg.cose
            if frame is None or cose.parse(frame)[1] == cose.protected_header(self.node_id.encode(), kv):
                return
            buf.ack(d["boot"], d["seq"])
            n = self.counts["discarded"] = self.counts["discarded"] + 1
            self.send_info = True
            self.board.log("discarded boot %d seq %d: old key, gateway has v%d (%d)" % (
                d["boot"], d["seq"], d["key_version"], n))
            return
        if d["min_boot"] > self.boot:
            self.board.log("boot %d is behind the gateway: now boot %d" % (self.boot, d["min_boot"]))
            self.boot = d["min_boot"]
            self.seq = 0
            self.state.save(boot=self.boot)
            self.send_info = True
        frame = msg.renumber(self.key, self.node_id, buf.frame(slot), self.boot, self.seq, kv)
        buf.ack(d["boot"], d["seq"])
        slot = buf.put(self.boot, self.seq, frame)
        if slot < 0:
            self.link.send(frame)  # grew past a slot: live only, as report() does
        else:
            self.sent_ms[slot] = 0
        self.seq += 1
        self.counts["renumbered"] += 1

    def _key_for(self, node):
        return self.key if node == self.node_id else None

    # ------------------------------------------------------------ commands

    def command(self, d):
        # a type 3 message: checked and applied or refused in firmware/commands.py
        if d["boot"] != self.boot:
            self.counts["cmd_ignored"] += 1  # relayed for another boot: the gateway sends it again
            return
        from firmware import commands  # loaded when a command comes: no heap before

        commands.handle(self, d)
        if self.reboot_pending:
            self.report()  # the result must leave before the reset

    def _config_base(self):
        th = self.cfg["thresholds"]
        return [self.cfg["interval_s"], self.cfg["storm_interval_s"], th["alarm_mm"], th["storm_mm"],
                th["rise_mm_min"]]

    # ------------------------------------------------------------ running

    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    # ------------------------------------------------------------ deep sleep

    def _woken(self, st):
        # What the last deep sleep kept for this wake (see _keep), from RTC memory (ESP32) or
        # from flash; None when there is none for this boot (then this is a new boot).
        w = None
        rtc = getattr(self.board, "rtc_memory", None)
        if rtc is not None:
            try:
                import json

                w = json.loads(rtc())
            except (TypeError, ValueError, OSError):  # empty or garbled RTC memory
                w = None
        if not isinstance(w, list) and st.get("sleeping"):
            w = st.get("wake")
        if not isinstance(w, list) or len(w) != 16 or w[0] != st.get("boot"):
            return None
        return w

    def _keep(self, ms):
        # A wake runs one cycle: that cycle, completed without a failure, proves the boot
        # healthy (a normal boot needs HEALTHY_AFTER). Kept for the wake, as a list (names
        # cost device RAM): boot, seq, last command, unhealthy, uptime at the wake, time
        # offset, storm, alarm, calm cycles, previous level and its ms, last report ms,
        # offline, the reporter's last value and ms, the EMA. In the ESP32's RTC memory
        # (kept through deep sleep, lost with the power), else in state.json.
        rtc = getattr(self.board, "rtc_memory", None)
        if self.errors == 0 and self.cycles >= 1:
            if self.unhealthy and rtc is not None:
                self.state.save(unhealthy=0)  # on flash once per boot, for the next real reset
            self.unhealthy = 0
        s = self.sampler
        rep = s.reporter if s is not None else None
        ema = s.burst.ema if s is not None else None
        w = [self.boot, self.seq, self.last_cmd_id, self.unhealthy, self.clock.ms() + ms,
             getattr(self.clock, "_unix_offset", None), self.storm, self.alarm, self.calm_cycles,
             self.prev_level, self.prev_ms, self.last_report_ms, self.offline,
             rep.last_value if rep is not None else None, rep.last_ms if rep is not None else None,
             ema.value if ema is not None else None]
        if rtc is not None:
            import json

            rtc(json.dumps(w))
        else:
            self.state.save(sleeping=True, unhealthy=self.unhealthy, wake=w)

    def sleep(self, ms):
        # light sleep in slices the watchdog survives; deep sleep saves what the wake needs
        mode = self.cfg["sleep"]
        # a backlog the gateway is not answering for waits in flash: a battery node sleeps on
        # and probes once per wake (a drain while the gateway answers stays awake)
        if mode == "deep" and hasattr(self.board, "deepsleep") and (not self.buffer.live or self.offline):
            self._keep(ms)
            self.board.deepsleep(ms)
            return
        step = max(1, getattr(self.wdt, "timeout_ms", self.cfg["watchdog_ms"]) // 2)
        # on the board's own console the node listens while it waits: a technician's Ctrl-C
        # (citynode flash, mpremote) stops it at once, not at its next cycle, and a late ACK
        # or a command is not left in the line
        # (a simulation whose link waits in real time while its world runs in virtual time
        # sleeps as before)
        listen = getattr(self.link, "_interruptible", False) and getattr(self.link, "clock", None) is self.clock
        while ms > 0:
            self.feed()
            if listen:
                t0 = self._now()
                self.receive(self.link.poll(min(ms, step)))
                ms -= max(1, ticks_diff(self._now(), t0))
            else:
                self.board.sleep_ms(min(ms, step), mode == "light")
                ms -= step

    def run(self, until_ms=None, max_cycles=None, stop=None, report=False, timeout_ms=_ACK_WAIT_MS):
        # The main loop: step, then sleep what step says. Returns at until_ms (board clock),
        # after max_cycles, or when stop() is true; on hardware only through a reset.
        # report, timeout_ms: passed to step (a simulation that sends frame after frame)
        while True:
            if until_ms is not None and self.clock.ms() >= until_ms:
                return
            if max_cycles is not None and self.cycles >= max_cycles:
                return
            if stop is not None and stop():
                return
            wait = self.step(report, timeout_ms)
            if until_ms is not None:
                wait = min(wait, max(0, until_ms - self.clock.ms()))
            self.sleep(wait)


def _count(v):
    return v if isinstance(v, int) else 0


def _largest_free():
    # -> the largest free heap block, probed (MicroPython has no call for it): 32 KB (the
    # budget's least, hil_tests/test_port.py) if that allocates, else halving down to 1 KB; 0
    # below that. A transient allocation, so the node probes at boot and then daily only.
    n = 32768
    while n >= 1024:
        try:
            b = bytearray(n)
        except MemoryError:
            n //= 2
            continue
        del b
        return n
    return 0


def record_status(text):
    from protocol.senml import record

    return record("status", text)
