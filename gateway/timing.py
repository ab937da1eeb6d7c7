# The absolute time of a frame (SPEC.md section 8). A node clock (`time`) is used when it
# is plausible. Otherwise the gateway dates the frame from its uptime against the newest
# live frame of the same boot (its anchor: reception time and uptime), so frames that were
# buffered (backlog, resends) get the time they were sampled, not the time they arrived.
# Frames of an earlier boot that the gateway never heard live have no anchor: they are
# placed just before the first frame heard of a later boot and marked `uncertain`.
# A live frame received before the anchor it follows in uptime (reception times from clocks
# that disagree: a relay's gateways, or a clock stepped back) is dated just after that anchor
# instead, so a node's live frames never go back in time.
# No two frames of one node get the same millisecond: a taken one moves to the nearest
# free millisecond (later for live frames, earlier for the others). The latest time given
# per node and its live anchor are stored with every commit: after a restart (even kill -9)
# buffered frames are still dated by uptime, and a frame that would be dated before the
# latest time given is placed after it instead, marked `uncertain`.
# The clock goes with the commits: the times given since the last commit are given back
# when that commit fails (undo), so a frame that was not stored holds no millisecond and
# moves no anchor, and its resend is dated as though the failed copy never arrived (the
# gateway's pipeline and the relay; after a restart the stored clock says the same). One
# frame dated and then not stored after all (an output it needs could not be made) gives
# its time back alone (give_back), the rest of its batch keeps theirs.
import collections
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from protocol.message import F_BACKLOG

CLOCK_MIN_S = 946684800  # 2000-01-01
CLOCK_AHEAD_S = 86400
BOOTS_KEPT = 4  # anchors per node: the current boot and a few before it
USED_KEPT = 2048  # milliseconds remembered per node (older frames are far apart in time)


class _Node:
    __slots__ = ("anchors", "used", "order", "floor", "top", "live_boot", "run")

    def __init__(self, floor: int, anchor: tuple[int, int, int] | None = None) -> None:
        self.anchors: dict[int, list[Any]] = {}  # boot -> [uptime_ms, time_ms, certain]
        self.used: set[int] = set()  # time_ms given lately
        self.order: collections.deque[int] = collections.deque()  # the same, oldest first
        # (lo, hi): every millisecond from lo to hi is in `used`. A node sending faster than a
        # frame per millisecond (a flood, a backlog sent live) runs its live times ahead of the
        # clock; a forward claim jumps over this run instead of walking up to USED_KEPT steps.
        self.run: tuple[int, int] | None = None
        self.live_boot = -1  # the highest boot with a live anchor
        if anchor is not None:  # (boot, uptime_ms, time_ms) kept from before a restart
            self.anchors[anchor[0]] = [anchor[1], anchor[2], True]
            self.live_boot = anchor[0]
        self.floor = floor  # the latest time given before a restart: what is below it is unknown
        self.top = floor  # the latest time given so far (stored with each commit)


class FrameClock:
    def __init__(self, warn: Callable[[str, Any], object] | None = None,
                 saved: Mapping[str, tuple[int, tuple[int, int, int] | None]] | None = None) -> None:
        self.nodes: dict[str, _Node] = {}
        self.warn = warn  # warn(node, clock value) when a node clock is ignored
        # node -> (latest time_ms given, live anchor (boot, uptime_ms, time_ms) or None), as
        # stored before this start (Store.timebase): a restart keeps dating buffered frames
        self.saved = dict(saved or {})
        # node -> _Undo: how it was before the frames dated since the last kept() or undo()
        self._undo: dict[str, _Undo] = {}
        # the frame dated last: (node, its node's _state before it; None: the node was new then)
        self._last: tuple[str, _State | None] | None = None

    def kept(self) -> None:
        # the commit of the frames dated since the last kept() or undo() returned: their times stand
        self._undo.clear()
        self._last = None

    def give_back(self) -> None:
        # the frame dated last is not stored after all: back to the clock before it, exactly,
        # the frames dated before it in its batch keep their times (undo() still gives them back)
        last, self._last = self._last, None
        if last is None:
            return
        node, before = last
        u = self._undo[node]
        if before is None:  # it was the node's first frame since the clock was made or its state last stored
            self._forget(node, u)
            del self._undo[node]
            return
        st = self.nodes[node]
        _unclaim(st, [u.claims.pop()])
        _restore(st, before)

    def undo(self) -> None:
        # that commit failed: back to the clock before those frames were dated, exactly
        for node, u in self._undo.items():
            if u.state is None:  # first dated in the failed batch
                self._forget(node, u)
                continue
            st = self.nodes[node]
            _unclaim(st, u.claims)
            _restore(st, u.state)
        self._undo.clear()
        self._last = None

    def _forget(self, node: str, u: "_Undo") -> None:
        # a node first dated since the last commit is as it was: unknown, or what the store said
        del self.nodes[node]
        if u.saved is not None:
            self.saved[node] = u.saved

    def saved_of(self, nodes: Iterable[str]) -> list[tuple[str, int, int | None, int | None, int | None]]:
        # -> [(node, latest time_ms given, boot, uptime_ms, time_ms)] to store with the commit
        out = []
        for node in nodes:
            st = self.nodes.get(node)
            if st is not None and st.top >= 0:
                a = st.anchors.get(st.live_boot)
                if a is not None and a[2]:
                    out.append((node, st.top, st.live_boot, a[0], a[1]))
                else:
                    out.append((node, st.top, None, None, None))
        return out

    def fix(self, node: str, m: Mapping[str, Any], received: float) -> tuple[float, str]:
        # -> (time in Unix seconds, "node" | "received" | "uptime" | "uncertain")
        st = self.nodes.get(node)
        undo = self._undo.get(node)
        if st is None:
            saved = self.saved.pop(node, None)
            top, anchor = saved or (-1, None)
            st = self.nodes[node] = _Node(top, anchor)
            undo = self._undo[node] = _Undo(None, saved)
            self._last = (node, None)
        else:
            before = _state(st)
            if undo is None:
                undo = self._undo[node] = _Undo(before)
            self._last = (node, before)
        claims = undo.claims
        t = m["time"]
        if t is not None and CLOCK_MIN_S <= t <= received + CLOCK_AHEAD_S:
            ms = self._claim(st, t * 1000, False, claims)  # whole seconds: a second frame in one moves 1 ms
            st.top = max(st.top, ms)
            return ms / 1000.0, "node"
        if t is not None and self.warn is not None:
            self.warn(node, t)
        boot, up = m["boot"], m["uptime_ms"]
        now_ms = int(round(received * 1000))
        anchors = st.anchors
        a = anchors.get(boot)
        live = not m["flags"] & F_BACKLOG
        if a is not None and a[2] and (up <= a[0] or not live):  # a certain anchor
            # buffered or resent: its place on the boot's timeline, never after its reception
            ms, source = min(a[1] + (up - a[0]), now_ms), "uptime"
        elif live and boot >= st.live_boot:
            ms, source = now_ms, "received"  # the newest live frame: the boot's anchor
            if a is not None and a[2] and now_ms < a[1]:
                # received before the anchor it follows in uptime: the clocks that gave the two
                # reception times disagree (a relay's frames come from several gateways, or the
                # gateway's clock stepped back); just after the anchor, never before it
                ms = a[1] + 1
            anchors[boot] = [up, ms, True]
            st.live_boot = boot
        else:
            # a boot the gateway has not heard live: before the start of any later boot it
            # has heard, and no later than now; placed by uptime against its first frame
            end = min([x[1] - x[0] for b, x in anchors.items() if b > boot and x[2]] + [now_ms + 1]) - 1
            if a is None:
                a = anchors[boot] = [up, end, False]
            ms, source = min(a[1] + (up - a[0]), end), "uncertain"
        while len(anchors) > BOOTS_KEPT:
            del anchors[min(anchors)]
        if ms <= st.floor:
            # before the last time given by the gateway's previous run, whose other times are
            # not known any more: after it, so it cannot take one of them
            ms, source = st.floor + 1, "uncertain"
        ms = self._claim(st, ms, source != "received" and ms > st.floor + 1, claims)
        if ms > st.top:
            st.top = ms
        return ms / 1000.0, source

    def _claim(self, st: _Node, ms: int, earlier: bool, claims: list[tuple[int, int | None]]) -> int:
        # -> the nearest free millisecond from ms: earlier ones first when `earlier`
        used = st.used
        run = st.run
        if earlier:
            step = -1
            while ms in used:  # at most USED_KEPT steps
                if run is not None and run[0] <= ms <= run[1]:
                    ms = run[0] - 1 if step < 0 else run[1] + 1  # all of the run is taken
                else:
                    ms += step
                if ms <= st.floor and step < 0:
                    ms, step = st.floor + 1, 1
        else:
            start = ms
            if run is not None and run[0] <= ms <= run[1]:
                ms = run[1] + 1  # all of the run is taken: the same result as walking it
            while ms in used:
                ms += 1
            # start..ms are all taken now; joined to the run when they touch it
            st.run = (run[0], ms) if run is not None and run[0] <= start <= run[1] + 1 else (start, ms)
        used.add(ms)
        order = st.order
        order.append(ms)
        old = None
        if len(order) > USED_KEPT:
            old = order.popleft()
            used.discard(old)
            run = st.run
            if run is not None and run[0] <= old <= run[1]:
                st.run = (old + 1, run[1]) if old < run[1] else None  # the part after it is still all taken
        claims.append((ms, old))
        return ms


def _unclaim(st: _Node, claims: list[tuple[int, int | None]]) -> None:
    # the milliseconds claimed, newest first, are free again; those they pushed out are back
    used, order = st.used, st.order
    for ms, old in reversed(claims):
        order.pop()
        used.discard(ms)
        if old is not None:
            order.appendleft(old)
            used.add(old)


# A node's clock but for the milliseconds it has claimed: (anchors, live_boot, top, run). The
# anchor lists are replaced, never changed in place, so a shallow copy of the dict keeps them.
_State = tuple[dict[int, list[Any]], int, int, "tuple[int, int] | None"]


def _state(st: _Node) -> _State:
    return dict(st.anchors), st.live_boot, st.top, st.run


def _restore(st: _Node, state: _State) -> None:
    st.anchors, st.live_boot, st.top, st.run = state


class _Undo:
    # A node's clock before the frames dated since the last commit: what FrameClock.undo()
    # puts back, with each millisecond claimed since and the one it pushed out.
    __slots__ = ("state", "saved", "claims")

    def __init__(self, state: _State | None, saved: tuple[int, tuple[int, int, int] | None] | None = None) -> None:
        self.state = state  # None: the node was new
        self.saved = saved  # what the store said of a new node (put back into FrameClock.saved)
        self.claims: list[tuple[int, int | None]] = []  # (ms claimed, ms it pushed out of `used`)
