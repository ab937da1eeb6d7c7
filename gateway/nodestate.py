# What the gateway knows about each node that a node says only now and then (firmware,
# board, interval and thresholds come in the info block of a boot frame or after a
# command), kept in data_dir/nodes.json so a gateway restart does not wipe them from the
# status page and from the retained P/nodes/<id>/state. Counters start again at zero: they
# count what this gateway process saw. Written atomically (gateway/files.py: temp, fsync, rename) by
# Persister, a thread that saves only when something it keeps has changed.
from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Self

from gateway.files import write_private

if TYPE_CHECKING:
    from gateway.stats import Stats

log = logging.getLogger("citynode.gateway")

FILE_NAME = "nodes.json"
FORMAT = 1
KEPT = ("last_seen", "boot", "seq", "battery_v", "firmware", "reset_cause", "board", "interval_s", "thresholds",
        "link", "rssi_dbm", "snr_db", "health")
SAVE_EVERY_S = 5.0


def kept(states: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    # node -> full state dict  ->  node -> the fields kept across restarts
    return {node: {k: st.get(k) for k in KEPT} for node, st in states.items()}


def load(path: str | os.PathLike[str], known: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
    # -> node -> kept fields; a missing or unreadable file is an empty table (logged), never a
    # reason not to start. known: node ids with a key now (others are dropped)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("node state %s not read (%s); starting without it", path, e)
        return {}
    nodes = data.get("nodes") if isinstance(data, dict) and data.get("format") == FORMAT else None
    if not isinstance(nodes, dict):
        log.warning("node state %s has an unknown format; starting without it", path)
        return {}
    out = {}
    for node, st in nodes.items():
        if not isinstance(st, dict) or (known is not None and node not in known):
            continue
        out[node] = {k: st.get(k) for k in KEPT}
    return out


def save(path: str | os.PathLike[str], table: Mapping[str, Mapping[str, Any]]) -> None:
    write_private(path, json.dumps({"format": FORMAT, "nodes": table}, sort_keys=True, separators=(",", ":")))


def restore(stats: Stats, table: Mapping[str, Mapping[str, Any]]) -> None:
    # put the kept fields back into the gateway's per-node state (before any frame arrives)
    with stats.lock:
        for node, fields in table.items():
            st = stats.node(node)
            for k, v in fields.items():
                setattr(st, k, v)
            st.version += 1


class Persister:
    # saves data_dir/nodes.json every SAVE_EVERY_S when the kept fields changed, and at stop
    def __init__(self, path: str | os.PathLike[str], stats: Stats, every_s: float = SAVE_EVERY_S) -> None:
        self.path = path
        self.stats = stats
        self.every_s = every_s
        self._last = None
        self._stop = threading.Event()
        self._thread = None

    def start(self, restored: Mapping[str, Mapping[str, Any]] | None = None) -> Self:
        self._last = restored
        self._thread = threading.Thread(target=self._loop, name="node-state", daemon=True)
        self._thread.start()
        return self

    def save_now(self) -> bool:
        _counters, _rejected, states = self.stats.snapshot()
        table = kept(states)
        if table == self._last:
            return False
        try:
            save(self.path, table)
        except OSError as e:  # a full disk: the outbox matters more; try again next round
            log.warning("node state not saved to %s: %s", self.path, e.strerror or e)
            return False
        self._last = table
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.save_now()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.save_now()
