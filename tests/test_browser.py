"""The page in a real browser: Playwright driving Debian Chromium against the real server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from .live_server import live_server

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
LECTURE_DATA = ROOT.parent / "shared" / "data" / "names.txt"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def base_url():
    with live_server("--data", str(LECTURE_DATA)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Debian's chromium is required: apt-get install -y chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, errors


def renders(page: Page) -> int:
    return int(page.evaluate("document.body.dataset.renders || '0'"))


def act(page: Page, action) -> None:
    """Do something that re-renders, and wait until that render is finished."""
    before = renders(page)
    action()
    page.wait_for_function(f"Number(document.body.dataset.renders || 0) > {before}")


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")


NODE_TRACE = "document.getElementById('graph').data.find((t) => t.name === 'nodes')"


def graph_nodes(page: Page) -> list[str]:
    return page.evaluate(f"{NODE_TRACE}.customdata")


def node_labels(page: Page) -> dict[str, str]:
    return page.evaluate(
        f"(() => {{ const t = {NODE_TRACE};"
        " return Object.fromEntries(t.customdata.map((n, i) => [n, t.text[i]])); })()"
    )


def node_points(page: Page) -> Locator:
    """The drawn SVG markers of the node trace."""
    trace = page.evaluate("document.getElementById('graph').data.findIndex((t) => t.name === 'nodes')")
    return page.locator("#graph .scatterlayer .trace").nth(trace).locator(".point")


def click_node(page: Page, name: str) -> None:
    point = node_points(page).nth(graph_nodes(page).index(name))
    act(page, lambda: point.click(force=True))


def test_page_draws_every_node(page, base_url):
    open_page(page, base_url)
    nodes = graph_nodes(page)
    assert len(nodes) == 29 and {"Xb", "Yb", "C", "W1", "logits", "loss"} <= set(nodes)
    assert node_points(page).count() == 29
    expect(page.get_by_test_id("step-label")).to_have_text("step 0 / 20")
    expect(page.get_by_test_id("legend")).to_contain_text("mismatch")
    expect(page.get_by_test_id("error")).to_be_hidden()


def test_stepping_the_whole_schedule_and_previous(page, base_url):
    open_page(page, base_url)
    for _ in range(3):
        act(page, lambda: page.get_by_test_id("next").click())
    assert "◐ 1 of 2" in node_labels(page)["counts"]
    expect(page.get_by_test_id("op-banner")).to_contain_text("dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)")
    for _ in range(17):
        act(page, lambda: page.keyboard.press("ArrowRight"))
    expect(page.get_by_test_id("step-label")).to_have_text("step 20 / 20")
    labels = node_labels(page)
    for name, label in labels.items():
        if name in ("Xb", "Yb"):
            continue
        assert "✓" in label or "≈" in label, (name, label)
        assert "✗" not in label
    assert "✓" in labels["logprobs"] and "✓" in labels["W2"] and "≈" in labels["hpreact"]
    act(page, lambda: page.get_by_test_id("prev").click())
    expect(page.get_by_test_id("step-label")).to_have_text("step 19 / 20")
    assert "·" in node_labels(page)["C"]  # dC comes from the last step, now undone
    assert "step=19" in page.url


def test_node_panel_heatmaps(page, base_url):
    open_page(page, base_url + "/?step=20")
    click_node(page, "logits")
    expect(page.get_by_test_id("panel-title")).to_contain_text("logits")
    for key in ("value", "manual", "autograd", "diff"):
        heatmap = page.get_by_test_id(f"heatmap-{key}")
        expect(heatmap).to_have_attribute("data-shape", "32x27")
        expect(heatmap.locator(".main-svg").first).to_be_visible()
    expect(page.get_by_test_id("cmp")).to_contain_text("exact: True | approximate: True | maxdiff: 0.0")
    # the two gradients on one zero-centred scale that holds every entry of both (its end rounded up
    # to 3 significant digits); the difference on its own symmetric scale
    scales = page.evaluate(
        """() => Object.fromEntries(['manual', 'autograd', 'diff'].map((key) => {
          const t = document.querySelector(`[data-testid=heatmap-${key}]`).data[0];
          return [key, [t.zmin, t.zmax, Math.max(...t.z.flat().filter((v) => v !== null).map(Math.abs))]];
        }))"""
    )
    (lo, hi, manual_max), (lo2, hi2, autograd_max) = scales["manual"], scales["autograd"]
    assert (lo, hi) == (lo2, hi2) and lo == -hi
    assert max(manual_max, autograd_max) <= hi <= 1.01 * max(manual_max, autograd_max)
    dlo, dhi, diff_max = scales["diff"]
    assert dlo == -dhi and diff_max <= dhi <= 1.01 * diff_max + 1e-12
    expect(page.get_by_test_id("formula")).to_have_text("logits = h @ W2 + b2")
    expect(page.get_by_test_id("numeric")).to_contain_text("finite differences")
    assert "node=logits" in page.url
    # the 3-D emb tensor is shown one context position at a time
    click_node(page, "emb")
    expect(page.get_by_test_id("heatmap-value")).to_have_attribute("data-shape", "32x3x10")
    act(page, lambda: page.get_by_test_id("slice").select_option("2"))
    assert "slice=2" in page.url


def heatmap(page: Page, key: str) -> dict:
    """The title and the finite entries of a heatmap plot, as drawn."""
    return page.evaluate(
        """(key) => {
          const div = document.querySelector(`[data-testid=heatmap-${key}]`);
          return {title: div.layout.title.text, values: div.data[0].z.flat().filter((v) => v !== null)};
        }""",
        key,
    )


def test_a_partial_gradient_is_drawn_and_labelled_as_it_steps(page, base_url):
    # counts is used twice: its gradient gets one contribution at step 3 and the second at step 5
    open_page(page, f"{base_url}/?node=counts&step=2")
    manual = heatmap(page, "manual")
    assert "not reached yet" in manual["title"] and not manual["values"]
    act(page, lambda: page.get_by_test_id("next").click())
    manual, diff = heatmap(page, "manual"), heatmap(page, "diff")
    assert "partial: 1 of 2" in manual["title"] and len(manual["values"]) == 32 * 27
    assert max(abs(v) for v in diff["values"]) > 1e-3  # the partial sum is not autograd's gradient yet
    for _ in range(2):
        act(page, lambda: page.get_by_test_id("next").click())
    manual, diff = heatmap(page, "manual"), heatmap(page, "diff")
    assert manual["title"] == "manual grad" and len(manual["values"]) == 32 * 27
    assert max(abs(v) for v in diff["values"]) < 1e-8  # complete: equal to autograd's (the lecture's maxdiff)


def test_mode_switch_changes_the_graph(page, base_url):
    open_page(page, base_url)
    act(page, lambda: page.get_by_test_id("mode").select_option("fused"))
    assert len(graph_nodes(page)) == 16
    expect(page.get_by_test_id("step-label")).to_have_text("step 0 / 7")
    act(page, lambda: page.get_by_test_id("mode").select_option("fused_bn"))
    assert len(graph_nodes(page)) == 23 and "bnraw" not in graph_nodes(page)


LABEL_BOXES = """() => [...document.querySelectorAll('#graph .textpoint text')]
  .filter((t) => t.textContent.trim())
  .map((t) => { const r = t.getBoundingClientRect();
    return {text: t.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom}; })"""


@pytest.mark.parametrize("mode", ["atomic", "fused_ce", "fused_bn", "fused"])
def test_no_graph_labels_overlap_at_1280x800(page, base_url, mode):
    open_page(page, f"{base_url}/?mode={mode}&step=2")  # a step in: the current op's formula is bold
    boxes = page.evaluate(LABEL_BOXES)
    frame = page.locator("#graph").bounding_box()
    assert len(boxes) >= len(graph_nodes(page)), boxes  # a node label each, and the formulas
    for box in boxes:
        assert box["right"] - box["left"] > 0, box
        assert frame["x"] <= box["left"] and box["right"] <= frame["x"] + frame["width"], box
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            apart = (
                a["right"] <= b["left"] + 0.5
                or b["right"] <= a["left"] + 0.5
                or a["bottom"] <= b["top"] + 0.5
                or b["bottom"] <= a["top"] + 0.5
            )
            assert apart, (a, b)


def test_controls_are_disabled_while_a_request_is_in_flight(page, base_url):
    # the last step's state is held back (from its prefetch on arrival): Run all waits for it
    held = []
    last = re.compile(r"/api/state\?.*step=20(&|$)")
    page.route(last, lambda route: held.append(route))
    open_page(page, base_url)
    page.get_by_test_id("run-all").click()
    expect(page.get_by_test_id("loading")).to_be_visible()
    for control in ("next", "prev", "reset", "run-all", "mode", "apply"):
        expect(page.get_by_test_id(control)).to_be_disabled()
    assert held, "the last step was not asked for"
    act(page, lambda: [route.continue_() for route in held])
    expect(page.get_by_test_id("step-label")).to_have_text("step 20 / 20")
    expect(page.get_by_test_id("loading")).to_be_hidden()
    expect(page.get_by_test_id("next")).to_be_disabled()  # the end: nothing after it
    expect(page.get_by_test_id("prev")).to_be_enabled()


def test_heatmap_axes_hover_and_nonfinite_cells(page, base_url):
    # one NaN and one +Inf put into the server's answer for logits' value (no config makes them):
    # their cells are marked, and the title counts them
    def with_nonfinite(route):
        body = route.fetch().json()
        body["value"]["data"][0][1] = None
        body["value"]["data"][2][3] = None
        body["value"]["nonfinite"] = {"nan": 1, "posinf": 1, "neginf": 0}
        route.fulfill(json=body)

    page.route(re.compile(r"/api/tensor/logits\?"), with_nonfinite)
    open_page(page, f"{base_url}/?node=logits&step=20")
    value = page.evaluate(
        "(() => { const d = document.querySelector('[data-testid=heatmap-value]');"
        " return {x: d.data[0].x, y: d.data[0].y, marks: d.data[1], title: d.layout.title.text}; })()"
    )
    # vocabulary columns are characters, batch rows are contexts 'emm→a'
    assert value["x"][0] == "." and value["x"][1:] == [chr(c) for c in range(ord("a"), ord("z") + 1)]
    assert len(value["y"]) == 32 and all(re.fullmatch(r"[.a-z]{3}→[.a-z]", y) for y in value["y"]), value["y"]
    assert "1 NaN, 1 Inf" in value["title"]
    marked = sorted(zip(value["marks"]["y"], value["marks"]["x"], strict=True))
    assert marked == sorted([(value["y"][0], value["x"][1]), (value["y"][2], value["x"][3])])
    # hovering a cell of the manual gradient gives its row, column and the number the server sent
    page.unroute(re.compile(r"/api/tensor/logits\?"))
    cell = page.evaluate(
        """() => { const d = document.querySelector('[data-testid=heatmap-manual]');
          const s = d._fullLayout._size, t = d.data[0], rows = t.z.length, cols = t.z[0].length;
          const r = d.getBoundingClientRect();
          return {px: r.left + s.l + s.w * (4.5 / cols), py: r.top + s.t + s.h * (6.5 / rows),
                  z: t.z[6][4], row: t.y[6], col: t.x[4]}; }"""
    )
    page.mouse.move(cell["px"], cell["py"])
    hover = page.locator("[data-testid=heatmap-manual] .hoverlayer .hovertext")
    expect(hover).to_be_visible()
    text = hover.text_content()
    assert f"row {cell['row']}" in text and f"col {cell['col']}" in text, text
    # the number in full (Plotly's own %{z} shows 0.00093554263 as "935.5426μ"): it reads back exactly
    assert float(text.split(f"col {cell['col']}")[1]) == cell["z"], (cell, text)


def test_permalink_reload_and_back(page, base_url):
    open_page(page, base_url + "/?mode=fused_ce&step=5&node=h")
    expect(page.get_by_test_id("step-label")).to_have_text("step 5 / 13")
    expect(page.get_by_test_id("mode")).to_have_value("fused_ce")
    expect(page.get_by_test_id("panel-title")).to_contain_text("h")
    act(page, lambda: page.get_by_test_id("next").click())
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("step-label")).to_have_text("step 6 / 13")
    expect(page.get_by_test_id("panel-title")).to_contain_text("h")
    act(page, lambda: page.go_back())
    expect(page.get_by_test_id("step-label")).to_have_text("step 5 / 13")


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
    last = re.compile(r"/api/state\?.*step=20(&|$)")
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
    expect(page.get_by_test_id("step-label")).to_have_text("step 20 / 20")


def test_going_back_to_a_step_seen_redraws_without_asking_the_server(page, base_url):
    open_page(page, f"{base_url}/?node=logits")
    for _ in range(2):
        act(page, lambda: page.get_by_test_id("next").click())
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/api/" in request.url else None)
    act(page, lambda: page.get_by_test_id("prev").click())
    expect(page.get_by_test_id("step-label")).to_have_text("step 1 / 20")
    expect(page.get_by_test_id("panel")).to_contain_text("logits")
    act(page, lambda: page.get_by_test_id("reset").click())
    expect(page.get_by_test_id("step-label")).to_have_text("step 0 / 20")
    # only the prefetch of the step after each one shown may go out (step 2, then step 1): nothing for steps 1, 0
    assert not [u for u in asked if re.search(r"step=[01](&|$)", u)], asked
    # Run all's step is asked for when the pointer reaches its button, before the click
    before = len(asked)
    page.get_by_test_id("run-all").hover()
    page.wait_for_function(
        "performance.getEntriesByType('resource').some((e) => /api\\/tensor.*step=20(&|$)/.test(e.name))"
    )
    assert [u for u in asked[before:] if re.search(r"/api/state\?.*step=20(&|$)", u)], asked
    before = len(asked)
    act(page, lambda: page.get_by_test_id("run-all").click())
    expect(page.get_by_test_id("step-label")).to_have_text("step 20 / 20")
    assert not [u for u in asked[before:] if re.search(r"step=20(&|$)", u)], asked  # drawn from it


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
    assert not [u for u in asked if re.search(r"step=(0|20)(&|$)", u)], asked  # Reset, Run all: on intent only
    before = len(asked)
    act(page, lambda: page.get_by_test_id("prev").click())
    expect(page.get_by_test_id("step-label")).to_have_text("step 2 / 20")
    assert not [u for u in asked[before:] if re.search(r"step=2(&|$)", u)]  # drawn from the prefetch


def test_prefetched_next_step_and_its_failure(page, base_url):
    open_page(page, base_url)
    step2 = re.compile(r"/api/state\?.*step=2(&|$)")
    page.route(step2, lambda route: route.fulfill(status=500, body='{"detail": "boom at step 2"}'))
    with page.expect_request(step2):  # asked for as soon as step 1 is drawn, before any click
        act(page, lambda: page.get_by_test_id("next").click())
    expect(page.get_by_test_id("step-label")).to_have_text("step 1 / 20")
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
    expect(page.get_by_test_id("run-title")).to_contain_text("cancelled", timeout=15_000)
    run_id = re.search(r"run=(\d+)", page.url).group(1)
    row = page.locator(f"[data-testid=run-row][data-run='{run_id}']")
    expect(row).to_contain_text("cancelled", timeout=10_000)
    # a permalink reopens the run with its history
    page.goto(f"{base_url}/train.html?run={run_id}")
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("run-title")).to_contain_text("cancelled")
    page.wait_for_function("document.getElementById('loss-plot').data?.[0]?.x.length > 0", timeout=15_000)


def test_finished_run_results_and_its_net_in_the_explorer(page, base_url):
    page.goto(f"{base_url}/train.html")
    page.wait_for_selector("body[data-ready='1']")
    page.get_by_test_id("cfg-max_steps").fill("2000")
    page.get_by_test_id("cfg-lr_decay_step").fill("1000")
    page.get_by_test_id("cfg-backward").select_option("both")
    page.get_by_test_id("start").click()
    expect(page.get_by_test_id("run-title")).to_contain_text("finished", timeout=60_000)
    expect(page.get_by_test_id("samples").first).to_be_visible(timeout=30_000)
    assert len(page.get_by_test_id("samples").first.locator("span").all()) == 20
    assert page.evaluate("document.getElementById('loss-plot').data.length") == 4  # 2 runs x (per step, smoothed)
    # step the backward pass of the trained net
    page.get_by_test_id("explore").click()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("run-note")).to_contain_text("trained run")
    expect(page.get_by_test_id("step-label")).to_have_text("step 0 / 7")  # fused mode
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
    expect(page.get_by_test_id("challenge-progress")).to_contain_text("1 of 20 steps solved")
    # step 3: a wrong shape gets the broadcast explanation and a diff heatmap
    open_page(page, f"{base_url}/?step=2")
    check_code(page, "dcounts_sum_inv = counts * dprobs\ndcounts = counts_sum_inv * dprobs")
    expect(page.get_by_test_id("challenge-feedback")).to_contain_text(
        "yours is (32,27), expected (32,1): the forward pass broadcast this over dim 1"
    )
    expect(page.get_by_test_id("challenge-diff")).to_have_attribute("data-shape", "32x27")
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
    expect(page.get_by_test_id("challenge-progress")).to_contain_text("1 of 20 steps solved, 1 revealed")


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
    expect(page.get_by_test_id("step-label")).to_have_text("step 1 / 20")


def test_bug_lab_mismatch_at_the_node_and_upstream(page, base_url):
    open_page(page, f"{base_url}/?step=0")
    page.get_by_test_id("cfg-bug").select_option("no_broadcast_sum")
    act(page, lambda: page.get_by_test_id("apply").click())
    expect(page.get_by_test_id("bug-note")).to_contain_text("forgot the sum over a broadcast dimension")
    act(page, lambda: page.get_by_test_id("run-all").click())
    labels = node_labels(page)
    for node in ("counts_sum_inv", "counts", "logits", "h", "W1", "C"):
        assert "✗" in labels[node], (node, labels[node])
    for node in ("probs", "logprobs"):  # downstream of the bug in the forward pass: still right
        assert "✗" not in labels[node], (node, labels[node])
    assert "bug=no_broadcast_sum" in page.url
