"""The computation graph of a mode laid out in layers: tensor and op boxes, edges as polylines, top to bottom."""

from __future__ import annotations

import functools
import threading
from itertools import pairwise
from typing import Any

from grandalf.graphs import Edge, Graph, Vertex
from grandalf.layouts import SugiyamaLayout

from ..net.declare import Net

# box sizes in CSS pixels at scale 1: the page draws the names in a ~12 px monospace font
TENSOR_CHAR_W = 7.2
TENSOR_PAD_W = 80  # the name, and room for its status tag drawn after it ("◐ 1/2", "⚑ ✗ 3.1%")
TENSOR_H = 22
OP_CHAR_W = 7.0
OP_PAD_W = 16
OP_MIN_W = 26
OP_H = 18
LAYER_GAP = 20  # vertical room between two layers: enough for an arrowhead
BOX_GAP = 16  # horizontal room between two boxes of one layer
MARGIN = 8  # around the whole drawing
ORDERING_ROUNDS = 8  # sweeps of grandalf's crossing reduction (its draw() does 1.5): cheap at this size


_GRANDALF = threading.Lock()


class _Box:
    """A grandalf vertex view: the box size in, its centre out."""

    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy = (0.0, 0.0)


class _Path:
    """A grandalf edge view: the polyline through the edge's dummy vertices."""

    def setpath(self, points: list[tuple[float, float]]) -> None:
        self.points = points


def tensor_size(name: str) -> tuple[float, float]:
    """The width and height of a tensor's box."""
    return round(TENSOR_CHAR_W * len(name) + TENSOR_PAD_W, 1), TENSOR_H


def op_size(symbol: str) -> tuple[float, float]:
    """The width and height of an op's box."""
    return round(max(OP_MIN_W, OP_CHAR_W * len(symbol) + OP_PAD_W), 1), OP_H


def _clip(centre: tuple[float, float], size: tuple[float, float], towards: tuple[float, float]) -> list[float]:
    """Where the segment from a box's centre towards a point leaves the box."""
    (cx, cy), (w, h) = centre, size
    dx, dy = towards[0] - cx, towards[1] - cy
    # the segment leaves through the side it reaches first
    t = min(w / 2 / abs(dx) if dx else float("inf"), h / 2 / abs(dy) if dy else float("inf"))
    return [cx + t * dx, cy + t * dy]


def _leaves_beside(sugiyama: SugiyamaLayout) -> None:
    """Put each op's leaf inputs (parameters, targets) on both sides of its computed input, in declaration order."""
    for layer in sugiyama.layers:
        for v in list(layer):
            if sugiyama.grx[v].dummy or v.data[0] != "tensor" or not v.e_in():
                continue
            for op in v.N(+1):
                leaves = [x for x in op.N(-1) if not x.e_in() and x in layer]
                if not leaves:
                    continue
                for leaf in leaves:
                    layer.remove(leaf)
                # the one leaf of a two-input op goes right: the computed input stays above the op
                left, right = leaves[: len(leaves) // 2], leaves[len(leaves) // 2 :]
                i = layer.index(v)
                layer[i : i + 1] = [*left, v, *right]
        layer.setup(sugiyama)


def _setxy_with_straight_chains(sugiyama: SugiyamaLayout) -> None:
    """grandalf's x placement with each op aligned to its computed input, not averaged towards a parameter."""
    # a leaf whose op also has a computed input takes part as a box only: without its edge, Brandes-Köpf
    # aligns the op with the computed input in all four of its passes, so the main chain runs straight
    detached = [
        e
        for v in sugiyama.g.sV
        if v.e_in() and v.data[0] == "op"
        for e in v.e_in()
        if not e.v[0].e_in() and any(x.e_in() for x in v.N(-1))
    ]
    for e in detached:
        e.detach()
    _forget_neighbours(sugiyama)
    sugiyama.setxy()
    for e in detached:
        e.attach()
    _forget_neighbours(sugiyama)


def _forget_neighbours(sugiyama: SugiyamaLayout) -> None:
    """Drop grandalf's cache of each vertex's neighbours in the next layers (it outlives edge changes)."""
    for layer in sugiyama.layers:
        for v in layer:
            if not sugiyama.grx[v].dummy and hasattr(sugiyama.grx[v], "nvs"):
                del sugiyama.grx[v].nvs


def _spread(sugiyama: SugiyamaLayout) -> None:
    """Push apart the boxes of a layer that grandalf's averaged alignments left too close."""
    for layer in sugiyama.layers:
        for prev, v in pairwise(layer):
            least = prev.view.xy[0] + (prev.view.w + v.view.w) / 2 + BOX_GAP
            if v.view.xy[0] < least:
                v.view.xy = (least, v.view.xy[1])


@functools.cache  # a pure function of the mode's declaration: laid out once per (net, mode)
def graph_layout(net: Net, mode: str) -> dict[str, Any]:
    """Boxes for every tensor and op of a mode and a polyline for every edge, y growing downward."""
    # grandalf keeps a counter on the Vertex class while it ranks: one layout at a time
    with _GRANDALF:
        return _layout(net, mode)


def _layout(net: Net, mode: str) -> dict[str, Any]:
    ops = net.ops_for_mode(mode)
    tensors = {node.name: Vertex(("tensor", node.name)) for node in net.nodes_for_mode(mode)}
    op_vertices = {op.name: Vertex(("op", op.name)) for op in ops}
    for name, v in tensors.items():
        v.view = _Box(*tensor_size(name))
    for op in ops:
        op_vertices[op.name].view = _Box(*op_size(op.symbol))
    edges = []  # (kind, op, tensor, grandalf edge) in declaration order
    for op in ops:
        edges += [("in", op.name, name, Edge(tensors[name], op_vertices[op.name])) for name in op.inputs]
        edges += [("out", op.name, name, Edge(op_vertices[op.name], tensors[name])) for name in op.outputs]
    graph = Graph(list(tensors.values()) + list(op_vertices.values()), [e for *_, e in edges])
    (core,) = graph.C  # one connected graph: every tensor feeds the loss
    for *_, e in edges:
        e.view = _Path()
    sugiyama = SugiyamaLayout(core)
    sugiyama.xspace, sugiyama.yspace = BOX_GAP, LAYER_GAP
    # optimize: leaves (parameters, inputs) move down to the layer just above the op that uses them
    sugiyama.init_all(optimize=True)
    for _ in range(ORDERING_ROUNDS):  # what SugiyamaLayout.draw does, with our steps before setxy
        for _ in sugiyama.ordering_step():
            pass
    _leaves_beside(sugiyama)
    _setxy_with_straight_chains(sugiyama)
    _spread(sugiyama)
    sugiyama.draw_edges()

    # shift everything so the drawing starts at (MARGIN, MARGIN); a long edge's bends may stick out of the boxes
    boxes = [v.view for v in core.sV]
    bends = [p for *_, e in edges for p in e.view.points]
    x0 = min([b.xy[0] - b.w / 2 for b in boxes] + [x for x, _ in bends]) - MARGIN
    y0 = min(b.xy[1] - b.h / 2 for b in boxes) - MARGIN

    def at(xy: tuple[float, float]) -> tuple[float, float]:
        return xy[0] - x0, xy[1] - y0

    def box(v: Vertex) -> dict[str, float]:
        x, y = at(v.view.xy)
        return {"x": round(x, 1), "y": round(y, 1), "w": v.view.w, "h": v.view.h}

    out_edges = []
    for kind, op_name, tensor, e in edges:
        source, target = e.v
        points = [at(p) for p in e.view.points]
        points[0] = _clip(points[0], (source.view.w, source.view.h), points[1])
        points[-1] = _clip(points[-1], (target.view.w, target.view.h), points[-2])
        out_edges.append(
            {
                "source": source.data[1],
                "target": target.data[1],
                "op": op_name,
                "tensor": tensor,
                "kind": kind,
                "points": [[round(x, 1), round(y, 1)] for x, y in points],
            }
        )
    width = max([b.xy[0] + b.w / 2 for b in boxes] + [x for x, _ in bends]) - x0 + MARGIN
    height = max(b.xy[1] - y0 + b.h / 2 for b in boxes) + MARGIN
    return {
        "width": round(width, 1),
        "height": round(height, 1),
        "nodes": {name: box(v) for name, v in tensors.items()},
        "ops": {op.name: {**box(op_vertices[op.name]), "symbol": op.symbol} for op in ops},
        "edges": out_edges,
    }
