# Short local history of readings for the status page's charts: SQLite, its own file
# (the outbox's commit path stays untouched), bounded by age and by row count.
# Writes are batched: add() only appends to a bounded list; a flusher thread commits.
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import Any, Self

from protocol.message import F_STORM

KEEP_S = 24 * 3600
MAX_ROWS = 200_000  # ~10 MB on disk; the oldest rows go first
MAX_PENDING = 10_000  # rows waiting for the flusher; beyond this new rows are counted and dropped
FLUSH_S = 1.0
MAX_POINTS = 2000  # per node and query: older points are thinned for the browser


class History:
    def __init__(self, path: str | os.PathLike[str], keep_s: float = KEEP_S, max_rows: int = MAX_ROWS,
                 flush_s: float = FLUSH_S) -> None:
        self.path = str(path)
        self.keep_s = keep_s
        self.max_rows = max_rows
        self.flush_s = flush_s
        self.dropped = 0
        self._pending = []
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._stop = threading.Event()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # history may lose its last second on power loss
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS reading (node TEXT NOT NULL, ts REAL NOT NULL, name TEXT NOT NULL,"
            " value REAL, flags INTEGER NOT NULL DEFAULT 0)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS reading_node_ts ON reading (node, ts)")
        self._db.commit()
        self._thread = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="history-flush", daemon=True)
        self._thread.start()
        return self

    def add(self, node: str, ts: float, values: Mapping[str, object], flags: int = 0) -> None:
        # values: {name: number}; non-numbers are not charted
        rows = [(node, float(ts), name, float(v), int(flags)) for name, v in values.items()
                if isinstance(v, int | float) and not isinstance(v, bool)]
        with self._lock:
            if len(self._pending) + len(rows) > MAX_PENDING:
                self.dropped += len(rows)
                return
            self._pending.extend(rows)

    def flush(self) -> None:
        # sqlite3.Error (a full disk) after rolling back: the rows stay pending, up to the bound
        with self._lock:
            rows, self._pending = self._pending, []
        with self._db_lock:
            try:
                if rows:
                    self._db.executemany("INSERT INTO reading VALUES (?, ?, ?, ?, ?)", rows)
                self._db.execute("DELETE FROM reading WHERE ts < ?", (time.time() - self.keep_s,))
                (count,) = self._db.execute("SELECT COUNT(*) FROM reading").fetchone()
                if count > self.max_rows:
                    self._db.execute(
                        "DELETE FROM reading WHERE rowid IN (SELECT rowid FROM reading ORDER BY ts LIMIT ?)",
                        (count - self.max_rows,),
                    )
                self._db.commit()
            except sqlite3.Error:
                self._db.rollback()
                with self._lock:
                    keep = rows + self._pending  # oldest first; beyond the bound the newest go, as in add()
                    self.dropped += max(0, len(keep) - MAX_PENDING)
                    self._pending = keep[:MAX_PENDING]
                raise

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except sqlite3.Error:
                pass  # a full disk must not stop the gateway; the rows stay pending up to the bound

    def query(self, node: str, since_s: float = KEEP_S) -> dict[str, Any]:
        # -> {"t": [...], "series": {name: [...]}, "storm": [...]} aligned on t, oldest first
        try:
            self.flush()
        except sqlite3.Error:
            pass  # a full disk: what is stored is shown; the rest waits for room
        with self._db_lock:
            rows = self._db.execute(
                "SELECT ts, name, value, flags FROM reading WHERE node = ? AND ts >= ? ORDER BY ts",
                (node, time.time() - since_s),
            ).fetchall()
        times = sorted({r[0] for r in rows})
        if len(times) > MAX_POINTS:  # thin evenly; the newest point always stays
            step = len(times) / MAX_POINTS
            keep = {times[int(i * step)] for i in range(MAX_POINTS)} | {times[-1]}
            times = sorted(keep)
        index = {t: i for i, t in enumerate(times)}
        series = {}
        storm = [0] * len(times)
        for ts, name, value, flags in rows:
            i = index.get(ts)
            if i is None:
                continue
            series.setdefault(name, [None] * len(times))[i] = value
            if flags & F_STORM:
                storm[i] = 1
        return {"node": node, "t": times, "series": series, "storm": storm}

    def rows(self) -> int:
        with self._db_lock:
            return self._db.execute("SELECT COUNT(*) FROM reading").fetchone()[0]

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        try:
            self.flush()
        except sqlite3.Error:
            self.dropped += self.pending()  # a full disk at the stop: the charts lose these, nothing else
        finally:
            self._db.close()
