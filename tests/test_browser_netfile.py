"""A network file in a real browser: the server started with --net-file draws the file's network, steps it, opens
its tensors, derives a generated rule in the Why drawer and grades a learner's line in challenge mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .live_server import live_server
from .test_browser import ARTIFACTS, act, browser, click_node, graph_nodes, open_page, page, served  # noqa: F401

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)

GATED_FILE = Path(__file__).resolve().parent / "netfiles" / "gated_mlp.py"
NET = "gated_mlp"


@pytest.fixture(scope="module")
def base_url():
    with live_server("--net-file", str(GATED_FILE), "--check-workers", "1") as url:
        yield url


def test_the_network_files_graph_steps_and_its_tensors_open(page: Page, base_url):  # noqa: F811
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
    click_node(page, "gpre")
    expect(page.get_by_test_id("panel-title")).to_contain_text("gpre")
    expect(page.get_by_test_id("panel-title")).to_contain_text("shape (32, 64)")
    expect(page.get_by_test_id("error")).to_be_hidden()
    for width, height in ((1280, 800), (900, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"netfile-{width}.png"), full_page=False)
