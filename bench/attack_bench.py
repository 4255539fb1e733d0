"""Attack bench: the abuse cases of docs/reliability.md, each against a live server on 127.0.0.1, before and after.

Starts `python -m server` from each source tree given (--before DIR: e.g. a checkout of the previous
release; the tree this script sits in is always measured, as "after") on a free loopback port and
prints one row per attack with what each tree did: status code, bytes, seconds, resident memory.
Every attack is bounded (sizes, counts and waits are capped) so the old code's failures stay short.
Not a test: the figures go to docs/reliability.md's table.
Usage: python bench/attack_bench.py [--before DIR] [--only 1,2,8]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attacks_code as code
import attacks_edges as edges
import attacks_runs as runs
import httpx
from attack_kit import (
    HOST,
    ROOT,
    Server,
    free_port,
    from_address,
    health_probe,
    hwm_mb,
    in_threads,
    refused_heads,
    rss_mb,
    spawned,
    status,
)

# --- the attacks: each takes a started server and returns {measure: value} --------------------------


def huge_check(server: Server) -> dict[str, object]:
    """Finding 1: a (32768,1,1) answer for a (32,27) gradient, diffed by broadcasting."""
    code = "a = hprebn.view(1, 2048) + hprebn[0:16, 0:1]\ndlogprobs = a.view(32768, 1, 1)"
    httpx.post(f"{server.url}/api/check", json={"step": 1, "code": "dlogprobs = logprobs * 0"}, timeout=120)  # warm
    before = rss_mb(server.proc.pid)
    with health_probe(server.url) as health:
        t0 = time.perf_counter()
        r = httpx.post(f"{server.url}/api/check", json={"step": 1, "code": code}, timeout=300)
        took = time.perf_counter() - t0
    return {
        "status": r.status_code,
        "bytes": len(r.content),
        "s": round(took, 2),
        "health max s": round(max(health, default=0.0), 3),
        "RSS +MiB": round(hwm_mb(server.proc.pid) - before),
    }


def chunked_upload(url: str, path: str, total: int, chunk: int = 64 * 1024) -> tuple[int | None, int, int, float]:
    """POST `total` bytes of a JSON body with Transfer-Encoding: chunked, stopping once an answer comes.

    Returns (status or None, bytes sent, response bytes, seconds)."""
    import select

    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    body_start = b'{"step": 1, "code": "'
    sent, t0 = 0, time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=120) as sock:
        sock.sendall(head)
        try:
            sock.sendall(b"%x\r\n%s\r\n" % (len(body_start), body_start))
            while sent < total:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered before the body ended
                sock.sendall(b"%x\r\n%s\r\n" % (chunk, b"x" * chunk))
                sent += chunk
            else:
                tail = b'"}'
                sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
        except OSError:
            pass  # the server closed the connection: read its answer
        response = b""
        try:
            while True:
                part = sock.recv(1 << 20)
                if not part:
                    break
                response += part
                if b"\r\n\r\n" in response:
                    head_end = response.index(b"\r\n\r\n")
                    headers = response[:head_end].decode("latin-1").lower()
                    if "content-length:" in headers:
                        length = int(headers.split("content-length:")[1].split()[0])
                        if len(response) >= head_end + 4 + length:
                            break
        except OSError:
            pass
    took = time.perf_counter() - t0
    status = int(response.split()[1]) if response.startswith(b"HTTP/1.1") else None
    return status, sent, len(response), took


def chunked_body(server: Server) -> dict[str, object]:
    """Finding 2: a 64 MiB body sent with Transfer-Encoding: chunked (the 64 KiB cap read Content-Length only)."""
    before = rss_mb(server.proc.pid)
    status, sent, answer, took = chunked_upload(server.url, "/api/check", 64 << 20)
    return {
        "status": status,
        "MiB sent": round(sent / 2**20, 1),
        "response bytes": answer,
        "s": round(took, 2),
        "RSS +MiB": round(hwm_mb(server.proc.pid) - before),
    }


def echoed_input(server: Server) -> dict[str, object]:
    """Finding 2: a 60 kB `code` under the body cap; the 422 echoed it whole."""
    r = httpx.post(f"{server.url}/api/check", json={"step": 1, "code": "x" * 60_000}, timeout=60)
    return {"status": r.status_code, "bytes": len(r.content)}


def unencodable(server: Server) -> dict[str, object]:
    """Finding 8: values JSON parses but cannot write back (1e400, NaN, a lone surrogate), echoed by a 422."""
    bodies = [
        ("/api/check", b'{"step": 1e400, "code": 1}'), ("/api/runs", b'{"lr": 1e400}'),
        ("/api/runs", b'{"seed": NaN}'), ("/api/check", b'{"step": 1, "code": "x", "mode": "\\ud800"}'),
        ("/api/runs", b'{"backward": "\\ud800"}'),
    ]  # fmt: skip
    statuses = []
    for path, body in bodies:
        r = httpx.post(f"{server.url}{path}", content=body, headers={"content-type": "application/json"}, timeout=60)
        statuses.append(f"{r.status_code}{'' if r.headers['content-type'] == 'application/json' else ' text'}")
    return {"statuses": " ".join(statuses)}


def cross_site(server: Server) -> dict[str, object]:
    """Finding 5: a cancel sent as any web page can make a browser send it, and a DNS-rebound DELETE."""
    body = {"max_steps": 1000, "keep_running": True}
    (run,) = httpx.post(f"{server.url}/api/runs", json=body, timeout=60).json()["runs"]
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    cancel = httpx.post(f"{server.url}/api/runs/{run['id']}/cancel", headers=evil, timeout=60)
    rebound = httpx.delete(f"{server.url}/api/runs/{run['id']}", headers={"Host": "rebind.attacker.example"})
    return {"cancel": cancel.status_code, "rebound DELETE": rebound.status_code}


def runs_housekeeping(server: Server) -> dict[str, object]:
    """Finding 10: HEAD on a GET endpoint; /api/runs after 200 runs created and cancelled."""
    head = httpx.head(f"{server.url}/api/health", timeout=30).status_code
    with httpx.Client(timeout=60) as c:
        for _ in range(200):
            (run,) = c.post(f"{server.url}/api/runs", json={"max_steps": 1000}).json()["runs"]
            c.post(f"{server.url}/api/runs/{run['id']}/cancel")
        listed = c.get(f"{server.url}/api/runs")
    return {"HEAD": head, "/api/runs runs": len(listed.json()["runs"]), "bytes": len(listed.content)}


def read_only_db(root: Path) -> dict[str, object]:
    """Finding 10: a runs database the server cannot write (made immutable: this bench runs as root)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp, "runs.sqlite3")
        subprocess.run([sys.executable, "-c", f"import sqlite3; sqlite3.connect({str(db)!r}).close()"], check=True)
        init = "from server.runs.store import RunStore; import sys; RunStore(sys.argv[1])"
        subprocess.run([sys.executable, "-c", init, str(db)], cwd=root, check=True)
        subprocess.run(["chattr", "+i", str(db)], check=True)
        try:
            port = free_port()
            cmd = [sys.executable, "-m", "server", "--host", HOST, "--port", str(port), "--runs-db", str(db)]
            proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(300):  # bounded: 60 s
                if proc.poll() is not None:
                    return {"start": f"exit {proc.returncode}"}
                try:
                    httpx.get(f"http://{HOST}:{port}/api/health", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            r = httpx.post(f"http://{HOST}:{port}/api/runs", json={"max_steps": 1000}, timeout=30)
            proc.terminate()
            proc.wait(timeout=30)
            return {"start": "served", "POST /api/runs": r.status_code}
        finally:
            subprocess.run(["chattr", "-i", str(db)], check=True)


def worker_failures(server: Server) -> dict[str, object]:
    """Finding 3: a 70-dimensional view (its diff failed to serialize), then 40 largest-config checks
    with different seeds (16 passes kept ran a worker out of its memory limit)."""
    dims = ", ".join(["1"] * 68)
    code = f"dlogprobs = logprobs.view({dims}, 32, 27)"
    r = httpx.post(f"{server.url}/api/check", json={"step": 1, "code": code}, timeout=120)
    answer = r.json()
    said = f"{r.status_code} {(answer.get('detail') or answer['results'][0]['feedback'][0])[:60]!r}"
    largest = {"batch_size": 256, "n_hidden": 512, "n_embd": 64, "block_size": 8, "dtype": "float64"}
    code = "demb = dembcat.view(emb.shape)"
    refused = []
    with httpx.Client(timeout=120) as c:
        for seed in range(40):
            r = c.post(f"{server.url}/api/check", json={"step": 19, "code": code, "seed": seed, **largest})
            if r.status_code != 200:
                refused.append(r.json()["detail"])
    return {
        "70-dim view": said,
        "check workers' RSS MiB": round(sum(rss_mb(pid) for pid in spawned(server.proc.pid))),
        "largest checks refused": f"{len(refused)}/40" + (f" {refused[0][:60]!r}" if refused else ""),
    }


def changed_data(root: Path) -> dict[str, object]:
    """Finding 6: the --data file gets a line with a new character after start-up, then goes away."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "names.txt")
        data.write_bytes((ROOT / "data" / "names.txt").read_bytes())
        with Server(root, "--data", str(data)) as server, httpx.Client(timeout=120) as c:
            with data.open("a") as f:
                f.write("zoë\n")
            (run,) = c.post(f"{server.url}/api/runs", json={"max_steps": 2000, "lr_decay_step": 1000}).json()["runs"]
            for _ in range(600):  # bounded: 120 s
                if c.get(f"{server.url}/api/runs/{run['id']}").json()["status"] not in ("queued", "running"):
                    break
                time.sleep(0.2)
            tensor = status(lambda: c.get(f"{server.url}/api/tensor/C", params={"run": run["id"], "n_hidden": 200}))
            data.unlink()
            for worker in spawned(server.proc.pid):  # a check worker replaced after the file went
                os.kill(worker, 9)
            code = "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"
            checks = [status(lambda: c.post(f"{server.url}/api/check", json={"step": 1, "code": code})) for _ in "123"]
        return {"/api/tensor/C?run": tensor, "checks after the file went": " ".join(checks)}


def slow_cancel(server: Server) -> dict[str, object]:
    """Finding 9: cancel a largest-config run that checks every step; then a 3000-step run checked every step."""
    largest = {"batch_size": 256, "n_hidden": 512, "n_embd": 64, "block_size": 8, "check_every": 1}
    with httpx.Client(timeout=120) as c:
        (run,) = c.post(f"{server.url}/api/runs", json={**largest, "keep_running": True}).json()["runs"]
        url = f"{server.url}/api/runs/{run['id']}"
        for _ in range(600):  # bounded: the first progress event, 120 s at most
            if c.get(url).json()["step"] > 0:
                break
            time.sleep(0.2)
        t0 = time.perf_counter()
        c.post(f"{url}/cancel")
        for _ in range(1200):  # bounded: 120 s
            if c.get(url).json()["status"] != "running":
                break
            time.sleep(0.1)
        cancelled_s = time.perf_counter() - t0
        body = {"max_steps": 3000, "lr_decay_step": 1500, "check_every": 1, "keep_running": True}
        (run,) = c.post(f"{server.url}/api/runs", json=body).json()["runs"]
        url = f"{server.url}/api/runs/{run['id']}"
        for _ in range(1200):  # bounded: 240 s
            if c.get(url).json()["status"] not in ("queued", "running"):
                break
            time.sleep(0.2)
        detail = c.get(url)
    return {
        "cancel -> ended s": round(cancelled_s, 2),
        "check events": len(detail.json()["history"]["checks"]),
        "detail bytes": len(detail.content),
    }


LARGEST = {"batch_size": 256, "n_hidden": 512, "n_embd": 64, "block_size": 8, "dtype": "float64"}
SLOW_CODE = "a = W1 @ W1 @ W1 @ W1 @ W1 @ W1 @ W1 @ W1\n" * 10  # ~1 s of matmuls, under the 3 s timeout


def starvation(server: Server) -> dict[str, object]:
    """Finding 4: one client's 30 slow checks, then 60, against another's trivial check and GET /api/runs;
    20 largest-config /api/tensor/hprebn from one client against another's; a 40-byte repeated tuple."""
    url = server.url
    slow = {"step": 1, "code": SLOW_CODE, **LARGEST}
    trivial = {"step": 1, "code": "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"}
    out: dict[str, object] = {}
    with from_address("127.0.0.1") as me, from_address("127.0.0.2") as them:
        me.post(f"{url}/api/check", json=trivial)  # warm: the lecture's pass in both workers
        t0 = time.perf_counter()
        one = me.post(f"{url}/api/check", json=slow)
        out["one slow check s"] = round(time.perf_counter() - t0, 2)

        def timed(call: Callable[[], httpx.Response]) -> tuple[int, float]:
            t = time.perf_counter()
            status = call().status_code
            return status, time.perf_counter() - t

        def victim() -> tuple[int, float]:
            return timed(lambda: me.post(f"{url}/api/check", json=trivial))

        attacker = [lambda: them.post(f"{url}/api/check", json=slow) for _ in range(30)]
        results = in_threads([*attacker, lambda: (time.sleep(0.5), victim())[1]])
        refused = sum(1 for r in results[:30] if isinstance(r, httpx.Response) and r.status_code in (429, 503))
        out["30 slow checks: refused"] = refused
        out["the other's check"] = "{} in {:.2f} s".format(*results[-1])  # type: ignore[misc]
        attacker = [lambda: them.post(f"{url}/api/check", json=slow) for _ in range(60)]
        runs = in_threads([*attacker, lambda: (time.sleep(0.5), timed(lambda: me.get(f"{url}/api/runs")))[1]])
        out["GET /api/runs beside 60 checks"] = "{} in {:.2f} s".format(*runs[-1])  # type: ignore[misc]
        hprebn = f"{url}/api/tensor/hprebn"  # the largest pass with its finite differences: ~0.5 s each
        large = [lambda s=s: them.get(hprebn, params={"seed": 100 + s, **LARGEST}) for s in range(20)]
        mine = lambda: (time.sleep(0.5), timed(lambda: me.get(hprebn, params={"seed": 7, **LARGEST})))[1]  # noqa: E731
        states = in_threads([*large, mine])
        out["large /api/tensor behind 20"] = "{} in {:.2f} s".format(*states[-1])  # type: ignore[misc]
        out["their 20: refused"] = sum(1 for r in states[:20] if isinstance(r, httpx.Response) and r.status_code == 429)
        t0 = time.perf_counter()
        r = me.post(f"{url}/api/check", json={"step": 1, "code": "t = logprobs.shape * 1000000"})
        out["shape * 1e6"] = f"{r.status_code} in {time.perf_counter() - t0:.2f} s"
    del one
    return out


def stream_flood(server: Server) -> dict[str, object]:
    """Finding 4: 800 event streams opened on one run (never read), then GET /api/runs."""
    (run,) = httpx.post(f"{server.url}/api/runs", json={"max_steps": 1_000_000}, timeout=60).json()["runs"]
    host, port = HOST, server.port
    request = f"GET /api/runs/{run['id']}/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    socks = []
    try:
        for _ in range(800):
            s = socket.create_connection((host, port), timeout=30)
            socks.append(s)
            try:
                s.sendall(request)
            except OSError:  # closed at once: past the connections one address may hold
                pass
        time.sleep(3)  # let the server take them all in
        times = []
        with from_address("127.0.0.2") as c:  # another client: the flood's address is held to its own share
            for _ in range(5):
                t0 = time.perf_counter()
                c.get(f"{server.url}/api/runs")
                times.append(time.perf_counter() - t0)
        refused = refused_heads(socks, (b"503", b"429"))
    finally:
        for s in socks:
            s.close()
    return {"GET /api/runs median s": round(sorted(times)[2], 3), "streams refused (503, 429)": refused}


def memory_load(root: Path) -> dict[str, object]:
    """Finding 7: 80 largest-config float64 /api/tensor/hprebn with different seeds, --cache-mb 512."""
    with Server(root, "--cache-mb", "512", "--check-workers", "0") as server, httpx.Client(timeout=300) as c:
        start = rss_mb(server.proc.pid)
        samples = []
        for seed in range(80):
            c.get(f"{server.url}/api/tensor/hprebn", params={"seed": seed, **LARGEST, "step": 20})
            if seed % 10 == 9:
                samples.append(round(rss_mb(server.proc.pid)))
        return {"RSS MiB at start": round(start), "every 10 requests": samples, "peak": round(hwm_mb(server.proc.pid))}


ATTACKS: dict[str, tuple[str, Callable[..., dict[str, object]]]] = {
    "1": ("/api/check, a (32768,1,1) answer for dlogprobs", huge_check),
    "2": ("/api/check, 64 MiB body, Transfer-Encoding: chunked", chunked_body),
    "2b": ("/api/check, a 60 kB `code` (422)", echoed_input),
    "3": ("check workers: a 70-dim view; 40 largest-config checks", worker_failures),
    "4": ("one client's checks and large passes against another's", starvation),
    "4b": ("800 event streams on one run, then GET /api/runs", stream_flood),
    "5": ("cross-site cancel (Origin: evil, text/plain); DELETE with Host: rebind", cross_site),
    "9": ("cancel a largest-config run checked every step; a 3000-step run checked every step", slow_cancel),
    "10": ("HEAD; /api/runs after 200 runs created and cancelled", runs_housekeeping),
    "10b": ("a read-only runs database", read_only_db),
    "6": ("--data changed after start-up, then removed", changed_data),
    "7": ("80 largest float64 /api/tensor/hprebn, other seeds, --cache-mb 512", memory_load),
    "8": ("1e400, NaN, a lone surrogate in 5 bodies", unencodable),
    # a learner's code: one set of rules for the check, the export and the compiled block
    "export": ("/api/export of code a check refuses (`range = chr`, then `range(111)`)", code.export_of_refused_code),
    "index-pairs": ("`z[i, j] = 1.0`, i (N,1) and j (1,N): 9.4e8 index pairs", code.broadcast_index_write),
    "cell-reruns": ("a cell's wrong-dim feedback after a 2,000-iteration loop", code.cell_feedback_reruns),
    "cmp-label": ("a lone surrogate in a `cmp` label", code.surrogate_cmp_label),
    "plus-x": ("Exercise 4 block with `junk = (+W1) * 0.0`", code.compiled_plus_x),
    "plus-xb": ("Exercise 4 block with `junk = (+Xb) * 0`, then the plain block", code.compiled_plus_xb),
    "layout": ("right code: `dh = (W2 @ dlogits.T).T`", code.compiled_layout),
    "negative-ix": ("the dC loop over `Xb - 27` (negative rows)", code.compiled_negative_entries),
    "ix-after-loop": ("`ix += 0` after the dC loop", code.compiled_ix_after_loop),
    "overlap": ("a scatter loop whose rows are its own table's", code.compiled_overlapping_rows),
    "data-loop": ("the dC loop's count read out of `Yb[0]`", code.compiled_data_loop_count),
    "unreached-write": ("`W1 *= 0.0` in a loop the check batch does not run", code.compiled_unreached_write),
    "later-error": ("`dC[ix * 2]`: an index past the table on a later batch", code.compiled_later_index_error),
    "expand-minus": ("`e[range(n), Yb] -= 1` through an `expand_as` view", code.compiled_expand_as_minus),
    # the server's edges
    "half-sent": ("3,000 connections that send only a request line", edges.idle_half_sent),
    "forwarded": ("six concurrent checks, six `X-Forwarded-For` from loopback", edges.forwarded_from_loopback),
    "q0-origin": ("`Accept-Encoding: gzip;q=0`; an `https` Origin on http", edges.gzip_q0_and_origin_scheme),
    "ctrl-c": ("Ctrl-C 1 s after start", edges.ctrl_c_at_start),
    "flags": ("`--port 99999`, `--workers 0`, `--port 0`, a password in `--runs-db`", edges.bad_flags),
    # training runs: bounded, owned, shared fairly
    "run-bound": ("1,000,000 steps of the largest config; of the lecture's", runs.run_bound),
    "runs-per-client": ("one address asks for ten 1,000,000-step runs, then another for one", runs.runs_per_client),
    "stranger": ("another address cancels and deletes a run (no token, a guessed one)", runs.stranger_cancel),
    "stream-hog": ("one address opens 200 event streams; a run's owner then opens its own", runs.stream_hog),
    "two-servers": ("two servers on one SQLite file; the first stops while the second's run trains", runs.two_servers),
    "killed-training": ("`kill -9` of a run's training process", runs.killed_training),
}


# attacks that start the server themselves
NO_SERVER = {read_only_db, changed_data, memory_load, edges.ctrl_c_at_start, edges.bad_flags, runs.two_servers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="an older source tree to measure beside this one")
    parser.add_argument("--only", default="", help="comma-separated finding numbers (default: all)")
    args = parser.parse_args()
    chosen = [k for k in ATTACKS if not args.only or k in args.only.split(",")]
    trees = ([("before", args.before.resolve())] if args.before else []) + [("after", ROOT)]
    rows: dict[str, dict[str, dict[str, object]]] = {k: {} for k in chosen}
    for label, root in trees:
        for key in chosen:
            attack = ATTACKS[key][1]
            try:
                if attack in NO_SERVER:
                    rows[key][label] = attack(root)
                else:
                    with Server(root) as server:
                        rows[key][label] = attack(server)
            except Exception as e:  # noqa: BLE001 - one attack's failure is its row, not the end of the bench
                rows[key][label] = {"bench error": repr(e)[:200]}
            print(f"{key} {label}: {json.dumps(rows[key][label])}", file=sys.stderr, flush=True)
    print(f"| # | attack | {' | '.join(label for label, _ in trees)} |")
    print("|---|---|" + "---|" * len(trees))
    for key in chosen:
        cells = [", ".join(f"{k} {v}" for k, v in rows[key][label].items()) for label, _ in trees]
        print(f"| {key} | {ATTACKS[key][0]} | {' | '.join(cells)} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
