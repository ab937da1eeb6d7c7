# The ChirpStack v4 ingest (gateway/chirpstack.py) against a real mosquitto: uplink events in
# ChirpStack's documented JSON form (integration.UplinkEvent: deviceInfo, data as base64
# FRMPayload, rxInfo with rssi and snr) carrying compact citynode frames; our MAC is verified
# on top of LoRaWAN's; a repeated event is forwarded once; ACKs go back as downlinks.
import base64
import contextlib
import json
import time

import paho.mqtt.client as mqtt

from gateway import config
from gateway.daemon import Gateway
from protocol import compact, senml
from tests.gateway.conftest import NODES, write_config

APP = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
DEV_EUI = "0004a30b001c0530"


def uplink_event(air, dev_eui=DEV_EUI, rssi=-117, snr=-9.25):
    # the JSON ChirpStack v4 publishes on application/<id>/device/<devEUI>/event/up
    return json.dumps({
        "deduplicationId": "3c1a8d2e-5f4b-4c1e-9a7d-2b6c8e0f1a3d", "time": "2026-12-06T12:00:00.000+00:00",
        "deviceInfo": {"tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "city",
                       "applicationId": APP, "applicationName": "sewer", "deviceProfileId": "a1b2",
                       "deviceProfileName": "citynode", "deviceName": "sew-01", "devEui": dev_eui, "tags": {}},
        "devAddr": "01fa2b3c", "adr": True, "dr": 0, "fCnt": 17, "fPort": 10, "confirmed": False,
        "data": base64.b64encode(air).decode(),
        "rxInfo": [{"gatewayId": "b827ebfffe123456", "uplinkId": 4711, "rssi": rssi - 6, "snr": snr - 3,
                    "channel": 1, "crcStatus": "CRC_OK"},
                   {"gatewayId": "b827ebfffe654321", "uplinkId": 4712, "rssi": rssi, "snr": snr,
                    "channel": 1, "crcStatus": "CRC_OK"}],
        "txInfo": {"frequency": 868100000,
                   "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 12, "codeRate": "CR_4_5"}}},
    })


@contextlib.contextmanager
def chirpstack_gateway(tmp_path, mosquitto, subscriber):
    # the gateway with a ChirpStack ingest on the test's broker, and ChirpStack's side: a client
    # that publishes uplink events and collects the downlinks (topic, JSON) the gateway sends
    path = write_config(tmp_path / "gw", mosquitto.url)
    with open(path, "a") as f:
        f.write(f'\n[[ingest]]\nkind = "chirpstack"\nurl = "{mosquitto.url}"\napplication = "+"\ndownlink = true\n')
    gw = Gateway(config.load(path)).start()
    downs = []
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="chirpstack-sim")
    pub.on_message = lambda c, u, m: downs.append((m.topic, json.loads(m.payload)))
    pub.connect("127.0.0.1", mosquitto.port)
    pub.subscribe(f"application/{APP}/device/+/command/down", qos=1)
    pub.loop_start()
    try:
        link = next(x for x in gw.links if x.kind == "chirpstack")
        assert subscriber.wait(lambda: link.client.is_connected(), 10)
        time.sleep(0.5)  # its subscription is in place
        yield gw, pub, downs
    finally:
        pub.loop_stop()
        pub.disconnect()
        gw.stop()


def test_chirpstack_uplinks_reach_mqtt_once_verified_end_to_end(tmp_path, mosquitto, subscriber):
    with chirpstack_gateway(tmp_path, mosquitto, subscriber) as (gw, pub, downs):
        # an operator's compact signed command waits for the node (SPEC.md 13.6)
        from tests.gateway.conftest import COMMAND_KEYS
        from tools.command import down_payload

        body = down_payload(COMMAND_KEYS["sew-01"], "sew-01", 3, 77, "reboot", compact=True)
        for _ in range(20):  # until the gateway has subscribed to its down topics
            pub.publish("cn/nodes/sew-01/down", body, qos=1)
            if subscriber.wait(lambda: gw.downlink.depth() == 1, 0.5):
                break
        key = NODES["sew-01"]
        recs = [senml.record("t", 8.25), senml.record("h", 97.5), senml.record("p", 100900),
                senml.record("l", 0.412), senml.record("d", 2.588), senml.record("b", 3.6)]
        frame = compact.encode_data(key, "sew-01", 3, 1234, 3600123, recs)
        air = compact.to_air(frame)
        assert len(air) <= 51  # it fits LoRaWAN EU868 DR0 (SF12)
        topic = f"application/{APP}/device/{DEV_EUI}/event/up"
        for _ in range(2):  # the same uplink twice (a retransmission, or a second ChirpStack region)
            pub.publish(topic, uplink_event(air), qos=1)
        bad = bytearray(air)
        bad[-1] ^= 1  # our MAC broken after LoRaWAN's MIC was fine
        pub.publish(topic, uplink_event(bytes(bad)), qos=1)
        pub.publish(topic, uplink_event(b"\x01" + bytes(4) + air[5:]), qos=1)  # an address no node has
        pub.publish(topic, b'{"data": "not base64!"}', qos=1)
        assert subscriber.wait(lambda: gw.counters()["rejected"].get("payload", 0) >= 1, 20)
        assert subscriber.wait(lambda: len(subscriber.ups()) >= 1, 20)
        time.sleep(0.5)
        ups = subscriber.ups()
        assert [(u["node"], u["boot"], u["seq"]) for u in ups] == [("sew-01", 3, 1234)]
        pack = {r["n"]: r["v"] for r in ups[0]["senml"]}
        assert pack == {"t": 8.25, "h": 97.5, "p": 100900, "l": 0.412, "d": 2.588, "b": 3.6}
        # the reception (the best of the gateways that heard it) is the node's link on the status page
        assert gw.stats.node("sew-01").link == f"chirpstack {DEV_EUI} rssi -117 snr -9.25"
        st = gw.stats.node("sew-01").as_dict()
        assert (st["rssi_dbm"], st["snr_db"]) == (-117, -9.25)
        assert ups[0]["radio"] == {"rssi_dbm": -117, "snr_db": -9.25}
        rejected = gw.counters()["rejected"]
        assert rejected.get("mac") == 1 and rejected.get("unknown") == 1 and rejected.get("payload") == 1, rejected
        # the ACKs went back as ChirpStack downlinks for that device, compact, MACed with the node's key
        assert subscriber.wait(lambda: len(downs) >= 1, 10)
        t, body = downs[0]
        assert t == f"application/{APP}/device/{DEV_EUI}/command/down" and body["devEui"] == DEV_EUI
        ack = compact.from_air(base64.b64decode(body["data"]), "sew-01")
        from protocol import message

        d = message.decode(ack, NODES.get)
        assert (d["type"], d["boot"], d["seq"]) == ("ack", 3, 1234)
        assert len(base64.b64decode(body["data"])) <= 22
        # after the ACK of the fresh frame, the operator's compact command itself, as a downlink of its own
        # (once: the duplicate uplink gets its ACK and nothing else)
        token = bytes.fromhex(json.loads(down_payload(COMMAND_KEYS["sew-01"], "sew-01", 3, 77, "reboot",
                                                      compact=True))["cose"])

        def commands():
            return [b for tp, b in downs if tp == t and base64.b64decode(b["data"]) == compact.to_air(token)]

        assert subscriber.wait(lambda: commands(), 10), downs
        time.sleep(0.3)
        assert len(commands()) == 1


def test_an_uplink_event_with_odd_fields_is_refused_or_read_without_them(tmp_path, mosquitto, subscriber, caplog):
    # Whoever may publish on ChirpStack's broker can send events of any shape. A devEui that is no
    # EUI-64 (it names the downlink topic: "+" or "#" there make paho raise, "/" another topic) is
    # refused, counted; an rssi or snr that is no number is left out (it made the event's address
    # unhashable, and the pipeline lost the ACKs of the whole batch with a traceback). Good
    # uplinks around them are forwarded and ACKed.
    with chirpstack_gateway(tmp_path, mosquitto, subscriber) as (gw, pub, downs):
        key = NODES["sew-01"]

        def air(seq):
            return compact.to_air(compact.encode_data(key, "sew-01", 3, seq, 1000 + seq, [senml.record("l", 0.4)]))

        def heard_once(event, **rx):
            # the event as one ChirpStack gateway heard it, its reception fields as given
            ev = json.loads(event)
            ev["rxInfo"] = ev["rxInfo"][1:]
            ev["rxInfo"][0].update(rx)
            return json.dumps(ev)

        topic = f"application/{APP}/device/{DEV_EUI}/event/up"
        pub.publish(topic, uplink_event(air(1), dev_eui="+"), qos=1)
        pub.publish(topic, uplink_event(air(2), dev_eui="0004a30b/0530"), qos=1)
        pub.publish(topic, heard_once(uplink_event(air(3)), rssi=[-117]), qos=1)  # an unhashable rssi
        pub.publish(topic, heard_once(uplink_event(air(4)), snr={"db": 1}), qos=1)
        pub.publish(topic, uplink_event(air(5)), qos=1)
        assert subscriber.wait(lambda: {u["seq"] for u in subscriber.ups()} == {3, 4, 5}, 20), subscriber.ups()

        def acks():
            from protocol import message

            return {message.decode(compact.from_air(base64.b64decode(b["data"]), "sew-01"), NODES.get)["seq"]
                    for _, b in downs}

        assert subscriber.wait(lambda: acks() == {3, 4, 5}, 10), acks()
        assert {t for t, _ in downs} == {f"application/{APP}/device/{DEV_EUI}/command/down"}
        assert gw.counters()["rejected"] == {"payload": 2}
        ups = {u["seq"]: u for u in subscriber.ups()}
        assert "radio" not in ups[3] and "radio" not in ups[4] and ups[5]["radio"] == {"rssi_dbm": -117,
                                                                                      "snr_db": -9.25}
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]


def test_an_event_that_breaks_the_reader_is_refused_and_the_link_stays_up(tmp_path, mosquitto, subscriber, caplog):
    # 100,000 opening brackets are 100 kB of JSON nested deeper than Python's json reader goes: it
    # raises RecursionError, which no check of an event's shape catches. paho 2.x re-raises an
    # exception from on_message unless suppress_exceptions is set (Client._handle_on_message), and
    # that ends the link's network loop: every later uplink was lost, without a word in the
    # gateway's log. It is one refused event now (payload, counted, one line) and the link reads on.
    with chirpstack_gateway(tmp_path, mosquitto, subscriber) as (gw, pub, downs):
        link = next(x for x in gw.links if x.kind == "chirpstack")
        key = NODES["sew-01"]
        topic = f"application/{APP}/device/{DEV_EUI}/event/up"
        pub.publish(topic, b"[" * 100_000, qos=1)
        air = compact.to_air(compact.encode_data(key, "sew-01", 3, 9, 9000, [senml.record("l", 0.4)]))
        pub.publish(topic, uplink_event(air), qos=1)
        assert subscriber.wait(lambda: {u["seq"] for u in subscriber.ups()} == {9}, 15), gw.counters()
        assert subscriber.wait(lambda: len(downs) == 1, 10)  # its ACK went back as a downlink
        assert gw.counters()["rejected"] == {"payload": 1}
        assert link.counts["bad_event"] == 1 and link.client.is_connected()
    said = [r.getMessage() for r in caplog.records if "RecursionError" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
