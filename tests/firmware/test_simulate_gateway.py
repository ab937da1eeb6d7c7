# Acceptance: frames from `citynode simulate --runtime micropython` are verified and
# forwarded by the real gateway (UDP ingest -> outbox -> a real mosquitto -> a subscriber).
import base64
import shutil
import socket
import tomllib

import pytest

from gateway import config
from gateway.daemon import Gateway
from gateway.files import write_private
from gateway.keys import format_keys
from protocol import message as msg
from tests.gateway.conftest import NODES, Subscriber, write_config
from tests.support.broker import free_port
from tools import cli


class Site:
    # a real gateway (UDP ingest on a free loopback port) publishing to a real mosquitto, a
    # subscriber, and a keys file with the gateway's nodes
    def __init__(self, tmp_path, mosquitto):
        self.port = free_port(socket.SOCK_DGRAM)
        self.sub = Subscriber(mosquitto.port)
        self.gw = Gateway(config.load(write_config(tmp_path / "gw", mosquitto.url,
                                                   udp=f"127.0.0.1:{self.port}"))).start()
        self.keys = tmp_path / "keys.toml"
        write_private(self.keys, format_keys(NODES))
        self.state = tmp_path / "state"

    def simulate(self, capsys, frames, *extra, nodes=1, keys=None, timeout=30):
        with open(keys or self.keys, "rb") as f:  # the test nodes by name: none is simulated under sim-*
            ids = sorted(tomllib.load(f)["nodes"])[:nodes]
        code = cli.main(["simulate", *[a for n in ids for a in ("--node", n)], "--frames", str(frames), "--to",
                         f"udp://127.0.0.1:{self.port}", "--keys", str(keys or self.keys), "--state",
                         str(self.state), "--timeout", str(timeout), *map(str, extra)])
        return code, capsys.readouterr().out

    def close(self):
        self.gw.stop()
        self.sub.close()


@pytest.fixture
def site(tmp_path, mosquitto):
    s = Site(tmp_path, mosquitto)
    yield s
    s.close()


@pytest.mark.integration
@pytest.mark.micropython
def test_micropython_nodes_through_the_gateway_to_mqtt(site, capsys):
    code, out = site.simulate(capsys, 15, "--runtime", "micropython", nodes=2, timeout=60)
    assert code == 0, out
    sub = site.sub
    nodes = sorted(NODES)[:2]
    want = {(n, 1, s) for n in nodes for s in range(15)}
    assert sub.wait(lambda: want <= sub.keys_up(), 20), sorted(want - sub.keys_up())[:5]
    for up in sub.ups():
        d = msg.decode(base64.b64decode(up["frame"]), NODES.get)  # any consumer can check the MAC
        assert (d["node"], d["boot"], d["seq"]) == (up["node"], up["boot"], up["seq"])
        assert {r["n"] for r in up["senml"]} >= {"t", "h", "p", "l", "d"}


@pytest.mark.integration
def test_simulate_again_and_again_with_the_same_state(site, capsys):
    # Six runs with the same keys and state: each one a new boot whose frames all reach MQTT.
    # (Before Node.step, a simulated boot never proved healthy: the 4th run found the node in
    # safe mode without a sampler and crashed with a traceback.)
    node = sorted(NODES)[0]
    sub = site.sub
    for run in range(1, 7):
        code, out = site.simulate(capsys, 3)
        assert code == 0, f"run {run}: {out}"
        assert f"{node}: boot {run}, 3 frames made, 3 acknowledged" in out, out
        assert "SAFE MODE" not in out
        want = {(node, run, s) for s in range(3)}
        assert sub.wait(lambda want=want: want <= sub.keys_up(), 20), (run, sorted(want - sub.keys_up()))
    assert len(sub.ups()) == 18  # each frame once


@pytest.mark.integration
@pytest.mark.parametrize("runs_before", [1, 2])
@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_deleted_state_delivers_everything_and_nothing_twice(site, capsys, runs_before, runtime):
    # A wiped flash starts the boot counter again at 1. runs_before=1: the gateway has boot 1
    # already, so seq 0 comes again with other bytes (a regressed boot, not a duplicate; the
    # simulated world is deterministic, so the new life gets another seed to read other values);
    # runs_before=2: boot 1 is below the gateway's boot 2 (a replay, by the numbers alone).
    # Either way the gateway answers with the lowest boot it accepts, the node moves past it
    # and resends what it holds, and every reading of both lives reaches MQTT once.
    node = sorted(NODES)[0]
    sub = site.sub
    want = set()
    for run in range(1, runs_before + 1):
        code, out = site.simulate(capsys, 5, "--runtime", runtime)
        assert code == 0, out
        want |= {(node, run, s) for s in range(5)}
    assert sub.wait(lambda: want <= sub.keys_up(), 20)
    shutil.rmtree(site.state)
    code, out = site.simulate(capsys, 5, "--runtime", runtime, "--seed", 2, timeout=20)
    assert code == 0, out
    new_boot = runs_before + 1
    assert f"{node}: boot {new_boot}, 5 frames made, " in out and "moved on to boot" in out, out
    want |= {(node, new_boot, s) for s in range(5)}
    assert sub.wait(lambda: want <= sub.keys_up(), 20), sorted(want - sub.keys_up())
    ups = sub.ups()
    assert len(ups) == len(want), "a frame was forwarded twice"
    later = [up for up in ups if up["boot"] == new_boot]
    first = [up for up in ups if up["boot"] == 1]
    assert {r["n"] for up in later for r in up["senml"]} >= {"t", "l"}  # readings, not placeholders
    # the new life's readings are its own, not copies of the old life's
    assert [up["frame"] for up in later] != [up["frame"] for up in first]


@pytest.mark.integration
def test_a_node_the_gateway_does_not_know_is_told_apart_from_a_timeout(site, capsys, tmp_path):
    # the gateway refuses an unknown key without a word (it cannot MAC a reply): simulate says
    # so instead of only counting what timed out
    keys = tmp_path / "stranger.toml"
    write_private(keys, format_keys({"stranger-1": bytes(range(16))}))
    code, out = site.simulate(capsys, 2, keys=keys, timeout=1.5)
    assert code == 1, out
    assert "stranger-1: no reply from the gateway" in out and "key" in out, out
    assert "2 frame(s) unacknowledged" in out
