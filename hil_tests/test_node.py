# The node on its serial line: boot banner and config, sample cycles whose frames verify
# on the host, and recovery when the host closes and reopens the port. Read like transcripts.
import time

import pytest

from hil_tests.conftest import (
    INTERVAL_S,
    NEEDS_HARDWARE,
    NODE,
    FrameReader,
    on_pico,
    real_board,
    reboot_real_board,
)
from protocol import message


def test_boot_banner_and_config(request, dut, hil_node):
    reboot_real_board(request, dut)
    m = dut.expect(rb"citynode (\S+) node (\S+) boot (\d+) reset (\S+)", timeout=20)
    version, node, boot = m.group(1).decode(), m.group(2).decode(), int(m.group(3))
    assert node == NODE and boot >= 1
    # the first frame of a boot says how the node is set up (SPEC 6.1 info)
    d, _ = FrameReader(dut, hil_node).next()
    assert d["boot"] == boot and d["seq"] == 0
    info = d["info"]
    assert info[message.I_FW] == version
    assert info[message.I_INTERVAL] == INTERVAL_S
    assert info[message.I_RESET] == m.group(4).decode()
    assert info[message.I_BOARD] in ("sim", "esp32", "rp2", "linux")


def test_sample_cycle_frames_verify_on_the_host(request, dut, hil_node):
    reader = FrameReader(dut, hil_node)
    frames = [reader.next() for _ in range(3)]  # each verified with the node's key, then ACKed
    seqs = [d["seq"] for d, _ in frames]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    for d, raw in frames:
        names = {r[0] for r in d["records"]}
        assert {"t", "h", "p", "l"} <= names, names  # BME280 and the level sensor
        assert d["uptime_ms"] > 0
        if not d["info"]:
            assert len(raw) <= 100  # a typical 6-reading frame stays small (the first one also says hello)
    uptimes = [d["uptime_ms"] for d, _ in frames]
    assert all(b > a for a, b in zip(uptimes, uptimes[1:]))


def test_recovery_after_the_port_is_closed_and_reopened(request, dut, hil_node):
    reader = FrameReader(dut, hil_node)
    first, _ = reader.next()
    with dut.serial.disable_redirect_thread(kill_port=True):
        time.sleep(3 * INTERVAL_S)  # unplugged: the node keeps sampling and buffers what gets no ACK
        dut.serial.proc.open()
    # the port is back: the node still runs the same boot, and every frame made meanwhile
    # arrives (backlog first), so nothing is lost across the gap
    seen = {first["seq"]}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        d, _ = reader.next()
        assert d["boot"] == first["boot"], "the node rebooted while the port was closed"
        seen.add(d["seq"])
        newest = max(seen)
        if newest >= first["seq"] + 3 and seen >= set(range(first["seq"], newest + 1)):
            break
    newest = max(seen)
    missing = set(range(first["seq"], newest + 1)) - seen
    assert newest >= first["seq"] + 3 and not missing, f"missing seq {sorted(missing)}"


def test_bme280_on_a_real_i2c_bus(request, dut, hil_node):
    # a real board's I2C block, or the emulated Pico's (machine.I2C on the rp2 port, the
    # BME280 register file of tools/rig/pico/runner.mjs fed by the simulated world)
    if not real_board(request) and not on_pico(request):
        pytest.skip(NEEDS_HARDWARE + ": a BME280 wired to the board's I2C pins")
    d, _ = FrameReader(dut, hil_node).next(timeout=30)
    values = {r[0]: r.get(2) for r in d["records"]}
    assert -40 <= values["t"] <= 85 and 30000 <= values["p"] <= 110000 and 0 <= values["h"] <= 100
    assert not any(i for i, q in d["quality"].items() if d["records"][i][0] in "thp" and q[2] >= 2), d["quality"]
