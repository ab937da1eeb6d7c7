# Hardware-in-the-loop fixtures. Run with pytest-embedded's serial service:
#   pytest hil_tests --embedded-services serial                     # virtual rig + emulated Pico
#   pytest hil_tests --embedded-services serial --port /dev/ttyUSB0 # a real board
# Without --port every test runs on two boards, each fresh per test: the virtual rig
# (tools/rig/board.py: the firmware on the MicroPython unix port behind a pty, a temp folder
# as flash) and the emulated Pico (tools/rig/pico.py: the real MicroPython rp2 image on
# rp2040js behind a pty; marker `pico`), which the session flashes once with `citynode flash`
# and each test boots from a copy of that flash. With --port the session provisions a test
# node and flashes it with `citynode flash`, so every board runs the same firmware, the
# same config and the same tests. Without the Pico images (CITYNODE_RIG_DIR) or Node.js the
# Pico runs are skipped, with one line naming what is missing.
import json
import re
import shutil
import subprocess
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
    config.addinivalue_line("markers", "pico: runs on the emulated Raspberry Pi Pico (real MicroPython rp2 port)")


def pytest_generate_tests(metafunc):
    # every test that uses a board runs on each kind: the real one with --port, else both rigs
    if "board_kind" in metafunc.fixturenames:
        if metafunc.config.getoption("port", None):
            kinds = [pytest.param("port", id="port")]
        else:
            kinds = [pytest.param("virtual", id="virtual"), pytest.param("pico", id="pico", marks=pytest.mark.pico)]
        metafunc.parametrize("board_kind", kinds, scope="session")


def pytest_collection_modifyitems(config, items):
    # Without the Pico's images or Node.js, its runs are left out and the summary says so in
    # one line naming what is missing (a fresh clone without ../shared/rig)
    if config.getoption("port", None):
        return
    pico_items = [i for i in items if i.get_closest_marker("pico")]
    if not pico_items:
        return
    from tools.rig import pico

    why = pico.check()
    if why is None:
        return
    items[:] = [i for i in items if not i.get_closest_marker("pico")]
    config.hook.pytest_deselected(items=pico_items)
    config.stash[PICO_LEFT_OUT] = "SKIPPED %d emulated Pico tests: %s" % (len(pico_items), why)


PICO_LEFT_OUT = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter, config):
    line = config.stash.get(PICO_LEFT_OUT, None)
    if line:
        terminalreporter.write_line(line, yellow=True)


def skip_without_pico():
    # Without the Pico's images or Node.js its runs skip, all from this line: one line in -ra
    from tools.rig import pico

    why = pico.check()
    if why is not None:
        pytest.skip("emulated Pico: " + why)


def real_board(request):
    return bool(request.config.getoption("port", None))


def on_pico(request):
    return request.node.callspec.params.get("board_kind") == "pico" if hasattr(request.node, "callspec") else False


def known_defect(request, reason, where=("pico",)):
    # A test that meets a known defect of the firmware on these boards: xfail(strict=True)
    # there, naming the defect, so the fix turns it into an XPASS failure and the call goes
    kind = request.node.callspec.params.get("board_kind") if hasattr(request.node, "callspec") else None
    if kind in where:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def needs_real_port(request):
    # device behaviour the unix port cannot show (watchdog, flash wear, power, heap of a chip)
    kind = request.node.callspec.params.get("board_kind") if hasattr(request.node, "callspec") else None
    if kind == "virtual":
        pytest.skip("a real port's behaviour: runs on the emulated Pico and on a real board (--port), "
                    "not on the unix-port virtual rig")


@pytest.fixture(scope="session")
def hil_node(request, tmp_path_factory):
    # One provisioned test node per session: id, key, config and the gateway keys file.
    base = tmp_path_factory.mktemp("hil")
    _path, cfg = provision(NODE, str(base / "node"), str(base / "keys.toml"), board="sim", interval_s=INTERVAL_S)
    # a frame every cycle (heartbeat_s None, the default), never report-on-change: with a heartbeat of
    # INTERVAL_S a node put on a 1 s interval by the operator reported only every other cycle
    cfg.update(storm_interval_s=1, heartbeat_s=None)
    (base / "node" / "config.json").write_text(json.dumps(cfg))
    # the same node for the Pico (board rp2: firmware/boards/rp2.py, the USB console as its link)
    (base / "node-rp2").mkdir()
    (base / "node-rp2" / "config.json").write_text(json.dumps(dict(cfg, board="rp2")))
    node = {"node": NODE, "key": bytes.fromhex(cfg["key"]), "config": cfg, "node_dir": base / "node",
            "rp2_dir": base / "node-rp2", "keys_file": base / "keys.toml", "base": base,
            "operator_keys": base / "operator-keys.toml"}  # the command key, off the gateway (SPEC 6.7)
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


def rig_log(m):
    print("rig: " + m, file=sys.stderr)


def flash_board(port, node_dir, timeout=180):
    # `citynode flash` as a technician runs it -> (exit status, stdout, stderr); --timeout as
    # for a slow board (docs/technician.md): the emulated Pico on a loaded core
    from tools.rig.pico import REPL_WAIT_S

    proc = subprocess.run([sys.executable, "-m", "tools.cli", "flash", "--port", port, "--node-dir", str(node_dir),
                           "--timeout", str(REPL_WAIT_S)], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def pico_template(hil_node):
    # The Pico's flash after `citynode flash` with the session's node, once per session;
    # every Pico test boots from a copy of it
    from tools.rig.pico import PicoRig

    skip_without_pico()
    path = hil_node["base"] / "pico-flashed.bin"
    r = PicoRig(path, log=rig_log, power_on_open=False).start()
    try:
        code, out, err = flash_board(r.port, hil_node["rp2_dir"])
        assert code == 0, "citynode flash onto the emulated Pico failed: " + (err or out)[-2000:]
    finally:
        r.stop()
    return path


@pytest.fixture
def rig(request, board_kind, hil_node, tmp_path):
    # A fresh board for each test, already flashed with the session's node; None on a real board
    if board_kind == "port":
        yield None
        return
    if board_kind == "pico":
        from tools.rig.pico import PicoRig

        skip_without_pico()
        flash = tmp_path / "pico-flash.bin"
        shutil.copyfile(request.getfixturevalue("pico_template"), flash)
        r = PicoRig(flash, log=rig_log).start()
    else:
        flash = tmp_path / "flash"
        shutil.copytree(hil_node["template"], flash)
        r = VirtualRig(flash, log=rig_log).start()
    yield r
    r.stop()


@pytest.fixture
def blank_rig(request, board_kind, tmp_path):
    # A board with MicroPython and an empty flash, as it comes from the factory
    if board_kind == "port":
        pytest.skip("a blank board is a rig case; a real board keeps its flash")
    if board_kind == "pico":
        from tools.rig.pico import PicoRig

        skip_without_pico()
        r = PicoRig(tmp_path / "blank-pico-flash.bin", log=rig_log).start()
    else:
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
            m = self.dut.expect(re.compile(rb"\x00[^\x00]+\x00|cycle failed: [^\r\n]*"),
                                timeout=max(0.1, deadline - time.monotonic()))
            if m.group(0).startswith(b"cycle failed"):  # the node says its loop broke: no point waiting
                raise AssertionError("the node reports: " + m.group(0).decode(errors="replace"))
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
