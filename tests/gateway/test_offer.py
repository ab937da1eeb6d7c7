# Rows the pipeline has just committed go to the publisher in memory (gateway/mqtt.py offer):
# published by the pipeline thread when they follow the publisher's cursor and fit its
# window, else read from the outbox. Either way every row goes out once, in order per node,
# across a full window and a broker restart.
import pytest

from gateway.store import Store
from tests.gateway.conftest import NODES
from tests.support.udpnode import UdpNode, run_nodes


def test_a_commit_says_the_ids_its_rows_got(tmp_path):
    st = Store(tmp_path / "o.sqlite")
    try:
        firsts = [st.commit(rows=[("t/a", b"x")] * n) for n in (3, 1, 5)]
        st.commit(deletes=list(range(1, 10)))  # the table emptied: ids still go on
        firsts.append(st.commit(rows=[("t/b", b"y")] * 2))
        assert st.commit(deletes=[]) is None
        ids = [r[0] for r in st.db.execute("SELECT id FROM outbox ORDER BY id")]
        assert firsts == [1, 4, 5, 10] and ids == [10, 11]
    finally:
        st.close()


def _ups(subscriber):
    return [(j["node"], j["seq"]) for j in subscriber.ups()]


@pytest.mark.integration
def test_committed_rows_go_out_from_memory_and_each_once(gateway_factory, subscriber, mosquitto):
    gw = gateway_factory(mqtt_extra="inflight = 8")  # a window of 8: a flood fills it
    addr = gw.udp_addresses[0]
    slow = UdpNode("sew-01", NODES["sew-01"], addr, window=4)
    assert run_nodes([slow], 20, rate=40) == [True]
    assert subscriber.wait(lambda: len(_ups(subscriber)) >= 20)
    # one frame at a time: each commit follows the cursor, so the pipeline published it
    assert gw.forwarder.offered >= 15, gw.forwarder.offered
    nodes = [UdpNode(n, k, addr, window=32) for n, k in NODES.items() if n != "sew-01"]
    assert run_nodes(nodes, 300) == [True, True]
    total = 20 + 2 * 300
    assert subscriber.wait(lambda: len(_ups(subscriber)) >= total, 60)
    ups = _ups(subscriber)
    assert len(ups) == total and set(ups) == {("sew-01", s) for s in range(20)} | {
        (n, s) for n in NODES if n != "sew-01" for s in range(300)}
    # the flood went partly through the outbox: the window was full when its rows came
    assert gw.forwarder.offered < total
    for n in NODES:  # in order per node
        seqs = [s for node, s in ups if node == n]
        assert seqs == sorted(seqs)
    # committed while the broker is away: no session takes them in memory; the next reads them
    mosquitto.stop()
    late = UdpNode("sew-01", NODES["sew-01"], addr, window=32)
    assert late.run(40, start=20) and gw.forwarder.offered < total + 40
    mosquitto.start()
    assert subscriber.wait(lambda: {("sew-01", s) for s in range(20, 60)} <= set(_ups(subscriber)), 60)
