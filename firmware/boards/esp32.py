# ESP32 (MicroPython): pins, buses, sleep, watchdog, reset cause and flash for the node.
# Pin numbers suit a DevKitC; a config "pins" map overrides any of them.
import machine

from firmware.boards.mpboard import MicroPythonBoard

_CAUSES = {
    machine.PWRON_RESET: "power_on", machine.HARD_RESET: "hard", machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep", machine.SOFT_RESET: "soft",
}


class Board(MicroPythonBoard):
    name = "esp32"
    supports_deepsleep = True
    # ADC at 11 dB: linear from 150 to 2450 mV (esp-idf ADC docs, ESP32); read_uv() is calibrated.
    # A 100 ohm shunt keeps 3.6..24.5 mA of a 4-20 mA loop inside it (150 ohm: only up to 16.3 mA).
    ADC_LINEAR_UV = (150000, 2450000)
    LOOP_SHUNT_OHM = 100
    # light sleep powers the radio down and the access point drops the station: a UDP node
    # waits with time.sleep_ms and lets Wi-Fi modem sleep save the power instead
    LIGHTSLEEP_KEEPS_WIFI = False
    PINS = {
        "i2c_scl": 22, "i2c_sda": 21,  # BME280
        "sensor_tx": 17, "sensor_rx": 16,  # A02YYUW / JSN-SR04T mode 2 on UART2
        "trigger": 5, "echo": 18,  # HC-SR04 / JSN-SR04T mode 0
        "loop_adc": 34,  # 4-20 mA shunt voltage (input-only pin, ADC1)
        "battery_adc": 35,  # battery through a 1:2 divider
    }

    def sensor_uart(self, settings=None):
        p = self.pins
        return machine.UART(2, baudrate=9600, tx=p["sensor_tx"], rx=p["sensor_rx"], rxbuf=256)

    def adc(self, settings=None):
        adc = machine.ADC(machine.Pin(self.pins["loop_adc"]))
        adc.atten(machine.ADC.ATTN_11DB)  # 150..2450 mV linear: the shunt voltage of 3.6..24.5 mA at 100 ohm
        return adc

    def battery_mv(self):
        try:
            adc = machine.ADC(machine.Pin(self.pins["battery_adc"]))
            adc.atten(machine.ADC.ATTN_11DB)
            return adc.read_uv() * 2 // 1000
        except (OSError, ValueError):
            return None

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def reset_cause(self):
        return _CAUSES.get(machine.reset_cause(), "unknown")

    def deepsleep(self, ms):
        machine.deepsleep(ms)

    # RTC slow memory keeps what a deep-sleep wake needs (rtc_memory) without a flash write per wake; it
    # survives deep sleep and resets but not a power cut (ports/esp32/machine_rtc.c: RTC.memory(),
    # up to MICROPY_HW_RTC_USER_MEM_MAX = 2048 bytes)
    def rtc_memory(self, data=None):
        if data is None:
            return machine.RTC().memory()
        machine.RTC().memory(data)
