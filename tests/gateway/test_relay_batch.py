# One batch of the city relay (gateway/relay.py _process) on an opened relay, without a NATS
# cluster: the stream messages are real nats-py Msg objects with the reply subject a JetStream
# delivery carries, their payloads the envelopes a gateway made (gateway/outputs.py Envelope).
import time

import pytest
from nats.aio.msg import Msg

from gateway import config
from gateway.daemon import close_rest
from gateway.files import write_private
from gateway.keys import format_keys
from gateway.outputs import Envelope, Frame
from gateway.relay import Relay
from protocol import message, senml
from tests.gateway.conftest import NODES
from tests.support.broker import free_port

T0 = 1_777_636_800.0


def delivery(stream_seq, node="sew-01", seq=1):
    # one stream message as the relay's pull consumer gets it
    key = NODES[node]
    raw = message.encode_data(key, node, 1, seq, 1000 * seq, [senml.record("l", 0.42)])
    f = Frame(node, message.decode(raw, NODES.get), raw, T0 + seq, T0 + seq, "received", "udp 127.0.0.1:1")
    [(_, payload)] = Envelope("cn", "gw-1").messages(f)
    reply = f"$JS.ACK.CN.relay.1.{stream_seq}.{stream_seq}.{int(T0 * 1e9)}.0"
    return Msg(_client=None, subject=f"cn.f.{node}.1.{seq}", reply=reply, data=payload)


@pytest.fixture
def relay(tmp_path):
    # [mqtt] and [nats] point at ports nobody listens on: the relay is opened, not started
    write_private(tmp_path / "keys.toml", format_keys(NODES))
    write_private(tmp_path / "relay.toml", f"""[relay]\nid = "relay-1"\ndata_dir = "var"\n
[nats]\nservers = ["nats://127.0.0.1:{free_port()}"]\nstream = "CN"\nsubject_prefix = "cn"\n
[mqtt]\nurl = "mqtt://127.0.0.1:{free_port()}"\ntopic_prefix = "cn"\n
[publish]\navailability = true\nhomeassistant = true\n
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
