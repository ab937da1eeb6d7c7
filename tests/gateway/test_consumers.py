# [publish]: the bare SenML pack per frame, per-node availability and Home Assistant MQTT
# discovery, through a real gateway and mosquitto. The discovery value_template is rendered
# with Jinja2 (Home Assistant's template engine) against a real `up` message.
import json

import jinja2
import pytest

from gateway import config
from gateway.daemon import Gateway
from tests.gateway.conftest import NODES, Subscriber, write_config
from tests.support.senml_strict import check_pack
from tests.support.udpnode import UdpNode, level_m


def avail(sub, node="sew-01"):
    # availability payloads are plain "online"/"offline" (Home Assistant's defaults), not JSON
    with sub.lock:
        return [p.decode() for t, p, _ in sub.messages if t == f"cn/nodes/{node}/availability"]


def discovery(sub):
    with sub.lock:
        return {t: json.loads(p) for t, p, _ in sub.messages if t.startswith("homeassistant/sensor/")}


def gateway_device(sub):
    with sub.lock:
        topic = "homeassistant/binary_sensor/citynode_gw-test/config"
        found = [json.loads(p) for t, p, _ in sub.messages if t == topic]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def gw(tmp_path, mosquitto):
    path = write_config(tmp_path / "gw", mosquitto.url, publish="senml = true\navailability = true\n"
                        "availability_after_s = 1.0\nhomeassistant = true\n")
    g = Gateway(config.load(path)).start()
    yield g
    g.stop()


def test_senml_topic_availability_and_discovery(gw, mosquitto, subscriber):
    node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
    assert node.run(5, deadline_s=10)
    assert subscriber.wait(lambda: len(subscriber.on("/senml")) == 5 and len(subscriber.ups()) == 5)
    ups = {u["seq"]: u for u in subscriber.ups()}
    for _, pack in subscriber.on("cn/nodes/sew-01/senml"):
        assert check_pack(pack)[0] == []
    assert sorted(p[0]["bt"] for _, p in subscriber.on("/senml")) == sorted(u["senml"][0]["bt"] for u in ups.values())
    assert avail(subscriber) == ["online"]
    # silent for longer than availability_after_s: offline
    assert subscriber.wait(lambda: avail(subscriber) == ["online", "offline"], 10)
    # a consumer that connects later gets the retained availability and the discovery configs
    late = Subscriber(mosquitto.port, topic="#", client_id="late-ha")
    try:
        assert late.wait(lambda: len(discovery(late)) == 2 and avail(late))
        assert avail(late) == ["offline"]
        configs = discovery(late)
        level = configs["homeassistant/sensor/citynode_gw-test_sew-01_l/config"]
        assert level["unit_of_measurement"] == "m" and level["device_class"] == "distance"
        assert level["state_topic"] == "cn/nodes/sew-01/up" and level["expire_after"] == 1
        assert {a["topic"] for a in level["availability"]} == {"cn/gateways/gw-test/state",
                                                              "cn/nodes/sew-01/availability"}
        battery = configs["homeassistant/sensor/citynode_gw-test_sew-01_b/config"]
        assert battery["unit_of_measurement"] == "V" and battery["device_class"] == "voltage"
        env = jinja2.Environment()
        value = env.from_string(level["value_template"]).render(value_json=ups[3], this={"state": "old"})
        assert float(value) == level_m(3)
        no_level = dict(ups[3], senml=[{"bn": "sew-01:", "bt": 1.0e9, "n": "b", "v": 3.7, "u": "V"}])
        assert env.from_string(level["value_template"]).render(value_json=no_level, this={"state": "old"}) == "old"
        state_t = env.from_string(level["availability"][0]["value_template"])
        assert state_t.render(value_json=json.loads(json.dumps({"state": "online"}))) == "online"
        assert len(configs) == 2  # l and b: once per node and reading, not per frame
        # the device every node's via_device names is announced: the gateway, on its state topic
        gw_cfg = gateway_device(late)
        assert level["device"]["via_device"] == battery["device"]["via_device"] == "citynode_gw-test"
        assert gw_cfg["device"]["identifiers"] == ["citynode_gw-test"]
        assert gw_cfg["state_topic"] == "cn/gateways/gw-test/state" and gw_cfg["device_class"] == "connectivity"
        online = env.from_string(gw_cfg["value_template"]).render(value_json={"state": "online", "counters": {}})
        assert online == gw_cfg["payload_on"]
    finally:
        late.close()
    # heard again: online
    assert node.run(2, start=5, deadline_s=10)
    assert subscriber.wait(lambda: avail(subscriber) == ["online", "offline", "online"])


def test_discovery_ids_never_collide():
    # node ids may hold . : _ (SPEC.md section 2): each maps to its own unique_id and config
    # topic; plain ids keep the readable form existing installations already have
    from gateway.consumers import HomeAssistant, ha_id

    ha = HomeAssistant("cn", "gw-test")
    topics = {}
    for node in ("col.01", "col_01", "col:01", "col-01"):
        msg = {"records": [{0: "l", 2: 0.5}]}
        rows = ha.messages(type("F", (), {"node": node, "msg": msg})())
        for topic, payload in rows:
            cfg = json.loads(payload)
            if "/sensor/" in topic:
                topics[node] = (topic, cfg["unique_id"], cfg["device"]["identifiers"][0])
    assert len({t for t, _, _ in topics.values()}) == 4 and len({u for _, u, _ in topics.values()}) == 4
    assert len({d for _, _, d in topics.values()}) == 4
    assert topics["col-01"][1] == "citynode_gw-test_col-01_l"  # plain: unchanged
    for topic, uid, _ in topics.values():
        assert topic == f"homeassistant/sensor/{uid}/config"
        assert all(c.isalnum() or c in "_-" for c in uid)
    assert ha_id("a", "b_c") != ha_id("a_b", "c") != ha_id("a_b_c")
