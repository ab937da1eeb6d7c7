# A LoRa radio modem on the gateway's serial ingest (gateway/radio.py, SPEC.md 13.5), played
# by this test on a pty: compact packets with their RSSI/SNR go in as `7e | rssi | snr | packet`
# frames, reach MQTT once, and the ACKs come back compact as `7e | packet` for the modem to send.
import json
import time

from protocol import cobs, compact, message, senml
from tests.gateway.conftest import NODES, wait_for
from tests.gateway.ptyport import PtyPort


def test_modem_packets_reach_mqtt_once_and_acks_go_back_compact(tmp_path, gateway_factory, subscriber):
    port = PtyPort(tmp_path / "ttyLoRa")
    try:
        gw = gateway_factory(udp="", serial=[port.path])
        key = NODES["sew-02"]
        recs = [senml.record("l", 0.415), senml.record("b", 3.61)]
        airs = [compact.to_air(compact.encode_data(key, "sew-02", 5, seq, 1000 * seq, recs)) for seq in range(3)]
        bad = bytearray(airs[0])
        bad[-1] ^= 1
        stream = b"citynode modem: 868100 kHz SF7\r\n"  # its banner: console text
        for air in airs + [airs[1]]:  # seq 1 heard twice
            stream += cobs.encode(compact.modem_uplink(air, -97, -30))
        stream += cobs.encode(compact.modem_uplink(bytes(bad), -97, -30)) + cobs.encode(b"\x7e\x01")
        assert wait_for(lambda: gw.links[0].ser is not None, 10)
        port.write(stream)
        assert subscriber.wait(lambda: len(subscriber.ups()) >= 3, 20)
        time.sleep(0.5)
        assert sorted(u["seq"] for u in subscriber.ups()) == [0, 1, 2]  # exactly once
        st = gw.stats.node("sew-02")
        assert st.link.endswith("lora rssi -97 snr -7.5")
        # the reception as fields of their own: node state (MQTT, page) and each frame's envelope
        assert (st.as_dict()["rssi_dbm"], st.as_dict()["snr_db"]) == (-97, -7.5)
        assert all(u["radio"] == {"rssi_dbm": -97, "snr_db": -7.5} for u in subscriber.ups())
        assert subscriber.wait(lambda: any(j.get("rssi_dbm") == -97 and j.get("snr_db") == -7.5
                                           for t, j in subscriber.on("/state") if t.endswith("sew-02/state")), 10)
        rejected = gw.counters()["rejected"]
        assert rejected.get("mac") == 1 and rejected.get("short") == 1, rejected
        # the ACKs, compact behind the modem byte, MACed with the node's key
        got, deframer = [], cobs.Deframer()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not got:
            got += [v for k, v in deframer.feed(port.read(0.2)) if k == "frame"]
        assert got and all(f[0] == compact.MODEM for f in got)
        acks = [message.decode(compact.from_air(f[1:], "sew-02"), NODES.get) for f in got]
        # cumulative: frames that came together are answered by one ACK whose cum covers them
        assert all(a["type"] == "ack" for a in acks) and max(a["cum"] or a["seq"] for a in acks) == 2
        assert max(len(f) - 1 for f in got) <= 22  # a compact ACK: 22 bytes of air at most
    finally:
        port.close()


def test_a_compact_signed_command_goes_to_the_modem_as_the_operators_packet(tmp_path, gateway_factory, mosquitto):
    # SPEC.md 13.6: the gateway relays the operator's compact command without its own envelope
    # around it, after the ACK of the node's next fresh frame: 7e | the compact packet, <= 51 bytes
    import paho.mqtt.publish as publish

    from protocol import command
    from tests.gateway.conftest import COMMAND_KEYS
    from tools.command import down_payload

    port = PtyPort(tmp_path / "ttyLoRa")
    try:
        gw = gateway_factory(udp="", serial=[port.path])
        key = NODES["sew-02"]
        body = down_payload(COMMAND_KEYS["sew-02"], "sew-02", 5, 4000, "thresholds",
                            {"alarm_m": 100, "storm_m": 99.5, "rise_mm_min": 100000}, compact=True)
        for _ in range(20):  # until the gateway has subscribed (a repeat of the same command is queued once)
            publish.single("cn/nodes/sew-02/down", body, qos=1, hostname="127.0.0.1", port=mosquitto.port)
            if wait_for(lambda: gw.downlink.depth() == 1, 0.5):
                break
        assert gw.downlink.depth() == 1
        assert wait_for(lambda: gw.links[0].ser is not None, 10)
        recs = [senml.record("l", 0.415)]
        port.write(cobs.encode(compact.modem_uplink(compact.to_air(compact.encode_data(key, "sew-02", 5, 0, 0, recs)),
                                                    -110, -40)))
        got, deframer = [], cobs.Deframer()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(got) < 2:
            got += [v for k, v in deframer.feed(port.read(0.2)) if k == "frame"]
        assert len(got) == 2 and all(f[0] == compact.MODEM for f in got)
        ack = message.decode(compact.from_air(got[0][1:], "sew-02"), NODES.get)
        assert ack["type"] == "ack" and ack["seq"] == 0
        air = got[1][1:]
        token = bytes.fromhex(json.loads(body)["cose"])
        assert air == compact.to_air(token) and len(air) <= 51  # fits LoRaWAN EU868 DR0-2
        status, f = command.decide(compact.from_air(air, "sew-02"), "sew-02", COMMAND_KEYS["sew-02"], 5, 0)
        assert status == command.APPLIED and f["arg"] == {"alarm_m": 100.0, "storm_m": 99.5, "rise_mm_min": 100000}
        assert wait_for(lambda: gw.counters()["commands_sent"] == 1, 5)  # counted once written
    finally:
        port.close()
