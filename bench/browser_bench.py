"""Browser benchmark: page load → interactive graph, and a step click → graph and panel redrawn.

Starts the real server, drives Debian Chromium with Playwright, and reads the page's own
performance measures ('load' and 'update', marked in frontend/js/app.js). Prints medians beside
the targets (ratio = measured / target). Usage: python bench/browser_bench.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_bench import free_port, start_server  # noqa: E402

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    port = free_port()
    proc = start_server(port, 1)
    base = f"http://127.0.0.1:{port}"
    load_nav, load_app, steps = [], [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            for run in range(args.runs):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                # a fresh seed each run: the server computes the pass cold, as for a new visitor
                page.goto(f"{base}/?seed={run + 7}&node=logits")
                page.wait_for_selector("body[data-ready='1']")
                # navigation start → graph and panel drawn (includes fetching plotly.js and the API)
                load_nav.append(page.evaluate("performance.getEntriesByName('render-end')[0].startTime"))
                load_app.append(page.evaluate("performance.getEntriesByName('load')[0].duration"))
                for k in range(1, 8):
                    before = page.evaluate("Number(document.body.dataset.renders)")
                    page.get_by_test_id("next").click()
                    page.wait_for_function(f"Number(document.body.dataset.renders) > {before}")
                    steps.append(page.evaluate(f"performance.getEntriesByName('update')[{k - 1}].duration"))
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    rows = [
        ("page load → interactive graph + panel (median)", statistics.median(load_nav), 1500),
        ("  of which: app's first render (median)", statistics.median(load_app), None),
        ("step click → graph and panel redrawn (median)", statistics.median(steps), 100),
        ("step click → redrawn (p90)", sorted(steps)[int(0.9 * len(steps))], 100),
    ]
    print(f"{args.runs} page loads, {len(steps)} step clicks, Debian Chromium headless, 1280x800\n")
    print(f"{'measure':50s} {'ms':>8s} {'target':>7s} {'ratio':>6s}")
    for name, value, target in rows:
        ratio = f"{value / target:6.2f}" if target else "     -"
        print(f"{name:50s} {value:8.1f} {(str(target) if target else '-'):>7s} {ratio}")


if __name__ == "__main__":
    main()
