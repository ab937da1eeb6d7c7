# Commands for nodes (P/nodes/<node>/down, JSON {"op": ..., "arg": ...}). A command waits
# until its node is next heard (nodes sleep), then goes, MACed and bound to the node's
# current boot, on the link the node was just heard on. It is resent on later frames
# until the node reports its result (cmd_result in a data frame) or the attempts run out.
# Queues persist in the outbox database with the pipeline's next group commit.
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from protocol.message import MAX_U32, OPS

if TYPE_CHECKING:
    from gateway.stats import Stats

THRESHOLD_KEYS = ("alarm_m", "storm_m", "rise_mm_min")
log = logging.getLogger("citynode.gateway")


class CommandError(ValueError):
    pass


def parse_command(payload: bytes | str) -> tuple[str, Any]:
    # JSON bytes -> (op, arg); checks the argument as SPEC.md section 6.3 defines it
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise CommandError("not JSON") from None
    if not isinstance(obj, dict) or obj.get("op") not in OPS:
        raise CommandError(f"op must be one of {', '.join(OPS)}")
    op, arg = obj["op"], obj.get("arg")
    extra = set(obj) - {"op", "arg"}
    if extra:
        raise CommandError(f"unknown field {sorted(extra)[0]!r}")
    if op == "interval":
        if not isinstance(arg, int) or isinstance(arg, bool) or not 1 <= arg <= 86400:
            raise CommandError("interval arg must be whole seconds 1..86400")
    elif op == "thresholds":
        if not isinstance(arg, dict) or not arg or any(
                k not in THRESHOLD_KEYS or isinstance(v, bool) or not isinstance(v, int | float)
                for k, v in arg.items()):
            raise CommandError(f"thresholds arg must be a map of {', '.join(THRESHOLD_KEYS)} to numbers")
    elif op == "reboot":
        if arg is not None:
            raise CommandError("reboot takes no arg")
    elif op == "time":
        if not isinstance(arg, int) or isinstance(arg, bool) or not 0 <= arg <= MAX_U32:
            raise CommandError("time arg must be Unix seconds")
    return op, arg


class Downlink:
    def __init__(self, max_per_node: int, attempts: int, queued: Mapping[str, Iterable[Iterable[Any]]] | None = None,
                 counters: Mapping[str, int] | None = None) -> None:
        self.max_per_node = max_per_node
        self.attempts = attempts
        self.lock = threading.Lock()
        self.queued = {n: [list(c) for c in cmds] for n, cmds in (queued or {}).items()}  # [cmd_id, op, arg, tries]
        self.counters = dict(counters or {})  # node -> last cmd_id given out (cmd_ids only grow)
        self._put = {}  # (node, cmd_id) -> row to persist
        self._del = set()
        self._counter_changed = set()

    def add(self, node: str, op: str, arg: Any) -> int:
        # From the MQTT thread. -> cmd_id; CommandError when the node's queue is full.
        with self.lock:
            q = self.queued.setdefault(node, [])
            for c in q:
                if c[1] == op and c[2] == arg and c[3] == 0:
                    return c[0]  # the broker redelivered it (QoS 1 after a reconnect): queued once
            if len(q) >= self.max_per_node:
                raise CommandError(f"{len(q)} commands already queued for {node}")
            cmd_id = self.counters.get(node, 0) + 1
            self.counters[node] = cmd_id
            self._counter_changed.add(node)
            q.append([cmd_id, op, arg, 0])
            self._put[(node, cmd_id)] = (node, cmd_id, op, arg, 0)
            return cmd_id

    def heard(self, node: str, cmd_result: tuple[int, int] | list[int] | None) -> tuple[list[tuple[int, str, Any]],
              int, int]:
        # The node was heard. -> ([(cmd_id, op, arg)] to send now, done count, expired count)
        with self.lock:
            q = self.queued.get(node)
            if not q:
                return [], 0, 0
            done = expired = 0
            keep, send = [], []
            for c in q:
                if cmd_result and cmd_result[0] >= c[0]:
                    done += 1
                elif c[3] >= self.attempts:
                    expired += 1
                else:
                    c[3] += 1
                    send.append((c[0], c[1], c[2]))
                    keep.append(c)
                    self._put[(node, c[0])] = (node, c[0], c[1], c[2], c[3])
                    continue
                self._del.add((node, c[0]))
                self._put.pop((node, c[0]), None)
            if keep:
                self.queued[node] = keep
            else:
                del self.queued[node]
            return send, done, expired

    def take_changes(self) -> tuple[list[tuple[str, int, str, Any, int]], list[tuple[str, int]], list[tuple[str, int]]]:
        # -> (dl_put rows, dl_del keys, counter rows) for the next commit
        with self.lock:
            put, self._put = list(self._put.values()), {}
            dele, self._del = list(self._del), set()
            cnt = [(n, self.counters[n]) for n in self._counter_changed]
            self._counter_changed = set()
            return put, dele, cnt

    def restore(self, put: Iterable[tuple[str, int, str, Any, int]], dele: Iterable[tuple[str, int]],
                cnt: Iterable[tuple[str, int]]) -> None:
        # the commit failed: keep the changes for the next one (newer changes win)
        with self.lock:
            for row in put:
                self._put.setdefault((row[0], row[1]), row)
            self._del.update(k for k in dele if k not in self._put)
            self._counter_changed.update(n for n, _ in cnt)

    def depth(self) -> int:
        with self.lock:
            return sum(len(q) for q in self.queued.values())


def handle_command(topic: str, payload: bytes, retained: bool, keys: Collection[str], downlink: Downlink,
                   stats: Stats) -> None:
    # A message on P/nodes/<node>/down: checked, then queued for the node (or refused, counted).
    parts = topic.split("/")
    node = parts[-2] if len(parts) >= 3 else ""
    try:
        if retained:  # a retained command would be applied again on every reconnect
            raise CommandError("retained commands are refused; publish without retain")
        if node not in keys:
            raise CommandError(f"no key for node {node!r}")
        op, arg = parse_command(payload)
        cmd_id = downlink.add(node, op, arg)
    except CommandError as e:
        stats.count("commands_refused")
        log.warning("downlink: command on %s refused: %s", topic, e)
        return
    log.info("downlink: %s %s queued for %s as cmd %d until it is next heard", op, arg, node, cmd_id)
