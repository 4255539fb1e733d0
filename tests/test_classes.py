"""A teacher's classes: the store counts exactly the attempts sent, forgets a class, and keeps no code."""

from __future__ import annotations

import pytest

from server.learner.challenge import slip_of
from server.runs.classes import (
    CODE_ALPHABET,
    CODE_LENGTH,
    DAY_S,
    RATE_BURST,
    RATE_PER_S,
    Attempt,
    AttemptWriter,
    ClassStore,
    normal_code,
)


class Clock:
    """Seconds that move only when a test moves them."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rows(store: ClassStore, table: str) -> list[tuple]:
    with store._db() as db:
        return [tuple(r) for r in db.execute(f"SELECT * FROM {table}").fetchall()]


def test_a_code_is_short_and_read_off_a_board_in_any_case(tmp_path):
    from server.runs.store import RunStore

    store = ClassStore(RunStore(tmp_path / "runs.db"))
    code, token = store.create("week 3")
    assert len(code) == CODE_LENGTH and set(code) <= set(CODE_ALPHABET) and not set(code) & set("01OI")
    assert len(token) >= 32 and token not in str(rows(store, "classes"))  # only its hash is kept
    assert normal_code(f" {code[:3].lower()}-{code[3:]} ") == code
    assert normal_code("ABC") is None and normal_code("ABCDE0") is None  # too short; 0 is not in the alphabet
    assert store.authorized(code, token) and not store.authorized(code, token + "x")


A = ("makemore4", "atomic")  # the attempts' net and mode


def sent(code: str) -> list[Attempt]:
    """Known attempts of four students: what each one did, step by step, in order."""

    def at(student: str, step: int | None, correct: bool, *slips: str) -> Attempt:
        return Attempt(code, student, *A, step, correct, {k: f"the {k} line" for k in slips}, at=1_000_000.0)

    return [
        at("student-1", 1, False, "factor n"),
        at("student-2", 1, True),
        at("student-1", 1, False, "factor n"),
        at("student-3", 1, False, "sign"),
        at("student-4", 1, False, "factor n", "shape"),
        at("student-1", 1, True),
        at("student-4", 1, True),
        at("student-1", 1, True),  # again after solving it: an attempt, not a second solve
        at("student-1", None, False, "dim"),  # the whole cell
        at("student-2", None, False, "dim"),
        at("student-2", None, True),
        at("student-3", 2, False),
    ]


def test_the_summary_counts_exactly_what_was_sent(open_runs):
    store = ClassStore(open_runs(clock=Clock()))
    code, _ = store.create("week 3")
    other, _ = store.create("another class")
    assert store.record(sent(code)) == 12
    store.record(sent(other)[:3])  # another class's attempts count for it alone
    steps = {s["step"]: s for s in store.summary(code)["steps"]}
    assert list(steps) == [1, 2, None]  # by step, the whole cell last
    one = steps[1]
    assert (one["net"], one["mode"]) == A
    assert (one["attempts"], one["students"], one["solved"]) == (8, 4, 3)
    # student-1 solved it at their 3rd check, student-2 at their 1st, student-4 at their 2nd: median 2
    assert one["median_attempts_to_solve"] == 2
    assert one["slips"] == {"factor n": 3, "sign": 1, "shape": 1}
    assert one["slip_texts"]["factor n"] == "the factor n line"
    cell = steps[None]
    assert (cell["attempts"], cell["students"], cell["solved"], cell["median_attempts_to_solve"]) == (3, 2, 1, 2)
    assert cell["slips"] == {"dim": 2}
    two = steps[2]
    assert (two["attempts"], two["students"], two["solved"], two["median_attempts_to_solve"]) == (1, 1, 0, None)
    assert store.summary(other)["steps"][0]["attempts"] == 3


def test_a_deleted_class_is_gone_with_its_attempts_and_records_nothing_more(open_runs):
    store = ClassStore(open_runs(clock=Clock()))
    code, _ = store.create("week 3")
    kept, _ = store.create("kept")
    store.record(sent(code) + sent(kept)[:2])
    assert store.delete(code) and not store.delete(code)
    assert store.get(code) is None and store.summary(code) == {"steps": []}
    assert store.record(sent(code)) == 0  # attempts still on their way when it was deleted are dropped
    assert {r[1] for r in rows(store, "class_attempts")} == {kept}


def test_classes_and_attempts_older_than_class_days_are_deleted(open_runs):
    clock = Clock()
    store = ClassStore(open_runs(clock=clock))
    old, _ = store.create("last month")
    clock.now += 20 * DAY_S
    new, _ = store.create("this week")
    store.record([Attempt(new, "student-1", *A, 1, True, at=clock.now - 11 * DAY_S),
                  Attempt(new, "student-2", *A, 1, True, at=clock.now)])  # fmt: skip
    clock.now += 10.5 * DAY_S
    assert store.sweep(30) == 1  # the class made 30.5 days ago
    assert store.get(old) is None and store.get(new) is not None
    assert store.sweep(15) == 0  # the class is 10.5 days old: kept, but not its attempt of 21.5 days ago
    assert [r[3] for r in rows(store, "class_attempts")] == ["student-2"]  # the attempt 21.5 days old went


def test_a_student_records_a_burst_then_one_attempt_every_few_seconds(tmp_path):
    from server.runs.store import RunStore

    store = ClassStore(RunStore(tmp_path / "runs.db"))
    code, _ = store.create("week 3")
    clock = Clock()
    writer = AttemptWriter(store, 30, clock=clock)
    try:
        said = [writer.offer(Attempt(code, "student-1", *A, 1, False)) for _ in range(RATE_BURST + 1)]
        assert said == ["recorded"] * RATE_BURST + ["rate-limited"]
        assert writer.offer(Attempt(code, "student-2", *A, 1, False)) == "recorded"  # another student is not held
        clock.now += 1 / RATE_PER_S
        assert writer.offer(Attempt(code, "student-1", *A, 1, True)) == "recorded"
        assert writer.offer(Attempt(code, "student-1", *A, 1, True)) == "rate-limited"
        writer.flush()
        steps = store.summary(code)["steps"]
        assert (steps[0]["attempts"], steps[0]["students"], steps[0]["solved"]) == (RATE_BURST + 2, 2, 1)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("line", "kind", "kept"),
    [
        ("dlogprobs is 32× autograd's — n is 32: did you forget /n?", "factor n", None),
        ("dlogprobs is −32× autograd's: the sign is flipped, and n is 32: did you forget /n?", "sign", None),
        ("dh is autograd's with the sign flipped: a minus sign is missing, or one too many", "sign", None),
        ("dW2 is autograd's transposed (square, so its shape could not tell): (A @ B).T = B.T @ A.T", "transpose",
         None),
        ("dprobs equals the local derivative alone: multiply by dlogprobs (the chain rule)", "chain", None),
        ("dlogits reduces over the wrong dimension: line 1: F.softmax(logits, 0) → F.softmax(logits, 1) gives "
         "autograd's", "dim", "dlogits reduces over the wrong dimension"),
        ("dbnmeani: yours is (1,64), expected (64,): ... keepdim=True", "keepdim", None),
        ("dlogits differs from autograd's only at [range(n), Yb], each by -1: the line `dlogits[range(n), Yb] -= 1` "
         "is missing after line 1", "one-hot", "dlogits differs from autograd's only at [range(n), Yb], each by -1"),
        ("dprobs is right (bitwise equal to autograd's)", None, None),
    ],
)  # fmt: skip
def test_a_feedback_line_names_its_slip_and_keeps_no_code(line, kind, kept):
    slip = slip_of(line)
    assert (slip[0] if slip else None) == kind
    if slip:
        assert slip[1] == (kept or line)


def test_a_class_checking_at_once_reads_its_code_from_the_database_once(tmp_path):
    import asyncio
    import threading
    from types import SimpleNamespace

    from server.runs.store import RunStore
    from server.web.classes_routes import class_of_check, use_classes

    store = ClassStore(RunStore(tmp_path / "runs.db"))
    code, _ = store.create("week 3")
    app = SimpleNamespace(state=SimpleNamespace())
    use_classes(app, store, 30)
    reads, answer = [], threading.Event()
    exists = store.exists

    def held(asked: str) -> bool:  # the read waits until the whole class is waiting for it
        reads.append(asked)
        answer.wait()
        return exists(asked)

    store.exists = held  # type: ignore[method-assign]

    async def class_of_fifty() -> list[str]:
        request = SimpleNamespace(app=app)
        asking = [asyncio.create_task(class_of_check(request, code.lower())) for _ in range(50)]
        await asyncio.sleep(0)  # each task runs up to its wait for the read
        answer.set()
        return await asyncio.gather(*asking)

    assert asyncio.run(class_of_fifty()) == [code] * 50
    assert reads == [code]


def test_a_live_page_folds_only_the_new_attempts_into_the_same_numbers(open_runs):
    store = ClassStore(open_runs(clock=Clock()))
    code, _ = store.create("week 3")
    attempts = sent(code)
    store.record(attempts[:5])
    tally = store.tally(code)
    store.record(attempts[5:])
    read = []
    fold = tally.fold
    tally.fold = lambda rows: read.append(len(rows)) or fold(rows)  # type: ignore[method-assign]
    assert store.tally(code, tally).public() == store.summary(code)
    assert read == [len(attempts) - 5]  # the 5 folded before were not read again


def test_the_writer_holds_a_bounded_size_of_answers_and_skips_one_it_cannot_read(tmp_path, monkeypatch):
    import server.runs.classes as classes
    from server.runs.store import RunStore

    store = ClassStore(RunStore(tmp_path / "runs.db"))
    code, _ = store.create("week 3")

    def digest(answer: bytes) -> tuple[bool, dict[str, str]]:
        if answer == b"not an answer":
            raise ValueError("unreadable")
        return answer == b"right", {}

    monkeypatch.setattr(classes, "MAX_WAITING_BYTES", 20)  # the two below fit together, whenever they are read
    writer = AttemptWriter(store, 30, clock=Clock(), digest=digest)
    try:
        assert writer.offer(Attempt(code, "student-1", *A, 1, False, answer=b"x" * 21)) == "busy"  # too large
        assert writer.offer(Attempt(code, "student-1", *A, 1, False, answer=b"not an answer")) == "recorded"
        assert writer.offer(Attempt(code, "student-2", *A, 1, False, answer=b"right")) == "recorded"
        writer.flush()
        assert writer.waiting_bytes == 0 and writer.dropped == 1
        (step,) = store.summary(code)["steps"]
        assert (step["attempts"], step["students"], step["solved"]) == (1, 1, 1)  # the unreadable one is skipped
    finally:
        writer.close()
