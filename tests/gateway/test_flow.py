# Normal flow through a real mosquitto: UDP frames -> verified -> outbox -> ACK -> MQTT,
# with the contract payloads of docs/gateway.md ("MQTT topics").
import base64
import datetime
import json
import time

import pytest

from gateway import config
from gateway.daemon import Gateway
from protocol import command, message
from tests.gateway.conftest import COMMAND_KEYS, NODES, Subscriber, signed_down, write_config
from tests.support.udpnode import UdpNode, level_m, run_nodes

pytestmark = pytest.mark.integration


def test_normal_flow_contract_payloads(gateway_factory, subscriber):
    gw = gateway_factory()
    addr = gw.udp_addresses[0]
    nodes = [UdpNode(n, k, addr) for n, k in NODES.items()]
    assert all(run_nodes(nodes, 50, deadline_s=30))
    assert subscriber.wait(lambda: len(subscriber.keys_up()) == 150)
    ups = subscriber.ups()
    assert len(ups) == 150  # no duplicates in a calm run
    for node in NODES:
        seqs = [u["seq"] for u in ups if u["node"] == node]
        assert seqs == list(range(50))  # per-node order
    up = next(u for u in ups if u["node"] == "sew-01" and u["seq"] == 7)
    assert set(up) >= {"node", "boot", "seq", "time", "received", "gateway", "senml", "frame", "time_source"}
    assert up["gateway"] == "gw-test" and up["boot"] == 1 and up["time_source"] == "received"
    assert datetime.datetime.fromisoformat(up["time"].replace("Z", "+00:00")).tzinfo is not None
    assert up["senml"][0]["bn"] == "sew-01:" and up["senml"][0]["n"] == "l"
    assert up["senml"][0]["v"] == level_m(7) and up["senml"][0]["u"] == "m"
    # the frame is the node's own bytes: a consumer verifies the MAC without trusting the gateway
    raw = base64.b64decode(up["frame"])
    m = message.decode(raw, lambda n: NODES.get(n))
    assert (m["node"], m["boot"], m["seq"]) == ("sew-01", 1, 7)
    assert subscriber.wait(lambda: gw.counters()["forwarded"] >= 150, 5)  # the PUBACK may trail the delivery
    c = gw.counters()
    assert c["accepted"] == 150 and c["rejected"] == {}
    # retained node state and gateway state
    assert subscriber.wait(lambda: any(j["accepted"] == 50 for t, j in subscriber.on("/state")
                                       if t == "cn/nodes/sew-01/state"))
    st = [j for t, j in subscriber.on("/state") if t == "cn/nodes/sew-01/state"][-1]
    assert st["firmware"] == "test-0.1" and st["reset_cause"] == "power" and st["battery_v"] == 3.7
    assert st["link"].startswith("udp 127.0.0.1:") and st["gaps"] == 0 and st["interval_s"] == 60
    assert st["thresholds"] == {"alarm_m": 2.2, "storm_m": 1.2}
    gws = [j for t, j in subscriber.on("/state") if t == "cn/gateways/gw-test/state"]
    assert gws and gws[-1]["state"] == "online" and "counters" in gws[-1]
    assert subscriber.wait(lambda: gw.counters()["outbox_depth"] == 0, 5)
    gw.stop()
    assert subscriber.wait(lambda: [j for t, j in subscriber.on("/state")
                                    if t == "cn/gateways/gw-test/state"][-1]["state"] == "offline", 5)


def test_duplicates_acked_not_forwarded_and_state_survives_restart(tmp_path, mosquitto, subscriber):
    path = write_config(tmp_path / "gw", mosquitto.url)
    gw = Gateway(config.load(path)).start()
    node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
    assert node.run(20, deadline_s=20)
    assert subscriber.wait(lambda: len(subscriber.ups()) == 20)
    gw.stop()
    # a new gateway process on the same data_dir: the dedup window is on disk
    gw = Gateway(config.load(path)).start()
    node.gateway = gw.udp_addresses[0]
    node.acked.clear()
    node.cum = -1
    assert node.run(25, deadline_s=20)  # seqs 0..19 again (retransmissions) plus 5 new
    assert subscriber.wait(lambda: len(subscriber.ups()) >= 25)
    c = gw.counters()
    assert c["duplicates"] >= 20 and c["accepted"] == 5
    assert sorted(u["seq"] for u in subscriber.ups()) == list(range(25))
    gw.stop()


def test_sensorthings_observations(tmp_path, mosquitto):
    path = write_config(tmp_path / "gw", mosquitto.url)
    with open(path, "a") as f:
        f.write('\n[[sensorthings]]\nnode = "sew-02"\nreading = "l"\ndatastream = 42\n'
                '\n[aggregate]\nwindow_s = 0.2\n')
    sub_all = Subscriber(mosquitto.port, topic="#", client_id="st-sub")
    gw = Gateway(config.load(path)).start()
    try:
        node = UdpNode("sew-02", NODES["sew-02"], gw.udp_addresses[0])
        for i in range(3):  # three aggregate windows
            assert node.run(4, start=i * 4, deadline_s=10)
            time.sleep(0.25)
        assert sub_all.wait(lambda: len(sub_all.on("/Observations")) == 12)
        obs = [j for _, j in sub_all.on("v1.1/Datastreams(42)/Observations")]
        assert len(obs) == 12
        o = obs[3]
        assert o["result"] == level_m(o["parameters"]["seq"]) and o["parameters"]["node"] == "sew-02"
        assert set(o) == {"@iot.id", "phenomenonTime", "resultTime", "result", "parameters"}
        assert "frame" in o["parameters"]
        assert len({ob["@iot.id"] for ob in obs}) == 12  # one id per (datastream, frame): resends reuse it
        assert sub_all.wait(lambda: len(sub_all.on("/agg")) >= 2)
        agg = sub_all.on("cn/nodes/sew-02/agg")[0][1]
        r = agg["readings"]["l"]
        assert r["min"] <= r["mean"] <= r["max"] and r["count"] >= 1 and r["u"] == "m"
    finally:
        gw.stop()
        sub_all.close()


def test_gateway_state_is_json(gateway_factory, subscriber):
    gateway_factory()
    assert subscriber.wait(lambda: subscriber.on("/gateways/gw-test/state"))
    _, st = subscriber.on("/gateways/gw-test/state")[0]
    assert st["state"] == "online" and st["alarms"] == [] and json.dumps(st)


def test_time_sources_node_received_uptime(gateway_factory, subscriber):
    from protocol import senml

    gw = gateway_factory()
    node = UdpNode("air-03", NODES["air-03"], gw.udp_addresses[0])
    key = NODES["air-03"]
    rec = [senml.record("t", 21.5)]
    live = message.encode_data(key, "air-03", 4, 10, 600_000, rec)  # uptime 600 s, no clock
    backlog = message.encode_data(key, "air-03", 4, 5, 540_000, rec, flags=message.F_BACKLOG)  # 60 s older
    clock = message.encode_data(key, "air-03", 4, 11, 601_000, rec, time_s=1_790_000_000)
    for f in (live, backlog, clock):
        node.send_raw(f)
        time.sleep(0.1)
    assert subscriber.wait(lambda: len(subscriber.ups()) == 3)
    by_seq = {u["seq"]: u for u in subscriber.ups()}
    assert by_seq[10]["time_source"] == "received" and by_seq[10]["time"] == by_seq[10]["received"]
    assert by_seq[11]["time_source"] == "node" and by_seq[11]["time"] == "2026-09-21T14:13:20.000Z"
    b = by_seq[5]
    assert b["time_source"] == "uptime" and b["flags"] == message.F_BACKLOG
    t_live = datetime.datetime.fromisoformat(by_seq[10]["received"].replace("Z", "+00:00"))
    t_back = datetime.datetime.fromisoformat(b["time"].replace("Z", "+00:00"))
    assert abs((t_live - t_back).total_seconds() - 60.0) < 0.01
    assert b["senml"][0]["bt"] == pytest.approx(t_back.timestamp(), abs=0.002)


def test_status_page_serves_the_live_gateway(gateway_factory, subscriber):
    import urllib.request

    gw = gateway_factory(web='listen = "127.0.0.1:0"')
    node = UdpNode("sew-02", NODES["sew-02"], gw.udp_addresses[0])
    assert node.run(5, deadline_s=10)
    assert subscriber.wait(lambda: gw.forwarder.connected and len(subscriber.ups()) == 5, 5)
    with urllib.request.urlopen(gw.web.url + "api/status", timeout=5) as r:
        st = json.loads(r.read())
    assert st["gateway"]["id"] == "gw-test" and st["gateway"]["broker_connected"] is True
    n = st["nodes"][0]
    assert n["id"] == "sew-02" and n["accepted"] == 5 and n["link"].startswith("udp ")
    with urllib.request.urlopen(gw.web.url + "metrics", timeout=5) as r:
        assert 'citynode_frames_accepted_total{node="sew-02"} 5.0' in r.read().decode()


def test_downlink_survives_a_restart_and_completes(tmp_path, mosquitto, subscriber):
    import paho.mqtt.publish as publish

    from protocol import senml

    path = write_config(tmp_path / "gw", mosquitto.url)
    gw = Gateway(config.load(path)).start()
    node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
    assert node.run(2, deadline_s=5)
    assert subscriber.wait(lambda: gw.forwarder.connected, 5)  # subscribed to the down topic
    publish.single("cn/nodes/sew-01/down", signed_down("sew-01", 1, 17, "thresholds", {"alarm_m": 0.9}), qos=1,
                   hostname="127.0.0.1", port=mosquitto.port)
    assert subscriber.wait(lambda: gw.counters()["downlink_queued"] == 1, 5)
    time.sleep(0.3)  # the next housekeeping commit stores it
    gw.stop()
    gw = Gateway(config.load(path)).start()  # the queue is on disk
    try:
        assert gw.counters()["downlink_queued"] == 1
        node.gateway = gw.udp_addresses[0]
        assert node.run(1, start=2, deadline_s=5)
        assert subscriber.wait(lambda: node._receive(0.05) or node.commands, 5)
        cmd = node.commands[0]
        assert cmd["cmd_id"] == 17 and command.peek(cmd["signed"])[1]["op"] == "thresholds"
        assert command.decide(cmd["signed"], "sew-01", COMMAND_KEYS["sew-01"], 1, 0)[0] == command.APPLIED
        # the node reports the command applied: done, no more resends
        report = message.encode_data(NODES["sew-01"], "sew-01", 1, 3, 9000, [senml.record("l", 0.5)],
                                     cmd_result=[17, 0])
        node.send_raw(report)
        assert subscriber.wait(lambda: gw.counters()["commands_done"] == 1, 5)
        assert gw.counters()["downlink_queued"] == 0
        assert subscriber.wait(lambda: any(j.get("command") == {"cmd_id": 17, "status": 0, "result": "applied"}
                                           for t, j in subscriber.on("/state") if t == "cn/nodes/sew-01/state"))
    finally:
        gw.stop()


def test_odd_values_and_clocks_do_not_hold_up_a_batch(gateway_factory, subscriber):
    # NaN (refused by the protocol: SenML has no NaN), bytes in a SenML extension (base64 in
    # JSON), a clock at 1970 or in year 5000 (gateway time instead): none blocks the others.
    from protocol import senml

    gw = gateway_factory()
    key = NODES["sew-01"]
    node = UdpNode("sew-01", key, gw.udp_addresses[0])
    nan = dict(senml.record("t", float("nan")))
    ext = dict(senml.record("l", 0.5), raw_x=b"\x01\x02")
    frames = [
        message.encode_data(key, "sew-01", 1, 0, 1000, [nan]),
        message.encode_data(key, "sew-01", 1, 1, 2000, [ext]),
        message.encode_data(key, "sew-01", 1, 2, 3000, [senml.record("l", 0.4)], time_s=5),
        message.encode_data(key, "sew-01", 1, 3, 4000, [senml.record("l", 0.4)], time_s=10**11),
    ]
    for f in frames:
        node.send_raw(f)
    # the node's ordinary seq 0 (the NaN one was refused), then 4 and 5: its own seqs 1..3 with
    # other bytes than the odd frames stored under them would be a regressed boot (SPEC 10)
    assert node.run(1, start=0, deadline_s=10)
    assert node.run(2, start=4, deadline_s=10)
    assert subscriber.wait(lambda: len(subscriber.ups()) == 6)
    by_seq = {u["seq"]: u for u in subscriber.ups()}
    assert by_seq[0]["senml"][0]["n"] == "l"  # the node's ordinary seq 0, after the NaN one was refused
    assert by_seq[1]["ext"] == {"0": {"raw_x": "AQI="}} and "raw_x" not in by_seq[1]["senml"][0]  # strict SenML
    assert by_seq[2]["time_source"] == "received" and by_seq[3]["time_source"] == "received"
    assert gw.counters()["rejected"] == {"payload": 1}
