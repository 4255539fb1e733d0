"""The one place where tensors become JSON: nested lists, non-finite entries as null."""

from __future__ import annotations

import math
from typing import Any

import torch


def finite_or_none(x: float | None) -> float | None:
    """A float JSON can carry: NaN and ±Inf become null."""
    return x if x is not None and math.isfinite(x) else None


def _nulls(data: Any) -> Any:
    if isinstance(data, list):
        return [_nulls(x) for x in data]
    return data if math.isfinite(data) else None


def tensor_public(t: torch.Tensor | None) -> dict[str, Any] | None:
    """{shape, data, min, max, nonfinite}; min/max over the finite entries only."""
    if t is None:
        return None
    t = t.detach()
    shape = list(t.shape)
    if not t.is_floating_point():
        data = t.tolist()
        return {
            "shape": shape,
            "data": data,
            "min": float(t.min()) if t.numel() else None,
            "max": float(t.max()) if t.numel() else None,
            "nonfinite": {"nan": 0, "posinf": 0, "neginf": 0},
        }
    finite = torch.isfinite(t)
    nonfinite = {
        "nan": int(torch.isnan(t).sum()),
        "posinf": int(torch.isposinf(t).sum()),
        "neginf": int(torch.isneginf(t).sum()),
    }
    all_finite = bool(finite.all())
    values = t[finite]
    data = t.tolist()
    return {
        "shape": shape,
        "data": data if all_finite else _nulls(data),
        "min": float(values.min()) if values.numel() else None,
        "max": float(values.max()) if values.numel() else None,
        "nonfinite": nonfinite,
    }


def cmp_public(cmp: dict[str, Any] | None) -> dict[str, Any] | None:
    """The comparison line with its floats made JSON-safe."""
    if cmp is None:
        return None
    return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in cmp.items()}
