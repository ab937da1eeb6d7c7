# The durable outbox: SQLite in WAL mode with synchronous=FULL, so a commit is on disk
# (fsync of the WAL) before it returns. One writer connection (the pipeline thread) does
# group commits: a batch of frames, their dedup states and the PUBACKed deletions in one
# transaction. The MQTT thread reads with its own connection (WAL readers never block
# the writer). Rows get AUTOINCREMENT ids, so ids never go back and the publisher's
# cursor (id > last) can never skip a row, even after the table was emptied.
# Checkpoints (copying the WAL into the database file: two more fsyncs) run in a thread
# of their own, so a group commit waits for one fsync only; on an SD card (5-20 ms per
# fsync) that keeps the commit, and so the ACK and the frame's latency, short.
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from gateway import GatewayError, osthread
from gateway.dedup import SeqState

if TYPE_CHECKING:
    from gateway.config import Settings

log = logging.getLogger("citynode.gateway")
CHECKPOINT_S = 1.0  # after a commit, the checkpoint thread waits this long for more, then checkpoints
WAL_RESTART_FRAMES = 4096  # the writer checkpoints itself at this WAL length (~16 MiB), so the WAL is started over

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
                                   payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seqstate (node TEXT PRIMARY KEY, boot INTEGER NOT NULL, hwm INTEGER NOT NULL,
                                     cum INTEGER NOT NULL, bits BLOB NOT NULL, gaps INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS downlink (node TEXT NOT NULL, cmd_id INTEGER NOT NULL, op TEXT NOT NULL,
                                     arg TEXT NOT NULL, attempts INTEGER NOT NULL, PRIMARY KEY (node, cmd_id));
CREATE TABLE IF NOT EXISTS cmd_counter (node TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS timebase (node TEXT PRIMARY KEY, top_ms INTEGER NOT NULL, boot INTEGER,
                                     uptime_ms INTEGER, time_ms INTEGER);
CREATE TABLE IF NOT EXISTS st_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL,
                                      payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS st_rejected (id INTEGER PRIMARY KEY, path TEXT NOT NULL, payload BLOB NOT NULL,
                                        status INTEGER NOT NULL, answer TEXT NOT NULL, at REAL NOT NULL);
"""


class StoreError(GatewayError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason  # "disk_full" or "storage"


def _reason(err: BaseException) -> str:
    text = str(err).lower()
    return "disk_full" if "full" in text or "no space" in text else "storage"


class Store:
    def __init__(self, path: str | os.PathLike[str], max_bytes: int = 0) -> None:
        self.path = str(path)
        self.max_bytes = max_bytes
        self.db = self._connect()
        self._lost = False  # the connection was closed and a new one could not be opened: retried first
        self._dirty = threading.Event()  # set by commits; the checkpoint thread sleeps without it
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="checkpoint", daemon=True)
        self._checkpointer.start()

    def reopen(self) -> None:
        # a fresh connection in place of one an I/O error may have left unusable
        try:
            self.db.close()
        except sqlite3.Error:
            pass
        self.db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # the ACK to the node promises the frame is on disk
        db.execute("PRAGMA busy_timeout=5000")
        # The checkpoint thread copies the WAL into the database off the commit path. Under a
        # steady stream it never catches up, and SQLite starts a WAL over only after a complete
        # checkpoint: so the writer still checkpoints itself, rarely (SQLite's default is every
        # 1,000 pages), and then has little left to copy. Without this the WAL grew without end
        # in a flood (58 MB after 2 minutes at 2,000 frames/s).
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_RESTART_FRAMES}")
        if self.max_bytes:
            page = db.execute("PRAGMA page_size").fetchone()[0]
            db.execute(f"PRAGMA max_page_count={max(16, self.max_bytes // page)}")
        db.executescript(SCHEMA)
        return db

    def close(self) -> None:
        self._closing.set()
        self._dirty.set()
        self._checkpointer.join(10)
        self.db.close()  # the last connection checkpoints and removes the WAL; closing twice is harmless

    def _checkpoint_loop(self) -> None:
        osthread.name("cn-checkpoint")
        # PASSIVE: copies what no reader still needs and never blocks the writer
        db = None
        while True:
            self._dirty.wait()
            if self._closing.wait(CHECKPOINT_S):
                break
            self._dirty.clear()
            try:
                if db is None:
                    db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as e:  # a full disk or I/O error: the writer reports those; retry later
                log.debug("outbox: checkpoint failed: %s", e)
                if db is not None:
                    db.close()
                    db = None
        if db is not None:
            db.close()

    # ------------------------------------------------------------ loading at start

    def depth(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def seq_states(self) -> dict[str, SeqState]:
        return {row[0]: SeqState.from_row(*row[1:])
                for row in self.db.execute("SELECT node, boot, hwm, cum, bits, gaps FROM seqstate")}

    def timebase(self) -> dict[str, tuple[int, tuple[int, int, int] | None]]:
        # -> {node: (latest time_ms given, (boot, uptime_ms, time_ms) or None)}
        return {node: (top, (boot, up, at) if boot is not None else None)
                for node, top, boot, up, at in self.db.execute("SELECT * FROM timebase")}

    def downlink(self) -> tuple[dict[str, list[tuple[int, str, bytes, int]]], dict[str, int]]:
        # -> {node: [(counter, op, signed command bytes, attempts)]} lowest first, and {node: highest
        # counter}. The arg column holds the signed command as a JSON hex string; rows of earlier
        # versions (an unsigned command's argument) are dropped: no node would take them.
        queued = {}
        dropped = 0
        for node, cmd_id, op, arg, attempts in self.db.execute(
                "SELECT node, cmd_id, op, arg, attempts FROM downlink ORDER BY node, cmd_id"):
            try:
                token = bytes.fromhex(json.loads(arg))
            except (TypeError, ValueError):
                dropped += 1
                continue
            queued.setdefault(node, []).append((cmd_id, op, token, attempts))
        if dropped:
            log.warning("outbox: %d unsigned command(s) of an earlier version dropped from the downlink queue",
                        dropped)
        counters = dict(self.db.execute("SELECT node, last FROM cmd_counter"))
        return queued, counters

    # ------------------------------------------------------------ the group commit

    def commit(self, rows: Sequence[tuple[str, bytes]] = (), states: Iterable[tuple[str, SeqState]] = (),
               deletes: Sequence[int] = (), dl_put: Sequence[tuple[str, int, str, Any, int]] = (),
               dl_del: Sequence[tuple[str, int]] = (), counters: Sequence[tuple[str, int]] = (),
               st_rows: Sequence[tuple[str, bytes]] = (), clocks: Sequence[tuple[Any, ...]] = (),
               extra: Iterable[tuple[str, Iterable[Sequence[Any]]]] = ()) -> int | None:
        # rows: [(topic, payload)]; st_rows: [(path, payload)]; states: [(node, SeqState)]; deletes: [outbox id];
        # dl_put: [(node, counter, op, signed command, attempts)]; dl_del: [(node, cmd_id)]; counters: [(node, last)];
        # extra: [(sql, [params])] of the caller's own tables (the relay's stored stream sequences).
        # All or nothing; raises StoreError (disk full, I/O) after rolling back. -> the outbox id
        # of the first row (the others follow it), None without rows.
        if self._lost:
            try:
                self.db = self._connect()
            except sqlite3.Error as e:
                raise StoreError(_reason(e), f"cannot open the outbox again: {e}") from None
            self._lost = False
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            if deletes:
                db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in deletes])
            first = None
            if rows:
                db.executemany("INSERT INTO outbox (topic, payload) VALUES (?, ?)", rows)
                # one writer, one transaction: the rows got consecutive ids, the last one this
                first = db.execute("SELECT last_insert_rowid()").fetchone()[0] - len(rows) + 1
            if st_rows:  # SensorThings Observations for their own connection (gateway/sensorthings.py)
                db.executemany("INSERT INTO st_outbox (path, payload) VALUES (?, ?)", st_rows)
            if states:
                db.executemany("INSERT OR REPLACE INTO seqstate VALUES (?, ?, ?, ?, ?, ?)",
                               [(node, *st.to_row()) for node, st in states])
            if dl_put:
                db.executemany("INSERT OR REPLACE INTO downlink VALUES (?, ?, ?, ?, ?)",
                               [(n, c, op, json.dumps(token.hex()), a) for n, c, op, token, a in dl_put])
            if dl_del:
                db.executemany("DELETE FROM downlink WHERE node = ? AND cmd_id = ?", dl_del)
            if counters:
                db.executemany("INSERT OR REPLACE INTO cmd_counter VALUES (?, ?)", counters)
            if clocks:  # [(node, latest time_ms given, live anchor boot, uptime_ms, time_ms)], gateway/timing.py
                db.executemany("INSERT OR REPLACE INTO timebase VALUES (?, ?, ?, ?, ?)", clocks)
            for sql, params in extra:
                db.executemany(sql, params)
            db.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                try:
                    self.reopen()  # the connection may be unusable after an I/O error
                except sqlite3.Error:  # and the file cannot be opened now (its disk gone): the next commit tries
                    self._lost = True
            raise StoreError(_reason(e), str(e)) from None
        self._dirty.set()
        return first


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    # another connection to the outbox (readers, and the SensorThings sender's short writes)
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=5000")
    return db


class AckedRows:
    # What every publisher of the outbox (gateway/registry.py publisher_factory: mqtt.py,
    # pubproc.py, natsout.py) holds: the state the pipeline and the status page read, and the
    # outbox ids its broker (or stream) acknowledged: handed to the pipeline, which deletes them
    # in its next commit (take_acked), and skipped when the publisher reads the outbox again
    # until then (deleted() forgets them).
    def __init__(self, settings: Settings, db_path: str | os.PathLike[str]) -> None:
        self.s = settings
        self.db_path = db_path
        self.connected = False
        self.connects = 0
        self.inflight = 0
        self.pubacks = 0  # rows the broker (or stream) acknowledged
        self.taken_over = False  # another client keeps taking the session over (mqtt_client_id_in_use)
        self.heartbeat = time.monotonic()
        self._lock = threading.Lock()
        self._acked: list[int] = []
        self._skip: set[int] = set()  # acked, not yet deleted: not sent again after a reconnect

    def take_acked(self) -> list[int]:
        with self._lock:
            ids, self._acked = self._acked, []
        return ids

    def deleted(self, ids: Iterable[int]) -> None:
        with self._lock:
            self._skip.difference_update(ids)


class Reader:
    # The publisher's view: rows after a cursor, in id (= arrival) order.
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout=5000")

    def after(self, last_id: int, limit: int) -> list[tuple[int, str, bytes]]:
        return self.db.execute("SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                               (last_id, limit)).fetchall()

    def close(self) -> None:
        self.db.close()
