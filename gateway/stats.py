# Counters and per-node state. The pipeline thread writes (one lock hold per batch);
# the MQTT thread and the status page read snapshots. Rejects are counted by the
# reason names of SPEC.md section 9 (plus the gateway's own: replay, overload,
# outbox_full, disk_full, storage) and logged at most once per reason per interval.
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

from gateway.labels import MODE_FLAGS, flag_names
from protocol import senml
from protocol.command import RESULTS
from protocol.message import (
    I_BOARD,
    I_BUFFER,
    I_FLASH_ERRORS,
    I_FW,
    I_HEAP,
    I_INTERVAL,
    I_LEVEL_MM,
    I_RESET,
    I_RESETS,
    I_SAFE_S,
)

if TYPE_CHECKING:
    from gateway.outputs import Frame

I_DISCARDED = 6  # info: frames the node discarded for a retired key (SPEC.md 6.1, 6.6)

log = logging.getLogger("citynode.gateway")


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.last: dict[str, tuple[float, int]] = {}  # key -> (time logged, suppressed since)
        self.lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self.lock:
            t, suppressed = self.last.get(key, (-1e9, 0))
            if now - t < self.interval_s:
                self.last[key] = (t, suppressed + 1)
                return
            self.last[key] = (now, 0)
        if suppressed:
            msg += " (%d more like this not logged)"
            args = (*args, suppressed)
        self.logger.warning(msg, *args)


class NodeState:
    __slots__ = ("node", "last_seen", "boot", "seq", "battery_v", "firmware", "reset_cause", "board",
                 "interval_s", "thresholds", "link", "rssi_dbm", "snr_db",
                 "accepted", "duplicates", "rejected", "gaps", "flags", "command",
                 "discarded", "health", "commands", "unverified",
                 "version")

    def __init__(self, node: str) -> None:
        self.node = node
        self.last_seen: float | None = None
        self.boot: int | None = None
        self.seq: int | None = None
        # as the node's info block said them (SPEC.md 6.1)
        self.battery_v: Any = None
        self.firmware: Any = None
        self.reset_cause: Any = None
        self.board: Any = None
        self.interval_s: Any = None
        self.thresholds: dict[str, float] | None = None  # {"alarm_m", "storm_m"} as the node reported them
        self.link: str | None = None
        # the reception of its last frame when that came over LoRa (None over other links)
        self.rssi_dbm: float | None = None
        self.snr_db: float | None = None
        self.accepted = 0
        self.duplicates = 0
        self.rejected: dict[str, int] = {}
        self.gaps = 0
        self.flags = 0
        # {"cmd_id", "status", "result"} of the last command result the node reported
        self.command: dict[str, Any] | None = None
        self.discarded = 0  # frames the node discarded: MACed with a key the gateway no longer holds
        # what the node last said of its health (SPEC 6.1 info 7-11), see health_from
        self.health: dict[str, Any] | None = None
        self.commands: dict[str, int] = {}  # result name (SPEC 6.7) -> how many the node reported
        self.unverified = 0  # frames naming this node whose MAC did not verify (anyone can name a node)
        self.version = 0  # bumped on every change; the MQTT thread republishes changed states

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node, "last_seen": self.last_seen, "boot": self.boot, "seq": self.seq,
            "battery_v": self.battery_v, "firmware": self.firmware, "reset_cause": self.reset_cause,
            "board": self.board, "interval_s": self.interval_s, "thresholds": self.thresholds, "link": self.link,
            "rssi_dbm": self.rssi_dbm, "snr_db": self.snr_db, "accepted": self.accepted,
            "duplicates": self.duplicates, "rejected": dict(self.rejected), "gaps": self.gaps,
            **flag_names(self.flags, MODE_FLAGS),
            "command": self.command, "discarded": self.discarded, "health": self.health,
            "commands": dict(self.commands), "unverified": self.unverified,
        }


def _uints(v: object, n: int) -> TypeGuard[list[int] | tuple[int, ...]]:
    return isinstance(v, list | tuple) and len(v) == n and all(type(x) is int and x >= 0 for x in v)


def health_from(info: Mapping[int, Any], old: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    # The health a node reports in its info block (SPEC 6.1, keys 7-11) merged over what it
    # said before; a value of the wrong shape is ignored (the last good one stays). -> dict or None
    h = dict(old) if old else {}
    v = info.get(I_HEAP)
    if _uints(v, 2):
        h["heap_free"], h["heap_largest"] = v
    v = info.get(I_BUFFER)
    if _uints(v, 4):
        h["buffer"] = dict(zip(("frames", "bytes", "torn", "dropped"), v, strict=True))
    for key, name in ((I_FLASH_ERRORS, "flash_errors"), (I_SAFE_S, "safe_s")):
        v = info.get(key)
        if type(v) is int and v >= 0:
            h[name] = v
    v = info.get(I_RESETS)
    if isinstance(v, dict) and len(v) <= 16 and all(isinstance(k, str) and len(k) <= 24 and type(n) is int and n >= 0
                                   for k, n in v.items()):
        h["resets"] = dict(v)
    return h or None


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters = {"received": 0, "accepted": 0, "duplicates": 0, "acks_sent": 0, "forwarded": 0,
                         "commands_sent": 0, "commands_done": 0, "commands_expired": 0, "commands_refused": 0,
                         "commands_unsigned": 0}
        self.rejected: dict[str, int] = {}  # every reject by reason
        self.unattributed: dict[str, int] = {}  # rejects of input no node is known for (the rest is in nodes' rejected)
        self.nodes: dict[str, NodeState] = {}
        self.rejects_log = RateLimitedLog(log)
        self.started = time.time()

    def node(self, node: str) -> NodeState:
        st = self.nodes.get(node)
        if st is None:
            st = self.nodes[node] = NodeState(node)
        return st

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def reject(self, reason: str, node: str | None = None, where: str = "", detail: str = "", n: int = 1) -> None:
        # node: only for nodes that have a key (a forged kid must not grow this table)
        with self.lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + n
            if node is None:
                self.unattributed[reason] = self.unattributed.get(reason, 0) + n
            else:
                st = self.node(node)
                st.rejected[reason] = st.rejected.get(reason, 0) + n
                st.version += 1
        self.rejects_log.warning(reason, "rejected (%s) from %s%s%s", reason, where or "?",
                                 f" node {node}" if node else "", f": {detail}" if detail else "")

    def accepted_locked(self, frame: Frame, gaps: int) -> None:
        # frame: outputs.Frame, stored; caller holds self.lock
        m = frame.msg
        st = self.node(frame.node)
        st.last_seen = frame.received
        st.boot, st.seq = m["boot"], m["seq"]
        st.link = frame.link
        radio = frame.radio or {}
        st.rssi_dbm, st.snr_db = radio.get("rssi_dbm"), radio.get("snr_db")
        st.accepted += 1
        st.gaps = gaps
        st.flags = m["flags"]
        for rec in m["records"]:
            if rec.get(senml.N) == "b" and isinstance(rec.get(senml.V), int | float):
                st.battery_v = rec[senml.V]
        info = m["info"]
        if info:
            st.firmware = info.get(I_FW, st.firmware)
            st.reset_cause = info.get(I_RESET, st.reset_cause)
            st.board = info.get(I_BOARD, st.board)
            st.interval_s = info.get(I_INTERVAL, st.interval_s)
            if isinstance(info.get(I_DISCARDED), int):
                st.discarded = info[I_DISCARDED]
            st.health = health_from(info, st.health)
            th = info.get(I_LEVEL_MM)
            if isinstance(th, list | tuple) and len(th) == 2 and all(isinstance(v, int) and v >= 0 for v in th):
                st.thresholds = {"alarm_m": th[0] / 1000, "storm_m": th[1] / 1000}
        if m["cmd_result"]:
            cmd_id, status = m["cmd_result"]
            name = RESULTS[status] if status < len(RESULTS) else str(status)
            st.command = {"cmd_id": cmd_id, "status": status, "result": name}
            st.commands[name] = st.commands.get(name, 0) + 1
        st.version += 1

    def duplicate_locked(self, node: str, link: str, received: float) -> None:
        # a frame already stored: counted, but it moves neither last_seen nor link (a replay
        # from elsewhere must not redirect the node's ACKs and commands)
        st = self.node(node)
        st.duplicates += 1
        st.version += 1

    def unattributed_snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.unattributed)

    def unverified(self, node: str) -> None:
        with self.lock:
            st = self.node(node)
            st.unverified += 1
            st.version += 1

    def counters_snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self.lock:
            return dict(self.counters), dict(self.rejected)

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], dict[str, dict[str, Any]]]:
        with self.lock:
            return dict(self.counters), dict(self.rejected), {n: s.as_dict() for n, s in self.nodes.items()}

    def changed_nodes(self, seen_versions: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
        # -> [(node, state dict)] for nodes whose version differs from seen_versions (updated in place)
        out = []
        with self.lock:
            for n, s in self.nodes.items():
                if seen_versions.get(n) != s.version:
                    seen_versions[n] = s.version
                    out.append((n, s.as_dict()))
        return out
