"""Training runs (Exercise 4): start, list, inspect, stream (Server-Sent Events), cancel, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..config import BOUNDS
from ..runs import ENDED, QueueFull, QueueUnavailable, RunStore
from ..serialize import dumps
from ..train_config import TrainConfig
from .fair import in_sandbox
from .feeds import RunFeeds
from .schemas import ErrorPublic, RunDetailPublic, RunLossesPublic, RunPublic, RunRequest, RunsPublic

router = APIRouter(prefix="/api/runs", tags=["training runs"])
RunId = Annotated[int, Path(ge=1, le=BOUNDS["run"][1], description="a run's id")]
NOT_FOUND = {404: {"model": ErrorPublic, "description": "no such run"}}
MAX_SEQ = 2**62  # event ids are SQLite integers
PAGE, MAX_PAGE = 100, 500  # runs listed per page: by default, at most


def _store(request: Request) -> RunStore:
    return request.app.state.runs


def _run(store: RunStore, run_id: int) -> dict:
    run = store.get(run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id}")
    return run


@router.post(
    "",
    status_code=201,
    response_model=RunsPublic,
    responses={
        400: {"model": ErrorPublic, "description": "the body is not JSON"},
        413: {"model": ErrorPublic, "description": "the body is too large"},
        422: {"model": ErrorPublic, "description": "the request is invalid, or (backward=code) the code was refused"},
        429: {"model": ErrorPublic, "description": "the queue is full, or this client has checks waiting"},
        503: {
            "model": ErrorPublic,
            "description": "the task queue refused the run's job (PostgreSQL), or code checks are off or busy",
        },
    },
)
async def start(request: Request, body: RunRequest) -> dict:
    """Queue one run, or two (backward=both: manual and autograd from the same seed, curves to overlay).

    backward=code: the block is checked first, as a whole cell is (a sandbox process dry-runs it with the run's
    shapes); a block it refuses is a 422 with the reason, and no run."""
    configs = body.to_configs()
    if body.backward == "code":
        await _check_code(request, configs[0])
    return await run_in_threadpool(_create, request, configs, body.keep_running)


async def _check_code(request: Request, config: TrainConfig) -> None:
    pool = getattr(request.app.state, "checks", None)
    if pool is None:
        raise HTTPException(503, "code checks are off on this server: training with your own backward needs them")
    await in_sandbox(request, pool, {"train": config.as_dict()})  # 422 with the reason if the block is refused


def _create(request: Request, configs: list[TrainConfig], keep_running: bool) -> dict:
    store = _store(request)
    try:
        # the names this server read: a training worker (PostgreSQL) on other names refuses the run
        ids = store.create(configs, keep_running, request.app.state.cache.dataset.sha256)
    except QueueFull as e:
        raise HTTPException(429, str(e), headers={"Retry-After": "10"}) from None
    except QueueUnavailable as e:
        raise HTTPException(503, str(e), headers={"Retry-After": "10"}) from None
    return {"runs": [store.get(i) for i in ids]}


@router.get("", response_model=RunsPublic)
def list_runs(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="runs in this page")] = PAGE,
    before: Annotated[int | None, Query(ge=1, le=BOUNDS["run"][1], description="runs older than this id")] = None,
) -> dict:
    """The runs, newest first, a page at a time: pass `next` as `before` for the following page."""
    runs, cursor = _store(request).list(limit, before)
    return {"runs": runs, "next": cursor}


@router.get("/{run_id}", response_model=RunDetailPublic, responses=NOT_FOUND)
def get_run(request: Request, run_id: RunId) -> dict:
    store = _store(request)
    return _run(store, run_id) | {"history": store.history(run_id)}


@router.get("/{run_id}/losses", response_model=RunLossesPublic, responses=NOT_FOUND)
def losses(request: Request, run_id: RunId) -> Response:
    """Every step's loss of an ended run (the event stream and the detail carry a thinned curve)."""
    store = _store(request)
    run = _run(store, run_id)
    values = store.losses(run_id)
    if values is None:
        raise HTTPException(404, f"run {run_id} is {run['status']}: its losses are stored when it ends")
    return Response(dumps({"steps": len(values), "loss": values.numpy()}), media_type="application/json")


@router.post(
    "/{run_id}/cancel",
    response_model=RunPublic,
    responses=NOT_FOUND | {409: {"model": ErrorPublic, "description": "the run has ended already"}},
)
def cancel(request: Request, run_id: RunId) -> dict:
    store = _store(request)
    if _run(store, run_id)["status"] in ENDED:
        raise HTTPException(409, f"run {run_id} has ended already")
    return store.cancel(run_id)  # type: ignore[return-value]


@router.delete("/{run_id}", status_code=204, responses=NOT_FOUND)
def delete(request: Request, run_id: RunId) -> Response:
    if not _store(request).delete(run_id):
        raise HTTPException(404, f"no run {run_id}")
    return Response(status_code=204)


@router.get(
    "/{run_id}/events",
    responses=NOT_FOUND
    | {
        200: {"content": {"text/event-stream": {}}, "description": "the run's events"},
        503: {"model": ErrorPublic, "description": "too many event streams are open (see Retry-After)"},
    },
)
async def events(
    request: Request,
    run_id: RunId,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="send the events after this id")] = 0,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_SEQ, description="sent by EventSource")] = None,
) -> StreamingResponse:
    """Server-Sent Events: every event of the run after `after` (or the Last-Event-ID of a reconnect),
    then live ones until the run ends. An open stream counts as somebody watching the run."""
    await run_in_threadpool(_run, _store(request), run_id)
    start_seq = max(after, last_event_id or 0)
    feeds: RunFeeds = request.app.state.feeds
    feed = feeds.subscribe(run_id, start_seq)  # 503 past the cap on open streams
    return StreamingResponse(
        feeds.stream(feed, start_seq, request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
