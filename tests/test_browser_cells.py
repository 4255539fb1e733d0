"""The whole-cell editor and the take-home files in a real browser: Playwright driving Debian Chromium against the
real server (the fixtures of tests/test_browser.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from server.config import ModelConfig
from server.data import load_dataset
from server.engine import run_backward

from .test_browser import LECTURE_DATA, base_url, browser, open_page, page, serious_violations  # noqa: F401 (fixtures)
from .test_cells import EXERCISE_1_CMP, notebook_prints
from .test_challenge import EXERCISE_1

pytestmark = pytest.mark.browser

EXERCISE_2 = "dlogits = F.softmax(logits, 1)\ndlogits[range(n), Yb] -= 1\ndlogits /= n"
SIGN_FLIP = EXERCISE_1.replace("dcounts_sum = (-counts_sum**-2)", "dcounts_sum = (counts_sum**-2)")


def test_the_whole_cell_editor_prints_the_notebooks_cmp_lines_and_the_first_wrong_line(page, base_url):  # noqa: F811
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


def test_the_cell_and_the_solved_steps_download_as_files(page, base_url, tmp_path):  # noqa: F811
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


def test_a_right_exercise_4_cell_goes_to_training_with_its_block(page, base_url):  # noqa: F811
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
