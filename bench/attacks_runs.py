"""Attacks on training runs: a run's CPU bound, one client's share of runs and event streams, a stranger's cancel,
two servers on one SQLite file, a killed training process. Each takes a started server (attack_kit.Server) or a
source tree, and returns {measure: value}; bench/attack_bench.py runs them beside the other attacks."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx
from attack_kit import HOST, Server, from_address, refused_heads

LARGEST_RUN = {"batch_size": 256, "n_hidden": 512, "n_embd": 64, "block_size": 8}


def _wait_status(c: httpx.Client, url: str, until: set[str], timeout_s: float = 120) -> tuple[str, float]:
    """Poll a run until its status is one of `until` (bounded); (status, seconds waited)."""
    t0 = time.perf_counter()
    status = ""
    while time.perf_counter() - t0 < timeout_s:
        status = c.get(url).json()["status"]
        if status in until:
            break
        time.sleep(0.1)
    return status, time.perf_counter() - t0


def _owner(run: dict) -> dict[str, str]:
    token = run.get("owner_token")
    return {"Authorization": f"Bearer {token}"} if token else {}


def run_bound(server: Server) -> dict[str, object]:
    """Point 5: 1,000,000 steps of the largest config (before: queued, hours of a core at nice 0); the lecture's
    1,000,000 manual steps (accepted, with a CPU limit)."""
    with httpx.Client(timeout=120) as c:
        t0 = time.perf_counter()
        huge = c.post(f"{server.url}/api/runs", json={**LARGEST_RUN, "max_steps": 1_000_000})
        out: dict[str, object] = {
            "largest x 1e6 steps": f"{huge.status_code} in {time.perf_counter() - t0:.2f} s, {len(huge.content)} B",
            "its reason": huge.json().get("detail", "(a run)") if huge.status_code != 201 else "(queued)",
        }
        lecture = c.post(f"{server.url}/api/runs", json={"max_steps": 1_000_000})
        (run,) = lecture.json()["runs"]
        out["lecture x 1e6 steps"] = f"{lecture.status_code}, cpu_limit_s {run.get('cpu_limit_s')}"
        for r in [*(huge.json().get("runs") or []), run]:
            c.post(f"{server.url}/api/runs/{r['id']}/cancel", headers=_owner(r))
    return out


def runs_per_client(server: Server) -> dict[str, object]:
    """Point 5: one address asks for ten 1,000,000-step runs (before: 2 train, 8 fill the queue); then another
    address asks for one (before: 429, the queue is full)."""
    body = {"max_steps": 1_000_000, "keep_running": True}
    with from_address("127.0.0.2") as attacker, from_address("127.0.0.3") as victim:
        answers = [attacker.post(f"{server.url}/api/runs", json=body) for _ in range(10)]
        t0 = time.perf_counter()
        mine = victim.post(f"{server.url}/api/runs", json=body)
        seconds = time.perf_counter() - t0
        started = [r for a in answers if a.status_code == 201 for r in a.json()["runs"]]
        if mine.status_code == 201:
            started += mine.json()["runs"]
        for run in started:
            attacker.post(f"{server.url}/api/runs/{run['id']}/cancel", headers=_owner(run))
    codes = [a.status_code for a in answers]
    return {
        "attacker's 10": f"{codes.count(201)} x 201, {codes.count(429)} x 429",
        "another client's run": f"{mine.status_code} in {seconds:.2f} s, {len(mine.content)} B",
    }


def stranger_cancel(server: Server) -> dict[str, object]:
    """Point 5: another address cancels and deletes a victim's run, with no token and with a guessed one."""
    with from_address("127.0.0.3") as victim, from_address("127.0.0.2") as stranger:
        (run,) = victim.post(f"{server.url}/api/runs", json={"max_steps": 1_000_000, "keep_running": True}).json()[
            "runs"
        ]
        url = f"{server.url}/api/runs/{run['id']}"
        t0 = time.perf_counter()
        cancel = stranger.post(f"{url}/cancel")
        guessed = stranger.delete(url, headers={"Authorization": "Bearer guess"})
        seconds = time.perf_counter() - t0
        seen = victim.get(url)
        status = seen.json()["status"] if seen.status_code == 200 else f"{seen.status_code} (gone)"
        owner = victim.post(f"{url}/cancel", headers=_owner(run))
        victim.delete(url, headers=_owner(run))
    return {
        "stranger's cancel / delete": f"{cancel.status_code} / {guessed.status_code} in {seconds:.2f} s",
        "victim's run then": status,
        "owner's cancel": owner.status_code,
    }


def stream_hog(server: Server) -> dict[str, object]:
    """Point 7: 127.0.0.2 opens 200 event streams on a run (never read); then 127.0.0.3 starts a run (not kept
    running) and opens its stream (before: 503, and its run is cancelled as "nobody is watching")."""
    with httpx.Client(timeout=60) as c:
        (bait,) = c.post(f"{server.url}/api/runs", json={"max_steps": 1_000_000}).json()["runs"]
    request = f"GET /api/runs/{bait['id']}/events HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n\r\n".encode()
    socks = []
    try:
        for _ in range(200):
            s = socket.create_connection((HOST, server.port), timeout=30, source_address=("127.0.0.2", 0))
            s.sendall(request)
            socks.append(s)
        refused = refused_heads(socks, (b"429", b"503"))
        with from_address("127.0.0.3") as victim:
            (run,) = victim.post(f"{server.url}/api/runs", json={"max_steps": 1_000_000}).json()["runs"]
            t0 = time.perf_counter()
            with victim.stream("GET", f"{server.url}/api/runs/{run['id']}/events", headers=_owner(run)) as r:
                victim_status = r.status_code
                seconds = time.perf_counter() - t0
            victim.post(f"{server.url}/api/runs/{run['id']}/cancel", headers=_owner(run))
    finally:
        for s in socks:
            s.close()
    with httpx.Client(timeout=60) as c:
        c.post(f"{server.url}/api/runs/{bait['id']}/cancel", headers=_owner(bait))
    return {"attacker's 200 streams: refused": refused, "victim's stream": f"{victim_status} in {seconds:.2f} s"}


def two_servers(root: Path) -> dict[str, object]:
    """Point 11: two servers on one SQLite file; a run started on the second trains; the first stops (before: the
    run could be the first's, and end "interrupted")."""
    db = Path(os.environ.get("TMPDIR", "/tmp")) / f"two-servers-{os.getpid()}.sqlite3"
    out: dict[str, object] = {}
    with Server(root, "--runs-db", str(db)) as first, Server(root, "--runs-db", str(db)) as second:
        with httpx.Client(timeout=60) as c:
            (run,) = c.post(f"{second.url}/api/runs", json={"max_steps": 1_000_000, "keep_running": True}).json()[
                "runs"
            ]
            url = f"{second.url}/api/runs/{run['id']}"
            _wait_status(c, url, {"running"})
            t0 = time.perf_counter()
            first.proc.terminate()
            first.proc.wait(timeout=60)
            out["first stopped in s"] = round(time.perf_counter() - t0, 2)
            status, _ = _wait_status(c, url, {"interrupted", "failed"}, timeout_s=3)  # bounded: 3 s
            out["second's run after"] = status
            c.post(f"{url}/cancel", headers=_owner(run))
    for path in db.parent.glob(db.name + "*"):
        path.unlink()
    return out


def killed_training(server: Server) -> dict[str, object]:
    """Point 9: kill -9 of a run's training process: seconds until the run is no longer "running" (before: 30 s,
    the heartbeat timeout), and what it says."""
    with httpx.Client(timeout=60) as c:
        (run,) = c.post(f"{server.url}/api/runs", json={"max_steps": 1_000_000, "keep_running": True}).json()["runs"]
        url = f"{server.url}/api/runs/{run['id']}"
        _wait_status(c, url, {"running"})
        pids = [
            int(p)
            for p in os.listdir("/proc")
            if p.isdigit() and f"--run {run['id']} " in _cmdline(p) and "server.runs.train_process" in _cmdline(p)
        ]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        status, seconds = _wait_status(c, url, {"failed", "interrupted", "cancelled"}, timeout_s=60)
        reason = c.get(url).json()["reason"]
    return {"processes killed": len(pids), "run ended after s": round(seconds, 2), "status": status, "reason": reason}


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
