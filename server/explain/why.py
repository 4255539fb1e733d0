"""Why a gradient is what it is: the derivations of the rules that make it (MathML), worked examples and the
forces on the logits from the live tensors, where an approximate gradient differs from autograd's and why, and
one entry's rule written out with its numbers (server/explain/instance.py).

Everything reads the declaration (the net's pack: each rule's code, LaTeX, example kind and rounding cause) and the
pass's tensors; the examples use the gradient each rule received in the manual backward, so their numbers are
the ones the inspector serves.
"""

from __future__ import annotations

import ast
import functools
from typing import Any

import torch
import torch.nn.functional as F
from latex2mathml.converter import convert

from ..core.data import Dataset
from ..core.engine import BackwardPass
from ..core.serialize import entry
from ..net.bugs import WrongRule, right_rule
from ..net.declare import Op, Rule
from .instance import Writer, write_rule

SHOWN = 3  # a matrix product's slice: 2 rows × SHOWN inner × 2 columns (the lecture's 2×3 @ 3×2)
SATURATED = 0.99  # |h| above it: tanh is flat there, 1 − h² ≈ 0, and the unit passes almost no gradient


class NotThere(LookupError):
    """A node the mode does not have, or an entry outside the tensor."""


@functools.cache
def mathml(tex: str) -> str:
    return convert(tex)


def _rules_into(bp: BackwardPass, name: str) -> list[tuple[int, Op, Rule]]:
    """(step, op, rule) of every backward rule that adds to d`name`, in schedule order."""
    return [
        (step, op, rule) for step, op in enumerate(bp.schedule, start=1) for rule in op.rules if rule.target == name
    ]


def _scope(bp: BackwardPass, step: int, op: Op) -> dict[str, Any]:
    """What the rule of backward `step` reads: the forward values and its op's output gradients as they were then."""
    scope: dict[str, Any] = {**bp.values, "torch": torch, "F": F}
    for out in op.outputs:
        scope[f"d{out}"] = bp.grad_at(out, step - 1)
    return scope


def _num(t: torch.Tensor, index: list[int]) -> float:
    return entry(t, index)


def explain(bp: BackwardPass, dataset: Dataset, name: str, step: int, at: list[int] | None = None) -> dict[str, Any]:
    """The why drawer of node `name` after `step` backward steps; `at` picks the entry the examples use."""
    _, index = _node_entry(bp, name, at)
    rules = []
    for k, (s, op, rule) in enumerate(_rules_into(bp, name), start=1):
        right = right_rule(rule)
        rules.append(
            {
                "op": op.name,
                "step": s,
                "formula": op.formula,
                "code": right.code,
                "bug_code": rule.code if isinstance(rule, WrongRule) else None,
                "contribution": k,
                "of": bp.totals[name],
                "reached": s <= step,
                "lines": [
                    {"tex": tex, "mathml": mathml(tex), "note": right.tex_notes[i] if right.tex_notes else ""}
                    for i, tex in enumerate(right.tex)
                ],
                "example": _example(bp, dataset, s, op, right, index) if right.example else None,
            }
        )
    return {
        "name": name,
        "mode": bp.mode,
        "step": step,
        "index": index,
        "rules": rules,
        "forces": _forces(bp, dataset, index[0] if index else 0) if name == "logits" else None,
        "approx": _approx(bp, name, step),
        "division": _division(bp) if name in ("counts_sum", "counts_sum_inv") and "counts_sum" in bp.values else None,
    }


def _node_entry(bp: BackwardPass, name: str, at: list[int] | None) -> tuple[torch.Tensor, list[int]]:
    """The node's value and the entry `at` names in it (None: the first entry); NotThere for either missing."""
    if name not in bp.node_names():
        raise NotThere(f"no tensor {name!r} in mode {bp.mode}")
    value = bp.values[name]
    assert isinstance(value, torch.Tensor)
    return value, _entry(value, at)


def _entry(t: torch.Tensor, at: list[int] | None) -> list[int]:
    if at is None:
        return [0] * t.dim()
    if len(at) != t.dim() or any(not 0 <= i < size for i, size in zip(at, t.shape, strict=True)):
        raise NotThere(f"entry {at} is outside shape {tuple(t.shape)}")
    return list(at)


def instance(bp: BackwardPass, name: str, step: int, at: list[int] | None) -> dict[str, Any]:
    """The rules that made d`name`[at] by `step` (no at: the first entry), each written out there, and the sum."""
    value, index = _node_entry(bp, name, at)
    parts = []
    for s, op, rule in _rules_into(bp, name):
        if s > step:
            break
        written = write_rule(rule.code, name, _scope(bp, s, op), index)
        parts.append({"op": op.name, "step": s, "code": rule.code, "bug": isinstance(rule, WrongRule), **written})
    manual = bp.grad_at(name, step)
    total = _num(manual, index) if manual is not None and manual.shape == value.shape else None
    return {"name": name, "step": step, "index": index, "parts": parts, "total": total}


# ---- worked examples -------------------------------------------------------------------------------------


def _example(bp: BackwardPass, dataset: Dataset, step: int, op: Op, rule: Rule, index: list[int]) -> dict[str, Any]:
    scope = _scope(bp, step, op)
    kind = rule.example
    if kind == "matmul":
        return _matmul(bp, op, rule, scope, index)
    if kind == "sum":
        return _sum(rule, scope, index)
    if kind == "max":
        return _max(bp, op, scope, index)
    if kind == "gather":
        return _gather(bp, dataset, scope, index)
    if kind == "tanh":
        return _tanh(op, scope, index)
    if kind == "log":
        return _log(op, scope, index)
    if kind == "forces":
        return {"kind": "forces", "title": "dlogits as forces: see below"}
    raise ValueError(f"rule {op.name}/{rule.target} declares an unknown example {kind!r}")


def _operand(t: torch.Tensor, name: str, grad: bool, transposed: bool, rows: list[int], cols: list[int]) -> dict:
    """A slice of a product's operand as it enters the product (`t.T` where transposed), with each entry's index
    in the tensor itself."""
    indices = [[[c, r] if transposed else [r, c] for c in cols] for r in rows]
    return {
        "tensor": name,
        "grad": grad,
        "transposed": transposed,
        "rows": rows,
        "cols": cols,
        "indices": indices,
        "values": [[entry(t, i) for i in row] for row in indices],
    }


def _window(i: int, size: int, width: int = 2) -> list[int]:
    """`width` consecutive indices of a dim of `size` that hold i (all of them where the dim is smaller)."""
    start = max(0, min(i, size - width))
    return list(range(start, min(start + width, size)))


def _matmul(bp: BackwardPass, op: Op, rule: Rule, scope: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """out = x @ w + b: dx = dout @ w.T (target x), dw = x.T @ dout (target w), on a 2×3 @ 3×2 slice."""
    x, w = op.inputs[0], op.inputs[1]
    out = op.outputs[0]
    dout = scope[f"d{out}"]
    # a 2×2 window of the gradient around the entry, and the first SHOWN inner terms: fewer where a dim is smaller
    # (one hidden unit, a batch of two)
    shape = bp.values[rule.target].shape
    rows, cols = _window(index[0], shape[0]), _window(index[1], shape[1])
    inner = list(range(min(SHOWN, dout.shape[1] if rule.target == x else dout.shape[0])))
    if rule.target == x:  # dx[r, c] = Σ_j dout[r, j] · w[c, j]
        wt = scope[w]
        a = _operand(dout, out, True, False, rows, inner)
        b = _operand(wt, w, False, True, inner, cols)
        a_full, b_full = dout, wt.T
        code = f"d{x} = d{out} @ {w}.T"
        why = (
            f"d{x} must have {x}'s shape {tuple(bp.values[x].shape)}: of d{out} {tuple(dout.shape)} and "
            f"{w} {tuple(wt.shape)}, only d{out} @ {w}.T gives it. Entry [r, c] of d{x} sums, over the "
            f"{dout.shape[1]} columns j of d{out}'s row r, d{out}[r, j]·{w}[c, j]: every output that "
            f"{x}[r, c] fed sends its gradient back, weighted by the weight it went through."
        )
    else:  # dw[r, c] = Σ_i x[i, r] · dout[i, c]
        xv = scope[x]
        a = _operand(xv, x, False, True, rows, inner)
        b = _operand(dout, out, True, False, inner, cols)
        a_full, b_full = xv.T, dout
        code = f"d{w} = {x}.T @ d{out}"
        why = (
            f"d{w} must have {w}'s shape {tuple(bp.values[w].shape)}: of {x} {tuple(xv.shape)} and d{out} "
            f"{tuple(dout.shape)}, only {x}.T @ d{out} gives it. Entry [r, c] of d{w} sums over the "
            f"{xv.shape[0]} batch rows i: {x}[i, r]·d{out}[i, c], what weight [r, c] carried in each example."
        )
    a_rows = [[float(a_full[r, j]) for j in inner] for r in rows]
    b_cols = [[float(b_full[j, c]) for c in cols] for j in inner]
    result = a_full @ b_full  # the rule's product: its entries are the gradient's
    entries = []
    for p, r in enumerate(rows):
        for q, c in enumerate(cols):
            terms = [a_rows[p][j] * b_cols[j][q] for j in range(len(inner))]
            full = entry(result, [r, c])
            entries.append({"index": [r, c], "terms": terms, "partial": sum(terms), "full": full})
    return {
        "kind": "matmul",
        "title": f"{code}, element by element",
        "code": code,
        "target": rule.target,
        "a": a,
        "b": b,
        "inner": a_full.shape[1],
        "entries": entries,
        "shape": list(result.shape),
        "text": why,
    }


def _sum(rule: Rule, scope: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """A broadcast's gradient: one entry as the sum, over the broadcast dimension, of the terms the rule adds."""
    written = write_rule(rule.code, rule.target, scope, index)
    terms = sum_terms(rule.code, rule.target, scope, index)
    return {
        "kind": "sum",
        "title": f"d{rule.target}{list(index)}: the sum over the dimension it was broadcast along",
        "index": index,
        "dim": terms["dim"],
        "terms": terms["terms"],
        "total": written["value"],
        "text": (
            f"In the forward pass {rule.target} was broadcast: each of its entries was used "
            f"{len(terms['terms'])} times, once per entry along dim {terms['dim']}. Each use sends a gradient "
            "back, and they add up: the sum below is this entry's gradient."
        ),
    }


def sum_terms(code: str, target: str, scope: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """The terms of the (last) `.sum(dim)` in a rule's expression at `index`, each with its value."""
    stmt = ast.parse(code).body[0]
    expr = stmt.value  # type: ignore[attr-defined]
    call = next(
        n
        for n in ast.walk(expr)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "sum"
    )
    dim = int(call.args[0].value)  # type: ignore[attr-defined]
    base = call.func.value  # type: ignore[attr-defined]
    writer = Writer(dict(scope))
    inner = writer.value(base)
    at = list(index)
    keep = any(k.arg == "keepdim" for k in call.keywords)
    if not keep:
        at.insert(dim, 0)
    terms = []
    for v in range(inner.shape[dim]):
        at_v = [v if d == dim else i for d, i in enumerate(at)]
        writer.operands = []
        _, text = writer.write(base, at_v, inner.dim())
        terms.append(
            {
                "index": at_v,
                "text": text,
                "value": entry(inner, at_v),
                "operands": [o.public() for o in writer.operands],
            }
        )
    return {"dim": dim, "terms": terms}


def _max(bp: BackwardPass, op: Op, scope: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """logit_maxes = logits.max(1, keepdim=True): the row's gradient goes to the maximum's column only."""
    src = op.inputs[0]
    row = index[0]
    values = scope[src][row]
    m = int(values.argmax())
    upstream = entry(scope[f"d{op.outputs[0]}"], [row, 0])
    return {
        "kind": "max",
        "source": src,
        "output": op.outputs[0],
        "title": f"{op.outputs[0]}[{row}]: the maximum of row {row}, and where its gradient goes",
        "row": row,
        "values": [entry(values, [j]) for j in range(values.numel())],
        "argmax": m,
        "upstream": upstream,
        "contribution": [upstream if j == m else 0.0 for j in range(values.numel())],
        "text": (
            f"Only {src}[{row}, {m}] (the maximum) made {op.outputs[0]}[{row}]: nudging any other entry of the row "
            f"does not change the maximum. So d{src} gets d{op.outputs[0]}[{row}] = {upstream:.3g} at column {m} "
            "and 0 elsewhere: the one-hot of the argmax, times the gradient. That gradient is ≈ 0: subtracting a "
            "row's maximum does not change the softmax, so the loss does not depend on it."
        ),
    }


def _gather(bp: BackwardPass, dataset: Dataset, scope: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """emb = C[Xb]: row c of dC collects demb[k, t] from every (row k, position t) where Xb[k, t] == c."""
    Xb, demb = scope["Xb"], scope["demb"]
    counts = torch.bincount(Xb.view(-1), minlength=scope["C"].shape[0])
    c, e = index[0], index[1]
    if counts[c] == 0:
        c = int(counts.argmax())  # a character the batch never uses gets no gradient: show one it uses
    places = (Xb == c).nonzero().tolist()
    uses = [{"row": k, "position": t, "value": entry(demb, [k, t, e])} for k, t in places]
    return {
        "kind": "gather",
        "title": f"dC[{c}] ('{dataset.itos[c]}'): every place the batch used that character",
        "char": c,
        "label": dataset.itos[c],
        "dim": e,
        "uses": uses,
        "total": float(sum(u["value"] for u in uses)) if uses else 0.0,
        "occurrences": [{"char": dataset.itos[i], "count": int(n)} for i, n in enumerate(counts.tolist())],
        "text": (
            f"The forward copied row {c} of C into emb at each of the {len(uses)} places where Xb holds "
            f"'{dataset.itos[c]}'. A copy's gradient flows back to where it came from, so dC[{c}] is the sum of "
            "demb over those places, and a character the batch does not use gets 0. The notebook writes this as "
            "a loop over k and j with dC[ix] += demb[k, j]; index_add_ does the same in one call."
        ),
    }


def _tanh(op: Op, scope: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """h = tanh(hpreact): 1 − h² at a typical unit and at a saturated one, where the gradient vanishes."""
    out = op.outputs[0]
    h, dh = scope[out], scope[f"d{out}"]
    flat = h.abs().view(-1)
    worst = int(flat.argmax())
    saturated = [worst // h.shape[1], worst % h.shape[1]]
    units = []
    for label, (r, c) in (("chosen", index), ("most saturated", saturated)):
        hv, g = entry(h, [r, c]), entry(dh, [r, c])
        local = 1.0 - hv**2
        units.append({"label": label, "index": [r, c], "h": hv, "local": local, "dh": g, "dhpreact": local * g})
    count = int((h.abs() > SATURATED).sum())
    return {
        "kind": "tanh",
        "output": out,
        "input": op.inputs[0],
        "title": "tanh: 1 − h², and a saturated unit",
        "units": units,
        "saturated": count,
        "entries": h.numel(),
        "threshold": SATURATED,
        "text": (
            f"tanh flattens out near ±1, so 1 − h² is close to 0 there and the gradient that reaches {op.inputs[0]} "
            f"nearly vanishes. {count} of {h.numel()} activations in this batch have |h| > {SATURATED}: those "
            "units learn almost nothing from this batch (the lecture's reason for scaling W1 by (5/3)/√fan_in)."
        ),
    }


def _log(op: Op, scope: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """out = x.log(): 1/x at the chosen entry and at its row's target, the one entry the loss reads."""
    out, inp = op.outputs[0], op.inputs[0]
    x, dout = scope[inp], scope[f"d{out}"]
    r, c = index
    target = int(scope["Yb"][r])
    entries = []
    for label, at in (("chosen", [r, c]), ("its row's target", [r, target])):
        xv, g = entry(x, at), entry(dout, at)
        entries.append({"label": label, "index": at, "x": xv, "local": 1.0 / xv, "dout": g, "din": g / xv})
    p = entries[1]["x"]
    return {
        "kind": "log",
        "output": out,
        "input": inp,
        "title": f"log: 1/{inp}, and the target's low probability",
        "entries": entries,
        "text": (
            f"d log(x) = 1/x. d{out} is 0 everywhere but at each row's target (the loss reads only those), so "
            f"d{inp} is 0 there too; at the target, d{out}'s −1/n is multiplied by 1/{inp}: this row gave its "
            f"target {inp} = {p:.4f}, so its gradient is {1.0 / p:.1f} times d{out}'s. The less likely the target, "
            "the harder the gradient pushes."
        ),
    }


def _forces(bp: BackwardPass, dataset: Dataset, row: int) -> dict[str, Any]:
    """Exercise 2's picture: for one row, n·dlogits = softmax − one-hot, a pull on the target and pushes elsewhere."""
    logits, n = bp.values["logits"], bp.values["n"]
    assert isinstance(logits, torch.Tensor) and isinstance(n, int)
    probs = bp.values["probs"] if "probs" in bp.values else F.softmax(logits, 1)
    target = int(bp.values["Yb"][row])  # type: ignore[index]
    # the identity n·dlogits = softmax − one-hot, in float64: its row sums to 0 up to 1e-16, where the served
    # float32 gradient's rounding (~1e-8 an entry) would add up to ~1e-7; agreement with the backward's is shown
    onehot = [1.0 if j == target else 0.0 for j in range(logits.shape[1])]
    p64 = F.softmax(logits[row].to(torch.float64), 0)
    force = [float(p) - o for p, o in zip(p64, onehot, strict=True)]
    served = bp.ref_grads["logits"][row].to(torch.float64) * n
    return {
        "row": row,
        "n": n,
        "target": target,
        "labels": [dataset.itos[i] for i in range(logits.shape[1])],
        "probs": [entry(probs, [row, j]) for j in range(logits.shape[1])],  # type: ignore[arg-type]
        "onehot": onehot,
        "force": force,
        "sum": float(sum(force)),
        "backward_maxdiff": float((served - torch.tensor(force, dtype=torch.float64)).abs().max()),
        "text": (
            f"n·dlogits for row {row} is softmax − one-hot. Gradient descent moves each logit against its "
            f"gradient: the target '{dataset.itos[target]}' (force p − 1 < 0) is pulled up, and every other character "
            "is pushed down by exactly its probability, so the more a wrong character is predicted, the harder it is "
            "pushed. The forces of a row balance, they sum to 0: the probabilities sum to 1, as does the one-hot. "
            "Once the net predicts the target with p = 1, every force is 0."
        ),
    }


# ---- exact or approximate --------------------------------------------------------------------------------


def _approx(bp: BackwardPass, name: str, step: int) -> dict[str, Any] | None:
    """Where an approximate gradient differs most from its reference, by how much, and the cause where it is known."""
    cmp = bp.cmp_at(name, step)
    if cmp is None or cmp["exact"] or not cmp["approx"]:
        return None
    manual, ref = bp.grad_at(name, step), bp.reference(name, step)
    assert manual is not None and ref is not None
    diff = (manual - ref).abs()
    flat = int(diff.reshape(-1).argmax())
    index = list(torch.unravel_index(torch.tensor(flat), diff.shape)) if diff.dim() else []
    index = [int(i) for i in index]
    m, r = _num(manual, index), _num(ref, index)
    return {
        "index": index,
        "manual": m,
        "reference": r,
        "abs": float(diff[tuple(index)]),  # of the float32 entries, not of their printed digits
        "rel": float(diff[tuple(index)]) / abs(r) if r else None,
        "cause": _cause(bp, name, step),
    }


def _cause(bp: BackwardPass, name: str, step: int) -> str:
    """The rounding cause: the node's own rule if what it received was exact, else where the difference started."""
    done = bp.contributions_done(name, step)
    for s in bp.contribution_steps[name][:done]:
        op = bp.schedule[s - 1]
        out = op.outputs[0]
        upstream = bp.cmp.get(out) if out != "loss" else {"exact": True, "approx": True}
        if upstream is not None and not upstream["approx"]:
            return (
                f"d{out}, which this gradient is computed from, is wrong (✗), yet this one is only ≈: the rule "
                f"combines d{out}'s entries so that its error cancels, up to rounding"
            )
        if upstream is not None and not upstream["exact"]:
            origin = _first_approx(bp, out)
            return (
                f"inherited: d{out}, which this gradient is computed from, is already approximate; the difference "
                f"starts at d{origin}" + (f" ({_rounding(bp, origin)})" if _rounding(bp, origin) else "")
            )
        rounding = next((right_rule(r).rounding for r in op.rules if r.target == name and right_rule(r).rounding), "")
        if rounding:
            return rounding
    return "autograd computes the same numbers with other kernels or in another order: the last bits differ"


def _first_approx(bp: BackwardPass, name: str) -> str:
    """Follow approximate gradients upstream to the first one whose own inputs were exact."""
    seen = set()
    while name not in seen:
        seen.add(name)
        ups = [bp.schedule[s - 1].outputs[0] for s in bp.contribution_steps.get(name, []) if s > 0]
        inexact = [u for u in ups if u != "loss" and not bp.cmp[u]["exact"] and bp.cmp[u]["approx"]]
        if not inexact:
            return name
        name = inexact[0]
    return name


def _rounding(bp: BackwardPass, name: str) -> str:
    for s in bp.contribution_steps.get(name, []):
        if s > 0:
            for rule in bp.schedule[s - 1].rules:
                if rule.target == name and right_rule(rule).rounding:
                    return right_rule(rule).rounding
    return ""


def _division(bp: BackwardPass) -> dict[str, Any]:
    """The lecture's remark: with counts_sum_inv = 1.0 / counts_sum instead of counts_sum**-1, exact becomes ≈.

    autograd's gradient through each forward, from the same dcounts_sum_inv, against the rule's
    dcounts_sum = (-counts_sum**-2) * dcounts_sum_inv.
    """
    counts_sum = bp.values["counts_sum"]
    assert isinstance(counts_sum, torch.Tensor)
    upstream = bp.ref_grads["counts_sum_inv"]
    manual = (-(counts_sum**-2)) * upstream
    rows = []
    for code, forward in (("counts_sum**-1", lambda x: x**-1), ("1.0 / counts_sum", lambda x: 1.0 / x)):
        leaf = counts_sum.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(forward(leaf), leaf, grad_outputs=upstream)
        rows.append(
            {
                "forward": f"counts_sum_inv = {code}",
                "exact": bool(torch.equal(grad, manual)),
                "approx": bool(torch.allclose(grad, manual)),
                "maxdiff": float((grad - manual).abs().max()),
            }
        )
    return {
        "rule": "dcounts_sum = (-counts_sum**-2) * dcounts_sum_inv",
        "rows": rows,
        "text": (
            "The lecture writes counts_sum**-1, not 1.0 / counts_sum: autograd differentiates x**-1 with the "
            "power rule, the same arithmetic as the manual rule, so the two agree bit for bit; it differentiates "
            "a division with its own formula, which rounds differently. Both are right: one is exact, the other ≈."
        ),
    }
