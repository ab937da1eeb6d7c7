# `citynode simulate` end to end against a small UDP receiver that verifies every frame
# with the protocol decoder and ACKs it (the role the gateway plays), dropping some
# datagrams so that resends are exercised. Both runtimes: CPython and MicroPython.
import socket
import threading

import pytest

from gateway.files import write_private
from gateway.keys import format_keys
from protocol import message as msg
from protocol.cbor import FrameError
from tools import cli

KEYS = {"sim-%02d" % i: bytes([i]) * 16 for i in range(1, 5)}  # simulated nodes: --nodes N takes sim-*


class Receiver(threading.Thread):
    def __init__(self, keys, drop_every=0):
        super().__init__(daemon=True)
        self.keys = keys
        self.drop_every = drop_every
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.seen = {}  # (node, boot) -> set of seqs
        self.rejects = {}
        self.datagrams = 0
        self.dropped = 0
        self.stopping = False

    def run(self):
        while not self.stopping:
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            self.datagrams += 1
            if self.drop_every and self.datagrams % self.drop_every == 0:
                self.dropped += 1  # lost on the way: the node must resend
                continue
            try:
                d = msg.decode(data, self.keys.get)
            except FrameError as e:
                self.rejects[e.reason] = self.rejects.get(e.reason, 0) + 1
                continue
            seen = self.seen.setdefault((d["node"], d["boot"]), set())
            seen.add(d["seq"])
            cum = -1
            while cum + 1 in seen:
                cum += 1
            self.sock.sendto(msg.encode_ack(self.keys[d["node"]], d["node"], d["boot"], d["seq"],
                                            cum if cum >= 0 else None), addr)

    def stop(self):
        self.stopping = True
        self.join(2)
        self.sock.close()


@pytest.fixture
def receiver():
    started = []

    def make(**kw):
        r = Receiver(KEYS, **kw)
        r.start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def keys_file(tmp_path):
    p = tmp_path / "keys.toml"
    write_private(p, format_keys(KEYS))
    return p


def simulate(capsys, *args):
    code = cli.main(["simulate", *map(str, args)])
    return code, capsys.readouterr()


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_all_frames_acknowledged_and_each_run_a_new_boot(receiver, keys_file, tmp_path, capsys, runtime):
    r = receiver(drop_every=7)
    state = tmp_path / "state"
    n, k = (3, 40) if runtime == "cpython" else (2, 25)
    code, out = simulate(capsys, "--nodes", n, "--frames", k, "--to", f"udp://127.0.0.1:{r.port}",
                         "--keys", keys_file, "--runtime", runtime, "--state", state, "--timeout", 60)
    assert code == 0, out.out + out.err
    assert "acknowledged in" in out.out
    nodes = sorted(KEYS)[:n]
    for node in nodes:
        assert r.seen[(node, 1)] == set(range(k)), node
    assert not r.rejects and r.dropped > 0 and "resent" in out.out
    # run again: a higher boot for every node, so no gateway takes it for a replay
    code, out = simulate(capsys, "--nodes", n, "--frames", 5, "--to", f"udp://127.0.0.1:{r.port}",
                         "--keys", keys_file, "--runtime", runtime, "--state", state, "--rate", 200)
    assert code == 0, out.out + out.err
    for node in nodes:
        assert r.seen[(node, 2)] == set(range(5))


def test_timeout_says_how_many_are_unacknowledged(keys_file, tmp_path, capsys):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))  # a gateway that never answers
    try:
        code, out = simulate(capsys, "--nodes", 2, "--frames", 5, "--to", f"udp://127.0.0.1:{s.getsockname()[1]}",
                             "--keys", keys_file, "--state", tmp_path / "st", "--timeout", 1)
    finally:
        s.close()
    assert code == 1
    assert "10 frame(s) unacknowledged" in out.out


def test_bad_arguments_get_one_line(keys_file, tmp_path, capsys):
    code, out = simulate(capsys, "--nodes", 9, "--to", "udp://127.0.0.1:9", "--keys", keys_file,
                         "--state", tmp_path)
    assert code == 2 and "has 4 simulated node(s) (ids sim-*), --nodes 9" in out.err
    code, out = simulate(capsys, "--to", "tcp://x", "--keys", keys_file, "--state", tmp_path)
    assert code == 2 and "udp://HOST:PORT" in out.err
    code, out = simulate(capsys, "--to", "udp://127.0.0.1:9", "--keys", tmp_path / "none.toml", "--state", tmp_path)
    assert code == 2 and "no such keys file" in out.err


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_a_node_in_safe_mode_is_reported_not_a_traceback(receiver, keys_file, tmp_path, capsys, runtime):
    # A node whose last boots failed (the watchdog reset the last of them; safe_after 3) boots
    # in safe mode, without a sampler; one frame per run never proves a boot healthy, and a
    # run's start (power_on) is no failure, so it stays there. It still reports (battery
    # only), every frame is acknowledged, and simulate says so.
    import json

    r = receiver()
    (tmp_path / "state" / "sim-01").mkdir(parents=True)
    (tmp_path / "state" / "sim-01" / "state.json").write_text(json.dumps({"boot": 0, "unhealthy": 3,
                                                                          "note": "watchdog"}))
    outs = []
    for _ in range(5):
        code, out = simulate(capsys, "--frames", 1, "--to", f"udp://127.0.0.1:{r.port}", "--keys", keys_file,
                             "--runtime", runtime, "--state", tmp_path / "state", "--timeout", 30)
        assert code == 0 and "Traceback" not in out.out + out.err, out.out + out.err
        outs.append(out.out)
    assert ["SAFE MODE" in o for o in outs] == [True] * 5, outs
    assert "sim-01: boot 5 is in SAFE MODE" in outs[-1]
    assert r.seen[("sim-01", 5)] == {0}


def test_simulate_never_takes_a_real_node_unless_named(tmp_path, capsys):
    # --nodes N takes only ids sim-*: a keys file with real nodes is not impersonated by default
    keys = tmp_path / "keys.toml"
    write_private(keys, format_keys({"sew-07": bytes(16), "air-01": bytes(range(16)), "sim-01": bytes([9]) * 16}))
    code, out = simulate(capsys, "--nodes", 2, "--to", "udp://127.0.0.1:9", "--keys", keys, "--state", tmp_path)
    assert code == 2 and "has 1 simulated node(s) (ids sim-*), --nodes 2" in out.err and "--node ID" in out.err
    assert not (tmp_path / "sew-07").exists() and not (tmp_path / "air-01").exists()
    code, out = simulate(capsys, "--node", "sew-09", "--to", "udp://127.0.0.1:9", "--keys", keys, "--state", tmp_path)
    assert code == 2 and "--node sew-09: not in" in out.err
