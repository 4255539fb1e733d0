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

from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_bench import free_port, start_server  # noqa: E402

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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
    cold_graph, cold_full, warm_full, steps, back, trips = [], [], [], [], [], []
    parts: dict[str, list[float]] = {f"{w}:{p}": [] for w in ("load", "update") for p in ("fetch", "graph", "panel")}
    since_navigation = "(name) => performance.getEntriesByName(name)[0].startTime"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            for run in range(args.runs):
                # a first visit: a new browser context (empty HTTP and code caches) and a fresh seed,
                # so that the server computes the pass cold too
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{base}/?seed={run + 7}&node=logits")
                page.wait_for_selector("body[data-ready='1']")
                # navigation start → graph drawn and clickable / → graph and the node panel drawn
                cold_graph.append(page.evaluate(f"({since_navigation})('graph-drawn')"))
                cold_full.append(page.evaluate(f"({since_navigation})('render-end')"))
                steps.extend(clicks(page, "next", 7))  # each prefetched while the step before was shown
                # Previous to a step seen before: from the page's cache of the answers it used
                back.extend(clicks(page, "prev", 3))
                # a jump to a step not seen (Run all): a round trip; then Previous from there, prefetched
                trips.extend(clicks(page, "run-all", 1))
                back.extend(clicks(page, "prev", 3))
                for name, values in parts.items():
                    values.extend(page.evaluate(f"performance.getEntriesByName('{name}').map((e) => e.duration)"))
                # a repeat visit in the same tab: plotly.js from the HTTP cache, its compiled code from V8's cache
                page.goto(f"{base}/?seed={run + 1007}&node=logits")
                page.wait_for_selector("body[data-ready='1']")
                warm_full.append(page.evaluate(f"({since_navigation})('render-end')"))
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    rows = [
        ("first visit → interactive graph (median)", statistics.median(cold_graph), 1500),
        ("first visit → graph + node panel (median)", statistics.median(cold_full), 1500),
        ("repeat visit → graph + node panel (median)", statistics.median(warm_full), 1500),
        ("step click → graph and panel redrawn (median)", statistics.median(steps), 100),
        ("step click → redrawn (p90)", sorted(steps)[int(0.9 * len(steps))], 100),
        ("  (Next and Previous are prefetched while a step is shown, or were seen before:)", None, None),
        ("Previous click → redrawn (median)", statistics.median(back), 100),
        ("Previous click → redrawn (p90)", sorted(back)[int(0.9 * len(back))], 100),
        ("  (a jump to a step not seen: Run all from step 4, a round trip:)", None, None),
        ("Run all click → redrawn (median)", statistics.median(trips), 100),
        ("Run all click → redrawn (max)", max(trips), 100),
    ]
    for name, values in parts.items():
        what = "first render" if name.startswith("load") else "step"
        rows.append((f"  {what}: {name.split(':')[1]} (median)", statistics.median(values), None))
    print(f"{args.runs} page loads, {len(steps)} step clicks, Debian Chromium headless, 1280x800\n")
    print(f"{'measure':50s} {'ms':>8s} {'target':>7s} {'ratio':>6s}")
    for name, value, target in rows:
        if value is None:
            print(name)
            continue
        ratio = f"{value / target:6.2f}" if target else "     -"
        print(f"{name:50s} {value:8.1f} {(str(target) if target else '-'):>7s} {ratio}")


if __name__ == "__main__":
    main()
