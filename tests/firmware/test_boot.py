# The device entry (firmware/main.py) and the config it loads: the board is detected when
# the config names none, a sensor kind in the wrong slot is refused with one line, and a
# crash before the node's loop runs ends in a reset, never at the REPL.
import json
import sys

import pytest

from firmware import config
from firmware import main as entry

KEY = "00" * 16


class Stop(BaseException):
    # ends main() in a test (BaseException: main's guard must not swallow it)
    pass


def write_config(tmp_path, raw):
    (tmp_path / config.CONFIG_NAME).write_text(json.dumps(raw))


@pytest.mark.parametrize("platform,board", [("esp32", "esp32"), ("rp2", "rp2"), ("linux", "linux")])
def test_a_config_without_board_runs_the_board_it_is_on(tmp_path, monkeypatch, platform, board):
    # on main the default "sim" won: an ESP32 printed "no entry point" every 60 s forever
    write_config(tmp_path, {"node": "sew-1", "key": KEY})
    picked = []

    def make_board(name, root=""):
        picked.append(name)
        raise Stop()

    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(entry, "make_board", make_board)
    with pytest.raises(Stop):
        entry.main(str(tmp_path))
    assert picked == [board]
    assert config.validate({"node": "n", "key": KEY})["board"] is None


def test_a_named_board_wins_and_an_unknown_one_is_one_line(tmp_path, monkeypatch):
    assert config.validate({"node": "n", "key": KEY, "board": "rp2"})["board"] == "rp2"
    with pytest.raises(config.ConfigError) as e:
        entry.make_board("esp8266")
    assert "\n" not in str(e.value) and "board 'esp8266' has no entry point here" in str(e.value)


@pytest.mark.parametrize("slot,kind,words", [
    ("level", "bme280", "sensors.level.kind must be one of a02yyuw, jsn_sr04t, hcsr04, hydrostatic (got 'bme280')"),
    ("climate", "hcsr04", "sensors.climate.kind must be one of bme280, bme280_adafruit (got 'hcsr04')"),
    ("rain", "bme280", "sensors.rain: no such sensor slot (climate, level)"),
])
def test_a_sensor_in_the_wrong_slot_is_refused_with_one_line(slot, kind, words):
    # on main a BME280 as the level sensor passed validation and the level was silently None
    with pytest.raises(config.ConfigError) as e:
        config.validate({"node": "n", "key": KEY, "sensors": {slot: {"kind": kind}}})
    assert str(e.value) == "config: " + words


def test_flash_gives_a_config_without_board_the_device_entry():
    # on main such a config got the sim board's entry (tools/rig/sim_main.py) on a real board
    from tools.upload import DEFAULT_MAIN, build_bundle

    raw = {"node": "n", "key": KEY}
    config.validate(raw)
    files = dict(build_bundle(raw))
    assert files["main.py"].decode() == DEFAULT_MAIN
    # it gets both MicroPython ports' board modules, and no simulator
    assert "lib/firmware/boards/esp32.mpy" in files and "lib/firmware/boards/rp2.mpy" in files
    assert not [p for p in files if "/sim/" in p]
