# The node: one cycle of sample, decide, report, send and listen, composed of its parts.
# Runs on any board (esp32, rp2, linux, sim).
#
#   health.py    boot counter, reset cause, safe mode, watchdog, its health, what a deep sleep keeps
#   policy.py    storm and alarm from the level reading; interval and thresholds
#   commands.py  the operator's signed commands (loaded when one comes)
#   uplink.py    the flash buffer, the send window, resends and ACKs (paced by the link)
#   sampler.py   the configured sensors, their readings and the records of a frame
#
# The node itself makes the frames (boot, seq, flags, info) and hands what the gateway
# says to the part it concerns.
from firmware import FirmwareError, filters
from firmware.buffer import Buffer
from firmware.clock import ticks_diff
from firmware.health import Health
from firmware.policy import Policy
from firmware.sampler import Sampler, f16
from firmware.uplink import Pace, Uplink
from protocol import message as msg
from protocol.cbor import FrameError

FIRMWARE_VERSION = "0.1.0"


class Reset(FirmwareError):
    # raised by a board's reset()/deepsleep() where the hardware would restart (sim, tests)
    def __init__(self, cause):
        super().__init__(cause)
        self.cause = cause


class Node:
    def __init__(self, board, cfg, link=None):
        # link: the uplink (default: the board's); its `pace`, if it has one, says how it is
        # driven (firmware/uplink.py Pace), else the field's pace on the board clock
        self.board = board
        self.cfg = cfg
        self.counts = {"frames": 0, "acked": 0, "resent": 0, "rejects": 0, "cmd_ignored": 0, "cmd_refused": 0,
                       "loop_errors": 0, "renumbered": 0, "discarded": 0}
        self.health = h = Health(board, cfg)
        buf = Buffer(board.path("buffer.bin"), cfg["buffer_slots"], cfg["slot_bytes"], board.open,
                     h.feed)  # fed between file operations of long buffer loops
        link = link if link is not None else board.uplink(cfg)
        self.uplink = Uplink(link, getattr(link, "pace", None) or Pace(board.clock), buf, self.counts, board.log,
                             h.feed)
        self.policy = Policy(cfg, board.log)
        self.sampler = None  # stays None in safe mode: no sensor code runs
        self.seq = 0
        self.send_info = True
        self.last_report_ms = None
        # the commands' state (firmware/commands.py): the last counter applied, the result for
        # the next frame, a reboot due once that result is out
        self.last_cmd_id = 0
        self.cmd_result = None
        self.cmd_quiet = False  # the result waits for the next due frame (commands.py: a refused compact command)
        self.reboot_pending = False

    # ------------------------------------------------------------ boot

    def start(self):
        h = self.health
        st, wake = h.start()
        cmd = st.get("cmd")
        cmd = cmd if isinstance(cmd, int) else 0
        if wake is not None:
            # same boot, woken from deep sleep: continue its sequence numbers
            self.seq = wake["seq"]
            self.last_cmd_id = max(wake["cmd"], cmd)
            self.send_info = False
        else:
            # the last command counter applied, and never below the operator's counter when
            # this config was made: a wiped flash does not take back old commands (SPEC 6.6)
            self.last_cmd_id = max(cmd, self.cfg.get("cmd_floor", 0))
        self.policy.settings(self.cfg, st.get("set"))
        if not h.safe:
            self.sampler = Sampler(self.board, self.cfg)
        if wake is not None:
            self._resume(wake)
        self.board.log("citynode %s node %s boot %d reset %s%s" % (
            FIRMWARE_VERSION, self.cfg["node"], h.boot, h.reset_cause, " SAFE MODE" if h.safe else ""))

    # ------------------------------------------------------------ one cycle

    def step(self):
        # The node's one driver (run(), the simulators and the fleet all call it): one cycle
        # of sample, report when due (every cycle when the link's pace says so), send and
        # listen, and the boot's health. Returns ms until the next cycle, less what this one
        # took (a fixed cadence). A failing cycle is counted, logged and retried; five in a
        # row reset the board.
        clock = self.board.clock
        # ms modulo 2**30 for every interval (firmware/clock.py): small ints however long the
        # node is up; the full uptime (clock.ms()) only goes into frames. A simulated clock
        # without ticks() counts plain ms, which ticks_diff takes as well.
        tick = getattr(clock, "ticks", clock.ms)
        started = tick()
        h = self.health
        up = self.uplink
        try:
            h.feed()
            report = up.pace.report or self.send_info or (self.cmd_result is not None and not self.cmd_quiet)
            s = self.sampler
            if s is None:
                last = self.last_report_ms
                report = report or last is None or ticks_diff(started, last) >= self.policy.interval_ms
            else:
                s.sample()
                h.feed()
                due = self.policy.due(
                    None if s.level_q is not None and s.level_q[2] == filters.FAULT else s.level_mm, started)
                report = s.reporter.due(s.level_mm, started) or due or report
            if report:
                self.report(started)
            up.transmit(self.receive)
            h.done(self.counts["acked"] or up.offline)
            if self.reboot_pending:
                self.board.log("rebooting on command")
                h.reset("command")
            h.errors = 0
        except Exception as e:  # noqa: BLE001 - the node must survive any one bad cycle
            if isinstance(e, Reset):
                raise
            self.counts["loop_errors"] += 1
            h.error(e)
            return 5000
        wait = self.policy.flags()[1]
        fit = getattr(up.link, "fit", None)
        if fit is not None:
            wait = fit(wait, self)  # LoRa: stretched to the duty cycle, and its window and resends (lora_link.py)
        return max(0, wait - ticks_diff(tick(), started))

    def report(self, cycle_ms=None):
        # Encode one data frame, store it in the buffer, and let the uplink send it
        clock = self.board.clock
        now = clock.ms()  # the uptime the frame carries
        t = getattr(clock, "ticks", clock.ms)()  # ticks for the intervals (see step)
        cycle_ms = t if cycle_ms is None else cycle_ms
        battery = self.board.battery_mv()
        h = self.health
        p = self.policy
        up = self.uplink
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
        flags = p.flags()[0] | (msg.F_SAFE if h.safe else 0) | (msg.F_BACKLOG if up.offline else 0)
        info = None
        if self.send_info:
            info = {msg.I_FW: FIRMWARE_VERSION, msg.I_RESET: h.reset_cause, msg.I_BOARD: self.board.name,
                    msg.I_INTERVAL: p.interval_ms // 1000, msg.I_LEVEL_MM: [p.alarm_mm, p.storm_mm]}
            if self.counts["discarded"]:
                info[6] = self.counts["discarded"]  # SPEC.md 6.1: frames discarded for a retired key
        info = h.info(info, t, up.buffer, self.send_info)
        # a LoRa link encodes in the compact profile (SPEC.md 13) and adds info 12, others in full
        encode = getattr(up.link, "encode", msg.encode_data)
        frame = encode(self.cfg["key_bytes"], self.cfg["node"], h.boot, self.seq, now, recs, self.cfg["key_version"],
                       time_s=clock.time_s(), quality=quality, flags=flags, info=info, cmd_result=self.cmd_result)
        up.put(h.boot, self.seq, frame)
        self.seq += 1
        self.counts["frames"] += 1
        self.send_info = False
        self.cmd_result = None
        self.cmd_quiet = False
        self.last_report_ms = cycle_ms
        return frame

    # ------------------------------------------------------------ what the gateway says

    def receive(self, messages):
        # -> how many were good; each goes to the part it concerns
        n = 0
        up = self.uplink
        for m in messages:
            if type(m) is dict:
                # a LoRa link's compact signed command (SPEC.md 13.6), as yet unverified: only its
                # own MAC, checked with the command key in commands.py, says whose it is
                self.command(m)
                continue
            try:
                d = msg.decode(m, self._key_for)
            except FrameError as e:
                self.counts["rejects"] += 1
                up.rejects[e.reason] = up.rejects.get(e.reason, 0) + 1
                continue
            n += 1
            up.unanswered = 0  # the gateway answered: the link works, whatever it said
            if up.offline:
                up.offline = False
                self.board.log("link up: %d frames in backlog" % up.buffer.live)
            if d["type"] == "ack":
                self.counts["acked"] += up.buffer.ack(d["boot"], d["seq"], d["cum"])
            elif d["type"] == "cmd":
                self.command(d)
            elif d["type"] in ("boot", "retired"):
                self.behind(d)
        return n

    def command(self, d):
        # a type 3 message: checked and applied or refused in firmware/commands.py
        if d["boot"] is not None and d["boot"] != self.health.boot:
            self.counts["cmd_ignored"] += 1  # relayed for another boot: the gateway sends it again
            return
        from firmware import commands  # loaded when a command comes: no heap before

        commands.handle(self, d)
        if self.reboot_pending:
            self.report()  # the result must leave before the reset

    def behind(self, d):
        # The gateway did not take frame (boot, seq): that boot is behind what it has seen (a
        # wiped or replaced flash began again at boot 1). Move the boot counter past min_boot
        # (on flash before any frame carries it), then resend the frame renumbered under the
        # current boot. Only frames the gateway names are renumbered: none is forwarded twice.
        up = self.uplink
        buf = up.buffer
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
            if frame is None or cose.parse(frame)[1] == cose.protected_header(self.cfg["node"].encode(), kv):
                return
            buf.ack(d["boot"], d["seq"])
            n = self.counts["discarded"] = self.counts["discarded"] + 1
            self.send_info = True
            self.board.log("discarded boot %d seq %d: old key, gateway has v%d (%d)" % (
                d["boot"], d["seq"], d["key_version"], n))
            return
        h = self.health
        if d["min_boot"] > h.boot:
            self.board.log("boot %d is behind the gateway: now boot %d" % (h.boot, d["min_boot"]))
            h.boot = d["min_boot"]
            self.seq = 0
            h.state.save(boot=h.boot)
            self.send_info = True
        frame = msg.renumber(self.cfg["key_bytes"], self.cfg["node"], buf.frame(slot), h.boot, self.seq, kv)
        buf.ack(d["boot"], d["seq"])
        up.put(h.boot, self.seq, frame)  # grew past a slot: live only, as report() does
        self.seq += 1
        self.counts["renumbered"] += 1

    def _key_for(self, node):
        return self.cfg["key_bytes"] if node == self.cfg["node"] else None

    # ------------------------------------------------------------ sleeping

    def sleep(self, ms):
        # light sleep in slices the watchdog survives; deep sleep keeps what the wake needs
        h = self.health
        board = self.board
        up = self.uplink
        mode = self.cfg["sleep"]
        # a backlog the gateway is not answering for waits in flash: a battery node sleeps on
        # and probes once per wake (a drain while the gateway answers stays awake)
        if mode == "deep" and hasattr(board, "deepsleep") and (not up.buffer.live or up.offline):
            h.save(self._keep(board.clock.ms() + ms))
            board.deepsleep(ms)
            return
        step = max(1, getattr(h.wdt, "timeout_ms", self.cfg["watchdog_ms"]) // 2)
        # on the board's own console the node listens while it waits: a technician's Ctrl-C
        # (citynode flash, mpremote) stops it at once, not at its next cycle, and a late ACK
        # or a command is not left in the line (a simulation whose link waits in real time
        # while its world runs in virtual time sleeps as before)
        link = up.link
        listen = getattr(link, "console", False) and getattr(link, "clock", None) is board.clock
        tick = getattr(board.clock, "ticks", board.clock.ms)
        while ms > 0:
            h.feed()
            if listen:
                t0 = tick()
                self.receive(link.poll(min(ms, step)))
                ms -= max(1, ticks_diff(tick(), t0))
            else:
                board.sleep_ms(min(ms, step), mode == "light")
                ms -= step

    def _keep(self, wake_ms):
        # What a deep-sleep wake resumes of the node and its parts, by name (health.WAKE;
        # Health.save adds the boot's own and stores it). wake_ms: the uptime at the wake.
        p = self.policy
        keep = {"seq": self.seq, "cmd": self.last_cmd_id, "uptime_ms": wake_ms,
                "unix_offset": getattr(self.board.clock, "_unix_offset", None),
                "storm": p.storm, "alarm": p.alarm, "calm_cycles": p.calm_cycles,
                "prev_level": p.prev_level, "prev_ms": p.prev_ms, "ups": p.ups, "last_ms": p.last_ms,
                "last_report_ms": self.last_report_ms, "offline": self.uplink.offline,
                "report_value": None, "report_ms": None, "ema": None}
        s = self.sampler
        if s is not None:
            keep["report_value"] = s.reporter.last_value
            keep["report_ms"] = s.reporter.last_ms
            if s.ema is not None:
                keep["ema"] = s.ema.value
        return keep

    def _resume(self, keep):
        # the rest of what the sleep kept (see _keep): storm and alarm with their hysteresis,
        # the rise reference and the rises in a row, the last report, the link's state, the
        # report and filter state
        p = self.policy
        p.storm = keep["storm"]
        p.alarm = keep["alarm"]
        p.calm_cycles = keep["calm_cycles"]
        p.prev_level = keep["prev_level"]
        p.prev_ms = keep["prev_ms"]
        p.ups = keep["ups"]
        p.last_ms = keep["last_ms"]
        self.last_report_ms = keep["last_report_ms"]
        self.uplink.offline = keep["offline"]
        s = self.sampler
        if s is not None:
            s.reporter.last_value = keep["report_value"]
            s.reporter.last_ms = keep["report_ms"]
            if s.ema is not None:
                s.ema.value = keep["ema"]

    def run(self, until_ms=None, max_cycles=None, stop=None):
        # The main loop: step, then sleep what step says. Returns at until_ms (board clock),
        # after max_cycles, or when stop() is true; on hardware only through a reset.
        clock = self.board.clock
        while True:
            if until_ms is not None and clock.ms() >= until_ms:
                return
            if max_cycles is not None and self.health.cycles >= max_cycles:
                return
            if stop is not None and stop():
                return
            wait = self.step()
            if until_ms is not None:
                wait = min(wait, max(0, until_ms - clock.ms()))
            self.sleep(wait)


def record_status(text):
    from protocol.senml import record

    return record("status", text)
