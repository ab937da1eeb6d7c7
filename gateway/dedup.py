from __future__ import annotations

# Duplicates and replays (SPEC.md section 10): per node the highest boot, and in that
# boot the highest seq (hwm), a window of recently stored seqs and `cum` (every seq <= cum
# is stored), and the MAC tags of the boot's first stored frame and of its seq 0: the same
# (boot, seq) with another tag is a node whose boot counter went back (a wiped flash; it
# starts again at seq 0, and the first stored frame covers an old life whose seq 0 was lost).
# States are immutable; the pipeline swaps in new ones only after the group commit that
# stored the frames succeeded, so memory never claims more than the disk holds.
WINDOW = 1024  # seqs remembered below the high-water mark; older unseen seqs are replays

NEW = "new"
DUP = "dup"
REPLAY = "replay"
REGRESSED = "regressed"  # same (boot, seq) as a stored frame, other bytes: the boot went back
TAG_LEN = 8  # a frame's COSE MAC tag: its last 8 bytes (SPEC.md 4.1)


class SeqState:
    __slots__ = ("boot", "hwm", "cum", "bits", "gaps", "first", "tag", "tag0")

    def __init__(self, boot: int, hwm: int = -1, cum: int = -1, bits: int = 0, gaps: int = 0, first: int = -1,
                 tag: bytes = b"", tag0: bytes = b"") -> None:
        self.boot = boot
        self.hwm = hwm  # highest seq stored in this boot, -1 before the first
        self.cum = cum  # every seq <= cum of this boot is stored, -1 when unknown
        self.bits = bits  # bit i set: seq hwm - i is stored (i < WINDOW)
        self.gaps = gaps  # seqs skipped and not (yet) filled in, over the node's life here
        self.first = first  # seq of the first frame stored in this boot, -1 before it
        self.tag = tag  # that frame's MAC tag (b"": unknown, e.g. a state from before tags)
        self.tag0 = tag0  # the MAC tag of seq 0 of this boot, once stored (b"": not stored)

    def to_row(self) -> tuple[int, int, int, bytes, int]:
        # first and the tags ride behind the window bits: rows written before them still load
        extra = (self.first + 1).to_bytes(4, "little") + self.tag + self.tag0 if self.tag else b""
        return self.boot, self.hwm, self.cum, self.bits.to_bytes(WINDOW // 8, "little") + extra, self.gaps

    @classmethod
    def from_row(cls, boot: int, hwm: int, cum: int, bits: bytes, gaps: int) -> SeqState:
        n = WINDOW // 8
        extra = bits[n:]
        first = int.from_bytes(extra[:4], "little") - 1 if len(extra) >= 4 + TAG_LEN else -1
        if first < 0:
            return cls(boot, hwm, cum, int.from_bytes(bits[:n], "little"), gaps)
        return cls(boot, hwm, cum, int.from_bytes(bits[:n], "little"), gaps, first,
                   bytes(extra[4 : 4 + TAG_LEN]), bytes(extra[4 + TAG_LEN : 4 + 2 * TAG_LEN]))


def min_boot(state: SeqState) -> int:
    # the lowest boot a node may use for frames this gateway has not seen (SPEC.md 6.5)
    return state.boot + 1 if state.hwm >= 0 else state.boot


def restart(state: SeqState) -> SeqState:
    # After REGRESSED: the node's frames of that boot are refused from now on; its next boot
    # starts afresh. (Persisted with the batch, like any state.)
    return SeqState(state.boot + 1, gaps=state.gaps)


def tag_of(frame: bytes | None) -> bytes:
    # a frame's COSE MAC tag: its last bytes (SPEC.md 4.1; the decoder refused anything after)
    return b"" if frame is None else bytes(frame[-TAG_LEN:])


def classify(state: SeqState | None, boot: int, seq: int, frame: bytes | None = None) -> str:
    # -> NEW (store and forward), DUP (stored before: ACK again), REPLAY (reject) or
    # REGRESSED (reject; the node must move its boot counter on). frame: the verified bytes.
    if state is None or boot > state.boot:
        return NEW
    if (seq == 0 or seq == state.first) and boot == state.boot and frame is not None:
        ref = state.tag0 if seq == 0 and state.tag0 else state.tag if seq == state.first else b""
        if ref and tag_of(frame) != ref:
            return REGRESSED
    if boot < state.boot:
        return REPLAY
    if seq > state.hwm:
        return NEW
    if seq <= state.cum:
        return DUP
    back = state.hwm - seq
    if back >= WINDOW:
        return REPLAY
    return DUP if (state.bits >> back) & 1 else NEW


def advance(state: SeqState | None, boot: int, seq: int, frame: bytes | None = None) -> SeqState:
    # The state after storing (boot, seq), which classify() called NEW.
    # frame: its bytes, whose tag is kept when it is the first stored of its boot
    if state is None or boot > state.boot:
        gaps = 0 if state is None else state.gaps + seq  # a new boot starts at seq 0
        cum = 0 if seq == 0 else -1
        tag = tag_of(frame)
        return SeqState(boot, seq, cum, 1, gaps, seq, tag, tag if seq == 0 else b"")
    gaps = state.gaps
    if seq > state.hwm:
        shift = seq - state.hwm
        bits = ((state.bits << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
        gaps += shift - 1
        hwm = seq
    else:
        bits = state.bits | (1 << (state.hwm - seq))
        hwm = state.hwm
        gaps = max(0, gaps - 1)  # a late frame fills a gap
    cum = state.cum
    while cum < hwm and hwm - (cum + 1) < WINDOW and (bits >> (hwm - cum - 1)) & 1:
        cum += 1
    tag0 = tag_of(frame) if seq == 0 else state.tag0  # seq 0 is stored once: NEW means not yet
    if state.first >= 0:
        return SeqState(boot, hwm, cum, bits, gaps, state.first, state.tag, tag0)
    return SeqState(boot, hwm, cum, bits, gaps, seq, tag_of(frame), tag0)  # the boot's first stored frame
