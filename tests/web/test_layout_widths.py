# The status page at a phone's 390 px, a small laptop's 1024, 1400 and a desktop's 1920, in a
# real headless Chromium against a live gateway: every column of the nodes table in reach (on a
# phone each node is a card with every value in sight; wider, the table fits or says which
# columns are out of sight), nothing overlapping (table cells, chart legend entries, tiles), a
# chart of a node that was never heard says so in words, durations read as people write them,
# and no request fails (the favicon was a 404). Screenshots in test-artifacts/layout-<width>.png.
import pathlib
import re
import time

import pytest

from tests.web.site import Site
from tests.web.test_browser import browser  # noqa: F401 - a fixture (Debian's Chromium via Playwright)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is part of .[dev]")
ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"
INDEX = pathlib.Path(__file__).resolve().parents[2] / "gateway" / "web" / "static" / "index.html"
COLUMNS = re.findall(r"<th>([^<]*)</th>", INDEX.read_text())  # the nodes table's header

# rectangles of the page's own boxes that must not overlap one another, per group
BOXES = """(sel) => [...document.querySelectorAll(sel)].filter(e => e.offsetParent !== null).map(e => {
  const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom, e.textContent.slice(0, 40)]; })"""


def overlaps(rects):
    out = []
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            if min(a[2], b[2]) - max(a[0], b[0]) > 1 and min(a[3], b[3]) - max(a[1], b[1]) > 1:
                out.append((a[4], b[4]))
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    # sew-01 sends (simulated firmware, a level with its thresholds), sew-09 is provisioned but silent
    # (never started: silenced after the start, its first frame could come first on a busy machine)
    s = Site(tmp_path_factory.mktemp("layout"), ["sew-01", "sew-09"], stale_after_s=30, silent=["sew-09"])
    yield s
    s.close()


@pytest.mark.parametrize("width", [390, 1024, 1400, 1920])
def test_every_column_in_reach_nothing_overlaps_and_an_empty_chart_says_why(browser, site, width):  # noqa: F811
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    pg = ctx.new_page()
    errors, failed = [], []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("response", lambda r: r.status >= 400 and failed.append((r.status, r.url)))
    try:
        pg.goto(site.url)
        rows = pg.locator("#nodes tbody tr")
        sync_api.expect(rows).to_have_count(2, timeout=20000)
        level = pg.locator('.chart[data-reading="l"]')
        sync_api.expect(level).to_be_visible(timeout=20000)
        deadline = time.monotonic() + 30  # (polled from here: the page's CSP forbids wait_for_function's eval)
        while int(level.get_attribute("data-points") or 0) < 2 and time.monotonic() < deadline:
            pg.wait_for_timeout(300)
        assert int(level.get_attribute("data-points") or 0) >= 2
        # every column: on a phone as a labelled line in the card, wider as a header in sight or named in the hint
        # (read in one step: the table is drawn again with every poll)
        cells = pg.evaluate("""() => [...document.querySelectorAll('#nodes tbody tr:first-child td')].map(td => {
            const r = td.getBoundingClientRect();
            return {label: td.dataset.label, left: r.left, right: r.right, w: r.width, h: r.height}; })""")
        assert [c["label"] for c in cells] == COLUMNS
        if width < 760:
            for c in cells:  # every value in sight, each on its own labelled line of the card
                assert c["w"] > 0 and c["h"] > 0 and c["left"] >= 0 and c["right"] <= width + 0.5, c
            assert pg.evaluate("getComputedStyle(document.querySelector('#nodes td'), '::before').content") \
                == '"node"'
            assert pg.locator("#nodes thead").is_hidden()
        else:
            out_of_sight = pg.evaluate("""() => {
                const right = document.getElementById('nodes-box').getBoundingClientRect().right;
                return [...document.querySelectorAll('#nodes thead th')]
                    .filter(th => th.getBoundingClientRect().right > right + 1).map(th => th.textContent); }""")
            hint = pg.locator("#scroll-hint")
            if out_of_sight:
                assert hint.is_visible() and all(c in hint.inner_text() for c in out_of_sight), hint.inner_text()
            else:
                assert hint.is_hidden()
            print(f"{width} px: columns out of sight without scrolling: {out_of_sight or 'none'}")
        dims = pg.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert dims[0] <= dims[1], f"the page itself scrolls sideways at {width}: {dims}"
        # nothing on top of anything: cells of a row, the level chart's legend entries, the tiles
        for sel in ("#nodes tbody tr:first-child td", '.chart[data-reading="l"] .u-legend .u-series',
                    "#health .tile", ".chart"):
            assert not overlaps(pg.evaluate(BOXES, sel)), (width, sel, overlaps(pg.evaluate(BOXES, sel)))
        # durations as people write them: "30 s", not "0m 30s"
        assert pg.locator("#stale-after").inner_text() == "30 s"
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"layout-{width}.png"), full_page=True)
        # the silent node: listed as never heard; its charts say so instead of an empty box
        silent = pg.locator("#nodes tbody tr", has=pg.locator("td.node-id", has_text="sew-09"))
        sync_api.expect(silent.locator(".badge")).to_have_text("never heard")
        silent.click()
        empty = pg.locator("#chart-grid .empty")
        sync_api.expect(empty).to_contain_text("sew-09 has not been heard since the gateway started")
        assert pg.locator("#chart-grid .chart").count() == 0
        pg.screenshot(path=str(ARTIFACTS / f"layout-{width}-never-heard.png"), full_page=True)
    finally:
        ctx.close()
    assert not errors, errors
    # the page's own files, the favicon among them, all load (a never-heard node's history is a 404 by design)
    assert not [f for f in failed if "/api/nodes/sew-09/history" not in f[1]], f"requests that failed: {failed}"
    assert any("/api/nodes/sew-09/history" in f[1] for f in failed)
