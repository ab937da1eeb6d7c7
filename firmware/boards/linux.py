# Raspberry Pi and other Linux boards (CPython): I2C through smbus2, serial through
# pyserial, the BME280 through our driver or adafruit-circuitpython-bme280 (Blinka),
# flash = a data folder, the watchdog = /dev/watchdog when the node may use it, a reset
# = exit and let systemd (Restart=always) start the node again.
import sys
import time

from firmware.clock import Clock


class SMBusI2C:
    # the machine.I2C methods the drivers use, on /dev/i2c-N through smbus2
    def __init__(self, bus=1):
        from smbus2 import SMBus

        self.bus = SMBus(bus)

    def readfrom_mem_into(self, addr, reg, buf):
        data = self.bus.read_i2c_block_data(addr, reg, len(buf))  # up to 32 bytes: enough for the BME280
        buf[: len(data)] = bytes(data)

    def writeto_mem(self, addr, reg, buf):
        self.bus.write_i2c_block_data(addr, reg, list(buf))

    def scan(self):
        found = []
        for addr in range(0x08, 0x78):
            try:
                self.bus.read_byte(addr)
                found.append(addr)
            except OSError:
                pass
        return found


class SerialUart:
    # the machine.UART methods the drivers and UartLink use, on a pyserial port
    def __init__(self, port, baudrate=9600):
        import serial

        self.port = serial.Serial(port, baudrate, timeout=0)

    def any(self):
        try:
            return self.port.in_waiting
        except OSError:  # a USB adapter that vanished: the link layer counts it
            return 0

    def readinto(self, buf):
        data = self.port.read(len(buf))
        if not data:
            return None
        buf[: len(data)] = data
        return len(data)

    def write(self, data):
        return self.port.write(data)


class AdafruitBME280:
    # adafruit-circuitpython-bme280 (Blinka) behind our driver's read() interface
    def __init__(self, address=0x76):
        import adafruit_bme280.basic as ada
        import board as blinka_board

        self._dev = ada.Adafruit_BME280_I2C(blinka_board.I2C(), address=address)
        self.errors = {"bus": 0}

    def read(self):
        try:
            return self._dev.temperature, self._dev.pressure * 100, self._dev.humidity
        except OSError:
            self.errors["bus"] += 1
            return None, None, None


class DevWatchdog:
    # /dev/watchdog: any write feeds it; the kernel resets the Pi when writes stop
    def __init__(self, timeout_ms, path="/dev/watchdog"):
        self.timeout_ms = timeout_ms
        self._f = open(path, "wb", buffering=0)

    def feed(self):
        self._f.write(b"\0")


class NoWatchdog:
    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms

    def feed(self):
        pass


class Board:
    name = "linux"

    def __init__(self, root=".", i2c_bus=1, sensor_port="/dev/serial0", hardware_watchdog=False, log=None):
        self.clock = Clock()
        self.root = root
        self.i2c_bus = i2c_bus
        self.sensor_port = sensor_port
        self.hardware_watchdog = hardware_watchdog
        self._i2c = None
        self._log = log

    def path(self, name):
        # no os.path: the MicroPython unix port (board linux) has none
        return self.root.rstrip("/") + "/" + name if self.root else name

    def open(self, path, mode="r"):
        return open(path, mode)

    def i2c(self, settings=None):
        if self._i2c is None:
            self._i2c = SMBusI2C(self.i2c_bus)
        return self._i2c

    def bme280_adafruit(self, settings=None):
        return AdafruitBME280(settings["address"])  # a checked entry (firmware/drivers/bme280_adafruit.py)

    def sensor_uart(self, settings=None):
        return SerialUart((settings or {}).get("port", self.sensor_port), 9600)

    def echo_pins(self, settings=None):
        raise ValueError("trigger/echo sensors need a microcontroller's time_pulse_us; use a UART sensor on Linux")

    def gpio(self, settings):
        raise ValueError("counting pulses needs a microcontroller's pin interrupts; use an ESP32 or Pico node")

    def adc(self, settings=None):
        raise ValueError("a Raspberry Pi has no ADC; read the 4-20 mA loop with an ESP32 or Pico node")

    def battery_mv(self):
        return None

    def watchdog(self, timeout_ms):
        if self.hardware_watchdog:
            return DevWatchdog(timeout_ms)
        return NoWatchdog(timeout_ms)

    def reset_cause(self):
        return "power_on"

    def reset(self):
        sys.exit(3)  # systemd restarts the unit; the boot counter on disk says it is a new boot

    def sleep_ms(self, ms, light=True):
        time.sleep(ms / 1000)

    def uplink(self, cfg):
        from firmware import links

        link = cfg["link"]
        if link["kind"] == "udp":
            return links.udp_link(link)
        return links.UartLink(SerialUart(link.get("port", "/dev/ttyUSB0"), link.get("baudrate", 115200)))

    def log(self, text):
        if self._log is not None:
            self._log(text)
        else:
            print(text)  # no flush= on the MicroPython unix port (board linux)
            sys.stdout.flush()  # under systemd stdout is a pipe: one line as it happens
