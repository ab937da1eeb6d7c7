# Raspberry Pi Pico W (MicroPython rp2): pins, buses, sleep, watchdog, reset cause, flash.
# The RP2040 watchdog tops out at 8.388 s, so the node feeds it in slices that short.
import machine

from firmware.boards.mpboard import MicroPythonBoard

WDT_MAX_MS = 8388


class Watchdog:
    def __init__(self, timeout_ms):
        self.timeout_ms = min(timeout_ms, WDT_MAX_MS)
        self._wdt = machine.WDT(timeout=self.timeout_ms)

    def feed(self):
        self._wdt.feed()


class Board(MicroPythonBoard):
    name = "rp2"
    PINS = {
        "i2c_scl": 5, "i2c_sda": 4,  # I2C0
        "sensor_tx": 8, "sensor_rx": 9,  # UART1
        "trigger": 14, "echo": 15,
        "loop_adc": 26,  # ADC0
    }

    def sensor_uart(self, settings=None):
        p = self.pins
        return machine.UART(1, baudrate=9600, tx=machine.Pin(p["sensor_tx"]), rx=machine.Pin(p["sensor_rx"]))

    def adc(self, settings=None):
        return machine.ADC(machine.Pin(self.pins["loop_adc"]))

    def battery_mv(self):
        return None  # VSYS/3 on GPIO29 is shared with the Pico W radio: not read here

    def watchdog(self, timeout_ms):
        return Watchdog(timeout_ms)

    def reset_cause(self):
        c = machine.reset_cause()
        if c == machine.WDT_RESET:
            return "watchdog"
        if c == machine.PWRON_RESET:
            return "power_on"
        return "unknown"
