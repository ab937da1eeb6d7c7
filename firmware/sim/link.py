# The sim board's uplink, for simulations and tests (not part of any device firmware).

class SimLink:
    # The sim board's uplink: hands each message to `peer` (a callable: message -> list of
    # replies, e.g. a gateway in the same process) unless the world says the link is down.
    def __init__(self, world, clock, peer):
        self.world = world
        self.clock = clock
        self.peer = peer
        self._inbox = []
        self.counts = {"sent": 0, "received": 0, "lost": 0}
        self.name = "sim"
        self.pace = None  # a test may pace it (firmware/uplink.py Pace)

    def send(self, message):
        if not self.world.link_up():
            self.counts["lost"] += 1
            return True  # a radio cannot tell: the datagram just goes nowhere
        self.counts["sent"] += 1
        for r in self.peer(message):
            self._inbox.append(r)
        return True

    def poll(self, timeout_ms):
        if not self._inbox:
            self.clock.sleep_ms(timeout_ms)
            return []
        out = self._inbox
        self._inbox = []
        if not self.world.link_up():
            self.counts["lost"] += len(out)
            return []
        self.counts["received"] += len(out)
        return out
