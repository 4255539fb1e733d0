"""The web server's processes: several on one port, each listening on its own SO_REUSEPORT socket.

uvicorn's --workers shares one listening socket, and whichever process wakes first accepts most of
a burst: 100 students connecting at once split about 67/33 (measured), so one process does twice the
work. With a socket per process the kernel spreads connections by their address hash.
"""

from __future__ import annotations

import errno
import multiprocessing
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import uvicorn

RESTART_GRACE_S = 10.0  # a web process that dies sooner than this after starting is a start-up failure, not a crash


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


Setup = tuple[Callable[..., None], tuple[Any, ...]]  # called in every server process before its app is built


def _web_process(host: str, port: int, options: dict[str, Any], setup: Setup | None) -> None:
    if setup:
        setup[0](*setup[1])
    try:
        sock = _listen(host, port)
    except OSError as e:
        print(f"backprop-explorer: cannot listen on {host}:{port}: {e}", file=sys.stderr)
        sys.exit(3)
    uvicorn.Server(uvicorn.Config(**options)).run(sockets=[sock])


def port_problem(host: str, port: int) -> str | None:
    """Why this server cannot listen on host:port, with what to do about it; None when it can."""
    # a bind without SO_REUSEPORT: a second copy of this server must not share the port silently
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as e:
            hint = ""
            if e.errno == errno.EADDRINUSE:
                hint = (f"; another server is using port {port}: stop it, or pick another port with "
                        f"--port {port + 1} (make run PORT={port + 1})")  # fmt: skip
            elif e.errno == errno.EACCES:
                hint = "; ports below 1024 need privileges: use one above, e.g. --port 8000"
            return f"cannot listen on {host}:{port}: {e.strerror or e}{hint}"
    return None


def serve(host: str, port: int, workers: int, options: dict[str, Any], setup: Setup | None = None) -> int:
    """Run `workers` uvicorn servers for uvicorn.Config(**options); restart one that crashes."""
    problem = port_problem(host, port)
    if problem:
        print(f"backprop-explorer: {problem}", file=sys.stderr)
        return 3
    if workers == 1:
        if setup:
            setup[0](*setup[1])
        uvicorn.run(host=host, port=port, **options)
        return 0
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> tuple[multiprocessing.process.BaseProcess, float]:
        # not daemonic: a web process starts processes of its own (the sandbox processes that check code)
        proc = ctx.Process(target=_web_process, args=(host, port, options, setup))
        proc.start()
        return proc, time.monotonic()

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs = [start() for _ in range(workers)]
    code = 0
    while not stopping:
        time.sleep(0.2)
        for i, (proc, started) in enumerate(procs):
            if proc.is_alive():
                continue
            if time.monotonic() - started < RESTART_GRACE_S:
                stopping, code = True, proc.exitcode or 1  # e.g. the port is taken: restarting cannot help
                break
            print(f"backprop-explorer: web process {proc.pid} exited ({proc.exitcode}); restarting", file=sys.stderr)
            procs[i] = start()
    for proc, _ in procs:
        if proc.is_alive():
            proc.terminate()
    for proc, _ in procs:
        proc.join(timeout=10)
    return code
