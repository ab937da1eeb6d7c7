# `citynode command` without a broker: what it signs (--print --boot), the counter it keeps in the
# operator keys file, and one line with exit code 2 for what is wrong before anything is signed.
# With a broker, the gateway and a node: tests/gateway/test_signed_commands.py.
import json
import stat
import threading
import time

import paho.mqtt.publish as publish
import paho.mqtt.subscribe as subscribe
import pytest

from gateway.files import write_private
from protocol import command
from tools import cli
from tools.command import format_operator_keys, load_operator_keys, next_counter

KEY = bytes(range(32))


@pytest.fixture
def ops(tmp_path):
    path = tmp_path / "operator-keys.toml"
    write_private(path, format_operator_keys({"sew-07": KEY}, {"sew-07": 5}))
    return path


def run(ops, *argv):
    return cli.main(["command", "--node", "sew-07", "--operator-keys", str(ops), *argv])


def test_print_signs_for_the_boot_with_a_counter_above_every_earlier_one(ops, capsys):
    assert run(ops, "--op", "interval", "--arg", "60", "--boot", "3", "--print") == 0
    out = json.loads(capsys.readouterr().out)
    token = bytes.fromhex(out["cose"])
    code, f = command.decide(token, "sew-07", KEY, 3, 0)
    assert code == command.APPLIED and f == {"boot": 3, "counter": out["counter"], "op": "interval", "arg": 60}
    assert (out["node"], out["op"], out["arg"], out["boot"]) == ("sew-07", "interval", 60, 3)
    keys, counters = load_operator_keys(ops)
    assert counters["sew-07"] == out["counter"] >= 1_700_000_000 and keys["sew-07"] == KEY
    assert stat.S_IMODE(ops.stat().st_mode) == 0o600
    assert run(ops, "--op", "reboot", "--boot", "3", "--print") == 0
    again = json.loads(capsys.readouterr().out)["counter"]
    assert again > out["counter"] and load_operator_keys(ops)[1]["sew-07"] == again


def test_the_gateway_keys_file_is_refused_before_anything_is_signed(tmp_path, capsys):
    # the same [nodes.<id>] key = tables hold the data keys: a command signed with one would
    # reach the node and be refused there (bad_signature); refused here, in one line, exit 2
    from gateway.keys import format_keys

    gw = tmp_path / "gateway-keys.toml"
    write_private(gw, format_keys({"sew-07": KEY}))
    assert run(gw, "--op", "interval", "--arg", "60", "--boot", "1", "--print") == 2
    captured = capsys.readouterr()
    assert not captured.out and captured.err.count("\n") == 1 and "gateway keys file" in captured.err
    assert gw.read_text() == format_keys({"sew-07": KEY})  # no counter written into it


def test_next_counter_never_goes_back():
    assert next_counter(5, now_s=1000) == 1000
    assert next_counter(2000, now_s=1000) == 2001


@pytest.mark.parametrize("argv, says", [
    (["--op", "interval", "--arg", "0", "--boot", "1", "--print"], "out_of_range"),
    (["--op", "interval", "--arg", "soon", "--boot", "1", "--print"], "not JSON"),
    (["--op", "thresholds", "--arg", '{"alarm": 1}', "--boot", "1", "--print"], "bad_arg"),
    (["--op", "reboot", "--arg", "1", "--boot", "1", "--print"], "bad_arg"),
    (["--op", "interval", "--arg", "60", "--print"], "--mqtt is needed"),
    (["--op", "interval", "--arg", "60", "--mqtt", "http://x", "--boot", "1"], "--mqtt must look like"),
])
def test_wrong_input_is_one_line_and_exit_2_and_nothing_signed(ops, capsys, argv, says):
    assert run(ops, *argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err
    assert load_operator_keys(ops)[1]["sew-07"] == 5  # no counter used


def test_a_node_without_a_command_key_and_a_missing_file(tmp_path, ops, capsys):
    assert cli.main(["command", "--node", "sew-08", "--op", "reboot", "--boot", "1", "--print",
                     "--operator-keys", str(ops)]) == 2
    assert "no command key for sew-08" in capsys.readouterr().err
    assert run(tmp_path / "none.toml", "--op", "reboot", "--boot", "1", "--print") == 2
    assert "no such operator keys file" in capsys.readouterr().err


def test_no_broker_is_exit_1(ops, capsys):
    assert run(ops, "--op", "reboot", "--mqtt", "mqtt://127.0.0.1:1", "--timeout", "1") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the MQTT broker" in err


def test_compact_signs_the_lora_form_that_fits_a_downlink(ops, capsys):
    # SPEC.md 13.6: --compact (or a node heard over LoRa) signs the form a LoRa downlink carries
    from protocol import compact

    assert run(ops, "--op", "thresholds", "--arg", '{"alarm_m": 1.0016, "storm_m": 0.9}', "--boot", "3",
               "--compact", "--print") == 0
    out = json.loads(capsys.readouterr().out)
    token = bytes.fromhex(out["cose"])
    assert out["form"] == "compact" and len(compact.to_air(token)) <= 51
    code, f = command.decide(token, "sew-07", KEY, 3, 0)
    # in whole millimetres on the air, and the JSON says what the node will read
    assert code == command.APPLIED and f["arg"] == out["arg"] == {"alarm_m": 1.002, "storm_m": 0.9}


@pytest.mark.parametrize(("link", "lora"), [
    ("serial /dev/ttyACM0 lora rssi -97 snr -7.5", True), ("chirpstack 0102030405060708 rssi -100 snr -3", True),
    ("udp 127.0.0.1:40000", False), ("serial /dev/ttyUSB0", False), (None, False)])
def test_a_node_heard_over_lora_gets_the_compact_form(link, lora):
    from tools.command import on_lora

    assert on_lora(link) is lora


def test_with_a_broker_a_node_heard_over_lora_gets_the_compact_form(ops, mosquitto, capsys):
    # its retained state names the link: `citynode command` signs the compact form by itself
    state = {"node": "sew-07", "boot": 9, "link": "serial /dev/ttyACM0 lora rssi -97 snr -7.5"}
    publish.single("citynode/nodes/sew-07/state", json.dumps(state), qos=1, retain=True, hostname="127.0.0.1",
                   port=mosquitto.port)
    got = {}

    def listen():
        m = subscribe.simple("citynode/nodes/sew-07/down", qos=1, hostname="127.0.0.1", port=mosquitto.port)
        got["down"] = json.loads(m.payload)

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    time.sleep(0.5)  # subscribed before the command goes out
    assert run(ops, "--op", "interval", "--arg", "600", "--mqtt", mosquitto.url, "--timeout", "10") == 0
    assert "(compact, for LoRa) for boot 9" in capsys.readouterr().out
    t.join(10)
    token = bytes.fromhex(got["down"]["cose"])
    assert got["down"]["form"] == "compact"
    assert command.decide(token, "sew-07", KEY, 9, 0)[0] == command.APPLIED
