# What only a real MicroPython port shows: a reboot command, the hardware watchdog, a power
# cut in the middle of a flash write, and the heap the node leaves free. They run on the
# emulated Pico (the real rp2 port, tools/rig/pico.py) and on a real board (--port); the
# unix-port virtual rig has no watchdog, no NOR flash and another heap, so it skips the
# ones that need them. Read like transcripts.
import re
import time

import pytest

from hil_tests.conftest import (
    FrameReader,
    needs_real_port,
    on_pico,
    real_board,
    reboot_real_board,
)
from protocol import cobs, message
from tools.rig.pico import heap_budget, stop_at_boot

BANNER = rb"citynode (\S+) node (\S+) boot (\d+) reset (\S+)"


def rig_only(request):
    # a real port's behaviour, on a board that boots when its port opens: the emulated Pico
    needs_real_port(request)
    if real_board(request):
        pytest.skip("needs a board that boots when its port opens (the rig); a real board's node already runs")


def read_until(ser, pattern, timeout):
    regex = re.compile(pattern)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += ser.read(ser.in_waiting or 1)
        m = regex.search(seen)
        if m:
            return m, seen
    raise AssertionError("not within %s s: %r; the board said: %r" % (timeout, pattern, seen[-600:]))


def test_reboot_command_restarts_the_node(request, board_kind, rig, dut, hil_node):
    reboot_real_board(request, dut)
    reader = FrameReader(dut, hil_node)
    d, _ = reader.next()
    # an operator's signed reboot as the gateway relays it, straight onto the node's line (SPEC 6.3, 6.7)
    from protocol import command

    counter = hil_node["config"]["cmd_floor"] + 7
    token = command.sign(bytes.fromhex(hil_node["config"]["command_key"]), hil_node["node"], d["boot"], counter,
                         "reboot")
    cmd = message.encode_signed(hil_node["key"], hil_node["node"], d["boot"], counter, token)
    dut.serial.proc.write(cobs.encode(cmd))
    dut.expect(b"command %d reboot -> 0" % counter, timeout=20)
    m = dut.expect(BANNER, timeout=30)
    assert int(m.group(3)) == d["boot"] + 1 and m.group(4) == b"command", m.group(0)
    # the new boot's first frame says why it started (frames of the old boot still waiting
    # for their ACK may come first: they are resent from the buffer)
    reader = FrameReader(dut, hil_node)
    after = reader.next()[0]
    for _ in range(10):
        if after["boot"] == d["boot"] + 1:
            break
        assert after["boot"] == d["boot"], after
        after = reader.next()[0]
    assert after["boot"] == d["boot"] + 1 and after["seq"] == 0, after
    assert after["info"][message.I_RESET] == "command"
    if on_pico(request):
        assert rig.report()["resets"] == 1  # machine.reset(): the watchdog's FORCE bit, a fresh chip


def test_watchdog_reset_reboots_the_board(request, rig, port, hil_node):
    # Stop the node at boot, arm the hardware watchdog from the REPL and feed it no more:
    # the chip must reset by itself, and the node must say it was the watchdog.
    rig_only(request)
    fs = stop_at_boot(port)
    try:
        boot = int(fs.exec("import json\nprint(json.load(open('state.json'))['boot'])").decode().strip())
        fs.exec("import machine\nmachine.WDT(timeout=1000)")
        fs.t.exit_raw_repl()
        m, seen = read_until(fs.t.serial, BANNER, 30)
    finally:
        fs.t.close()
    assert m.group(4) == b"watchdog", m.group(0)
    assert int(m.group(3)) == boot + 1
    if on_pico(request):
        wear = rig.report()
        assert wear["watchdog_resets"] == 1 and wear["boots"] == 2, wear


def test_a_deliberate_reset_is_not_reported_as_the_watchdog(request, rig, port, hil_node):
    # machine.reset() on rp2 is a watchdog reboot and the port says WDT_RESET for both
    # (ports/rp2/modmachine.c); a technician's reset (mpremote, citynode flash) must not be
    # counted as the watchdog biting, as test_watchdog_reset_reboots_the_board's must
    rig_only(request)
    fs = stop_at_boot(port)
    try:
        fs.t.exit_raw_repl()
        fs.t.serial.write(b"import machine\r\nmachine.reset()\r\n")  # at the REPL, as a person types it
        m, seen = read_until(fs.t.serial, BANNER, 30)
    finally:
        fs.t.close()
    assert m.group(4) == b"reset", m.group(0)


def test_a_lone_0x03_on_the_console_link_does_not_stop_the_node(request, rig, dut, hil_node):
    # Line noise between two frames on the node's USB console link: a single 0x03 after a
    # delimiter. It once raised KeyboardInterrupt: the node sat at the REPL until the watchdog
    # reset it (8.4 s on rp2), a new boot. Now it is data; a technician's "\r\x03" still stops it.
    needs_real_port(request)
    if real_board(request):
        pytest.skip("a real board's console is the tests' own line: noise cannot be injected apart")
    reader = FrameReader(dut, hil_node)
    first, _ = reader.next()
    dut.serial.proc.write(b"\x00\x03")
    deadline = time.monotonic() + 14  # past the rp2 watchdog's 8.4 s
    while time.monotonic() < deadline:
        d, _ = reader.next()
        assert d["boot"] == first["boot"], "the node restarted after a lone 0x03"


# Uptime past the rp2's small ints (2**30 ms: 12.4 days up): the HC-SR04 ping allocates
# nothing, so no GC pause can fall between the trigger and time_pulse_us (a missed echo);
# the uptime itself goes on, and ticks()/seconds() stay small ints.
CLOCK_PROBE = """
import gc, machine, time
from firmware.clock import Clock
from firmware.drivers.hcsr04 import HCSR04
c = Clock()
c.resume((1 << 30) - 40)
time.sleep_ms(80)
d = HCSR04(machine.Pin(14, machine.Pin.OUT), machine.Pin(15, machine.Pin.IN), clock=c, timeout_us=2000)
d.read_echo_us()
gc.collect()
a = gc.mem_alloc()
for _ in range(5):
    d.read_echo_us()
n = gc.mem_alloc() - a
print('PING', n, c.ms() - (1 << 30), getattr(c, 'seconds', lambda: -1)(), d.errors['timeout'])
"""


def test_uptime_past_the_small_int_boundary_allocates_nothing_around_the_echo(request, rig, port, hil_node):
    rig_only(request)
    fs = stop_at_boot(port)
    try:
        out = fs.exec(CLOCK_PROBE).decode(errors="replace")
    finally:
        fs.t.close()
    m = re.search(r"PING (-?\d+) (-?\d+) (-?\d+) (\d+)", out)
    assert m, out[-600:]
    alloc, past, seconds, timeouts = (int(g) for g in m.groups())
    assert alloc == 0, "%d B allocated by 5 pings with the uptime past 2**30 ms" % alloc
    assert past > 0 and abs(seconds - ((1 << 30) + past) // 1000) <= 1
    assert timeouts == 6  # no echo wired: each ping timed out, counted, and returned


def test_power_cut_during_a_flash_write_loses_no_frame(request, rig, dut, hil_node):
    # Frames the gateway acknowledged are gone from the buffer; the others must survive the
    # power failing half way through a flash page program, and come again after power-on.
    needs_real_port(request)
    if real_board(request):
        pytest.skip("needs the rig's power switch (a real board's supply is not switched by the tests)")
    reader = FrameReader(dut, hil_node)
    acked = [reader.next()[0] for _ in range(2)]
    unacked = [reader.next(ack=False) for _ in range(2)]  # the gateway is away: these stay buffered
    boot = acked[0]["boot"]
    n = len(rig.events)
    rig.cut_during_flash_write()
    rig.wait_event(lambda e: e["ev"] == "power_cut", 30, start=n)
    rig.power_on()
    # after power-on: the new boot, and both unacknowledged frames again, byte for byte
    wanted = {(d["boot"], d["seq"]): raw for d, raw in unacked}
    seen_new_boot = False
    deadline = time.monotonic() + 60
    while wanted and time.monotonic() < deadline:
        d, raw = reader.next(timeout=max(1, deadline - time.monotonic()))
        if d["boot"] == boot + 1:
            seen_new_boot = True
        if (d["boot"], d["seq"]) in wanted:
            assert raw == wanted.pop((d["boot"], d["seq"])), "a buffered frame came back changed"
    assert not wanted, "lost across the power cut: seq %s of boot %d" % (sorted(s for _, s in wanted), boot)
    assert seen_new_boot or reader.next()[0]["boot"] == boot + 1


# The memory budget, measured on the target: the real rp2 port is 32-bit like an ESP32, and on
# both the .mpy code loads into the heap. An ESP32_GENERIC (no PSRAM) starts MicroPython with a
# 56 KB heap and adds areas from the IDF heap when a collection frees too little
# (ports/esp32/mpconfigport.h: MICROPY_GC_INITIAL_HEAP_SIZE 56 KB, MICROPY_GC_SPLIT_HEAP_AUTO):
# about 112 KB in all once Wi-Fi took its share (firmware/README.md). Out of that the node must
# leave a cycle's peak (8 KB, tests/firmware/test_micropython.py), the ESP32-only modules
# (board, Wi-Fi keeper, UDP link: ~4 KB) and 16 KB of headroom (a command, a rejoin, a
# fragmented heap): the ESP32's ceiling is 84 KB in use after start. The test holds the node
# below that, to what it takes (76.0 KB, 77,840 B on the Pico with the hil node's config: a
# BME280 and an A02YYUW on the USB console) and 4 KB more: code that takes more at start must
# raise USED_MAX here and say why, not creep up to the ceiling unnoticed. What a node loads at
# start is what its config uses (tests/firmware/test_start_modules.py), and the config checks
# leave the heap once the config passed. Names count too: the port interns them in qstr pools
# that double (20, 40, ... 640 names; the node's 705 at start fill six of them), so the
# 1,261st name takes a seventh pool of 7.5 KB at once. A backlog lives in flash: the RAM it
# takes is the per-slot bookkeeping allocated at start, so 300 waiting frames may add 1 KB at
# most and must leave a free block of 32 KB or more. The backlog: 290 frames an outage left
# (written into the board's flash while it is off, by the firmware's own buffer code on the
# host, tools/rig/pico_fs.py: making them on the emulated CPU took most of a minute), which
# the node scans at its start, and 10 more it makes itself.
ESP32_CEILING = 112 * 1024 - 8 * 1024 - 4 * 1024 - 16 * 1024
USED_MAX = min(80 * 1024, ESP32_CEILING)
BACKLOG_GROWTH_MAX = 1024
LARGEST_FREE_MIN = 32 * 1024
BACKLOG = 300
MADE_ON_THE_BOARD = 10


def test_heap_budget_after_start_and_a_300_frame_backlog(request, rig, port, hil_node):
    rig_only(request)
    from tools.rig.pico_fs import preload_backlog

    assert not rig.running  # the board is off until its port opens
    assert preload_backlog(rig.flash_file, BACKLOG - MADE_ON_THE_BOARD)["live"] == BACKLOG - MADE_ON_THE_BOARD
    h = heap_budget(port, backlog=MADE_ON_THE_BOARD, preloaded=True)
    (free0, used0, largest0), (_free1, used1, largest1) = h["start"], h["backlog"]
    used_scan, largest_scan = h["start_backlog"][1:]
    print("heap after start: %d B used, %d B free, largest free block %d B; started into a %d-frame backlog: "
          "%d B used, largest %d B; after %d more frames: %d B used, largest free block %d B" % (
              used0, free0, largest0, BACKLOG - MADE_ON_THE_BOARD, used_scan, largest_scan, MADE_ON_THE_BOARD,
              used1, largest1))
    assert h["live"] == BACKLOG  # all of them wait in flash
    assert used0 <= USED_MAX, "%d B in use after start: over the node's budget of %d B" % (used0, USED_MAX)
    assert max(used_scan, used1) - used0 <= BACKLOG_GROWTH_MAX, (used0, used_scan, used1)
    assert min(largest0, largest_scan, largest1) >= LARGEST_FREE_MIN, (largest0, largest_scan, largest1)
