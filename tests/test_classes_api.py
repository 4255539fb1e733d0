"""A teacher's class over HTTP: students' real checks are counted for the teacher's token alone, and no code is kept."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient

from server.runs.classes import ClassStore
from server.runs.stores import open_store
from server.settings import Settings
from server.web.app import create_app

# the lecture's line for step 1, a slip of it (no /n), and Exercise 2's three lines with softmax over the wrong dim
RIGHT = "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"
NO_N = "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0"
WRONG_DIM = "dlogits = F.softmax(logits, 0)\ndlogits[range(n), Yb] -= 1\ndlogits /= n"
CODES = (RIGHT, NO_N, WRONG_DIM)
ALICE, BOB = "alice-browser-1", "bob-browser-22"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, lecture_dataset, tmp_path_factory):
    """An app with one check worker on a runs database of its own (SQLite, or PostgreSQL)."""
    if request.param == "sqlite":
        url = str(tmp_path_factory.mktemp("classes") / "runs.db")
    else:
        url = request.getfixturevalue("postgres_server").new_database()
    runs = open_store(url)
    app = create_app(lecture_dataset, Settings(check_workers=1), runs, schedule=False)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        yield client, app, url
    runs.close()


def check(client, code: str, student: str, body: dict) -> object:
    r = client.post("/api/check", json={**body, "class": code, "student": student})
    return r


def test_a_class_counts_its_students_checks_for_its_teacher_only(server):
    client, app, url = server
    made = client.post("/api/classes", json={"title": "week 3"})
    assert made.status_code == 201, made.text
    code, token = made.json()["code"], made.json()["teacher_token"]
    assert client.get(f"/api/classes/{code}/about").json() == {"code": code, "title": "week 3"}

    said = [
        check(client, code.lower(), ALICE, {"step": 1, "code": NO_N}),  # as typed off the board
        check(client, code, ALICE, {"step": 1, "code": RIGHT}),
        check(client, code, BOB, {"step": 1, "code": NO_N}),
        check(client, code, BOB, {"step": 1, "code": NO_N}),
        check(client, code, BOB, {"mode": "fused_ce", "code": WRONG_DIM}),  # a whole cell
    ]
    assert [r.status_code for r in said] == [200] * 5, [r.text for r in said]
    assert [r.headers["X-Class-Attempt"] for r in said] == ["recorded"] * 5
    assert [r.json()["correct"] for r in said] == [False, True, False, False, False]
    app.state.class_writer.flush()

    assert client.get(f"/api/classes/{code}").status_code == 401
    assert client.get(f"/api/classes/{code}").headers["WWW-Authenticate"] == "Bearer"
    assert client.get(f"/api/classes/{code}", headers={"Authorization": f"Bearer {token}x"}).status_code == 403
    other = client.post("/api/classes", json={"title": "another"}).json()
    teacher = {"Authorization": f"Bearer {other['teacher_token']}"}
    assert client.get(f"/api/classes/{code}", headers=teacher).status_code == 403  # another class's teacher

    for path in (f"/api/classes/{code}/events", f"/api/classes/{code}/summary.csv"):  # the stream, the CSV: alike
        assert client.get(path).status_code == 401
        assert client.get(path, headers=teacher).status_code == 403

    auth = {"Authorization": f"Bearer {token}"}
    r = client.get(f"/api/classes/{code}", headers=auth)
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["title"] == "week 3"
    steps = {(s["mode"], s["step"]): s for s in summary["steps"]}
    one = steps[("atomic", 1)]
    assert (one["attempts"], one["students"], one["solved"], one["median_attempts_to_solve"]) == (4, 2, 1, 2)
    assert one["slips"] == {"factor n": 3}
    assert one["slip_texts"]["factor n"] == "dlogprobs is 32× autograd's — n is 32: did you forget /n?"
    cell = steps[("fused_ce", None)]
    assert (cell["attempts"], cell["students"], cell["solved"]) == (1, 1, 0) and list(cell["slips"]) == ["dim"]
    assert cell["slip_texts"]["dim"] == "dlogits reduces over the wrong dimension"

    exported = client.get(f"/api/classes/{code}/summary.csv", headers=auth)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(exported.text)))
    row = next(r for r in table if r["mode"] == "atomic")
    assert (row["attempts"], row["students"], row["solved"], row["slips"]) == ("4", "2", "1", "factor n=3")
    assert next(r for r in table if r["mode"] == "fused_ce")["step"] == ""

    # the database holds no code (nor the token): every column of every row of both tables
    store = ClassStore(app.state.runs)
    with store._db() as db:
        stored = repr([tuple(r) for t in ("classes", "class_attempts") for r in db.execute(f"SELECT * FROM {t}")])
    for code_text in CODES:
        for line in code_text.split("\n"):
            assert line not in stored
    assert "softmax(logits, 0)" not in stored and token not in stored

    assert client.delete(f"/api/classes/{code}").status_code == 401
    assert client.delete(f"/api/classes/{code}", headers=auth).status_code == 204
    assert client.get(f"/api/classes/{code}", headers=auth).status_code == 404
    assert check(client, code, ALICE, {"step": 1, "code": RIGHT}).status_code == 404
    app.state.class_writer.flush()
    with store._db() as db:
        left = db.execute("SELECT count(*) FROM class_attempts WHERE class_code = ?", (code,)).fetchone()[0]
    assert left == 0


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"class": "ZZZZZZ", "student": ALICE}, 404, "no class 'ZZZZZZ'"),
        ({"class": "not a code", "student": ALICE}, 404, "check the code on the board"),
        ({"class": "ZZZZZZ"}, 422, "student's anonymous id"),
        ({"class": "ZZZZZZ", "student": "a b"}, 422, "student"),
    ],
)
def test_a_bad_class_is_a_clear_4xx_and_records_nothing(server, body, status, reason):
    client, app, _ = server
    r = client.post("/api/check", json={"step": 1, "code": RIGHT, **body})
    assert r.status_code == status and reason in r.text, r.text
    app.state.class_writer.flush()
    with ClassStore(app.state.runs)._db() as db:
        assert db.execute("SELECT count(*) FROM class_attempts WHERE class_code = 'ZZZZZZ'").fetchone()[0] == 0


def test_a_check_without_a_class_records_nothing_and_says_nothing(server):
    client, app, _ = server
    with ClassStore(app.state.runs)._db() as db:
        before = db.execute("SELECT count(*) FROM class_attempts").fetchone()[0]
    r = client.post("/api/check", json={"step": 1, "code": RIGHT})
    assert r.status_code == 200 and "X-Class-Attempt" not in r.headers
    app.state.class_writer.flush()
    with ClassStore(app.state.runs)._db() as db:
        assert db.execute("SELECT count(*) FROM class_attempts").fetchone()[0] == before


@pytest.mark.parametrize("title", ["", "x" * 121])
def test_a_class_needs_a_title_of_sensible_length(server, title):
    client, _, _ = server
    r = client.post("/api/classes", json={"title": title})
    assert r.status_code == 422 and "title" in r.text


def test_a_server_started_deletes_the_classes_older_than_its_class_days(embedded_dataset, tmp_path):
    from server.runs.store import RunStore

    now = [1_000_000.0]
    runs = RunStore(tmp_path / "runs.db", clock=lambda: now[0])
    old, _ = ClassStore(runs).create("last term")
    now[0] += 2.5 * 86400
    recent, _ = ClassStore(runs).create("this week")
    create_app(embedded_dataset, Settings(check_workers=0, class_days=2), runs, schedule=False)
    store = ClassStore(runs)
    assert store.get(old) is None and store.get(recent) is not None


def test_a_class_pages_stream_counts_toward_the_clients_streams(embedded_dataset, tmp_path):
    runs = open_store(str(tmp_path / "runs.db"))
    app = create_app(embedded_dataset, Settings(check_workers=0, max_streams_per_client=1), runs, schedule=False)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        made = client.post("/api/classes", json={"title": "week 3"}).json()
        app.state.feeds.hold("testclient")  # a run's stream of this client, open already
        auth = {"Authorization": f"Bearer {made['teacher_token']}"}
        r = client.get(f"/api/classes/{made['code']}/events", headers=auth)
        assert r.status_code == 429 and "event streams open" in r.text and r.headers["Retry-After"]
        app.state.feeds.release("testclient")
        assert app.state.feeds.open == 0  # the refused stream holds nothing
