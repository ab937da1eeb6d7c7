# `citynode relay --config relay.toml`: the city's one consumer of the JetStream stream the
# gateways publish to (docs/fleet.md). It reads the stream through a durable pull consumer
# with explicit acks and feeds today's outputs (the gateway's own output classes, through
# the same outbox, group commit and MQTT publisher) once for the whole city:
#   stream -> verify MAC -> dedup -> outputs -> outbox (SQLite, fsync) -> ack the stream
#          -> MQTT publish (QoS 1) -> delete on PUBACK
# Exactly once into the outbox: the stream sequence of every message it stored goes into
# the same transaction as its rows; a redelivery (an ack lost in a crash) finds its sequence
# there and is acked without output. Sequences at or below the consumer's ack floor are
# pruned (the stream never delivers those again). The node's (boot, seq) state (the
# gateway's dedup) is kept too: a frame the stream no longer holds, replayed by a gateway
# after the retention, is still known as a duplicate while it is within its node's window.
# Each frame is dated here, once for the city (SPEC.md section 8), by one FrameClock fed
# the first gateway's reception time: a node's frames get unique, ordered times whichever
# gateway heard each. The `up` message is made from the verified frame as a gateway makes it
# (gateway/outputs.py Envelope, its `gateway` and `received` those of the first gateway);
# the other outputs are made here too, by the gateway's own code (gateway/registry.py
# OutputSet.messages): an output that cannot convert a frame loses its rows of that frame
# only (counted output_failures). A batch that raises (a frame whose `up` envelope cannot be
# made, any other fault) is taken again one message at a time, so the others are stored and acked. A
# message that raises there is poison (a bug it alone trips) only while other messages are
# stored: it is offered again 1 s later, and after POISON_TRIES failures with others stored
# between each two it is terminated (JetStream AckTerm: never delivered again), counted
# (rejected payload, and poison), one line. A message failing again with nothing stored since
# is systemic (a bug every message trips, a resource the relay lacks): nothing is terminated;
# the relay is stuck (alarm relay_stuck, one line per change), holds the stream (NAK, the
# delay growing to HOLD_MAX_S) and goes on by itself once it stores again: nothing is lost.
from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import enum
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

import orjson

from gateway import GatewayError, __version__, config, dedup, osthread
from gateway.daemon import close_rest, lock_data_dir
from gateway.keys import load_keys
from gateway.mqtt import Forwarder, mqtt_settings
from gateway.natsout import CONNECT_TIMEOUT_S, connect_options, ensure_stream, nats_settings
from gateway.outputs import Frame, iso
from gateway.registry import build as build_outputs
from gateway.registry import one_line
from gateway.stats import Stats
from gateway.store import Store, StoreError
from gateway.timing import CLOCK_AHEAD_S, CLOCK_MIN_S, FrameClock
from protocol import message
from protocol.cbor import FrameError

if TYPE_CHECKING:
    from gateway.config import Settings

log = logging.getLogger("citynode.relay")

FETCH = 256  # messages per pull
ACK_WAIT_S = 30.0  # the stream redelivers a message not acked this long after delivery
PRUNE_S = 10.0  # how often stored sequences below the consumer's ack floor are forgotten
SEEN_TABLE = "CREATE TABLE IF NOT EXISTS relay_seen (stream_seq INTEGER PRIMARY KEY)"
LATER_S = 60.0  # a frame whose node key the relay lacks comes again after this long
GATEWAY_ALIVE_HEARTBEATS = 3  # a gateway is shown dead after this many of its heartbeats missed
POISON_TRIES = 3  # a message that makes the relay raise this many times, while others are stored, is terminated
POISON_RETRY_S = 1.0  # it comes again after this long between those tries
HOLD_MAX_S = 30.0  # stuck (every message raises): a message comes again after as long as it is stuck, at most this


class _Later(enum.Enum):
    LATER = "later"  # _frame(): no key for its node yet; the stream delivers it again after LATER_S


LATER = _Later.LATER


def _unix(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


class Relay:
    def __init__(self, settings: Settings, keys: Mapping[str, bytes] | None = None) -> None:
        self.s = settings
        self.n = nats_settings(settings)  # config.parse(..., role="relay") requires [nats] and [mqtt]
        self.keys = keys if keys is not None else load_keys(settings.keys_file)
        self.stats = Stats()
        self.started = None
        self.states = {}
        self.seen = set()
        self._deletes = []  # outbox ids PUBACKed, deleted with the next commit
        self.later = []
        self.fleet = {}  # gateway id -> (time of its last heartbeat, its state)
        self.counters = {"stored": 0, "redelivered": 0, "duplicates": 0, "rejected": 0, "acked": 0,
                         "no_key": 0, "poison": 0, "gateway_clock": 0, "held": 0}
        # stream seq -> (its failures backed by others stored, self.processed when its last batch began)
        self.failures: dict[int, tuple[int, int]] = {}
        self.processed = 0  # frames stored since the start: a failure is poison only while this grows
        self.stuck_since: float | None = None  # monotonic time the relay got stuck (relay_stuck), or None
        self.connected = False
        self.web = None
        self.history = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._lock_fd = None
        self.error = None

    # ------------------------------------------------------------ life cycle

    def start(self) -> Self:
        s = self.s
        self.open()
        self.st_sender = None
        if s.sensorthings_server and self.outputs.own:
            from gateway.sensorthings import Sender

            self.st_sender = Sender(s.sensorthings_server, self.store.path, self.stats, s.gateway_id).start()
        if s.web_listen:
            self._start_web(s.web_listen)
        self.started = time.time()
        self.forwarder.start()
        self._thread.start()
        log.info("relay %s: stream %s, consumer %s, %d node keys, %d messages in the outbox", s.gateway_id,
                 self.n.stream, self.n.durable, len(self.keys), self.depth)
        return self

    def open(self) -> None:
        # the data_dir, the outbox and the outputs, without a thread: start() runs the consumer
        # and the publisher on them (a test drives _process() on an opened relay)
        s = self.s
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_data_dir(s.data_dir)
        db_path = s.data_dir / "relay.sqlite"
        self.store = Store(db_path, s.outbox.max_bytes)
        self.store.db.execute(SEEN_TABLE)
        self.seen = {r[0] for r in self.store.db.execute("SELECT stream_seq FROM relay_seen")}
        self.states = self.store.seq_states()
        self.depth = self.store.depth()
        # the city's frame clock, persisted with the commits as a gateway's (gateway/pipeline.py)
        self.clock = FrameClock(warn=self._clock_ignored, saved=self.store.timebase())
        self.outputs = build_outputs(s, self.keys, self._thresholds)  # gateway/registry.py, the envelope first
        self.forecasts = self.outputs.forecasts
        self.forwarder = Forwarder(settings=s, db_path=db_path, states_fn=self.stats.changed_nodes,
                                   on_command=lambda *a: None, gateway_state_fn=self.relay_state,
                                   alarms_fn=self.alarms)

    def _start_web(self, listen: str) -> None:
        from gateway.web.history import History
        from gateway.web.server import StatusWeb

        self.history = History(self.s.data_dir / "history.sqlite").start()
        self.web = StatusWeb(listen=listen, status_fn=self.status, history=self.history,
                             token=self.s.web_token, stale_after_s=self.s.web_stale_after_s, hosts=self.s.web_hosts)
        from gateway.web.fleet import add_fleet_page

        add_fleet_page(self.web.app, self.fleet_status)
        self.web.start()
        log.info("status page on %s (the fleet: %sfleet)", self.web.url, self.web.url)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        self.forwarder.stop()
        self._housekeeping()
        if self.st_sender:
            self.st_sender.stop()
        close_rest(self)
        log.info("relay %s stopped; %d frames stored, %d redeliveries ignored", self.s.gateway_id,
                 self.counters["stored"], self.counters["redelivered"])

    def reload_keys(self) -> bool:
        # SIGHUP: a bad file keeps the old keys; frames that waited for a key come with the next delivery
        try:
            keys = load_keys(self.s.keys_file)
        except ValueError as e:
            log.error("relay: keys not reloaded, keeping %d old keys: %s", len(self.keys), e)
            return False
        self.keys = keys
        log.info("relay: keys reloaded: %d nodes", len(keys))
        return True

    def _clock_ignored(self, node: str, t: object) -> None:
        self.stats.rejects_log.warning("clock", "node %s clock says %d: ignored, time fixed at the relay", node, t)

    def _received_ignored(self, gateway: str, msg: Any, said: object, stored: float) -> float:
        # a gateway's reception time no clock gives (before 2000, or more than a day after the
        # stream stored the frame: its clock is wrong, or it is no gateway of this release). Taken,
        # it would date the frame where ISO 8601 does not reach (year 0 or 10000) and, as the
        # anchor of its node's boot, every later frame of that boot after it (SPEC.md section 8):
        # the frame is dated by the stream's time instead, counted, one line
        self.counters["gateway_clock"] += 1
        self.stats.rejects_log.warning("gateway_clock", "relay: gateway %s says it received stream seq %d at %s: "
                                       "no plausible time (after 2000, at most a day after the stream stored it); "
                                       "dated by the stream's time", gateway, msg.metadata.sequence.stream,
                                       repr(said)[:40])
        return stored

    def _thresholds(self, node: str) -> dict[str, float] | None:
        st = self.stats.nodes.get(node)
        return st.thresholds if st is not None else None

    # ------------------------------------------------------------ the consumer

    def _run(self) -> None:
        osthread.name("cn-relay")
        try:
            asyncio.run(self._main())
        except Exception as e:  # noqa: BLE001 - reported on the status page and in the log
            self.error = f"{type(e).__name__}: {e}"
            log.exception("relay: stopped by an unexpected error")

    async def _main(self) -> None:
        import nats
        import nats.errors
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        n = self.n
        wait = 0.2
        while not self._stop.is_set():
            nc = None
            try:
                nc = await asyncio.wait_for(nats.connect(**connect_options(n, f"citynode-relay-{self.s.gateway_id}")),
                                            CONNECT_TIMEOUT_S)
                js = nc.jetstream(timeout=10)
                await ensure_stream(js, n)
                sub = await js.pull_subscribe(f"{n.subject_prefix}.f.>", durable=n.durable, stream=n.stream,
                                              config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT,
                                                                    deliver_policy=DeliverPolicy.ALL,
                                                                    ack_wait=ACK_WAIT_S, max_ack_pending=20_000,
                                                                    max_deliver=-1))
                await nc.subscribe(f"{n.subject_prefix}.gateways.*", cb=self._heartbeat)
            except Exception as e:  # noqa: BLE001 - no cluster or leader yet: retry
                log.warning("relay: cannot consume stream %s yet (%s: %s); retrying", n.stream, type(e).__name__, e)
                if nc is not None:  # connected, but the stream or the consumer is not there yet
                    try:
                        await nc.close()
                    except Exception:  # noqa: BLE001, S110 - closed already
                        pass
                await asyncio.sleep(wait)
                wait = min(wait * 2, 5.0)
                continue
            self.connected = True
            log.info("relay: consuming stream %s as %s", n.stream, n.durable)
            try:
                await self._consume(js, sub)
            except Exception:  # noqa: BLE001 - what was not acked comes again; start over
                self.clock.undo()  # the times of frames not stored are given back (nothing once stored)
                log.exception("relay: unexpected error; consuming again in 1 s")
                await asyncio.sleep(1.0)
            finally:
                self.connected = False
                await nc.close()

    async def _consume(self, js: Any, sub: Any) -> None:
        import nats.errors

        pruned = time.monotonic()
        while not self._stop.is_set():
            try:
                msgs = await sub.fetch(FETCH, timeout=0.5)
            except nats.errors.TimeoutError:
                msgs = []
            except Exception as e:  # noqa: BLE001 - a server went away: the client reconnects
                log.debug("relay: fetch failed: %r", e)
                await asyncio.sleep(0.2)
                continue
            if msgs:
                if not await self._take(msgs):
                    await asyncio.sleep(0.5)  # not stored (disk): not acked, redelivered later
                    continue
            else:
                self._housekeeping()
            if time.monotonic() - pruned > PRUNE_S:
                pruned = time.monotonic()
                await self._prune(sub)

    async def _take(self, msgs: list[Any]) -> bool:
        # a batch processed and acked -> False when it is not stored (disk: it comes again)
        start = self.processed
        failed: list[tuple[Any, Exception]] = []
        try:
            return await self._take_some(msgs, failed)
        finally:
            for m, e in failed:  # judged once the whole batch was tried: its successes back them
                await self._failed(m, e, start)

    async def _take_some(self, msgs: list[Any], failed: list[tuple[Any, Exception]]) -> bool:
        try:
            if not self._process(msgs):
                return False
        except Exception as e:  # noqa: BLE001 - one poison message must not hold up the stream
            # nothing of the batch is stored (or all of it, when the error came after the commit:
            # then its messages are known and acked below); the times it took go back to the clock
            self.outputs.reset()
            self.clock.undo()
            if len(msgs) == 1:
                failed.append((msgs[0], e))
                return True
            log.debug("relay: a batch of %d raised; taking it one message at a time", len(msgs), exc_info=True)
            for m in msgs:
                if not await self._take_some([m], failed):
                    return False
            return True
        later = set(map(id, self.later))
        for m in msgs:
            try:
                if id(m) in later:
                    await m.nak(delay=LATER_S)
                else:
                    await m.ack()
            except Exception as e:  # noqa: BLE001 - redelivered and recognised
                log.debug("relay: ack failed: %r", e)
        self.counters["acked"] += len(msgs) - len(later)
        if self.failures:  # a message that failed before and went through now starts afresh
            for m in msgs:
                self.failures.pop(m.metadata.sequence.stream, None)
        return True

    async def _failed(self, msg: Any, e: Exception, start: int) -> None:
        # one message whose processing raised, alone. It is poison only when other messages are
        # stored between its failures (the first gap: from the start of the batch it first failed
        # in): it comes again POISON_RETRY_S later and is terminated (not delivered again) at
        # POISON_TRIES failures so backed, a counted rejection. A failure again with nothing
        # stored since the previous one is systemic: the relay is stuck and holds the messages
        # (NAK), longer the longer it is stuck (at most HOLD_MAX_S), until it stores one again
        q = msg.metadata.sequence.stream
        tries, mark = self.failures.pop(q, (0, start))
        backed = tries == 0 or self.processed > mark  # the first failure: nothing to compare with yet
        tries = tries + 1 if backed else 1
        log.debug("relay: stream seq %d raised (%d of %d)", q, tries, POISON_TRIES, exc_info=True)
        try:
            if backed and tries >= POISON_TRIES:
                self.counters["rejected"] += 1
                self.counters["poison"] += 1
                self.stats.reject("payload", None, f"stream seq {q}",
                                  f"the relay failed on it {tries} times while it stored others: {one_line(e)}; "
                                  "terminated, not stored")
                await msg.term()
                return
            if len(self.failures) < 4 * FETCH:  # bounded: a failure not remembered is judged afresh
                self.failures[q] = (tries, start)
            now = time.monotonic()
            if not backed and self.stuck_since is None:
                self.stuck_since = now
                log.error("relay: stuck: stream seq %d fails again (%s) and no message was stored since; "
                          "the stream is held, nothing terminated, each message tried again within %g s",
                          q, one_line(e), HOLD_MAX_S)
            if self.stuck_since is not None:
                self.counters["held"] += 1
                delay = min(HOLD_MAX_S, max(POISON_RETRY_S, now - self.stuck_since))
            else:
                self.stats.rejects_log.warning("poison", "relay: stream seq %d: %s (try %d of %d); again in %g s",
                                               q, one_line(e), tries, POISON_TRIES, POISON_RETRY_S)
                delay = POISON_RETRY_S
            await msg.nak(delay=delay)
        except Exception as err:  # noqa: BLE001 - not answered: the stream delivers it again after ACK_WAIT_S
            log.debug("relay: nak/term failed: %r", err)

    def alarms(self) -> list[str]:
        return ["relay_stuck"] if self.stuck_since is not None else []

    async def _prune(self, sub: Any) -> None:
        try:
            floor = (await sub.consumer_info()).ack_floor.stream_seq
        except Exception:  # noqa: BLE001 - later
            return
        old = [q for q in self.seen if q <= floor]
        if old:
            self.store.db.execute("DELETE FROM relay_seen WHERE stream_seq <= ?", (floor,))
            self.seen.difference_update(old)

    async def _heartbeat(self, msg: Any) -> None:
        try:
            state = orjson.loads(msg.data)
            self.fleet[str(state["gateway"])] = (time.time(), state)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass

    # ------------------------------------------------------------ one batch

    def _process(self, msgs: list[Any]) -> bool:
        # -> True when the batch is stored (then acked), False when the commit failed
        rows, st_rows, seen, frames = [], [], [], []
        later = self.later = []  # not for now (no key yet): asked to come again (_consume naks them)
        pending = {}
        for msg in msgs:
            q = msg.metadata.sequence.stream
            if q in self.seen:
                self.counters["redelivered"] += 1
                continue
            made = self._frame(msg, pending)
            if made is LATER:
                later.append(msg)
                continue
            seen.append(q)
            if made is None:
                continue
            f, new, gaps = made
            # as the gateway's pipeline: an output that cannot convert it loses its rows of this
            # frame only (counted output_failures, one line). Not even its envelope: it raises, as
            # any other fault of this frame, and _take judges it (poison, or the relay is stuck)
            made_rows, made_st = self.outputs.messages(f, self.stats)
            if new is not None:
                pending[f.node] = new
            rows.extend(made_rows)
            st_rows.extend(made_st)
            frames.append((f, gaps))
        deletes = self._take_deletes()
        try:
            first = self.store.commit(rows=rows, states=list(pending.items()), deletes=deletes, st_rows=st_rows,
                                      extra=(("INSERT OR IGNORE INTO relay_seen VALUES (?)", [(q,) for q in seen]),),
                                      clocks=self.clock.saved_of({f.node for f, _ in frames}))
        except StoreError as e:
            log.error("relay: commit failed (%s); the batch is not acked and comes again", e)
            # outputs that publish a change once (availability, discovery) forget what the failed
            # commit lost, and say it again with the redelivered batch (as gateway/pipeline.py);
            # the clock gives back the times of the frames not stored (gateway/timing.py), so the
            # redelivered frames get the same times
            self.outputs.reset()
            self.clock.undo()
            return False  # the PUBACKed rows are deleted with the next commit that works
        self.clock.kept()
        self._deletes = []
        self.seen.update(seen)
        self.states.update(pending)
        self.depth += len(rows) - len(deletes)
        self.forwarder.deleted(deletes)
        self.counters["stored"] += len(frames)
        if frames:
            self.processed += len(frames)
            if self.stuck_since is not None:
                log.warning("relay: no longer stuck: messages stored again after %.0f s; the held ones come again",
                            time.monotonic() - self.stuck_since)
                self.stuck_since = None
        with self.stats.lock:
            self.stats.counters["accepted"] += len(frames)
            for f, gaps in frames:
                self.stats.accepted_locked(f, gaps)
        if self.history is not None:
            from gateway.pipeline import _numbers

            for f, _ in frames:
                self.history.add(f.node, f.time_s, _numbers(f.msg["records"]), f.msg["flags"])
        if first is not None:  # rows were stored, the first of them under this id
            self.forwarder.offer(first, rows)
        if st_rows and self.st_sender is not None:
            self.st_sender.wake()
        return True

    def _frame(self, msg: Any, pending: dict[str, Any]) -> tuple[Frame, dedup.SeqState | None, int] | _Later | None:
        # a stream message -> (Frame, its node's state once it is stored or None, gaps), or None
        # (rejected or a duplicate: counted)
        try:
            env = orjson.loads(msg.data)
            raw = base64.b64decode(env["frame"], validate=True)
            m = message.decode(raw, self.keys.get)
            node, boot, seq = m["node"], m["boot"], m["seq"]
            if m["type"] != "data" or (env["node"], env["boot"], env["seq"]) != (node, boot, seq):
                raise FrameError("payload", "the envelope does not match its frame")
            gateway = env["gateway"]
            if not isinstance(gateway, str):
                raise FrameError("payload", "the envelope's gateway is not a string")
            received = _unix(env["received"])
            stored = msg.metadata.timestamp.timestamp()  # when the stream stored it (the NATS server's clock)
            if not CLOCK_MIN_S <= received <= stored + CLOCK_AHEAD_S:
                received = self._received_ignored(gateway, msg, env["received"], stored)
            f = Frame(node, m, raw, received, received, "received", f"nats {gateway}", _radio(env.get("radio")),
                      gateway=gateway)
        except (FrameError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            if getattr(e, "reason", None) in ("unknown", "mac"):
                # a gateway had this node's key and verified the frame: the relay's keys file is
                # behind (a new node, a rotated key). Not dropped: the stream delivers it again
                self.counters["no_key"] += 1
                self.stats.rejects_log.warning("no_key", "relay: %s for stream seq %d; update the relay's keys file "
                                               "(SIGHUP reloads it): the frame comes again in %d s", e,
                                               msg.metadata.sequence.stream, int(LATER_S))
                return LATER
            self.counters["rejected"] += 1
            self.stats.reject(getattr(e, "reason", "payload"), None, f"stream seq {msg.metadata.sequence.stream}",
                              str(e)[:200])
            return None
        st = pending.get(node) or self.states.get(node)
        verdict = dedup.classify(st, boot, seq, raw)
        if verdict == dedup.DUP:  # replayed after the stream forgot it, still in the node's window
            self.counters["duplicates"] += 1
            return None
        if verdict == dedup.REGRESSED:
            self.stats.reject(verdict, node, f.link, f"boot {boot} seq {seq}")
            return None
        gaps = st.gaps if st is not None else 0
        new = None
        # NEW, or older than the window (REPLAY): the stream holds one message per frame, so an old
        # unseen seq is a late frame (a gateway's long outage), not a copy; the state moves only forward
        if verdict == dedup.NEW and (st is None or boot >= st.boot):
            new = dedup.advance(st, boot, seq, raw)
            gaps = new.gaps
        # dated once for the city: the gateways' clocks differ, and one node's frames come
        # through several of them (the gateway's own `time` is not kept)
        f.time_s, f.time_source = self.clock.fix(node, m, received)
        return f, new, gaps

    def _take_deletes(self):
        self._deletes.extend(self.forwarder.take_acked())
        return self._deletes

    def _housekeeping(self) -> None:
        deletes = self._take_deletes()
        rows = self.outputs.sweep(time.time())
        if not (deletes or rows):
            return
        try:
            first = self.store.commit(rows=rows, deletes=deletes)
        except StoreError as e:
            log.error("relay: commit failed (%s)", e)
            self.outputs.reset()
            return
        self._deletes = []
        self.depth += len(rows) - len(deletes)
        self.forwarder.deleted(deletes)
        if first is not None:
            self.forwarder.offer(first, rows)

    # ------------------------------------------------------------ state

    def relay_state(self) -> dict[str, Any]:
        return {"state": "online", "gateway": self.s.gateway_id, "role": "relay", "version": __version__,
                "time": iso(time.time()), "since": iso(self.started or time.time()), "alarms": self.alarms(),
                "counters": dict(self.counters)}

    def status(self) -> dict[str, Any]:
        # the status page's snapshot, as the gateway's (gateway/daemon.py): the whole city's nodes
        counters, rejected, nodes = self.stats.snapshot()
        counters.update(self.counters)
        counters["forwarded"] = self.forwarder.pubacks
        gw = {"id": self.s.gateway_id, "version": __version__, "uptime_s": time.time() - (self.started or time.time()),
              "broker_connected": self.forwarder.connected, "stream_connected": self.connected,
              "outbox_depth": self.depth, "frames_per_s": 0.0, "disk_free_bytes": None, "rejected": rejected,
              "rejected_unattributed": self.stats.unattributed_snapshot(),
              "alarms": self.alarms() + ([] if self.connected else ["stream_disconnected"]), "counters": counters}
        out = []
        for node, st in sorted(nodes.items()):
            st["id"] = node
            fc = self.forecasts.nodes.get(node) if self.forecasts is not None else None
            if fc is not None and fc.last is not None:
                st["forecast"] = dict(fc.last, projection=fc.projection())
            out.append(st)
        return {"gateway": gw, "nodes": out, "fleet": self.fleet_status()}

    def fleet_status(self) -> dict[str, Any]:
        # gateways alive (by their heartbeats) and, per node, which gateways heard it (with RSSI
        # where the link has one) and which one's copy reached the stream first
        now = time.time()
        gateways, nodes = [], {}
        for gw_id, (at, state) in sorted(self.fleet.items()):
            c = state.get("counters") or {}
            beat = self.n.heartbeat_s
            gateways.append({"id": gw_id, "alive": now - at < GATEWAY_ALIVE_HEARTBEATS * beat,
                             "last_heartbeat_s": round(now - at, 1), "version": state.get("version"),
                             "outbox_depth": c.get("outbox_depth"), "accepted": c.get("accepted"),
                             "alarms": state.get("alarms", [])})
            for node, h in (state.get("heard") or {}).items():
                nodes.setdefault(node, {"id": node, "heard_by": []})["heard_by"].append(
                    {"gateway": gw_id, "last_seen": h.get("last_seen"), "rssi": h.get("rssi"),
                     "accepted": h.get("accepted")})
        with self.stats.lock:
            for node, st in self.stats.nodes.items():
                entry = nodes.setdefault(node, {"id": node, "heard_by": []})
                entry["delivered_by"] = st.link.removeprefix("nats ") if st.link else None
                entry["frames"] = st.accepted
        return {"relay": self.s.gateway_id, "stream": self.n.stream, "stream_connected": self.connected,
                "gateways": gateways, "nodes": [nodes[k] for k in sorted(nodes)]}


# ------------------------------------------------------------ citynode relay


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", required=True,
                        help="the relay's TOML config: [relay] id, data_dir; [nats]; [mqtt]; [nodes] (docs/fleet.md)")
    parser.add_argument("--check-config", action="store_true", help="validate the config and its keys file, then exit")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))


def run(args: argparse.Namespace) -> int:
    from gateway.cli import cannot_start, load, start_logging

    settings, keys = load(args.config, "relay")  # ConfigError: exit 2 (tools/cli.py)
    if args.check_config:
        nats, mqtt = nats_settings(settings), mqtt_settings(settings)
        print(f"{args.config}: ok ({len(keys)} node keys, stream {nats.stream} on "
              f"{len(nats.servers)} servers, mqtt {config.redact_url(mqtt.url)})")
        return 0
    start_logging(settings, args.log_level)
    stop, hup = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: hup.set())
    try:
        relay = Relay(settings, keys).start()
    except (OSError, sqlite3.Error, ValueError, GatewayError) as e:
        raise cannot_start(e) from None  # exit 1, or 78 for an install that does not fit
    while not stop.wait(1.0):
        if hup.is_set():
            hup.clear()
            relay.reload_keys()
    relay.stop()
    return 0


def _radio(v: object) -> dict[str, float] | None:
    # the envelope's reception of a LoRa frame, passed on when it has the gateway's shape
    if isinstance(v, dict) and set(v) == {"rssi_dbm", "snr_db"} and all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in v.values()):
        return v
    return None
