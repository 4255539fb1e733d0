"""Challenge mode: what a learner may use at a backward step, and how their gradient is graded."""

from __future__ import annotations

import ast
import functools
import itertools
import math
import re
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import torch

from ..core.engine import ALLCLOSE_ATOL, ALLCLOSE_RTOL, BackwardPass, compare
from ..core.serialize import cmp_public, tensor_public
from ..net.bugs import right_rule
from ..net.declare import Net, Op, Rule
from .sandbox import (
    MAX_EVALUATIONS,
    MAX_ITERATIONS,
    MAX_TENSOR_OPS,
    MAX_WORK,
    Cost,
    Names,
    OverBudget,
    Refused,
    evaluate,
)

HINT_LEVELS = ("shape", "local derivative", "chain rule", "answer")


def context(bp: BackwardPass, step: int) -> dict[str, Any]:
    """The scope at backward step `step` (1-based): forward tensors, gradients so far, n, Xb, Yb."""
    if not 1 <= step <= bp.total_steps:
        raise Refused(f"step must be between 1 and {bp.total_steps} in mode {bp.mode}")
    names = step_names(bp.net, bp.mode, step, bp.schedule)
    scope: dict[str, Any] = {}
    for name in sorted(names.given):
        grad = bp.grad_at(name[1:], step - 1) if name not in bp.values else None
        scope[name] = bp.values[name] if name in bp.values else grad
    op = bp.schedule[step - 1]
    return {"op": op, "targets": [rule.target for rule in op.rules], "scope": scope, "shared": set(names.shared),
            "mutable": set(names.mutable), "later": dict(names.later)}  # fmt: skip


def value_names(net: Net, mode: str) -> tuple[frozenset[str], frozenset[str]]:
    """(the forward's tensors a step reads: parameters, Xb, Yb, each op's outputs and saves; its integers)."""
    tensors = {*net.param_names, "Xb", "Yb"}
    for op in net.ops_for_mode(mode):
        tensors |= {name for name in (*op.outputs, *op.saves) if not name.startswith("_")}
    return frozenset(tensors), frozenset({"n", *(name for _, name in net.size_names)})


def step_names(net: Net, mode: str, step: int, schedule: list[Op] | None = None) -> Names:
    """The names a learner's code at backward step `step` starts with, from the declaration alone (the export has
    no pass): the forward's, the gradients the steps before made, and the ones that come later."""
    schedule = schedule or net.backward_schedule(mode)
    tensors, integers = value_names(net, mode)
    targets = {rule.target for rule in schedule[step - 1].rules}
    made: dict[str, list[int]] = {}  # node -> the steps that add to its gradient
    for k, op in enumerate(schedule, start=1):
        for rule in op.rules:
            made.setdefault(rule.target, []).append(k)
    shared, mutable = set(tensors), set()
    later: dict[str, str] = {}
    for name in (node.name for node in net.nodes_for_mode(mode)):
        if name == "loss":
            continue
        steps = made.get(name, [])
        if any(k < step for k in steps):
            (mutable if name in targets else shared).add(f"d{name}")
        elif net.node(name).kind != "input":
            first = next((k for k in steps if k >= step), None)
            if first == step:
                later[f"d{name}"] = "this step computes it: assign it, e.g. " + f"d{name} = ..."
            elif first is not None:
                formula = schedule[first - 1].formula.split("\n")[0]
                later[f"d{name}"] = f"it comes out of step {first} (backprop through {formula})"
    return Names(frozenset(shared | mutable | integers), frozenset(shared), frozenset(mutable), later)


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


def shape_feedback(name: str, got: torch.Tensor, expected: torch.Tensor) -> str:
    shape, want = tuple(got.shape), tuple(expected.shape)
    msg = f"{name}: yours is {_fmt(shape)}, expected {_fmt(want)}"
    if len(shape) == len(want):
        summed = [i for i, (g, w) in enumerate(zip(shape, want, strict=True)) if w == 1 and g > 1]
        spread = [i for i, (g, w) in enumerate(zip(shape, want, strict=True)) if g == 1 and w > 1]
        if summed and spread:
            return (f"{msg}: summed over dim {' and '.join(map(str, spread))} where the forward pass broadcast over "
                    f"dim {' and '.join(map(str, summed))}: sum over dim {' and '.join(map(str, summed))}, "
                    "keepdim=True")  # fmt: skip
        if summed:
            dims = " and ".join(str(i) for i in summed)
            return f"{msg}: the forward pass broadcast this over dim {dims}, so sum over dim {dims} with keepdim=True"
        if spread:
            dims = " and ".join(str(i) for i in spread)
            return f"{msg}: the forward pass summed over dim {dims}; the gradient is copied along it, not summed"
        if len(shape) == 2 and shape[::-1] == want:
            same = not got.is_meta and _close(got.T.to(expected.dtype), expected)  # a meta tensor: its shape alone
            what = "autograd's transposed" if same else "the transpose's shape"
            return f"{msg}: it is {what}; (A @ B).T = B.T @ A.T: swap the operands and transpose both"
    if len(shape) < len(want) and sum(shape) and torch.Size(shape).numel() == torch.Size(want).numel():
        return f"{msg}: same entries, other shape: add keepdim=True to the sum, or .view({', '.join(map(str, want))})"
    if torch.Size(shape).numel() == torch.Size(want).numel():
        return f"{msg}: same number of entries: .view({', '.join(map(str, want))})"
    return f"{msg}: a gradient has the shape of its tensor"


def _fmt(shape: tuple[int, ...] | torch.Size) -> str:
    return f"({shape[0]},)" if len(shape) == 1 else "(" + ",".join(map(str, shape)) + ")"


def same_entries(got: torch.Size, want: torch.Size) -> bool:
    """Shapes apart only by dims of size 1 where broadcasting lines them up: (64,) and (1,64), not (32,) and (32,1)."""
    try:
        both = torch.broadcast_shapes(got, want)
    except RuntimeError:
        return False
    return got.numel() == want.numel() == both.numel()


def shape_note(name: str, got: torch.Size, want: torch.Size) -> str:
    fix = (
        "keepdim=True in the sum gives the exact shape"
        if len(got) < len(want)
        else f"a sum without keepdim=True (or .view({', '.join(map(str, want))})) gives the exact shape"
    )
    return (f"{name} has shape {_fmt(got)}, autograd's {_fmt(want)}: {fix}; the lecture's cmp passes because == and "
            f"allclose broadcast {_fmt(got)} against {_fmt(want)}")  # fmt: skip


def grade(bp: BackwardPass, step: int, source: str) -> dict[str, Any]:
    """Run the learner's code at `step` and compare each gradient of the step with autograd's."""
    ctx = context(bp, step)
    wanted = {f"d{t}": tuple(bp.values[t].shape) for t in ctx["targets"]}  # type: ignore[union-attr]
    cost = Cost()
    env = evaluate(source, ctx["scope"], ctx["shared"], ctx["mutable"], ctx["later"], wanted=wanted, cost=cost)
    own = replace(cost)  # what the check's own run spent: its feedback's reruns are budgeted from it
    # a step that makes several gradients takes them one at a time, in any order (the lecture writes
    # dcounts_sum_inv before dcounts): what the code writes is graded, the rest is still to write
    assigned = set().union(*map(writes, ast.parse(source).body))
    written = [name for name in wanted if name in assigned]
    remaining = [name for name in wanted if name not in assigned]
    results = []
    for rule in ctx["op"].rules:
        target = rule.target
        name = f"d{target}"
        done, total = bp.contributions_done(target, step), bp.totals[target]
        complete = done == total
        # complete: graded against autograd, as in the lecture; partial: against the right partial sum
        expected = bp.ref_grads[target] if complete else bp.grad_at(target, step)
        assert expected is not None
        item: dict[str, Any] = {"name": name, "expected_shape": list(expected.shape), "complete": complete,
                                "contribution": [done, total], "feedback": [], "cmp": None, "diff": None,
                                "written": name in assigned}  # fmt: skip
        results.append(item)
        if name in remaining and written:
            others = ", ".join(n for n in written)
            item["feedback"].append(f"{name} is still to write: this step makes {name} too ({others} graded "
                                    "without it)")  # fmt: skip
            continue
        got = env.get(name)
        if not isinstance(got, torch.Tensor):
            item["feedback"].append(
                f"{name} is not defined: this step produces {name}" if got is None else f"{name} is not a tensor"
            )
            continue
        item["shape"] = list(got.shape)
        note = None
        if got.shape != expected.shape:
            if not same_entries(got.shape, expected.shape):
                item["feedback"].append(shape_feedback(name, got, expected))
                # no difference: broadcast against a wrong shape it can be any size (a (32768,1,1) answer
                # minus a (32,27) gradient is 28M entries); the shape feedback says what to fix
                item["cmp"] = cmp_public(compare(got, expected))
                continue
            # (64,) for (1,64): the lecture's dbnmeani; graded on its entries, and told about its shape
            note = shape_note(name, got.shape, expected.shape)
            got = got.reshape(expected.shape)
        if not got.is_floating_point():
            item["feedback"].append(f"{name} holds integers ({got.dtype}); a gradient is float: .float()")
        got = got.to(expected.dtype)
        bad = int((~torch.isfinite(got)).sum())
        if bad:
            item["feedback"].append(f"{name} has {bad} NaN/Inf entries: a log of 0, a 0/0, or a huge power?")
        cmp = compare(got, expected)
        if note:
            cmp |= {"shape": item["shape"], "shape_ok": False}
        item["cmp"] = cmp_public(cmp)
        item["diff"] = tensor_public(got - expected)
        if cmp["approx"]:
            item["feedback"].append(
                f"{name} is right"
                + (" (bitwise equal to " if cmp["exact"] else " (equal within float rounding to ")
                + ("autograd's)" if complete else f"the sum of the first {done} of {total} contributions)")
            )  # fmt: skip
        elif bad:
            item["feedback"].append(f"{name} differs from autograd's: maxdiff {cmp['maxdiff']:.3g}")
        else:
            slip = functools.partial(dim_slip, source, ctx, wanted, cost, own, name, expected)
            item["feedback"].append(diagnose(bp, step, rule, name, got, expected, slip))
        if note:
            item["feedback"].append(note)
    return {
        "step": step,
        "op": ctx["op"].name,
        "formula": ctx["op"].formula,
        "correct": all(r["cmp"] is not None and r["cmp"]["approx"] for r in results),
        "results": results,
        "written": written,
        "remaining": remaining,
        "right": [r["name"] for r in results if r["cmp"] is not None and r["cmp"]["approx"]],
    }


# --- what a wrong gradient of the right shape has wrong -------------------------------------------------


def diagnose(
    bp: BackwardPass,
    step: int,
    rule: Rule,
    name: str,
    got: torch.Tensor,
    expected: torch.Tensor,
    dim_slip: Callable[[], str | None],
) -> str:
    """One line on what is wrong with a finite gradient of the right shape, from the likeliest slip to the least."""
    target, n = rule.target, bp.config.batch_size
    done, total = bp.contributions_done(target, step), bp.totals[target]
    previous = bp.grad_at(target, step - 1)
    if done == total and total > 1 and previous is not None and _close(got, expected - previous):
        return (f"{name} is only this step's contribution: {target} is used by {total} ops in the forward pass; "
                f"add to the gradient so far: {name} += ...")  # fmt: skip
    if not bool(got.any()):
        return f"{name} is 0 everywhere; autograd's is not"
    factor = _factor(got, expected)
    if factor is not None:
        return _factor_feedback(name, factor, n, _slips(bp))
    if got.dim() == 2 and got.shape[0] == got.shape[1] and _close(got, expected.T):
        return (f"{name} is autograd's transposed (square, so its shape could not tell): (A @ B).T = B.T @ A.T, "
                "swap the operands and transpose both")  # fmt: skip
    parts = _chain_parts(bp, step, rule)
    if parts is not None:
        out, upstream, local = parts
        # written with = or with += onto the gradient so far
        sums = [0.0] if previous is None else [0.0, previous]
        if any(_close(got, base + local) for base in sums):
            return f"{name} equals the local derivative alone: multiply by d{out} (the chain rule)"
        formula = bp.schedule[step - 1].formula.split("\n")[0]
        if any(_close(got, base + upstream) for base in sums):
            return f"{name} equals d{out} alone: multiply by the local derivative of {formula} (the chain rule)"
        if previous is None and upstream.shape == got.shape and _keeps_zeros(got, upstream):
            return (f"{name} is zero wherever d{out} is, so the chain rule's × d{out} is there; the local derivative "
                    f"is wrong: how does {formula} change when {target} changes?")  # fmt: skip
    where = _wrong_part(got, expected)
    if where:
        return f"{name}: {where}"
    slip = dim_slip()  # last: it reruns the code
    if slip:
        return slip
    return f"{name} differs from autograd's: maxdiff {float((got - expected).abs().max()):.3g}"


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    """Equal up to rounding, relative to the larger of the two (a gradient near 0 is not close to any)."""
    if a.shape != b.shape:
        return False
    scale = max(float(a.abs().max()), float(b.abs().max())) if a.numel() else 0.0
    return float((a - b).abs().max()) <= rtol * scale if a.numel() else True


def _factor(got: torch.Tensor, expected: torch.Tensor) -> float | None:
    """c where got = c * expected everywhere (c != 1), by least squares; None if no constant fits."""
    g, e = got.double(), expected.double()
    ee = float((e * e).sum())
    if ee == 0.0:
        return None
    c = float((g * e).sum()) / ee
    if not math.isfinite(c) or abs(c - 1.0) < 1e-3 or c == 0.0:
        return None
    return c if _close(g, c * e) else None


def _slips(bp: BackwardPass) -> tuple[tuple[float, str, str], ...]:
    """The factors the net's own sizes name (Net.slips): (the number, how it reads, the slip it asks about)."""
    v = SimpleNamespace(**bp.values)
    out = []
    for slip in bp.net.slips:
        k = float(slip.factor(v))
        out.append((k, f"{k:.4g}", f"{slip.label} is {k:.4g}: {slip.why}"))
    return tuple(out)


def _factor_feedback(name: str, c: float, n: int, slips: tuple[tuple[float, str, str], ...] = ()) -> str:
    named = [
        *slips,  # the net's own sizes first: a factor they name is the likelier slip in that net
        (n, f"{n}", f"n is {n}: did you forget /n?"),
        (1 / n, f"1/{n}", f"n is {n}: divided by n once too often?"),
        (n / (n - 1), f"{n}/{n - 1}", "did you divide by n-1 where the forward pass divides by n?"),
        ((n - 1) / n, f"{n - 1}/{n}", "did you divide by n where the forward pass divides by n-1 (Bessel's "
                                       "correction in bnvar)?"),
        (n - 1, f"{n - 1}", f"n-1 is {n - 1}: did you forget /(n-1)?"),
        (1 / (n - 1), f"1/{n - 1}", f"n-1 is {n - 1}: divided by n-1 once too often?"),
    ]  # fmt: skip
    for k, label, why in named:
        if k != 1 and abs(abs(c) / k - 1) < 1e-3:
            if c > 0:
                return f"{name} is {label}× autograd's — {why}"
            return f"{name} is −{label}× autograd's: the sign is flipped, and {why}"
    if abs(c + 1) < 1e-3:
        return f"{name} is autograd's with the sign flipped: a minus sign is missing, or one too many"
    return f"{name} is {c:.4g}× autograd's everywhere: the direction is right, a constant factor is off"


def _chain_parts(bp: BackwardPass, step: int, rule: Rule) -> tuple[str, torch.Tensor, torch.Tensor] | None:
    """(the op's output, its gradient, the rule's local derivative alone: the rule with that gradient set to 1)."""
    op = bp.schedule[step - 1]
    out = op.outputs[0]
    upstream = bp.grad_at(out, step - 1)
    if out == "loss" or upstream is None:
        return None  # dloss = 1: the local derivative is the whole gradient
    grads = {name: g for name in bp.node_names() if (g := bp.grad_at(name, step - 1)) is not None}
    try:
        with torch.no_grad():
            local = right_rule(rule).fn(
                SimpleNamespace(**bp.values), SimpleNamespace(**{**grads, out: torch.ones_like(upstream)})
            )
    except Exception:  # a rule that needs more than the output's gradient: no local derivative to offer
        return None
    return out, upstream, local


def _keeps_zeros(got: torch.Tensor, upstream: torch.Tensor) -> bool:
    """got is 0 wherever the upstream gradient is (and that is somewhere, not everywhere): got = (...) * upstream."""
    zero = upstream == 0
    return bool(zero.any()) and not bool(zero.all()) and not bool(got[zero].any())


def _wrong_part(got: torch.Tensor, expected: torch.Tensor) -> str | None:
    """'only rows 3 and 7 are wrong (2 of 27)...' when the wrong entries keep to some rows or columns, and the rows
    that match carry something: rows that match only because both are 0 say nothing about the rule."""
    bad = (got - expected).abs() > ALLCLOSE_ATOL + ALLCLOSE_RTOL * expected.abs()  # the lecture's allclose, entrywise
    if got.dim() == 0 or not bool(bad.any()):
        return None
    informative = expected != 0
    for dim, what in ((0, "rows" if got.dim() > 1 else "entries"), (1, "columns")):
        if dim >= got.dim():
            break
        wrong = bad.movedim(dim, 0).flatten(1).any(1) if got.dim() > 1 else bad
        carries = informative.movedim(dim, 0).flatten(1).any(1) if got.dim() > 1 else informative
        if int(wrong.sum()) < wrong.numel() and bool((carries & ~wrong).any()):
            index = wrong.nonzero().flatten().tolist()
            shown = ", ".join(map(str, index[:8])) + (", ..." if len(index) > 8 else "")
            return f"only {what} {shown} are wrong ({len(index)} of {wrong.numel()}); the other {what} match autograd's"
    return None


MAX_DIM_VARIANTS = 12  # reruns of the learner's code with a reduction over another dim
# the reruns of one check's feedback together spend at most this many times what the check's own run spent, in
# every count (loop-body runs, tensor operations, expressions, entries), and at most a quarter of a cap: a check's
# feedback never costs more than a fixed multiple of the check
RERUN_SHARE = 4


def rerun_limit(own: Cost) -> Cost:
    """What the feedback's reruns of a check may spend in all, from what the check's own run spent."""
    return Cost(
        min(RERUN_SHARE * own.iterations, MAX_ITERATIONS // 4),
        min(RERUN_SHARE * own.tensor_ops, MAX_TENSOR_OPS // 4),
        min(RERUN_SHARE * own.evaluations, MAX_EVALUATIONS // 4),
        min(RERUN_SHARE * own.work, MAX_WORK // 4),
    )


def dim_slip(
    source: str,
    ctx: dict[str, Any],
    wanted: dict[str, tuple[int, ...]],
    cost: Cost,
    own: Cost,
    name: str,
    expected: torch.Tensor,
    upto: int | None = None,
    start: int | None = None,
) -> str | None:
    """Runs the learner's code again with a .sum / .mean / .max / softmax over another dim: is that the slip?

    upto: a whole cell's wrong statement (its index): the cell is rerun up to it, with the change in it alone, or
    in the statements from `start` to it (the lines that build one gradient together: softmax, -= 1, /= n).
    cost: what the check has spent so far (the reruns add to it); own: what its own run spent, of which the reruns
    together may spend rerun_limit(own).
    """
    limit = rerun_limit(own)
    tree = ast.parse(source)
    if upto is not None:
        tree.body = tree.body[: upto + 1]
        lines = tree.body[upto if start is None else start :]
    else:
        lines = [stmt for stmt in tree.body if _writes(stmt) == name]  # the slip sits in the gradient's own lines
    if any(isinstance(node, ast.For) for stmt in (tree.body if upto is None else lines) for node in ast.walk(stmt)):
        return None  # a loop's rerun costs too much for a guess
    sites = [node for stmt in lines for node in ast.walk(stmt) if isinstance(node, ast.Call) and _dim_node(node)]
    for changes in _dim_changes(sites, MAX_DIM_VARIANTS, max(2, expected.dim())):
        remaining = Cost(
            limit.iterations - (cost.iterations - own.iterations),
            limit.tensor_ops - (cost.tensor_ops - own.tensor_ops),
            limit.evaluations - (cost.evaluations - own.evaluations),
            limit.work - (cost.work - own.work),
        )
        if not Cost().within(remaining):
            return None
        before = [ast.unparse(call) for call, _ in changes]
        olds = [_set_dim(call, dim) for call, dim in changes]
        variant = ast.unparse(tree)
        after = [ast.unparse(call) for call, _ in changes]
        for (call, _), old in zip(changes, olds, strict=True):
            _set_dim(call, old)
        try:
            env = evaluate(
                variant, ctx["scope"], ctx["shared"], ctx["mutable"], ctx["later"], wanted, cost,
                ctx.get("cell", False), limit=remaining,
            )  # fmt: skip
        except OverBudget:
            return None
        except Refused:
            continue
        got = env.get(name)
        if not isinstance(got, torch.Tensor) or not same_entries(got.shape, expected.shape):
            continue
        if compare(got.reshape(expected.shape).to(expected.dtype), expected)["approx"]:
            swaps = "; ".join(
                f"line {call.lineno}: {old} → {new}" for (call, _), old, new in zip(changes, before, after, strict=True)
            )
            sums = all(call.func.attr in ("sum", "mean") for call, _ in changes)  # type: ignore[attr-defined]
            return f"{name} {'sums' if sums else 'reduces'} over the wrong dimension: {swaps} gives autograd's"
    return None


REDUCTIONS = {"sum", "mean", "max", "min", "softmax", "log_softmax"}


def _dim_node(call: ast.Call) -> ast.expr | None:
    """The dim argument of a reduction or softmax, if it is written as an integer."""
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr not in REDUCTIONS:
        return None
    module = isinstance(func.value, ast.Name) and func.value.id in ("torch", "F")
    position = 1 if module else 0
    node = next((k.value for k in call.keywords if k.arg == "dim"), None)
    if node is None and len(call.args) > position:
        node = call.args[position]
    return node if node is not None and _int_of(node) is not None else None


def _int_of(node: ast.expr) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int_of(node.operand)
        return -inner if inner is not None else None
    return None


def _set_dim(call: ast.Call, dim: int) -> int:
    """Writes another dim into the call; returns the one it had."""
    node = _dim_node(call)
    assert node is not None
    old = _int_of(node)
    assert old is not None
    new = ast.Constant(dim) if dim >= 0 else ast.UnaryOp(ast.USub(), ast.Constant(-dim))
    for k in call.keywords:
        if k.arg == "dim":
            k.value = new
            return old
    module = isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name)
    position = 1 if module and call.func.value.id in ("torch", "F") else 0  # type: ignore[union-attr]
    call.args[position] = new
    return old


def _dim_changes(sites: list[ast.Call], limit: int, ndim: int = 2) -> list[list[tuple[ast.Call, int]]]:
    """Each reduction over another dim alone (of dims 0 and 1 for a 2-D gradient, of its ndim dims for a deeper
    one, written negative where the learner wrote a negative dim), then two of them, ...: the likelier slips first."""
    options = []
    for call in sites:
        dim = _int_of(_dim_node(call))  # type: ignore[arg-type]
        assert dim is not None
        others = [d for d in range(ndim) if d != dim % ndim]
        options.append([(call, d - ndim if dim < 0 and ndim > 2 else d) for d in others])
    changes: list[list[tuple[ast.Call, int]]] = []
    for size in range(1, len(options) + 1):
        for chosen in itertools.combinations(options, size):
            changes += [list(combo) for combo in itertools.product(*chosen)]
            if len(changes) >= limit:
                return changes[:limit]
    return changes


def _writes(stmt: ast.stmt) -> str | None:
    """The name an assignment writes (x = ..., x[i] = ..., x += ...)."""
    target = (
        stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target if isinstance(stmt, ast.AugAssign) else None
    )
    while isinstance(target, ast.Subscript):
        target = target.value
    return target.id if isinstance(target, ast.Name) else None


def writes(stmt: ast.stmt) -> set[str]:
    """The names a statement assigns or changes in place (x = ..., x[i] += ..., a, b = ..., x.index_add_(...),
    in loops too)."""
    out: set[str] = set()
    for node in ast.walk(stmt):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            targets = [func.value] if isinstance(func, ast.Attribute) else []
        while targets:
            target = targets.pop()
            if isinstance(target, ast.Tuple | ast.List):
                targets += target.elts
                continue
            while isinstance(target, ast.Subscript | ast.Starred):
                target = target.value
            if isinstance(target, ast.Name):
                out.add(target.id)
    return out


# --- the kinds of slip the feedback names (counted for a class's teacher) -------------------------------

# each kind, and what its feedback line says (the lines above, and cells.py's): the first pattern that matches names
# a line's kind; a line matching none (right, still to write) is no slip
SLIP_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("accumulate", r"is only this step's contribution|holds \d+ of its \d+ contributions"),
        ("sign", r"the sign is flipped|with the sign flipped"),
        ("factor n", r"× autograd's —|no line divides \S+ by n"),
        ("factor", r"× autograd's everywhere"),
        ("transpose", r"autograd's transposed|the transpose's shape"),
        ("chain", r"equals the local derivative alone|alone: multiply by the local derivative"),
        ("local derivative", r"the local derivative is wrong"),
        ("dim", r"over the wrong dimension"),
        ("keepdim", r"keepdim=True"),
        ("shape", r"expected \(|yours is \("),
        ("one-hot", r"only at \[range\(n\), Yb\]"),
        ("some entries", r"^\S+: only (rows|columns|entries) "),
        ("zero", r"is 0 everywhere"),
        ("undefined", r"is not defined|is not a tensor"),
        ("dtype", r"holds integers"),
        ("nan", r"NaN/Inf"),
        ("other", r"differs from (autograd's|what this line should make)"),
    )
)
# where a feedback line quotes code (the learner's own, on a dim slip's "line 3: x.sum(0) → x.sum(1)"), it is cut
_QUOTES_CODE = re.compile(r"(: the line )?`|: line \d+:")


def slip_of(line: str) -> tuple[str, str] | None:
    """A feedback line's slip: its kind, and the line without any code it quotes; None for a line that is no slip."""
    for kind, pattern in SLIP_KINDS:
        if pattern.search(line):
            cut = _QUOTES_CODE.search(line)
            return kind, (line[: cut.start()] if cut else line).rstrip(" :,")
    return None


def slips_of(answer: dict[str, Any]) -> dict[str, str]:
    """The slips an answer of POST /api/check (a step's or a whole cell's) told its learner: kind -> the line."""
    if "results" in answer:  # a step
        lines = [line for item in answer["results"] for line in item["feedback"]]
    else:  # a whole cell: its first wrong line, else the cmp lines that failed
        wrong = answer.get("first_wrong")
        lines = (
            wrong["feedback"] if wrong else [line for c in answer["checks"] if not c["ok"] for line in c["feedback"]]
        )
    slips: dict[str, str] = {}
    for line in lines:
        if (slip := slip_of(line)) is not None:
            slips.setdefault(*slip)
    return slips
