# A LoRa radio modem on the gateway's serial ingest (gateway/radio.py, SPEC.md 13.5), played
# by this test on a pty: compact packets with their RSSI/SNR go in as `7e | rssi | snr | packet`
# frames, reach MQTT once, and the ACKs come back compact as `7e | packet` for the modem to send.
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
        assert gw.stats.node("sew-02").link.endswith("lora rssi -97 snr -7.5")
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
