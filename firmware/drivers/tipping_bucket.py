# Tipping-bucket rain gauge: a magnet on the bucket closes a reed switch for a moment each
# time the bucket tips, i.e. each time it has caught mm_per_tip of rain. Davis Rain
# Collector II / AeroCone: 0.2 mm per tip with its metric adapter (0.01 in without); Texas
# Electronics TE525MM: 0.1 mm. The TE525 data sheet gives the switch: closed 135 ms on
# average per tip, its bounce settled within 0.75 ms (single bounces of up to 0.25 ms), at
# the closing and again at the opening.
#
# Wiring: the switch between the GPIO and GND, the pin's pull-up on (an external 10 kohm to
# 3.3 V for a long cable). The count runs in a hard IRQ on the falling edge (the switch
# closing), so it holds between readings whatever the node does: an edge less than
# debounce_ms after the last counted one is bounce, of that closing or of the opening that
# follows it ~135 ms later, and is not counted. So debounce_ms must exceed the closure and
# its bounce (135 + 0.75 ms) and stay below the shortest time between two tips: 0.2 mm at
# 500 mm/h, far above a record minute's intensity, tips every 1.44 s. Default 300 ms.
#
# The record: "rain", the rain counted since the node started, in m (SPEC.md section 5): the
# gateway's forecast takes the difference to the previous report as new rain, so a lost
# frame loses no rain, and a smaller count says the node started again. A switch held closed
# through two readings in a row with no tip between them (a short, a bucket stuck at the
# magnet) counts nothing: quality fault. Light and deep sleep stop the count, so a node with
# a gauge does not sleep (CAPS AWAKE: config "sleep": "none").
from firmware.clock import ticks_diff
from firmware.sensors import AWAKE, Base, f32
from protocol.message import Q_FAULT as FAULT
from protocol.senml import record


class TippingBucket:
    # the pulse counter on a machine.Pin-like input (irq(), value()); ticks_ms: a clock an
    # interrupt handler may read (firmware/clock.py Clock.irq_ms)
    def __init__(self, pin, ticks_ms, debounce_ms=300):
        self.pin = pin
        self.debounce_ms = debounce_ms
        self._ms = ticks_ms
        self.tips = 0
        self.bounces = 0  # edges taken for bounce
        self.last = None  # ticks of the last counted tip
        pin.irq(trigger=pin.IRQ_FALLING, handler=self._edge, hard=True)

    def _edge(self, pin):
        # hard IRQ: allocates nothing (small ints, attribute stores)
        t = self._ms()
        if self.last is not None and ticks_diff(t, self.last) < self.debounce_ms:
            self.bounces += 1
            return
        self.last = t
        self.tips += 1

    def closed(self):
        return self.pin.value() == 0


# ---------------------------------------------------------------- the sensor (firmware/sensors.py)

# pin: the GPIO number (required); mm_per_tip: the gauge's calibration (Davis metric 0.2)
SETTINGS = {"pin": ("I", None, 0, 47), "mm_per_tip": ("f", 0.2, 0, 10), "debounce_ms": ("i", 300, 1, 1000)}
CAPS = AWAKE


class Sensor(Base):
    def __init__(self, board, s):
        super().__init__(board, s)
        self.seen = -1  # tips at the last reading that found the switch closed

    def open(self):
        s = self.s
        self.part = TippingBucket(self.board.gpio(s), self.board.clock.irq_ms, s["debounce_ms"])

    def read(self, ctx, out):
        g = self.part
        if g is None:
            return [0, 0, FAULT]
        closed = g.closed()
        n = g.tips
        out.append(record("rain", f32(n * self.s["mm_per_tip"] / 1000)))
        if not closed:
            self.seen = -1
            return None
        stuck = self.seen == n
        self.seen = n
        return [n, 0, FAULT] if stuck else None
