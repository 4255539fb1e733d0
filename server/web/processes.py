"""The web server's processes: several on one port, each listening on its own SO_REUSEPORT socket.

uvicorn's --workers shares one listening socket, and whichever process wakes first accepts most of
a burst: 100 students connecting at once split about 67/33 (measured), so one process does twice the
work. With a socket per process the kernel spreads connections by their address hash.

Ctrl-C or SIGTERM at any moment ends every process within seconds: each web process gets its set-up (the
words, ~200 KB) over a pipe of its own after it started, never as the spawn's arguments (multiprocessing writes
those into a pipe whose reading end it holds itself until the write ends: a child killed first left that
write blocked for good).
"""

from __future__ import annotations

import asyncio
import errno
import multiprocessing
import signal
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

import uvicorn

from ..sandbox_pool import quiet_start
from ..signals import end_if_noted, stop_noted

RESTART_GRACE_S = 10.0  # a web process that dies sooner than this after starting is a start-up failure, not a crash
STOP_GRACE_S = 10.0  # a web process still running this long after SIGTERM is killed
GRACEFUL_S = 5  # seconds a stopping web process gives its open requests (an event stream never ends by itself)

Setup = tuple[Callable[..., None], tuple[Any, ...]]  # called in every server process before its app is built


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, saying once it listens (its own start-up message is off: log level warning)."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        from .connections import quiet_accept_errors

        asyncio.get_running_loop().set_exception_handler(quiet_accept_errors)
        await super().startup(sockets)
        if stop_noted():  # a Ctrl-C before uvicorn took the signals over, its KeyboardInterrupt swallowed on the way
            self.should_exit = True
        if self.started and not self.should_exit:
            self.on_ready()


def _run(sock: socket.socket, options: dict[str, Any], on_ready: Callable[[], None]) -> None:
    config = uvicorn.Config(**options, timeout_graceful_shutdown=GRACEFUL_S)
    _Server(config, on_ready).run(sockets=[sock])


def _web_process(host: str, port: int, options: dict[str, Any], conn: Connection) -> None:
    # the parent stops this process with SIGTERM; until uvicorn takes the signals over, a Ctrl-C to the process
    # group is not for it (they were held back while it was spawned: see quiet_start)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        setup: Setup | None = conn.recv()
    except EOFError:  # the parent stopped before handing it over
        return
    if setup:
        setup[0](*setup[1])
    try:
        sock = _listen(host, port)
    except OSError as e:
        print(f"backprop-explorer: cannot listen on {host}:{port}: {e}", file=sys.stderr)
        sys.exit(3)
    _run(sock, options, lambda: conn.send("ready"))


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


def serve(
    host: str,
    port: int,
    workers: int,
    options: dict[str, Any],
    setup: Setup | None = None,
    on_ready: Callable[[int], None] = lambda port: None,
) -> int:
    """Run `workers` uvicorn servers for uvicorn.Config(**options); restart one that crashes. on_ready(port) is
    called once every process listens (port 0 picks a free port: the one taken)."""
    problem = port_problem(host, port) if port else None
    if problem:
        print(f"backprop-explorer: {problem}", file=sys.stderr)
        return 3
    if workers == 1:
        try:
            sock = _listen(host, port)
        except OSError as e:
            print(f"backprop-explorer: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
            return 3
        if setup:
            setup[0](*setup[1])
        end_if_noted()
        _run(sock, options, lambda: on_ready(sock.getsockname()[1]))
        return 0
    # port 0: one free port for every process, held by a socket that never listens until they all have bound it
    held = _listen(host, port)
    port = held.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    stopping = stop_noted()  # a Ctrl-C before the handlers below, whatever became of its KeyboardInterrupt

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start() -> tuple[multiprocessing.process.BaseProcess, float, Connection]:
        conn, child = ctx.Pipe()
        # not daemonic: a web process starts processes of its own (the sandbox processes that check code)
        proc = ctx.Process(target=_web_process, args=(host, port, options, child))
        quiet_start(proc.start)
        child.close()
        try:
            conn.send(setup)
        except OSError:  # it died at once: the loop below sees it
            pass
        return proc, time.monotonic(), conn

    procs: list[tuple[multiprocessing.process.BaseProcess, float, Connection]] = []
    code = 0
    ready: set[int] = set()
    announced = False
    try:
        while not stopping and len(procs) < workers:
            procs.append(start())
        while not stopping:
            wait([conn for _, _, conn in procs] + [proc.sentinel for proc, _, _ in procs], timeout=0.2)
            for i, (proc, started, conn) in enumerate(procs):
                try:
                    while conn.poll():
                        conn.recv()  # "ready"
                        ready.add(proc.pid or 0)
                except (EOFError, OSError):
                    pass
                if proc.is_alive():
                    continue
                if time.monotonic() - started < RESTART_GRACE_S:
                    stopping, code = True, proc.exitcode or 1  # e.g. the port is taken: restarting cannot help
                    break
                print(f"backprop-explorer: web process {proc.pid} exited ({proc.exitcode}); restarting",
                      file=sys.stderr)  # fmt: skip
                conn.close()
                procs[i] = start()
            if not announced and len(ready) >= workers:
                announced = True
                held.close()
                on_ready(port)
    finally:
        held.close()
        for proc, _, _ in procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc, _, conn in procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
            conn.close()
    return code
