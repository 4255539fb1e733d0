"""The pass cache: each (config, mode) computed once, bounded in count and in bytes."""

from __future__ import annotations

from dataclasses import replace

import torch

from server.core.cache import PassCache, pass_bytes
from server.core.config import ModelConfig
from tests.lecture import NODES

LECTURE = ModelConfig()


def held_bytes(bp) -> int:
    """Bytes of every tensor storage a pass holds once all its steps, comparisons and checks have run."""
    bp.history  # noqa: B018 (runs every manual step)
    for name in bp.node_names():
        if NODES[name].kind != "input":
            bp.cmp.get(name)
            bp.numeric(name)
            for step in range(bp.total_steps + 1):
                bp.cmp_at(name, step)  # the partial ones sum the paths through each consumer
            if bp.totals[name] > 1:  # the tensor view's split: every path of a node used twice
                for c in bp.contributions(name, bp.total_steps):
                    bp.path_ref(name, c.step)
    tensors = list(bp.values.values()) + list(bp.ref_grads.values()) + list(bp._values64.values())
    tensors += [g for steps in bp.history.values() for _, g in steps] + list(bp.params.values())
    tensors += [c.grad for parts in bp._contributions.values() for c in parts]
    tensors += list(bp._path_refs.values()) + list(bp._partial_refs.values())
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if isinstance(t, torch.Tensor)
    }
    return sum(storages.values())


def test_each_pass_is_computed_once_and_the_least_recently_used_goes_first(embedded_dataset):
    cache = PassCache(embedded_dataset, maxsize=3)
    first = cache.get(LECTURE, "atomic")
    assert cache.get(LECTURE, "atomic") is first
    for seed in (1, 2):
        cache.get(replace(LECTURE, seed=seed), "atomic")
    cache.get(LECTURE, "atomic")  # used again: now the most recent
    cache.get(replace(LECTURE, seed=3), "atomic")
    assert len(cache) == 3
    assert cache.get(LECTURE, "atomic") is first  # seed 1 went, not the lecture's pass
    assert len(cache) == 3


def test_the_byte_budget_bounds_what_is_kept(embedded_dataset):
    one = pass_bytes(PassCache(embedded_dataset).get(LECTURE, "atomic"))
    cache = PassCache(embedded_dataset, max_bytes=2 * one + one // 2)
    for seed in range(5):
        cache.get(replace(LECTURE, seed=seed), "atomic")
        assert cache.nbytes <= cache.max_bytes
    assert len(cache) == 2
    # a pass larger than the whole budget is still computed and kept, alone
    big = replace(LECTURE, batch_size=256, n_hidden=512)
    bp = cache.get(big, "atomic")
    assert len(cache) == 1 and cache.get(big, "atomic") is bp and cache.nbytes == pass_bytes(bp)


def test_the_size_estimate_covers_what_a_pass_holds(embedded_dataset):
    for config in (LECTURE, replace(LECTURE, dtype="float64"), replace(LECTURE, batch_size=128, n_hidden=256)):
        bp = PassCache(embedded_dataset).get(config, "atomic")
        estimate = pass_bytes(bp)
        held = held_bytes(bp)
        assert held <= estimate < 3 * held, (config, held, estimate)


def test_an_evicted_pass_is_freed_not_left_to_the_cycle_collector(embedded_dataset):
    import gc
    import weakref

    one = pass_bytes(PassCache(embedded_dataset).get(LECTURE, "atomic"))
    cache = PassCache(embedded_dataset, max_bytes=one)  # holds one pass: each new one evicts the last
    gc.collect()
    gc.disable()  # as in a busy process, where the collector may not run for a long time
    try:
        first = weakref.ref(cache.get(LECTURE, "atomic"))
        first().cmp.get("logprobs")  # a pass refers to itself through its comparisons
        cache.get(replace(LECTURE, seed=1), "atomic")
        assert first() is None  # evicted and freed: its tensors are not kept beyond the budget
    finally:
        gc.enable()
