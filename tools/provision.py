# `citynode provision --node ID --out DIR`: a fresh random key for one node, the node's
# config for its board (validated here, on the big machine), and the node's entry in the
# gateway keys file. An existing key is never replaced without --force: a replaced key
# locks out a node that is already deployed until it is flashed again.
import argparse
import json
import os
import secrets
from typing import Any

from gateway.files import write_private
from gateway.keys import Keys, KeysError, format_keys, load_keys
from protocol.message import check_node_id
from protocol.names import NODE_ID_RULE
from tools import nodeconfig
from tools.cli import CliError, UsageError
from tools.command import format_operator_keys, load_operator_keys, next_counter

KEY_BYTES = 16  # 128-bit HMAC key, the SPEC's minimum and plenty for HMAC 256/64
COMMAND_KEY_BYTES = 32  # the operator's command key (SPEC 6.7): the gateway never holds it
CONFIG_NAME = nodeconfig.CONFIG_NAME


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", required=True, help="node id (1..32 of A-Z a-z 0-9 - : . _, first a letter or digit)")
    p.add_argument("--board", choices=sorted(nodeconfig.BOARDS), default="esp32", help="target board (esp32)")
    p.add_argument("--link", choices=("uart", "udp"), default=None,
                   help="how the node reaches the gateway (udp when --gateway is given, else uart)")
    p.add_argument("--gateway", metavar="HOST:PORT", help="gateway UDP address (needed for --link udp)")
    p.add_argument("--wifi-ssid", help="Wi-Fi network (esp32/rp2 with --link udp)")
    p.add_argument("--wifi-password", default="", help="Wi-Fi password (stored in the node config, mode 0600)")
    p.add_argument("--interval", type=int, default=nodeconfig.DEFAULT_INTERVAL_S,
                   help="reporting interval in seconds (%(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the node's config (created)")
    p.add_argument("--keys", default="gateway-keys.toml", help="gateway keys file to add the node to (%(default)s)")
    p.add_argument("--operator-keys", metavar="FILE",
                   help="operator keys file for the node's command key (default: operator-keys.toml next to "
                        "--keys); copy only the gateway keys file to the gateway")
    p.add_argument("--force", action="store_true",
                   help="replace an existing key for this node (its version goes one up; the gateway keeps the "
                        "replaced key as previous_key so the frames the node buffered under it still verify)")
    p.add_argument("--drop-old-key", action="store_true",
                   help="with --force: keep no previous key (it leaked): the gateway refuses the node's frames "
                        "buffered under it as retired and the node discards them, counted")


def provision(node: str, out: str, keys_path: str, board: str = "esp32", link: str | None = None,
              gateway: str | None = None, wifi_ssid: str | None = None,
              wifi_password: str = "", interval_s: int = nodeconfig.DEFAULT_INTERVAL_S, force: bool = False,
              drop_old_key: bool = False, operator_keys_path: str | None = None) -> tuple[str, dict[str, Any]]:
    # -> (config path, config dict). Raises UsageError, CliError or ConfigError with a one-line reason; on any
    # failure nothing is left behind: no node folder, no config, no temporary file, and the
    # keys file as it was.
    if not check_node_id(node):
        raise UsageError(f"node id {node!r}: must be {NODE_ID_RULE}")
    if drop_old_key and not force:
        raise UsageError("--drop-old-key replaces a key: give --force too")
    link = link or ("udp" if gateway else "uart")
    key = secrets.token_bytes(KEY_BYTES)
    # checked once before the keys file is read, so a bad option names itself first (ConfigError: exit 2)
    nodeconfig.build(node, key, board=board, link=link, gateway=gateway, wifi_ssid=wifi_ssid,
                     wifi_password=wifi_password, interval_s=interval_s)
    command_key = secrets.token_bytes(COMMAND_KEY_BYTES)
    operator_keys_path = operator_keys_path or os.path.join(os.path.dirname(keys_path), "operator-keys.toml")
    op_keys, counters = {}, {}
    if os.path.abspath(operator_keys_path) == os.path.abspath(keys_path):
        raise UsageError("--operator-keys must not be the gateway keys file: the gateway must not hold command "
                         "keys")
    if os.path.exists(operator_keys_path):
        try:
            op_keys, counters = load_operator_keys(operator_keys_path)
        except KeysError as e:
            raise UsageError(f"{e}; fix or move it, then provision again") from None
    # the node takes no command signed before this config (a wiped node flashed again: SPEC 6.7)
    counters[node] = floor = next_counter(counters.get(node, 0)) - 1

    keys_dir = os.path.dirname(os.path.abspath(keys_path))
    if not os.path.isdir(keys_dir):
        raise UsageError(f"--keys {keys_path}: folder {keys_dir} does not exist; create it or choose "
                         "another path")
    if os.path.isdir(keys_path):
        raise UsageError(f"--keys {keys_path} is a folder; give the keys file's path")
    keys = Keys()
    if os.path.exists(keys_path):
        try:
            keys = load_keys(keys_path)
        except KeysError as e:
            raise UsageError(f"{e}; fix or move it, then provision again") from None
    if node in keys and not force:
        raise CliError(f"{keys_path} already has a key for {node}; use --force to replace it "
                       "(the node must then be flashed again)")
    keys.rotate(node, key, keep_previous=not drop_old_key)
    config = nodeconfig.build(node, key, board=board, link=link, gateway=gateway, wifi_ssid=wifi_ssid,
                              wifi_password=wifi_password, interval_s=interval_s, key_version=keys.version(node))
    config["command_key"] = command_key.hex()
    config["cmd_floor"] = floor
    config = nodeconfig.check_with_firmware(config)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file; give a folder for the node's config")
    config_path = os.path.join(out, CONFIG_NAME)
    old_config = None
    if os.path.exists(config_path):
        if not force:
            raise CliError(f"{config_path} exists; use --force to replace it, or choose another --out")
        with open(config_path, "rb") as f:
            old_config = f.read()

    made = _missing_dirs(out)
    old_keys = _read(keys_path)
    old_op_keys = _read(operator_keys_path)
    try:
        for d in made:
            os.mkdir(d, 0o700)
        # the node's copy first: if writing the keys file fails, no gateway accepts a key nobody holds
        write_private(config_path, json.dumps(config, indent=1, sort_keys=True) + "\n")
        write_private(keys_path, format_keys(keys))
        op_keys[node] = command_key
        write_private(operator_keys_path, format_operator_keys(op_keys, counters))
    except BaseException:
        # leave nothing behind: the old config back (with --force), or no config and no new folders,
        # and both keys files as they were
        for path, old in ((keys_path, old_keys), (operator_keys_path, old_op_keys)):
            try:
                if old is not None:
                    with open(path, "rb") as f:
                        changed = f.read() != old
                    if changed:
                        write_private(path, old)
                elif os.path.exists(path):
                    os.unlink(path)
            except OSError:
                pass
        try:
            if old_config is not None:
                write_private(config_path, old_config)
            elif os.path.exists(config_path):
                os.unlink(config_path)
            for d in reversed(made):
                os.rmdir(d)
        except OSError:
            pass
        raise
    return config_path, config


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _missing_dirs(path: str) -> list[str]:
    # the folders os.makedirs(path) would create, outermost first
    out = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        out.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return list(reversed(out))


def run(args: argparse.Namespace) -> int:
    args.operator_keys = args.operator_keys or os.path.join(os.path.dirname(args.keys), "operator-keys.toml")
    try:
        config_path, config = provision(args.node, args.out, args.keys, board=args.board, link=args.link,
                                        gateway=args.gateway, wifi_ssid=args.wifi_ssid,
                                        wifi_password=args.wifi_password, interval_s=args.interval,
                                        force=args.force, drop_old_key=args.drop_old_key,
                                        operator_keys_path=args.operator_keys)
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        raise CliError(f"cannot write{where}: {e.strerror or e}; nothing was changed") from None
    print(f"provisioned {args.node} ({config['board']}, link {config['link']['kind']})")
    print(f"  node config: {config_path} (mode 0600, holds the key)")
    print(f"  gateway keys: {args.keys} (mode 0600)")
    version = config.get("key_version", 0)
    if version:
        kept = "no previous key kept: its buffered frames will be discarded" if args.drop_old_key else \
            f"version {version - 1} kept as previous_key until the node's backlog drained"
        print(f"  key version {version} ({kept})")
    print(f"  operator keys: {args.operator_keys} (mode 0600, the command key: keep it off the gateway)")
    print(f"next: citynode flash --port PORT --node-dir {args.out}")
    return 0
