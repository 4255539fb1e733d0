"""python -m server: a bad data file is a one-line error; a good one serves its own vocabulary."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from server.graph import ops_for_mode

from .live_server import free_port, live_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"", "empty"), (b"\x00\x01\x02", "binary"), (b"\xff\xfe", "not UTF-8")],
)
def test_bad_data_file_exits_with_message(tmp_path, content, message):
    path = tmp_path / "names.txt"
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "server", "--data", str(path), "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serves_a_custom_file(tmp_path):
    words = ["ab", "ba", "abc", "cab", "bca", "aa", "bb", "cc", "abca", "cba", "acb"]
    path = tmp_path / "abc.txt"
    path.write_text("\n".join(words) + "\n")
    with live_server("--data", str(path), "--allowed-hosts", "class.example", "--check-workers", "0") as url:
        with urllib.request.urlopen(f"{url}/api/dataset", timeout=10) as r:
            ds = json.load(r)
        named = urllib.request.Request(f"{url}/api/health", headers={"Host": "class.example:8000"})
        with urllib.request.urlopen(named, timeout=10) as r:
            assert r.status == 200
        rebound = urllib.request.Request(f"{url}/api/health", headers={"Host": "rebind.attacker.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=10)
        assert refused.value.code == 400
        assert ds["vocab"] == [".", "a", "b", "c"] and ds["words"] == 11
        with urllib.request.urlopen(f"{url}/api/state?batch_size=4", timeout=10) as r:
            assert json.load(r)["total_steps"] == len(ops_for_mode("atomic"))


def test_workers_each_take_a_share_of_the_connections():
    # one SO_REUSEPORT socket per worker: fresh connections land on both processes
    with live_server("--workers", "2", "--check-workers", "0") as url:  # no sandbox processes: not what is tested
        pids = set()
        deadline = time.monotonic() + 60  # the second worker may still be starting when the first answers
        while len(pids) < 2 and time.monotonic() < deadline:
            with urllib.request.urlopen(f"{url}/api/health", timeout=10) as r:  # a new connection each time
                pids.add(json.load(r)["worker"])
        assert len(pids) == 2


def test_a_taken_port_is_an_error_not_a_restart_loop():
    with live_server("--check-workers", "0") as url:
        port = url.rsplit(":", 1)[1]
        proc = subprocess.run(
            [sys.executable, "-m", "server", "--port", port, "--workers", "2", "--check-workers", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode != 0
    assert "cannot listen" in proc.stderr and "Traceback" not in proc.stderr


def test_a_large_config_does_not_hold_up_everyone_else():
    # the largest pass and a batchnorm node's finite differences take ~1 s; they run in a worker thread,
    # so a request for the lecture's pass is answered meanwhile, not after them
    with live_server("--check-workers", "0") as url:
        large = f"batch_size=256&n_hidden=512&n_embd=64&block_size=8&dtype=float64&step={len(ops_for_mode('atomic'))}"
        finished: list[str] = []

        def fetch(what: str, path: str) -> None:
            with urllib.request.urlopen(f"{url}{path}", timeout=120) as r:
                finished.append(what)  # the answer has started: the server is done computing it
                body = json.load(r)
            assert "numeric" not in body or body["numeric"]["entries_checked"] == 16

        def cached_passes() -> int:
            with urllib.request.urlopen(f"{url}/api/health", timeout=10) as r:
                return json.load(r)["cached_passes"]

        before = cached_passes()
        slow = threading.Thread(target=fetch, args=("large", f"/api/tensor/hprebn?{large}"))
        slow.start()
        # held by an event, not the clock: once the large pass is in the cache, its finite differences run
        deadline = time.monotonic() + 60
        while cached_passes() == before and not finished and time.monotonic() < deadline:
            pass
        assert not finished, "the large request was answered before its pass showed in the cache"
        assert cached_passes() > before, "the large pass never reached the cache"
        for _ in range(3):
            fetch("lecture", "/api/state?step=5")
        slow.join()
        assert finished == ["lecture", "lecture", "lecture", "large"], finished


def test_help_says_what_the_program_is():
    out = subprocess.run([sys.executable, "-m", "server", "--help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert (
        "web app that steps through Karpathy's" in out and "http://127.0.0.1:8000" in out and "--allowed-hosts" in out
    )


def test_make_run_takes_a_port():
    out = subprocess.run(["make", "-n", "run", "PORT=8001"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "-m server --host 127.0.0.1 --port 8001" in out


def test_a_busy_port_says_what_to_do(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "server", "--port", str(port), "--runs-db", str(tmp_path / "runs.sqlite3")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert f"another server is using port {port}" in proc.stderr and f"--port {port + 1}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_readme_curl_examples_work_in_order(tmp_path):
    api = (ROOT / "docs" / "api.md").read_text()
    blocks = [b.split("```", 1)[0] for b in api.split("```sh\n")[1:]]
    commands = [shlex.split(line, comments=True) for b in blocks for line in b.replace("\\\n", " ").splitlines()]
    commands = [c for c in commands if c and c[0] == "curl"]
    assert len(commands) >= 15
    with live_server() as url:
        port = url.rsplit(":", 1)[1]
        for argv in commands:
            argv = [a.replace("localhost:8000", f"localhost:{port}") for a in argv]
            out = subprocess.run(  # in tmp_path: a download (-OJ) lands there
                [*argv, "--max-time", "300", "-w", "\n%{http_code}"],
                capture_output=True,
                text=True,
                timeout=330,
                cwd=tmp_path,
            ).stdout
            status = int(out.rsplit("\n", 1)[1])
            expected = 422 if "batch_size=1" in argv[-1] else None
            ok = status == expected if expected else 200 <= status < 300
            if not ok:  # a run that failed says why in its detail
                detail = subprocess.run(["curl", "-s", f"{url}/api/runs/1"], capture_output=True, text=True).stdout
                pytest.fail(f"{argv}: {out[-500:]}\nrun 1: {detail[:1500]}")


@pytest.mark.parametrize("url", ["postgresql://db.example/runs", "sqlite://"])
def test_a_runs_db_url_this_server_cannot_open_is_a_message(url):
    proc = subprocess.run(
        [sys.executable, "-m", "server", "--runs-db", url, "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"cannot use the runs database {url}: " in proc.stderr and "Traceback" not in proc.stderr


def test_the_settings_reach_the_web_process(tmp_path):
    # no run starts (--max-runs 0): the queue, the streams and the pruning are the options', not the defaults
    db = tmp_path / "class" / "runs.sqlite3"
    options = ["--max-runs", "0", "--max-queued", "2", "--max-streams", "1", "--keep-runs", "1"]
    with live_server(*options, "--check-workers", "0", "--runs-db", f"sqlite:///{db}") as url:

        def post(path: str, body: bytes = b"") -> int:
            request = urllib.request.Request(f"{url}{path}", body, {"Content-Type": "application/json"}, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        assert [post("/api/runs", b"{}") for _ in range(3)] == [201, 201, 429]  # default --max-queued: 8
        assert db.is_file()  # the sqlite:/// URL named this file
        with urllib.request.urlopen(f"{url}/api/runs/1/events", timeout=30):  # open until the block ends
            with pytest.raises(urllib.error.HTTPError) as second:
                urllib.request.urlopen(f"{url}/api/runs/2/events", timeout=30)
            assert second.value.code == 503  # default --max-streams: 200
        assert [post(f"/api/runs/{i}/cancel") for i in (1, 2)] == [200, 200]

        def listed() -> list[int]:
            with urllib.request.urlopen(f"{url}/api/runs", timeout=30) as r:
                return [run["id"] for run in json.load(r)["runs"]]

        # the next sweep (every 0.5 s) keeps the newest ended run; default --keep-runs: 500
        deadline = time.monotonic() + 30
        while listed() != [2] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert listed() == [2]
