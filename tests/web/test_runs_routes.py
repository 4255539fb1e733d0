"""The runs API (server/web/runs_routes.py) on a store without workers: runs stay queued. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from fastapi.testclient import TestClient

from server.runs.store import Limits, RunStore
from server.settings import Settings
from server.training.config import TrainConfig
from server.web.app import create_app

SHORT = {"max_steps": 2000, "lr_decay_step": 1000, "check_every": 500}
LARGEST = {"batch_size": 256, "n_hidden": 512, "n_embd": 64, "block_size": 8}


@pytest.fixture()
def client(lecture_dataset, open_runs):
    runs = open_runs(Limits(max_queued=4, per_client=8))  # the queue's bound, not a client's, is tested here
    with TestClient(
        create_app(lecture_dataset, runs=runs, schedule=False),
        base_url="http://127.0.0.1",
        raise_server_exceptions=False,
    ) as c:
        yield c


@pytest.mark.parametrize(
    "body",
    [{"lr": -1}, {"lr": "NaN"}, {"lr": 1e39}, {"max_steps": 0}, {"n_hidden": 10_000}, {"backward": "sgd"},
     {"batch_size": 1}, {"path": "/etc/passwd"}, {"seed": -5}, {"backward": "code"}, {"code": "dlogits = logits"},
     {"backward": "both", "code": "dlogits = logits"}, {"backward": "code", "code": "#" * 8001},
     {"backward": "code", "code": ""}, {"backward": "code", "code": 5}],
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


def test_a_run_trained_on_other_data_is_a_409_not_a_500(client):
    from server.core.engine import init_params

    (run,) = client.post("/api/runs", json=SHORT).json()["runs"]
    store = client.app.state.runs
    assert store.start(run["id"], "test:1") is not None
    params, _ = init_params(TrainConfig().model(), 28)  # another names list had 27 letters and '.'
    store.end(run["id"], "finished", None, params)
    r = client.get("/api/tensor/C", params={"run": run["id"], "n_hidden": 200})
    assert r.status_code == 409 and "28 characters" in r.json()["detail"]


def test_the_explorer_refuses_runs_without_parameters(client):
    (run,) = client.post("/api/runs", json=SHORT).json()["runs"]
    r = client.get("/api/state", params={"run": run["id"], "n_hidden": 200})
    assert r.status_code == 404 and "no trained parameters" in r.json()["detail"]
    assert client.get("/api/state", params={"run": 999}).status_code == 404


def test_meta_serves_the_training_forms_defaults_as_a_run_gets_them(client):
    meta = client.get("/api/meta").json()
    defaults = {name: field["default"] for name, field in meta["train"].items()}
    started = client.post("/api/runs", json={}).json()["runs"][0]  # every field left to its default
    config = {k: v for k, v in started["config"].items() if k != "backward"}
    assert config == {k: v for k, v in defaults.items() if k not in ("backward", "keep_running")}
    assert (defaults["backward"], defaults["keep_running"]) == ("manual", False) and started["config"][
        "backward"
    ] == "manual"
    # the bounds served are the ones enforced
    for name in ("n_hidden", "batch_size", "max_steps"):
        too_big = client.post("/api/runs", json={name: meta["train"][name]["maximum"] + 1})
        assert too_big.status_code == 422 and name in too_big.text
    assert meta["train"]["backward"]["choices"] == ["manual", "autograd", "both", "code"]
    # a trained run is explored in the mode whose backward it trained with: both blocks fused
    graph = client.get("/api/graph", params={"mode": meta["train_mode"]}).json()
    assert not any(op["name"] in ("bnmeani", "logit_maxes") for op in graph["ops"])


def test_a_run_whose_job_the_queue_refuses_fails_with_a_503(lecture_dataset, postgres_server):
    from server.runs.stores import open_store

    runs = open_store(postgres_server.new_database(), Limits(max_queued=4))  # SQLite has no queue to refuse

    class Refusing:
        def defer(self, run_ids: list[int]) -> None:
            raise ConnectionError("the queue's connection was lost")

        def close(self) -> None:
            pass

    runs.jobs = Refusing()
    with TestClient(create_app(lecture_dataset, runs=runs, schedule=False), base_url="http://127.0.0.1") as client:
        r = client.post("/api/runs", json=SHORT)
        assert r.status_code == 503 and "connection was lost" in r.json()["detail"] and r.headers["Retry-After"]
        (run,) = client.get("/api/runs").json()["runs"]
        assert run["status"] == "failed" and "task queue refused" in run["reason"]
    runs.close()


def with_patient_checks(app, dataset):
    """`app` checking code in one sandbox process with all the time it needs: the server's own pool stops a check
    after 3 s of the wall clock, which a busy machine can take; what these tests look at is why a block is refused."""
    from server.sandbox_pool import SandboxPool
    from server.web.app import use_checks

    use_checks(app, SandboxPool(dataset, size=1, timeout_s=300), 1)
    return app


def test_a_runs_own_backward_is_checked_before_it_is_queued(lecture_dataset, open_runs):
    from server.settings import Settings

    from ..test_train_code import BLOCK

    runs = open_runs(Limits(max_queued=4))
    app = create_app(lecture_dataset, Settings(check_workers=0), runs=runs, schedule=False)
    app = with_patient_checks(app, lecture_dataset)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        wrong = BLOCK.replace("dh = dlogits @ W2.T", "dh = dlogits @ W2")
        r = client.post("/api/runs", json={**SHORT, "backward": "code", "code": wrong})
        assert r.status_code == 422 and "line 7: dlogits @ W2: (32,27) @ (200,27)" in r.json()["detail"]
        loop = BLOCK + "for a in range(100):\n  for b in range(100):\n    dW1 = dW1 * 1.0\n"
        r = client.post("/api/runs", json={**SHORT, "backward": "code", "code": loop})
        assert r.status_code == 422 and "the loops would run more than 4,096 times" in r.json()["detail"]
        assert client.get("/api/runs").json()["runs"] == []  # no run for a refused block
        r = client.post("/api/runs", json={**SHORT, "backward": "code", "code": BLOCK})
        assert r.status_code == 201, r.text
        (run,) = r.json()["runs"]
        assert run["config"]["backward"] == "code" and run["config"]["code"] == BLOCK and run["status"] == "queued"
        assert client.get("/api/health").status_code == 200
    # a server without code checks cannot take it: the web process never runs a learner's code
    r = TestClient(create_app(lecture_dataset, runs=runs, schedule=False), base_url="http://127.0.0.1").post(
        "/api/runs", json={**SHORT, "backward": "code", "code": BLOCK}
    )
    assert r.status_code == 503 and "code checks are off" in r.json()["detail"]


def _stranger(client: TestClient, address: str = "10.0.0.9") -> TestClient:
    """Another client of the same app: another address, no cookies."""
    return TestClient(client.app, base_url="http://127.0.0.1", client=(address, 50000))


def test_cancel_and_delete_need_the_runs_owner_token(client):
    first, second = client.post("/api/runs", json={**SHORT, "backward": "both"}).json()["runs"]
    token = first["owner_token"]
    assert token and token != second["owner_token"] and len(token) >= 40
    cookies = client.post("/api/runs", json=SHORT)  # a third run: its cookie, as the browser gets it
    (third,) = cookies.json()["runs"]
    (set_cookie,) = cookies.headers.get_list("set-cookie")
    assert f"run_owner={third['owner_token']}" in set_cookie and f"Path=/api/runs/{third['id']};" in set_cookie
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    stranger = _stranger(client)
    for method, path in [("post", f"/api/runs/{first['id']}/cancel"), ("delete", f"/api/runs/{first['id']}")]:
        refused = getattr(stranger, method)(path)
        assert refused.status_code == 403 and "owner_token" in refused.json()["detail"]
        wrong = getattr(stranger, method)(path, headers={"Authorization": f"Bearer {second['owner_token']}"})
        assert wrong.status_code == 403  # another run's token
        assert getattr(stranger, method)(path, headers={"Cookie": "run_owner=guess"}).status_code == 403
    # viewing stays open (permalinks), and shows nobody the token
    assert stranger.get(f"/api/runs/{first['id']}").json()["status"] == "queued"
    assert "owner_token" not in stranger.get("/api/runs").text
    bearer = {"Authorization": f"Bearer {token}"}
    assert stranger.post(f"/api/runs/{first['id']}/cancel", headers=bearer).json()["status"] == "cancelled"
    assert stranger.delete(f"/api/runs/{first['id']}", headers=bearer).status_code == 204
    # the starting client's cookie (scoped to the run's URLs) is its token
    assert client.post(f"/api/runs/{third['id']}/cancel").json()["status"] == "cancelled"
    assert client.get(f"/api/runs/{second['id']}").json()["status"] == "queued"


def test_the_runs_table_keeps_only_a_hash_of_each_token(lecture_dataset, tmp_path):
    from server.runs.store import RunStore

    db = tmp_path / "runs.db"
    app = create_app(lecture_dataset, runs=RunStore(db), schedule=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        (run,) = client.post("/api/runs", json=SHORT).json()["runs"]
    stored = sqlite3.connect(db).execute("SELECT * FROM runs").fetchall()
    assert run["owner_token"] not in repr(stored)
    assert hashlib.sha256(run["owner_token"].encode()).hexdigest() in repr(stored)


def test_an_admin_token_manages_every_run(lecture_dataset, open_runs):
    runs = open_runs(Limits(max_queued=4))
    app = create_app(lecture_dataset, Settings(check_workers=0, admin_token="teacher-secret"), runs, schedule=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        (run,) = client.post("/api/runs", json=SHORT).json()["runs"]
        teacher = _stranger(client, "10.0.0.1")
        assert teacher.post(f"/api/runs/{run['id']}/cancel").status_code == 403
        for wrong in ("teacher-secre", "teacher-secret2", ""):
            headers = {"Authorization": f"Bearer {wrong}"}
            assert teacher.post(f"/api/runs/{run['id']}/cancel", headers=headers).status_code == 403
        admin = {"Authorization": "Bearer teacher-secret"}
        assert teacher.post(f"/api/runs/{run['id']}/cancel", headers=admin).json()["status"] == "cancelled"
        assert teacher.delete(f"/api/runs/{run['id']}", headers=admin).status_code == 204


def test_a_client_has_at_most_its_share_of_live_runs(lecture_dataset, open_runs):
    runs = open_runs(Limits(max_queued=8, per_client=2))
    with TestClient(create_app(lecture_dataset, runs=runs, schedule=False), base_url="http://127.0.0.1") as client:
        (a,) = client.post("/api/runs", json=SHORT).json()["runs"]
        (b,) = client.post("/api/runs", json=SHORT).json()["runs"]
        for body in (SHORT, {**SHORT, "backward": "both"}):
            busy = client.post("/api/runs", json=body)
            assert busy.status_code == 429 and "2 runs queued or running" in busy.json()["detail"]
            assert busy.headers["Retry-After"]
        other = _stranger(client)
        assert [r["backward"] for r in (x["config"] for x in other.post("/api/runs", json={
            **SHORT, "backward": "both"}).json()["runs"])] == ["manual", "autograd"]  # fmt: skip
        client.post(f"/api/runs/{a['id']}/cancel")  # an ended run no longer counts
        assert client.post("/api/runs", json=SHORT).status_code == 201
        assert client.post("/api/runs", json=SHORT).status_code == 429
        assert [r["status"] for r in client.get("/api/runs").json()["runs"]].count("queued") == 4
        assert b["status"] == "queued"


def test_a_run_that_would_need_more_cpu_than_a_run_may_use_is_refused(lecture_dataset, open_runs):
    runs = open_runs(Limits(max_queued=8, per_client=8))
    with TestClient(create_app(lecture_dataset, runs=runs, schedule=False), base_url="http://127.0.0.1") as client:
        huge = client.post("/api/runs", json={**LARGEST, "max_steps": 1_000_000})
        assert huge.status_code == 422 and "of CPU" in huge.json()["detail"] and "2.0 h" in huge.json()["detail"]
        (lecture,) = client.post("/api/runs", json={}).json()["runs"]  # the lecture's whole run (200,000 steps)
        assert 0 < lecture["cpu_limit_s"] <= Settings.max_run_cpu
    tight = create_app(lecture_dataset, Settings(check_workers=0, max_run_cpu=60), runs, schedule=False)
    with TestClient(tight, base_url="http://127.0.0.1") as client:
        refused = client.post("/api/runs", json={})
        assert refused.status_code == 422 and "200,000 steps" in refused.json()["detail"]
        assert "(60 s)" in refused.json()["detail"]
        (short,) = client.post("/api/runs", json=SHORT).json()["runs"]
        assert 0 < short["cpu_limit_s"] <= 60
    assert len(runs.list()[0]) == 2  # no run for a refused request


def test_a_block_slower_than_the_estimate_is_bounded_by_its_measured_step(lecture_dataset, open_runs):
    """The sandbox times the block on the check batch: a block that passes every cap but costs many built-in steps
    is refused up front where its run would need more CPU than --max-run-cpu, not found out after hours."""
    from server.settings import Settings

    from ..test_train_code import BLOCK

    runs = open_runs(Limits(max_queued=4, per_client=4))
    app = create_app(lecture_dataset, Settings(check_workers=0, max_run_cpu=70), runs=runs, schedule=False)
    app = with_patient_checks(app, lecture_dataset)
    body = {"max_steps": 15000, "lr_decay_step": 7500, "backward": "code"}  # estimated: ~52 s of CPU
    slow = BLOCK + "for a in range(200):\n  junk = h.T @ h\n"  # ~10x the notebook's block, within every cap
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        r = client.post("/api/runs", json={**body, "code": slow})
        assert r.status_code == 422 and "of CPU" in r.json()["detail"], r.text
        assert client.get("/api/runs").json()["runs"] == []
        r = client.post("/api/runs", json={**body, "code": BLOCK})  # the notebook's block: within its estimate
        assert r.status_code == 201, r.text
        assert 0 < r.json()["runs"][0]["cpu_limit_s"] <= 70


def test_a_runs_database_corrupted_under_the_server_is_a_503_said_once(lecture_dataset, tmp_path, caplog):
    """The runs' routes answer 503 with the reason (no 500, no traceback per request); the explorer answers on."""
    db = tmp_path / "runs.db"
    runs = RunStore(db)
    with TestClient(create_app(lecture_dataset, runs=runs, schedule=False), base_url="http://127.0.0.1") as client:
        assert client.get("/api/runs").status_code == 200
        runs.close()
        for path in tmp_path.iterdir():
            path.write_bytes(b"this is not a database " * 100)
        with caplog.at_level("WARNING", logger="backprop-explorer"):
            answers = [client.get("/api/runs"), client.get("/api/runs/1"), client.post("/api/runs", json=SHORT)]
        for r in answers:
            assert r.status_code == 503 and "runs database cannot be used" in r.json()["detail"], r.text
        (record,) = [r for r in caplog.records if "runs database" in r.getMessage()]
        assert record.exc_info is None and "not a database" in record.getMessage()
        assert client.get("/api/state?step=1").status_code == 200
