"""Tensors on the wire: non-finite entries become null and are counted; min/max skip them."""

from __future__ import annotations

import json
import math

import torch

from server.core.serialize import cmp_public, dumps, tensor_public


def wire(t):
    """What a client receives for tensor t."""
    return json.loads(dumps(tensor_public(t)))


def test_finite_tensor_round_trips_exactly():
    t = torch.tensor([[0.1, -2.5], [3.0, 4.25]], dtype=torch.float32)
    out = wire(t)
    assert out["shape"] == [2, 2]
    assert torch.equal(torch.tensor(out["data"], dtype=torch.float32), t)
    assert out["min"] == -2.5 and out["max"] == 4.25
    assert out["nonfinite"] == {"nan": 0, "posinf": 0, "neginf": 0}


def test_nonfinite_entries_are_null_and_counted():
    t = torch.tensor([[1.0, math.nan, math.inf], [-math.inf, -3.0, math.nan]])
    raw = dumps(tensor_public(t))
    out = json.loads(raw)
    assert out["data"] == [[1.0, None, None], [None, -3.0, None]]
    assert out["nonfinite"] == {"nan": 2, "posinf": 1, "neginf": 1}
    assert out["min"] == -3.0 and out["max"] == 1.0
    assert b"NaN" not in raw and b"Infinity" not in raw  # strict JSON


def test_all_nonfinite_and_scalar_and_int():
    out = wire(torch.full((2,), math.nan))
    assert out["min"] is None and out["max"] is None and out["data"] == [None, None]
    assert wire(torch.tensor(math.inf))["data"] is None
    assert wire(torch.tensor(2.5, dtype=torch.float64))["data"] == 2.5
    ints = wire(torch.tensor([[1, 2], [3, 4]]))
    assert ints["data"] == [[1, 2], [3, 4]] and ints["max"] == 4
    assert tensor_public(None) is None


def test_float32_goes_out_in_its_shortest_form_and_float64_in_full():
    assert dumps(tensor_public(torch.tensor([0.1]))["data"]) == b"[0.1]"
    assert json.loads(dumps(tensor_public(torch.tensor([0.1], dtype=torch.float64))))["data"] == [0.1]
    t = torch.tensor([1 / 3], dtype=torch.float64)
    assert json.loads(dumps(tensor_public(t)))["data"][0] == 1 / 3


def test_transposed_tensor_keeps_its_layout():
    t = torch.arange(6, dtype=torch.float32).view(2, 3).T
    assert wire(t)["data"] == t.tolist()


def test_cmp_nonfinite_maxdiff_is_null():
    assert cmp_public({"exact": False, "maxdiff": math.nan, "max_rel": math.inf}) == {
        "exact": False,
        "maxdiff": None,
        "max_rel": None,
    }


def test_graded_json_is_bounded():
    import orjson

    from server.core.serialize import graded_json

    graded = {"correct": False, "results": [
        {"name": "dW1", "diff": tensor_public(torch.ones(100, 100)), "feedback": ["dW1 differs"]},
        {"name": "db1", "diff": None, "feedback": []},
    ]}  # fmt: skip
    assert len(graded_json(dict(graded), max_bytes=1 << 20)) > 20_000  # under the cap: the diff is sent
    body = graded_json(graded, max_bytes=10_000)
    assert len(body) < 10_000
    out = orjson.loads(body)
    assert out["results"][0]["diff"] is None and "too large to send" in out["results"][0]["feedback"][-1]
