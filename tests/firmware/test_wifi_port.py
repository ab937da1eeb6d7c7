# Wi-Fi and sleep on the MicroPython ports, against `network` and `machine` fakes that behave
# as the 1.28 sources say: the Pico W's cyw43 joins once in the background and never rejoins
# (extmod/network_cyw43.c), the RP2's lightsleep returns at once while cyw43 has work pending
# (ports/rp2/modmachine.c mp_machine_lightsleep), an ESP32 in light sleep loses its access point.
import socket
import sys
import types

import pytest

from firmware.sim.world import VirtualClock

# cyw43 link status (cyw43_tcpip_link_status via WLAN.status())
LINK_DOWN, LINK_JOIN, LINK_NOIP, LINK_UP, LINK_NONET = 0, 1, 2, 3, -2


class Air:
    # the access point and the virtual time
    def __init__(self):
        self.clock = VirtualClock()
        self.ap_up = True


def cyw43_network(air, join_ms=3000):
    net = types.ModuleType("network")
    net.STA_IF = 0
    net.STAT_CONNECTING = LINK_JOIN

    class WLAN:
        PM_NONE, PM_PERFORMANCE, PM_POWERSAVE = 0x101, 0xA11142, 0x111022

        def __init__(self, itf):
            self.link = LINK_DOWN
            self.join_done = None
            self.connects = []
            self.pm = None

        def active(self, on=None):
            return True

        def connect(self, ssid, key=None):
            # cyw43_wifi_join: starts the join procedure, which runs in the background
            self.connects.append(air.clock.ms())
            self.link = LINK_JOIN
            self.join_done = air.clock.ms() + join_ms

        def status(self, param=None):
            now = air.clock.ms()
            if self.link == LINK_UP and not air.ap_up:
                self.link = LINK_DOWN  # beacons lost: the link is down, and stays down
            if self.link == LINK_JOIN and now >= self.join_done:
                self.link = LINK_UP if air.ap_up else LINK_NONET
            return self.link

        def isconnected(self):
            return self.status() == LINK_UP

        def config(self, **kw):
            self.pm = kw.get("pm", self.pm)

    net.WLAN = WLAN
    return net


def test_pico_w_rejoins_with_backoff_after_the_access_point_comes_back():
    # on main boards/wifi.py joined once at boot: after an outage the Pico W stayed offline
    from firmware.boards.wifi import Wifi

    air = Air()
    net = cyw43_network(air)
    logs = []
    wifi = Wifi("city-iot", "secret", logs.append, air.clock, network=net)
    assert wifi.start() is True
    wlan = wifi.wlan
    assert len(wlan.connects) == 1
    air.ap_up = False
    outage_end = air.clock.ms() + 20 * 60000
    ups = []
    while air.clock.ms() < outage_end + 15 * 60000:  # a node cycle every 30 s
        if air.clock.ms() >= outage_end:
            air.ap_up = True
        ups.append((air.clock.ms(), wifi.ensure()))
        air.clock.sleep_ms(30000)
    back = [t for t, up in ups if up and t >= outage_end]
    assert back and back[0] - outage_end <= 5 * 60000 + 30000  # rejoined within the longest backoff
    attempts = [t for t in wlan.connects[1:] if t < outage_end]
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert len(attempts) >= 4 and gaps == sorted(gaps) and max(gaps) <= 300000 + 30000  # backoff, capped
    assert wifi.counts["lost"] == 1 and any("lost" in x for x in logs)


def test_udp_link_asks_the_wifi_before_sending():
    from firmware.links import UdpLink

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    gw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gw.bind(("127.0.0.1", 0))
    gw.settimeout(5)
    try:
        link = UdpLink("127.0.0.1", gw.getsockname()[1], sock=s)
        up = [False]
        link.ready = lambda: up[0]
        assert link.send(b"a") is False and link.counts["offline"] == 1 and link.counts["sent"] == 0
        up[0] = True
        assert link.send(b"b") is True and gw.recv(10) == b"b"
    finally:
        s.close()
        gw.close()


# ---------------------------------------------------------------- sleep on the boards


class FakeTime:
    # MicroPython's time functions on the virtual clock
    def __init__(self, air, machine):
        self.air = air
        self.machine = machine

    def ticks_ms(self):
        return self.air.clock.ms()

    def ticks_diff(self, a, b):
        return a - b

    def sleep_ms(self, ms):
        self.machine.plain_ms += ms
        if not self.machine.cyw43_busy:
            self.machine.cyw43_pending = 0  # cyw43's poll runs while the CPU waits normally
        self.air.clock.sleep_ms(ms)

    def sleep_us(self, us):
        pass


def fake_machine(air, port):
    m = types.ModuleType("machine")
    m.lightsleeps = []
    m.plain_ms = 0
    m.cyw43_pending = 0
    m.cyw43_busy = False  # traffic keeps cyw43 busy: pending after every poll

    def lightsleep(ms):
        m.lightsleeps.append(ms)
        if port == "rp2" and m.cyw43_pending:
            m.cyw43_pending -= 1
            return  # ports/rp2/modmachine.c: cyw43_poll_is_pending() -> return at once
        if port == "esp32":
            air.ap_up = False  # the radio was off: the access point dropped the station
        air.clock.sleep_ms(ms)

    m.lightsleep = lightsleep
    for i, name in enumerate(("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET")):
        setattr(m, name, i + 1)

    class Pin:
        OUT, IN = 1, 0

        def __init__(self, *a, **k):
            pass

    m.Pin = Pin
    return m


def board_on(monkeypatch, port, air):
    machine = fake_machine(air, port)
    monkeypatch.setitem(sys.modules, "machine", machine)
    monkeypatch.setitem(sys.modules, "network", cyw43_network(air))
    for mod in ("firmware.boards.mpboard", "firmware.boards.esp32", "firmware.boards.rp2"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    mpboard = __import__("firmware.boards.mpboard", None, None, ["x"])
    monkeypatch.setattr(mpboard, "time", FakeTime(air, machine))
    mod = __import__("firmware.boards." + port, None, None, ["Board"])
    board = mod.Board()
    board.clock = air.clock
    return board, machine


def udp_config(port):
    return {"link": {"kind": "udp", "host": "127.0.0.1", "port": port, "wifi_ssid": "city-iot",
                     "wifi_password": "secret"}}


def test_esp32_udp_node_does_not_light_sleep_and_uses_wifi_power_save(monkeypatch):
    # on main an ESP32 on Wi-Fi went to lightsleep between cycles and lost its access point
    air = Air()
    board, machine = board_on(monkeypatch, "esp32", air)
    link = board.uplink(udp_config(9))
    try:
        assert board.wifi.wlan.pm == board.wifi.wlan.PM_PERFORMANCE
        t0 = air.clock.ms()
        board.sleep_ms(60000, True)
        assert machine.lightsleeps == [] and air.clock.ms() - t0 == 60000
        assert air.ap_up and board.wifi.ensure()
    finally:
        link.close()


@pytest.mark.parametrize("pending,busy,early", [(0, False, 0), (3, False, 1), (10**6, True, 400)])
def test_pico_w_lightsleep_that_returns_early_is_not_counted_as_slept(monkeypatch, pending, busy, early):
    # on main an early return counted as a whole slice: the node's cycles came early
    air = Air()
    board, machine = board_on(monkeypatch, "rp2", air)
    machine.cyw43_pending = pending
    machine.cyw43_busy = busy
    t0 = air.clock.ms()
    board.sleep_ms(8000, True)
    slept = air.clock.ms() - t0
    assert 8000 <= slept <= 8000 + 20
    assert board.early_wakes == early  # each early return waits 20 ms plainly: never a busy loop


def test_a_node_on_the_usb_console_never_light_sleeps(monkeypatch):
    air = Air()
    board, machine = board_on(monkeypatch, "rp2", air)
    board._uplink_uart = True
    board.sleep_ms(1000, True)
    assert machine.lightsleeps == [] and machine.plain_ms == 1000
