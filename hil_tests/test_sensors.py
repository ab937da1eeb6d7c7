# The emulated Pico's sensors follow the simulated world through the real rp2 port's
# machine.ADC, machine.Pin/time_pulse_us and machine.UART: the firmware's drivers read
# the world's level, and a storm makes the node's frames rise and fall. Emulated Pico only
# (a real board measures a real shaft; the virtual rig has its own sim board).
import shutil
import time

import pytest

from protocol import cobs, message
from tools.rig.pico import PicoRig, stop_at_boot

QUIET = {"spike_p": 0.0, "dropout_p": 0.0}  # no multipath spikes, no lost echoes: exact comparisons

DRIVERS = """
import machine
from firmware.drivers.hydrostatic import Hydrostatic
from firmware.drivers.hcsr04 import HCSR04
loop = Hydrostatic(machine.ADC(machine.Pin(26)))
echo = HCSR04(machine.Pin(14, machine.Pin.OUT), machine.Pin(15, machine.Pin.IN))
print('LEVEL', loop.read_mm(), echo.read_mm())
"""


@pytest.fixture
def pico_world(request, board_kind, tmp_path):
    # a Pico booted from the session's flashed node, with a world the test chooses
    if board_kind != "pico":
        pytest.skip("needs the emulated Pico's simulated world")
    made = []

    def make(**world):
        flash = tmp_path / ("pico-%d.bin" % len(made))
        shutil.copyfile(request.getfixturevalue("pico_template"), flash)
        rig = PicoRig(flash, world=world, log=lambda m: print("rig: " + m)).start()
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.stop()


def test_probe_and_echo_read_the_worlds_level(pico_world):
    rig = pico_world(**QUIET)
    fs = stop_at_boot(rig.port)
    try:
        out = fs.exec(DRIVERS).decode()
    finally:
        fs.t.close()
    loop_mm, echo_mm = (int(float(x)) for x in out.split("LEVEL")[1].split())
    world = rig.world
    level = world.level_mm()
    # 4-20 mA over 150 ohm into the 12-bit ADC: one count is ~5.4 uA, ~1.7 mm of a 5 m span
    assert abs(loop_mm - level) <= 10, (loop_mm, level)
    # trigger/echo: time_pulse_us on GPIO15 times the world's round trip (3 mm echo noise),
    # which read_mm converts at its default 343 m/s while the shaft's air is colder
    from firmware.level import speed_of_sound_mm_s

    expected = world.distance_mm() * 343000 / speed_of_sound_mm_s(world.temp_c())
    assert abs(echo_mm - expected) <= 25, (echo_mm, expected, world.distance_mm())


def test_frames_carry_a_rising_and_falling_level(pico_world, hil_node):
    # The storm at 300x: the runoff arrives 5 s after power-on, rises for 12 s, drains with
    # an 8 s time constant. The node's frames (A02YYUW on UART1, 9600 baud) follow it.
    import serial

    rig = pico_world(speed=300, rain_start_s=1500, **QUIET)
    key = {hil_node["node"]: hil_node["key"]}
    levels = []  # (uptime ms, level mm) from each verified frame
    deframer = cobs.Deframer()
    peak = None
    with serial.Serial(rig.port, 115200, timeout=0.2) as port:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for kind, body in deframer.feed(port.read(4096)):
                if kind != "frame":
                    continue
                d = message.decode(body, key.get)
                port.write(cobs.encode(message.encode_ack(hil_node["key"], d["node"], d["boot"], d["seq"])))
                values = {r[0]: r.get(2) for r in d["records"]}
                if values.get("l") is not None:
                    levels.append((d["uptime_ms"], values["l"] * 1000))
            if levels:
                top = max(levels, key=lambda x: x[1])
                if top[1] > 1500 and levels[-1][1] < top[1] - 500:
                    peak = top
                    break
    assert peak is not None, "no rise above 1.5 m and fall by 0.5 m: %s" % levels
    before = [mm for t, mm in levels if t < peak[0]]
    assert before and min(before) < 500, levels  # it started dry


PINS = """
from machine import I2C, Pin
print('SCAN', I2C(0, scl=Pin(5), sda=Pin(4)).scan())
p = Pin(7, Pin.OUT)
p.value(1)
high = p.value()
p.value(0)
print('PINS', high, p.value(), Pin(8, Pin.IN, Pin.PULL_UP).value(), Pin(9, Pin.IN, Pin.PULL_DOWN).value())
"""


def test_i2c_scan_and_pins_read_back(pico_world):
    # i2c.scan() on the rp2 port bit-bangs a zero-length write on the I2C pins (the I2C block
    # cannot send one): it must find the BME280 at 0x76 as on a real bus; an output pin reads
    # back what it drives, an input its pull-up or pull-down
    rig = pico_world()
    fs = stop_at_boot(rig.port)
    try:
        out = fs.exec(PINS).decode()
    finally:
        fs.t.close()
    assert "SCAN [118]" in out, out
    assert "PINS 1 0 1 0" in out, out


# Storm mode: the node's trigger (firmware/policy.py) on the real rp2 port. In dry weather
# the noise of the echo between readings 2 s apart is no rise: storm mode stays off.
DRY = {"spike_p": 0.0, "dropout_p": 0.0, "echo_noise_mm": 4.0}  # dry weather all along


def data_frames(rig, node, n, timeout_s=120):
    # -> the first n verified data frames, each ACKed as a gateway would
    import serial

    key = {node["node"]: node["key"]}
    out = []
    deframer = cobs.Deframer()
    with serial.Serial(rig.port, 115200, timeout=0.2) as port:
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            for kind, body in deframer.feed(port.read(4096)):
                if kind == "frame":
                    d = message.decode(body, key.get)
                    port.write(cobs.encode(message.encode_ack(node["key"], d["node"], d["boot"], d["seq"])))
                    out.append(d)
    return out


def test_noise_at_a_short_interval_does_not_turn_storm_mode_on(pico_world, hil_node):
    rig = pico_world(**DRY)
    # half a minute of readings 2 s apart: before f3966a0 the noise turned storm mode on by frame 2
    got = data_frames(rig, hil_node, 15)
    assert len(got) >= 12, "only %d frames" % len(got)
    levels = [r[2] for d in got for r in d["records"] if r[0] == "l"]
    assert max(levels) - min(levels) > 0.002  # the echo noise is there
    storm = [d["seq"] for d in got if d["flags"] & message.F_STORM]
    assert not storm, "storm mode in dry weather: frames %s" % storm


# The rain gauge (firmware/drivers/tipping_bucket.py) on the real rp2 port: the rig's gauge
# closes its reed switch on GPIO22 once a tip, bouncing at the closing and the opening
# (tools/rig/pico/runner.mjs rainGauge); the port's hard pin IRQ counts, the sampler makes the
# "rain" record. The world rains 12 mm/h from the start, at 60x: a tip a second.
GAUGE = """
from firmware import config
from firmware.boards.rp2 import Board
from firmware.sampler import Sampler
cfg = config.validate({'node': 'n', 'key': '00' * 16, 'board': 'rp2', 'sleep': 'none',
                       'sensors': [{'kind': 'tipping_bucket', 'pin': 22}]})
s = Sampler(Board(), cfg)
s.sample()
g = s.sensors[0][0].part
print('OPEN', g.tips)
"""
GAUGE_READ = """
import time
time.sleep_ms(%d)
s.sample()
recs, q = s.records()
print('RAIN', recs[0][0], repr(recs[0][2]), g.tips, g.bounces, len(q))
"""


def test_rain_gauge_tips_arrive_as_rain_records(pico_world):
    rig = pico_world(speed=60, rain_start_s=900, rain_lag_s=900, rain_rise_s=7200, rain_mm_h=12.0)
    fs = stop_at_boot(rig.port)
    try:
        assert "OPEN 0" in fs.exec(GAUGE).decode()
        before = rig.report()["tips"]
        out = fs.exec(GAUGE_READ % 6000).decode()
        after = rig.report()["tips"]
    finally:
        fs.t.close()
    name, value, tips, bounces, nq = out.split("RAIN")[1].split()
    tips, bounces = int(tips), int(bounces)
    assert name == "rain" and nq == "0", out
    # every tip the gauge made while the IRQ was set counted once (one may straddle a report)
    assert 4 <= tips and abs(tips - (after - before)) <= 1, (tips, before, after)
    assert float(value) == pytest.approx(tips * 0.0002, rel=1e-6)
    assert bounces >= tips  # the contact bounce reached the pin, and was not counted
