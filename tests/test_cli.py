"""python -m server: a bad data file is a one-line error; a good one serves its own vocabulary."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.lecture import ops_for_mode

from .live_server import cmdline, live_server, sandbox_processes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def refused_at_start(monkeypatch, capsys, tmp_path) -> Callable[..., tuple[int, str]]:
    """refused_at_start(*args): server.__main__.main(args) in this process, as `python -m server` runs it; its exit
    status and what it printed to stderr. It must refuse before serving: a server that starts fails the test.

    In-process: the message is the point, and a process of its own would cost an interpreter and torch's import each
    time. An exception it raised would fail the test with its traceback, as the process would print one."""
    from server.__main__ import main
    from server.web import processes as web_processes

    def serve(*args, **kwargs):
        pytest.fail("the server started instead of refusing")

    monkeypatch.setattr(web_processes, "serve", serve)
    monkeypatch.setenv("HOME", str(tmp_path))  # the default runs database, were it reached, is not the user's

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            code = main([*args])
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        err = capsys.readouterr().err
        assert "Traceback" not in err, err  # a caught exception printed is still a traceback shown to the user
        return code, err

    return run


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"", "empty"), (b"\x00\x01\x02", "binary"), (b"\xff\xfe", "not UTF-8")],
)
def test_bad_data_file_exits_with_message(tmp_path, content, message, refused_at_start):
    path = tmp_path / "names.txt"
    if content is not None:
        path.write_bytes(content)
    code, stderr = refused_at_start("--data", str(path))
    assert code == 2
    assert message in stderr


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


@pytest.mark.slow  # the real server, started and stopped
def test_workers_share_the_port_and_a_second_server_on_it_is_an_error_not_a_restart_loop():
    # one server for both: each is a property of its own, and each start costs an interpreter and torch's import
    with live_server("--workers", "2", "--check-workers", "0") as url:  # no sandbox processes: not what is tested
        # one SO_REUSEPORT socket per worker: fresh connections land on both processes
        pids = set()
        deadline = time.monotonic() + 60  # the second worker may still be starting when the first answers
        while len(pids) < 2 and time.monotonic() < deadline:
            with urllib.request.urlopen(f"{url}/api/health", timeout=10) as r:  # a new connection each time
                pids.add(json.load(r)["worker"])
        assert len(pids) == 2
        # a taken port: an error, not a restart loop
        port = url.rsplit(":", 1)[1]
        proc = subprocess.run(
            [sys.executable, "-m", "server", "--port", port, "--workers", "2", "--check-workers", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode != 0
    assert "cannot listen" in proc.stderr and "Traceback" not in proc.stderr


def test_help_says_what_the_program_is(capsys):
    from server.__main__ import main

    with pytest.raises(SystemExit) as ended:
        main(["--help"])
    assert ended.value.code == 0
    out = capsys.readouterr().out
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
    with live_server("--check-workers", "1") as url:  # the checks come one at a time: one sandbox process answers
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
def test_a_runs_db_url_this_server_cannot_open_is_a_message(url, refused_at_start):
    code, stderr = refused_at_start("--runs-db", url)
    assert code == 2
    assert f"cannot use the runs database {url}: " in stderr


def test_the_settings_reach_the_web_process(tmp_path):
    # no run starts (--max-runs 0): the queue, the streams and the pruning are the options', not the defaults
    db = tmp_path / "class" / "runs.sqlite3"
    options = [
        "--max-runs",
        "0",
        "--max-queued",
        "2",
        "--max-streams",
        "1",
        "--keep-runs",
        "1",
        "--max-runs-per-client",
        "5",
    ]
    with live_server(*options, "--check-workers", "0", "--runs-db", f"sqlite:///{db}") as url:
        tokens = []

        def post(path: str, body: bytes = b"", token: str | None = None) -> int:
            headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
            request = urllib.request.Request(f"{url}{path}", body, headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as r:
                    tokens.extend(run["owner_token"] for run in json.load(r).get("runs", []))
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        assert [post("/api/runs", b"{}") for _ in range(3)] == [201, 201, 429]  # default --max-queued: 8
        assert db.is_file()  # the sqlite:/// URL named this file
        with urllib.request.urlopen(f"{url}/api/runs/1/events", timeout=30):  # open until the block ends
            with pytest.raises(urllib.error.HTTPError) as second:
                urllib.request.urlopen(f"{url}/api/runs/2/events", timeout=30)
            assert second.value.code == 503  # default --max-streams: 200
        assert [post(f"/api/runs/{i}/cancel", token=tokens[i - 1]) for i in (1, 2)] == [200, 200]

        def listed() -> list[int]:
            with urllib.request.urlopen(f"{url}/api/runs", timeout=30) as r:
                return [run["id"] for run in json.load(r)["runs"]]

        # the next sweep (every 0.5 s) keeps the newest ended run; default --keep-runs: 500
        deadline = time.monotonic() + 30
        while listed() != [2] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert listed() == [2]


def as_a_shell_runs_it() -> None:
    """Ctrl-C as a terminal's foreground job has it: caught by default, not blocked. A test process may have
    inherited it ignored or blocked (both survive exec), and the server would keep it so: never what is tested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


class Started:
    """python -m server in a process group of its own (as a terminal runs it), its output in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.log = tmp_path / "server.log"
        cmd = [sys.executable, "-m", "server", "--port", "0", "--runs-db", str(tmp_path / "runs.sqlite3"), *args]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=as_a_shell_runs_it,
            )

    def output(self) -> str:
        return self.log.read_text()

    def until(self, what: str, found: Callable[[], bool], deadline_s: float = 120) -> None:
        """Poll (bounded) until found(); fail with the output if the server ended or the deadline passed first."""
        deadline = time.monotonic() + deadline_s
        while not found():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"never saw {what}:\n{self.output()}")
            time.sleep(0.005)

    def ready_url(self) -> str:
        self.until("the ready line", lambda: READY.search(self.output()) is not None)
        match = READY.search(self.output())
        assert match is not None
        return match["url"]

    def descendants(self) -> list[int]:
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            found += map(int, children)
            todo += map(int, children)
        return found

    def interrupt(self, sig: int) -> float:
        """Send `sig` to the whole process group (what Ctrl-C does); the seconds until the server ended."""
        sent = time.monotonic()
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the server did not end within {STOP_DEADLINE_S} s of {signal.Signals(sig).name}")
        return time.monotonic() - sent

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


READY = re.compile(r"^Backprop Explorer on (?P<url>http://\S+/) \(data: (?P<data>.*), runs: (?P<runs>.*)\)$", re.M)
# generous: "a few seconds" on an idle machine; a SIGINT during torch's import takes effect once the import is
# done, which on a box loaded many times over its cores took past 20 s
STOP_DEADLINE_S = 60


def spawned(server: Started) -> bool:
    return True  # right away: the interpreter is still starting


def a_check_process_started(server: Started) -> bool:
    # a sandbox process exists: the server is handing it the names list (where a Ctrl-C once hung it for good)
    return bool(sandbox_processes(server.descendants()))


def ready(server: Started) -> bool:
    return READY.search(server.output()) is not None


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}/cmdline").exists()]


def ends_cleanly(server: Started, sig: int) -> None:
    """`sig` to the server's process group ends it, without a traceback through its code and without leftovers."""
    children = server.descendants()
    server.interrupt(sig)
    # a signal that lands while an interpreter is starting (the server's, or a spawned child's importing
    # multiprocessing), before any code of the server runs there, ends it with Python's own KeyboardInterrupt
    # traceback: no handler of ours can exist yet. A traceback through the server's code is a failure.
    output = server.output()
    ours = [f for f in re.findall(r'File "([^"]+)"', output) if f.startswith(str(ROOT / "server"))]
    assert "Traceback" not in output or (not ours and "KeyboardInterrupt" in output), output
    # nothing is left behind: every process it started has ended too
    deadline = time.monotonic() + STOP_DEADLINE_S
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if "server" in cmdline(pid)]


@pytest.mark.slow  # the real server, started and stopped
@pytest.mark.parametrize(
    ("sig", "moment", "workers"),
    [
        (signal.SIGINT, spawned, "1"),
        (signal.SIGINT, a_check_process_started, "1"),
        (signal.SIGTERM, a_check_process_started, "1"),
        (signal.SIGINT, a_check_process_started, "2"),  # the web processes' hand-over, then their sandboxes'
    ],  # once ready: test_port_0_says_which_port_it_took_once_ready, whose server ends so
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_ctrl_c_or_sigterm_at_any_moment_of_start_up_ends_the_server(tmp_path, sig, moment, workers):
    server = Started(tmp_path, "--workers", workers, "--check-workers", "1")
    server.until(moment.__name__, lambda: moment(server))
    ends_cleanly(server, sig)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "argument --port: 99999 is out of range: from 0 to 65535"),
        (["--port", "-1"], "argument --port: -1 is out of range"),
        (["--port", "eighty"], "argument --port: invalid int value: 'eighty'"),
        (["--workers", "0"], "argument --workers: 0 is out of range: at least 1"),
        (["--head-timeout", "0"], "argument --head-timeout: 0 is out of range"),
        (["--check-timeout", "0"], "argument --check-timeout: 0 is out of range: from 0.1 to 600"),
        (["--class-days", "0"], "argument --class-days: 0 is out of range: from 0.01 to 3650"),
    ],
)
def test_an_option_out_of_range_is_a_usage_error(args, message, refused_at_start):
    code, stderr = refused_at_start(*args)
    assert code == 2 and message in stderr and "usage:" in stderr, stderr


@pytest.mark.slow  # the real server, started and stopped
@pytest.mark.parametrize(("workers", "sig"), [("1", signal.SIGINT), ("2", signal.SIGTERM)])
def test_port_0_says_which_port_it_took_once_ready(tmp_path, workers, sig):
    # ended by Ctrl-C or SIGTERM once ready, as test_ctrl_c_or_sigterm_at_any_moment_of_start_up_ends_the_server
    # ends its servers at the other moments of start-up (one server for both: each start costs an interpreter and
    # torch's import); with a sandbox process each, which must end with it
    server = Started(tmp_path, "--workers", workers, "--check-workers", "1")
    try:
        url = server.ready_url()
        line = READY.search(server.output())
        assert line is not None and line["data"] == "embedded" and line["runs"] == str(tmp_path / "runs.sqlite3")
        assert server.output().count("Backprop Explorer on") == 1
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        assert port > 0
        pids = set()
        for _ in range(40 if workers == "2" else 1):  # every process listens on the one port announced
            with urllib.request.urlopen(f"{url}api/health", timeout=30) as r:
                pids.add(json.load(r)["worker"])
            if len(pids) == int(workers):
                break
        assert len(pids) == int(workers)
    except BaseException:
        server.kill()
        raise
    ends_cleanly(server, sig)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://student:s3cr%40t-pw@127.0.0.1:1/runs",  # nothing listens on port 1: refused at once
        "mysql://student:s3cr%40t-pw@db.example/runs",
        "postgresql://student:s3cr%40t-pw@/runs?host=/nonexistent",
    ],
)
def test_a_database_password_is_never_shown(url, refused_at_start):
    code, stderr = refused_at_start("--runs-db", url)
    assert code == 2 and "cannot use the runs database" in stderr
    assert "s3cr" not in stderr and "student:***@" in stderr, stderr


@pytest.mark.slow  # the real server, started and stopped
def test_forwarded_addresses_from_loopback_are_not_believed(tmp_path):
    # six checks "from" six forwarded addresses, all from this machine, are one client: two at a time, 429 beyond
    server = Started(tmp_path, "--check-workers", "1")
    try:
        url = server.ready_url()
        sandboxes = sandbox_processes(server.descendants())
        assert len(sandboxes) == 1, sandboxes  # --check-workers 1
        body = json.dumps({"step": 1, "code": "dlogprobs = torch.zeros_like(logprobs)"}).encode()

        def check(i: int) -> int:
            headers = {"Content-Type": "application/json", "X-Forwarded-For": f"10.0.0.{i}"}
            request = urllib.request.Request(f"{url}api/check", body, headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        assert check(0) == 200  # the sandbox process is warm
        for pid in sandboxes:
            os.kill(pid, signal.SIGSTOP)  # the checks in flight stay in flight (until the server's own timeout)
        try:
            with ThreadPoolExecutor(6) as pool:
                statuses = list(pool.map(check, range(1, 7)))
        finally:
            for pid in sandboxes:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        assert statuses.count(429) == 4, statuses
    finally:
        server.interrupt(signal.SIGINT)


def test_the_fd_limit_is_raised_to_the_hard_limit():
    code = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "from server.__main__ import raise_fd_limit\n"
        "raise_fd_limit()\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard), hard)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert out.split()[0] == "True", out


def _connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60, source_address=(source, 0))
    return sock


def _closed_by_server(sock: socket.socket) -> bytes:
    """What the server sent before it closed the connection (b"" for a bare close); the socket's 60 s timeout
    bounds the wait, so a server that keeps it open fails the test instead of hanging it."""
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_half_sent_requests_are_closed_and_one_address_holds_a_bounded_number(tmp_path):
    cap = 20
    server = Started(tmp_path, "--check-workers", "0", "--head-timeout", "1", "--max-connections-per-client", str(cap))
    try:
        url = server.ready_url()
        # a request line and no more: the head never completes, so the server closes it (408) after --head-timeout
        held = [_connect(url) for _ in range(cap)]
        for sock in held:
            sock.sendall(b"GET /api/health HTTP/1.1\r\n")
        # past the cap, this address's connections are closed at once, without an answer; another address is served
        extra = [_connect(url) for _ in range(30)]
        for sock in extra:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert {_closed_by_server(sock) for sock in extra} == {b""}
        with _connect(url, source="127.0.0.2") as sock:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert _closed_by_server(sock).startswith(b"HTTP/1.1 200")
        answers = {_closed_by_server(sock).split(b"\r\n")[0] for sock in held}
        assert answers == {b"HTTP/1.1 408 Request Timeout"}
        for sock in held + extra:
            sock.close()
        # the address is served again once its connections closed
        server.until("the address served again", lambda: _health_from(url) == 200)
    finally:
        server.interrupt(signal.SIGINT)
    log = server.output()
    assert log.count("refused connections from 127.0.0.1") == 1, log  # once, not per socket
    assert log.count("request head took over 1 s") == 1, log
    assert "Traceback" not in log


def _health_from(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}api/health", timeout=30) as r:
            return r.status
    except OSError:
        return 0


@pytest.mark.slow  # the real server's start-up, in an interpreter of its own
def test_a_ctrl_c_that_a_library_swallowed_during_start_up_still_ends_the_server(tmp_path):
    # a bare `except:` around an optional import (in some library the start-up imports) can swallow the
    # KeyboardInterrupt of a Ctrl-C; the server then started as if nothing had happened and never ended
    swallowed = (
        "import signal, sys\n"
        "from server.signals import note_stop_signals\n"
        "note_stop_signals()\n"
        "try:\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "except:  # noqa: E722 -- as the library did\n"
        "    pass\n"
        "from server.__main__ import main\n"
        f"sys.exit(main(['--port', '0', '--check-workers', '0', '--runs-db', {str(tmp_path / 'runs.db')!r}]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", swallowed], cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=as_a_shell_runs_it
    )
    try:
        out, _ = proc.communicate(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the server served on: {proc.communicate()[0]}")
    assert proc.returncode == 130 and "Backprop Explorer on" not in out
