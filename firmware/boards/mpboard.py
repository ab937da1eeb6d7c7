# What ESP32 and Pico W boards share on MicroPython: flash paths, the I2C bus, trigger/echo
# pins, reset, sleep, the uplink (Wi-Fi UDP or the USB console) and the console log.
# Each board module subclasses it with its pins, UART, ADC, watchdog and reset causes.
import time

import machine

from firmware.clock import Clock


class MicroPythonBoard:
    name = "micropython"
    PINS = {}
    LIGHTSLEEP_KEEPS_WIFI = True  # the Pico W's cyw43 stays joined; an ESP32 does not

    def __init__(self, root="", pins=None):
        self.clock = Clock()
        self.root = root
        self.pins = dict(self.PINS)
        if pins:
            self.pins.update(pins)
        self._i2c = None
        self._uplink_uart = False
        self._light_ok = True
        self.wifi = None
        self.early_wakes = 0  # lightsleep calls that returned before their time

    def path(self, name):
        return self.root + "/" + name if self.root else name

    def open(self, path, mode="r"):
        return open(path, mode)

    def i2c(self, settings=None):
        if self._i2c is None:
            p = self.pins
            self._i2c = machine.I2C(0, scl=machine.Pin(p["i2c_scl"]), sda=machine.Pin(p["i2c_sda"]), freq=100000)
        return self._i2c

    def gpio(self, settings):
        # a GPIO input with the pad's pull-up, for a switch to GND (a rain gauge's reed
        # contact); the sensor sets its interrupt
        return machine.Pin(settings["pin"], machine.Pin.IN, machine.Pin.PULL_UP)

    def echo_pins(self, settings=None):
        p = self.pins
        trigger = machine.Pin(p["trigger"], machine.Pin.OUT)
        echo = machine.Pin(p["echo"], machine.Pin.IN)
        return trigger, echo, machine.time_pulse_us, time.sleep_us

    def reset(self):
        machine.reset()

    def sleep_ms(self, ms, light=True):
        # Light sleep stops the USB console, so a node on that console only waits; an ESP32
        # on Wi-Fi must not light-sleep either (it drops the association: LIGHTSLEEP_KEEPS_WIFI).
        # The Pico W's lightsleep returns at once while cyw43 has work pending
        # (ports/rp2/modmachine.c mp_machine_lightsleep): sleep until the time has really
        # passed, giving cyw43 a plain 20 ms sleep to catch up after each early return.
        if not light or self._uplink_uart or not self._light_ok:
            time.sleep_ms(ms)
            return
        t0 = time.ticks_ms()
        left = ms
        while left > 0:
            machine.lightsleep(left)
            left = ms - time.ticks_diff(time.ticks_ms(), t0)
            if left > 0:
                self.early_wakes += 1
                time.sleep_ms(min(left, 20))
                left = ms - time.ticks_diff(time.ticks_ms(), t0)

    def uplink(self, cfg):
        from firmware import links

        link = cfg["link"]
        if link["kind"] == "udp":
            from firmware.boards.wifi import Wifi  # a node on the USB console or LoRa does without it

            wifi = self.wifi = Wifi(link.get("wifi_ssid"), link.get("wifi_password", ""), self.log, self.clock)
            if not self.LIGHTSLEEP_KEEPS_WIFI:
                self._light_ok = False
                wifi.power_save()
            wifi.start()
            # wifi.ensure is asked before each send: a lost link is rejoined with backoff; a
            # gateway's name is asked of the DNS server DHCP gave, within a bound
            return links.udp_link(link, ready=wifi.ensure, dns=wifi.dns_server, clock=self.clock)
        if link["kind"] == "lora":
            return self.lora(cfg)
        self._uplink_uart = True
        return links.UartLink(links.StdioUart(), self.clock)  # the USB serial console

    def lora(self, cfg):
        from firmware.lora_link import LoraLink

        link = cfg["link"]
        return LoraLink(self.lora_modem(link), cfg["node"], self.clock, link["duty_permille"], self.log)

    def lora_modem(self, link):
        # The LoRa module the checked config names (link "radio", firmware/config.py) through
        # micropython-lib's driver for its chip, which `citynode flash` installs under /lib/lora
        from firmware import lora_radios as radios

        return radios.open_modem(link["radio"], link)

    def log(self, text):
        print(text)
