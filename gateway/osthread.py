# Names the calling thread in the kernel (prctl PR_SET_NAME, 15 bytes), so `top -H`,
# /proc/PID/task/*/comm and the benchmark can tell the gateway's threads apart.
import ctypes
import sys

_PR_SET_NAME = 15
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def name(text: str) -> None:
    if _prctl is not None:
        _prctl(_PR_SET_NAME, ctypes.c_char_p(text.encode()[:15]), 0, 0, 0)
