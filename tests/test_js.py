"""The frontend's pure modules (state, heatmaps, banner, panel, curves, editor, text), unit-tested by Node's
built-in test runner (tests/js/*.test.mjs): each file's tests are reported here, and any failure fails this test."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JS_TESTS = ROOT / "tests" / "js"


def test_the_frontends_pure_modules_pass_their_node_tests():
    node = shutil.which("node")
    assert node, "Node.js is missing: `make browser-deps` installs Debian's nodejs"
    files = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    assert len(files) >= 4
    out = subprocess.run([node, "--test", *files], capture_output=True, text=True, timeout=120)
    summary = {line.split()[1]: int(line.split()[2]) for line in out.stdout.splitlines() if line.startswith("# ")
               and len(line.split()) == 3 and line.split()[2].isdigit()}  # fmt: skip
    assert out.returncode == 0 and summary.get("fail") == 0, out.stdout[-4000:] + out.stderr[-2000:]
    # every test the files declare ran and passed: none skipped, left to do, or lost to a file that failed to load
    declared = sum(len(re.findall(r"^\s*(?:test|it)\(", Path(f).read_text(), re.M)) for f in files)
    assert declared >= 28, declared
    assert summary.get("pass") == summary.get("tests") == declared, summary
    assert summary.get("skipped") == summary.get("todo") == summary.get("cancelled") == 0, summary


def test_the_training_page_merges_events_as_the_server_does(tmp_path):
    """frontend/js/history.js folds a run's events into the same history as RunStore.history()."""
    import json

    from server.runs.store import RunStore
    from server.training.config import TrainConfig

    store = RunStore(tmp_path / "runs.sqlite3")
    (run_id,) = store.create([TrainConfig(max_steps=400)], keep_running=True)
    events = [
        ("progress", {"step": 100, "max_steps": 400, "loss": 2.9, "points": [[0, 0.52], [50, 0.47]],
                      "smooth": [[1, 0.5]], "ud": [[0, {"W1": -2.5}]], "saturation": [[0, 0.1]]}),
        ("check", {"step": 99, "maxdiff": {"W1": 1e-9}, "checks": 2, "max": 1e-9}),
        ("histograms", {"step": 0, "activations": {"h": {"counts": [1, 2]}}}),
        ("progress", {"step": 400, "max_steps": 400, "loss": 2.4, "points": [[100, 0.44], [399, 0.38]],
                      "smooth": [[3, 0.41]], "ud": [], "saturation": [[200, 0.05]]}),
        ("check", {"step": 399, "maxdiff": {"W1": None}, "checks": 2, "max": None}),
    ]  # fmt: skip
    for kind, data in events:
        assert store.append(run_id, kind, data)
    server = store.history(run_id)
    script = (
        f"import {{ emptyHistory, mergeEvent }} from {json.dumps((ROOT / 'frontend/js/history.js').as_uri())};"
        f"const run = emptyHistory(); for (const [k, d] of {json.dumps(events)}) mergeEvent(run, k, d);"
        "console.log(JSON.stringify(run));"
    )
    out = subprocess.run(
        [shutil.which("node") or "node", "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    page = json.loads(out.stdout)
    for key in ("points", "smooth", "ud", "saturation", "checks", "histograms", "progress"):
        assert page[key] == server[key], key
    assert page["progress"]["step"] == 400 and len(page["points"]) == 4  # both progress events, in order
