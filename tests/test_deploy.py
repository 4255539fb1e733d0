"""deploy/: Debian's nginx, rendered from deploy/nginx.conf.template, caching in front of two API processes."""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deploy.render_nginx import TEMPLATE, prepare, render
from server.web.http_cache import accepted
from tests.conftest import LECTURE_DATA
from tests.live_server import LiveServer, free_port

pytestmark = pytest.mark.slow
NGINX = "/usr/sbin/nginx"
IDENTITY = {"Accept-Encoding": "identity"}


@dataclass
class Deployment:
    proxy: str  # nginx's base URL
    direct: list[str]  # each API process's base URL
    state_dir: Path


def start_nginx(conf: Path, state_dir: Path, url: str) -> subprocess.Popen:
    """nginx in the foreground (daemon off) as this test's child; returns once it answers on `url`."""
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(state_dir), "-e", str(state_dir / "error.log")])
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/nginx-is-up", timeout=2)  # any answer (a 404 from the API) means it listens
            return proc
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("nginx did not start:\n" + (state_dir / "error.log").read_text())
            time.sleep(0.1)


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    assert Path(NGINX).exists(), "Debian's nginx is required: apt-get install -y nginx (make browser-deps)"
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp)
        servers = [
            LiveServer(
                "--data",
                str(LECTURE_DATA),
                "--check-workers",
                "1",
                "--runs-db",
                f"{tmp}/runs{i}.sqlite3",
                "--forwarded-allow-ips",
                "127.0.0.1",
            )  # fmt: skip
            for i in range(2)
        ]
        with ThreadPoolExecutor(2) as pool:  # both start at once: start-up is most of this test's time
            list(pool.map(LiveServer.start, servers))
        api = [s.url.removeprefix("http://") for s in servers]
        port = free_port()
        conf = state_dir / "nginx.conf"
        prepare(state_dir)
        conf.write_text(render(f"127.0.0.1:{port}", state_dir, api, worker_processes="1", daemon=False))
        nginx = start_nginx(conf, state_dir, f"http://127.0.0.1:{port}")
        try:
            yield Deployment(f"http://127.0.0.1:{port}", [s.url for s in servers], state_dir)
        finally:
            nginx.send_signal(signal.SIGQUIT)  # graceful: workers finish their requests, then exit
            nginx.wait(timeout=30)
            for s in servers:
                s.stop()


def test_the_template_renders_every_placeholder_and_nginx_accepts_it(tmp_path):
    prepare(tmp_path)
    conf = tmp_path / "nginx.conf"
    conf.write_text(render("127.0.0.1:1", tmp_path, ["10.0.0.2:8000", "10.0.0.3:8000"]))
    text = conf.read_text()
    assert "{{" not in text and "server 10.0.0.3:8000;" in text
    check = subprocess.run(
        [NGINX, "-t", "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_a_class_asking_for_one_answer_gets_it_from_the_cache_identical_to_each_api_process(deployment):
    url = "/api/tensor/hpreact?seed=424242&step=5"
    with httpx.Client(headers=IDENTITY) as http:
        first = http.get(deployment.proxy + url)
        second = http.get(deployment.proxy + url)
        direct = [http.get(base + url) for base in deployment.direct]
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache-status"] == "MISS"
    assert second.headers["x-cache-status"] == "HIT"
    assert first.content == second.content == direct[0].content == direct[1].content
    assert second.headers["etag"] == direct[0].headers["etag"] == direct[1].headers["etag"]
    assert second.headers["cache-control"] == "public, max-age=300"


def test_one_cached_copy_per_encoding_not_per_spelling_of_accept_encoding(deployment):
    url = "/api/state?seed=424243&step=7"
    with httpx.Client() as http:
        plain = http.get(deployment.proxy + url, headers=IDENTITY)
        br = http.get(deployment.proxy + url, headers={"Accept-Encoding": "gzip, deflate, br"})
        br_again = http.get(deployment.proxy + url, headers={"Accept-Encoding": "br;q=1.0, gzip;q=0.8"})
        gz = http.get(deployment.proxy + url, headers={"Accept-Encoding": "gzip"})
        gz_again = http.get(deployment.proxy + url, headers={"Accept-Encoding": "deflate, gzip"})
    assert [r.headers["x-cache-status"] for r in (plain, br, br_again, gz, gz_again)] == [
        "MISS", "MISS", "HIT", "MISS", "HIT"
    ]  # fmt: skip
    assert br_again.headers["content-encoding"] == "br" and gz_again.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    # each copy decodes to the same answer, and names its encoding in its ETag
    assert br_again.content == gz_again.content == plain.content
    assert br_again.headers["etag"] == plain.headers["etag"][:-1] + '-br"'
    assert gz_again.headers["etag"] == plain.headers["etag"][:-1] + '-gzip"'
    assert "accept-encoding" in br_again.headers["vary"].lower()  # passed on to browsers' caches


def test_if_none_match_gets_a_304_from_the_cache(deployment):
    url = "/api/why/W2?step=20&at=5,3&seed=424244"
    with httpx.Client(headers=IDENTITY) as http:
        etag = http.get(deployment.proxy + url).headers["etag"]
        again = http.get(deployment.proxy + url, headers={"If-None-Match": etag})
        other = http.get(deployment.proxy + url, headers={"If-None-Match": '"another"'})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["x-cache-status"] == "HIT" and again.headers["etag"] == etag
    assert other.status_code == 200 and other.headers["x-cache-status"] == "HIT"


def test_checks_runs_and_their_event_streams_pass_through_uncached(deployment):
    code = "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"
    with httpx.Client(base_url=deployment.proxy, headers=IDENTITY, timeout=60) as http:
        checks = [http.post("/api/check", json={"step": 1, "code": code}) for _ in range(2)]
        assert [c.status_code for c in checks] == [200, 200]
        assert all(c.headers.get("x-cache-status") in (None, "BYPASS") for c in checks)  # a POST is never looked up
        assert checks[0].json() == checks[1].json()

        listed = [http.get("/api/runs") for _ in range(2)]
        assert [r.headers["x-cache-status"] for r in listed] == ["BYPASS", "BYPASS"]
        run = http.post("/api/runs", json={"max_steps": 1_000_000}).json()["runs"][0]["id"]
        try:
            with http.stream("GET", f"/api/runs/{run}/events") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                assert stream.headers["x-cache-status"] == "BYPASS"
                lines = stream.iter_lines()
                first = next(line for line in lines if line.startswith("data:"))
            assert first == 'data: {"status": "queued"}'
            # the run went to the process whose store holds it: it knows the run, the other does not
            assert httpx.get(f"{deployment.direct[0]}/api/runs/{run}").status_code == 200
        finally:
            http.post(f"/api/runs/{run}/cancel")


def test_a_trained_runs_answer_is_never_cached(deployment):
    url = "/api/state?run=999&n_hidden=200"  # no such run: a 404 that names no Cache-Control
    with httpx.Client(headers=IDENTITY) as http:
        answers = [http.get(deployment.proxy + url) for _ in range(2)]
    assert [a.status_code for a in answers] == [404, 404]
    assert [a.headers["x-cache-status"] for a in answers] == ["MISS", "MISS"]


def nginx_encoding(accept_encoding: str) -> str:
    """What the template's map makes of an Accept-Encoding header: its first matching regex (nginx's rule)."""
    block = TEMPLATE.read_text().split("map $http_accept_encoding $explorer_encoding {", 1)[1].split("}", 1)[0]
    for pattern, value in re.findall(r'^\s*"~\*(.*)"\s+(\w+);', block, re.MULTILINE):
        if re.search(pattern, accept_encoding, re.IGNORECASE):
            return value
    return ""


@pytest.mark.parametrize(
    "header",
    [
        "gzip", "gzip;q=0", "gzip; q=0.0", "gzip;q=0.5", "br, gzip;q=0", "br;q=0, gzip", "zstd;q=0,br;q=0",
        "gzip, deflate, br, zstd", "deflate", "", "zstd;q=0.001, gzip",
    ],
)  # fmt: skip
def test_nginx_reduces_accept_encoding_as_the_api_does(header):
    # nginx asks the API for the one encoding the API would choose for this header, q=0 meaning "not this one"
    assert nginx_encoding(header) == (accepted(header) or "")
