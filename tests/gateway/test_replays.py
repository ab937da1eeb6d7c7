# Replays of uplink frames get their ACK and nothing else (issue 19 item 5): a stored frame sent
# again from another address moves neither the node's link nor its last_seen, and draws none of
# its queued commands; only a fresh frame does. A frame with a bad MAC that names a node is
# counted as unverified for that node, not among its rejects.
import time

import paho.mqtt.publish as publish

from tests.gateway.conftest import NODES, signed_down, wait_for
from tests.support.udpnode import UdpNode, make_frame


def _state(gw, node):
    return gw.status()["nodes"][[n["id"] for n in gw.status()["nodes"]].index(node)]


def test_a_replayed_frame_gets_its_ack_and_nothing_else(gateway_factory, mosquitto):
    gw = gateway_factory()
    node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
    attacker = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])  # holds no key: only replays
    try:
        assert node.run(2, deadline_s=10)
        assert wait_for(lambda: gw.forwarder.connected, 10)
        before = _state(gw, "sew-01")
        publish.single("cn/nodes/sew-01/down", signed_down("sew-01", 1, 9, "interval", 120), qos=1,
                       hostname="127.0.0.1", port=mosquitto.port)
        assert wait_for(lambda: gw.counters()["downlink_queued"] == 1, 10)
        time.sleep(1.1)  # a second later: a replay must not move last_seen
        for _ in range(6):  # more than the 5 attempts a command has
            attacker.send_raw(make_frame(NODES["sew-01"], "sew-01", 1, 1))
            attacker._receive(0.2)
        assert wait_for(lambda: _state(gw, "sew-01")["duplicates"] >= 6, 10)
        after = _state(gw, "sew-01")
        assert after["link"] == before["link"] and after["last_seen"] == before["last_seen"]
        assert attacker.acked == {1}  # the ACK, again and again
        assert attacker.commands == [] and gw.counters()["commands_sent"] == 0
        assert gw.counters()["downlink_queued"] == 1  # no attempt spent
        # the node's next fresh frame draws the command, on the node's own address
        assert node.run(1, start=2, deadline_s=10)
        assert wait_for(lambda: node._receive(0.05) or node.commands, 10)
        assert node.commands[0]["cmd_id"] == 9
    finally:
        node.close()
        attacker.close()


def test_a_bad_mac_is_unverified_not_the_nodes_reject(gateway_factory):
    gw = gateway_factory()
    node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
    try:
        assert node.run(1, deadline_s=10)
        forged = UdpNode("sew-01", bytes(16), gw.udp_addresses[0])  # another key, the node's id
        forged.send_raw(make_frame(bytes(16), "sew-01", 1, 5))
        forged.close()
        assert wait_for(lambda: _state(gw, "sew-01")["unverified"] == 1, 10)
        st = _state(gw, "sew-01")
        assert "mac" not in st["rejected"] and gw.counters()["rejected"].get("mac") == 1
    finally:
        node.close()
