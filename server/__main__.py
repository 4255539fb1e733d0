"""Backprop Explorer: a web app that steps through Karpathy's "becoming a backprop ninja" lecture.

It serves a page (http://127.0.0.1:8000 by default) that runs the lecture's MLP forward, then its
backward pass op by op, manual gradients beside autograd's; challenges grade your own gradient
code, and Exercise 4's training runs (/train.html) train in training processes, kept in SQLite.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from dataclasses import replace

from .settings import add_options, from_options


def build_parser() -> argparse.ArgumentParser:
    """The command line: one option per field of Settings."""
    parser = argparse.ArgumentParser(
        prog="backprop-explorer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: backprop-explorer --port 8001, then open http://127.0.0.1:8001",
    )
    add_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    settings = from_options(build_parser().parse_args(argv))

    from .assets import missing

    if missing():
        print(f"backprop-explorer: the installation lacks its page or data: {', '.join(missing())}", file=sys.stderr)
        return 2
    # validate the data before starting anything: a bad file is a message, not a traceback
    from .data import DEFAULT_DATA, DataError, load_dataset

    data = os.path.abspath(settings.data or DEFAULT_DATA)
    try:
        dataset = load_dataset(data)  # read once: every process gets these bytes, not the file
    except DataError as e:
        print(f"backprop-explorer: cannot use the data file: {e}", file=sys.stderr)
        return 2
    from .runs import StoreURLError, store_path
    from .stores import open_store

    try:
        runs_db = store_path(settings.runs_db)
    except StoreURLError as e:
        print(f"backprop-explorer: cannot use the runs database {settings.runs_db}: {e}", file=sys.stderr)
        return 2
    try:
        open_store(runs_db)
    except (OSError, sqlite3.Error) as e:
        print(f"backprop-explorer: cannot use the runs database {runs_db}: {e}", file=sys.stderr)
        return 2
    from .web.guards import EVERY_INTERFACE

    if settings.host in EVERY_INTERFACE and not settings.allowed_hosts:
        print(
            "backprop-explorer: listening on every interface, answering to localhost names only: add the name or "
            "address others type with --allowed-hosts",
            file=sys.stderr,
        )
    settings = replace(settings, data=data, runs_db=runs_db)  # every web process sees the same files

    from .web_processes import serve

    options = {
        "app": "server.web.factory:app_from_handed",
        "factory": True,
        "log_level": "warning",
        "access_log": False,  # a line per request costs time a class's load needs
        # asyncio's loop, not uvloop: libuv accepts one connection per loop iteration, so while a busy
        # process works through a round of requests, a class's new connections wait a round each
        # (bench/api_bench.py, 100 students: first-request p99 0.6-0.7 s with uvloop, 0.1 s with asyncio)
        "loop": "asyncio",
        "http": "httptools",
    }
    from .web.factory import hand_over

    handed = (data, dataset.raw, dataset.sha256)
    return serve(settings.host, settings.port, settings.workers, options, setup=(hand_over, (settings, handed)))


if __name__ == "__main__":
    sys.exit(main())
