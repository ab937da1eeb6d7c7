# One batch of the city relay (gateway/relay.py _process) on an opened relay, without a NATS
# cluster: the stream messages are real nats-py Msg objects with the reply subject a JetStream
# delivery carries, their payloads the envelopes a gateway made (gateway/outputs.py Envelope).
import datetime
import logging
import time

import orjson
import pytest
from nats.aio.msg import Msg

from gateway import config
from gateway.daemon import close_rest
from gateway.files import write_private
from gateway.keys import format_keys
from gateway.outputs import Envelope, Frame, iso
from gateway.relay import Relay
from protocol import message, senml
from tests.gateway.conftest import NODES, output_fails_on, senml_fails_on
from tests.support import senml_strict
from tests.support.broker import free_port

T0 = 1_777_636_800.0


def delivery(stream_seq, node="sew-01", seq=1, gateway="gw-1", received=None, uptime_ms=None):
    # one stream message as the relay's pull consumer gets it: the envelope `gateway` made of the
    # frame it received at `received` (and dated then, as its own FrameClock does a live frame)
    key = NODES[node]
    received = T0 + seq if received is None else received
    up = 1000 * seq if uptime_ms is None else uptime_ms
    raw = message.encode_data(key, node, 1, seq, up, [senml.record("l", 0.42), senml.record("b", 3.3)])
    f = Frame(node, message.decode(raw, NODES.get), raw, received, received, "received", "udp 127.0.0.1:1")
    [(_, payload)] = Envelope("cn", gateway).messages(f)
    reply = f"$JS.ACK.CN.relay.1.{stream_seq}.{stream_seq}.{int(T0 * 1e9)}.0"
    return Msg(_client=None, subject=f"cn.f.{node}.1.{seq}", reply=reply, data=payload)


@pytest.fixture
def relay(tmp_path):
    yield from opened(tmp_path)


def opened(tmp_path, publish=""):
    # [mqtt] and [nats] point at ports nobody listens on: the relay is opened, not started
    write_private(tmp_path / "keys.toml", format_keys(NODES))
    write_private(tmp_path / "relay.toml", f"""[relay]\nid = "relay-1"\ndata_dir = "var"\n
[nats]\nservers = ["nats://127.0.0.1:{free_port()}"]\nstream = "CN"\nsubject_prefix = "cn"\n
[mqtt]\nurl = "mqtt://127.0.0.1:{free_port()}"\ntopic_prefix = "cn"\n
[publish]\navailability = true\nhomeassistant = true\n{publish}
[nodes]\nkeys_file = "keys.toml"\n""")
    r = Relay(config.load(tmp_path / "relay.toml", role="relay"))
    r.open()
    yield r
    close_rest(r)


def outbox_topics(r):
    return [t for (t,) in r.store.db.execute("SELECT topic FROM outbox ORDER BY id")]


def test_a_failed_commit_says_availability_and_discovery_again(relay):
    # The outbox is full (SQLite's "database or disk is full" at max_page_count, as the store's
    # own cap and a real full disk report it): the batch is not stored (and so not acked). The
    # outputs that say a thing once (availability "online", Home Assistant discovery) must say it
    # again with the redelivered batch, as the gateway's pipeline does (gateway/pipeline.py).
    db = relay.store.db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")
    batch = [delivery(q, seq=q) for q in range(1, 21)]
    assert relay._process(batch) is False
    assert outbox_topics(relay) == []
    # room again (the store opened its connection afresh, without this cap): the stream delivers
    # the batch again
    relay.store.db.execute("PRAGMA max_page_count=1000000")
    assert relay._process(batch) is True
    topics = outbox_topics(relay)
    assert topics.count("cn/nodes/sew-01/up") == 20
    assert topics.count("cn/nodes/sew-01/availability") == 1
    assert [t for t in topics if t.startswith("homeassistant/")], topics
    # the relay's clock forgot the times the failed commit gave: the batch gets them again
    assert [(u["time"], u["time_source"]) for u in up_messages(relay)] == [(iso(T0 + q), "received")
                                                                        for q in range(1, 21)]
    # and only once: the next frame adds neither
    assert relay._process([delivery(21, seq=21)]) is True
    assert outbox_topics(relay)[len(topics):] == ["cn/nodes/sew-01/up"]


def test_an_offline_lost_in_housekeeping_is_said_again(relay):
    # the relay's idle housekeeping sweeps availability: a node silent for availability_after_s
    # (its frames are from T0, long ago) goes "offline"; that commit fails (the data dir became
    # read-only, as an SD card the kernel remounts after I/O errors: SQLite's query_only answers
    # the same "attempt to write a readonly database"), and the next sweep says it again
    assert relay._process([delivery(1)]) is True
    relay.store.db.execute("PRAGMA query_only = ON")
    relay._housekeeping()
    relay.store.db.execute("PRAGMA query_only = OFF")
    availability = "SELECT topic, payload FROM outbox WHERE topic LIKE '%/availability' ORDER BY id"
    assert relay.store.db.execute(availability).fetchall() == [("cn/nodes/sew-01/availability", b"online")]
    time.sleep(1.05)  # availability sweeps at most once a second
    relay._housekeeping()
    assert relay.store.db.execute(availability).fetchall() == [("cn/nodes/sew-01/availability", b"online"),
                                                               ("cn/nodes/sew-01/availability", b"offline")]


def up_messages(r):
    return [orjson.loads(p) for (p,) in r.store.db.execute(
        "SELECT payload FROM outbox WHERE topic LIKE '%/up' ORDER BY id")]


@pytest.mark.parametrize("skew_s", [0.1, 0.25])
def test_the_relay_dates_a_nodes_frames_once_for_the_city(relay, tmp_path, skew_s):
    # One node heard by two gateways, a frame every 100 ms of uptime. gw-2's clock is skew_s behind
    # gw-1's: frames of seq 22 and 23 reach the stream first through gw-2, dated by it at the same
    # millisecond as seq 21 (skew 0.1 s) or before it (0.25 s). Dated by each gateway, the strict
    # SenML consumer (tests/support/senml_strict.py) finds one (name, time) in two frames (issue 25).
    # The relay dates every frame with its one clock: distinct, increasing times in the envelope and
    # its SenML, each envelope still naming the gateway that heard the frame.
    batch = [delivery(1, seq=21, gateway="gw-1", received=T0, uptime_ms=2100),
             delivery(2, seq=22, gateway="gw-2", received=T0 + 0.1 - skew_s, uptime_ms=2200),
             delivery(3, seq=23, gateway="gw-2", received=T0 + 0.2 - skew_s, uptime_ms=2300),
             delivery(4, seq=24, gateway="gw-1", received=T0 + 0.3, uptime_ms=2400)]
    assert relay._process(batch[:2]) is True
    assert relay._process(batch[2:]) is True
    ups = up_messages(relay)
    assert [(u["seq"], u["gateway"]) for u in ups] == [(21, "gw-1"), (22, "gw-2"), (23, "gw-2"), (24, "gw-1")]
    times = [datetime.datetime.fromisoformat(u["time"]).timestamp() for u in ups]
    assert all(a < b for a, b in zip(times, times[1:])), [u["time"] for u in ups]
    checker = senml_strict.UpChecker()
    for u, t in zip(ups, times):
        checker.check("cn/nodes/sew-01/up", u)
        resolved = senml_strict.check_pack(u["senml"])[1]
        assert {round(rt, 3) for _, rt, _ in resolved} == {round(t, 3)}  # the SenML says the envelope's time
    assert checker.problems == []
    # the relay's own reception (the first gateway's) is kept; the first frame is its anchor
    assert ups[0]["time"] == ups[0]["received"] and ups[0]["time_source"] == "received"
    assert ups[1]["received"] == iso(T0 + 0.1 - skew_s)
    # the clock is stored with the commits: a restarted relay (the same data_dir) dates after them
    close_rest(relay)
    again = Relay(config.load(tmp_path / "relay.toml", role="relay"))
    again.open()
    try:
        assert again._process([delivery(5, seq=25, gateway="gw-2", received=T0 + 0.4 - skew_s,
                                        uptime_ms=2500)]) is True
        last = up_messages(again)[-1]
        assert last["seq"] == 25 and datetime.datetime.fromisoformat(last["time"]).timestamp() > times[-1]
    finally:
        close_rest(again)


@pytest.fixture
def relay_senml(tmp_path):
    yield from opened(tmp_path, "senml = true\n")


class Replies:
    # the relay's NATS client as a delivered message uses it (nats-py Msg.ack/nak/term publish
    # their answer to the message's reply subject): the answers, in order
    def __init__(self):
        self.said = []

    async def publish(self, subject, payload=b""):
        self.said.append((int(subject.split(".")[-3]), payload))


def test_a_frame_loses_only_the_output_that_cannot_convert_it_or_fails_as_any_fault(relay_senml, monkeypatch,
                                                                                   caplog):
    # The relay runs a frame's outputs through the gateway pipeline's one place
    # (gateway/registry.py OutputSet.messages). An output that raises loses its rows of that
    # frame only, counted output_failures (injected: the SenML pack raises on seq 3; no reading
    # makes an output raise now). A frame with no envelope at all (seq 2, injected: no frame the
    # protocol takes makes the envelope raise since the record check refuses a text label "n")
    # fails as any other fault: its batch is taken again one message at a time, the others are
    # stored and acked, seq 2 is asked again 1 s later (NAK), not refused, nothing of it stored
    # (its node's state not moved); _take judges it then (poison or stuck: test_fleet.py).
    # Before, it was refused and acked at once: an envelope bug every frame trips dropped them all.
    import asyncio

    from gateway import dedup

    relay = relay_senml
    batch = [delivery(1, seq=1), delivery(2, seq=2), delivery(3, seq=3), delivery(4, seq=4)]
    replies = Replies()
    for m in batch:
        m._client = replies
    senml_fails_on(monkeypatch, 3)
    output_fails_on(monkeypatch, Envelope, 2)
    with pytest.raises(ValueError, match="injected: cannot convert seq 2"):
        relay._process(batch)  # the batch whole: nothing of it is stored
    relay.outputs.reset()
    relay.clock.undo()
    assert up_messages(relay) == [] and relay.counters["stored"] == 0
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(relay._take(batch)) is True
    assert [(u["seq"], u["gateway"]) for u in up_messages(relay)] == [(1, "gw-1"), (3, "gw-1"), (4, "gw-1")]
    assert outbox_topics(relay).count("cn/nodes/sew-01/senml") == 2  # seq 1 and 4
    assert replies.said == [(1, b""), (3, b""), (4, b""), (2, b'-NAK {"delay": 1000000000}')], replies.said
    counters = relay.status()["gateway"]["counters"]
    assert (counters["stored"], counters["acked"], counters["rejected"]) == (3, 3, 0), counters
    assert relay.stats.rejected == {} and list(relay.failures) == [2] and relay.alarms() == []
    said = [r.getMessage() for r in caplog.records if "stream seq 2" in r.getMessage()]
    assert len(said) == 1 and "ValueError: injected" in said[0] and "(try 1 of 3)" in said[0], said
    assert 2 not in relay.seen and 3 in relay.seen
    # nothing of seq 2 was stored: its node's state says seq 2 was never seen
    assert dedup.classify(relay.states["sew-01"], 1, 2) == dedup.NEW
    assert dedup.classify(relay.states["sew-01"], 1, 3) == dedup.DUP


def test_a_gateways_reception_time_no_clock_gives_is_replaced_by_the_streams(relay, caplog):
    # The relay dates frames from the `received` of the gateway's envelope (SPEC.md section 8),
    # which the MAC does not cover. Times that parse but no clock gives reached the ISO 8601
    # writer (gateway/outputs.py iso) as "0-12-31T10:00:00.000Z" (year 1 at +14:00) or
    # "10000-01-01T13:59:59.999Z" (year 9999 at -14:00), and the year-10000 one anchored the
    # node's boot, so its later frames were dated there too. One before 2000 or more than a day
    # after the stream stored the message is replaced by the stream's time: counted, one line.
    import re

    said = {1: "0001-01-01T00:00:00+14:00", 2: "9999-12-31T23:59:59.999-14:00", 3: "1999-12-31T23:59:59Z",
            4: iso(T0 + 86_400 + 10)}  # the stream stored each at T0 (delivery's reply subject)
    batch = []
    for seq in range(1, 6):
        m = delivery(seq, seq=seq, received=T0 + seq)
        if seq in said:
            env = orjson.loads(m.data)
            env["received"] = said[seq]
            m.data = orjson.dumps(env)
        batch.append(m)
    with caplog.at_level(logging.WARNING):
        assert relay._process(batch) is True
    ups = up_messages(relay)
    assert [u["seq"] for u in ups] == [1, 2, 3, 4, 5]
    for u in ups:
        for field in ("time", "received"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", u[field]), u
            assert T0 <= datetime.datetime.fromisoformat(u[field]).timestamp() <= T0 + 5, u
    assert [u["received"] for u in ups] == [iso(T0)] * 4 + [iso(T0 + 5)]
    assert ups[-1]["time"] == iso(T0 + 5) and ups[-1]["time_source"] == "received"  # not dated after year 9999
    assert relay.counters["gateway_clock"] == 4 and relay.counters["stored"] == 5
    lines = [r.getMessage() for r in caplog.records if "no plausible time" in r.getMessage()]
    assert len(lines) == 1 and "stream seq 1" in lines[0] and "\n" not in lines[0], lines  # one per 10 s
