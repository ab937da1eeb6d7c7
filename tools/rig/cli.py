# `citynode rig --flash DIR [--node-dir NODE]`: a virtual board on a pty until Ctrl-C.
# With --node-dir the flash folder first gets what `citynode flash` would put on a board
# (the firmware as .mpy, main.py, the node's config), so the node runs at once.
# The first line on stdout is "port <path>", for scripts and fixtures.
import signal
import sys
import threading

from tools.rig.board import VirtualRig


def add_arguments(p):
    p.add_argument("--flash", required=True, metavar="DIR", help="host folder that is the board's flash (created)")
    p.add_argument("--node-dir", metavar="DIR", help="provisioned node folder: install the firmware and its config")
    p.add_argument("--board", default="sim", help="board name in the REPL banner (%(default)s)")
    p.add_argument("--heap", default="256k", help="MicroPython heap, like the board's free RAM (%(default)s)")


def run(args):
    import os

    if os.path.exists(args.flash) and not os.path.isdir(args.flash):
        print(f"citynode rig: --flash {args.flash} is a file; give a folder (it is created if missing)",
              file=sys.stderr)
        return 2
    if args.node_dir:
        from tools import nodeconfig
        from tools.upload import UploadError, build_bundle, for_virtual_rig, write_bundle

        try:
            config = nodeconfig.load(f"{args.node_dir}/{nodeconfig.CONFIG_NAME}")
            write_bundle(args.flash, for_virtual_rig(build_bundle(config)))
        except (nodeconfig.ConfigError, UploadError) as e:
            print(f"citynode rig: {e}", file=sys.stderr)
            return 2
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    rig = VirtualRig(args.flash, board=args.board, heap=args.heap,
                     log=lambda m: print("rig: " + m, file=sys.stderr, flush=True)).start()
    print("port " + rig.port, flush=True)
    print(f"rig: the board powers on when {rig.port} is opened (citynode monitor --port {rig.port}, "
          f"mpremote connect {rig.port}); flash is {rig.flash}; Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        rig.stop()
    return 0
