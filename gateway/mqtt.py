# The publisher: one thread owns one paho 2.x client and drives it with its own select
# loop (loop_read/loop_write/loop_misc): no paho network thread, publish() from the
# same thread (publishing from another thread while loop_start() runs halves the rate).
# The outbox is the only queue: rows are read from SQLite after a cursor, published
# QoS 1 within a window of unacknowledged messages (below paho's 65535 message-id wrap),
# and handed to the pipeline for deletion on PUBACK. Every connection is a new client,
# so after a reconnect the backlog is resent from the outbox in order, never from RAM.
# The client's socket is a paho_adapter.BufferedSocket: paho's writes are collected and
# flushed once before each select(), its small reads are served from one large recv().
# Rows the pipeline has just committed are handed over in memory (offer): when they follow
# the cursor directly, the pipeline thread writes their PUBLISH packets itself, so a frame
# costs the publisher no wake-up and no outbox read, only its PUBACK. Everything else
# (a backlog, a full window, a reconnect) is read from the outbox as before. The client,
# the cursor and the in-flight map are shared under one lock (_io), held by this thread
# except while it sleeps in select().
from __future__ import annotations

import json
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway import osthread
from gateway.outputs import iso, retained
from gateway.paho_adapter import Client, require
from gateway.store import AckedRows, Reader

if TYPE_CHECKING:
    from gateway.config import MqttSettings, Settings

log = logging.getLogger("citynode.gateway")

READ_BATCH = 256
ALARMS_CHECK_S = 0.1  # a new gateway alarm is published within this long (or at the next wake-up)
CONNACK_TIMEOUT_S = 10.0
# A session the broker ends this soon after it began, this many times in a row, is taken over:
# another client with our client id (a copied gateway config: same [gateway] id) connects
# whenever we do, and the broker drops the older session each time. Then back off.
SHORT_SESSION_S = 2.0
TAKEOVER_AFTER = 3


def mqtt_settings(s: Settings) -> MqttSettings:
    # the [mqtt] of a gateway that publishes to a broker (publisher_factory makes a Forwarder only
    # then) or of the relay (config.parse requires it of a relay.toml)
    if s.mqtt is None:
        raise ValueError("the config has no [mqtt] (docs/gateway.md)")
    return s.mqtt


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


class Forwarder(AckedRows):
    def __init__(self, *, settings: Settings, db_path: str | os.PathLike[str],
                 states_fn: Callable[[dict[str, int]], list[tuple[str, dict[str, Any]]]],
                 on_command: Callable[[str, bytes, bool], object], gateway_state_fn: Callable[[], dict[str, Any]],
                 alarms_fn: Callable[[], list[str]]) -> None:
        require()  # a paho whose internals differ is refused here, at start (gateway/paho_adapter.py)
        super().__init__(settings, db_path)  # taken_over: see SHORT_SESSION_S
        self.m = mqtt_settings(settings)
        self.prefix = self.m.topic_prefix
        self.states_fn = states_fn  # (seen versions) -> [(node, state dict)] changed since
        self.on_command = on_command  # (topic, payload bytes, retained) for P/nodes/+/down
        self.gateway_state_fn = gateway_state_fn  # -> dict for the retained online state
        self.alarms_fn = alarms_fn  # -> list of alarm names, cheap; a change republishes the state
        self.gw_topic = f"{self.prefix}/gateways/{settings.gateway_id}/state"
        self.down_topic = f"{self.prefix}/nodes/+/down"
        self.offered = 0  # outbox rows published straight from offer(), without an outbox read
        self._just_acked = []  # PUBACKed in this loop_read; handed over under one lock hold
        # an Event to set when PUBACKed ids are handed over (gateway/pubproc.py)
        self.activity: threading.Event | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._conn_ok = False
        self._connack = None
        self._io = threading.Lock()  # the session's client, cursor, in-flight map and dirty flag
        self._live = None  # the client while a session runs (offer() publishes on it)
        self._cursor = 0  # the highest outbox id published in this session
        self._dirty = True  # the outbox may hold rows after the cursor: read it
        self._inflight = {}
        self._last_error = None
        self._state_versions = {}
        self._alarms = None

    # ------------------------------------------------------------ other threads

    def wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # already pending: one byte is enough

    def offer(self, first_id: int, rows: Sequence[tuple[str, bytes]]) -> None:
        # The pipeline's rows [(topic, payload)] just committed with outbox ids first_id,
        # first_id + 1, ...: published from this (the pipeline's) thread when they follow the
        # cursor and fit the window; otherwise the publisher thread reads them from the outbox.
        with self._io:
            c = self._live
            if c is not None and not self._dirty and first_id == self._cursor + 1:
                free = max(0, self.m.inflight - len(self._inflight))
                self._publish_rows(c, ((first_id + i, t, p) for i, (t, p) in enumerate(rows[:free])))
                done = self._cursor - first_id + 1
                self.offered += done
                self.inflight = len(self._inflight)
                sent = _flush(c, c.socket())
                if done == len(rows) and sent is False:
                    return  # all of them written: the publisher thread waits for their PUBACKs
                if done < len(rows):
                    self._dirty = True  # the rest from the outbox, when the window has room
            else:
                self._dirty = True
        self.wake()

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        self._thread.join(timeout=10)
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------ paho callbacks (this thread)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: Any,
                    properties: object) -> None:
        self._connack = reason_code

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: Any,
                       properties: object) -> None:
        self._conn_ok = False

    def _on_outbox_puback(self, mid: int) -> bool:
        # Client.publish_outbox's PUBACKs; -> False for paho's own (the retained states)
        oid = self._inflight.pop(mid, None)
        if oid is None:
            return False
        self._just_acked.append(oid)
        return True

    def _hand_over(self) -> None:
        # after loop_read: the PUBACKed ids go to the pipeline (deleted in its next commit)
        ids = self._just_acked
        if ids:
            self._just_acked = []
            self.pubacks += len(ids)
            with self._lock:
                self._acked.extend(ids)
                self._skip.update(ids)
            if self.activity is not None:
                self.activity.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.on_command(msg.topic, bytes(msg.payload), msg.retain)

    # ------------------------------------------------------------ connection

    def _client(self):
        c = Client(CallbackAPIVersion.VERSION2, client_id=self.m.client_id, clean_session=False,
                   protocol=mqtt.MQTTv311)
        c.suppress_exceptions = True  # a bug in a callback must not kill the loop
        c.max_inflight_messages_set(0)  # our own window (self.m.inflight) bounds it
        c.will_set(self.gw_topic, _dumps({"state": "offline", "gateway": self.s.gateway_id}), qos=1, retain=True)
        if self.m.username is not None:
            c.username_pw_set(self.m.username, self.m.password)
        if self.m.tls:
            ctx = ssl.create_default_context(cafile=self.m.ca)  # system CAs when no ca is given
            if self.m.cert:
                ctx.load_cert_chain(self.m.cert, self.m.key)
            c.tls_set_context(ctx)  # mqtts never falls back to plain text
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_outbox_puback = self._on_outbox_puback
        c.on_message = self._on_message
        return c

    def _connect(self):
        self._connack = None
        try:
            c = self._client()
            c.connect(self.m.host, self.m.port, keepalive=self.m.keepalive_s)
            deadline = time.monotonic() + CONNACK_TIMEOUT_S
            while self._connack is None and time.monotonic() < deadline and not self._stop.is_set():
                sock = c.socket()
                if sock is None:
                    break
                select.select([sock], [sock] if _flush(c, sock) else [], [], 0.2)
                if c.loop_read() or c.loop_write():
                    break
        except (OSError, ssl.SSLError, ValueError) as e:
            self._log_failure(f"cannot connect to {self.m.url}: {e}")
            return None
        rc = self._connack
        if rc is None or rc.is_failure:
            self._log_failure(f"broker {self.m.url} refused the connection: {rc if rc is not None else 'no CONNACK'}")
            sock = c.socket()
            if sock is not None:
                sock.close()
            return None
        return c

    def _log_failure(self, text: str) -> None:
        if text != self._last_error:
            log.warning("mqtt: %s; retrying with backoff", text)
            self._last_error = text

    def _run(self) -> None:
        osthread.name("cn-mqtt")
        self.reader = Reader(self.db_path)
        backoff = self.m.reconnect_min_s
        short = 0  # sessions in a row that the broker ended within SHORT_SESSION_S
        try:
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                c = self._connect()
                if c is None:
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.m.reconnect_max_s)
                    continue
                self._last_error = None
                self.connects += 1
                if not self.taken_over:
                    log.info("mqtt: connected to %s", self.m.url)
                began = time.monotonic()
                self._session(c)
                if self._stop.is_set():
                    break
                if time.monotonic() - began >= SHORT_SESSION_S:
                    if self.taken_over:
                        log.warning("mqtt: connection to %s held again after %d short sessions", self.m.url, short)
                    short = 0
                    self.taken_over = False
                    backoff = self.m.reconnect_min_s
                    continue
                short += 1
                if short >= TAKEOVER_AFTER:
                    if not self.taken_over:
                        log.error("mqtt: the broker ends each session at once (%d in a row): another client uses "
                                  "client id %r, probably a second gateway with the same [gateway] id (a copied "
                                  "config); give each gateway its own id. Backing off up to %g s",
                                  short, self.m.client_id, self.m.reconnect_max_s)
                        self.taken_over = True
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.m.reconnect_max_s)
        finally:
            self.reader.close()

    # ------------------------------------------------------------ one connection

    def _publish_alarms(self, c: Client, force: bool = False) -> None:
        alarms = self.alarms_fn()
        if force or alarms != self._alarms:
            self._alarms = alarms
            if alarms:
                log.warning("gateway alarms: %s", ", ".join(alarms))
            c.publish(self.gw_topic, _dumps(self.gateway_state_fn()), qos=1, retain=True)

    def _publish_states(self, c: Client) -> None:
        self._publish_alarms(c, force=True)
        for node, st in self.states_fn(self._state_versions):
            if st["last_seen"] is not None:
                st = dict(st, last_seen=iso(st["last_seen"]))
            c.publish(f"{self.prefix}/nodes/{node}/state", _dumps(st), qos=1, retain=True)

    def _session(self, c: Client) -> None:
        self._conn_ok = True
        self.connected = True
        self._state_versions = {}
        window = self.m.inflight
        with self._io:
            self._inflight = {}
            self._cursor = 0
            self._dirty = True
            c.subscribe(self.down_topic, qos=1)
            self._publish_states(c)
            self._live = c  # from here on offer() may publish on this connection
        next_state = time.monotonic() + self.m.state_interval_s
        next_alarms = 0.0
        io = self._io
        io.acquire()
        try:
            while self._conn_ok and not self._stop.is_set():
                now = time.monotonic()
                self.heartbeat = now
                if now >= next_state:
                    self._publish_states(c)
                    next_state = now + self.m.state_interval_s
                elif now >= next_alarms:  # not every turn: at saturation a turn is a few frames
                    self._publish_alarms(c)
                    next_alarms = now + ALARMS_CHECK_S
                inflight = self._inflight
                free = window - len(inflight)
                if self._dirty and free > 0:
                    want = min(free, READ_BATCH)
                    rows = self.reader.after(self._cursor, want)
                    with self._lock:
                        skip = self._skip.copy() if self._skip else ()
                    if not self._publish_rows(c, rows, skip):
                        self._conn_ok = False
                    if len(rows) < want:
                        self._dirty = False
                self.inflight = len(inflight)
                sock = c.socket()
                if sock is None or not self._conn_ok:
                    break
                busy = self._dirty and len(inflight) < window
                pending_fn = getattr(sock, "pending", None)  # bytes read and not yet parsed (BufferedSocket, TLS)
                pending = pending_fn() if pending_fn is not None else 0
                timeout = 0 if busy or pending else max(0.0, min(1.0, next_state - now))
                want_write = _flush(c, sock)  # one send for everything paho wrote since the last select
                if want_write is None:
                    break  # connection lost while writing
                io.release()  # offer() publishes while this thread sleeps
                try:
                    r, w, _ = select.select([sock, self._wake_r], [sock] if want_write else [], [], timeout)
                finally:
                    io.acquire()
                if self._wake_r in r:
                    try:
                        self._wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                    self._dirty = True
                if sock in r or pending:
                    rc = c.read_all()
                    self._hand_over()
                    if rc:
                        break
                if sock in w and (_flush(c, sock) is None or c.loop_write()):
                    break
                if c.loop_misc():
                    break
            if self._stop.is_set() and self._conn_ok:
                self._goodbye(c)
        finally:
            self._live = None  # offer() leaves new rows to the outbox and the next session
            io.release()
            self.connected = False
            self.inflight = 0
            sock = c.socket()
            if sock is not None:
                sock.close()
            if not self._stop.is_set() and not self.taken_over:
                log.warning("mqtt: connection to %s lost; the outbox keeps every frame", self.m.url)

    def _publish_rows(self, c: Client, rows: Iterable[tuple[int, str, bytes]], skip: Collection[int] = ()) -> bool:
        # Outbox rows [(id, topic, payload)] in id order, QoS 1 on c (caller holds _io); the
        # cursor follows each one published or skipped. -> False when the connection is gone.
        inflight = self._inflight
        publish = c.publish_outbox
        for oid, topic, payload in rows:
            if oid not in skip:
                mid = publish(topic, payload, retained(topic))
                if mid is None:
                    return False
                inflight[mid] = oid
            self._cursor = oid
        return True

    def _goodbye(self, c: Client) -> None:
        # A clean stop: say offline ourselves (the will is only sent on an unclean loss),
        # give in-flight PUBACKs a moment, then disconnect.
        state = self.gateway_state_fn()
        state["state"] = "offline"
        info = c.publish(self.gw_topic, _dumps(state), qos=1, retain=True)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and self._conn_ok and (not info.is_published() or self._inflight):
            sock = c.socket()
            if sock is None:
                break
            select.select([sock], [sock] if _flush(c, sock) else [], [], 0.1)
            rc = c.read_all()
            self._hand_over()
            if rc or c.loop_write():
                break
        c.disconnect()
        c.loop_write()
        sock = c.socket()
        if sock is not None:
            _flush(c, sock)


def _flush(c: Client, sock: Any) -> bool | None:
    # Write what paho queued in the BufferedSocket. -> True when bytes still wait (select
    # for writing), False when all went, None when the connection is lost.
    try:
        done = sock.flush() if hasattr(sock, "flush") else True
    except OSError:
        return None
    return not done or c.want_write()
