# The sensor contract (firmware/sensors.py): each driver module declares its settings with
# their defaults and its capabilities; the config is a list of sensor entries (the map of
# two slots still loads as before); the sampler loops over what is configured.
import copy

import pytest

from firmware import config, sensors

KEY = "00" * 16


def checked(sensors_cfg, **more):
    return config.validate(dict({"node": "n", "key": KEY, "sensors": sensors_cfg}, **more))


def test_every_kind_declares_the_contract():
    for kind in sensors.KINDS:
        d = sensors.driver(kind)
        assert isinstance(d.SETTINGS, dict) and isinstance(d.CAPS, int) and callable(d.Sensor), kind
        for name, (t, default, lo, hi) in d.SETTINGS.items():
            assert t in "ifbrsIFBRS", (kind, name)
            if t == "i" and default is not None:
                assert lo <= default <= hi, (kind, name)
        if d.CAPS & sensors.LEVEL:
            assert d.DEPTH in d.SETTINGS, kind
    assert config.kinds(sensors.LEVEL) == ["a02yyuw", "jsn_sr04t", "hcsr04", "hydrostatic"]
    assert config.kinds(sensors.AIR) == ["bme280", "bme280_adafruit"]
    with pytest.raises(ValueError):
        sensors.driver("laser")


def test_defaults_come_from_the_driver_and_a_list_equals_the_slots():
    slots = checked({"level": {"kind": "hcsr04", "mount_mm": 2000}})
    listed = checked([{"kind": "bme280"}, {"kind": "hcsr04", "mount_mm": 2000}])
    assert sensors.sensor_list(slots) == listed["sensors"]
    bme, echo = listed["sensors"]
    assert bme == {"kind": "bme280", "address": 0x76, "oversample": 1, "iir": 0}
    # the effective defaults of main's config (min 250, max 4500), now the driver's alone
    assert echo == {"kind": "hcsr04", "mount_mm": 2000, "min_mm": 250, "max_mm": 4500, "samples": 5,
                    "max_dev_mm": 60, "delta_mm": 10, "ema_alpha": None, "clamp_mm": None, "timeout_us": 30000}
    # the JSN-SR04T is the A02YYUW's sensor with its own default
    assert checked([{"kind": "jsn_sr04t"}])["sensors"][0]["compensate"] is True
    assert checked([{"kind": "a02yyuw"}])["sensors"][0]["compensate"] is False
    # only a level sensor: no climate, and the order is the config's
    assert [s["kind"] for s in checked([{"kind": "hydrostatic"}])["sensors"]] == ["hydrostatic"]
    assert checked([])["sensors"] == []


def test_validation_copies_and_never_changes_its_input_or_the_defaults():
    raw = {"node": "n", "key": KEY, "sensors": [{"kind": "a02yyuw"}]}
    before = copy.deepcopy(raw)
    defaults = copy.deepcopy(config.DEFAULTS)
    config.validate(raw)
    config.validate({"node": "n", "key": KEY})
    config.validate({"node": "n", "key": KEY, "sensors": {"level": {"kind": "hydrostatic"}}})
    assert raw == before and config.DEFAULTS == defaults
    # the map form without sensors still has the two slots, level with no hydrostatic setting
    cfg = config.validate({"node": "n", "key": KEY})
    assert cfg["sensors"]["level"]["kind"] == "a02yyuw" and "span_mm" not in cfg["sensors"]["level"]


@pytest.mark.parametrize("sensors_cfg,words", [
    ([{"kind": "a02yyuw"}, {"kind": "hydrostatic"}], "sensors[1]: a second level sensor"),
    ([{"kind": "bme280"}, {"kind": "bme280_adafruit"}], "sensors[1]: a second climate sensor"),
    ([{"kind": "laser"}], "sensors[0].kind must be one of bme280, bme280_adafruit, a02yyuw"),
    ([{"mount_mm": 3}], "sensors[0].kind must be one of"),
    (["a02yyuw"], "sensors[0] must be a map with a kind"),
    ([{"kind": "a02yyuw", "compensate": 1}], "sensors[0]: compensate must be true or false"),
    ([{"kind": "hcsr04", "timeout_us": 10}], "sensors[0]: timeout_us must be an integer 1000..100000"),
    ([{"kind": "bme280", "address": 300}], "sensors[0]: address must be an integer 0..127"),
    ([{"kind": "hydrostatic", "clamp_mm": [5, True]}], "clamp_mm must be [low, high]"),
    ("bme280", "sensors must be a list of up to 8 sensors"),
    ([{"kind": "bme280"}] * 9, "sensors must be a list of up to 8 sensors"),
])
def test_a_bad_sensor_entry_is_one_line(sensors_cfg, words):
    with pytest.raises(config.ConfigError) as e:
        checked(sensors_cfg)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_node_with_a_listed_config_sends_what_the_slots_send(rig):
    # the same world, once with the default slots and once with the same sensors as a list:
    # the same records (t, h, p, l, d, b), values and quality
    got = []
    for sensors_cfg in (None, [{"kind": "a02yyuw"}, {"kind": "bme280"}]):
        over = {"interval_s": 60, "heartbeat_s": 60}
        if sensors_cfg is not None:
            over["sensors"] = sensors_cfg
        r = rig(over, rain_start_s=600)
        r.run(0.5)
        got.append([([x[0] for x in d["records"]], [x[2] for x in d["records"]], d["quality"])
                    for d in r.gw.decoded])
    assert got[0] == got[1] and len(got[0]) > 20
    assert got[0][0][0] == ["t", "h", "p", "l", "d", "b"]


def test_a_node_without_a_level_sensor_reports_its_climate(rig):
    r = rig({"interval_s": 60, "heartbeat_s": 60, "sensors": [{"kind": "bme280"}]})
    r.run(0.2)
    names = {x[0] for d in r.gw.decoded for x in d["records"]}
    assert names == {"t", "h", "p", "b"}
    assert r.node.sampler.level is None and r.node.sampler.level_mm is None
