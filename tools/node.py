# `citynode node --dir /var/lib/citynode-node`: the Raspberry Pi node. The same firmware as
# the ESP32 and Pico nodes (firmware.node.Node), on CPython, on the Pi's own board
# (firmware/boards/rpi.py: BME280 through adafruit-circuitpython-bme280, sensors and a serial
# uplink through pyserial, UDP through the Pi's network), installed from the package with
# `pip install 'citynode[rpi]'` and run by systemd (deploy/citynode-node.service). A Pi is
# never flashed: its folder holds config.json (from `citynode provision --board rpi`),
# state.json (the boot counter) and buffer.bin (the offline buffer).
#
#   citynode node --dir DIR                  run until SIGTERM (exit 0) or a reset (exit 3:
#                                            systemd starts it again, a new boot)
#   citynode node --dir DIR --check-config   validate the config, then exit (0 ok, 2 bad)
#   citynode node --dir DIR --cycles 3       three cycles, then exit (a check on site)
#
# Under systemd (Type=notify) it says READY=1 once the node has started and feeds the service
# watchdog (WatchdogSec) from the node's own loop: a node that hangs is restarted.
from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
from typing import Any, NoReturn

from tools.cli import CliError, UsageError

DEFAULT_DIR = "/var/lib/citynode-node"
BOARD = "rpi"


class _Stopped(Exception):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=DEFAULT_DIR,
                   help="the node's folder: config.json (citynode provision --board rpi), state.json, buffer.bin "
                        "(%(default)s)")
    p.add_argument("--check-config", action="store_true", help="validate the node's config, then exit")
    p.add_argument("--cycles", type=int, default=None, metavar="N", help="stop after N cycles (a check on site)")


def load(folder: str) -> dict[str, Any]:
    # -> the node's checked config; UsageError (exit 2) with one line naming what is wrong
    from firmware import config

    path = os.path.join(folder, config.CONFIG_NAME)
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no node config; copy the one citynode provision --board rpi made here "
                       "(docs/technician.md)")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:  # it holds the node's key: whoever reads it can forge the node's frames
        raise UsageError(f"{path} is mode {mode:04o}, open to group or others; run chmod 600 {path} (owned by the "
                       "node's user)")
    try:
        cfg = config.load(path, BOARD)  # a config that names no board: the Pi's
    except config.ConfigError as e:
        raise UsageError(f"{path}: {str(e).removeprefix(path + ': ')}") from None
    board = cfg["board"]
    if board != BOARD:
        hint = ("provision the Raspberry Pi with --board rpi" if board == "linux"
                else "that board runs MicroPython: citynode flash puts the node on it")
        raise UsageError(f"{path}: board {board!r} is not a Raspberry Pi node; {hint}")
    return cfg


def run(args: argparse.Namespace) -> int:
    if args.cycles is not None and args.cycles < 1:
        raise UsageError("--cycles must be at least 1")
    cfg = load(args.dir)
    if args.check_config:
        link = cfg["link"]
        where = f"{link['host']}:{link['port']}" if link["kind"] == "udp" else link.get("port", "/dev/ttyUSB0")
        print(f"{os.path.join(args.dir, 'config.json')}: ok (node {cfg['node']}, board {BOARD}, link "
              f"{link['kind']} {where}, every {cfg['interval_s']} s)")
        return 0
    from firmware.boards.rpi import Board
    from firmware.node import Node
    from gateway.notify import notify, watchdog_interval_s

    period_s = watchdog_interval_s()  # half of WatchdogSec, or None
    board = Board(args.dir, notify=notify, watchdog_ms=int(period_s * 1000) if period_s else None)

    def stop(signum: int, frame: Any) -> NoReturn:
        raise _Stopped()  # like a power cut: the buffer and the state survive one at any instruction

    signal.signal(signal.SIGTERM, stop)
    try:
        try:
            node = Node(board, cfg)
            node.start()
        except OSError as e:
            raise CliError(f"cannot start the node in {args.dir}: {e.strerror or e}") from None
        notify(f"READY=1\nSTATUS=node {cfg['node']} boot {node.health.boot}")
        node.run(max_cycles=args.cycles)
    except _Stopped:
        notify("STOPPING=1")
        board.log("citynode node: stopped (SIGTERM)")
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.stdout.flush()
    return 0
