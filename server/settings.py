"""The server's settings: one field per option of python -m server (--cache-mb sets cache_mb).

The command line is built from this class: each option's default is its field's, and its --help text is the
comment on the field (with any comment lines right under it). The settings reach each web process whole.
"""

from __future__ import annotations

import argparse
import inspect
import re
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"  # interface to listen on
    port: int = 8000  # port
    data: str | None = None  # names file, one word per line (default: the embedded data/names.txt)
    workers: int = 1  # server processes: one per core for a class (each has its own cache)
    cache_size: int = 512  # backward passes kept per process
    cache_mb: int = 512  # memory those passes may hold per process, in MiB
    runs_db: str = str(Path.home() / ".backprop-explorer" / "runs.sqlite3")  # the training runs' SQLite file,
    # or a sqlite:/// URL (sqlite:///runs.db is relative, sqlite:////srv/runs.db absolute), or a PostgreSQL URL
    # (postgresql://user:password@host/database): runs are then trained by python -m server.runs.train_worker
    max_runs: int = 2  # training runs at once, one process each (with PostgreSQL: each worker's --max-runs)
    max_queued: int = 8  # runs waiting beyond those; more get 429
    keep_runs: int = 500  # ended runs kept, the newest; older ones are deleted (0: keep all)
    watch_grace: float = 30.0  # seconds a run trains on after its page closed, unless started with keep running
    max_runs_per_client: int = 2  # live (queued or running) runs one client address may have; more get 429
    max_run_cpu: float = 7200.0  # seconds of CPU one training run may use; a run that would need more is refused
    admin_token: str | None = None  # a secret that cancels and deletes any run (a teacher's), as each run's owner
    # token does its own run
    max_streams_per_client: int = 20  # training runs' event streams one client address may have open; more get 429
    check_workers: int = 2  # sandboxed processes (per server process) that run learners' code for challenges;
    # 0 turns them off
    check_timeout: float = 3.0  # seconds (wall clock) one check of learner code may take; a longer one is stopped
    # and says so (a lecture gradient takes milliseconds: raise it only for a machine much slower than a laptop)
    max_streams: int = 200  # training runs' event streams open at once per server process; more get 503
    allowed_hosts: tuple[str, ...] = ()  # comma-separated host names the server answers to besides localhost,
    # 127.0.0.1 and ::1 (and --host): the name or address students type; '.example.org' takes its subdomains too,
    # '*' any name
    forwarded_allow_ips: tuple[str, ...] = ()  # comma-separated addresses (or networks) of reverse proxies whose
    # X-Forwarded-For and X-Forwarded-Proto are trusted (deploy/ gives nginx's); none by default: a client is its
    # own address
    max_connections_per_client: int = 256  # open connections one client address may hold per server process;
    # more are closed at once (a trusted proxy's are not counted)
    head_timeout: float = 5.0  # seconds a connection may take to send a request's line and headers; then closed
    net_file: tuple[str, ...] = ()  # a network written as the lecture's forward cell (a .py file: sizes, a seeded
    # generator, parameter lines, parameters = [...], then one op a line ending in loss), served beside the
    # built-in networks as ?net=<the file's name>: its backward rules are written from the op library; give the
    # option once for each file to serve several
    class_days: float = 30.0  # days a class (and what its students' checks recorded) is kept; then it is deleted


# the values an option may take (inclusive; None: unbounded): anything else is a usage error, not a traceback
RANGES: dict[str, tuple[float | None, float | None]] = {
    "port": (0, 65535),
    "workers": (1, None),
    "check_workers": (0, None),
    "max_streams": (0, None),
    "max_connections_per_client": (1, None),
    "head_timeout": (0.1, None),
    "check_timeout": (0.1, 600),
    "class_days": (0.01, 3650),
}


# options given once per value (--net-file a.py --net-file b.py): tuples of every value given, in order
REPEATED = frozenset({"net_file"})


def _names(value: str) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped: 'a.example, b.example' -> ('a.example', 'b.example')."""
    return tuple(name.strip() for name in value.split(",") if name.strip())


# how an option's text becomes its field's type
_PARSERS: dict[Any, Any] = {int: int, float: float, str: str, str | None: str, tuple[str, ...]: _names}
_FIELD = re.compile(r"^ {4}(?P<name>\w+): [^#]*#\s?(?P<comment>.*)$")  # a field line and its comment
_MORE = re.compile(r"^ {4}#\s?(?P<comment>.*)$")  # a comment line under it


def field_comments() -> dict[str, str]:
    """Each field's comment: the one on its line, continued by the comment lines right under it."""
    comments: dict[str, str] = {}
    name = None
    for line in inspect.getsource(Settings).splitlines():
        if field := _FIELD.match(line):
            name = field["name"]
            comments[name] = field["comment"]
        elif name and (more := _MORE.match(line)):
            comments[name] += " " + more["comment"]
        else:
            name = None
    return comments


def _bounded(parse: Any, low: float | None, high: float | None) -> Any:
    """`parse`, refusing a value outside [low, high] with argparse's usage error."""

    def parse_bounded(text: str) -> Any:
        value = parse(text)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: {bounds}")
        return value

    parse_bounded.__name__ = parse.__name__  # argparse names the type in "invalid int value"
    return parse_bounded


def add_options(parser: argparse.ArgumentParser) -> None:
    """One option per field: its default is the field's default, its help the field's comment."""
    hints = get_type_hints(Settings)
    comments = field_comments()
    for f in fields(Settings):
        assert f.default is not MISSING  # every setting has a default: an empty command line is Settings()
        text = comments[f.name].replace("%", "%%")  # argparse formats help with %
        if f.default not in (None, ()):
            text += f" (default {f.default})"
        flag = "--" + f.name.replace("_", "-")
        if f.name in REPEATED:  # each time it is given adds one value (a path may hold a comma)
            parser.add_argument(flag, action="append", type=str, default=None, help=text)
            continue
        parse = _PARSERS[hints[f.name]]
        if f.name in RANGES:
            parse = _bounded(parse, *RANGES[f.name])
        parser.add_argument(flag, type=parse, default=f.default, help=text)


def from_options(args: argparse.Namespace) -> Settings:
    """The settings a parsed command line (see add_options) names."""
    values = {f.name: getattr(args, f.name) for f in fields(Settings)}
    for name in REPEATED:
        values[name] = tuple(values[name] or ())
    return Settings(**values)
