# The outbox's WAL is checkpointed by a thread of its own (gateway/store.py). Under a steady
# stream of commits a PASSIVE checkpoint never catches up with the writer, and SQLite starts
# a WAL over only once it was copied completely: with the writer's own checkpoint switched
# off, the WAL file grew without end during a flood (58 MB after 2 minutes at 2,000 frames/s).
import os
import time

from gateway import store
from gateway.store import Reader, Store


def test_wal_stays_bounded_under_a_steady_stream(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "CHECKPOINT_S", 0.02)
    monkeypatch.setattr(store, "WAL_RESTART_FRAMES", 64, raising=False)  # the writer checkpoints at 64 pages
    st = Store(tmp_path / "outbox.sqlite")
    rd = Reader(tmp_path / "outbox.sqlite")
    wal = tmp_path / "outbox.sqlite-wal"
    cursor, acked, sizes = 0, [], []
    try:
        # ~10 rows per commit, the publisher deleting behind, until 6 MiB of rows went through
        # (a count, not 4 s of wall time: a loaded host commits fewer rows per second)
        deadline = time.monotonic() + 120.0
        while cursor * 400 <= 6 * 2**20 and time.monotonic() < deadline:
            st.commit(rows=[("t/x", b"x" * 400)] * 10, deletes=acked)
            rows = rd.after(cursor, 1000)
            if rows:
                cursor = rows[-1][0]
            acked = [r[0] for r in rows]
            sizes.append(os.path.getsize(wal))
        half = sizes[len(sizes) // 2]
        assert cursor * 400 > 4 * 2**20  # rows went through (the WAL carries ~6x that)
        # the file is reused from its start after each restart: it stops growing
        assert sizes[-1] <= half + 2**20, (half, sizes[-1])
        assert rd.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] <= 20  # nothing was lost or left behind
    finally:
        rd.close()
        st.close()
