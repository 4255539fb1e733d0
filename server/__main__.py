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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="backprop-explorer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: backprop-explorer --port 8001, then open http://127.0.0.1:8001",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--data", default=None, help="names file, one word per line (default: the embedded data/names.txt)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes: one per core for a class (each has its own cache)",
    )
    parser.add_argument("--cache-size", type=int, default=512, help="backward passes kept per process")
    parser.add_argument(
        "--cache-mb", type=int, default=512, help="memory those passes may hold per process, in MiB (default 512)"
    )
    parser.add_argument("--runs-db", default=None, help="SQLite file of the training runs (in ~/.backprop-explorer/)")
    parser.add_argument("--max-runs", type=int, default=2, help="training runs at once, one process each (default 2)")
    parser.add_argument("--max-queued", type=int, default=8, help="runs waiting beyond those; more get 429 (default 8)")
    parser.add_argument(
        "--keep-runs", type=int, default=500, help="ended runs kept, the newest; older ones are deleted (0: keep all)"
    )
    parser.add_argument(
        "--watch-grace", type=float, default=30.0,
        help="seconds a run trains on after its page closed, unless started with keep running (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--check-workers", type=int, default=2,
        help="sandboxed processes (per server process) that run learners' code for challenges; 0 turns them off",
    )  # fmt: skip
    parser.add_argument(
        "--max-streams", type=int, default=200,
        help="training runs' event streams open at once per server process; more get 503 (default 200)",
    )  # fmt: skip
    parser.add_argument(
        "--allowed-hosts", default=None,
        help="comma-separated host names the server answers to besides localhost, 127.0.0.1 and ::1 (and --host): "
        "the name or address students type; '.example.org' takes its subdomains too, '*' any name",
    )  # fmt: skip
    args = parser.parse_args(argv)

    from .assets import missing

    if missing():
        print(f"backprop-explorer: the installation lacks its page or data: {', '.join(missing())}", file=sys.stderr)
        return 2
    # validate the data before starting anything: a bad file is a message, not a traceback
    from .data import DEFAULT_DATA, DataError, load_dataset

    data = args.data or str(DEFAULT_DATA)
    try:
        dataset = load_dataset(data)  # read once: every process gets these bytes, not the file
    except DataError as e:
        print(f"backprop-explorer: cannot use the data file: {e}", file=sys.stderr)
        return 2
    from .runs import DEFAULT_RUNS_DB, RunStore

    runs_db = os.path.abspath(args.runs_db or DEFAULT_RUNS_DB)
    try:
        RunStore(runs_db)
    except (OSError, sqlite3.Error) as e:
        print(f"backprop-explorer: cannot use the runs database {runs_db}: {e}", file=sys.stderr)
        return 2
    from .web.guards import LOCAL_HOSTS

    hosts = [*LOCAL_HOSTS]
    if args.host not in ("0.0.0.0", "::", ""):
        hosts.append(args.host)
    hosts += [h.strip() for h in (args.allowed_hosts or "").split(",") if h.strip()]
    if args.host in ("0.0.0.0", "::") and not args.allowed_hosts:
        print(
            "backprop-explorer: listening on every interface, answering to localhost names only: add the name or "
            "address others type with --allowed-hosts",
            file=sys.stderr,
        )
    os.environ["BACKPROP_ALLOWED_HOSTS"] = ",".join(dict.fromkeys(hosts))
    os.environ["BACKPROP_DATA"] = os.path.abspath(data)
    os.environ["BACKPROP_CACHE_SIZE"] = str(args.cache_size)
    os.environ["BACKPROP_CACHE_MB"] = str(args.cache_mb)
    os.environ["BACKPROP_RUNS_DB"] = runs_db
    os.environ["BACKPROP_MAX_RUNS"] = str(args.max_runs)
    os.environ["BACKPROP_MAX_QUEUED"] = str(args.max_queued)
    os.environ["BACKPROP_KEEP_RUNS"] = str(args.keep_runs)
    os.environ["BACKPROP_MAX_STREAMS"] = str(args.max_streams)
    os.environ["BACKPROP_WATCH_GRACE_S"] = str(args.watch_grace)
    os.environ["BACKPROP_CHECK_WORKERS"] = str(args.check_workers)

    from .web_processes import serve

    options = {
        "app": "server.web.factory:app_from_env",
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

    handed = (os.path.abspath(data), dataset.raw, dataset.sha256)
    return serve(args.host, args.port, args.workers, options, setup=(hand_over, (handed,)))


if __name__ == "__main__":
    sys.exit(main())
