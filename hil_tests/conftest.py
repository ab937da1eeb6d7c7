# Hardware-in-the-loop fixtures. Run with pytest-embedded's serial service:
#   pytest hil_tests --embedded-services serial                     # the virtual rig
#   pytest hil_tests --embedded-services serial --port /dev/ttyUSB0 # a real board
# Without --port every test gets a fresh virtual rig (tools/rig: the real firmware on the
# MicroPython VM behind a pty, with a temp folder as flash). With --port the session first
# provisions a test node and flashes it with `citynode flash`, so both kinds of board run
# the same firmware, the same config and the same tests.
import json
import re
import shutil
import sys
import time

import pytest

from protocol import cobs, message
from tools.provision import provision
from tools.rig import VirtualRig
from tools.upload import build_bundle, write_bundle

NODE = "hil-1"
INTERVAL_S = 2  # short, so a test sees several cycles in seconds
NEEDS_HARDWARE = "needs a real board (run with --port /dev/ttyUSB0); the virtual rig simulates this part"


def pytest_configure(config):
    if not config.getoption("embedded_services", None):
        config.option.embedded_services = "serial"  # `pytest hil_tests` alone uses the serial service


def real_board(request):
    return bool(request.config.getoption("port", None))


@pytest.fixture(scope="session")
def hil_node(request, tmp_path_factory):
    # One provisioned test node per session: id, key, config and the gateway keys file.
    base = tmp_path_factory.mktemp("hil")
    _path, cfg = provision(NODE, str(base / "node"), str(base / "keys.toml"), board="sim", interval_s=INTERVAL_S)
    cfg.update(storm_interval_s=1, heartbeat_s=INTERVAL_S)  # report every cycle, never wait for a change
    (base / "node" / "config.json").write_text(json.dumps(cfg))
    node = {"node": NODE, "key": bytes.fromhex(cfg["key"]), "config": cfg, "node_dir": base / "node",
            "keys_file": base / "keys.toml", "base": base}
    if real_board(request):
        cfg["board"] = "esp32"
        (base / "node" / "config.json").write_text(json.dumps(cfg))
        from tools.cli import main

        assert main(["flash", "--port", request.config.getoption("port"), "--node-dir", str(base / "node")]) == 0
    else:
        template = base / "flash-template"
        write_bundle(template, build_bundle(cfg))  # what `citynode flash` puts on the board
        node["template"] = template
    return node


@pytest.fixture
def rig(request, hil_node, tmp_path):
    # A fresh virtual board for each test, already flashed with the session's node; None on a real board
    if real_board(request):
        yield None
        return
    flash = tmp_path / "flash"
    shutil.copytree(hil_node["template"], flash)
    r = VirtualRig(flash, log=lambda m: print("rig: " + m, file=sys.stderr)).start()
    yield r
    r.stop()


@pytest.fixture
def blank_rig(request, tmp_path):
    # A virtual board with MicroPython and an empty flash, as it comes from the factory
    if real_board(request):
        pytest.skip("a blank board is a virtual-rig case; a real board keeps its flash")
    r = VirtualRig(tmp_path / "blank-flash").start()
    yield r
    r.stop()


@pytest.fixture
def port(request, rig):
    # pytest-embedded's port: the real board's (--port) or the virtual rig's pty
    if rig is None:
        return request.config.getoption("port")
    return rig.port


def reboot_real_board(request, dut):
    # A virtual rig powers on when the test opens its port; a real board may already have
    # printed its banner (boards with native USB do not reset on open): Ctrl-C stops the
    # node, Ctrl-D at the REPL soft-resets it, and the banner comes again.
    if real_board(request):
        dut.serial.proc.write(b"\r\x03")
        time.sleep(0.5)
        dut.serial.proc.write(b"\x04")


class FrameReader:
    # Reads the node's frames from a pytest-embedded dut (the console text around them is
    # skipped), verifies each with the node's key, and can answer with ACKs like a gateway.
    def __init__(self, dut, node):
        self.dut = dut
        self.node = node
        self.deframer = cobs.Deframer()

    def next(self, timeout=15, ack=True):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.dut.expect(re.compile(rb"\x00[^\x00]+\x00"), timeout=max(0.1, deadline - time.monotonic()))
            for kind, body in self.deframer.feed(m.group(0)):
                if kind != "frame":
                    continue
                d = message.decode(body, {self.node["node"]: self.node["key"]}.get)  # raises on a bad MAC
                if ack:
                    self.ack(d)
                return d, body
        raise TimeoutError("no frame from the node within %s s" % timeout)

    def ack(self, d):
        key = self.node["key"]
        self.dut.serial.proc.write(cobs.encode(message.encode_ack(key, d["node"], d["boot"], d["seq"])))


@pytest.fixture
def mosquitto(tmp_path):
    # a real mosquitto on a free loopback port (the same helper as tests/)
    from tests.support.broker import Mosquitto

    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()
