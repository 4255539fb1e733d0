"""A runs store opened from its URL: a SQLite file (server/runs/store.py) or a PostgreSQL database
(server/runs/postgres.py). The one place that knows both, so that neither store imports the other."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable

import psycopg

from .store import Limits, RunStore, is_postgres, store_path

# what a store raises when its database fails under a running server (corrupted, removed, unreachable)
STORE_ERRORS: tuple[type[Exception], ...] = (sqlite3.DatabaseError, psycopg.OperationalError)

# a URL's credentials: scheme://user:password@ (the password is anything up to the last @ before the path)
_CREDENTIALS = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):(?P<password>[^/]*)@")


def redacted(url: str) -> str:
    """`url` as a message or a log may show it: a password becomes ***."""
    return _CREDENTIALS.sub(lambda m: f"{m['head']}:***@", url, count=1)


def without_password(text: str, url: str) -> str:
    """`text` (an error message about `url`) with the URL's password taken out wherever it appears."""
    match = _CREDENTIALS.match(url)
    if not match or not match["password"]:
        return text
    text = text.replace(url, redacted(url))
    from urllib.parse import unquote

    for secret in {match["password"], unquote(match["password"])}:  # as typed, and as a driver decodes it
        text = text.replace(secret, "***")
    return text


def open_store(url: str, limits: Limits | None = None, clock: Callable[[], float] = time.time) -> RunStore:
    """The runs store at `url` (see store_path): a SQLite file, or a PostgreSQL database. An error's message never
    carries the URL's password."""
    url, limits = store_path(url), limits or Limits()
    if is_postgres(url):
        from .postgres import PostgresRunStore  # psycopg loads only where PostgreSQL is used

        try:
            return PostgresRunStore(url, limits, clock)
        except Exception as e:
            e.args = tuple(without_password(a, url) if isinstance(a, str) else a for a in e.args)
            raise
    return RunStore(url, limits, clock)
