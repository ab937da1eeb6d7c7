# A BME280 on a Linux board (Raspberry Pi) through Adafruit's CircuitPython driver and Blinka
# (firmware/boards/linux.py bme280_adafruit): the same climate sensor as the BME280's own
# driver (firmware/drivers/bme280.py), on another part.
from firmware.drivers.bme280 import Sensor as Climate
from firmware.sensors import AIR

SETTINGS = {"address": ("i", 0x76, 0, 127)}
CAPS = AIR


class Sensor(Climate):
    def open(self):
        self.part = self.board.bme280_adafruit(self.s)
