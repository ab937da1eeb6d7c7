# A sim node on MicroPython whose UART is its stdin/stdout (what the virtual rig puts
# behind a pty): console text and COBS frames share the line; the host deframes, verifies
# and ACKs over stdin.
import os
import subprocess
import threading

import pytest

from protocol import cobs
from protocol import message as msg
from tests.firmware.conftest import KEY, NODE
from tests.support import mpvm


@pytest.mark.micropython
def test_serial_sim_node_frames_and_console_are_separate(tmp_path):
    env = dict(os.environ, MICROPYPATH=str(mpvm.ROOT))
    p = subprocess.Popen([mpvm.micropython_binary(), "-m", "firmware.sim.run", "serial", "--flash",
                          str(tmp_path / "flash"), "--node", NODE, "--key", KEY.hex(), "--hours", "2"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         cwd=str(tmp_path))
    frames, text = [], []

    def gateway():
        deframer = cobs.Deframer()
        while True:
            data = p.stdout.read1(4096)
            if not data:
                text.append(deframer.pending_text().decode())  # console text after the last frame
                return
            for kind, body in deframer.feed(data):
                if kind == "frame":
                    d = msg.decode(body, {NODE: KEY}.get)
                    frames.append(d)
                    p.stdin.write(cobs.encode(msg.encode_ack(KEY, NODE, d["boot"], d["seq"])))
                    p.stdin.flush()
                elif kind == "text":
                    text.append(body.decode())
                else:
                    raise AssertionError("noise on the line: %s" % body)

    t = threading.Thread(target=gateway, daemon=True)
    t.start()
    try:
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
        t.join(5)
    assert p.returncode == 0, p.stderr.read().decode()
    console = "".join(text)
    assert "citynode sim board ready (node sew-07)" in console
    assert "citynode 0.1.0 node sew-07 boot 1 reset power_on" in console
    assert [d["seq"] for d in frames] == list(range(len(frames))) and len(frames) >= 2
    assert "sim done: %d frames, 0 unacknowledged" % len(frames) in console
