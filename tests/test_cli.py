"""python -m server: a bad data file is a one-line error; a good one serves its own vocabulary."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .live_server import free_port, live_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"", "empty"), (b"\x00\x01\x02", "binary"), (b"\xff\xfe", "not UTF-8")],
)
def test_bad_data_file_exits_with_message(tmp_path, content, message):
    path = tmp_path / "names.txt"
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "server", "--data", str(path), "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serves_a_custom_file(tmp_path):
    words = ["ab", "ba", "abc", "cab", "bca", "aa", "bb", "cc", "abca", "cba", "acb"]
    path = tmp_path / "abc.txt"
    path.write_text("\n".join(words) + "\n")
    with live_server("--data", str(path)) as url:
        with urllib.request.urlopen(f"{url}/api/dataset", timeout=10) as r:
            ds = json.load(r)
        assert ds["vocab"] == [".", "a", "b", "c"] and ds["words"] == 11
        with urllib.request.urlopen(f"{url}/api/state?batch_size=4", timeout=10) as r:
            assert json.load(r)["total_steps"] == 20
