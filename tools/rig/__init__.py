# The virtual rig: a simulated board behind a pty (see board.py).
from tools.rig.board import VirtualRig

__all__ = ["VirtualRig"]
