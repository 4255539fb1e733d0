"""Training runs persisted in SQLite: the web processes list and stream them, worker processes write them.

The database is the only channel between processes: a worker appends events (progress, checks,
histograms, result) and a heartbeat; any server process streams a run's events from it, claims
queued runs atomically (so the bound on running runs holds across server processes) and marks runs
whose worker stopped beating as interrupted. A restart therefore loses nothing that was written.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..settings import Settings
from ..training.config import CHECK_EVENTS, STATS_POINTS, TrainConfig

ACTIVE = ("queued", "running")
ENDED = ("finished", "cancelled", "diverged", "failed", "interrupted")
HEARTBEAT_TIMEOUT_S = 30.0  # a running run whose worker has written nothing for this long is interrupted

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    config TEXT NOT NULL,               -- TrainConfig as JSON
    group_id INTEGER,                   -- runs started together (manual and autograd from one seed)
    keep_running INTEGER NOT NULL,      -- 1: trains on with nobody watching
    status TEXT NOT NULL,
    reason TEXT,
    cancel INTEGER NOT NULL DEFAULT 0,  -- set by a cancel request, read by the worker
    watched REAL NOT NULL,              -- last time an event stream was open on it
    heartbeat REAL,                     -- last time its worker wrote
    worker_pid INTEGER,
    worker TEXT,                        -- the queue's worker that took it (host:pid), with a task queue
    data_sha256 TEXT,                   -- the names the web server read: a worker reading others refuses it
    step INTEGER NOT NULL DEFAULT 0,
    started REAL,
    ended REAL,
    result TEXT,                        -- final metrics and samples, JSON
    params BLOB,                        -- trained parameters (torch.save of a dict of tensors)
    losses BLOB,                        -- every step's loss, float32 (the events carry a thinned curve)
    owner_hash TEXT,                    -- sha256 of its owner token: cancel and delete need the token
    client TEXT,                        -- the address that started it: each has at most max_per_client live runs
    instance TEXT,                      -- the web process that claims and trains it (SQLite): only it stops it
    cpu_limit REAL                      -- seconds of CPU its training process may use (RLIMIT_CPU)
);
CREATE TABLE IF NOT EXISTS events (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""
# a run's summary: what is listed and streamed, without its parameters and losses (read from a server, not a file)
SUMMARY = (
    "id, created, config, group_id, keep_running, status, reason, step, started, ended, result, "
    "cpu_limit, params IS NOT NULL AS has_params"
)
# columns added since the first release: a database from before gets them (name, SQLite type)
ADDED_COLUMNS = (
    ("losses", "BLOB"), ("worker", "TEXT"), ("data_sha256", "TEXT"),
    ("owner_hash", "TEXT"), ("client", "TEXT"), ("instance", "TEXT"), ("cpu_limit", "REAL"),
)  # fmt: skip


def token_hash(token: str) -> str:
    """What the runs table keeps of an owner token: its sha256 (a leaked database gives nobody the tokens)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class QueueFull(RuntimeError):
    """More runs asked for than the server runs and queues."""


class ClientBusy(RuntimeError):
    """A client asked for more live (queued or running) runs than one client may have."""


class QueueUnavailable(RuntimeError):
    """The task queue refused a run's job (PostgreSQL unreachable while deferring): the run failed, saying so."""


@dataclass(frozen=True)
class Limits:
    max_running: int = Settings.max_runs  # runs training at once (each in its own process, one torch thread)
    max_queued: int = Settings.max_queued  # waiting runs; beyond, a request is refused with 429
    watch_grace_s: float = Settings.watch_grace  # an unwatched run (not keep_running) is cancelled after this
    keep_ended: int = Settings.keep_runs  # ended runs kept, the newest; older ones are deleted (0: keep every run)
    per_client: int = Settings.max_runs_per_client  # live (queued or running) runs one client may have

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits the server's settings (--max-runs, --max-queued, --watch-grace, --keep-runs,
        --max-runs-per-client) set."""
        return cls(
            settings.max_runs, settings.max_queued, settings.watch_grace, settings.keep_runs,
            settings.max_runs_per_client,
        )  # fmt: skip


class RunStore:
    """All access to the runs database (SQLite). Each call opens its own connection: usable from any thread."""

    # runs are claimed by the web processes' Scheduler (True), or taken from a task queue by workers (False)
    claims_locally = True
    # the store tells other processes when a run changes (listen): their event streams need not poll it fast
    notifies = False

    def __init__(self, path: str | Path, limits: Limits = Limits(), clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.url = str(self.path)  # what a training process opens (python -m server.runs.train_process --db)
        self.limits = limits
        self.clock = clock  # wall time in seconds: every timestamp written and every age compared
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers (event streams) never wait for the writer
            db.executescript(SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
            for column, kind in ADDED_COLUMNS:  # a database from an earlier version
                if column not in columns:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
            # a write, rolled back: a read-only file (or folder) fails here, at start-up, not on the first run
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(f"PRAGMA user_version = {int(db.execute('PRAGMA user_version').fetchone()[0])}")
            finally:
                db.execute("ROLLBACK")
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @contextmanager
    def _db(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction. Every writer takes the write lock at once (immediate): a read transaction that
        later writes cannot wait for the lock in WAL mode, it fails with "database is locked"."""
        db = self._connect()
        try:
            self._begin(db, immediate)
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def close(self) -> None:
        """Release what the store holds open (SQLite: nothing, each call connects)."""

    def _begin(self, db: Any, immediate: bool) -> None:
        db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")

    # --- the web side ---------------------------------------------------------------------------

    def create(
        self,
        configs: list[TrainConfig],
        keep_running: bool,
        data_sha256: str | None = None,
        *,
        owners: list[str] | None = None,
        client: str | None = None,
        instance: str | None = None,
        cpu_limit: float | None = None,
    ) -> list[int]:
        """Queue runs (two for a manual/autograd pair, sharing a group) on the names with this sha256.

        owners: each run's owner token hash (token_hash); client: who asks (ClientBusy past its share of live
        runs); instance: the web process that will train them (None: any); cpu_limit: each one's CPU seconds.
        QueueFull past the queue's bound."""
        now = self.clock()
        owners = owners or [None] * len(configs)  # type: ignore[list-item]
        with self._db(immediate=True) as db:
            if client is not None:
                live = db.execute(
                    "SELECT count(*) FROM runs WHERE client = ? AND status IN ('queued', 'running')", (client,)
                ).fetchone()[0]
                if live + len(configs) > self.limits.per_client:
                    raise ClientBusy(
                        f"you have {live} runs queued or running (at most {self.limits.per_client} each, "
                        f"this asks for {len(configs)} more); cancel one or wait until one ends"
                    )
            queued = db.execute("SELECT count(*) FROM runs WHERE status = 'queued'").fetchone()[0]
            if queued + len(configs) > self.limits.max_queued:
                raise QueueFull(
                    f"{queued} runs are waiting already (at most {self.limits.max_queued}); "
                    "try again when one has started"
                )
            ids = []
            for config, owner in zip(configs, owners, strict=True):
                row = db.execute(
                    "INSERT INTO runs (created, config, keep_running, status, watched, heartbeat, data_sha256, "
                    "owner_hash, client, instance, cpu_limit) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?) "
                    "RETURNING id",
                    (now, json.dumps(config.as_dict()), int(keep_running), now, now, data_sha256, owner, client,
                     instance, cpu_limit),
                ).fetchone()  # fmt: skip
                ids.append(int(row[0]))
            if len(ids) > 1:
                db.execute(f"UPDATE runs SET group_id = ? WHERE id IN ({','.join('?' * len(ids))})", (ids[0], *ids))
            for run_id in ids:
                self._event(db, run_id, "status", {"status": "queued"})
        return ids

    def list(self, limit: int = 100, before: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """The newest `limit` runs older than run `before` (None: the newest), and the cursor of the next page."""
        with self._db() as db:
            rows = db.execute(
                f"SELECT {SUMMARY} FROM runs WHERE id < ? ORDER BY id DESC LIMIT ?", (before or 2**63 - 1, limit + 1)
            ).fetchall()
        more = len(rows) > limit
        runs = [self._summary(row) for row in rows[:limit]]
        return runs, runs[-1]["id"] if more else None

    def get(self, run_id: int) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute(f"SELECT {SUMMARY} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return self._summary(row) if row else None

    def events_after(self, run_id: int, seq: int, limit: int = 500) -> list[tuple[int, str, str]]:
        """(seq, kind, JSON data) of the run's events after `seq`, oldest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT seq, kind, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (run_id, seq, limit),
            ).fetchall()
        return [(r["seq"], r["kind"], r["data"]) for r in rows]

    def history(self, run_id: int) -> dict[str, Any]:
        """The run's curves and checks so far, merged from its events (what the page rebuilds live); bounded:
        at most CHECK_EVENTS checks and STATS_POINTS statistics, whatever the run's length."""
        out: dict[str, Any] = {"points": [], "smooth": [], "ud": [], "saturation": [], "checks": [],
                               "histograms": [], "progress": None}  # fmt: skip
        with self._db() as db:
            n_checks = db.execute(
                "SELECT count(*) FROM events WHERE run_id = ? AND kind = 'check'", (run_id,)
            ).fetchone()[0]
            stride = max(1, -(-n_checks // CHECK_EVENTS))  # runs from before checks were grouped had one a step
            rows = db.execute(
                "SELECT kind, data FROM (SELECT seq, kind, data, CASE kind WHEN 'check' THEN "
                "row_number() OVER (PARTITION BY kind ORDER BY seq) END AS r FROM events "
                "WHERE run_id = ? AND kind IN ('progress', 'check', 'histograms')) AS e "
                "WHERE r IS NULL OR r % ? = 0 OR r = ? ORDER BY seq",
                (run_id, stride, n_checks),
            ).fetchall()
        for row in rows:
            data = json.loads(row["data"])
            if row["kind"] == "progress":
                for key in ("points", "smooth", "ud", "saturation"):
                    out[key].extend(data.pop(key))
                out["progress"] = data
            elif row["kind"] == "check":
                out["checks"].append(data)
            else:
                out["histograms"].append(data)
        for key in ("ud", "saturation"):  # likewise sampled more densely before
            stride = -(-len(out[key]) // STATS_POINTS)
            if stride > 1:
                out[key] = out[key][::stride] + ([out[key][-1]] if (len(out[key]) - 1) % stride else [])
        return out

    def watch(self, run_id: int) -> None:
        with self._db(immediate=True) as db:
            db.execute("UPDATE runs SET watched = ? WHERE id = ?", (self.clock(), run_id))

    def cancel(self, run_id: int) -> dict[str, Any] | None:
        """A queued run ends now; a running one is asked to stop (its worker ends it within ~0.5 s)."""
        with self._db(immediate=True) as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            if row["status"] == "queued":
                self._end(db, run_id, "cancelled", "cancelled by its owner before it started")
            elif row["status"] == "running":
                db.execute("UPDATE runs SET cancel = 1 WHERE id = ?", (run_id,))
        return self.get(run_id)

    def delete(self, run_id: int) -> bool:
        """Forget a run; a worker still training it notices the missing row and stops."""
        with self._db(immediate=True) as db:
            gone = db.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0
            if gone:
                self._notify(db, run_id)
        return gone

    def owned(self, run_id: int, token: str) -> bool:
        """Whether `token` is run `run_id`'s owner token (a run without one, from an earlier version: nobody's)."""
        with self._db() as db:
            row = db.execute("SELECT owner_hash FROM runs WHERE id = ?", (run_id,)).fetchone()
        return bool(row and row["owner_hash"]) and hmac.compare_digest(row["owner_hash"], token_hash(token))

    def losses(self, run_id: int) -> torch.Tensor | None:
        """Every step's loss of an ended run, (steps,) float32."""
        with self._db() as db:
            row = db.execute("SELECT losses FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or row["losses"] is None:
            return None
        return torch.frombuffer(bytearray(row["losses"]), dtype=torch.float32)

    def params(self, run_id: int) -> dict[str, torch.Tensor] | None:
        with self._db() as db:
            row = db.execute("SELECT params FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or row["params"] is None:
            return None
        return torch.load(io.BytesIO(row["params"]), weights_only=True)

    # --- the scheduler (in every server process) --------------------------------------------------

    def claim(self, instance: str | None = None) -> tuple[int, TrainConfig] | None:
        """Mark the oldest queued run running, as web process `instance`'s, if fewer than max_running are; None
        otherwise. An instance claims its own runs, runs nobody's, and runs of an instance that stopped beating
        (None: any run): a run started on one server is trained, and stopped, by that server."""
        now = self.clock()
        with self._db(immediate=True) as db:
            running = db.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]
            if running >= self.limits.max_running:
                return None
            row = db.execute(
                "SELECT id, config FROM runs WHERE status = 'queued' AND (CAST(? AS TEXT) IS NULL OR instance IS NULL "
                "OR instance = ? OR heartbeat < ?) ORDER BY id LIMIT 1",
                (instance, instance, now - HEARTBEAT_TIMEOUT_S),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE runs SET status = 'running', started = ?, heartbeat = ?, instance = coalesce(?, instance) "
                "WHERE id = ?",
                (now, now, instance, row["id"]),
            )
            self._event(db, row["id"], "status", {"status": "running"})
        return row["id"], TrainConfig(**json.loads(row["config"]))

    def start(self, run_id: int, worker: str, data_sha256: str | None = None) -> TrainConfig | None:
        """A queue's worker, reading the names with this sha256, takes run `run_id`: running now if it is still
        queued; None if it is not, or if the run was asked for on other names (it fails, saying so)."""
        now = self.clock()
        with self._db(immediate=True) as db:
            row = db.execute(
                "SELECT config, data_sha256 FROM runs WHERE id = ? AND status = 'queued'", (run_id,)
            ).fetchone()
            if row is None:  # cancelled or deleted while it waited
                return None
            if row["data_sha256"] and data_sha256 and row["data_sha256"] != data_sha256:
                reason = (
                    f"worker {worker} reads another names file (sha256 {data_sha256[:12]}…, the web server's "
                    f"{row['data_sha256'][:12]}…): give it the same --data"
                )
                self._end(db, run_id, "failed", reason)
                return None
            db.execute(
                "UPDATE runs SET status = 'running', started = ?, heartbeat = ?, worker = ? WHERE id = ?",
                (now, now, worker, run_id),
            )
            self._event(db, run_id, "status", {"status": "running", "worker": worker})
        return TrainConfig(**json.loads(row["config"]))

    def set_worker(self, run_id: int, pid: int) -> None:
        with self._db(immediate=True) as db:
            db.execute("UPDATE runs SET worker_pid = ? WHERE id = ?", (pid, run_id))

    def sweep(self, instance: str | None = None) -> None:
        """Interrupt runs whose worker stopped beating; cancel queued runs that nobody watches; prune old runs.
        instance: the sweeping web process, whose queued runs beat (they are not another instance's to take)."""
        now = self.clock()
        with self._db(immediate=True) as db:
            if instance is not None:
                db.execute("UPDATE runs SET heartbeat = ? WHERE status = 'queued' AND instance = ?", (now, instance))
            for row in db.execute(
                "SELECT id FROM runs WHERE status = 'running' AND heartbeat < ?", (now - HEARTBEAT_TIMEOUT_S,)
            ).fetchall():
                self._end(db, row["id"], "interrupted", "its worker stopped (server restart or crash)")
            for row in db.execute(
                "SELECT id FROM runs WHERE status = 'queued' AND keep_running = 0 AND watched < ?",
                (now - self.limits.watch_grace_s,),
            ).fetchall():
                self._end(db, row["id"], "cancelled", "stopped: nobody was watching it (start it with keep running)")
            if self.limits.keep_ended:
                ended = ", ".join(f"'{s}'" for s in ENDED)
                db.execute(
                    f"DELETE FROM runs WHERE status IN ({ended}) AND id < (SELECT min(id) FROM (SELECT id FROM runs "
                    f"WHERE status IN ({ended}) ORDER BY id DESC LIMIT ?) AS kept)",
                    (self.limits.keep_ended,),
                )

    def release(self, instance: str) -> None:
        """On a web process's shutdown: its running runs end as interrupted (another server's are not its to
        end), and its queued runs are any instance's to claim."""
        with self._db(immediate=True) as db:
            for row in db.execute(
                "SELECT id FROM runs WHERE status = 'running' AND instance = ?", (instance,)
            ).fetchall():
                self._end(db, row["id"], "interrupted", "the server stopped while it trained")
            db.execute("UPDATE runs SET instance = NULL WHERE status = 'queued' AND instance = ?", (instance,))

    def stopping(self, run_ids: list[int]) -> set[int]:
        """The runs among `run_ids` whose training should stop: ended, deleted, or asked to cancel."""
        if not run_ids:
            return set()
        with self._db() as db:
            rows = db.execute(
                f"SELECT id FROM runs WHERE id IN ({','.join('?' * len(run_ids))}) "
                "AND status IN ('queued', 'running') AND cancel = 0",
                tuple(run_ids),
            ).fetchall()
        return set(run_ids) - {int(row["id"]) for row in rows}

    def abort(self, run_id: int, reason: str) -> None:
        """A training process ended without ending its run: cancelled if a cancel asked for it, else failed."""
        with self._db(immediate=True) as db:
            row = db.execute("SELECT cancel FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is not None:
                self._end(
                    db, run_id, *(("cancelled", "cancelled by its owner") if row["cancel"] else ("failed", reason))
                )

    # --- the worker --------------------------------------------------------------------------------

    def append(self, run_id: int, kind: str, data: dict[str, Any]) -> bool:
        """Record an event (and the heartbeat); False when the run is gone."""
        with self._db(immediate=True) as db:
            if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                return False
            self._event(db, run_id, kind, data)
            step = data.get("step") if kind == "progress" else None
            db.execute(
                "UPDATE runs SET heartbeat = ?, step = coalesce(?, step) WHERE id = ?", (self.clock(), step, run_id)
            )
            if kind == "result":
                db.execute("UPDATE runs SET result = ? WHERE id = ?", (json.dumps(data), run_id))
        return True

    def should_stop(self, run_id: int) -> str | None:
        """Why the worker should stop now: cancelled, deleted, or nobody watching; None to go on."""
        with self._db() as db:
            row = db.execute("SELECT cancel, keep_running, watched FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return "deleted"
        if row["cancel"]:
            return "cancelled"
        if not row["keep_running"] and self.clock() - row["watched"] > self.limits.watch_grace_s:
            return "abandoned"
        return None

    def end(
        self,
        run_id: int,
        status: str,
        reason: str | None,
        params: dict[str, torch.Tensor] | None,
        losses: torch.Tensor | None = None,
    ) -> None:
        blob = None
        if params is not None:
            buf = io.BytesIO()
            torch.save({k: t.detach().clone() for k, t in params.items()}, buf)
            blob = buf.getvalue()
        with self._db(immediate=True) as db:
            if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                return
            loss_blob = losses.to(torch.float32).numpy().tobytes() if losses is not None else None
            # an ended run keeps what it has: a second end (a worker's, after its training process's) changes nothing
            db.execute(
                "UPDATE runs SET params = ?, losses = ? WHERE id = ? AND status IN ('queued', 'running')",
                (blob, loss_blob, run_id),
            )
            self._end(db, run_id, status, reason)

    # --- helpers -----------------------------------------------------------------------------------

    def _event(self, db: sqlite3.Connection, run_id: int, kind: str, data: dict[str, Any]) -> None:
        seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM events WHERE run_id = ?", (run_id,)).fetchone()[0]
        db.execute(
            "INSERT INTO events (run_id, seq, kind, data) VALUES (?, ?, ?, ?)",
            (run_id, seq, kind, json.dumps(data, allow_nan=False)),
        )
        self._notify(db, run_id)

    def _notify(self, db: Any, run_id: int) -> None:
        """Tell the listening processes, when this transaction commits, that run `run_id` changed (SQLite: nobody
        listens, streams poll)."""

    async def listen(self, changed: Callable[[int], None], listening: Callable[[], None]) -> None:
        """Call changed(run_id) for each run another process changes, on one connection, until cancelled; call
        listening() once every notice from then on will come. Only a store that `notifies`."""
        raise NotImplementedError("a SQLite store does not notify: its streams poll")

    def _end(self, db: sqlite3.Connection, run_id: int, status: str, reason: str | None) -> None:
        changed = db.execute(
            "UPDATE runs SET status = ?, reason = ?, ended = ? WHERE id = ? AND status IN ('queued', 'running')",
            (status, reason, self.clock(), run_id),
        ).rowcount
        if changed:
            self._event(db, run_id, "status", {"status": status, "reason": reason, "final": True})

    @staticmethod
    def _summary(row: sqlite3.Row) -> dict[str, Any]:
        config = json.loads(row["config"])
        return {
            "id": row["id"],
            "created": row["created"],
            "config": config,
            "group": row["group_id"],
            "keep_running": bool(row["keep_running"]),
            "status": row["status"],
            "reason": row["reason"],
            "step": row["step"],
            "max_steps": config["max_steps"],
            "started": row["started"],
            "ended": row["ended"],
            "result": json.loads(row["result"]) if row["result"] else None,
            "has_params": bool(row["has_params"]),
            "cpu_limit_s": row["cpu_limit"],
        }


class StoreURLError(ValueError):
    """A --runs-db this server cannot open: a URL of another database, or one without a file."""


_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")
POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres(url: str) -> bool:
    """Whether --runs-db names a PostgreSQL database (postgresql://user@host/db) rather than a SQLite file."""
    match = _SCHEME.match(url)
    return match is not None and match["scheme"] in POSTGRES_SCHEMES


def store_path(url: str) -> str:
    """The runs database at `url` as every process opens it: a PostgreSQL URL as given; for SQLite, the absolute
    path of a file path, sqlite:///relative/path or sqlite:////absolute/path. The one place that reads the URL."""
    path = url
    if match := _SCHEME.match(url):
        if match["scheme"] in POSTGRES_SCHEMES:
            return url
        if match["scheme"] != "sqlite":
            raise StoreURLError(
                f"{match['scheme']}:// databases are not supported: give a file path, sqlite:///path or "
                "postgresql://user@host/database"
            )
        if not match["rest"].startswith("/") or match["rest"] == "/":
            raise StoreURLError("a sqlite URL names a file: sqlite:///relative/path or sqlite:////absolute/path")
        path = match["rest"][1:]
    # absolute: training processes start in the project's folder, not the server's working directory
    return os.path.abspath(path)
