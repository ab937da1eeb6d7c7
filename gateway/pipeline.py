# The pipeline thread: input queue -> decode + verify -> dedup -> outputs -> one group
# commit (frames, dedup states, PUBACKed deletions, downlink changes) -> ACKs -> wake the
# publisher. Nothing is ACKed before the commit that stored it has returned; a failed
# commit (disk full, I/O error) ACKs nothing new and leaves the dedup state and the frame
# clock unchanged, so the nodes resend, nothing acknowledged is ever lost, and a resend is
# dated as though the failed copy never came.
from __future__ import annotations

import collections
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

from gateway import dedup, osthread
from gateway.acks import encode_ack
from gateway.conform import RecordCheck
from gateway.outputs import Frame
from gateway.registry import one_line
from gateway.store import StoreError
from gateway.timing import FrameClock
from protocol import cose, keyring, message, senml

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.downlink import Downlink
    from gateway.registry import OutputSet, Publisher
    from gateway.sensorthings import Sender
    from gateway.stats import Stats
    from gateway.store import Store
    from gateway.web.history import History
from protocol.cbor import FrameError

log = logging.getLogger("citynode.gateway")

FULL_RETRY_S = 0.25  # after "disk full", new frames are refused this long before trying again
LINGER_BATCH = 16  # frames a linger aims to gather
HOUSEKEEPING_S = 0.5  # without frames: commit PUBACKed deletions and downlink changes this often
DISK_CHECK_S = 1.0


class Inbox:
    # The bounded input queue between the serial links' threads and the pipeline: a deque
    # (appends and pops are atomic) and a socketpair the consumer select()s on together with
    # its UDP sockets, written only while it waits. queue.Queue takes a lock and notifies a
    # condition on every put and get: ~2 us a frame on each side at saturation, for a
    # consumer that takes whole batches anyway.
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._waiting = False

    def put(self, item: tuple[Any, ...]) -> bool:
        # -> False when full
        items = self._items
        if len(items) >= self.maxsize:
            return False
        items.append(item)
        if self._waiting:
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass  # a wake-up is pending already
        return True

    def wait(self, timeout: float, socks: Iterable[Any] = ()) -> None:
        # until an item is there or one of socks is readable, at most timeout s; one consumer only
        if self._items:
            return
        self._waiting = True
        try:
            if not self._items:  # a put() after this check sees _waiting and wakes the select
                r, _, _ = select.select([self._wake_r, *socks], [], [], timeout)
                if self._wake_r in r:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
        finally:
            self._waiting = False

    def close(self) -> None:
        self._wake_r.close()
        self._wake_w.close()

    def take(self, batch: list[Any], limit: int) -> None:
        # move up to limit - len(batch) items into batch, oldest first
        items = self._items
        n = min(len(items), limit - len(batch))
        pop = items.popleft
        for _ in range(n):
            batch.append(pop())

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items


class Pipeline:
    def __init__(self, *, settings: Settings, keys: Mapping[str, bytes], store: Store, outputs: OutputSet,
                 stats: Stats, downlink: Downlink, forwarder: Publisher, history: History | None = None) -> None:
        self.s = settings
        self.keys = keys  # node -> key; replaced whole on SIGHUP (a dict swap is atomic)
        self.store = store
        self.outputs = outputs  # gateway/registry.py
        self.st_sender: Sender | None = None  # gateway/sensorthings.py, woken after a commit that gave it rows
        self.stats = stats
        self.downlink = downlink
        self.forwarder = forwarder
        self._offer = getattr(forwarder, "offer", None)  # the thread publisher's; the process one reads the outbox
        self.history = history
        self.queue = Inbox(settings.queue_max)
        self.polled = []  # UDP links read by this thread (poll())
        self._drops = {}  # link -> the kernel's drop count when last looked
        self.states = store.seq_states()
        self.depth = store.depth()
        self.record_check = RecordCheck().check  # SenML names and units (gateway/conform.py)
        # the absolute time of each frame (gateway/timing.py)
        self.clock = FrameClock(warn=self._clock_ignored, saved=store.timebase())
        self.pending_deletes = []
        self.store_error = None  # reason of the last failed commit, None once one succeeds
        self.last_failure = (None, -1e9)  # (reason, monotonic time): alarms hold a while, not flap
        self.disk_full_at = -1e9  # when SQLite last said the disk (or max_bytes) is full
        self.refusing = None  # "outbox_full" / "disk_full" while new frames are refused
        self.disk_free = None
        self._disk_checked = 0.0
        self._busy_since = None  # monotonic time the loop took its current batch; None while it waits
        self.processed = 0
        self.commits = 0  # group commits that stored frames (frames per commit shows how batches grow)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)

    # ------------------------------------------------------------ called by links

    def submit(self, item: tuple[Any, ...]) -> None:
        if not self.queue.put(item):
            self.stats.reject("overload", None, item[1].describe(item[2]), "input queue full")

    def reject(self, reason: str, where: str, detail: str = "") -> None:
        self.stats.reject(reason, None, where, detail)

    @property
    def heartbeat(self) -> float:
        # For the watchdog: when the loop last proved alive. Waiting for frames is alive (it
        # sleeps without polling); a batch or commit that hangs (a stuck disk) ages.
        busy = self._busy_since
        return time.monotonic() if busy is None else busy

    # ------------------------------------------------------------ thread

    def poll(self, links: Iterable[Any]) -> None:
        # UDP links this thread reads itself (gateway/ingest.py UdpLink.drain), instead of a
        # reader thread each: at a moderate rate a frame then wakes one thread, not two
        self.polled = list(links)

    def _count_kernel_drops(self) -> None:
        # datagrams the kernel dropped because a socket's buffer was full (a burst during a long
        # commit): refused as `overload` like a full input queue; the nodes resend them
        for link in self.polled:
            drops = link.kernel_drops()
            if drops is None:
                continue
            before = self._drops.get(link, 0)
            if drops > before:
                self.stats.reject("overload", None, link.name,
                                  f"{drops - before} datagrams dropped by the kernel: socket receive buffer full "
                                  "(raise net.core.rmem_max)", n=drops - before)
            self._drops[link] = drops

    def _poll(self) -> None:
        for link in self.polled:
            link.drain()
            if link.stopped:  # stop() shut it down: readable for good, and nothing more to read
                self.poll([x for x in self.polled if not x.stopped])
                return

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        # Finish what is queued (its senders are waiting for ACKs), then stop.
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        osthread.name("cn-pipeline")
        # Group commit: a batch is what waits in the queue, plus what arrives within a
        # linger after its first frame when frames come often enough for that to pay (one
        # fsync'd commit costs ~130 us of CPU here and 5-20 ms on an SD card). The linger
        # aims at LINGER_BATCH frames at the recent rate, at most `linger_ms`: 20 ms at 500
        # frames/s, 8 ms at 2,000, so latency is spent where it buys most. It is one sleep,
        # not a wake-up per frame; a full or slow commit needs none (frames queued meanwhile).
        q = self.queue
        batch_max = self.s.outbox.batch_max
        linger_max = self.s.outbox.linger_ms / 1000.0
        last_arrival = 0.0  # arrival time of the previous batch's last frame
        drops_checked, drops_seen = 0.0, self.processed
        mark_t, mark_n, rate = time.monotonic(), self.processed, 0.0  # frames/s, re-estimated twice a second
        while True:
            self._busy_since = None
            batch = []
            q.wait(HOUSEKEEPING_S, [link.sock for link in self.polled])
            self._poll()
            q.take(batch, batch_max)
            self._busy_since = time.monotonic()
            if batch:
                first = batch[0][3]
                now = time.monotonic()
                if now - mark_t >= 0.5:
                    rate = (self.processed - mark_n) / (now - mark_t)
                    mark_t, mark_n = now, self.processed
                linger = min(linger_max, LINGER_BATCH / rate) if rate > 0 else 0.0
                # linger only while frames come less than a linger apart (this batch's first
                # after the previous batch's last): at 50 frames/s nothing would join, and the
                # wait would cost a wake-up and latency for nothing
                if linger and len(batch) < batch_max and first - last_arrival < linger:
                    wait = min(linger, first + linger - time.time())
                    if wait > 0 and not self._stop.is_set():
                        time.sleep(wait)
                        self._poll()
                        q.take(batch, batch_max)
                last_arrival = batch[-1][3]
            elif self._stop.is_set():
                self._commit_housekeeping()
                q.close()
                return
            if self.polled and self._busy_since - drops_checked >= DISK_CHECK_S and self.processed != drops_seen:
                # once a second, and only after frames came: an idle gateway reads no /proc files
                drops_checked, drops_seen = self._busy_since, self.processed
                self._count_kernel_drops()
            try:
                if batch:
                    self._process(batch)
                else:
                    self._commit_housekeeping()
            except Exception:  # noqa: BLE001 - the loop must survive; nothing unacked is lost
                self.clock.undo()  # what was not stored gives its times back (nothing once its commit returned)
                log.exception("pipeline: unexpected error; the batch is not ACKed and will be resent")

    # ------------------------------------------------------------ one batch

    def _capacity_check(self) -> str | None:
        now = time.monotonic()
        if now - self._disk_checked >= DISK_CHECK_S:
            self._disk_checked = now
            try:
                st = os.statvfs(self.s.data_dir)
                self.disk_free = st.f_bavail * st.f_frsize
            except OSError:
                self.disk_free = None
        if self.disk_free is not None and self.disk_free < self.s.outbox.min_free_mb * 1024 * 1024:
            return "disk_full"
        if now - self.disk_full_at < FULL_RETRY_S:
            return "disk_full"  # do not hammer a full disk with inserts that cannot fit
        if self.depth >= self.s.outbox.max_messages:
            return "outbox_full"
        return None

    def _process(self, batch: list[tuple[Any, ...]]) -> None:
        keys = self.keys
        key_get = getattr(keys, "verifier", keys.get)  # a node's key versions after a re-key (SPEC.md 4.5)
        decode = message.decode
        states = self.states
        pending = {}  # node -> SeqState after this batch
        rows = self.outputs.sweep(time.time())
        st_rows = []
        frames = []  # (Frame, gaps)
        acks = []  # (node, boot, seq, link, addr, stored_before, fresh: a new frame)
        dups = []  # (node, link description, received)
        behind = []  # (node, boot, seq, link, addr, min_boot): refused, its boot is behind
        refuse = self._capacity_check()
        self.stats.count("received", len(batch))
        self.processed += len(batch)  # taken off the queue, whatever became of them (watchdog)
        polled = self.polled
        for i, (raw, link, addr, received) in enumerate(batch):
            if polled and i & 63 == 63:
                self._poll()  # keep the sockets' buffers from filling while a long batch runs
            try:
                m = decode(raw, key_get)
            except FrameError as e:
                self._reject_frame(e.reason, raw, link, addr, str(e))
                continue
            node = m["node"]
            if m["type"] != "data":
                self.stats.reject("payload", node, link.describe(addr), f"a {m['type']} message sent to the gateway")
                continue
            bad = self.record_check(m["records"])
            if bad:
                self.stats.reject("payload", node, link.describe(addr), bad)
                continue
            boot, seq = m["boot"], m["seq"]
            st = pending.get(node) or states.get(node)
            verdict = dedup.classify(st, boot, seq, raw)
            if verdict == dedup.REPLAY or verdict == dedup.REGRESSED:
                assert st is not None  # without a state classify() says NEW
                if verdict == dedup.REGRESSED:
                    st = pending[node] = dedup.restart(st)
                self.stats.reject(verdict, node, link.describe(addr), f"boot {boot} seq {seq}")
                behind.append((node, boot, seq, link, addr, dedup.min_boot(st)))
                continue
            if verdict == dedup.DUP:
                # a retransmission or a replay: its ACK and nothing else (no link, last seen or command)
                acks.append((node, boot, seq, link, addr, node not in pending, False))
                dups.append((node, link.describe(addr), received))
                continue
            if refuse is None and self.depth + len(rows) >= self.s.outbox.max_messages:
                refuse = "outbox_full"
            if refuse:
                self.stats.reject(refuse, node, link.describe(addr), "frame refused (not ACKed); the node keeps it")
                continue
            reception = getattr(link, "reception", None)
            f = Frame(node, m, raw, received, *self.clock.fix(node, m, received), link.describe(addr),
                      reception(addr) if reception is not None else None)
            try:
                # an output that cannot convert it loses its rows of this frame only (counted)
                made, st_made = self.outputs.messages(f, self.stats)
            except Exception as e:  # noqa: BLE001 - one odd frame must not hold up its batch
                # its envelope cannot be made: refused, not ACKed (the node keeps it), and its
                # time given back, so its resend is dated as though this copy never came
                self.clock.give_back()
                self.stats.reject("payload", node, link.describe(addr), f"cannot convert: {one_line(e)}")
                continue
            rows.extend(made)
            st_rows.extend(st_made)
            new = dedup.advance(st, boot, seq, raw)
            pending[node] = new
            frames.append((f, new.gaps))
            acks.append((node, boot, seq, link, addr, False, True))
        self._commit(rows, pending, frames, acks, dups, refuse, st_rows)
        for node, boot, seq, link, addr, least in behind:  # SPEC.md 6.5: tell the node
            key = keys.get(node)
            if key is not None and link.send(addr, message.encode_boot(key, node, boot, seq, least)):
                self.stats.count("boot_replies")

    def _reject_frame(self, reason: str, raw: bytes, link: Any, addr: Any, detail: str) -> None:
        node = None
        if reason in ("mac", "retired"):  # names a known node whose (current) key did not verify it
            try:
                node = cose.parse(raw)[0].decode()
            except (FrameError, UnicodeError):
                node = None
        if reason == "mac":  # anyone can name a node: unverified for it, not among its rejects (its tamper alarm)
            self.stats.reject(reason, None, link.describe(addr), detail)
            if node is not None and node in self.keys:
                self.stats.unverified(node)
            return
        self.stats.reject(reason, node, link.describe(addr), detail)
        if reason == "retired" and node is not None:
            self._retired(node, raw, link, addr)

    def _retired(self, node: str, raw: bytes, link: Any, addr: Any) -> None:
        # SPEC.md 6.6: the frame names a key version the gateway no longer holds: tell the node
        # (MACed with its current key) to discard it rather than offer it forever. The frame's
        # boot and seq are read unverified; the node only drops a frame it MACed with a key
        # version other than its current one, so a forged frame cannot make it drop good data.
        key = self.keys.get(node)
        try:
            m = message.parse_payload(cose.parse(raw)[2])
        except FrameError:
            return
        if key is None or m["type"] != "data":
            return
        version = getattr(self.keys, "version", lambda n: 0)(node)
        if link.send(addr, keyring.encode_retired(key, node, m["boot"], m["seq"], version)):
            self.stats.count("retired_replies")

    def _clock_ignored(self, node: str, t: object) -> None:
        # A node clock before 2000 or more than a day ahead (an RTC that lost power) is ignored.
        self.stats.rejects_log.warning("clock", "node %s clock says %d: ignored, time fixed at the gateway", node, t)

    def _take_deletes(self) -> list[int]:
        acked = self.forwarder.take_acked()
        if acked:
            self.pending_deletes.extend(acked)
        return self.pending_deletes

    def _commit_housekeeping(self) -> None:
        deletes = self._take_deletes()
        put, dele, cnt = self.downlink.take_changes()
        rows = self.outputs.sweep(time.time())  # e.g. nodes gone offline
        if not (deletes or put or dele or cnt or rows):
            return
        try:
            first = self.store.commit(rows=rows, deletes=deletes, dl_put=put, dl_del=dele, counters=cnt)
        except StoreError as e:
            self.downlink.restore(put, dele, cnt)
            self.outputs.reset()
            self._store_failed(e)
            return
        self._deleted(deletes)
        if rows:
            self.depth += len(rows)
            self._publish(first, rows)

    def _publish(self, first: int | None, rows: list[tuple[str, bytes]]) -> None:
        # committed rows to the publisher: in memory when it takes them (gateway/mqtt.py offer),
        # else it is woken and reads them from the outbox
        if self._offer is not None and first is not None:
            self._offer(first, rows)
        else:
            self.forwarder.wake()

    def _deleted(self, deletes: list[int]) -> None:
        if deletes:
            self.depth -= len(deletes)
            self.forwarder.deleted(deletes)
            self.pending_deletes = []

    def _store_failed(self, e: StoreError) -> None:
        if self.store_error != e.reason:
            log.error("outbox: commit failed (%s); new frames are not ACKed until it works again", e)
        self.store_error = e.reason
        self.last_failure = (e.reason, time.monotonic())
        if e.reason == "disk_full":
            self.disk_full_at = time.monotonic()

    def _commit(self, rows: list[tuple[str, bytes]], pending: dict[str, dedup.SeqState],
                frames: list[tuple[Frame, int]], acks: list[Any], dups: list[tuple[str, str, float]],
                refuse: str | None, st_rows: Sequence[tuple[str, bytes]] = ()) -> None:
        deletes = self._take_deletes()
        put, dele, cnt = self.downlink.take_changes()
        ok = True
        first = None
        if rows or pending or deletes or put or dele or cnt:
            try:
                first = self.store.commit(rows=rows, states=list(pending.items()), deletes=deletes,
                                  dl_put=put, dl_del=dele, counters=cnt, st_rows=st_rows,
                                  clocks=self.clock.saved_of(pending))
            except StoreError as e:
                ok = False
                # the frames were not stored: the times they were given are given back, so their
                # resends are dated as though these copies never came (gateway/timing.py)
                self.clock.undo()
                self.downlink.restore(put, dele, cnt)
                # outputs that publish a change once (availability, discovery) forget what the
                # failed commit lost, and say it again
                self.outputs.reset()
                self._store_failed(e)
                for f, _ in frames:
                    self.stats.reject(e.reason, f.node, f.link, "commit failed; not ACKed")
                # Deletions free space: they must not wait for a batch of new frames that fits,
                # or a full outbox under a steady stream of resends would never drain.
                self._commit_housekeeping()
        if ok:
            self.clock.kept()
            if self.store_error:
                log.info("outbox: commits work again")
            self.store_error = None
            self.states.update(pending)
            self.depth += len(rows)
            self._deleted(deletes)
            if rows:
                self.commits += 1
        self.refusing = refuse or (self.store_error if not ok else None)
        if refuse:
            self.last_failure = (refuse, time.monotonic())
        with self.stats.lock:
            c = self.stats.counters
            if ok:
                c["accepted"] += len(frames)
                for f, gaps in frames:
                    self.stats.accepted_locked(f, gaps)
            c["duplicates"] += len(dups)
            for node, where, received in dups:
                self.stats.duplicate_locked(node, where, received)
        if ok and self.history is not None:
            for f, _ in frames:
                self.history.add(f.node, f.time_s, _numbers(f.msg["records"]), f.msg["flags"])
        self._send_acks(acks, ok)
        # the publishers last: the ACKs go out before another thread competes for the GIL
        if ok and rows:
            self._publish(first, rows)
        if ok and st_rows and self.st_sender is not None:
            self.st_sender.wake()

    def _send_acks(self, acks: list[Any], committed: bool) -> None:
        # One ACK per frame would be one syscall per frame. Frames of a node that are
        # all covered by its cum (every seq <= cum stored, SPEC.md 6.2) share one ACK
        # carrying cum; a seq above cum (after a gap) gets its own.
        groups = {}
        fresh = set()  # (node, boot, link, addr) that sent a new frame: only these get commands
        for node, boot, seq, link, addr, stored_before, new in acks:
            if committed or stored_before:
                groups.setdefault((node, boot, link, addr), []).append(seq)
                if new and committed:
                    fresh.add((node, boot, link, addr))
        sent = 0
        heard = {}
        for (node, boot, link, addr), seqs in groups.items():
            key = self.keys.get(node)
            if key is None:
                continue
            st = self.states.get(node)
            cum = st.cum if st is not None and st.boot == boot and st.cum >= 0 else None
            out = seqs if cum is None else [s for s in seqs if s > cum]
            if cum is not None and len(out) < len(seqs):
                out.append(max(s for s in seqs if s <= cum))
            for seq in out:
                if link.send(addr, encode_ack(key, node, boot, seq, cum)):
                    sent += 1
            if (node, boot, link, addr) in fresh:
                heard[node] = (boot, link, addr)
        self.stats.count("acks_sent", sent)
        for node, (boot, link, addr) in heard.items():
            self._send_commands(node, boot, link, addr)

    def _send_commands(self, node: str, boot: int, link: Any, addr: Any) -> None:
        result = self.stats.nodes.get(node)
        cmd_result = None
        if result is not None and result.command:
            cmd_result = (result.command["cmd_id"], result.command["status"])
        send, done, expired = self.downlink.heard(node, cmd_result)
        if done:
            self.stats.count("commands_done", done)
        if expired:
            self.stats.count("commands_expired", expired)
            log.warning("downlink: %d command(s) for %s expired unanswered", expired, node)
        key = self.keys.get(node)
        for counter, token in send:
            if key is not None and link.send(addr, message.encode_signed(key, node, boot, counter, token)):
                self.stats.count("commands_sent")


def _numbers(records: Iterable[Mapping[Any, Any]]) -> dict[Any, float]:
    out = {}
    for rec in records:
        v = rec.get(senml.V)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[rec.get(senml.N)] = v
    return out
