"""Build the app from the environment, so that every uvicorn worker process can import it."""

from __future__ import annotations

import gc
import os

import torch
from fastapi import FastAPI

from ..config import ModelConfig
from ..data import DEFAULT_DATA, dataset_from, load_dataset
from ..graph import MODES
from ..runs import DEFAULT_RUNS_DB, Limits, RunStore
from .app import create_app
from .guards import LOCAL_HOSTS

_handed: tuple[str, bytes, str] | None = None  # the names list python -m server validated: path, bytes, sha256


def hand_over(data: tuple[str, bytes, str]) -> None:
    """Called in each server process before the app is built: the words it serves are these, not the file's."""
    global _handed
    _handed = data


def app_from_env() -> FastAPI:
    torch.set_num_threads(1)  # small tensors: one thread is fastest, and requests run concurrently
    if _handed is not None:
        dataset = dataset_from(*_handed)
    else:  # started by uvicorn itself, not python -m server
        dataset = load_dataset(os.environ.get("BACKPROP_DATA", str(DEFAULT_DATA)))
    dataset.splits(3)  # the default block size: build it before the first request
    runs = RunStore(
        os.environ.get("BACKPROP_RUNS_DB", str(DEFAULT_RUNS_DB)),
        Limits(
            max_running=int(os.environ.get("BACKPROP_MAX_RUNS", "2")),
            max_queued=int(os.environ.get("BACKPROP_MAX_QUEUED", "8")),
            watch_grace_s=float(os.environ.get("BACKPROP_WATCH_GRACE_S", "30")),
            keep_ended=int(os.environ.get("BACKPROP_KEEP_RUNS", "500")),
        ),
    )
    app = create_app(
        dataset,
        cache_size=int(os.environ.get("BACKPROP_CACHE_SIZE", "512")),
        cache_bytes=int(os.environ.get("BACKPROP_CACHE_MB", "512")) << 20,
        runs=runs,
        check_workers=int(os.environ.get("BACKPROP_CHECK_WORKERS", "2")),
        max_streams=int(os.environ.get("BACKPROP_MAX_STREAMS", "200")),
        allowed_hosts=tuple(os.environ.get("BACKPROP_ALLOWED_HOSTS", ",".join(LOCAL_HOSTS)).split(",")),
    )
    # the lecture's config is what most of a class opens first; vmap's one-off set-up (~0.4 s) goes here too
    app.state.cache.warm(ModelConfig(), MODES)
    # torch, pydantic and FastAPI leave ~10^5 long-lived objects: keep the collector from rescanning them
    gc.freeze()
    return app
