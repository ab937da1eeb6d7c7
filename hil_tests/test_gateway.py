# The board against the real gateway (`citynode gateway`, serial ingest on the board's
# port) and a real mosquitto: frames arrive on MQTT and verify there; a command sent on
# P/nodes/<node>/down reaches the node and changes its reporting interval.
import base64
import json
import queue
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest

from hil_tests.conftest import INTERVAL_S, NODE
from protocol import message
from tests.support.senml_strict import check_pack

PREFIX = "hil"


@pytest.fixture
def gateway(port, hil_node, mosquitto, tmp_path):
    conf = tmp_path / "gateway.toml"
    conf.write_text(f"""
[gateway]
id = "gw-hil"
data_dir = "{tmp_path / 'var'}"

[mqtt]
url = "{mosquitto.url}"
topic_prefix = "{PREFIX}"

[[ingest]]
kind = "serial"
port = "{port}"
baudrate = 115200

[nodes]
keys_file = "{hil_node['keys_file']}"
""")
    log = open(tmp_path / "gateway.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "gateway", "--config", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT)
    yield proc
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
    print("--- gateway log (tail)\n" + (tmp_path / "gateway.log").read_text()[-3000:], file=sys.stderr)


@pytest.fixture
def uplink(mosquitto):
    # every P/nodes/<node>/up message, decoded JSON, in a queue
    q = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hil-subscriber")
    c.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/nodes/{NODE}/up", qos=1)
    c.on_message = lambda _c, _u, msg: q.put(json.loads(msg.payload))
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    c.queue = q
    yield c
    c.loop_stop()
    c.disconnect()


def next_up(client, hil_node, timeout=20):
    # -> (envelope, frame decoded and MAC-verified by this consumer, not by trusting the gateway)
    body = client.queue.get(timeout=timeout)
    frame = base64.b64decode(body["frame"])
    d = message.decode(frame, {NODE: hil_node["key"]}.get)
    return body, d


def test_round_trip_through_the_gateway_to_mqtt(request, gateway, uplink, hil_node):
    seen = []
    for _ in range(3):
        body, d = next_up(uplink, hil_node)
        assert body["node"] == NODE and body["gateway"] == "gw-hil"
        assert (body["boot"], body["seq"]) == (d["boot"], d["seq"])
        assert body["senml"][0]["bn"] == NODE + ":"
        assert check_pack(body["senml"])[0] == []  # strict RFC 8428 (tests/support/senml_strict.py)
        names = {r["n"] for r in body["senml"]}
        assert {"t", "h", "p", "l"} <= names
        seen.append(d["seq"])
    assert seen == sorted(seen) and len(set(seen)) == 3
    assert gateway.poll() is None


def test_downlink_command_changes_the_interval(request, gateway, uplink, hil_node, mosquitto):
    body, d = next_up(uplink, hil_node)  # the node was heard: the gateway knows its boot and link
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hil-operator")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    pub.publish(f"{PREFIX}/nodes/{NODE}/down", json.dumps({"op": "interval", "arg": 1}), qos=1).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()
    deadline = time.monotonic() + 30
    applied = None
    while time.monotonic() < deadline:
        body, d = next_up(uplink, hil_node)
        if d["cmd_result"]:
            applied = d
            break
    assert applied is not None, "the node never reported the command's result"
    assert applied["cmd_result"][1] == 0  # applied
    assert applied["info"][message.I_INTERVAL] == 1
    # and it keeps the new pace: frames one second apart instead of INTERVAL_S
    uptimes = [applied["uptime_ms"]]
    for _ in range(3):
        uptimes.append(next_up(uplink, hil_node)[1]["uptime_ms"])
    gaps = [b - a for a, b in zip(uptimes, uptimes[1:])]
    assert max(gaps) < (INTERVAL_S * 1000 + 1000) / 2 + 300, gaps
