# Ultrasonic (UART and trigger/echo) and 4-20 mA drivers, speed-of-sound compensation,
# and the filters, against the sim parts that follow the datasheets.
import pytest

from firmware import filters, level
from firmware.drivers.a02yyuw import A02YYUW
from firmware.drivers.hcsr04 import HCSR04
from firmware.drivers.hydrostatic import Hydrostatic
from firmware.sim.devices import EchoSensor, LoopAdc, UltrasonicUart
from firmware.sim.world import VirtualClock, World


def frame(mm):
    h, lo = mm >> 8, mm & 0xFF
    return bytes((0xFF, h, lo, (0xFF + h + lo) & 0xFF))


class ByteUart:
    def __init__(self, data=b""):
        self.q = bytearray(data)

    def any(self):
        return len(self.q)

    def readinto(self, buf):
        n = min(len(buf), len(self.q))
        if not n:
            return None
        buf[:n] = self.q[:n]
        del self.q[:n]
        return n


def test_a02yyuw_parses_resyncs_and_counts():
    d = A02YYUW(ByteUart(), clock=VirtualClock())
    stream = b"\x12\x34" + frame(1234) + b"\xff\x00\x10\x00" + frame(0x0FFF) + frame(2000)[:2]
    assert d.feed(stream, len(stream)) == 2
    assert d._latest == 0x0FFF
    assert d.errors["junk"] == 2 and d.errors["checksum"] == 1
    rest = frame(2000)[2:]
    assert d.feed(rest, len(rest)) == 1 and d._latest == 2000  # a frame split across reads


def test_a02yyuw_checksum_failure_keeps_a_header_inside_the_frame():
    # 0xFF 0x10 0x01 0xFF fails its checksum; the parser restarts at that last 0xFF,
    # and the next three bytes complete a valid frame.
    d = A02YYUW(ByteUart(), clock=VirtualClock())
    data = b"\xff\x10\x01" + frame(500)
    assert d.feed(data, len(data)) == 1 and d._latest == 500


def test_a02yyuw_blind_zone_range_timeout_and_compensation():
    clock = VirtualClock()
    d = A02YYUW(ByteUart(frame(20) + frame(5000) + frame(1000)), min_mm=30, max_mm=4500, clock=clock)
    assert d.read_mm() == 1000  # the newest frame in the FIFO wins
    u = ByteUart()
    d = A02YYUW(u, clock=clock)
    for raw, want in ((20, "blind"), (5000, "range")):
        u.q += frame(raw)
        assert d.read_mm() is None and d.reason == want
    assert d.errors["blind"] == d.errors["range"] == 1
    u.q += frame(1000)
    assert d.read_mm(level.speed_of_sound_mm_s(0.0)) == 1000  # the A02YYUW compensated already
    d.compensate = True  # a JSN-SR04T: at 0 °C sound is slower than it assumes, the distance is shorter
    u.q += frame(1000)
    assert d.read_mm(level.speed_of_sound_mm_s(0.0)) == 1000 * 331300 // 343000
    t0 = clock.ms()
    assert d.read_mm() is None and d.reason == "timeout" and clock.ms() - t0 >= 300


def test_a02yyuw_flush_forgets_a_partial_frame():
    # A sleep left 0xFF 0x07 of a frame in the FIFO. Kept across flush(), the next frame's
    # 0xFF 0x05 completed it: (0xFF + 0x07 + 0xFF) & 0xFF == 0x05 passes the checksum, and
    # 1500 mm read as 0x07FF = 2047 mm.
    u = ByteUart(b"\xff\x07")
    d = A02YYUW(u, clock=VirtualClock())
    d.flush()
    u.q += frame(1500)
    assert d.read_mm() == 1500 and d.errors["checksum"] == 0


def test_a_part_made_without_a_clock_waits_on_a_clock_of_its_own():
    # the board hands every part its clock; a part made without one (a test, the REPL) gets a
    # firmware.clock.Clock, the one default (it was said four times, twice as time.sleep)
    from firmware.clock import Clock, clock_or_new
    from firmware.links import UartLink

    vc = VirtualClock()
    assert clock_or_new(vc) is vc
    d = A02YYUW(ByteUart(), timeout_ms=60)
    link = UartLink(ByteUart())
    assert isinstance(d.clock, Clock) and isinstance(link.clock, Clock)
    wall = Clock()
    assert d.read_mm() is None and d.reason == "timeout" and link.poll(40) == []
    assert wall.ms() >= 100  # both waited in real time


def test_ultrasonic_on_sim_world_with_garbage_and_temperature():
    clock = VirtualClock()
    world = World(clock, temp_mean_c=-5.0, temp_swing_c=0.0, spike_p=0, dropout_p=0, echo_noise_mm=0)
    uart = UltrasonicUart(world, clock, garbage_p=0.5, kind="jsn_sr04t")  # converts at 343 m/s
    d = A02YYUW(uart, clock=clock, compensate=True)
    clock.sleep_ms(1000)
    d.flush()
    speed = level.speed_of_sound_mm_s(world.temp_c())
    got = [d.read_mm(speed) for _ in range(20)]
    true = world.distance_mm()
    assert all(g is not None and abs(g - true) <= 2 for g in got), (got, true)
    assert d.errors["junk"] + d.errors["checksum"] > 0
    d.compensate = False
    uncorrected = d.read_mm(speed)  # taking its 343 m/s at -5 °C overstates the distance by ~2 %
    assert uncorrected - true > 40


@pytest.mark.parametrize("kind", ["a02yyuw", "jsn_sr04t"])
def test_each_simulated_uart_part_read_with_its_drivers_defaults_gives_the_true_distance(kind):
    # the simulated part takes from its driver whether it corrects for the air itself, and the
    # speed it converts at otherwise: read as a config of that kind reads it, it is right at -5 °C
    from firmware.sensors import driver

    clock = VirtualClock()
    world = World(clock, temp_mean_c=-5.0, temp_swing_c=0.0, spike_p=0, dropout_p=0, echo_noise_mm=0)
    d = A02YYUW(UltrasonicUart(world, clock, kind=kind), clock=clock,
                compensate=driver(kind).SETTINGS["compensate"][1])
    clock.sleep_ms(1000)
    d.flush()
    got = d.read_mm(level.speed_of_sound_mm_s(world.temp_c()))
    assert got is not None and abs(got - world.distance_mm()) <= 2, (got, world.distance_mm())


def test_hcsr04_echo_timeout_and_range():
    clock = VirtualClock()
    world = World(clock, spike_p=0, dropout_p=0, echo_noise_mm=0, mount_mm=2000)
    sensor = EchoSensor(world, clock)
    d = HCSR04(sensor.trigger, sensor.echo, min_mm=200, max_mm=4000, time_pulse_us=sensor.time_pulse_us,
               sleep_us=sensor.sleep_us)
    speed = level.speed_of_sound_mm_s(world.temp_c())
    assert d.read_mm(speed) == pytest.approx(world.distance_mm(), abs=2)
    assert sensor.trigger.value() == 0
    sensor.connected = False
    assert d.read_mm(speed) is None and d.reason == "timeout" and d.errors["timeout"] == 1
    sensor.connected = True
    d.timeout_us = 100  # a long echo beyond the timeout: time_pulse_us says -2
    assert d.read_mm(speed) is None and d.reason == "timeout"
    d.timeout_us = 30000
    d.max_mm = 1000  # the water 2 m down: beyond the range, then inside the blind zone
    assert d.read_mm(speed) is None and d.reason == "range" and d.errors["range"] == 1
    d.min_mm, d.max_mm = 3000, 4000
    assert d.read_mm(speed) is None and d.reason == "blind" and d.errors["blind"] == 1
    d.min_mm = 200
    assert d.read_mm(speed) == pytest.approx(world.distance_mm(), abs=2) and d.reason is None


def test_hydrostatic_namur_classes():
    clock = VirtualClock()
    world = World(clock, base_mm=1000)
    adc = LoopAdc(world, span_mm=5000)
    d = Hydrostatic(adc, span_mm=5000)
    assert d.read_mm() == pytest.approx(world.level_mm(), abs=3)
    assert d.reason is None and 4000 < d.current_ua < 20000
    world.probe_fault = "open"
    assert d.read_mm() is None and d.reason == "fault_low"
    world.probe_fault = "short"
    assert d.read_mm() is None and d.reason == "fault_high"

    class Fixed:
        def __init__(self, ua):
            self.raw = int(ua * 150 / 1000 * 65535 / 3300 + 0.5)

        def read_u16(self):
            return self.raw

    assert Hydrostatic(Fixed(3700)).read_mm() == 0  # 3.6..3.8 mA: out of range, clamped, flagged
    h = Hydrostatic(Fixed(20700), span_mm=5000)
    assert h.read_mm() == 5000 and h.reason == "range"
    assert Hydrostatic(Fixed(3500)).read_mm() is None
    assert Hydrostatic(Fixed(12000), span_mm=4000, offset_mm=100).read_mm() == pytest.approx(2100, abs=2)


def test_speed_of_sound():
    assert level.speed_of_sound_mm_s(20.0) == pytest.approx(343200, abs=200)
    assert level.speed_of_sound_mm_s(0.0) == 331300
    assert level.speed_of_sound_mm_s(None) == level.speed_of_sound_mm_s(20.0)
    assert level.level_from_distance_mm(3000, 800) == 2200


def test_burst_median_outliers_and_quality():
    b = filters.Burst(7, max_dev=50)
    b.start()
    for v in (1000, 1003, 998, 500, None, 1001, 1002):
        b.add(v)
    value, taken, rejected, status = b.result()
    assert (value, taken, rejected, status) == (1001, 7, 2, filters.DEGRADED)
    b.start()
    for v in (1000, 1000, 1001, 999, 1000, 1000, 1000):
        b.add(v)
    assert b.result() == (1000, 7, 0, filters.OK)
    b.start()
    for _ in range(5):
        b.add(None, out_of_range=True)
    b.add(1000)
    b.add(1000)
    assert b.result() == (None, 7, 5, filters.RANGE)
    b.start()
    for _ in range(7):
        b.add(None)
    assert b.result()[3] == filters.FAULT


def test_clamp_ema_reporter():
    b = filters.Burst(1, lo=0, hi=100)
    b.start()
    b.add(150)
    assert b.result() == (100, 1, 0, filters.RANGE)
    e = filters.Ema(0.5)
    assert [e.update(x) for x in (10, 20, 20)] == [10, 15, 17.5]
    with pytest.raises(ValueError):
        filters.Ema(0)
    r = filters.Reporter(delta=10, heartbeat_ms=60000)
    assert r.due(100, 0)
    r.reported(100, 0)
    assert not r.due(105, 1000)
    assert r.due(111, 1000)
    assert r.due(100, 60000)  # heartbeat
    assert r.due(None, 2000)  # a value that disappeared is news


def test_uart_link_deframes_ignores_garbage_and_counts_errors():
    from firmware.links import UartLink
    from protocol import cobs

    class Line(ByteUart):
        def __init__(self, data=b""):
            super().__init__(data)
            self.written = bytearray()
            self.broken = False

        def any(self):
            if self.broken:
                raise OSError(5)
            return super().any()

        def write(self, data):
            if self.broken:
                raise OSError(5)
            self.written += data
            return len(data)  # machine.UART.write: bytes written (None on a timeout, py/stream.c)

    line = Line(b"boot text\n\x00" + b"\x13\x37\xfe" + cobs.encode(b"hello") + b"\x00\x01\x02\x00"
                + cobs.encode(b"x" * 300))
    link = UartLink(line, VirtualClock())
    assert link.poll(0) == [b"hello", b"x" * 300]
    assert link.counts["text"] == 1 and link.counts["noise"] >= 1
    assert link.send(b"abc") and cobs.Deframer().feed(bytes(line.written)) == [("frame", b"abc")]
    line.broken = True
    assert link.poll(50) == [] and link.counts["error"] >= 1
    assert not link.send(b"abc") and link.counts["error"] >= 2
