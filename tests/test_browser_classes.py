"""A teacher's class in a real browser: the teacher's page and two students, each in a browser context of their own,
against the real server on SQLite and on PostgreSQL."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from .live_server import live_server
from .test_browser import LECTURE_DATA, serious_violations

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)  # a cold sandbox's first check may take many seconds on a busy machine

RIGHT = "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"
NO_N = "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0"
STEP_1 = "[data-testid=class-step][data-mode=atomic][data-step='1']"  # Exercise 1's first step on the class page


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def class_server(request, tmp_path_factory):
    """The real server with one check worker, on a SQLite file or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        db = str(tmp_path_factory.mktemp("classes") / "runs.sqlite3")
    else:
        db = request.getfixturevalue("postgres_server").new_database()
    options = ("--data", str(LECTURE_DATA), "--check-workers", "1", "--check-timeout", "60", "--runs-db", db)
    with live_server(*options) as url:
        yield url


@pytest.fixture
def contexts(browser):
    """New browser contexts (a teacher's, each student's): no storage shared; no page error in any."""
    made, errors = [], []

    def new(width: int = 1280) -> Page:
        context = browser.new_context(viewport={"width": width, "height": 800})
        made.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        return page

    yield new
    for context in made:
        context.close()
    assert not errors, errors


def check(page: Page, code: str, said: str) -> None:
    """Write the step's code in challenge mode, check it, and wait for the feedback that says `said`."""
    page.get_by_test_id("challenge-code").fill(code)
    page.get_by_test_id("challenge-check").click()
    expect(page.get_by_test_id("challenge-feedback")).to_contain_text(said)


def open_challenge(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    page.get_by_test_id("challenge-toggle").check()
    expect(page.get_by_test_id("challenge-task")).to_contain_text("dlogprobs")


def test_a_teacher_watches_two_students_live_without_their_code(class_server, contexts):
    base = class_server
    teacher = contexts()
    teacher.goto(f"{base}/class.html")
    teacher.get_by_test_id("new-class-title").fill("Backprop week 3")
    teacher.get_by_test_id("new-class-start").click()
    expect(teacher.get_by_test_id("class-title")).to_have_text("Backprop week 3")
    code = teacher.get_by_test_id("class-code").inner_text()
    token = teacher.get_by_test_id("class-token").inner_text()
    assert len(code) == 6 and token not in teacher.url  # the token stays out of the URL
    expect(teacher.get_by_test_id("class-empty")).to_be_visible()
    expect(teacher.get_by_test_id("class-live")).to_have_text("live")

    # a student opens the class's link: the notice says what is shared and what is not, before anything is
    alice = contexts()
    open_challenge(alice, f"{base}/?class={code}&step=0")
    notice = alice.get_by_test_id("class-notice")
    expect(notice).to_contain_text("Backprop week 3")
    expect(notice).to_contain_text("never sees your code and your name")
    expect(notice).to_contain_text("whether it is right, the kind of slip")
    alice.get_by_test_id("class-join").click()
    expect(notice).to_contain_text("In class Backprop week 3")
    check(alice, NO_N, "did you forget /n?")
    check(alice, RIGHT, "is right")

    # another types the code in the page
    bob = contexts(width=390)
    open_challenge(bob, f"{base}/?step=0")
    bob.get_by_test_id("class-code").fill(code.lower())
    bob.get_by_test_id("class-go").click()
    bob.get_by_test_id("class-join").click()
    expect(bob.get_by_test_id("class-notice")).to_contain_text(f"In class Backprop week 3 ({code})")
    expect(bob.get_by_test_id("class-form")).to_be_hidden()  # one class at a time
    with bob.expect_request("**/api/check") as sent:
        check(bob, NO_N, "did you forget /n?")
    body = json.loads(sent.value.post_data or "{}")
    assert body["class"] == code and len(body["student"]) >= 8 and "name" not in body

    # the teacher's page has it, live: 2 students checked step 1, 1 solved it, after 2 checks; the slip and its line
    step = teacher.locator(STEP_1)
    expect(step.get_by_test_id("class-step-numbers")).to_have_text("1 of 2 solved · 3 checks · median 2 to solve")
    expect(step.get_by_test_id("class-slip")).to_contain_text("factor n (2×)")
    slip = step.get_by_test_id("class-slip")
    expect(slip).to_contain_text("dlogprobs is 32× autograd's — n is 32: did you forget /n?")
    expect(teacher.get_by_test_id("class-slowest")).to_contain_text("1 of 2 not solved yet")
    # the step is named by the gradient it asks for, as the students' task said it ("Write dlogprobs")
    expect(step).to_contain_text("step 1 · dlogprobs")
    assert not serious_violations(teacher)

    # the teacher on another browser: the page asks for the token (a wrong one is refused), then shows the class
    elsewhere = contexts(width=900)
    elsewhere.goto(f"{base}/class.html?code={code}")
    elsewhere.get_by_test_id("token-input").fill(token + "x")
    elsewhere.get_by_test_id("token-submit").click()
    expect(elsewhere.get_by_test_id("error")).to_have_text("that is not this class's teacher token")
    elsewhere.get_by_test_id("token-input").fill(token)
    elsewhere.get_by_test_id("token-submit").click()
    numbers = elsewhere.locator(STEP_1).get_by_test_id("class-step-numbers")
    expect(numbers).to_have_text("1 of 2 solved · 3 checks · median 2 to solve")
    assert token not in elsewhere.url

    # a student who left the class checks as anyone does: the class is not named
    alice.get_by_test_id("class-leave").click()
    expect(alice.get_by_test_id("class-notice")).to_be_hidden()
    with alice.expect_request("**/api/check") as sent:
        check(alice, RIGHT, "is right")
    assert "class" not in json.loads(sent.value.post_data or "{}")

    # the teacher deletes the class: gone for its token, and for the students' checks
    teacher.once("dialog", lambda dialog: dialog.accept())
    teacher.get_by_test_id("class-delete").click()
    teacher.wait_for_url(f"{base}/class.html")
    status = teacher.evaluate(
        "([code, token]) => fetch(`/api/classes/${code}`, {headers: {Authorization: `Bearer ${token}`}})"
        ".then((r) => r.status)",
        [code, token],
    )
    assert status == 404
    # a student still in it: the check names it, is a 404, and is sent again as anyone's; the notice says why
    with bob.expect_response("**/api/check") as answered:
        check(bob, RIGHT, "is right")
    assert answered.value.status == 404
    expect(bob.get_by_test_id("class-notice")).to_contain_text(f"The class {code} no longer exists")
    assert bob.evaluate("localStorage.getItem('backprop-explorer:class')") is None
