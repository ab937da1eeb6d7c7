# The outputs' seam (gateway/registry.py): which outputs a config makes, in which order, and
# what the pipeline and the relay may rely on (grouping by own table, sweep, reset).
import logging
import pathlib
import re

import pytest

from gateway import config, registry
from gateway.consumers import Availability, HomeAssistant, SenmlPack
from gateway.forecast import Forecasts
from gateway.outputs import Aggregates, Envelope, Frame, SensorThings
from protocol import senml
from tests.gateway.conftest import NODES, write_config

REPO = pathlib.Path(__file__).resolve().parents[2]
ALL = ('senml = true\navailability = true\nhomeassistant = true\n')
MAPPING = '[[sensorthings]]\nnode = "sew-01"\nreading = "l"\ndatastream = 7\n'


def settings(tmp_path, extra_top="", **sections):
    return config.load(write_config(tmp_path, "mqtt://127.0.0.1:1883", extra_top=extra_top, **sections))


def frame(node="sew-01", level=0.42, t=1_777_636_800.0):
    msg = {"node": node, "boot": 1, "seq": 1, "uptime_ms": 1000, "flags": 0, "quality": {}, "cmd_result": None,
           "records": [{senml.N: "l", senml.V: level, senml.U: "m"}]}
    return Frame(node, msg, b"\xd1", t, t, "received", "udp 127.0.0.1:1")


def test_every_output_in_registry_order(tmp_path):
    s = settings(tmp_path, publish=ALL, aggregate="window_s = 60.0")
    s = config.parse({**_toml(s.path), "sensorthings": [{"node": "sew-01", "reading": "l", "datastream": 7}]}, s.path)
    out = registry.build(s, NODES, lambda n: None)
    assert [type(o) for o in out.all] == [Envelope, SensorThings, SenmlPack, Availability, HomeAssistant,
                                          Aggregates, Forecasts]
    assert out.forecasts is out.all[-1]
    assert out.sweepers == [out.all[3]]  # only availability has rows of its own
    assert out.own == []  # SensorThings without [sensorthings_server] goes to the MQTT outbox


def _toml(path):
    import tomllib

    return tomllib.loads(pathlib.Path(path).read_text())


def test_defaults_make_the_envelope_and_the_forecast(tmp_path):
    out = registry.build(settings(tmp_path), NODES, lambda n: None)
    assert [type(o) for o in out.all] == [Envelope, Forecasts]
    rows, own = out.messages(frame())
    topics = [t for t, _ in rows]
    assert topics[0] == "cn/nodes/sew-01/up" and own == []


def test_the_relay_skips_the_envelope_and_a_wrong_name_is_refused(tmp_path):
    s = settings(tmp_path, publish="senml = true\n")
    out = registry.build(s, NODES, lambda n: None, skip=("envelope",))
    assert [type(o) for o in out.all] == [SenmlPack, Forecasts]
    assert [t for t, _ in out.messages(frame())[0]] == ["cn/nodes/sew-01/senml"]
    with pytest.raises(ValueError, match="no such output: envelop"):
        registry.build(s, NODES, lambda n: None, skip=("envelop",))


def test_a_gateway_without_mqtt_makes_only_the_envelope(tmp_path):
    d = _toml(settings(tmp_path, publish=ALL).path)
    del d["mqtt"]
    d["nats"] = {"servers": ["nats://127.0.0.1:4222"]}
    s = config.parse(d, str(tmp_path / "gateway.toml"))
    out = registry.build(s, NODES, lambda n: None)
    assert [type(o) for o in out.all] == [Envelope]
    assert out.all[0].prefix == "citynode"


def test_sweep_and_reset_reach_only_the_outputs_that_have_them():
    calls = []

    class Plain(registry.Output):
        def messages(self, f):
            return [("a", b"1")]

    class Swept(registry.Output):
        def messages(self, f):
            return []

        def sweep(self, now):
            calls.append(("sweep", now))
            return [("b", b"2")]

        def reset(self):
            calls.append("reset")

    class Own(registry.Output):
        table = "elsewhere"

        def messages(self, f):
            return [("c", b"3")]

    out = registry.OutputSet([Plain(), Swept(), Own()])
    assert out.messages(frame()) == ([("a", b"1")], [("c", b"3")])
    assert out.sweep(5.0) == [("b", b"2")]
    out.reset()
    assert calls == [("sweep", 5.0), "reset"]
    assert registry.Output().sweep(1.0) == [] and registry.Output().reset() is None
    with pytest.raises(NotImplementedError):
        registry.Output().messages(frame())


def test_an_output_that_raises_loses_its_rows_of_that_frame_only(tmp_path, caplog):
    # with the daemon's Stats (the gateway's pipeline and the relay) the other outputs' rows come
    # back and the failure is counted (output_failures) and logged, naming the output; without it,
    # or from a required output (the envelope), it is raised, and the caller refuses the frame
    from gateway.stats import Stats
    class Broken(registry.Output):
        def messages(self, f):
            raise OverflowError("too far")

    class Own(registry.Output):
        table = "elsewhere"

        def messages(self, f):
            return [("c", b"3")]

    out = registry.build(settings(tmp_path, publish="senml = true\n", forecast="enabled = false"), NODES,
                         lambda n: None)
    assert [(o.name, o.required) for o in out.all] == [("envelope", True), ("senml", False)]
    broken = Broken()
    broken.name = "broken"
    out = registry.OutputSet([*out.all[:1], broken, Own(), *out.all[1:]])
    stats = Stats()
    with caplog.at_level(logging.WARNING):
        rows, own = out.messages(frame(), stats)
    assert [t for t, _ in rows] == ["cn/nodes/sew-01/up", "cn/nodes/sew-01/senml"] and own == [("c", b"3")]
    assert stats.counters["output_failures"] == 1
    said = [r.getMessage() for r in caplog.records if "output broken" in r.getMessage()]
    assert len(said) == 1 and "sew-01" in said[0] and "OverflowError: too far" in said[0], said
    with pytest.raises(OverflowError):
        out.messages(frame())
    out.all[0].messages = broken.messages  # the envelope itself
    with pytest.raises(OverflowError):
        out.messages(frame(), stats)
    assert stats.counters["output_failures"] == 1


def test_availability_goes_online_once_and_again_after_a_reset(tmp_path):
    out = registry.build(settings(tmp_path, publish="availability = true\n"), NODES, lambda n: None)
    avail = [t for t, _ in out.messages(frame())[0] if t.endswith("/availability")]
    assert avail == ["cn/nodes/sew-01/availability"]
    assert not [t for t, _ in out.messages(frame())[0] if t.endswith("/availability")]
    out.reset()  # a failed commit lost the "online": said again
    assert [t for t, _ in out.messages(frame())[0] if t.endswith("/availability")] == avail


def test_an_offline_lost_with_a_failed_commit_is_said_again(tmp_path):
    # the sweep's "offline" went into a commit that failed (a full disk): after reset() the next
    # sweep says it again, else the broker would keep the silent node's retained "online"
    out = registry.build(settings(tmp_path, publish="availability = true\navailability_after_s = 60\n"),
                         NODES, lambda n: None)
    t = 1_777_636_800.0
    out.messages(frame(t=t))
    out.messages(frame(node="sew-02", t=t + 100))
    assert out.sweep(t + 120) == [("cn/nodes/sew-01/availability", b"offline")]
    out.reset()  # that row was lost
    assert out.sweep(t + 120.5) == []  # a sweep looks at most once a second
    assert out.sweep(t + 122) == [("cn/nodes/sew-01/availability", b"offline")]
    assert out.sweep(t + 124) == []  # said once more, not for ever
    # sew-02 is heard again: "online" again (reset forgot it was said), and offline after its silence
    assert [r for r in out.messages(frame(node="sew-02", t=t + 125))[0] if r[0].endswith("/availability")] == [
        ("cn/nodes/sew-02/availability", b"online")]
    assert out.sweep(t + 190) == [("cn/nodes/sew-02/availability", b"offline")]


def test_docs_list_every_output():
    # docs/gateway.md "Outputs" names each registry entry, so a new one is documented
    text = (REPO / "docs" / "gateway.md").read_text()
    section = text.split("\n## Outputs\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z]+)` \|", section, re.M)
    assert listed == [e.name for e in registry.OUTPUTS]
