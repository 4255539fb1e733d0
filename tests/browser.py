"""The browser tests' shared fixtures (registered in tests/conftest.py): one lecture server per test process, shared
by every browser test module; a Chromium per module; a fresh browser context (a new visitor) per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .live_server import ROOT, live_server

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
# SCREENSHOTS=all keeps a full-page screenshot of every browser test in artifacts/; by default only a failed test's
SCREENSHOT_ALL = os.environ.get("SCREENSHOTS") == "all"


@pytest.fixture(scope="session")
def base_url():
    """The lecture's server. The page is what is tested, not the check's time cap (tests/web/test_check_api.py): on a
    CI box loaded many times over its cores, a right cell's check took past the 3 s a laptop never comes near."""
    with live_server("--data", str(LECTURE_DATA), "--check-timeout", "60") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    """Chromium, per module: Playwright's sync API holds an event loop open on this thread while it runs, and a later
    module's asyncio.run() (tests/web/test_fair.py) cannot start beside it."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is required: apt-get install -y chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    """A page in a browser context of its own (no cookies, storage or cache from another test), at 1280×800; a
    page error fails the test; a failed test leaves its screenshot in artifacts/."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    report = getattr(request.node, "report_call", None)
    if SCREENSHOT_ALL or report is None or report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, errors
