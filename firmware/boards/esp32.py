# ESP32 (MicroPython): pins, buses, sleep, watchdog, reset cause and flash for the node.
# Pin numbers suit a DevKitC; a config "pins" map overrides any of them.
import time

import machine

from firmware.boards.wifi import wifi_connect
from firmware.clock import Clock

PINS = {
    "i2c_scl": 22, "i2c_sda": 21,  # BME280
    "sensor_tx": 17, "sensor_rx": 16,  # A02YYUW / JSN-SR04T mode 2 on UART2
    "trigger": 5, "echo": 18,  # HC-SR04 / JSN-SR04T mode 0
    "loop_adc": 34,  # 4-20 mA shunt voltage (input-only pin, ADC1)
    "battery_adc": 35,  # battery through a 1:2 divider
}
_CAUSES = {
    machine.PWRON_RESET: "power_on", machine.HARD_RESET: "hard", machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep", machine.SOFT_RESET: "soft",
}


class Board:
    name = "esp32"
    supports_deepsleep = True

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
        return machine.UART(2, baudrate=9600, tx=p["sensor_tx"], rx=p["sensor_rx"], rxbuf=256)

    def echo_pins(self, settings=None):
        p = self.pins
        trigger = machine.Pin(p["trigger"], machine.Pin.OUT)
        echo = machine.Pin(p["echo"], machine.Pin.IN)
        return trigger, echo, machine.time_pulse_us, time.sleep_us

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

    def reset(self):
        machine.reset()

    def deepsleep(self, ms):
        machine.deepsleep(ms)

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
