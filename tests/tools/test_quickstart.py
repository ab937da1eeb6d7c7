# The README's "Quickstart on a laptop", run as written from a fresh clone of this repository:
# a local mosquitto from deploy/mosquitto-local.conf, mosquitto_sub watching, a node provisioned
# for the virtual rig, the rig on a pty behind a fixed link, the gateway from
# deploy/gateway-laptop.toml, until mosquitto_sub prints the node's first frame. Two liberties,
# both needed to run beside other tests: free ports instead of 1883/8080/5683 (in the lines and
# in the clone's two config files), and the clone reuses this checkout's .venv instead of
# running `make venv` (PYTHONPATH makes the clone's own code the one that runs).
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.support.broker import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]


def quickstart_lines():
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- quickstart:begin", 1)[1].split("<!-- quickstart:end", 1)[0]
    body = block.split("```sh\n", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in body.splitlines() if line.strip()]


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("mosquitto_sub") or not (shutil.which("mosquitto") or
                                                             os.path.exists("/usr/sbin/mosquitto")),
                    reason="needs mosquitto and mosquitto-clients (apt-get install mosquitto mosquitto-clients)")
def test_the_laptop_quickstart_works_as_written(tmp_path):
    lines = quickstart_lines()
    assert lines[0] == "make venv" and any(x.startswith("mosquitto_sub ") for x in lines)
    clone = tmp_path / "citynode"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    os.symlink(REPO / ".venv", clone / ".venv")  # instead of `make venv`: the same packages
    broker, web, udp = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    for name, swaps in (("deploy/mosquitto-local.conf", {"1883": str(broker)}),
                        ("deploy/gateway-laptop.toml", {"1883": str(broker), "8080": str(web), "5683": str(udp)})):
        path = clone / name
        text = path.read_text()
        for old, new in swaps.items():
            assert old in text, (name, old)
            text = text.replace(old, new)
        path.write_text(text)
    env = dict(os.environ, PYTHONPATH=str(clone))
    env.pop("CITYNODE_RIG_DIR", None)
    if shutil.which("mosquitto") is None:
        env["PATH"] = env.get("PATH", "") + ":/usr/sbin"
    background = []
    watcher = None
    try:
        for line in lines[1:]:
            line = line.replace("-p 1883", f"-p {broker}")
            if line.endswith("&"):
                proc = subprocess.Popen(["bash", "-c", line[:-1].strip()], cwd=clone, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
                background.append(proc)
                if line.startswith("mosquitto_sub"):
                    watcher = proc
                if line.startswith("mosquitto "):
                    _wait_port(broker)
                if "citynode rig" in line:
                    _wait(lambda: (clone / "lab" / "board").is_symlink(), 60, "the rig's --link")
            else:
                done = subprocess.run(["bash", "-c", line], cwd=clone, env=env, capture_output=True, text=True,
                                      timeout=120)
                assert done.returncode == 0, (line, done.stdout, done.stderr)
        assert watcher is not None
        up = _read_until(watcher, "citynode/nodes/lab-01/up ", 90)
        frame = json.loads(up.split(" ", 1)[1])
        assert frame["node"] == "lab-01" and frame["gateway"] == "gw-laptop" and frame["senml"]
        assert frame["senml"][0]["bn"] == "lab-01:"
    finally:
        for proc in reversed(background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in background:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
    assert not (clone / "lab" / "board").exists()  # the rig removed its link on the way out


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_port(port):
    def up():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    _wait(up, 30, f"mosquitto on {port}")


def _read_until(proc, prefix, timeout):
    # lines of a background process until one starts with prefix (a deadline, not a sleep)
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        if not sel.select(max(0.0, deadline - time.monotonic())):
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"no {prefix!r} within {timeout} s; mosquitto_sub printed: {seen[-5:]}")
