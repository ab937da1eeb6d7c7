# The Linux (Raspberry Pi) board on CPython: its UART uplink is a real pty driven through
# pyserial, the host side deframes, verifies and ACKs; the node prunes its buffer.
import json
import os
import pty
import socket
import subprocess
import threading
import time

import pytest

from firmware import config
from firmware.boards.linux import Board
from firmware.node import Node
from protocol import cobs
from protocol import message as msg
from tests.firmware.conftest import KEY, NODE
from tests.support import mpvm
from tools.procs import micropython_binary


def test_linux_board_node_over_a_pty(tmp_path):
    master, slave = pty.openpty()
    import tty

    tty.setraw(slave)
    port = os.ttyname(slave)
    cfg = config.validate({"node": NODE, "key": KEY.hex(), "board": "linux", "interval_s": 1, "storm_interval_s": 1,
                           "heartbeat_s": 1, "link": {"kind": "uart", "port": port, "baudrate": 115200},
                           "sensors": {"climate": None, "level": None}})
    logs = []
    board = Board(str(tmp_path), log=logs.append)
    node = Node(board, cfg)
    node.start()
    got = []
    stop = threading.Event()

    def gateway():
        deframer = cobs.Deframer()
        os.set_blocking(master, False)
        while not stop.is_set():
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            for kind, body in deframer.feed(data):
                if kind == "frame":
                    d = msg.decode(body, {NODE: KEY}.get)
                    got.append(d)
                    os.write(master, cobs.encode(msg.encode_ack(KEY, NODE, d["boot"], d["seq"])))

    t = threading.Thread(target=gateway, daemon=True)
    t.start()
    try:
        node.run(max_cycles=3)
    finally:
        stop.set()
        t.join(2)
        node.uplink.link.uart.port.close()
        os.close(master)
        os.close(slave)
    assert [d["seq"] for d in got] == [0, 1, 2]
    assert got[0]["info"][msg.I_BOARD] == "linux" and got[0]["records"][0][0] == "status"
    assert node.uplink.buffer.live == 0 and node.counts["acked"] == 3
    assert any("boot 1" in line for line in logs)


def test_linux_board_refuses_sensors_it_cannot_read(tmp_path):
    cfg = config.validate({"node": NODE, "key": KEY.hex(), "board": "linux", "link": {"kind": "udp",
                           "host": "127.0.0.1", "port": 9}, "sensors": {"climate": None,
                           "level": {"kind": "hcsr04"}}})
    logs = []
    board = Board(str(tmp_path), log=logs.append)
    from firmware.sampler import Sampler

    s = Sampler(board, cfg)
    s.sample()  # the part does not open: a fault reading, the reason logged
    assert s.sensors[0][0].part is None and s.level_q[2] == msg.Q_FAULT
    assert "time_pulse_us" in logs[0]


@pytest.mark.micropython
def test_the_unix_port_runs_the_node_as_board_linux_over_udp(tmp_path):
    # firmware/main.py on the MicroPython unix port (board linux, docs/technician.md) sends
    # signed frames to a UDP gateway on loopback and prunes what it ACKs. It crashed at start:
    # os.path (linux.Board.path) and print(flush=) are CPython's, not the port's.
    gw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gw.bind(("127.0.0.1", 0))
    gw.settimeout(0.5)
    cfg = {"node": NODE, "key": KEY.hex(), "board": "linux", "interval_s": 2, "storm_interval_s": 1,
           "link": {"kind": "udp", "host": "127.0.0.1", "port": gw.getsockname()[1]},
           "sensors": {"climate": None, "level": None}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    env = dict(os.environ, MICROPYPATH=f"{mpvm.ROOT}:.frozen")
    proc = subprocess.Popen([micropython_binary(), "-X", f"heapsize={mpvm.HEAP}", "-c",
                             f"from firmware import main\nmain.main({str(tmp_path)!r})"],
                            cwd=str(mpvm.ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    got = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            try:
                data, addr = gw.recvfrom(2048)
            except TimeoutError:
                continue
            d = msg.decode(data, {NODE: KEY}.get)
            got.append(d)
            gw.sendto(msg.encode_ack(KEY, NODE, d["boot"], d["seq"]), addr)
    finally:
        proc.kill()
        out = proc.communicate(timeout=10)[0].decode()
        gw.close()
    assert [d["seq"] for d in got] == [0, 1], out
    assert got[0]["info"][msg.I_BOARD] == "linux" and got[0]["boot"] == 1, out
    assert out.startswith(f"citynode 0.1.0 node {NODE} boot 1") and "start failed" not in out, out
