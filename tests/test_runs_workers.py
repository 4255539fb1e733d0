"""Training runs in PostgreSQL across processes: web servers and training workers sharing one real database.

Every wait polls the database or the event stream with a generous deadline; nothing waits on the clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from server.runs.store import ENDED, HEARTBEAT_TIMEOUT_S, Limits
from server.runs.stores import open_store
from server.training.config import TrainConfig
from server.web.feeds import RunFeeds

from .conftest import LECTURE_DATA
from .live_server import ROOT, LiveServer
from .postgres import WorkerProcess
from .test_runs import SHORT, _alive, read_events

TINY = TrainConfig(n_hidden=16, batch_size=8, max_steps=20, lr_decay_step=10, check_every=10)  # seconds, not minutes
LONG = {"max_steps": 1_000_000, "keep_running": True}  # trains until stopped


@pytest.fixture()
def pg_url(postgres_server):
    return postgres_server.new_database()


@pytest.fixture()
def workers(pg_url):
    """start(name, *options) -> a worker process; all stopped after the test (their output shown if it failed)."""
    started: list[WorkerProcess] = []

    def start(name: str, *extra: str) -> WorkerProcess:
        started.append(WorkerProcess(pg_url, name, *extra))
        return started[-1]

    yield start
    for worker in started:
        worker.stop()
        print(f"--- worker {worker.name}:\n{worker.output()}")


@pytest.fixture()
def store(pg_url):
    s = open_store(pg_url, Limits(max_queued=100))
    yield s
    s.close()


def wait_for(what: str, ready: Callable[[], object], timeout_s: float = 240.0) -> object:
    """Poll `ready` until it returns something true; fail with `what` after a generous deadline."""
    deadline = time.monotonic() + timeout_s
    while not (value := ready()):
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.2)
    return value


def registered_workers(store) -> int:
    """How many procrastinate workers are alive in the queue's table."""
    with store._db() as db:
        return db.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0]


def jobs(store) -> list[tuple[int, str]]:
    """(run id, status) of the training jobs in the queue's table."""
    with store._db() as db:
        rows = db.execute("SELECT args->>'run_id', status FROM procrastinate_jobs ORDER BY id").fetchall()
    return [(int(run_id), status) for run_id, status in rows]


def statuses(store, run_id: int) -> list[dict]:
    return [json.loads(data) for _, kind, data in store.events_after(run_id, 0) if kind == "status"]


async def in_another_process(url: str, code: str) -> None:
    """Run `code` with `store` open on `url` in a Python process of its own (as a training process would)."""
    script = f"from server.runs.stores import open_store\nstore = open_store({url!r})\n{code}\nstore.close()"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=ROOT)
    assert await asyncio.wait_for(proc.wait(), 120) == 0


def test_an_event_written_by_another_process_reaches_an_open_stream_through_its_notice(store):
    (run_id,) = store.create([TINY], keep_running=True)  # committed before anybody listens: no notice of it

    async def scenario() -> None:
        # a feed that would poll once a day: only a notice can bring it what another process writes
        feeds = RunFeeds(store, max_streams=4, notified_poll_s=86_400)
        feeds.start()
        await asyncio.wait_for(feeds.listening.wait(), 60)
        assert feeds.poll_s == 86_400

        async def connected() -> bool:
            return False

        stream = feeds.stream(feeds.subscribe(run_id, 0), 0, connected)

        async def next_chunk() -> str:  # past the retry line and keep-alive comments
            while not (chunk := await anext(stream)).startswith("id: "):
                pass
            return chunk

        async def next_event() -> tuple[int, str, dict]:
            chunk = await asyncio.wait_for(next_chunk(), 120)
            seq, kind, data = (line.partition(": ")[2] for line in chunk.strip().split("\n"))
            return int(seq), kind, json.loads(data)

        assert await next_event() == (1, "status", {"status": "queued"})  # the feed's first read
        await in_another_process(store.url, f"store.append({run_id}, 'progress', {{'step': 7}})")
        assert await next_event() == (2, "progress", {"step": 7})
        # a run deleted elsewhere ends its streams
        await in_another_process(store.url, f"store.delete({run_id})")
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(stream), 120)
        assert not feeds.feeds and feeds.open == 0
        await feeds.close()

    asyncio.run(scenario())


def test_the_jobs_of_a_queue_worker_that_stopped_beating_are_settled_by_their_runs(store):
    from server.runs.queue import QUEUE, queue_app, settle_stalled_jobs

    queued, running, ended, gone = store.create([TINY] * 4, keep_running=True)  # a job each
    for run_id in (running, ended, gone):
        store.start(run_id, "lost")
    store.end(ended, "interrupted", "its worker stopped while it trained", None)
    store.delete(gone)

    async def train(run_id: int) -> None:
        raise AssertionError("nothing trains here")

    async def run_status(run_id: int) -> str | None:
        run = store.get(run_id)
        return run["status"] if run else None

    async def scenario() -> list[tuple[int, str]]:
        app = queue_app(store.url, train)
        async with app.open_async():
            # a queue worker takes the four jobs, then stops beating (killed: nothing is written)
            worker = await app.job_manager.register_worker()
            taken = [await app.job_manager.fetch_job([QUEUE], worker) for _ in range(4)]
            assert sorted(job.task_kwargs["run_id"] for job in taken if job) == [queued, running, ended, gone]
            assert await settle_stalled_jobs(app, run_status) == []  # it beat a moment ago: nothing is stalled
            with store._db(immediate=True) as db:
                db.execute("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'")
            return await settle_stalled_jobs(app, run_status)

    settled = asyncio.run(scenario())
    assert len(settled) == 3
    # the run that never started is taken again; an ended or deleted run's job fails; a running run's waits
    assert dict(jobs(store)) == {queued: "todo", running: "doing", ended: "failed", gone: "failed"}
    with store._db() as db:
        assert db.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0] == 0  # pruned


@pytest.mark.slow
def test_three_workers_drain_six_queued_runs_one_at_a_time_each(store, workers):
    names = ["w1", "w2", "w3"]
    for name in names:
        workers(name, "--max-runs", "1")
    wait_for("three workers listening", lambda: registered_workers(store) == 3)
    # more runs than workers: some worker takes a second run (two on average), so "one at a time" is tested;
    # each run is a training process (an interpreter and torch's import), so not more than that needs
    ids = store.create([TINY] * 6, keep_running=True)
    wait_for("every run to end", lambda: all(store.get(i)["status"] in ENDED for i in ids), timeout_s=600)
    runs = [store.get(i) for i in ids]
    assert [r["status"] for r in runs] == ["finished"] * 6, [(r["status"], r["reason"]) for r in runs]
    assert all(r["has_params"] and r["result"]["val_loss"] > 0 for r in runs)
    taken = {}
    for run_id in ids:
        running = [s for s in statuses(store, run_id) if s["status"] == "running"]
        assert len(running) == 1  # each run trained exactly once
        taken[run_id] = running[0]["worker"]
    assert set(taken.values()) == set(names)  # every worker took runs
    for name in names:  # --max-runs 1: a worker's runs never overlap
        spans = sorted((store.get(i)["started"], store.get(i)["ended"]) for i in ids if taken[i] == name)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False)), spans


@pytest.mark.slow
def test_a_killed_worker_interrupts_its_run_and_no_other(store, workers):
    doomed = workers("doomed", "--max-runs", "1")
    workers("survivor", "--max-runs", "1")
    first, second = store.create([TrainConfig(max_steps=1_000_000)] * 2, keep_running=True)
    # each worker trains one at a time: the two runs run on the two workers
    wait_for("both runs training", lambda: all(store.get(i)["step"] > 0 for i in (first, second)))
    on = {run_id: statuses(store, run_id)[-1]["worker"] for run_id in (first, second)}
    assert sorted(on.values()) == ["doomed", "survivor"]
    lost, kept = (first, second) if on[first] == "doomed" else (second, first)
    doomed.proc.kill()  # SIGKILL: no clean-up in the worker; its training process sees its parent gone
    run = wait_for("the run to end", lambda: (r := store.get(lost))["status"] in ENDED and r)
    assert run["status"] == "interrupted" and not run["has_params"]
    step = store.get(kept)["step"]
    wait_for("the other run to go on", lambda: store.get(kept)["step"] > step)
    assert store.get(kept)["status"] == "running"
    # a queued run is taken by the surviving worker once it has a free slot
    (third,) = store.create([TINY], keep_running=True)
    store.cancel(kept)
    wait_for("the cancelled run to end", lambda: store.get(kept)["status"] in ENDED)
    assert store.get(kept)["status"] == "cancelled"
    wait_for("the third run to finish", lambda: store.get(third)["status"] == "finished")
    assert statuses(store, third)[1]["worker"] == "survivor"
    # the killed worker's job: "doing" until the survivor sees that worker's heartbeat stopped, then failed (its
    # run ended, and a run is not retried); the jobs that ended normally are gone. Its last beat is made an hour old,
    # as if that time had passed: the survivor's next sweep finds it stalled, without the test waiting on the clock
    assert dict(jobs(store))[lost] == "doing"
    with store._db(immediate=True) as db:
        db.execute(
            "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' WHERE id = "
            "(SELECT worker_id FROM procrastinate_jobs WHERE args->>'run_id' = ?)",
            (str(lost),),
        )
    wait_for("the killed worker's job to end", lambda: dict(jobs(store))[lost] != "doing")
    assert dict(jobs(store))[lost] == "failed"
    wait_for("the other jobs, succeeded, deleted", lambda: len(jobs(store)) == 1)


@pytest.mark.slow
def test_a_dead_worker_machine_is_noticed_by_its_runs_heartbeat(store, workers):
    worker = workers("machine", "--max-runs", "1")
    (run_id,) = store.create([TrainConfig(max_steps=1_000_000)], keep_running=True)
    wait_for("the run training", lambda: store.get(run_id)["step"] > 0)
    with store._db() as db:
        trainer = db.execute("SELECT worker_pid FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    # the machine goes away: worker and training process die at once, nothing is written
    os.kill(trainer, signal.SIGKILL)
    worker.proc.kill()
    wait_for("the training process gone", lambda: not _alive(trainer))
    assert store.get(run_id)["status"] == "running"
    # any process that sweeps (a web process, another worker) marks it once its heartbeat is older than the timeout
    later = open_store(store.url, clock=lambda: time.time() + HEARTBEAT_TIMEOUT_S + 1)
    try:
        later.sweep()
    finally:
        later.close()
    run = store.get(run_id)
    assert run["status"] == "interrupted" and "stopped" in run["reason"]


class WebServer(LiveServer):
    """python -m server on the tests' PostgreSQL, without sandbox processes (the runs API is what is tested)."""

    def __init__(self, url: str) -> None:
        super().__init__("--data", str(LECTURE_DATA), "--runs-db", url, "--check-workers", "0")

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=30, **kw)


@pytest.fixture()
def two_web_servers(pg_url):
    servers = [WebServer(pg_url).start(), WebServer(pg_url).start()]
    yield servers
    for server in servers:
        if server.proc.poll() is None:
            server.stop()


@pytest.mark.slow
def test_a_run_started_on_one_web_server_is_streamed_and_cancelled_on_another(two_web_servers, workers):
    a, b = two_web_servers
    workers("w", "--max-runs", "1")
    (run,) = a.api("POST", "/api/runs", json={"max_steps": 1_000_000}).json()["runs"]
    seen = read_events(a, run["id"], until=lambda e: e[1] == "progress")
    assert [d["status"] for _, k, d in seen if k == "status"] == ["queued", "running"]
    assert b.api("POST", f"/api/runs/{run['id']}/cancel").status_code == 403  # without its owner token
    owner = {"Authorization": f"Bearer {run['owner_token']}"}
    assert b.api("POST", f"/api/runs/{run['id']}/cancel", headers=owner).status_code == 200
    events = read_events(a, run["id"], last_event_id=seen[-1][0])  # resumed where it stopped, on the first
    assert events[-1][1:] == ("status", {"status": "cancelled", "reason": "cancelled by its owner", "final": True})
    # the second server streams the same events with the same ids
    again = read_events(b, run["id"])
    assert [e[0] for e in again] == [e[0] for e in seen] + [e[0] for e in events]
    assert b.api("GET", f"/api/runs/{run['id']}").json()["status"] == "cancelled"


@pytest.mark.slow
def test_the_queue_bound_holds_across_web_servers(pg_url):
    # no worker: runs stay queued; the bound counts the runs both servers queued
    servers = [
        LiveServer(
            "--data",
            str(LECTURE_DATA),
            "--runs-db",
            pg_url,
            "--check-workers",
            "0",
            "--max-queued",
            "3",
            "--max-runs-per-client",
            "8",
        )  # fmt: skip
        for _ in range(2)
    ]
    for server in servers:
        server.start()
    try:
        codes = [httpx.post(f"{servers[i % 2].url}/api/runs", json=SHORT, timeout=30).status_code for i in range(4)]
        assert codes == [201, 201, 201, 429]
    finally:
        for server in servers:
            server.stop()
