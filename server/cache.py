"""A bounded LRU of computed backward passes, keyed by (config, mode)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

from .config import ModelConfig
from .data import Dataset
from .engine import BackwardPass, run_backward


class PassCache:
    """Computes each (config, mode) once; concurrent requests for the same key wait for one run."""

    def __init__(
        self,
        dataset: Dataset,
        maxsize: int = 512,
        trained: Callable[[int], dict[str, torch.Tensor] | None] = lambda run: None,
    ) -> None:
        self.dataset = dataset
        self.maxsize = maxsize
        self.trained = trained  # run id -> its trained parameters
        self._entries: OrderedDict[tuple[ModelConfig, str], BackwardPass] = OrderedDict()
        self._inflight: dict[tuple[ModelConfig, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, config: ModelConfig, mode: str) -> BackwardPass:
        key = (config, mode)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            key_lock = self._inflight.setdefault(key, threading.Lock())
        with key_lock:
            try:
                with self._lock:
                    if key in self._entries:
                        return self._entries[key]
                params = self.trained(config.run) if config.run else None
                if config.run and params is None:
                    raise LookupError(f"run {config.run} has no trained parameters")
                result = run_backward(config, self.dataset, mode, params)
                with self._lock:
                    self._entries[key] = result
                    while len(self._entries) > self.maxsize:
                        self._entries.popitem(last=False)
                return result
            finally:
                with self._lock:
                    self._inflight.pop(key, None)

    def warm(self, config: ModelConfig, modes: tuple[str, ...]) -> None:
        """Compute `config` in every mode with one numeric check each: pays vmap's first-call set-up now."""
        for mode in modes:
            self.get(config, mode).numeric("C")

    def __len__(self) -> int:
        return len(self._entries)
