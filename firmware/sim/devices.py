# Simulated parts that behave like their datasheets, behind machine-like bus objects:
# a BME280 register map on an I2C bus, an A02YYUW streaming 0xFF H L SUM frames into a
# UART FIFO, trigger/echo pins with time_pulse_us, and a 4-20 mA loop on an ADC.
import struct

from firmware.drivers import bme280 as _b
from firmware.drivers.a02yyuw import REF_SPEED_MM_S
from firmware.sensors import driver

ENODEV = 19  # what machine.I2C raises when nobody acknowledges the address
EIO = 5

# Bosch datasheet example trimming (BMP280 section 3.12 values, typical BME280 humidity trimming)
DATASHEET_CALIB = {
    "t1": 27504, "t2": 26435, "t3": -1000,
    "p1": 36477, "p2": -10685, "p3": 3024, "p4": 2855, "p5": 140, "p6": -7, "p7": 15500, "p8": -14600,
    "p9": 6000, "h1": 75, "h2": 362, "h3": 0, "h4": 324, "h5": 50, "h6": 30,
}
DATASHEET_RAW = (519888, 415148)  # adc_T, adc_P: 25.08 °C, 100653.27 Pa


def calib_bytes(c):
    # trimming dict -> (26 bytes for 0x88.., 7 bytes for 0xE1..), the chip's NVM layout
    a = bytearray(26)
    a[0:24] = struct.pack("<HhhHhhhhhhhh", c["t1"], c["t2"], c["t3"], c["p1"], c["p2"], c["p3"], c["p4"],
                          c["p5"], c["p6"], c["p7"], c["p8"], c["p9"])
    a[25] = c["h1"]
    h4 = c["h4"] & 0xFFF
    h5 = c["h5"] & 0xFFF
    b = bytearray(7)
    b[0:2] = struct.pack("<h", c["h2"])
    b[2] = c["h3"]
    b[3] = h4 >> 4
    b[4] = (h4 & 0x0F) | ((h5 & 0x0F) << 4)
    b[5] = h5 >> 4
    b[6] = c["h6"] & 0xFF
    return a, b


def _search(f, target, bits, rising):
    # smallest raw value in [0, 2**bits) whose f(raw) reaches target (f monotonic)
    lo = 0
    hi = (1 << bits) - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        v = f(mid)
        if (v >= target) if rising else (v <= target):
            hi = mid
        else:
            lo = mid + 1
    return lo


class BME280Sim:
    def __init__(self, world=None, calib=None, clock=None):
        self.world = world
        self.clock = clock
        self.regs = bytearray(256)
        self.regs[0xD0] = _b.CHIP_ID
        c = calib or DATASHEET_CALIB
        a, b = calib_bytes(c)
        self.regs[0x88 : 0x88 + 26] = a
        self.regs[0xE1 : 0xE1 + 7] = b
        self.cal = _b.Calibration(a, b)
        self.raw = None  # fixed (adc_t, adc_p, adc_h) instead of the world's values
        self.present = True
        self.fail_next = 0  # the next n transfers raise EIO (a disturbed bus)
        self._done_ms = 0
        self.conversions = 0

    def _invert(self):
        # world values -> raw ADC values, by searching the Bosch compensation
        c = self.cal
        w = self.world
        temp_cc = int(w.temp_c() * 100) if w else 2000
        adc_t = _search(lambda r: _b.temperature_cc(_b.t_fine_of(c, r)), temp_cc, 20, True)
        tf = _b.t_fine_of(c, adc_t)
        p_q = int((w.pressure_pa() if w else 101325) * 256)
        adc_p = _search(lambda r: _b.pressure_q24_8(c, tf, r) or 0, p_q, 20, False)
        h_q = int((w.humidity_rh() if w else 50) * 1024)
        adc_h = _search(lambda r: _b.humidity_q22_10(c, tf, r), h_q, 16, True)
        return adc_t, adc_p, adc_h

    def _convert(self):
        r = self.regs
        os_t = r[0xF4] >> 5
        os_p = (r[0xF4] >> 2) & 7
        os_h = r[0xF2] & 7
        adc_t, adc_p, adc_h = self.raw or self._invert()
        if not os_t:
            adc_t = _b.SKIPPED_20
        if not os_p:
            adc_p = _b.SKIPPED_20
        if not os_h:
            adc_h = _b.SKIPPED_16
        r[0xF7] = adc_p >> 12
        r[0xF8] = (adc_p >> 4) & 0xFF
        r[0xF9] = (adc_p & 0x0F) << 4
        r[0xFA] = adc_t >> 12
        r[0xFB] = (adc_t >> 4) & 0xFF
        r[0xFC] = (adc_t & 0x0F) << 4
        r[0xFD] = adc_h >> 8
        r[0xFE] = adc_h & 0xFF
        count = (0, 1, 2, 4, 8, 16)
        wait = _b.measure_time_ms(count[min(os_t, 5)], count[min(os_p, 5)], count[min(os_h, 5)])
        self._done_ms = (self.clock.ms() + wait) if self.clock else 0
        self.conversions += 1

    def _check(self):
        if not self.present:
            raise OSError(ENODEV)
        if self.fail_next:
            self.fail_next -= 1
            raise OSError(EIO)

    def read(self, reg, n):
        self._check()
        r = self.regs
        if self.clock is not None and self.clock.ms() >= self._done_ms:
            r[0xF3] &= ~0x08
            if r[0xF4] & 3 != 3:  # forced mode falls back to sleep after the conversion
                r[0xF4] &= 0xFC
        return bytes(r[(reg + i) & 0xFF] for i in range(n))

    def write(self, reg, data):
        self._check()
        for i in range(len(data)):
            a = (reg + i) & 0xFF
            v = data[i]
            if a == 0xE0 and v == 0xB6:  # soft reset: registers to their reset values
                self.regs[0xF2] = self.regs[0xF4] = self.regs[0xF5] = 0
            elif a in (0xF2, 0xF5):
                self.regs[a] = v
            elif a == 0xF4:
                self.regs[a] = v
                if v & 3 in (1, 2):  # forced mode: one conversion
                    self._convert()
                    if self.clock is not None:
                        self.regs[0xF3] |= 0x08


class I2CBus:
    # machine.I2C methods the drivers use; devices: {address: device with read/write}
    def __init__(self, devices):
        self.devices = devices
        self._ptr = {}

    def _dev(self, addr):
        d = self.devices.get(addr)
        if d is None or not getattr(d, "present", True):
            raise OSError(ENODEV)
        return d

    def scan(self):
        return sorted(a for a in self.devices if getattr(self.devices[a], "present", True))

    def readfrom_mem_into(self, addr, reg, buf):
        data = self._dev(addr).read(reg, len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def readfrom_mem(self, addr, reg, n):
        return self._dev(addr).read(reg, n)

    def writeto_mem(self, addr, reg, buf):
        self._dev(addr).write(reg, buf)

    def writeto(self, addr, buf):
        # first byte sets the register pointer, the rest is written from there
        d = self._dev(addr)
        if len(buf):
            self._ptr[addr] = buf[0]
            if len(buf) > 1:
                d.write(buf[0], buf[1:])
        return len(buf)

    def readfrom_into(self, addr, buf):
        data = self._dev(addr).read(self._ptr.get(addr, 0), len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]


class UltrasonicUart:
    # The parts of firmware/drivers/a02yyuw.py (an A02YYUW, a JSN-SR04T in mode 2) as their
    # drivers know them: a frame every PERIOD_MS into a FIFO of FIFO bytes (older bytes are
    # lost when it overflows, as on a UART nobody reads); garbage_p inserts noise bytes.
    PERIOD_MS = 100  # the driver: the sensor "streams 4-byte frames about every 100 ms"
    FIFO = 128

    def __init__(self, world, clock, garbage_p=0.0, kind="a02yyuw"):
        self.world = world
        self.clock = clock
        self.garbage_p = garbage_p
        self.connected = True
        self.as_kind(kind)
        self._q = bytearray()
        self._next_ms = clock.ms() + self.PERIOD_MS

    def as_kind(self, kind):
        # The part a config's sensor kind names. Its driver rescales the distance to the speed
        # of sound of the measured air by default (compensate) exactly when the part does not
        # correct for the air itself: the JSN-SR04T converts its echo time at the driver's
        # REF_SPEED_MM_S, the A02YYUW at the speed of the air it measures.
        self.compensates = not driver(kind).SETTINGS["compensate"][1]

    def _speed(self):
        from firmware.level import speed_of_sound_mm_s

        return speed_of_sound_mm_s(self.world.temp_c())

    def _fill(self):
        now = self.clock.ms()
        if now < self._next_ms:
            return
        period = self.PERIOD_MS
        if now - self._next_ms > 3 * period:  # after a long sleep only the newest frames matter
            self._next_ms = now - 3 * period
        rng = self.world.rng
        while self._next_ms <= now:
            self._next_ms += period
            if not self.connected:
                continue
            if rng.chance(self.garbage_p):
                for _ in range(1 + rng.u32() % 5):
                    self._q.append(rng.u32() & 0xFF)
            d = self.world.echo_mm()
            if d is None:
                continue
            mm = int(d) if self.compensates else int(d * REF_SPEED_MM_S / self._speed())
            mm = max(0, min(0xFFFF, mm))
            h = mm >> 8
            lo = mm & 0xFF
            self._q.extend(bytes((0xFF, h, lo, (0xFF + h + lo) & 0xFF)))
        if len(self._q) > self.FIFO:
            self._q = self._q[len(self._q) - self.FIFO :]

    def any(self):
        self._fill()
        return len(self._q)

    def readinto(self, buf):
        self._fill()
        n = min(len(buf), len(self._q))
        if not n:
            return None
        buf[0:n] = self._q[0:n]
        self._q = self._q[n:]
        return n

    def write(self, data):
        return len(data)


class EchoPin:
    def __init__(self):
        self.level = 0

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = v


class EchoSensor:
    # Trigger/echo sensor: time_pulse_us(echo, 1, timeout) gives the round trip of the world's echo
    def __init__(self, world, clock):
        self.world = world
        self.clock = clock
        self.trigger = EchoPin()
        self.echo = EchoPin()
        self.connected = True

    def time_pulse_us(self, pin, level, timeout_us):
        from firmware.level import speed_of_sound_mm_s

        d = self.world.echo_mm() if self.connected else None
        if d is None:
            return -1
        t = int(2 * d * 1000000 / speed_of_sound_mm_s(self.world.temp_c()))
        if t > timeout_us:
            return -2
        return max(t, 1)

    def sleep_us(self, us):
        pass


# What a config may wire to a GPIO input (SimBoard.gpio): kind -> the simulated part, made
# with (world, clock, settings); a part is a machine.Pin-like input: value(), irq(trigger,
# handler, hard), IRQ_FALLING, and hands its handler the edges that happened since, each at
# its own time (clock.edge_ms, which VirtualClock.irq_ms then reads)
PIN_PARTS = {}


def pin_part(world, clock, settings):
    make = PIN_PARTS.get(settings["kind"])
    if make is None:
        raise ValueError("nothing simulated for a %s on a GPIO" % settings["kind"])
    return make(world, clock, settings)


class LoopAdc:
    # 4-20 mA hydrostatic probe over a shunt into a 16-bit ADC (read_u16)
    def __init__(self, world, shunt_ohm=150, vref_mv=3300, span_mm=5000, offset_mm=0):
        self.world = world
        self.shunt_ohm = shunt_ohm
        self.vref_mv = vref_mv
        self.span_mm = span_mm
        self.offset_mm = offset_mm

    def current_ua(self):
        f = self.world.probe_fault
        if f == "open":
            return 0.0
        if f == "short":
            return 25000.0
        head = self.world.level_mm() - self.offset_mm
        return 4000 + 16000 * max(0.0, head) / self.span_mm + self.world.rng.noise(2.0)

    def read_u16(self):
        mv = self.current_ua() * self.shunt_ohm / 1000
        return max(0, min(65535, int(mv * 65535 / self.vref_mv + 0.5)))


class TippingBucketSim:
    # A tipping-bucket rain gauge's reed switch on a GPIO with its pull-up (firmware/drivers/
    # tipping_bucket.py has the part): a tip each time the world's rain at the surface fills
    # the bucket (mm_per_tip), the switch closed for CLOSED_MS (the TE525's 135 ms average)
    # and bouncing at the closing and the opening (edges 0.25 ms apart, settled within
    # 0.75 ms: on the ms clock, two falling edges in the same ms and one as it opens).
    # Tips are found in STEP_MS steps of the world; a tip's edges reach the handler when
    # the node next looks at the pin (value()) or sleeps past them, each at its own time.
    IRQ_FALLING = 2
    IRQ_RISING = 1
    CLOSED_MS = 135
    STEP_MS = 1000

    def __init__(self, world, clock, settings):
        self.world = world
        self.clock = clock
        self.mm_per_tip = settings["mm_per_tip"]
        self.handler = None
        self.tips = 0  # tips the gauge made (what a perfect counter counts)
        self.bounce = True
        self._seen_ms = clock.ms()
        self._closed_until = -1

    def irq(self, trigger=None, handler=None, hard=False):
        self.handler = handler
        self._seen_ms = self.clock.ms()  # only what tips from now on

    def _edges(self, t):
        # the falling edges of one tip at t: the closing and its bounce, then the opening's
        # bounce (a perfect switch: the closing only)
        h = self.handler
        if h is None:
            return
        c = self.clock
        edges = (t, t, t + self.CLOSED_MS) if self.bounce else (t,)
        for e in edges:
            c.edge_ms = e
            h(self)
        c.edge_ms = None

    def _run(self):
        now = self.clock.ms()
        t = self._seen_ms
        if now <= t:
            return
        rain = self.world.rain_fallen_mm
        per = self.mm_per_tip
        n0 = int(rain(t / 1000) / per)
        while t < now:
            step = min(self.STEP_MS, now - t)
            n = int(rain((t + step) / 1000) / per)
            for k in range(n - n0):  # tips in this step, spread over it
                at = t + step * (k + 1) // (n - n0)
                self.tips += 1
                self._closed_until = at + self.CLOSED_MS
                self._edges(at)
            n0 = n
            t += step
        self._seen_ms = now

    def value(self):
        self._run()
        return 0 if self.clock.ms() < self._closed_until else 1


PIN_PARTS["tipping_bucket"] = TippingBucketSim
