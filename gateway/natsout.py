# The JetStream publisher: the outbox's second consumer, beside (or instead of) the MQTT
# one. One thread runs an asyncio loop with nats-py. Like gateway/mqtt.py it reads outbox
# rows after a cursor, keeps a window of unacknowledged publishes, and hands a row's id to
# the pipeline for deletion only on the stream's ack (R3: two of three servers have it,
# fsynced). Only frames (`P/nodes/<node>/up` rows) go to the stream; other rows (retained
# states, discovery...) are for MQTT and are acked here at once.
#
# Exactly once into the stream (docs/fleet.md): a frame's subject is
# <prefix>.f.<node>.<boot>.<seq> and its Nats-Msg-Id "<node>/<boot>/<seq>"; the stream keeps one
# message per subject and refuses a second one (discard new per subject), so the same frame
# from another gateway, or from this one replaying its outbox hours later, is refused for as
# long as the stream holds the frame: error 10077, "maximum messages per subject exceeded",
# which means "stored already" and counts as an ack. The duplicate window answers repeats
# within minutes cheaply (ack with duplicate=true).
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self

import orjson

from gateway import osthread
from gateway.config import redact_url
from gateway.store import AckedRows, Reader

if TYPE_CHECKING:
    from gateway.config import NatsSettings, Settings

log = logging.getLogger("citynode.gateway")

READ_BATCH = 256
STORED_ALREADY = 10077  # JSStreamStoreFailedError "maximum messages per subject exceeded"
IN_PROCESS = 10158  # JSStreamDuplicateMessageConflict "duplicate message id is in process"
RETRY_S = (0.2, 5.0)
CONNECT_TIMEOUT_S = 5.0  # connect / stream set-up retries: first and longest wait


def subject_token(node: str) -> str:
    # a node id may hold "." (protocol/names.py), a subject token may not; "~" is in no node id
    return node.replace(".", "~")


def frame_subject(prefix: str, node: str, boot: int, seq: int) -> str:
    return f"{prefix}.f.{subject_token(node)}.{boot}.{seq}"


def msg_id(node: str, boot: int, seq: int) -> str:
    return f"{node}/{boot}/{seq}"


def frame_key(topic: str, payload: bytes) -> tuple[str, int, int] | None:
    # an outbox row -> (node, boot, seq) when it is a frame's `up` envelope, else None
    if not topic.endswith("/up"):
        return None
    try:
        body = orjson.loads(payload)
        return body["node"], body["boot"], body["seq"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def rssi_of(link: str | None) -> float | None:
    # the RSSI a radio link put in its description ("radio lora rssi -97 snr 7.5", "chirpstack
    # <devEui> rssi -101 snr 3": gateway/radio.py, gateway/chirpstack.py), else None
    if not isinstance(link, str):
        return None
    words = link.split()
    for i, w in enumerate(words[:-1]):
        if w == "rssi":
            try:
                return float(words[i + 1])
            except ValueError:
                return None
    return None


def stream_config(n: NatsSettings) -> Any:
    # The stream as docs/fleet.md describes it: file storage, R3, one message per frame subject
    # with new ones refused (deduplication for the whole retention), the duplicate window.
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

    return StreamConfig(name=n.stream, subjects=[f"{n.subject_prefix}.f.>"], storage=StorageType.FILE,
                        num_replicas=n.replicas, retention=RetentionPolicy.LIMITS, max_age=n.retention_h * 3600,
                        max_msgs_per_subject=1, discard=DiscardPolicy.NEW, discard_new_per_subject=True,
                        duplicate_window=n.duplicate_window_s)


def connect_options(n: NatsSettings, name: str, **extra: Any) -> dict[str, Any]:
    # nats.connect() keywords for [nats]: credentials and TLS, and reconnecting for ever
    opts = {"servers": list(n.servers), "name": name, "allow_reconnect": True, "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5, "connect_timeout": 2}
    if n.username is not None:
        opts["user"], opts["password"] = n.username, n.password
    if n.token is not None:
        opts["token"] = n.token
    if n.creds is not None:
        opts["user_credentials"] = n.creds
    if n.ca or n.cert or any(s.startswith("tls://") for s in n.servers):
        import ssl

        ctx = ssl.create_default_context(cafile=n.ca)
        if n.cert:
            ctx.load_cert_chain(n.cert, n.key)
        opts["tls"] = ctx
    opts.update(extra)
    return opts


async def ensure_stream(js: Any, n: NatsSettings) -> None:
    # create the stream if it is missing; an existing one is left as the operator made it
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(n.stream)
    except NotFoundError:
        await js.add_stream(stream_config(n))
        log.info("nats: stream %s created (R%d, file storage, dedup by subject)", n.stream, n.replicas)


def nats_settings(s: Settings) -> NatsSettings:
    # the [nats] of a gateway that publishes to the stream (publisher_factory makes a NatsForwarder
    # only then) or of the relay that consumes it (config.parse requires it of a relay.toml)
    if s.nats is None:
        raise ValueError("the config has no [nats] (docs/fleet.md)")
    return s.nats


class NatsForwarder(AckedRows):
    def __init__(self, *, settings: Settings, db_path: str | os.PathLike[str],
                 states_fn: Callable[..., Any] | None = None,
                 gateway_state_fn: Callable[[], dict[str, Any]] | None = None, **_: Any) -> None:
        super().__init__(settings, db_path)
        self.n = nats_settings(settings)
        self.states_fn = states_fn
        self.gateway_state_fn = gateway_state_fn
        self.stored_already = 0  # frames the stream had from another gateway or an earlier send
        self.duplicates = 0  # acks with duplicate=true (within the duplicate window)
        self.in_process = 0  # "duplicate message id is in process": another gateway's copy, being stored
        self.resent = 0
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # the publisher thread's, while it runs
        self._wake = asyncio.Event()  # bound to that loop when first waited on
        self._thread = threading.Thread(target=self._run, name="nats", daemon=True)
        self._heard = {}  # node -> {"rssi":..., "last_seen":...} for the heartbeat

    # ------------------------------------------------------------ the pipeline's interface

    def start(self) -> Self:
        self._thread.start()
        return self

    def wake(self) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:
                pass  # the loop is closing

    def offer(self, first_id: int, rows: Sequence[tuple[str, bytes]]) -> None:
        self.wake()

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        self._thread.join(timeout=15)

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        osthread.name("cn-nats")
        self.reader = Reader(self.db_path)
        try:
            asyncio.run(self._main())
        finally:
            self.reader.close()

    async def _main(self) -> None:
        import nats

        self._loop = asyncio.get_running_loop()
        n = self.n
        servers = ", ".join(redact_url(u) for u in n.servers)
        wait = RETRY_S[0]
        last_error = None

        async def disconnected() -> None:
            self.connected = False
            if self._stop.is_set():
                return  # our own close
            log.warning("nats: disconnected from the cluster; the outbox keeps every frame")

        async def reconnected() -> None:
            self.connected = True
            self.connects += 1
            url = nc.connected_url if nc is not None else None
            log.info("nats: reconnected to %s", redact_url(url.geturl()) if url else "?")

        async def error(e: Exception) -> None:
            log.debug("nats: %r", e)

        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            nc = None
            try:
                # bounded: nats-py keeps trying a first connection for ever with max_reconnect_attempts=-1,
                # and a stop must not wait for a cluster that is not there
                nc = await asyncio.wait_for(nats.connect(**connect_options(
                    n, f"citynode-{self.s.gateway_id}", disconnected_cb=disconnected, reconnected_cb=reconnected,
                    error_cb=error)), CONNECT_TIMEOUT_S)
                await ensure_stream(nc.jetstream(timeout=n.ack_timeout_s), n)
            except Exception as e:  # noqa: BLE001 - no server yet, no leader yet: retry with backoff
                text = f"{type(e).__name__}: {e}"
                if text != last_error:
                    log.warning("nats: cannot reach stream %s on %s (%s); retrying", n.stream, servers, text)
                    last_error = text
                if nc is not None:
                    try:
                        await nc.close()
                    except Exception:  # noqa: BLE001, S110 - half open
                        pass
                await self._sleep(wait)
                wait = min(wait * 2, RETRY_S[1])
                continue
            self.connected = True
            self.connects += 1
            log.info("nats: connected to %s, stream %s", servers, n.stream)
            try:
                await self._publish_loop(nc)
            except Exception:  # noqa: BLE001 - the outbox keeps every row: log, connect again, go on
                log.exception("nats: unexpected error in the publisher; starting it again in 1 s")
                await asyncio.sleep(1.0)
            finally:
                self.connected = False
                self.inflight = 0
                try:
                    await nc.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass

    async def _sleep(self, s: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), s)
        except TimeoutError:
            pass

    async def _publish_loop(self, nc: Any) -> None:
        # Publishes carry a reply subject of our own, <inbox>.<outbox id>, and the stream's answers
        # come to one subscription: the ack (or the error) names the row. (nats-py's publish_async
        # never completes its future when the stream answers with an error, as 10077.)
        n = self.n
        prefix = n.subject_prefix
        inbox = nc.new_inbox()
        answers = []  # (outbox id, answer bytes, status header)

        async def on_answer(msg: Any) -> None:
            try:
                oid = int(msg.subject.rsplit(".", 1)[1])
            except ValueError:
                return
            answers.append((oid, msg.data, msg.headers.get("Status") if msg.headers else None))
            self._wake.set()

        sub = await nc.subscribe(inbox + ".*", cb=on_answer)
        cursor = 0
        dirty = True
        inflight = {}  # outbox id -> sent (monotonic)
        next_beat = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                self.heartbeat = now
                if now >= next_beat and nc.is_connected:
                    next_beat = now + n.heartbeat_s
                    await self._announce(nc)
                acked = []
                if dirty and len(inflight) < n.inflight:
                    want = min(n.inflight - len(inflight), READ_BATCH)
                    rows = self.reader.after(cursor, want)
                    with self._lock:
                        skip = self._skip
                        skip = skip.copy() if skip else ()
                    for oid, topic, payload in rows:
                        cursor = oid
                        if oid in skip or oid in inflight:
                            continue
                        key = frame_key(topic, payload)
                        if key is None:
                            acked.append(oid)  # not a frame: nothing for the stream
                            continue
                        try:
                            await nc.publish(frame_subject(prefix, *key), payload, reply=f"{inbox}.{oid}",
                                             headers={"Nats-Msg-Id": msg_id(*key)})
                        except Exception as e:  # noqa: BLE001 - connection closed: read again from the outbox
                            log.debug("nats: publish failed: %r", e)
                            cursor = oid - 1
                            break
                        inflight[oid] = now
                    if len(rows) < want:
                        dirty = False
                if not answers and not acked:
                    await self._sleep(0.05 if dirty else 0.5)
                if self._wake.is_set() or not inflight:
                    dirty = True  # woken (new rows), or nothing in flight: look at the outbox again
                self._wake.clear()
                failed = []  # rows to send again: from the lowest of them on (acked and in-flight rows skipped)
                pause = False
                got, answers[:] = answers[:], []
                for oid, data, status in got:
                    if inflight.pop(oid, None) is None:
                        continue  # the answer to an earlier send of a row sent again
                    verdict = self._verdict(data, status)
                    if verdict is True:
                        acked.append(oid)
                    else:
                        failed.append(oid)
                        pause = pause or verdict is False
                now = time.monotonic()
                late = [oid for oid, sent in inflight.items() if now - sent > n.ack_timeout_s]
                for oid in late:  # no answer (a server died with it, the connection broke): send it again
                    del inflight[oid]
                    failed.append(oid)
                    pause = True
                if failed:
                    self.resent += len(failed)
                    cursor = min(cursor, min(failed) - 1)
                    dirty = True
                    if pause:
                        await asyncio.sleep(0.2)  # a leader election or a reconnect takes a moment
                if acked:
                    self.pubacks += len(acked)
                    with self._lock:
                        self._acked.extend(acked)
                        self._skip.update(acked)
                self.inflight = len(inflight)
            # stopping: give the answers in flight a moment (a row not acked is sent again at the next start)
            deadline = time.monotonic() + 2.0
            while inflight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                got, answers[:] = answers[:], []
                acked = [oid for oid, data, status in got if inflight.pop(oid, None) and self._verdict(data, status)]
                self.pubacks += len(acked)
                with self._lock:
                    self._acked.extend(acked)
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may be gone
                pass

    def _verdict(self, data: bytes, status: Any) -> bool | int:
        # the stream's answer to one publish -> True when the frame is stored (now or before),
        # IN_PROCESS when another copy is being stored (send again), False on a refusal (send again later)
        if status == "503":
            return False  # no responders: the stream has no leader right now
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        err = answer.get("error")
        if err is None:
            if answer.get("duplicate"):
                self.duplicates += 1
            return True
        if err.get("err_code") == STORED_ALREADY:
            self.stored_already += 1
            return True
        if err.get("err_code") == IN_PROCESS:
            self.in_process += 1
            return IN_PROCESS  # another gateway's copy is being stored right now: ask again, quietly
        log.warning("nats: the stream refused a frame: %s; it is sent again", err.get("description", err))
        return False

    async def _announce(self, nc: Any) -> None:
        # The fleet heartbeat (core NATS, not the stream): the relay's fleet page shows which
        # gateways are alive and which nodes each one hears, with RSSI where the link has one.
        if self.gateway_state_fn is None:
            return
        try:
            state = self.gateway_state_fn()
            if self.states_fn is not None:
                for node, st in self.states_fn({}):
                    self._heard[node] = {"last_seen": st.get("last_seen"), "rssi": rssi_of(st.get("link")),
                                         "link": st.get("link"), "accepted": st.get("accepted")}
            state["heard"] = self._heard
            await nc.publish(f"{self.n.subject_prefix}.gateways.{subject_token(self.s.gateway_id)}",
                             orjson.dumps(state, default=str))
        except Exception as e:  # noqa: BLE001 - a heartbeat is best effort
            log.debug("nats: heartbeat not sent: %r", e)


def _fold(fold: Callable[[Iterable[Any]], Any], name: str) -> Any:
    # a Fanout property: fold (all, any, sum, min) over that property of every member
    return property(lambda self: fold(getattr(m, name) for m in self.members))


class Fanout:
    # Two publishers on one outbox ([mqtt] and [nats]): each keeps its own cursor and window;
    # a row is deleted when both have acked it, so neither loses a row the other acked first.
    def __init__(self, members: Sequence[Any]) -> None:
        self.members = members
        self._acked = [set() for _ in members]

    def start(self) -> Self:
        for m in self.members:
            m.start()
        return self

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def wake(self) -> None:
        for m in self.members:
            m.wake()

    def offer(self, first_id: int, rows: Sequence[tuple[str, bytes]]) -> None:
        for m in self.members:
            offer = getattr(m, "offer", None)
            if offer is not None:
                offer(first_id, rows)
            else:
                m.wake()

    def take_acked(self) -> list[int]:
        for seen, m in zip(self._acked, self.members):
            seen.update(m.take_acked())
        done = set.intersection(*self._acked)
        for seen in self._acked:
            seen.difference_update(done)
        return sorted(done)

    def deleted(self, ids: Iterable[int]) -> None:
        for m in self.members:
            m.deleted(ids)

    # The Publisher protocol's state (gateway/registry.py), each a fold over the members'.
    connected = _fold(all, "connected")  # both connected
    connects = _fold(sum, "connects")
    inflight = _fold(sum, "inflight")
    pubacks = _fold(sum, "pubacks")
    heartbeat = _fold(min, "heartbeat")  # the older loop's turn: the watchdog sees the stalled one
    taken_over = _fold(any, "taken_over")


def publisher(*, settings: Settings, mqtt_publisher: Any, **kw: Any) -> Any:
    # the daemon's publisher for its config: MQTT, JetStream, or both on one outbox
    out = []
    if settings.mqtt is not None:
        out.append(mqtt_publisher(settings=settings, **kw))
    if settings.nats is not None:
        out.append(NatsForwarder(settings=settings, **kw))
    return out[0] if len(out) == 1 else Fanout(out)
