"""Browser benchmark: page load → drawn, steppable graph, and a step click → graph and panel redrawn.

Starts the real server, drives Debian Chromium with Playwright, and reads the page's own
performance measures ('load' and 'update', marked in frontend/js/app.js). First visits are loaded
in a new browser with no DevTools attached and read afterwards (see unwatched_visit); the same
first visit under Playwright is printed beside them. Side by side, in the same run: a page that only
loads plotly.min.js, the earlier page that drew nothing before plotly.js had arrived (its frontend/
from git, served by a second server: see baseline_frontend), the bytes each fetched before its graph
was drawn, and both first visits under Chromium's 4x CPU throttling (as a phone). Prints medians beside
the targets (ratio = measured / target). Usage: python bench/browser_bench.py [--runs 10] [--baseline REF]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import Page, Playwright, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_bench import ROOT, free_port, start_server  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.browser import ARGS, CHROMIUM  # noqa: E402 -- the browser tests' Chromium and its flags

# navigation start → the first graph drawn / → drawn with the controls enabled and the inspector filled (the
# first load's end: steppable), and the bytes (compressed, with headers) of every response asked for before that
MARKS = """(() => { const at = (name) => performance.getEntriesByName(name)[0]?.startTime;
  const steppable = at('render-end');
  const asked = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
    .filter((e) => e.startTime < steppable);
  return [at('graph-drawn'), steppable, asked.reduce((n, e) => n + e.transferSize, 0)]; })()"""
PLOTLY_ONLY = """<!doctype html><meta charset="utf-8"><title>plotly.min.js alone</title>
<script src="/vendor/plotly.min.js" onload="performance.mark('plotly-loaded')"></script>"""
PLOTLY_MARK = "[performance.getEntriesByName('plotly-loaded')[0]?.startTime]"
THROTTLE = 4  # Chromium's CPU throttling rate: about a phone


def chromium(profile: str, url: str) -> tuple[subprocess.Popen, str]:
    """A new headless Chromium (its own profile: empty caches) at `url`, and its DevTools port."""
    chrome = subprocess.Popen(
        [CHROMIUM, "--headless", *ARGS, "--no-first-run", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--window-size=1280,800", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    active = Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not (active.exists() and active.read_text().strip()):
        if time.monotonic() > deadline:
            sys.exit("chromium did not start")
        time.sleep(0.05)
    return chrome, active.read_text().split()[0]


def unwatched_visit(p: Playwright, url: str, marks: str = MARKS, settle: float = 5.0) -> list[float]:
    """A first visit as a learner makes it: a new browser (empty HTTP and code caches), no DevTools.

    While DevTools is attached (Playwright always is), V8 re-parses plotly.js's 4.8 MB top-level
    function to collect its source positions during its first run: ~0.5 s that no learner's
    browser spends (a trace shows V8.CollectSourcePositions only when attached). So the page loads
    with nobody attached; Playwright attaches `settle` seconds later and reads the page's own
    performance marks (`marks`: see MARKS).
    """
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        chrome, cdp_port = chromium(profile, url)
        try:
            time.sleep(settle)
            browser = p.chromium.connect_over_cdp(f"http://127.0.0.1:{cdp_port}")
            found = browser.contexts[0].pages[0].evaluate(marks)
            # marks missing at attach time would have been measured under DevTools: refuse them
            if any(v is None for v in found):
                sys.exit(f"the page was not drawn {settle} s after navigation: raise settle")
            browser.close()
            return found
        finally:
            os.killpg(chrome.pid, signal.SIGTERM)  # the browser and its helper processes
            chrome.wait(timeout=10)


class DevTools:
    """The least DevTools client: one WebSocket to one page, commands sent and answered in turn.

    Playwright enables the Runtime and other domains, under which V8 collects plotly.js's source positions
    (see unwatched_visit); this sends only what it is asked to (Emulation, Page, Runtime.evaluate).
    """

    def __init__(self, ws_url: str) -> None:
        u = urlparse(ws_url)
        self.sock = socket.create_connection((u.hostname, u.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            sys.exit(f"DevTools refused the WebSocket: {head[:200]!r}")
        self.last = 0

    def send(self, method: str, **params: object) -> dict:
        self.last += 1
        data = json.dumps({"id": self.last, "method": method, "params": params}).encode()
        n, mask = len(data), os.urandom(4)  # a client's frames are masked (RFC 6455)
        size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        self.sock.sendall(b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        while True:
            message = json.loads(self._message())
            if message.get("id") == self.last:
                if "error" in message:
                    sys.exit(f"DevTools: {method}: {message['error']}")
                return message["result"]

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self.sock.recv(65536)
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _message(self) -> bytes:
        payload = b""
        while True:
            first, second = self._read(2)
            n = second & 0x7F
            if n >= 126:
                n = int.from_bytes(self._read(2 if n == 126 else 8), "big")
            payload += self._read(n)
            if first & 0x80:  # the final frame of the message
                return payload


def throttled_visit(url: str, rate: int = THROTTLE, timeout: float = 60.0) -> list[float]:
    """A first visit in a new browser with its CPU throttled `rate` times (Emulation.setCPUThrottlingRate),
    through the least DevTools client; navigation start → the first load's end (MARKS), polled each second."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        chrome, cdp_port = chromium(profile, "about:blank")
        try:
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{cdp_port}/json/list"))
            tools = DevTools(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
            tools.send("Emulation.setCPUThrottlingRate", rate=rate)
            tools.send("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                time.sleep(1.0)
                found = tools.send("Runtime.evaluate", expression=MARKS, returnByValue=True)["result"].get("value")
                if found and all(v is not None for v in found):
                    return found
            sys.exit(f"the throttled page was not drawn in {timeout} s")
        finally:
            os.killpg(chrome.pid, signal.SIGTERM)
            chrome.wait(timeout=10)


def baseline_frontend(ref: str | None, into: Path) -> str:
    """The earlier page into `into`/frontend (git archive), with a page that only loads plotly.min.js beside it.

    By default the last commit whose index.html listed plotly.min.js as a script of its own (the page that drew
    nothing before it had arrived): the parent of the newest commit that changed that line's count.
    """
    if ref is None:
        changed = subprocess.run(
            ["git", "log", "-1", "--format=%H", "-S", 'src="/vendor/plotly.min.js"', "--", "frontend/index.html"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        ref = f"{changed}^"
    archive = subprocess.run(["git", "archive", ref, "frontend"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "frontend" / "plotly-only.html").write_text(PLOTLY_ONLY)
    # the server serves every page it knows of: the ones added since (the class view's) are copied in as they are
    # now; only index.html is measured
    for page in (ROOT / "frontend").glob("*.html"):
        if not (into / "frontend" / page.name).exists():
            (into / "frontend" / page.name).write_bytes(page.read_bytes())
    return subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True).stdout.strip()


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
    parser.add_argument("--throttled-runs", type=int, default=5)
    parser.add_argument("--baseline", help="the git ref of the earlier page (default: see baseline_frontend)")
    args = parser.parse_args()
    earlier_dir = tempfile.TemporaryDirectory()
    ref = baseline_frontend(args.baseline, Path(earlier_dir.name))
    port, earlier_port = free_port(), free_port()
    proc = start_server(port, 1)
    # the earlier page, from this server's code: the same API, plotly.min.js and compression
    os.environ["BACKPROP_EXPLORER_FRONTEND"] = str(Path(earlier_dir.name) / "frontend")
    try:
        earlier_proc = start_server(earlier_port, 1)
    finally:
        del os.environ["BACKPROP_EXPLORER_FRONTEND"]
    base, earlier = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{earlier_port}"
    cold: dict[str, list[list[float]]] = {"this": [], "earlier": []}
    alone: list[float] = []
    throttled: dict[str, list[float]] = {"this": [], "earlier": []}
    watched_graph, warm_full = [], []
    steps, back, trips, rested = [], [], [], []
    parts: dict[str, list[float]] = {f"{w}:{p}": [] for w in ("load", "update") for p in ("fetch", "graph", "panel")}
    since_navigation = "(name) => performance.getEntriesByName(name)[0].startTime"
    try:
        with sync_playwright() as p:
            # not counted: the machine's first browser start reads Chromium from disk, and the
            # server's first pass warms torch; a learner's browser and a class's server are running
            warm_up = unwatched_visit(p, f"{base}/?seed=2006&node=logits")[1]
            unwatched_visit(p, f"{earlier}/?seed=2006&node=logits")
            for run in range(args.runs):  # interleaved: the machine's noise hits each page alike
                cold["this"].append(unwatched_visit(p, f"{base}/?seed={run + 2007}&node=logits"))
                cold["earlier"].append(unwatched_visit(p, f"{earlier}/?seed={run + 3007}&node=logits"))
                alone.append(unwatched_visit(p, f"{earlier}/plotly-only.html", PLOTLY_MARK)[0])
            for run in range(args.throttled_runs):
                throttled["this"].append(throttled_visit(f"{base}/?seed={run + 4007}&node=logits")[1])
                throttled["earlier"].append(throttled_visit(f"{earlier}/?seed={run + 5007}&node=logits")[1])
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for run in range(args.runs):
                # a first visit under Playwright: a new browser context (empty HTTP and code caches)
                # and a fresh seed, so that the server computes the pass cold too
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{base}/?seed={run + 7}&node=logits")
                page.wait_for_selector("body[data-ready='1']")
                # the same first visit measured under DevTools (see unwatched_visit)
                watched_graph.append(page.evaluate(f"({since_navigation})('render-end')"))
                steps.extend(clicks(page, "next", 7))  # each prefetched while the step before was shown
                # Previous to a step seen before: from the page's cache of the answers it used
                back.extend(clicks(page, "prev", 3))
                # Run all: every node and the panel change at once; its step is asked for when the pointer
                # reaches the button, a moment before Playwright's click: about a round trip. Then Previous
                trips.extend(clicks(page, "run-all", 1))
                back.extend(clicks(page, "prev", 3))
                for name, values in parts.items():
                    values.extend(page.evaluate(f"performance.getEntriesByName('{name}').map((e) => e.duration)"))
                # a repeat visit in the same tab: every script from the HTTP cache, their code from V8's cache
                page.goto(f"{base}/?seed={run + 1007}&node=logits")
                page.wait_for_selector("body[data-ready='1']")
                warm_full.append(page.evaluate(f"({since_navigation})('plots-drawn')"))
                # Run all as a hand clicks it: the pointer on the button a moment (250 ms) before the click
                page.get_by_test_id("run-all").hover()
                page.wait_for_timeout(250)
                rested.extend(clicks(page, "run-all", 1))
                page.close()
            browser.close()
    finally:
        for server in (proc, earlier_proc):
            server.terminate()
            server.wait(timeout=10)
        earlier_dir.cleanup()

    def med(page: str, i: int) -> float:
        return statistics.median(v[i] for v in cold[page])

    plotly_alone = statistics.median(alone)
    print(
        f"{args.runs} first visits of each page unwatched (interleaved), {args.throttled_runs} of each throttled"
        f" {THROTTLE}x, {args.runs} under Playwright, {len(steps)} step clicks, Debian Chromium headless, 1280x800;"
        f" the earlier page: frontend/ of {ref}"
    )
    print(
        "first visits, unwatched, drawn and steppable at (ms): "
        + ", ".join(f"{v[1]:.0f}" for v in cold["this"])
        + f" (warm-up visit, not counted: {warm_up:.0f}); the earlier page: "
        + ", ".join(f"{v[1]:.0f}" for v in cold["earlier"])
        + "\n"
    )
    first = [
        ("first visit → graph drawn (median, ms)", med("this", 0), med("earlier", 0), None),
        ("first visit → drawn, steppable graph (median, ms)", med("this", 1), med("earlier", 1), None),
        ("a page that only loads plotly.min.js → loaded (median, ms)", plotly_alone, plotly_alone, None),
        ("steppable graph / plotly.min.js alone", med("this", 1) / plotly_alone, med("earlier", 1) / plotly_alone, 0.6),
        ("KB fetched (compressed) before the graph is steppable", med("this", 2) / 1000, med("earlier", 2) / 1000, 700),
        (f"{THROTTLE}x CPU throttled: first visit → steppable (median, ms)",
         statistics.median(throttled["this"]), statistics.median(throttled["earlier"]), None),
        (f"{THROTTLE}x CPU throttled: this page / the earlier page",
         statistics.median(throttled["this"]) / statistics.median(throttled["earlier"]), 1.0, 0.5),
    ]  # fmt: skip
    print(f"{'first visit':62s} {'this page':>10s} {'earlier':>10s} {'target':>7s}")
    for name, this, before, target in first:
        digits = 2 if this < 10 else 0
        print(f"{name:62s} {this:10.{digits}f} {before:10.{digits}f} {(f'≤ {target:g}' if target else '-'):>7s}")
    print(
        f"throttled visits (ms): this page {', '.join(f'{v:.0f}' for v in throttled['this'])};"
        f" the earlier page {', '.join(f'{v:.0f}' for v in throttled['earlier'])}\n"
    )
    rows = [
        ("first visit, DevTools attached → steppable (median)", statistics.median(watched_graph), None),
        ("repeat visit → graph, inspector and heatmap axes (median)", statistics.median(warm_full), 1500),
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
    print(f"{'measure':58s} {'ms':>8s} {'target':>7s} {'ratio':>6s}")
    for name, value, target in rows:
        if value is None:
            print(name)
            continue
        ratio = f"{value / target:6.2f}" if target else "     -"
        print(f"{name:58s} {value:8.1f} {(str(target) if target else '-'):>7s} {ratio}")


if __name__ == "__main__":
    main()
