"""Build the app from the handed-over settings, so that every web process (uvicorn's factory) can build it."""

from __future__ import annotations

import gc

import torch
from fastapi import FastAPI

from ..core.config import ModelConfig
from ..core.data import DEFAULT_DATA, dataset_from, load_dataset
from ..net.packs import default_net
from ..runs.store import Limits
from ..runs.stores import open_store
from ..settings import Settings
from .app import create_app
from .connections import GuardedHttpToolsProtocol

# what python -m server validated: its settings, and the names list's path, bytes and sha256
_handed: tuple[Settings, tuple[str, bytes, str]] | None = None


def hand_over(settings: Settings, data: tuple[str, bytes, str]) -> None:
    """Called in each web process before the app is built: these settings, and these words, not the file's."""
    global _handed
    _handed = (settings, data)
    GuardedHttpToolsProtocol.configure(settings)


def app_from_handed() -> FastAPI:
    torch.set_num_threads(1)  # small tensors: one thread is fastest, and requests run concurrently
    if _handed is not None:
        settings, data = _handed
        dataset = dataset_from(*data)
    else:  # started by uvicorn itself, not python -m server: the defaults
        settings = Settings()
        dataset = load_dataset(str(DEFAULT_DATA))
    dataset.splits(3)  # the default block size: build it before the first request
    app = create_app(dataset, settings, open_store(settings.runs_db, Limits.of(settings)))
    # the lecture's config is what most of a class opens first; vmap's one-off set-up (~0.4 s) goes here too
    app.state.cache.warm(ModelConfig(), default_net().mode_names)
    # torch, pydantic and FastAPI leave ~10^5 long-lived objects: keep the collector from rescanning them
    gc.freeze()
    return app
