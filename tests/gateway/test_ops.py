# Unattended operation of the real `citynode gateway` process: sd_notify READY and
# WATCHDOG over $NOTIFY_SOCKET, SIGHUP reloads the keys file, SIGTERM stops cleanly
# (exit 0, retained "offline" state).
import signal
import socket
import time

import pytest

from gateway.files import write_private
from gateway.keys import format_keys
from tests.gateway.conftest import NODES, GatewayProcess, HeldCommits, write_config
from tests.support.udpnode import UdpNode

pytestmark = pytest.mark.integration


def test_notify_sighup_sigterm(tmp_path, mosquitto, subscriber, udp_port):
    notify_path = str(tmp_path / "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(notify_path)
    ns.settimeout(0.2)
    path = write_config(tmp_path / "gw", mosquitto.url, udp=f"127.0.0.1:{udp_port}")
    gwp = GatewayProcess(path, env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "400000"})
    gwp.start(wait_port=udp_port)
    got = []

    def drain(until, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until():
            try:
                got.append(ns.recv(4096).decode())
            except TimeoutError:
                pass
        return until()

    try:
        assert drain(lambda: any("READY=1" in m for m in got))
        new = UdpNode("new-04", bytes(range(20, 52)), ("127.0.0.1", udp_port))
        assert UdpNode("sew-01", NODES["sew-01"], ("127.0.0.1", udp_port)).run(10, deadline_s=10)
        assert drain(lambda: any("WATCHDOG=1" in m for m in got))
        assert not new.run(1, deadline_s=0.5)  # unknown node: rejected, not ACKed
        keys = dict(NODES, **{"new-04": bytes(range(20, 52))})
        write_private(tmp_path / "gw" / "keys.toml", format_keys(keys))
        gwp.proc.send_signal(signal.SIGHUP)
        assert new.run(5, deadline_s=10)  # after the reload it is known
        assert subscriber.wait(lambda: {("new-04", 1, s) for s in range(5)} <= subscriber.keys_up())
        gwp.proc.send_signal(signal.SIGTERM)
        assert gwp.proc.wait(15) == 0
        assert drain(lambda: any("STOPPING=1" in m for m in got), 2)
        states = [j for t, j in subscriber.on("/gateways/gw-test/state")]
        assert subscriber.wait(lambda: subscriber.on("/gateways/gw-test/state")[-1][1]["state"] == "offline", 5)
        assert states[0]["state"] == "online"
        log = gwp.log.read_text()
        assert "keys reloaded: 4 nodes" in log and "Traceback" not in log
    finally:
        gwp.terminate()
        ns.close()


def test_keys_reload_keeps_old_keys_on_a_bad_file(gateway_factory, tmp_path):
    gw = gateway_factory()
    (tmp_path / "gw" / "keys.toml").write_text("[nodes.x]\nkey = 'zz'\n")
    assert not gw.reload_keys()
    node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
    assert node.run(3, deadline_s=5)


def test_watchdog_pings_only_while_the_pipeline_moves(tmp_path, monkeypatch, gateway_factory, caplog):
    # Readiness waits with deadlines, not sleeps: on a busy machine the watchdog thread runs
    # late, so "N pings in 0.6 s" and "the hang has begun after 0.3 s" were guesses.
    import logging

    caplog.set_level(logging.WARNING, logger="citynode.gateway")
    notify_path = str(tmp_path / "wd.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(notify_path)
    monkeypatch.setenv("NOTIFY_SOCKET", notify_path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s while healthy
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    gw = gateway_factory()

    def pings(for_s):
        # WATCHDOG=1 pings that arrive within for_s
        n, deadline = 0, time.monotonic() + for_s
        while (left := deadline - time.monotonic()) > 0:
            ns.settimeout(left)
            try:
                n += ns.recv(100).decode().count("WATCHDOG=1")
            except TimeoutError:
                pass
        return n

    def ping_count_reaches(n, timeout=20.0):
        got, deadline = 0, time.monotonic() + timeout
        while got < n and (left := deadline - time.monotonic()) > 0:
            ns.settimeout(left)
            try:
                got += ns.recv(100).decode().count("WATCHDOG=1")
            except TimeoutError:
                break
        return got >= n

    def drain():
        ns.setblocking(False)
        try:
            while True:
                ns.recv(100)
        except BlockingIOError:
            pass
        finally:
            ns.setblocking(True)

    def stuck_said():
        return any("not pinging systemd" in r.getMessage() for r in caplog.records)

    try:
        assert ping_count_reaches(3)  # healthy and idle: it pings
        held = HeldCommits(gw)  # a hung disk
        node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
        node.send_raw(node.frame(0))
        node.send_raw(node.frame(1))
        assert held.entered.wait(20)  # the pipeline is inside the hung commit
        deadline = time.monotonic() + 20
        while not stuck_said() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stuck_said()  # the watchdog thread has seen it ...
        drain()  # ... so any ping still queued was sent before that
        assert pings(0.6) == 0  # stuck: no ping, systemd would restart us
        node._receive(0.05)
        assert not node.acknowledged()  # nothing is ACKed before its commit returns
        held.release()
        assert node.run(3, deadline_s=20)
        drain()
        assert ping_count_reaches(3)  # moving again: pings again
    finally:
        ns.close()
