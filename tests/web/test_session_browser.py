# Token mode in a real headless Chromium: opening /?token=... once leaves the token out of the
# address bar, and the page's own fetches then work on the session cookie alone (HttpOnly:
# the page's script cannot read it); without the token the API stays closed.
import time

import pytest

from gateway.web.server import StatusWeb
from tests.web.test_browser import browser  # noqa: F401  (the module-scoped Chromium)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is part of .[dev]")
TOKEN = "browser-token-5f1e"


def status():
    return {"gateway": {"id": "gw-test", "version": "0.1.0", "uptime_s": 1.0, "broker_connected": True,
                        "outbox_depth": 0, "frames_per_s": 0.0, "counters": {}},
            "stale_after_s": 60,
            "nodes": [{"id": "sew-01", "last_seen": time.time(), "accepted": 3, "rejected": {}, "gaps": 0}]}


@pytest.fixture
def web(history):
    w = StatusWeb(listen="127.0.0.1:0", status_fn=status, history=history, token=TOKEN).start()
    yield w
    w.stop()


def test_token_once_then_the_session_cookie(browser, web):  # noqa: F811
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(web.url + f"?token={TOKEN}")
        assert page.url == web.url  # redirected: the token left the address bar
        sync_api.expect(page.locator("#nodes tbody tr")).to_have_count(1, timeout=15000)  # /api/status answered
        assert page.evaluate("document.cookie") == ""  # HttpOnly
        cookies = ctx.cookies()
        assert [c["name"] for c in cookies] == ["citynode_session"] and cookies[0]["value"] != TOKEN
        assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict" and cookies[0]["expires"] > time.time()
        page.reload()
        sync_api.expect(page.locator("#nodes tbody tr")).to_have_count(1, timeout=15000)
    finally:
        ctx.close()
    ctx = browser.new_context()
    try:
        assert ctx.new_page().goto(web.url + "api/status").status == 401
    finally:
        ctx.close()
