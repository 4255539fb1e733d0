"""Browser benchmark: page load → interactive graph, and a step click → graph and panel redrawn.

Starts the real server, drives Debian Chromium with Playwright, and reads the page's own
performance measures ('load' and 'update', marked in frontend/js/app.js). First visits are loaded
in a new browser with no DevTools attached and read afterwards (see unwatched_visit); the same
first visit under Playwright is printed beside them. Prints medians beside the targets
(ratio = measured / target). Usage: python bench/browser_bench.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, Playwright, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_bench import free_port, start_server  # noqa: E402

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


CHROMIUM = "/usr/bin/chromium"
MARKS = "['graph-drawn', 'render-end'].map((name) => performance.getEntriesByName(name)[0]?.startTime)"


def unwatched_visit(p: Playwright, url: str, settle: float = 5.0) -> tuple[float, float]:
    """A first visit as a learner makes it: a new browser (empty HTTP and code caches), no DevTools.

    While DevTools is attached (Playwright always is), V8 re-parses plotly.js's 4.8 MB top-level
    function to collect its source positions during its first run: ~0.5 s that no learner's
    browser spends (a trace shows V8.CollectSourcePositions only when attached). So the page loads
    with nobody attached; Playwright attaches `settle` seconds later and reads the page's own
    performance marks (navigation start → graph drawn and clickable / → graph and node panel).
    """
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        chrome = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                *ARGS,
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--window-size=1280,800",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            active = Path(profile) / "DevToolsActivePort"
            time.sleep(settle)
            cdp_port = active.read_text().split()[0]
            browser = p.chromium.connect_over_cdp(f"http://127.0.0.1:{cdp_port}")
            page = browser.contexts[0].pages[0]
            graph, full = page.evaluate(MARKS)
            # marks missing at attach time would have been measured under DevTools: refuse them
            if graph is None or full is None:
                sys.exit(f"the page was not drawn {settle} s after navigation: raise settle")
            browser.close()
            return graph, full
        finally:
            os.killpg(chrome.pid, signal.SIGTERM)  # the browser and its helper processes
            chrome.wait(timeout=10)


def clicks(page: Page, testid: str, times: int) -> list[float]:
    """Click a control `times` times; each click's 'update' measure (click → graph and panel redrawn)."""
    durations = []
    for _ in range(times):
        before = page.evaluate("Number(document.body.dataset.renders)")
        page.get_by_test_id(testid).click()
        page.wait_for_function(f"Number(document.body.dataset.renders) > {before}")
        durations.append(page.evaluate("performance.getEntriesByName('update').at(-1).duration"))
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    port = free_port()
    proc = start_server(port, 1)
    base = f"http://127.0.0.1:{port}"
    cold_graph, cold_full, watched_graph, warm_full = [], [], [], []
    steps, back, trips, rested = [], [], [], []
    parts: dict[str, list[float]] = {f"{w}:{p}": [] for w in ("load", "update") for p in ("fetch", "graph", "panel")}
    since_navigation = "(name) => performance.getEntriesByName(name)[0].startTime"
    try:
        with sync_playwright() as p:
            # not counted: the machine's first browser start reads Chromium from disk, and the
            # server's first pass warms torch; a learner's browser and a class's server are running
            warm_up = unwatched_visit(p, f"{base}/?seed=2006&node=logits")[0]
            for run in range(args.runs):
                graph, full = unwatched_visit(p, f"{base}/?seed={run + 2007}&node=logits")
                cold_graph.append(graph)
                cold_full.append(full)
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for run in range(args.runs):
                # a first visit under Playwright: a new browser context (empty HTTP and code caches)
                # and a fresh seed, so that the server computes the pass cold too
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{base}/?seed={run + 7}&node=logits")
                page.wait_for_selector("body[data-ready='1']")
                # the same first visit measured under DevTools (see unwatched_visit)
                watched_graph.append(page.evaluate(f"({since_navigation})('graph-drawn')"))
                steps.extend(clicks(page, "next", 7))  # each prefetched while the step before was shown
                # Previous to a step seen before: from the page's cache of the answers it used
                back.extend(clicks(page, "prev", 3))
                # Run all: every node and the panel change at once; its step is asked for when the pointer
                # reaches the button, a moment before Playwright's click: about a round trip. Then Previous
                trips.extend(clicks(page, "run-all", 1))
                back.extend(clicks(page, "prev", 3))
                for name, values in parts.items():
                    values.extend(page.evaluate(f"performance.getEntriesByName('{name}').map((e) => e.duration)"))
                # a repeat visit in the same tab: plotly.js from the HTTP cache, its compiled code from V8's cache
                page.goto(f"{base}/?seed={run + 1007}&node=logits")
                page.wait_for_selector("body[data-ready='1']")
                warm_full.append(page.evaluate(f"({since_navigation})('render-end')"))
                # Run all as a hand clicks it: the pointer on the button a moment (250 ms) before the click
                page.get_by_test_id("run-all").hover()
                page.wait_for_timeout(250)
                rested.extend(clicks(page, "run-all", 1))
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    rows = [
        ("first visit → interactive graph (median)", statistics.median(cold_graph), 1500),
        ("first visit → graph + node panel (median)", statistics.median(cold_full), 1500),
        ("  (the same under DevTools: Playwright attached while it loads:)", None, None),
        ("first visit, DevTools attached → graph (median)", statistics.median(watched_graph), None),
        ("repeat visit → graph + node panel (median)", statistics.median(warm_full), 1500),
        ("step click → graph and panel redrawn (median)", statistics.median(steps), 100),
        ("step click → redrawn (p90)", sorted(steps)[int(0.9 * len(steps))], 100),
        ("  (Next and Previous are prefetched while a step is shown, or were seen before:)", None, None),
        ("Previous click → redrawn (median)", statistics.median(back), 100),
        ("Previous click → redrawn (p90)", sorted(back)[int(0.9 * len(back))], 100),
        ("  (Run all from step 4: every node and the panel change; asked for on hover, ~a round trip:)", None, None),
        ("Run all click → redrawn (median)", statistics.median(trips), 100),
        ("Run all click → redrawn (max)", max(trips), 100),
        ("Run all, pointer on it 250 ms before → redrawn (median)", statistics.median(rested), 100),
        ("Run all, pointer on it 250 ms before → redrawn (max)", max(rested), 100),
    ]
    for name, values in parts.items():
        what = "first render" if name.startswith("load") else "step"
        rows.append((f"  {what}: {name.split(':')[1]} (median)", statistics.median(values), None))
    print(
        f"{args.runs} first visits unwatched + {args.runs} under Playwright, {len(steps)} step clicks,"
        " Debian Chromium headless, 1280x800"
    )
    print(
        "first visits, unwatched, graph drawn at (ms): "
        + ", ".join(f"{v:.0f}" for v in cold_graph)
        + f" (warm-up visit, not counted: {warm_up:.0f})\n"
    )
    print(f"{'measure':50s} {'ms':>8s} {'target':>7s} {'ratio':>6s}")
    for name, value, target in rows:
        if value is None:
            print(name)
            continue
        ratio = f"{value / target:6.2f}" if target else "     -"
        print(f"{name:50s} {value:8.1f} {(str(target) if target else '-'):>7s} {ratio}")


if __name__ == "__main__":
    main()
