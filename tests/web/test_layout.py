# The status page on the wide screens technicians use (1400 and 1920 px): nothing scrolls
# sideways, and every chart (plot, axes and legend) stays inside its card, without
# overlapping its neighbours. In Debian's Chromium, against a live site.
import time

import pytest

from tests.web.test_browser import ARTIFACTS, browser, sync_api  # noqa: F401 - the module's browser fixture

MEASURE = """() => {
  const box = el => { const r = el.getBoundingClientRect(); return {l: r.left, r: r.right, t: r.top, b: r.bottom}; };
  const doc = document.documentElement;
  const cards = [...document.querySelectorAll('#chart-grid .chart')].map(c => {
    const cs = getComputedStyle(c), r = box(c);
    const inner = {l: r.l + parseFloat(cs.borderLeftWidth) + parseFloat(cs.paddingLeft),
                   r: r.r - parseFloat(cs.borderRightWidth) - parseFloat(cs.paddingRight)};
    const parts = [...c.querySelectorAll('.uplot, .u-wrap, canvas, .u-legend, .u-legend tr')].map(box);
    return {name: c.dataset.reading, card: r, inner: inner, parts: parts,
            plot: box(c.querySelector('.u-wrap')), points: +(c.dataset.points || 0)};
  });
  return {scroll: doc.scrollWidth, client: doc.clientWidth, body: document.body.scrollWidth, cards: cards};
}"""


def overlap(a, b):
    return a["l"] < b["r"] - 0.5 and b["l"] < a["r"] - 0.5 and a["t"] < b["b"] - 0.5 and b["t"] < a["b"] - 0.5


@pytest.mark.parametrize("width", [1400, 1920])
def test_no_sideways_scroll_and_no_chart_wider_than_its_card(browser, live_site, width):  # noqa: F811
    ctx = browser.new_context(viewport={"width": width, "height": 1000})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pg.goto(live_site.url)
        pg.locator("#nodes tbody tr", has_text=live_site.nodes[0]).first.click()
        level = pg.locator('.chart[data-reading="l"]')
        sync_api.expect(level).to_be_visible(timeout=15000)
        # readiness: the node's charts are drawn (several readings, points in them)
        deadline = time.monotonic() + 30
        m = pg.evaluate(MEASURE)
        while time.monotonic() < deadline and (len(m["cards"]) < 3 or min(c["points"] for c in m["cards"]) < 2):
            pg.wait_for_timeout(250)
            m = pg.evaluate(MEASURE)
        assert len(m["cards"]) >= 3, m
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"status-page-{width}.png"), full_page=True)
        assert m["scroll"] <= m["client"], f"the page scrolls sideways at {width} px: {m['scroll']} > {m['client']}"
        for c in m["cards"]:
            for part in c["parts"]:
                assert part["l"] >= c["inner"]["l"] - 0.5 and part["r"] <= c["inner"]["r"] + 0.5, \
                    f"{c['name']}: a chart part {part} sticks out of its card {c['inner']} at {width} px"
            # and the chart uses its card (not shrunk to a stamp)
            assert c["plot"]["r"] - c["plot"]["l"] >= 0.9 * (c["inner"]["r"] - c["inner"]["l"]), c
        for i, a in enumerate(m["cards"]):
            for b in m["cards"][i + 1:]:
                assert not overlap(a["card"], b["card"]), (a["name"], b["name"])
    finally:
        ctx.close()
    assert not errors, f"JavaScript errors: {errors}"
