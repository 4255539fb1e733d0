"""The JSON API: thin handlers that parse the query, fetch the cached pass and return a view."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError

from .. import views
from ..cache import PassCache
from ..engine import BackwardPass
from .schemas import (
    DatasetPublic,
    GraphPublic,
    HealthPublic,
    PassQuery,
    StatePublic,
    StepQuery,
    TensorDetailPublic,
)

router = APIRouter(prefix="/api", tags=["explorer"])


def _cache(request: Request) -> PassCache:
    return request.app.state.cache


def _step(bp: BackwardPass, step: int | None) -> int:
    if step is None:
        return bp.total_steps
    if step > bp.total_steps:
        # shaped like FastAPI's own 422s, so the response matches the OpenAPI schema
        message = f"step {step} is past the end: mode {bp.mode} has {bp.total_steps} backward steps"
        raise RequestValidationError([{"type": "value_error", "loc": ("query", "step"), "msg": message, "input": step}])
    return step


@router.get("/health", response_model=HealthPublic)
def health(request: Request) -> dict:
    return {"status": "ok", "cached_passes": len(_cache(request))}


@router.get("/dataset", response_model=DatasetPublic)
def dataset(request: Request) -> dict:
    ds = _cache(request).dataset
    block_size = PassQuery().block_size
    splits = ds.splits(block_size)
    return {
        "file": ds.path.name,
        "words": len(ds.words),
        "vocab": [ds.itos[i] for i in range(ds.vocab_size)],
        "vocab_size": ds.vocab_size,
        "block_size": block_size,
        "splits": {"train": len(splits.Ytr), "val": len(splits.Ydev), "test": len(splits.Yte)},
        "sha256": ds.sha256,
    }


@router.get("/graph", response_model=GraphPublic)
def graph(request: Request, query: Annotated[PassQuery, Query()]) -> dict:
    bp = _cache(request).get(query.to_config(), query.mode)
    return views.build_graph(bp)


@router.get("/state", response_model=StatePublic)
def state(request: Request, query: Annotated[StepQuery, Query()]) -> dict:
    bp = _cache(request).get(query.to_config(), query.mode)
    return views.build_state(bp, _step(bp, query.step))


@router.get("/tensor/{name}", response_model=TensorDetailPublic, responses={404: {"description": "no such tensor"}})
def tensor(request: Request, name: str, query: Annotated[StepQuery, Query()]) -> dict:
    cache = _cache(request)
    bp = cache.get(query.to_config(), query.mode)
    try:
        return views.build_tensor(bp, cache.dataset, name, _step(bp, query.step))
    except views.UnknownNode as e:
        raise HTTPException(404, str(e)) from None
