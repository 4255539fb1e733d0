"""The JSON API: thin handlers that parse the query, fetch the cached pass and return a view."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError

from ..core.cache import OtherVocabulary, PassCache
from ..core.engine import BackwardPass
from ..core.serialize import dumps
from ..explain import views, why
from ..learner import cells, challenge, export
from ..learner.sandbox import MAX_CELL_CHARS, Refused
from ..net.declare import Net, Undeclared
from ..net.packs import DEFAULT_NET, NETS, net_of
from ..training import code_backward
from . import classes_routes
from .fair import client_of, in_sandbox
from .http_cache import FAST, accepted, cache_headers, compress, etag_of, not_modified
from .query import QueryModel
from .schemas import (
    BugsPublic,
    CellCheckPublic,
    CheckPublic,
    CheckRequest,
    DatasetPublic,
    ErrorPublic,
    ExportRequest,
    GraphPublic,
    HealthPublic,
    HintQuery,
    HintsPublic,
    InstancePublic,
    MetaPublic,
    NetQuery,
    NetsPublic,
    PassQuery,
    RunRequest,
    StatePublic,
    StepQuery,
    TensorDetailPublic,
    TensorQuery,
    WhyPublic,
    WhyQuery,
)

router = APIRouter(prefix="/api", tags=["explorer"])
LARGE = 4 * 32 * 64  # batch x width above 4x the lecture's: computed in a worker thread (see _computed)
PASS, STEP, HINT, WHY = QueryModel(PassQuery), QueryModel(StepQuery), QueryModel(HintQuery), QueryModel(WhyQuery)
TENSOR = QueryModel(TensorQuery)
NET = QueryModel(NetQuery)


def _json(content: Any, headers: dict[str, str] | None = None) -> Response:
    # the views already match the XPublic schemas (schemathesis checks it); skipping FastAPI's
    # re-validation and jsonable_encoder walk keeps large tensors cheap to send
    return Response(dumps(content), media_type="application/json", headers=headers)


def _cacheable(request: Request, query: Any = None) -> tuple[Response | None, dict[str, str]]:
    """The answer's cache headers, and a 304 when the client (or its proxy) has it already: nothing computed."""
    etag = None if getattr(query, "run", 0) else etag_of(request, _cache(request).dataset.sha256, query)
    headers = cache_headers(etag)
    if etag and not_modified(request, etag):
        return Response(status_code=304, headers=headers), headers
    return None, headers


def _cache(request: Request) -> PassCache:
    return request.app.state.cache


def _pass(request: Request, query: PassQuery) -> BackwardPass:
    """The cached pass of the query; a trained run's parameters must exist and fit the query's sizes."""
    config = query.to_config()
    if config.run:
        runs = getattr(request.app.state, "runs", None)
        run = runs.get(config.run) if runs else None
        if run is None or not run["has_params"]:
            why = "no such run" if run is None else f"it is {run['status']} and has no trained parameters"
            raise HTTPException(404, f"run {config.run}: {why}")
        trained = {k: run["config"].get(k, DEFAULT_NET) for k in ("net", "n_embd", "n_hidden", "block_size")}
        if any(getattr(config, k) != v for k, v in trained.items()):
            sizes = ", ".join(f"{k}={v}" for k, v in trained.items())
            raise _invalid("run", f"run {config.run} was trained with {sizes}", config.run)
    try:
        return _cache(request).get(config, query.mode)
    except OtherVocabulary as e:
        raise HTTPException(409, str(e)) from None
    except Undeclared as e:  # a mode or bug the declaration does not have, or a bug the mode fuses away
        raise _invalid(e.field, str(e), getattr(query, e.field)) from None


def _invalid(field: str, message: str, value: Any, where: str = "query") -> RequestValidationError:
    # shaped like FastAPI's own 422s, so the response matches the OpenAPI schema
    return RequestValidationError([{"type": "value_error", "loc": (where, field), "msg": message, "input": value}])


def _step(mode: str, total: int, step: int | None, where: str = "query") -> int:
    """The step asked for (None: all `total` of the mode's steps); past the end is a 422."""
    if step is None:
        return total
    if step > total:
        raise _invalid("step", f"step {step} is past the end: mode {mode} has {total} backward steps", step, where)
    return step


@router.get("/health", response_model=HealthPublic)
async def health(request: Request) -> dict:
    return {"status": "ok", "cached_passes": len(_cache(request)), "worker": os.getpid()}


@router.get("/nets", response_model=NetsPublic)
async def nets(request: Request) -> Response:
    """The networks there are: each one's name (?net=NAME), title and modes; the lecture's is the default."""
    cached, headers = _cacheable(request)
    listed = [
        {"name": net.name, "title": net.title, "about": net.about, "default": net.name == DEFAULT_NET,
         "modes": list(net.mode_names), "trained_mode": net.trained_mode,
         "calibrated": [stat for op in net.ops for stat in op.calibrated], "defaults": dict(net.defaults),
         "train_defaults": dict(net.train_defaults)}
        for net in NETS.values()
    ]  # fmt: skip
    return cached or _json({"nets": listed}, headers)


@router.get("/meta", response_model=MetaPublic, openapi_extra=NET.openapi)
async def meta(request: Request, query: Annotated[NetQuery, Depends(NET)]) -> Response:
    """What the page builds its controls from: a net's declared modes, and each config field's default and bounds."""
    cached, headers = _cacheable(request, query)
    return cached or _json(_meta(query.net), headers)


def _fields(schema: type, skip: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Each field of a request schema: its default, description, and bounds or choices where it has them."""
    return {
        name: {
            "default": field["default"],
            "description": field["description"],
            "minimum": field.get("minimum"),
            "maximum": field.get("maximum"),
            "choices": field.get("enum"),
        }
        for name, field in schema.model_json_schema()["properties"].items()
        if name not in skip
    }


@functools.cache  # the declaration and the schema do not change while the server runs
def _meta(name: str) -> dict[str, Any]:
    net = net_of(name)
    modes = [
        {"name": m.name, "label": m.label, "title": m.title, "steps": len(net.ops_for_mode(m.name)),
         "cell": _cell(net, m.name)}
        for m in net.modes
    ]  # fmt: skip
    return {
        "modes": modes,
        "default_mode": net.mode_names[0],
        "config": _net_fields(_fields(PassQuery, skip=("mode",)), net, net.defaults),
        "train": _net_fields(_fields(RunRequest), net, {**net.defaults, **net.train_defaults}),
        "train_mode": net.trained_mode,
        "train_code": {
            "reads": list(code_backward.reads(net)),
            "grads": list(code_backward.default_grads(net)),
            "max_chars": MAX_CELL_CHARS,
        },
        "cmp_order": list(net.cmp_order),
    }


def _net_fields(fields: dict[str, dict[str, Any]], net: Net, defaults: Any) -> dict[str, dict[str, Any]]:
    """The fields with the net's own defaults and bounds (Net.bounds) in place of every net's."""
    out = {name: dict(field) for name, field in fields.items()}
    for name, value in defaults.items():
        if name in out:
            out[name]["default"] = value
    for name, (low, high) in net.bounds.items():
        if name in out:
            out[name]["minimum"], out[name]["maximum"] = low, high
    return out


def _cell(net: Net, mode: str) -> dict[str, Any]:
    cell = net.cell_for(mode)
    return {
        "exercise": cell.exercise,
        "about": cell.about,
        "grads": [f"d{n}" for n in cells.cell_grads(net, mode)],
        "given": [f"d{n}" for n in cells.cell_given(net, mode)],
    }


@router.get("/bugs", response_model=BugsPublic, openapi_extra=NET.openapi)
async def bugs(request: Request, query: Annotated[NetQuery, Depends(NET)]) -> Response:
    """The bug lab: a net's wrong backward rules that can be switched on with ?bug=NAME."""
    cached, headers = _cacheable(request, query)
    net = net_of(query.net)
    fields = ("name", "title", "op", "target", "code", "modes", "why", "notice")
    listed = [{k: list(net.bug_modes(bug)) if k == "modes" else getattr(bug, k) for k in fields} for bug in net.bugs]
    return cached or _json({"bugs": listed}, headers)


@router.get("/dataset", response_model=DatasetPublic)
def dataset(request: Request) -> Response:
    cached, headers = _cacheable(request)
    if cached:
        return cached
    ds = _cache(request).dataset
    block_size = PassQuery().block_size
    splits = ds.splits(block_size)
    return _json(
        {
            "file": ds.path.name,
            "words": len(ds.words),
            "vocab": [ds.itos[i] for i in range(ds.vocab_size)],
            "vocab_size": ds.vocab_size,
            "block_size": block_size,
            "splits": {"train": len(splits.Ytr), "val": len(splits.Ydev), "test": len(splits.Yte)},
            "sha256": ds.sha256,
            "embedded": ds.embedded,
        },
        headers,
    )


NO_RUN = {404: {"description": "no such trained run"}, 409: {"description": "the run was trained on other data"}}


async def _computed(request: Request, query: PassQuery, view: Callable[[], Any]) -> Response:
    """view() as JSON: on the event loop for the lecture's sizes, in a worker thread for a large config.

    A large pass and its checks take up to ~1 s (batch 256 x hidden 512): off the loop, the process
    keeps answering everyone else meanwhile (torch's kernels release the GIL). One at a time per process.
    """
    cached, headers = _cacheable(request, query)
    if cached:
        return cached
    if query.batch_size * max(query.n_hidden, query.n_embd * query.block_size) <= LARGE:
        return _json(view(), headers)
    encoding = accepted(request.headers.get("accept-encoding", ""))

    def answer() -> Response:
        # serialized and compressed in the thread too: a large tensor's JSON is megabytes (14 MB at the largest
        # config: zstd 3 takes ~0.1 s), and the loop must keep answering; the middleware passes it through
        body = dumps(view())
        if not encoding:
            return Response(body, media_type="application/json", headers=headers)
        packed = compress(body, encoding, FAST[encoding])
        coded = {**headers, "Content-Encoding": encoding, "Vary": "Accept-Encoding"}
        return Response(packed, media_type="application/json", headers=coded)

    async with request.app.state.large.slot(client_of(request)):  # one at a time, clients in turn
        return await anyio.to_thread.run_sync(answer)


@router.get("/graph", response_model=GraphPublic, responses=NO_RUN, openapi_extra=PASS.openapi)
async def graph(request: Request, query: Annotated[PassQuery, Depends(PASS)]) -> Response:
    return await _computed(request, query, lambda: views.build_graph(_pass(request, query)))


@router.get("/state", response_model=StatePublic, responses=NO_RUN, openapi_extra=STEP.openapi)
async def state(request: Request, query: Annotated[StepQuery, Depends(STEP)]) -> Response:
    def view() -> dict[str, Any]:
        bp = _pass(request, query)
        return views.build_state(bp, _step(bp.mode, bp.total_steps, query.step))

    return await _computed(request, query, view)


@router.get(
    "/tensor/{name}",
    response_model=TensorDetailPublic,
    responses={404: {"description": "no such tensor or run"}, 409: NO_RUN[409]},
    openapi_extra=TENSOR.openapi,
)
async def tensor(request: Request, name: str, query: Annotated[TensorQuery, Depends(TENSOR)]) -> Response:
    def view() -> dict[str, Any]:
        bp = _pass(request, query)
        step = _step(bp.mode, bp.total_steps, query.step)
        try:
            return views.build_tensor(bp, _cache(request).dataset, name, step, query.cut)
        except views.UnknownNode as e:
            raise HTTPException(404, str(e)) from None
        except views.NoSuchSlice as e:
            raise _invalid(e.field, str(e), query.cut) from None

    return await _computed(request, query, view)


NO_NODE = {404: {"description": "no such tensor or run"}, 409: NO_RUN[409]}


def _why(request: Request, name: str, query: WhyQuery, view: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    bp = _pass(request, query)
    step = _step(bp.mode, bp.total_steps, query.step)
    if name not in bp.node_names():
        raise HTTPException(404, f"no tensor {name!r} in mode {bp.mode}; it has: {', '.join(bp.node_names())}")
    at = [int(i) for i in query.at.split(",")] if query.at else None
    try:
        return view(bp, step, at)
    except why.NotThere as e:  # an entry outside the tensor's shape
        raise _invalid("at", str(e), query.at) from None


@router.get("/why/{name}", response_model=WhyPublic, responses=NO_NODE, openapi_extra=WHY.openapi)
async def why_drawer(request: Request, name: str, query: Annotated[WhyQuery, Depends(WHY)]) -> Response:
    """Why the gradient of `name` is what it is: derivations (MathML), worked examples, forces, ≈ explained."""
    dataset = _cache(request).dataset
    return await _computed(
        request, query, lambda: _why(request, name, query, lambda bp, s, at: why.explain(bp, dataset, name, s, at))
    )


@router.get("/instance/{name}", response_model=InstancePublic, responses=NO_NODE, openapi_extra=WHY.openapi)
async def instance(request: Request, name: str, query: Annotated[WhyQuery, Depends(WHY)]) -> Response:
    """The rules that made one entry of d`name` (?at=row,col), written out with that entry's numbers."""
    return await _computed(
        request, query, lambda: _why(request, name, query, lambda bp, s, at: why.instance(bp, name, s, at))
    )


@router.get("/hints", response_model=HintsPublic, responses=NO_RUN, openapi_extra=HINT.openapi)
async def hints(request: Request, query: Annotated[HintQuery, Depends(HINT)]) -> Response:
    """The hint ladder of a backward step: shape, local derivative, chain-rule form, the lecture's line."""

    def view() -> dict[str, Any]:
        bp = _pass(request, query)
        step = _step(bp.mode, bp.total_steps, query.step)
        return {"step": step, "op": bp.schedule[step - 1].name, "ladder": challenge.hints(bp, step)}

    return await _computed(request, query, view)


@router.post(
    "/check",
    response_model=CheckPublic | CellCheckPublic,
    responses={
        400: {"model": ErrorPublic, "description": "the body is not JSON"},
        413: {"model": ErrorPublic, "description": "the body is too large"},
        422: {"model": ErrorPublic, "description": "the code was refused or the request is invalid; detail says why"},
        404: {"model": ErrorPublic, "description": "no class with the code sent as class"},
        429: {"model": ErrorPublic, "description": "this client has checks waiting already (see Retry-After)"},
        503: {"model": ErrorPublic, "description": "code checks are off, or too many are waiting (Retry-After)"},
    },
)
async def check(request: Request, body: CheckRequest) -> Response:
    """Run a learner's gradient code for one backward step, or the mode's whole backward cell (no step), in a
    sandboxed worker, and grade it."""
    pool = getattr(request.app.state, "checks", None)
    if pool is None:
        raise HTTPException(503, "code checks are off on this server")
    # the worker computes the pass itself: here only the step is checked against the mode
    total = _steps_of(body)  # a mode the net does not have is refused here, before a worker is asked
    if body.step is not None:
        _step(body.mode, total, body.step, where="body")
    # a class's code is known before anything is checked: a wrong one is a 404 and records nothing
    code = await classes_routes.class_of_check(request, body.class_code) if body.class_code is not None else None
    answer = await in_sandbox(request, pool, {"config": body.to_config(), "mode": body.mode, "step": body.step,
                                              "code": body.code})  # fmt: skip
    headers = None
    if code is not None and body.student is not None:  # written off the request path: the answer does not wait
        recorded = classes_routes.record_check(request, code, body.student, body.net, body.mode, body.step,
                                               answer["json"])  # fmt: skip
        headers = {"X-Class-Attempt": recorded}
    return Response(answer["json"], media_type="application/json", headers=headers)  # the worker's JSON, bounded there


def _steps_of(body: PassQuery) -> int:
    """How many backward steps the body's mode has in its net; a mode the net does not have is a 422."""
    net = net_of(body.net)
    try:
        return len(net.ops_for_mode(body.mode))
    except Undeclared as e:
        raise _invalid(e.field, str(e), body.mode, where="body") from None


FILE_TYPES = {"py": "text/x-python", "ipynb": "application/x-ipynb+json"}


@router.post(
    "/export",
    response_class=Response,
    responses={
        200: {"description": "the file, as a download", "content": {t: {} for t in FILE_TYPES.values()}},
        400: {"model": ErrorPublic, "description": "the body is not JSON"},
        413: {"model": ErrorPublic, "description": "the body is too large"},
        422: {"model": ErrorPublic, "description": "code outside the challenge's vocabulary, or a step past the end"},
    },
)
async def export_file(body: ExportRequest) -> Response:
    """The learner's whole cell, or their solved steps, as a .py or .ipynb that rebuilds the lecture's data and net,
    runs their backward and prints the notebook's cmp lines. The code is checked, never run, here."""
    steps = {s.step: s.code for s in body.steps} if body.steps is not None else None
    total = _steps_of(body)
    if steps:
        _step(body.mode, total, max(steps), where="body")
    try:
        name, content = export.export(body.mode, body.to_config(), body.format, cell=body.code, steps=steps)
    except Refused as e:
        raise HTTPException(422, str(e)) from None
    disposition = f'attachment; filename="{name}"'
    return Response(content, media_type=FILE_TYPES[body.format], headers={"Content-Disposition": disposition})
