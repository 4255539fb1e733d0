"""The whole-cell editor and the take-home files in a real browser: Playwright driving Debian Chromium against the
real server (the fixtures of tests/test_browser.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy
import pytest
from playwright.sync_api import expect

from server.core.config import ModelConfig
from server.core.data import load_dataset
from server.core.engine import run_backward

from .test_browser import (
    LECTURE_DATA,
    act,
    click_node,
    open_page,
    serious_violations,
)
from .test_cells import EXERCISE_1_CMP, notebook_prints
from .test_challenge import EXERCISE_1

pytestmark = pytest.mark.browser
# an answer the page waits for (a sandbox check, a run's first event) may take many seconds on a busy machine:
# expect() waits for it that long, and a right page passes at once
expect.set_options(timeout=30_000)

EXERCISE_2 = "dlogits = F.softmax(logits, 1)\ndlogits[range(n), Yb] -= 1\ndlogits /= n"
SIGN_FLIP = EXERCISE_1.replace("dcounts_sum = (-counts_sum**-2)", "dcounts_sum = (counts_sum**-2)")


def test_the_whole_cell_editor_prints_the_notebooks_cmp_lines_and_the_first_wrong_line(page, base_url):
    open_page(page, f"{base_url}/?step=0")
    page.get_by_test_id("challenge-toggle").check()
    page.get_by_test_id("tab-cell").click()
    expect(page.get_by_test_id("tab-cell")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("challenge-code")).to_be_hidden()
    expect(page.get_by_test_id("cell-task")).to_contain_text("Exercise 1: write the whole backward pass")
    page.get_by_test_id("cell-code").fill(SIGN_FLIP + "\n" + EXERCISE_1_CMP)
    page.get_by_test_id("cell-check").click()
    page.wait_for_selector("[data-testid=cell-cmp], [data-testid=cell-refused]", timeout=60_000)  # a cold sandbox
    expect(page.get_by_test_id("cell-first-wrong")).to_contain_text("line 6 dcounts_sum = (counts_sum**-2)")
    expect(page.get_by_test_id("cell-first-wrong")).to_contain_text("the sign flipped")
    expect(page.get_by_test_id("cell-feedback")).to_contain_text("23 of 26 gradients differ")
    # the block is what the notebook prints for this cell, line for line
    bp = run_backward(ModelConfig(), load_dataset(LECTURE_DATA), "atomic")
    expected = notebook_prints("atomic", bp, SIGN_FLIP, EXERCISE_1_CMP)
    assert page.get_by_test_id("cell-cmp").inner_text().splitlines() == expected
    marks = page.get_by_test_id("cell-cmp").locator(".cmp-line").evaluate_all("(ls) => ls.map((l) => l.className)")
    assert marks == ["cmp-line same"] * 3 + ["cmp-line differs"] * 23
    expect(page.get_by_test_id("cell-diff")).to_have_attribute("data-shape", "32x1")
    assert not serious_violations(page)  # the tabs, the focusable blocks, the colours of the marks
    # the draft and the tab are kept in this browser
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("cell-code")).to_have_value(SIGN_FLIP + "\n" + EXERCISE_1_CMP)
    expect(page.get_by_test_id("tab-cell")).to_have_attribute("aria-selected", "true")
    # the arrow keys move between the tabs
    page.get_by_test_id("tab-cell").focus()
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_test_id("tab-step")).to_be_focused()
    expect(page.get_by_test_id("challenge-code")).to_be_visible()


def test_the_cell_and_the_solved_steps_download_as_files(page, base_url, tmp_path):
    open_page(page, f"{base_url}/?mode=fused_ce&step=0")
    page.get_by_test_id("challenge-toggle").check()
    expect(page.get_by_test_id("steps-export-py")).to_be_disabled()  # nothing solved yet
    page.get_by_test_id("challenge-code").fill(EXERCISE_2)
    page.get_by_test_id("challenge-check").click()
    page.wait_for_selector("[data-testid=challenge-feedback] p", timeout=60_000)
    expect(page.get_by_test_id("challenge-progress")).to_contain_text("1 of 13 steps solved")
    with page.expect_download() as download:
        page.get_by_test_id("steps-export-py").click()
    assert download.value.suggested_filename == "backprop_fused_ce_steps.py"
    text = Path(download.value.path()).read_text()
    assert "# step 1: backprop through loss = F.cross_entropy(logits, Yb)\ndlogits = F.softmax(logits, 1)\n" in text
    assert text.rstrip().endswith("cmp('logits', dlogits, logits)")
    # the cell, as a notebook
    page.get_by_test_id("tab-cell").click()
    page.get_by_test_id("cell-code").fill(EXERCISE_2)
    with page.expect_download() as download:
        page.get_by_test_id("cell-export-ipynb").click()
    assert download.value.suggested_filename == "backprop_fused_ce_cell.ipynb"
    assert '"dlogits /= n"' in Path(download.value.path()).read_text()
    # code outside the vocabulary is refused with the reason, and no file comes
    page.get_by_test_id("cell-code").fill("import os")
    page.get_by_test_id("cell-export-py").click()
    expect(page.get_by_test_id("export-refused")).to_contain_text("only assignments")


def test_a_right_exercise_4_cell_goes_to_training_with_its_block(page, base_url):
    from .test_train_code import BLOCK

    open_page(page, f"{base_url}/?mode=fused&step=0")
    page.get_by_test_id("challenge-toggle").check()
    page.get_by_test_id("tab-cell").click()
    page.get_by_test_id("cell-code").fill(BLOCK)
    page.get_by_test_id("cell-check").click()
    link = page.get_by_test_id("cell-train")
    expect(link).to_be_visible(timeout=60_000)  # a cold sandbox
    link.click()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.get_by_test_id("cfg-backward")).to_have_value("code")
    expect(page.get_by_test_id("code-box")).to_be_visible()
    expect(page.get_by_test_id("cfg-code")).to_have_value(BLOCK)
    assert page.url.endswith("/train.html")  # the hand-over is not kept in the address


def notebook_steps(graph: dict) -> list[list[str]]:
    """Exercise 1's lines grouped by the backward step that makes their gradients, in the notebook's order."""
    ops = {op["name"]: op for op in graph["ops"]}
    targets = [{r["target"] for r in ops[name]["rules"]} for name in graph["schedule"]]
    groups: list[list[str]] = []
    seen: set[str] = set()
    for line in EXERCISE_1.splitlines():
        lead = re.match(r"d(\w+)(\[)?", line)  # a gradient written at the left margin
        if groups and (not lead or lead.group(2)):  # a loop, a helper or an indexed write: the same step
            groups[-1].append(line)
        elif groups and lead.group(1) in targets[len(groups) - 1] - seen:  # the step's other gradient
            seen.add(lead.group(1))
            groups[-1].append(line)
        else:
            assert seen == (targets[len(groups) - 1] if groups else set()), (groups[-1:], seen)
            groups.append([line])
            seen = {lead.group(1)}
            assert lead.group(1) in targets[len(groups) - 1], (line, targets[len(groups) - 1])
    assert seen == targets[-1] and len(groups) == len(graph["schedule"])
    return groups


# what the page shows, as text: the page's text, every tooltip (titles, the graph's tips), every accessible name
PAGE_TEXT = """() => {
  const decoded = (html) => { const d = document.createElement('div'); d.innerHTML = html; return d.textContent; };
  return [document.body.textContent,
    ...[...document.querySelectorAll('[title], [data-tip], [aria-label]')].flatMap((e) =>
      [e.getAttribute('title') || '', decoded(e.dataset.tip || ''), e.getAttribute('aria-label') || ''])].join('\\n');
}"""

# how many heatmaps hold this tensor's numbers (any 2-D slice of it, along any axis, either way round), entry for entry
PLOTTED = """(t) => {
  const [A, B, C] = t.shape, range = (n) => Array.from({ length: n }, (_, i) => i);
  const cuts = t.shape.length !== 3 ? [] : [
    ...range(A).map((a) => range(B).map((b) => range(C).map((c) => t.data[a][b][c]))),
    ...range(B).map((b) => range(A).map((a) => range(C).map((c) => t.data[a][b][c]))),
    ...range(C).map((c) => range(A).map((a) => range(B).map((b) => t.data[a][b][c])))];
  const turned = (z) => z[0].map((_, j) => z.map((row) => row[j]));
  const slices = t.shape.length === 3 ? [...cuts, ...cuts.map(turned)]
    : [t.shape.length === 1 ? [t.data] : t.data];
  const close = (z, s) => z.length === s.length && z.every((row, i) => row.length === s[i].length &&
    row.every((v, j) => v !== null && Math.abs(v - s[i][j]) <= 1e-6 * (Math.abs(s[i][j]) + 1e-9)));
  return [...document.querySelectorAll('.main-plot')].filter((d) => d.drawing)
    .filter((d) => slices.some((s) => close(d.drawing.grid.z, s))).length;
}"""


def test_challenge_walk_of_exercise_1_never_shows_an_unsolved_steps_answer(page, base_url):
    open_page(page, f"{base_url}/?step=0")
    graph = page.evaluate("() => fetch('/api/graph').then((r) => r.json())")
    steps = notebook_steps(graph)
    ops = {op["name"]: op for op in graph["ops"]}
    act(page, lambda: page.get_by_test_id("challenge-toggle").check())
    for step, lines in enumerate(steps, start=1):
        op = ops[graph["schedule"][step - 1]]
        target = op["rules"][0]["target"]
        expect(page.get_by_test_id("challenge-task")).to_contain_text(f"Step {step}:")
        if page.get_by_test_id("panel").get_attribute("data-node") != target:
            click_node(page, target)  # the inspector on the gradient asked for
        if step == 1:
            page.get_by_test_id("why-open").click()
        hidden_why = page.locator(f"[data-testid=why-hidden][data-op={op['name']}]")
        expect(hidden_why).to_contain_text(f"d{target}", timeout=30_000)
        page.get_by_test_id(f"gop-{op['name']}").hover()  # the op's tooltip (every tooltip's text is read below)
        text = page.evaluate(PAGE_TEXT)
        for rule in op["rules"]:
            for line in rule["code"].splitlines():
                assert line.strip() not in text, (step, line)
            served = page.evaluate(
                "(url) => fetch(url).then((r) => r.json())", f"/api/tensor/{rule['target']}?step={step - 1}"
            )
            autograd, before = served["grad_autograd"], served["grad_manual"]
            # a gradient whose last contribution is ~0 (dlogit_maxes' to dlogits) is known already from the steps
            # solved: its numbers are on the page by right
            known = before is not None and numpy.allclose(before["data"], autograd["data"], rtol=1e-6, atol=1e-9)
            assert known or page.evaluate(PLOTTED, autograd) == 0, (step, rule["target"])
        assert "hidden in challenge mode" in page.get_by_test_id("panel").text_content()
        # the notebook's lines for this step, both gradients of a two-gradient step in one go
        page.get_by_test_id("challenge-code").fill("\n".join(lines))
        # solved: the page shows the answer. A check waits for a check process: the first one's start (torch's
        # import, its warm-up) can take a minute on a machine as busy as CI's, where 30 s did not always suffice
        act(page, lambda: page.get_by_test_id("challenge-check").click(), timeout=180_000)
        expect(page.get_by_test_id("challenge-progress")).to_contain_text(f"{step} of {len(steps)} steps solved")
        expect(page.get_by_test_id("panel")).to_contain_text(op["rules"][0]["code"].splitlines()[0])
        # the derivation, now
        expect(page.locator(f"[data-testid=why-rule][data-op={op['name']}]")).to_be_visible(timeout=30_000)
        if step == 1:  # the check above sees autograd's numbers once they may be shown
            page.get_by_test_id("view-autograd").click()
            autograd = page.evaluate("(url) => fetch(url).then((r) => r.json())", "/api/tensor/logprobs?step=0")
            assert page.evaluate(PLOTTED, autograd["grad_autograd"]) == 1
        act(page, lambda: page.get_by_test_id("next").click())
    expect(page.get_by_test_id("challenge-task")).to_contain_text("complete")
