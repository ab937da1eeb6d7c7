# A USB serial adapter unplugged and plugged back in (a pty behind a stable symlink):
# the gateway notices, retries with backoff, reopens, and the node's frames (including
# the ones it kept while unplugged) all arrive. Two ports at once.
import json
import time

import pytest

from tests.gateway.conftest import NODES, signed_down
from tests.gateway.ptyport import PtyPort, SerialNode

pytestmark = pytest.mark.integration


def test_serial_port_unplugged_and_replugged(tmp_path, gateway_factory, subscriber):
    a = PtyPort(tmp_path / "ttyA")
    b = PtyPort(tmp_path / "ttyB")
    try:
        gw = gateway_factory(udp="", serial=[a.path, b.path])
        na = SerialNode("sew-01", NODES["sew-01"], a)
        nb = SerialNode("sew-02", NODES["sew-02"], b)
        assert na.run(range(20)) and nb.run(range(20))
        link_a = next(link for link in gw.links if link.port == a.path)
        assert link_a.opened == 1
        a.unplug()
        # readiness: the gateway has noticed the loss (closed A, now retrying a missing device)
        deadline = time.monotonic() + 15
        while link_a.ser is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link_a.ser is None
        assert nb.run(range(20, 30))  # port B keeps working meanwhile
        a.plug()
        assert na.run(range(20, 40), deadline_s=15)  # picked up again within the backoff
        assert link_a.opened == 2
        want = {("sew-01", 1, s) for s in range(40)} | {("sew-02", 1, s) for s in range(30)}
        assert subscriber.wait(lambda: subscriber.keys_up() == want)
    finally:
        a.close()
        b.close()


def test_ack_goes_back_on_the_serial_link_and_commands_follow(tmp_path, gateway_factory, subscriber, mosquitto):
    # Downlink: a command published for a sleeping node waits until it is heard, then
    # goes MACed on the link it was heard on; the node's report completes it.
    import paho.mqtt.publish as publish

    port = PtyPort(tmp_path / "ttyC")
    try:
        gw = gateway_factory(udp="", serial=[port.path])
        node = SerialNode("air-03", NODES["air-03"], port)
        assert node.run(range(3))
        # subscribed to the down topic: the broker handles a client's packets in order, and the
        # gateway publishes its retained "online" state after its SUBSCRIBE
        assert subscriber.wait(lambda: any(j["state"] == "online" for _, j in subscriber.on("/gateways/gw-test/state")),
                               20)
        publish.single("cn/nodes/air-03/down", signed_down("air-03", 1, 5, "interval", 120), qos=1,
                       hostname="127.0.0.1", port=mosquitto.port)
        publish.single("cn/nodes/air-03/down", signed_down("air-03", 1, 6, "interval", "soon"), qos=1,
                       hostname="127.0.0.1", port=mosquitto.port)
        publish.single("cn/nodes/air-03/down", '{"op": "interval", "arg": 120}', qos=1, hostname="127.0.0.1",
                       port=mosquitto.port)  # unsigned: refused
        assert subscriber.wait(lambda: gw.counters()["downlink_queued"] == 1 and gw.counters()["commands_refused"] == 1
                               and gw.counters()["commands_unsigned"] == 1, 20), gw.counters()
        assert not node.commands  # queued, not sent: the node has not been heard since
        assert node.run(range(3, 4))
        deadline = time.monotonic() + 20
        while not node.commands and time.monotonic() < deadline:
            node.poll(0.05)
        cmd = node.commands[0]
        assert (cmd["boot"], cmd["cmd_id"]) == (1, 5) and cmd["signed"] == bytes.fromhex(
            json.loads(signed_down("air-03", 1, 5, "interval", 120))["cose"])
    finally:
        port.close()
