# citynode provision --link lora: a LoRa node's config that the node's own loader takes (on
# CPython and on the MicroPython VM), EU868's rules as defaults, one-line refusals, and the key
# in the gateway keys file as the gateway's radio path needs it (docs/lora.md).
import json
import stat

import pytest

from firmware import config as device_config
from firmware.lora_radios import RADIOS
from gateway.keys import load_keys
from gateway.radio import AddressBook
from protocol import compact, message
from tools import cli, nodeconfig


def provision(tmp_path, *extra, node="sew-07", out="node"):
    return cli.main(["provision", f"--node={node}", "--out", str(tmp_path / out),
                     "--keys", str(tmp_path / "keys.toml"), *extra])


def written(tmp_path, out="node"):
    return json.loads((tmp_path / out / "config.json").read_text())


LOAD_AND_PRINT = """
import json
from firmware import config
c = config.load(%r)
print(json.dumps({"node": c["node"], "link": c["link"], "key": c["key_bytes"] == bytes.fromhex(c["key"])}))
"""


@pytest.mark.micropython
@pytest.mark.parametrize("extra, link", [
    # the defaults: EU868 868.1 MHz, SF12 (docs/lora.md), 14 dBm, 1 %, the Pico's Waveshare HAT
    (["--board", "rp2"], {"freq_khz": 868100, "sf": 12, "power_dbm": 14, "duty_permille": 10,
                          "radio": "pico-lora-sx1262", "chip": "sx1262"}),
    (["--board", "esp32", "--radio", "lilygo-t3-v1.6.1", "--sf", "9", "--freq", "868.3", "--power", "10",
      "--duty-cycle", "0.5", "--region", "eu868"],
     {"freq_khz": 868300, "sf": 9, "power_dbm": 10, "duty_permille": 5, "radio": "lilygo-t3-v1.6.1",
      "chip": "sx1276"}),
])
def test_a_lora_node_config_loads_on_cpython_and_on_the_micropython_vm(tmp_path, capsys, extra, link):
    from tests.support import mpvm

    assert provision(tmp_path, "--link", "lora", *extra) == 0
    path = tmp_path / "node" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE((tmp_path / "keys.toml").stat().st_mode) == 0o600
    want = dict(link, kind="lora")
    assert device_config.load(str(path))["link"] == want  # the node's own loader, on CPython
    got = json.loads(mpvm.run(LOAD_AND_PRINT % str(path)).stdout.strip().splitlines()[-1])
    assert got == {"node": "sew-07", "link": want, "key": True}  # and on MicroPython
    out = capsys.readouterr().out
    assert f"SF{link['sf']}" in out and f'"freq_khz": {link["freq_khz"]}, "sf": {link["sf"]}' in out


def test_the_gateway_radio_path_verifies_the_node_from_the_keys_file(tmp_path, capsys):
    # The gateway needs only [nodes.<id>] key: a packet's 4-byte address is the node id's
    # (SPEC.md 13.1), which the gateway derives. A compact frame MACed with the config's key is
    # rebuilt and verified with the keys file, as gateway/radio.py does with a modem's packet.
    assert provision(tmp_path, "--link", "lora", "--board", "rp2") == 0
    cfg = written(tmp_path)
    keys = load_keys(tmp_path / "keys.toml")
    assert set(keys) == {"sew-07"} and keys["sew-07"].hex() == cfg["key"]
    air = compact.to_air(compact.encode_data(bytes.fromhex(cfg["key"]), "sew-07", 1, 0, 5000, [{0: "l", 2: 0.42}]))
    assert air[1:5] == compact.address("sew-07")
    got = message.decode(AddressBook(lambda: keys).frame(air), keys.get)
    assert (got["node"], got["seq"]) == ("sew-07", 0)
    assert f"LoRa address {compact.address('sew-07').hex()}" in capsys.readouterr().out


def test_two_nodes_sharing_an_address_are_told_apart(tmp_path, capsys):
    # 4 bytes of SHA-256: two ids of a city may share them; provision says so, the gateway
    # rebuilds the packet for each and keeps the one whose MAC verifies
    a, b = "sew-60389", "sew-94467"
    assert compact.address(a) == compact.address(b)
    assert provision(tmp_path, "--link", "lora", "--board", "rp2", node=a, out="a") == 0
    assert "share it" not in capsys.readouterr().out
    assert provision(tmp_path, "--link", "lora", "--board", "rp2", node=b, out="b") == 0
    assert f"{a} share it: the gateway tells them apart by their MAC" in capsys.readouterr().out
    keys = load_keys(tmp_path / "keys.toml")
    book = AddressBook(lambda: keys)
    for node, out in ((a, "a"), (b, "b")):
        key = bytes.fromhex(written(tmp_path, out)["key"])
        air = compact.to_air(compact.encode_data(key, node, 1, 3, 5000, [{0: "l", 2: 0.5}]))
        assert message.decode(book.frame(air), keys.get)["node"] == node


@pytest.mark.parametrize("extra, words", [
    (["--sf", "13"], "--sf 13: must be 7..12"),
    (["--sf", "6"], "--sf 6: must be 7..12"),
    (["--region", "us915"], "--region us915: unknown"),
    (["--freq", "869.5"], "--freq 869.5: EU868 allows a node 868.0-868.6 MHz"),
    (["--freq", "868.1004"], "--freq 868.1004: in steps of 0.001"),
    (["--freq", "inf"], "--freq inf: not a number"),
    (["--power", "20"], "--power 20: EU868 allows -9..14 dBm"),
    (["--duty-cycle", "2"], "--duty-cycle 2: EU868 allows 0.1..1 %"),
    (["--duty-cycle", "0.05"], "--duty-cycle 0.05: in steps of 0.1"),
    (["--duty-cycle", "0"], "--duty-cycle 0: EU868 allows 0.1..1 %"),
    (["--gateway", "10.0.0.2:5683"], "--gateway is for --link udp"),
    (["--wifi-ssid", "citynet"], "--wifi-ssid is for --link udp"),
    (["--wifi-password", ""], "--wifi-password is for --link udp"),
    (["--radio", "heltec-lora32-v3"], "--radio heltec-lora32-v3: not a module of board rp2"),
    (["--board", "esp32"], "--link lora on esp32 needs --radio heltec-lora32-v3 or lilygo-t3-v1.6.1"),
    (["--board", "esp32", "--radio", "pico-lora-sx1262"], "--radio pico-lora-sx1262: not a module of board esp32"),
    (["--board", "linux"], "board linux drives no LoRa radio"),
    (["--board", "rpi"], "board rpi drives no LoRa radio"),
    (["--board", "sim"], "board sim drives no LoRa radio"),
    (["--sf", "x"], "argument --sf: invalid int value"),
])
def test_bad_lora_values_are_one_line_exit_2_and_change_nothing(tmp_path, capsys, extra, words):
    assert provision(tmp_path, node="other", out="other") == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    capsys.readouterr()
    assert provision(tmp_path, "--link", "lora", "--board", "rp2", *extra) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # both keys files
    assert not (tmp_path / "node").exists()


@pytest.mark.parametrize("extra", [["--sf", "9"], ["--radio", "pico-lora-sx1262"], ["--region", "eu868"],
                                   ["--link", "udp", "--gateway", "10.0.0.2:5683", "--duty-cycle", "1"]])
def test_lora_options_without_link_lora_are_refused(tmp_path, capsys, extra):
    assert provision(tmp_path, "--board", "linux", *extra) == 2
    err = capsys.readouterr().err
    assert "is a LoRa setting: give --link lora" in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_no_secret_is_printed(tmp_path, capsys):
    assert provision(tmp_path, "--link", "lora", "--board", "rp2") == 0
    printed = "".join(capsys.readouterr())
    cfg = written(tmp_path)
    assert cfg["key"] not in printed and cfg["command_key"] not in printed
    assert cfg["key"][:8] not in printed  # not even a part


def test_an_interval_the_duty_cycle_cannot_carry_is_said_to_be_stretched(tmp_path, capsys):
    # SF12: a typical 43-byte frame takes 2.139 s of air (the driver's formula), so 1 % carries
    # one every 214 s; the node stretches a shorter interval (firmware/lora_link.py fit)
    assert provision(tmp_path, "--link", "lora", "--board", "rp2", "--interval", "60") == 0
    out = capsys.readouterr().out
    assert "a typical frame takes 2139 ms of air: at most one every 214 s (--interval 60 is stretched" in out
    assert provision(tmp_path, "--link", "lora", "--board", "rp2", "--sf", "7", "--force") == 0
    assert "stretched" not in capsys.readouterr().out


def test_the_region_rules_are_the_firmwares():
    # provision refuses what the node's loader refuses, and takes what it takes: the region's
    # edges pass firmware/config.py, one step beyond them does not
    def loads(**link):
        cfg = {"node": "n", "key": "00" * 16, "board": "rp2", "link": dict(link, kind="lora")}
        try:
            return device_config.validate(cfg)["link"]
        except device_config.ConfigError:
            return None

    eu = nodeconfig.REGIONS["eu868"]
    defaults = loads()
    assert (defaults["freq_khz"], defaults["sf"], defaults["power_dbm"], defaults["duty_permille"]) == (
        eu["freq_khz"], nodeconfig.DEFAULT_SF, eu["power_dbm"][1], eu["duty_permille"])
    for name, (lo, hi) in (("freq_khz", eu["band_khz"]), ("sf", nodeconfig.SF_RANGE), ("power_dbm", eu["power_dbm"]),
                           ("duty_permille", (1, eu["duty_permille"]))):
        assert loads(**{name: lo}) and loads(**{name: hi}), name
        assert loads(**{name: lo - 1}) is None and loads(**{name: hi + 1}) is None, name


def test_every_lora_module_belongs_to_a_board_that_drives_it():
    # a module in firmware/lora_radios.py names its board, one whose firmware drives a LoRa module:
    # the MicroPython boards (firmware/boards/mpboard.py); provision offers it there, and the node's
    # loader refuses it on any other board
    assert all(r.get("board") in ("esp32", "rp2") for r in RADIOS.values()), RADIOS
    assert nodeconfig.LORA_RADIOS == {"rp2": ("pico-lora-sx1262",), "esp32": ("heltec-lora32-v3", "lilygo-t3-v1.6.1")}


def test_help_reads_in_groups():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "tools.cli", "provision", "--help"], capture_output=True, text=True,
                         timeout=60).stdout
    heads = [line.split(":")[0] for line in out.splitlines() if line and not line[0].isspace() and line.endswith(":")]
    assert heads == ["options", "node", "link", "udp link (--link udp)", "LoRa link (--link lora; docs/lora.md)",
                     "keys"]
