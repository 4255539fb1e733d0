"""The FastAPI application: the JSON API, the static frontend, and the guards around them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import plotly
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import Scope
from starlette_compress import CompressMiddleware

from ..assets import FRONTEND
from ..core.cache import PassCache
from ..core.data import Dataset
from ..runs.classes import ClassStore
from ..runs.scheduler import Scheduler
from ..runs.store import RunStore
from ..runs.stores import STORE_ERRORS
from ..sandbox_pool import SandboxPool
from ..settings import Settings
from .classes_routes import router as classes_router
from .classes_routes import use_classes
from .fair import FairQueue
from .feeds import RunFeeds
from .guards import (
    MAX_DETAIL_CHARS,
    GuardOrigin,
    HeadAsGet,
    LimitBody,
    answered_hosts,
    excerpt,
    internal_error,
    store_unavailable,
    validation_error,
)
from .http_cache import EncodedETag, Precompressed, not_modified
from .routes import router
from .runs_routes import router as runs_router
from .static import PAGES, Fingerprints

SCHEDULE_EVERY_S = 0.5  # how often this process looks for queued runs to start
CHECKS_PER_CLIENT = 2  # code checks a client may have waiting or running (more: 429)
CHECKS_WAITING_PER_WORKER = 8  # checks waiting in all, per check worker (more: 503)
# the same for large configs' views (one computed at a time): the page asks for up to ~9 at once (graph, state,
# tensor, the neighbouring steps it prefetches), so a client's share is larger; clients are still served in turn
LARGE_PER_CLIENT, LARGE_WAITING = 12, 48
COMPILE_HINT = b"//# allFunctionsCalledOnLoad\n"
# the page's files: a class's proxy and the browsers keep them a minute (a new version reaches everyone within
# one), then revalidate with their ETag (StaticFiles sets it: a 304 sends nothing again)
PAGE_CACHE = "public, max-age=60"
COMPRESS_FROM = 500  # bytes: a smaller answer goes as it is (the headers would outweigh the saving)
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
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = PAGE_CACHE
        return response


def use_checks(app: FastAPI, pool: Any, slots: int) -> None:
    """Answer POST /api/check with `pool` (a SandboxPool: run(job) blocks until its sandbox process answers).

    Its calls run on threads of their own, one per sandbox process: a check never holds a thread of the pool that
    sync endpoints and the runs store use, and a waiting one holds no thread at all (it waits in the queue).
    """
    app.state.checks = pool
    app.state.check_queue = FairQueue(
        slots, per_client=CHECKS_PER_CLIENT, max_waiting=CHECKS_WAITING_PER_WORKER * slots, what="code checks"
    )
    app.state.check_threads = ThreadPoolExecutor(slots, thread_name_prefix="check")


async def _schedule(scheduler: Scheduler) -> None:
    while True:
        try:
            await run_in_threadpool(scheduler.tick)
        except Exception:  # a locked database or a failed spawn: log it, try again next tick
            logging.getLogger("backprop-explorer").exception("scheduler tick failed")
        await asyncio.sleep(SCHEDULE_EVERY_S)


def create_app(
    dataset: Dataset, settings: Settings | None = None, runs: RunStore | None = None, schedule: bool = True
) -> FastAPI:
    """An app serving one dataset, chosen at start-up; with a run store, training runs too.

    settings: the server's (cache, streams, check workers, host names); none: the defaults, but no sandbox
    processes for POST /api/check (tests and scripts ask for them).
    schedule: this process starts training processes for queued runs (tests turn it off to keep runs queued).
    """
    if settings is None:
        settings = Settings(check_workers=0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler = Scheduler(runs, dataset, app.state.instance) if runs is not None and schedule else None
        task = asyncio.create_task(_schedule(scheduler)) if scheduler else None
        yield
        if app.state.checks is not None:
            await run_in_threadpool(app.state.checks.close)
            app.state.check_threads.shutdown(wait=False)
        if task and scheduler:
            task.cancel()
            await run_in_threadpool(scheduler.shutdown)
        if app.state.feeds is not None:
            await app.state.feeds.close()  # its listening connection
        if app.state.classes is not None:
            await run_in_threadpool(app.state.class_writer.close)  # what is waiting is written first

    app = FastAPI(
        title="Backprop Explorer",
        description="Karpathy's makemore part 4 (backprop ninja): forward, manual backward and autograd, "
        "as a pure function of (config, mode, step); and Exercise 4's training runs.",
        version="0.2.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runs = runs
    # this web process's name in the runs table: the runs started here are trained, and stopped, by it (SQLite)
    app.state.instance = uuid.uuid4().hex if runs is not None and schedule and runs.claims_locally else None
    feeds = (
        RunFeeds(runs, settings.max_streams, per_client=settings.max_streams_per_client) if runs is not None else None
    )
    app.state.feeds = feeds
    app.state.classes = None  # a teacher's classes live in the runs database
    if runs is not None:
        use_classes(app, ClassStore(runs), settings.class_days)
    # started now, warm by the first request (each loads torch and the data: a few seconds)
    app.state.checks = None
    if settings.check_workers:
        pool = SandboxPool(dataset, size=settings.check_workers, timeout_s=settings.check_timeout)
        use_checks(app, pool, settings.check_workers)
    trained = runs.params if runs else lambda run: None
    app.state.cache = PassCache(dataset, settings.cache_size, trained, settings.cache_mb << 20)
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
    for database_error in STORE_ERRORS:
        app.add_exception_handler(database_error, store_unavailable)

    # JSON and the page's files compressed as the client accepts (zstd, brotli, gzip), Server-Sent Events
    # streamed as they come; the ETag of a compressed copy names its encoding (outside the compression)
    app.add_middleware(CompressMiddleware, minimum_size=COMPRESS_FROM)
    app.add_middleware(EncodedETag)
    app.add_middleware(HeadAsGet)
    app.add_middleware(LimitBody)
    app.add_middleware(GuardOrigin, allowed_hosts=answered_hosts(settings))  # outermost: refused before a body is read
    app.include_router(router)
    if runs is not None:
        app.include_router(runs_router)
        app.include_router(classes_router)

    # 4.8 MB, read once. The comment is V8's explicit compile hint: compile every function while the
    # script streams in, off the main thread, not lazily on first call (first visit with no DevTools
    # attached: 1198 vs 1262 ms median over 8 interleaved visits each, measured)
    plotly_js = COMPILE_HINT + PLOTLY_JS.read_bytes()
    plotly_etag = f'"{plotly.__version__}-{len(plotly_js)}"'
    bundle = Precompressed(plotly_js)

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_bundle(request: Request) -> Response:
        # it never changes for an installed plotly: let the browser keep it (and V8 its compiled code)
        headers = {"Cache-Control": "public, max-age=86400", "ETag": plotly_etag, "Vary": "Accept-Encoding"}
        if not_modified(request, plotly_etag):
            return Response(status_code=304, headers=headers)
        # compressed once, not per request (the middleware leaves a response with a Content-Encoding alone)
        encoding, body = bundle.best(request.headers.get("accept-encoding", ""))
        if encoding:
            headers = {**headers, "Content-Encoding": encoding}
        return Response(body, media_type="text/javascript", headers=headers)

    # the pages name their scripts and styles by fingerprint (/static/…): kept by the browser for good, so a
    # repeat visit fetches none of them; the pages themselves are revalidated on every visit
    fingerprints = Fingerprints(FRONTEND, {"/vendor/plotly.min.js": bundle})

    @app.get("/static/{path:path}", include_in_schema=False)
    def static_file(path: str, request: Request) -> Response:
        found = fingerprints.asset(f"/static/{path}", request)
        if found is None:
            raise StarletteHTTPException(
                404, f"no static file /static/{path}: not a fingerprint of this server's files (reload the page)"
            )
        return found

    def serve_page(name: str) -> Any:
        def page(request: Request) -> Response:
            return fingerprints.page(name, request)

        return page

    for name in PAGES:
        for url in ("/", "/index.html") if name == "index.html" else (f"/{name}",):
            app.get(url, include_in_schema=False)(serve_page(name))

    # the page is the product: no page, no server (StaticFiles checks the folder exists)
    app.mount("/", FrontendFiles(app, directory=FRONTEND, html=True), name="frontend")
    return app
