"""A runs store opened from its URL: a SQLite file (server/runs.py) or a PostgreSQL database
(server/runs_postgres.py). The one place that knows both, so that neither store imports the other."""

from __future__ import annotations

import time
from collections.abc import Callable

from .runs import Limits, RunStore, is_postgres, store_path


def open_store(url: str, limits: Limits | None = None, clock: Callable[[], float] = time.time) -> RunStore:
    """The runs store at `url` (see store_path): a SQLite file, or a PostgreSQL database."""
    url, limits = store_path(url), limits or Limits()
    if is_postgres(url):
        from .runs_postgres import PostgresRunStore  # psycopg loads only where PostgreSQL is used

        return PostgresRunStore(url, limits, clock)
    return RunStore(url, limits, clock)
