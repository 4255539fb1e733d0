"""A training run's own process: python -m server.train_process --db DB --run ID --data-name NAME --data-sha256 HEX.

--db: a SQLite path or a PostgreSQL URL. The names list comes through stdin, as the server validated it at
start-up (the file is never re-read).

Started by a server process for a run it claimed (SQLite), or by a worker for a run it took from the task
queue (PostgreSQL: server/train_worker.py). One torch thread; reports through the run store;
stops when the run is cancelled, deleted or abandoned, when it gets SIGTERM (server shutdown), or
when the server process that started it is gone (no orphan trains on forever).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback

import torch

from .data import dataset_from
from .runs import Limits
from .sandbox import Refused
from .sandbox_pool import MEMORY_LIMIT, limit_memory
from .stores import open_store
from .train_config import TrainConfig
from .training import Training


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.train_process", description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--data-name", required=True, help="the names file's path, as the server shows it")
    parser.add_argument("--data-sha256", required=True, help="the sha256 of the bytes read from stdin")
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--watch-grace", type=float, default=Limits().watch_grace_s)
    args = parser.parse_args(argv)
    raw = sys.stdin.buffer.read()  # first: the server's writer thread waits on the pipe
    torch.set_num_threads(1)
    store = open_store(args.db, Limits(watch_grace_s=args.watch_grace))
    parent = os.getppid()
    terminated = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal terminated
        terminated = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    run = store.get(args.run)
    if run is None:
        return 1

    def emit(kind: str, data: dict) -> None:
        if kind != "status":  # the run's status changes go through the store (claim and end)
            store.append(args.run, kind, data)

    def should_stop() -> str | None:
        if terminated or os.getppid() != parent:
            return "interrupted"
        return store.should_stop(args.run)

    config = TrainConfig(**run["config"])
    dataset = dataset_from(args.data_name, raw, args.data_sha256)
    if config.code is not None:  # the learner's code trains under a check's memory limit, for the whole run
        try:
            limit_memory(MEMORY_LIMIT)
        except (OSError, ValueError):  # no /proc or no rlimit: the dry run's caps on every step still hold
            pass
    try:
        training = Training(config, dataset, emit)
        status = training.run(should_stop)
    except Refused as e:  # the learner's block: refused when checked, or failed on a batch
        store.end(args.run, "failed", f"your backward: {e}", None)
        return 1
    except Exception as e:  # a bug or a resource limit: the run says why instead of hanging as running
        traceback.print_exc()
        store.end(args.run, "failed", f"{type(e).__name__}: {e}", None)
        return 1
    reasons = {
        "diverged": "the loss became NaN or infinite (learning rate too large?)",
        "abandoned": "nobody was watching it (start it with keep running)",
        "interrupted": "the server (or worker) stopped while it trained",
        "deleted": None,
        "cancelled": "cancelled",
    }
    final = {"abandoned": "cancelled"}.get(status, status)
    keep = status in ("finished", "diverged")  # a diverged net is still worth stepping through
    losses = training.losses[: training.flushed]
    # a run of the learner's backward that ran to its end says whether its checks passed and the loss fell
    reason = (training.verdict(status) if keep else None) or reasons.get(status)
    store.end(args.run, final, reason, training.p if keep else None, losses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
