# The status page in a real headless Chromium: a node heard over LoRa shows the RSSI and SNR of
# its last frame in columns of their own (the node state's rssi_dbm and snr_db, gateway/stats.py);
# a node on another link shows none.
import time

import pytest

from gateway.web.server import StatusWeb
from tests.web.test_browser import browser  # noqa: F401  (the module-scoped Chromium)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is part of .[dev]")


def status():
    now = time.time()
    node = {"last_seen": now, "accepted": 3, "rejected": {}, "gaps": 0}
    return {"gateway": {"id": "gw-test", "version": "0.1.0", "uptime_s": 1.0, "broker_connected": True,
                        "outbox_depth": 0, "frames_per_s": 0.0, "counters": {}},
            "stale_after_s": 60,
            "nodes": [dict(node, id="sew-01", link="serial /dev/ttyACM0 lora rssi -117 snr -9.25", rssi_dbm=-117,
                           snr_db=-9.25),
                      dict(node, id="sew-02", link="udp 127.0.0.1:40000", rssi_dbm=None, snr_db=None)]}


def test_rssi_and_snr_have_columns_of_their_own(browser, history):  # noqa: F811
    web = StatusWeb(listen="127.0.0.1:0", status_fn=status, history=history).start()
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(web.url)
        rows = page.locator("#nodes tbody tr")
        sync_api.expect(rows).to_have_count(2, timeout=15000)
        lora, udp = rows.nth(0), rows.nth(1)
        assert lora.locator("td.rssi").inner_text() == "-117 dBm" and lora.locator("td.snr").inner_text() == "-9.25 dB"
        assert udp.locator("td.rssi").inner_text() == "–" and udp.locator("td.snr").inner_text() == "–"
        assert lora.locator("td.rssi").get_attribute("data-label") == "RSSI"
    finally:
        ctx.close()
        web.stop()
