# /metrics counts every reject once: citynode_frames_rejected_total{node, reason} for verified
# frames of a known node (a unit SenML refuses, a replay), citynode_rejects_total{reason} for input
# no node is known for (garbage, an unknown kid, a bad MAC: anyone can name a node; that one also
# counts in the node's unverified frames). Summed they are the gateway's total; before,
# rejects_total held every reject again and the sum counted attributed ones twice.
import socket

from prometheus_client import CollectorRegistry, generate_latest

from gateway.web.metrics import StatusCollector
from protocol import message, senml
from tests.gateway.conftest import NODES, wait_for


def metrics_text(gw):
    registry = CollectorRegistry()
    registry.register(StatusCollector(gw.status))
    return generate_latest(registry).decode()


def test_each_reject_is_in_one_family_only(gateway_factory):
    gw = gateway_factory()
    rec = [senml.record("l", 0.5)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x00garbage", gw.udp_addresses[0])  # no node known: truncated / tag
        s.sendto(message.encode_data(bytes(16), "nobody-1", 1, 0, 0, rec), gw.udp_addresses[0])  # unknown kid
        s.sendto(message.encode_data(bytes(16), "sew-01", 1, 0, 0, rec), gw.udp_addresses[0])  # names sew-01, bad MAC
        bad_unit = [senml.record("t", 21.5, unit="degC")]  # verified, then refused: not a SenML unit
        s.sendto(message.encode_data(NODES["sew-01"], "sew-01", 1, 1, 0, bad_unit), gw.udp_addresses[0])
    assert wait_for(lambda: sum(gw.stats.counters_snapshot()[1].values()) == 4, 10)
    text = metrics_text(gw)
    lines = [x for x in text.splitlines() if x.startswith(("citynode_rejects_total", "citynode_frames_rejected_total"))]
    per_node = {x for x in lines if x.startswith("citynode_frames_rejected_total")}
    unattributed = [x for x in lines if x.startswith("citynode_rejects_total")]
    assert per_node == {'citynode_frames_rejected_total{node="sew-01",reason="payload"} 1.0'}
    assert len(unattributed) == 3 and 'citynode_rejects_total{reason="unknown"} 1.0' in unattributed
    assert 'citynode_rejects_total{reason="mac"} 1.0' in unattributed
    assert not any('reason="payload"' in x for x in unattributed)  # not counted twice
    total = sum(float(x.rsplit(" ", 1)[1]) for x in lines)
    assert total == sum(gw.stats.counters_snapshot()[1].values()) == 4
    assert "before a node was known" in text and "every reject counted once" in text
