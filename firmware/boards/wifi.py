# Joining Wi-Fi on ESP32 and Pico W before the UDP link is used.
import time


def wifi_connect(ssid, password, log, timeout_ms=20000):
    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if wlan.isconnected() or not ssid:
        return wlan
    wlan.connect(ssid, password)
    t0 = time.ticks_ms()
    while not wlan.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < timeout_ms:
        time.sleep_ms(100)
    log("wifi %s: %s" % (ssid, "connected" if wlan.isconnected() else "not connected, frames wait in flash"))
    return wlan
