"""python -m server: a bad data file is a one-line error; a good one serves its own vocabulary."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"", "empty"), (b"\x00\x01\x02", "binary"), (b"\xff\xfe", "not UTF-8")],
)
def test_bad_data_file_exits_with_message(tmp_path, content, message):
    path = tmp_path / "names.txt"
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "server", "--data", str(path), "--port", str(_free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serves_a_custom_file(tmp_path):
    words = ["ab", "ba", "abc", "cab", "bca", "aa", "bb", "cc", "abca", "cba", "acb"]
    path = tmp_path / "abc.txt"
    path.write_text("\n".join(words) + "\n")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--data", str(path), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/dataset", timeout=2) as r:
                    ds = json.load(r)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail("server did not start:\n" + (proc.stdout.read() if proc.stdout else ""))
                time.sleep(0.2)
        assert ds["vocab"] == [".", "a", "b", "c"] and ds["words"] == 11
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state?batch_size=4", timeout=10) as r:
            assert json.load(r)["total_steps"] == 20
    finally:
        proc.terminate()
        proc.wait(timeout=10)
