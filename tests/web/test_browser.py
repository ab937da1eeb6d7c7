# The status page in a real headless Chromium (Debian's /usr/bin/chromium driven by
# Playwright), against a live site fed by simulated nodes.
import pathlib
import re
import time

import pytest

from tests.web.site import HOSTILE_ID, HOSTILE_TEXT

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is part of .[dev]")
CHROMIUM = "/usr/bin/chromium"
STALE = re.compile(r"\bstale\b")
ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not pathlib.Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: apt-get install -y chromium (.ci/run does this)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, live_site):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    requests = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto(live_site.url)
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors: {errors}"
    outside = [u for u in requests if not u.startswith(live_site.url)]
    assert not outside, f"the page loaded something from elsewhere: {outside}"


def node_rows(pg):
    return pg.locator("#nodes tbody tr")


def test_table_lists_the_nodes(page, live_site):
    sync_api.expect(node_rows(page)).to_have_count(len(live_site.nodes), timeout=15000)
    ids = page.locator("#nodes tbody td.node-id").all_inner_texts()
    for node in live_site.nodes:
        assert any(text.startswith(node) for text in ids), (node, ids)
    sync_api.expect(page.locator("#h-broker")).to_have_text("connected")


def test_a_chart_shows_points(page, live_site):
    page.locator("#nodes tbody tr", has_text=live_site.nodes[0]).first.click()
    level = page.locator('.chart[data-reading="l"]')
    sync_api.expect(level).to_be_visible(timeout=15000)
    deadline = time.monotonic() + 20
    while int(level.get_attribute("data-points") or 0) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    assert int(level.get_attribute("data-points")) >= 2
    assert level.locator("canvas").count() == 1
    # the level is drawn against the thresholds the node reported (firmware config: 2.2 m, 1.2 m)
    legend = level.locator(".u-legend").inner_text()
    assert "alarm threshold" in legend and "storm threshold" in legend
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)


def test_a_node_that_stops_sending_turns_stale(page, live_site):
    victim = live_site.nodes[-1]
    row = page.locator("#nodes tbody tr", has=page.locator("td.node-id", has_text=victim))
    sync_api.expect(row).not_to_have_class(STALE, timeout=15000)
    live_site.silence(victim)
    sync_api.expect(row).to_have_class(STALE, timeout=live_site.stale_after_s * 1000 + 15000)
    sync_api.expect(row.locator(".badge.stale")).to_have_text("stale")


def test_hostile_node_text_is_shown_as_text(page, live_site):
    # sew-02 reports HTML as its firmware version: the cell shows it as text, nothing is parsed
    row = page.locator("#nodes tbody tr", has=page.locator("td.node-id", has_text="sew-02"))
    sync_api.expect(row.locator("td", has_text=HOSTILE_TEXT)).to_have_count(1, timeout=15000)
    # its health: buffer and heap in the cell, the rest (a reset cause in HTML too) in the tooltip
    health = row.locator("td.health")
    sync_api.expect(health).to_contain_text("buffer 3 · heap 100 KB")
    sync_api.expect(health.locator(".badge")).to_have_text("flash errors")
    title = health.get_attribute("title")
    assert "buffer: 3 frames, 0.3 KB, 0 torn, 1 dropped" in title and "largest block 64 KB" in title, title
    assert "resets: power_on 4, " + HOSTILE_TEXT[:24] + " 1" in title and "flash errors: 2" in title, title
    assert page.locator("#nodes b, #nodes i, #nodes img").count() == 0, "node text was parsed as HTML"
    row.click()
    sync_api.expect(page.locator("#chart-node")).to_have_text("sew-02")
    assert page.evaluate("window.__xss === undefined")
    # the same string as a node id never gets this far: the gateway refuses the kid and counts it
    assert live_site.gateway.stats.counters_snapshot()[1].get("kid", 0) >= 1
    assert not any(HOSTILE_ID in t for t in page.locator("#nodes tbody td.node-id").all_inner_texts())


def test_overflow_forecast_in_the_table_and_on_the_level_chart(browser, forecast_site):
    # a shaft filling at 60 mm/min: the nodes table shows the ETA with a warning badge and
    # the forecast's sentence as tooltip; the level chart continues with the projection
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pg.goto(forecast_site.url)
        eta = pg.locator("#nodes tbody tr td.eta")
        sync_api.expect(eta).to_contain_text("warning", timeout=15000)
        text = eta.inner_text()
        minutes = int(re.search(r"in (\d+) min", text).group(1))
        assert 2 <= minutes <= 15, text
        assert "alarm level 2.20 m" in eta.get_attribute("title")
        chart = pg.locator('.chart[data-reading="l"]')
        sync_api.expect(chart.locator(".u-legend")).to_contain_text("forecast", timeout=15000)
        dims = pg.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert dims[0] <= dims[1], f"the page scrolls sideways: {dims}"
    finally:
        ctx.close()
    assert not errors, errors
