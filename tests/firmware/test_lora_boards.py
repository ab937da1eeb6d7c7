# LoRa modules on ESP32 boards and the Pico (firmware/lora_radios.py): the config names the
# module, the chip follows, `citynode flash` installs micropython-lib's driver for that chip
# (lora-sx126x or lora-sx127x), and on the MicroPython unix port (there is no ESP32 emulator
# here) the real driver opens the modem on the vendor's pins against a simulated chip
# (tests/support/mp_radio/machine.py).
import json
import pathlib

import pytest

from firmware import config
from firmware.lora_radios import RADIOS
from tests.support import mpvm

KEY = "11" * 16
SUPPORT = pathlib.Path(__file__).resolve().parents[1] / "support" / "mp_radio"


def lora_cfg(board, **link):
    return config.validate({"node": "sew-lora", "key": KEY, "board": board, "link": dict(link, kind="lora")})


def test_the_module_names_the_chip_and_an_esp32_must_name_its_module():
    assert lora_cfg("esp32", radio="heltec-lora32-v3")["link"]["chip"] == "sx1262"
    assert lora_cfg("esp32", radio="lilygo-t3-v1.6.1")["link"]["chip"] == "sx1276"
    assert lora_cfg("rp2")["link"]["radio"] == "pico-lora-sx1262" and lora_cfg(None)["link"]["chip"] == "sx1262"
    for bad, says in (({}, "link.radio must name"), ({"radio": "rfm95"}, "link.radio must name"),
                      ({"radio": "lilygo-t3-v1.6.1", "chip": "sx1262"}, "not the lilygo-t3-v1.6.1's chip")):
        with pytest.raises(config.ConfigError) as e:
            lora_cfg("esp32", **bad)
        assert says in str(e.value) and "\n" not in str(e.value)


def drivers():
    from tools.lora_packages import vendor_dir

    if not (vendor_dir() / "lora-sx127x").is_dir():
        pytest.skip("micropython-lib's lora drivers not found (CITYNODE_LORA_LIB)")


@pytest.mark.parametrize(("radio", "has", "lacks"), [
    ("heltec-lora32-v3", "lib/lora/sx126x.mpy", "lib/lora/sx127x.mpy"),
    ("lilygo-t3-v1.6.1", "lib/lora/sx127x.mpy", "lib/lora/sx126x.mpy")])
def test_flash_installs_the_driver_of_the_modules_chip(radio, has, lacks):
    from tools import nodeconfig
    from tools.upload import build_bundle

    drivers()
    cfg = nodeconfig.validate({"node": "sew-lora", "key": KEY, "board": "esp32",
                               "link": {"kind": "lora", "radio": radio}})
    paths = {p for p, _ in build_bundle(cfg)}
    assert has in paths and lacks not in paths
    assert {"lib/lora/__init__.mpy", "lib/lora/modem.mpy", "lib/lora/sync_modem.mpy",
            "lib/firmware/lora_radios.mpy"} <= paths


def opened(tmp_path, chip, *radios):
    # micropython-lib's drivers for `chip` as flash installs them, then each module opened on the VM
    from tools.lora_packages import driver_files

    drivers()
    for path, data in driver_files(chip):
        f = tmp_path / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    out = mpvm.run(pathlib.Path(__file__).with_name("mp_radios.py"), *radios, path=[SUPPORT, tmp_path / "lib"])
    return {d["name"]: d for d in map(json.loads, out.stdout.splitlines())}


def pins_of(got):
    return {int(k): v for k, v in got["pins"].items()}


def test_sx1262_modules_open_on_their_vendors_pins(tmp_path):
    got = opened(tmp_path, "sx1262", "heltec-lora32-v3", "pico-lora-sx1262")
    heltec, pico = got["heltec-lora32-v3"], got["pico-lora-sx1262"]
    assert "error" not in heltec and "error" not in pico, got
    assert heltec["class"] == pico["class"] == "SX1262"
    # Heltec WiFi LoRa 32 V3: SPI on GPIO9/10/11, NSS 8 out, BUSY 13 in, DIO1 14 in with its IRQ, RESET 12 out
    assert heltec["spi"] == [[1, 2000000, 9, 10, 11]]
    p = pins_of(heltec)
    assert p[8][0] == "out" and p[13] == ["in"] and p[14] == ["in", "irq"] and p[12] == ["out"]
    # its TCXO on DIO3 at 1.8 V: SetDIO3AsTCXOCtrl (0x97) with trim 0x02 (DS table 13-35), DIO2 as the RF switch (0x9d)
    ops = [c[:2] for c in heltec["commands"]]
    assert any(c.startswith("9702") for c in heltec["commands"]) and "9d" in ops
    # the Pico HAT: SPI1 on GP10/11/12, NSS GP3, BUSY GP2, DIO1 GP20, RESET GP15; no TCXO command
    assert pico["spi"] == [[1, 2000000, 10, 11, 12]]
    p = pins_of(pico)
    assert p[3][0] == "out" and p[2] == ["in"] and p[20] == ["in", "irq"] and p[15] == ["out"]
    assert not any(c.startswith("97") for c in pico["commands"])
    # 868.1 MHz: SetRfFrequency (0x86) with 868100000 * 2^25 / 32 MHz (DS 13.4.1)
    assert "86%08x" % (868100000 * 2**25 // 32000000) in heltec["commands"]
    assert heltec["toa_us"] == pico["toa_us"] > 0


def test_sx1276_module_opens_on_its_vendors_pins_with_pa_boost(tmp_path):
    t3 = opened(tmp_path, "sx1276", "lilygo-t3-v1.6.1")["lilygo-t3-v1.6.1"]
    assert "error" not in t3, t3
    assert t3["class"] == "SX1276"
    # LILYGO T3 V1.6.1: SPI on GPIO5/27/19, NSS 18 out, DIO0 26 and DIO1 33 in with IRQs, RESET 23 out
    assert t3["spi"] == [[1, 2000000, 5, 27, 19]]
    p = pins_of(t3)
    assert p[18][0] == "out" and p[26] == ["in", "irq"] and p[33] == ["in", "irq"] and p[23] == ["out"]
    regs = bytes.fromhex(t3["regs"])
    assert regs[0x09] & 0x80  # RegPaConfig PaSelect: the PA_BOOST pin, where the T3's antenna is
    assert regs[0x01] & 0x80  # RegOpMode LongRangeMode: LoRa
    frf = int.from_bytes(regs[0x06:0x09], "big")  # RegFrf: f = Frf * 32 MHz / 2^19 (datasheet 4.1.4)
    assert abs(frf * 32e6 / 2**19 - 868.1e6) < 62
    assert t3["toa_us"] > 0


def test_a_module_that_is_not_installed_fails_at_open(tmp_path):
    # a board flashed for one chip cannot open the other's module: the driver is simply not there
    got = opened(tmp_path, "sx1262", "lilygo-t3-v1.6.1")["lilygo-t3-v1.6.1"]
    assert "ImportError" in got.get("error", ""), got


def test_every_module_names_a_chip_flash_has_a_driver_for():
    from tools.lora_packages import PACKAGES

    assert all(r["chip"] in PACKAGES for r in RADIOS.values())


@pytest.mark.parametrize(("board", "link", "says"), [
    ("rp2", {"radio": "heltec-lora32-v3"}, "link.radio must name the board's LoRa module: pico-lora-sx1262 (got"),
    ("esp32", {"radio": "pico-lora-sx1262"}, "heltec-lora32-v3, lilygo-t3-v1.6.1 (got 'pico-lora-sx1262')"),
    ("linux", {}, "board linux has no LoRa radio; link.kind must be uart or udp (LoRa boards: esp32, rp2)"),
    ("rpi", {}, "board rpi has no LoRa radio"),
    ("sim", {}, "board sim has no LoRa radio"),
])
def test_a_lora_link_needs_a_module_of_the_board_it_runs_on(board, link, says):
    # a hand-written config: on main a Pico took the Heltec's pins, and the linux and rpi boards ran a
    # UART link at /dev/ttyUSB0 instead, without a word
    with pytest.raises(config.ConfigError) as e:
        lora_cfg(board, **link)
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)
    # a config that names no board is checked for the board it runs on (firmware/main.py, citynode node)
    raw = {"node": "sew-lora", "key": KEY, "link": dict(link, kind="lora")}
    with pytest.raises(config.ConfigError) as e:
        config.validate(raw, board)
    assert says in str(e.value)


def test_the_board_a_config_names_is_the_one_it_is_checked_for():
    raw = {"node": "sew-lora", "key": KEY, "link": {"kind": "lora"}}
    assert config.validate(dict(raw, board="rp2"), "linux")["board"] == "rp2"
    assert config.validate(raw, "rp2")["link"]["radio"] == "pico-lora-sx1262"
    # checked away from any board (the gateway's radio modem, firmware/modem.py): the Pico's HAT
    assert config.validate(raw)["board"] is None and config.validate(raw)["link"]["radio"] == "pico-lora-sx1262"


# firmware/main.py on the unix port (board linux): its config error path, the one line and the retry,
# its 60 s wait cut short (time.sleep is the only call of the fake that is not the port's own)
MAIN_ON_THE_UNIX_PORT = """
import sys
import time as real_time
class Time:
    def __getattr__(self, name):
        return getattr(real_time, name)
    def sleep(self, s):
        print('SLEPT', s)
        raise SystemExit(0)
sys.modules['time'] = Time()
from firmware import main
main.main(%r)
"""


@pytest.mark.micropython
@pytest.mark.parametrize("named", [{"board": "linux"}, {}])
def test_the_unix_port_node_refuses_a_lora_link_in_one_line(tmp_path, named):
    (tmp_path / "config.json").write_text(json.dumps(dict(named, node="sew-1", key=KEY, link={"kind": "lora"})))
    out = mpvm.run(MAIN_ON_THE_UNIX_PORT % str(tmp_path)).stdout.splitlines()
    assert out == ["citynode: config: board linux has no LoRa radio; link.kind must be uart or udp (LoRa boards: "
                   "esp32, rp2); retrying in 60 s", "SLEPT 60"], out
