# Duplicates and replays (SPEC.md section 10): per node the highest boot, and in that
# boot the highest seq (hwm), a window of recently stored seqs and `cum` (every seq <= cum
# is stored). States are immutable; the pipeline swaps in new ones only after the group
# commit that stored the frames succeeded, so memory never claims more than the disk holds.
WINDOW = 1024  # seqs remembered below the high-water mark; older unseen seqs are replays

NEW = "new"
DUP = "dup"
REPLAY = "replay"


class SeqState:
    __slots__ = ("boot", "hwm", "cum", "bits", "gaps")

    def __init__(self, boot, hwm=-1, cum=-1, bits=0, gaps=0):
        self.boot = boot
        self.hwm = hwm  # highest seq stored in this boot, -1 before the first
        self.cum = cum  # every seq <= cum of this boot is stored, -1 when unknown
        self.bits = bits  # bit i set: seq hwm - i is stored (i < WINDOW)
        self.gaps = gaps  # seqs skipped and not (yet) filled in, over the node's life here

    def to_row(self):
        return self.boot, self.hwm, self.cum, self.bits.to_bytes(WINDOW // 8, "little"), self.gaps

    @classmethod
    def from_row(cls, boot, hwm, cum, bits, gaps):
        return cls(boot, hwm, cum, int.from_bytes(bits, "little"), gaps)


def classify(state, boot, seq):
    # -> NEW (store and forward), DUP (stored before: ACK again) or REPLAY (reject)
    if state is None or boot > state.boot:
        return NEW
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


def advance(state, boot, seq):
    # The state after storing (boot, seq), which classify() called NEW.
    if state is None or boot > state.boot:
        gaps = 0 if state is None else state.gaps + seq  # a new boot starts at seq 0
        cum = 0 if seq == 0 else -1
        return SeqState(boot, seq, cum, 1, gaps)
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
    return SeqState(boot, hwm, cum, bits, gaps)
