# Wi-Fi for the UDP link on ESP32 and Pico W: join at start, then keep joined. The Pico W's
# cyw43 driver never rejoins by itself after the access point went away (extmod/network_cyw43.c:
# connect() starts one background join, status() then reports the link: 0 down, 1 joining,
# 2 no IP yet, 3 up, < 0 failed); ESP32 retries forever on its own (ports/esp32/network_wlan.c,
# reconnects -1 by default) while status() is STAT_CONNECTING. So the link asks ensure() before
# each send: up -> True; down -> a new join when the backoff allows (5 s, doubling to 5 min),
# never while one is under way, never blocking.

BACKOFF_MS = 5000
BACKOFF_MAX_MS = 300000
JOIN_STALE_MS = 30000  # a join still "joining" after this long is started again


class Wifi:
    def __init__(self, ssid, password, log, clock, network=None):
        if network is None:
            import network
        self.network = network
        self.ssid = ssid
        self.password = password
        self.log = log
        self.clock = clock
        self.wlan = network.WLAN(network.STA_IF)
        self.wlan.active(True)
        self.up = False
        self.backoff_ms = BACKOFF_MS
        self.next_ms = 0
        self.join_ms = None
        self.counts = {"joins": 0, "lost": 0, "errors": 0}

    def power_save(self):
        # ESP32: modem sleep between DTIM beacons instead of light sleep (which drops the
        # association); the frames' ACKs still arrive within the node's listen window
        pm = getattr(self.wlan, "PM_PERFORMANCE", None)
        if pm is not None:
            try:
                self.wlan.config(pm=pm)
            except (OSError, ValueError):
                self.counts["errors"] += 1

    def _join(self, now):
        try:
            self.wlan.connect(self.ssid, self.password)
            self.counts["joins"] += 1
        except OSError as e:  # the driver refused (e.g. busy): counted, retried after the backoff
            self.counts["errors"] += 1
            self.log("wifi %s: join failed: %r" % (self.ssid, e))
        self.join_ms = now
        self.next_ms = now + self.backoff_ms
        self.backoff_ms = min(self.backoff_ms * 2, BACKOFF_MAX_MS)

    def ensure(self):
        # -> True when the station has its link; else starts a rejoin when due, and False
        w = self.wlan
        if w.isconnected():
            if not self.up:
                self.up = True
                self.backoff_ms = BACKOFF_MS
                self.join_ms = None
                self.log("wifi %s: connected" % self.ssid)
            return True
        now = self.clock.ms()
        if self.up:
            self.up = False
            self.counts["lost"] += 1
            self.log("wifi %s: lost, rejoining" % self.ssid)
            self.next_ms = now  # the first rejoin at once
        if now < self.next_ms or not self.ssid:
            return False
        joining = w.status() == getattr(self.network, "STAT_CONNECTING", 1)
        if joining and self.join_ms is not None and now - self.join_ms < JOIN_STALE_MS:
            return False
        self._join(now)
        return False

    def dns_server(self):
        # the DNS server DHCP gave the station ((ip, 53)), None while it has none: the UDP
        # link asks it itself, bounded in time (firmware/dns.py)
        try:
            ip = self.wlan.ifconfig()[3]
        except (OSError, AttributeError, IndexError):
            return None
        return (ip, 53) if ip and ip != "0.0.0.0" else None

    def start(self, timeout_ms=20000):
        # the first join, waited for (at boot, before the watchdog is armed)
        if self.ensure() or not self.ssid:
            return self.up
        t0 = self.clock.ms()
        while not self.wlan.isconnected() and self.clock.ms() - t0 < timeout_ms:
            self.clock.sleep_ms(100)
        ok = self.ensure()
        if not ok:
            self.log("wifi %s: not connected, frames wait in flash" % self.ssid)
        return ok

