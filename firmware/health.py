# The node's boot and health: the boot counter (on flash before any frame carries it), the
# reset cause and resets by cause, boots in a row that never became healthy (-> safe mode,
# and the way back out of it), the watchdog, the health a frame reports (SPEC 6.1 info 7-11),
# and what a deep sleep keeps for its wake.
from firmware.clock import ticks_diff
from firmware.state import State
from protocol import message as msg

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:

    def const(x):  # CPython stand-in for micropython.const
        return x


HEALTHY_AFTER = 2  # cycles a boot completes before it can count as good (a deep-sleep wake: one)
HEALTHY_MS = 600000  # and this long up, with a frame acknowledged (or the link down: no fault of the node)
SAFE_RETRY_MS = 6 * 3600000  # healthy this long in safe mode, the node tries normal mode again,
SAFE_RETRY_MAX_MS = 7 * 86400000  # waiting twice as long after each try that failed, up to a week
_HEALTH_MS = const(3600000)  # the node's health rides in a frame at least this often
_PROBE_MS = const(86400000)  # the largest free heap block is probed at boot and then daily

# What a deep sleep keeps for its wake, by name: boot and unhealthy (ours), the uptime at the
# wake and the time offset (the clock's), and what Node.sleep adds for its parts (sequence,
# last command, storm and alarm state, rise reference, last report, link offline, the
# reporter's last value and ticks, the EMA, the rising readings in a row and the last
# reading's ticks). A wake that lacks any of them is a new boot. Earlier firmware kept the
# first 16 as a list in this order: such a keep (in state.json or RTC memory, left by a node
# updated while it slept) is read by position, the rise count and last reading as unknown.
WAKE = ("boot", "seq", "cmd", "unhealthy", "uptime_ms", "unix_offset", "storm", "alarm", "calm_cycles",
        "prev_level", "prev_ms", "last_report_ms", "offline", "report_value", "report_ms", "ema",
        "ups", "last_ms")


class Health:
    def __init__(self, board, cfg):
        self.board = board
        self.cfg = cfg
        # state.json; its "resets" (cause -> boots) and "safe_tries" (tries of normal mode from
        # safe mode that failed) are read from it where they are needed
        self.state = State(board.path("state.json"), board.open)
        self.wdt = None  # armed by start()
        self.boot = 0
        self.unhealthy = 0
        self.reset_cause = "unknown"
        self.safe = False
        self.cycles = 0
        self.errors = 0  # cycles failed in a row
        self.health_ms = None  # when the last frame with the node's health was made
        self.largest_ms = None  # when the largest free heap block was last probed
        self.largest = 0

    def start(self):
        # -> (state.json as loaded, what the last deep sleep kept or None: a new boot)
        board = self.board
        st = self.state.load()
        cause = board.reset_cause()  # always asked: a board may clear what a power cut lost
        note = st.get("note")
        if note:
            cause = note
        wake = self.wake(st) if cause == "deepsleep" else None
        if wake is not None:
            # same boot, woken from deep sleep: continue its uptime (the node its sequence)
            self.boot = st["boot"]
            unhealthy = wake["unhealthy"]
            resume = getattr(board.clock, "resume", None)
            if resume is not None:
                resume(wake["uptime_ms"], wake["unix_offset"])  # before anything times itself on the clock
        else:
            self.boot = st.get("boot", 0) + 1
            # counted until this boot proves healthy; a boot the power cut short (power-on, an
            # ESP32's brown-out: both PWRON_RESET) proved nothing either way and is not counted
            prev = st.get("unhealthy", 0)
            unhealthy = prev if cause == "power_on" and prev else prev + 1
        self.reset_cause = cause
        self.unhealthy = unhealthy
        # safe mode after safe_after failed boots in a row; a try of normal mode after healthy
        # hours in safe mode starts with one failure to spare
        self.safe = unhealthy > self.cfg["safe_after"] and cause != "safe_retry"
        resets = st.get("resets")
        resets = resets if isinstance(resets, dict) else {}
        if wake is None:
            resets[cause] = resets.get(cause, 0) + 1  # health: resets by cause (a wake is none)
        if wake is None or st.get("sleeping"):
            # the new boot counter is on flash before any frame carries it (a wake kept in
            # RTC memory writes nothing here: no flash wear per wake)
            self.state.save(boot=self.boot, unhealthy=unhealthy, note=None, sleeping=None, wake=None,
                            resets=resets)
        self.wdt = board.watchdog(self.cfg["watchdog_ms"])
        return st, wake

    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    def done(self, answered):
        # A cycle completed. A boot is healthy once it has completed HEALTHY_AFTER cycles, been
        # up HEALTHY_MS and had a frame acknowledged (answered; or its link is down: an outage
        # is not the node's fault). Normal mode: the failure count is cleared. Safe mode: once
        # healthy for the retry time, the node resets into normal mode; a try that fails
        # doubles the next wait.
        self.cycles += 1
        tries = self.state.data.get("safe_tries", 0)
        if not (self.safe or self.unhealthy or tries):
            return  # healthy already
        up = self.board.clock.ms()
        if self.cycles < HEALTHY_AFTER or up < HEALTHY_MS or not answered:
            return
        if not self.safe:
            if self.unhealthy or tries:
                self.state.save(unhealthy=0, safe_tries=None)
                self.unhealthy = 0
            return
        if up >= min(SAFE_RETRY_MS << min(tries, 5), SAFE_RETRY_MAX_MS):
            self.board.log("safe mode: healthy for %d h, trying normal mode" % (up // 3600000))
            self.state.save(unhealthy=self.cfg["safe_after"], safe_tries=tries + 1, note="safe_retry")
            self.board.reset()

    def error(self, e):
        # a cycle failed: logged; five in a row reset the board
        self.errors += 1
        self.board.log("cycle failed: %r" % (e,))
        if self.errors >= 5:
            self.reset("loop_errors")

    def reset(self, note):
        # the next boot reports `note` as its reset cause
        self.state.save(note=note)
        self.board.reset()

    def info(self, info, now, buf, force):
        # the node's health (SPEC 6.1 info 7-11) into `info`, with the boot frame (force) and
        # then hourly (now: ticks, firmware/clock.py); -> info, or None when none is due and
        # info was None
        if not force and self.health_ms is not None and ticks_diff(now, self.health_ms) < _HEALTH_MS:
            return info
        info = info or {}
        self.health_ms = now
        import gc

        free = getattr(gc, "mem_free", None)  # MicroPython only: the CPython sim has no heap to report
        if free is not None:
            if self.largest_ms is None or ticks_diff(now, self.largest_ms) >= _PROBE_MS:
                self.largest_ms = now
                self.largest = _largest_free()
            info[msg.I_HEAP] = [free(), self.largest]
        c = buf.counts
        info[msg.I_BUFFER] = [buf.live, buf.bytes, c["torn"], c["dropped"]]
        info[msg.I_FLASH_ERRORS] = c["flash"]
        resets = self.state.data.get("resets")
        info[msg.I_RESETS] = resets if isinstance(resets, dict) else {}
        info[msg.I_SAFE_S] = self.board.clock.ms() // 1000 if self.safe else 0
        return info

    def wake(self, st):
        # What the last deep sleep kept for this wake (see save), from RTC memory (ESP32) or
        # from flash; None when there is none for this boot (then this is a new boot).
        w = None
        rtc = getattr(self.board, "rtc_memory", None)
        if rtc is not None:
            try:
                import json

                w = json.loads(rtc())
            except (TypeError, ValueError, OSError):  # empty or garbled RTC memory
                w = None
        if not isinstance(w, (dict, list)) and st.get("sleeping"):
            w = st.get("wake")
        if isinstance(w, list) and len(w) == 16:
            w = dict(zip(WAKE, w))  # kept by earlier firmware
            w["ups"] = 0
            w["last_ms"] = None
        if not isinstance(w, dict) or w.get("boot") != st.get("boot"):
            return None
        for name in WAKE:
            if name not in w:
                return None
        return w

    def save(self, keep):
        # What the wake needs (a dict of the WAKE names: Node.sleep fills in its parts', we add
        # boot and unhealthy), in the ESP32's RTC memory (kept through deep sleep, lost with
        # the power), else in state.json. A wake runs one cycle: that cycle, completed without
        # a failure, proves the boot healthy (a normal boot needs HEALTHY_AFTER).
        rtc = getattr(self.board, "rtc_memory", None)
        if self.errors == 0 and self.cycles >= 1:
            if self.unhealthy and rtc is not None:
                self.state.save(unhealthy=0)  # on flash once per boot, for the next real reset
            self.unhealthy = 0
        keep["boot"] = self.boot
        keep["unhealthy"] = self.unhealthy
        if rtc is not None:
            import json

            rtc(json.dumps(keep))
        else:
            self.state.save(sleeping=True, unhealthy=self.unhealthy, wake=keep)


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
