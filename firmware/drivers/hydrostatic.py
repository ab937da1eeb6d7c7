# Hydrostatic level probe on a 4-20 mA loop, read as the voltage over a shunt resistor
# with an ADC. NAMUR NE43: 3.8..20.5 mA is a measurement (clamped to 4..20), 3.6..3.8 and
# 20.5..21 mA are out of range, below 3.6 mA (wire break, dead probe) or above 21 mA
# (short, probe fault) is a fault and never a level.
#
# ADC: read_uv() where the port has it (ESP32: calibrated by esp-idf's adc_cali scheme,
# ports/esp32/adc.c madcblock_read_uv_helper; its read_u16 is the raw, uncalibrated code),
# else read_u16() against vref_mv (RP2: ports/rp2/machine_adc.c has read_u16 only).
# linear_uv: the ADC's usable input range; a voltage outside it is no measurement. ESP32 at
# 11 dB is linear from 150 to 2450 mV (esp-idf ADC docs), so its shunt is 100 ohm: 3.6 mA
# -> 360 mV, 21 mA -> 2100 mV, 24.5 mA -> 2450 mV (with 150 ohm anything over 16.3 mA read wrong).
#
# The probe measures pressure: span_mm is the water column at 20 mA (density 1000 kg/m3).
# density_kg_m3 corrects for the liquid (wastewater ~1000..1050). A non-vented (sealed
# gauge) probe reads against the reference pressure sealed into it (ref_pa), so the air
# pressure outside moves its reading by 0.102 mm per Pa: with vented False the driver
# subtracts (air_pa - ref_pa), air_pa set before each read by the sampler from the BME280.
from firmware import level
from firmware.sensors import LEVEL


class Hydrostatic:
    def __init__(self, adc, shunt_ohm=150, vref_mv=3300, span_mm=5000, offset_mm=0, density_kg_m3=1000,
                 vented=True, ref_pa=101325, linear_uv=None):
        # span_mm: water column at 20 mA; offset_mm: probe height above the invert
        if not 500 <= density_kg_m3 <= 2000:
            raise ValueError("density_kg_m3 must be 500..2000")
        self.adc = adc
        self._uv = getattr(adc, "read_uv", None)
        self.shunt_ohm = shunt_ohm
        self.vref_mv = vref_mv
        self.span_mm = span_mm
        self.offset_mm = offset_mm
        self.density = density_kg_m3
        self.vented = vented
        self.ref_pa = ref_pa
        self.linear_uv = linear_uv
        self.air_pa = None  # outside air pressure, for a non-vented probe
        self.current_ua = None
        self.reason = None
        self.errors = {"fault_low": 0, "fault_high": 0, "range": 0, "bus": 0, "adc_range": 0, "no_air": 0}

    def read_uv(self):
        try:
            if self._uv is not None:
                return self._uv()
            return self.adc.read_u16() * self.vref_mv * 1000 // 65535
        except OSError:
            self.errors["bus"] += 1
            return None

    def read_ua(self):
        uv = self.read_uv()
        return None if uv is None else uv // self.shunt_ohm  # uV / ohm = uA

    def read_mm(self, speed_mm_s=None):
        # Level above the invert in mm, or None with self.reason (speed_mm_s: unused, same interface)
        self.reason = None
        uv = self.read_uv()
        self.current_ua = None
        if uv is None:
            self.reason = "bus"
            return None
        ua = uv // self.shunt_ohm
        self.current_ua = ua
        lin = self.linear_uv
        if lin is not None and not lin[0] <= uv <= lin[1]:
            # the ADC is not linear there: a wrong number is worse than none
            self.errors["adc_range"] += 1
            self.reason = "range"
            return None
        if ua < 3600:
            self.errors["fault_low"] += 1
            self.reason = "fault_low"
            return None
        if ua > 21000:
            self.errors["fault_high"] += 1
            self.reason = "fault_high"
            return None
        if ua < 3800 or ua > 20500:
            self.errors["range"] += 1
            self.reason = "range"
        ua = min(max(ua, 4000), 20000)
        column_mm = (ua - 4000) * self.span_mm / 16000  # of water
        if not self.vented:
            if self.air_pa is None:
                self.errors["no_air"] += 1  # no BME280 reading: uncorrected, said so in the quality
                self.reason = "range"
            else:
                column_mm -= (self.air_pa - self.ref_pa) * 0.10197  # mm of water per Pa (g = 9.80665)
        return self.offset_mm + round(column_mm * 1000 / self.density)


# ---------------------------------------------------------------- the sensor (firmware/sensors.py)

# shunt_ohm: absent, the board's (LOOP_SHUNT_OHM: the shunt that keeps 21 mA inside its ADC's
# linear range; SHUNT_OHM where the board names none)
SHUNT_OHM = 150
SETTINGS = level.settings(level.FILTER, {
    "span_mm": ("i", 5000, 0, 100000), "offset_mm": ("i", 0, -100000, 100000), "shunt_ohm": ("i", None, 1, 100000),
    "vref_mv": ("i", 3300, 1000, 5000), "density_kg_m3": ("i", 1000, 500, 2000), "vented": ("b", True, 0, 0),
    "ref_pa": ("i", 101325, 50000, 120000),
})
CAPS = LEVEL
DEPTH = "span_mm"


class Sensor(level.Level):
    DISTANCE = False  # the probe reads the level itself
    AUX = ("i", 1000000)  # and the loop current (A)

    def open(self):
        s = self.s
        b = self.board
        self.part = Hydrostatic(b.adc(s), shunt_ohm=s["shunt_ohm"] or getattr(b, "LOOP_SHUNT_OHM", SHUNT_OHM),
                                vref_mv=s["vref_mv"], span_mm=s["span_mm"], offset_mm=s["offset_mm"],
                                density_kg_m3=s["density_kg_m3"], vented=s["vented"], ref_pa=s["ref_pa"],
                                linear_uv=getattr(b, "ADC_LINEAR_UV", None))

    def start(self, ctx):
        self.part.air_pa = ctx.pressure_pa  # a sealed probe corrects for it (a vented one ignores it)
