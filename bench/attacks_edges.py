"""Attacks on the server's edges: half-sent requests, forwarded headers, content negotiation, the Origin's
scheme, Ctrl-C during start-up, bad flags. Each takes a started server (attack_kit.Server) or a source tree, and
returns {measure: value}; bench/attack_bench.py runs them beside the other attacks."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from attack_kit import HOST, Server, free_port, in_threads, spawned


def idle_half_sent(server: Server, n: int = 3000) -> dict[str, object]:
    """Finding 6: n connections that send only a request line, then /api/health's latency and the server's fds."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = min(n, soft - 100)  # never past what this process may open itself
    held, refused = [], 0
    for _ in range(n):
        try:
            s = socket.create_connection((HOST, server.port), timeout=5)
            s.sendall(b"GET /api/health HTTP/1.1\r\n")
            held.append(s)
        except OSError:
            refused += 1
    fds = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
    started = time.monotonic()
    try:  # from another loopback address: the flood's address is capped, this one is not
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=30) as c:
            health = c.get(f"{server.url}/api/health").status_code
    except httpx.HTTPError as e:
        health = type(e).__name__
    latency = time.monotonic() - started
    time.sleep(6)  # past the 5 s head deadline: count what the server closed
    closed = 0
    for s in held:
        s.setblocking(False)
        try:
            closed += s.recv(64) != b"x"  # b"" or a 408: closed by the server
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    log_lines = server.output().count("\n")
    return {"connections": n, "refused at connect": refused, "server fds": fds, "health": health,
            "health s": round(latency, 3), "closed by server after 6 s": closed, "log lines": log_lines}  # fmt: skip


def forwarded_from_loopback(server: Server) -> dict[str, object]:
    """Finding 8: six concurrent checks from loopback, each claiming another X-Forwarded-For (server: 1 check worker,
    its sandbox process SIGSTOPped so the checks stay in flight)."""
    code = {"step": 1, "code": "dlogprobs = torch.zeros_like(logprobs)"}
    httpx.post(f"{server.url}/api/check", json=code, timeout=120)  # warm
    sandboxes = spawned(server.proc.pid)
    for pid in sandboxes:
        os.kill(pid, signal.SIGSTOP)
    try:
        calls = [
            (lambda i=i: httpx.post(f"{server.url}/api/check", json=code, timeout=60,
                                    headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code)
            for i in range(6)
        ]  # fmt: skip
        statuses = in_threads(calls)
    finally:
        for pid in sandboxes:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:  # the server killed the stopped process for its timeout
                pass
    said = sorted(str(s) if isinstance(s, int) else type(s).__name__ for s in statuses)
    return {"statuses": " ".join(said), "429s (want 4)": statuses.count(429)}


def gzip_q0_and_origin_scheme(server: Server) -> dict[str, object]:
    """Finding 9: Accept-Encoding gzip;q=0 (a large answer and plotly.min.js), and a POST whose Origin is the same
    host under https."""
    out: dict[str, object] = {}
    for name, path in (("large tensor", "/api/tensor/h?batch_size=256&n_hidden=512&step=3"),
                       ("plotly", "/vendor/plotly.min.js")):  # fmt: skip
        with httpx.stream("GET", f"{server.url}{path}", headers={"Accept-Encoding": "gzip;q=0"}, timeout=120) as r:
            raw = b"".join(r.iter_raw())
            out[f"{name} encoding"] = r.headers.get("content-encoding", "none")
            out[f"{name} bytes"] = len(raw)
    other_scheme = {"Origin": f"https://{HOST}:{server.port}", "Content-Type": "application/json"}
    out["https Origin POST"] = httpx.post(f"{server.url}/api/check", content=b"{}", headers=other_scheme).status_code
    return out


def ctrl_c_at_start(root: Path, after_s: float = 1.0, cap_s: float = 15.0) -> dict[str, object]:
    """Finding 10: Ctrl-C (SIGINT to the process group, as a terminal sends it) 1 s after start: seconds to exit."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "server", "--port", str(free_port()), "--runs-db", f"{tmp}/runs.sqlite3"]
        proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)  # fmt: skip
        time.sleep(after_s)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=cap_s)
            took: object = round(time.monotonic() - sent, 2)
        except subprocess.TimeoutExpired:
            took = f"hung (> {cap_s:g} s; killed)"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    return {"exit s": took, "code": proc.returncode, "traceback": "Traceback" in err}


def bad_flags(root: Path, cap_s: float = 20.0) -> dict[str, object]:
    """Finding 10: --port 99999, --workers 0 (capped wait), --port 0 (does it say which?), a password echoed."""
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = ["--runs-db", f"{tmp}/runs.sqlite3"]
        p = subprocess.run([sys.executable, "-m", "server", "--port", "99999", *db], cwd=root, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
        out["--port 99999"] = f"exit {p.returncode}{' traceback' if 'Traceback' in p.stderr else ''}"
        try:
            p = subprocess.run([sys.executable, "-m", "server", "--workers", "0", "--port", str(free_port()), *db],
                               cwd=root, capture_output=True, text=True, timeout=cap_s)  # fmt: skip
            out["--workers 0"] = f"exit {p.returncode}"
        except subprocess.TimeoutExpired:
            out["--workers 0"] = f"still running after {cap_s:g} s"
        proc = subprocess.Popen([sys.executable, "-m", "server", "--port", "0", "--check-workers", "0", *db],
                                cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)  # fmt: skip
        deadline, said = time.monotonic() + 60, ""
        while time.monotonic() < deadline and health_of(proc) is None:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            said = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            said = proc.communicate()[0]
        line = next((l for l in said.splitlines() if "http://" in l), "")
        out["--port 0 says"] = line[:100] or "nothing"
        secret = "postgresql://ann:S3cretPw@127.0.0.1:1/runs"
        p = subprocess.run([sys.executable, "-m", "server", "--runs-db", secret, "--port", str(free_port())],
                           cwd=root, capture_output=True, text=True, timeout=60)  # fmt: skip
        out["password echoed"] = "S3cretPw" in p.stderr + p.stdout
    return out


def health_of(proc: subprocess.Popen) -> int | None:
    """The port a --port 0 server listens on, found from /proc (what the old server never said), or None."""
    try:
        inodes = {os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")}
    except OSError:
        return None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and f"socket:[{fields[9]}]" in inodes:  # LISTEN
            return int(fields[1].split(":")[1], 16)
    return None
