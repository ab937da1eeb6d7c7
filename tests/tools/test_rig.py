# The virtual rig behaves like a MicroPython board on USB serial: main.py runs when the
# port is opened, Ctrl-C stops it, and real mpremote works against the host folder as flash.
import hashlib
import subprocess
import sys
import time

import pytest
import serial

from tools.rig import VirtualRig

MPREMOTE = [sys.executable, "-m", "mpremote"]
TICKER = 'import time\nprint("node up")\nn = 0\nwhile True:\n    n += 1\n    print("tick", n)\n    time.sleep(0.05)\n'


@pytest.fixture
def rig(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(TICKER)
    r = VirtualRig(flash).start()
    yield r
    r.stop()


def read_until(port, marker, timeout=10.0):
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf and time.monotonic() < deadline:
        buf += port.read(4096)
    assert marker in buf, f"{marker!r} not seen in {buf[-300:]!r}"
    return buf


def mpremote(rig, *args):
    proc = subprocess.run([*MPREMOTE, "connect", rig.port, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.micropython
def test_boots_on_open_and_ctrl_c_gives_the_repl(rig):
    with serial.Serial(rig.port, 115200, timeout=0.1) as port:
        read_until(port, b"tick 2")
        port.write(b"\x03")
        read_until(port, b">>> ")
        port.write(b"6*7\r")
        read_until(port, b"42")
        port.write(b"\x01")
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(b"\x05A\x01")
        assert read_until(port, b"R\x00") == b"R\x00"  # raw-paste refused
        port.write(b"print('out')\nraise ValueError('bad')\x04")
        reply = read_until(port, b"\x04>")
        assert reply.startswith(b"OKout\n\x04") and b"ValueError: bad" in reply
        port.write(b"\x02\x04")  # friendly REPL, then soft reset: main.py again
        assert b"MPY: soft reboot" in read_until(port, b"node up")
    assert rig.boots >= 2


@pytest.mark.micropython
def test_mpremote_fs_against_the_host_folder(rig, tmp_path):
    payload = bytes(range(256)) * 12
    (tmp_path / "blob.bin").write_bytes(payload)
    mpremote(rig, "fs", "mkdir", ":lib")
    mpremote(rig, "fs", "cp", str(tmp_path / "blob.bin"), ":lib/blob.bin")
    assert (tmp_path / "flash" / "lib" / "blob.bin").read_bytes() == payload
    out = mpremote(rig, "fs", "sha256sum", ":lib/blob.bin")
    assert hashlib.sha256(payload).hexdigest() in out
    listing = mpremote(rig, "fs", "ls", ":/lib")
    assert f"{len(payload)} blob.bin" in listing
    assert "2" in mpremote(rig, "exec", "print(1+1)")
    mpremote(rig, "soft-reset")


@pytest.mark.micropython
def test_root_is_jailed_to_the_flash_folder(rig, tmp_path):
    out = mpremote(rig, "exec", "import os\nos.chdir('/..')\nprint(os.getcwd(), sorted(os.listdir('/')))")
    assert "/ ['main.py']" in out
    mpremote(rig, "exec", "open('/../../escaped.txt', 'w').write('x')")
    assert (tmp_path / "flash" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.micropython
def test_keeps_running_while_the_port_is_closed(rig):
    with serial.Serial(rig.port, 115200, timeout=0.1) as port:
        first = read_until(port, b"tick 3")
    time.sleep(0.5)
    with serial.Serial(rig.port, 115200, timeout=0.1) as port:
        buf = read_until(port, b"\n", timeout=5)
        buf = read_until(port, b"tick", timeout=5)
    numbers = [int(x) for x in buf.replace(b"\n", b" ").split(b"tick ")[1:] if x.strip().isdigit()]
    assert numbers and numbers[0] > 8, (first, buf)  # counted on while nobody listened
    assert rig.boots == 1 and rig.dropped > 0


def provision_rig_monitor(tmp_path, provision_args, count, duration):
    # citynode provision, a virtual board with that node installed, and citynode monitor on
    # its port until `count` frames -> monitor's CompletedProcess
    from tools import cli

    assert cli.main(["provision", *provision_args, "--out", str(tmp_path / "node"),
                     "--keys", str(tmp_path / "keys.toml")]) == 0
    rig = subprocess.Popen([sys.executable, "-m", "tools.cli", "rig", "--flash", str(tmp_path / "flash"),
                            "--node-dir", str(tmp_path / "node")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        port = rig.stdout.readline().split()[1]
        return subprocess.run([sys.executable, "-m", "tools.cli", "monitor", "--port", port, "--keys",
                               str(tmp_path / "keys.toml"), "--count", str(count), "--duration", str(duration)],
                              capture_output=True, text=True, timeout=duration + 30)
    finally:
        rig.terminate()
        rig.wait(10)


@pytest.mark.micropython
def test_technician_workflow_provision_rig_monitor(tmp_path):
    # provision -> a virtual board with that node installed -> citynode monitor verifies its frames
    mon = provision_rig_monitor(tmp_path, ["--node", "bench-1", "--board", "sim", "--interval", "1"], 2, 30)
    assert mon.returncode == 0, mon.stderr
    assert "| citynode" in mon.stdout and "node bench-1 boot 1" in mon.stdout  # the boot banner, as console
    assert "bench-1: 2 frames, MAC ok 2 failed 0" in mon.stdout, mon.stdout


@pytest.mark.micropython
def test_the_readme_path_esp32_node_on_the_rig_sends_at_once(tmp_path):
    # the README as written: --board esp32 and the default 300 s interval. The rig runs it (it
    # plays any board) and the node's first frame follows its boot, not 300 s later.
    mon = provision_rig_monitor(tmp_path, ["--node", "sew-07", "--board", "esp32"], 1, 60)
    assert mon.returncode == 0, mon.stderr
    assert "config: node sew-07 board esp32 link uart interval 300 s" in mon.stdout, mon.stdout
    assert "sew-07: 1 frames, MAC ok 1 failed 0" in mon.stdout, mon.stdout  # well before 300 s


@pytest.mark.micropython
def test_ctrl_c_inside_a_frame_is_data_outside_it_interrupts(tmp_path):
    # the running program reads its UART; a 0x03 in a COBS frame (ACKs have them) must reach
    # it, a 0x03 between frames stops it, as the node's firmware does on a real console
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(
        "import sys\nprint('echo ready')\nwhile True:\n"
        "    b = sys.stdin.buffer.read(1)\n    sys.stdout.write('got %d\\n' % b[0])\n")
    with VirtualRig(flash) as rig, serial.Serial(rig.port, 115200, timeout=0.1) as port:
        read_until(port, b"echo ready")
        port.write(b"\x00\x05\x03\x03\x00")
        assert b"got 3\ngot 3\ngot 0" in read_until(port, b"got 0\n")
        port.write(b"\x03")
        read_until(port, b">>> ")
