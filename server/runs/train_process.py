"""A training run's own process: python -m server.runs.train_process --db DB --run ID --data-name N --data-sha256 HEX.

--db: a SQLite path or a PostgreSQL URL. The names list comes through stdin, as the server validated it at
start-up (the file is never re-read).

Started by a server process for a run it claimed (SQLite), or by a worker for a run it took from the task
queue (PostgreSQL: server/runs/train_worker.py). One torch thread, at nice 10, under the run's CPU-time limit;
reports through the run store; stops when the run is cancelled, deleted or abandoned, when its pace would take
it past its CPU-time limit, when it gets SIGTERM (server shutdown), or when the server process that started it
is gone (no orphan trains on forever). A signal is taken by a thread of its own (through the interpreter's
wakeup fd, written by its C handler whichever thread gets the signal): a step that does not return (a long
torch call, a learner's loop) cannot hold it up past STOP_GRACE_S.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

import torch

from ..core.data import Dataset, dataset_from
from ..core.limits import MEMORY_LIMIT, limit_memory
from ..learner.sandbox import Refused
from ..settings import Settings
from ..training.config import TrainConfig
from ..training.loop import Training, cpu_limit_s, cpu_text
from .store import Limits, RunStore
from .stores import open_store

TRAIN_NICENESS = 10  # below the web server: a run never slows down pages and the API
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGXCPU}
STOP_GRACE_S = 0.8  # after a stop signal the loop has this long to end the run itself; then it is ended from here
KILL_AFTER_S = 5  # past its CPU-time limit (SIGXCPU) the kernel kills the process this many CPU seconds later
PACE_AFTER_S = 5.0  # CPU seconds of steps before the run's pace is judged against its limit
REASONS = {
    "diverged": "the loss became NaN or infinite (learning rate too large?)",
    "abandoned": "stopped: nobody was watching it (start it with keep running)",
    "interrupted": "the server (or worker) stopped while it trained",
    "deleted": None,
    "cancelled": "cancelled by its owner",
}


class Stop:
    """Why the run should stop, as set by the signal thread or the pace check (None: train on)."""

    def __init__(self) -> None:
        self.status: str | None = None  # interrupted, or failed (its CPU-time limit)
        self.reason: str | None = None
        self.done = threading.Event()  # the loop ended the run itself


def take_signals() -> int:
    """The stop signals no longer end the process: each one's number is written to the pipe whose reading end is
    returned (read by the signal thread). Called from the main thread."""
    read, write = os.pipe()
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: None)  # the C handler has written the wakeup fd
    return read


def watch_signals(stop: Stop, store: RunStore, run_id: int, parent: int, cpu_limit: float, wakeup: int) -> None:
    """The signal thread: a stop signal (or the parent gone) ends the run within STOP_GRACE_S, whatever the loop
    is doing."""
    while True:
        ready, _, _ = select.select([wakeup], [], [], 1.0)
        signo = os.read(wakeup, 1)[0] if ready else None
        if signo in STOP_SIGNALS:
            if signo == signal.SIGXCPU:
                stop.reason = f"it used its CPU-time limit ({cpu_text(cpu_limit)}): fewer steps or a smaller net"
                stop.status = "failed"
            else:
                stop.status, stop.reason = "interrupted", REASONS["interrupted"]
            break
        if os.getppid() != parent:
            stop.status, stop.reason = "interrupted", REASONS["interrupted"]
            break
    if stop.done.wait(STOP_GRACE_S):
        return
    store.end(run_id, stop.status, stop.reason, None)  # the step in progress did not return: end it from here
    os._exit(1)


def limit_cpu(seconds: float) -> None:
    """At most `seconds` of CPU for this process (SIGXCPU then, SIGKILL KILL_AFTER_S later)."""
    soft = max(int(seconds) + 1, int(time.process_time()) + 1)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + KILL_AFTER_S))


def pace_check(training: Training, cpu_limit: float, started_cpu: float) -> Callable[[], str | None]:
    """Why the run cannot end within its CPU-time limit at the pace of its steps so far (None: it can)."""

    def over() -> str | None:
        used, done = time.process_time() - started_cpu, training.flushed
        if used < PACE_AFTER_S or done == 0:
            return None
        total = training.config.max_steps
        projected = time.process_time() + used / done * (total - done)
        if projected <= cpu_limit:
            return None
        return (
            f"at {used / done * 1e3:.1f} ms of CPU a step its {total:,} steps would need about "
            f"{cpu_text(projected)} of CPU, more than its limit ({cpu_text(cpu_limit)}): fewer steps, a smaller net "
            "or a faster backward"
        )

    return over


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.runs.train_process", description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--data-name", required=True, help="the names file's path, as the server shows it")
    parser.add_argument("--data-sha256", required=True, help="the sha256 of the bytes read from stdin")
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--watch-grace", type=float, default=Limits().watch_grace_s)
    args = parser.parse_args(argv)
    wakeup = take_signals()
    raw = sys.stdin.buffer.read()  # first: the server's writer thread waits on the pipe
    torch.set_num_threads(1)
    os.nice(TRAIN_NICENESS)
    store = open_store(args.db, Limits(watch_grace_s=args.watch_grace))
    parent = os.getppid()
    run = store.get(args.run)
    if run is None:
        return 1
    config = TrainConfig(**run["config"])
    dataset = dataset_from(args.data_name, raw, args.data_sha256)
    # a run from before CPU limits were stored: the limit its config gets on a server with the defaults
    cpu_limit = run.get("cpu_limit_s") or cpu_limit_s(config, dataset.vocab_size, Settings.max_run_cpu)
    limit_cpu(cpu_limit)
    stop = Stop()
    watcher = threading.Thread(
        target=watch_signals, args=(stop, store, args.run, parent, cpu_limit, wakeup), daemon=True
    )
    watcher.start()
    try:
        return train(store, args.run, config, dataset, stop, cpu_limit)
    finally:
        stop.done.set()


def train(store: RunStore, run_id: int, config: TrainConfig, dataset: Dataset, stop: Stop, cpu_limit: float) -> int:
    """Train run `run_id` and end it, saying why it ended; the exit code."""
    over_pace: Callable[[], str | None] = lambda: None  # noqa: E731 - set once the training is built

    def emit(kind: str, data: dict) -> None:
        if kind != "status":  # the run's status changes go through the store (claim and end)
            store.append(run_id, kind, data)

    def should_stop() -> str | None:
        if stop.status is None and (why := over_pace()):
            stop.status, stop.reason = "failed", why
        if stop.status is not None:
            return stop.status
        return store.should_stop(run_id)

    if config.code is not None:  # the learner's code trains under a check's memory limit, for the whole run
        try:
            limit_memory(MEMORY_LIMIT)
        except (OSError, ValueError):  # no /proc or no rlimit: the dry run's caps on every step still hold
            pass
    try:
        training = Training(config, dataset, emit)
        over_pace = pace_check(training, cpu_limit, time.process_time())
        status = training.run(should_stop)
    except Refused as e:  # the learner's block: refused when checked, or failed on a batch
        store.end(run_id, "failed", f"your backward: {e}", None)
        return 1
    except Exception as e:  # a bug or a resource limit: the run says why instead of hanging as running
        traceback.print_exc()
        store.end(run_id, "failed", f"{type(e).__name__}: {e}", None)
        return 1
    final = {"abandoned": "cancelled"}.get(status, status)
    keep = status in ("finished", "diverged")  # a diverged net is still worth stepping through
    losses = training.losses[: training.flushed]
    # a run of the learner's backward that ran to its end says whether its checks passed and the loss fell
    reason = (training.verdict(status) if keep else None) or (stop.reason if stop.status else REASONS.get(status))
    store.end(run_id, final, reason, training.p if keep else None, losses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
