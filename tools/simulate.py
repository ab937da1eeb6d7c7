# `citynode simulate`: N simulated nodes run the real firmware (firmware.node.Node on the
# sim board) and send K frames each to a gateway over UDP, resending what is not
# acknowledged; exit 0 when every frame is ACKed, 1 on timeout with the count left.
#
# Each node's flash (config.json, state.json with the boot counter, buffer.bin) lives in
# --state DIR/<node>, so every run is a new, higher boot of the same node id, and frames
# left unacknowledged by an earlier run are delivered (and counted) by the next one.
import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Collection
from typing import Any, TextIO

from firmware.sim.run import lan_config
from gateway.keys import KeysError, load_keys
from tools.cli import UsageError, hostport
from tools.procs import micropython_binary

SIM_PREFIX = "sim-"  # ids --nodes N takes: nodes provisioned for simulation only
DEFAULT_STATE = os.path.join(os.path.expanduser("~"), ".cache", "citynode", "sim")
ROOT = pathlib.Path(__file__).resolve().parent.parent


class SimulateError(UsageError):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=None,
                   help="number of nodes: the keys file's simulated nodes (ids sim-*) in id order (1)")
    p.add_argument("--node", action="append", metavar="ID",
                   help="simulate this node of the keys file (repeat for more); never a deployed node: the "
                        "gateway takes the simulated frames as that node's")
    p.add_argument("--frames", type=int, default=10, help="frames each node sends (%(default)s)")
    p.add_argument("--to", required=True, metavar="udp://HOST:PORT", help="the gateway's UDP ingest")
    p.add_argument("--keys", required=True, help="keys file: [nodes.<id>] key = \"<hex>\"")
    p.add_argument("--rate", type=float, default=None,
                   help="frames per second per node (default: as fast as ACKs come back)")
    p.add_argument("--runtime", choices=("cpython", "micropython"), default="cpython",
                   help="cpython: all nodes in this process; micropython: one MicroPython process per node")
    p.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds (%(default)s)")
    p.add_argument("--window", type=int, default=16, help="unacknowledged frames in flight per node (%(default)s)")
    p.add_argument("--state", default=DEFAULT_STATE, help="folder for the nodes' flash (%(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of the simulated worlds")
    p.add_argument("--operator-keys", metavar="FILE",
                   help="operator keys file: the nodes get their command keys and take signed commands")


def parse_udp(url: str) -> tuple[str, int]:
    rest = url[len("udp://"):] if url.startswith("udp://") else None
    try:
        return hostport(rest or "")
    except ValueError:
        raise SimulateError(f"--to must be udp://HOST:PORT (got {url!r})") from None


def prepare(args: argparse.Namespace) -> tuple[str, int, list[tuple[str, bytes, str]]]:
    # -> (host, port, [(node, key, flash_dir)]); writes each node's config.json
    if (args.nodes is not None and args.nodes < 1) or args.frames < 0 or args.window < 1:
        raise SimulateError("--nodes and --window must be at least 1, --frames at least 0")
    if args.rate is not None and args.rate <= 0:
        raise SimulateError("--rate must be positive")
    host, port = parse_udp(args.to)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror:
        raise SimulateError(f"--to {args.to}: cannot resolve {host!r}; give the gateway's address") from None
    try:
        keys = load_keys(args.keys)
    except KeysError as e:
        raise SimulateError(str(e)) from None
    command_keys = {}
    if getattr(args, "operator_keys", None):
        from tools.command import load_operator_keys

        try:
            command_keys = load_operator_keys(args.operator_keys)[0]
        except KeysError as e:
            raise SimulateError(str(e)) from None
    nodes = []
    for node in chosen_nodes(args, keys):
        flash = os.path.join(args.state, node)
        os.makedirs(flash, exist_ok=True)
        cfg = lan_config(node, keys[node].hex(), host, port)
        if node in command_keys:
            cfg["command_key"] = command_keys[node].hex()
        path = os.path.join(flash, "config.json")
        with open(path + ".tmp", "w") as f:
            json.dump(cfg, f)
        os.chmod(path + ".tmp", 0o600)  # it holds the node's key
        os.replace(path + ".tmp", path)
        nodes.append((node, keys[node], flash))
    return host, port, nodes


def chosen_nodes(args: argparse.Namespace, keys: Collection[str]) -> list[str]:
    # The ids to simulate: --node as given, else the first --nodes ids named sim-*. A simulated
    # node sends under its key, so taking any other id would impersonate a real node.
    if args.node:
        missing = [n for n in args.node if n not in keys]
        if missing:
            raise SimulateError(f"--node {missing[0]}: not in {args.keys} (add it with citynode provision)")
        if args.nodes is not None and args.nodes != len(set(args.node)):
            raise SimulateError(f"--nodes {args.nodes} but {len(set(args.node))} --node given; give one of them")
        return sorted(set(args.node))
    want = args.nodes or 1
    simulated = sorted(n for n in keys if n.startswith(SIM_PREFIX))
    if len(simulated) < want:
        raise SimulateError(
            f"{args.keys} has {len(simulated)} simulated node(s) (ids {SIM_PREFIX}*), --nodes {want} needs that "
            f"many: citynode provision --node {SIM_PREFIX}01 --board sim ..., or name test nodes with --node ID "
            "(never a deployed node)")
    return simulated[:want]


def run_cpython(args: argparse.Namespace, nodes: list[tuple[str, bytes, str]], out: TextIO | None) -> list[Any]:
    # every node in this process, driven by the simulator's own loop (firmware/sim/run.py drive)
    from firmware import config
    from firmware.sim.board import SimBoard
    from firmware.sim.run import drive

    boards = []
    for i, (_node_id, _key, flash) in enumerate(nodes):
        board = SimBoard(flash, seed=args.seed + i)
        boards.append((board, config.load(board.path(config.CONFIG_NAME))))
    return [r[:7] for r in drive(boards, args.frames, args.rate, args.window, int(args.timeout * 1000))]


def run_processes(args: argparse.Namespace, nodes: list[tuple[str, bytes, str]], out: TextIO | None) -> list[Any]:
    exe = micropython_binary()
    env = dict(os.environ, MICROPYPATH=str(ROOT))
    procs = []
    for i, (node_id, _key, flash) in enumerate(nodes):
        cmd = [exe, "-m", "firmware.sim.run", "udp", "--flash", flash, "--frames", str(args.frames),
               "--timeout", str(args.timeout), "--window", str(args.window), "--seed", str(args.seed + i)]
        if args.rate:
            cmd += ["--rate", str(args.rate)]
        procs.append((node_id, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                env=env, cwd=flash)))
    results = []
    for node_id, p in procs:
        try:
            stdout, stderr = p.communicate(timeout=args.timeout + 30)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
        line = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            err = (stderr.strip().splitlines() or ["no output"])[-1]
            print(f"simulate: {node_id}: MicroPython node failed: {err}", file=out)
            results.append((node_id, 0, 0, 0, args.frames, 0, None))
            continue
        f = dict(w.split("=", 1) for w in line[-1].split()[1:])
        note = [x[5:] for x in stdout.splitlines() if x.startswith("NOTE ")]
        results.append((node_id, int(f["boot"]), int(f["sent"]), int(f["acked"]), int(f["unacked"]),
                        int(f["resent"]), note[-1] if note else None))
    return results


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        _host, _port, nodes = prepare(args)  # SimulateError: wrong input (exit 2)
    except OSError as e:
        raise SimulateError(str(e)) from None
    t0 = time.monotonic()
    if args.runtime == "micropython":
        results = run_processes(args, nodes, out)
    else:
        results = run_cpython(args, nodes, out)
    wall = time.monotonic() - t0
    unacked = 0
    sent = 0
    for node_id, boot, made, acked, left, resent, note in results:
        print(f"{node_id}: boot {boot}, {made} frames made, {acked} acknowledged, {left} unacknowledged, "
              f"{resent} resent", file=out)
        if note:
            print(f"{node_id}: {note}", file=out)
        unacked += left
        sent += made
    if unacked:
        print(f"simulate: timeout after {args.timeout:g} s: {unacked} frame(s) unacknowledged", file=out)
        return 1
    rate = sent / wall if wall > 0 else 0.0
    print(f"simulate: {len(results)} node(s) x {args.frames} frames acknowledged in {wall:.2f} s "
          f"({rate:.0f} frames/s)", file=out)
    return 0
