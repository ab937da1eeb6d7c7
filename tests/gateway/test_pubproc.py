# The publisher process (gateway/pubproc.py) as the kernel sees it: the gateway has one
# child, `python -P -m gateway.pubproc FD` (no multiprocessing resource tracker: a third
# interpreter, ~13 MiB RSS, that spawn used to start), and that child goes away by itself
# when the gateway is killed with SIGKILL (its end of the socketpair reads EOF).
import os

import pytest

from tests.gateway.conftest import GatewayProcess, wait_for, write_config


def children(pid):
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode(errors="replace").split("\0")[:-1]


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next(line for line in f if line.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return " Z " not in state and "zombie" not in state



@pytest.mark.integration
def test_the_publisher_process_is_the_only_child_and_leaves_with_a_killed_gateway(tmp_path, mosquitto, udp_port):
    path = write_config(tmp_path / "gw", mosquitto.url, udp=f"127.0.0.1:{udp_port}",
                        mqtt_extra='publisher = "process"')
    gwp = GatewayProcess(path).start(wait_port=udp_port)
    try:
        assert wait_for(lambda: "mqtt: connected" in gwp.log.read_text(errors="replace")), gwp.log.read_text()
        kids = children(gwp.proc.pid)
        assert len(kids) == 1, [cmdline(k) for k in kids]
        child = kids[0]
        assert cmdline(child)[1:4] == ["-P", "-m", "gateway.pubproc"], cmdline(child)
        gwp.kill9()
        assert wait_for(lambda: not alive(child), 10), cmdline(child)
    finally:
        gwp.terminate()
