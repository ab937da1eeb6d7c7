# Raspberry Pi Pico W (MicroPython rp2): pins, buses, sleep, watchdog, reset cause, flash.
# The RP2040 watchdog tops out at 8.388 s, so the node feeds it in slices that short.
import machine
from micropython import const

from firmware.boards.mpboard import MicroPythonBoard

WDT_MAX_MS = 8388
_WATCHDOG_SCRATCH4 = const(0x4005801C)  # WATCHDOG_BASE 0x40058000 + SCRATCH4 (RP2040 datasheet 4.7.6)
_WATCHDOG_ARMED_MAGIC = const(0x6AB73121)  # pico-sdk WATCHDOG_NON_REBOOT_MAGIC


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
        # LoRa: Waveshare's Pico-LoRa-SX1262 HAT, firmware/lora_radios.py
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
        # machine.reset() is a watchdog reboot too (ports/rp2/modmachine.c: watchdog_reboot(0,
        # SRAM_END, 0)), so the port says WDT_RESET for both. pico-sdk tells them apart in
        # SCRATCH4, which a watchdog reset keeps: machine.WDT (watchdog_enable) writes
        # 0x6ab73121 there, watchdog_reboot(0, ...) writes 0 (hardware/watchdog.c).
        c = machine.reset_cause()
        if c == machine.WDT_RESET:
            if machine.mem32[_WATCHDOG_SCRATCH4] != _WATCHDOG_ARMED_MAGIC:
                return "reset"
            return "watchdog"
        if c == machine.PWRON_RESET:
            return "power_on"
        return "unknown"
