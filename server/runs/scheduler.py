"""Start a training process (server/runs/train_process.py) for each run this web process claims, and reap them.

No web code: the web app calls Scheduler.tick() every half second. Each training process leads a process group
of its own, and the group goes with it: a run that ends for any reason leaves no process behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core.data import Dataset
from .store import RunStore

ROOT = Path(__file__).resolve().parent.parent
TRAIN_PROCESS = (sys.executable, "-m", "server.runs.train_process")  # what a claimed run's training process runs
# a run asked to stop (cancelled, deleted, ended) whose training process still trains this long after is killed:
# it looks for a stop every half second, so it is stuck in a step
STOP_GRACE_S = 5.0
log = logging.getLogger("backprop-explorer")


def _hand_over(proc: subprocess.Popen, raw: bytes) -> None:
    """Write the names list to a training process's stdin (a thread: the pipe holds 64 KiB until it reads)."""
    assert proc.stdin is not None
    try:
        with proc.stdin:
            proc.stdin.write(raw)
    except OSError:  # the training process died first: its run ends as failed or interrupted
        pass


def signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group that training process `pid` leads (gone already: nothing to do)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def exit_reason(code: int) -> str:
    """Why a run failed whose training process ended with `code` without ending the run itself."""
    if code == -signal.SIGKILL:
        return "its training process was killed (SIGKILL: by hand, past its CPU-time limit, or out of memory)"
    if code == -signal.SIGXCPU:
        return "its training process used up its CPU-time limit"
    if code < 0:
        return f"its training process was stopped by {signal.Signals(-code).name}"
    return f"its training process exited (code {code}) without ending it"


class Scheduler:
    """Called every half second by the web app: sweep stale runs, claim queued ones, reap training processes.

    instance: this web process's name in the runs table: it trains the runs started on it, and on shutdown it
    interrupts only those. program: the training process's command, before its options (tests stub it)."""

    def __init__(
        self,
        store: RunStore,
        dataset: Dataset,
        instance: str | None = None,
        program: Sequence[str] = TRAIN_PROCESS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.dataset = dataset
        self.instance = instance or uuid.uuid4().hex
        self.program, self.clock = tuple(program), clock
        self.processes: dict[int, subprocess.Popen] = {}  # run id -> its training process
        self.asked_to_stop: dict[int, float] = {}  # run id -> when its process was first seen asked to stop
        self.failing: str | None = None  # the store's error, logged once until a tick succeeds again

    def tick(self) -> None:
        try:
            self._reap()
            self._stop_stuck()
            self.store.sweep(self.instance)
            if self.store.claims_locally:  # PostgreSQL: workers take the runs from the task queue
                while (claimed := self.store.claim(self.instance)) is not None:
                    self._start(claimed[0])
        except Exception as e:  # a database that cannot be read (corrupt, locked, gone): said once, not each tick
            said = f"{type(e).__name__}: {e}"
            if said != self.failing:
                log.error("the runs database cannot be used (%s): runs wait until it can", said)
                self.failing = said
            return
        if self.failing is not None:
            log.warning("the runs database can be used again")
            self.failing = None

    def _start(self, run_id: int) -> None:
        cmd = [
            *self.program, "--db", self.store.url, "--run", str(run_id),
            "--data-name", str(self.dataset.path), "--data-sha256", self.dataset.sha256,
            "--watch-grace", str(self.store.limits.watch_grace_s),
        ]  # fmt: skip
        # the words validated at start-up go through its stdin: the file is never read again; a session of its
        # own, so that its whole group can be killed
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, start_new_session=True)
        threading.Thread(target=_hand_over, args=(proc, self.dataset.raw), daemon=True).start()
        self.processes[run_id] = proc
        self.store.set_worker(run_id, proc.pid)

    def _reap(self) -> None:
        """Training processes that exited: their group is killed, and a run they left running fails, saying why."""
        for run_id, proc in list(self.processes.items()):
            try:  # without reaping it: its pid (the group's id) stays its own until the group is killed
                exited = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # reaped already
                exited = True
            if exited is None:
                continue
            signal_group(proc.pid, signal.SIGKILL)
            code = proc.wait()
            del self.processes[run_id]
            self.asked_to_stop.pop(run_id, None)
            self.store.abort(run_id, exit_reason(code))  # nothing changes for a run it ended itself

    def _stop_stuck(self) -> None:
        """Kill the group of a training process that goes on after its run was asked to stop (reaped next tick)."""
        asked, now = self.store.stopping(list(self.processes)), self.clock()
        self.asked_to_stop = {run_id: self.asked_to_stop.get(run_id, now) for run_id in asked}
        for run_id, since in self.asked_to_stop.items():
            if now - since >= STOP_GRACE_S:
                signal_group(self.processes[run_id].pid, signal.SIGKILL)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every training process: each ends its run as interrupted; any that does not, is killed with its
        group; then this process's runs still running end as interrupted (another server's are left alone)."""
        for proc in self.processes.values():
            signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            signal_group(proc.pid, signal.SIGKILL)  # anything it started
        self.processes.clear()
        try:
            self.store.release(self.instance)
        except Exception as e:  # the database is gone or corrupt: the runs' heartbeats will say it
            log.error("could not mark this server's runs interrupted: %s: %s", type(e).__name__, e)
