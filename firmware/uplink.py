# The node's uplink: every frame goes to the flash buffer before it is sent; the gateway's
# ACK removes it. Unacknowledged frames are resent oldest first with the exact same bytes,
# at most `window` in flight. While no ACK comes back (link down) only the oldest frame
# probes the link each cycle and new frames are marked as backlog, so the gateway dates
# them from uptime, not from arrival.
#
# A link may say how it is taken for down and probed (LoRa, firmware/lora_link.py, where a lost
# ACK is ordinary): `offline_after`, the sends in a row without any ACK that make it down
# (default 3), and `probe_ms`, the first wait between probes while down, doubled after each
# unanswered probe up to the resend time (default: the resend time from the start). Any ACK
# brings the link up and the whole window back at once (node.py receive).
#
# A link whose duty cycle leaves little airtime beside the reports (`fresh_first`: LoRa) has
# the newest frame not yet sent go before the backlog, so a fresh reading never waits behind
# hours of history: of the frames put while the link is up (and the newest put while it was
# down) the newest unsent one first, then the rest oldest first, the link's send(frame, True)
# deciding whether the airtime of the reports to come allows a backlog frame now. Only while
# every buffered frame is of the newest frame's boot and within the gateway's seq window of it:
# a gateway refuses a frame of a boot below one it has stored (SPEC.md 10).
#
# How a link is driven (its Pace) comes from the link: a device link has none and gets the
# field's pace on the board clock; a simulation hands its link a `pace` (a real clock for
# resends while the world runs in virtual time, a wider window, a shorter resend time, no
# ACK wait inside a cycle, a frame every cycle).
from array import array

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:

    def const(x):  # CPython stand-in for micropython.const
        return x


# An underscored const() is no global and no interned name on the device (see tools/upload.py)
_WINDOW = const(8)  # frames in flight while the gateway answers
_RETRY_MS = const(3000)  # resend a frame not acknowledged after this long
_ACK_WAIT_MS = const(300)  # how long to listen after sending
_OFFLINE_AFTER = const(3)  # sends in a row without any ACK: the link is down
_CYCLE_BUDGET = const(40)  # send/listen rounds per cycle for draining a backlog
_SEQ_WINDOW = const(1024)  # seqs a gateway takes below the highest it stored (SPEC.md 10)


class Pace:
    # clock: times resends; window: frames in flight; retry_ms: resend after this long without
    # an ACK; timeout_ms: how long a cycle listens for ACKs at a time (0: only what already
    # arrived); report: a frame every cycle (a simulation that sends frame after frame)
    def __init__(self, clock, window=_WINDOW, retry_ms=_RETRY_MS, timeout_ms=_ACK_WAIT_MS, report=False):
        self.clock = clock
        self.window = window
        self.retry_ms = retry_ms
        self.timeout_ms = timeout_ms
        self.report = report


class Uplink:
    def __init__(self, link, pace, buffer, counts, log, feed):
        # counts: the node's counters ("acked", "resent", "rejects" are ours); feed: the watchdog
        self.link = link
        self.pace = pace
        self.buffer = buffer
        self.counts = counts
        self.log = log
        self.feed = feed  # fed between the send/listen rounds of a long backlog
        # when each slot was last sent, in 64 ms ticks of the pace's clock, + 1, modulo 2**16
        # (0: not yet). 16 bits are enough to tell "retry_ms ago or longer" and take 1 KB less
        # heap than ms in 32 (512 slots); a frame unsent for a multiple of 70 min waits once more.
        self.sent_ms = array("H", bytes(2 * buffer.slots))
        self.offline = False
        self.unanswered = 0
        self.probe_ms = 0  # while down: the wait between probes (see the top)
        # write counts (buffer.wc) of the newest frame put, and of the newest frame of the backlog:
        # a fresh_first link sends the frames put after it newest first (see the top)
        self.top = self.back = max(buffer.wc)
        self.rejects = {}  # what came back and was refused: reason -> count
        if getattr(link, "feed", 0) is None:
            link.feed = feed  # LoRa waits seconds on the air: it feeds the watchdog meanwhile

    def put(self, boot, seq, frame):
        # a new frame: into the buffer, sent by pump(); too big for a slot: sent once, live only
        slot = self.buffer.put(boot, seq, frame)
        if slot < 0:
            self.link.send(frame)
        else:
            self.sent_ms[slot] = 0
            self.top = w = self.buffer.wc[slot]
            if self.offline:
                self.back = w - 1  # made while the link is down: backlog once a newer one is made

    def pump(self):
        # Send what is due from the buffer, oldest first (a fresh_first link: the newest unsent
        # frame before them, see the top). Returns frames sent.
        p = self.pace
        tick = (p.clock.ms() >> 6) + 1
        retry = p.retry_ms >> 6
        limit = p.window
        if self.offline:
            limit = 1
            retry = min(self.probe_ms or p.retry_ms, p.retry_ms) >> 6
        sent = inflight = pos = 0
        buf = self.buffer
        fresh = -1
        link = self.link
        first = getattr(link, "fresh_first", 0)
        if first and not self.offline:
            # the newest frame not yet sent of those made since the backlog (see the top) goes
            # first; when all of them are sent, they go oldest first with the rest
            w = self.top
            slot = buf.next
            while w > self.back and self.top - w < buf.slots:
                slot = (slot - 1) % buf.slots
                if buf.wc[slot] == w and not self.sent_ms[slot]:
                    fresh = slot
                    break
                w -= 1
            else:
                self.back = self.top
            # only while every frame in the buffer is of its boot and within the gateway's seq
            # window of it, so that the older ones are still taken after it (SPEC.md 10)
            old = buf.oldest()[0]
            if fresh >= 0 and (buf.boot[old] != buf.boot[fresh] or buf.seq[fresh] - buf.seq[old] >= _SEQ_WINDOW):
                fresh = -1
        nxt = fresh
        while sent + inflight < limit:
            slot, nxt = nxt, -1
            if slot < 0:
                slot, pos = buf.oldest(pos)
                if slot < 0:
                    break
                pos += 1
                if slot == fresh:
                    continue  # sent first
            last = self.sent_ms[slot]
            if last and ((tick - last) & 0xFFFF) < retry:
                inflight += 1
                continue
            self.feed()  # a send may block up to a lookup's bound (links.py): never 8 in a row unfed
            if (link.send(buf.frame(slot), True) if fresh != slot and first and not self.offline
                    else link.send(buf.frame(slot))) is None:
                break  # not now (the LoRa duty cycle): it stays due, and the link is not down
            if last:
                self.counts["resent"] += 1
            self.sent_ms[slot] = (tick & 0xFFFF) or 1
            sent += 1
            self.unanswered += 1
            if self.offline:
                self.probe_ms = min(2 * self.probe_ms, p.retry_ms)  # unanswered so far: the next waits longer
            elif self.unanswered >= getattr(link, "offline_after", _OFFLINE_AFTER):
                self.offline = True
                self.probe_ms = getattr(link, "probe_ms", 0) or p.retry_ms
                self.log("link down: no ACK for %d frames" % self.unanswered)
        return sent

    def transmit(self, receive, timeout_ms=None):
        # Send and listen until the buffer is empty, the link is quiet, or the budget is spent;
        # receive(messages) -> how many were good (the node decodes them)
        if timeout_ms is None:
            timeout_ms = self.pace.timeout_ms
        for _ in range(_CYCLE_BUDGET):
            self.feed()
            sent = self.pump()
            if not sent and not self.buffer.live:
                break
            got = receive(self.link.poll(timeout_ms))
            if not got and not sent:
                break
            if not got and self.offline:
                break

