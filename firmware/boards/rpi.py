# The Raspberry Pi node (board "rpi"): the Linux board on CPython, installed from the citynode
# package and run by `citynode node` under systemd (deploy/citynode-node.service), never
# flashed. The BME280 through adafruit-circuitpython-bme280 (Blinka) or our driver over
# smbus2, sensors and a serial uplink through pyserial, flash = the node's folder
# (/var/lib/citynode-node), a reset = exit 3 and systemd starts the node again (Restart=always),
# the watchdog = systemd's (WatchdogSec): fed with WATCHDOG=1 while the node's loop turns.
# The MicroPython unix port keeps board "linux" (firmware/boards/linux.py).
from firmware.boards import linux


class SystemdWatchdog:
    # systemd's service watchdog: WATCHDOG=1 over sd_notify, at least twice per WatchdogSec
    # (period_ms is half of it; the node feeds at least every timeout_ms / 2, and often more:
    # a datagram goes out once per timeout_ms / 4 at most); systemd restarts a node that stops
    def __init__(self, timeout_ms, notify, period_ms, clock):
        self.timeout_ms = min(timeout_ms, period_ms)
        self._notify = notify
        self._clock = clock
        self._sent = None

    def feed(self):
        now = self._clock.ms()
        if self._sent is None or now - self._sent >= self.timeout_ms // 4:
            self._sent = now
            self._notify("WATCHDOG=1")


class Board(linux.Board):
    name = "rpi"

    def __init__(self, root=".", notify=None, watchdog_ms=None, **kw):
        # notify: sd_notify(state) (gateway/notify.py), watchdog_ms: systemd's WatchdogSec
        # (None: no service watchdog); the rest as linux.Board
        linux.Board.__init__(self, root, **kw)
        self._notify = notify
        self._watchdog_ms = watchdog_ms

    def watchdog(self, timeout_ms):
        if self._notify is not None and self._watchdog_ms:
            return SystemdWatchdog(timeout_ms, self._notify, self._watchdog_ms, self.clock)
        return linux.Board.watchdog(self, timeout_ms)  # /dev/watchdog when hardware_watchdog, else none
