# Without [web] stale_after_s a node turns red after three of its own reporting intervals
# (what it said in its boot frame), or 900 s when it never said one: each node row carries
# its limit in /api/status, and the page uses it.
import json
import re
import socket
import time
import urllib.request

import pytest

from gateway.config import parse
from gateway.daemon import STALE_UNKNOWN_S, Gateway, stale_after_s
from gateway.files import write_private
from gateway.keys import format_keys
from protocol import message, senml
from tests.support.broker import Mosquitto
from tests.web.test_browser import browser, sync_api  # noqa: F401 - the module's browser fixture

KEYS = {"fast-1": bytes(range(16)), "quiet-2": bytes(range(1, 17))}


def test_the_limit_follows_the_interval():
    assert stale_after_s(None, 300) == 900.0
    assert stale_after_s(None, 2) == 10.0  # never below 10 s
    assert stale_after_s(None, None) == STALE_UNKNOWN_S
    assert stale_after_s(4.0, 300) == 4.0  # [web] stale_after_s wins


@pytest.fixture
def quiet_site(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto").start()
    write_private(tmp_path / "keys.toml", format_keys(KEYS))
    settings = parse({
        "gateway": {"id": "gw-stale", "data_dir": str(tmp_path / "var"), "log_level": "warning"},
        "mqtt": {"url": broker.url, "topic_prefix": "cn"},
        "ingest": [{"kind": "udp", "listen": "127.0.0.1:0"}],
        "nodes": {"keys_file": str(tmp_path / "keys.toml")},
        "web": {"listen": "127.0.0.1:0"},  # no stale_after_s
    }, str(tmp_path / "gateway.toml"))
    gw = Gateway(settings).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # fast-1 reports every 2 s (its boot frame says so); quiet-2 never says its interval
        s.sendto(message.encode_data(KEYS["fast-1"], "fast-1", 1, 0, 0, [senml.record("l", 0.4)],
                                     info={message.I_INTERVAL: 2}), gw.udp_addresses[0])
        s.sendto(message.encode_data(KEYS["quiet-2"], "quiet-2", 1, 0, 0, [senml.record("l", 0.4)]),
                 gw.udp_addresses[0])
    deadline = time.monotonic() + 30
    while len(gw.status()["nodes"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    yield gw
    gw.stop()
    broker.stop()


def test_status_api_gives_each_node_its_limit(quiet_site):
    with urllib.request.urlopen(quiet_site.web.url + "api/status", timeout=10) as r:
        status = json.load(r)
    limits = {n["id"]: n["stale_after_s"] for n in status["nodes"]}
    assert limits == {"fast-1": 10.0, "quiet-2": STALE_UNKNOWN_S}
    assert "stale_after_s" not in status  # nothing configured for the whole gateway


def test_a_silent_node_turns_red_without_a_configured_limit(browser, quiet_site):  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    try:
        pg.goto(quiet_site.web.url)
        fast = pg.locator("#nodes tbody tr", has=pg.locator("td.node-id", has_text="fast-1"))
        quiet = pg.locator("#nodes tbody tr", has=pg.locator("td.node-id", has_text="quiet-2"))
        sync_api.expect(fast).to_have_count(1, timeout=15000)
        # limit 10 s (three intervals of 2 s, at least 10 s): red once it has been silent that long
        sync_api.expect(fast).to_have_class(re.compile(r"\bstale\b"), timeout=30000)
        sync_api.expect(quiet).not_to_have_class(re.compile(r"\bstale\b"))  # 900 s have not passed
        assert "three of its reporting intervals" in pg.locator("#stale-after").inner_text()
    finally:
        ctx.close()
