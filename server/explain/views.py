"""What the explorer shows, as plain dicts: the graph, the state after k steps, one tensor in detail."""

from __future__ import annotations

from typing import Any

import torch

from ..core.data import Dataset
from ..core.engine import BackwardPass
from ..core.serialize import cmp_public, finite_or_none, tensor_public
from ..net.bugs import WrongRule
from ..net.declare import Rule
from .layout import graph_layout


class UnknownNode(LookupError):
    """A tensor name that the mode's graph does not have."""


class NoSuchSlice(ValueError):
    """A slice of a tensor that is not 3-D, or an index past its dim; `field` names which of the two is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _shape(t: object) -> list[int]:
    return list(t.shape) if isinstance(t, torch.Tensor) else []


def _fmt(shape: list[int]) -> str:
    return "(" + ",".join(str(s) for s in shape) + ")"


def _made_shape(bp: BackwardPass, op: str, rule: Rule) -> list[int]:
    """The shape the rule's line makes: the tensor's own for a right rule; the bug lab's line, what it makes."""
    if not isinstance(rule, WrongRule):
        return _shape(bp.values[rule.target])
    made = [c.grad for c in bp.contributions(rule.target, bp.total_steps) if c.op == op]
    return _shape(made[0]) if made else _shape(bp.values[rule.target])


def build_graph(bp: BackwardPass) -> dict[str, Any]:
    """Nodes, ops with their backward rules (live shapes and notes), the backward schedule and the drawn layout."""
    producer = {out: op for op in bp.ops for out in op.outputs}
    nodes = []
    for node in bp.net.nodes_for_mode(bp.mode):
        op = producer.get(node.name)
        nodes.append(
            {
                "name": node.name,
                "kind": node.kind,
                "shape": _shape(bp.values[node.name]),
                "op": op.name if op else None,
                "inputs": list(op.inputs) if op else [],
                "axes": list(node.axes),
                "about": node.about,
                "contributions": bp.totals.get(node.name, 0),
            }
        )
    seen: dict[str, int] = {}
    rules_by_op: dict[str, list[dict[str, Any]]] = {}
    for op in bp.schedule:  # backward order decides which contribution comes first
        out_shape = _shape(bp.values[op.outputs[0]])
        rules = []
        for rule in op.rules:
            seen[rule.target] = seen.get(rule.target, 0) + 1
            k, total = seen[rule.target], bp.totals[rule.target]
            notes = [rule.note] if rule.note else []
            if total > 1:
                notes.append(
                    f"contribution {k} of {total}: {rule.target} is used by {total} ops in the forward pass"
                    + ("; the later contribution adds with +=" if k == 1 else "; second contribution: +=")
                )
            # the bug lab shows the line that runs: the wrong one, with the right one beside it
            wrong = rule if isinstance(rule, WrongRule) else None
            if wrong is not None:
                notes.insert(0, f"bug lab: {wrong.bug.title}")
            rules.append(
                {
                    "target": rule.target,
                    "code": rule.code,
                    "shapes": f"{_fmt(out_shape)}→{_fmt(_made_shape(bp, op.name, rule))}",
                    "contribution": k,
                    "of": total,
                    "notes": notes,
                    "bug": wrong is not None,
                    "correct_code": wrong.right.code if wrong is not None else None,
                }
            )
        rules_by_op[op.name] = rules
    ops = [
        {
            "name": op.name,
            "inputs": list(op.inputs),
            "outputs": list(op.outputs),
            "formula": op.formula,
            "about": op.about,
            "symbol": op.symbol,
            "fused": op.fuses is not None,
            "rules": rules_by_op[op.name],
        }
        for op in bp.ops
    ]
    return {
        "mode": bp.mode,
        "mode_title": bp.net.mode_of(bp.mode).title,
        "nodes": nodes,
        "ops": ops,
        "schedule": [op.name for op in bp.schedule],
        "layout": graph_layout(bp.net, bp.mode),
    }


def build_state(bp: BackwardPass, step: int) -> dict[str, Any]:
    """Every node's status after `step` backward steps, its comparison with its reference, and where errors start."""
    nodes = {}
    for name in bp.node_names():
        nodes[name] = {
            "status": bp.status(name, step),
            "contributions": [bp.contributions_done(name, step), bp.totals.get(name, 0)],
            "cmp": cmp_public(bp.cmp_at(name, step)),
            "origin": bp.is_origin(name, step),
        }
    return {
        "mode": bp.mode,
        "loss": finite_or_none(bp.loss),
        "step": step,
        "total_steps": bp.total_steps,
        "op": bp.schedule[step - 1].name if step > 0 else None,
        "next_op": bp.schedule[step].name if step < bp.total_steps else None,
        "nodes": nodes,
    }


def axis_labels(bp: BackwardPass, dataset: Dataset, axis: str, size: int) -> list[str]:
    """Tick labels: characters for vocab, 'emm→a' contexts for batch rows, indices for an axis named elsewhere."""
    itos = dataset.itos
    if axis == "batch":
        Xb, Yb = bp.values["Xb"], bp.values["Yb"]
        assert isinstance(Xb, torch.Tensor) and isinstance(Yb, torch.Tensor)
        return ["".join(itos[i] for i in row) + "→" + itos[y] for row, y in zip(Xb.tolist(), Yb.tolist(), strict=True)]
    if axis == "vocab":
        return [itos[i] for i in range(size)]
    if axis == "embcat":
        ne = bp.config.n_embd
        return [f"c{i // ne}·e{i % ne}" for i in range(size)]
    if axis in ("embd2", "hidden2"):  # two consecutive positions side by side: p0 the earlier, p1 the later
        width, unit = (bp.config.n_embd, "e") if axis == "embd2" else (bp.config.n_hidden, "h")
        return [f"p{i // width}·{unit}{i % width}" for i in range(size)]
    # an axis of another pack, with no prefix of its own here, is labelled by index (the page titles it by name)
    prefix = {"context": "c", "embd": "e", "hidden": "h", "one": "", "time": "t", "query": "q", "key": "k", "head": "h"}
    return [f"{prefix.get(axis, '')}{i}" for i in range(size)]


def _slice(t: torch.Tensor | None, cut: tuple[int, int] | None) -> tuple[int, int] | None:
    """The cut for one of a node's tensors: none for a gradient of another shape (the bug lab's), sent whole."""
    return cut if cut is not None and t is not None and t.dim() == 3 and cut[1] < t.shape[cut[0]] else None


def build_tensor(
    bp: BackwardPass, dataset: Dataset, name: str, step: int, cut: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Value, manual gradient as of `step`, autograd's gradient, their difference and the checks.

    `cut` = (dim, index) of a 3-D node: its tensors' data are that 2-D slice alone (the checks stay whole)."""
    if name not in bp.node_names():
        raise UnknownNode(f"no tensor {name!r} in mode {bp.mode}; it has: {', '.join(bp.node_names())}")
    node = bp.net.node(name)
    value = bp.values[name]
    assert isinstance(value, torch.Tensor)
    if cut is not None and value.dim() != 3:
        raise NoSuchSlice(
            "slice_dim", f"{name} has {value.dim()} dims, shape {tuple(value.shape)}: only a 3-D tensor is sliced"
        )
    if cut is not None and cut[1] >= value.shape[cut[0]]:
        raise NoSuchSlice(
            "slice_index", f"{name}'s dim {cut[0]} has {value.shape[cut[0]]} entries: index {cut[1]} is past it"
        )
    manual = bp.grad_at(name, step)
    ref = bp.reference(name, step)
    diff = manual - ref if manual is not None and ref is not None and manual.shape == ref.shape else None
    status = bp.status(name, step)
    done, total = bp.contributions_done(name, step), bp.totals.get(name, 0)
    numeric_note = None
    if node.kind != "input" and status != "complete":
        numeric_note = f"finite differences check the complete gradient: available from step {bp.completed_at[name]}"
    return {
        "name": name,
        "kind": node.kind,
        "about": node.about,
        "shape": list(value.shape),
        "axes": list(node.axes),
        "labels": [axis_labels(bp, dataset, axis, size) for axis, size in zip(node.axes, value.shape, strict=True)],
        "step": step,
        "status": status,
        "contributions": [done, total],
        "value": tensor_public(value, _slice(value, cut)),
        "grad_manual": tensor_public(manual, _slice(manual, cut)),
        "grad_autograd": tensor_public(ref, _slice(ref, cut)),
        "reference": _reference_text(bp, name, step) if ref is not None else None,
        "diff": tensor_public(diff, _slice(diff, cut)),
        "cmp": cmp_public(bp.cmp_at(name, step)),
        "split": _split(bp, name, step, cut) if total > 1 else None,
        "numeric": cmp_public(bp.numeric(name)) if status == "complete" else None,
        "numeric_note": numeric_note,
    }


def _reference_text(bp: BackwardPass, name: str, step: int) -> str:
    """What grad_autograd is: autograd's full gradient, or autograd through the paths the manual one has so far."""
    done, total = bp.contributions_done(name, step), bp.totals.get(name, 0)
    if not 0 < done < total:
        return "autograd, complete"
    ops = ", ".join(bp.schedule[s - 1].name for s in bp.contribution_steps[name][:done])
    which = "contribution 1" if done == 1 else f"contributions 1–{done}"
    return f"autograd through {which} of {total} (from {ops})"


def _split(bp: BackwardPass, name: str, step: int, cut: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Each contribution received so far, next to autograd's gradient through the same op alone."""
    return [
        {
            "op": c.op,
            "step": c.step,
            "manual": tensor_public(c.grad, _slice(c.grad, cut)),
            "autograd": tensor_public(ref := bp.path_ref(name, c.step), _slice(ref, cut)),
            "overwrites": c.overwrites,
        }
        for c in bp.contributions(name, step)
    ]
