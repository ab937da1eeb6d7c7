# `citynode rig --flash DIR [--node-dir NODE] [--board NAME]`: a board on a pty until Ctrl-C.
#   the virtual rig (default): the firmware on the MicroPython unix port with DIR as its
#     flash; with --node-dir DIR first gets what `citynode flash` would put on a board (the
#     firmware as .mpy, main.py, the node's config), so the node runs at once.
#   --board pico: the emulated Raspberry Pi Pico, the real MicroPython rp2 image on rp2040js
#     (tools/rig/pico.py), with DIR/pico-flash.bin as its 2 MB flash (made from the image
#     when missing, kept across runs); --node-dir then runs `citynode flash` against it
#     (provision the node with --board rp2).
# The first line on stdout is "port <path>", for scripts and fixtures.
import argparse
import signal
import sys
import threading
from typing import Any

from tools.rig.board import VirtualRig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flash", required=True, metavar="DIR", help="host folder that is the board's flash (created)")
    p.add_argument("--node-dir", metavar="DIR", help="provisioned node folder: install the firmware and its config")
    p.add_argument("--board", default="sim", help="pico: the emulated Raspberry Pi Pico (the real MicroPython rp2 "
                   "port); any other name: the virtual rig (unix port) with that name in its REPL banner "
                   "(%(default)s)")
    p.add_argument("--link", metavar="PATH",
                   help="also reach the board's pty as PATH (a symlink, removed on exit): a fixed name for a "
                        "gateway config, as /dev/serial/by-id/... is for a real board")
    p.add_argument("--heap", default="256k", help="virtual rig: MicroPython heap, like the board's free RAM "
                   "(%(default)s)")
    p.add_argument("--world-speed", type=float, default=1.0, metavar="X",
                   help="pico: the simulated world runs X times faster than the board's clock (%(default)s)")
    p.add_argument("--rain-start-s", type=float, metavar="S",
                   help="pico: the storm's runoff arrives S world seconds after power-on (default: dry weather)")


def run(args: argparse.Namespace) -> int:
    import os

    from tools.cli import UsageError

    if os.path.exists(args.flash) and not os.path.isdir(args.flash):
        raise UsageError(f"--flash {args.flash} is a file; give a folder (it is created if missing)")
    if args.link and os.path.lexists(args.link) and not os.path.islink(args.link):
        raise UsageError(f"--link {args.link} exists and is no symlink; give another path")
    if args.link and not os.path.isdir(os.path.dirname(os.path.abspath(args.link))):
        raise UsageError(f"--link {args.link}: its folder does not exist")
    if args.board == "pico":
        return run_pico(args)
    if args.node_dir:
        from tools import nodeconfig
        from tools.upload import UploadError, build_bundle, for_virtual_rig, write_bundle

        config = nodeconfig.load(f"{args.node_dir}/{nodeconfig.CONFIG_NAME}")  # ConfigError: exit 2
        try:
            write_bundle(args.flash, for_virtual_rig(build_bundle(config)))
        except UploadError as e:  # the node folder's firmware cannot be built (LoRa drivers missing...)
            raise UsageError(str(e)) from None
    rig = VirtualRig(args.flash, board=args.board, heap=args.heap,
                     log=lambda m: print("rig: " + m, file=sys.stderr, flush=True)).start()
    return serve(rig, f"flash is {rig.flash}", args.link)


def run_pico(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from tools.rig.pico import REPL_WAIT_S, PicoRig

    os.makedirs(args.flash, exist_ok=True)
    world = {"speed": args.world_speed}
    if args.rain_start_s is not None:
        world["rain_start_s"] = args.rain_start_s
    # RigMissing (what this machine lacks): exit 2
    rig = PicoRig(os.path.join(args.flash, "pico-flash.bin"), world=world, power_on_open=not args.node_dir,
                  log=lambda m: print("rig: " + m, file=sys.stderr, flush=True)).start()
    if args.node_dir:
        proc = subprocess.run([sys.executable, "-m", "tools.cli", "flash", "--port", rig.port,
                               "--node-dir", args.node_dir, "--timeout", str(REPL_WAIT_S)], stdout=sys.stderr)
        if proc.returncode != 0:
            rig.stop()
            return proc.returncode
    return serve(rig, f"flash is {rig.flash_file}", args.link)


def serve(rig: Any, where: str, link: str | None = None) -> int:
    import os

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    if link:
        if os.path.islink(link):
            os.unlink(link)  # a link an earlier rig left behind
        os.symlink(rig.port, link)
    print("port " + rig.port, flush=True)
    print(f"rig: the board powers on when {rig.port} is opened (citynode monitor --port {rig.port}, "
          f"mpremote connect {rig.port}); {where}; Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        wear(rig)
        rig.stop()
        if link and os.path.islink(link):
            os.unlink(link)
    return 0


def wear(rig: Any) -> None:
    # the emulated Pico's counters since the rig started: flash wear and resets
    if not hasattr(rig, "report") or not rig.running:
        return
    try:
        c = rig.report(timeout=2)
    except TimeoutError:
        return
    print(f"rig: {c['erases']} flash sector erases, {c['programs']} page programs ({c['program_bytes']} B), "
          f"{c['watchdog_resets']} watchdog resets, {c['resets']} software resets, {c['boots']} boots in "
          f"{c['ms'] / 1000:.0f} emulated s", file=sys.stderr, flush=True)
