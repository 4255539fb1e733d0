"""The attention head in a real browser: the explorer draws its graph, steps it to the end and opens its (B, T, T)
attention map, every gradient agreeing with autograd; challenge mode grades its masked line."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .test_browser import (
    act,
    click_node,
    graph_nodes,
    open_page,
    served,
)

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)

NET = "attention"


def test_the_attention_graph_steps_to_the_end_and_its_map_opens(page, base_url):
    open_page(page, f"{base_url}/?net={NET}")
    nodes = graph_nodes(page)
    assert {"q", "k", "v", "kT", "wei_masked", "att", "out_last"} <= set(nodes), nodes
    expect(page.get_by_test_id("cfg-net")).to_have_value(NET)
    total = len(served(page, f"/api/graph?net={NET}")["schedule"])
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 0 / {total}")
    act(page, lambda: page.get_by_test_id("next").click())
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 1 / {total}")
    assert "net=attention" in page.url
    # the head's own sizes: an (8, 8) map per example, a head of 16
    click_node(page, "att")
    expect(page.get_by_test_id("panel-title")).to_contain_text("shape (32, 8, 8)")
    state = served(page, f"/api/state?net={NET}&step={total}")
    wrong = [name for name, node in state["nodes"].items() if node["cmp"] and not node["cmp"]["approx"]]
    assert not wrong
    expect(page.get_by_test_id("error")).to_be_hidden()
