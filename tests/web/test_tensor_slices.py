"""GET /api/tensor/{name} with slice_dim and slice_index: a 3-D tensor's one 2-D slice, checked against the whole
answer indexed by numpy; bad slices are 422s with a reason."""

from __future__ import annotations

import numpy
import pytest
from fastapi.testclient import TestClient

from server.web.app import create_app


@pytest.fixture(scope="module")
def client(lecture_dataset):
    with TestClient(create_app(lecture_dataset), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


TENSORS = ("value", "grad_manual", "grad_autograd", "diff")
# (net, node, step): a 3-D activation of the WaveNet, the attention weights and the lecture's emb, at the last step
CASES = [("wavenet", "h1", None), ("attention", "att", None), ("makemore4", "emb", None)]


def whole(client, net, node, step):
    params = {"net": net} | ({"step": step} if step is not None else {})
    r = client.get(f"/api/tensor/{node}", params=params)
    assert r.status_code == 200, r.text
    return r.json(), params


@pytest.mark.parametrize(("net", "node", "step"), CASES)
def test_a_slice_is_the_whole_tensors_entries_at_that_index(client, net, node, step):
    full, params = whole(client, net, node, step)
    shape = full["shape"]
    assert len(shape) == 3 and all("slice" not in (full[k] or {}) for k in TENSORS)
    for dim in range(3):
        for index in sorted({0, shape[dim] - 1}):
            r = client.get(f"/api/tensor/{node}", params=params | {"slice_dim": dim, "slice_index": index})
            assert r.status_code == 200, r.text
            part = r.json()
            for key in TENSORS:
                if full[key] is None:
                    assert part[key] is None
                    continue
                want = numpy.take(numpy.array(full[key]["data"], dtype=float), index, axis=dim)
                numpy.testing.assert_array_equal(numpy.array(part[key]["data"], dtype=float), want, err_msg=key)
                assert part[key]["slice"] == [dim, index]
                # shape, colour range and non-finite counts are the whole tensor's: one scale for every slice
                for field in ("shape", "min", "max", "nonfinite"):
                    assert part[key][field] == full[key][field], (key, field)
            # the checks are the whole gradient's
            assert (part["cmp"], part["numeric"], part["status"]) == (full["cmp"], full["numeric"], full["status"])
            assert len(r.content) < len(client.get(f"/api/tensor/{node}", params=params).content)


def test_a_split_gradients_contributions_are_sliced_alike(client):
    # a 3-D tensor that several ops read (the attention head's x feeds q, k and v), found from the graph
    for net in ("attention", "wavenet"):
        graph = client.get("/api/graph", params={"net": net}).json()
        many = [n["name"] for n in graph["nodes"] if len(n["shape"]) == 3 and n["contributions"] > 1]
        if many:
            break
    assert many, "no 3-D tensor with two contributions in the packs"
    full, params = whole(client, net, many[0], None)
    part = client.get(f"/api/tensor/{many[0]}", params=params | {"slice_dim": 1, "slice_index": 1}).json()
    assert len(part["split"]) == len(full["split"]) >= 2
    for got, want in zip(part["split"], full["split"], strict=True):
        for key in ("manual", "autograd"):
            expected = numpy.array(want[key]["data"], dtype=float)[:, 1, :]
            numpy.testing.assert_array_equal(numpy.array(got[key]["data"], dtype=float), expected)


@pytest.mark.parametrize(
    ("node", "params", "field", "needle"),
    [
        ("emb", {"slice_dim": 1}, "", "slice_dim and slice_index go together"),
        ("emb", {"slice_index": 0}, "", "slice_dim and slice_index go together"),
        ("emb", {"slice_dim": 3, "slice_index": 0}, "slice_dim", "less than or equal to 2"),
        ("emb", {"slice_dim": 1, "slice_index": -1}, "slice_index", "greater than or equal to 0"),
        ("emb", {"slice_dim": 1, "slice_index": 3}, "slice_index", "emb's dim 1 has 3 entries: index 3 is past it"),
        ("logits", {"slice_dim": 0, "slice_index": 0}, "slice_dim", "logits has 2 dims, shape (32, 27)"),
    ],
)
def test_a_slice_that_is_not_there_is_a_422_with_a_reason(client, node, params, field, needle):
    r = client.get(f"/api/tensor/{node}", params=params)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(needle in d["msg"] and (not field or d["loc"][-1] == field) for d in detail), detail
