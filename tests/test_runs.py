"""Training runs: the SQLite store, the runs API, and whole lifecycles with real worker processes."""

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
from fastapi.testclient import TestClient

from server.runs import HEARTBEAT_TIMEOUT_S, Limits, QueueFull, RunStore
from server.train_config import TrainConfig
from server.web.app import create_app

from .conftest import LECTURE_DATA
from .live_server import LiveServer

SHORT = {"max_steps": 2000, "lr_decay_step": 1000, "check_every": 500}


# --- the store -----------------------------------------------------------------------------------


def test_store_queue_claim_and_bounds(tmp_path):
    store = RunStore(tmp_path / "runs.db", Limits(max_running=1, max_queued=3))
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


def test_store_events_heartbeat_and_params(tmp_path):
    store = RunStore(tmp_path / "runs.db")
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


def test_a_runs_detail_is_bounded_however_many_checks_it_recorded(tmp_path):
    from server.training import CHECK_EVENTS, STATS_POINTS

    store = RunStore(tmp_path / "runs.db")
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


def test_sweep_interrupts_silent_workers_and_cancels_unwatched_queued_runs(tmp_path):
    store = RunStore(tmp_path / "runs.db", Limits(max_running=1, watch_grace_s=5))
    silent, waiting = store.create([TrainConfig(), TrainConfig()], keep_running=False)
    (kept,) = store.create([TrainConfig()], keep_running=True)
    assert store.claim()[0] == silent
    past = time.time() - HEARTBEAT_TIMEOUT_S - 1
    with store._db() as db:
        db.execute("UPDATE runs SET heartbeat = ?, watched = ?", (past, past))
    store.sweep()
    assert store.get(silent)["status"] == "interrupted"
    assert store.get(waiting)["status"] == "cancelled" and "watching" in store.get(waiting)["reason"]
    assert store.get(kept)["status"] == "queued"  # keep running: nobody needs to watch
    assert store.should_stop(kept) is None


def test_ended_runs_beyond_the_retention_are_pruned(tmp_path):
    store = RunStore(tmp_path / "runs.db", Limits(max_queued=10, keep_ended=2))
    ids = store.create([TrainConfig() for _ in range(5)], keep_running=True)
    for run_id in ids[:4]:
        store.cancel(run_id)
    store.sweep()
    runs, _ = store.list()
    assert [r["id"] for r in runs] == [ids[4], ids[3], ids[2]]  # the queued one and the newest 2 ended
    assert store.events_after(ids[0], 0) == []  # their events went with them
    assert len(RunStore(tmp_path / "all.db", Limits(keep_ended=0)).list()[0]) == 0  # 0 keeps everything


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


def test_worker_stop_reasons(tmp_path):
    store = RunStore(tmp_path / "runs.db", Limits(watch_grace_s=0.5))
    (run_id,) = store.create([TrainConfig()], keep_running=False)
    store.claim()
    assert store.should_stop(run_id) is None
    time.sleep(0.6)
    assert store.should_stop(run_id) == "abandoned"
    store.watch(run_id)
    store.cancel(run_id)
    assert store.should_stop(run_id) == "cancelled"
    store.delete(run_id)
    assert store.should_stop(run_id) == "deleted"


# --- the API (no workers: runs stay queued) ------------------------------------------------------


@pytest.fixture()
def client(lecture_dataset, tmp_path):
    runs = RunStore(tmp_path / "runs.db", Limits(max_queued=4))
    with TestClient(
        create_app(lecture_dataset, runs=runs, schedule=False),
        base_url="http://127.0.0.1",
        raise_server_exceptions=False,
    ) as c:
        yield c


@pytest.mark.parametrize(
    "body",
    [{"lr": -1}, {"lr": "NaN"}, {"lr": 1e39}, {"max_steps": 0}, {"n_hidden": 10_000}, {"backward": "sgd"},
     {"batch_size": 1}, {"path": "/etc/passwd"}, {"seed": -5}],
)  # fmt: skip
def test_bad_run_configs_are_422_and_change_nothing(client, body):
    r = client.post("/api/runs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert client.get("/api/runs").json() == {"runs": [], "next": None}


@pytest.mark.parametrize(
    "body",
    [b'{"lr": 1e400}', b'{"seed": NaN}', b'{"lr_after": -Infinity}', b'{"backward": "\\ud800"}',
     b'{"max_steps": 1e400}', b'{"\\ud800": 1}'],
)  # fmt: skip
def test_nonfinite_and_lone_surrogate_values_are_422_with_a_reason(client, body):
    r = client.post("/api/runs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["msg"]
    assert client.get("/api/runs").json() == {"runs": [], "next": None}


def test_runs_api_without_workers(client):
    r = client.post("/api/runs", json={**SHORT, "backward": "both"})
    assert r.status_code == 201
    a, b = r.json()["runs"]
    assert (a["config"]["backward"], b["config"]["backward"]) == ("manual", "autograd") and a["group"] == b["group"]
    assert a["config"]["n_hidden"] == 200 and a["config"]["lr"] == 0.1  # the lecture's Exercise 4 defaults
    assert [run["id"] for run in client.get("/api/runs").json()["runs"]] == [b["id"], a["id"]]
    client.post("/api/runs", json=SHORT)
    client.post("/api/runs", json=SHORT)
    full = client.post("/api/runs", json=SHORT)
    assert full.status_code == 429 and "waiting" in full.json()["detail"]
    detail = client.get(f"/api/runs/{a['id']}").json()
    assert detail["status"] == "queued" and detail["history"]["points"] == []
    assert client.post(f"/api/runs/{a['id']}/cancel").json()["status"] == "cancelled"
    assert client.post(f"/api/runs/{a['id']}/cancel").status_code == 409
    assert client.delete(f"/api/runs/{a['id']}").status_code == 204
    for method, path in [("get", "/api/runs/{}"), ("post", "/api/runs/{}/cancel"), ("delete", "/api/runs/{}"),
                         ("get", "/api/runs/{}/events")]:  # fmt: skip
        assert getattr(client, method)(path.format(a["id"])).status_code == 404
    assert client.get(f"/api/runs/{b['id']}/losses").status_code == 404  # stored when the run ends
    assert client.get("/api/runs/abc").status_code == 422
    assert client.get("/api/runs/99999999999999999999").status_code == 422
    assert client.get(f"/api/runs/{b['id']}/events", params={"after": 2**70}).status_code == 422
    assert client.get(f"/api/runs/{b['id']}/events", headers={"Last-Event-ID": "x"}).status_code == 422


def test_a_change_sent_from_another_origin_is_refused(client):
    (run,) = client.post("/api/runs", json=SHORT).json()["runs"]
    cancel = f"/api/runs/{run['id']}/cancel"
    # what any web page can make a browser send, without a preflight
    assert (
        client.post(cancel, headers={"Origin": "http://evil.example", "Content-Type": "text/plain"}).status_code == 403
    )
    assert client.post(cancel, headers={"Origin": "http://127.0.0.1:8001"}).status_code == 403  # another port
    assert client.delete(f"/api/runs/{run['id']}", headers={"Origin": "null"}).status_code == 403
    assert client.post("/api/runs", json=SHORT, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert [r["status"] for r in client.get("/api/runs").json()["runs"]] == ["queued"]
    # the page itself (same origin), and clients that send no Origin (curl, scripts)
    assert client.post(cancel, headers={"Origin": "http://127.0.0.1"}).json()["status"] == "cancelled"
    assert client.delete(f"/api/runs/{run['id']}").status_code == 204


def test_an_unknown_host_is_refused(client):
    for method in ("GET", "POST", "DELETE"):
        path = "/api/runs" if method != "DELETE" else "/api/runs/1"
        r = client.request(method, path, headers={"Host": "rebind.attacker.example"})
        assert r.status_code == 400 and "--allowed-hosts" in r.json()["detail"]
    for host in ("localhost:8000", "LOCALHOST", "127.0.0.1:1234", "[::1]:8000"):
        assert client.get("/api/runs", headers={"Host": host}).status_code == 200, host


def test_host_patterns():
    from server.web.guards import host_allowed

    allowed = ("localhost", ".school.example", "10.0.0.5")
    assert all(
        host_allowed(h, allowed) for h in ("localhost:80", "school.example", "a.school.example:8000", "10.0.0.5")
    )
    assert not any(host_allowed(h, allowed) for h in ("evilschool.example", "localhost.evil", "10.0.0.6", ""))
    assert host_allowed("anything", ("*",))


def test_runs_are_listed_a_page_at_a_time(client):
    ids = []
    for _ in range(5):
        (run,) = client.post("/api/runs", json=SHORT).json()["runs"]
        client.post(f"/api/runs/{run['id']}/cancel")  # out of the queue: its bound is 4
        ids.append(run["id"])
    pages, before = [], None
    for _ in range(5):  # bounded: 3 pages expected
        page = client.get("/api/runs", params={"limit": 2} | ({"before": before} if before else {})).json()
        pages.append([r["id"] for r in page["runs"]])
        before = page["next"]
        if before is None:
            break
    assert pages == [[ids[4], ids[3]], [ids[2], ids[1]], [ids[0]]]
    assert client.get("/api/runs").json()["next"] is None and len(client.get("/api/runs").json()["runs"]) == 5
    for bad in ({"limit": 0}, {"limit": 501}, {"before": 0}, {"before": "x"}):
        assert client.get("/api/runs", params=bad).status_code == 422


def test_a_run_trained_on_other_data_is_a_409_not_a_500(client, tmp_path):
    from server.engine import init_params

    (run,) = client.post("/api/runs", json=SHORT).json()["runs"]
    store = RunStore(tmp_path / "runs.db")
    store.claim()
    params, _ = init_params(TrainConfig().model(), 28)  # another names list had 27 letters and '.'
    store.end(run["id"], "finished", None, params)
    r = client.get("/api/tensor/C", params={"run": run["id"], "n_hidden": 200})
    assert r.status_code == 409 and "28 characters" in r.json()["detail"]


def test_the_explorer_refuses_runs_without_parameters(client):
    (run,) = client.post("/api/runs", json=SHORT).json()["runs"]
    r = client.get("/api/state", params={"run": run["id"], "n_hidden": 200})
    assert r.status_code == 404 and "no trained parameters" in r.json()["detail"]
    assert client.get("/api/state", params={"run": 999}).status_code == 404


# --- lifecycles with real worker processes --------------------------------------------------------


class Server(LiveServer):
    """The server on the lecture's data with a given runs database; a new one on the same file is a restart."""

    def __init__(self, db: Path, *extra: str) -> None:
        super().__init__("--data", str(LECTURE_DATA), "--runs-db", str(db), *extra)
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


@pytest.fixture()
def server(tmp_path):
    s = Server(tmp_path / "runs.db").start()
    yield s
    if s.proc.poll() is None:
        s.stop()


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
    trained = server.api("GET", "/api/state", params={"run": run["id"], "n_hidden": 200}).json()
    fresh = server.api("GET", "/api/state", params={"n_hidden": 200}).json()
    assert trained["loss"] < fresh["loss"] - 0.5
    wrong = server.api("GET", "/api/state", params={"run": run["id"]})  # n_hidden 64: not this net
    assert wrong.status_code == 422 and "n_hidden=200" in wrong.text


def test_runs_train_on_the_words_validated_at_start_not_the_file(tmp_path):
    data = tmp_path / "names.txt"
    data.write_bytes(LECTURE_DATA.read_bytes())
    server = LiveServer("--data", str(data), "--runs-db", str(tmp_path / "runs.db")).start()
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


def test_cancel_a_running_run(server):
    (run,) = server.api("POST", "/api/runs", json={"max_steps": 1_000_000}).json()["runs"]
    read_events(server, run["id"], until=lambda e: e[1] == "progress")
    t0 = time.monotonic()
    assert server.api("POST", f"/api/runs/{run['id']}/cancel").status_code == 200
    events = read_events(server, run["id"])
    assert events[-1][1:] == ("status", {"status": "cancelled", "reason": "cancelled", "final": True})
    assert time.monotonic() - t0 < 10
    assert server.api("GET", f"/api/runs/{run['id']}").json()["has_params"] is False


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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited
        return f.read().split(")")[1].split()[0] != "Z"


def test_an_unwatched_run_stops_unless_kept_running(tmp_path):
    server = Server(tmp_path / "runs.db", "--watch-grace", "2").start()
    try:
        (alone,) = server.api("POST", "/api/runs", json={"max_steps": 1_000_000}).json()["runs"]
        (kept,) = server.api("POST", "/api/runs", json={**SHORT, "keep_running": True}).json()["runs"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = {r["id"]: r for r in server.api("GET", "/api/runs").json()["runs"]}
            if runs[alone["id"]]["status"] != "running" and runs[kept["id"]]["status"] == "finished":
                break
            time.sleep(0.5)
        assert runs[alone["id"]]["status"] == "cancelled" and "watching" in runs[alone["id"]]["reason"]
        assert runs[kept["id"]]["status"] == "finished"
    finally:
        server.stop()
