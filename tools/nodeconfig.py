# The node config that provisioning writes and flashing uploads: built and validated here,
# on the big machine, so the node only loads a small, checked file (docs/architecture.md).
import json
import os
import socket
from typing import Any

from firmware import config as device_config
from firmware.boards.rpi import Board as PiBoard
from firmware.config import ConfigError  # one error for a node config that does not pass, the node's own
from firmware.main import BOARDS as DEVICE_BOARDS
from firmware.sim import BOARD as SIM_BOARD
from protocol.message import INTERVAL_MAX, check_node_id
from protocol.names import NODE_ID_RULE

CONFIG_NAME = device_config.CONFIG_NAME
DEFAULT_INTERVAL_S = 300
STORM_INTERVAL_S = device_config.DEFAULTS["storm_interval_s"]
# the boards firmware.main starts (flashed), the Raspberry Pi (installed, run by `citynode node`),
# and the simulator's
BOARDS = (*DEVICE_BOARDS, PiBoard.name, SIM_BOARD)
# the Raspberry Pi reads its BME280 through adafruit-circuitpython-bme280 (Blinka)
PI_SENSORS = {"climate": {"kind": "bme280_adafruit"}}  # its settings: the driver's defaults
LINKS = ("uart", "udp")


def parse_hostport(text: str | None, what: str = "--gateway") -> tuple[str, int]:
    from tools.cli import hostport

    try:
        return hostport(text or "", what)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build(node: str, key: bytes, board: str = "esp32", link: str = "uart", gateway: str | None = None,
          wifi_ssid: str | None = None, wifi_password: str = "",
          interval_s: int = DEFAULT_INTERVAL_S, key_version: int = 0) -> dict[str, Any]:
    # -> config dict; raises ConfigError with one line that names the option
    if not check_node_id(node):
        raise ConfigError(f"node id {node!r}: must be {NODE_ID_RULE}")
    if board not in BOARDS:
        raise ConfigError(f"board must be one of {', '.join(BOARDS)} (got {board!r})")
    if link not in LINKS:
        raise ConfigError(f"link must be uart or udp (got {link!r})")
    if not isinstance(interval_s, int) or not 1 <= interval_s <= INTERVAL_MAX:
        raise ConfigError(f"interval must be 1..{INTERVAL_MAX} seconds (got {interval_s!r})")
    link_conf: dict[str, Any] = {"kind": link}
    if link == "udp":
        if not gateway:
            raise ConfigError("--link udp needs --gateway HOST:PORT")
        host, port = parse_hostport(gateway)
        try:  # a typo'd name is caught here, not by a node that never reaches its gateway
            socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError):
            raise ConfigError(f"--gateway {gateway}: cannot resolve {host!r}; give the gateway's IP address "
                              "or a name this machine resolves") from None
        link_conf.update(host=host, port=port)
        if board in ("esp32", "rp2"):
            if not wifi_ssid:
                raise ConfigError(f"--link udp on {board} needs --wifi-ssid (the node joins Wi-Fi itself)")
            link_conf.update(wifi_ssid=wifi_ssid, wifi_password=wifi_password or "")
    elif gateway:
        raise ConfigError("--gateway is for --link udp; a uart node talks to the gateway's serial port")
    config = {"node": node, "key": key.hex(), "board": board, "link": link_conf, "interval_s": interval_s}
    if board == PiBoard.name:
        config["sensors"] = {k: dict(v) for k, v in PI_SENSORS.items()}
    if key_version:
        config["key_version"] = key_version  # SPEC.md 4.5: the node names it in its frames
    if interval_s < STORM_INTERVAL_S:  # storm mode never reports slower than normal mode
        config["storm_interval_s"] = interval_s
    return check_with_firmware(config)


def check_with_firmware(config: dict[str, Any], source: str = "node config") -> dict[str, Any]:
    # the node's own validation (firmware/config.py), run here so a bad config never reaches a board
    try:
        device_config.validate(dict(config))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return config


def validate(config: object, source: str = "node config") -> dict[str, Any]:
    # A config read back from a file: flash uploads only what passes the node's own validation
    # (its node id, key, command key, ... rules are firmware/config.py's, not repeated here)
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: not a JSON object")
    return check_with_firmware(config, source)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    folder = os.path.dirname(str(path))
    if folder and os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(f"--node-dir {folder} is a file; give the folder citynode provision --out made")
    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no node config here; run citynode provision first") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return validate(config, str(path))
