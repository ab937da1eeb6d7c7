# gateway/paho_adapter.py, the one module that uses paho's internals: the internals are
# where and as it expects for the installed paho (a paho upgrade fails here, loudly), a
# paho that differs is refused at the gateway's start with one line; the publisher's
# buffered socket serves paho's small reads from one recv and holds its writes until
# flush(); and against a real mosquitto, the gateway's client uses it and every QoS 1
# publish is PUBACKed.
import fcntl
import importlib.metadata
import inspect
import pathlib
import select
import socket
import sys
import termios
import time

import paho.mqtt.client as mqtt
import pytest

from gateway import paho_adapter
from gateway.paho_adapter import BufferedSocket, Client, PahoIncompatible

PUBACK = b"\x40\x02"  # MQTT 3.1.1 section 3.4: fixed header, remaining length 2, packet id


def test_the_installed_paho_has_every_internal_the_adapter_uses():
    # Fails on a paho upgrade that moved any of them: then read paho's new client.py, adapt
    # gateway/paho_adapter.py (and its METHODS / ATTRIBUTES), and move the pin in pyproject.toml.
    version = importlib.metadata.version("paho-mqtt")
    assert paho_adapter.problems() == [], f"paho-mqtt {version}"
    lo, hi = paho_adapter.SUPPORTED
    assert lo <= paho_adapter._version(version) < hi
    pyproject = (pathlib.Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'"paho-mqtt>={lo[0]}.{lo[1]},<{hi[0]}"' in pyproject  # the pin is what the adapter knows
    for name, params in paho_adapter.METHODS.items():
        assert tuple(inspect.signature(getattr(mqtt.Client, name)).parameters) == params, name
    # and paho's own code still goes through them the way the adapter hooks in
    src = inspect.getsource(mqtt.Client)
    assert "sock = self._create_socket()" in src  # connect/reconnect: our socket factory
    assert "self._sock.recv(" in src and "self._sock.send(" in src  # all I/O on self._sock (BufferedSocket)
    assert "return self._handle_pubackcomp(" in src  # a PUBACK is handled there (our hook)
    assert "self._in_packet[\"command\"]" in src and "self._last_bytes_received = time_func()" in src


def test_a_paho_that_differs_is_named_in_one_line():
    class Renamed(mqtt.Client):  # a release that renamed its message id generator
        _mid_generate = None

        def _handle_pubackcomp(self, cmd, extra):  # and re-shaped the PUBACK handler
            return None

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._sock = False
            del self._in_packet

    found = paho_adapter.problems(Renamed)
    assert found == ["Client._mid_generate is missing",
                     "Client._handle_pubackcomp takes ('self', 'cmd', 'extra'), expected ('self', 'cmd')",
                     "Client._sock is not None before connect()",
                     "Client._in_packet is not a dict with 'command' and 'packet'"]
    assert paho_adapter.problems(version="3.0.0") == [
        "paho-mqtt 3.0.0 is installed; gateway/paho_adapter.py is written for >=2.1,<3.0"]
    assert paho_adapter.version_problem("2.0.5") and paho_adapter.version_problem("2.1.0") is None
    assert paho_adapter.version_problem("2.2.0.post1") is None


def test_the_gateway_refuses_to_start_on_a_paho_that_differs(tmp_path, monkeypatch):
    # the installed paho's client with one internal gone, as a release that dropped it
    from gateway import config
    from gateway.daemon import Gateway
    from tests.gateway.conftest import write_config

    s = config.load(write_config(tmp_path, "mqtt://127.0.0.1:9"))
    monkeypatch.delattr(mqtt.Client, "_mid_generate")
    paho_adapter.require.cache_clear()
    try:
        with pytest.raises(PahoIncompatible) as e:
            Gateway(s, keys={}).start()
        assert isinstance(e.value, ValueError)  # gateway/cli.py: "cannot start: ...", no traceback
        assert str(e.value).startswith("the installed paho-mqtt does not fit gateway/paho_adapter.py: "
                                       "Client._mid_generate is missing")
        with pytest.raises(PahoIncompatible):
            Client(mqtt.CallbackAPIVersion.VERSION2)
    finally:
        monkeypatch.undo()
        paho_adapter.require.cache_clear()
    paho_adapter.require()  # the real one is fine again


def test_reads_are_served_from_one_recv_and_writes_wait_for_flush():
    a, b = socket.socketpair()
    a.setblocking(False)
    s = BufferedSocket(a)
    b.sendall(PUBACK + b"\x00\x01" + PUBACK + b"\x00\x02")
    select.select([a], [], [], 2)
    # paho's order: type byte, length byte, body
    assert s.recv(1) == b"\x40" and s.pending() == 7
    assert s.recv(1) == b"\x02" and s.recv(2) == b"\x00\x01"
    assert (s.recv(1), s.recv(1), s.recv(2)) == (b"\x40", b"\x02", b"\x00\x02")
    assert s.pending() == 0
    with pytest.raises(BlockingIOError):  # nothing left: paho sees "would block" as before
        s.recv(1)
    assert s.send(b"abc") == 3 and s.send(b"def") == 3 and s.want_write()
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(10)  # nothing was written yet
    assert s.flush() and not s.want_write()
    assert b.recv(10) == b"abcdef"
    b.close()
    assert s.recv(1) == b""  # the peer closed: paho's "connection lost"
    s.close()


def test_a_run_of_outbox_pubacks_is_taken_from_the_buffer_up_to_the_first_other_packet():
    a, b = socket.socketpair()
    a.setblocking(False)
    s = BufferedSocket(a)
    ours = {1, 2, 3, 9}
    # three of ours, one paho's own (id 7), one of ours after it, and half a PUBACK
    b.sendall(PUBACK + b"\x00\x01" + PUBACK + b"\x00\x02" + PUBACK + b"\x00\x03" + PUBACK + b"\x00\x07"
              + PUBACK + b"\x00\x09" + PUBACK)
    select.select([a], [], [], 2)
    assert s.fill() == 22
    claimed = []

    def hook(mid):
        if mid in ours:
            claimed.append(mid)
            return True
        return False

    assert s.take_pubacks(hook) == 3 and claimed == [1, 2, 3]
    assert s.buffered() == 10 and s.take_pubacks(hook) == 0  # id 7 is paho's: it reads that one
    assert s.recv(4) == PUBACK + b"\x00\x07"
    assert s.take_pubacks(hook) == 1 and claimed[-1] == 9
    assert s.take_pubacks(hook) == 0 and s.buffered() == 2  # half a packet stays for paho
    assert s.fill() == 0  # nothing more readable now
    b.close()
    s._in, s._pos = b"", 0
    assert s.fill() == -1  # the peer closed
    s.close()


def test_flush_keeps_what_the_kernel_did_not_take():
    a, b = socket.socketpair()
    a.setblocking(False)
    s = BufferedSocket(a)
    s.send(b"x" * 10_000_000)  # far more than a socket buffer
    assert s.flush() is False and s.want_write()
    got = 0
    while got < 10_000_000:
        select.select([b], [], [], 2)
        got += len(b.recv(1 << 20))
        s.flush()
    assert got == 10_000_000 and not s.want_write()
    s.close()
    b.close()


@pytest.mark.integration
def test_outbox_publishes_reach_a_subscriber_and_every_one_is_acknowledged(mosquitto):
    got = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bufsock-sub", protocol=mqtt.MQTTv311)
    sub.on_message = lambda cl, u, m: got.append((m.topic, m.payload, m.retain))
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("t/#", qos=1)
    sub.loop_start()
    acked, own = [], []
    c = Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bufsock-test", protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(0)
    c.on_publish = lambda cl, u, mid, rc, p: own.append(mid)  # paho's own publishes still report here
    try:
        c.connect("127.0.0.1", mosquitto.port)
        sock = c.socket()
        assert isinstance(sock, BufferedSocket)  # paho's socket factory still takes our wrapper
        deadline = time.monotonic() + 15
        while not c.is_connected() and time.monotonic() < deadline:
            sock.flush()
            select.select([sock], [], [], 0.1)
            c.loop_read()
        time.sleep(0.3)  # the subscriber's SUBACK
        mids = {}
        c.on_outbox_puback = lambda mid: mids.pop(mid, None) is not None and not acked.append(mid)
        payloads = [bytes([i % 251]) * (1 + i % 700) for i in range(2000)]  # 1..700 bytes: 1- and 2-byte lengths
        for i, p in enumerate(payloads):
            mids[c.publish_outbox(f"t/{i % 7}", p)] = i
        paho_mid = c.publish("t/state", b"s", qos=1, retain=True).mid
        mids_sent = len(acked) + len(mids)
        while (mids or paho_mid not in own) and time.monotonic() < deadline:
            w = [sock] if not sock.flush() else []
            if not sock.pending():
                select.select([sock], w, [], 0.1)
            c.loop_read()
        assert not mids and len(acked) == mids_sent == 2000 and own == [paho_mid]
        while len(got) < 2001 and time.monotonic() < deadline:
            time.sleep(0.02)
        outbox = [(t, p) for t, p, _r in got if t != "t/state"]
        assert sorted(outbox) == sorted((f"t/{i % 7}", p) for i, p in enumerate(payloads))
        assert [(t, p, r) for t, p, r in got if t == "t/state"] == [("t/state", b"s", False)]  # live, not retained
    finally:
        c.disconnect()
        sub.loop_stop()
        sub.disconnect()


@pytest.mark.integration
def test_read_all_takes_every_readable_packet_per_wake_up(mosquitto):
    # PUBACKs of outbox publishes, paho's own PUBACK and PUBLISH packets of a subscription,
    # interleaved: read_all takes all that is readable in one call (paho's loop_read takes
    # one packet per call, so a select() turn per PUBACK). The broker's answers are let
    # arrive in full first (the kernel holds them), so that the count of calls depends on
    # the bytes readable, not on how fast a loaded machine lets the broker answer (counted
    # while they streamed in, it was 220 calls once under load, against 30 on a quiet one).
    c = Client(mqtt.CallbackAPIVersion.VERSION2, client_id="readall-test", protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(0)
    own, got = [], []
    c.on_publish = lambda cl, u, mid, rc, p: own.append(mid)  # QoS 1: on its PUBACK (QoS 0: when sent)
    c.on_message = lambda cl, u, m: got.append(m.payload)
    try:
        c.connect("127.0.0.1", mosquitto.port)
        sock = c.socket()
        deadline = time.monotonic() + 30
        while not c.is_connected() and time.monotonic() < deadline:
            sock.flush()
            select.select([sock], [], [], 0.1)
            c.read_all()
        c.subscribe("r/echo", qos=0)
        mids = {}
        c.on_outbox_puback = lambda mid: mids.pop(mid, None) is not None
        paho_mids = []
        echoes = [str(i).encode() for i in range(0, 2000, 100)]
        for i in range(2000):
            mids[c.publish_outbox("r/out", b"x" * 50)] = i
            if i % 100 == 0:
                c.publish("r/echo", str(i).encode(), qos=0)  # comes back to us between the PUBACKs
                paho_mids.append(c.publish("r/state", b"s", qos=1).mid)
        while not sock.flush() and time.monotonic() < deadline:
            select.select([], [sock], [], 0.1)
        # MQTT 3.1.1 sections 3.9 and 3.4, 3.3: a SUBACK (5 bytes), a PUBACK (4) per QoS 1
        # publish, and each echo: fixed header 2, topic length 2, "r/echo", payload
        expect = 5 + 4 * (2000 + len(paho_mids)) + sum(2 + 2 + len("r/echo") + len(e) for e in echoes)
        readable = bytearray(4)
        while time.monotonic() < deadline:
            fcntl.ioctl(sock.fileno(), termios.FIONREAD, readable)
            if int.from_bytes(readable, sys.byteorder) >= expect:
                break
            time.sleep(0.05)
        assert int.from_bytes(readable, sys.byteorder) == expect
        calls = 0
        while (mids or not set(paho_mids) <= set(own) or len(got) < 20) and calls < 5000:
            assert c.read_all() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            calls += 1
        assert not mids and set(paho_mids) <= set(own) and sorted(got) == sorted(echoes)
        assert calls == 1, f"{calls} calls for {expect} readable bytes (2,000 PUBACKs)"
    finally:
        c.disconnect()
