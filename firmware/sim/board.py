# The sim board: the simulated world's sensors on fake buses, a virtual clock, a watchdog
# that bites in virtual time, flash as a host folder whose writes a test can cut off
# mid-way (power loss), resets that survive as a reset cause, and an uplink chosen by the
# caller (an in-process gateway, UDP, or this process's stdin/stdout as a serial line).
import os

from firmware.links import StdioUart  # noqa: F401 - the virtual rig imports it from here
from firmware.node import Reset
from firmware.sim import BOARD
from firmware.sim.devices import BME280Sim, EchoSensor, I2CBus, LoopAdc, UltrasonicUart
from firmware.sim.world import VirtualClock, World


class PowerCut(BaseException):
    # the supply died: nothing after this point happened
    pass


class _CutFile:
    # a flash file whose writes stop after the board's byte budget runs out
    def __init__(self, board, f):
        self._b = board
        self._f = f

    def write(self, data):
        budget = self._b.cut_after
        if budget is not None:
            if len(data) >= budget:
                self._f.write(data[:budget] if isinstance(data, str) else bytes(data[:budget]))
                self._f.flush()
                self._b.cut_after = None
                raise PowerCut()
            self._b.cut_after = budget - len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self._f.close()


class SimWatchdog:
    def __init__(self, clock, timeout_ms):
        self.clock = clock
        self.timeout_ms = timeout_ms
        self.last = clock.ms()

    def feed(self):
        now = self.clock.ms()
        if now - self.last > self.timeout_ms:
            raise Reset("watchdog")  # the hardware would have reset the chip by now
        self.last = now


class SimBoard:
    name = BOARD

    def __init__(self, flash_dir, world=None, clock=None, uplink=None, log=None, bme280=True, **world_params):
        self.clock = clock or (world.clock if world else VirtualClock())
        self.world = world or World(self.clock, **world_params)
        self.flash_dir = flash_dir
        try:
            os.mkdir(flash_dir)
        except OSError:
            pass
        self.bme280 = BME280Sim(self.world, clock=self.clock)
        self.bme280.present = bme280
        self.i2c_bus = I2CBus({0x76: self.bme280})
        self.ultrasonic = UltrasonicUart(self.world, self.clock)
        self.echo = EchoSensor(self.world, self.clock)
        self.loop = LoopAdc(self.world)
        self.on_pins = {}  # GPIO -> the simulated part on it (gpio())
        self.uplink_link = uplink
        self._log = log
        self.logs = []
        self.cut_after = None  # bytes of flash writes left before a power cut (None: no cut)
        self.resets = []

    # ---- storage
    def path(self, name):
        return self.flash_dir + "/" + name

    def open(self, path, mode="r"):
        return _CutFile(self, open(path, mode))

    # ---- buses and sensors
    def i2c(self, settings=None):
        return self.i2c_bus

    def sensor_uart(self, settings=None):
        self.ultrasonic.as_kind((settings or {}).get("kind", "a02yyuw"))
        return self.ultrasonic

    def echo_pins(self, settings=None):
        e = self.echo
        return e.trigger, e.echo, e.time_pulse_us, e.sleep_us

    def gpio(self, settings):
        # the simulated part a config wires to a GPIO (firmware/sim/devices.py PIN_PARTS, by
        # its kind), made once per pin
        from firmware.sim.devices import pin_part

        pin = settings["pin"]
        part = self.on_pins.get(pin)
        if part is None:
            part = self.on_pins[pin] = pin_part(self.world, self.clock, settings)
        return part

    def adc(self, settings):
        # the probe wired as its checked config entry says (firmware/drivers/hydrostatic.py)
        from firmware.drivers.hydrostatic import SHUNT_OHM

        lp = self.loop
        lp.shunt_ohm = settings["shunt_ohm"] or SHUNT_OHM
        lp.span_mm = settings["span_mm"]
        lp.offset_mm = settings["offset_mm"]
        return lp

    def battery_mv(self):
        return self.world.battery_mv()

    # ---- power, watchdog, resets
    def watchdog(self, timeout_ms):
        return SimWatchdog(self.clock, timeout_ms)

    def _mark(self, cause):
        with open(self.path("_reset_cause"), "w") as f:
            f.write(cause)
        self.resets.append(cause)

    def reset_cause(self):
        try:
            with open(self.path("_reset_cause")) as f:
                cause = f.read()
            os.remove(self.path("_reset_cause"))
            return cause
        except OSError:
            return "power_on"

    def reset(self):
        self._mark("soft")
        raise Reset("soft")

    def deepsleep(self, ms):
        self.clock.sleep_ms(ms)
        self._mark("deepsleep")
        raise Reset("deepsleep")

    def sleep_ms(self, ms, light=True):
        self.clock.sleep_ms(ms)

    def watchdog_bite(self):
        self._mark("watchdog")

    # ---- uplink and console
    def uplink(self, cfg):
        return self.uplink_link

    def log(self, text):
        self.logs.append(text)
        if len(self.logs) > 200:
            self.logs = self.logs[-100:]
        if self._log is not None:
            self._log(text)


class Runner:
    # Runs a node on a sim board until a virtual time (or until stop() is true), and on from
    # there in later calls; reboots it like hardware would after a reset, a watchdog bite, a
    # deep sleep or a power cut (a new Node object: RAM is gone, flash stays).
    def __init__(self, board, cfg, link=None):
        self.board = board
        self.cfg = cfg
        self.link = link
        self.node = None
        self.boots = 0

    def run(self, until_ms=None, max_boots=None, stop=None):
        # max_boots: give up after that many boots in this call (None: never, like hardware)
        from firmware.node import Node

        board = self.board
        boots = 0
        while max_boots is None or boots < max_boots:
            boots += 1
            if self.node is None:
                if until_ms is not None and board.clock.ms() >= until_ms:
                    break
                self.node = Node(board, self.cfg, self.link)
            node = self.node
            try:
                if node.health.wdt is None:
                    self.boots += 1
                    node.start()
                node.run(until_ms=until_ms, stop=stop)
                return node
            except Reset as r:
                if r.cause == "watchdog":
                    board.watchdog_bite()
                board.clock.sleep_ms(200)  # boot time
            except PowerCut:
                board.clock.sleep_ms(1000)
            node.uplink.buffer.close()
            self.node = None
        return self.node


def run(board, cfg, until_ms, link=None):
    return Runner(board, cfg, link).run(until_ms)
