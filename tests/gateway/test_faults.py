# Zero loss under faults: the broker restarted or down for a while, the gateway killed
# with SIGKILL mid-stream (nodes retransmit what is not ACKed), a full disk.
import datetime
import logging
import threading
import time

import pytest

from gateway.outputs import iso
from tests.gateway.conftest import NODES, GatewayProcess, senml_fails_on, wait_for, write_config
from tests.support.udpnode import UdpNode, run_nodes

pytestmark = pytest.mark.integration


def first_seen_order(ups, node):
    seen, order = set(), []
    for u in ups:
        if u["node"] == node and u["seq"] not in seen:
            seen.add(u["seq"])
            order.append(u["seq"])
    return order


def run_in_background(nodes, count, rate, deadline_s):
    results = []
    t = threading.Thread(target=lambda: results.extend(run_nodes(nodes, count, deadline_s=deadline_s, rate=rate)),
                         daemon=True)
    t.start()
    return t, results


@pytest.mark.parametrize("publisher", ["thread", "process"])
def test_broker_down_for_a_while_zero_loss_in_order(gateway_factory, mosquitto, subscriber, publisher):
    gw = gateway_factory(mqtt_extra=f'publisher = "{publisher}"')
    # connected before the broker goes (a publisher process can take a while to spawn on a busy machine)
    assert subscriber.wait(lambda: gw.forwarder.connected, 15)
    nodes = [UdpNode(n, k, gw.udp_addresses[0]) for n, k in NODES.items()]
    t, results = run_in_background(nodes, 150, rate=30, deadline_s=40)  # ~5 s of frames
    # readiness, not sleeps: frames reach the broker, then it goes away
    assert subscriber.wait(lambda: len(subscriber.keys_up()) >= 10, 15)
    mosquitto.stop()
    assert subscriber.wait(lambda: not gw.forwarder.connected, 15)
    # frames keep coming, are stored and ACKed while the broker is away
    accepted = gw.counters()["accepted"]
    assert subscriber.wait(lambda: gw.counters()["accepted"] >= accepted + 30 and gw.counters()["outbox_depth"] > 0,
                           15)
    assert not gw.forwarder.connected
    mosquitto.start()
    t.join(45)
    assert results == [True, True, True]  # every frame was ACKed
    assert subscriber.wait(lambda: len(subscriber.keys_up()) == 450, 30), len(subscriber.keys_up())
    ups = subscriber.ups()
    for node in NODES:
        assert first_seen_order(ups, node) == list(range(150))  # the backlog drained in order
    assert subscriber.wait(lambda: gw.counters()["outbox_depth"] == 0, 5)
    assert gw.forwarder.connects >= 2


@pytest.mark.slow
@pytest.mark.parametrize("publisher", ["thread", "process"])
def test_acceptance_broker_restart_and_gateway_kill9(tmp_path, mosquitto, subscriber, udp_port, publisher):
    # 3 nodes x 200 frames over UDP; mosquitto restarts and the gateway is killed with
    # SIGKILL and restarted during the run: every (node, boot, seq) reaches P/nodes/+/up.
    path = write_config(tmp_path / "gw", mosquitto.url, udp=f"127.0.0.1:{udp_port}",
                        mqtt_extra=f'publisher = "{publisher}"')
    gwp = GatewayProcess(path).start(wait_port=udp_port)
    try:
        nodes = [UdpNode(n, k, ("127.0.0.1", udp_port)) for n, k in NODES.items()]
        t, results = run_in_background(nodes, 200, rate=80, deadline_s=60)
        time.sleep(0.6)
        mosquitto.restart(down_s=0.5)
        back = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        # reconnected (an "online" state stamped after the restart), then killed while frames flow
        assert subscriber.wait(lambda: any(j["state"] == "online" and j["time"] >= back
                                           for _, j in subscriber.on("/gateways/gw-test/state")), 10)
        time.sleep(0.2)
        gwp.kill9()  # mid-stream: stored-but-unACKed, ACKed-but-unpublished and in-flight rows all exist
        # the broker publishes the retained last will (or the publisher child says goodbye)
        assert subscriber.wait(lambda: [j for t, j in subscriber.on("/gateways/gw-test/state")][-1]["state"]
                               == "offline", 5)
        time.sleep(0.3)
        gwp.start(wait_port=udp_port)
        t.join(65)
        assert results == [True, True, True]
        want = {(n, 1, s) for n in NODES for s in range(200)}
        assert subscriber.wait(lambda: subscriber.keys_up() >= want, 30), len(want - subscriber.keys_up())
        assert subscriber.keys_up() == want  # nothing else was forwarded
        assert sum(u["node"] in NODES for u in subscriber.ups()) >= 600
    finally:
        assert gwp.terminate() == 0


def test_full_disk_refuses_then_recovers(gateway_factory, mosquitto, subscriber):
    # The outbox may grow to 160 KiB (SQLite reports "database or disk is full" at the cap,
    # as on a real full disk). With the broker away it fills: frames are refused, not
    # ACKed, an alarm is raised; when the broker is back it drains and every frame arrives.
    mosquitto.stop()
    gw = gateway_factory(outbox="max_bytes = 163840\nmin_free_mb = 0")
    node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0], resend_s=0.2)
    done = []
    t = threading.Thread(target=lambda: done.append(node.run(600, deadline_s=40)), daemon=True)
    t.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not gw.counters()["rejected"].get("disk_full"):
        time.sleep(0.05)
    c = gw.counters()
    assert c["rejected"].get("disk_full", 0) > 0, c
    assert "disk_full" in gw.alarms()
    stored = c["outbox_depth"]
    assert 50 < stored < 600
    assert len(node.acknowledged()) <= stored  # nothing refused was ACKed
    mosquitto.start()
    t.join(45)
    assert done == [True]
    assert subscriber.wait(lambda: len(subscriber.keys_up()) == 600, 30)
    assert subscriber.keys_up() == {("sew-01", 1, s) for s in range(600)}
    assert subscriber.wait(lambda: gw.alarms() == [], 10)  # the alarm holds 5 s after the last refusal


def test_outbox_message_cap_refuses_with_alarm(gateway_factory, mosquitto, subscriber):
    mosquitto.stop()
    # no forecast rows: the cap is counted in frames here (a forecast is an outbox row too)
    gw = gateway_factory(outbox="max_messages = 40", forecast="enabled = false")
    node = UdpNode("sew-02", NODES["sew-02"], gw.udp_addresses[0])
    assert not node.run(60, deadline_s=1.5)
    c = gw.counters()
    assert c["outbox_depth"] == 40 and c["rejected"]["outbox_full"] > 0
    assert len(node.acknowledged()) == 40 and gw.alarms() == ["outbox_full"]
    mosquitto.start()
    assert node.run(60, deadline_s=20)
    assert subscriber.wait(lambda: len(subscriber.keys_up()) == 60, 20)


def test_publisher_process_killed_is_restarted(gateway_factory, subscriber):
    import os
    import signal

    gw = gateway_factory(mqtt_extra='publisher = "process"')
    node = UdpNode("air-03", NODES["air-03"], gw.udp_addresses[0])
    assert node.run(50, deadline_s=10)
    assert subscriber.wait(lambda: gw.forwarder.connected and len(subscriber.keys_up()) == 50, 10)
    os.kill(gw.forwarder._proc.pid, signal.SIGKILL)  # e.g. the OOM killer
    assert node.run(50, start=50, deadline_s=10)  # ingest and ACKs never depended on it
    assert subscriber.wait(lambda: len(subscriber.keys_up()) == 100, 15)
    assert gw.forwarder.restarts == 1


@pytest.mark.slow
def test_acceptance_with_citynode_simulate(tmp_path, mosquitto, subscriber, udp_port):
    # The acceptance run with the firmware's own node code as the sender: `citynode simulate`
    # (3 nodes x 200 frames over UDP) while mosquitto restarts and the gateway is killed
    # with SIGKILL and restarted. Every (node, boot, seq) reaches P/nodes/+/up.
    import subprocess
    import sys

    from tests.gateway.conftest import REPO

    path = write_config(tmp_path / "gw", mosquitto.url, udp=f"127.0.0.1:{udp_port}")
    gwp = GatewayProcess(path).start(wait_port=udp_port)
    sim = subprocess.Popen([sys.executable, "-m", "tools.cli", "simulate", "--node", "sew-01", "--node", "sew-02",
                            "--node", "air-03", "--frames", "200",
                            "--rate", "60", "--to", f"udp://127.0.0.1:{udp_port}", "--keys",
                            str(tmp_path / "gw" / "keys.toml"), "--state", str(tmp_path / "sim"), "--timeout", "60"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        mosquitto.restart(down_s=0.5)
        time.sleep(0.8)
        gwp.kill9()
        time.sleep(0.5)
        gwp.start(wait_port=udp_port)
        out, _ = sim.communicate(timeout=90)
        assert sim.returncode == 0, out
        assert subscriber.wait(lambda: len(subscriber.keys_up()) >= 600, 30)
        boots = {(u["node"], u["boot"]) for u in subscriber.ups()}
        assert len(boots) == 3, boots  # one boot per simulated node
        want = {(n, b, s) for n, b in boots for s in range(200)}
        assert subscriber.wait(lambda: subscriber.keys_up() >= want, 30), len(want - subscriber.keys_up())
        assert subscriber.keys_up() == want
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
        assert gwp.terminate() == 0


def test_a_frame_whose_commit_failed_is_dated_as_if_it_came_first_now(gateway_factory, mosquitto, subscriber):
    # The outbox cannot be written (SQLite's "attempt to write a readonly database", as after the
    # kernel remounts an SD card read-only: PRAGMA query_only answers the same) while a node
    # resends two frames three times: the commits fail, nothing is ACKed. Each failed attempt
    # dated its frame (gateway/timing.py): the clock must forget those times with the commit, or
    # every failed attempt holds a millisecond and the stored copy moves away from its true time,
    # one millisecond per failure (SPEC.md 8: a node clock's time; the anchor's reception time).
    import socket

    from protocol import message, senml

    gw = gateway_factory(forecast="enabled = false")
    key, node = NODES["sew-01"], "sew-01"
    t0 = int(time.time()) - 600
    records = [senml.record("l", 0.5), senml.record("b", 3.7)]
    # seq 0 and 1 carry the node's clock (whole seconds), seq 2 none (dated at the gateway)
    frames = [message.encode_data(key, node, 1, 0, 1_000, records, time_s=t0),
              message.encode_data(key, node, 1, 1, 301_000, records, time_s=t0 + 300),
              message.encode_data(key, node, 1, 2, 601_000, records)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)

    def failed():
        return gw.counters()["rejected"].get("storage", 0)

    try:
        sock.sendto(frames[0], gw.udp_addresses[0])
        assert message.decode(sock.recv(512), NODES.get)["type"] == "ack"
        # its row PUBACKed and deleted: no other commit comes between the failing ones
        assert wait_for(lambda: gw.pipeline.depth == 0 and not gw.pipeline.pending_deletes, 15)
        for want in range(1, 7):  # seq 1, seq 2, three times
            # read-only again: a failed commit reopens the store's connection (store.py)
            gw.store.db.execute("PRAGMA query_only = ON")
            sock.sendto(frames[2 - want % 2], gw.udp_addresses[0])
            assert wait_for(lambda want=want: failed() == want, 10), gw.counters()
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(512)  # nothing refused was ACKed
        sock.settimeout(5)
        for frame in frames[1:]:  # writable again (the last failure reopened the connection)
            sock.sendto(frame, gw.udp_addresses[0])
        assert subscriber.wait(lambda: {u["seq"] for u in subscriber.ups()} == {0, 1, 2}, 15)
    finally:
        sock.close()
    assert failed() == 6
    ups = {u["seq"]: u for u in subscriber.ups()}
    assert (ups[0]["time"], ups[0]["time_source"]) == (iso(t0), "node")
    # the node's own clock, to the millisecond: not t0 + 300.003 after three failed attempts
    assert (ups[1]["time"], ups[1]["time_source"]) == (iso(t0 + 300), "node")
    # the newest live frame: its own reception time, as when the failed copies never arrived
    # (not 3 ms before the first failed copy's reception, as a resend placed by uptime)
    assert (ups[2]["time"], ups[2]["time_source"]) == (ups[2]["received"], "received")


def test_an_outbox_that_cannot_be_reopened_is_a_counted_refusal(gateway_factory, mosquitto, subscriber, caplog):
    # A commit fails and the store's connection is reopened; the reopen fails too (the data_dir's
    # disk went away: a USB disk unplugged, here its directory moved). The frame is refused like
    # any failed commit (counted, alarm, not ACKed; no traceback), and once the disk is back the
    # next commit opens the outbox again and the resend is stored.
    import os
    import socket

    from protocol import message, senml

    gw = gateway_factory(forecast="enabled = false")
    key, node = NODES["sew-01"], "sew-01"
    records = [senml.record("l", 0.5), senml.record("b", 3.7)]
    frames = [message.encode_data(key, node, 1, seq, 1_000 + seq, records) for seq in (0, 1)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    data_dir = gw.s.data_dir
    try:
        sock.sendto(frames[0], gw.udp_addresses[0])
        assert message.decode(sock.recv(512), NODES.get)["type"] == "ack"
        assert wait_for(lambda: gw.pipeline.depth == 0 and not gw.pipeline.pending_deletes, 15)
        gw.store.db.execute("PRAGMA query_only = ON")  # this connection fails (SQLITE_READONLY)...
        os.rename(data_dir, f"{data_dir}.gone")  # ...and a new one cannot be opened
        try:
            sock.sendto(frames[1], gw.udp_addresses[0])
            assert wait_for(lambda: gw.counters()["rejected"].get("storage") == 1, 10), gw.counters()
            assert "storage_error" in gw.alarms()
        finally:
            os.rename(f"{data_dir}.gone", data_dir)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(512)  # not ACKed
        sock.settimeout(5)
        sock.sendto(frames[1], gw.udp_addresses[0])
        assert message.decode(sock.recv(512), NODES.get)["seq"] == 1
        assert subscriber.wait(lambda: {u["seq"] for u in subscriber.ups()} == {0, 1}, 15)
    finally:
        sock.close()
    assert gw.counters()["rejected"] == {"storage": 1}
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]


def test_an_output_that_cannot_convert_a_frame_loses_its_rows_only(gateway_factory, mosquitto, subscriber, caplog,
                                                                   monkeypatch):
    # The frame is still the node's data when one output cannot convert it: it is stored, dated,
    # published as `up` and ACKed; only that output's rows of that frame are left out, counted
    # (output_failures) and logged in one line. The frames around it in the batch go out whole.
    # Before, the frame was refused (not ACKed, resent for ever, each copy holding a millisecond
    # of the node's clock). No reading makes an output raise any more, so the fault is injected:
    # the SenML pack raises on seq 2. A reading of -2**64 (CBOR's lowest negative integer, SPEC.md
    # 5 allows any number; more than orjson writes) is the real case that did, and now reaches
    # every output: every output writes its JSON through gateway/outputs.py _dumps.
    senml_fails_on(monkeypatch, 2)
    import socket

    from protocol import message, senml

    gw = gateway_factory(publish="senml = true\n", forecast="enabled = false")
    key, node = NODES["sew-01"], "sew-01"
    t0 = int(time.time()) - 600
    frames = [message.encode_data(key, node, 1, seq, 1_000 + seq, [senml.record("l", 0.5), senml.record("b", b)],
                                  time_s=t0)
              for seq, b in enumerate((3.7, -2**64, 3.6))]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    try:
        for frame in frames:  # one datagram each, back to back: mostly one batch
            sock.sendto(frame, gw.udp_addresses[0])
        acked = set()
        while len(acked) < 3:
            m = message.decode(sock.recv(512), NODES.get)
            acked |= set(range(m["cum"] + 1)) if m.get("cum") is not None else {m["seq"]}
    finally:
        sock.close()
    assert subscriber.wait(lambda: {u["seq"] for u in subscriber.ups()} == {0, 1, 2}, 15)
    assert subscriber.wait(lambda: len(subscriber.on("/senml")) == 2, 5)
    time.sleep(0.3)
    ups = {u["seq"]: u for u in subscriber.ups()}
    # each frame its own millisecond of the node's second, in order: nothing held by a refused copy
    assert [(ups[s]["time"], ups[s]["time_source"]) for s in (0, 1, 2)] == [
        (iso(t0 + ms / 1000), "node") for ms in (0, 1, 2)]
    assert ups[1]["senml"][1]["v"] == -2**64
    packs = [j for _, j in subscriber.on("/senml")]
    assert [j[0]["bn"] for j in packs] == ["sew-01:", "sew-01:"]
    assert [j[1]["v"] for j in packs] == [3.7, -2**64]  # seq 0 and 1; seq 2's was left out
    c = gw.counters()
    assert (c["accepted"], c["rejected"], c["output_failures"]) == (3, {}, 1), c
    said = [r.getMessage() for r in caplog.records if "senml" in r.getMessage() and "sew-01" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said
    assert not [r for r in caplog.records if r.exc_info]


def test_a_frame_whose_envelope_cannot_be_made_is_refused_and_gives_its_time_back(gateway_factory, mosquitto,
                                                                                   subscriber):
    # The `up` envelope is the frame's own record (gateway/outputs.py Envelope.required): a frame
    # without it is refused (payload, not ACKed: the node keeps it), never stored without it. No
    # frame a node can send makes it raise today, so the fault is injected into this gateway's
    # envelope for one copy of seq 1. The refused copy must hold no millisecond of the node's
    # clock: the next frame, and the resend, are dated as though it never came.
    import socket

    from protocol import message, senml

    gw = gateway_factory(forecast="enabled = false")
    key, node = NODES["sew-01"], "sew-01"
    t0 = int(time.time()) - 600
    frames = [message.encode_data(key, node, 1, seq, 1_000 + seq, [senml.record("l", 0.5)], time_s=t0)
              for seq in range(3)]
    env = gw.pipeline.outputs.all[0]
    real, faults = env.messages, []

    def faulty(f):
        if f.msg["seq"] == 1 and not faults:
            faults.append(f.time_s)
            raise ValueError("injected")
        return real(f)

    env.messages = faulty
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    acked = []

    def ack():
        acked.append(message.decode(sock.recv(512), NODES.get)["seq"])

    try:
        sock.sendto(frames[0], gw.udp_addresses[0])
        ack()
        sock.sendto(frames[1], gw.udp_addresses[0])  # refused: no ACK
        assert wait_for(lambda: gw.counters()["rejected"].get("payload") == 1, 10)
        sock.sendto(frames[2], gw.udp_addresses[0])
        ack()
        sock.sendto(frames[1], gw.udp_addresses[0])  # the resend
        ack()
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(512)  # the refused copy was not ACKed
    finally:
        sock.close()
    assert acked == [0, 2, 1] and faults == [t0 + 0.001]
    assert subscriber.wait(lambda: len(subscriber.ups()) == 3, 15)
    ups = {u["seq"]: u for u in subscriber.ups()}
    assert [ups[s]["time"] for s in (0, 2, 1)] == [iso(t0), iso(t0 + 0.001), iso(t0 + 0.002)]
    c = gw.counters()
    assert (c["accepted"], c["rejected"]) == (3, {"payload": 1}), c


def test_a_record_time_offset_no_time_can_carry_is_refused_at_ingest(gateway_factory, caplog):
    # SPEC.md 5 allows any finite time offset `t`; one of 1e300 s put the record's time where no
    # time format reaches: the SensorThings output's ISO 8601 phenomenonTime overflowed (counted
    # as an output failure: the frame stored, its Observations lost). RFC 8428 4.5.3 reads a time
    # of 2^28 s or more as absolute, so an offset of that size either way is no relative SenML
    # time: the frame is refused at ingest (payload, counted, one line; not ACKed, the
    # node keeps it), as a bad unit is (gateway/conform.py). Offsets inside the bound pass.
    from protocol import message, senml

    st = 'node = "sew-01"\nreading = "l"\ndatastream = 5\n'  # Observations over MQTT
    gw = gateway_factory(forecast="enabled = false", **{"[sensorthings]": st})
    key, node = NODES["sew-01"], "sew-01"
    t0 = int(time.time()) - 600
    offsets = (-60.0, 1e300, -1e300, 2**28, 2**28 - 1, -(2**28 - 1))
    frames = [message.encode_data(key, node, 1, seq, 1_000 + seq, [{**senml.record("l", 0.5), senml.T: dt},
                                                                     senml.record("b", 3.6)], time_s=t0)
              for seq, dt in enumerate(offsets)]
    with caplog.at_level(logging.WARNING):
        send_all(gw, frames)
    c = gw.counters()
    assert (c["accepted"], c["rejected"], c.get("output_failures", 0)) == (3, {"payload": 3}, 0), c
    said = [r.getMessage() for r in caplog.records if "RFC 8428 4.5.3" in r.getMessage()]
    assert len(said) == 1 and "sew-01" in said[0] and "\n" not in said[0], said  # at most one per 10 s
    node_state = {n["id"]: n for n in gw.status()["nodes"]}[node]
    assert node_state["rejected"] == {"payload": 3}, node_state


def test_a_text_label_named_as_a_senml_label_is_refused_at_ingest(gateway_factory, caplog):
    # A record's extension field labelled "n" (a SenML label's name, SPEC.md 5): with a list in it
    # the up envelope raised TypeError (the frame refused with a bare "TypeError" line, the node
    # resending it until it dropped it); with text in it the SenML pack lost the record's name.
    # Now the frame is refused as payload, counted, in one line naming the label; others flow.
    from protocol import message

    gw = gateway_factory(forecast="enabled = false")
    key, node = NODES["sew-01"], "sew-01"
    recs = ([{0: "l", 2: 0.5, "n": ["x"]}], [{0: "l", 2: 0.5, "n": "h"}], [{0: "l", 2: 0.5, "note": "ok"}])
    frames = [message.encode_data(key, node, 1, seq, 1_000 + seq, r) for seq, r in enumerate(recs)]
    with caplog.at_level(logging.INFO):
        send_all(gw, frames)
    c = gw.counters()
    assert (c["accepted"], c["rejected"], c.get("output_failures", 0)) == (1, {"payload": 2}, 0), c
    said = [r.getMessage() for r in caplog.records if "text label 'n'" in r.getMessage()]
    assert said and all("\n" not in s for s in said), said  # one line (at most one per 10 s)
    assert not [r for r in caplog.records if "TypeError" in r.getMessage()]


def send_all(gw, frames):
    # frames to the gateway over UDP, one datagram each; -> once all are handled
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        for frame in frames:
            sock.sendto(frame, gw.udp_addresses[0])
        assert wait_for(lambda: handled(gw.counters()) == len(frames), 15), gw.counters()
    finally:
        sock.close()


def handled(c):
    # frames the gateway has stored, answered as duplicates or refused (a frame taken off the
    # queue is counted only once its batch is committed: the queue's depth says less)
    return c["accepted"] + c["duplicates"] + sum(c["rejected"].values())
