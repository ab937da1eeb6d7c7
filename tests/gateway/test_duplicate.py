# Two gateways that should not both run: a copied config (same [gateway] id, so the same
# MQTT client id) makes the broker drop one session whenever the other connects; the
# gateway must notice, back off and say so in one line. Two gateways on one data_dir would
# share an outbox: the second must refuse to start. With publisher = "process" the
# Forwarder runs in a child process (gateway/pubproc.py): its taken_over must reach the
# parent's alarms, and its log line goes to the child's stderr.
import logging
import os
import subprocess
import sys
import time

import pytest

from gateway.config import parse
from gateway.daemon import DataDirInUse, Gateway
from gateway.files import write_private
from gateway.keys import format_keys
from tests.gateway.conftest import NODES, REPO, wait_for, write_config


def settings(tmp, name, broker_url, gateway_id="gw-copied", publisher="thread"):
    write_private(tmp / "keys.toml", format_keys(NODES))
    return parse({
        "gateway": {"id": gateway_id, "data_dir": str(tmp / name), "log_level": "warning"},
        "mqtt": {"url": broker_url, "topic_prefix": "cn", "reconnect_min_s": 0.1, "reconnect_max_s": 2.0,
                 "publisher": publisher},
        "ingest": [{"kind": "udp", "listen": "127.0.0.1:0"}],
        "nodes": {"keys_file": str(tmp / "keys.toml")},
    }, str(tmp / f"{name}.toml"))



class ClientIdLines:
    # The publisher's "client id" log lines: from the logging records in thread mode, from
    # the child's stderr (inherited fd 2, which capfd reads) in process mode.
    def __init__(self, publisher, caplog, capfd):
        self.publisher, self.caplog, self.capfd = publisher, caplog, capfd
        self.err = ""

    def __call__(self):
        if self.publisher == "thread":
            return [r.getMessage() for r in self.caplog.records if "client id" in r.getMessage()]
        self.err += self.capfd.readouterr().err
        return [line.split("[mqtt]: ", 1)[-1] for line in self.err.splitlines() if "client id" in line]


@pytest.mark.integration
@pytest.mark.parametrize("publisher", ["thread", "process"])
def test_a_copied_gateway_id_is_detected_backs_off_and_says_so(tmp_path, mosquitto, caplog, capfd, publisher):
    caplog.set_level(logging.ERROR, logger="citynode.gateway")
    client_id_lines = ClientIdLines(publisher, caplog, capfd)
    a = Gateway(settings(tmp_path, "a", mosquitto.url, publisher=publisher)).start()
    b = Gateway(settings(tmp_path, "b", mosquitto.url, publisher=publisher)).start()
    try:
        # the alarm as the operator sees it (state topic, status page), whichever gateway lost
        assert wait_for(lambda: any("mqtt_client_id_in_use" in gw.alarms() for gw in (a, b))), \
            (a.forwarder.connects, b.forwarder.connects)
        taken = a if "mqtt_client_id_in_use" in a.alarms() else b
        assert taken.forwarder.taken_over
        assert wait_for(lambda: client_id_lines(), timeout=5)
        lines = client_id_lines()
        assert "same [gateway] id" in lines[0] and "'citynode-gw-copied'" in lines[0]
        assert "\n" not in lines[0]
        # backing off: without it the pair reconnected thousands of times in a few seconds
        before = a.forwarder.connects + b.forwarder.connects
        window_s = 4.0
        time.sleep(window_s)  # an observation window for a rate, not a wait for readiness
        during = a.forwarder.connects + b.forwarder.connects - before
        assert during <= 30, during
    finally:
        a.stop()
        b.stop()
    # one line, not one per takeover
    assert len(client_id_lines()) <= 2


@pytest.mark.integration
@pytest.mark.parametrize("publisher", ["thread", "process"])
def test_one_gateway_alone_is_not_called_a_duplicate(tmp_path, mosquitto, publisher):
    gw = Gateway(settings(tmp_path, "a", mosquitto.url, publisher=publisher)).start()
    try:
        assert wait_for(lambda: gw.forwarder.connected)
        assert not wait_for(lambda: gw.forwarder.connects > 1, timeout=2.5)
        assert not gw.forwarder.taken_over and "mqtt_client_id_in_use" not in gw.alarms()
    finally:
        gw.stop()


@pytest.mark.integration
def test_a_second_gateway_on_the_same_data_dir_refuses_to_start(tmp_path, mosquitto):
    first = Gateway(settings(tmp_path, "shared", mosquitto.url, "gw-one")).start()
    try:
        with pytest.raises(DataDirInUse, match=r"data_dir .*shared is in use by another gateway \(pid \d+\)"):
            Gateway(settings(tmp_path, "shared", mosquitto.url, "gw-two")).start()
        # the command line: one line and exit code 1
        path = write_config(tmp_path / "cli", mosquitto.url)
        text = path.read_text().replace('data_dir = "var"', f'data_dir = "{tmp_path / "shared"}"')
        path.write_text(text)
        proc = subprocess.run([sys.executable, "-m", "tools.cli", "gateway", "--config", str(path)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        assert proc.stderr.splitlines() == [
            f"citynode gateway: cannot start: data_dir {tmp_path / 'shared'} is in use by another gateway "
            f"(pid {os.getpid()}); stop it, or give this gateway its own data_dir"]
    finally:
        first.stop()
    # released on stop: the next gateway starts
    Gateway(settings(tmp_path, "shared", mosquitto.url, "gw-two")).start().stop()
