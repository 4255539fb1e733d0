"""A built wheel works on its own: installed into a fresh venv, it serves its page and its names list."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from .live_server import free_port

ROOT = Path(__file__).resolve().parent.parent
SOURCE_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "artifacts", "docs"
)


@pytest.mark.slow  # builds a wheel and a venv, then starts the server: 5-15 s
def test_the_wheel_serves_its_page_and_data_from_anywhere(tmp_path):
    # build from a copy: the build leaves nothing in the checkout
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SOURCE_IGNORED)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", src], check=True)
    (wheel,) = (tmp_path / "dist").glob("backprop_explorer-*.whl")
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata  # an SPDX string: setuptools warned about the old table
    # a fresh venv; its dependencies (torch is GBs) are this interpreter's, added after its own site-packages
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], check=True)
    elsewhere = tmp_path / "elsewhere"  # no checkout in sight: cwd and sys.path hold no server/ but the installed one
    elsewhere.mkdir()
    where = subprocess.run(
        [python, "-c", "import server; print(server.__file__)"],
        cwd=elsewhere,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(site), where

    port = free_port()
    cmd = [venv / "bin" / "backprop-explorer", "--port", str(port), "--runs-db", elsewhere / "runs.sqlite3"]
    log = (tmp_path / "server.log").open("w+")
    proc = subprocess.Popen(cmd, cwd=elsewhere, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail("the installed server did not start:\n" + log.read())
                time.sleep(0.2)
        for page, needle in [("/", b"<html"), ("/train.html", b"<html"), ("/js/app.js", b"import")]:
            with urllib.request.urlopen(f"{url}{page}", timeout=10) as r:
                assert r.status == 200 and needle in r.read(), page
        with urllib.request.urlopen(f"{url}/api/dataset", timeout=10) as r:
            ds = json.load(r)
        assert ds["file"] == "names.txt" and ds["words"] == 29910 and ds["vocab_size"] == 27
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_the_server_refuses_to_start_without_its_page(tmp_path):
    # a package without the page next to it (as a wheel built without package data was)
    shutil.copytree(ROOT / "server", tmp_path / "server", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "server", "--port", str(free_port()), "--runs-db", tmp_path / "runs.sqlite3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "lacks its page or data" in proc.stderr and "index.html" in proc.stderr and "Traceback" not in proc.stderr
