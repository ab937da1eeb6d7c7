# python -m tools.rig --flash DIR: a virtual board on a pty until Ctrl-C / SIGTERM.
# The first line printed is "port <path>", for scripts and test fixtures.
import argparse
import signal
import sys
import threading

from tools.rig.board import VirtualRig


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.rig", description="a virtual citynode board on a pty")
    p.add_argument("--flash", required=True, help="host folder that is the board's flash (created)")
    p.add_argument("--board", default="sim", help="board name shown in the banner (%(default)s)")
    p.add_argument("--heap", default="256k", help="MicroPython heap size (%(default)s)")
    args = p.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    rig = VirtualRig(args.flash, board=args.board, heap=args.heap,
                     log=lambda m: print("rig: " + m, file=sys.stderr, flush=True)).start()
    print("port " + rig.port, flush=True)
    print(f"rig: board powers on when {rig.port} is opened; flash is {rig.flash}", file=sys.stderr, flush=True)
    try:
        done.wait()
    finally:
        rig.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
