# Re-flashing a running node on the emulated Pico (the real MicroPython rp2 port on rp2040js,
# tools/rig/pico.py): `citynode flash` must stop the node and keep its watchdog (8.4 s on the
# RP2040) from resetting the board in the middle of an upload. Skipped, with one line, where
# the Pico images or Node.js are missing.
import subprocess
import sys

import pytest

from tools.provision import provision


@pytest.fixture
def running_pico(tmp_path):
    from tools.rig import pico

    why = pico.check()
    if why is not None:
        pytest.skip("emulated Pico: " + why)
    # a node on the USB console with a long interval: it sleeps most of the time
    provision("reflash-1", str(tmp_path / "node"), str(tmp_path / "keys.toml"), board="rp2", interval_s=60)
    rig = pico.PicoRig(tmp_path / "pico-flash.bin", log=lambda m: None).start()
    try:
        proc = subprocess.run([sys.executable, "-m", "tools.cli", "flash", "--port", rig.port, "--node-dir",
                               str(tmp_path / "node"), "--timeout", "60"], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        yield rig
    finally:
        rig.stop()


@pytest.mark.slow
def test_reflash_outlasts_the_running_nodes_watchdog(running_pico):
    # on main the raw REPL came only at the node's next cycle (often not within the timeout),
    # and once there the watchdog the node had armed reset the board 8.4 s later, mid-upload
    from tools.flash import connect

    rig = running_pico
    before = rig.report()
    fs = connect(rig.port, 60)  # Ctrl-C into the sleeping node, then the raw REPL
    try:
        fs.exec("import time\n_t0 = time.ticks_ms()\n_mark = 'still here'")
        waited = 0
        while waited < 12000:  # an upload's worth of REPL traffic, longer than the watchdog's 8.4 s
            out = fs.exec("print(time.ticks_diff(time.ticks_ms(), _t0))").decode(errors="replace").strip()
            assert out.isdigit(), "the board reset under the REPL (the node's watchdog?): %r" % out[-200:]
            waited = int(out)
        assert fs.exec("print(_mark)").decode().strip() == "still here"  # no reset in between
    finally:
        fs.t.close()
    after = rig.report()
    assert after["watchdog_resets"] == before["watchdog_resets"], (before, after)


def test_a_board_that_stalls_mid_command_is_waited_for(tmp_path):
    # A busy board (behind a USB hub, or this emulated Pico on a loaded host) can take over a
    # second to grant the next raw-paste window. With mpremote's reads bounded at 1 s the upload
    # died with "unexpected read during raw paste: b''" (seen on the emulated Pico under load).
    # The emulator is stopped for 2 s in the middle of a command larger than the port's window.
    import os
    import signal
    import threading

    from tools.flash import connect
    from tools.rig import pico

    why = pico.check()
    if why is not None:
        pytest.skip("emulated Pico: " + why)
    rig = pico.PicoRig(tmp_path / "pico-flash.bin", log=lambda m: None).start()
    try:
        fs = connect(rig.port, 60)
        pid = rig._proc.pid
        os.kill(pid, signal.SIGSTOP)
        resume = threading.Timer(2.0, os.kill, (pid, signal.SIGCONT))
        resume.start()
        try:
            out = fs.exec("_s = %r\nprint(len(_s))" % ("x" * 4000))
        finally:
            resume.cancel()
            os.kill(pid, signal.SIGCONT)
            fs.t.close()
    finally:
        rig.stop()
    assert out.strip() == b"4000"
