"""The drawn computation graph: every declared edge once, no overlaps, top to bottom, branches apart."""

from __future__ import annotations

import math
from collections import Counter
from itertools import combinations, pairwise
from typing import Any

import pytest

from server.explain.layout import graph_layout
from tests.lecture import MODES, NET, NODES, ops_for_mode

BOUNDARY_TOL = 1.0  # px: points are rounded to 0.1, the page needs the arrowhead on the box's edge
MIN_BRANCH_ANGLE = 10.0  # degrees between two arrows leaving one tensor: less reads as one line
MIN_PARAM_OFFSET = 20.0  # px between a parameter's centre and its op's other input's: beside, not on
MIN_BOX_GAP = 14.0  # px between two boxes of one row: less and two names read as one
MIN_ROW_GAP = 20.0  # px between two rows: room for an arrowhead


def _boxes(layout: dict[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    return {("tensor", k): v for k, v in layout["nodes"].items()} | {("op", k): v for k, v in layout["ops"].items()}


def _source_target(edge: dict[str, Any]) -> tuple[tuple[str, str], tuple[str, str]]:
    tensor, op = ("tensor", edge["tensor"]), ("op", edge["op"])
    return (tensor, op) if edge["kind"] == "in" else (op, tensor)


def _on_boundary(point: list[float], box: dict[str, float]) -> bool:
    dx, dy = abs(point[0] - box["x"]), abs(point[1] - box["y"])
    inside = dx <= box["w"] / 2 + BOUNDARY_TOL and dy <= box["h"] / 2 + BOUNDARY_TOL
    return inside and (dx >= box["w"] / 2 - BOUNDARY_TOL or dy >= box["h"] / 2 - BOUNDARY_TOL)


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return abs(a["x"] - b["x"]) < (a["w"] + b["w"]) / 2 and abs(a["y"] - b["y"]) < (a["h"] + b["h"]) / 2


def _cross(p: list[float], q: list[float], r: list[float], s: list[float]) -> bool:
    """Whether segments pq and rs cross at a point inside both (a shared end point is no crossing)."""

    def orient(a: list[float], b: list[float], c: list[float]) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    return orient(r, s, p) * orient(r, s, q) < 0 and orient(p, q, r) * orient(p, q, s) < 0


def count_crossings(edges: list[dict[str, Any]]) -> int:
    """How many pairs of edges cross somewhere along their polylines."""
    count = 0
    for a, b in combinations(edges, 2):
        segments_a = list(pairwise(a["points"]))
        segments_b = list(pairwise(b["points"]))
        count += any(_cross(p, q, r, s) for p, q in segments_a for r, s in segments_b)
    return count


def _segment_hits_box(p: list[float], q: list[float], box: dict[str, float]) -> bool:
    """Whether segment pq passes through the box's interior (Liang-Barsky clipping)."""
    t0, t1 = 0.0, 1.0
    d = (q[0] - p[0], q[1] - p[1])
    for axis, half in ((0, box["w"] / 2 - 0.5), (1, box["h"] / 2 - 0.5)):
        low, high = (box["x"], box["y"])[axis] - half, (box["x"], box["y"])[axis] + half
        if d[axis] == 0:
            if not low < p[axis] < high:
                return False
            continue
        ta, tb = sorted(((low - p[axis]) / d[axis], (high - p[axis]) / d[axis]))
        t0, t1 = max(t0, ta), min(t1, tb)
    return t0 < t1


def test_crossing_counter_counts():
    x = [{"points": [[0, 0], [10, 10]]}, {"points": [[10, 0], [0, 10]]}]
    shared_end = [{"points": [[0, 0], [5, 10]]}, {"points": [[10, 0], [5, 10]]}]
    bent = [{"points": [[0, 0], [0, 5], [10, 10]]}, {"points": [[5, 0], [5, 10]]}]
    assert count_crossings(x) == 1 and count_crossings(shared_end) == 0 and count_crossings(bent) == 1


@pytest.mark.parametrize("mode", MODES)
def test_every_declared_edge_once(mode):
    layout = graph_layout(NET, mode)
    declared = Counter()
    for op in ops_for_mode(mode):
        declared.update(("in", op.name, t) for t in op.inputs)
        declared.update(("out", op.name, t) for t in op.outputs)
    drawn = Counter((e["kind"], e["op"], e["tensor"]) for e in layout["edges"])
    assert drawn == declared
    for e in layout["edges"]:
        assert (e["source"], e["target"]) == ((e["tensor"], e["op"]) if e["kind"] == "in" else (e["op"], e["tensor"]))
    assert set(layout["ops"]) == {op.name for op in ops_for_mode(mode)}
    assert {t for _, _, t in declared} == set(layout["nodes"]) >= {"Xb", "Yb"}


@pytest.mark.parametrize("mode", MODES)
def test_boxes_do_not_overlap_and_fit(mode):
    layout = graph_layout(NET, mode)
    boxes = _boxes(layout)
    for (a, box_a), (b, box_b) in combinations(boxes.items(), 2):
        assert not _overlap(box_a, box_b), (a, b)
        if box_a["y"] == box_b["y"]:
            assert abs(box_a["x"] - box_b["x"]) - (box_a["w"] + box_b["w"]) / 2 >= MIN_BOX_GAP, (a, b)
    rows = sorted({(box["y"], box["h"]) for box in boxes.values()})
    for (y0, h0), (y1, h1) in pairwise(rows):
        assert y1 - h1 / 2 - (y0 + h0 / 2) >= MIN_ROW_GAP or y1 == y0, (y0, y1)
    for key, box in boxes.items():
        assert box["w"] / 2 < box["x"] < layout["width"] - box["w"] / 2, key
        assert box["h"] / 2 < box["y"] < layout["height"] - box["h"] / 2, key
    for e in layout["edges"]:
        assert all(0 <= x <= layout["width"] and 0 <= y <= layout["height"] for x, y in e["points"]), e


@pytest.mark.parametrize("mode", MODES)
def test_box_sizes_fit_labels(mode):
    layout = graph_layout(NET, mode)
    for name, box in layout["nodes"].items():
        assert box["w"] >= 7 * len(name) + 10 and box["h"] >= 16, name
    for op in ops_for_mode(mode):
        box = layout["ops"][op.name]
        assert box["symbol"] == op.symbol and box["w"] >= 7 * len(op.symbol) and box["h"] >= 12, op.name


@pytest.mark.parametrize("mode", MODES)
def test_edges_go_down_from_box_edge_to_box_edge(mode):
    layout = graph_layout(NET, mode)
    boxes = _boxes(layout)
    for e in layout["edges"]:
        source, target = _source_target(e)
        points = e["points"]
        assert boxes[target]["y"] > boxes[source]["y"], e
        assert all(q[1] > p[1] for p, q in pairwise(points)), e
        assert _on_boundary(points[0], boxes[source]) and _on_boundary(points[-1], boxes[target]), e


@pytest.mark.parametrize("mode", MODES)
def test_edges_pass_no_other_box(mode):
    layout = graph_layout(NET, mode)
    boxes = _boxes(layout)
    for e in layout["edges"]:
        ends = _source_target(e)
        for key, box in boxes.items():
            if key not in ends:
                assert not any(_segment_hits_box(p, q, box) for p, q in pairwise(e["points"])), (e, key)


@pytest.mark.parametrize("mode", MODES)
def test_no_edges_cross(mode):
    # measured: no crossing in any mode; a declaration change that adds one should be looked at
    assert count_crossings(graph_layout(NET, mode)["edges"]) == 0


@pytest.mark.parametrize("mode", MODES)
def test_branches_leave_in_different_directions(mode):
    layout = graph_layout(NET, mode)
    by_source = {}
    for e in layout["edges"]:
        by_source.setdefault(_source_target(e)[0], []).append(e)
    branching = {source: edges for source, edges in by_source.items() if len(edges) > 1}
    # the tensors two ops read: batchnorm's hprebn and bndiff, softmax's logits and counts, where not fused
    readers = Counter(i for op in ops_for_mode(mode) for i in op.inputs)
    assert {name for _, name in branching} == {name for name, k in readers.items() if k > 1}
    for edges in branching.values():
        angles = [math.degrees(math.atan2(q[0] - p[0], q[1] - p[1])) for p, q in (e["points"][:2] for e in edges)]
        for a, b in combinations(angles, 2):
            assert abs(a - b) > MIN_BRANCH_ANGLE, edges


@pytest.mark.parametrize("mode", MODES)
def test_not_one_column(mode):
    assert len({box["x"] for box in graph_layout(NET, mode)["nodes"].values()}) >= 3


@pytest.mark.parametrize("mode", MODES)
def test_leaves_beside_their_op(mode):
    layout = graph_layout(NET, mode)
    boxes = _boxes(layout).values()
    for op in ops_for_mode(mode):
        op_box = layout["ops"][op.name]
        leaves = [t for t in op.inputs if NODES[t].kind in ("param", "input")]
        for leaf in leaves:
            box = layout["nodes"][leaf]
            # in the row just above the op: no box between them
            assert not any(box["y"] < other["y"] < op_box["y"] for other in boxes), leaf
            for other in (t for t in op.inputs if t != leaf):
                assert abs(box["x"] - layout["nodes"][other]["x"]) > MIN_PARAM_OFFSET, (leaf, other)
        # the chain runs through the op: it sits no farther from its computed input than from a leaf
        for computed in (t for t in op.inputs if t not in leaves):
            gap = abs(layout["nodes"][computed]["x"] - op_box["x"])
            assert all(gap <= abs(layout["nodes"][leaf]["x"] - op_box["x"]) for leaf in leaves), (op.name, computed)


@pytest.mark.parametrize("mode", MODES)
def test_deterministic_and_cached(mode):
    first = graph_layout(NET, mode)
    assert graph_layout(NET, mode) is first
    graph_layout.cache_clear()
    again = graph_layout(NET, mode)
    assert again == first and again is not first
