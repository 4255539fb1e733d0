"""What the attack benches share: a server started from a source tree on a free loopback port, and ways to
measure it (memory from /proc, its sandbox processes, /api/health's latency, calls at once)."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only: never aimed anywhere else


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def status_mb(pid: int, field: str) -> float:
    """A memory figure of a process from /proc/PID/status (VmRSS: resident now, VmHWM: its peak), MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    return status_mb(pid, "VmRSS")


def hwm_mb(pid: int) -> float:
    return status_mb(pid, "VmHWM")


def spawned(pid: int) -> list[int]:
    """The multiprocessing children of a process (the check workers of a server process)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in children if b"multiprocessing" in Path(f"/proc/{c}/cmdline").read_bytes()]


class Server:
    """python -m server from `root`, on a free port, with its own runs database."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root, self.args = root, args
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.tmp = tempfile.TemporaryDirectory()
        self.log = tempfile.TemporaryFile("w+")

    def __enter__(self) -> Server:
        args = list(self.args)
        if "--runs-db" not in args:
            args += ["--runs-db", f"{self.tmp.name}/runs.sqlite3"]
        cmd = [sys.executable, "-m", "server", "--host", HOST, "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/api/health", timeout=2)
                return self
            except httpx.HTTPError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        self.proc.kill()
        self.log.seek(0)
        sys.exit(f"server from {self.root} did not start:\n{self.log.read()}")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.tmp.cleanup()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()


@contextmanager
def health_probe(url: str, every_s: float = 0.05) -> Iterator[list[float]]:
    """Time /api/health every `every_s` while the block runs; yields the list of latencies (s)."""
    times: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    c.get(f"{url}/api/health")
                except httpx.HTTPError:
                    pass
                times.append(time.perf_counter() - t0)
                stop.wait(every_s)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        yield times
    finally:
        stop.set()
        thread.join(timeout=120)


def status(request: Callable[[], httpx.Response]) -> str:
    """A request's status code, or the error that came instead."""
    try:
        return str(request().status_code)
    except httpx.HTTPError as e:
        return type(e).__name__


def from_address(address: str) -> httpx.Client:
    """A client whose connections come from another loopback address (the server stays on 127.0.0.1):
    the server tells clients apart by their address, as it would a class's laptops."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=300)


def in_threads(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls at once, one thread each; their results (or exceptions) in order."""
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as e:  # noqa: BLE001 - reported, not raised
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return results


def refused_heads(socks: list[socket.socket], statuses: tuple[bytes, ...]) -> int:
    """How many of these connections (each sent a request) were answered with one of `statuses` (b"429", ...)."""
    refused = 0
    for s in socks:
        s.settimeout(5)
        try:
            head = s.recv(64)
        except OSError:
            head = b""
        refused += head.startswith(tuple(b"HTTP/1.1 " + status for status in statuses))
    return refused
