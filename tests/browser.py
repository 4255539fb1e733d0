"""The browser tests' shared fixtures (registered in tests/conftest.py): one lecture server per test process, shared
by every browser test module; a Chromium per module; a new visitor (no cookies or storage) per test."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

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
def playwright():
    """Playwright's sync API, per module: it holds an event loop open on this thread while it runs, and a later
    module's asyncio.run() (tests/web/test_fair.py) cannot start beside it."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is required: apt-get install -y chromium"
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    """Chromium, for a test that makes browser contexts of its own (several visitors, a phone's): each is a new
    visitor, with an empty cache."""
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    yield b
    b.close()


@pytest.fixture(scope="session")
def profile_dir(tmp_path_factory) -> Path:
    """The Chromium profile's directory, one per test process: each module's Chromium opens it again, and finds the
    HTTP cache (and V8's code cache, kept beside it) that the modules before it filled from the same server."""
    return tmp_path_factory.mktemp("chromium-profile")


@pytest.fixture(scope="module")
def profile(playwright, profile_dir):
    """Chromium with a profile on disk, per module, that the `page` fixture's visitors share only its HTTP cache with
    (cookies and storage are cleared after each test). A repeat visitor's cache is the product's common case, and it
    halves what a page load costs: V8 reads plotly.js's compiled code from the cache instead of compiling 4.8 MB."""
    context = playwright.chromium.launch_persistent_context(
        profile_dir,
        executable_path=CHROMIUM,
        args=ARGS,
        viewport={"width": 1280, "height": 800},
    )
    yield context
    context.close()


@pytest.fixture
def page(profile, request):
    """A page at 1280×800 for a visitor with no cookies or storage (the HTTP cache is shared within the module: see
    `profile`); a page error fails the test; a failed test leaves its screenshot in artifacts/."""
    pg = profile.new_page()
    origins: set[str] = set()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("request", lambda r: origins.add(origin(r.url)))
    yield pg
    report = getattr(request.node, "report_call", None)
    if SCREENSHOT_ALL or report is None or report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    forget(profile, pg, origins)
    pg.close()
    assert not errors, errors


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") else ""


def forget(context, pg, origins: set[str]) -> None:
    """Clear the cookies and every kind of storage each origin the page asked kept in the profile, all but its
    HTTP cache: the next test's visitor is new."""
    context.clear_cookies()
    cdp = context.new_cdp_session(pg)
    try:
        for o in sorted(origins - {""}):
            cdp.send("Storage.clearDataForOrigin", {"origin": o, "storageTypes": "all"})
    finally:
        cdp.detach()
