# The absolute time of a frame (SPEC.md section 8). A node clock (`time`) is used when it
# is plausible. Otherwise the gateway dates the frame from its uptime against the newest
# live frame of the same boot (its anchor: reception time and uptime), so frames that were
# buffered (backlog, resends) get the time they were sampled, not the time they arrived.
# Frames of an earlier boot that the gateway never heard live have no anchor: they are
# placed just before the first frame heard of a later boot and marked `uncertain`.
# No two frames of one node get the same millisecond: a taken one moves to the nearest
# free millisecond (later for live frames, earlier for the others).

CLOCK_MIN_S = 946684800  # 2000-01-01
CLOCK_AHEAD_S = 86400
F_BACKLOG = 8  # protocol.message.F_BACKLOG
BOOTS_KEPT = 4  # anchors per node: the current boot and a few before it
USED_KEPT = 2048  # milliseconds remembered per node (older frames are far apart in time)


class _Node:
    __slots__ = ("anchors", "used")

    def __init__(self):
        self.anchors = {}  # boot -> [uptime_ms, time_ms, certain]
        self.used = {}  # time_ms -> None, oldest first (a dict keeps insertion order)


class FrameClock:
    def __init__(self, warn=None):
        self.nodes = {}
        self.warn = warn  # warn(node, clock value) when a node clock is ignored

    def fix(self, node, m, received):
        # -> (time in Unix seconds, "node" | "received" | "uptime" | "uncertain")
        t = m["time"]
        if t is not None and CLOCK_MIN_S <= t <= received + CLOCK_AHEAD_S:
            return float(t), "node"
        if t is not None and self.warn is not None:
            self.warn(node, t)
        st = self.nodes.get(node)
        if st is None:
            st = self.nodes[node] = _Node()
        boot, up = m["boot"], m["uptime_ms"]
        now_ms = int(round(received * 1000))
        anchors = st.anchors
        a = anchors.get(boot)
        certain = a is not None and a[2]
        live = not m["flags"] & F_BACKLOG
        if certain and (up <= a[0] or not live):
            # buffered or resent: its place on the boot's timeline, never after its reception
            ms, source = min(a[1] + (up - a[0]), now_ms), "uptime"
        elif live and not any(b > boot and x[2] for b, x in anchors.items()):
            ms, source = now_ms, "received"  # the newest live frame: the boot's anchor
            anchors[boot] = [up, ms, True]
        else:
            # a boot the gateway has not heard live: before the start of any later boot it
            # has heard, and no later than now; placed by uptime against its first frame
            end = min([x[1] - x[0] for b, x in anchors.items() if b > boot and x[2]] + [now_ms + 1]) - 1
            if a is None:
                a = anchors[boot] = [up, end, False]
            ms, source = min(a[1] + (up - a[0]), end), "uncertain"
        while len(anchors) > BOOTS_KEPT:
            del anchors[min(anchors)]
        return self._claim(st, ms, source != "received") / 1000.0, source

    def _claim(self, st, ms, earlier):
        used = st.used
        step = -1 if earlier else 1
        while ms in used:  # at most USED_KEPT steps
            ms += step
        used[ms] = None
        if len(used) > USED_KEPT:
            del used[next(iter(used))]
        return ms
