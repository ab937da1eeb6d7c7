# The board against the real gateway (`citynode gateway`, serial ingest on the board's
# port) and a real mosquitto: frames arrive on MQTT and verify there; a command sent on
# P/nodes/<node>/down reaches the node only when the operator signed it (SPEC 6.7), and changes its interval.
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
from tools import procs

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
    procs.stop(proc)
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


def publish(mosquitto, payload):
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hil-publisher")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    pub.publish(f"{PREFIX}/nodes/{NODE}/down", payload, qos=1).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()


def signed_by_operator(hil_node, mosquitto, op, arg):
    # `citynode command --print`: signed with the operator keys for the node's boot (its retained state)
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "command", "--node", NODE, "--op", op, "--arg",
                           json.dumps(arg), "--operator-keys", str(hil_node["operator_keys"]), "--mqtt", mosquitto.url,
                           "--prefix", PREFIX, "--print"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def result_for(uplink, hil_node, counter, timeout=120):
    # -> the node's first data frame that reports the result of command `counter`
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, d = next_up(uplink, hil_node)
        if d["cmd_result"] and d["cmd_result"][0] == counter:
            return d
    raise AssertionError(f"the node never reported a result for command {counter}")


def test_only_the_operators_commands_change_the_interval(request, gateway, uplink, hil_node, mosquitto):
    # issue 19: unsigned, forged with the gateway's node key, replayed: not applied; signed: applied once
    from protocol import command

    # the node was heard: the gateway knows its boot and link (an emulated Pico on a loaded machine boots slowly)
    body, d = next_up(uplink, hil_node, timeout=180)
    publish(mosquitto, json.dumps({"op": "interval", "arg": 1}))  # anyone on the broker: refused at the gateway
    forged = command.sign(hil_node["key"], NODE, d["boot"], 0x7FFFFFF0, "interval", 1)
    publish(mosquitto, json.dumps({"cose": forged.hex()}))
    refused = result_for(uplink, hil_node, 0x7FFFFFF0)
    assert refused["cmd_result"][1] == command.BAD_SIGNATURE
    first = signed_by_operator(hil_node, mosquitto, "interval", 3)
    publish(mosquitto, first)
    d = result_for(uplink, hil_node, json.loads(first)["counter"])
    assert d["cmd_result"][1] == command.APPLIED and d["info"][message.I_INTERVAL] == 3
    second = signed_by_operator(hil_node, mosquitto, "interval", 1)
    publish(mosquitto, second)
    applied = result_for(uplink, hil_node, json.loads(second)["counter"])
    assert applied["cmd_result"][1] == command.APPLIED and applied["info"][message.I_INTERVAL] == 1
    publish(mosquitto, first)  # a replay of a genuine command in the same boot
    replayed = result_for(uplink, hil_node, json.loads(first)["counter"])
    assert replayed["cmd_result"][1] == command.REPLAY and not replayed["info"]  # nothing changed, no new info
    # and it keeps the new pace: frames one second apart instead of INTERVAL_S
    uptimes = [replayed["uptime_ms"]]
    for _ in range(3):
        uptimes.append(next_up(uplink, hil_node)[1]["uptime_ms"])
    gaps = [b - a for a, b in zip(uptimes, uptimes[1:])]
    assert max(gaps) < (INTERVAL_S * 1000 + 1000) / 2 + 300, gaps
