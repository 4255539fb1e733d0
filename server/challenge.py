"""Challenge mode: what a learner may use at a backward step, and how their gradient is graded."""

from __future__ import annotations

from typing import Any

import torch

from .bugs import right_rule
from .engine import BackwardPass, compare
from .graph import NODES
from .sandbox import Refused, evaluate
from .serialize import cmp_public, tensor_public

HINT_LEVELS = ("shape", "local derivative", "chain rule", "answer")


def context(bp: BackwardPass, step: int) -> dict[str, Any]:
    """The scope at backward step `step` (1-based): forward tensors, gradients so far, n, Xb, Yb."""
    if not 1 <= step <= bp.total_steps:
        raise Refused(f"step must be between 1 and {bp.total_steps} in mode {bp.mode}")
    op = bp.schedule[step - 1]
    targets = [rule.target for rule in op.rules]
    scope: dict[str, Any] = {}
    for name, value in bp.values.items():
        if isinstance(value, torch.Tensor | int) and not name.startswith("_"):
            scope[name] = value
    shared = {k for k, v in scope.items() if isinstance(v, torch.Tensor)}
    mutable: set[str] = set()
    later: dict[str, str] = {}
    for name in bp.node_names():
        grad = bp.grad_at(name, step - 1) if name != "loss" else None
        if grad is not None:
            scope[f"d{name}"] = grad
            (mutable if name in targets else shared).add(f"d{name}")
        elif NODES[name].kind != "input" and name != "loss":
            first = next((s for s, _ in bp.history.get(name, ()) if s >= step), None)
            if first == step:
                later[f"d{name}"] = "this step computes it: assign it, e.g. " + f"d{name} = ..."
            elif first is not None:
                formula = bp.schedule[first - 1].formula.split("\n")[0]
                later[f"d{name}"] = f"it comes out of step {first} (backprop through {formula})"
    return {"op": op, "targets": targets, "scope": scope, "shared": shared, "mutable": mutable, "later": later}


def hints(bp: BackwardPass, step: int) -> list[dict[str, Any]]:
    """The hint ladder of each gradient of the step: shape, local derivative, chain-rule form, answer."""
    op = bp.schedule[step - 1]
    out_shape = tuple(bp.values[op.outputs[0]].shape)  # type: ignore[union-attr]
    ladder = []
    for rule in map(right_rule, op.rules):  # the hints teach the lecture's line, with the bug lab on too
        shape = tuple(bp.values[rule.target].shape)  # type: ignore[union-attr]
        ladder.append({
            "target": f"d{rule.target}",
            "hints": [
                f"d{rule.target} has the shape of {rule.target}: {shape}; d{op.outputs[0]} has {out_shape}.",
                f"How does {op.formula.split(chr(10))[0]} change when {rule.target} changes? "
                + (rule.note or "Differentiate the line with respect to it."),
                f"d{rule.target} = (local derivative) * d{op.outputs[0]}"
                + (", summed over the dims that were broadcast" if "broadcast" in (rule.note or "") else "")
                + _paths(bp, rule.target, step),
                rule.code,
            ],
        })  # fmt: skip
    return ladder


def _paths(bp: BackwardPass, target: str, step: int) -> str:
    total = bp.totals.get(target, 0)
    if total < 2:
        return ""
    k = bp.contributions_done(target, step)
    if k == 1:
        return f" — {target} feeds {total} ops: this is the first path, the later one adds with +="
    return f" — {target} feeds {total} ops: this is path {k}, add it to the gradient so far with +="


def _shape_feedback(name: str, got: tuple[int, ...], want: tuple[int, ...]) -> str:
    msg = f"{name}: yours is {_fmt(got)}, expected {_fmt(want)}"
    if len(got) == len(want):
        summed = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if w == 1 and g > 1]
        spread = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g == 1 and w > 1]
        if summed:
            dims = " and ".join(str(i) for i in summed)
            return f"{msg}: the forward pass broadcast this over dim {dims}, so sum over dim {dims} with keepdim=True"
        if spread:
            dims = " and ".join(str(i) for i in spread)
            return f"{msg}: the forward pass summed over dim {dims}; the gradient is copied along it, not summed"
    if len(got) < len(want) and sum(got) and torch.Size(got).numel() == torch.Size(want).numel():
        return f"{msg}: same entries, other shape: add keepdim=True to the sum, or .view({', '.join(map(str, want))})"
    if torch.Size(got).numel() == torch.Size(want).numel():
        return f"{msg}: same number of entries: .view({', '.join(map(str, want))})"
    return f"{msg}: a gradient has the shape of its tensor"


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ",".join(map(str, shape)) + ")"


def grade(bp: BackwardPass, step: int, source: str) -> dict[str, Any]:
    """Run the learner's code at `step` and compare each gradient of the step with autograd's."""
    ctx = context(bp, step)
    env = evaluate(source, ctx["scope"], ctx["shared"], ctx["mutable"], ctx["later"])
    results = []
    for target in ctx["targets"]:
        name = f"d{target}"
        done, total = bp.contributions_done(target, step), bp.totals[target]
        complete = done == total
        # complete: graded against autograd, as in the lecture; partial: against the right partial sum
        expected = bp.ref_grads[target] if complete else bp.grad_at(target, step)
        assert expected is not None
        item: dict[str, Any] = {"name": name, "expected_shape": list(expected.shape), "complete": complete,
                                "contribution": [done, total], "feedback": [], "cmp": None, "diff": None}  # fmt: skip
        got = env.get(name)
        if not isinstance(got, torch.Tensor):
            item["feedback"].append(
                f"{name} is not defined: this step produces {name}" if got is None else f"{name} is not a tensor"
            )
            results.append(item)
            continue
        item["shape"] = list(got.shape)
        if tuple(got.shape) != tuple(expected.shape):
            item["feedback"].append(_shape_feedback(name, tuple(got.shape), tuple(expected.shape)))
            # no difference: broadcast against a wrong shape it can be any size (a (32768,1,1) answer
            # minus a (32,27) gradient is 28M entries); the shape feedback says what to fix
            item["cmp"] = cmp_public(compare(got, expected))
            results.append(item)
            continue
        if not got.is_floating_point():
            item["feedback"].append(f"{name} holds integers ({got.dtype}); a gradient is float: .float()")
        got = got.to(expected.dtype)
        bad = int((~torch.isfinite(got)).sum())
        if bad:
            item["feedback"].append(f"{name} has {bad} NaN/Inf entries: a log of 0, a 0/0, or a huge power?")
        cmp = compare(got, expected)
        item["cmp"] = cmp_public(cmp)
        item["diff"] = tensor_public(got - expected)
        previous = bp.grad_at(target, step - 1)
        if cmp["approx"]:
            item["feedback"].append(
                f"{name} is right"
                + (" (bitwise equal to " if cmp["exact"] else " (equal within float rounding to ")
                + ("autograd's)" if complete else f"the sum of the first {done} of {total} contributions)")
            )  # fmt: skip
        elif complete and total > 1 and previous is not None and torch.allclose(got, expected - previous, atol=1e-6):
            item["feedback"].append(
                f"{name} is only this step's contribution: {target} is used by {total} ops in the forward pass; "
                f"add to the gradient so far: {name} += ..."
            )
        else:
            item["feedback"].append(f"{name} differs from autograd's: maxdiff {cmp['maxdiff']:.3g}")
        results.append(item)
    return {
        "step": step,
        "op": ctx["op"].name,
        "formula": ctx["op"].formula,
        "correct": all(r["cmp"] is not None and r["cmp"]["approx"] for r in results),
        "results": results,
    }
