"""The FastAPI application: the JSON API, the static frontend, and the guards around them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import plotly
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from ..cache import PassCache
from ..checks import CheckPool
from ..data import Dataset
from ..jobs import Scheduler
from ..runs import RunStore
from .routes import router
from .runs_routes import router as runs_router

SCHEDULE_EVERY_S = 0.5  # how often this process looks for queued runs to start
MAX_BODY_BYTES = 64 * 1024  # no endpoint needs more; larger bodies are refused before parsing
FRONTEND = Path(__file__).resolve().parent.parent.parent / "frontend"
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
    """Refuse a declared body over MAX_BODY_BYTES with 413 (plain ASGI: @app.middleware costs ~0.3 ms a request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = Headers(scope=scope).get("content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                response = JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
) -> FastAPI:
    """An app serving one dataset, chosen at start-up; with a run store, training runs too.

    schedule: this process starts worker processes for queued runs (tests turn it off to keep runs queued).
    check_workers: sandboxed processes that run learners' code for POST /api/check (0: checks are off).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler = Scheduler(runs, dataset.path) if runs is not None and schedule else None
        task = asyncio.create_task(_schedule(scheduler)) if scheduler else None
        yield
        if check_workers:
            await run_in_threadpool(app.state.checks.close)
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
    # started now, warm by the first request (each loads torch and the data: a few seconds)
    app.state.checks = CheckPool(str(dataset.path), size=check_workers) if check_workers else None
    trained = runs.params if runs else lambda run: None
    app.state.cache = PassCache(dataset, maxsize=cache_size, trained=trained, max_bytes=cache_bytes)
    app.state.large = anyio.CapacityLimiter(1)  # large configs' passes: one worker thread at a time (routes.py)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette's Allow lists the first route on the path only; /api/runs has GET and POST routes
            allowed = allowed_methods(request.app, request.url.path)
            return JSONResponse({"detail": "Method Not Allowed"}, 405, headers={"Allow": ", ".join(allowed)})
        return await http_exception_handler(request, exc)

    app.add_middleware(LimitBody)
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

    if FRONTEND.is_dir():
        app.mount("/", FrontendFiles(app, directory=FRONTEND, html=True), name="frontend")
    return app
