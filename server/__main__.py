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

from .settings import Settings, add_options, from_options


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


def raise_fd_limit() -> None:
    """The soft limit on open files raised to the hard one: each connection holds one (Debian's soft limit, 1024,
    is a class's worth)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # some systems cap it lower than they say: keep the soft limit
            pass


def ready_line(host: str, port: int, data: str | None, runs_db: str) -> str:
    """The line the server prints once it answers: where, with which data and which runs database."""
    from .runs.stores import redacted

    shown = f"[{host}]" if ":" in host else host
    return f"Backprop Explorer on http://{shown}:{port}/ (data: {data or 'embedded'}, runs: {redacted(runs_db)})"


def main(argv: list[str] | None = None) -> int:
    from .signals import note_stop_signals

    note_stop_signals()
    settings = from_options(build_parser().parse_args(argv))
    try:
        return _start(settings)
    except KeyboardInterrupt:  # Ctrl-C before the server took the signal over, or the one it re-raises on its way out
        return 130


def _start(settings: Settings) -> int:
    raise_fd_limit()

    from .assets import missing

    if missing():
        print(f"backprop-explorer: the installation lacks its page or data: {', '.join(missing())}", file=sys.stderr)
        return 2
    # validate the data before starting anything: a bad file is a message, not a traceback
    from .core.data import DEFAULT_DATA, DataError, load_dataset

    data = os.path.abspath(settings.data or DEFAULT_DATA)
    try:
        dataset = load_dataset(data)  # read once: every process gets these bytes, not the file
    except DataError as e:
        print(f"backprop-explorer: cannot use the data file: {e}", file=sys.stderr)
        return 2
    if settings.net_file:
        from .net.netfile import NetFileError
        from .net.packs import add_net_file, hand_over_net_files

        handed = []
        for given in settings.net_file:
            net_file = os.path.abspath(given)
            try:
                with open(net_file, encoding="utf-8") as f:
                    source = f.read()
                add_net_file(net_file, source)
            except (OSError, UnicodeDecodeError) as e:
                print(f"backprop-explorer: cannot read the network file {net_file}: {e}", file=sys.stderr)
                return 2
            except NetFileError as e:
                print(f"backprop-explorer: cannot use the network file {net_file}: {e}", file=sys.stderr)
                return 2
            handed.append((net_file, source))
        hand_over_net_files(handed)  # the web, check and training processes read these texts, not the files
    from .runs.store import StoreURLError, store_path
    from .runs.stores import open_store, redacted, without_password

    try:
        runs_db = store_path(settings.runs_db)
    except StoreURLError as e:
        why = without_password(str(e), settings.runs_db)
        print(f"backprop-explorer: cannot use the runs database {redacted(settings.runs_db)}: {why}", file=sys.stderr)
        return 2
    try:
        open_store(runs_db)
    except (OSError, sqlite3.Error) as e:
        why = without_password(str(e), runs_db)
        print(f"backprop-explorer: cannot use the runs database {redacted(runs_db)}: {why}", file=sys.stderr)
        return 2
    from .web.guards import EVERY_INTERFACE

    if settings.host in EVERY_INTERFACE and not settings.allowed_hosts:
        print(
            "backprop-explorer: listening on every interface, answering to localhost names only: add the name or "
            "address others type with --allowed-hosts",
            file=sys.stderr,
        )
    shown_data = None if settings.data is None else data  # the ready line says "embedded" for the default
    settings = replace(settings, data=data, runs_db=runs_db)  # every web process sees the same files

    from .web.processes import serve

    options = {
        "app": "server.web.factory:app_from_handed",
        "factory": True,
        "log_level": "warning",
        "access_log": False,  # a line per request costs time a class's load needs
        # asyncio's loop, not uvloop: libuv accepts one connection per loop iteration, so while a busy
        # process works through a round of requests, a class's new connections wait a round each
        # (bench/api_bench.py, 100 students: first-request p99 0.6-0.7 s with uvloop, 0.1 s with asyncio)
        "loop": "asyncio",
        # httptools, with a deadline for a request's head and a cap on a client's connections
        "http": "server.web.connections:GuardedHttpToolsProtocol",
        # X-Forwarded-For and -Proto from the proxies named, and from no one else (uvicorn trusts loopback by
        # default: any local program could then pass for as many clients as it likes)
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": ",".join(settings.forwarded_allow_ips),
    }
    from .signals import end_if_noted
    from .web.factory import hand_over

    handed = (data, dataset.raw, dataset.sha256)

    def say_ready(port: int) -> None:
        print(ready_line(settings.host, port, shown_data, runs_db), flush=True)

    setup = (hand_over, (settings, handed))
    end_if_noted()  # a Ctrl-C during the imports above, swallowed by a library: end here, not serve for good
    return serve(settings.host, settings.port, settings.workers, options, setup=setup, on_ready=say_ready)


if __name__ == "__main__":
    sys.exit(main())
