"""3-D tensors in a real browser: every pack's 3-D node drawn one 2-D slice at a time, the slice and the map's
axes chosen on the page and kept in its URL, each drawn number checked against the API's tensor indexed here."""

from __future__ import annotations

import numpy
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from server.net.packs import NETS

from .test_browser import (
    act,
    open_page,
    served,
)

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)


def deepest_3d(net_name: str) -> tuple[str, str, str]:
    """A net's last 3-D node in its first mode (the deepest layer's): (net, mode, node)."""
    net = NETS[net_name]
    mode = net.mode_names[0]
    return net_name, mode, [n.name for n in net.nodes_for_mode(mode) if len(n.axes) == 3][-1]


# one 3-D node of every pack that has one: a new pack's 3-D tensors are drawn by the same code
CASES = [deepest_3d(name) for name, net in NETS.items() if any(len(n.axes) == 3 for n in net.nodes)]

VIEWS = {"value": "value", "manual": "grad_manual", "autograd": "grad_autograd"}


def as_array(data) -> numpy.ndarray:
    """Nested lists as the API sends them (NaN/Inf as null) as floats."""
    return numpy.array(data, dtype=float)


def expected_slice(data, rows: int, cols: int, cut: int, index: int) -> numpy.ndarray:
    """The map rows × cols of a 3-D tensor at `index` of axis `cut`, by numpy's own indexing."""
    sliced = numpy.take(as_array(data), index, axis=cut)  # the two axes left keep their order
    return sliced if rows < cols else sliced.T


def shown(pg: Page) -> dict:
    """What the inspector draws: the main plot's grid, each small multiple's grid, the marginal sums, the controls."""
    return pg.evaluate(
        """() => { const q = (id) => document.querySelector(`[data-testid=${id}]`);
          const thumbs = {}; for (const f of document.querySelectorAll('.thumbs .thumb'))
            { const c = f.querySelector('canvas'); if (!c.hidden && c.grid) thumbs[f.dataset.view] = c.grid.z; }
          return {z: q('main-cells').grid.z, thumbs, title: q('main-title').textContent,
                  rows: JSON.parse(q('row-sums').dataset.values), cols: JSON.parse(q('col-sums').dataset.values),
                  caption: q('col-sums').dataset.caption, layout: q('slice-axes').value,
                  slice: Number(q('slice').value), max: Number(q('slice').max),
                  label: q('slice-label').textContent}; }"""
    )


def assert_slice(pg: Page, detail: dict, rows: int, cols: int, cut: int, index: int) -> None:
    """The main plot, the three drawn small multiples and the marginal sums all show this slice of the API's numbers."""
    drawn = shown(pg)
    assert drawn["layout"] == f"{rows},{cols}" and drawn["slice"] == index
    assert drawn["max"] == detail["shape"][cut] - 1
    value = expected_slice(detail["value"]["data"], rows, cols, cut, index)
    numpy.testing.assert_array_equal(as_array(drawn["z"]), value)  # the main plot opens on the value (view=value)
    for view, key in VIEWS.items():
        if detail[key] is not None:
            want = expected_slice(detail[key]["data"], rows, cols, cut, index)
            numpy.testing.assert_array_equal(as_array(drawn["thumbs"][view]), want, err_msg=view)
    # the marginal bars are the shown slice's sums, and say so
    numpy.testing.assert_allclose(drawn["rows"], numpy.nansum(value, axis=1), rtol=1e-12, atol=1e-12)
    numpy.testing.assert_allclose(drawn["cols"], numpy.nansum(value, axis=0), rtol=1e-12, atol=1e-12)
    assert drawn["caption"].startswith("Σ columns of this slice")
    where = ", ".join(str(index) if d == cut else ":" for d in range(3))
    assert drawn["label"].startswith(f"{detail['name']}[{where}]") and drawn["label"] in drawn["title"]


@pytest.mark.parametrize(("net", "mode", "node"), CASES, ids=[c[0] for c in CASES])
def test_a_3d_node_is_drawn_one_chosen_slice_at_a_time(page, base_url, net, mode, node):
    page.goto(f"{base_url}/api/health")  # an origin to ask the API from
    graph = served(page, f"/api/graph?net={net}&mode={mode}")
    last = len(graph["schedule"])
    query = f"net={net}&mode={mode}&step={last}"
    open_page(page, f"{base_url}/?{query}&node={node}&pin=1&view=value")
    detail = served(page, f"/api/tensor/{node}?{query}")
    axes, shape = detail["axes"], detail["shape"]
    assert len(shape) == 3
    # it opens on its batch row 0 (the first axis where there is no batch axis), the other two as rows × columns
    cut = axes.index("batch") if "batch" in axes else 0
    rows, cols = (a for a in range(3) if a != cut)
    assert_slice(page, detail, rows, cols, cut, 0)
    assert "slice=" not in page.url and "axes=" not in page.url  # the node's own map is its URL's default
    # another slice: the last index of the sliced axis
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if f"/api/tensor/{node}?" in r.url else None)
    end = shape[cut] - 1
    act(page, lambda: page.get_by_test_id("slice").fill(str(end)))
    assert_slice(page, detail, rows, cols, cut, end)
    assert f"slice={end}" in page.url
    # a large tensor is asked for as that slice alone (the page knows its shape now); a small one whole
    large = numpy.prod(shape) > page.evaluate("import('/js/config.js').then((m) => m.SLICE_OVER)")
    sliced = [u for u in asked if "slice_dim=" in u]
    assert sliced == ([u for u in asked if f"slice_dim={cut}&slice_index={end}" in u] if large else []), asked
    assert bool(sliced) == large, asked
    # dragging (input events alone): a tensor held whole is drawn at each slice, the URL waits for the release
    page.get_by_test_id("slice").evaluate(f"(s) => {{ s.value = '{end - 1}'; s.dispatchEvent(new Event('input')); }}")
    expect(page.get_by_test_id("slice-label")).to_contain_text(f"{node}[")
    if large:  # held as one slice: the heatmaps stay until the new one is taken
        assert shown(page)["z"] == expected_slice(detail["value"]["data"], rows, cols, cut, end).tolist()
    else:
        assert_slice(page, detail, rows, cols, cut, end - 1)
    assert f"slice={end}" in page.url
    act(page, lambda: page.get_by_test_id("slice").dispatch_event("change"))
    assert_slice(page, detail, rows, cols, cut, end - 1)
    assert f"slice={end - 1}" in page.url
    # the keyboard: an arrow key on the slider moves one slice and leaves the focus on it
    act(page, lambda: page.get_by_test_id("slice").press("ArrowRight"))
    assert_slice(page, detail, rows, cols, cut, end)
    expect(page.get_by_test_id("slice")).to_be_focused()
    # another map: the sliced axis as the rows, the first of the other two sliced
    act(page, lambda: page.get_by_test_id("slice-axes").select_option(f"{cut},{cols}"))
    assert_slice(page, detail, cut, cols, rows, 0)
    act(page, lambda: page.get_by_test_id("slice").fill("1"))
    assert_slice(page, detail, cut, cols, rows, 1)
    assert f"axes={cut}%2C{cols}" in page.url and "slice=1" in page.url
    # a hovered cell names its full index and its served numbers
    page.get_by_test_id("main-cells").scroll_into_view_if_needed()
    cell = page.get_by_test_id("main-cells").bounding_box()
    i, j = 1, shape[cols] - 1
    x, y = cell["x"] + cell["width"] * (j + 0.5) / shape[cols], cell["y"] + cell["height"] * (i + 0.5) / shape[cut]
    page.mouse.move(x, y)
    index = [0, 0, 0]
    index[cut], index[cols], index[rows] = i, j, 1
    expect(page.get_by_test_id("readout")).to_have_attribute("data-index", ",".join(map(str, index)))
    expect(page.get_by_test_id("readout")).to_contain_text(f"{node}[{', '.join(map(str, index))}]")
    a, b, c = index
    assert float(page.get_by_test_id("readout-value").text_content()) == detail["value"]["data"][a][b][c]
    # the entry's rule written out with its numbers is the same entry's
    expect(page.get_by_test_id("cell-rule")).to_contain_text(f"d{node}[{a},{b},{c}]")
    # the URL is a permalink: a reload draws the same slice of the same map
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert_slice(page, detail, cut, cols, rows, 1)
    # and Back returns to the slice before
    act(page, lambda: page.go_back())
    assert_slice(page, detail, cut, cols, rows, 0)


def attention_map(net_name: str) -> tuple[str, str, str]:
    """A net's last query × key node in its first mode (the attention weights, after the softmax)."""
    net = NETS[net_name]
    mode = net.mode_names[0]
    return net_name, mode, [n.name for n in net.nodes_for_mode(mode) if {"query", "key"} <= set(n.axes)][-1]


MAPS = [attention_map(name) for name, net in NETS.items() if any({"query", "key"} <= set(n.axes) for n in net.nodes)]


@pytest.mark.parametrize(("net", "mode", "node"), MAPS, ids=[c[0] for c in MAPS])
def test_attention_weights_open_as_a_query_by_key_map_per_batch_row(page, base_url, net, mode, node):
    page.goto(f"{base_url}/api/health")
    last = len(served(page, f"/api/graph?net={net}&mode={mode}")["schedule"])
    query = f"net={net}&mode={mode}&step={last}"
    open_page(page, f"{base_url}/?{query}&node={node}&pin=1&view=value")
    detail = served(page, f"/api/tensor/{node}?{query}")
    b, q, k = (detail["axes"].index(a) for a in ("batch", "query", "key"))
    expect(page.get_by_test_id("slice-axes")).to_have_value(f"{q},{k}")
    drawn = shown(page)
    assert drawn["slice"] == 0 and drawn["z"] == expected_slice(detail["value"]["data"], q, k, b, 0).tolist()
    layout = "document.querySelector('[data-testid=heatmap-main]').layout"
    assert page.evaluate(f"[{layout}.yaxis.title.text, {layout}.xaxis.title.text]") == [
        "query position",
        "key position",
    ]
    # the weights of a causal head: every query's row sums to 1 over the keys at or before it, and 0 after it
    z = numpy.array(drawn["z"])
    numpy.testing.assert_allclose(drawn["rows"], numpy.ones(len(z)), rtol=1e-6)
    assert not numpy.triu(z, 1).any()
    # another batch row: its own map
    act(page, lambda: page.get_by_test_id("slice").fill("5"))
    assert_slice(page, detail, q, k, b, 5)
    assert "slice=5" in page.url and "axes=" not in page.url


@pytest.mark.parametrize("net", [name for name in NETS if name not in ("makemore4", "layernorm")])
def test_a_3d_gradient_of_several_ops_shows_each_contribution_on_the_same_slice(page, base_url, net):
    page.goto(f"{base_url}/api/health")
    mode = NETS[net].mode_names[0]
    graph = served(page, f"/api/graph?net={net}&mode={mode}")
    several = [n for n in graph["nodes"] if len(n["shape"]) == 3 and n["contributions"] > 1]
    if not several:
        pytest.skip(f"no 3-D tensor of {net} is read by several ops")
    node = max(several, key=lambda n: numpy.prod(n["shape"]))  # the largest: asked for one slice at a time
    last = len(graph["schedule"])
    query = f"net={net}&mode={mode}&step={last}"
    open_page(page, f"{base_url}/?{query}&node={node['name']}&pin=1&axes=0,2&slice=1&view=value")
    detail = served(page, f"/api/tensor/{node['name']}?{query}")
    want = [*(c["manual"]["data"] for c in detail["split"]), detail["grad_manual"]["data"]]
    # opened whole (the page learns the shape with it), then a slice asked for alone
    for index in (1, 2):
        if index == 2:
            act(page, lambda: page.get_by_test_id("slice").fill("2"))
        assert_slice(page, detail, 0, 2, 1, index)
        drawn = page.evaluate(
            "() => [...document.querySelectorAll('[data-testid=split] figure canvas')].map((c) => c.grid.z)"
        )
        # each contribution, then their sum: every one cut at dim 1 where the main plot is
        assert len(drawn) == len(want) == node["contributions"] + 1
        for z, data in zip(drawn, want, strict=True):
            numpy.testing.assert_array_equal(as_array(z), expected_slice(data, 0, 2, 1, index))


@pytest.mark.parametrize(("net", "mode", "node"), CASES, ids=[c[0] for c in CASES])
def test_axe_finds_nothing_in_a_3d_nodes_controls(page, base_url, net, mode, node):
    open_page(page, f"{base_url}/?net={net}&mode={mode}&step=0&node={node}&pin=1&axes=0,2&slice=1")
    # the select, the slider and what they show: every finding, minor to critical
    found = Axe().run(page, context="[data-testid=slice-controls]").response["violations"]
    assert not found, [(v["id"], v["impact"], [n["target"] for n in v["nodes"]]) for v in found]


def test_a_urls_slice_past_the_dim_or_on_a_2d_node_is_said_and_fitted(page, base_url):
    net, mode, node = CASES[0]
    page.goto(f"{base_url}/api/health")
    last = len(served(page, f"/api/graph?net={net}&mode={mode}")["schedule"])
    query = f"net={net}&mode={mode}&step={last}"
    detail = served(page, f"/api/tensor/{node}?{query}")
    cut = detail["axes"].index("batch") if "batch" in detail["axes"] else 0
    end = detail["shape"][cut] - 1
    open_page(page, f"{base_url}/?{query}&node={node}&pin=1&slice=999")
    expect(page.get_by_test_id("url-note")).to_contain_text(f"slice=999 is past {node}'s dim {cut}")
    expect(page.get_by_test_id("slice")).to_have_value(str(end))
    assert f"slice={end}" in page.url
    # a 2-D node: no slice controls, and the URL drops what does not apply
    two = next(n["name"] for n in served(page, f"/api/graph?net={net}&mode={mode}")["nodes"] if len(n["shape"]) == 2)
    open_page(page, f"{base_url}/?{query}&node={two}&pin=1&slice=3&axes=0,2")
    expect(page.get_by_test_id("url-note")).to_contain_text(f"{two} has 2 dims")
    expect(page.get_by_test_id("slice-controls")).to_have_count(0)
    assert "slice=" not in page.url and "axes=" not in page.url
