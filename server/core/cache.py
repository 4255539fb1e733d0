"""A bounded LRU of computed backward passes, keyed by (config, mode): bounded in count and in bytes."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

from ..settings import Settings
from .config import ModelConfig
from .data import Dataset
from .engine import BackwardPass, run_backward

# a pass holds its forward values, then the manual gradients per step, autograd's and the float64
# copies for finite differences: ~6x its forward values once everything is asked for (measured 0.54 MB
# for the lecture's config, whose forward values are 0.09 MB)
BYTES_PER_VALUE_BYTE = 6
COLLECT_EVERY = 8  # garbage is collected once passes of 1/8 of the byte budget have been evicted


def pass_bytes(bp: BackwardPass) -> int:
    """What a pass will hold in memory once all its steps and checks have run (an estimate)."""
    values = sum(t.numel() * t.element_size() for t in bp.values.values() if isinstance(t, torch.Tensor))
    return BYTES_PER_VALUE_BYTE * values


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Hand freed heap memory back to the system: glibc keeps it in each thread's arena otherwise, and the
    passes of large configs are computed on whichever worker thread is free (arenas: one per thread)."""
    if _TRIM is not None:
        _TRIM(0)


class OtherVocabulary(LookupError):
    """A run trained on another names list (another --data at the time): its embedding does not fit."""


class PassCache:
    """Computes each (config, mode) once; concurrent requests for the same key wait for one run.

    The least recently used passes go when there are more than `maxsize`, or when together they would
    hold more than `max_bytes` (a class trying the largest configs must not run the server out of memory).
    """

    def __init__(
        self,
        dataset: Dataset,
        maxsize: int = Settings.cache_size,
        trained: Callable[[int], dict[str, torch.Tensor] | None] = lambda run: None,
        max_bytes: int = Settings.cache_mb << 20,
    ) -> None:
        self.dataset = dataset
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._evicted = 0  # bytes evicted since the last garbage collection
        self.trained = trained  # run id -> its trained parameters
        self._entries: OrderedDict[tuple[ModelConfig, str], tuple[BackwardPass, int]] = OrderedDict()
        self._inflight: dict[tuple[ModelConfig, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, config: ModelConfig, mode: str) -> BackwardPass:
        key = (config, mode)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
            key_lock = self._inflight.setdefault(key, threading.Lock())
        with key_lock:
            try:
                with self._lock:
                    if key in self._entries:
                        return self._entries[key][0]
                params = self.trained(config.run) if config.run else None
                if config.run and params is None:
                    raise LookupError(f"run {config.run} has no trained parameters")
                if params is not None and params["C"].shape[0] != self.dataset.vocab_size:
                    raise OtherVocabulary(
                        f"run {config.run} was trained on a names list of {params['C'].shape[0]} characters; "
                        f"this server's has {self.dataset.vocab_size}"
                    )
                result = run_backward(config, self.dataset, mode, params)
                size = pass_bytes(result)
                with self._lock:
                    self._entries[key] = (result, size)
                    self.nbytes += size
                    # the newest pass stays even alone over the budget: it is being asked for now
                    while len(self._entries) > 1 and (
                        len(self._entries) > self.maxsize or self.nbytes > self.max_bytes
                    ):
                        evicted = self._entries.popitem(last=False)[1][1]
                        self.nbytes -= evicted
                        self._evicted += evicted
                    collect = self._evicted > self.max_bytes // COLLECT_EVERY
                    if collect:
                        self._evicted = 0
                if collect:
                    # a pass is a reference cycle (its comparisons point back at it): only the cycle collector
                    # frees an evicted one, and it counts objects, not bytes, so it may not run for a long time
                    gc.collect()
                    release_free_memory()
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
