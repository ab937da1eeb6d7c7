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
        adc.atten(machine.ADC.ATTN_11DB)  # full 0..3.3 V range for the shunt voltage
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
