"""The second network in a real browser: the explorer, the why drawer, the bug lab, challenge mode and the training
page with ?net=layernorm, the network select, and challenge progress kept apart per network."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from .test_browser import (
    RUN_ENDS_MS,
    act,
    click_node,
    graph_nodes,
    node_labels,
    open_page,
    served,
)

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)

NET = "layernorm"
LN = f"?net={NET}"


def step_writing(pg: Page, target: str, mode: str = "atomic") -> int:
    """The 1-based step of the LayerNorm net's `mode` whose backward rules write d`target` (read off its schedule)."""
    graph = served(pg, f"/api/graph?net={NET}&mode={mode}")
    ops = {op["name"]: op for op in graph["ops"]}
    writes = [any(r["target"] == target for r in ops[name]["rules"]) for name in graph["schedule"]]
    return writes.index(True) + 1


def check_step(pg: Page, code: str) -> None:
    pg.get_by_test_id("challenge-code").fill(code)
    pg.get_by_test_id("challenge-feedback").evaluate("el => el.replaceChildren()")
    pg.get_by_test_id("challenge-check").click()
    pg.wait_for_selector("[data-testid=challenge-feedback] p")


def test_the_layernorm_graph_steps_and_its_tensors_open(page, base_url):
    open_page(page, f"{base_url}/{LN}")
    nodes = graph_nodes(page)
    assert "lnvar_inv" in nodes and "lnraw" in nodes and "bnvar_inv" not in nodes, nodes
    total = len(served(page, f"/api/graph?net={NET}")["schedule"])
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 0 / {total}")
    expect(page.get_by_test_id("cfg-net")).to_have_value(NET)
    expect(page.get_by_test_id("cfg-net").locator("option:checked")).to_have_text("LayerNorm MLP")
    expect(page.get_by_test_id("intro")).to_contain_text("LayerNorm MLP")
    # the modes are the LayerNorm net's, as its meta declares them
    modes = page.get_by_test_id("mode").locator("option").evaluate_all("(os) => os.map((o) => o.value)")
    assert modes == [m["name"] for m in served(page, f"/api/meta?net={NET}")["modes"]] and "fused_ln" in modes
    act(page, lambda: page.get_by_test_id("next").click())
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 1 / {total}")
    assert "net=layernorm" in page.url and "step=1" in page.url
    # one statistic per example: lnvar_inv is (batch, 1), where batchnorm's bnvar_inv is (1, n_hidden)
    click_node(page, "lnvar_inv")
    expect(page.get_by_test_id("panel-title")).to_contain_text("lnvar_inv")
    expect(page.get_by_test_id("panel-title")).to_contain_text("shape (32, 1)")
    expect(page.get_by_test_id("thumb-value")).to_have_attribute("data-shape", "32x1")
    expect(page.get_by_test_id("error")).to_be_hidden()


def test_the_why_drawer_derives_the_fused_layernorm_backward(page, base_url):
    page.goto(base_url)
    step = step_writing(page, "hprebn", "fused_ln")
    open_page(page, f"{base_url}/{LN}&mode=fused_ln&step={step}&node=hprebn&pin=1&why=1")
    drawer = page.get_by_test_id("why")
    page.locator("#why[data-node=hprebn]").wait_for()
    rule = drawer.locator("[data-testid=why-rule][data-op=layernorm]")
    expect(rule).to_be_visible()
    expect(rule.get_by_test_id("derivation").locator("li").first).to_be_visible()
    assert rule.get_by_test_id("derivation").locator("li").count() >= 2
    expect(rule.locator(".rule-code")).to_contain_text("lnvar_inv/n_hidden")
    expect(drawer).not_to_contain_text("bnvar_inv")
    expect(drawer.get_by_test_id("check-cell-text")).to_contain_text("hprebn")


def test_the_bug_lab_lists_the_layernorm_bugs_and_shows_a_wrong_gradient(page, base_url):
    open_page(page, f"{base_url}/{LN}&step=0")
    bugs = served(page, f"/api/bugs?net={NET}")["bugs"]
    options = page.get_by_test_id("cfg-bug").locator("option").evaluate_all("(os) => os.map((o) => o.value)")
    assert sorted(options) == sorted(["", *(b["name"] for b in bugs if "atomic" in b["modes"])])
    assert "ln_batch_dim" in options and "no_broadcast_sum" not in options  # the LayerNorm net's, not the lecture's
    act(page, lambda: page.get_by_test_id("cfg-bug").select_option("ln_batch_dim"))
    page.wait_for_selector("[data-testid=bug-note]:not([hidden])")
    title = next(b["title"] for b in bugs if b["name"] == "ln_batch_dim")
    expect(page.get_by_test_id("bug-note")).to_contain_text(title)
    assert "bug=ln_batch_dim" in page.url and "net=layernorm" in page.url
    act(page, lambda: page.get_by_test_id("run-all").click())
    labels = node_labels(page)
    assert "✗" in labels["lnvar_inv"] and "⚑" in labels["lnvar_inv"], labels["lnvar_inv"]
    assert "✗" in labels["W1"], labels["W1"]  # upstream of the bug: wrong too
    assert "✗" not in labels["lngain"], labels["lngain"]  # made before the bug's step: right
    click_node(page, "lnvar_inv")
    expect(page.get_by_test_id("bug-tag")).to_be_visible()
    expect(page.get_by_test_id("check")).to_contain_text("against autograd's (32,1)")


def test_challenge_grades_a_layernorm_step_and_its_batchnorm_habit(page, base_url):
    page.goto(base_url)
    step = step_writing(page, "lnmeani")
    open_page(page, f"{base_url}/{LN}&step={step - 1}")
    page.get_by_test_id("challenge-toggle").check()
    expect(page.get_by_test_id("challenge-task")).to_contain_text(f"Step {step}:")
    expect(page.get_by_test_id("challenge-task")).to_contain_text("dlnmeani")
    right = "dhprebn = dlndiff.clone()\ndlnmeani = (-dlndiff).sum(1, keepdim=True)"
    # the batchnorm habit: a sum over the batch, where LayerNorm's mean is one per example (dim 1)
    check_step(page, right.replace("sum(1,", "sum(0,"))
    feedback = page.get_by_test_id("challenge-feedback")
    expect(feedback.locator(".bad")).not_to_have_count(0)
    expect(feedback).to_contain_text("dlnmeani")
    assert len(feedback.inner_text().strip().splitlines()) >= 3  # a line per gradient, and what is wrong
    expect(page.get_by_test_id("challenge-progress")).to_contain_text("0 of")
    check_step(page, right)
    expect(feedback.locator(".ok")).to_have_count(2)
    expect(feedback.locator(".bad")).to_have_count(0)
    expect(page.get_by_test_id("challenge-progress")).to_contain_text("1 of")
    expect(page.get_by_test_id("challenge-progress")).to_contain_text("this one ✓")


def test_challenge_accepts_the_fused_layernorm_cell(page, base_url):
    open_page(page, f"{base_url}/{LN}&mode=fused_ln")
    page.get_by_test_id("challenge-toggle").check()
    page.get_by_test_id("tab-cell").click()
    expect(page.get_by_test_id("cell-task")).to_contain_text("Exercise 3")
    expect(page.get_by_test_id("cell-task")).to_contain_text("dhprebn")
    cell = (
        "dhprebn = lnvar_inv/n_hidden * (n_hidden*lngain*dhpreact - (lngain*dhpreact).sum(1, keepdim=True)"
        " - lnraw*(lngain*dhpreact*lnraw).sum(1, keepdim=True))"
    )
    # batchnorm's closed form, gain outside the sums: wrong, and the page says which line
    page.get_by_test_id("cell-code").fill(
        "dhprebn = lngain*lnvar_inv/n_hidden * (n_hidden*dhpreact - dhpreact.sum(1, keepdim=True)"
        " - lnraw*(dhpreact*lnraw).sum(1, keepdim=True))"
    )
    page.get_by_test_id("cell-check").click()
    expect(page.get_by_test_id("cell-feedback")).to_contain_text("✗")
    expect(page.get_by_test_id("cell-first-wrong")).to_contain_text("line 1")
    page.get_by_test_id("cell-code").fill(cell)
    page.get_by_test_id("cell-check").click()
    expect(page.get_by_test_id("cell-feedback")).to_contain_text("✓ Exercise 3: every gradient of the cell matches")
    expect(page.get_by_test_id("cell-cmp")).to_contain_text("hprebn")


def test_challenge_progress_is_kept_apart_per_network(page, base_url):
    # progress made on the lecture's net before there were other nets: kept under the mode's name alone
    open_page(page, base_url)
    total = len(served(page, "/api/graph")["schedule"])
    kept = {"on": True, "modes": {"atomic": {"solved": {"1": "dlogprobs = ..."}, "revealed": {}, "drafts": {}}}}
    page.evaluate("(v) => localStorage.setItem('backprop-explorer:challenge', v)", json.dumps(kept))
    open_page(page, f"{base_url}/?step=0")
    expect(page.get_by_test_id("challenge-progress")).to_contain_text(f"atomic: 1 of {total} steps solved")
    # the LayerNorm net's atomic mode has its own: nothing solved there
    open_page(page, f"{base_url}/{LN}&step=0")
    ln_total = len(served(page, f"/api/graph?net={NET}")["schedule"])
    expect(page.get_by_test_id("challenge-progress")).to_contain_text(f"atomic: 0 of {ln_total} steps solved")
    act(page, lambda: page.get_by_test_id("challenge-reveal").click())
    expect(page.get_by_test_id("challenge-progress")).to_contain_text(f"0 of {ln_total} steps solved, 1 revealed")
    stored = json.loads(page.evaluate("localStorage.getItem('backprop-explorer:challenge')"))
    assert stored["modes"]["atomic"]["solved"] == {"1": "dlogprobs = ..."} and not stored["modes"]["atomic"]["revealed"]
    assert stored["modes"][f"{NET}/atomic"]["revealed"] == {"1": True}
    open_page(page, f"{base_url}/?step=0")
    expect(page.get_by_test_id("challenge-progress")).to_contain_text(f"— atomic: 1 of {total} steps solved")


def test_the_network_select_navigates_and_an_unknown_net_is_noted(page, base_url):
    open_page(page, f"{base_url}/?mode=fused_bn&step=3&bug=")
    titles = {n["name"]: n["title"] for n in served(page, "/api/nets")["nets"]}
    options = page.get_by_test_id("cfg-net").locator("option")
    listed = options.evaluate_all("(os) => os.map((o) => [o.value, o.textContent])")
    assert listed == [[name, title] for name, title in titles.items()]
    expect(page.get_by_test_id("cfg-net")).to_have_value("makemore4")
    assert "net=" not in page.url  # the default net is left out of the URL, as every default
    # another net is another page, from its start: its mode, step 0, no bug
    page.get_by_test_id("cfg-net").select_option(NET)
    page.wait_for_url(re.compile(r"\?net=layernorm$"))
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("gnode-lnvar_inv")).to_be_visible()
    expect(page.get_by_test_id("mode")).to_have_value("atomic")
    expect(page.get_by_test_id("step-label")).to_contain_text("step 0 /")
    # and back to the lecture's
    page.get_by_test_id("cfg-net").select_option("makemore4")
    page.wait_for_url(re.compile(r"/$"))
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("gnode-bnvar_inv")).to_be_visible()
    # a net the server does not have: a note, and the lecture's net
    open_page(page, f"{base_url}/?net=nope&step=2")
    expect(page.get_by_test_id("url-note")).to_be_visible()
    expect(page.get_by_test_id("url-note")).to_contain_text("net=nope")
    expect(page.get_by_test_id("gnode-bnvar_inv")).to_be_visible()
    expect(page.get_by_test_id("cfg-net")).to_have_value("makemore4")
    expect(page.get_by_test_id("step-label")).to_contain_text("step 2 /")
    expect(page.get_by_test_id("error")).to_be_hidden()
    assert "net=" not in page.url


def test_the_training_page_trains_the_layernorm_net(page, base_url):
    page.goto(f"{base_url}/train.html")
    page.wait_for_selector("body[data-ready='1']")
    nets = {n["name"]: n for n in served(page, "/api/nets")["nets"]}
    expect(page.get_by_test_id("cfg-net")).to_have_value("makemore4")
    page.get_by_test_id("cfg-net").select_option(NET)
    expect(page.get_by_test_id("net-about")).to_have_text(nets[NET]["about"])
    # the code box's block is the LayerNorm net's: its gradients, as its meta declares them
    page.get_by_test_id("cfg-backward").select_option("code")
    grads = served(page, f"/api/meta?net={NET}")["train_code"]["grads"]
    assert "dlngain" in grads
    expect(page.get_by_test_id("cfg-code")).to_have_value(re.compile(re.escape(f"grads = [{', '.join(grads)}]")))
    expect(page.get_by_test_id("code-help")).to_contain_text("lnvar_inv")
    page.get_by_test_id("cfg-backward").select_option("manual")
    page.get_by_test_id("cfg-max_steps").fill("300")
    page.get_by_test_id("cfg-lr_decay_step").fill("150")
    page.get_by_test_id("cfg-check_every").fill("100")
    page.get_by_test_id("start").click()
    expect(page.get_by_test_id("run-title")).to_contain_text("finished", timeout=RUN_ENDS_MS)
    expect(page.get_by_test_id("run-title")).to_contain_text("LayerNorm MLP")
    line = page.get_by_test_id("verdict-line")
    expect(line).to_contain_text(re.compile(r"^✓ Run #\d+ \(LayerNorm MLP, manual\): the manual backward agreed"))
    expect(line).to_contain_text("the loss fell")
    expect(page.get_by_test_id("calibrated")).to_contain_text("nothing to calibrate")  # no batch statistics
    row = page.locator("[data-testid=run-row]").first
    expect(row.get_by_test_id("run-net")).to_have_attribute("data-net", NET)
    expect(row.get_by_test_id("run-net")).to_have_text(nets[NET]["title"])
    run = served(page, f"/api/runs/{row.get_attribute('data-run')}")
    assert run["config"]["net"] == NET
    # the trained net opens in the explorer as the LayerNorm net, in its trained mode
    expect(page.get_by_test_id("explore")).to_have_attribute("href", re.compile(r"[?&]net=layernorm(&|$)"))
    page.get_by_test_id("explore").click()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("run-note")).to_contain_text("trained run")
    expect(page.get_by_test_id("cfg-net")).to_have_value(NET)
    expect(page.get_by_test_id("mode")).to_have_value(nets[NET]["trained_mode"])
    act(page, lambda: page.get_by_test_id("run-all").click())
    labels = node_labels(page)
    assert not any("✗" in label for label in labels.values()), labels
