# Level drivers against parts that behave as their datasheets and the MicroPython 1.28
# port sources say: the ESP32 ADC (ports/esp32/adc.c), machine.time_pulse_us
# (extmod/machine_pulse.c) with HC-SR04 / JSN-SR04T echo timing, and the A02YYUW's own
# temperature compensation.
import sys
import types

import pytest

from firmware import config, level, sensors
from firmware.drivers.hcsr04 import HCSR04
from firmware.drivers.hydrostatic import Hydrostatic

# ---------------------------------------------------------------- ESP32 ADC, 4-20 mA


class Esp32Adc:
    # machine.ADC on ESP32 at 11 dB. read_uv(): esp-idf's calibration (adc_cali_raw_to_voltage,
    # whole millivolts) times 1000 (ports/esp32/adc.c madcblock_read_uv_helper); linear from 150
    # to 2450 mV, above that the converter compresses (esp-idf ADC docs: outside the range the
    # result is not accurate). read_u16(): the raw code scaled to 16 bits, uncalibrated: at 11 dB
    # a typical chip's full scale is ~3.9 V, not the 3.3 V a naive conversion assumes.
    ATTN_11DB = 3

    def __init__(self, mv):
        self.mv = mv  # the voltage on the pin

    def atten(self, a):
        assert a == self.ATTN_11DB

    def _seen_mv(self):
        v = self.mv
        return v if v <= 2450 else 2450 + (v - 2450) * 0.4

    def read_uv(self):
        return int(self._seen_mv()) * 1000

    def read_u16(self):
        return min(65535, int(self._seen_mv() * 65535 / 3900))


def entry(sensor):
    # a sensor entry as the node gets it: checked, its driver's defaults filled in
    return config.validate({"node": "n", "key": "00" * 16, "sensors": [sensor]})["sensors"][0]


def opened(board, settings):
    # the sensor of a checked entry, its part opened from the board as the sampler opens it
    s = sensors.driver(settings["kind"]).Sensor(board, settings)
    s.open()
    return s


def probe(ma, shunt_ohm, **kw):
    adc = Esp32Adc(ma * shunt_ohm)
    return adc, Hydrostatic(adc, shunt_ohm=shunt_ohm, span_mm=5000, linear_uv=(150000, 2450000), **kw)


def test_esp32_probe_uses_the_calibrated_read_uv():
    # on main read_u16 against 3.3 V: 12 mA read as ~10.2 mA, a 2500 mm level as ~1920 mm
    adc, d = probe(12, 100)
    assert d.read_mm() == 2500 and d.current_ua == 12000


@pytest.mark.parametrize("ma,shunt,want,reason", [
    (20, 100, 5000, None), (21, 100, 5000, "range"), (22, 100, None, "fault_high"), (3.0, 100, None, "fault_low"),
    (17, 150, None, "range"),  # 2550 mV: past the linear range, no number (main: a wrong one)
    (21, 150, None, "range"),
])
def test_the_esp32_shunt_keeps_the_loop_inside_the_linear_range(ma, shunt, want, reason):
    adc, d = probe(ma, shunt)
    assert d.read_mm() == want and d.reason == reason


def test_esp32_board_defaults_to_the_100_ohm_shunt_and_its_adc_range(monkeypatch):
    # firmware/boards/esp32.py on a machine module with the ESP32 port's names
    machine = types.ModuleType("machine")
    adcs = []

    class ADC(Esp32Adc):
        def __init__(self, pin):
            super().__init__(12 * 100)  # 12 mA through the shunt the board documents
            adcs.append(self)

    class Pin:
        OUT, IN = 1, 0

        def __init__(self, n, mode=None):
            self.n = n

    machine.ADC = ADC
    machine.Pin = Pin
    for i, name in enumerate(("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET")):
        setattr(machine, name, i + 1)
    monkeypatch.setitem(sys.modules, "machine", machine)
    monkeypatch.delitem(sys.modules, "firmware.boards.esp32", raising=False)
    monkeypatch.delitem(sys.modules, "firmware.boards.mpboard", raising=False)
    from firmware.boards.esp32 import Board

    d = opened(Board(), entry({"kind": "hydrostatic", "span_mm": 5000})).part
    assert d.shunt_ohm == 100 and d.linear_uv == (150000, 2450000)
    assert d.read_mm() == 2500
    adcs[0].mv = 21 * 150  # a 150 ohm shunt at 21 mA: 3150 mV
    assert d.read_mm() is None and d.reason == "range"


def test_density_and_air_pressure_correction():
    _, water = probe(12, 100)
    _, sewage = probe(12, 100, density_kg_m3=1050)  # the same pressure is a lower column of denser liquid
    assert water.read_mm() == 2500 and sewage.read_mm() == round(2500 * 1000 / 1050)
    # a sealed-gauge probe reads (p_abs - ref_pa): at 3000 Pa less air pressure outside it reads
    # 306 mm of water too little
    _, sealed = probe(12, 100, vented=False, ref_pa=101325)
    sealed.air_pa = 98325
    assert sealed.read_mm() == 2500 + 306 and sealed.reason is None
    sealed.air_pa = None  # no BME280 reading: uncorrected, flagged
    assert sealed.read_mm() == 2500 and sealed.reason == "range" and sealed.errors["no_air"] == 1
    with pytest.raises(ValueError):
        probe(12, 100, density_kg_m3=100)
    with pytest.raises(config.ConfigError, match="density_kg_m3"):
        config.validate({"node": "n", "key": "00" * 16, "sensors": {"level": {"kind": "hydrostatic",
                                                                               "density_kg_m3": 5}}})


def test_the_sampler_hands_the_bme280_pressure_to_a_sealed_probe(rig):
    # two identical sim nodes whose probes are sealed at reference pressures 1000 Pa apart:
    # their levels differ by 1000 Pa of water column, 102 mm
    levels = []
    for ref in (100000, 101000):
        r = rig({"interval_s": 60, "heartbeat_s": 60, "sensors": {"level": {
            "kind": "hydrostatic", "span_mm": 5000, "vented": False, "ref_pa": ref}}})
        r.run(0.2)
        levels.append(r.values("l"))
    a, b = levels
    assert len(a) == len(b) > 5
    assert all(abs((y - x) * 1000 - 102) <= 2 for x, y in zip(a, b, strict=True)), (a, b)


# ---------------------------------------------------------------- trigger/echo


class EchoModule:
    # HC-SR04 / JSN-SR04T on a microsecond clock. A trigger at least min_trigger_us long starts
    # a ping unless the module is busy; echo goes high ~0.5 ms later (the 40 kHz burst) and stays
    # high for the round trip, or for hold_us when no echo comes back (HC-SR04 ~38 ms, JSN-SR04T
    # ~60 ms). time_pulse_us follows extmod/machine_pulse.c: a pin already at the level counts
    # as the pulse's start; -2 when it never starts within the timeout, -1 when it lasts longer.
    def __init__(self, distance_mm, min_trigger_us=10, hold_us=38000):
        self.now = 0  # us
        self.distance_mm = distance_mm
        self.min_trigger_us = min_trigger_us
        self.hold_us = hold_us
        self.miss_next = False  # the next ping's echo gets lost (a splash, a foam patch)
        self.pings = []  # start time of every ping taken
        self.high = (0, 0)  # echo high during [start, end)
        self._trig_since = None
        module = self

        class Pin:
            def __init__(self, trigger):
                self.trigger = trigger

            def value(self, v=None):
                if not self.trigger:
                    s, e = module.high
                    return 1 if s <= module.now < e else 0
                if v == 1:
                    module._trig_since = module.now
                elif v == 0 and module._trig_since is not None:
                    module._triggered(module.now - module._trig_since)
                    module._trig_since = None
                return 0

        self.trigger = Pin(True)
        self.echo = Pin(False)

    def _triggered(self, width_us):
        if width_us < self.min_trigger_us or self.now < self.high[1]:
            return  # too short, or still busy with the last ping
        start = self.now + 500
        self.pings.append(self.now)
        if self.miss_next:
            self.miss_next = False
            self.high = (start, start + self.hold_us)
        else:
            self.high = (start, start + int(2 * self.distance_mm * 1000000 / 343000))

    def sleep_us(self, us):
        self.now += us

    def ms(self):
        return self.now // 1000

    def sleep_ms(self, ms):
        self.now += ms * 1000

    def time_pulse_us(self, pin, level, timeout_us):
        s, e = self.high
        t0 = self.now
        start = max(t0, s) if s < e and t0 < e else None
        if start is None or start - t0 >= timeout_us:
            self.now = t0 + timeout_us
            return -2
        if e - start >= timeout_us:
            self.now = start + timeout_us
            return -1
        self.now = e
        return e - start


def echo_driver(module, **kw):
    return HCSR04(module.trigger, module.echo, min_mm=20, max_mm=4000, timeout_us=30000,
                  time_pulse_us=module.time_pulse_us, sleep_us=module.sleep_us, clock=module, **kw)


def test_hcsr04_pings_at_least_60_ms_apart():
    m = EchoModule(1500)
    d = echo_driver(m)
    got = [d.read_mm(343000) for _ in range(5)]
    assert all(abs(g - 1500) <= 2 for g in got), got
    gaps = [b - a for a, b in zip(m.pings, m.pings[1:], strict=False)]
    assert len(m.pings) == 5 and min(gaps) >= 60000, gaps


def test_after_a_missed_echo_the_next_reading_is_no_false_short_distance():
    # on main the next ping went out while echo was still high from the lost one: the module
    # ignored it and time_pulse_us timed the tail of the stale pulse (~8 ms: "1370 mm", a level
    # ~1.1 m too high in a 2.5 m deep shaft)
    m = EchoModule(2500)
    d = echo_driver(m)
    m.miss_next = True
    assert d.read_mm(343000) is None and d.reason == "timeout"
    nxt = d.read_mm(343000)
    assert nxt is not None and abs(nxt - 2500) <= 2, nxt


def test_echo_stuck_high_gives_no_reading():
    m = EchoModule(2500)
    m.high = (0, 10**9)  # a broken module or wiring: echo always high
    d = echo_driver(m)
    assert d.read_mm(343000) is None and d.errors["busy"] == 1


def test_jsn_sr04t_needs_a_20_us_trigger():
    # the JSN-SR04T ignores the HC-SR04's 10 us trigger (on main: every reading a timeout)
    m = EchoModule(1800, min_trigger_us=20, hold_us=60000)
    d = echo_driver(m)
    assert abs(d.read_mm(343000) - 1800) <= 2


# ---------------------------------------------------------------- A02YYUW


class StreamingUart:
    # a UART with the sensor's frames waiting: 0xFF, H, L, (0xFF + H + L) & 0xFF
    def __init__(self, mm, count=8):
        h, lo = mm >> 8, mm & 0xFF
        self.q = bytearray(bytes((0xFF, h, lo, (0xFF + h + lo) & 0xFF)) * count)

    def any(self):
        return len(self.q)

    def readinto(self, buf):
        n = min(len(buf), len(self.q))
        buf[:n] = self.q[:n]
        del self.q[:n]
        return n


class UartBoard:
    def __init__(self, uart):
        from firmware.sim.world import VirtualClock

        self.clock = VirtualClock()
        self._uart = uart

    def sensor_uart(self, settings=None):
        return self._uart


def test_a02yyuw_distance_is_not_corrected_twice():
    # the A02YYUW compensates for temperature itself: at 30 °C a 3000 mm distance comes as 3000.
    # On main the driver rescaled it again (3053 mm: a level ~50 mm too low)
    speed = level.speed_of_sound_mm_s(30.0)
    d = opened(UartBoard(StreamingUart(3000)), entry({"kind": "a02yyuw"})).part
    assert d.read_mm(speed) == 3000
    # a sensor set to compensate=True (and the JSN-SR04T by default) is rescaled to the air
    for s in ({"kind": "a02yyuw", "compensate": True}, {"kind": "jsn_sr04t"}):
        d = opened(UartBoard(StreamingUart(3000)), entry(s)).part
        assert d.read_mm(speed) == 3000 * speed // 343000
