"""Start the real server (python -m server) on a free port, as the browser and CLI tests need it."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(*args: str) -> Iterator[str]:
    """Yield the base URL once /api/health answers; fail with the server's output if it never does."""
    port = free_port()
    runs_dir = tempfile.TemporaryDirectory()  # a test never touches ~/.backprop-explorer
    if "--runs-db" not in args:
        args = (*args, "--runs-db", f"{runs_dir.name}/runs.sqlite3")
    cmd = [sys.executable, "-m", "server", "--port", str(port), *args]
    # a file, not a pipe: a server that logs more than a pipe holds would block on the unread pipe
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    log.seek(0)
                    pytest.fail("server did not start:\n" + log.read())
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        runs_dir.cleanup()
