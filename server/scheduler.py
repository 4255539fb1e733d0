"""Start a training process (server/train_process.py) for each run this web process claims, and reap them.

No web code: the web app calls Scheduler.tick() every half second.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from .data import Dataset
from .runs import RunStore

ROOT = Path(__file__).resolve().parent.parent


def _hand_over(proc: subprocess.Popen, raw: bytes) -> None:
    """Write the names list to a training process's stdin (a thread: the pipe holds 64 KiB until it reads)."""
    assert proc.stdin is not None
    try:
        with proc.stdin:
            proc.stdin.write(raw)
    except OSError:  # the training process died first: its run ends as failed or interrupted
        pass


class Scheduler:
    """Called every half second by the web app: sweep stale runs, claim queued ones, reap training processes."""

    def __init__(self, store: RunStore, dataset: Dataset) -> None:
        self.store = store
        self.dataset = dataset
        self.processes: dict[int, subprocess.Popen] = {}  # run id -> its training process

    def tick(self) -> None:
        for run_id, proc in list(self.processes.items()):
            if proc.poll() is not None:
                del self.processes[run_id]
        self.store.sweep()
        if not self.store.claims_locally:  # PostgreSQL: workers take the runs from the task queue
            return
        while (claimed := self.store.claim()) is not None:
            run_id, _ = claimed
            cmd = [
                sys.executable, "-m", "server.train_process", "--db", self.store.url, "--run", str(run_id),
                "--data-name", str(self.dataset.path), "--data-sha256", self.dataset.sha256,
                "--watch-grace", str(self.store.limits.watch_grace_s),
            ]  # fmt: skip
            # the words validated at start-up go through its stdin: the file is never read again
            proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE)
            threading.Thread(target=_hand_over, args=(proc, self.dataset.raw), daemon=True).start()
            self.processes[run_id] = proc
            self.store.set_worker(run_id, proc.pid)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every training process: each ends its run as interrupted; any that does not, is killed."""
        for proc in self.processes.values():
            proc.terminate()
        stubborn = set()
        for proc in self.processes.values():
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                stubborn.add(proc.pid)
        self.store.interrupt_all_running(stubborn)
        self.processes.clear()
