"""POST /api/check and /api/hints: learner code runs in sandboxed worker processes; the server keeps serving."""

from __future__ import annotations

import math
import os
import signal

import orjson
import pytest
from fastapi.testclient import TestClient

from server.core.cache import BYTES_PER_VALUE_BYTE
from server.core.engine import axis_sizes
from server.sandbox_pool import SandboxPool
from server.settings import Settings
from server.web.app import create_app
from tests.lecture import backward_schedule, nodes_for_mode, ops_for_mode

DLOGPROBS = "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"


@pytest.fixture(scope="module")
def client(lecture_dataset):
    app = create_app(lecture_dataset, Settings(check_workers=1))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


def test_the_lectures_dlogprobs_is_exact(client):
    r = client.post("/api/check", json={"step": 1, "code": DLOGPROBS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["correct"] and body["op"] == "loss"
    (item,) = body["results"]
    assert item["cmp"]["exact"] and item["diff"]["max"] == 0 and item["diff"]["shape"] == [32, 27]


def test_the_notebooks_dC_loop_is_graded(client):
    from ..test_challenge import EXERCISE_1

    code = EXERCISE_1[EXERCISE_1.index("dC = ") :]  # the loop, as the notebook writes it
    body = client.post("/api/check", json={"step": 20, "code": code}).json()
    assert body["correct"] and body["results"][0]["diff"]["shape"] == [27, 10], body


def test_a_wrong_gradient_of_the_right_shape_is_told_what_is_wrong(client):
    code = "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0"
    (item,) = client.post("/api/check", json={"step": 1, "code": code}).json()["results"]
    assert item["feedback"] == ["dlogprobs is 32× autograd's — n is 32: did you forget /n?"]
    assert item["diff"]["shape"] == [32, 27]  # and the heatmap of the difference


def test_a_wrong_shape_gets_its_reason_and_no_diff(client):
    code = "dcounts_sum_inv = counts * dprobs\ndcounts = counts_sum_inv * dprobs"
    body = client.post("/api/check", json={"step": 3, "code": code}).json()
    item = next(r for r in body["results"] if r["name"] == "dcounts_sum_inv")
    assert not body["correct"] and "sum over dim 1 with keepdim=True" in item["feedback"][0]
    assert item["shape"] == [32, 27] and item["expected_shape"] == [32, 1] and item["diff"] is None
    assert item["cmp"]["shape_ok"] is False


def test_a_broadcasting_answer_gets_its_shape_feedback_in_a_small_response(client):
    # (32768,1,1) minus the (32,27) gradient broadcasts to 28M entries: once a 304 MB response
    code = "a = hprebn.view(1, 2048) + hprebn[0:16, 0:1]\ndlogprobs = a.view(32768, 1, 1)"
    r = client.post("/api/check", json={"step": 1, "code": code})
    assert r.status_code == 200 and len(r.content) < 4096, len(r.content)
    (item,) = r.json()["results"]
    assert item["diff"] is None and item["shape"] == [32768, 1, 1] and "expected (32,27)" in item["feedback"][0]


def test_a_check_is_serialized_by_the_worker_not_on_the_event_loop(client, monkeypatch):
    import server.web.routes as routes

    calls = []
    monkeypatch.setattr(routes, "dumps", lambda content: calls.append(content) or b"{}")
    body = client.post("/api/check", json={"step": 1, "code": DLOGPROBS}).json()
    assert body["correct"] and body["results"][0]["diff"]["shape"] == [32, 27]
    assert calls == []  # the web process forwarded the worker's bytes


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("import os", "only assignments"),
        ("x = counts.__class__", "not available"),
        ("torch.save(counts, 'x')", ".save is not available"),
        ("x = 'abc'", "strings are not allowed"),
        ("counts += 1", "counts is shared"),
        ("for k in range(n):\n  for j in range(n):\n    for i in range(n):\n      x = k", "4,096 times in all"),
        ("for counts in range(3):\n  x = 1", "would hide the tensor counts"),
        ("x = " + "(" * 900 + "1" + ")" * 900, "too many nested parentheses"),
    ],
)
def test_refused_code_is_a_422_with_a_reason_and_the_server_keeps_serving(client, code, reason):
    r = client.post("/api/check", json={"step": 4, "code": code})
    assert r.status_code == 422 and reason in r.json()["detail"]
    assert client.get("/api/health").json()["status"] == "ok"
    assert client.post("/api/check", json={"step": 1, "code": DLOGPROBS}).json()["correct"]
    # the web process's own pass is untouched (the worker computes on its own copies anyway)
    assert client.get("/api/state").json()["nodes"]["counts"]["cmp"]["exact"]


def test_bad_check_requests(client):
    past_atomic, past_fused = len(ops_for_mode("atomic")) + 1, len(ops_for_mode("fused")) + 1
    assert client.post("/api/check", json={"step": past_atomic, "code": "x = 1"}).status_code == 422
    assert client.post("/api/check", json={"step": past_fused, "mode": "fused", "code": "x = 1"}).status_code == 422
    assert client.post("/api/check", json={"step": 1, "code": "x" * 3000}).status_code == 422
    assert client.post("/api/check", json={"step": 1, "code": "x = 1", "run": 3}).status_code == 422
    assert client.post("/api/check", json={"step": 1, "code": "x = 1", "path": "/etc"}).status_code == 422


def test_hints_ladder(client):
    ladder = client.get("/api/hints", params={"step": 5}).json()["ladder"]
    (dcounts,) = ladder
    assert dcounts["target"] == "dcounts" and len(dcounts["hints"]) == 4
    assert "(32, 27)" in dcounts["hints"][0] and "+=" in dcounts["hints"][2]
    assert dcounts["hints"][3] == "dcounts += torch.ones_like(counts) * dcounts_sum"
    assert client.get("/api/hints", params={"step": 0}).status_code == 422


def test_checks_off_is_503(lecture_dataset):
    with TestClient(create_app(lecture_dataset), base_url="http://127.0.0.1") as c:
        assert c.post("/api/check", json={"step": 1, "code": DLOGPROBS}).status_code == 503


@pytest.mark.parametrize("seconds", [3.0, 45.5])  # the default, and --check-timeout 45.5
def test_the_check_timeout_is_the_settings(lecture_dataset, seconds):
    settings = Settings(check_workers=1) if seconds == 3.0 else Settings(check_workers=1, check_timeout=seconds)
    app = create_app(lecture_dataset, settings)
    try:
        assert app.state.checks.timeout_s == seconds
    finally:
        app.state.checks.close()


@pytest.mark.slow  # sandbox processes started, killed and replaced
def test_a_stuck_worker_is_killed_and_replaced(lecture_dataset):
    pool = SandboxPool(lecture_dataset, size=1, timeout_s=1.0)
    try:
        from server.core.config import ModelConfig

        # stuck for good (stopped), not merely slow: a timeout of 0 s let a fast answer through on a busy machine
        sandbox = pool.idle.queue[0]
        assert sandbox.wait_ready(60)
        os.kill(sandbox.proc.pid, signal.SIGSTOP)
        job = {"config": ModelConfig(), "mode": "atomic", "step": 1, "code": DLOGPROBS}
        assert "ran longer than" in pool.run(job)["refused"]
        assert pool.respawns == 1
        pool.timeout_s = 30.0  # the next job starts a fresh worker in the freed slot
        assert orjson.loads(pool.run(job)["json"])["correct"]  # the replacement works
    finally:
        pool.close()


@pytest.mark.slow  # sandbox processes started, killed and replaced
def test_a_worker_out_of_memory_refuses_and_recovers(lecture_dataset):
    from server.core.config import ModelConfig

    pool = SandboxPool(lecture_dataset, size=1, memory_limit=0)  # no room to grow at all
    try:
        job = {"config": ModelConfig(batch_size=256, n_hidden=512), "mode": "atomic", "step": 1, "code": DLOGPROBS}
        answer = pool.run(job)
        assert "refused" in answer and ("memory" in answer["refused"] or "restarted" in answer["refused"])
    finally:
        pool.close()


@pytest.mark.slow  # sandbox processes started, killed and replaced
def test_a_workers_passes_fit_its_memory_limit(lecture_dataset):
    from server.core.config import ModelConfig

    # each pass of the largest config holds ~40 MB by the first linear layer's step (18 in the lecture's network);
    # kept 16 at a time they ran a worker with a 256 MiB limit out of memory ("can't allocate memory" killed it),
    # now the cache holds a quarter of it. The limit: 256 MiB, or four of the largest passes as the cache
    # estimates them where the declared network makes them larger (the lecture's: 4 x 63 MB)
    code = "dembcat = dhprebn @ W1.T\ndW1 = embcat.T @ dhprebn\ndb1 = dhprebn.sum(0)"
    step = [op.name for op in backward_schedule("atomic")].index("hprebn") + 1
    largest = {"batch_size": 256, "n_hidden": 512, "n_embd": 64, "block_size": 8, "dtype": "float64"}
    sizes = {**axis_sizes(ModelConfig(**largest), lecture_dataset.vocab_size), "batch": 256, "context": 8}
    values = sum(8 * math.prod(sizes[a] for a in node.axes) for node in nodes_for_mode("atomic"))  # float64, int64
    limit = max(256 << 20, 4 * BYTES_PER_VALUE_BYTE * values)
    pool = SandboxPool(lecture_dataset, size=1, timeout_s=60, memory_limit=limit)
    try:
        for seed in range(8):
            job = {"config": ModelConfig(seed=seed, **largest), "mode": "atomic", "step": step, "code": code}
            answer = pool.run(job)
            assert "json" in answer and orjson.loads(answer["json"])["correct"], (seed, answer)
        assert pool.respawns == 0
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("exc", "message"),
    [(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to "
                   "allocate 2097152 bytes"), "needs more memory than a check may use (1024 MiB)"),
     (MemoryError(), "needs more memory"),
     (ValueError("maximum supported dimension for an ndarray is 64, found 70"),
      "the check failed: ValueError: maximum supported dimension for an ndarray is 64, found 70")],
)  # fmt: skip
def test_a_grading_failure_is_told_as_what_it_was(exc, message):
    from server.core.limits import MEMORY_LIMIT
    from server.sandbox_pool import failure_message

    assert message in failure_message(exc, MEMORY_LIMIT)


@pytest.mark.slow  # sandbox processes started, killed and replaced
@pytest.mark.parametrize(
    ("sig", "message"), [(signal.SIGKILL, "killed (SIGKILL"), (signal.SIGSEGV, "crashed (SIGSEGV)")]
)
def test_a_dead_worker_is_reported_by_how_it_died_and_replaced(lecture_dataset, sig, message):
    from server.core.config import ModelConfig

    pool = SandboxPool(lecture_dataset, size=1, timeout_s=30)
    try:
        (worker,) = list(pool.idle.queue)
        assert worker.wait_ready(60)
        os.kill(worker.proc.pid, sig)
        job = {"config": ModelConfig(), "mode": "atomic", "step": 1, "code": DLOGPROBS}
        refused = pool.run(job)["refused"]
        assert message in refused and "restarted" in refused, refused
        assert orjson.loads(pool.run(job)["json"])["correct"]  # a fresh worker took the slot
    finally:
        pool.close()


@pytest.mark.slow  # sandbox processes started, killed and replaced
def test_a_worker_warms_up_at_the_servers_priority_then_runs_code_below_it(lecture_dataset):
    # niced during its warm-up, a worker on a busy machine took over a minute to start, and the first
    # check was refused ("the evaluator did not start")
    from server.sandbox_pool import CHECK_NICENESS

    pool = SandboxPool(lecture_dataset, size=1)
    try:
        (worker,) = list(pool.idle.queue)
        assert worker.wait_ready(60)
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert worker.started["warmed_at_niceness"] == ours
        assert os.getpriority(os.PRIO_PROCESS, worker.proc.pid) == min(19, ours + CHECK_NICENESS)
    finally:
        pool.close()


@pytest.mark.slow  # sandbox processes started, killed and replaced
def test_a_new_worker_grades_on_the_words_validated_at_start_not_the_file(lecture_dataset, tmp_path):
    from server.core.config import ModelConfig
    from server.core.data import load_dataset

    path = tmp_path / "names.txt"
    path.write_bytes(lecture_dataset.raw)
    pool = SandboxPool(load_dataset(path), size=1)
    try:
        (worker,) = list(pool.idle.queue)
        assert worker.wait_ready(60)
        with path.open("a") as f:
            f.write("zoë\n")  # a 28th character, after start-up
        os.kill(worker.proc.pid, signal.SIGKILL)  # its replacement starts after the change
        job = {"config": ModelConfig(), "mode": "atomic", "step": 1, "code": DLOGPROBS}
        assert "restarted" in pool.run(job)["refused"]
        graded = orjson.loads(pool.run(job)["json"])
        assert graded["correct"] and graded["results"][0]["expected_shape"] == [32, 27]
    finally:
        pool.close()


def test_the_whole_hostile_corpus_through_the_api(client, tmp_path):
    from ..test_sandbox import HOSTILE, repo_files

    files = repo_files()
    for code in HOSTILE:
        r = client.post("/api/check", json={"step": 4, "code": code})
        assert r.status_code in (413, 422), (code, r.text)  # 413: the 100 kB payload is over the body cap
        assert r.json()["detail"], code
        assert client.get("/api/health").status_code == 200
    assert repo_files() == files
    assert client.post("/api/check", json={"step": 1, "code": DLOGPROBS}).json()["correct"]


# --- whole cells: POST /api/check without a step ---------------------------------------------------------------


def test_the_notebooks_exercise_1_cell_is_graded_whole(client):
    from ..test_cells import EXERCISE_1_CMP
    from ..test_challenge import EXERCISE_1

    r = client.post("/api/check", json={"code": EXERCISE_1 + "\n" + EXERCISE_1_CMP})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["correct"] and body["exercise"] == "Exercise 1" and body["first_wrong"] is None
    assert [c["name"] for c in body["checks"]] == client.get("/api/meta").json()["cmp_order"]
    assert [p["text"] for p in body["printed"]] == [c["text"] for c in body["checks"]]
    assert body["printed"][0]["text"] == "logprobs        | exact: True  | approximate: True  | maxdiff: 0.0"


def test_a_wrong_cell_gets_its_first_wrong_line(client):
    from ..test_challenge import EXERCISE_4

    code = EXERCISE_4.replace("dW2 = h.T @ dlogits", "dW2 = h.T @ dlogits * n")
    body = client.post("/api/check", json={"mode": "fused", "code": code}).json()
    assert not body["correct"] and body["first_wrong"]["code"] == "dW2 = h.T @ dlogits * n"
    assert body["first_wrong"]["feedback"] == ["dW2 is 32× autograd's — n is 32: did you forget /n?"]
    assert body["first_wrong"]["diff"]["shape"] == [64, 27]
    assert [c["name"] for c in body["checks"] if not c["ok"]] == ["W2"]  # only dW2: nothing reads it


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("import os", "only assignments"),
        ("cmp('logits', dlogits, logits)\nx = 'abc'", "strings are not allowed"),
        ("for k in range(n):\n  for j in range(n):\n    for i in range(n):\n      x = k", "4,096 times in all"),
        ("dlogits = F.softmax(logits, 1)\n" * 200, "more than 1200 parts"),
    ],
)
def test_a_refused_cell_is_a_422_and_the_server_keeps_serving(client, code, reason):
    r = client.post("/api/check", json={"mode": "fused", "code": code})
    assert r.status_code == 422 and reason in r.json()["detail"], r.text
    assert client.post("/api/check", json={"step": 1, "code": DLOGPROBS}).json()["correct"]
    assert client.get("/api/state").json()["nodes"]["counts"]["cmp"]["exact"]


def test_a_cells_size_and_a_steps_size(client):
    assert client.post("/api/check", json={"code": "x" * 8001}).status_code == 422
    r = client.post("/api/check", json={"step": 1, "code": "x = 1  # " + "x" * 2100})
    assert r.status_code == 422 and "a step's code is at most 2000 characters" in r.text
    assert client.post("/api/check", json={"mode": "fused", "code": "x = 1"}).json()["checks"][0]["text"] == (
        "logits          | dlogits is not defined"
    )


@pytest.mark.parametrize(
    "code",
    ["range = chr\nx = range(111)", "range = W2 * 0", "for k in range(0):\n  W2 *= 0.0", "x = +Xb\nx *= 0"],
)
def test_the_export_refuses_what_a_check_refuses_with_the_same_422(client, code):
    checked = client.post("/api/check", json={"mode": "fused", "code": code})
    exported = client.post("/api/export", json={"mode": "fused", "code": code, "format": "py"})
    assert checked.status_code == exported.status_code == 422, exported.text
    assert exported.json()["detail"] == checked.json()["detail"]


def test_a_lone_surrogate_in_a_cmp_label_is_a_422_with_its_reason(client):
    code = "dlogits = F.softmax(logits, 1)\ncmp('\\ud800', dlogits, logits)"  # ASCII as sent, a lone surrogate as read
    r = client.post("/api/check", json={"mode": "fused", "code": code})
    assert r.status_code == 422 and "line 2: a cmp label is plain text" in r.json()["detail"], r.text
    assert "UTF-8" not in r.text
    assert client.post("/api/check", json={"step": 1, "code": DLOGPROBS}).json()["correct"]


def test_the_lectures_order_through_the_api_one_gradient_at_a_time(client):
    from server.web.schemas import CheckPublic

    first = "dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)"
    r = client.post("/api/check", json={"step": 3, "code": first})
    assert r.status_code == 200, r.text
    body = CheckPublic.model_validate(r.json()).model_dump()
    assert not body["correct"] and body["written"] == ["dcounts_sum_inv"] and body["remaining"] == ["dcounts"]
    assert body["right"] == ["dcounts_sum_inv"]
    todo = next(item for item in body["results"] if item["name"] == "dcounts")
    assert not todo["written"] and todo["cmp"] is None and "still to write" in todo["feedback"][0]
    body = client.post("/api/check", json={"step": 3, "code": first + "\ndcounts = counts_sum_inv * dprobs"}).json()
    assert body["correct"] and body["remaining"] == [] and sorted(body["right"]) == ["dcounts", "dcounts_sum_inv"]


def test_a_cell_missing_its_division_by_n_names_the_missing_line_through_the_api(client):
    from server.web.schemas import CellCheckPublic

    from ..test_challenge import EXERCISE_2

    r = client.post("/api/check", json={"mode": "fused_ce", "code": EXERCISE_2.replace("dlogits /= n\n", "")})
    assert r.status_code == 200, r.text
    first = CellCheckPublic.model_validate(r.json()).first_wrong
    assert first is not None and first.line is None and first.missing is not None
    assert (first.missing.after, first.missing.code) == (2, "dlogits /= n")
