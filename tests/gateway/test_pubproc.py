# The publisher process (gateway/pubproc.py) as the kernel sees it: the gateway has one
# child, `python -P -m gateway.pubproc FD` (no multiprocessing resource tracker: a third
# interpreter, ~13 MiB RSS, that spawn used to start), and that child goes away by itself
# when the gateway is killed with SIGKILL (its end of the socketpair reads EOF).
import os
import subprocess
import time

import pytest

from tests.gateway.conftest import GatewayProcess, wait_for, write_config


def children(pid):
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode(errors="replace").split("\0")[:-1]


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next(line for line in f if line.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return " Z " not in state and "zombie" not in state



@pytest.mark.integration
def test_the_publisher_process_is_the_only_child_and_leaves_with_a_killed_gateway(tmp_path, mosquitto, udp_port):
    path = write_config(tmp_path / "gw", mosquitto.url, udp=f"127.0.0.1:{udp_port}",
                        mqtt_extra='publisher = "process"')
    gwp = GatewayProcess(path).start(wait_port=udp_port)
    try:
        assert wait_for(lambda: "mqtt: connected" in gwp.log.read_text(errors="replace")), gwp.log.read_text()
        kids = children(gwp.proc.pid)
        assert len(kids) == 1, [cmdline(k) for k in kids]
        child = kids[0]
        assert cmdline(child)[1:4] == ["-P", "-m", "gateway.pubproc"], cmdline(child)
        gwp.kill9()
        assert wait_for(lambda: not alive(child), 10), cmdline(child)
    finally:
        gwp.terminate()


def incompatible_paho(directory, marker=None):
    # The environment of a paho release that dropped an internal the adapter uses, as the
    # thread-mode test makes it (tests/gateway/test_paho_adapter.py): a sitecustomize that every
    # interpreter started with this PYTHONPATH imports first takes Client._mid_generate away
    # (only while `marker` exists, when given: a paho upgraded under a running gateway).
    directory.mkdir(parents=True, exist_ok=True)
    when = f"os.path.exists({str(marker)!r})" if marker else "True"
    (directory / "sitecustomize.py").write_text(
        "import os\n"
        f"if {when}:\n"
        "    import paho.mqtt.client\n"
        "    del paho.mqtt.client.Client._mid_generate\n")
    return str(directory)


@pytest.mark.integration
@pytest.mark.parametrize("publisher", ["thread", "process"])
def test_a_gateway_refuses_to_start_on_a_paho_that_differs_with_exit_78(tmp_path, mosquitto, udp_port, publisher):
    # with either publisher: one line and exit 78 (EX_CONFIG, docs/technician.md), which the
    # systemd unit does not restart on (RestartPreventExitStatus): a paho the adapter was not
    # written for stays so however often it is restarted (with exit 1 systemd restarted it every
    # 2 s for ever); and no child left behind, not a child restarted every second for ever
    from tests.gateway.conftest import REPO

    path = write_config(tmp_path / "gw", mosquitto.url, udp=f"127.0.0.1:{udp_port}",
                        mqtt_extra=f'publisher = "{publisher}"')
    shim = incompatible_paho(tmp_path / "shim")
    gwp = GatewayProcess(path, env={"PYTHONPATH": os.pathsep.join([shim, str(REPO)])}).start()
    try:
        code = gwp.proc.wait(30)
    except subprocess.TimeoutExpired:
        kids = children(gwp.proc.pid)
        gwp.terminate()
        raise AssertionError(f"still running with {len(kids)} child(ren): {gwp.log.read_text()[-1500:]}") from None
    out = gwp.log.read_text()
    assert code == 78, out
    lines = out.strip().splitlines()
    assert lines[-1] == ("citynode gateway: cannot start: the installed paho-mqtt does not fit "
                         "gateway/paho_adapter.py: Client._mid_generate is missing (install the version "
                         "pyproject.toml pins, paho-mqtt>=2.1,<3)"), out
    assert "Traceback" not in out and "_mid_generate" not in "".join(lines[:-1]), out


@pytest.mark.integration
def test_a_child_that_keeps_dying_at_start_is_not_restarted_for_ever(gateway_factory, subscriber, tmp_path,
                                                                     monkeypatch, caplog):
    # paho is upgraded under a running gateway, then its publisher process dies (the OOM
    # killer): every new child refuses the new paho and exits at start. It is restarted with a
    # backoff a bounded number of times, each exit counted and logged, then left down with an
    # alarm, while frames are still stored and ACKed for the next start.
    import signal

    from gateway import pubproc
    from tests.gateway.conftest import NODES
    from tests.support.udpnode import UdpNode

    marker = tmp_path / "paho-upgraded"
    monkeypatch.setenv("PYTHONPATH", incompatible_paho(tmp_path / "shim", marker))  # the children's
    monkeypatch.setattr(pubproc, "RESTART_S", 0.05)
    gw = gateway_factory(mqtt_extra='publisher = "process"')
    assert subscriber.wait(lambda: gw.forwarder.connected, 15)
    assert gw.counters()["publisher_start_failures"] == 0
    marker.touch()
    os.kill(gw.forwarder._proc.pid, signal.SIGKILL)
    assert wait_for(lambda: gw.forwarder.failed, 30), gw.counters()
    c = gw.counters()
    assert (c["publisher_restarts"], c["publisher_start_failures"]) == (5, 5) == (
        pubproc.START_FAILURES_MAX, pubproc.START_FAILURES_MAX)
    assert "publisher_failed" in gw.alarms() and "publisher_failed" in gw.status()["gateway"]["alarms"]
    assert gw.status()["gateway"]["counters"]["publisher_start_failures"] == 5
    assert gw.forwarder._proc.poll() is not None  # no child left
    log = [r.getMessage() for r in caplog.records if "publisher process" in r.getMessage()]
    assert sum("Client._mid_generate is missing" in line for line in log) == 5, log
    assert sum("not restarting it" in line for line in log) == 1, log
    time.sleep(0.5)
    assert gw.counters()["publisher_restarts"] == 5  # and it stays down
    node = UdpNode("sew-02", NODES["sew-02"], gw.udp_addresses[0])
    assert node.run(20, deadline_s=10)  # ingest and ACKs never depended on it
    ups = gw.store.db.execute("SELECT COUNT(*) FROM outbox WHERE topic = 'cn/nodes/sew-02/up'").fetchone()[0]
    assert ups == 20 and not subscriber.on("sew-02/up")  # stored, waiting for the next start


@pytest.mark.integration
def test_a_gateway_that_cannot_start_leaves_no_publisher_process(tmp_path, mosquitto):
    # the publisher process is made before the ports are opened (it checks paho first): when a
    # port is taken after all, the gateway refuses to start and its child goes too
    import socket

    from gateway import config
    from gateway.daemon import Gateway

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        path = write_config(tmp_path / "gw", mosquitto.url, udp=f"127.0.0.1:{taken.getsockname()[1]}",
                            mqtt_extra='publisher = "process"')
        gw = Gateway(config.load(path))
        with pytest.raises(OSError, match="listen 127.0.0.1"):
            gw.start()
    finally:
        taken.close()

    def publishers():
        return [k for k in children(os.getpid()) if alive(k) and "gateway.pubproc" in cmdline(k)]

    assert wait_for(lambda: not publishers(), 10), [cmdline(k) for k in publishers()]
    assert gw.forwarder._proc.returncode is not None  # and it was reaped
