# Bosch BME280 on I2C: temperature, pressure, humidity from one forced-mode conversion
# and one burst read of 0xF7..0xFE, with Bosch's integer compensation (datasheet
# BST-BME280-DS002 section 4.2.3; the 64-bit pressure variant). Takes a machine.I2C-like
# bus (readfrom_mem_into, writeto_mem). Raises only in __init__; read() returns None
# values and counts the reason in self.errors.
from firmware.clock import clock_or_new
from firmware.sensors import AIR, Base, f16, f32
from protocol.message import Q_FAULT as FAULT
from protocol.senml import record

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:

    def const(x):  # CPython stand-in for micropython.const
        return x


CHIP_ID = const(0x60)
SKIPPED_20 = const(0x80000)  # raw temperature/pressure of a skipped measurement
SKIPPED_16 = const(0x8000)  # raw humidity of a skipped measurement
_REG_CALIB_A = const(0x88)  # 0x88..0xA1: T1..T3, P1..P9, (0xA0 unused), H1
_REG_CALIB_B = const(0xE1)  # 0xE1..0xE7: H2..H6
_REG_ID = const(0xD0)
_REG_RESET = const(0xE0)
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_REG_DATA = const(0xF7)  # press[3] temp[3] hum[2]
_MODE_FORCED = const(0x01)
_STATUS_MEASURING = const(0x08)

# oversampling register code -> number of samples (0 = skipped)
_OS_COUNT = (0, 1, 2, 4, 8, 16)
OVERSAMPLE_CODES = {0: 0, 1: 1, 2: 2, 4: 3, 8: 4, 16: 5}
IIR_CODES = {0: 0, 2: 1, 4: 2, 8: 3, 16: 4}


def _s16(b, i):
    v = b[i] | (b[i + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v


def _s8(v):
    return v - 0x100 if v & 0x80 else v


def _tdiv(a, b):
    # C integer division truncates toward zero; Python's // floors
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class BME280Error(OSError):
    pass


class Calibration:
    # The trimming parameters from the chip's NVM (datasheet table 16)
    def __init__(self, a, b):
        # a: 26 bytes from 0x88, b: 7 bytes from 0xE1
        self.t1 = a[0] | (a[1] << 8)
        self.t2 = _s16(a, 2)
        self.t3 = _s16(a, 4)
        self.p1 = a[6] | (a[7] << 8)
        self.p2 = _s16(a, 8)
        self.p3 = _s16(a, 10)
        self.p4 = _s16(a, 12)
        self.p5 = _s16(a, 14)
        self.p6 = _s16(a, 16)
        self.p7 = _s16(a, 18)
        self.p8 = _s16(a, 20)
        self.p9 = _s16(a, 22)
        self.h1 = a[25]
        self.h2 = _s16(b, 0)
        self.h3 = b[2]
        self.h4 = (_s8(b[3]) << 4) | (b[4] & 0x0F)
        self.h5 = (_s8(b[5]) << 4) | (b[4] >> 4)
        self.h6 = _s8(b[6])


def t_fine_of(c, adc_t):
    var1 = (((adc_t >> 3) - (c.t1 << 1)) * c.t2) >> 11
    d = (adc_t >> 4) - c.t1
    var2 = (((d * d) >> 12) * c.t3) >> 14
    return var1 + var2


def temperature_cc(t_fine):
    # hundredths of a degree Celsius
    return (t_fine * 5 + 128) >> 8


def pressure_q24_8(c, t_fine, adc_p):
    # Pa in Q24.8 (1/256 Pa), or None when the calibration would divide by zero
    var1 = t_fine - 128000
    var2 = var1 * var1 * c.p6
    var2 += (var1 * c.p5) << 17
    var2 += c.p4 << 35
    var1 = ((var1 * var1 * c.p3) >> 8) + ((var1 * c.p2) << 12)
    var1 = (((1 << 47) + var1) * c.p1) >> 33
    if var1 == 0:
        return None
    p = 1048576 - adc_p
    p = _tdiv(((p << 31) - var2) * 3125, var1)
    var1 = (c.p9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (c.p8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (c.p7 << 4)


def humidity_q22_10(c, t_fine, adc_h):
    # %RH in Q22.10 (1/1024 %RH), clamped to 0..100 %RH as Bosch does
    v = t_fine - 76800
    v = ((((adc_h << 14) - (c.h4 << 20) - (c.h5 * v)) + 16384) >> 15) * (
        ((((((v * c.h6) >> 10) * (((v * c.h3) >> 11) + 32768)) >> 10) + 2097152) * c.h2 + 8192) >> 14
    )
    v -= ((((v >> 15) * (v >> 15)) >> 7) * c.h1) >> 4
    if v < 0:
        v = 0
    if v > 419430400:
        v = 419430400
    return v >> 12


def measure_time_ms(os_t, os_p, os_h):
    # datasheet section 9.1, maximum conversion time, rounded up
    us = 1250 + 2300 * os_t
    if os_p:
        us += 2300 * os_p + 575
    if os_h:
        us += 2300 * os_h + 575
    return (us + 999) // 1000


class BME280:
    def __init__(self, i2c, address=0x76, oversample_t=1, oversample_p=1, oversample_h=1, iir=0, clock=None):
        # oversample_*: 0 (skip), 1, 2, 4, 8, 16 samples; iir: filter coefficient 0, 2, 4, 8, 16
        for v in (oversample_t, oversample_p, oversample_h):
            if v not in OVERSAMPLE_CODES:
                raise ValueError("BME280 oversampling must be one of 0, 1, 2, 4, 8, 16")
        if iir not in IIR_CODES:
            raise ValueError("BME280 IIR coefficient must be one of 0, 2, 4, 8, 16")
        self.i2c = i2c
        self.address = address
        self.clock = clock_or_new(clock)
        self._b1 = bytearray(1)
        self._data = bytearray(8)
        self.errors = {"bus": 0, "skipped": 0, "timeout": 0, "calibration": 0}
        try:
            i2c.readfrom_mem_into(address, _REG_ID, self._b1)
        except OSError:
            raise BME280Error("BME280: no answer at I2C address 0x%02x" % address)
        if self._b1[0] != CHIP_ID:
            raise BME280Error("BME280: chip id 0x%02x at 0x%02x, expected 0x60" % (self._b1[0], address))
        a = bytearray(26)
        b = bytearray(7)
        i2c.readfrom_mem_into(address, _REG_CALIB_A, a)
        i2c.readfrom_mem_into(address, _REG_CALIB_B, b)
        self.cal = Calibration(a, b)
        self._wait_ms = measure_time_ms(oversample_t, oversample_p, oversample_h)
        self._ctrl_meas = (OVERSAMPLE_CODES[oversample_t] << 5) | (OVERSAMPLE_CODES[oversample_p] << 2)
        self._write(_REG_CTRL_MEAS, self._ctrl_meas)  # sleep mode while configuring (section 5.4.6)
        self._write(_REG_CONFIG, IIR_CODES[iir] << 2)
        self._write(_REG_CTRL_HUM, OVERSAMPLE_CODES[oversample_h])

    def _write(self, reg, value):
        self._b1[0] = value
        self.i2c.writeto_mem(self.address, reg, self._b1)

    def read_raw(self):
        # One forced conversion -> (adc_t, adc_p, adc_h) or None on a bus error/timeout
        try:
            self._write(_REG_CTRL_MEAS, self._ctrl_meas | _MODE_FORCED)
            self.clock.sleep_ms(self._wait_ms)
            for _ in range(5):
                self.i2c.readfrom_mem_into(self.address, _REG_STATUS, self._b1)
                if not self._b1[0] & _STATUS_MEASURING:
                    break
                self.clock.sleep_ms(1)
            else:
                self.errors["timeout"] += 1
                return None
            d = self._data
            self.i2c.readfrom_mem_into(self.address, _REG_DATA, d)
        except OSError:
            self.errors["bus"] += 1
            return None
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        return adc_t, adc_p, adc_h

    def compensate(self, adc_t, adc_p, adc_h):
        # -> (temperature_C, pressure_Pa, humidity_RH); None for a skipped channel.
        # Pressure and humidity need temperature (t_fine), so a skipped temperature voids all.
        if adc_t == SKIPPED_20:
            self.errors["skipped"] += 1
            return None, None, None
        c = self.cal
        t_fine = t_fine_of(c, adc_t)
        temperature_c = temperature_cc(t_fine) / 100
        pressure_pa = None
        if adc_p != SKIPPED_20:
            q = pressure_q24_8(c, t_fine, adc_p)
            if q is None:
                self.errors["calibration"] += 1
            else:
                pressure_pa = q / 256
        humidity_rh = None
        if adc_h != SKIPPED_16:
            humidity_rh = humidity_q22_10(c, t_fine, adc_h) / 1024
        return temperature_c, pressure_pa, humidity_rh

    def read(self):
        # -> (temperature_C, pressure_Pa, humidity_RH), each None when not measured
        raw = self.read_raw()
        if raw is None:
            return None, None, None
        return self.compensate(raw[0], raw[1], raw[2])


# ---------------------------------------------------------------- the sensor (firmware/sensors.py)

SETTINGS = {"address": ("i", 0x76, 0, 127), "oversample": ("i", 1, 0, 16), "iir": ("i", 0, 0, 16)}
CAPS = AIR


class Sensor(Base):
    # the climate: one forced conversion a cycle -> t, h, p; a failed one keeps the last good
    # values with quality "fault" on t. It gives the air to the others (ctx.temp_c, pressure_pa)
    def __init__(self, board, s):
        super().__init__(board, s)
        self.t = self.p = self.h = None

    def open(self):
        s = self.s
        o = s["oversample"]
        self.part = BME280(self.board.i2c(s), s["address"], oversample_t=o, oversample_p=o, oversample_h=o,
                           iir=s["iir"], clock=self.board.clock)

    def read(self, ctx, out):
        t = p = h = None
        if self.part is not None:
            t, p, h = self.part.read()
        q = None
        if t is None:
            q = [1, 1, FAULT]
        else:
            self.t = t
            self.p = p
            self.h = h
        ctx.temp_c = self.t
        ctx.pressure_pa = self.p
        if self.t is not None:
            out.append(record("t", f32(round(self.t, 2))))
            if self.h is not None:
                out.append(record("h", f16(self.h)))
            if self.p is not None:
                out.append(record("p", int(self.p + 0.5)))
        return q
