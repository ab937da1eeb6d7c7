# SensorThings that reaches a FROST server: on its own connection, to a second mosquitto
# standing in for FROST's embedded broker, or over HTTP to a stand-in that answers as FROST
# does (tests/support/frost.py: 201, 400, 404; here also 503). Mappings by template.
import json
import sqlite3

import pytest

from gateway import config
from gateway.daemon import Gateway
from gateway.outputs import datastream_path
from protocol import message, senml
from tests.gateway.conftest import NODES, Subscriber, check_config, write_config
from tests.gateway.test_tls import tls_broker  # noqa: F401 - a fixture
from tests.support.broker import Mosquitto
from tests.support.frost import Frost
from tests.support.udpnode import UdpNode, level_m

GOOD_URL = "mqtt://127.0.0.1:1883"


def check(path):
    return check_config(path)


def st_config(tmp_path, broker_url, mappings, server=None):
    path = write_config(tmp_path, broker_url)
    text = path.read_text()
    for m in mappings:
        text += "\n[[sensorthings]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in m.items())
    if server:
        text += "\n[sensorthings_server]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in server.items())
    path.write_text(text)
    return path


BAD = [
    ([{"reading": "l", "datastream": 5}], None, "[sensorthings.0] datastream: a mapping for every node"),
    ([{"reading": "l", "datastream": "level"}], None, "{node}"),
    ([{"node": "sew-01", "reading": "level", "datastream": 5}], None, "[sensorthings.0] reading: 'level' is no"),
    ([{"node": "sew-99", "reading": "l", "datastream": 5}], None, "[sensorthings.0] node: 'sew-99' is not in the keys"),
    ([{"node": "sew-01", "reading": "l", "datastream": 5}, {"node": "sew-01", "reading": "l", "datastream": 6}],
     None, "[sensorthings.1] reading: sew-01 l is mapped twice (also in [sensorthings.0])"),
    ([{"reading": "l", "datastream": "{node}-l"}, {"reading": "l", "datastream": "{node}-level"}],
     None, "reading 'l' of every node is mapped twice"),
    ([{"reading": "l", "datastream": "{node}-l"}, {"node": "sew-01", "reading": "l", "datastream": "x"}],
     None, "sew-01 l is mapped twice (also by the template in [sensorthings.0])"),
    ([{"node": "sew-01", "reading": "l", "datastream": 5}, {"node": "sew-02", "reading": "l", "datastream": 5}],
     None, "[sensorthings.1] datastream: 5 is mapped twice"),
    ([{"node": "sew-01", "reading": "l", "datastream": 0}], None, "Datastream id >= 1"),
    ([{"reading": "l", "datastream": "levels/{node}"}], None, "without / + #"),
    ([{"node": "sew-01", "reading": "l", "datastream": 5}], {"url": "ftp://frost"}, "[sensorthings_server] url"),
    ([{"node": "sew-01", "reading": "l", "datastream": 5}], {"url": "mqtt://frost/x"}, "an MQTT url has no path"),
    ([{"node": "sew-01", "reading": "l", "datastream": 5}], {"url": "http://frost", "version": "v2"},
     "[sensorthings_server] version"),
    ([], {"url": "http://frost"}, "no [[sensorthings]] mapping"),
    ([{"node": "sew-01", "reading": "l", "datastream": 5}], {"url": "http://frost", "ca": "keys.toml"},
     "TLS files given but url is http://; use https://"),  # never plain text when TLS was meant
]


@pytest.mark.parametrize("mappings,server,text", BAD, ids=[b[2][:40] for b in BAD])
def test_check_config_refuses_mappings_that_cannot_work(tmp_path, capsys, mappings, server, text):
    assert check(st_config(tmp_path, GOOD_URL, mappings, server)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and text in err, err


def test_a_template_and_own_ids_check(tmp_path, capsys):
    path = st_config(tmp_path, GOOD_URL, [{"reading": "l", "datastream": "{node}-level"},
                                          {"node": "sew-01", "reading": "b", "datastream": "b3a1c0de-0001"}],
                     {"url": "https://frost.example:8443/FROST-Server", "username": "gw", "password": "pw"})
    assert check(path) == 0
    out = capsys.readouterr().out
    assert "2 SensorThings mappings to https://frost.example:8443/FROST-Server)" in out, out
    s = config.load(path).sensorthings_server
    assert (s.mode, s.host, s.port, s.tls, s.path) == ("http", "frost.example", 8443, True, "/FROST-Server")


def test_datastream_ids_in_odata_key_syntax():
    assert datastream_path("v1.1", 42) == "v1.1/Datastreams(42)/Observations"
    assert datastream_path("v1.1", "b3a1c0de-01") == "v1.1/Datastreams('b3a1c0de-01')/Observations"
    assert datastream_path("v1.0", "o'brien") == "v1.0/Datastreams('o''brien')/Observations"
    frost = Frost({"o'brien": True}, id_type="string")
    assert frost.create(datastream_path("v1.0", "o'brien"), b'{"result": 1}')[0] == 201
    assert frost.create("v1.1/Datastreams(7)/Observations", b'{"result": 1}')[0] == 404  # not a string key


def frames_with_quality(key, node, n):
    # live frames, a storm flag and a degraded level reading on every other one
    out = []
    for seq in range(n):
        q = {0: [8, 2, message.Q_DEGRADED]} if seq % 2 else None
        out.append(message.encode_data(key, node, 1, seq, 1000 + 60_000 * seq,
                                       [senml.record("l", level_m(seq)), senml.record("b", 3.7)],
                                       quality=q, flags=message.F_STORM if seq % 2 else 0))
    return out


def send_all(node, frames):
    for f in frames:
        node.send_raw(f)


def test_observations_reach_a_second_broker(tmp_path, mosquitto, subscriber):
    frost_broker = Mosquitto(tmp_path / "frost-mqtt").start()
    frost = Frost({"sew-01-level": True, "sew-02-level": True, "sew-01-battery": True}, id_type="string")
    listener = frost.listen_mqtt(frost_broker.port)
    path = st_config(tmp_path / "gw", mosquitto.url,
                     [{"reading": "l", "datastream": "{node}-level"},
                      {"node": "sew-01", "reading": "b", "datastream": "sew-01-battery"}],
                     {"url": frost_broker.url})
    main_st = Subscriber(mosquitto.port, topic="v1.1/#", client_id="main-st")
    gw = Gateway(config.load(path)).start()
    try:
        for name in ("sew-01", "sew-02"):
            node = UdpNode(name, NODES[name], gw.udp_addresses[0])
            send_all(node, frames_with_quality(NODES[name], name, 6))
        assert subscriber.wait(lambda: len(subscriber.ups()) == 12)
        assert subscriber.wait(lambda: len(frost.created) == 18)  # 6 levels each, 6 batteries of sew-01
        assert frost.refused == []
        levels = [o for ds, o in frost.created if ds == "sew-01-level"]
        odd = next(o for o in levels if o["parameters"]["seq"] == 1)
        assert odd["resultQuality"] == {"status": "degraded", "samples": 8, "rejected": 2}
        assert odd["parameters"]["storm"] is True and odd["parameters"]["node"] == "sew-01"
        even = next(o for o in levels if o["parameters"]["seq"] == 2)
        assert "resultQuality" not in even and "storm" not in even["parameters"]
        assert even["result"] == level_m(2)
        assert subscriber.wait(lambda: gw.st_sender.depth() == 0)
        assert main_st.on("/Observations") == []  # nothing on the [mqtt] broker
    finally:
        gw.stop()
        main_st.close()
        listener.loop_stop()
        frost_broker.stop()


def test_http_201_deletes_400_is_kept_and_503_is_retried(tmp_path, mosquitto, subscriber):
    # sew-02's Thing has no Location: FROST cannot make a FeatureOfInterest and answers 400
    frost = Frost({1: True, 2: False})
    server = frost.serve_http()
    path = st_config(tmp_path / "gw", mosquitto.url,
                     [{"node": "sew-01", "reading": "l", "datastream": 1},
                      {"node": "sew-02", "reading": "l", "datastream": 2}],
                     {"url": f"http://127.0.0.1:{server.server_port}/FROST-Server", "username": "gw",
                      "password": "secret", "retry_min_s": 0.05, "retry_max_s": 0.2})
    gw = Gateway(config.load(path)).start()
    try:
        n1 = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
        n2 = UdpNode("sew-02", NODES["sew-02"], gw.udp_addresses[0])
        send_all(n1, frames_with_quality(NODES["sew-01"], "sew-01", 4))
        send_all(n2, frames_with_quality(NODES["sew-02"], "sew-02", 3))
        assert subscriber.wait(lambda: len(frost.created) == 4 and len(frost.refused) == 3)
        assert subscriber.wait(lambda: gw.counters().get("st_rejected") == 3 and gw.st_sender.depth() == 0)
        db = sqlite3.connect(gw.s.data_dir / "outbox.sqlite")
        kept = db.execute("SELECT path, status, answer FROM st_rejected").fetchall()
        assert len(kept) == 3 and all(p == "v1.1/Datastreams(2)/Observations" and s == 400 for p, s, _ in kept)
        assert "FeatureOfInterest" in kept[0][2]
        assert gw.counters()["st_rejected"] == 3 and gw.counters()["st_sent"] == 4
        assert all(auth == "Basic Z3c6c2VjcmV0" for _, auth in server.requests)
        # the server in trouble: nothing is lost, everything arrives once it is back
        frost.fail_with = 503
        send_all(n1, frames_with_quality(NODES["sew-01"], "sew-01", 8)[4:])
        assert subscriber.wait(lambda: gw.counters().get("st_errors", 0) >= 2)
        assert gw.st_sender.depth() == 4 and len(frost.created) == 4
        frost.fail_with = None
        assert subscriber.wait(lambda: len(frost.created) == 8 and gw.st_sender.depth() == 0)
        assert sorted(o["parameters"]["seq"] for _, o in frost.created) == list(range(8))
        db.close()
    finally:
        gw.stop()
        server.shutdown()


def test_the_stand_in_refuses_what_frost_refuses():
    # the judge can say no: each check read in FROST-Server's source, broken once
    frost = Frost({1: True, 2: False})
    ok = {"phenomenonTime": "2026-05-01T12:00:00.250Z", "resultTime": "2026-05-01T12:00:01Z", "result": 0.42,
          "resultQuality": {"status": "ok"}, "parameters": {"node": "sew-01"}}
    path = "v1.1/Datastreams(1)/Observations"
    assert frost.create(path, json.dumps(ok).encode()) == (201, "Observations(1)")
    assert frost.create(path, json.dumps(dict(ok, result=None)).encode())[0] == 201  # result may be null
    assert frost.create(path, json.dumps({"result": 1}).encode())[0] == 201  # phenomenonTime: now
    bad = [
        (path, dict(ok, phenomenonTime="2026-05-01T12:00:00"), 400),  # no offset
        (path, dict(ok, phenomenonTime="2026-05-01 12:00:00Z"), 400),
        (path, dict(ok, resultTime="yesterday"), 400),
        (path, {k: v for k, v in ok.items() if k != "result"}, 400),
        (path, dict(ok, quality="good"), 400),  # unknown property
        (path, dict(ok, parameters=[1]), 400),
        ("v1.1/Datastreams(2)/Observations", ok, 400),  # its Thing has no Location: no FeatureOfInterest
        ("v1.1/Datastreams(3)/Observations", ok, 404),
        ("v1.1/Datastreams('1')/Observations", ok, 404),  # a string key where ids are integers
        ("v2.0/Datastreams(1)/Observations", ok, 404),
    ]
    for p, body, status in bad:
        assert frost.create(p, json.dumps(body).encode())[0] == status, (p, body)
    assert frost.create(path, b"{not json")[0] == 400


def test_a_resend_after_a_lost_answer_is_not_a_second_observation(tmp_path, mosquitto, subscriber):
    # FROST created the Observation but its 201 never arrived: the gateway sends it again. With
    # persistence.idGenerationMode ServerAndClientGenerated FROST takes the gateway's @iot.id and
    # refuses the repeat (500 "Failed to store data."); the gateway finds it with a GET and
    # deletes the row: one Observation per reading, counted st_already
    frost = Frost({1: True}, id_generation="ServerAndClientGenerated")
    frost.drop_answers = 2
    server = frost.serve_http()
    path = st_config(tmp_path / "gw", mosquitto.url, [{"node": "sew-01", "reading": "l", "datastream": 1}],
                     {"url": f"http://127.0.0.1:{server.server_port}/FROST-Server", "retry_min_s": 0.05,
                      "retry_max_s": 0.2})
    gw = Gateway(config.load(path)).start()
    try:
        node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
        assert node.run(4, deadline_s=10)
        assert subscriber.wait(lambda: gw.st_sender.depth() == 0 and gw.counters().get("st_already") == 2)
        assert len(frost.created) == 4 and frost.drop_answers == 0
        ids = [o["@iot.id"] for _, o in frost.created]
        assert len(set(ids)) == 4 and all(isinstance(i, int) and 0 < i < 2 ** 63 for i in ids)
        assert sorted(o["parameters"]["seq"] for _, o in frost.created) == list(range(4))
        assert [r[0] for r in frost.refused] == [500, 500]  # the two repeats, nothing stored twice
        assert gw.counters()["st_sent"] == 4 and not gw.counters().get("st_rejected")
    finally:
        gw.stop()
        server.shutdown()


def test_observation_ids_are_deterministic_and_an_uncertain_time_is_marked():
    # the same frame gives the same ids (on a resend, on another gateway); string Datastream ids
    # get UUIDs; a frame whose time is only an upper bound says so in parameters
    import uuid

    from gateway.config import StreamMapping
    from gateway.outputs import Frame, SensorThings

    key = NODES["sew-01"]
    raw = message.encode_data(key, "sew-01", 4, 9, 5000, [senml.record("l", 0.5), senml.record("b", 3.7)])
    m = message.decode(raw, {"sew-01": key}.get)
    st = SensorThings([StreamMapping(node="*", reading="l", datastream="{node}-level"),
                       StreamMapping(node="sew-01", reading="b", datastream=7)], "gw-a")
    other = SensorThings([StreamMapping(node="*", reading="l", datastream="{node}-level"),
                          StreamMapping(node="sew-01", reading="b", datastream=7)], "gw-b")

    def observations(out, source):
        return {p: json.loads(b) for p, b in out.messages(Frame("sew-01", m, raw, 1.7e9, 1.69e9, source, "udp"))}

    first = observations(st, "uncertain")
    again = observations(other, "uptime")
    level, battery = first["v1.1/Datastreams('sew-01-level')/Observations"], first["v1.1/Datastreams(7)/Observations"]
    assert str(uuid.UUID(level["@iot.id"])) == level["@iot.id"] and isinstance(battery["@iot.id"], int)
    assert {p: o["@iot.id"] for p, o in first.items()} == {p: o["@iot.id"] for p, o in again.items()}
    assert level["parameters"]["time_uncertain"] is True
    assert level["parameters"]["phenomenonTime_latest"] == level["phenomenonTime"]
    assert "time_uncertain" not in again["v1.1/Datastreams(7)/Observations"]["parameters"]
    off = SensorThings([StreamMapping(node="*", reading="l", datastream="{node}-level")], "gw-a", ids=False)
    assert all("@iot.id" not in o for o in observations(off, "uptime").values())


def test_http_server_gone_and_back(tmp_path, mosquitto, subscriber):
    frost = Frost({1: True})
    server = frost.serve_http()
    port = server.server_port
    path = st_config(tmp_path / "gw", mosquitto.url, [{"node": "sew-01", "reading": "l", "datastream": 1}],
                     {"url": f"http://127.0.0.1:{port}/FROST-Server", "retry_min_s": 0.05, "retry_max_s": 0.2})
    server.shutdown()
    server.server_close()  # nothing listens: connection refused
    gw = Gateway(config.load(path)).start()
    try:
        node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
        assert node.run(5, deadline_s=10)  # ACKed: stored durably, whatever the SensorThings server does
        assert subscriber.wait(lambda: gw.counters().get("st_errors", 0) >= 2 and gw.st_sender.depth() == 5)
        server = frost.serve_http(port=port)
        assert subscriber.wait(lambda: len(frost.created) == 5 and gw.st_sender.depth() == 0)
        assert sorted(o["parameters"]["seq"] for _, o in frost.created) == list(range(5))
    finally:
        gw.stop()
        server.shutdown()


def test_frost_broker_gone_and_back(tmp_path, mosquitto, subscriber):
    frost_broker = Mosquitto(tmp_path / "frost-mqtt").start()
    frost = Frost({"sew-01-level": True}, id_type="string")
    path = st_config(tmp_path / "gw", mosquitto.url, [{"reading": "l", "datastream": "{node}-level"}],
                     {"url": frost_broker.url, "retry_min_s": 1.0, "retry_max_s": 1.0})
    gw = Gateway(config.load(path)).start()
    listener = None  # subscribes (FROST's broker would be listening) well before the gateway retries
    try:
        assert subscriber.wait(lambda: gw.st_sender.connected)
        frost_broker.stop()
        node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
        assert node.run(4, deadline_s=10)
        assert subscriber.wait(lambda: len(subscriber.ups()) == 4)
        assert gw.st_sender.depth() == 4  # kept until FROST's broker has them
        frost_broker.start()
        listener = frost.listen_mqtt(frost_broker.port)
        assert subscriber.wait(lambda: gw.st_sender.depth() == 0, 30)
        assert subscriber.wait(lambda: len(frost.created) == 4)
        assert frost.refused == []
    finally:
        gw.stop()
        if listener is not None:
            listener.loop_stop()
        frost_broker.stop()


def test_tls_to_frost_broker_and_https(tmp_path, mosquitto, subscriber, tls_broker):  # noqa: F811
    # FROST behind TLS: its broker wants a client certificate and a password (mqtts://), its
    # HTTP API a server certificate from the city's CA (https://)
    broker, pki = tls_broker
    frost = Frost({"sew-01-level": True}, id_type="string")
    listener = frost.listen_mqtt(broker.port, tls={"ca_certs": str(pki["ca"]), "certfile": str(pki["client"]),
                                                   "keyfile": str(pki["client_key"])}, username="gw",
                                 password="s3cret")
    tls_files = {"ca": str(pki["ca"]), "cert": str(pki["client"]), "key": str(pki["client_key"])}
    path = st_config(tmp_path / "gw", mosquitto.url, [{"reading": "l", "datastream": "{node}-level"}],
                     {"url": f"mqtts://127.0.0.1:{broker.port}", "username": "gw", "password": "s3cret",
                      **tls_files})
    try:
        _three_frames_reach(path, frost, subscriber)
    finally:
        listener.loop_stop()
    https_frost = Frost({1: True})
    server = https_frost.serve_http(tls=(str(pki["server"]), str(pki["server_key"])))
    path = st_config(tmp_path / "gw2", mosquitto.url, [{"node": "sew-01", "reading": "l", "datastream": 1}],
                     {"url": f"https://127.0.0.1:{server.server_port}/FROST-Server", "ca": str(pki["ca"])})
    try:
        _three_frames_reach(path, https_frost, subscriber)
    finally:
        server.shutdown()


def _three_frames_reach(path, frost, subscriber):
    # a gateway with the config at path: 3 frames of sew-01 become 3 Observations in FROST
    gw = Gateway(config.load(path)).start()
    try:
        node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
        assert node.run(3, deadline_s=10)
        assert subscriber.wait(lambda: len(frost.created) == 3 and gw.st_sender.depth() == 0)
    finally:
        gw.stop()
