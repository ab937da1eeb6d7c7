# Trigger/echo ultrasonic sensors (HC-SR04, JSN-SR04T in mode 0): a 10 us pulse on the
# trigger pin, then the echo pin stays high for the round-trip time of the sound.
# Uses machine.time_pulse_us with a timeout so a missing echo never blocks the loop.
class HCSR04:
    def __init__(self, trigger, echo, min_mm=20, max_mm=4000, timeout_us=30000, time_pulse_us=None,
                 sleep_us=None):
        # trigger/echo: machine.Pin-like objects (value()); min_mm: blind zone
        if time_pulse_us is None or sleep_us is None:
            import time

            import machine

            time_pulse_us = time_pulse_us or machine.time_pulse_us
            sleep_us = sleep_us or time.sleep_us  # type: ignore[attr-defined]
        self.trigger = trigger
        self.echo = echo
        self.min_mm = min_mm
        self.max_mm = max_mm
        self.timeout_us = timeout_us
        self._pulse = time_pulse_us
        self._sleep_us = sleep_us
        self.reason = None
        self.errors = {"timeout": 0, "blind": 0, "range": 0}
        trigger.value(0)

    def read_echo_us(self):
        # Round-trip time in us, or None when no echo came back in time
        self.trigger.value(0)
        self._sleep_us(2)
        self.trigger.value(1)
        self._sleep_us(10)
        self.trigger.value(0)
        t = self._pulse(self.echo, 1, self.timeout_us)
        if t < 0:  # -1: echo never started, -2: echo longer than the timeout
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
        if mm < self.min_mm:
            self.errors["blind"] += 1
            self.reason = "blind"
            return None
        if mm > self.max_mm:
            self.errors["range"] += 1
            self.reason = "range"
            return None
        return mm
