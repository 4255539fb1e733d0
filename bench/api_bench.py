"""API benchmark: cold/cached /api/state, cold /api/tensor, payload sizes, and N students on loopback.

Starts the real server (python -m server) on a free port and prints a table of measured times
beside their targets (ratio = measured / target; <= 1 meets it). Not a test: machines are noisy.
The students start together (each its own seed, so every pass and check is cold), step through
the atomic schedule with no pause and fetch the state and one tensor per step: a stress test.
Scenarios, run in turn on the same server: "ahead" fetches the node the next step works on,
"follow" the node each step just produced (every node, so every kind of finite-difference check);
"+ends" adds the page's prefetch of Run all's step on arrival (on a second connection, not timed).
Usage: python bench/api_bench.py [--students 100] [--workers 2] [--seeds 20] [--scenarios ahead,ahead+ends,follow]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server.net.packs import default_net  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES: list[str] = []  # the first errors of the load run, printed at the end
# the tensor each student fetches at step k (k = 0..20). "ahead": the node whose gradient step k+1 produces,
# through h, then hpreact; "follow": the node whose gradient step k just produced (the op's first input) --
# every node of the graph, so every kind of finite-difference check, batchnorm and embedding included
SCENARIOS = {
    "ahead": "logprobs probs counts_sum_inv counts_sum counts norm_logits logit_maxes logits h hpreact".split(),
    "follow": ["loss"] + [op.rules[0].target for op in default_net().backward_schedule("atomic")],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "server", "--port", str(port), "--workers", str(workers), *extra]
    log = tempfile.TemporaryFile("w+")  # not a pipe: nobody reads it while the benchmark runs
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    log.seek(0)
    sys.exit("server did not start:\n" + log.read())


def ms(seconds: float) -> float:
    return seconds * 1000


def percentile(seconds: list[float], q: float) -> float:
    ordered = sorted(seconds)
    return ms(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))])


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: one connection per student.

    httpx's async pool costs more CPU than the server under 100 connections on 2 cores, which
    would measure the client instead of the server.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, url: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
        body = await self.reader.readexactly(length)
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def timed_get(client: RawClient, url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    status, body = await client.get(url)
    if status != 200:
        raise RuntimeError(f"{url}: {status} {body[:200]!r}")
    return time.perf_counter() - t0, len(body)


async def single_client(port: int, seeds: int) -> dict[str, float]:
    out: dict[str, list[float]] = {"state_cold": [], "state_cached": [], "tensor_cold": [], "tensor_cached": []}
    sizes: dict[str, int] = {}
    c = RawClient(port)
    await c.get("/api/state?seed=1")  # warm up the process (imports, first kernels)
    for seed in range(1000, 1000 + seeds):
        t, sizes["state"] = await timed_get(c, f"/api/state?seed={seed}")
        out["state_cold"].append(t)
        for step in range(21):
            out["state_cached"].append((await timed_get(c, f"/api/state?seed={seed}&step={step}"))[0])
        t, sizes["tensor logits"] = await timed_get(c, f"/api/tensor/logits?seed={seed}")
        out["tensor_cold"].append(t)
        out["tensor_cached"].append((await timed_get(c, f"/api/tensor/logits?seed={seed}"))[0])
    for what in ("graph", "tensor/emb", "tensor/W1"):
        sizes[what] = (await timed_get(c, f"/api/{what}"))[1]
    c.close()
    result = {k: ms(statistics.median(v)) for k, v in out.items()}
    return result | {f"bytes {k}": v for k, v in sizes.items()}


async def students(
    port: int, n: int, nodes: list[str], first_seed: int, ends: bool = False
) -> tuple[list[tuple[int, float]], int]:
    """n students in lockstep; with `ends`, each also asks for the last step as the page does on arrival."""
    latencies: list[tuple[int, float]] = []  # (step, seconds)
    errors = 0

    async def prefetch_end(seed: int) -> None:
        # the page asks for Run all's step (state and the selected tensor) once its first steps are
        # answered, on another connection; not timed: no learner waits for it
        nonlocal errors
        client = RawClient(port)
        try:
            for url in (f"/api/state?seed={seed}&step=20", f"/api/tensor/{nodes[0]}?seed={seed}&step=20"):
                if (await client.get(url))[0] != 200:
                    errors += 1
        finally:
            client.close()

    async def student(seed: int) -> None:
        nonlocal errors
        client = RawClient(port)
        end = None
        try:
            for step in range(21):
                if ends and step == 1:
                    end = asyncio.create_task(prefetch_end(seed))
                node = nodes[min(step, len(nodes) - 1)]
                for url in (f"/api/state?seed={seed}&step={step}", f"/api/tensor/{node}?seed={seed}&step={step}"):
                    t0 = time.perf_counter()
                    try:
                        status, body = await client.get(url)
                        if status != 200:
                            errors += 1
                            SAMPLES.append(f"{status} {url} {body[:120]!r}")
                    except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as e:
                        errors += 1
                        SAMPLES.append(f"{url} {e!r}")
                        client.close()
                        client = RawClient(port)
                    latencies.append((step, time.perf_counter() - t0))
            if end is not None:
                await end
        finally:
            client.close()

    await asyncio.gather(*(student(first_seed + i) for i in range(n)))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--check-workers", type=int, default=2, help="the server's sandbox processes per worker")
    parser.add_argument(
        "--settle", type=float, default=20.0,
        help="seconds to wait after start-up: each server process warms its sandboxed code checkers (niced)",
    )  # fmt: skip
    parser.add_argument(
        "--scenarios", default="ahead,ahead+ends,follow",
        help="which tensor each student fetches per step (comma-separated, run in turn): " + ", ".join(SCENARIOS)
        + "; +ends: each student also asks for the last step once step 0 is answered, as the page does",
    )  # fmt: skip
    args = parser.parse_args()
    port = free_port()
    proc = start_server(port, args.workers, "--check-workers", str(args.check_workers))
    time.sleep(args.settle)
    runs: dict[str, tuple[list[tuple[int, float]], int, float]] = {}
    try:
        single = asyncio.run(single_client(port, args.seeds))
        for i, name in enumerate(args.scenarios.split(",")):
            t0 = time.perf_counter()
            scenario, _, extra = name.partition("+")
            lat, errors = asyncio.run(
                students(port, args.students, SCENARIOS[scenario], 50_000 + 10_000 * i, ends=extra == "ends")
            )
            runs[name if name not in runs else f"{name} (run {i + 1})"] = (lat, errors, time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    rows = [
        ("state, cold (median)", single["state_cold"], 30),
        ("state, cached (median)", single["state_cached"], 3),
        ("tensor logits + numeric, cold (median)", single["tensor_cold"], 50),
        ("tensor logits, cached (median)", single["tensor_cached"], None),
    ]
    for name, (lat, _, _) in runs.items():
        every = [t for _, t in lat]
        rows += [
            (f"{args.students} students ({name}) p50", percentile(every, 50), None),
            (f"{args.students} students ({name}) p99", percentile(every, 99), 250),
            # step 0 is every student's first request at the same instant: 100 cold passes queue up together
            ("  p99 of step 0 (all cold at once)", percentile([t for step, t in lat if step == 0], 99), None),
            ("  p99 of steps 1-20", percentile([t for step, t in lat if step > 0], 99), None),
        ]
    print(f"server: python -m server --workers {args.workers}; {args.seeds} seeds single-client\n")
    print(f"{'measure':42s} {'ms':>9s} {'target':>8s} {'ratio':>7s}")
    for name, value, target in rows:
        ratio = f"{value / target:7.2f}" if target else "      -"
        print(f"{name:42s} {value:9.2f} {(str(target) if target else '-'):>8s} {ratio}")
    for name, (lat, errors, wall) in runs.items():
        done = f"{len(lat)} requests in {wall:.1f} s ({len(lat) / wall:.0f} req/s)"
        print(f"\n{args.students} students ({name}): {done}, errors: {errors}")
    for sample in SAMPLES[:5]:
        print("error:", sample)
    print("payload bytes:", json.dumps({k[6:]: v for k, v in single.items() if k.startswith("bytes")}))


if __name__ == "__main__":
    main()
