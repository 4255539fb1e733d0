"""The first visit and the repeat visit in a real browser: the graph before plotly.js, the heatmap's axes when it
arrives (nothing moves), and a repeat visit served from the browser's cache (the fixtures of tests/test_browser.py).

plotly.js is held with a route until the test has looked at the page: nothing here waits on the clock."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Page, Route, expect

from .test_browser import LAST, act

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)

PLOTLY = re.compile(r"/plotly\.min(\.[0-9a-f]+)?\.js$")
YEAR = "max-age=31536000"
# what the heatmap shows around its cells, each box in page pixels
BOXES = """() => Object.fromEntries(['heatmap-main', 'main-cells', 'colorbar', 'row-sums', 'col-sums', 'main-title',
    'readout', 'thumb-value', 'view-value', 'graph', 'step-label'].map((id) => {
  const r = document.querySelector(`[data-testid=${id}]`).getBoundingClientRect();
  return [id, [r.x, r.y, r.width, r.height].map((v) => Math.round(v * 10) / 10)]; }))"""


def hold_plotly(pg: Page) -> list[Route]:
    """plotly.js's request, held (unanswered) until the test continues it."""
    held: list[Route] = []
    pg.route(lambda url: bool(PLOTLY.search(urlparse(url).path)), lambda route: held.append(route))
    return held


def release(pg: Page, held: list[Route]) -> None:
    """Answer plotly.js's held request (made once the first graph is painted), and wait for its plots."""
    pg.wait_for_function("document.querySelector('script[src*=\"plotly.min\"]') !== null")
    while not held:  # the script element is in the page: its request reaches the route
        pg.wait_for_load_state("domcontentloaded")  # a Playwright call, so that the route's handler runs
    for route in held:
        route.continue_()
    pg.wait_for_selector("body[data-ready='1']")


def test_the_graph_is_drawn_and_steppable_before_plotly_arrives(page, base_url):
    held = hold_plotly(page)
    page.goto(f"{base_url}/?step=3&node=counts")
    page.wait_for_selector("body[data-steppable='1']")
    assert page.evaluate("typeof window.Plotly") == "undefined"
    # the graph: every edge with its arrowhead, the nodes, the step's highlight
    assert page.locator("#graph svg.graph-plot g.edges path").count() > 40
    # the step through probs = counts * counts_sum_inv: its output edge and its two inputs carry the gradient
    assert page.locator("#graph svg.graph-plot g.arrows[data-kind=current] path").count() == 3
    expect(page.get_by_test_id("gop-probs")).to_have_attribute("data-state", "current")
    expect(page.get_by_test_id("gnode-counts")).to_contain_text("◐ 1/2")
    # the inspector's text, and the heatmap's cells (painted where the axes will frame them)
    expect(page.get_by_test_id("panel-title")).to_contain_text("counts")
    expect(page.get_by_test_id("check")).to_contain_text("exact: True")
    expect(page.get_by_test_id("main-cells")).to_be_visible()
    assert page.locator("[data-testid=heatmap-main] .main-svg").count() == 0  # no axes yet
    # a learner steps, on the keyboard and with the mouse, while plotly.js is still on its way
    act(page, lambda: page.get_by_test_id("next").click())
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 4 / {LAST}")
    act(page, lambda: page.keyboard.press("ArrowRight"))
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 5 / {LAST}")
    assert page.locator("#graph svg.graph-plot g.edges[data-kind=traversed] path").count() > 0
    assert page.evaluate("typeof window.Plotly") == "undefined"
    release(page, held)
    assert page.evaluate("typeof window.Plotly") == "object"
    assert page.locator("[data-testid=heatmap-main] .xtick").count() > 0  # the axes, drawn around the cells


def test_the_heatmaps_axes_arrive_without_moving_anything(page, base_url):
    held = hold_plotly(page)
    page.goto(f"{base_url}/?step=3&node=counts")
    page.wait_for_selector("body[data-steppable='1']")
    before = page.evaluate(BOXES)
    assert before["main-cells"][2] > 300 and before["main-cells"][3] > 150, before  # cells painted, full size
    ticks = page.evaluate("JSON.parse(document.querySelector('[data-testid=colorbar]').dataset.ticks)")
    release(page, held)
    after = page.evaluate(BOXES)
    assert page.locator("[data-testid=heatmap-main] .xtick").count() > 0
    assert after == before  # the frame drew its axes where the canvases already were: no layout jump
    assert page.evaluate("JSON.parse(document.querySelector('[data-testid=colorbar]').dataset.ticks)") == ticks
    # and the cells sit exactly inside Plotly's axes
    axes = page.evaluate(
        """() => { const d = document.querySelector('[data-testid=heatmap-main]');
          const c = document.querySelector('[data-testid=main-cells]').getBoundingClientRect();
          const r = d.getBoundingClientRect();
          return [c.x - r.x, c.y - r.y, c.width, c.height, d._fullLayout.xaxis._offset, d._fullLayout.yaxis._offset,
                  d._fullLayout.xaxis._length, d._fullLayout.yaxis._length]; }"""
    )
    assert axes[:4] == pytest.approx(axes[4:], abs=0.5), axes


def test_a_repeat_visit_fetches_no_static_file(browser, base_url):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        pg = context.new_page()
        headers: dict[str, str] = {}
        pg.on("response", lambda r: headers.setdefault(urlparse(r.url).path, r.headers.get("cache-control", "")))
        url = f"{base_url}/?step=3&node=counts"
        pg.goto(url)
        pg.wait_for_selector("body[data-ready='1']")
        files = {path: cc for path, cc in headers.items() if not path.startswith("/api/") and path != "/"}
        assert any(PLOTLY.search(p) for p in files) and any(p.endswith(".css") for p in files), files
        # every script and style of the page is kept for a year, as immutable
        assert all(YEAR in cc and "immutable" in cc for cc in files.values()), files
        pg.goto(url)
        pg.wait_for_selector("body[data-ready='1']")
        assert page_is_whole(pg)
        # the browser's own account of the second visit: every file but the API's answers from its cache
        # (transferSize 0), and the page itself revalidated (a 304: its headers only, the body from the cache)
        entries = pg.evaluate(
            """() => performance.getEntriesByType('resource').map((e) => [new URL(e.name).pathname, e.transferSize])
              .filter(([path]) => !path.startsWith('/api/'))"""
        )
        assert len(entries) >= 10 and any(PLOTLY.search(path) for path, _ in entries), entries
        assert all(size == 0 for _, size in entries), entries
        nav = pg.evaluate("(({transferSize, encodedBodySize}) => [transferSize, encodedBodySize])"
                           "(performance.getEntriesByType('navigation')[0])")  # fmt: skip
        assert 0 < nav[0] < 1000 < nav[1], nav
    finally:
        context.close()


def page_is_whole(pg: Page) -> bool:
    """The graph, the heatmap's axes and plotly.js are all there."""
    return pg.evaluate(
        "typeof window.Plotly === 'object' && document.querySelectorAll('#graph g.edges path').length > 0"
        " && document.querySelectorAll('[data-testid=heatmap-main] .xtick').length > 0"
    )
