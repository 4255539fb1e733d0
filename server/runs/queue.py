"""The training runs' task queue in PostgreSQL (procrastinate): web processes defer a job per run, workers take them.

No web code and no torch: the web side (PostgresRunStore.create) defers, server/runs/train_worker.py runs the jobs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from procrastinate import App, PsycopgConnector, SyncPsycopgConnector
from procrastinate.exceptions import ConnectorException
from procrastinate.jobs import Status
from procrastinate.schema import SchemaManager
from procrastinate.utils import utcnow

TASK = "train_run"  # the one task: train run `run_id` (server/runs/train_worker.py defines it)
QUEUE = "training"
DEFER_POOL = {"min_size": 1, "max_size": 2}  # a web process defers a run or two at a time
# a queue worker whose heartbeat (procrastinate's, every 10 s) is older than this is gone: its jobs are stalled
STALLED_AFTER_S = 30.0


def apply_schema(db: Any) -> None:
    """Create procrastinate's tables, unless they exist: `db` is a connection in a transaction holding the lock
    that makes two processes starting at once take turns."""
    if db.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:
        db.execute(SchemaManager.get_schema())  # no parameters: its % signs go to PostgreSQL as they are


class Deferrer:
    """Defers training jobs from a web process: one synchronous procrastinate app per process, opened on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._app: App | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _here(self) -> App:
        with self._lock:
            if self._app is None or self._pid != os.getpid():
                self._app = App(connector=SyncPsycopgConnector(conninfo=self.url, **DEFER_POOL)).open()
                self._pid = os.getpid()
            return self._app

    def defer(self, run_ids: list[int]) -> None:
        """One job per run, in the training queue."""
        task = self._here().configure_task(TASK, queue=QUEUE)
        for run_id in run_ids:
            task.defer(run_id=run_id)

    def close(self) -> None:
        with self._lock:
            if self._app is not None and self._pid == os.getpid():
                self._app.close()
            self._app = None


def queue_app(url: str, train: Callable[[int], Awaitable[None]]) -> App:
    """A worker's procrastinate app: its one task trains a run with `train(run_id)`."""
    app = App(connector=PsycopgConnector(conninfo=url))

    @app.task(name=TASK, queue=QUEUE)
    async def train_run(run_id: int) -> None:
        await train(run_id)

    return app


async def settle_stalled_jobs(app: App, run_status: Callable[[int], Awaitable[str | None]]) -> list[tuple[int, str]]:
    """The jobs left "doing" by queue workers that stopped beating (killed, machine gone), settled by their run's
    status: a run that never started is queued again, a run that ended (or is gone) fails its job, a run still
    running is left until it ends (its own heartbeat says when). [(job id, what was done)]."""
    manager = app.job_manager
    await manager.prune_stalled_workers(STALLED_AFTER_S)  # their rows go; their jobs keep no worker
    done = []
    for job in await manager.get_stalled_jobs(queue=QUEUE, task_name=TASK, seconds_since_heartbeat=STALLED_AFTER_S):
        assert job.id is not None
        status = await run_status(int(job.task_kwargs["run_id"]))
        try:
            if status == "queued":
                await manager.retry_job_by_id_async(job.id, utcnow())
                done.append((job.id, "retried"))
            elif status != "running":
                await manager.finish_job_by_id_async(job.id, Status.FAILED, delete_job=False)
                done.append((job.id, "failed"))
        except ConnectorException:  # another worker's sweep settled it first
            continue
    return done
