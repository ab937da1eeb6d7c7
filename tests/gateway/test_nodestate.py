# A gateway restart keeps what nodes said only at boot (firmware, board, interval,
# thresholds): on the status page and in the retained P/nodes/<id>/state it republishes.
import json
import socket
import time

import pytest

from gateway import nodestate
from gateway.config import parse
from gateway.daemon import Gateway
from gateway.files import write_private
from gateway.keys import format_keys
from protocol import message, senml
from tests.gateway.conftest import Subscriber

KEY = bytes(range(16))
INFO = {message.I_FW: "0.1.0", message.I_RESET: "power_on", message.I_BOARD: "esp32", message.I_INTERVAL: 300,
        message.I_LEVEL_MM: [2200, 1200], message.I_HEAP: [40960, 20480], message.I_BUFFER: [12, 1320, 1, 0],
        message.I_FLASH_ERRORS: 0, message.I_RESETS: {"power_on": 3, "watchdog": 1}, message.I_SAFE_S: 0}
HEALTH = {"heap_free": 40960, "heap_largest": 20480, "buffer": {"frames": 12, "bytes": 1320, "torn": 1, "dropped": 0},
          "flash_errors": 0, "resets": {"power_on": 3, "watchdog": 1}, "safe_s": 0}
KEPT = {"firmware": "0.1.0", "board": "esp32", "interval_s": 300, "thresholds": {"alarm_m": 2.2, "storm_m": 1.2},
        "reset_cause": "power_on", "health": HEALTH}


def settings(tmp, broker_url):
    write_private(tmp / "keys.toml", format_keys({"sew-07": KEY}))
    return parse({
        "gateway": {"id": "gw-state", "data_dir": str(tmp / "var"), "log_level": "warning"},
        "mqtt": {"url": broker_url, "topic_prefix": "cn", "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "ingest": [{"kind": "udp", "listen": "127.0.0.1:0"}],
        "nodes": {"keys_file": str(tmp / "keys.toml")},
    }, str(tmp / "gateway.toml"))


def wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def node_status(gw):
    return next((n for n in gw.status()["nodes"] if n["id"] == "sew-07"), None)


@pytest.mark.integration
def test_a_restart_keeps_firmware_board_interval_and_thresholds(tmp_path, mosquitto):
    sub = Subscriber(mosquitto.port, client_id="state-watcher")
    gw = Gateway(settings(tmp_path, mosquitto.url)).start()
    try:
        frame = message.encode_data(KEY, "sew-07", 1, 0, 100, [senml.record("l", 0.4)], info=INFO)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(frame, gw.udp_addresses[0])
            wait_for(lambda: (node_status(gw) or {}).get("firmware"))
            # a frame without info (every frame after the boot one) changes none of them
            s.sendto(message.encode_data(KEY, "sew-07", 1, 1, 400, [senml.record("l", 0.5)]), gw.udp_addresses[0])
            wait_for(lambda: (node_status(gw) or {}).get("seq") == 1)
        wait_for(lambda: gw.forwarder.pubacks >= 2)
        assert gw.status()["gateway"]["counters"]["forwarded"] >= 2  # was always 0 on the page
    finally:
        gw.stop()
    saved = json.loads((tmp_path / "var" / nodestate.FILE_NAME).read_text())
    assert {k: saved["nodes"]["sew-07"][k] for k in KEPT} == KEPT

    before = len(sub.on("/nodes/sew-07/state"))
    gw = Gateway(settings(tmp_path, mosquitto.url)).start()
    try:
        st = node_status(gw)
        assert {k: st[k] for k in KEPT} == KEPT and st["seq"] == 1 and st["accepted"] == 0
        # the retained state is published again on connect, with the kept fields (not nulls)
        wait_for(lambda: len(sub.on("/nodes/sew-07/state")) > before)
        _topic, state = sub.on("/nodes/sew-07/state")[-1]
        assert {k: state[k] for k in KEPT} == KEPT
    finally:
        gw.stop()
        sub.c.loop_stop()
        sub.c.disconnect()


def test_health_of_the_wrong_shape_is_ignored_and_the_last_good_one_stays():
    from gateway.stats import health_from

    h = health_from(INFO)
    assert h == HEALTH
    bad = {message.I_HEAP: [1, -2], message.I_BUFFER: [1, 2, 3], message.I_FLASH_ERRORS: "many",
           message.I_RESETS: {"watchdog": 1.5}, message.I_SAFE_S: True}
    assert health_from(bad, h) == HEALTH and health_from(bad) is None
    assert health_from({message.I_SAFE_S: 3600}, h) == dict(HEALTH, safe_s=3600)  # merged over the last


def test_a_damaged_state_file_is_no_reason_not_to_start(tmp_path):
    path = tmp_path / nodestate.FILE_NAME
    path.write_text("{not json")
    assert nodestate.load(path) == {}
    nodestate.save(path, {"a": {"firmware": "x"}, "gone": {"firmware": "y"}})
    assert set(nodestate.load(path, known={"a"})) == {"a"}
    assert [p.name for p in tmp_path.iterdir()] == [nodestate.FILE_NAME]  # no temporary file left
