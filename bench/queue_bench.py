"""Runs per minute on PostgreSQL with 1, 2 and 3 training workers taking short runs from the task queue.

Starts a throwaway PostgreSQL cluster (Debian's binaries, as the tests do), then for each worker count a database
of its own: the workers (python -m server.runs.train_worker --max-runs 1: one training process each) register, N short
runs are queued at once, and the clock runs from the queueing to the last run's end. Worker counts alternate in
rounds, so machine noise hits them alike. Prints runs per minute, the ratio to one worker, and a run's own time
(taken to ended: the training process's start-up and its steps), the queue's hand-off on a worker (a run's end
to its next run's start), with the load average before and after.
Not a test: machines are noisy.
Usage: python bench/queue_bench.py [--runs 9] [--steps 500] [--workers 1,2,3] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.runs.store import ENDED, Limits  # noqa: E402
from server.runs.stores import open_store  # noqa: E402
from server.training.config import TrainConfig  # noqa: E402
from tests.postgres import PostgresServer, WorkerProcess  # noqa: E402

TIMEOUT_S = 600.0  # a round that takes longer has a worker stuck: the bench stops


def wait_for(what: str, ready, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            sys.exit(f"queue_bench: still waiting for {what} after {timeout_s:.0f} s")
        time.sleep(0.05)


def one_round(postgres: PostgresServer, workers: int, config: TrainConfig, n_runs: int) -> dict:
    """n_runs queued at once on `workers` workers: seconds from queueing to the last end, and each run's own time."""
    url = postgres.new_database()
    store = open_store(url, Limits(max_queued=n_runs))
    started = [WorkerProcess(url, f"w{i}", "--max-runs", "1") for i in range(workers)]
    try:

        def registered() -> bool:
            with store._db() as db:
                return db.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0] == workers

        wait_for(f"{workers} workers to register", registered, 120)
        t0 = time.time()
        ids = store.create([config] * n_runs, keep_running=True)
        wait_for("every run to end", lambda: all(store.get(i)["status"] in ENDED for i in ids))
        runs = [store.get(i) for i in ids]
        bad = [(r["id"], r["status"], r["reason"]) for r in runs if r["status"] != "finished"]
        if bad:
            sys.exit(f"queue_bench: runs did not finish: {bad}")
        wall = max(r["ended"] for r in runs) - t0
        # the queue's hand-off: on each worker, from a run's end to its next run's start
        on: dict[str, list[dict]] = {}
        for r in runs:
            running = [json.loads(d) for _, k, d in store.events_after(r["id"], 0) if k == "status"][1]
            on.setdefault(running["worker"], []).append(r)
        gaps = []
        for mine in on.values():
            mine.sort(key=lambda r: r["started"])
            gaps += [b["started"] - a["ended"] for a, b in zip(mine, mine[1:], strict=False)]
        return {"wall": wall, "own": [r["ended"] - r["started"] for r in runs], "gaps": gaps}
    finally:
        for worker in started:
            worker.stop()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="short runs queued at once per measure")
    parser.add_argument("--steps", type=int, default=500, help="each run's steps (the lecture's net otherwise)")
    parser.add_argument("--workers", default="1,2,3", help="worker counts to compare")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; the worker counts alternate within each")
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    config = TrainConfig(max_steps=args.steps, lr_decay_step=args.steps // 2, check_every=args.steps // 2)
    postgres = PostgresServer().start()
    load_before = os.getloadavg()
    results: dict[int, list[dict]] = {n: [] for n in counts}
    try:
        for _ in range(args.rounds):
            for n in counts:
                results[n].append(one_round(postgres, n, config, args.runs))
    finally:
        postgres.stop()
    load_after = os.getloadavg()

    print(
        f"{args.runs} runs queued at once ({args.steps} steps of the lecture's net, one training process a run), "
        f"workers with --max-runs 1, {args.rounds} round(s); cores: {os.cpu_count()}; "
        f"load average before: {load_before[0]:.1f}, after: {load_after[0]:.1f}\n"
    )
    base = statistics.median(args.runs / r["wall"] * 60 for r in results[counts[0]])
    header = f"{'workers':>8s} {'runs / min':>11s} {'x ' + str(counts[0]) + ' worker':>11s} {'a run, median s':>16s}"
    print(f"{header} {'hand-off, median ms':>20s}  each round's runs / min")
    for n in counts:
        rounds = [args.runs / r["wall"] * 60 for r in results[n]]
        per_min = statistics.median(rounds)
        own = statistics.median(t for r in results[n] for t in r["own"])
        gap = statistics.median(t for r in results[n] for t in r["gaps"]) * 1000
        print(f"{n:8d} {per_min:11.1f} {per_min / base:11.2f} {own:16.2f} {gap:20.0f}  "
              f"{', '.join(f'{x:.1f}' for x in rounds)}")  # fmt: skip


if __name__ == "__main__":
    main()
