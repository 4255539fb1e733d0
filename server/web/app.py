"""The FastAPI application: the JSON API, the static frontend, and the guards around them."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import plotly
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..assets import FRONTEND
from ..cache import PassCache
from ..checks import CheckPool
from ..data import Dataset
from ..jobs import Scheduler
from ..runs import RunStore
from ..serialize import dumps
from .fair import FairQueue
from .feeds import RunFeeds
from .routes import router
from .runs_routes import router as runs_router

SCHEDULE_EVERY_S = 0.5  # how often this process looks for queued runs to start
CHECKS_PER_CLIENT = 2  # code checks a client may have waiting or running (more: 429)
CHECKS_WAITING_PER_WORKER = 8  # checks waiting in all, per check worker (more: 503)
LARGE_PER_CLIENT, LARGE_WAITING = 2, 16  # the same for large configs' passes (one computed at a time)
MAX_STREAMS = 200  # training runs' event streams open at once, per process (a class watching its runs)
MAX_BODY_BYTES = 64 * 1024  # no endpoint needs more; larger bodies are refused before parsing
COMPILE_HINT = b"//# allFunctionsCalledOnLoad\n"
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def allowed_methods(app: FastAPI, url: str) -> list[str]:
    """The HTTP methods the API serves at `url`, read from its OpenAPI paths (included routers nest routes)."""
    if not hasattr(app.state, "path_methods"):
        app.state.path_methods = [
            (compile_path(path)[0], {m.upper() for m in ops} | ({"HEAD"} if "get" in ops else set()))
            for path, ops in app.openapi()["paths"].items()
        ]
    return sorted({m for regex, methods in app.state.path_methods if regex.match(url) for m in methods})


class FrontendFiles(StaticFiles):
    """The page's files; under /api/ only the API answers (GET /api/check is a 405, not a missing file)."""

    def __init__(self, api: FastAPI, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api = api

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path == "api" or path.startswith("api/"):
            url = "/" + path
            if allowed_methods(self.api, url):
                raise StarletteHTTPException(405)
            raise StarletteHTTPException(404, f"no API endpoint {url}")
        return await super().get_response(path, scope)


class LimitBody:
    """Refuse a body over MAX_BODY_BYTES with 413, declared or streamed (chunked bodies declare no length).

    Plain ASGI: @app.middleware costs ~0.3 ms a request. A body without a Content-Length is read here,
    MAX_BODY_BYTES at most, and handed on whole; the 413 goes out as soon as the limit is crossed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                await _too_large(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the HTTP parser delivers no more than declared
            return
        if "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await _too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # e.g. an event stream waiting for the disconnect
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class HeadAsGet:
    """HEAD answered as the GET it stands for, without the body (FastAPI routes a GET only; Allow lists HEAD)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if ended:
                return
            if message["type"] == "http.response.body":  # the server writes no body for HEAD; end at the first
                ended = True  # (an event stream ends here too: it would never finish)
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")  # the names a server on loopback answers to by default
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a Host header's name (port dropped) is one of `allowed`: a name, '.example.org' (it and
    its subdomains) or '*'."""
    name = host.rsplit("]", 1)[0].lstrip("[") if host.startswith("[") else host.rsplit(":", 1)[0]
    name = name.lower().rstrip(".")
    return any(a == "*" or a == name or (a.startswith(".") and (name == a[1:] or name.endswith(a))) for a in allowed)


class GuardOrigin:
    """Refuse requests for a host name this server does not answer to (400: DNS rebinding), and changes
    sent from another origin (403: any page can make a browser POST here, preflight-free with text/plain)."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            host = headers.get("host")
            refused: tuple[int, str] | None = None
            if host is not None and not host_allowed(host, self.allowed_hosts):
                refused = (400, f"unknown host {excerpt(host)!r}: this server answers to "
                                f"{', '.join(self.allowed_hosts)} (add names with --allowed-hosts)")  # fmt: skip
            elif scope["method"] in UNSAFE_METHODS:
                origin = headers.get("origin")
                if origin is not None and (host is None or urlsplit(origin).netloc.lower() != host.lower()):
                    refused = (403, f"a change sent from another origin ({excerpt(origin)}) is refused")
                elif origin is None and headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                    refused = (403, "a change sent from another site is refused")
            if refused:
                response = JSONResponse({"detail": refused[1]}, status_code=refused[0])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    # Connection: close, so the server reads no more of a body nobody will parse
    response = JSONResponse(
        {"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413, headers={"Connection": "close"}
    )
    await response(scope, receive, send)


EXCERPT_CHARS = 80  # how much of a rejected value a 422 echoes
EXCERPT_ITEMS = 8  # items of a rejected list or object, and errors of one request
MAX_DETAIL_CHARS = 1000  # an error's own message


def excerpt(value: Any, chars: int = EXCERPT_CHARS, depth: int = 2) -> Any:
    """A short, JSON-safe excerpt of a value a request sent: a 422 never echoes a whole body back.

    JSON's parser hands over what JSON cannot carry back: 1e400 and NaN as floats, "\\ud800" as a lone
    surrogate (no UTF-8 for it); those come back as text, the surrogate as its escape.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return value if abs(value) < 10**15 else excerpt(str(value), chars)
    if isinstance(value, str):
        text = value if len(value) <= chars else f"{value[:chars]}... ({len(value):,} characters)"
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        if depth == 0:
            return f"an object of {len(value):,} keys"
        items = list(value.items())
        out = {excerpt(str(k), chars, 0): excerpt(v, chars, depth - 1) for k, v in items[:EXCERPT_ITEMS]}
        if len(items) > EXCERPT_ITEMS:
            out["..."] = f"{len(items) - EXCERPT_ITEMS:,} more keys"
        return out
    if isinstance(value, list | tuple):
        if depth == 0:
            return f"a list of {len(value):,} items"
        out_list = [excerpt(v, chars, depth - 1) for v in value[:EXCERPT_ITEMS]]
        if len(value) > EXCERPT_ITEMS:
            out_list.append(f"... {len(value) - EXCERPT_ITEMS:,} more items")
        return out_list
    return excerpt(str(value), chars, 0)


def _error_public(error: dict[str, Any]) -> dict[str, Any]:
    out = {
        "type": excerpt(error.get("type", "value_error")),
        "loc": [excerpt(part) for part in error.get("loc", ())][:EXCERPT_ITEMS],
        "msg": excerpt(error.get("msg", ""), MAX_DETAIL_CHARS),
    }
    if "input" in error:
        out["input"] = excerpt(error["input"])
    if error.get("ctx"):
        out["ctx"] = {excerpt(str(k), chars=40): excerpt(str(v)) for k, v in list(error["ctx"].items())[:EXCERPT_ITEMS]}
    return out


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422 shape, with every echoed input cut to an excerpt."""
    errors = list(exc.errors())
    detail = [_error_public(e) for e in errors[:EXCERPT_ITEMS]]
    if len(errors) > EXCERPT_ITEMS:
        detail.append({"type": "too_many_errors", "loc": [], "msg": f"{len(errors) - EXCERPT_ITEMS} more errors"})
    return Response(dumps({"detail": detail}), status_code=422, media_type="application/json")


def use_checks(app: FastAPI, pool: Any, slots: int) -> None:
    """Answer POST /api/check with `pool` (a CheckPool: run(job) blocks until its worker answers).

    Its calls run on threads of their own, one per worker: a check never holds a thread of the pool that
    sync endpoints and the runs store use, and a waiting one holds no thread at all (it waits in the queue).
    """
    app.state.checks = pool
    app.state.check_queue = FairQueue(
        slots, per_client=CHECKS_PER_CLIENT, max_waiting=CHECKS_WAITING_PER_WORKER * slots, what="code checks"
    )
    app.state.check_threads = ThreadPoolExecutor(slots, thread_name_prefix="check")


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug is still a JSON answer (the traceback goes to the log, not to the client)."""
    logging.getLogger("backprop-explorer").error("%s %s failed", request.method, request.url.path, exc_info=exc)
    detail = f"internal error ({type(exc).__name__}); the server's log has the details"
    return Response(dumps({"detail": detail}), status_code=500, media_type="application/json")


async def _schedule(scheduler: Scheduler) -> None:
    while True:
        try:
            await run_in_threadpool(scheduler.tick)
        except Exception:  # a locked database or a failed spawn: log it, try again next tick
            logging.getLogger("backprop-explorer").exception("scheduler tick failed")
        await asyncio.sleep(SCHEDULE_EVERY_S)


def create_app(
    dataset: Dataset,
    cache_size: int = 512,
    cache_bytes: int = 512 << 20,
    runs: RunStore | None = None,
    schedule: bool = True,
    check_workers: int = 0,
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS,
    max_streams: int = MAX_STREAMS,
) -> FastAPI:
    """An app serving one dataset, chosen at start-up; with a run store, training runs too.

    allowed_hosts: the Host names it answers to (see GuardOrigin).
    max_streams: training runs' event streams open at once (more: 503).
    schedule: this process starts worker processes for queued runs (tests turn it off to keep runs queued).
    check_workers: sandboxed processes that run learners' code for POST /api/check (0: checks are off).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler = Scheduler(runs, dataset) if runs is not None and schedule else None
        task = asyncio.create_task(_schedule(scheduler)) if scheduler else None
        yield
        if app.state.checks is not None:
            await run_in_threadpool(app.state.checks.close)
            app.state.check_threads.shutdown(wait=False)
        if task and scheduler:
            task.cancel()
            await run_in_threadpool(scheduler.shutdown)

    app = FastAPI(
        title="Backprop Explorer",
        description="Karpathy's makemore part 4 (backprop ninja): forward, manual backward and autograd, "
        "as a pure function of (config, mode, step); and Exercise 4's training runs.",
        version="0.2.0",
        lifespan=lifespan,
    )
    app.state.runs = runs
    app.state.feeds = RunFeeds(runs, max_streams) if runs is not None else None
    # started now, warm by the first request (each loads torch and the data: a few seconds)
    app.state.checks = None
    if check_workers:
        use_checks(app, CheckPool(dataset, size=check_workers), check_workers)
    trained = runs.params if runs else lambda run: None
    app.state.cache = PassCache(dataset, maxsize=cache_size, trained=trained, max_bytes=cache_bytes)
    # large configs' passes: one worker thread at a time, clients served in turn (routes.py)
    app.state.large = FairQueue(1, per_client=LARGE_PER_CLIENT, max_waiting=LARGE_WAITING, what="large configs")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette's Allow lists the first route on the path only; /api/runs has GET and POST routes
            allowed = allowed_methods(request.app, request.url.path)
            return JSONResponse({"detail": "Method Not Allowed"}, 405, headers={"Allow": ", ".join(allowed)})
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not parse the body
            exc.detail = f"the body is not JSON this server reads: {excerpt(str(exc.__cause__))}"
        if isinstance(exc.detail, str):
            exc.detail = excerpt(exc.detail, MAX_DETAIL_CHARS)
        return await http_exception_handler(request, exc)

    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, internal_error)

    app.add_middleware(HeadAsGet)
    app.add_middleware(LimitBody)
    app.add_middleware(GuardOrigin, allowed_hosts=allowed_hosts)  # outermost: refused before a body is read
    app.include_router(router)
    if runs is not None:
        app.include_router(runs_router)

    # 4.8 MB, read once. The comment is V8's explicit compile hint: compile every function while the
    # script streams in, off the main thread, not lazily on first call (first visit with no DevTools
    # attached: 1198 vs 1262 ms median over 8 interleaved visits each, measured)
    plotly_js = COMPILE_HINT + PLOTLY_JS.read_bytes()
    plotly_etag = f'"{plotly.__version__}-{len(plotly_js)}"'

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_bundle(request: Request) -> Response:
        # it never changes for an installed plotly: let the browser keep it (and V8 its compiled code)
        headers = {"Cache-Control": "public, max-age=86400", "ETag": plotly_etag}
        if request.headers.get("if-none-match") == plotly_etag:
            return Response(status_code=304, headers=headers)
        return Response(plotly_js, media_type="text/javascript", headers=headers)

    # the page is the product: no page, no server (StaticFiles checks the folder exists)
    app.mount("/", FrontendFiles(app, directory=FRONTEND, html=True), name="frontend")
    return app
