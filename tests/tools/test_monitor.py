# citynode monitor decodes frames live from a pty and from UDP: readings, MAC ok/failed,
# gaps, and the node's console lines, including a last line that has no newline yet.
import os
import signal
import socket
import subprocess
import sys
import time

from gateway.files import write_private
from gateway.keys import format_keys
from protocol import cobs, message, senml

KEY = bytes(range(16))


def frame(seq, key=KEY, node="sew-07", boot=3, level=0.42):
    return message.encode_data(key, node, boot, seq, 1000 * seq,
                               [senml.record("l", level), senml.record("t", 21.5)], flags=message.F_STORM)


def start_monitor(tmp_path, *source):
    # -> the running monitor, once it has its port or socket open (it says "monitoring ..." on
    # stderr only then: what is sent afterwards reaches it)
    keys = tmp_path / "keys.toml"
    write_private(keys, format_keys({"sew-07": KEY}))
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "monitor", *source, "--keys", str(keys),
                             "--duration", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    read_until(proc.stderr, b"monitoring ")
    return proc


def read_until(pipe, marker, timeout=60.0):
    # read a child's pipe until marker shows (a readiness wait with a deadline, not a sleep)
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        chunk = os.read(pipe.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    assert marker in seen, seen[-500:]
    return seen


def stop(proc, seen=b""):
    # Ctrl-C: the monitor's normal way to end, with its summary
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, (seen + out).decode(), err.decode()


def test_monitor_on_a_pty(tmp_path):
    master, slave = os.openpty()
    port = os.ttyname(slave)
    os.close(slave)  # the monitor must be the only holder of the port
    proc = start_monitor(tmp_path, "--port", port)
    stream = (b"citynode 0.1.0 node sew-07 boot 3\n" + cobs.encode(frame(0)) + cobs.encode(frame(1))
              + b"\x00\x07\xff\xfe\x00"  # noise between delimiters
              + cobs.encode(frame(4)) + cobs.encode(frame(5, key=bytes(16))) + b"storm mode on: level 1250 mm")
    os.write(master, stream)
    seen = read_until(proc.stdout, b"| storm mode on: level 1250 mm")  # flushed on idle, no newline needed
    rc, out, err = stop(proc, seen)
    os.close(master)
    assert rc == 0, err
    assert "| citynode 0.1.0 node sew-07 boot 3" in out
    rows = [line for line in out.splitlines() if "sew-07" in line and "/" in line and "|" not in line]
    assert len(rows) == 4, out
    assert "l=0.42m" in rows[0] and "t=21.5Cel" in rows[0] and "storm" in rows[0] and " ok " in rows[0]
    assert "+2" in rows[2]  # seq 2 and 3 missing
    assert "FAILED" in rows[3]
    assert "sew-07: 4 frames, MAC ok 3 failed 1, 2 missing seq, 0 resent" in out
    assert "4 frames from 1 nodes" in out


def test_monitor_on_udp(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start_monitor(tmp_path, "--udp", f"127.0.0.1:{port}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for seq in (7, 8, 8):
            s.sendto(frame(seq), ("127.0.0.1", port))
        s.sendto(b"\xd1\x84garbage", ("127.0.0.1", port))
    seen = read_until(proc.stdout, b"rejected: ")  # the garbage, sent last, has its row
    rc, out, err = stop(proc, seen)
    assert rc == 0, err
    assert "resend" in out
    assert "3 frames from 1 nodes" in out


def test_a_port_held_by_another_program_is_busy(tmp_path):
    # flash and a second monitor must hear "busy", not fight the first monitor for the bytes
    master, slave = os.openpty()
    port = os.ttyname(slave)
    os.close(slave)
    first = start_monitor(tmp_path, "--port", port)
    try:
        second = subprocess.run([sys.executable, "-m", "tools.cli", "monitor", "--port", port], capture_output=True,
                                text=True, timeout=60)
    finally:
        stop(first)
        os.close(master)
    assert second.returncode == 1
    assert second.stderr.splitlines() == [f"citynode monitor: port {port} is busy: citynode monitor "
                                          f"(pid {first.pid}) has it open; close that and retry"]


def test_monitor_port_missing_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "monitor", "--port", "/dev/ttyUSB98"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["citynode monitor: no such port /dev/ttyUSB98: is the board plugged in? "
                                        "(ls /dev/ttyUSB* /dev/ttyACM*)"]
