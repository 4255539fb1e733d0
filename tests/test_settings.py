"""Settings: the command line is built from the dataclass; --runs-db is a path or a sqlite:/// URL."""

from __future__ import annotations

import os
from dataclasses import fields

import pytest

from server.__main__ import build_parser
from server.runs.store import Limits, StoreURLError, store_path
from server.runs.stores import open_store, redacted, without_password
from server.settings import Settings, field_comments, from_options
from server.web.guards import answered_hosts

# one row per field: the option, what is typed, and the value the field takes (not read from the code under test)
OPTIONS = [
    ("--host", "0.0.0.0", "host", "0.0.0.0"),
    ("--port", "8001", "port", 8001),
    ("--data", "words.txt", "data", "words.txt"),
    ("--workers", "3", "workers", 3),
    ("--cache-size", "64", "cache_size", 64),
    ("--cache-mb", "100", "cache_mb", 100),
    ("--runs-db", "sqlite:///runs.db", "runs_db", "sqlite:///runs.db"),
    ("--max-runs", "0", "max_runs", 0),
    ("--max-queued", "5", "max_queued", 5),
    ("--keep-runs", "3", "keep_runs", 3),
    ("--watch-grace", "2.5", "watch_grace", 2.5),
    ("--check-workers", "0", "check_workers", 0),
    ("--max-streams", "7", "max_streams", 7),
    ("--max-runs-per-client", "5", "max_runs_per_client", 5),
    ("--max-run-cpu", "60.5", "max_run_cpu", 60.5),
    ("--admin-token", "teacher-secret", "admin_token", "teacher-secret"),
    ("--max-streams-per-client", "3", "max_streams_per_client", 3),
    ("--allowed-hosts", "a.example, .b.example,", "allowed_hosts", ("a.example", ".b.example")),
    ("--forwarded-allow-ips", "10.0.0.1,10.1.0.0/16", "forwarded_allow_ips", ("10.0.0.1", "10.1.0.0/16")),
    ("--max-connections-per-client", "32", "max_connections_per_client", 32),
    ("--head-timeout", "2.5", "head_timeout", 2.5),
    ("--check-timeout", "30", "check_timeout", 30.0),
    ("--net-file", "my,net.py", "net_file", ("my,net.py",)),
    ("--class-days", "7.5", "class_days", 7.5),
]


def parse(*argv: str) -> Settings:
    return from_options(build_parser().parse_args(argv))


def test_an_empty_command_line_is_the_default_settings():
    assert parse() == Settings()
    # the defaults the README documents
    assert (Settings().port, Settings().max_runs, Settings().max_queued, Settings().keep_runs) == (8000, 2, 8, 500)


def test_net_file_may_be_given_once_for_each_file():
    assert parse("--net-file", "a.py", "--net-file", "b.py").net_file == ("a.py", "b.py")


def test_every_field_is_an_option_in_the_table():
    assert sorted(name for _, _, name, _ in OPTIONS) == sorted(f.name for f in fields(Settings))


@pytest.mark.parametrize(("flag", "text", "name", "value"), OPTIONS)
def test_an_option_changes_its_field_and_no_other(flag, text, name, value):
    settings = parse(flag, text)
    changed = {f.name for f in fields(Settings) if getattr(settings, f.name) != getattr(Settings(), f.name)}
    assert changed == {name}
    assert getattr(settings, name) == value and type(getattr(settings, name)) is type(value)


def test_help_is_each_fields_comment_with_its_default():
    comments = field_comments()
    assert set(comments) == {f.name for f in fields(Settings)} and all(comments.values())
    text = " ".join(build_parser().format_help().split())  # argparse wraps lines
    assert "ended runs kept, the newest; older ones are deleted (0: keep all) (default 500)" in text
    # a comment continued on the lines under its field
    assert "learners' code for challenges; 0 turns them off (default 2)" in text
    assert "'.example.org' takes its subdomains too, '*' any name" in text
    assert "http://127.0.0.1:8000" in text


def test_the_runs_limits_are_the_settings():
    limits = Limits.of(parse("--max-runs", "1", "--max-queued", "4", "--watch-grace", "9", "--keep-runs", "6"))
    assert limits == Limits(max_running=1, max_queued=4, watch_grace_s=9.0, keep_ended=6)
    assert Limits() == Limits.of(Settings())


def test_answered_hosts():
    assert answered_hosts(Settings()) == ("localhost", "127.0.0.1", "::1")
    assert answered_hosts(parse("--host", "0.0.0.0")) == ("localhost", "127.0.0.1", "::1")
    named = parse("--host", "10.0.0.5", "--allowed-hosts", "class.example,localhost")
    assert answered_hosts(named) == ("localhost", "127.0.0.1", "::1", "10.0.0.5", "class.example")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("runs.db", "runs.db"),
        ("sqlite:///runs.db", "runs.db"),  # three slashes: relative, as SQLAlchemy reads it
        ("sqlite:///sub/runs.db", "sub/runs.db"),
    ],
)
def test_a_runs_db_path_or_sqlite_url_is_relative_to_the_working_directory(tmp_path, monkeypatch, url, path):
    monkeypatch.chdir(tmp_path)
    assert store_path(url) == str(tmp_path / path)


def test_a_sqlite_url_with_four_slashes_is_absolute(tmp_path):
    url = f"sqlite:///{tmp_path}/runs.db"  # tmp_path starts with its own slash
    assert url.startswith("sqlite:////")
    store = open_store(url, Limits(keep_ended=3))
    assert str(store.path) == f"{tmp_path}/runs.db" and os.path.isfile(store.path)
    assert store.limits.keep_ended == 3


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql+pymysql://u@h/runs", "mysql+pymysql:// databases are not supported"),
        ("sqlite://", "names a file"),
        ("sqlite:///", "names a file"),
        ("sqlite://host/runs.db", "names a file"),
    ],
)
def test_other_urls_are_refused(tmp_path, monkeypatch, url, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreURLError, match=message.replace("+", r"\+")):
        open_store(url)
    assert list(tmp_path.iterdir()) == []  # nothing was created on the way


def test_a_postgresql_url_goes_to_every_process_as_given(postgres_server):
    from server.runs.postgres import PostgresRunStore

    url = postgres_server.new_database()
    assert store_path(url) == url and store_path("postgres://u@h/db") == "postgres://u@h/db"
    store = open_store(url, Limits(keep_ended=3))
    try:
        assert isinstance(store, PostgresRunStore) and store.url == url and store.limits.keep_ended == 3
    finally:
        store.close()


def test_an_unreachable_postgresql_is_a_message_at_start(postgres_server):
    url = postgres_server.url("no_such_database")
    with pytest.raises(ConnectionError, match="no_such_database"):
        open_store(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ann:s3cret@db.example/runs", "postgresql://ann:***@db.example/runs"),
        (
            "postgres://ann:p%40ss@db.example:5432/runs?sslmode=require",
            "postgres://ann:***@db.example:5432/runs?sslmode=require",
        ),
        ("postgresql://ann@db.example/runs", "postgresql://ann@db.example/runs"),
        ("postgresql://:only@db.example/runs", "postgresql://:***@db.example/runs"),
        ("/srv/runs.sqlite3", "/srv/runs.sqlite3"),
    ],
)
def test_a_urls_password_is_redacted(url, shown):
    assert redacted(url) == shown


def test_an_error_about_a_url_loses_its_password_in_every_spelling():
    url = "postgresql://ann:p%40ss@db.example/runs"
    text = f'invalid dsn: "{url}"; password "p@ss" rejected (p%40ss)'
    assert "p@ss" not in without_password(text, url) and "p%40ss" not in without_password(text, url)
