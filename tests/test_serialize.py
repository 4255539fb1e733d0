"""Tensors on the wire: non-finite entries become null and are counted; min/max skip them."""

from __future__ import annotations

import json
import math

import torch

from server.serialize import cmp_public, tensor_public


def test_finite_tensor_round_trips_exactly():
    t = torch.tensor([[0.1, -2.5], [3.0, 4.25]], dtype=torch.float32)
    out = tensor_public(t)
    assert out["shape"] == [2, 2]
    assert torch.equal(torch.tensor(out["data"], dtype=torch.float32), t)
    assert out["min"] == -2.5 and out["max"] == 4.25
    assert out["nonfinite"] == {"nan": 0, "posinf": 0, "neginf": 0}


def test_nonfinite_entries_are_null_and_counted():
    t = torch.tensor([[1.0, math.nan, math.inf], [-math.inf, -3.0, math.nan]])
    out = tensor_public(t)
    assert out["data"] == [[1.0, None, None], [None, -3.0, None]]
    assert out["nonfinite"] == {"nan": 2, "posinf": 1, "neginf": 1}
    assert out["min"] == -3.0 and out["max"] == 1.0
    json.dumps(out, allow_nan=False)  # strict JSON: raises on NaN


def test_all_nonfinite_and_scalar_and_int():
    out = tensor_public(torch.full((2,), math.nan))
    assert out["min"] is None and out["max"] is None and out["data"] == [None, None]
    assert tensor_public(torch.tensor(math.inf))["data"] is None
    ints = tensor_public(torch.tensor([[1, 2], [3, 4]]))
    assert ints["data"] == [[1, 2], [3, 4]] and ints["max"] == 4
    assert tensor_public(None) is None


def test_cmp_nonfinite_maxdiff_is_null():
    assert cmp_public({"exact": False, "maxdiff": math.nan, "max_rel": math.inf}) == {
        "exact": False,
        "maxdiff": None,
        "max_rel": None,
    }
