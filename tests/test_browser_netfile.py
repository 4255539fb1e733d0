"""A network file in a real browser: the server started with --net-file draws the file's network at its own
sizes, steps it, opens its tensors, derives a generated rule in the Why drawer and grades a learner's line in
challenge mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .live_server import live_server
from .test_browser import ARTIFACTS, act, click_node, graph_nodes, open_page, served  # noqa: F401

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)

GATED_FILE = Path(__file__).resolve().parent / "netfiles" / "gated_mlp.py"
HEAD_FILE = Path(__file__).resolve().parent / "netfiles" / "causal_head.py"
NET = "gated_mlp"


@pytest.fixture(scope="module")
def base_url():
    """A server with two network files: the gated MLP and the causal head."""
    files = ("--net-file", str(GATED_FILE), "--net-file", str(HEAD_FILE))
    with live_server(*files, "--check-workers", "1", "--check-timeout", "60") as url:
        yield url


def test_the_network_files_graph_steps_and_its_tensors_open(page: Page, base_url):
    open_page(page, f"{base_url}/?net={NET}")
    nodes = graph_nodes(page)
    assert {"Xb", "C", "hrelu", "gate", "h1", "h2", "logprobs", "loss"} <= set(nodes), nodes
    total = len(served(page, f"/api/graph?net={NET}")["schedule"])
    assert total == 13  # one backward step a line of the file's forward pass
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 0 / {total}")
    expect(page.get_by_test_id("cfg-net")).to_have_value(NET)
    expect(page.get_by_test_id("cfg-net").locator("option:checked")).to_contain_text("A gated MLP")
    for k in range(1, 10):  # back through the loss, log_softmax, the output layer, the residual sum and tanh
        act(page, lambda: page.get_by_test_id("next").click())
        expect(page.get_by_test_id("step-label")).to_have_text(f"step {k} / {total}")
    # the page opens at the file's own numbers (n_embd = 8, n_hidden = 48, its generator's seed 42), not the lecture's
    expect(page.get_by_test_id("cfg-n_hidden")).to_have_value("48")
    expect(page.get_by_test_id("cfg-seed")).to_have_value("42")
    click_node(page, "gpre")
    expect(page.get_by_test_id("panel-title")).to_contain_text("gpre")
    expect(page.get_by_test_id("panel-title")).to_contain_text("shape (32, 48)")
    click_node(page, "C")
    expect(page.get_by_test_id("panel-title")).to_contain_text("shape (27, 8)")
    expect(page.get_by_test_id("error")).to_be_hidden()
    for width, height in ((1280, 800), (900, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"netfile-{width}.png"), full_page=False)


def test_the_why_drawer_derives_a_generated_rule(page: Page, base_url):
    open_page(page, f"{base_url}/?net={NET}&step=9&node=gpre&pin=1&why=1")
    drawer = page.get_by_test_id("why")
    page.locator("#why[data-node=gpre]").wait_for()
    rule = drawer.locator("[data-testid=why-rule][data-op=gate]")
    expect(rule).to_be_visible()
    assert rule.get_by_test_id("derivation").locator("li").count() == 3  # forward, local derivative, chain rule
    expect(rule.locator(".rule-code")).to_contain_text("dgpre = gate * (1 - gate) * dgate")


def test_challenge_grades_a_step_of_the_network_file(page: Page, base_url):
    open_page(page, f"{base_url}/?net={NET}&step=3")
    page.get_by_test_id("challenge-toggle").check()
    expect(page.get_by_test_id("challenge-task")).to_contain_text("Step 4:")  # h = h1 + h2: two gradients
    code = page.get_by_test_id("challenge-code")
    feedback = page.get_by_test_id("challenge-feedback")

    def check(text: str) -> None:
        code.fill(text)
        feedback.evaluate("el => el.replaceChildren()")
        page.get_by_test_id("challenge-check").click()
        page.wait_for_selector("[data-testid=challenge-feedback] p")

    check("dh1 = dh.clone()\ndh2 = 2 * dh")  # a slip: the sum passes the gradient through unscaled
    expect(feedback.locator(".bad")).not_to_have_count(0)
    expect(feedback).to_contain_text("dh2")
    check("dh1 = dh.clone()\ndh2 = dh.clone()")
    expect(feedback.locator(".ok")).to_have_count(2)
    expect(feedback.locator(".bad")).to_have_count(0)


def test_the_head_file_opens_at_its_context_of_eight_and_draws_its_masked_attention(page: Page, base_url):
    """The causal head's file: the page at the file's sizes (block_size 8, a 16-wide head), its (B, T, T) weights a
    slice at a time, the buffer's mask in the masked_fill step's line."""
    open_page(page, f"{base_url}/?net=causal_head")
    expect(page.get_by_test_id("cfg-n_hidden")).to_have_value("16")
    expect(page.get_by_test_id("cfg-seed")).to_have_value("1337")
    total = len(served(page, "/api/graph?net=causal_head")["schedule"])
    assert {"wei_masked", "att", "pooled"} <= set(graph_nodes(page))
    assert "tril" not in graph_nodes(page)  # a buffer, not a tensor of the graph
    open_page(page, f"{base_url}/?net=causal_head&step={total}&node=att&pin=1")
    expect(page.get_by_test_id("panel-title")).to_contain_text("shape (32, 8, 8)")
    expect(page.get_by_test_id("thumb-value")).to_have_attribute("data-shape", "32x8x8")
    act(page, lambda: page.get_by_test_id("slice").fill("2"))
    assert "slice=2" in page.url
    expect(page.get_by_test_id("error")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "netfile-head-1280.png"), full_page=False)
