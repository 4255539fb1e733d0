"""Start the real server (python -m server) on a free port, as the browser and CLI tests need it."""

from __future__ import annotations

import signal
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


def cmdline(pid: int | str) -> str:
    """A process's command line, arguments joined by spaces; "" once it has ended (it may end while being read)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:  # gone meanwhile: ProcessLookupError mid-read, FileNotFoundError before
        return ""


def stat(pid: int | str) -> list[str]:
    """A process's /proc/PID/stat fields after its command name: its state ("Z": ended, not yet reaped), its parent's
    pid, ... (proc(5)'s fields from the third on); [] once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile: ProcessLookupError mid-read, FileNotFoundError before
        return []
    return text[text.rindex(")") + 2 :].split()


def parent(pid: int | str) -> int:
    """A process's parent's pid; 0 once it is gone."""
    fields = stat(pid)
    return int(fields[1]) if fields else 0


def sandbox_processes(pids: list[int]) -> list[int]:
    """The sandbox processes among `pids` (server/sandbox_pool.py): the forkserver's children, not the forkserver
    itself, multiprocessing's resource tracker or a web process."""
    return [pid for pid in pids if "multiprocessing.forkserver" in cmdline(parent(pid))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """python -m server on a free port; start() returns once /api/health answers, or fails with its output."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None
        # a file, not a pipe: a server that logs more than a pipe holds would block on the unread pipe
        self.log = tempfile.TemporaryFile("w+")

    def start(self) -> LiveServer:
        port = self.url.rsplit(":", 1)[1]
        cmd = [sys.executable, "-m", "server", "--port", port, *self.args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/api/health", timeout=2)
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    self.log.seek(0)
                    pytest.fail("server did not start:\n" + self.log.read())
                time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        self.log.close()


@contextmanager
def live_server(*args: str) -> Iterator[str]:
    """Yield the base URL of a started server; stop it afterwards."""
    runs_dir = tempfile.TemporaryDirectory()  # a test never touches ~/.backprop-explorer
    if "--runs-db" not in args:
        args = (*args, "--runs-db", f"{runs_dir.name}/runs.sqlite3")
    server = LiveServer(*args).start()
    try:
        yield server.url
    finally:
        server.stop()
        runs_dir.cleanup()
