# `citynode provision --node ID --out DIR`: a fresh random key for one node, the node's
# config for its board (validated here, on the big machine), and the node's entry in the
# gateway keys file. An existing key is never replaced without --force: a replaced key
# locks out a node that is already deployed until it is flashed again.
import argparse
import json
import os
import secrets
from collections.abc import Mapping
from typing import Any

from gateway.files import write_private
from gateway.keys import Keys, KeysError, format_keys, load_keys
from protocol import compact
from protocol.message import check_node_id
from protocol.names import NODE_ID_RULE
from tools import nodeconfig
from tools.cli import CliError, UsageError
from tools.command import format_operator_keys, load_operator_keys, next_counter

KEY_BYTES = 16  # 128-bit HMAC key, the SPEC's minimum and plenty for HMAC 256/64
COMMAND_KEY_BYTES = 32  # the operator's command key (SPEC 6.7): the gateway never holds it
CONFIG_NAME = nodeconfig.CONFIG_NAME


def add_arguments(p: argparse.ArgumentParser) -> None:
    # in groups, as a technician reads them: the node, how it reaches the gateway (one of the
    # links, each with its own settings), then the keys files
    g = p.add_argument_group("node")
    g.add_argument("--node", required=True, help="node id (1..32 of A-Z a-z 0-9 - : . _, first a letter or digit)")
    g.add_argument("--board", choices=sorted(nodeconfig.BOARDS), default="esp32", help="target board (esp32)")
    g.add_argument("--interval", type=int, default=nodeconfig.DEFAULT_INTERVAL_S,
                   help="reporting interval in seconds (%(default)s)")
    g.add_argument("--out", required=True, metavar="DIR", help="folder for the node's config (created)")

    g = p.add_argument_group("link", "how the node reaches the gateway: a serial cable (uart), UDP over the "
                                     "network or Wi-Fi (udp), or LoRa to the gateway's radio (lora)")
    g.add_argument("--link", choices=nodeconfig.LINKS, default=None,
                   help="udp when --gateway is given, else uart")

    g = p.add_argument_group("udp link (--link udp)")
    g.add_argument("--gateway", metavar="HOST:PORT", help="the gateway's UDP address")
    g.add_argument("--wifi-ssid", help="Wi-Fi network (esp32/rp2)")
    g.add_argument("--wifi-password", help="Wi-Fi password (stored in the node config, mode 0600; never printed)")

    rules = nodeconfig.REGIONS["eu868"]
    g = p.add_argument_group("LoRa link (--link lora; docs/lora.md)",
                             "the defaults keep EU868's rules; the gateway's radio modem must listen on the same "
                             "frequency and SF")
    g.add_argument("--region", help=f"the radio rules of a region: {', '.join(nodeconfig.REGIONS)} (default eu868)")
    g.add_argument("--sf", type=int, help="spreading factor %d..%d (%d: farthest, for a node under a manhole cover)"
                   % (*nodeconfig.SF_RANGE, nodeconfig.DEFAULT_SF))
    g.add_argument("--freq", metavar="MHZ", help=f"frequency in MHz ({rules['freq_khz'] / 1000})")
    g.add_argument("--power", type=int, metavar="DBM", help=f"transmit power in dBm ({rules['power_dbm'][1]})")
    g.add_argument("--duty-cycle", metavar="PERCENT",
                   help=f"airtime limit in %% of any hour ({rules['duty_permille'] / 10:g})")
    g.add_argument("--radio", help="the LoRa module: %s (rp2: the first; esp32: give the board's own)"
                   % ", ".join(m for mods in nodeconfig.LORA_RADIOS.values() for m in mods))

    g = p.add_argument_group("keys", "the node's key goes to its config and to the gateway keys file (copy that one "
                                     "to the gateway); its command key to the operator keys file, which stays with "
                                     "the operator. An existing key is replaced only with --force: its version "
                                     "goes one up, and the gateway keeps the replaced key as previous_key so the "
                                     "frames the node buffered under it still verify")
    g.add_argument("--keys", default="gateway-keys.toml", help="the gateway keys file (%(default)s)")
    g.add_argument("--operator-keys", metavar="FILE", help="the operator keys file (operator-keys.toml next to --keys)")
    g.add_argument("--force", action="store_true", help="replace an existing key for this node")
    g.add_argument("--drop-old-key", action="store_true",
                   help="with --force: keep no previous key (it leaked): the gateway refuses the frames buffered "
                        "under it as retired, and the node discards them, counted")


def provision(node: str, out: str, keys_path: str, board: str = "esp32", link: str | None = None,
              gateway: str | None = None, wifi_ssid: str | None = None,
              wifi_password: str | None = None, interval_s: int = nodeconfig.DEFAULT_INTERVAL_S, force: bool = False,
              drop_old_key: bool = False, operator_keys_path: str | None = None,
              lora: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    # -> (config path, config dict). lora: the LoRa link's options (nodeconfig.LORA_OPTIONS) for
    # link "lora". Raises UsageError, CliError or ConfigError with a one-line reason; on any
    # failure nothing is left behind: no node folder, no config, no temporary file, and the
    # keys file as it was.
    if not check_node_id(node):
        raise UsageError(f"node id {node!r}: must be {NODE_ID_RULE}")
    if drop_old_key and not force:
        raise UsageError("--drop-old-key replaces a key: give --force too")
    options = {"board": board, "link": link or ("udp" if gateway else "uart"), "gateway": gateway,
               "wifi_ssid": wifi_ssid, "wifi_password": wifi_password, "interval_s": interval_s, "lora": lora}
    key = secrets.token_bytes(KEY_BYTES)
    # checked once before the keys file is read, so a bad option names itself first (ConfigError: exit 2)
    nodeconfig.build(node, key, **options)
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
    config = nodeconfig.build(node, key, key_version=keys.version(node), **options)
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


def lora_lines(node: str, config: dict[str, Any], keys_path: str, region: str) -> list[str]:
    # What the technician needs for a LoRa node beside its files: its settings, what the
    # gateway's radio modem must match, its address (which the gateway derives from the node id:
    # the keys file needs only the key, SPEC.md 13.1), and what the duty cycle makes of the interval
    link = config["link"]
    addr = compact.address(node)
    shared = sorted(n for n in load_keys(keys_path) if n != node and compact.address(n) == addr)
    lines = [f"LoRa: {region.upper()} {link['freq_khz'] / 1000} MHz, SF{link['sf']}, {link['power_dbm']} dBm, "
             f"duty cycle {link['duty_permille'] / 10:g} %, radio {link['radio']}",
             f"LoRa address {addr.hex()} (from the node id; the gateway keys file holds its key)"
             + (f"; {', '.join(shared)} share it: the gateway tells them apart by their MAC" if shared else ""),
             f'the gateway\'s radio modem must listen alike: modem.json {{"freq_khz": {link["freq_khz"]}, '
             f'"sf": {link["sf"]}}}']
    air = nodeconfig.lora_airtime_ms(link)
    every = -(-air * 1000 // link["duty_permille"] // 1000)  # seconds, rounded up (as lora_link.py fit() stretches)
    stretched = f" (--interval {config['interval_s']} is stretched to that)" if every > config["interval_s"] else ""
    lines.append(f"a typical frame takes {air} ms of air: at most one every {every} s{stretched}")
    return lines


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
                                        operator_keys_path=args.operator_keys,
                                        lora={k: getattr(args, k) for k in nodeconfig.LORA_OPTIONS})
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        raise CliError(f"cannot write{where}: {e.strerror or e}; nothing was changed") from None
    print(f"provisioned {args.node} ({config['board']}, link {config['link']['kind']})")
    print(f"  node config: {config_path} (mode 0600, holds the key)")
    print(f"  gateway keys: {args.keys} (mode 0600)")
    if config["link"]["kind"] == "lora":
        for line in lora_lines(args.node, config, args.keys, args.region or "eu868"):
            print("  " + line)
    version = config.get("key_version", 0)
    if version:
        kept = "no previous key kept: its buffered frames will be discarded" if args.drop_old_key else \
            f"version {version - 1} kept as previous_key until the node's backlog drained"
        print(f"  key version {version} ({kept})")
    print(f"  operator keys: {args.operator_keys} (mode 0600, the command key: keep it off the gateway)")
    print(f"next: citynode flash --port PORT --node-dir {args.out}")
    return 0
