# The node config that provisioning writes and flashing uploads: built and validated here,
# on the big machine, so the node only loads a small, checked file (docs/architecture.md).
import json
import os
import socket
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from firmware import config as device_config
from firmware.boards.rpi import Board as PiBoard
from firmware.config import ConfigError  # one error for a node config that does not pass, the node's own
from firmware.lora_radios import RADIOS
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
LINKS = ("uart", "udp", "lora")
WIFI_BOARDS = ("esp32", "rp2")  # the boards whose node joins Wi-Fi itself for a udp link (firmware/boards/wifi.py)
# LoRa (docs/lora.md). A region's rules for a node's radio: EU868's g1 sub-band, 868.0-868.6 MHz,
# 1 % of any hour, 25 mW ERP (14 dBm; ETSI EN 300 220), which the firmware keeps
# (firmware/config.py, firmware/lora_link.py; tests/tools/test_provision_lora.py holds the two
# together). The defaults: 868.1 MHz (EU868's first default channel), SF12 (a node under a
# manhole cover: a typical frame every 5 minutes takes 0.71 % of the hour), full power, 1 %.
REGIONS = {"eu868": {"band_khz": (868000, 868600), "freq_khz": 868100, "power_dbm": (-9, 14),
                     "duty_permille": 10}}
SF_RANGE = (7, 12)  # the spreading factors the node's link uses (SF12 reaches farthest, SF7 takes the least air)
DEFAULT_SF = 12
# the boards whose firmware drives a LoRa module (firmware/boards/mpboard.py), and the modules of
# firmware/lora_radios.py each carries (each module names its board there): a Pico Waveshare's
# HAT, an ESP32 board its own on board
LORA_RADIOS: dict[str, tuple[str, ...]] = {}
for _module, _radio in RADIOS.items():
    LORA_RADIOS[_radio["board"]] = (*LORA_RADIOS.get(_radio["board"], ()), _module)
# the options of a LoRa link (build(lora=...)), each refused without --link lora
LORA_OPTIONS = ("region", "sf", "freq", "power", "duty_cycle", "radio")
TYPICAL_FRAME_BYTES = 43  # the typical level + climate frame on the air (protocol/SPEC.md 13.4)


def parse_hostport(text: str | None, what: str = "--gateway") -> tuple[str, int]:
    from tools.cli import hostport

    try:
        return hostport(text or "", what)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _decimal(value: object, option: str, scale: int) -> int:
    # "868.1" (MHz), "0.5" (%) -> a whole number of the unit scale times smaller, else ConfigError
    try:
        d = Decimal(str(value)) * scale
    except InvalidOperation:
        d = Decimal("nan")
    if not d.is_finite():
        raise ConfigError(f"{option} {value}: not a number")
    if d != d.to_integral_value():
        raise ConfigError(f"{option} {value}: in steps of {1 / scale:g}")
    return int(d)


def lora_link(board: str, region: str | None = None, sf: int | None = None, freq: object = None,
              power: int | None = None, duty_cycle: object = None, radio: str | None = None) -> dict[str, Any]:
    # The LoRa link of a node config from the technician's options (None: the region's default):
    # freq in MHz, power in dBm, duty_cycle in percent. ConfigError with one line naming the option.
    if board not in LORA_RADIOS:
        raise ConfigError(f"--link lora: board {board} drives no LoRa radio (boards with one: "
                          f"{', '.join(sorted(LORA_RADIOS))}; the simulated air: citynode demo --lora)")
    region = region or "eu868"
    rules = REGIONS.get(region)
    if rules is None:
        raise ConfigError(f"--region {region}: unknown; the firmware keeps the rules of {', '.join(REGIONS)}")
    name = region.upper()
    sf = DEFAULT_SF if sf is None else sf
    if isinstance(sf, bool) or not isinstance(sf, int) or not SF_RANGE[0] <= sf <= SF_RANGE[1]:
        raise ConfigError(f"--sf {sf}: must be {SF_RANGE[0]}..{SF_RANGE[1]} (SF12 reaches farthest, "
                          "SF7 takes the least air)")
    lo, hi = rules["band_khz"]
    freq_khz = rules["freq_khz"] if freq is None else _decimal(freq, "--freq", 1000)
    if not lo <= freq_khz <= hi:
        raise ConfigError(f"--freq {freq}: {name} allows a node {lo / 1000}-{hi / 1000} MHz (in MHz, e.g. "
                          f"{rules['freq_khz'] / 1000})")
    lo, hi = rules["power_dbm"]
    power = hi if power is None else power
    if isinstance(power, bool) or not isinstance(power, int) or not lo <= power <= hi:
        raise ConfigError(f"--power {power}: {name} allows {lo}..{hi} dBm")
    top = rules["duty_permille"]
    permille = top if duty_cycle is None else _decimal(duty_cycle, "--duty-cycle", 10)
    if not 1 <= permille <= top:
        raise ConfigError(f"--duty-cycle {duty_cycle}: {name} allows 0.1..{top / 10:g} % of each hour")
    fits = LORA_RADIOS[board]
    radio = radio or (fits[0] if len(fits) == 1 else None)
    if radio is None:
        raise ConfigError(f"--link lora on {board} needs --radio {' or '.join(fits)} (the board's own LoRa module)")
    if radio not in fits:
        raise ConfigError(f"--radio {radio}: not a module of board {board} (it has {', '.join(fits)})")
    return {"kind": "lora", "freq_khz": freq_khz, "sf": sf, "power_dbm": power, "duty_permille": permille,
            "radio": radio}


def lora_airtime_ms(link: Mapping[str, Any], size: int = TYPICAL_FRAME_BYTES) -> int:
    # a packet's time on the air on the link (125 kHz, coding rate 4/5, as firmware/lora_radios.py sets it)
    from tools.rig.lora_air import time_on_air_us

    return (time_on_air_us(size, sf=link["sf"]) + 999) // 1000


def build(node: str, key: bytes, board: str = "esp32", link: str = "uart", gateway: str | None = None,
          wifi_ssid: str | None = None, wifi_password: str | None = None,
          interval_s: int = DEFAULT_INTERVAL_S, key_version: int = 0,
          lora: Mapping[str, Any] | None = None) -> dict[str, Any]:
    # -> config dict; raises ConfigError with one line that names the option. lora: the LoRa
    # options given (LORA_OPTIONS; None or absent: the region's default)
    if not check_node_id(node):
        raise ConfigError(f"node id {node!r}: must be {NODE_ID_RULE}")
    if board not in BOARDS:
        raise ConfigError(f"board must be one of {', '.join(BOARDS)} (got {board!r})")
    if link not in LINKS:
        raise ConfigError(f"link must be one of {', '.join(LINKS)} (got {link!r})")
    lora = {k: v for k, v in (lora or {}).items() if v is not None}
    for k in lora:
        if k not in LORA_OPTIONS:
            raise ConfigError(f"{k}: not a LoRa option ({', '.join(LORA_OPTIONS)})")
        if link != "lora":
            raise ConfigError(f"{_option(k)} is a LoRa setting: give --link lora")
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
        if board in WIFI_BOARDS:
            if not wifi_ssid:
                raise ConfigError(f"--link udp on {board} needs --wifi-ssid (the node joins Wi-Fi itself)")
            link_conf.update(wifi_ssid=wifi_ssid, wifi_password=wifi_password or "")
    # an option the node would not use is refused, not dropped without a word
    why = {"uart": "a uart node talks to the gateway's serial port",
           "lora": "a LoRa node is heard by the gateway's radio"}.get(
        link, f"board {board} sends over the network of the machine it runs on")
    wifi = link == "udp" and board in WIFI_BOARDS
    for option, given, used in (("--gateway", gateway, link == "udp"), ("--wifi-ssid", wifi_ssid, wifi),
                                ("--wifi-password", wifi_password, wifi)):
        if given is not None and not used:
            on = "" if option == "--gateway" else f" on {' or '.join(WIFI_BOARDS)}"
            raise ConfigError(f"{option} is for --link udp{on}; {why}")
    if link == "lora":
        link_conf = lora_link(board, **lora)
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
