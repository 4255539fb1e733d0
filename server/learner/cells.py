"""A whole backward cell of the notebook, graded at once: Exercise 1's cell, Exercise 2's three lines, Exercise 3's
one-liner or Exercise 4's backward block, with the notebook's cmp(...) lines answered as it prints them.

The cell runs in the same sandbox as a single step (server/learner/sandbox.py: allowlist, dry run on the meta device,
the same caps on what it computes); only its size limit is larger. The answer has a check line per gradient in
the order of the notebook's cmp lines (the net's cmp_order), and, for the first line whose gradient is wrong while
everything it reads is right, what is wrong with it (challenge.diagnose, as for a single step).
"""

from __future__ import annotations

import ast
import functools
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..core.engine import ALLCLOSE_ATOL, ALLCLOSE_RTOL, BackwardPass, compare
from ..core.serialize import cmp_public, tensor_public
from ..net.declare import Net, Op
from .challenge import (
    context,
    diagnose,
    dim_slip,
    same_entries,
    shape_feedback,
    shape_note,
    step_names,
    writes,
)
from .sandbox import Cost, Names, Refused, check_program, evaluate, read

MAX_CMP_ENTRIES = 1 << 21  # a cmp line whose operands broadcast past this is said, not computed ((N,) against (N,1))
# entries all of a cell's cmp lines compare: the notebook's 26 at the largest config compare ~3M
MAX_CMP_WORK = 1 << 24
# the wrong values kept for the first wrong line (a right partial sum is kept as its count only)
MAX_KEPT_BYTES = 64 << 20


def order(net: Net, names: list[str]) -> list[str]:
    """Nodes in the order of the notebook's cmp lines; any the notebook does not check after them."""
    rank = {name: i for i, name in enumerate(net.cmp_order)}
    return sorted(names, key=lambda name: rank.get(name, len(rank)))


def cell_grads(net: Net, mode: str) -> list[str]:
    """The nodes whose gradients the mode's cell computes, in the lecture's order."""
    targets = {rule.target for op in net.backward_schedule(mode) for rule in op.rules}
    wanted = net.cell_for(mode).grads
    nodes = net.nodes_for_mode(mode)
    return order(net, [n.name for n in nodes if n.name in targets and (not wanted or n.name in wanted)])


def cell_given(net: Net, mode: str) -> list[str]:
    """The nodes whose gradients are in scope before the cell: the notebook's earlier cells computed them."""
    grads = set(cell_grads(net, mode))
    before: list[str] = []
    for op in net.backward_schedule(mode):
        if any(rule.target in grads for rule in op.rules):
            break
        before += [rule.target for rule in op.rules if rule.target not in before]
    return order(net, before)


def first_step(bp: BackwardPass) -> int:
    """The backward step the cell starts at: the gradients of the steps before it are in scope (earlier cells)."""
    return min(bp.contribution_steps[name][0] for name in cell_grads(bp.net, bp.mode))


def cell_names(net: Net, mode: str, schedule: list[Op] | None = None) -> Names:
    """The names a mode's cell starts with, from the declaration alone: those of its first step, every gradient of
    the mode that is not given yet counted as one the cell computes."""
    schedule = schedule or net.backward_schedule(mode)
    grads = set(cell_grads(net, mode))
    first = next(k for k, op in enumerate(schedule, start=1) if any(rule.target in grads for rule in op.rules))
    names = step_names(net, mode, first, schedule)
    made = {f"d{rule.target}" for op in schedule for rule in op.rules}
    later = dict.fromkeys(sorted(made - names.given), "the cell computes it: assign it before the line that uses it")
    return Names(names.given, names.shared, names.mutable, later, unit="line")


# --- the cell's text: its program, and the notebook's lines that only print --------------------------------------


@dataclass
class Printout:
    """A cmp line of the cell, answered where it stands: cmp('name', dname, name), or Exercise 4's check of every
    parameter, for p,g in zip(parameters, grads): cmp(str(tuple(p.shape)), g, p)."""

    line: int
    after: int  # how many of the program's statements run before it
    label: str = ""
    grad: str = ""
    tensor: str = ""
    parameters: bool = False  # the zip over parameters and grads


@dataclass
class CellText:
    """A cell split into the program the sandbox runs and the notebook's lines around it that only print."""

    text: str  # as typed, dedented (a block copied from inside the training loop is indented)
    program: str  # the text with the printing lines blanked: line numbers stay the learner's
    printouts: list[Printout] = field(default_factory=list)
    grads: list[str] | None = None  # Exercise 4's grads = [dC, dW1, ...], in its order
    grads_line: int = 0


def _is_name(node: ast.expr, name: str | None = None) -> bool:
    return isinstance(node, ast.Name) and (name is None or node.id == name)


def _cmp_call(stmt: ast.stmt) -> ast.Call | None:
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and _is_name(stmt.value.func, "cmp"):
        return stmt.value
    return None


def _parameter_check(stmt: ast.stmt) -> bool:
    """for p, g in zip(parameters, grads): cmp(str(tuple(p.shape)), g, p), with any two names for p and g."""
    if not (isinstance(stmt, ast.For) and isinstance(stmt.target, ast.Tuple) and len(stmt.target.elts) == 2):
        return False
    p, g = stmt.target.elts
    it = stmt.iter
    if not (_is_name(p) and _is_name(g) and isinstance(it, ast.Call) and _is_name(it.func, "zip")):
        return False
    if [a.id if isinstance(a, ast.Name) else None for a in it.args] != ["parameters", "grads"] or it.keywords:
        return False
    if len(stmt.body) != 1 or stmt.orelse or (call := _cmp_call(stmt.body[0])) is None or len(call.args) != 3:
        return False
    label, grad, tensor = call.args
    shape = f"str(tuple({p.id}.shape))"  # type: ignore[attr-defined]
    return ast.unparse(label) == shape and _is_name(grad, g.id) and _is_name(tensor, p.id)  # type: ignore[attr-defined]


def split_cell(source: str) -> CellText:
    """The cell's program and its printing lines (cmp(...), grads = [...], the parameters' check), or Refused."""
    text = textwrap.dedent(source)
    tree = read(text, cell=True)
    lines = text.split("\n")
    cell = CellText(text, "")
    kept: list[ast.stmt] = []
    dropped: list[ast.stmt] = []
    for stmt in tree.body:
        call = _cmp_call(stmt)
        if call is not None:
            args = call.args
            if (
                len(args) != 3
                or call.keywords
                or not (isinstance(args[0], ast.Constant) and isinstance(args[0].value, str))
                or not (_is_name(args[1]) and _is_name(args[2]))
            ):
                raise Refused(f"line {stmt.lineno}: cmp takes the name, the gradient and the tensor, as the "
                              "notebook writes it: cmp('logits', dlogits, logits)")  # fmt: skip
            label, grad, tensor = args[0].value, args[1].id, args[2].id  # type: ignore[attr-defined,union-attr]
            if not all(c.isascii() and c.isprintable() for c in label):  # '\ud800' is ASCII as typed, not as read
                raise Refused(f"line {stmt.lineno}: a cmp label is plain text, as the notebook writes it: "
                              "cmp('logits', dlogits, logits) (no escapes such as \\n or \\u)")  # fmt: skip
            cell.printouts.append(Printout(stmt.lineno, len(kept), label, grad, tensor))
        elif _parameter_check(stmt):
            cell.printouts.append(Printout(stmt.lineno, len(kept), parameters=True))
        elif (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and _is_name(stmt.targets[0], "grads")
            and isinstance(stmt.value, ast.List)
        ):
            if not all(_is_name(e) for e in stmt.value.elts):
                raise Refused(f"line {stmt.lineno}: grads lists the gradients by name: grads = [dC, dW1, ...]")
            cell.grads = [e.id for e in stmt.value.elts]  # type: ignore[attr-defined]
            cell.grads_line = stmt.lineno
        else:
            kept.append(stmt)
            continue
        dropped.append(stmt)
    for node in ast.walk(ast.Module(body=kept, type_ignores=[])):
        if isinstance(node, ast.Call) and _is_name(node.func, "cmp"):
            raise Refused(f"line {node.lineno}: cmp(...) goes on a line of its own at the top level of the cell, "
                          "as in the notebook")  # fmt: skip
    used = {line for stmt in kept for line in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)}
    for stmt in dropped:
        span = range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
        if used.intersection(span):
            raise Refused(f"line {stmt.lineno}: put this line on a line of its own (no ; between statements)")
        for i in span:
            lines[i - 1] = ""
    if any(p.parameters for p in cell.printouts) and cell.grads is None:
        line = next(p.line for p in cell.printouts if p.parameters)
        raise Refused(f"line {line}: the check zips parameters with grads: write grads = [dC, dW1, ...] before it")
    cell.program = "\n".join(lines)
    return cell


def check_cell(cell: CellText, names: Names) -> ast.Module:
    """The static rules of a cell's program (sandbox.check_program), and its grads = [...] naming gradients it
    defines; the checked tree, or Refused as a check of the cell says it."""
    tree = check_program(cell.program, names, cell=True)
    if cell.grads is not None:
        bound = {stmt.targets[0].id for stmt in tree.body if isinstance(stmt, ast.Assign) and _is_name(stmt.targets[0])}
        missing = [g for g in cell.grads if g not in bound and g not in names.given]  # type: ignore[attr-defined]
        if missing:
            raise Refused(f"line {cell.grads_line}: grads lists {', '.join(missing)}, which the cell does not define")
    return tree


# --- the notebook's cmp ----------------------------------------------------------------------------------------


def notebook_cmp(label: str, dt: Any, grad: torch.Tensor) -> tuple[str, bool]:
    """The line the notebook's cmp(label, dt, t) prints where t.grad is `grad` (broadcasting as it does), and
    whether it says approximate: True; what it would raise instead, said in the line."""
    head = f"{label:15s} | "
    if not isinstance(dt, torch.Tensor):
        return head + "not a tensor: the notebook's cmp raises here", False
    try:
        both = torch.broadcast_shapes(dt.shape, grad.shape)
    except RuntimeError:
        return head + f"shape {_fmt(dt.shape)} against {_fmt(grad.shape)} does not broadcast: cmp raises here", False
    if both.numel() > MAX_CMP_ENTRIES:
        return head + f"shape {_fmt(dt.shape)} against {_fmt(grad.shape)} broadcasts to {_fmt(both)}", False
    try:
        ex = torch.all(dt == grad).item()
        app = torch.allclose(dt, grad)
        maxdiff = (dt - grad).abs().max().item()
    except RuntimeError as e:
        return head + f"cmp raises here: {str(e).strip().splitlines()[0][:200]}", False
    return head + f"exact: {str(ex):5s} | approximate: {str(app):5s} | maxdiff: {maxdiff}", bool(app)


def _fmt(shape: torch.Size) -> str:
    return str(tuple(shape))


# --- grading -----------------------------------------------------------------------------------------------------


def _reads(stmt: ast.stmt) -> set[str]:
    return {node.id for node in ast.walk(stmt) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def _matches(got: torch.Tensor, want: torch.Tensor) -> bool:
    """The lecture's allclose, on the entries (a (64,) gradient for a (1,64) tensor counts, as cmp counts it)."""
    if got.shape != want.shape:
        if not same_entries(got.shape, want.shape):
            return False
        got = got.reshape(want.shape)
    if not got.is_floating_point():
        return False
    return torch.allclose(got.to(want.dtype), want, rtol=ALLCLOSE_RTOL, atol=ALLCLOSE_ATOL)


class _Run:
    """One run of a cell: its scope, the gradients after each top-level statement, the cmp lines answered."""

    def __init__(self, bp: BackwardPass, cell: CellText) -> None:
        self.bp, self.cell = bp, cell
        self.first = first_step(bp)
        ctx = context(bp, self.first)
        self.grads = {f"d{name}" for name in bp.node_names() if name != "loss" and name in bp.totals}
        self.given = {name for name in self.grads if name in ctx["scope"]}
        self.ctx = {**ctx, "later": dict(cell_names(bp.net, bp.mode, bp.schedule).later), "cell": True}
        self.wanted = {f"d{n}": tuple(bp.values[n].shape) for n in bp.totals if n != "loss"}  # type: ignore[union-attr]
        self.cost = Cost()
        self.own = Cost()  # what the cell's own run spent: the feedback's reruns are budgeted from it
        self.statements: list[ast.stmt] = []
        # each statement's gradients as they were after it: (name, how many contributions it holds if it is a right
        # partial sum, else the value) - a value kept to say what is wrong, or its shape alone past MAX_KEPT_BYTES
        self.after: list[list[tuple[str, int | None, torch.Tensor]]] = []
        self.kept = 0  # bytes of the values kept
        self.printed: list[dict[str, Any]] = []
        self.compared = 0  # entries the cmp lines compared

    def run(self) -> dict[str, Any]:
        self.print_at(0, self.ctx["scope"])
        env = evaluate(
            self.cell.program, self.ctx["scope"], self.ctx["shared"], self.ctx["mutable"], self.ctx["later"],
            self.wanted, self.cost, cell=True, after=self.record,
        )  # fmt: skip
        self.own = replace(self.cost)
        return env

    def record(self, stmt: ast.stmt, env: dict[str, Any]) -> None:
        self.statements.append(stmt)
        wrote = []
        for name in sorted(writes(stmt) & self.grads):
            value = env.get(name)
            if not isinstance(value, torch.Tensor):
                continue
            k = _contributions(self.bp, name[1:], value)
            if k is None:
                size = value.numel() * value.element_size()
                ref = self.bp.ref_grads[name[1:]]
                if value.numel() == ref.numel() and self.kept + size <= MAX_KEPT_BYTES:
                    self.kept += size
                    value = value.clone()
                else:  # its shape is what is wrong with it (or the budget is spent): the shape is kept
                    value = torch.empty(value.shape, dtype=value.dtype, device="meta")
            wrote.append((name, k, value))
        self.after.append(wrote)
        self.print_at(len(self.statements), env)

    def print_at(self, done: int, env: dict[str, Any]) -> None:
        """The cmp lines that stand after `done` statements, answered on the names as they are there."""
        for p in self.cell.printouts:
            if p.after != done:
                continue
            if p.parameters:
                assert self.cell.grads is not None
                for param, grad in zip(self.bp.net.param_names, self.cell.grads, strict=False):
                    label = str(tuple(self.bp.values[param].shape))  # type: ignore[union-attr]
                    self.printed.append(self.answer(p.line, label, grad, param, env))
            else:
                self.printed.append(self.answer(p.line, p.label, p.grad, p.tensor, env))

    def answer(self, line: int, label: str, grad: str, tensor: str, env: dict[str, Any]) -> dict[str, Any]:
        ref = self.bp.ref_grads.get(tensor)
        if ref is None:  # not a tensor of this mode's forward pass: the notebook's t.grad is None, or a NameError
            return {"line": line, "text": f"{label:15s} | {tensor} has no .grad in this mode's forward pass",
                    "ok": False}  # fmt: skip
        if grad not in env:
            return {"line": line, "text": f"{label:15s} | {grad} is not defined at line {line}", "ok": False}
        dt = env[grad]
        if isinstance(dt, torch.Tensor):
            try:
                self.compared += torch.broadcast_shapes(dt.shape, ref.shape).numel()
            except RuntimeError:
                pass  # notebook_cmp says so
            if self.compared > MAX_CMP_WORK:
                return {"line": line, "text": f"{label:15s} | not compared: the cell's cmp lines compare more than "
                        f"{MAX_CMP_WORK:,} entries in all", "ok": False}  # fmt: skip
        text, ok = notebook_cmp(label, dt, ref)
        return {"line": line, "text": text, "ok": ok}


def grade_cell(bp: BackwardPass, source: str) -> dict[str, Any]:
    """Run a whole backward cell and compare every gradient it computes with autograd's, in the lecture's order."""
    cell = split_cell(source)
    run = _Run(bp, cell)
    env = run.run()
    notes: list[str] = []
    if cell.grads is not None:
        missing = [g for g in cell.grads if not isinstance(env.get(g), torch.Tensor)]
        if missing:
            raise Refused(f"line {cell.grads_line}: grads lists {', '.join(missing)}, which the cell does not define")
        params = bp.net.param_names
        expected = [f"d{p}" for p in params]
        if cell.grads != expected:
            notes.append(f"line {cell.grads_line}: grads = [{', '.join(cell.grads)}]: the update zips it with "
                         f"parameters = [{', '.join(params)}], so it must be [{', '.join(expected)}]")  # fmt: skip
    required = [f"d{name}" for name in cell_grads(bp.net, bp.mode)]
    written = set().union(*map(writes, run.statements)) & run.grads
    graded = order(bp.net, [g[1:] for g in set(required) | (written - run.given)])
    last_line = {}
    for stmt in run.statements:
        for name in writes(stmt):
            last_line[name] = stmt.lineno
    checks = [_check(bp, name, env, f"d{name}" in required, last_line.get(f"d{name}")) for name in graded]
    first_wrong = _first_wrong(run, checks, env)
    return {
        "mode": bp.mode,
        "exercise": bp.net.cell_for(bp.mode).exercise,
        "correct": all(c["ok"] for c in checks) and not notes,
        "checks": checks,
        "printed": run.printed,
        "first_wrong": first_wrong,
        "notes": notes,
    }


def _check(bp: BackwardPass, name: str, env: dict[str, Any], required: bool, line: int | None) -> dict[str, Any]:
    """A gradient's check line: the notebook's cmp of the cell's final value against autograd's."""
    grad, ref = f"d{name}", bp.ref_grads[name]
    item: dict[str, Any] = {"name": name, "grad": grad, "required": required, "line": line, "feedback": [],
                            "cmp": None}  # fmt: skip
    got = env.get(grad)
    if not isinstance(got, torch.Tensor):
        item["text"] = f"{name:15s} | {grad} is not defined"
        item["ok"] = False
        item["feedback"].append(f"{grad} is not defined: the cell computes it" if got is None else f"{grad} is not a "
                                "tensor")  # fmt: skip
        return item
    item["text"], item["ok"] = notebook_cmp(name, got, ref)
    if got.shape == ref.shape or same_entries(got.shape, ref.shape):
        cmp = compare(got.reshape(ref.shape).to(ref.dtype), ref)
        if got.shape != ref.shape:
            cmp |= {"shape": list(got.shape), "shape_ok": False}
            item["feedback"].append(shape_note(grad, got.shape, ref.shape))
    else:
        cmp = compare(got, ref)
        item["feedback"].append(shape_feedback(grad, got, ref))
    item["cmp"] = cmp_public(cmp)
    if not got.is_floating_point():
        item["feedback"].append(f"{grad} holds integers ({got.dtype}); a gradient is float: .float()")
    return item


def _first_wrong(run: _Run, checks: list[dict[str, Any]], env: dict[str, Any]) -> dict[str, Any] | None:
    """The first line whose gradient is wrong (and stays wrong) while every gradient it read was right there."""
    bp = run.bp
    ok = {c["grad"]: c["ok"] for c in checks}
    done = {g: bp.contributions_done(g[1:], run.first - 1) for g in run.grads}  # contributions in each, so far
    for i, (stmt, after) in enumerate(zip(run.statements, run.after, strict=True)):
        for grad, k, got in after:
            if k is not None:
                done[grad] = k
                continue
            if ok.get(grad, True):
                continue  # a name used as scratch on the way: its final value is right
            return _wrong_line(run, i, stmt, grad, got, done)
    for c in checks:
        if c["ok"]:
            continue
        grad, total = c["grad"], bp.totals[c["name"]]
        if c["line"] is None:
            return {"line": None, "end_line": None, "code": "", "name": grad, "feedback": c["feedback"], "diff": None,
                    "missing": None}  # fmt: skip
        stmt = next(s for s in reversed(run.statements) if s.lineno == c["line"])
        if done[grad] < total:
            paths = "paths" if total - done[grad] > 1 else "path"
            why = (f"{grad} holds {done[grad]} of its {total} contributions: {c['name']} feeds {total} ops in the "
                   f"forward pass; add the other {paths} with {grad} += ...")  # fmt: skip
        else:
            why = f"{grad} was right after line {c['line']} and changed after it: " + _alias(run, stmt, grad)
        return _line(run, stmt, grad, [why], None)
    return None


def _alias(run: _Run, last: ast.stmt, grad: str) -> str:
    """Which later line made another name for the gradient's memory (y = dx, y = dx.view(...)), which then changed."""
    for stmt in run.statements[run.statements.index(last) + 1 :]:
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)):
            continue
        value = stmt.value
        while isinstance(value, ast.Call | ast.Attribute) and not _is_name(value):
            base = value.func if isinstance(value, ast.Call) else value
            if not (isinstance(base, ast.Attribute) and base.attr in ("view", "reshape", "T", "t")):
                break
            value = base.value
        if _is_name(value, grad):
            other = stmt.targets[0].id
            return (f"line {stmt.lineno} makes {other} the same memory as {grad}, so changing {other} in place (+=, "
                    f"[...] =) changes {grad} too: {other} = {grad}.clone() makes a copy")  # fmt: skip
    return f"a later line changed it in place through another name (y = {grad} shares its memory; .clone() does not)"


def _contributions(bp: BackwardPass, name: str, got: torch.Tensor) -> int | None:
    """How many of the node's contributions `got` holds, if it is one of the right partial sums (or the whole)."""
    total = bp.totals[name]
    if _matches(got, bp.ref_grads[name]):
        return total
    for k in range(total - 1, 0, -1):
        partial = bp.grad_at(name, bp.contribution_steps[name][k - 1])
        if partial is not None and _matches(got, partial):
            return k
    return None


def _group_end(run: _Run, i: int, grad: str) -> int:
    """The last of the statements from i that build the gradient together: each writes it, none makes it a right
    partial sum (dlogits = softmax, dlogits[...] -= 1, dlogits /= n: only the last one's value is meant)."""
    end = i
    k, total = 0, run.bp.totals[grad[1:]]
    for j in range(i + 1, len(run.statements)):
        stmt = run.statements[j]
        path = isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add) and _is_name(stmt.target, grad)
        if path and (k := k + 1) < total:
            break  # dx += ... adds another path: the lines before it made one contribution
        wrote = next((k for name, k, _ in run.after[j] if name == grad), False)
        if wrote is False:
            if grad in writes(run.statements[j]):
                break  # written, but not kept as a tensor: the group ends before it
            continue
        if wrote is not None:
            break
        end = j
    return end


def _divides_by_n(stmts: list[ast.stmt]) -> bool:
    """Some statement divides by n (x / n, x /= n, 1.0/n * ...)."""
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.BinOp | ast.AugAssign) and isinstance(node.op, ast.Div):
                right = node.right if isinstance(node, ast.BinOp) else node.value
                if any(_is_name(x, "n") for x in ast.walk(right)):
                    return True
    return False


def _missing_one_hot(
    bp: BackwardPass, grad: str, got: torch.Tensor, expected: torch.Tensor, group: list[ast.stmt]
) -> tuple[int, str, str] | None:
    """(after which line, the line, by how much) where got misses only the cross-entropy's one-hot: softmax(logits)
    without dlogits[range(n), Yb] -= 1, the notebook's second line of Exercise 2."""
    n, Yb = bp.config.batch_size, bp.values["Yb"]
    if got.dim() != 2 or got.shape[0] != n or not isinstance(Yb, torch.Tensor) or got.shape[1] <= int(Yb.max()):
        return None  # not a (n, vocab) gradient
    diff = (got - expected).double()
    picked = torch.zeros_like(diff, dtype=torch.bool)
    picked[torch.arange(n), Yb] = True
    c = float(diff[picked].mean())
    scale = float(expected.abs().max())
    if (
        c == 0.0
        or float(diff[~picked].abs().max()) > 1e-5 * scale
        or float((diff[picked] - c).abs().max()) > 1e-4 * abs(c)
    ):
        return None
    divides = [k for k, stmt in enumerate(group) if isinstance(stmt, ast.AugAssign) and _divides_by_n([stmt])]
    if abs(c * n - 1) < 1e-3 and divides and divides[0] > 0:  # before the /= n: -= 1, as the notebook writes it
        before = group[divides[0] - 1]
        return before.end_lineno or before.lineno, f"{grad}[range(n), Yb] -= 1", "1/n"
    last = group[-1].end_lineno or group[-1].lineno
    if abs(c * n - 1) < 1e-3:
        return last, f"{grad}[range(n), Yb] -= 1/n", "1/n"
    if abs(c - 1) < 1e-3:
        return last, f"{grad}[range(n), Yb] -= 1", "1"
    return None


def _wrong_line(
    run: _Run, i: int, stmt: ast.stmt, grad: str, got: torch.Tensor, done: dict[str, int]
) -> dict[str, Any]:
    bp, name = run.bp, grad[1:]
    total, k = bp.totals[name], done[grad]
    # the lines that build the gradient together are judged on the value the last of them leaves: the first of
    # them alone is not wrong for not being the whole gradient yet
    unread = any(done.get(r, 0) < bp.totals[r[1:]] for r in _reads(stmt) & run.grads if r != grad)
    end = i if unread else _group_end(run, i, grad)  # a line that reads an incomplete gradient: it is the one
    if end > i:
        got = next(value for g, _, value in run.after[end] if g == grad)
    last = not any(grad in writes(s) for s in run.statements[end + 1 :])
    if last or k + 1 >= total:  # the line finishes the gradient: autograd's is what it should be
        step, expected = bp.completed_at[name], bp.ref_grads[name]
    else:  # the line adds contribution k+1 of several
        step = bp.contribution_steps[name][k]
        expected = bp.grad_at(name, step)
        assert expected is not None
    feedback = [
        f"line {stmt.lineno} reads {r}, which holds {done[r]} of its {bp.totals[r[1:]]} contributions there: add "
        f"them all (the += lines) before {r} is used"
        for r in sorted(_reads(stmt) & run.grads)
        if r != grad and done.get(r, 0) < bp.totals[r[1:]]
    ]
    diff = None
    if got.shape != expected.shape and not same_entries(got.shape, expected.shape):
        feedback.append(shape_feedback(grad, got, expected))
    elif got.is_meta:  # past the budget of kept values
        feedback.append(f"{grad} differs from what this line should make")
    else:
        got = got.reshape(expected.shape)
        if not got.is_floating_point():
            feedback.append(f"{grad} holds integers ({got.dtype}); a gradient is float: .float()")
        got = got.to(expected.dtype)
        bad = int((~torch.isfinite(got)).sum())
        if bad:
            feedback.append(f"{grad} has {bad} NaN/Inf entries: a log of 0, a 0/0, or a huge power?")
        else:
            rule = next(r for r in bp.schedule[step - 1].rules if r.target == name)
            slip: Callable[[], str | None] = functools.partial(
                dim_slip, run.cell.program, run.ctx, run.wanted, run.cost, run.own, grad, expected, end, i
            )
            group = run.statements[i : end + 1]
            n = bp.config.batch_size
            one_hot = _missing_one_hot(bp, grad, got, expected, group)
            if one_hot is not None:
                after, missing, by = one_hot
                feedback.append(f"{grad} differs from autograd's only at [range(n), Yb], each by {by}: the line "
                                f"`{missing}` is missing after line {after}")  # fmt: skip
                found = _line(run, stmt, grad, feedback, tensor_public(got - expected), end)
                return found | {"line": None, "end_line": None, "missing": {"after": after, "code": missing}}
            said = diagnose(bp, step, rule, grad, got, expected, slip)
            if end > i and said.startswith(f"{grad} is {n}× ") and not _divides_by_n(group):
                # the slip is a line (or a /n) that is not there: say where it goes, and blame no line that is there
                after = group[-1].end_lineno or group[-1].lineno
                span = f"lines {stmt.lineno}–{after}"
                missing = f"{grad} /= n"
                feedback += [said, f"no line divides {grad} by n ({span} make it): the line `{missing}` is missing "
                             f"after line {after}"]  # fmt: skip
                found = _line(run, stmt, grad, feedback, tensor_public(got - expected), end)
                return found | {"line": None, "end_line": None, "missing": {"after": after, "code": missing}}
            feedback.append(said)
        diff = tensor_public(got - expected)
    return _line(run, stmt, grad, feedback, diff, end)


def _line(
    run: _Run, stmt: ast.stmt, grad: str, feedback: list[str], diff: Any, upto: int | None = None
) -> dict[str, Any]:
    """The first wrong line (or the lines from it to statement `upto` that build the gradient together)."""
    last = run.statements[upto] if upto is not None else stmt
    end = last.end_lineno or last.lineno
    code = "\n".join(run.cell.text.split("\n")[stmt.lineno - 1 : end])
    return {"line": stmt.lineno, "end_line": end, "code": code, "name": grad, "feedback": feedback, "diff": diff,
            "missing": None}  # fmt: skip
