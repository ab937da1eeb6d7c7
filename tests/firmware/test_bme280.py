# BME280 driver: Bosch datasheet example, adafruit-circuitpython-bme280 as an oracle on
# random trimming and raw values (through a busio.I2C-like adapter over the same
# simulated register map), skipped measurements, missing chip, bus errors.
import random

import pytest

from firmware.drivers.bme280 import BME280, BME280Error
from firmware.sim.devices import DATASHEET_RAW, BME280Sim, I2CBus
from firmware.sim.world import VirtualClock, World
from tests.support import mpvm


def make(calib=None, raw=None, clock=None, **kw):
    dev = BME280Sim(calib=calib, clock=clock)
    dev.raw = raw
    bus = I2CBus({0x76: dev})
    return dev, BME280(bus, 0x76, clock=clock or VirtualClock(), **kw)


def test_datasheet_example():
    _, s = make(raw=DATASHEET_RAW + (0x8000,))
    t, p, h = s.read()
    assert t == pytest.approx(25.08, abs=0.01)
    assert p == pytest.approx(100653.27, abs=1)
    assert h is None  # skipped humidity channel in the example: not a number


DATASHEET_ON_MICROPYTHON = """
from firmware.sim.devices import BME280Sim, I2CBus, DATASHEET_RAW
from firmware.sim.world import VirtualClock
from firmware.drivers.bme280 import BME280
clock = VirtualClock()
dev = BME280Sim(clock=clock)
dev.raw = DATASHEET_RAW + (0x8000,)
t, p, h = BME280(I2CBus({0x76: dev}), clock=clock).read()
print('%.2f %.2f %r' % (t, p, h))
"""


@pytest.mark.micropython
def test_datasheet_example_on_micropython():
    out = mpvm.run(DATASHEET_ON_MICROPYTHON).stdout.split()
    assert abs(float(out[0]) - 25.08) <= 0.01
    assert abs(float(out[1]) - 100653.27) <= 1
    assert out[2] == "None"


class BusioI2C:
    # the busio.I2C surface adafruit_bus_device uses, over the simulated bus
    def __init__(self, bus):
        self.bus = bus
        self.locked = False

    def try_lock(self):
        if self.locked:
            return False
        self.locked = True
        return True

    def unlock(self):
        self.locked = False

    def scan(self):
        return self.bus.scan()

    def writeto(self, addr, buf, *, start=0, end=None):
        self.bus.writeto(addr, bytes(buf[start:end]))

    def readfrom_into(self, addr, buf, *, start=0, end=None):
        end = len(buf) if end is None else end
        tmp = bytearray(end - start)
        self.bus.readfrom_into(addr, tmp)
        buf[start:end] = tmp

    def writeto_then_readfrom(self, addr, out, inb, *, out_start=0, out_end=None, in_start=0, in_end=None):
        self.writeto(addr, out, start=out_start, end=out_end)
        self.readfrom_into(addr, inb, start=in_start, end=in_end)


def random_calib(rng):
    # trimming spread around real parts' values (Bosch typical +- a margin)
    return {
        "t1": rng.randint(26000, 29000), "t2": rng.randint(25000, 27500), "t3": rng.randint(-1500, 500),
        "p1": rng.randint(35000, 38500), "p2": rng.randint(-11500, -10000), "p3": rng.randint(2500, 3500),
        "p4": rng.randint(2000, 9000), "p5": rng.randint(-200, 200), "p6": rng.randint(-7, -7),
        "p7": rng.randint(9000, 16000), "p8": rng.randint(-15000, -9000), "p9": rng.randint(4000, 6000),
        "h1": rng.randint(0, 100), "h2": rng.randint(340, 380), "h3": 0, "h4": rng.randint(280, 340),
        "h5": rng.randint(0, 60), "h6": rng.randint(20, 40),
    }


def test_agrees_with_adafruit_on_random_calibrations():
    import adafruit_bme280.basic as ada

    rng = random.Random(3)
    worst = [0.0, 0.0, 0.0]
    for _ in range(150):
        calib = random_calib(rng)
        raw = (rng.randint(480000, 560000), rng.randint(300000, 460000), rng.randint(20000, 45000))
        dev, ours = make(calib=calib, raw=raw)
        oracle = ada.Adafruit_BME280_I2C(BusioI2C(I2CBus({0x76: dev})), address=0x76)
        t, p, h = ours.read()
        want = (oracle.temperature, oracle.pressure * 100, oracle.humidity)
        for i, (got, ref) in enumerate(zip((t, p, h), want, strict=True)):
            worst[i] = max(worst[i], abs(got - ref))
    # integer vs float compensation: T has 0.01 °C steps, P 1/256 Pa steps, H 1/1024 %RH
    assert worst[0] <= 0.01, worst
    assert worst[1] <= 1.0, worst
    assert worst[2] <= 0.05, worst


def test_forced_mode_waits_for_conversion_and_uses_one_burst():
    clock = VirtualClock()
    world = World(clock)
    dev = BME280Sim(world=world, clock=clock)
    s = BME280(I2CBus({0x76: dev}), clock=clock, oversample_t=2, oversample_p=16, oversample_h=1)
    before = clock.ms()
    t, p, h = s.read()
    assert clock.ms() - before >= 43  # datasheet 9.1: 1.25 + 4.6 + 37.375 + 2.875 ms
    assert dev.conversions == 1
    assert t == pytest.approx(world.temp_c(), abs=0.02)
    assert p == pytest.approx(world.pressure_pa(), abs=1)
    assert h == pytest.approx(world.humidity_rh(), abs=0.1)


def test_skipped_temperature_voids_everything():
    _, s = make(raw=(0x80000, 415148, 30000))
    assert s.read() == (None, None, None)
    assert s.errors["skipped"] == 1


def test_wrong_chip_and_missing_chip_raise_at_init():
    dev = BME280Sim()
    dev.regs[0xD0] = 0x58  # a BMP280
    with pytest.raises(BME280Error, match="chip id 0x58"):
        BME280(I2CBus({0x76: dev}))
    with pytest.raises(BME280Error, match="no answer"):
        BME280(I2CBus({}), address=0x76)
    with pytest.raises(ValueError):
        BME280(I2CBus({0x76: BME280Sim()}), oversample_t=3)


def test_bus_error_in_the_loop_gives_none_and_counts():
    dev, s = make(raw=DATASHEET_RAW + (30000,))
    dev.fail_next = 1
    assert s.read() == (None, None, None)
    assert s.errors["bus"] == 1
    dev.present = False
    assert s.read() == (None, None, None)
    assert s.errors["bus"] == 2
    dev.present = True
    assert s.read()[0] == pytest.approx(25.08)


def test_linux_board_adafruit_wrapper_reads_like_our_driver(monkeypatch):
    # the Raspberry Pi path: adafruit-circuitpython-bme280 on Blinka's board.I2C(), here a
    # busio-like adapter over the simulated chip; same read() tuple as firmware.drivers.bme280
    import sys
    import types

    from firmware.boards.linux import AdafruitBME280

    clock = VirtualClock()
    world = World(clock)
    dev = BME280Sim(world=world)
    fake_board = types.ModuleType("board")
    fake_board.I2C = lambda: BusioI2C(I2CBus({0x76: dev}))
    monkeypatch.setitem(sys.modules, "board", fake_board)
    t, p, h = AdafruitBME280(0x76).read()
    assert t == pytest.approx(world.temp_c(), abs=0.02)
    assert p == pytest.approx(world.pressure_pa(), abs=2)
    assert h == pytest.approx(world.humidity_rh(), abs=0.2)
