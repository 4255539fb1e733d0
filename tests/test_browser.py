"""The page in a real browser: Playwright driving Debian Chromium against the real server."""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy
import pytest
from axe_playwright_python.sync_playwright import Axe
from colorspacious import cspace_convert
from playwright.sync_api import Page, expect

from tests.lecture import MODES, nodes_for_mode, ops_for_mode

from .browser import ARTIFACTS, LECTURE_DATA, ROOT, forget, origin  # noqa: F401 (the browser modules import them here)

# the declared counts (the lecture's, 20 steps over 29 nodes in Exercise 1, are pinned in tests/test_graph.py)
STEPS = {mode: len(ops_for_mode(mode)) for mode in MODES}
NODE_COUNT = {mode: len(nodes_for_mode(mode)) for mode in MODES}
LAST = STEPS["atomic"]  # the default mode's last step

pytestmark = pytest.mark.browser
# an answer the page waits for (a sandbox check, a run's first event) may take many seconds on a busy machine:
# expect() waits for it that long, and a right page passes at once
expect.set_options(timeout=30_000)
# a training run started from the page: seconds alone, minutes on a machine busy with other suites
RUN_ENDS_MS = 180_000


def renders(page: Page) -> int:
    return int(page.evaluate("document.body.dataset.renders || '0'"))


def act(page: Page, action, timeout: float | None = None) -> None:
    """Do something that re-renders, and wait until that render is finished (up to `timeout` ms: the default's)."""
    before = renders(page)
    action()
    page.wait_for_function(f"Number(document.body.dataset.renders || 0) > {before}", timeout=timeout)


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")


TENSOR_BUTTONS = "[...document.querySelectorAll('#graph .gnode-tensor')]"


def graph_nodes(page: Page) -> list[str]:
    return page.evaluate(f"{TENSOR_BUTTONS}.map((b) => b.dataset.testid.slice('gnode-'.length))")


def node_labels(page: Page) -> dict[str, str]:
    """Each tensor's label as drawn."""
    return page.evaluate(
        f"Object.fromEntries({TENSOR_BUTTONS}.map((b) => [b.dataset.testid.slice('gnode-'.length), b.textContent]))"
    )


def click_node(page: Page, name: str) -> None:
    act(page, lambda: page.get_by_test_id(f"gnode-{name}").click())


def served(page: Page, path: str) -> dict:
    return page.evaluate("(url) => fetch(url).then((r) => r.json())", path)


def test_each_tests_page_is_a_new_visitor(profile, base_url):
    # the page fixture's visitors share one profile's HTTP cache; what one test's visitor kept, the next has not
    first = profile.new_page()
    open_page(first, base_url)
    first.evaluate("localStorage.setItem('kept', '1'); sessionStorage.setItem('kept', '1'); document.cookie = 'kept=1'")
    assert first.evaluate("localStorage.length") == 1 and profile.cookies()
    forget(profile, first, {origin(base_url)})
    first.close()
    second = profile.new_page()
    open_page(second, base_url)
    assert second.evaluate("[localStorage.length, sessionStorage.length, document.cookie]") == [0, 0, ""]
    assert profile.cookies() == []
    second.close()


def test_page_draws_every_node_op_and_arrow(page, base_url):
    open_page(page, base_url)
    graph = served(page, "/api/graph")
    nodes = graph_nodes(page)
    assert len(nodes) == NODE_COUNT["atomic"] and {"Xb", "Yb", "C", "W1", "logits", "loss"} <= set(nodes)
    # op nodes between the tensors, as micrograd draws them: one ellipse and one button per op
    assert page.locator("[data-testid^=gop-]").count() == len(graph["ops"]) == LAST
    assert page.locator("[data-testid^=gnode-]").count() == NODE_COUNT["atomic"]
    drawn = page.evaluate(
        """() => { const svg = document.querySelector('#graph svg.graph-plot');
          const heads = [...svg.querySelectorAll('g.arrows path')];
          return {ops: document.querySelectorAll('#graph .gnode-op').length,
                  edges: svg.querySelectorAll('g.edges path').length, arrows: heads.length,
                  drawn: heads.filter((h) => h.getBBox().width > 2 && h.getBBox().height > 2).length}; }"""
    )
    edges = sum(len(op["inputs"]) + len(op["outputs"]) for op in graph["ops"])
    assert drawn["ops"] == LAST and drawn["edges"] == edges and drawn["arrows"] == edges, drawn
    assert drawn["drawn"] == edges  # every arrowhead is a triangle of the page's SVG, not an empty path
    expect(page.get_by_test_id("gop-probs")).to_have_text("*")  # an ellipse with the op's symbol
    expect(page.get_by_test_id("gop-probs")).to_have_css("border-top-left-radius", "50%")
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 0 / {LAST}")
    expect(page.get_by_test_id("legend")).to_contain_text("mismatch")
    expect(page.get_by_test_id("intro")).to_contain_text("Press Next")
    expect(page.get_by_test_id("error")).to_be_hidden()


def test_branching_tensors_have_their_out_edges_drawn_apart(page, base_url):
    open_page(page, base_url)
    layout = served(page, "/api/graph")["layout"]
    # each edge's points, in the layout's units (the SVG draws them scaled to the pane)
    edges = page.evaluate(
        """(width) => { const svg = document.querySelector('#graph svg.graph-plot');
          const scale = svg.width.baseVal.value / width;
          return [...svg.querySelectorAll('g.edges path')].map((p) => p.getAttribute('d').slice(1).split('L')
            .map((xy) => xy.split(' ').map((v) => Number(v) / scale))); }""",
        layout["width"],
    )
    for name in ("counts", "bndiff", "hprebn", "logits"):
        box = layout["nodes"][name]
        leaving = [
            e
            for e in edges
            if abs(e[0][1] - (box["y"] + box["h"] / 2)) < 1.5 and abs(e[0][0] - box["x"]) < box["w"] / 2 + 1
        ]
        assert len(leaving) == 2, (name, leaving)
        (a0, a1), (b0, b1) = (e[:2] for e in leaving)
        angle_a = math.atan2(a1[0] - a0[0], a1[1] - a0[1])
        angle_b = math.atan2(b1[0] - b0[0], b1[1] - b0[1])
        assert abs(angle_a - angle_b) > math.radians(10), (name, leaving)


def test_stepping_the_whole_schedule_and_previous(page, base_url):
    open_page(page, base_url)
    for _ in range(3):
        act(page, lambda: page.get_by_test_id("next").click())
    assert "◐ 1/2" in node_labels(page)["counts"]
    expect(page.get_by_test_id("op-banner")).to_contain_text("dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)")
    for _ in range(17):
        act(page, lambda: page.keyboard.press("ArrowRight"))
    expect(page.get_by_test_id("step-label")).to_have_text(f"step {LAST} / {LAST}")
    labels = node_labels(page)
    for name, label in labels.items():
        if name in ("Xb", "Yb"):
            continue
        assert "✓" in label or "≈" in label, (name, label)
        assert "✗" not in label
    assert "✓" in labels["logprobs"] and "✓" in labels["W2"] and "≈" in labels["hpreact"]
    act(page, lambda: page.get_by_test_id("prev").click())
    expect(page.get_by_test_id("step-label")).to_have_text(f"step {LAST - 1} / {LAST}")
    assert "·" in node_labels(page)["C"]  # dC comes from the last step, now undone
    assert f"step={LAST - 1}" in page.url


def test_next_follows_the_gradient_into_view(page, base_url):
    open_page(page, base_url)
    act(page, lambda: page.get_by_test_id("next").click())
    # the first step produces dlogprobs: the inspector opens it, in the viewport, without scrolling
    expect(page.get_by_test_id("panel-title")).to_contain_text("logprobs")
    expect(page.get_by_test_id("panel-title")).to_be_in_viewport()
    expect(page.get_by_test_id("heatmap-main")).to_be_in_viewport()
    expect(page.get_by_test_id("gop-loss")).to_be_in_viewport()  # the op the step went through
    assert page.evaluate("scrollY") == 0
    # each step moves on to the gradient it produced, and scrolls the graph to it
    for _ in range(4):
        act(page, lambda: page.get_by_test_id("next").click())
    # step 5 backpropagates through counts_sum = counts.sum(1, keepdim=True): dcounts, its second contribution
    expect(page.get_by_test_id("panel-title")).to_have_text(re.compile(r"^counts "))
    expect(page.get_by_test_id("gop-counts_sum")).to_be_in_viewport()
    # a node opened by hand is pinned: stepping keeps it
    click_node(page, "probs")
    expect(page.get_by_test_id("pin")).to_have_attribute("aria-pressed", "true")
    act(page, lambda: page.get_by_test_id("next").click())
    expect(page.get_by_test_id("panel-title")).to_have_text(re.compile(r"^probs "))
    act(page, lambda: page.get_by_test_id("pin").click())  # unpinned: the next step is followed again
    act(page, lambda: page.get_by_test_id("next").click())
    expect(page.get_by_test_id("panel-title")).to_have_text(re.compile(r"^logits "))  # step 7: norm_logits


def main_plot(page: Page) -> dict:
    """What the large heatmap draws: its grid, colour range, title, axes, colour bar, marginal sums, width."""
    return page.evaluate(
        """() => { const d = document.querySelector('[data-testid=heatmap-main]');
          const cells = document.querySelector('[data-testid=main-cells]');
          const sums = (id) => JSON.parse(document.querySelector(`[data-testid=${id}]`).dataset.values);
          return {z: cells.grid.z, zmin: Number(cells.dataset.zmin), zmax: Number(cells.dataset.zmax),
                  title: document.querySelector('[data-testid=main-title]').textContent, view: d.dataset.view,
                  xtitle: d.layout.xaxis.title.text, ytitle: d.layout.yaxis.title.text,
                  xticks: d.layout.xaxis.ticktext, yticks: d.layout.yaxis.ticktext,
                  rows: sums('row-sums'), cols: sums('col-sums'), width: d._fullLayout.xaxis._length,
                  cells: [cells.getBoundingClientRect().width, d._fullLayout.xaxis._length],
                  colorbar: JSON.parse(document.querySelector('[data-testid=colorbar]').dataset.ticks)}; }"""
    )


def cell_pixel(page: Page, i: int, j: int, at: float = 0.5) -> list[int]:
    """The RGB the main heatmap's canvas shows in cell (i, j), `at` of the way across it (0.5: its centre)."""
    return page.evaluate(
        """([i, j, at]) => { const c = document.querySelector('[data-testid=main-cells]');
          const rows = c.grid.z.length, cols = c.grid.z[0].length;
          const x = Math.floor((j + at) * c.width / cols), y = Math.floor((i + at) * c.height / rows);
          return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)); }""",
        [i, j, at],
    )


def test_inspector_one_large_heatmap_switch_and_small_multiples(page, base_url):
    open_page(page, base_url + f"/?step={LAST}")
    click_node(page, "logits")
    expect(page.get_by_test_id("panel-title")).to_contain_text("logits")
    plot = main_plot(page)
    assert plot["width"] >= 450, plot["width"]  # the large heatmap at 1280x800
    assert plot["view"] == "manual" and len(plot["z"]) == 32 and len(plot["z"][0]) == 27
    assert plot["xtitle"] == "character" and plot["ytitle"] == "batch row: context → target"
    assert plot["xticks"][:2] == [".", "a"] and all(re.fullmatch(r"[.a-z]{3}→[.a-z]", y) for y in plot["yticks"])
    # the colour bar: plain or scientific numbers, never SI prefixes ("1p", "20µ"), inside the colour range
    ticks = [float(t) for t in plot["colorbar"]]
    assert all(re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", t) for t in plot["colorbar"]), plot["colorbar"]
    assert len(ticks) >= 3 and plot["zmin"] <= min(ticks) < max(ticks) <= plot["zmax"]
    assert plot["cells"][0] == pytest.approx(plot["cells"][1], abs=1)  # the cells fill the frame's plot area
    detail = served(page, f"/api/tensor/logits?step={LAST}")
    # the marginal bars are the served gradient's row and column sums
    manual = detail["grad_manual"]["data"]
    assert plot["rows"] == pytest.approx([sum(r) for r in manual], abs=1e-9)
    assert plot["cols"] == pytest.approx([sum(r[j] for r in manual) for j in range(27)], abs=1e-9)
    # the two gradients on one zero-centred scale that holds every entry of both
    hi = max(abs(v) for key in ("grad_manual", "grad_autograd") for row in detail[key]["data"] for v in row)
    assert plot["zmin"] == -plot["zmax"] and hi <= plot["zmax"] <= 1.01 * hi
    # the switch: value, autograd, difference
    for view in ("value", "autograd", "diff", "manual"):
        page.get_by_test_id(f"view-{view}").click()
        expect(page.get_by_test_id("heatmap-main")).to_have_attribute("data-view", view)
    # the four as small multiples, one click each
    for key in ("value", "manual", "autograd", "diff"):
        expect(page.get_by_test_id(f"thumb-{key}")).to_be_visible()
    for key in ("value", "manual", "autograd"):  # a drawn thumbnail shows no "empty" box beside its canvas
        expect(page.get_by_test_id(f"thumb-{key}").locator(".thumb-empty")).to_be_hidden()
    page.get_by_test_id("thumb-value").click()
    expect(page.get_by_test_id("heatmap-main")).to_have_attribute("data-view", "value")
    assert main_plot(page)["z"] == detail["value"]["data"]
    # the painted cells: the largest value in the scale's top colour, the smallest in its bottom colour
    values = detail["value"]["data"]
    flat = [(v, i, j) for i, row in enumerate(values) for j, v in enumerate(row)]
    _, i_hi, j_hi = max(flat)
    _, i_lo, j_lo = min(flat)
    assert cell_pixel(page, i_hi, j_hi) == [0xFD, 0xE7, 0x25]  # viridis ends in #fde725
    assert cell_pixel(page, i_lo, j_lo) == [0x44, 0x01, 0x54]  # and starts at #440154
    expect(page.get_by_test_id("check")).to_contain_text("exact: True | approximate: True | maxdiff: 0.0")
    expect(page.get_by_test_id("formula")).to_have_text("logits = h @ W2 + b2")
    expect(page.get_by_test_id("numeric")).to_contain_text("finite differences")
    assert "node=logits" in page.url and "view=value" in page.url
    # an exactly equal gradient's difference says so instead of drawing a ±1e-12 scale
    expect(page.get_by_test_id("thumb-diff")).to_contain_text("identical: 0 everywhere")
    # the 3-D emb tensor is shown one slice at a time (tests/test_browser_view3d.py checks the slices' numbers)
    click_node(page, "emb")
    expect(page.get_by_test_id("thumb-value")).to_have_attribute("data-shape", "32x3x10")
    act(page, lambda: page.get_by_test_id("slice").fill("2"))
    assert "slice=2" in page.url
    # full window and back
    page.get_by_test_id("expand").click()
    expect(page.get_by_test_id("panel")).to_have_css("position", "fixed")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("panel")).not_to_have_css("position", "fixed")


def test_hovering_a_cell_marks_it_in_all_four_and_prints_the_served_numbers(page, base_url):
    open_page(page, f"{base_url}/?step={LAST}&node=counts&pin=1")
    detail = served(page, f"/api/tensor/counts?step={LAST}")
    cell = page.evaluate(
        """() => { const d = document.querySelector('[data-testid=heatmap-main]');
          const s = d._fullLayout._size, xa = d._fullLayout.xaxis, ya = d._fullLayout.yaxis;
          const r = d.getBoundingClientRect();
          return {px: r.left + xa._offset + xa._length * (4.5 / 27),
                  py: r.top + ya._offset + ya._length * (6.5 / 32)}; }"""
    )
    page.mouse.move(cell["px"], cell["py"])
    expect(page.get_by_test_id("readout")).to_have_attribute("data-cell", "6,4")
    for key in ("value", "manual", "autograd"):
        expect(page.get_by_test_id(f"thumb-{key}").locator("canvas")).to_have_attribute("data-cross", "6,4")
    expect(page.get_by_test_id("main-cells")).to_have_attribute("data-cross", "6,4")
    numbers = {k: page.get_by_test_id(f"readout-{k}").text_content() for k in ("value", "manual", "autograd", "diff")}
    assert float(numbers["value"]) == detail["value"]["data"][6][4]
    assert float(numbers["manual"]) == detail["grad_manual"]["data"][6][4]
    assert float(numbers["autograd"]) == detail["grad_autograd"]["data"][6][4]
    assert float(numbers["diff"]) == detail["diff"]["data"][6][4]
    assert page.locator(".hoverlayer .hovertext").count() == 0  # no hover box: the readout says it


def test_the_next_steps_heatmap_frame_is_drawn_before_the_click(page, base_url):
    # step 0, logits open on its manual gradient: nothing to draw yet, but the frame its gradient needs (and the
    # one the prefetched step 1 needs) is drawn on standby while the page is idle; Next then shows that plot
    open_page(page, f"{base_url}/?node=logits&view=manual")
    expect(page.get_by_test_id("main-empty")).to_be_visible()
    page.wait_for_function(
        "() => { const d = document.querySelector('.main-plot.standby[data-grid=\"32x27\"]');"
        " return d && d.querySelector('.xtick') !== null; }"
    )
    page.evaluate("document.querySelector('.main-plot.standby[data-grid=\"32x27\"]').prepared = true")
    act(page, lambda: page.get_by_test_id("next").click())
    expect(page.get_by_test_id("panel-title")).to_have_text(re.compile(r"^logprobs "))
    shown = page.get_by_test_id("heatmap-main")
    expect(shown).to_be_visible()
    assert shown.evaluate("(d) => d.prepared === true && !d.classList.contains('standby')")
    assert main_plot(page)["z"] == served(page, "/api/tensor/logprobs?step=1")["grad_manual"]["data"]


def test_run_alls_frame_is_drawn_ahead_and_kept_while_stepping(page, base_url):
    # Run all jumps to the last gradient, whose shape no step near it has: its frame is drawn on standby while
    # the page is idle, kept however many other shapes the steps show, and the click shows that plot
    open_page(page, f"{base_url}/?node=logits&view=manual")
    graph = served(page, "/api/graph")
    last = graph["schedule"][-1]
    target = next(r["target"] for op in graph["ops"] if op["name"] == last for r in op["rules"])
    reserved = page.locator(".main-plot[data-reserved]")
    page.wait_for_function(
        "() => { const d = document.querySelector('.main-plot[data-reserved]');"
        " return d && d.querySelector('.xtick'); }"
    )
    reserved_grid = reserved.get_attribute("data-grid")
    page.evaluate("document.querySelector('.main-plot[data-reserved]').prepared = true")
    grids = set()
    for _ in range(12):
        act(page, lambda: page.get_by_test_id("next").click())
        grids.add(page.get_by_test_id("heatmap-main").get_attribute("data-grid"))
    assert len(grids - {reserved_grid}) > 3  # more shapes than the plots kept for the steps
    act(page, lambda: page.get_by_test_id("run-all").click())
    expect(page.get_by_test_id("panel-title")).to_have_text(re.compile(rf"^{target} "))
    shown = page.get_by_test_id("heatmap-main")
    assert shown.evaluate("(d) => d.prepared === true && !d.classList.contains('standby')")
    step = len(graph["schedule"])
    assert main_plot(page)["z"] == served(page, f"/api/tensor/{target}?step={step}")["grad_manual"]["data"]


def test_a_scalar_is_printed_as_a_number(page, base_url):
    open_page(page, f"{base_url}/?step={LAST}&node=loss&pin=1")
    detail = served(page, f"/api/tensor/loss?step={LAST}")
    table = page.get_by_test_id("numbers")
    expect(table).to_be_visible()
    expect(page.get_by_test_id("heatmap-main")).to_have_count(0)
    cells = table.locator("tbody td").all_text_contents()
    assert float(cells[0]) == detail["value"]["data"] and float(cells[1]) == 1.0


def test_a_partial_gradient_is_compared_with_its_own_paths(page, base_url):
    # counts is used twice: its gradient gets one contribution at step 3 (from probs) and the second at step 5
    open_page(page, f"{base_url}/?node=counts&pin=1&step=2")
    expect(page.get_by_test_id("thumb-manual")).to_contain_text("not reached yet")
    expect(page.get_by_test_id("numeric")).not_to_contain_text("relative error")  # nothing to check yet
    act(page, lambda: page.get_by_test_id("next").click())
    label = node_labels(page)["counts"]
    assert "◐ 1/2" in label and "✗" not in label, label
    # compared with autograd through the same path: the check passes, and says against what
    expect(page.get_by_test_id("check")).to_contain_text("approximate: True")
    expect(page.get_by_test_id("check")).to_contain_text("contribution 1 of 2")
    expect(page.get_by_test_id("status")).to_contain_text("partial (1 of 2 contributions)")
    expect(page.get_by_test_id("split")).to_contain_text("contribution 1: from probs")
    expect(page.get_by_test_id("split-1")).to_contain_text("not yet")
    expect(page.get_by_test_id("numeric")).to_contain_text("from step 5")
    for _ in range(2):
        act(page, lambda: page.get_by_test_id("next").click())
    expect(page.get_by_test_id("split-1")).to_contain_text("from counts_sum")
    expect(page.get_by_test_id("check")).to_contain_text("exact: True")
    expect(page.get_by_test_id("numeric")).to_contain_text("finite differences (float64")


def test_mode_switch_changes_the_graph(page, base_url):
    open_page(page, base_url)
    act(page, lambda: page.get_by_test_id("mode").select_option("fused"))
    assert len(graph_nodes(page)) == NODE_COUNT["fused"]
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 0 / {STEPS['fused']}")
    act(page, lambda: page.get_by_test_id("mode").select_option("fused_bn"))
    assert len(graph_nodes(page)) == NODE_COUNT["fused_bn"] and "bnraw" not in graph_nodes(page)


# the labels and the canvas measured in one synchronous snapshot, so a scroll in between cannot move one of them
LABEL_BOXES = """() => {
  const box = (r) => ({left: r.left, right: r.right, top: r.top, bottom: r.bottom});
  const labels = [...document.querySelectorAll('#graph .gnode .glabel')]
    .filter((t) => t.textContent.trim())
    .map((t) => ({text: t.textContent, ...box(t.getBoundingClientRect())}));
  return {labels, frame: box(document.querySelector('#graph .graph-canvas').getBoundingClientRect())};
}"""
VIEWPORTS = {"1280x800": (1280, 800), "900x800": (900, 800), "390x844": (390, 844)}


def assert_labels_apart(page: Page) -> None:
    snapshot = page.evaluate(LABEL_BOXES)
    boxes, frame = snapshot["labels"], snapshot["frame"]
    assert len(boxes) >= len(graph_nodes(page)), boxes  # a label per tensor, and the op symbols
    for box in boxes:
        assert box["right"] - box["left"] > 0, box
        assert frame["left"] - 0.5 <= box["left"] and box["right"] <= frame["right"] + 0.5, (box, frame)
        assert frame["top"] - 0.5 <= box["top"] and box["bottom"] <= frame["bottom"] + 0.5, (box, frame)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            apart = (
                a["right"] <= b["left"] + 0.5
                or b["right"] <= a["left"] + 0.5
                or a["bottom"] <= b["top"] + 0.5
                or b["bottom"] <= a["top"] + 0.5
            )
            assert apart, (a, b)


@pytest.mark.parametrize("size", VIEWPORTS)
@pytest.mark.parametrize("mode", ["atomic", "fused_ce", "fused_bn", "fused"])
def test_no_graph_label_overlaps_or_is_clipped(page, base_url, mode, size):
    page.set_viewport_size(dict(zip(("width", "height"), VIEWPORTS[size], strict=True)))
    # a step in (a partial node's tag is the longest label) with a bug on where the mode has one (origin, error sizes)
    bug = {"atomic": "&bug=bessel_n", "fused_ce": "&bug=bessel_n", "fused_bn": "&bug=no_broadcast_sum"}.get(mode, "")
    open_page(page, f"{base_url}/?mode={mode}&step=5{bug}")
    assert_labels_apart(page)  # partial nodes' tags
    act(page, lambda: page.get_by_test_id("run-all").click())
    assert_labels_apart(page)  # every status, and the bug's origin and error sizes
    # no horizontal scroll of the page at any width
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORTS[size][0]


def test_controls_are_disabled_while_a_request_is_in_flight(page, base_url):
    # the last step's state is held back (from its prefetch on arrival): Run all waits for it
    held = []
    last = re.compile(rf"/api/state\?.*step={LAST}(&|$)")
    page.route(last, lambda route: held.append(route))
    open_page(page, base_url)
    page.get_by_test_id("run-all").click()
    expect(page.get_by_test_id("loading")).to_be_visible()
    for control in ("next", "prev", "reset", "run-all", "mode", "apply"):
        expect(page.get_by_test_id(control)).to_be_disabled()
    assert held, "the last step was not asked for"
    act(page, lambda: [route.continue_() for route in held])
    expect(page.get_by_test_id("step-label")).to_have_text(f"step {LAST} / {LAST}")
    expect(page.get_by_test_id("loading")).to_be_hidden()
    expect(page.get_by_test_id("next")).to_be_disabled()  # the end: nothing after it
    expect(page.get_by_test_id("prev")).to_be_enabled()


def test_nonfinite_cells_are_marked_and_counted(page, base_url):
    # one NaN and one +Inf put into the server's answer for logits' value (no config makes them): their cells
    # are marked and the readout says NaN/Inf. Only the last step's answer is changed (its neighbour's prefetch is not)
    target = re.compile(rf"/api/tensor/logits\?(.*&)?step={LAST}(&|$)")

    def with_nonfinite(route):
        body = route.fetch().json()
        body["value"]["data"][0][1] = None
        body["value"]["data"][2][3] = None
        body["value"]["nonfinite"] = {"nan": 1, "posinf": 1, "neginf": 0}
        route.fulfill(json=body)

    page.route(target, with_nonfinite)
    open_page(page, f"{base_url}/?node=logits&pin=1&step={LAST}&view=value")
    expect(page.get_by_test_id("main-cells")).to_have_attribute("data-nonfinite", "0,1;2,3")
    # black with a white ×: the corner of the cell black, its centre (where the strokes cross) white
    assert cell_pixel(page, 0, 1, at=0.1) == [0, 0, 0] and cell_pixel(page, 2, 3, at=0.1) == [0, 0, 0]
    assert min(cell_pixel(page, 0, 1)) > 200


def test_permalink_reload_and_back(page, base_url):
    open_page(page, base_url + "/?mode=fused_ce&step=5&node=h")
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 5 / {STEPS['fused_ce']}")
    expect(page.get_by_test_id("mode")).to_have_value("fused_ce")
    expect(page.get_by_test_id("panel-title")).to_contain_text("h")
    act(page, lambda: page.get_by_test_id("next").click())
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 6 / {STEPS['fused_ce']}")
    expect(page.get_by_test_id("panel-title")).to_contain_text("h")
    act(page, lambda: page.go_back())
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 5 / {STEPS['fused_ce']}")


def test_the_mode_select_and_the_config_defaults_come_from_meta(page, base_url):
    open_page(page, base_url)
    meta = served(page, "/api/meta")
    options = page.get_by_test_id("mode").locator("option")
    assert options.evaluate_all("(os) => os.map((o) => [o.value, o.textContent, o.title])") == [
        [m["name"], m["label"], m["title"]] for m in meta["modes"]
    ]
    expect(page.get_by_test_id("mode")).to_have_value(meta["default_mode"])
    expect(page.get_by_test_id("cfg-seed")).to_have_value(str(meta["config"]["seed"]["default"]))
    expect(page.get_by_test_id("cfg-batch_size")).to_have_attribute("max", str(meta["config"]["batch_size"]["maximum"]))
    dtypes = page.get_by_test_id("cfg-dtype").locator("option").evaluate_all("(os) => os.map((o) => o.value)")
    assert dtypes == meta["config"]["dtype"]["choices"]

    # a server that declares another label and another default: the page follows it (and its URL leaves the
    # default out), where the page's own copy would not
    def retitled(route):
        body = route.fetch().json()
        body["modes"][1]["label"] = "Exercise 2, relabelled"
        body["config"]["seed"]["default"] = 42
        route.fulfill(json=body)

    page.route(re.compile(r"/api/meta$"), retitled)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    open_page(page, f"{base_url}/?mode=fused_ce&step=2")
    expect(page.get_by_test_id("mode").locator("option").nth(1)).to_have_text("Exercise 2, relabelled")
    expect(page.get_by_test_id("mode")).to_have_value("fused_ce")
    expect(page.get_by_test_id("cfg-seed")).to_have_value("42")
    assert "seed=" not in page.url and "mode=fused_ce" in page.url
    assert any("/api/state?" in url and "seed=42&" in url for url in asked), asked
    assert sum(url.endswith("/api/meta") for url in asked) == 1  # the preloaded answer is the one used


def test_the_training_forms_defaults_come_from_meta(page, base_url):
    page.goto(f"{base_url}/train.html")
    page.wait_for_selector("body[data-ready='1']")
    train = served(page, "/api/meta")["train"]
    form = page.locator("#run-form")
    for name in ("n_hidden", "max_steps", "lr", "check_every"):
        assert float(form.locator(f"[name={name}]").input_value()) == train[name]["default"], name

    def other_default(route):
        body = route.fetch().json()
        body["train"]["n_hidden"]["default"] = 96
        route.fulfill(json=body)

    page.route(re.compile(r"/api/meta$"), other_default)
    page.goto(f"{base_url}/train.html")
    page.wait_for_selector("body[data-ready='1']")
    expect(form.locator("[name=n_hidden]")).to_have_value("96")  # the server's default, not a copy in the page


def test_rejected_config_shows_the_servers_message(page, base_url):
    open_page(page, base_url)
    page.get_by_test_id("cfg-batch_size").fill("1")
    page.get_by_test_id("apply").click()
    message = page.get_by_test_id("config-error")
    expect(message).to_be_visible()
    expect(message).to_contain_text("batch_size")
    expect(message).to_contain_text("greater than or equal to 2")
    assert "batch_size" not in page.url
    page.get_by_test_id("cfg-batch_size").fill("8")
    act(page, lambda: page.get_by_test_id("apply").click())
    expect(message).to_be_hidden()
    assert "batch_size=8" in page.url


def test_server_errors_are_shown(page, base_url):
    # the last step fails from the start: its prefetch fails silently, Run all asks again and shows why
    last = re.compile(rf"/api/state\?.*step={LAST}(&|$)")
    page.route(last, lambda route: route.fulfill(status=500, body='{"detail": "boom"}'))
    open_page(page, f"{base_url}/?step=3")
    expect(page.get_by_test_id("error")).to_be_hidden()
    page.get_by_test_id("run-all").click()
    expect(page.get_by_test_id("error")).to_contain_text("Server error 500")
    page.unroute(last)
    page.route(last, lambda route: route.abort())
    page.get_by_test_id("run-all").click()  # a failure is not kept: asked again
    expect(page.get_by_test_id("error")).to_contain_text("unreachable")
    page.unroute(last)
    act(page, lambda: page.get_by_test_id("run-all").click())
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(page.get_by_test_id("step-label")).to_have_text(f"step {LAST} / {LAST}")


def test_going_back_to_a_step_seen_redraws_without_asking_the_server(page, base_url):
    open_page(page, f"{base_url}/?node=logits&pin=1")
    for _ in range(2):
        act(page, lambda: page.get_by_test_id("next").click())
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/api/" in request.url else None)
    act(page, lambda: page.get_by_test_id("prev").click())
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 1 / {LAST}")
    expect(page.get_by_test_id("panel")).to_contain_text("logits")
    act(page, lambda: page.get_by_test_id("reset").click())
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 0 / {LAST}")
    # only the prefetch of the step after each one shown may go out (step 2, then step 1): nothing for steps 1, 0
    assert not [u for u in asked if re.search(r"step=[01](&|$)", u)], asked
    # Run all's step is asked for when the pointer reaches its button, before the click
    before = len(asked)
    page.get_by_test_id("run-all").hover()
    page.wait_for_function(
        f"performance.getEntriesByType('resource').some((e) => /api\\/tensor.*step={LAST}(&|$)/.test(e.name))"
    )
    assert [u for u in asked[before:] if re.search(rf"/api/state\?.*step={LAST}(&|$)", u)], asked
    before = len(asked)
    act(page, lambda: page.get_by_test_id("run-all").click())
    expect(page.get_by_test_id("step-label")).to_have_text(f"step {LAST} / {LAST}")
    assert not [u for u in asked[before:] if re.search(rf"step={LAST}(&|$)", u)], asked  # drawn from it


def test_a_permalink_prefetches_both_neighbouring_steps(page, base_url):
    # arriving at step 3 by a link, neither step 2 nor step 4 has been seen: both are asked for before any click
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/api/state" in request.url else None)
    open_page(page, f"{base_url}/?step=3&node=counts")
    page.wait_for_function(
        "performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/tensor')).length >= 3"
    )
    for step in (2, 4):
        assert any(re.search(rf"step={step}(&|$)", u) for u in asked), (step, asked)
    assert not [u for u in asked if re.search(rf"step=(0|{LAST})(&|$)", u)], asked  # Reset, Run all: on intent only
    before = len(asked)
    act(page, lambda: page.get_by_test_id("prev").click())
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 2 / {LAST}")
    assert not [u for u in asked[before:] if re.search(r"step=2(&|$)", u)]  # drawn from the prefetch


def test_prefetched_next_step_and_its_failure(page, base_url):
    open_page(page, base_url)
    step2 = re.compile(r"/api/state\?.*step=2(&|$)")
    page.route(step2, lambda route: route.fulfill(status=500, body='{"detail": "boom at step 2"}'))
    with page.expect_request(step2):  # asked for as soon as step 1 is drawn, before any click
        act(page, lambda: page.get_by_test_id("next").click())
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 1 / {LAST}")
    expect(page.get_by_test_id("error")).to_be_hidden()  # a failed prefetch says nothing until it is used
    page.get_by_test_id("next").click()
    expect(page.get_by_test_id("error")).to_contain_text("boom at step 2")


def loss_points(page: Page) -> int:
    return page.evaluate("(document.getElementById('loss-plot').data || [{x: []}])[0].x.length")


def test_training_run_live_curve_progress_cancel_and_list(page, base_url):
    page.goto(f"{base_url}/train.html")
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("cfg-max_steps")).to_have_value("200000")  # the lecture's Exercise 4 defaults
    page.get_by_test_id("cfg-max_steps").fill("1000000")
    page.get_by_test_id("start").click()
    expect(page.get_by_test_id("run-title")).to_contain_text("running", timeout=30_000)
    # the curve grows and the progress bar moves while it trains
    page.wait_for_function("document.getElementById('loss-plot').data?.[0]?.x.length > 0", timeout=30_000)
    first_points, first_value = loss_points(page), float(page.get_by_test_id("progress").get_attribute("value") or 0)
    page.wait_for_function(f"document.getElementById('loss-plot').data[0].x.length > {first_points}", timeout=30_000)
    page.wait_for_function(f"Number(document.getElementById('progress').value) > {first_value}", timeout=30_000)
    expect(page.get_by_test_id("progress-text")).to_contain_text("steps/s")
    expect(page.get_by_test_id("progress-text")).to_contain_text("ETA")
    assert page.evaluate("document.getElementById('check-plot').data[0].y.every((d) => d < 1e-6)")
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("run-title")).to_contain_text("cancelled")
    # the title says why once: the status and the reason do not repeat each other
    expect(page.get_by_test_id("run-title")).to_contain_text(": cancelled by its owner")
    expect(page.get_by_test_id("run-title")).not_to_have_text(re.compile(r"cancelled\W+cancelled"))
    run_id = re.search(r"run=(\d+)", page.url).group(1)
    row = page.locator(f"[data-testid=run-row][data-run='{run_id}']")
    expect(row).to_contain_text("cancelled")
    # a permalink reopens the run with its history
    page.goto(f"{base_url}/train.html?run={run_id}")
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("run-title")).to_contain_text("cancelled")
    page.wait_for_function("document.getElementById('loss-plot').data?.[0]?.x.length > 0")


def test_only_the_browser_that_started_a_run_can_cancel_or_delete_it(page, browser, base_url):
    page.goto(f"{base_url}/train.html")
    page.wait_for_selector("body[data-ready='1']")
    page.get_by_test_id("cfg-max_steps").fill("1000000")
    page.get_by_test_id("start").click()
    expect(page.get_by_test_id("run-title")).to_contain_text("running", timeout=30_000)
    run_id = re.search(r"run=(\d+)", page.url).group(1)
    mine = page.locator(f"[data-testid=run-row][data-run='{run_id}']")
    expect(mine.get_by_role("button", name="delete")).to_be_visible()
    expect(page.get_by_test_id("cancel")).to_be_enabled()
    # another browser (no token of this run): it sees the run, and neither control
    other = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        theirs = other.new_page()
        theirs.goto(f"{base_url}/train.html?run={run_id}")
        theirs.wait_for_selector("body[data-ready='1']")
        expect(theirs.get_by_test_id("run-title")).to_contain_text("running", timeout=30_000)
        expect(theirs.get_by_test_id("cancel")).to_be_disabled()
        expect(theirs.get_by_test_id("cancel")).to_have_attribute("title", re.compile("browser that started"))
        row = theirs.locator(f"[data-testid=run-row][data-run='{run_id}']")
        expect(row).to_contain_text("running")
        expect(row.get_by_role("button", name="delete")).to_have_count(0)
        forced = theirs.evaluate(f"fetch('/api/runs/{run_id}/cancel', {{method: 'POST'}}).then((r) => r.status)")
        assert forced == 403
    finally:
        other.close()
    # its owner cancels it, then deletes it
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("run-title")).to_contain_text("cancelled")
    mine.get_by_role("button", name="delete").click()
    expect(mine).to_have_count(0)


def test_finished_run_results_and_its_net_in_the_explorer(page, base_url):
    page.goto(f"{base_url}/train.html")
    page.wait_for_selector("body[data-ready='1']")
    page.get_by_test_id("cfg-max_steps").fill("2000")
    page.get_by_test_id("cfg-lr_decay_step").fill("1000")
    page.get_by_test_id("cfg-backward").select_option("both")
    page.get_by_test_id("start").click()
    expect(page.get_by_test_id("run-title")).to_contain_text("finished", timeout=RUN_ENDS_MS)
    expect(page.get_by_test_id("samples").first).to_be_visible(timeout=30_000)
    assert len(page.get_by_test_id("samples").first.locator("span").all()) == 20
    assert page.evaluate("document.getElementById('loss-plot').data.length") == 4  # 2 runs x (per step, smoothed)
    # each run of the pair has its one-line verdict: the manual one's checks, autograd's own, both losses
    lines = page.get_by_test_id("verdict-line")
    expect(lines).to_have_count(2)
    manual = re.compile(r"^✓ Run #\d+ \(manual\): the manual backward agreed with autograd")
    expect(lines.nth(0)).to_contain_text(manual)
    expect(lines.nth(1)).to_contain_text(re.compile(r"^Run #\d+ \(autograd\): trained on autograd's gradients"))
    for i in range(2):
        expect(lines.nth(i)).to_contain_text("the loss fell")
    title = re.compile(r"^run #\d+ \(manual\): finished · run #\d+ \(autograd\): finished$")
    expect(page.get_by_test_id("run-title")).to_have_text(title)
    # step the backward pass of the trained net
    page.get_by_test_id("explore").click()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("run-note")).to_contain_text("trained run")
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 0 / {STEPS['fused']}")  # fused mode
    act(page, lambda: page.get_by_test_id("run-all").click())
    statuses = node_labels(page)
    assert not any("✗" in label for label in statuses.values()), statuses


def test_a_rejected_run_config_shows_the_servers_reason(page, base_url):
    page.goto(f"{base_url}/train.html")
    page.wait_for_selector("body[data-ready='1']")
    page.get_by_test_id("cfg-check_every").fill("0")
    page.get_by_test_id("start").click()
    expect(page.get_by_test_id("run-error")).to_contain_text("check_every")
    expect(page.get_by_test_id("run-title")).to_contain_text("No run open")


def test_training_with_your_own_backward(page, base_url):
    from .test_train_code import BLOCK

    page.goto(f"{base_url}/train.html")
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("code-box")).to_be_hidden()
    page.get_by_test_id("cfg-backward").select_option("code")
    expect(page.get_by_test_id("code-box")).to_be_visible()
    # the box starts from the notebook's frame, and says what the block reads, as the server declares it
    expect(page.get_by_test_id("cfg-code")).to_have_value(
        re.compile(r"grads = \[dC, dW1, db1, dW2, db2, dbngain, dbnbias\]")
    )
    for name in served(page, "/api/meta")["train_code"]["reads"]:
        expect(page.get_by_test_id("code-help")).to_contain_text(name)
    page.get_by_test_id("cfg-max_steps").fill("400")
    page.get_by_test_id("cfg-lr_decay_step").fill("200")
    page.get_by_test_id("cfg-check_every").fill("100")
    # a block the sandbox refuses: its reason, and no run
    page.get_by_test_id("cfg-code").fill(BLOCK.replace("dh = dlogits @ W2.T", "dh = dlogits @ W2"))
    page.get_by_test_id("start-code").click()
    expect(page.get_by_test_id("run-error")).to_contain_text("did you mean dlogits @ W2.T?")
    expect(page.get_by_test_id("run-title")).to_contain_text("No run open")
    # the notebook's block trains; the run says its checks agreed and the loss fell
    page.get_by_test_id("cfg-code").fill(BLOCK)
    page.get_by_test_id("start-code").click()
    verdict = page.get_by_test_id("verdict")
    expect(verdict).to_contain_text("your backward agreed with autograd at all 5 checks", timeout=RUN_ENDS_MS)
    expect(verdict).to_contain_text("the loss fell")
    expect(page.get_by_test_id("samples")).to_be_visible()
    assert page.evaluate("document.getElementById('check-plot').data.length") == 1  # no check disagrees
    expect(page.get_by_test_id("run-code").locator("pre")).to_have_text(BLOCK)
    # fixed wrong: a sign flipped; edited from the run and trained again, its checks are marked and it says so
    page.get_by_test_id("run-code").locator("summary").click()
    page.get_by_test_id("edit-code").click()
    expect(page.get_by_test_id("cfg-code")).to_have_value(BLOCK)
    page.get_by_test_id("cfg-code").fill(BLOCK.replace("dlogits /= n", "dlogits /= -n"))
    page.get_by_test_id("start-code").click()
    expect(verdict).to_contain_text(
        "your backward disagrees with autograd from the check at step 0", timeout=RUN_ENDS_MS
    )
    expect(verdict).to_contain_text("the loss did not fall")
    wrong = page.evaluate("document.getElementById('check-plot').data[1]")
    assert wrong["name"].endswith("disagrees") and wrong["x"] == [0, 100, 200, 300, 399]
    assert "dW2" in wrong["text"][0]
    # the page flows: the runs list below the plots, not over them
    plots, runs = page.locator("main").bounding_box(), page.locator(".runs").bounding_box()
    assert runs["y"] >= plots["y"] + plots["height"] > plots["y"] + 600


def test_the_training_page_at_a_phones_width(page, base_url):
    from .test_train_code import BLOCK

    wrong = BLOCK.replace("dh = dlogits @ W2.T", "dh = dlogits @ W2.T * n")
    line = next(i for i, text in enumerate(wrong.splitlines(), 1) if text.startswith("dh = "))
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base_url}/train.html")
    page.wait_for_selector("body[data-ready='1']")
    page.get_by_test_id("cfg-backward").select_option("code")
    page.get_by_test_id("cfg-max_steps").fill("300")
    page.get_by_test_id("cfg-lr_decay_step").fill("150")
    page.get_by_test_id("cfg-check_every").fill("100")
    page.get_by_test_id("cfg-code").fill(wrong)
    page.get_by_test_id("start-code").click()
    expect(page.get_by_test_id("samples")).to_be_visible(timeout=RUN_ENDS_MS)
    # the verdict names the block's first wrong line, whole: wrapped inside the page, nothing scrolled away
    verdict = page.get_by_test_id("verdict")
    expect(verdict).to_contain_text(f"line {line} dh = dlogits @ W2.T * n")
    expect(verdict.locator("code")).to_have_text("dh = dlogits @ W2.T * n")
    fits = page.evaluate("""() => { const v = document.getElementById('verdict');
      return {inside: v.scrollWidth <= v.clientWidth, right: v.getBoundingClientRect().right,
              page: document.documentElement.scrollWidth}; }""")
    assert fits["inside"] and fits["right"] <= 390 and fits["page"] <= 390, fits
    # the histograms' legend hangs below their axis titles, not over them
    page.get_by_test_id("hist-plot").locator(".legend").wait_for()
    hist = page.evaluate("""() => { const hist = document.getElementById('hist-plot');
      const titles = [...hist.querySelectorAll('.g-xtitle, .g-x2title')].map((t) => t.getBoundingClientRect().bottom);
      return {legend: hist.querySelector('.legend').getBoundingClientRect().top, titles}; }""")
    assert len(hist["titles"]) == 2 and hist["legend"] >= max(hist["titles"]), hist
    # the runs table: every cell of the run's row and its delete button within the page's width
    row = page.locator("[data-testid=run-row]").first
    cells = row.evaluate("(tr) => [...tr.cells].map((c) => [c.textContent.trim(), c.getBoundingClientRect().right])")
    assert len(cells) == 9 and all(right <= 390 for _, right in cells), cells
    assert re.fullmatch(r"\d\.\d{4}", cells[5][0]), cells  # the val loss, the column a phone used to cut
    box = row.get_by_role("button", name="delete").bounding_box()
    assert box and box["x"] + box["width"] <= 390, box


DLOGPROBS = "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"


def check_code(page: Page, code: str) -> None:
    page.get_by_test_id("challenge-code").fill(code)
    page.get_by_test_id("challenge-feedback").evaluate("el => el.replaceChildren()")
    page.get_by_test_id("challenge-check").click()
    page.wait_for_selector("[data-testid=challenge-feedback] p")


def test_challenge_lecture_answer_wrong_shape_and_progress(page, base_url):
    open_page(page, f"{base_url}/?step=0")
    page.get_by_test_id("challenge-toggle").check()
    expect(page.get_by_test_id("challenge-task")).to_contain_text("Write dlogprobs")
    check_code(page, DLOGPROBS)
    expect(page.get_by_test_id("challenge-feedback")).to_contain_text(
        "dlogprobs       | exact: True | approximate: True"
    )
    expect(page.get_by_test_id("challenge-progress")).to_contain_text(f"1 of {LAST} steps solved")
    # step 3: a wrong shape gets the broadcast explanation and a diff heatmap
    open_page(page, f"{base_url}/?step=2")
    check_code(page, "dcounts_sum_inv = counts * dprobs\ndcounts = counts_sum_inv * dprobs")
    expect(page.get_by_test_id("challenge-feedback")).to_contain_text(
        "yours is (32,27), expected (32,1): the forward pass broadcast this over dim 1"
    )
    # no maxdiff exists between different shapes: the grade line says so instead of "maxdiff: null"
    expect(page.get_by_test_id("challenge-feedback")).to_contain_text("dcounts_sum_inv | shape (32,27) against")
    expect(page.get_by_test_id("challenge-feedback")).not_to_contain_text("null")
    # dcounts is right (its difference is 0 everywhere), dcounts_sum_inv has another shape: nothing to draw
    expect(page.get_by_test_id("challenge-diff")).to_be_hidden()
    check_code(page, "dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)\ndcounts = counts_sum_inv * dprobs * 2")
    expect(page.get_by_test_id("challenge-diff")).to_have_attribute("data-shape", "32x27")
    # drawn as the inspector draws its heatmaps: cells in the tensor's own shape, a colour bar with numbers
    expect(page.get_by_test_id("challenge-main-cells")).to_be_visible()
    rows, cols = page.get_by_test_id("challenge-main-cells").evaluate("(c) => [c.grid.z.length, c.grid.z[0].length]")
    assert (rows, cols) == (32, 27)
    assert len(json.loads(page.get_by_test_id("challenge-colorbar").get_attribute("data-ticks"))) >= 3
    # hints climb the ladder to the answer
    for _ in range(4):
        page.get_by_test_id("challenge-hint").click()
    expect(page.get_by_test_id("challenge-hints").locator("li")).to_have_count(4)
    expect(page.get_by_test_id("challenge-hints")).to_contain_text(
        "dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)"
    )
    # progress is kept in the browser, per mode
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("challenge-progress")).to_contain_text(f"1 of {LAST} steps solved, 1 revealed")


def test_challenge_takes_the_notebooks_loop_as_typed_and_names_a_forgotten_n(page, base_url):
    open_page(page, f"{base_url}/?step=19")
    page.get_by_test_id("challenge-toggle").check()
    expect(page.get_by_test_id("challenge-task")).to_contain_text("Write dC")
    box = page.get_by_test_id("challenge-code")
    box.click()
    # typed line by line with Enter, no spaces: the box indents the loops' bodies as the notebook does
    page.keyboard.type("dC = torch.zeros_like(C)\nfor k in range(Xb.shape[0]):\nfor j in range(Xb.shape[1]):\n"
                       "ix = Xb[k,j]\ndC[ix] += demb[k,j]")  # fmt: skip
    assert box.input_value() == (
        "dC = torch.zeros_like(C)\nfor k in range(Xb.shape[0]):\n  for j in range(Xb.shape[1]):\n"
        "    ix = Xb[k,j]\n    dC[ix] += demb[k,j]"
    )
    expect(box).to_have_attribute("rows", "5")  # the whole loop in view
    page.get_by_test_id("challenge-check").click()
    expect(page.get_by_test_id("challenge-feedback")).to_contain_text("dC is right")
    # a gradient of the right shape with the wrong numbers is told its slip, not a bare maxdiff
    open_page(page, f"{base_url}/?step=0")
    check_code(page, "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0")
    expect(page.get_by_test_id("challenge-feedback")).to_contain_text(
        "dlogprobs is 32× autograd's — n is 32: did you forget /n?"
    )
    expect(page.get_by_test_id("challenge-diff")).to_have_attribute("data-shape", "32x27")


def test_challenge_hostile_code_is_refused_and_the_server_keeps_serving(page, base_url):
    open_page(page, f"{base_url}/?step=0")
    page.get_by_test_id("challenge-toggle").check()
    check_code(page, "x = counts.__class__.__mro__\nimport os")
    expect(page.get_by_test_id("challenge-refused")).to_contain_text("only assignments")
    check_code(page, "torch.save(logprobs, 'owned.pt')")
    expect(page.get_by_test_id("challenge-refused")).to_contain_text("not available")
    assert not (ROOT / "owned.pt").exists()
    check_code(page, DLOGPROBS)  # the evaluator still answers
    expect(page.get_by_test_id("challenge-feedback")).to_contain_text("exact: True")
    act(page, lambda: page.get_by_test_id("next").click())  # and the explorer still serves
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 1 / {LAST}")


def test_bug_lab_tells_the_truth(page, base_url):
    open_page(page, f"{base_url}/?step=0")
    page.get_by_test_id("cfg-bug").select_option("no_broadcast_sum")  # applies when chosen
    page.wait_for_selector("[data-testid=bug-note]:not([hidden])")
    expect(page.get_by_test_id("bug-note")).to_contain_text("forgot the sum over a broadcast dimension")
    assert "bug=no_broadcast_sum" in page.url
    for _ in range(3):
        act(page, lambda: page.get_by_test_id("next").click())
    # the banner and the inspector show the buggy line in place of the right one, marked as the bug
    banner = page.get_by_test_id("op-banner")
    expect(banner.locator(".bug-tag")).to_have_text("BUG")
    expect(banner).to_contain_text("dcounts_sum_inv = counts * dprobs")
    expect(banner).not_to_contain_text("(counts * dprobs).sum(1, keepdim=True)")
    click_node(page, "counts_sum_inv")
    expect(page.get_by_test_id("bug-tag")).to_be_visible()
    # the wrong-shaped gradient in its own shape beside the expected one; a finite check line
    expect(page.get_by_test_id("thumb-manual")).to_have_attribute("data-shape", "32x27")
    expect(page.get_by_test_id("thumb-autograd")).to_have_attribute("data-shape", "32x1")
    # the server's sentence for a shape mismatch: there is no maxdiff to print
    expect(page.get_by_test_id("check")).to_contain_text("shape (32,27) against autograd's (32,1)")
    for text in ("NaN", "Inf", "null", "maxdiff"):
        expect(page.get_by_test_id("check")).not_to_contain_text(text)
    expect(page.get_by_test_id("thumb-diff")).to_contain_text("shapes differ")
    act(page, lambda: page.get_by_test_id("run-all").click())
    labels = node_labels(page)
    for node in ("counts_sum_inv", "counts", "logits", "h", "W1", "C"):
        assert "✗" in labels[node], (node, labels[node])
    for node in ("probs", "logprobs"):  # downstream of the bug in the forward pass: still right
        assert "✗" not in labels[node], (node, labels[node])
    # where it starts is marked; every other wrong node shows how wrong it is
    assert [name for name, label in labels.items() if "⚑" in label] == ["counts_sum_inv"]
    expect(page.get_by_test_id("gnode-counts_sum_inv")).to_have_attribute("aria-label", re.compile("error starts here"))
    assert re.search(r"\d+(\.\d+)?%|e-\d", labels["counts"]), labels["counts"]


def test_bug_lab_sizes_errors_and_offers_only_the_modes_bugs(page, base_url):
    open_page(page, f"{base_url}/?step=0&bug=bessel_n")
    act(page, lambda: page.get_by_test_id("run-all").click())
    labels = node_labels(page)
    # n instead of n-1: a ~3% error at its origin, not the saturated look of a lost +=
    assert re.search(r"✗ [23](\.\d)?%", labels["bndiff2"]), labels["bndiff2"]
    options = page.get_by_test_id("cfg-bug").locator("option").all_text_contents()
    bugs = served(page, "/api/bugs")["bugs"]
    assert sorted(options) == sorted(["none"] + [b["title"] for b in bugs if "atomic" in b["modes"]])
    # a mode that fuses the bug's op away switches it off and says so
    act(page, lambda: page.get_by_test_id("mode").select_option("fused_bn"))
    expect(page.get_by_test_id("mode-note")).to_contain_text("switched off")
    assert "bug=" not in page.url
    options = page.get_by_test_id("cfg-bug").locator("option").all_text_contents()
    assert sorted(options) == sorted(["none"] + [b["title"] for b in bugs if "fused_bn" in b["modes"]])


def serious_violations(page: Page) -> list[str]:
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize(
    "query",
    [
        "mode=atomic&step=3",
        "mode=fused_ce&step=4&node=logits&pin=1",
        f"mode=fused_bn&step={STEPS['fused_bn']}&node=hprebn&pin=1",
        f"mode=fused&step={STEPS['fused']}&node=loss&pin=1",
        f"bug=no_broadcast_sum&step={LAST}&node=counts_sum_inv&pin=1",
        f"step={LAST}&node=W2&pin=1&why=1",  # the why drawer open: MathML, tables, the forces' bars
        f"step={LAST}&node=logits&pin=1&why=1",
    ],
)
def test_axe_finds_no_serious_violation_in_the_explorer(page, base_url, query):
    open_page(page, f"{base_url}/?{query}")
    if "why=1" in query:
        page.locator("#why[data-node]").wait_for()
    assert not serious_violations(page)


def all_violations(page: Page) -> list[str]:
    """Every axe finding, minor to critical."""
    results = Axe().run(page)
    found = results.response["violations"]
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}" for v in found]


def test_axe_finds_no_violation_on_the_training_page(page, base_url):
    page.goto(f"{base_url}/train.html")
    page.wait_for_selector("body[data-ready='1']")
    assert not all_violations(page)
    page.get_by_test_id("cfg-backward").select_option("code")  # the code box: its legend, help and buttons
    expect(page.get_by_test_id("code-box")).to_be_visible()
    assert not all_violations(page)
    # a finished run: its verdict, its result's heading, its row with a delete button in the runs table
    page.get_by_test_id("cfg-backward").select_option("manual")
    page.get_by_test_id("cfg-max_steps").fill("300")
    page.get_by_test_id("cfg-lr_decay_step").fill("150")
    page.get_by_test_id("start").click()
    expect(page.get_by_test_id("samples")).to_be_visible(timeout=RUN_ENDS_MS)
    expect(page.get_by_test_id("verdict")).to_be_visible()
    expect(page.locator("[data-testid=run-row] button[data-delete]").first).to_be_visible()
    assert not all_violations(page)


def hex_rgb(color: str) -> list[float]:
    return [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]


def contrast(a: str, b: str = "#ffffff") -> float:
    def lum(color: str) -> float:
        c = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in hex_rgb(color)]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_status_palette_contrast_and_colour_vision(page, base_url):
    open_page(page, base_url)
    palette = page.evaluate("import('/js/config.js').then((m) => ({status: m.STATUS, text: m.TEXT, muted: m.MUTED}))")
    colours = {name: s["color"] for name, s in palette["status"].items() if name != "none"}
    for name, colour in colours.items():
        assert contrast(colour) >= 3.0, (name, colour, contrast(colour))  # WCAG 2.1 graphics, on white
        assert contrast(palette["text"], palette["status"][name]["fill"]) >= 4.5  # labels on the box's fill
    assert contrast(palette["muted"]) >= 4.5
    # pairwise distinct for normal vision and under full deutan, protan and tritan deficiency (CAM02-UCS ΔE)
    for cvd in (None, "deuteranomaly", "protanomaly", "tritanomaly"):
        space = {"name": "sRGB1+CVD", "cvd_type": cvd, "severity": 100} if cvd else "sRGB1"
        seen = {
            n: cspace_convert(numpy.clip(cspace_convert(hex_rgb(c), space, "sRGB1"), 0, 1), "sRGB1", "CAM02-UCS")
            for n, c in colours.items()
        }
        for a, b in itertools.combinations(seen, 2):
            distance = float(((seen[a] - seen[b]) ** 2).sum() ** 0.5)
            assert distance >= 10, (cvd, a, b, distance)


def test_a_keyboard_only_walk_opens_a_node(page, base_url):
    open_page(page, f"{base_url}/?step=2")
    for _ in range(40):  # Tab until the focus is in the graph (one tab stop for all its nodes)
        page.keyboard.press("Tab")
        if page.evaluate("!!document.activeElement.closest('#graph')"):
            break
    start = page.evaluate("document.activeElement.dataset.id")
    assert start, "Tab never reached the graph"
    expect(page.get_by_test_id("tooltip")).to_be_visible()  # focus shows what the node is
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    moved = page.evaluate("document.activeElement.dataset.id")
    assert moved != start and moved.startswith("tensor:"), moved
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 2 / {LAST}")  # the arrows moved focus, not the step
    act(page, lambda: page.keyboard.press("Enter"))
    expect(page.get_by_test_id("panel-title")).to_contain_text(moved.split(":", 1)[1])
    # focus stays on a step button when it disables at the end
    page.get_by_test_id("run-all").focus()
    act(page, lambda: page.keyboard.press("Enter"))
    assert page.evaluate("document.activeElement.id") == "prev"


def test_phone_no_sideways_scroll_and_tap_tooltips(browser, base_url):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    try:
        open_page(pg, f"{base_url}/?step=1&node=logprobs")
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        # graph above, inspector below
        graph, panel = pg.locator("#graph").bounding_box(), pg.get_by_test_id("panel").bounding_box()
        assert panel["y"] >= graph["y"] + graph["height"]
        pg.get_by_test_id("gop-loss").tap()
        expect(pg.get_by_test_id("tooltip")).to_be_visible()
        expect(pg.get_by_test_id("tooltip")).to_contain_text("loss = -logprobs[range(n), Yb].mean()")
        pg.get_by_test_id("legend").tap()  # a tap elsewhere hides it
        expect(pg.get_by_test_id("tooltip")).to_be_hidden()
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        # the why drawer covers the phone's screen; its long lines of math scroll inside it, not the page
        open_page(pg, f"{base_url}/?mode=fused_bn&step={STEPS['fused_bn']}&node=hprebn&pin=1&why=1")
        drawer = pg.get_by_test_id("why")
        expect(drawer).to_have_attribute("data-node", "hprebn")
        box = drawer.bounding_box()
        assert box["x"] == 0 and box["width"] == 390
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        assert drawer.evaluate("(d) => d.scrollWidth") <= 390
        pg.get_by_test_id("why-close").tap()
        expect(drawer).to_be_hidden()
    finally:
        context.close()


# ---- the why drawer ------------------------------------------------------------------------------------

WHY_MODES = ["atomic", "fused_ce", "fused_bn", "fused"]


def drawer_text(page: Page) -> str:
    return page.get_by_test_id("why").inner_text()


def completion_steps(graph: dict) -> dict[str, int]:
    """The step at which each gradient is complete: the last op in the schedule that adds to it."""
    ops = {op["name"]: op for op in graph["ops"]}
    done = {}
    for step, name in enumerate(graph["schedule"], start=1):
        for rule in ops[name]["rules"]:
            done[rule["target"]] = step
    return done


def notebook_line(name: str, cmp: dict) -> str:
    # the lecture's cmp(), as the notebook writes it, with the values the API serves
    return (
        f"{name:15s} | exact: {str(cmp['exact']):5s} | approximate: {str(cmp['approx']):5s} | maxdiff: {cmp['maxdiff']}"
    )


def check_the_check_cell(page: Page, mode: str, step: int) -> None:
    state = served(page, f"/api/state?mode={mode}&step={step}")
    graph = served(page, f"/api/graph?mode={mode}")
    lines = page.get_by_test_id("check-cell-text").inner_text().split("\n")
    cmp_lines = [line for line in lines if not line.startswith("#")]
    complete = {
        name for name, node in state["nodes"].items() if node["status"] == "complete" and node["cmp"] and name != "loss"
    }
    names = [line[:15].strip() for line in cmp_lines]
    assert set(names) == complete
    for name, line in zip(names, cmp_lines, strict=True):
        assert line.startswith(notebook_line(name, state["nodes"][name]["cmp"])), line
    order = completion_steps(graph)
    assert [order[n] for n in names] == sorted(order[n] for n in names)  # in the order the backward completed them


@pytest.mark.parametrize("mode", WHY_MODES)
def test_the_drawer_in_every_mode(page, base_url, mode):
    open_page(page, f"{base_url}/?mode={mode}&node=logits&step=0")
    expect(page.get_by_test_id("why")).to_be_hidden()
    graph = served(page, f"/api/graph?mode={mode}")
    step = len(graph["schedule"])
    act(page, lambda: page.get_by_test_id("run-all").click())
    # the view followed the step to the last gradient: open the logits again, then the drawer by its button
    act(page, lambda: page.get_by_test_id("gnode-logits").click())
    page.get_by_test_id("why-open").click()
    drawer = page.get_by_test_id("why")
    expect(drawer).to_be_visible()
    expect(drawer.locator(".why-head h2")).to_contain_text("dlogits")
    expect(page.get_by_test_id("derivation").first).to_be_visible()
    assert drawer.locator("math").count() >= 3
    assert drawer.locator("math mtext.sym").count() >= 2  # the names in the math point at the graph
    text = drawer_text(page)
    for raw in ("\\", "_{", "^{", "frac", "text{"):
        assert raw not in text, f"raw LaTeX {raw!r} visible in the drawer"
    # the forces on one row: bars at the probabilities the API serves, and a row sum of 0
    logits = served(page, f"/api/tensor/logits?mode={mode}&step={step}")
    row = logits["value"]["data"][0]
    top = max(row)
    exps = [math.exp(x - top) for x in row]
    probs = [e / sum(exps) for e in exps]
    if mode in ("atomic", "fused_bn"):  # the probs node is served: the bars are its entries
        probs = served(page, f"/api/tensor/probs?mode={mode}&step={step}")["value"]["data"][0]
    bars = page.get_by_test_id("force-row")
    expect(bars).to_have_count(27)
    shown = [float(bars.nth(j).get_attribute("data-prob")) for j in range(27)]
    assert shown == pytest.approx(probs, abs=1e-6)
    assert abs(float(page.get_by_test_id("forces-sum").get_attribute("data-value"))) < 1e-7
    check_the_check_cell(page, mode, step)
    # Escape closes it, and the permalink says so
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    assert "why=1" not in page.url


def test_worked_examples_show_the_served_numbers(page, base_url):
    # the matrix products, tanh, the max's row, C's scatter and log's 1/x: each number names the entry it shows
    tensors: dict[str, dict] = {}  # each served tensor fetched once: many numbers show entries of the same one
    for node in ("W2", "h", "hpreact", "logits", "C", "probs"):
        open_page(page, f"{base_url}/?step={LAST}&node={node}&pin=1&why=1")
        expect(page.get_by_test_id("why")).to_have_attribute("data-node", node)
        numbers = page.locator("#why .num[data-tensor]").evaluate_all("(nums) => nums.map((n) => ({...n.dataset}))")
        assert len(numbers) >= 1
        for num in numbers:
            tensor, grad, step = num["tensor"], num.get("grad") == "1", num.get("step") or LAST
            index = [int(i) for i in num["index"].split(",")]
            url = f"/api/tensor/{tensor}?step={step}"
            if url not in tensors:
                tensors[url] = served(page, url)
            data = tensors[url]["grad_manual" if grad else "value"]["data"]
            for i in index:
                data = data[i]
            assert float(num["value"]) == data, (node, tensor, grad, index)
    # log: the chosen entry and its row's target, where dlogprobs's -1/n meets 1/probs
    open_page(page, f"{base_url}/?step={LAST}&node=probs&pin=1&why=1")
    expect(page.get_by_test_id("example-log")).to_be_visible()
    expect(page.get_by_test_id("log-entries").locator("tr")).to_have_count(3)  # the header and two entries
    expect(page.get_by_test_id("example-log")).to_contain_text("the harder the gradient pushes")
    # a broadcast's sum: every term's operands are the served entries, and the total is the served gradient
    open_page(page, f"{base_url}/?step={LAST}&node=counts_sum_inv&pin=1&why=1")
    example = page.get_by_test_id("example-sum")
    expect(example).to_be_visible()
    counts = served(page, f"/api/tensor/counts?step={LAST}")["value"]["data"]
    dprobs = served(page, "/api/tensor/probs?step=2")["grad_manual"]["data"]  # as the probs' step received it
    terms = page.get_by_test_id("sum-terms").locator("li")
    expect(terms).to_have_count(27)
    for k in range(27):
        operands = json.loads(terms.nth(k).get_attribute("data-operands"))
        by = {(o["tensor"], o["grad"]): o for o in operands}
        i, j = by[("counts", False)]["index"]
        assert by[("counts", False)]["value"] == counts[i][j]
        assert by[("probs", True)]["value"] == dprobs[i][j]
    total = float(page.get_by_test_id("sum-total").get_attribute("data-value"))
    assert total == served(page, f"/api/tensor/counts_sum_inv?step={LAST}")["grad_manual"]["data"][0][0]


def test_hovering_a_gradient_cell_writes_its_rule_with_the_served_numbers(page, base_url):
    open_page(page, f"{base_url}/?step=2&node=probs&pin=1")
    cell = page.evaluate(
        """() => { const d = document.querySelector('[data-testid=heatmap-main]');
          const xa = d._fullLayout.xaxis, ya = d._fullLayout.yaxis, r = d.getBoundingClientRect();
          return {px: r.left + xa._offset + xa._length * (7.5 / 27),
                  py: r.top + ya._offset + ya._length * (3.5 / 32)}; }"""
    )
    page.mouse.move(cell["px"], cell["py"])
    box = page.get_by_test_id("cell-rule")
    expect(box).to_be_visible()
    expect(box).to_have_attribute("data-index", "3,7")
    expect(box).to_contain_text("dprobs[3,7] = (1.0 / probs[3,7]) * dlogprobs[3,7]")
    probs = served(page, "/api/tensor/probs?step=2")
    received = served(page, "/api/tensor/logprobs?step=1")["grad_manual"]["data"]  # what the step read
    operands = {o["tensor"]: o for o in json.loads(box.get_attribute("data-operands"))}
    assert operands["probs"]["value"] == probs["value"]["data"][3][7] and not operands["probs"]["grad"]
    assert operands["logprobs"]["value"] == received[3][7] and operands["logprobs"]["grad"]
    assert float(box.get_attribute("data-total")) == probs["grad_manual"]["data"][3][7]


def test_a_name_in_the_math_points_at_its_node_in_the_graph(page, base_url):
    open_page(page, f"{base_url}/?step=3&node=counts_sum_inv&pin=1&why=1")
    expect(page.get_by_test_id("why")).to_have_attribute("data-node", "counts_sum_inv")
    symbol = page.locator('#why mtext.sym[data-node="counts"]').first
    symbol.hover()
    expect(page.locator('#graph [data-testid="gnode-counts"]')).to_have_class(re.compile(r"\bsym-hl\b"))
    # the lecture's remark on 1.0/x, measured: exact with **-1, approximate with a division
    division = page.get_by_test_id("division")
    expect(division).to_contain_text("1.0 / counts_sum")
    rows = division.locator("tr")
    expect(rows.nth(1)).to_contain_text("True")
    expect(rows.nth(2)).to_contain_text("False")


def test_show_the_answer_reveals_a_step_as_revealed_and_next_stays(page, base_url):
    open_page(page, f"{base_url}/?step=0")
    act(page, lambda: page.get_by_test_id("challenge-toggle").check())
    click_node(page, "logprobs")
    rule = "dlogprobs = torch.zeros_like(logprobs)"
    expect(page.get_by_test_id("panel")).to_contain_text("hidden in challenge mode: solve step 1")
    expect(page.get_by_test_id("panel")).not_to_contain_text(rule)
    expect(page.get_by_test_id("thumb-autograd")).to_contain_text("hidden in challenge mode")
    expect(page.get_by_test_id("op-banner")).not_to_contain_text(rule)
    assert not serious_violations(page)  # the hidden panels and the Show the answer button
    act(page, lambda: page.get_by_test_id("challenge-reveal").click())
    expect(page.get_by_test_id("panel")).to_contain_text(rule)
    expect(page.get_by_test_id("thumb-autograd").locator("canvas")).to_be_visible()
    expect(page.get_by_test_id("challenge-progress")).to_contain_text(f"0 of {LAST} steps solved, 1 revealed")
    # the next step's answer stays hidden, and Next steps on without solving it
    act(page, lambda: page.get_by_test_id("next").click())
    click_node(page, "probs")
    expect(page.get_by_test_id("panel")).to_contain_text("hidden in challenge mode: solve step 2")
    act(page, lambda: page.get_by_test_id("next").click())
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 2 / {LAST}")
    expect(page.get_by_test_id("op-banner")).to_contain_text("dprobs = ?")
    # challenge mode off: everything is shown again
    act(page, lambda: page.get_by_test_id("challenge-toggle").uncheck())
    expect(page.get_by_test_id("op-banner")).to_contain_text("dprobs = (1.0 / probs) * dlogprobs")


def test_a_chosen_mode_leaves_the_arrows_to_stepping_and_the_views_are_tabs(page, base_url):
    open_page(page, f"{base_url}/?step=0")
    page.get_by_test_id("mode").focus()
    act(page, lambda: page.get_by_test_id("mode").select_option("fused_ce"))
    expect(page.get_by_test_id("mode")).not_to_be_focused()
    act(page, lambda: page.keyboard.press("ArrowRight"))  # Next, not the next mode
    expect(page.get_by_test_id("mode")).to_have_value("fused_ce")
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 1 / {STEPS['fused_ce']}")
    # the view buttons: a tablist whose arrows move between the views and leave the step alone
    expect(page.locator(".views")).to_have_attribute("role", "tablist")
    expect(page.get_by_test_id("view-manual")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("view-manual")).to_have_attribute("tabindex", "0")
    expect(page.get_by_test_id("view-autograd")).to_have_attribute("tabindex", "-1")
    page.get_by_test_id("view-manual").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_test_id("view-autograd")).to_be_focused()
    expect(page.get_by_test_id("view-autograd")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("heatmap-main")).to_have_attribute("data-view", "autograd")
    page.keyboard.press("End")
    expect(page.get_by_test_id("view-diff")).to_be_focused()
    page.keyboard.press("ArrowRight")  # wraps round
    expect(page.get_by_test_id("view-value")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 1 / {STEPS['fused_ce']}")
    assert "view=value" in page.url


BAD_URLS = [
    ("bug=nonsense", "bug=nonsense is not one of no_broadcast_sum", "atomic", 0),
    ("step=99", "step=99 is past the last step of Exercise 1", "atomic", LAST),
    ("batch_size=1", "batch_size=1 is below the minimum", "atomic", 0),
    ("seed=-1", "seed=-1 is below the minimum, 0", "atomic", 0),
    ("mode=fused&bug=bessel_n", "the bug bessel_n sits in an op this mode", "fused", 0),
    ("mode=foo", 'there is no mode "foo": showing Exercise 1', "atomic", 0),
    ("node=nope", 'there is no tensor "nope" in this mode: showing none', "atomic", 0),
]


def test_a_bad_url_names_what_was_wrong_and_draws_the_nearest_valid_state(page, base_url):
    for query, note, mode, step in BAD_URLS:
        open_page(page, f"{base_url}/?{query}")
        expect(page.get_by_test_id("url-note")).to_be_visible()
        expect(page.get_by_test_id("url-note")).to_contain_text(note)
        assert page.get_by_test_id("url-note").locator("p").count() == 1, query  # one plain line
        expect(page.get_by_test_id("error")).to_be_hidden()
        expect(page.get_by_test_id("mode")).to_have_value(mode)
        expect(page.get_by_test_id("step-label")).to_have_text(f"step {step} / {STEPS[mode]}")
        assert len(graph_nodes(page)) == NODE_COUNT[mode], query  # the explorer is drawn
        assert "Input should be" not in page.locator("body").inner_text(), query
        assert "nope" not in page.url and "nonsense" not in page.url and "foo" not in page.url, query


def test_the_data_line_names_the_names_list_loaded(page, base_url):
    open_page(page, base_url)
    # drawn with the first graph, not after it: a line filled in later moves the page under the pointer
    assert page.evaluate("document.getElementById('data-line').textContent.length") > 0
    ds = served(page, "/api/dataset")
    line = page.get_by_test_id("data-line")
    expect(line).to_contain_text(f"{ds['file']}, {ds['words']:,} words, sha256 {ds['sha256'][:12]}")
    expect(line).not_to_contain_text("--data")

    # the embedded list says it is not the lecture's, and how to load that (the flag the server takes)
    def embedded(route):
        answer = route.fetch().json()
        route.fulfill(json={**answer, "embedded": True})

    page.route(lambda url: "/api/dataset" in url, embedded)
    open_page(page, base_url)
    expect(line).to_contain_text("not the lecture's")
    expect(line).to_contain_text("--data path/to/names.txt")


def test_the_why_drawer_docks_beside_the_heatmap_and_fits_a_phone(browser, base_url):
    query = f"/?mode=fused&step={STEPS['fused']}&node=hprebn&pin=1&why=1"
    for width, height in ((1280, 800), (390, 844)):
        context = browser.new_context(viewport={"width": width, "height": height}, has_touch=width < 500)
        pg = context.new_page()
        try:
            open_page(pg, base_url + query)
            pg.locator("#why[data-node]").wait_for()
            fits = pg.evaluate(
                """() => { const why = document.getElementById('why');
                  return {page: document.documentElement.scrollWidth, drawer: why.scrollWidth - why.clientWidth,
                    math: Math.max(...[...why.querySelectorAll('.math')]
                      .map((m) => m.scrollWidth - m.clientWidth))}; }"""
            )
            assert fits == {"page": width, "drawer": 0, "math": 0}, (width, fits)
            pg.screenshot(path=str(ARTIFACTS / f"why-drawer-{width}.png"))
            if width < 1100:
                continue
            # docked: the heatmap is beside the drawer, and its cells take the click that picks the examples' entry
            pg.get_by_test_id("main-cells").scroll_into_view_if_needed()
            why, cells = pg.locator("#why").bounding_box(), pg.get_by_test_id("main-cells").bounding_box()
            assert cells["x"] + cells["width"] <= why["x"], (cells, why)
            at = (cells["x"] + cells["width"] * 0.75, cells["y"] + min(12, cells["height"] / 4))
            assert pg.evaluate("([x, y]) => document.elementFromPoint(x, y).dataset.testid", at) == "main-cells"
            pg.mouse.click(*at)
            expect(pg.locator("#why .muted").first).not_to_contain_text("entry [0, 0]")
        finally:
            context.close()


def test_a_phones_heatmap_has_the_width_and_its_graph_nodes_are_tall_enough_to_tap(browser, base_url):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    try:
        open_page(pg, f"{base_url}/?step=3&node=counts&pin=1")
        cells = pg.get_by_test_id("main-cells").bounding_box()
        assert cells["width"] >= 0.62 * 390, cells  # 205 px beside a 96 px label margin before
        heights = pg.evaluate("[...document.querySelectorAll('#graph .gnode')].map((b) => b.offsetHeight)")
        assert min(heights) >= 24, min(heights)
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        pg.screenshot(path=str(ARTIFACTS / "phone-heatmap.png"), full_page=True)
    finally:
        context.close()
