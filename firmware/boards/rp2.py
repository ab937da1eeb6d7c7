# Raspberry Pi Pico W (MicroPython rp2): pins, buses, sleep, watchdog, reset cause, flash.
# The RP2040 watchdog tops out at 8.388 s, so the node feeds it in slices that short.
import time

import machine

from firmware.boards.wifi import wifi_connect
from firmware.clock import Clock

PINS = {
    "i2c_scl": 5, "i2c_sda": 4,  # I2C0
    "sensor_tx": 8, "sensor_rx": 9,  # UART1
    "trigger": 14, "echo": 15,
    "loop_adc": 26,  # ADC0
}
WDT_MAX_MS = 8388


class Watchdog:
    def __init__(self, timeout_ms):
        self.timeout_ms = min(timeout_ms, WDT_MAX_MS)
        self._wdt = machine.WDT(timeout=self.timeout_ms)

    def feed(self):
        self._wdt.feed()


class Board:
    name = "rp2"

    def __init__(self, root="", pins=None):
        self.clock = Clock()
        self.root = root
        self.pins = dict(PINS)
        if pins:
            self.pins.update(pins)
        self._i2c = None
        self._uplink_uart = False

    def path(self, name):
        return self.root + "/" + name if self.root else name

    def open(self, path, mode="r"):
        return open(path, mode)

    def i2c(self, settings=None):
        if self._i2c is None:
            p = self.pins
            self._i2c = machine.I2C(0, scl=machine.Pin(p["i2c_scl"]), sda=machine.Pin(p["i2c_sda"]), freq=100000)
        return self._i2c

    def sensor_uart(self, settings=None):
        p = self.pins
        return machine.UART(1, baudrate=9600, tx=machine.Pin(p["sensor_tx"]), rx=machine.Pin(p["sensor_rx"]))

    def echo_pins(self, settings=None):
        p = self.pins
        trigger = machine.Pin(p["trigger"], machine.Pin.OUT)
        echo = machine.Pin(p["echo"], machine.Pin.IN)
        return trigger, echo, machine.time_pulse_us, time.sleep_us

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

    def reset(self):
        machine.reset()

    def sleep_ms(self, ms, light=True):
        if light and not self._uplink_uart:
            machine.lightsleep(ms)
        else:
            time.sleep_ms(ms)

    def uplink(self, cfg):
        from firmware import links

        link = cfg["link"]
        if link["kind"] == "udp":
            wifi_connect(link.get("wifi_ssid"), link.get("wifi_password", ""), self.log)
            return links.UdpLink(link["host"], link["port"])
        self._uplink_uart = True
        return links.UartLink(links.StdioUart(), self.clock)

    def log(self, text):
        print(text)
