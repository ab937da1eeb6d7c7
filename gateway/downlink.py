# Commands for nodes (P/nodes/<node>/down). Only the operator's signed commands (SPEC.md 6.7,
# made by `citynode command`): JSON {"cose": "<hex of the signed command>", ...}. The gateway
# cannot verify them (it never holds a command key); it checks their form, that they are for
# the node of the topic, and their op and argument with the one checker (protocol/command.py),
# and relays them. Unsigned JSON ({"op": ..., "arg": ...} of earlier versions) is refused:
# one log line, the counter commands_unsigned. A command waits until its node is next heard
# with a fresh frame (nodes sleep), then goes MACed and bound to the node's current boot on the
# link it was just heard on, again on later fresh frames until the node reports a result for
# it (cmd_result) or the attempts run out. Queues persist in the outbox database with the
# pipeline's next group commit.
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from gateway import InputError
from protocol import command
from protocol.cbor import FrameError

if TYPE_CHECKING:
    from gateway.stats import Stats

log = logging.getLogger("citynode.gateway")
MAX_PAYLOAD = 2048  # a signed command is at most 512 bytes, 1 KB as hex


class CommandError(InputError):
    pass


class Unsigned(CommandError):
    pass


def parse_command(payload: bytes | str, node: str) -> tuple[int, str, Any, bytes]:
    # JSON bytes from P/nodes/<node>/down -> (counter, op, arg, signed command bytes).
    # Unsigned when there is no "cose"; CommandError for anything else that is wrong.
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"{len(payload)} bytes; a signed command is at most {MAX_PAYLOAD}")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise CommandError("not JSON") from None
    if not isinstance(obj, dict):
        raise CommandError("not a JSON object")
    if "cose" not in obj:
        raise Unsigned("unsigned command; the operator signs commands with `citynode command`")
    try:
        token = bytes.fromhex(obj["cose"])
        kid, f = command.peek(token)
    except (TypeError, ValueError) as e:
        reason = e.reason if isinstance(e, FrameError) else "hex"
        raise CommandError(f"cose is not a signed command ({reason})") from None
    if kid != node:
        raise CommandError(f"signed for node {kid!r}, published for {node!r}")
    code = command.check(f["op"], f["arg"])
    if code:
        raise CommandError(f"{f['op']} {f['arg']!r}: {command.RESULTS[code]}")
    return f["counter"], f["op"], f["arg"], token


class Downlink:
    def __init__(self, max_per_node: int, attempts: int, queued: Mapping[str, Iterable[Iterable[Any]]] | None = None,
                 counters: Mapping[str, int] | None = None) -> None:
        self.max_per_node = max_per_node
        self.attempts = attempts
        self.lock = threading.Lock()
        # node -> [[counter, op, signed command bytes, tries]], lowest counter first
        self.queued = {n: [list(c) for c in cmds] for n, cmds in (queued or {}).items()}
        self.counters = dict(counters or {})  # node -> highest counter queued
        self._put = {}  # (node, cmd_id) -> row to persist
        self._del = set()
        self._counter_changed = set()

    def add(self, node: str, counter: int, op: str, token: bytes) -> bool:
        # From the MQTT thread. -> True when queued, False when already queued (the broker
        # redelivered it); CommandError when the node's queue is full.
        with self.lock:
            q = self.queued.setdefault(node, [])
            if any(c[2] == token for c in q):
                return False
            if any(c[0] == counter for c in q):
                raise CommandError(f"counter {counter} already queued for {node}")
            if len(q) >= self.max_per_node:
                raise CommandError(f"{len(q)} commands already queued for {node}")
            q.append([counter, op, token, 0])
            q.sort(key=lambda c: c[0])  # the node applies rising counters only: lowest first
            if counter > self.counters.get(node, 0):
                self.counters[node] = counter
                self._counter_changed.add(node)
            self._put[(node, counter)] = (node, counter, op, token, 0)
            return True

    def heard(self, node: str, cmd_result: tuple[int, int] | list[int] | None) -> tuple[list[tuple[int, bytes]],
              int, int]:
        # The node was heard in a fresh frame. -> ([(counter, signed command)] to send now,
        # done count, expired count). A command sent at least once is done when the node reported
        # a result for its counter, or applied a later one (then this one is a replay to it).
        # cmd_result: the last result the node reported, which may predate a command queued since.
        with self.lock:
            q = self.queued.get(node)
            if not q:
                return [], 0, 0
            done = expired = 0
            keep, send = [], []
            for c in q:
                if c[3] and cmd_result and (cmd_result[0] == c[0] or (cmd_result[1] == command.APPLIED
                                                                   and cmd_result[0] > c[0])):
                    done += 1
                elif c[3] >= self.attempts:
                    expired += 1
                else:
                    c[3] += 1
                    send.append((c[0], c[2]))
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
        if retained:  # a retained command would be relayed again on every reconnect
            raise CommandError("retained commands are refused; publish without retain")
        if node not in keys:
            raise CommandError(f"no key for node {node!r}")
        counter, op, arg, token = parse_command(payload, node)
        new = downlink.add(node, counter, op, token)
    except Unsigned as e:
        stats.count("commands_unsigned")
        stats.rejects_log.warning("unsigned", "downlink: command on %s refused: %s", topic, e)
        return
    except CommandError as e:
        stats.count("commands_refused")
        stats.rejects_log.warning("command", "downlink: command on %s refused: %s", topic, e)
        return
    if new:
        log.info("downlink: signed %s %s (counter %d) queued for %s until it is next heard", op, arg, counter, node)
