# `citynode flash --port PORT [--image MICROPYTHON.bin] [--chip esp32] [--node-dir DIR]`
#   1. with --image: erase the chip and write MicroPython with esptool 5 (at the chip's offset)
#   2. compile protocol/ and firmware/ to .mpy, add main.py and the node's config
#   3. upload over the raw REPL, only files whose sha256 differs, then verify every file
#      by sha256 computed on the board
#   4. soft reset and wait for the node's boot banner
# Every failure a technician can cause is one line and exit 1; --dry-run prints the plan.
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from tools import nodeconfig
from tools.cli import CliError, UsageError
from tools.progress import Bar
from tools.upload import BoardFs, build_bundle, for_virtual_rig, sha256_hex

# chip -> (esptool name, CHIP_NAME esptool reports, MicroPython image offset)
CHIPS = {
    "esp32": ("esp32", "ESP32", 0x1000),
    "esp32s3": ("esp32s3", "ESP32-S3", 0x0),
    "esp32c3": ("esp32c3", "ESP32-C3", 0x0),
    "rp2": (None, "RP2040", None),
}
BANNER = rb"citynode (\S+) node (\S+) boot (\d+)"
CONFIG_ERROR = rb"[^\r\n]*(?:config|ConfigError)[^\r\n]*(?:provision|must|not valid)[^\r\n]*"


class FlashError(CliError):
    # the flash failed (exit 1); a bad node folder is the node config's ConfigError (exit 2)
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    p.add_argument("--image", metavar="BIN", help="MicroPython firmware image: erase the chip and write it first")
    p.add_argument("--chip", choices=sorted(CHIPS), default="esp32", help="board's chip (%(default)s)")
    p.add_argument("--node-dir", metavar="DIR", help="provisioned node folder (config.json from citynode provision)")
    p.add_argument("--baud", type=int, default=460800, help="baud rate for writing the image (%(default)s)")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds to wait for the REPL, the boot banner, and a board silent inside one command "
                        "(at least 10; %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and touch nothing")


# ------------------------------------------------------------------ checks


def check_port(port: str) -> None:
    if port.startswith(("/", ".")) and not os.path.exists(port):
        raise FlashError(f"no such port {port}: is the board plugged in? (ls /dev/ttyUSB* /dev/ttyACM*)")


def probe_port(port: str) -> None:
    # open it exclusively once, and look for other programs that hold it: "busy" is then
    # said as such, instead of surfacing later as a refused command
    from tools.ports import open_exclusive

    open_exclusive(port, 115200).close()  # CliError: no such port, busy (and by whom), no permission


def load_node_config(node_dir: str) -> dict[str, Any]:
    if node_dir is None:
        return None
    # checked by tools.nodeconfig and by the firmware's own config validation; ConfigError: exit 2
    config = nodeconfig.load(os.path.join(node_dir, nodeconfig.CONFIG_NAME))
    if config.get("board") == nodeconfig.PiBoard.name:
        raise UsageError(f"{node_dir}: a Raspberry Pi node is not flashed: it runs from the citynode package "
                         "(pip install 'citynode[rpi]', config.json into /var/lib/citynode-node, "
                         "deploy/citynode-node.service; docs/technician.md)")
    return config


# ------------------------------------------------------------------ steps


def write_image(port: str, chip: str, image: str, baud: int) -> None:
    name, expected, offset = CHIPS[chip]
    if name is None:
        raise FlashError("rp2 boards take MicroPython as a .uf2 file: hold BOOTSEL, plug in, copy it to the "
                         "RPI-RP2 drive; then run citynode flash without --image")
    if not os.path.isfile(image):
        raise FlashError(f"no such image file {image}")
    from esptool.cmds import attach_flash, detect_chip, erase_flash, reset_chip, run_stub, write_flash
    from esptool.util import FatalError

    print(f"erasing and writing {image} to {chip} at 0x{offset:x}", file=sys.stderr)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            esp = detect_chip(port, connect_attempts=2)
        with esp:
            if esp.CHIP_NAME != expected:
                raise FlashError(f"{port} has an {esp.CHIP_NAME}, not an {expected}: "
                                 f"use --chip {esp.CHIP_NAME.lower().replace('-', '')}")
            with contextlib.redirect_stdout(sys.stderr):  # esptool's own progress bars
                esp = run_stub(esp)
                if baud != esp.ESP_ROM_BAUD:
                    esp.change_baud(baud)
                attach_flash(esp)
                erase_flash(esp)
                write_flash(esp, [(offset, image)])
                reset_chip(esp, "hard-reset")
    except FatalError as e:
        first = str(e).strip().splitlines()[0]
        if "No serial data received" in first or "Failed to connect" in first:
            raise FlashError(f"no chip answered on {port}: hold BOOT while plugging in, and check that the "
                             "cable carries data") from None
        if "busy" in first:
            raise FlashError(f"port {port} is busy or gone: {first}") from None
        raise FlashError(f"esptool: {first}") from None
    time.sleep(2)  # MicroPython's first boot makes its filesystem


def connect(port: str, timeout_s: float) -> BoardFs:
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    try:
        # a read timeout: on a pty mpremote reads without checking what is waiting, and a
        # silent port would block it forever
        t = SerialTransport(port, baudrate=115200, timeout=1)
    except TransportError:
        raise FlashError(f"cannot open {port} (busy, or unplugged just now)") from None
    fs = BoardFs(t, wait_s=timeout_s)  # a board busy for longer inside one command: --timeout
    if not fs.enter(timeout_s):
        t.close()
        raise FlashError(f"no MicroPython REPL answered on {port}: is MicroPython on the board? "
                         "(write it with --image) Is this the right port?")
    return fs


# the node config's board -> sys.platform of the MicroPython that board runs
PLATFORMS = {"esp32": "esp32", "rp2": "rp2", "linux": "linux", "sim": "linux"}


RIG_PROBE = "import sys\ntry:\n _r = CITYNODE_RIG\nexcept NameError:\n _r = '-'\nprint(sys.platform, _r)"


def check_board(fs: BoardFs, config: dict[str, Any], port: str) -> bool:
    # the firmware picks its board module from the config: a config for another board would
    # upload fine and then crash on the first Pin. Ask the board what it is before writing.
    # -> True when the port is the virtual rig (tools/rig/agent.py sets CITYNODE_RIG): it
    # plays any board, running the node's config on its sim board.
    answer = fs.exec(RIG_PROBE).decode().split()
    platform, rig = (answer + ["", "-"])[:2]
    if rig != "-":
        return True
    if config is None:
        return False
    board = config.get("board")
    if board is None and platform in ("esp32", "rp2"):
        return False  # no board in the config: the firmware runs as the board it finds itself on
    if board is None or PLATFORMS.get(board) != platform:
        fits = [b for b, p in PLATFORMS.items() if p == platform and b != "sim"]
        hint = (f"provision it again with --board {fits[0]} --force" if fits
                else "this board type is not supported")
        raise FlashError(f"wrong board: {port} runs MicroPython for {platform}, but the node config is for "
                         f"{board or 'an ESP32 or a Pico (no board named)'}; {hint}")
    return False


def upload(fs: BoardFs, files: Sequence[tuple[str, bytes]]) -> int:
    paths = [p for p, _ in files]
    before = fs.hashes(paths)
    todo = [(p, d) for (p, d), h in zip(files, before) if h != sha256_hex(d)]
    total = sum(len(d) for _, d in todo)
    print(f"uploading {len(todo)} of {len(files)} files ({total} bytes; {len(files) - len(todo)} unchanged)",
          file=sys.stderr)
    if todo:
        fs.makedirs([p for p, _ in todo])
        bar = Bar("upload", total, " B")
        for path, data in todo:
            fs.write(path, data, on_bytes=lambda n, path=path: bar.step(n, path))
        bar.finish()
    after = fs.hashes(paths)
    bar = Bar("verify", len(files), " files")
    for (path, data), h in zip(files, after):
        if h != sha256_hex(data):
            raise FlashError(f"upload mismatch: {path} on the board has sha256 {h or 'nothing'}, "
                             f"expected {sha256_hex(data)}; run citynode flash again")
        bar.step(1, path)
    bar.finish("sha256 ok")
    return len(todo)


def print_plan(args: argparse.Namespace, files: Sequence[tuple[str, bytes]]) -> None:
    print("plan (dry run, nothing is written):")
    if args.image:
        name, _, offset = CHIPS[args.chip]
        print(f"  esptool --chip {name} -p {args.port} erase-flash")
        print(f"  esptool --chip {name} -p {args.port} -b {args.baud} write-flash 0x{offset:x} {args.image}")
    print(f"  upload over the raw REPL on {args.port}, only files whose sha256 differs:")
    for path, data in files:
        print(f"    :{path:<40} {len(data):6d} B  sha256 {sha256_hex(data)[:16]}")
    print("  verify every file by sha256 on the board")
    print("  soft reset, wait for the boot banner")


def run(args: argparse.Namespace) -> int:
    try:
        return flash(args)
    except KeyboardInterrupt:
        # the files written so far are complete (each goes to a temporary name, then renamed)
        raise KeyboardInterrupt("interrupted (Ctrl-C); run the same command again to finish (only what "
                                "differs is written)") from None


def flash(args: argparse.Namespace) -> int:
    config = load_node_config(args.node_dir)
    if not args.dry_run:
        check_port(args.port)
        probe_port(args.port)
    bars = []

    def compiled(i: int, n: int) -> None:
        if not bars:
            bars.append(Bar("compile", n, " files"))
        bars[0].update(i)

    files = build_bundle(config, progress=compiled)
    if bars:
        bars[0].finish()
    if args.dry_run:
        print_plan(args, files)
        return 0
    if args.image:
        write_image(args.port, args.chip, args.image, args.baud)
    fs = connect(args.port, args.timeout)
    try:
        if check_board(fs, config, args.port):
            files = for_virtual_rig(files)
        changed = upload(fs, files)
        fs.t.serial.timeout = 0.2
        m, seen = fs.soft_reset_and_wait(BANNER, args.timeout)
    finally:
        with contextlib.suppress(OSError):
            fs.t.close()
    if m is None:
        import re

        err = re.search(CONFIG_ERROR, seen)
        hint = f" (board said: {err.group(0).decode(errors='replace').strip()})" if err else ""
        raise FlashError(f"uploaded and verified, but no boot banner within {args.timeout:.0f} s after the "
                         f"reset{hint}; watch it with citynode monitor --port {args.port}")
    version, node, boot = (x.decode() for x in m.groups())
    print(f"flashed {args.port}: {changed} files written, {len(files)} verified by sha256; "
          f"node {node} runs citynode {version}, boot {boot}")
    return 0
