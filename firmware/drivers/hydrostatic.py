# Hydrostatic level probe on a 4-20 mA loop, read as the voltage over a shunt resistor
# with an ADC (machine.ADC read_u16). NAMUR NE43: 3.8..20.5 mA is a measurement
# (clamped to 4..20), 3.6..3.8 and 20.5..21 mA are out of range, below 3.6 mA (wire
# break, dead probe) or above 21 mA (short, probe fault) is a fault and never a level.
class Hydrostatic:
    def __init__(self, adc, shunt_ohm=150, vref_mv=3300, span_mm=5000, offset_mm=0):
        # span_mm: level at 20 mA above the probe; offset_mm: probe height above the invert
        self.adc = adc
        self.shunt_ohm = shunt_ohm
        self.vref_mv = vref_mv
        self.span_mm = span_mm
        self.offset_mm = offset_mm
        self.current_ua = None
        self.reason = None
        self.errors = {"fault_low": 0, "fault_high": 0, "range": 0, "bus": 0}

    def read_ua(self):
        try:
            raw = self.adc.read_u16()
        except OSError:
            self.errors["bus"] += 1
            return None
        # uA = mV * 1000 / ohm; integer arithmetic keeps it exact enough (1 count ~ 0.34 uA at 150 ohm)
        return raw * self.vref_mv * 1000 // (65535 * self.shunt_ohm)

    def read_mm(self, speed_mm_s=None):
        # Level above the invert in mm, or None with self.reason (speed_mm_s: unused, same interface)
        self.reason = None
        ua = self.read_ua()
        self.current_ua = ua
        if ua is None:
            self.reason = "bus"
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
        return self.offset_mm + (ua - 4000) * self.span_mm // 16000
