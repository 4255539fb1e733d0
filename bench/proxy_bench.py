"""A class of a thousand: N students in lockstep on one config, straight to the API processes and through nginx.

Starts N API processes (python -m server, one worker each) and Debian's nginx rendered from
deploy/nginx.conf.template in front of them, then lets the class step through the atomic schedule twice, each
time on a config nobody asked for yet (so both runs start cold): "direct" spreads the students over the API
processes, "proxy" sends them all through nginx. Every student is one keep-alive connection with no pause
between requests (the state and one tensor per step, as api_bench.py's "ahead"). Prints p50 / p99 / errors
side by side, the share of nginx's answers that came from its cache, and whether the client kept up: its CPU
time against the wall time and how late its event loop woke (a late loop inflates every latency it measures).
Then the class comes back ("revisit", both ways): each student asks for the same answers again with the ETags
it got (If-None-Match, as a browser revalidating its copies once their max-age is past), and the share of 304s
is counted. With --client h2load the students are nghttp2's h2load (C, one thread by default; Debian's
nghttp2-client) instead of this script's asyncio client: each of its clients is a student, on one keep-alive
HTTP/1.1 connection, asking for the same 42 URLs in the same order; latencies come from its per-request log
(no per-step split, no revisit), so that the load generator takes less of the 2 cores the servers need.
Not a test: machines are noisy.
Usage: python bench/proxy_bench.py [--students 1000] [--api 2] [--nginx-workers auto] [--think 0] [--encoding ...]

With --class-checks, the class checks too: each student, from a loopback address of its own, asks for each step's
state and tensor and then checks step 1 (a slip or the answer, in turn), straight to the API processes; the run
without a class and the run with a class code alternate (--rounds each) on the same servers, and the explorer's
p99 is printed side by side (the attempts of the class are written off the request path; the teacher's page
is open on the class's live stream meanwhile).
Usage: python bench/proxy_bench.py --class-checks [--students 1000] [--steps 21] [--rounds 2] [--check-workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from api_bench import SCENARIOS, RawClient, free_port, percentile, start_server  # noqa: E402

from deploy.render_nginx import prepare, render  # noqa: E402

NGINX = "/usr/sbin/nginx"
LECTURE_DATA = ROOT.parent / "shared" / "data" / "names.txt"
TIMEOUT = 30.0  # seconds; a request not answered by then counts as an error
BROWSER = "gzip, deflate, br, zstd"  # Chromium's Accept-Encoding


class EncodedClient(RawClient):
    """RawClient asking for a compressed answer as a browser does; the body is counted, not decoded."""

    accept_encoding = BROWSER

    async def get(self, url: str, etag: str | None = None) -> tuple[int, bytes, str | None]:
        """(status, body, ETag); with `etag`, a conditional request (If-None-Match)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        condition = f"If-None-Match: {etag}\r\n" if etag else ""
        request = f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: {self.accept_encoding}\r\n{condition}\r\n"
        self.writer.write(request.encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if status == 304:  # no body
            return status, b"", headers.get("etag")
        return status, await self.reader.readexactly(int(headers["content-length"])), headers.get("etag")


class CheckingClient(EncodedClient):
    """EncodedClient from a loopback address of its own (the server's per-client bounds hold per student), which
    also POSTs checks."""

    def __init__(self, port: int, address: str) -> None:
        super().__init__(port)
        self.address = address

    async def connect(self) -> None:
        if self.writer is None:
            address = (self.address, 0)
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=address)

    async def get(self, url: str, etag: str | None = None) -> tuple[int, bytes, str | None]:
        await self.connect()
        return await super().get(url, etag)

    async def post(self, url: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        await self.connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            f"POST {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), headers, await self.reader.readexactly(int(headers["content-length"]))


# step 1's answer, and its slip (no /n): what the checking students send, in turn
CHECKS = (
    "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0",
    "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n",
)


def student_address(i: int) -> str:
    """Student i's own loopback address (127.1.0.1, 127.1.0.2, ...): a client of its own to the server."""
    return f"127.1.{i // 250}.{i % 250 + 1}"


async def teacher_page(port: int, code: str, token: str, stop: asyncio.Event) -> int:
    """The class page's live stream, open until `stop`: how many summaries it was sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/classes/{code}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    received = b""
    try:
        while not stop.is_set():
            try:
                received += await asyncio.wait_for(reader.read(65536), 0.5)
            except TimeoutError:
                continue
    finally:
        writer.close()
    return received.count(b"event: summary")


async def lockstep_checks(
    ports: list[int], n: int, seed: int, nodes: list[str], steps: int, code: str | None, token: str = ""
) -> dict:
    """n students, each from its own address, step through `steps` steps: the explorer's state and tensor, then a
    check of step 1 (in a class when `code` is given, its teacher's page open with `token`)."""
    explorer: list[float] = []
    checks: list[float] = []
    statuses: collections.Counter = collections.Counter()
    recorded: collections.Counter = collections.Counter()
    errors: list[str] = []

    async def student(i: int) -> None:
        client = CheckingClient(ports[i % len(ports)], student_address(i))
        about = {"class": code, "student": f"bench-student-{i:05d}"} if code else {}
        try:
            for step in range(steps):
                node = nodes[min(step, len(nodes) - 1)]
                for url in (f"/api/state?seed={seed}&step={step}", f"/api/tensor/{node}?seed={seed}&step={step}"):
                    t0 = time.perf_counter()
                    status, body, _ = await asyncio.wait_for(client.get(url), TIMEOUT)
                    explorer.append(time.perf_counter() - t0)
                    if status != 200:
                        errors.append(f"{status} {url} {body[:120]!r}")
                body = json.dumps({"step": 1, "seed": seed, "code": CHECKS[(i + step) % 2], **about}).encode()
                t0 = time.perf_counter()
                status, headers, answer = await asyncio.wait_for(client.post("/api/check", body), TIMEOUT)
                checks.append(time.perf_counter() - t0)
                statuses[status] += 1
                recorded[headers.get("x-class-attempt", "-")] += 1
                if status not in (200, 429, 503):  # a full check queue says so (Retry-After): the student goes on
                    errors.append(f"{status} /api/check {answer[:120]!r}")
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
            errors.append(f"student {i}: {e!r}")
        finally:
            client.close()

    stop = asyncio.Event()
    teacher = asyncio.create_task(teacher_page(ports[0], code, token, stop)) if code else None
    t0 = time.perf_counter()
    await asyncio.gather(*(student(i) for i in range(n)))
    wall = time.perf_counter() - t0
    stop.set()
    summaries = await teacher if teacher else 0
    return {"explorer": explorer, "checks": checks, "statuses": statuses, "recorded": recorded, "errors": errors,
            "wall": wall, "summaries": summaries}  # fmt: skip


def class_scenario(args: argparse.Namespace, data: list[str]) -> None:
    """The class checks with and without a class code, in alternating rounds on the same servers: p99 side by side."""
    state = tempfile.TemporaryDirectory()
    db = str(Path(state.name) / "runs.sqlite3")  # one database for the API processes, as --workers shares one
    ports = [free_port() for _ in range(args.api)]
    servers = [start_server(p, 1, "--check-workers", str(args.check_workers), "--runs-db", db, *data) for p in ports]
    try:
        made = httpx.post(f"http://127.0.0.1:{ports[0]}/api/classes", json={"title": "bench"}, timeout=30).json()
        time.sleep(args.settle)
        load_before = os.getloadavg()
        runs: dict[str, list[dict]] = {"without a class": [], "with a class code": []}
        for k in range(args.rounds):  # ABBA: neither variant always runs first
            order = list(runs) if k % 2 == 0 else list(runs)[::-1]
            for j, name in enumerate(order):
                code = made["code"] if name == "with a class code" else None
                seed = 80_001 + 2 * k + j  # cold, as a class's first visit
                runs[name].append(asyncio.run(lockstep_checks(ports, args.students, seed, SCENARIOS["ahead"],
                                                              args.steps, code, made["teacher_token"])))  # fmt: skip
        time.sleep(2)  # the writer's last batch
        auth = {"Authorization": f"Bearer {made['teacher_token']}"}
        summary = httpx.get(f"http://127.0.0.1:{ports[0]}/api/classes/{made['code']}", headers=auth, timeout=30).json()
    finally:
        for s in servers:
            s.terminate()
            s.wait(timeout=10)
        state.cleanup()

    print(
        f"{args.students} students, each from its own address, {args.steps} steps x (state + tensor + a check of "
        f"step 1), no pause; {args.api} API processes with {args.check_workers} check worker(s) each, one SQLite "
        f"runs database; {args.rounds} rounds of each, alternating; cores: {os.cpu_count()}; load average before: "
        f"{load_before[0]:.1f}, after: {os.getloadavg()[0]:.1f}\n"
    )
    print(f"{'measure':40s} {'without':>10s} {'with code':>10s} {'ratio':>7s}")

    def pooled(name: str, key: str) -> list[float]:
        return [t for r in runs[name] for t in r[key]]

    for label, key, q in (("explorer p50 (ms)", "explorer", 50), ("explorer p99 (ms)", "explorer", 99),
                          ("check p50 (ms)", "checks", 50), ("check p99 (ms)", "checks", 99)):  # fmt: skip
        a, b = (percentile(pooled(name, key), q) for name in runs)
        print(f"{label:40s} {a:10.2f} {b:10.2f} {b / a:7.3f}")
    for name, rounds in runs.items():
        p99s = ", ".join(f"{percentile(r['explorer'], 99):.0f}" for r in rounds)
        statuses = sum((r["statuses"] for r in rounds), collections.Counter())
        recorded = sum((r["recorded"] for r in rounds), collections.Counter())
        errors = [e for r in rounds for e in r["errors"]]
        summaries = sum(r["summaries"] for r in rounds)
        print(f"{name}: explorer p99 per round {p99s} ms; checks {dict(statuses)}; X-Class-Attempt "
              f"{dict(recorded)}; the teacher's page got {summaries} summaries; {len(errors)} errors"
              + (f" (first: {errors[0]})" if errors else ""))  # fmt: skip
    attempts = sum(s["attempts"] for s in summary.get("steps", []))
    print(f"the class's summary counts {attempts} attempts")


def start_nginx(state_dir: Path, listen: int, api: list[int], workers: str, lock_timeout: str) -> subprocess.Popen:
    prepare(state_dir)
    conf = state_dir / "nginx.conf"
    upstreams = [f"127.0.0.1:{p}" for p in api]
    conf.write_text(render(f"127.0.0.1:{listen}", state_dir, upstreams, None, workers, False, lock_timeout))
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(state_dir), "-e", str(state_dir / "error.log")])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{listen}/api/health", timeout=2)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    sys.exit("nginx did not start:\n" + (state_dir / "error.log").read_text())


async def loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late a 10 ms sleep wakes: the client's own delay, added to every latency it measures."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - t0 - 0.01)


async def lockstep(
    ports: list[int], n: int, seed: int, nodes: list[str], think: float, etags: list[dict[str, str]] | None = None
) -> dict:
    """n students, student i on ports[i % len(ports)], all on one config (the lecture's but the seed);
    each reads a step for `think` seconds before the next. With `etags` (a run's own, returned), each student
    asks on condition of the ETag it got for each URL."""
    latencies: list[tuple[int, float]] = []  # (step, seconds)
    errors: list[str] = []
    got: list[dict[str, str]] = [{} for _ in range(n)]  # each student's ETags, by URL
    statuses: collections.Counter = collections.Counter()

    async def student(i: int) -> None:
        port = ports[i % len(ports)]
        client = EncodedClient(port)
        try:
            for step in range(21):
                node = nodes[min(step, len(nodes) - 1)]
                for url in (f"/api/state?seed={seed}&step={step}", f"/api/tensor/{node}?seed={seed}&step={step}"):
                    t0 = time.perf_counter()
                    try:
                        etag = etags[i].get(url) if etags else None
                        status, body, got[i][url] = await asyncio.wait_for(client.get(url, etag), TIMEOUT)
                        statuses[status] += 1
                        if status not in ((200, 304) if etag else (200,)):
                            errors.append(f"{status} {url} {body[:120]!r}")
                    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as e:
                        errors.append(f"{url} {e!r}")
                        client.close()
                        client = EncodedClient(port)
                    latencies.append((step, time.perf_counter() - t0))
                if think:
                    await asyncio.sleep(think)
        finally:
            client.close()

    stop, lags = asyncio.Event(), []
    ticker = asyncio.create_task(loop_lag(stop, lags))
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(student(i) for i in range(n)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stop.set()
    await ticker
    return {"latencies": latencies, "errors": errors, "wall": wall, "client_cpu": cpu, "lags": lags, "etags": got,
            "statuses": statuses}  # fmt: skip


def lockstep_h2load(ports: list[int], n: int, seed: int, nodes: list[str], threads: int, folder: Path) -> dict:
    """n students as h2load clients (n / len(ports) on each port, one h2load each, at once), each asking for the
    schedule's 42 URLs in order on one HTTP/1.1 connection."""
    procs = []
    cpu0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    for k, port in enumerate(ports):
        clients = n // len(ports) + (k < n % len(ports))
        urls = folder / f"urls-{seed}-{port}.txt"
        urls.write_text("".join(
            f"http://127.0.0.1:{port}{path}?seed={seed}&step={step}\n"
            for step in range(21) for path in ("/api/state", f"/api/tensor/{nodes[min(step, len(nodes) - 1)]}")
        ))  # fmt: skip
        log = folder / f"h2load-{seed}-{port}.log"
        encoding = f"Accept-Encoding: {EncodedClient.accept_encoding}"
        cmd = ["h2load", "--h1", "-n", str(42 * clients), "-c", str(clients), "-t", str(threads), "-m", "1",
               "-i", str(urls), "-H", encoding, "--log-file", str(log)]  # fmt: skip
        procs.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), log))
    outputs = [proc.communicate(timeout=600)[0] for proc, _ in procs]
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    latencies, errors, statuses = [], [], collections.Counter()
    for (_, log), output in zip(procs, outputs, strict=True):
        for line in log.read_text().splitlines():
            _, status, micros = line.split("\t")[:3]
            statuses[int(status)] += 1
            latencies.append((-1, int(micros) / 1e6))
            if status != "200":
                errors.append(f"status {status}")
        if (done := re.search(r"requests: .*", output)) and "0 failed, 0 errored" not in output:
            errors.append(f"h2load: {done[0]}")
        if connect := re.search(r"time for connect: .*", output):  # its latencies start once connected
            print(f"h2load on port {log.stem.rsplit('-', 1)[1]}: {' '.join(connect[0].split())} (min max mean sd)")
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return {"latencies": latencies, "errors": errors, "wall": wall, "client_cpu": cpu, "lags": [], "etags": None,
            "statuses": statuses}  # fmt: skip


def proxy_log(lines: list[str], seed: int) -> tuple[collections.Counter, list[float]]:
    """nginx's cache status and request time (first byte read to last byte sent) of each request on `seed`."""
    pattern = re.compile(rf"seed={seed}&.*cache=(\S+) .* rt=([\d.]+)")
    matches = [m for line in lines if (m := pattern.search(line))]
    return collections.Counter(m[1] for m in matches), [float(m[2]) for m in matches]


def p99_or_nan(seconds: list[float]) -> float:
    """The p99 in ms; nan where the client did not measure it (h2load: no steps, no loop)."""
    return percentile(seconds, 99) if seconds else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=1000)
    parser.add_argument("--api", type=int, default=2, help="API processes (one worker each)")
    parser.add_argument("--nginx-workers", default="auto", help="nginx worker processes (auto: one per core)")
    parser.add_argument("--data", default=str(LECTURE_DATA if LECTURE_DATA.exists() else ""), help="names file")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait after start-up")
    parser.add_argument("--lock-timeout", default="100ms", help="nginx's proxy_cache_lock_timeout")
    parser.add_argument("--think", type=float, default=0.0, help="seconds each student reads a step (0: no pause)")
    parser.add_argument("--encoding", default=BROWSER, help="the students' Accept-Encoding ('identity': none)")
    parser.add_argument("--client", choices=("python", "h2load"), default="python", help="the load generator")
    parser.add_argument("--h2load-threads", type=int, default=1, help="h2load's threads (each takes a core)")
    parser.add_argument("--class-checks", action="store_true",
                        help="each student also checks step 1 at each step, without and with a class code, "
                        "straight to the API processes: the explorer's p99 side by side")  # fmt: skip
    parser.add_argument("--steps", type=int, default=21, help="--class-checks: steps each student takes")
    parser.add_argument("--rounds", type=int, default=2, help="--class-checks: rounds of each variant")
    parser.add_argument("--check-workers", type=int, default=1, help="--class-checks: sandboxes per API process")
    args = parser.parse_args()
    if args.class_checks:
        EncodedClient.accept_encoding = args.encoding
        return class_scenario(args, ["--data", args.data] if args.data else [])
    if not Path(NGINX).exists():
        sys.exit("Debian's nginx is required: apt-get install -y nginx (make browser-deps)")
    if args.client == "h2load" and args.think:
        sys.exit("--client h2load asks with no pause between steps: --think 0")
    EncodedClient.accept_encoding = args.encoding
    data = ["--data", args.data] if args.data else []
    # no challenge checks in this scenario: no sandbox processes to share the cores with
    ports = [free_port() for _ in range(args.api)]
    servers = [start_server(p, 1, "--check-workers", "0", *data) for p in ports]
    state = tempfile.TemporaryDirectory()
    state_dir = Path(state.name)
    listen = free_port()
    nginx = start_nginx(state_dir, listen, ports, args.nginx_workers, args.lock_timeout)
    time.sleep(args.settle)
    load_before = os.getloadavg()
    nodes = SCENARIOS["ahead"]
    runs: dict[str, dict] = {}
    try:
        # a fresh seed per run: each starts as cold as a class's first visit
        if args.client == "h2load":
            for name, targets, seed in (("direct", ports, 70_001), ("proxy", [listen], 70_002)):
                runs[name] = lockstep_h2load(targets, args.students, seed, nodes, args.h2load_threads, state_dir)
        else:
            runs["direct"] = asyncio.run(lockstep(ports, args.students, 70_001, nodes, args.think))
            runs["proxy"] = asyncio.run(lockstep([listen], args.students, 70_002, nodes, args.think))
        time.sleep(2)  # nginx flushes its log buffers within 1 s: what is written now is the proxy run's
        proxy_lines = len((state_dir / "access.log").read_text().splitlines())
        # the class comes back, each student with the ETags it got: revalidation (the cache entries are fresh)
        revisits = {}
        if args.client == "python":
            revisits = {
                "direct": asyncio.run(lockstep(ports, args.students, 70_001, nodes, 0, runs["direct"]["etags"])),
                "proxy": asyncio.run(lockstep([listen], args.students, 70_002, nodes, 0, runs["proxy"]["etags"])),
            }
    finally:
        nginx.send_signal(signal.SIGQUIT)  # graceful: flushes the access log
        nginx.wait(timeout=30)
        for s in servers:
            s.terminate()
            s.wait(timeout=10)
    log = (state_dir / "access.log").read_text().splitlines()
    statuses, nginx_times = proxy_log(log[:proxy_lines], 70_002)
    revisit_statuses, _ = proxy_log(log[proxy_lines:], 70_002)
    state.cleanup()

    print(
        f"client: {args.client}{f' ({args.h2load_threads} thread)' if args.client == 'h2load' else ''}; "
        f"{args.students} students in lockstep, one config, 21 steps x (state + tensor), {args.think} s between steps, "
        f"Accept-Encoding: {args.encoding}; "
        f"{args.api} API processes; nginx workers: {args.nginx_workers}, lock timeout {args.lock_timeout}; "
        f"cores: {os.cpu_count()}; "
        f"load average before: {load_before[0]:.1f}, after: {os.getloadavg()[0]:.1f}\n"
    )
    print(f"{'measure':34s} {'direct':>10s} {'proxy':>10s} {'target':>8s}")
    rows = [
        ("p50 (ms)", lambda r: percentile([t for _, t in r["latencies"]], 50), None),
        ("p99 (ms)", lambda r: percentile([t for _, t in r["latencies"]], 99), 250),
        ("  p99 of step 0 (connect, cold)", lambda r: p99_or_nan([t for s, t in r["latencies"] if s == 0]), None),
        ("  p99 of steps 1-20", lambda r: p99_or_nan([t for s, t in r["latencies"] if s > 0]), None),
        ("max (ms)", lambda r: percentile([t for _, t in r["latencies"]], 100), None),
        ("errors", lambda r: len(r["errors"]), 0),
        ("requests / s", lambda r: len(r["latencies"]) / r["wall"], None),
        ("client CPU / wall", lambda r: r["client_cpu"] / r["wall"], None),
        ("client loop lag p99 (ms)", lambda r: p99_or_nan(r["lags"]), None),
    ]
    for name, measure, target in rows:
        values = [measure(runs[k]) for k in ("direct", "proxy")]
        print(f"{name:34s} {values[0]:10.2f} {values[1]:10.2f} {(str(target) if target is not None else '-'):>8s}")
    total = sum(statuses.values())
    share = ", ".join(f"{k} {v / total:.1%}" for k, v in statuses.most_common()) if total else "no log lines"
    print(f"\nnginx cache status of the proxy run's {total} requests: {share}")
    if revisits:
        print("the class comes back with its ETags (If-None-Match, no pause):")
    for name, r in revisits.items():
        n = sum(r["statuses"].values())
        times = [t for _, t in r["latencies"]]
        print(
            f"  {name:6s}: {r['statuses'][304] / n:.1%} of {n} answers 304, {len(r['errors'])} errors; "
            f"p50 {percentile(times, 50):.2f} ms, p99 {percentile(times, 99):.2f} ms"
        )
    if revisits:
        total = sum(revisit_statuses.values())
        share = ", ".join(f"{k} {v / total:.1%}" for k, v in revisit_statuses.most_common()) if total else "none"
        print(f"nginx cache status of the proxy revisit's {total} requests: {share}")
    if nginx_times:  # what the students would see from a client that never lags (no kernel queues counted)
        print(
            f"nginx's own request time (its log): p50 {percentile(nginx_times, 50):.2f} ms, "
            f"p99 {percentile(nginx_times, 99):.2f} ms, max {percentile(nginx_times, 100):.2f} ms"
        )
    for name, r in [*runs.items(), *(("revisit " + k, v) for k, v in revisits.items())]:
        for sample in r["errors"][:3]:
            print(f"error ({name}):", sample)


if __name__ == "__main__":
    main()
