"""A teacher's class: create one, read where its students stumble (JSON, CSV, live), delete it.

The teacher's token is a secret: it comes in an Authorization header only (never a URL), is compared as a hash in
constant time, and is never logged. A student's check names the class's code; what it recorded is written by the
app's AttemptWriter, off the request path.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..learner.challenge import slips_of
from ..runs.classes import Attempt, AttemptWriter, ClassStore, normal_code
from .fair import client_of
from .schemas import ClassCreatedPublic, ClassInfoPublic, ClassRequest, ClassSummaryPublic, ErrorPublic

router = APIRouter(prefix="/api/classes", tags=["classes"])
KNOWN_S = 60.0  # a class code seen to exist is trusted this long by a check (no database read per check)
LIVE_POLL_S = 1.0  # how often a class page's stream looks for new attempts
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing a quiet stream
REFOLD_S = 30.0  # how often a live page's summary is read whole rather than from its new attempts
TEACHER = {
    401: {"model": ErrorPublic, "description": "no Authorization: Bearer <teacher_token>"},
    403: {"model": ErrorPublic, "description": "not this class's teacher token"},
    404: {"model": ErrorPublic, "description": "no class with this code"},
}


def digest(answer: bytes) -> tuple[bool, dict[str, str]]:
    """A check's answer as a class counts it: right or wrong, and the slips it told (kind -> line, no code)."""
    body = json.loads(answer)
    return bool(body["correct"]), slips_of(body)


def use_classes(app: Any, store: ClassStore, days: float) -> None:
    """Serve classes from `store`, their attempts written by a thread of their own (days: --class-days)."""
    app.state.classes = store
    app.state.class_writer = AttemptWriter(store, days, digest=digest)
    app.state.known_classes = {}  # code -> until when (monotonic) it is trusted to exist
    app.state.looking_up = {}  # code -> the database read under way for it
    store.sweep(days)  # what expired while the server was down (the writer sweeps hourly from its first attempt)


def _store(request: Request) -> ClassStore:
    store = getattr(request.app.state, "classes", None)
    if store is None:
        raise HTTPException(503, "classes need the runs database, which this server does not have")
    return store


def _unknown(code: str) -> HTTPException:
    return HTTPException(404, f"no class {code!r}: check the code on the board (six letters and digits)")


async def class_of_check(request: Request, text: str) -> str:
    """The class a check names, by its stored code; 404 when there is none (before anything is checked)."""
    store = _store(request)
    code = normal_code(text)
    if code is None:
        raise _unknown(text)
    known = request.app.state.known_classes
    if known.get(code, 0.0) < time.monotonic():
        # a class checking at once asks once: the others wait for the same read (one per code at a time)
        looking = request.app.state.looking_up
        pending = looking.get(code)
        if pending is None:
            pending = looking[code] = asyncio.ensure_future(run_in_threadpool(store.exists, code))
            pending.add_done_callback(lambda _: looking.pop(code, None))
        if not await asyncio.shield(pending):  # a waiter that disconnects leaves the read to the others
            raise _unknown(code)
        if len(known) > 10_000:  # codes of long-gone classes are not kept for ever
            known.clear()
        known[code] = time.monotonic() + KNOWN_S
    return code


def record_check(request: Request, code: str, student: str, net: str, mode: str, step: int | None,
                 answer: bytes) -> str:  # fmt: skip
    """Hand a check's answer to the writer: 'recorded', 'rate-limited' or 'busy' (see AttemptWriter.offer)."""
    attempt = Attempt(code, student, net, mode, step, False, answer=answer)  # dated when written
    return request.app.state.class_writer.offer(attempt)


def _teacher(request: Request, code: str, authorization: str | None) -> tuple[ClassStore, str]:
    """The store and the class's stored code, for its teacher only: 401 without a token, 404, 403."""
    store = _store(request)
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            401, "this needs the class's teacher token: Authorization: Bearer <teacher_token>",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    stored = normal_code(code)
    if stored is None or store.get(stored) is None:
        raise _unknown(code)
    if not store.authorized(stored, token.strip()):
        raise HTTPException(403, "that is not this class's teacher token")
    return store, stored


Authorization = Annotated[str | None, Header(description="Bearer <teacher_token>")]


@router.post(
    "",
    status_code=201,
    response_model=ClassCreatedPublic,
    responses={
        400: {"model": ErrorPublic, "description": "the body is not JSON"},
        413: {"model": ErrorPublic, "description": "the body is too large"},
    },
)
def create_class(request: Request, body: ClassRequest) -> dict[str, Any]:
    """A new class: its code (for the board) and its teacher's token (a secret, shown once)."""
    code, token = _store(request).create(body.title)
    return {"code": code, "teacher_token": token, "title": body.title}


@router.get("/{code}/about", response_model=ClassInfoPublic, responses={404: TEACHER[404]})
def about_class(request: Request, code: str) -> dict[str, Any]:
    """A class's title, for the notice a student reads before joining (no token: the code is on the board)."""
    stored = normal_code(code)
    found = _store(request).get(stored) if stored else None
    if found is None:
        raise _unknown(code)
    return {"code": found["code"], "title": found["title"]}


@router.get("/{code}", response_model=ClassSummaryPublic, responses=TEACHER)
def class_summary(request: Request, code: str, authorization: Authorization = None) -> dict[str, Any]:
    """Per step: attempts, students, students who solved it, median attempts to solve, and slips by kind."""
    store, stored = _teacher(request, code, authorization)
    return _summary(store, stored)


def _summary(store: ClassStore, code: str) -> dict[str, Any]:
    found = store.get(code)
    return {"code": code, "title": found["title"] if found else "", **store.summary(code)}


CSV_COLUMNS = ("net", "mode", "step", "attempts", "students", "solved", "median_attempts_to_solve", "slips")


@router.get(
    "/{code}/summary.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "one row per step"}, **TEACHER},
)
def class_csv(request: Request, code: str, authorization: Authorization = None) -> Response:
    """The summary as CSV, one row per step (slips: kind=count;kind=count; step empty: the whole cell)."""
    store, stored = _teacher(request, code, authorization)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in store.summary(stored)["steps"]:
        slips = ";".join(f"{kind}={n}" for kind, n in s["slips"].items())
        writer.writerow([*(("" if s[c] is None else s[c]) for c in CSV_COLUMNS[:-1]), slips])
    disposition = f'attachment; filename="class-{stored}.csv"'
    return Response(out.getvalue(), media_type="text/csv", headers={"Content-Disposition": disposition})


@router.delete("/{code}", status_code=204, response_class=Response, responses=TEACHER)
def delete_class(request: Request, code: str, authorization: Authorization = None) -> Response:
    """Delete the class and everything its students' checks recorded."""
    store, stored = _teacher(request, code, authorization)
    store.delete(stored)
    request.app.state.known_classes.pop(stored, None)
    return Response(status_code=204)


@router.get(
    "/{code}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the summary, again each time it changes"},
        **TEACHER,
        429: {"model": ErrorPublic, "description": "this client has its most event streams open (see Retry-After)"},
        503: {"model": ErrorPublic, "description": "too many event streams are open (see Retry-After)"},
    },
)
async def class_events(request: Request, code: str, authorization: Authorization = None) -> StreamingResponse:
    """Server-Sent Events: the summary now (event: summary), and again whenever an attempt is recorded; event:
    deleted when the class is. The token comes in the header (the page reads the stream with fetch)."""
    store, stored = await run_in_threadpool(_teacher, request, code, authorization)
    feeds = request.app.state.feeds
    client = client_of(request)
    feeds.hold(client, owner=True)  # the runs' streams' bounds: per client, and (not for a teacher) in all
    return StreamingResponse(_live(request, store, stored, client), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})  # fmt: skip


async def _live(request: Request, store: ClassStore, code: str, client: Any) -> AsyncIterator[str]:
    feeds = request.app.state.feeds
    try:
        yield "retry: 2000\n\n"
        tally, seen, quiet, since_refold = None, -1, 0.0, 0.0
        while True:
            version = await run_in_threadpool(store.version, code)
            if version != seen:
                found = await run_in_threadpool(store.get, code)
                if found is None:
                    yield "event: deleted\ndata: {}\n\n"
                    return
                # only the new attempts are read; now and then all of them (attempts swept, or, with PostgreSQL, an
                # attempt whose transaction committed after a later one's)
                if tally is None or version < tally.last or since_refold >= REFOLD_S:
                    tally, since_refold = None, 0.0
                tally = await run_in_threadpool(store.tally, code, tally)
                summary = {"code": code, "title": found["title"], **tally.public()}
                seen, quiet = version, 0.0
                yield f"id: {version}\nevent: summary\ndata: {orjson.dumps(summary).decode()}\n\n"
            elif quiet >= KEEPALIVE_S:
                if await run_in_threadpool(store.get, code) is None:
                    yield "event: deleted\ndata: {}\n\n"
                    return
                yield ": keep-alive\n\n"
                quiet = 0.0
            await asyncio.sleep(LIVE_POLL_S)
            quiet += LIVE_POLL_S
            since_refold += LIVE_POLL_S
            if await request.is_disconnected():
                return
    finally:
        feeds.release(client)
