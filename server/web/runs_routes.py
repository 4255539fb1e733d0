"""Training runs (Exercise 4): start, list, inspect, stream (Server-Sent Events), cancel, delete.

Viewing is open to anyone (a run's URL is a permalink). Cancel and delete need the run's owner token, given once,
in the answer that started it (and as a cookie scoped to the run's URLs), or the server's --admin-token.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..core.config import BOUNDS
from ..core.serialize import dumps
from ..runs.store import ENDED, ClientBusy, QueueFull, QueueUnavailable, RunStore, token_hash
from ..settings import Settings
from ..training.config import TrainConfig
from ..training.loop import cpu_limit_s, cpu_needed_s, cpu_text
from .fair import client_of, in_sandbox
from .feeds import RunFeeds
from .schemas import (
    ErrorPublic,
    RunDetailPublic,
    RunLossesPublic,
    RunPublic,
    RunRequest,
    RunsPublic,
    RunsStartedPublic,
)

router = APIRouter(prefix="/api/runs", tags=["training runs"])
RunId = Annotated[int, Path(ge=1, le=BOUNDS["run"][1], description="a run's id")]
NOT_FOUND = {404: {"model": ErrorPublic, "description": "no such run"}}
MAX_SEQ = 2**62  # event ids are SQLite integers
PAGE, MAX_PAGE = 100, 500  # runs listed per page: by default, at most
OWNER_COOKIE = "run_owner"  # one per run, scoped to its URLs (/api/runs/{id}): the page's streams carry it
OWNER_COOKIE_AGE_S = 30 * 24 * 3600
FORBIDDEN = {403: {"model": ErrorPublic, "description": "not the run's owner token, nor the admin token"}}


def _store(request: Request) -> RunStore:
    return request.app.state.runs


def _settings(request: Request) -> Settings:
    return getattr(request.app.state, "settings", None) or Settings()


def _token(request: Request) -> str | None:
    """The owner token a request carries: Authorization: Bearer <token>, or the run's cookie."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(OWNER_COOKIE)


def _may_manage(request: Request, run_id: int) -> bool:
    """Whether the request carries run `run_id`'s owner token, or the server's admin token."""
    token = _token(request)
    if not token:
        return False
    admin = _settings(request).admin_token
    if admin and hmac.compare_digest(token.encode("utf-8", "surrogatepass"), admin.encode()):
        return True
    return _store(request).owned(run_id, token)


def _authorize(request: Request, run_id: int) -> None:
    if not _may_manage(request, run_id):
        raise HTTPException(
            403,
            f"run {run_id} is not yours: cancel and delete need its owner_token (Authorization: Bearer <token>, or "
            "the cookie set when it started), or the server's admin token",
        )


def _run(store: RunStore, run_id: int) -> dict:
    run = store.get(run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id}")
    return run


@router.post(
    "",
    status_code=201,
    response_model=RunsStartedPublic,
    responses={
        400: {"model": ErrorPublic, "description": "the body is not JSON"},
        413: {"model": ErrorPublic, "description": "the body is too large"},
        422: {
            "model": ErrorPublic,
            "description": "the request is invalid, it would need more CPU than a run may use (--max-run-cpu), or "
            "(backward=code) the code was refused",
        },
        429: {
            "model": ErrorPublic,
            "description": "the queue is full, this client has its most live runs, or it has checks waiting",
        },
        503: {
            "model": ErrorPublic,
            "description": "the task queue refused the run's job (PostgreSQL), or code checks are off or busy",
        },
    },
)
async def start(request: Request, response: Response, body: RunRequest) -> dict:
    """Queue one run, or two (backward=both: manual and autograd from the same seed, curves to overlay).

    Each run's answer carries its owner_token (given only here; cancel and delete need it), also set as an
    HttpOnly cookie scoped to the run's URLs. A run that would need more CPU than --max-run-cpu is a 422; a
    client with --max-runs-per-client runs queued or running gets a 429.

    backward=code: the block is checked first, as a whole cell is (a sandbox process dry-runs it with the run's
    shapes); a block it refuses is a 422 with the reason, and no run."""
    configs = body.to_configs()
    _within_cpu(request, configs, None)
    step_s = None
    if body.backward == "code":
        answer = await _check_code(request, configs[0])
        step_s = answer.get("step_cpu_s")  # a step's CPU seconds, where the sandbox measures it
        _within_cpu(request, configs, step_s)
    vocab, max_cpu = request.app.state.cache.dataset.vocab_size, _settings(request).max_run_cpu
    cpu_limit = max(cpu_limit_s(config, vocab, max_cpu, step_s) for config in configs)
    tokens = [secrets.token_urlsafe(32) for _ in configs]
    runs = await run_in_threadpool(_create, request, configs, body.keep_running, tokens, cpu_limit)
    secure = request.url.scheme == "https"
    for run, token in zip(runs, tokens, strict=True):
        run["owner_token"] = token
        response.set_cookie(
            OWNER_COOKIE, token, max_age=OWNER_COOKIE_AGE_S, path=f"/api/runs/{run['id']}", httponly=True,
            samesite="strict", secure=secure,
        )  # fmt: skip
    return {"runs": runs}


def _within_cpu(request: Request, configs: list[TrainConfig], step_s: float | None) -> None:
    """A 422 if a run would need more CPU than --max-run-cpu (`step_s`: a step's measured cost, if known)."""
    vocab, max_cpu = request.app.state.cache.dataset.vocab_size, _settings(request).max_run_cpu
    for config in configs:
        needed = cpu_needed_s(config, vocab, step_s)
        if needed > max_cpu:
            raise HTTPException(
                422,
                f"this run would need about {cpu_text(needed)} of CPU ({config.max_steps:,} steps of "
                f"{(needed / config.max_steps) * 1e3:.2g} ms, {config.backward} backward), more than a run may use "
                f"on this server ({cpu_text(max_cpu)}): fewer steps or a smaller net",
            )


async def _check_code(request: Request, config: TrainConfig) -> dict:
    pool = getattr(request.app.state, "checks", None)
    if pool is None:
        raise HTTPException(503, "code checks are off on this server: training with your own backward needs them")
    return await in_sandbox(request, pool, {"train": config.as_dict()})  # 422 with the reason if refused


def _create(
    request: Request, configs: list[TrainConfig], keep_running: bool, tokens: list[str], cpu_limit: float
) -> list[dict]:
    store = _store(request)
    try:
        ids = store.create(
            configs,
            keep_running,
            # the names this server read: a training worker (PostgreSQL) on other names refuses the run
            request.app.state.cache.dataset.sha256,
            owners=[token_hash(t) for t in tokens],
            client=str(client_of(request)),
            instance=getattr(request.app.state, "instance", None),  # this web process trains it (SQLite)
            cpu_limit=cpu_limit,
        )
    except ClientBusy as e:
        raise HTTPException(429, str(e), headers={"Retry-After": "10"}) from None
    except QueueFull as e:
        raise HTTPException(429, str(e), headers={"Retry-After": "10"}) from None
    except QueueUnavailable as e:
        raise HTTPException(503, str(e), headers={"Retry-After": "10"}) from None
    return [store.get(i) for i in ids]  # type: ignore[misc]


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
    responses=NOT_FOUND | FORBIDDEN | {409: {"model": ErrorPublic, "description": "the run has ended already"}},
)
def cancel(request: Request, run_id: RunId) -> dict:
    """Stop a run (its owner token or the admin token: Authorization: Bearer, or the run's cookie)."""
    store = _store(request)
    run = _run(store, run_id)
    _authorize(request, run_id)
    if run["status"] in ENDED:
        raise HTTPException(409, f"run {run_id} has ended already")
    return store.cancel(run_id)  # type: ignore[return-value]


@router.delete("/{run_id}", status_code=204, responses=NOT_FOUND | FORBIDDEN)
def delete(request: Request, run_id: RunId) -> Response:
    """Delete a run and what it stored (its owner token or the admin token)."""
    store = _store(request)
    _run(store, run_id)
    _authorize(request, run_id)
    if not store.delete(run_id):
        raise HTTPException(404, f"no run {run_id}")
    response = Response(status_code=204)
    response.delete_cookie(OWNER_COOKIE, path=f"/api/runs/{run_id}", httponly=True, samesite="strict")
    return response


@router.get(
    "/{run_id}/events",
    responses=NOT_FOUND
    | {
        200: {"content": {"text/event-stream": {}}, "description": "the run's events"},
        429: {"model": ErrorPublic, "description": "this client has its most event streams open (see Retry-After)"},
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
    then live ones until the run ends. An open stream of the run's owner (its cookie, or Authorization: Bearer)
    counts as somebody watching the run; anyone else's does not."""
    await run_in_threadpool(_run, _store(request), run_id)
    owner = await run_in_threadpool(_may_manage, request, run_id)
    start_seq = max(after, last_event_id or 0)
    feeds: RunFeeds = request.app.state.feeds
    stream = feeds.subscribe(run_id, start_seq, client_of(request), owner)  # 429 / 503 past the caps
    return StreamingResponse(
        feeds.stream(stream, start_seq, request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
