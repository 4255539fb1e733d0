"""Finite differences: d loss / d node measured by re-running the declared forward, to check a manual gradient."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import SimpleNamespace

import torch

from ..net.declare import Net, Op
from ..net.forward import run_forward

NUMERIC_ENTRIES = 16  # entries per node checked by finite differences
NUMERIC_SAMPLE_SEED = 1337  # the entries checked are a pure function of the config
NUMERIC_ZERO = 1e-6  # below this |gradient| an entry is judged by absolute error
NUMERIC_STEP, NUMERIC_STEP_FLOOR = 1e-3, 0.1  # finite-difference step: NUMERIC_STEP x max(|entry|, floor)
# relative error above which an entry below the step's floor is measured again: beyond the manual gradient's own
# precision (a float32 gradient is only good to ~1e-6)
NUMERIC_RETRY = {"float64": 1e-6, "float32": 1e-4}
STENCIL = (-2.0, -1.0, 1.0, 2.0)  # five-point central difference: offsets in steps h
VMAP_ELEMENTS = 1 << 21  # entries per activation that the perturbed forwards may hold at once (16 MB in float64)

Values = Mapping[str, object]


def ops_after(ops: list[Op], name: str) -> int:
    """Where the forward resumes when `name` changes: the index of the op after the one that makes it."""
    return next((i + 1 for i, op in enumerate(ops) if name in op.outputs), 0)


def check_gradient(
    net: Net, ops: list[Op], values64: Values, name: str, manual: torch.Tensor, ref_grad: torch.Tensor, dtype: str
) -> dict[str, object]:
    """Five-point central differences in float64 at sampled entries of `name`, against its manual gradient.

    `values64` holds the forward values in float64; the forward re-runs from the node onward, `dtype` is the
    precision the manual gradient was computed in.
    """
    x = values64[name]
    assert isinstance(x, torch.Tensor)
    if name == "loss":
        manual = torch.ones((), dtype=x.dtype)
    manual = manual.to(torch.float64).reshape(-1)
    idx = torch.tensor(sample_entries(ref_grad.reshape(-1), x.numel()))
    at = x.reshape(-1)[idx].abs()  # (k,) the entries' sizes
    man = manual[idx]
    num = derivatives(net, ops, values64, name, idx, NUMERIC_STEP * at.clamp_min(NUMERIC_STEP_FLOOR))
    err = (man - num).abs()
    # the floor keeps the step above round-off, but an entry far below it that feeds a log (a tiny
    # probability) needs a step relative to itself: such entries are measured again with one, and the
    # closer estimate counts (a wrong gradient is off at every step)
    suspect = (err > NUMERIC_RETRY[dtype] * man.abs()) & (man.abs() >= NUMERIC_ZERO)
    retry = suspect & (at < NUMERIC_STEP_FLOOR) & (at > 0)
    if retry.any():
        again = derivatives(net, ops, values64, name, idx[retry], NUMERIC_STEP * at[retry])
        num[retry] = torch.where((man[retry] - again).abs() < err[retry], again, num[retry])
        err = (man - num).abs()
    scale = torch.maximum(man.abs(), num.abs())
    # a ~0 gradient (b1 under batchnorm, logit_maxes): relative error means nothing there
    near_zero = scale < NUMERIC_ZERO
    rel = err[~near_zero] / scale[~near_zero]
    return {
        "max_rel_err": float(rel.max()) if rel.numel() else 0.0,
        "entries_checked": len(idx),
        "near_zero_entries": int(near_zero.sum()),
        "near_zero_max_abs_err": float(err[near_zero].max()) if near_zero.any() else 0.0,
    }


def derivatives(
    net: Net, ops: list[Op], values64: Values, name: str, idx: torch.Tensor, h: torch.Tensor
) -> torch.Tensor:
    """d loss / d name at the flat entries idx, by five-point central differences with steps h (k,)."""
    x = values64[name]
    assert isinstance(x, torch.Tensor)
    k = len(idx)
    start = ops_after(ops, name)
    offsets = (h[:, None] * torch.tensor(STENCIL, dtype=torch.float64)).reshape(-1)  # (4k,)
    at = idx.repeat_interleave(len(STENCIL))  # (4k,) the entry each perturbed forward moves
    if name == "loss":
        f = (x + offsets).reshape(k, len(STENCIL))
    elif row_local(net, ops[start:], name):
        f = row_losses(net, ops, values64, name, start, at, offsets).reshape(k, len(STENCIL))
    else:
        # all 4k perturbed forwards as one vmapped forward (~3x faster than a Python loop)
        perturbed = x.reshape(1, -1).repeat(4 * k, 1)  # (4k, numel)
        perturbed[torch.arange(4 * k), at] += offsets

        def loss_with(xp: torch.Tensor) -> torch.Tensor:
            return run_forward(ops, {**values64, name: xp}, start)["loss"]  # type: ignore[return-value]

        # in chunks for the largest configs: 4k copies of every activation would need ~1 GB at batch 256 x 512
        widest = max(t.numel() for t in values64.values() if isinstance(t, torch.Tensor))
        chunk = max(1, VMAP_ELEMENTS // widest)
        f = torch.func.vmap(loss_with, chunk_size=chunk if chunk < 4 * k else None)(
            perturbed.reshape(4 * k, *x.shape)
        ).reshape(k, len(STENCIL))
    # f: (k, 4) = the loss at x-2h, x-h, x+h, x+2h (up to a constant per entry, which the stencil cancels)
    return (f[:, 0] - 8 * f[:, 1] + 8 * f[:, 2] - f[:, 3]) / (12 * h)  # (k,)


def row_losses(
    net: Net, ops: list[Op], values64: Values, name: str, start: int, at: torch.Tensor, offsets: torch.Tensor
) -> torch.Tensor:
    """The loss at each perturbation, minus a constant, re-running only the perturbed entry's batch row.

    The ops after the node keep rows apart and the loss is their mean, so moving an entry of row r changes
    the loss by (row r's term after - before) / n. The perturbed rows go through those ops as one batch of
    4k rows; the loss op then gives each row's term.
    """
    x = values64[name]
    assert isinstance(x, torch.Tensor)
    n, m = x.shape[0], len(at)
    row_numel = x.numel() // n
    rows = at // row_numel  # (4k,) the batch row of each perturbed entry
    xr = x[rows].reshape(m, row_numel)  # (4k, row_numel)
    xr[torch.arange(m), at % row_numel] += offsets
    used = {i for op in ops[start:] for i in op.inputs}
    batch = {
        k: t[rows] for k in used if net.node(k).axes[:1] == ("batch",) and isinstance(t := values64[k], torch.Tensor)
    }
    values = run_forward(ops[:-1], {**values64, **batch, name: xr.reshape(m, *x.shape[1:]), "n": m}, start)
    loss_op = ops[-1]

    def row_term(one_row: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_op.forward(SimpleNamespace(**{**values, **one_row, "n": 1}))

    inputs = {k: values[k].unsqueeze(1) for k in loss_op.inputs}  # type: ignore[union-attr]
    return torch.func.vmap(row_term)(inputs) / n  # (4k,)


def row_local(net: Net, ops: list[Op], name: str) -> bool:
    """Whether a change to one batch row of `name` reaches the loss through that row only (see Op.rows)."""
    return (
        net.node(name).axes[:1] == ("batch",)
        and bool(ops)
        and all(op.rows == "each" for op in ops[:-1])
        and ops[-1].rows == "mean"
    )


def sample_entries(ref_grad: torch.Tensor, numel: int) -> list[int]:
    """Half the entries with the largest |gradient| (the informative ones), half at random."""
    k = min(NUMERIC_ENTRIES, numel)
    top = ref_grad.abs().argsort(descending=True, stable=True)[: k // 2].tolist()
    chosen = set(top)
    rest = [i for i in _random_order(numel) if i not in chosen][: k - len(top)]
    return sorted(top + rest)


@functools.lru_cache(maxsize=1024)
def _random_order(numel: int) -> tuple[int, ...]:
    """The start of a fixed random permutation of range(numel): enough to pick the random half from."""
    g = torch.Generator().manual_seed(NUMERIC_SAMPLE_SEED)
    return tuple(torch.randperm(numel, generator=g)[: 2 * NUMERIC_ENTRIES].tolist())
