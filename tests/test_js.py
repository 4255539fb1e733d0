"""The frontend's pure modules (state, heatmaps, banner, panel), unit-tested by Node's built-in test runner
(tests/js/*.test.mjs): each file's tests are reported here, and any failure fails this test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

JS_TESTS = Path(__file__).resolve().parent / "js"


def test_the_frontends_pure_modules_pass_their_node_tests():
    node = shutil.which("node")
    assert node, "Node.js is missing: `make browser-deps` installs Debian's nodejs"
    files = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    assert len(files) >= 4
    out = subprocess.run([node, "--test", *files], capture_output=True, text=True, timeout=120)
    summary = {line.split()[1]: int(line.split()[2]) for line in out.stdout.splitlines() if line.startswith("# ")
               and len(line.split()) == 3 and line.split()[2].isdigit()}  # fmt: skip
    assert out.returncode == 0 and summary.get("fail") == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert summary.get("pass", 0) >= 18, summary
