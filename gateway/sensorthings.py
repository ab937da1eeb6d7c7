# SensorThings delivery on its own connection ([sensorthings_server]): Observations wait in
# the outbox table st_outbox (written in the pipeline's group commit, as durable as the `up`
# envelope) and leave it only when the server took them.
#   http(s)://  POST <root>/v1.1/Datastreams(id)/Observations; deleted on 201 Created only.
#               A 4xx answer (FROST: 400 bad entity, 404 no such Datastream) will not change
#               on a resend: the row moves to st_rejected with the answer, counted, for an
#               operator to inspect and requeue. 401/403/407/408/429, 5xx and connection
#               errors are retried with a doubling backoff, the row kept in place.
#   mqtt(s)://  QoS 1 publish to v1.1/Datastreams(id)/Observations on FROST's own broker;
#               deleted on PUBACK (FROST acknowledges before it creates and only logs a
#               failure, so HTTP is the mode that knows what was created).
from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import sqlite3
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.store import connect

if TYPE_CHECKING:
    from gateway.config import SensorThingsServer
    from gateway.stats import Stats

log = logging.getLogger("citynode.gateway")

BATCH = 100
RETRY_CODES = (401, 403, 407, 408, 429)  # credentials, proxy, timeouts, rate limits: fixable, not the data's fault


def _tls_context(server: SensorThingsServer) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=server.ca)  # system CAs when no ca is given
    if server.cert:
        ctx.load_cert_chain(server.cert, server.key)
    return ctx


class Sender:
    def __init__(self, server: SensorThingsServer, db_path: str | os.PathLike[str], stats: Stats,
                 gateway_id: str) -> None:
        self.server = server
        self.db_path = db_path
        self.stats = stats
        self.client_id = server.client_id or f"citynode-{gateway_id}-sta"
        self.connected = False
        self.last_error = None
        self.backoff = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sensorthings", daemon=True)
        self._db = connect(self.db_path)  # its own connection to the outbox, for its thread; stop() closes it

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._db.close()

    def depth(self) -> int:
        # Observations waiting (any thread: a connection of its own)
        db = connect(self.db_path)
        try:
            return db.execute("SELECT COUNT(*) FROM st_outbox").fetchone()[0]
        finally:
            db.close()

    def _rows(self, after: int, limit: int = BATCH) -> list[tuple[int, str, bytes]]:
        return self._db.execute("SELECT id, path, payload FROM st_outbox WHERE id > ? ORDER BY id LIMIT ?",
                                (after, limit)).fetchall()

    def _write(self, statements: Iterable[tuple[str, Iterable[Sequence[Any]]]]) -> None:
        # one short transaction beside the pipeline's group commits (SQLite's busy timeout
        # waits); [(sql, rows)]
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                db.executemany(sql, args)
            db.execute("COMMIT")
        except sqlite3.Error:
            db.execute("ROLLBACK")
            raise

    def _failed(self, text: str) -> None:
        s = self.server
        self.backoff = min(max(self.backoff * 2, s.retry_min_s), s.retry_max_s)
        if text != self.last_error:
            log.warning("sensorthings: %s; retrying in %.1f s (rows stay in the outbox)", text, self.backoff)
            self.last_error = text
        self.stats.count("st_errors")
        self._stop.wait(self.backoff)

    def _ok(self) -> None:
        if self.last_error is not None:
            log.info("sensorthings: %s takes Observations again", self.server.url)
        self.last_error = None
        self.backoff = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                (self._run_http if self.server.mode == "http" else self._run_mqtt)()
            except Exception as e:  # noqa: BLE001 - a full disk or a bug: rows stay, try again later
                log.exception("sensorthings: sender failed")
                self._failed(f"sender failed: {e!r}")

    # ------------------------------------------------------------ HTTP

    def _http(self):
        s = self.server
        if s.tls:
            return http.client.HTTPSConnection(s.host, s.port, timeout=s.timeout_s, context=_tls_context(s))
        return http.client.HTTPConnection(s.host, s.port, timeout=s.timeout_s)

    def _headers(self):
        h = {"Content-Type": "application/json"}
        if self.server.username is not None:
            token = f"{self.server.username}:{self.server.password or ''}".encode()
            h["Authorization"] = "Basic " + base64.b64encode(token).decode()
        return h

    def _run_http(self) -> None:
        conn = None
        headers = self._headers()
        root = self.server.path
        while not self._stop.is_set():
            rows = self._rows(0)
            if not rows:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            done, rejected = [], []
            for row_id, path, payload in rows:
                if self._stop.is_set():
                    break
                url = root + "/" + urllib.parse.quote(path, safe="/()',:-._~")
                try:
                    if conn is None:
                        conn = self._http()
                    conn.request("POST", url, body=payload, headers=headers)
                    resp = conn.getresponse()
                    answer = resp.read(4096).decode("utf-8", "replace")
                    self.connected = True
                except (OSError, http.client.HTTPException) as e:
                    if conn is not None:
                        conn.close()
                    conn = None
                    self.connected = False
                    self._commit(done, rejected)
                    self._failed(f"POST to {self.server.url} failed: {e!r}")
                    break
                if resp.status == 201:
                    done.append((row_id,))
                    self._ok()
                elif resp.status in (409, 500) and self._created_before(conn, headers, path, payload):
                    # a resend of an Observation FROST already has (its answer was lost): FROST
                    # refuses the repeated @iot.id ("Failed to store data.", 500), a GET finds it
                    done.append((row_id,))
                    self.stats.count("st_already")
                    self._ok()
                elif 400 <= resp.status < 500 and resp.status not in RETRY_CODES:
                    rejected.append((row_id, resp.status, answer[:1000], time.time()))
                    log.warning("sensorthings: %s %s refused an Observation (%d %s): kept in st_rejected",
                                self.server.url, path, resp.status, answer[:200])
                else:
                    self._commit(done, rejected)
                    self._failed(f"{self.server.url} answered {resp.status} {answer[:200]!r}")
                    break
            self._commit(done, rejected)  # also when stopping halfway: what the server has is gone
        if conn is not None:
            conn.close()

    def _created_before(self, conn: http.client.HTTPConnection, headers: dict[str, str], path: str,
                        payload: bytes) -> bool:
        # Is the Observation with this row's @iot.id on the server? (GET <root>/<version>/Observations(id))
        try:
            oid = json.loads(payload).get("@iot.id")
        except ValueError:
            return False
        if oid is None:
            return False
        key = str(oid) if isinstance(oid, int) else "'" + str(oid).replace("'", "''") + "'"
        url = self.server.path + "/" + urllib.parse.quote(f"{path.split('/', 1)[0]}/Observations({key})",
                                                          safe="/()',:-._~")
        try:
            conn.request("GET", url, headers={k: v for k, v in headers.items() if k != "Content-Type"})
            resp = conn.getresponse()
            resp.read(65536)
        except (OSError, http.client.HTTPException):
            return False  # not known: the POST is retried (and asked about again)
        return resp.status == 200

    def _commit(self, done: list[tuple[int]], rejected: list[tuple[int, int, str, float]]) -> None:
        # done: [(row id,)] the server has; rejected: [(row id, status, answer, when)] kept aside
        if not done and not rejected:
            return
        self._write([("INSERT INTO st_rejected (id, path, payload, status, answer, at) "
                      "SELECT id, path, payload, ?, ?, ? FROM st_outbox WHERE id = ?",
                      [(st, ans, at, i) for i, st, ans, at in rejected]),
                     ("DELETE FROM st_outbox WHERE id = ?", done + [(r[0],) for r in rejected])])
        if done:
            self.stats.count("st_sent", len(done))
        if rejected:
            self.stats.count("st_rejected", len(rejected))
        done.clear()
        rejected.clear()

    # ------------------------------------------------------------ MQTT

    def _mqtt_client(self) -> mqtt.Client:
        s = self.server
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                        protocol=mqtt.MQTTv311)
        c.suppress_exceptions = True
        if s.username is not None:
            c.username_pw_set(s.username, s.password)
        if s.tls:
            c.tls_set_context(_tls_context(s))
        return c

    def _run_mqtt(self) -> None:
        lock = threading.Lock()
        acked = []
        inflight = {}  # mid -> row id
        state = {"up": False}

        def on_connect(c: mqtt.Client, u: object, flags: object, rc: Any, props: object) -> None:
            state["up"] = not rc.is_failure

        def on_disconnect(c: mqtt.Client, u: object, flags: object, rc: Any, props: object) -> None:
            state["up"] = False

        early = set()  # PUBACKs that came before publish() returned and its mid was noted

        def on_publish(c: mqtt.Client, u: object, mid: int, rc: Any, props: object) -> None:
            with lock:
                row = inflight.pop(mid, None)
                if row is not None:
                    acked.append((row,))
                else:
                    early.add(mid)
            self._wake.set()

        while not self._stop.is_set():
            c = self._mqtt_client()
            c.on_connect, c.on_disconnect, c.on_publish = on_connect, on_disconnect, on_publish
            try:
                c.connect(self.server.host, self.server.port, keepalive=30)
            except (OSError, ssl.SSLError, ValueError) as e:
                self._failed(f"cannot connect to {self.server.url}: {e}")
                continue
            c.loop_start()
            deadline = time.monotonic() + self.server.timeout_s
            while not state["up"] and time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.02)
            if not state["up"]:
                c.loop_stop()
                c.disconnect()
                self._failed(f"no CONNACK from {self.server.url}")
                continue
            self.connected = True
            self._ok()
            cursor = 0
            with lock:
                inflight.clear()
                early.clear()
            while state["up"] and not self._stop.is_set():
                with lock:
                    done = acked[:]
                    acked.clear()
                    room = BATCH - len(inflight)
                if done:
                    self._commit(done, [])
                rows = self._rows(cursor, room) if room > 0 else []
                for row_id, path, payload in rows:
                    info = c.publish(path, payload, qos=1)
                    with lock:
                        if info.mid in early:
                            early.discard(info.mid)
                            acked.append((row_id,))
                        else:
                            inflight[info.mid] = row_id
                    cursor = row_id
                if not rows:
                    self._wake.wait(0.2)
                    self._wake.clear()
            self.connected = False
            c.loop_stop()
            c.disconnect()
            with lock:
                done = acked[:]
                acked.clear()
            self._commit(done, [])
            if not self._stop.is_set():
                self._failed(f"connection to {self.server.url} lost")
