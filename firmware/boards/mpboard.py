# What ESP32 and Pico W boards share on MicroPython: flash paths, the I2C bus, trigger/echo
# pins, reset, sleep, the uplink (Wi-Fi UDP or the USB console) and the console log.
# Each board module subclasses it with its pins, UART, ADC, watchdog and reset causes.
import time

import machine

from firmware.boards.wifi import wifi_connect
from firmware.clock import Clock


class MicroPythonBoard:
    name = "micropython"
    PINS = {}

    def __init__(self, root="", pins=None):
        self.clock = Clock()
        self.root = root
        self.pins = dict(self.PINS)
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

    def echo_pins(self, settings=None):
        p = self.pins
        trigger = machine.Pin(p["trigger"], machine.Pin.OUT)
        echo = machine.Pin(p["echo"], machine.Pin.IN)
        return trigger, echo, machine.time_pulse_us, time.sleep_us

    def reset(self):
        machine.reset()

    def sleep_ms(self, ms, light=True):
        # light sleep stops the USB console: a node whose link is that console only waits
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
        return links.UartLink(links.StdioUart(), self.clock)  # the USB serial console

    def log(self, text):
        print(text)
