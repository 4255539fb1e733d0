"""A training worker: python -m server.runs.train_worker --runs-db postgresql://user@host/db [--max-runs 2] [--data F].

Start one on each machine that should train (the web server's machine too, or not). It takes runs' jobs from the
task queue in PostgreSQL (server/runs/queue.py), at most --max-runs at once, and trains each in a training
process of its own (server/runs/train_process.py), as the web server does with SQLite. On SIGTERM or Ctrl-C its
training processes end their runs as interrupted; if the machine dies, the runs' heartbeats stop and any web
process or worker marks them interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from procrastinate import App

from ..core.data import DEFAULT_DATA, DataError, Dataset, load_dataset
from ..settings import Settings
from .queue import QUEUE, queue_app, settle_stalled_jobs
from .scheduler import STOP_GRACE_S as STUCK_AFTER_S
from .scheduler import exit_reason, signal_group
from .store import Limits, StoreURLError, is_postgres, store_path
from .stores import open_store, redacted, without_password

ROOT = Path(__file__).resolve().parent.parent
# how often a worker marks runs whose training process stopped beating, and settles the jobs of queue workers that
# stopped beating (any machine's)
SWEEP_EVERY_S = 5.0
STOP_GRACE_S = 10.0  # a training process that has not ended its run this long after SIGTERM is killed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server.runs.train_worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--runs-db", required=True, help="the web server's PostgreSQL runs database, as a URL")
    parser.add_argument(
        "--max-runs",
        type=int,
        default=Settings.max_runs,
        help=f"runs this worker trains at once, one process each (default {Settings.max_runs})",
    )
    parser.add_argument("--data", default=None, help="the names file the web server reads (default: the embedded)")
    parser.add_argument("--watch-grace", type=float, default=Settings.watch_grace,
                        help="seconds a run trains on after its page closed, unless started with keep running "
                             f"(default {Settings.watch_grace}: give the web server's)")  # fmt: skip
    parser.add_argument("--name", default=None, help="this worker's name in the runs' events (default host:pid)")
    return parser


class Worker:
    """The task: take a queued run, train it in a training process, make sure the run ends."""

    def __init__(self, url: str, dataset: Dataset, watch_grace_s: float, name: str) -> None:
        self.url, self.dataset, self.name = url, dataset, name
        self.store = open_store(url, Limits(watch_grace_s=watch_grace_s))

    async def train(self, run_id: int) -> None:
        config = await asyncio.to_thread(self.store.start, run_id, self.name, self.dataset.sha256)
        if config is None:  # cancelled or deleted while it waited in the queue, or asked for on other names
            return
        cmd = [
            sys.executable, "-m", "server.runs.train_process", "--db", self.url, "--run", str(run_id),
            "--data-name", str(self.dataset.path), "--data-sha256", self.dataset.sha256,
            "--watch-grace", str(self.store.limits.watch_grace_s),
        ]  # fmt: skip
        # a session of its own: its whole group goes when it ends
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=ROOT, stdin=asyncio.subprocess.PIPE, start_new_session=True
        )
        await asyncio.to_thread(self.store.set_worker, run_id, proc.pid)
        try:
            assert proc.stdin is not None
            try:  # the words validated at start-up, as the web server hands them to its training processes
                proc.stdin.write(self.dataset.raw)
                await proc.stdin.drain()
                proc.stdin.close()
            except OSError:  # it died first: ended below
                pass
            code = await self.supervise(run_id, proc)
        except asyncio.CancelledError:  # the worker stops: the training process ends its run as interrupted
            signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                signal_group(proc.pid, signal.SIGKILL)
            signal_group(proc.pid, signal.SIGKILL)  # anything it started
            await asyncio.to_thread(self.store.end, run_id, "interrupted", "its worker stopped while it trained", None)
            raise
        signal_group(proc.pid, signal.SIGKILL)  # anything it started goes with it
        # a training process that died without ending its run (killed, out of memory): the run says so now
        await asyncio.to_thread(self.store.abort, run_id, exit_reason(code))

    async def supervise(self, run_id: int, proc: asyncio.subprocess.Process) -> int:
        """Wait for the training process to exit; kill its group if it trains on past STUCK_AFTER_S after its run
        was asked to stop (stuck in a step). Its exit code."""
        asked: float | None = None
        while True:
            try:
                return await asyncio.wait_for(proc.wait(), 1.0)
            except TimeoutError:
                pass
            stopping = await asyncio.to_thread(self.store.stopping, [run_id])
            asked = (asked or time.monotonic()) if stopping else None
            if asked is not None and time.monotonic() - asked >= STUCK_AFTER_S:
                signal_group(proc.pid, signal.SIGKILL)

    async def run_status(self, run_id: int) -> str | None:
        run = await asyncio.to_thread(self.store.get, run_id)
        return run["status"] if run else None

    async def sweep(self, app: App) -> None:
        while True:
            try:
                await asyncio.to_thread(self.store.sweep)
                # a killed worker's job would stay "doing" forever: it ends when its run has
                await settle_stalled_jobs(app, self.run_status)
            except Exception:  # the database restarting: try again next time
                logging.getLogger("backprop-explorer").exception("sweep failed")
            await asyncio.sleep(SWEEP_EVERY_S)


async def serve(url: str, worker: Worker, max_runs: int) -> None:
    app = queue_app(url, worker.train)
    async with app.open_async():
        sweeper = asyncio.create_task(worker.sweep(app))
        try:
            # jobs wake the worker through LISTEN/NOTIFY; on SIGTERM running jobs are cancelled at once, which
            # ends their runs as interrupted (a run is not retried: its learner starts it again if they want)
            await app.run_worker_async(
                queues=[QUEUE], concurrency=max_runs, name=worker.name, shutdown_graceful_timeout=0,
                delete_jobs="successful",
            )  # fmt: skip
        finally:
            sweeper.cancel()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        url = store_path(args.runs_db)
    except StoreURLError as e:
        print(f"train_worker: cannot use the runs database {redacted(args.runs_db)}: "
              f"{without_password(str(e), args.runs_db)}", file=sys.stderr)  # fmt: skip
        return 2
    if not is_postgres(url):
        print("train_worker: workers take runs from PostgreSQL (--runs-db postgresql://...): with a SQLite file "
              "the web server trains its runs itself", file=sys.stderr)  # fmt: skip
        return 2
    if args.max_runs < 1:
        print("train_worker: --max-runs must be at least 1", file=sys.stderr)
        return 2
    try:
        dataset = load_dataset(os.path.abspath(args.data or DEFAULT_DATA))
    except DataError as e:
        print(f"train_worker: cannot use the data file: {e}", file=sys.stderr)
        return 2
    name = args.name or f"{socket.gethostname()}:{os.getpid()}"
    try:
        worker = Worker(url, dataset, args.watch_grace, name)
    except OSError as e:
        print(f"train_worker: cannot use the runs database {redacted(url)}: {without_password(str(e), url)}",
              file=sys.stderr)  # fmt: skip
        return 2
    logging.basicConfig(level=logging.WARNING)
    print(f"train_worker {name}: taking runs from {redacted(url)} (queue {QUEUE!r}), {args.max_runs} at once",
          file=sys.stderr, flush=True)  # fmt: skip
    asyncio.run(serve(url, worker, args.max_runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
