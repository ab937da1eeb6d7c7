# The LoRa link: the node's link interface (send(message) -> bool, poll(timeout_ms) -> list,
# firmware/links.py) over a micropython-lib LoRa modem (lora-sx126x, lora-sx127x with
# lora-sync: send(), recv(), get_time_on_air_us()). Frames go out in the compact profile
# (protocol/compact.py, SPEC.md 13); ACKs and commands come back in the receive window after
# each send, as in LoRaWAN class A.
#
# A receive window need only reach the start of the packet it waits for: the radio keeps
# receiving a packet whose preamble and header it heard before its timeout (SX1261/2 datasheet
# 13.1.7: the timer stops on the header; the SX127x's symbol timeout likewise ends only without
# a preamble). So a window lasts until the latest start of its packet plus the airtime of an
# empty packet (preamble, sync word, header: 664 ms at SF12), as LoRaWAN class A's RX1 is a
# few symbols from a known delay, not a whole packet long.
#
# Airtime is law: EU868 868.0-868.6 MHz allows a device 1 % of any hour (ETSI EN 300 220).
# DutyCycle counts the airtime of every packet in one-minute buckets over the last 61
# minutes (a minute counts whole until all of it has left the hour, so the count is never
# below the truth); send() refuses a packet the hour has no room for (the frame stays in the buffer,
# due), and fit() stretches the node's reporting interval to what the hour allows.
from array import array

from protocol import compact
from protocol import message as msg
from protocol.cbor import FrameError

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:

    def const(x):  # CPython stand-in for micropython.const
        return x


_MINUTE_MS = const(60000)
_HOUR_MIN = const(61)  # the current minute and the 60 before it: every hour ending now lies within
_TURNAROUND_MS = const(3000)  # the gateway's time to store a frame and start its ACK (USB radio modem: ~1 s)
_FOLLOW_MS = const(1000)  # the gap the gateway's radio may leave between its ACK and a command after it
_FULL_EVERY = const(12)  # every 12th frame carries every reading, changed or not


def xorshift32(x):
    # the next state of Marsaglia's xorshift32 (x != 0; never 0 again): the same sequence on
    # every runtime (random differs between them); the simulated world draws from it too
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    return x ^ ((x << 5) & 0xFFFFFFFF)


class DutyCycle:
    def __init__(self, clock, permille=10):
        self.clock = clock
        self.budget_ms = 3600000 * permille // 1000
        self.permille = permille
        self.minutes = array("I", bytes(4 * _HOUR_MIN))
        self.minute = 0

    def used_ms(self):
        m = self.clock.ms() // _MINUTE_MS
        gone = m - self.minute
        if gone > 0:
            for i in range(1, min(gone, _HOUR_MIN) + 1):
                self.minutes[(self.minute + i) % _HOUR_MIN] = 0
            self.minute = m
        return sum(self.minutes)

    def allows(self, air_ms):
        return self.used_ms() + air_ms <= self.budget_ms

    def leaves(self, air_ms, hourly_ms, reserve_ms):
        # whether air_ms now leaves room, in every hour from now on, for hourly_ms of reports spread
        # evenly over it and one more of reserve_ms: at each minute to come the oldest minutes have
        # left the hour while the reports came
        used = self.used_ms() + air_ms + reserve_ms
        m = self.minute
        for k in range(_HOUR_MIN):
            if used + hourly_ms * k // 60 > self.budget_ms:
                return False
            used -= self.minutes[(m + 1 + k) % _HOUR_MIN]
        return True

    def spend(self, air_ms):
        self.used_ms()
        self.minutes[self.minute % _HOUR_MIN] += air_ms


class LoraLink:
    # One packet, then its receive window, then the next (half duplex: the gateway's answer
    # to a packet sent right after another would find the node transmitting). Frames need not
    # wait for their own ACK: the gateway's ACKs are cumulative, and it leaves some out when
    # its own hour is short of airtime, so an unanswered frame is resent only after 10 minutes.
    retry_ms = 600000
    # A lost ACK is ordinary here (the gateway's radio busy or out of airtime, a collision, a
    # fade): the link is down only when a whole window of frames (firmware/uplink.py) went
    # unanswered, not after three; and while down the first probe waits only what the duty
    # cycle asks between two frames (probe_ms, set in encode), doubling up to retry_ms.
    offline_after = 8
    # The duty cycle leaves little airtime beside the reports (SF12, a frame every 5 minutes:
    # 72 % of the hour), so a backlog takes hours to drain: the newest frame not yet sent goes
    # before it (firmware/uplink.py), the backlog oldest first with the airtime left.
    fresh_first = True
    feed = None  # the node's watchdog feed (set by the node): waits on the air take seconds

    def __init__(self, modem, node, clock, permille=10, log=None):
        self.modem = modem
        self.node = node
        self.clock = clock
        self.log = log
        self.duty = DutyCycle(clock, permille)
        self.name = "lora"
        self.counts = {"sent": 0, "received": 0, "deferred": 0, "rejected": 0, "error": 0}
        self.last_error = None
        self.rssi = self.snr = None  # of the last packet received
        self.listen_until = 0
        self.frame_air_ms = 0  # airtime of the last frame encoded without info
        self.reserve_ms = 0  # a full frame's airtime: a backlog send leaves it beside the reports (send)
        self.probe_ms = 0  # a usual frame's airtime / the duty cycle: the uplink's first wait between probes
        self.stretch_ms = 0  # the reporting interval fit() last stretched to (0: none)
        self.cycle_ms = self.fit_ms = 0  # the node's reporting interval as fit() last returned it, and when
        self.last_vals = {}  # reading name -> the value last sent
        self.n = 0
        self.answered = True  # the last send's window brought an answer
        h = 0
        for c in node:
            h = (h * 31 + ord(c)) & 0xFFFFFFFF
        self.rnd = h or 1  # a node's own random sequence (xorshift32, never 0), for the jitter before sends
        for _ in range(16):  # ids that differ in one character start far apart
            self.rnd = xorshift32(self.rnd)

    def _wait(self, ms):
        # sleep in slices of at most 1 s, feeding the watchdog (the RP2040's lasts 8.4 s at most)
        while ms > 0:
            step = min(ms, 1000)
            self.clock.sleep_ms(step)
            ms -= step
            if self.feed is not None:
                self.feed()

    def air_ms(self, n):
        return (self.modem.get_time_on_air_us(n) + 999) // 1000

    # ------------------------------------------------------------ the node's hooks

    def encode(self, key, node, boot, seq, uptime_ms, recs, key_version=0, **kw):
        # The frame in the compact profile; readings unchanged since the last frame are left
        # out (the level always goes), but every _FULL_EVERY-th frame and every frame with info
        # carries all. A record the profile cannot carry (a text status) makes a full frame.
        info = kw.get("info")
        if info:
            info[12] = self.health()  # SPEC.md 6.1: airtime used in the last hour, the stretched interval
        full = info or self.n % _FULL_EVERY == 0
        self.n += 1
        q = kw.get("quality") or {}
        keep = []
        qual = {}
        for i in range(len(recs)):
            r = recs[i]
            name = r.get(0)
            if full or name == "l" or i in q or self.last_vals.get(name) != r.get(2):
                if i in q:
                    qual[len(keep)] = q[i]
                keep.append(r)
        if not keep:
            keep = recs[:1]
        kw["quality"] = qual or None
        try:
            frame = compact.encode_data(key, node, boot, seq, uptime_ms, keep, key_version, **kw)
        except FrameError:
            kw["quality"] = q or None
            return msg.encode_data(key, node, boot, seq, uptime_ms, recs, key_version, **kw)
        for r in keep:
            self.last_vals[r.get(0)] = r.get(2)
        if not kw.get("info"):
            self.frame_air_ms = t = self.air_ms(len(compact.to_air(frame)))  # a usual frame's airtime, for fit()
            self.probe_ms = t * 1000 // self.duty.permille
            if full or t > self.reserve_ms:
                self.reserve_ms = t  # a full frame's airtime, or a larger one's since
        return frame

    def fit(self, wait_ms, node):
        # The wait until the next report, stretched so that reports fit the duty cycle: a
        # frame's airtime takes 1/permille of its interval (SF12, 43 bytes: 2.1 s -> 214 s).
        # When the stretch starts or ends the node says so (info 12 in its next frame) and logs it.
        # The node's resend time becomes the link's (slow air, cumulative ACKs).
        pace = node.uplink.pace
        pace.retry_ms = max(pace.retry_ms, self.retry_ms)
        need = self.frame_air_ms * 1000 // self.duty.permille
        stretch = need if need > wait_ms else 0
        if bool(stretch) != bool(self.stretch_ms):
            node.send_info = True
            node.board.log("duty cycle: interval %d s%s" % (max(wait_ms, need) // 1000,
                                                             " (stretched)" if stretch else ""))
        self.stretch_ms = stretch
        self.cycle_ms = c = max(wait_ms, need)
        self.fit_ms = self.clock.ms()
        return c

    def health(self):
        # info key 12 (SPEC.md 6.1): [airtime ms used in the last hour, the stretched interval s or 0]
        return [self.duty.used_ms(), self.stretch_ms // 1000]

    # ------------------------------------------------------------ the link interface

    def send(self, message, backlog=False):
        # -> True sent, False failed, None not now: the hour has no airtime left for it (the
        # frame stays due in the node's buffer; the link is not down). backlog: not the newest
        # frame (firmware/uplink.py): it goes only if every hour to come keeps room for the
        # node's reports (one per cycle of the last frame's airtime, and a full frame's more), so
        # that they go when they are made instead of waiting for the hour to free
        if self.clock.ms() < self.listen_until:
            return None  # the last packet's receive window is still open
        try:
            air = compact.to_air(message)
            t = self.air_ms(len(air))
            c = self.cycle_ms
            if c and self.clock.ms() - self.fit_ms > 2 * c:
                c = 0  # the node's loop has stopped (fit() not called for two cycles): no reports to come
            if not (self.duty.leaves(t, self.frame_air_ms * 3600000 // c if c else 0, self.reserve_ms)
                    if backlog else self.duty.allows(t)):
                self.counts["deferred"] += 1
                return None
            # a random wait first, longer after a send nobody answered (a collision): nodes
            # that woke together, or collided, do not transmit in step again (ALOHA backoff)
            # (at most 10 s: a send, its jitter and its window stay well inside the watchdog's 30 s)
            self.rnd = r = xorshift32(self.rnd)
            self._wait(r % (min((2 if self.answered else 8) * t, 10000) + 1))
            self.answered = False
            self.duty.spend(t)  # counted before it leaves: a failed send may still have gone out
            self.modem.send(air)
        except Exception as e:  # noqa: BLE001 - no radio fault may stop the node loop
            self.counts["error"] += 1
            self.last_error = e
            return False
        self.counts["sent"] += 1
        # the receive window: the gateway's ACK starts within its turnaround, or after one more
        # ACK (22 bytes) its radio may be sending another node first
        self.listen_until = self.clock.ms() + _TURNAROUND_MS + self.air_ms(22) + self.air_ms(0)
        return True

    def poll(self, timeout_ms):
        # What arrives within timeout_ms, or until the receive window after the last send ends
        out = []
        deadline = max(self.clock.ms() + timeout_ms, self.listen_until)
        for _ in range(64):  # bounded: a busy channel cannot hold the loop
            wait = deadline - self.clock.ms()
            if wait <= 0:
                break
            if self.feed is not None:
                self.feed()
            try:
                pkt = self.modem.recv(timeout_ms=min(wait, 2000))  # in slices: the watchdog is fed between
            except Exception as e:  # noqa: BLE001 - no radio fault may stop the node loop
                self.counts["error"] += 1
                self.last_error = e
                break
            if pkt is None:
                continue
            try:
                m = compact.from_air(pkt, self.node)
            except FrameError:
                self.counts["rejected"] += 1  # another node's packet, or noise
                continue
            self.counts["received"] += 1
            self.rssi = getattr(pkt, "rssi", None)
            self.snr = getattr(pkt, "snr", None)
            if compact.is_command(m):
                # the operator's compact signed command (SPEC.md 13.6): MACed with the command key,
                # which the node checks (firmware/commands.py), not with the key msg.decode uses
                out.append({"type": "cmd", "boot": None, "cmd_id": None, "signed": m})
                deadline = self.clock.ms()
                continue
            out.append(m)
            self.answered = True
            if self.listen_until:
                # answered: the window stays open for one packet more, the gateway's command that
                # follows its ACK (starting within _FOLLOW_MS of it), then closes
                self.listen_until = 0
                deadline = self.clock.ms() + _FOLLOW_MS + self.air_ms(0)
            else:
                deadline = self.clock.ms()
        return out
