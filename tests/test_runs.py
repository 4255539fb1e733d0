"""Training runs: the SQLite store and whole lifecycles with real worker processes (the API: tests/web)."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from server.runs.store import HEARTBEAT_TIMEOUT_S, Limits, QueueFull, RunStore, token_hash
from server.training.config import TrainConfig

from .conftest import LECTURE_DATA
from .live_server import LiveServer, cmdline, stat

SHORT = {"max_steps": 2000, "lr_decay_step": 1000, "check_every": 500}


# --- the store -----------------------------------------------------------------------------------


def test_store_queue_claim_and_bounds(open_runs):
    store = open_runs(Limits(max_running=1, max_queued=3))
    ids = store.create([TrainConfig(backward="manual"), TrainConfig(backward="autograd")], keep_running=False)
    assert [store.get(i)["status"] for i in ids] == ["queued", "queued"]
    assert store.get(ids[0])["group"] == store.get(ids[1])["group"] == ids[0]
    store.create([TrainConfig()], keep_running=True)
    with pytest.raises(QueueFull):
        store.create([TrainConfig()], keep_running=False)
    first = store.claim()
    assert first is not None and first[0] == ids[0] and first[1].backward == "manual"
    assert store.claim() is None  # max_running = 1
    assert [kind for _, kind, _ in store.events_after(ids[0], 0)] == ["status", "status"]  # queued, running


def test_store_events_heartbeat_and_params(open_runs):
    store = open_runs()
    (run_id,) = store.create([TrainConfig()], keep_running=False)
    store.claim()
    for step in (256, 512):
        assert store.append(
            run_id, "progress", {"step": step, "points": [[step - 1, 0.5]], "smooth": [], "ud": [], "saturation": []}
        )
    assert store.get(run_id)["step"] == 512
    seqs = [seq for seq, _, _ in store.events_after(run_id, 0)]
    assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1))
    assert [seq for seq, _, _ in store.events_after(run_id, 2)] == seqs[2:]  # resumable from an id
    assert store.history(run_id)["points"] == [[255, 0.5], [511, 0.5]]
    params = {"W1": torch.randn(3, 4), "b1": torch.randn(4)}
    store.end(run_id, "finished", None, params)
    run = store.get(run_id)
    assert run["status"] == "finished" and run["has_params"] and run["ended"] is not None
    assert all(torch.equal(store.params(run_id)[k], params[k]) for k in params)
    assert store.cancel(run_id)["status"] == "finished"  # ended runs stay ended
    assert store.delete(run_id) and store.get(run_id) is None and store.events_after(run_id, 0) == []
    assert not store.append(run_id, "progress", {"step": 1})  # a worker learns its run is gone


def test_a_runs_detail_is_bounded_however_many_checks_it_recorded(open_runs):
    from server.training.loop import CHECK_EVENTS, STATS_POINTS

    store = open_runs()
    (run_id,) = store.create([TrainConfig()], keep_running=False)
    store.claim()
    n = 3 * CHECK_EVENTS + 7  # as a run with a check every step wrote them before checks were grouped
    for step in range(n):
        store.append(run_id, "check", {"step": step, "maxdiff": {"C": 0.0}, "max": 0.0})
    ud = [[s, {"C": -3.0}] for s in range(0, 100 * (STATS_POINTS + 500), 100)]
    store.append(run_id, "progress", {"step": 1, "points": [], "smooth": [], "ud": ud, "saturation": []})
    history = store.history(run_id)
    steps = [c["step"] for c in history["checks"]]
    assert len(steps) <= CHECK_EVENTS and steps[-1] == n - 1 and steps == sorted(steps)
    assert len(history["ud"]) <= STATS_POINTS + 1 and history["ud"][-1] == ud[-1]


def test_a_queue_worker_starts_only_a_run_still_queued(open_runs):
    store = open_runs()
    waiting, cancelled = store.create([TrainConfig(), TrainConfig(backward="autograd")], keep_running=True)
    store.cancel(cancelled)
    config = store.start(waiting, "host-a:17")
    assert config is not None and config.backward == "manual" and store.get(waiting)["status"] == "running"
    assert store.start(waiting, "host-b:18") is None  # taken already: a second delivery of its job does nothing
    assert store.start(cancelled, "host-b:18") is None and store.get(cancelled)["status"] == "cancelled"
    running = [json.loads(data) for _, kind, data in store.events_after(waiting, 0) if kind == "status"][-1]
    assert running == {"status": "running", "worker": "host-a:17"}
    (elsewhere,) = store.create([TrainConfig()], keep_running=True, data_sha256="a" * 64)
    assert store.start(elsewhere, "host-c:19", data_sha256="b" * 64) is None
    refused = store.get(elsewhere)
    assert refused["status"] == "failed" and "host-c:19 reads another names file" in refused["reason"]
    (same,) = store.create([TrainConfig()], keep_running=True, data_sha256="a" * 64)
    assert store.start(same, "host-c:19", data_sha256="a" * 64) is not None


class Clock:
    """The store's clock: time moves only when the test moves it."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_sweep_interrupts_silent_workers_and_cancels_unwatched_queued_runs(open_runs):
    clock = Clock()
    store = open_runs(Limits(max_running=1, watch_grace_s=5), clock)
    silent, waiting = store.create([TrainConfig(), TrainConfig()], keep_running=False)
    (kept,) = store.create([TrainConfig()], keep_running=True)
    assert store.claim()[0] == silent
    clock.now += 5.5  # past the watch grace, not past the heartbeat timeout
    store.sweep()
    assert store.get(silent)["status"] == "running"
    assert store.get(waiting)["status"] == "cancelled"
    clock.now += HEARTBEAT_TIMEOUT_S - 5  # HEARTBEAT_TIMEOUT_S + 0.5 since the claim's heartbeat
    store.sweep()
    assert store.get(silent)["status"] == "interrupted"
    assert store.get(waiting)["status"] == "cancelled" and "watching" in store.get(waiting)["reason"]
    assert store.get(kept)["status"] == "queued"  # keep running: nobody needs to watch
    assert store.should_stop(kept) is None


def test_ended_runs_beyond_the_retention_are_pruned(open_runs):
    store = open_runs(Limits(max_queued=10, keep_ended=2))
    ids = store.create([TrainConfig() for _ in range(5)], keep_running=True)
    for run_id in ids[:4]:
        store.cancel(run_id)
    store.sweep()
    runs, _ = store.list()
    assert [r["id"] for r in runs] == [ids[4], ids[3], ids[2]]  # the queued one and the newest 2 ended
    assert store.events_after(ids[0], 0) == []  # their events went with them
    store.limits = Limits(keep_ended=0)
    store.cancel(ids[4])
    store.sweep()
    assert [r["id"] for r in store.list()[0]] == [ids[4], ids[3], ids[2]]  # 0 keeps everything


@pytest.fixture()
def read_only(tmp_path):
    """A runs database this process cannot write (as root, chmod does not stop writes: the file is made immutable)."""
    path = tmp_path / "runs.db"
    RunStore(path)
    path.chmod(0o444)
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", path], capture_output=True).returncode != 0:
        pytest.skip("root, and no chattr here: cannot make a read-only file")
    yield path
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", path], check=True)


def test_a_read_only_database_is_refused_at_start(read_only):
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        RunStore(read_only)
    proc = subprocess.run(
        [sys.executable, "-m", "server", "--runs-db", str(read_only), "--port", "1"],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "cannot use the runs database" in proc.stderr and "readonly" in proc.stderr


def test_worker_stop_reasons(open_runs):
    clock = Clock()
    store = open_runs(Limits(watch_grace_s=0.5), clock)
    (run_id,) = store.create([TrainConfig()], keep_running=False)
    store.claim()
    clock.now += 0.5
    assert store.should_stop(run_id) is None  # watched exactly watch_grace_s ago: not yet past it
    clock.now += 0.1
    assert store.should_stop(run_id) == "abandoned"
    store.watch(run_id)
    assert store.should_stop(run_id) is None  # a stream opened again: watched now
    store.cancel(run_id)
    assert store.should_stop(run_id) == "cancelled"
    store.delete(run_id)
    assert store.should_stop(run_id) == "deleted"


def test_a_database_from_before_owners_gets_the_new_columns_and_its_runs_are_the_admins(tmp_path):
    db = tmp_path / "old.db"
    old = sqlite3.connect(db)
    old.executescript(
        "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, config TEXT NOT NULL, "
        "group_id INTEGER, keep_running INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT, cancel INTEGER NOT NULL "
        "DEFAULT 0, watched REAL NOT NULL, heartbeat REAL, worker_pid INTEGER, step INTEGER NOT NULL DEFAULT 0, "
        "started REAL, ended REAL, result TEXT, params BLOB);"
    )
    old.execute(
        "INSERT INTO runs (created, config, keep_running, status, watched) VALUES (1, ?, 0, 'queued', 1)",
        (json.dumps(TrainConfig().as_dict()),),
    )
    old.commit()
    old.close()
    store = RunStore(db)
    columns = {row[1] for row in sqlite3.connect(db).execute("PRAGMA table_info(runs)")}
    assert {"owner_hash", "client", "instance", "cpu_limit"} <= columns
    assert store.get(1)["status"] == "queued" and store.get(1)["cpu_limit_s"] is None
    assert not store.owned(1, "") and not store.owned(1, "anything")  # nobody's token: only the admin's
    (new,) = store.create([TrainConfig()], keep_running=False, owners=[token_hash("mine")], client="10.0.0.1")
    assert store.owned(new, "mine") and not store.owned(new, "mine ") and not store.owned(1, "mine")


def test_a_database_from_before_owners_gets_the_new_columns_in_postgresql(postgres_server):
    import psycopg

    from server.runs.stores import open_store

    url = postgres_server.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE runs (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, created DOUBLE PRECISION NOT "
            "NULL, config TEXT NOT NULL, group_id BIGINT, keep_running INTEGER NOT NULL, status TEXT NOT NULL, reason "
            "TEXT, cancel INTEGER NOT NULL DEFAULT 0, watched DOUBLE PRECISION NOT NULL, heartbeat DOUBLE PRECISION, "
            "worker_pid INTEGER, worker TEXT, data_sha256 TEXT, step INTEGER NOT NULL DEFAULT 0, started DOUBLE "
            "PRECISION, ended DOUBLE PRECISION, result TEXT, params BYTEA, losses BYTEA)"
        )
        conn.execute(
            "INSERT INTO runs (created, config, keep_running, status, watched) VALUES (1, %s, 0, 'queued', 1)",
            (json.dumps(TrainConfig().as_dict()),),
        )
    store = open_store(url)
    try:
        assert store.get(1)["cpu_limit_s"] is None and not store.owned(1, "anything")
        (new,) = store.create([TrainConfig()], keep_running=False, owners=[token_hash("mine")], client="10.0.0.1")
        assert store.owned(new, "mine") and not store.owned(1, "mine")
    finally:
        store.close()


# --- the scheduler, with a stubbed training process -------------------------------------------------

# the training process with a step that never returns (in C, or in Python), which has started a process of its own
STUCK = """
import subprocess, sys, time
import server.runs.train_process as tp

class Stuck:
    def __init__(self, config, dataset, emit):
        self.config, self.emit, self.flushed = config, emit, 0

    def run(self, should_stop):
        child = subprocess.Popen(["sleep", "3600"])
        self.emit("progress", {"step": 0, "child": child.pid})
        %s

tp.Training = Stuck
sys.exit(tp.main(sys.argv[1:]))
"""
STEPS = {"sleep": "time.sleep(3600)", "python": "while True: pass"}


def _stuck_scheduler(store: RunStore, dataset, step: str = "sleep", **kw):
    from server.runs.scheduler import Scheduler

    return Scheduler(store, dataset, program=(sys.executable, "-c", STUCK % STEPS[step]), **kw)


def _wait_for(what: str, ready, timeout_s: float = 120.0):
    """Poll `ready` until it returns something true; fail with `what` after a generous deadline."""
    deadline = time.monotonic() + timeout_s
    while not (value := ready()):
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)
    return value


def _started_child(store: RunStore, run_id: int) -> int:
    """The pid of the process the stuck step started, once its progress event is in."""
    events = _wait_for("the step to start", lambda: [e for e in store.events_after(run_id, 0) if e[1] == "progress"])
    return json.loads(events[0][2])["child"]


@pytest.mark.parametrize("step", list(STEPS))
def test_a_training_process_stops_on_sigterm_inside_a_step_that_never_returns(tmp_path, lecture_dataset, step):
    store = RunStore(tmp_path / "runs.db")
    scheduler = _stuck_scheduler(store, lecture_dataset, step)
    (run_id,) = store.create([TrainConfig(**SHORT)], keep_running=True, instance=scheduler.instance)
    scheduler.tick()
    proc = scheduler.processes[run_id]
    child = _started_child(store, run_id)
    proc.send_signal(signal.SIGTERM)
    # the step never returns: only a process whose signal does not wait for it ends (the deadline: a failure)
    assert proc.wait(timeout=60) != 0
    run = store.get(run_id)
    assert run["status"] == "interrupted" and "stopped while it trained" in run["reason"]
    scheduler.tick()  # reaped: the group goes with it
    _wait_for("the step's own process to be gone", lambda: not _alive(child), 30)
    assert scheduler.processes == {}


def test_a_killed_training_process_fails_its_run_at_the_next_tick(tmp_path, lecture_dataset):
    store = RunStore(tmp_path / "runs.db")
    scheduler = _stuck_scheduler(store, lecture_dataset)
    (run_id,) = store.create([TrainConfig(**SHORT)], keep_running=True, instance=scheduler.instance)
    scheduler.tick()
    pid = scheduler.processes[run_id].pid
    child = _started_child(store, run_id)
    os.kill(pid, signal.SIGKILL)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: the next tick finds it
    assert store.get(run_id)["status"] == "running"
    scheduler.tick()
    run = store.get(run_id)
    assert run["status"] == "failed" and "killed (SIGKILL" in run["reason"]
    _wait_for("the step's own process to be gone", lambda: not _alive(child), 30)


def test_a_cancelled_run_stuck_in_a_step_is_killed_after_a_grace(tmp_path, lecture_dataset):
    from server.runs.scheduler import STOP_GRACE_S

    store, clock = RunStore(tmp_path / "runs.db"), Clock()
    scheduler = _stuck_scheduler(store, lecture_dataset, clock=clock)
    (run_id,) = store.create([TrainConfig(**SHORT)], keep_running=True, instance=scheduler.instance)
    scheduler.tick()
    proc = scheduler.processes[run_id]
    _started_child(store, run_id)
    store.cancel(run_id)
    scheduler.tick()
    clock.now += STOP_GRACE_S - 0.1
    scheduler.tick()
    assert proc.poll() is None  # within the grace: it may still end its run itself
    clock.now += 0.1
    scheduler.tick()
    proc.wait(timeout=60)
    scheduler.tick()
    assert store.get(run_id)["status"] == "cancelled" and scheduler.processes == {}


def test_two_servers_on_one_file_each_stop_only_their_own_runs(tmp_path, lecture_dataset):
    clock = Clock()
    store = RunStore(tmp_path / "runs.db", clock=clock)
    a, b = _stuck_scheduler(store, lecture_dataset), _stuck_scheduler(store, lecture_dataset)
    (theirs,) = store.create([TrainConfig(**SHORT)], keep_running=True, instance=b.instance)  # started on b
    a.tick()
    assert a.processes == {} and store.get(theirs)["status"] == "queued"  # not a's to train
    b.tick()
    _started_child(store, theirs)
    (mine,) = store.create([TrainConfig(**SHORT)], keep_running=True, instance=a.instance)
    a.tick()
    _started_child(store, mine)
    a.shutdown()  # a stops: its run ends as interrupted, b's trains on
    assert store.get(mine)["status"] == "interrupted"
    assert store.get(theirs)["status"] == "running" and b.processes[theirs].poll() is None
    # a queued run of a server that stopped beating is any server's to train
    (orphan,) = store.create([TrainConfig(**SHORT)], keep_running=True, instance="gone")
    b.tick()
    assert store.get(orphan)["status"] == "queued"
    clock.now += HEARTBEAT_TIMEOUT_S + 1
    store.append(theirs, "progress", {"step": 1})  # b's training process still beats
    b.tick()
    assert store.get(orphan)["status"] == "running" and orphan in b.processes
    b.shutdown()
    assert {store.get(i)["status"] for i in (theirs, orphan)} == {"interrupted"}


def test_a_database_corrupted_under_a_running_server_is_said_once(tmp_path, lecture_dataset, caplog):
    db = tmp_path / "runs.db"
    store = RunStore(db)
    scheduler = _stuck_scheduler(store, lecture_dataset)
    scheduler.tick()
    for path in tmp_path.iterdir():
        path.write_bytes(b"this is not a database " * 100)
    with caplog.at_level("WARNING", logger="backprop-explorer"):
        for _ in range(5):
            scheduler.tick()  # no exception: the web app's loop would log each one with its traceback
    (record,) = caplog.records
    assert "runs database cannot be used" in record.getMessage() and "not a database" in record.getMessage()
    assert record.exc_info is None
    caplog.clear()
    for path in tmp_path.iterdir():
        path.unlink()
    RunStore(db)  # a new, good database at the same path
    with caplog.at_level("WARNING", logger="backprop-explorer"):
        scheduler.tick()
    assert [r.getMessage() for r in caplog.records] == ["the runs database can be used again"]


# --- lifecycles with real worker processes --------------------------------------------------------


class Server(LiveServer):
    """The server on the lecture's data with a given runs database; a new one on the same file is a restart."""

    def __init__(self, db: Path | str, *extra: str) -> None:
        # without sandbox processes unless asked for: their warm-up (seconds of CPU each) is not what these test
        checks = () if "--check-workers" in extra else ("--check-workers", "0")
        super().__init__("--data", str(LECTURE_DATA), "--runs-db", str(db), *checks, *extra)
        self.db = db

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=30, **kw)


def read_events(server: Server, run_id: int, last_event_id: int | None = None, until=None, timeout=90.0):
    """The run's SSE stream as [(id, kind, data)], until the server ends it or until(event) is true."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events, fields = [], {}
    with httpx.stream("GET", f"{server.url}/api/runs/{run_id}/events", headers=headers, timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line == "":
                if "event" in fields:
                    events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                    if until and until(events[-1]):
                        break
                fields = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
    return events


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request, tmp_path):
    """The server on a SQLite file (it trains its runs), or on PostgreSQL with a training worker beside it."""
    worker = None
    if request.param == "sqlite":
        s = Server(tmp_path / "runs.db").start()
    else:
        from .postgres import WorkerProcess

        url = request.getfixturevalue("postgres_server").new_database()
        s = Server(url).start()
        worker = WorkerProcess(url, "worker", "--max-runs", "2")
    yield s
    if s.proc.poll() is None:
        s.stop()
    if worker is not None:
        worker.stop()
        print(worker.output())


@pytest.mark.slow  # a real server trains runs
def test_run_lifecycle_events_in_order_and_resumable(server):
    # manual and autograd from one seed, trained at the same time (two workers writing one database)
    run, partner = server.api("POST", "/api/runs", json={**SHORT, "backward": "both"}).json()["runs"]
    partner_events = read_events(server, partner["id"])
    assert [d["status"] for _, k, d in partner_events if k == "status"] == ["queued", "running", "finished"]
    events = read_events(server, run["id"])
    ids = [i for i, _, _ in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    statuses = [d["status"] for _, k, d in events if k == "status"]
    assert statuses == ["queued", "running", "finished"]
    kinds = [k for _, k, _ in events]
    assert kinds.index("result") < len(kinds) - 1 and kinds[-1] == "status"
    steps = [d["step"] for _, k, d in events if k == "progress"]
    assert steps == sorted(steps) and steps[-1] == 2000
    assert [d["step"] for _, k, d in events if k == "check"] == [0, 500, 1000, 1500, 1999]
    # resume after the third event: exactly the rest, same ids
    again = read_events(server, run["id"], last_event_id=ids[2])
    assert [i for i, _, _ in again] == ids[3:]
    detail = server.api("GET", f"/api/runs/{run['id']}").json()
    assert detail["status"] == "finished" and detail["has_params"] and len(detail["result"]["samples"]) == 20
    losses = server.api("GET", f"/api/runs/{run['id']}/losses").json()
    assert losses["steps"] == 2000 and len(losses["loss"]) == 2000
    assert abs(math.log10(losses["loss"][-1]) - detail["history"]["points"][-1][1]) < 1e-6
    other = server.api("GET", f"/api/runs/{partner['id']}").json()
    assert abs(other["result"]["val_loss"] - detail["result"]["val_loss"]) < 1e-3  # same seed, same batches
    assert detail["history"]["points"][-1][0] == 1999 and detail["history"]["checks"][-1]["max"] < 1e-6
    # the trained net in the explorer: its loss on a batch is far below the initial 3.3
    answer = server.api("GET", "/api/state", params={"run": run["id"], "n_hidden": 200})
    # a trained run's answer is not for shared caches: a deleted run's id can come back with other parameters
    assert answer.headers["cache-control"] == "private, no-store" and "etag" not in answer.headers
    trained = answer.json()
    fresh = server.api("GET", "/api/state", params={"n_hidden": 200}).json()
    assert trained["loss"] < fresh["loss"] - 0.5
    wrong = server.api("GET", "/api/state", params={"run": run["id"]})  # n_hidden 64: not this net
    assert wrong.status_code == 422 and "n_hidden=200" in wrong.text


@pytest.mark.slow  # a real server trains runs
def test_runs_train_on_the_words_validated_at_start_not_the_file(tmp_path):
    data = tmp_path / "names.txt"
    data.write_bytes(LECTURE_DATA.read_bytes())
    server = LiveServer("--data", str(data), "--runs-db", str(tmp_path / "runs.db"), "--check-workers", "1").start()
    try:
        with data.open("a") as f:
            f.write("zoë\n")  # a 28th character, after start-up: the run's worker starts after this
        (run,) = httpx.post(f"{server.url}/api/runs", json=SHORT, timeout=30).json()["runs"]
        events = read_events(server, run["id"])
        assert events[-1][2]["status"] == "finished", events[-1]
        c = httpx.get(f"{server.url}/api/tensor/C", params={"run": run["id"], "n_hidden": 200}, timeout=30)
        assert c.status_code == 200 and c.json()["shape"] == [27, 10]
        data.unlink()  # gone altogether: checks and runs go on
        (again,) = httpx.post(f"{server.url}/api/runs", json=SHORT, timeout=30).json()["runs"]
        assert read_events(server, again["id"])[-1][2]["status"] == "finished"
        check = {"step": 1, "code": "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"}
        assert httpx.post(f"{server.url}/api/check", json=check, timeout=60).json()["correct"]
    finally:
        server.stop()


@pytest.mark.slow  # a real server trains runs
def test_cancel_a_running_run(server):
    (run,) = server.api("POST", "/api/runs", json={"max_steps": 1_000_000}).json()["runs"]
    read_events(server, run["id"], until=lambda e: e[1] == "progress")
    assert server.api("POST", f"/api/runs/{run['id']}/cancel").status_code == 403  # a stranger
    owner = {"Authorization": f"Bearer {run['owner_token']}"}
    assert server.api("POST", f"/api/runs/{run['id']}/cancel", headers=owner).status_code == 200
    events = read_events(server, run["id"])  # the stream ends with the run (its read has a deadline)
    assert events[-1][1:] == ("status", {"status": "cancelled", "reason": "cancelled by its owner", "final": True})
    assert server.api("GET", f"/api/runs/{run['id']}").json()["has_params"] is False


@pytest.mark.slow  # a real server trains runs
def test_restart_keeps_finished_runs_and_interrupts_the_running_one(tmp_path):
    server = Server(tmp_path / "runs.db").start()
    (done,) = server.api("POST", "/api/runs", json=SHORT).json()["runs"]
    read_events(server, done["id"])
    (long,) = server.api("POST", "/api/runs", json={"max_steps": 1_000_000, "keep_running": True}).json()["runs"]
    read_events(server, long["id"], until=lambda e: e[1] == "progress")
    server.stop()  # SIGTERM: the worker ends its run as interrupted
    server = Server(tmp_path / "runs.db").start()
    try:
        runs = {r["id"]: r for r in server.api("GET", "/api/runs").json()["runs"]}
        assert runs[done["id"]]["status"] == "finished" and runs[done["id"]]["has_params"]
        assert runs[done["id"]]["result"]["train_loss"] is not None
        assert runs[long["id"]]["status"] == "interrupted"
        assert server.api("GET", "/api/state", params={"run": done["id"], "n_hidden": 200}).status_code == 200
    finally:
        server.stop()


@pytest.mark.slow  # a real server trains runs
def test_a_killed_server_leaves_no_orphan_worker(tmp_path):
    server = Server(tmp_path / "runs.db").start()
    (run,) = server.api("POST", "/api/runs", json={"max_steps": 1_000_000, "keep_running": True}).json()["runs"]
    read_events(server, run["id"], until=lambda e: e[1] == "progress")
    with RunStore(tmp_path / "runs.db")._db() as db:
        worker = db.execute("SELECT worker_pid FROM runs WHERE id = ?", (run["id"],)).fetchone()[0]
    server.stop(signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(worker):
        time.sleep(0.2)
    assert not _alive(worker)
    assert RunStore(tmp_path / "runs.db").get(run["id"])["status"] == "interrupted"


def _alive(pid: int) -> bool:
    return stat(pid)[:1] not in ([], ["Z"])  # a zombie has exited


@pytest.mark.slow  # a real server trains runs
def test_an_unwatched_run_stops_unless_kept_running(tmp_path):
    # no grace: a run nobody watches stops at its first look (no wait on the clock for a grace to pass)
    server = Server(tmp_path / "runs.db", "--watch-grace", "0").start()
    try:
        (alone,) = server.api("POST", "/api/runs", json={"max_steps": 1_000_000}).json()["runs"]
        (kept,) = server.api("POST", "/api/runs", json={**SHORT, "keep_running": True}).json()["runs"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # bounded polling
            runs = {r["id"]: r for r in server.api("GET", "/api/runs").json()["runs"]}
            if runs[alone["id"]]["status"] not in ("queued", "running") and runs[kept["id"]]["status"] == "finished":
                break
            time.sleep(0.2)
        assert runs[alone["id"]]["status"] == "cancelled" and "watching" in runs[alone["id"]]["reason"]
        assert runs[kept["id"]]["status"] == "finished"
    finally:
        server.stop()


@pytest.mark.slow  # a real server trains runs
def test_runs_with_the_learners_own_backward(tmp_path):
    from .test_train_code import BLOCK

    server = Server(tmp_path / "runs.db", "--check-workers", "1").start()
    try:
        short = {"max_steps": 400, "lr_decay_step": 200, "check_every": 100}
        right = server.api("POST", "/api/runs", json={**short, "backward": "code", "code": BLOCK}).json()["runs"][0]
        flipped = BLOCK.replace("dlogits /= n", "dlogits /= -n")
        wrong = server.api("POST", "/api/runs", json={**short, "backward": "code", "code": flipped}).json()["runs"][0]
        for run, agreed in ((right, True), (wrong, False)):
            events = read_events(server, run["id"])
            checks = [d for _, k, d in events if k == "check"]
            assert [c["step"] for c in checks] == [0, 100, 200, 300, 399]
            assert all((c["wrong"] == []) == agreed for c in checks)
            detail = server.api("GET", f"/api/runs/{run['id']}").json()
            assert detail["status"] == "finished" and len(detail["result"]["samples"]) == 20
            # the run says whether its checks agreed and whether the loss fell
            if agreed:
                assert detail["reason"].startswith("your backward agreed with autograd at all 5 checks")
                assert "; the loss fell: " in detail["reason"]
            else:
                assert detail["reason"].startswith("your backward disagrees with autograd from the check at step 0")
                assert "; the loss did not fall: " in detail["reason"]
            assert detail["history"]["checks"][-1]["wrong"] == checks[-1]["wrong"]
        # a long run of a learner's block trains under a check's memory limit, in a process of its own
        long = {"max_steps": 1_000_000, "backward": "code", "code": BLOCK, "keep_running": True}
        run = server.api("POST", "/api/runs", json=long).json()["runs"][0]
        read_events(server, run["id"], until=lambda event: event[1] == "progress")
        # this server's run process only: other tests' servers run runs with the same id beside it
        (pid,) = [
            pid
            for pid in os.listdir("/proc")
            if pid.isdigit() and f"-m server.runs.train_process --db {server.db} --run {run['id']} " in cmdline(pid)
        ]
        limits = [Path(f"/proc/{pid}/limits").read_text()]
        (address_space,) = [
            line.split()[3:5] for line in limits[0].splitlines() if line.startswith("Max address space")
        ]
        assert address_space[0] != "unlimited" and address_space[0] == address_space[1]
        # at nice 10 below the server, under a CPU-time limit: the one the run was given
        (cpu_time,) = [line.split()[3:5] for line in limits[0].splitlines() if line.startswith("Max cpu time")]
        assert cpu_time[0] != "unlimited" and int(cpu_time[1]) > int(cpu_time[0]) >= run["cpu_limit_s"]
        assert int(cpu_time[0]) <= run["cpu_limit_s"] + 60
        nice = int(stat(pid)[16])
        assert nice == min(19, os.nice(0) + 10)
        owner = {"Authorization": f"Bearer {run['owner_token']}"}
        assert server.api("POST", f"/api/runs/{run['id']}/cancel", headers=owner).status_code == 200
    finally:
        server.stop()
