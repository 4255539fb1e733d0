"""The one place where tensors become JSON: nested lists, non-finite entries as null."""

from __future__ import annotations

import math
from typing import Any

import numpy
import orjson
import torch

NO_NONFINITE = {"nan": 0, "posinf": 0, "neginf": 0}
# a graded check's JSON: its diffs have the shapes of the step's gradients, so the largest config's
# largest step (hprebn in float64, three gradients) fits under it; past it the diffs are left out
MAX_GRADED_BYTES = 16 << 20


def dumps(content: Any) -> bytes:
    """JSON bytes; numpy arrays (tensor data) become nested lists and NaN/±Inf become null."""
    # float32 arrays are written in float32's shortest round-trip form: what torch prints, and half the bytes
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def finite_or_none(x: float | None) -> float | None:
    """A float JSON can carry: NaN and ±Inf become null."""
    return x if x is not None and math.isfinite(x) else None


def entry(t: torch.Tensor, index: list[int] | tuple[int, ...] = ()) -> float:
    """One entry as the tensor's JSON writes it: a float32 entry with float32's shortest digits, so that the page
    reads the same number from an answer that names the entry as from the tensor's data."""
    x = t[tuple(index)].item() if index else t.item()
    if t.dtype == torch.float32 and math.isfinite(x):
        return float(str(numpy.float32(x)))
    return float(x)


def tensor_public(t: torch.Tensor | None, cut: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """{shape, data, min, max, nonfinite}; min/max over the finite entries only; data goes out through dumps().

    `cut` = (dim, index): data holds that slice alone, marked {"slice": [dim, index]}; shape, min, max and the
    non-finite counts stay the whole tensor's (every slice on one colour scale)."""
    if t is None:
        return None
    t = t.detach()
    if cut is not None:
        whole = tensor_public(t)
        assert whole is not None
        return {**whole, "data": t.select(*cut).contiguous().numpy(), "slice": list(cut)}
    shape = list(t.shape)
    data: Any = t.item() if t.dim() == 0 else t.contiguous().numpy()
    if t.numel() == 0:
        return {"shape": shape, "data": data, "min": None, "max": None, "nonfinite": NO_NONFINITE}
    lo, hi = (float(x) for x in t.aminmax())  # NaN anywhere makes both NaN
    if not t.is_floating_point():
        return {"shape": shape, "data": data, "min": int(lo), "max": int(hi), "nonfinite": NO_NONFINITE}
    if math.isfinite(lo) and math.isfinite(hi):
        return {"shape": shape, "data": data, "min": lo, "max": hi, "nonfinite": NO_NONFINITE}
    finite = torch.isfinite(t)
    values = t[finite]
    return {
        "shape": shape,
        "data": finite_or_none(data) if t.dim() == 0 else data,
        "min": float(values.min()) if values.numel() else None,
        "max": float(values.max()) if values.numel() else None,
        "nonfinite": {
            "nan": int(torch.isnan(t).sum()),
            "posinf": int(torch.isposinf(t).sum()),
            "neginf": int(torch.isneginf(t).sum()),
        },
    }


def cmp_public(cmp: dict[str, Any] | None) -> dict[str, Any] | None:
    """The comparison line with its floats made JSON-safe."""
    if cmp is None:
        return None
    return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in cmp.items()}


def graded_json(graded: dict[str, Any], max_bytes: int = MAX_GRADED_BYTES) -> bytes:
    """A graded check as JSON bytes, at most `max_bytes`: over it, without its diffs (the feedback says so)."""
    body = dumps(graded)
    if len(body) <= max_bytes:
        return body
    items = graded.get("results") or [graded.get("first_wrong") or {"diff": None}]  # a step's, or a whole cell's
    for item in items:
        if item["diff"] is not None:
            item["diff"] = None
            item["feedback"].append(f"{item['name']}'s difference is too large to send ({len(body):,} bytes in all)")
    return dumps(graded)
