# Frames that arrive out of seq order, as a LoRa node sends them (SPEC 13.3): after an outage its
# newest frame goes first and the backlog follows, oldest first, with the airtime the reports
# leave, hours later at SF12. Through the real gateway (UDP, the pipeline, SQLite, mosquitto):
# every frame stored and forwarded once, ACKs whose cum never covers a frame not yet stored, the
# backlog dated from its uptime, and the forecast neither moved nor misled by readings older
# than the ones it holds (the same gateway's forecast for a node whose backlog never came is the
# reference).
import socket
import time

import pytest

from gateway.outputs import iso
from protocol import message, senml
from tests.gateway.conftest import NODES
from tests.gateway.test_forecast import storm_level as storm  # a raised-cosine rise, then a drain

F_BACKLOG = message.F_BACKLOG


class Node:
    # a node's UDP socket: send a frame, wait for the gateway's answer to it
    def __init__(self, gw, name, boot=1):
        self.name, self.key, self.boot = name, NODES[name], boot
        self.addr = gw.udp_addresses[0]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)

    def send(self, seq, uptime_s, recs, time_s=None, flags=0):
        # -> the ACK for it (decoded)
        frame = message.encode_data(self.key, self.name, self.boot, seq, uptime_s * 1000, recs, time_s=time_s,
                                    flags=flags)
        self.sock.sendto(frame, self.addr)
        while True:
            m = message.decode(self.sock.recv(512), NODES.get)
            if m["type"] == "ack" and m["seq"] == seq:
                return m

    def close(self):
        self.sock.close()


@pytest.mark.integration
def test_the_newest_frame_first_then_the_backlog_is_stored_once_acked_and_dated_right(gateway_factory, subscriber):
    # a node without a clock: 4 frames live, then 12 made while the gateway was away (flag 8),
    # then the first one made after it is back, sent first; then the backlog, oldest first
    gw = gateway_factory(forecast="enabled = false")
    node = Node(gw, "air-03")
    try:
        recs = [senml.record("t", 21.5)]
        for seq in range(4):
            assert node.send(seq, seq * 300, recs)["cum"] == seq
        fresh = node.send(16, 16 * 300, recs)
        # stored, but the 12 below it are not: its ACK's cum says so, and the node keeps them
        assert (fresh["seq"], fresh["cum"]) == (16, 3)
        cums = [node.send(seq, seq * 300, recs, flags=F_BACKLOG)["cum"] for seq in range(4, 16)]
        assert cums == list(range(4, 15)) + [16]  # the last gap filled: cum jumps over the fresh one
        dup = node.send(9, 9 * 300, recs, flags=F_BACKLOG)  # a resend (its ACK lost): ACKed again
        assert dup["cum"] == 16
    finally:
        node.close()
    assert subscriber.wait(lambda: len(subscriber.ups()) >= 17, 15)
    time.sleep(0.3)
    ups = subscriber.ups()
    assert sorted(u["seq"] for u in ups) == list(range(17))  # each once
    by = {u["seq"]: u for u in ups}
    assert by[16]["time_source"] == "received" and by[16]["time"] == by[16]["received"]
    # the backlog on the boot's timeline: the fresh frame's reception minus the uptime between them
    t16 = by[16]["time"]
    for seq in range(4, 16):
        assert by[seq]["time_source"] == "uptime"
        assert by[seq]["time"] == iso(_unix(t16) - (16 - seq) * 300), (seq, by[seq]["time"], t16)
    c = gw.counters()
    assert c["accepted"] == 17 and c["rejected"] == {}, c


def _unix(s):
    from datetime import datetime

    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def rain_m(t):
    return 0.0005 * (t // 300)  # a counter: 0.5 mm every 5 minutes


@pytest.mark.integration
def test_a_backlog_after_newer_readings_does_not_move_the_forecast(gateway_factory, subscriber):
    # Two shafts with a clock in the same storm, a reading and the rain gauge's counter every
    # 5 minutes, both away for an hour as the storm rises. sew-01's backlog arrives after its
    # newer frames, one frame every 20 minutes; sew-02's never. The backlog's readings are older
    # than the ones the forecast keeps (40 minutes): they must change nothing, nor may an older
    # rain counter read as a gauge that started counting again (its whole count as new rain).
    gw = gateway_factory()
    a, b = Node(gw, "sew-01"), Node(gw, "sew-02")
    t0 = int(time.time()) - 9000  # the last reading a few minutes before now
    made = list(range(0, 8700, 300))
    outage = [t for t in made if 2400 <= t < 6000]
    try:
        def frame(node, seq, t, flags=0):
            recs = [senml.record("l", round(storm(t), 3)), senml.record("rain", rain_m(t))]
            return node.send(seq, t, recs, time_s=t0 + t, flags=flags | (message.F_STORM if storm(t) > 1.2 else 0))

        backlog = iter(outage)
        late = 0
        for seq, t in enumerate(made):
            if t in outage:
                continue
            frame(a, seq, t)
            frame(b, seq, t)
            if t >= 6000 and (t - 6000) % 1200 == 0:
                old = next(backlog, None)
                if old is not None:
                    frame(a, made.index(old), old, F_BACKLOG)
                    late += 1
    finally:
        a.close()
        b.close()
    n_fresh = len(made) - len(outage)
    assert late == 3 and subscriber.wait(lambda: len(subscriber.ups()) == 2 * n_fresh + late, 15)

    def forecasts(node):
        return [j for t, j in subscriber.on("/forecast") if t == f"cn/nodes/{node}/forecast"]

    assert subscriber.wait(lambda: len(forecasts("sew-01")) == len(forecasts("sew-02")) >= n_fresh - 2, 10)
    time.sleep(0.3)
    fa, fb = forecasts("sew-01"), forecasts("sew-02")
    assert len(fa) == len(fb)  # a backlog frame publishes no forecast of its own

    def said(f):
        return (f["at"], f["level_m"], f["rate_mm_min"], f["warning"], f.get("raised"), f.get("cleared"),
                f["inputs"]["readings"], f["inputs"].get("rain_15min_mm"))

    assert [said(f) for f in fa] == [said(f) for f in fb]
    assert any(f.get("raised") for f in fa)  # the storm did warn
    events = [j for _, j in subscriber.on("/event")]

    def said_events(node):
        return [(e["event"], e["level_m"]) for e in events if e["node"] == node]

    assert said_events("sew-01") == said_events("sew-02") != []
