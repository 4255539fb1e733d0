"""Shared fixtures: the lecture's own names file (from ../shared) and the embedded one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.core.data import DEFAULT_DATA, Dataset, load_dataset

from .browser import base_url, browser, page, playwright, profile, profile_dir  # noqa: F401 -- the browser tests' fixtures, one server each process

ROOT = Path(__file__).resolve().parent.parent
LECTURE_DATA = ROOT.parent / "shared" / "data" / "names.txt"

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def lecture_dataset() -> Dataset:
    """The lecture's names.txt; its absence is a failure, not a skip: CI has ../shared."""
    assert LECTURE_DATA.is_file(), f"the lecture's data file is missing: {LECTURE_DATA}"
    return load_dataset(LECTURE_DATA)


@pytest.fixture(scope="session")
def embedded_dataset() -> Dataset:
    return load_dataset(DEFAULT_DATA)


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session (tests/postgres.py); each test asks it for a database of its own."""
    from .postgres import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def runs_url(request, tmp_path):
    """A new, empty runs database: a SQLite file, or a database on the tests' PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "runs.db")
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture()
def open_runs(runs_url):
    """open_runs(limits, clock): a store on this test's database (SQLite or PostgreSQL), closed after the test."""
    from server.runs.store import Limits
    from server.runs.stores import open_store

    stores = []

    def make(limits=None, clock=None, url=None):
        store = open_store(url or runs_url, limits or Limits(), **({"clock": clock} if clock else {}))
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


# The longest tests (each 20-70 s in a serial run), started first in this order: run in parallel (make test), one
# that started last would finish last, and the whole run would wait for it alone. The rest keep their files' order.
LONGEST_FIRST = (
    "test_lecture_exercise_4_result",
    "test_a_1500_step_run_trains_with_the_packs_declared_backward",
    "test_three_workers_drain_six_queued_runs_one_at_a_time_each",
    "test_challenge_walk_of_exercise_1_never_shows_an_unsolved_steps_answer",
    "test_the_whole_cell_editor_prints_the_notebooks_cmp_lines_and_the_first_wrong_line",
    "test_the_page_opens_at_the_files_sizes_and_the_check_accepts_every_steps_right_line",
    "test_training_with_your_own_backward",
    "test_runs_with_the_learners_own_backward",
    "test_restart_keeps_finished_runs_and_interrupts_the_running_one",
    "test_finished_run_results_and_its_net_in_the_explorer",
    "test_a_teacher_watches_two_students_live_without_their_code",
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """The call's report on the item (item.report_call): the page fixture keeps a failed test's screenshot."""
    report = yield
    if report.when == "call":
        item.report_call = report  # type: ignore[attr-defined]
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests on the PostgreSQL server are marked `postgres` (make test-fast leaves them out); the longest go first,
    the modules of fast tests last."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if "postgres_server" in item.fixturenames or (callspec and "postgresql" in callspec.params.values()):
            item.add_marker(pytest.mark.postgres)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    # then the modules with slow or browser tests, then the rest: a run in parallel ends on the short tests, which
    # even out how the processes finish (a module of 5-20 s tests handed out last kept one process busy alone)
    heavy = {item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("browser")}
    items.sort(key=lambda item: (rank.get(item.originalname, len(rank)), item.path not in heavy))  # stable


@pytest.hookimpl(optionalhook=True)  # xdist's hook: a run without xdist (-p no:xdist) does not know it
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """make test's processes each hold two tests, no more: xdist's own load scheduling hands a process that finishes
    short tests many more at a time, and near the end one process was left with a queue of long ones."""
    from xdist.scheduler import LoadScheduling

    class TwoAtATime(LoadScheduling):
        def __init__(self, config: pytest.Config, log=None) -> None:
            super().__init__(config, log)
            self.maxschedchunk = 2  # the first hand-out: two each

        def check_schedule(self, node, duration: float = 0) -> None:
            if node.shutting_down:
                return
            if not self.pending:
                node.shutdown()
                return
            wanted = 2 - len(self.node2pending[node])
            if wanted > 0:
                self._send_tests(node, wanted)

    return TwoAtATime(config, log)
