# Plain mistakes a technician makes with `citynode`: each ends in ONE line on stderr that
# names the problem, the documented exit code (docs/technician.md, "Exit codes": 1 the
# command failed, 2 a wrong option / value / input file, 130 Ctrl-C), never a traceback,
# and the gateway keys file is still there and valid afterwards.
import os
import signal
import subprocess
import sys
import time

import pytest

from gateway.keys import load_keys
from tools import cli

# (argv with {tmp}, {keys}, {node}, {file} placeholders, exit code, words the line must hold)
MISTAKES = [
    (["monitor", "--udp", "127.0.0.1:99999"], 2, "port 99999 is not 1..65535"),
    (["monitor", "--udp", "localhost"], 2, "must be HOST:PORT"),
    (["monitor", "--udp", "nohost.invalid:15685"], 2, "cannot resolve 'nohost.invalid'"),
    (["monitor", "--port", "/dev/ttyUSB97"], 1, "no such port /dev/ttyUSB97"),
    (["monitor", "--udp", "127.0.0.1:15685", "--count", "0"], 2, "--count: must be more than 0"),
    (["monitor", "--udp", "127.0.0.1:15685", "--keys", "{tmp}/missing.toml"], 2, "no such keys file"),
    (["simulate", "--to", "udp://nohost.invalid:15685", "--keys", "{keys}"], 2, "cannot resolve 'nohost.invalid'"),
    (["simulate", "--to", "http://127.0.0.1:15685", "--keys", "{keys}"], 2, "--to must be udp://HOST:PORT"),
    (["simulate", "--to", "udp://127.0.0.1:15685", "--keys", "{keys}", "--nodes", "1"], 2,
     "has 0 simulated node(s) (ids sim-*)"),
    (["simulate", "--to", "udp://127.0.0.1:15685", "--keys", "{keys}", "--node", "sew-02"], 2,
     "--node sew-02: not in"),
    (["decode", ""], 2, "no frame given (empty input)"),
    (["decode", "0x"], 2, "no frame given (empty input)"),
    (["demo", "--web", "0.0.0.0:8080"], 2, "loopback only"),
    (["flash", "--port", "/dev/ttyUSB97", "--node-dir", "{file}"], 2, "is a file; give the folder"),
    (["rig", "--flash", "{tmp}/board", "--node-dir", "{file}"], 2, "is a file; give the folder"),
    (["rig", "--flash", "{tmp}/board", "--link", "{file}"], 2, "exists and is no symlink"),
    (["provision", "--node", "sew-02", "--out", "{tmp}/n1", "--keys", "{keys}", "--gateway", "nohost.invalid:5683",
      "--board", "linux"], 2, "cannot resolve 'nohost.invalid'"),
    (["rig", "--flash", "{file}"], 2, "is a file; give a folder"),
    (["rig", "--flash", "{tmp}/board", "--node-dir", "{tmp}/nonode"], 2, "no node config here"),
    (["provision", "--node", 'a"b', "--out", "{tmp}/n1", "--keys", "{keys}"], 2, "node id 'a\"b': must be"),
    (["provision", "--node", "a\\b", "--out", "{tmp}/n1", "--keys", "{keys}"], 2, "letter or digit"),
    (["provision", "--node", "sew-01", "--out", "{tmp}/n1", "--keys", "{keys}"], 1, "already has a key for sew-01"),
    (["provision", "--node", "sew-02", "--out", "{tmp}/n1", "--keys", "{tmp}/nonexistent/dir/k.toml"], 2,
     "does not exist"),
    (["provision", "--node", "sew-02", "--out", "{file}", "--keys", "{keys}"], 2, "is a file"),
    (["provision", "--node", "sew-02", "--out", "{tmp}/n1", "--keys", "{keys}", "--interval", "0"], 2,
     "interval must be 1..86400"),
    (["provision", "--node", "sew-02", "--out", "{tmp}/n1", "--keys", "{keys}", "--gateway", "10.0.0.2:99999",
      "--board", "linux"], 2, "--gateway 10.0.0.2:99999: port 99999 is not 1..65535"),
    (["provision", "--node", "sew-02", "--out", "{tmp}/n1", "--keys", "{keys}", "--gateway", "10.0.0.2",
      "--board", "linux"], 2, "--gateway must be HOST:PORT"),
    (["provision", "--node", "sew-02", "--out", "{tmp}/n1", "--keys", "{keys}", "--board", "esp33"], 2,
     "invalid choice: 'esp33'"),
    (["provision", "--node", "sew-01", "--out", "{tmp}/n1", "--keys", "{keys}", "--drop-old-key"], 2,
     "--drop-old-key replaces a key: give --force too"),
    (["decode", "not a frame!"], 2, "input is neither hex nor base64"),
    (["decode", "d18401"], 1, "not a valid frame"),
    (["flash", "--port", "/dev/ttyUSB97", "--node-dir", "{node}"], 1, "no such port /dev/ttyUSB97"),
    (["flash", "--port", "/dev/ttyUSB97", "--node-dir", "{tmp}/nonode"], 2, "no node config here"),
    (["gateway", "--config", "{tmp}/missing.toml"], 2, "config error"),
    (["demo", "--nodes", "0"], 2, "--nodes must be 1..20"),
    (["demo", "--web", "localhost"], 2, "must be HOST:PORT"),
    (["demo", "--duration", "-3"], 2, "--duration: must be more than 0"),
    (["bench", "nosuch"], 2, "no benchmark 'nosuch'"),
    (["nosuch"], 2, "invalid choice: 'nosuch'"),
    (["monitor"], 2, "one of the arguments --port --udp is required"),
    # each package's errors through the one map of tools/cli.py (exit_code; tests/tools/test_errors.py)
    (["gateway"], 2, "give --config FILE"),  # the gateway's ConfigError
    (["relay", "--config", "{tmp}/missing.toml"], 2, "config error: "),
    (["monitor", "--udp", "127.0.0.1:15685", "--keys", "{file}"], 2, "not valid TOML"),  # KeysError
    (["simulate", "--to", "udp://127.0.0.1:15685", "--keys", "{file}"], 2, "not valid TOML"),
    (["command", "--node", "sew-01", "--op", "interval", "--arg", "0", "--operator-keys", "{tmp}/operator-keys.toml",
      "--print", "--boot", "1"], 2, "out_of_range (nothing was signed)"),  # the one command checker
    (["rig", "--flash", "{tmp}/board", "--link", "{tmp}/nodir/x"], 2, "its folder does not exist"),
    (["demo", "--duration", "1e10"], 2, "must be more than 0 and below"),
    (["decode", "d18443a10104a0f640"], 1, "not a valid citynode message"),  # protocol's FrameError
]


@pytest.fixture(scope="module")
def workbench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mistakes")
    assert cli.main(["provision", "--node", "sew-01", "--board", "sim", "--out", str(tmp / "node"),
                     "--keys", str(tmp / "keys.toml")]) == 0
    (tmp / "afile").write_text("not a folder\n")
    return tmp


def citynode(argv, **kw):
    return subprocess.run([sys.executable, "-m", "tools.cli", *argv], capture_output=True, text=True, timeout=60,
                          **kw)


@pytest.mark.parametrize("argv,code,words", MISTAKES, ids=[" ".join(m[0])[:60] for m in MISTAKES])
def test_a_mistake_is_one_line_and_its_exit_code(workbench, argv, code, words):
    keys = workbench / "keys.toml"
    before = keys.read_bytes()
    argv = [a.format(tmp=workbench, keys=keys, node=workbench / "node", file=workbench / "afile") for a in argv]
    proc = citynode(argv)
    lines = proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("citynode"), lines[0]
    assert words in lines[0], lines[0]
    assert proc.returncode == code, (proc.returncode, lines[0])
    assert keys.read_bytes() == before
    assert list(load_keys(keys)) == ["sew-01"]
    assert not (workbench / "n1").exists()  # a refused provision made no folder


def test_at_least_fifteen_mistakes_are_covered():
    assert len(MISTAKES) >= 15


def interrupted(argv, ready, cwd=None):
    # start a command, wait until it shows `ready` on stderr (it is past its start-up), then Ctrl-C
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    seen = b""
    deadline = time.monotonic() + 60
    fd = proc.stderr.fileno()
    while ready.encode() not in seen and time.monotonic() < deadline:
        chunk = os.read(fd, 4096)  # blocks until the command writes (or exits: b"")
        if not chunk:
            break
        seen += chunk
    assert ready.encode() in seen, seen
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    return proc.returncode, seen.decode() + err


def test_ctrl_c_in_simulate_says_so(workbench):
    # the "gateway" is a UDP socket that never answers: the node resends until Ctrl-C, which
    # comes once its first datagram has arrived (the command is past its start-up)
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        quiet.settimeout(30)
        port = quiet.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "simulate", "--to", f"udp://127.0.0.1:{port}",
                                 "--keys", str(workbench / "keys.toml"), "--node", "sew-01", "--frames", "1000000",
                                 "--state", str(workbench / "simstate")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            quiet.recvfrom(2048)
        finally:
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["citynode simulate: interrupted (Ctrl-C)"], err


def test_ctrl_c_in_flash_says_so(workbench):
    # a port with nothing behind it: flash waits for a REPL until Ctrl-C
    master, slave = os.openpty()
    port = os.ttyname(slave)
    os.close(slave)
    try:
        rc, err = interrupted(["flash", "--port", port, "--node-dir", str(workbench / "node"), "--timeout", "60"],
                              "compile")
    finally:
        os.close(master)
    assert rc == 130
    last = err.strip().splitlines()[-1]
    assert last.startswith("citynode flash: interrupted (Ctrl-C)"), err
    assert "Traceback" not in err and "refused" not in err
