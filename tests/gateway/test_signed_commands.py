# Issue 19, acceptance: only the operator commands a node, end to end. The real gateway, a real
# mosquitto and a `citynode simulate` node (the real firmware): anonymous publishes of each op, a
# command MACed with the gateway's node key, and replays of genuine signed commands (in the same
# boot, after a reboot and after a wiped flash) change nothing; `citynode command --wait` applies each op exactly once
# and prints the node's result.
import io
import json
import threading
import time

import paho.mqtt.publish as publish

from gateway.files import write_private
from protocol import command
from tests.gateway.conftest import COMMAND_KEYS, NODES, wait_for
from tools import cli, simulate
from tools.command import format_operator_keys

NODE = "sew-01"
DOWN = f"cn/nodes/{NODE}/down"


def state(subscriber):
    got = [j for t, j in subscriber.on("/state") if t == f"cn/nodes/{NODE}/state"]
    return got[-1] if got else {}


def simulate_args(tmp_path, ops, frames, to):
    # `citynode simulate --node NODE --frames N --rate 10 --operator-keys ops` with the gateway's keys file
    return cli.build_parser({"simulate": simulate}).parse_args([
        "simulate", "--node", NODE, "--frames", str(frames), "--to", to, "--keys", str(tmp_path / "gw" / "keys.toml"),
        "--rate", "10", "--state", str(tmp_path / "sim"), "--operator-keys", str(ops)])


def test_only_the_operators_signed_commands_move_a_simulated_node(tmp_path, gateway_factory, mosquitto, subscriber,
                                                                   capsys):
    gw = gateway_factory()
    ops = tmp_path / "operator-keys.toml"
    write_private(ops, format_operator_keys({NODE: COMMAND_KEYS[NODE]}, {}))
    host, port = gw.udp_addresses[0][:2]

    def simulate_in_background(frames):
        args = simulate_args(tmp_path, ops, frames, f"udp://{host}:{port}")
        t = threading.Thread(target=simulate.run, args=(args, io.StringIO()), daemon=True)
        t.start()
        return t

    def pub(payload):
        publish.single(DOWN, payload, qos=1, hostname="127.0.0.1", port=mosquitto.port)

    def operator(op, arg=None, wait=True):
        argv = ["command", "--node", NODE, "--op", op, "--operator-keys", str(ops), "--mqtt", mosquitto.url,
                "--prefix", "cn", "--timeout", "20"] + (["--arg", json.dumps(arg)] if arg is not None else [])
        rc = cli.main(argv + (["--wait"] if wait else []))
        return rc, capsys.readouterr().out

    def result_for(counter):
        assert wait_for(lambda: (state(subscriber).get("command") or {}).get("cmd_id") == counter, 20), (
            state(subscriber), gw.counters(), gw.downlink.queued)
        return state(subscriber)["command"]["result"]

    sim = simulate_in_background(400)
    assert wait_for(lambda: state(subscriber).get("interval_s") == 60, 20), state(subscriber)
    boot = state(subscriber)["boot"]

    # anyone on the broker: each op, unsigned (the contract of earlier versions): refused at the gateway
    now = int(time.time())
    for cmd in ({"op": "interval", "arg": 30}, {"op": "thresholds", "arg": {"alarm_m": 0.1}}, {"op": "reboot"},
                {"op": "time", "arg": now + 20 * 3600}):
        pub(json.dumps(cmd))
    assert wait_for(lambda: gw.counters()["commands_unsigned"] == 4, 10), gw.counters()
    # whoever holds the gateway's files: a command MACed with the node's key is relayed, and refused by the node
    forged = command.sign(NODES[NODE], NODE, boot, 0x7FFFFFFF, "interval", 30)
    pub(json.dumps({"cose": forged.hex()}))
    assert result_for(0x7FFFFFFF) == "bad_signature"
    st = state(subscriber)
    assert st["interval_s"] == 60 and st["thresholds"] == {"alarm_m": 2.2, "storm_m": 1.2}  # as configured

    # the operator: each op once, with the node's result
    rc, out = operator("interval", 120)
    assert rc == 0 and out.strip().endswith(f"{NODE}: applied"), out
    assert wait_for(lambda: state(subscriber).get("interval_s") == 120, 10)
    rc, out = operator("thresholds", {"alarm_m": 1.5, "storm_m": 1.0})
    assert rc == 0 and "applied" in out, out
    assert wait_for(lambda: state(subscriber).get("thresholds") == {"alarm_m": 1.5, "storm_m": 1.0}, 10)
    rc, out = operator("time", now)
    assert rc == 0 and "applied" in out, out
    rc, out = operator("interval", 90)
    assert rc == 0 and "applied" in out, out
    assert wait_for(lambda: state(subscriber).get("interval_s") == 90, 10)
    sent = [j for t, j in subscriber.on("/down") if t == DOWN and "counter" in j]  # what citynode command sent
    first, last = sent[0], sent[-1]
    assert (first["op"], first["arg"], last["arg"]) == ("interval", 120, 90)

    # a replay of a genuine command in the same boot: refused, nothing changes
    pub(json.dumps(first))
    assert result_for(first["counter"]) == "replay"
    assert state(subscriber)["interval_s"] == 90

    # reboot, once: the node reports it, then resets (the simulation of that boot ends)
    rc, out = operator("reboot")
    assert rc == 0 and "applied" in out, out
    sim.join(30)
    assert wait_for(lambda: state(subscriber).get("commands", {}).get("applied") == 5, 10), state(subscriber)
    # the next boot: a replay of the last genuine command is for another boot
    sim = simulate_in_background(100)
    assert wait_for(lambda: state(subscriber).get("boot") == boot + 1, 20)
    pub(json.dumps(last))
    assert result_for(last["counter"]) == "other_boot"
    st = state(subscriber)
    assert st["interval_s"] == 90 and st["thresholds"] == {"alarm_m": 1.5, "storm_m": 1.0}
    assert st["commands"]["applied"] == 5 and st["reset_cause"] == "command"
    sim.join(30)
    # a wiped flash: the node starts again at boot 1 (the boot the commands above were signed for),
    # the gateway moves it past every boot it has seen (SPEC 6.5), and a replay is for another boot
    for name in ("state.json", "buffer.bin"):
        (tmp_path / "sim" / NODE / name).unlink(missing_ok=True)
    sim = simulate_in_background(60)
    assert wait_for(lambda: state(subscriber).get("boot") == boot + 2, 20), state(subscriber)
    pub(json.dumps(last))
    assert wait_for(lambda: state(subscriber).get("command", {}).get("result") == "other_boot"
                    and state(subscriber)["boot"] == boot + 2 and state(subscriber)["commands"]["other_boot"] == 2,
                    20), state(subscriber)
    assert state(subscriber)["interval_s"] == 60  # the config's again (the wipe), not the replayed 90
    sim.join(30)
