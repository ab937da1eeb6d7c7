# Trigger/echo ultrasonic sensors (HC-SR04, JSN-SR04T in mode 0): a pulse on the trigger
# pin, then the echo pin stays high for the round-trip time of the sound.
# - Trigger 20 us: the HC-SR04 needs 10 us, the JSN-SR04T (v2/v3) misses shorter pulses.
# - At least 60 ms from one ping to the next (HC-SR04 datasheet: "over 60ms measurement
#   cycle"): a ping sent sooner can hear the last one's echo.
# - Echo low before timing: after a missed echo the module holds echo high for its own
#   timeout (38 ms on the HC-SR04, up to ~60 ms on the JSN-SR04T). machine.time_pulse_us
#   (extmod/machine_pulse.c) takes an already-high pin as the start of the pulse and times
#   only its tail: a short distance, i.e. a false HIGH level. So the driver waits for echo
#   low (bounded) and gives up rather than time a stale pulse.
# - Wiring: both modules drive echo at 5 V; an ESP32 or RP2040 pin takes 3.3 V at most,
#   so echo goes through a divider (1 kohm from echo to the pin, 2 kohm from the pin to GND).
# time_pulse_us with a timeout, so a missing echo never blocks the loop.
from firmware import level
from firmware.clock import clock_or_new, ticks_diff
from firmware.sensors import LEVEL


class HCSR04:
    def __init__(self, trigger, echo, min_mm=20, max_mm=4000, timeout_us=30000, time_pulse_us=None,
                 sleep_us=None, clock=None, trigger_us=20, gap_ms=60, settle_ms=100):
        # trigger/echo: machine.Pin-like objects (value()); min_mm: blind zone
        if time_pulse_us is None or sleep_us is None:
            import time

            import machine

            time_pulse_us = time_pulse_us or machine.time_pulse_us
            sleep_us = sleep_us or time.sleep_us  # type: ignore[attr-defined]
        clock = clock_or_new(clock)
        self.trigger = trigger
        self.echo = echo
        self.min_mm = min_mm
        self.max_mm = max_mm
        self.timeout_us = timeout_us
        self.trigger_us = trigger_us
        self.gap_ms = gap_ms
        self.settle_ms = settle_ms
        self.clock = clock
        # ticks(): ms modulo 2**30, a small int however long the node is up (a plain ms of a
        # simulated clock does too): the ping allocates nothing, no GC pause can fall between
        # the trigger and time_pulse_us and miss the echo
        self._ticks = getattr(clock, "ticks", clock.ms)
        self._pulse = time_pulse_us
        self._sleep_us = sleep_us
        self._last_ping = None
        self.reason = None
        self.errors = {"timeout": 0, "blind": 0, "range": 0, "busy": 0}
        trigger.value(0)

    def _ready(self):
        # wait out the gap since the last ping, then for echo low (at most settle_ms)
        clock = self.clock
        if self._last_ping is not None:
            wait = self.gap_ms + 1 - ticks_diff(self._ticks(), self._last_ping)  # +1: whole ms ticks
            if wait > 0:
                clock.sleep_ms(wait)
        waited = 0
        while self.echo.value():
            if waited >= self.settle_ms:
                return False
            clock.sleep_ms(2)
            waited += 2
        return True

    def read_echo_us(self):
        # Round-trip time in us, or None when no clean echo came back in time
        if not self._ready():
            self.errors["busy"] += 1  # echo stuck high: a stale pulse is no distance
            self.reason = "timeout"
            return None
        self.trigger.value(0)
        self._sleep_us(2)
        self.trigger.value(1)
        self._sleep_us(self.trigger_us)
        self.trigger.value(0)
        self._last_ping = self._ticks()
        t = self._pulse(self.echo, 1, self.timeout_us)
        if t < 0:  # -2: echo never started, -1: echo longer than the timeout
            self.errors["timeout"] += 1
            self.reason = "timeout"
            return None
        return t

    def read_mm(self, speed_mm_s=343000):
        self.reason = None
        t = self.read_echo_us()
        if t is None:
            return None
        mm = t * speed_mm_s // 2000000
        return level.bounded(self, mm)


# ---------------------------------------------------------------- the sensor (firmware/sensors.py)

SETTINGS = level.settings(level.FILTER, level.DISTANCE, {"timeout_us": ("i", 30000, 1000, 100000)})
CAPS = LEVEL
DEPTH = "mount_mm"


class Sensor(level.Level):
    def open(self):
        s = self.s
        trigger, echo, pulse, sleep_us = self.board.echo_pins(s)
        self.part = HCSR04(trigger, echo, min_mm=s["min_mm"], max_mm=s["max_mm"], timeout_us=s["timeout_us"],
                           time_pulse_us=pulse, sleep_us=sleep_us, clock=self.board.clock)
