"""A backward rule written out for one entry: its declared code with that entry's numbers put in.

`dprobs = (1.0 / probs) * dlogprobs` at [3, 7] reads
    dprobs[3,7] = (1.0 / probs[3,7]) * dlogprobs[3,7]
                = (1.0 / 0.0412) * (-0.03125)
                = -0.7585
The code is the declaration's own text (the net's pack), parsed and evaluated here on the pass's tensors: no second
copy of any rule. A sum over a dimension shows its first terms and their count; a matrix product its inner sum;
a rule of several statements (an index assignment, a scatter-add) shows the entry after each statement.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.serialize import entry

SHOWN_TERMS = 3  # terms of a sum written out before "…"
SUM_LETTERS = {0: "i", 1: "j", 2: "e"}  # the index a sum over that dimension runs over
INNER = "k"  # a matrix product's inner index


class Unsupported(ValueError):
    """A construct the writer does not know: the caller falls back to the statement-by-statement trace."""


def num(x: float) -> str:
    """A number as the page prints it in a rule: four significant digits, no SI prefixes."""
    if isinstance(x, bool):
        return str(int(x))
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e6):
        return str(int(x))
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def _wrap(text: str) -> str:
    """Parentheses around a negative number or a compound term, where a product would misread it."""
    return f"({text})" if text.startswith("-") or " " in text else text


def _negative(text: str) -> str:
    """A negative number in parentheses where it is an operand: 0.5 * (-0.03), not 0.5 * -0.03."""
    return f"({text})" if text.startswith("-") and " " not in text else text


@dataclass
class Operand:
    """A tensor entry the written rule reads: the value, or the gradient `dname` (grad=True)."""

    tensor: str
    grad: bool
    index: list[int]
    value: float

    def public(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "grad": self.grad, "index": self.index, "value": self.value}


@dataclass
class Writer:
    """Writes an expression at one entry: symbols (`probs[3,7]`), numbers (`0.0412`) and the operands read."""

    scope: dict[str, Any]
    operands: list[Operand] = field(default_factory=list)

    def value(self, node: ast.expr) -> Any:
        return eval(compile(ast.Expression(node), "<rule>", "eval"), {"__builtins__": {}}, self.scope)  # noqa: S307

    @staticmethod
    def entry(t: torch.Tensor, index: list[int | str], out_rank: int) -> list[int | str]:
        """The entry of `t` that the output's entry reads under broadcasting (right-aligned, size-1 dims → 0)."""
        aligned = index[out_rank - t.dim() :] if t.dim() else []
        return [0 if size == 1 else i for size, i in zip(t.shape, aligned, strict=True)]

    def write(self, node: ast.expr, index: list[int | str], rank: int, record: bool = True) -> tuple[str, str]:
        """(symbols, numbers) of `node` at `index` (ints, or letters for an index a sum runs over)."""
        concrete = all(isinstance(i, int) for i in index)
        if isinstance(node, ast.Constant):
            return repr(node.value), num(node.value)
        if isinstance(node, ast.Name):
            v = self.scope[node.id]
            if not isinstance(v, torch.Tensor):
                return node.id, num(v)
            at = self.entry(v, index, rank)
            sym = node.id + ("[" + ",".join(str(i) for i in at) + "]" if at else "")
            if not concrete:
                return sym, sym
            x = entry(v, at)
            if record:
                grad = node.id.startswith("d") and node.id[1:] in self.scope
                self.operands.append(Operand(node.id[1:] if grad else node.id, grad, [int(i) for i in at], x))
            return sym, _wrap(num(x))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            s, n = self.write(node.operand, index, rank, record)
            return f"-{_wrap(s)}", f"-{_wrap(n)}"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            return self.matmul(node, index, rank, record)
        if isinstance(node, ast.BinOp):
            sign = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}.get(type(node.op))
            if sign is None:
                raise Unsupported(ast.unparse(node))
            ls, ln = self.write(node.left, index, rank, record)
            rs, rn = self.write(node.right, index, rank, record)
            lp, rp = _inner(node, node.left, "left"), _inner(node, node.right, "right")
            return (
                f"{_paren(ls, lp)} {sign} {_paren(rs, rp)}",
                f"{_paren(ln, lp, _negative)} {sign} {_paren(rn, rp, _negative)}",
            )
        if isinstance(node, ast.Attribute) and node.attr == "T":
            s, n = self.write(node.value, list(reversed(index)), rank, record)
            return s, n
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            return self.method(node, index, rank, record)
        # anything else (F.one_hot(...), a function of torch): its evaluated tensor at the entry
        return self.evaluated(node, index, rank)

    def evaluated(self, node: ast.expr, index: list[int | str], rank: int) -> tuple[str, str]:
        t = self.value(node)
        if not isinstance(t, torch.Tensor):
            raise Unsupported(ast.unparse(node))
        at = self.entry(t, index, rank)
        sym = f"({ast.unparse(node)})" + ("[" + ",".join(str(i) for i in at) + "]" if at else "")
        if not all(isinstance(i, int) for i in at):
            return sym, sym
        return sym, _wrap(num(float(t[tuple(at)] if at else t)))

    def method(self, node: ast.Call, index: list[int | str], rank: int, record: bool) -> tuple[str, str]:
        name, base = node.func.attr, node.func.value  # type: ignore[attr-defined]
        if name == "clone" and not node.args:
            return self.write(base, index, rank, record)
        if name in ("exp", "log") and not node.args:
            s, n = self.write(base, index, rank, record)
            return f"{name}({s})", f"{name}({n})"
        if name == "sum":
            return self.reduction(node, base, index, rank, record)
        if name == "view":
            return self.view(node, base, index, rank, record)
        if isinstance(base, ast.Name) and base.id == "torch" and name == "ones_like":
            return "1", "1"
        if isinstance(base, ast.Name) and base.id == "torch" and name == "tanh":
            s, n = self.write(node.args[0], index, rank, record)
            return f"tanh({s})", f"tanh({n})"
        return self.evaluated(node, index, rank)

    def reduction(self, node: ast.Call, base: ast.expr, index: list[int | str], rank: int, record: bool):
        """x.sum(d) or x.sum(d, keepdim=True) at an entry: the sum over d of x's entries along it."""
        if len(node.args) != 1 or not isinstance(node.args[0], ast.Constant):
            raise Unsupported(ast.unparse(node))
        dim = int(node.args[0].value)
        inner = self.value(base)
        keep = any(k.arg == "keepdim" and getattr(k.value, "value", False) for k in node.keywords)
        out = self.value(node)
        # the inner's index: the output's entry for the kept dims, the letter for the summed one
        at = self.entry(out, index, rank)
        if not keep:
            at.insert(dim, 0)
        letter = SUM_LETTERS.get(dim, "m")
        inner_index: list[int | str] = [letter if d == dim else i for d, i in enumerate(at)]
        inner_rank = inner.dim()
        sym, _ = self.write(base, inner_index, inner_rank, record=False)
        size = inner.shape[dim]
        terms = []
        for v in range(min(size, SHOWN_TERMS)):
            concrete = [v if d == dim else i for d, i in enumerate(at)]
            if all(isinstance(i, int) for i in concrete):
                terms.append(self.write(base, concrete, inner_rank, record)[1])
        more = f" + … ({size} terms)" if size > SHOWN_TERMS else ""
        numbers = " + ".join(terms) + more if terms else sym
        return f"Σ_{letter} {_paren(sym, ' ' in sym)}", f"({numbers})"

    def matmul(self, node: ast.BinOp, index: list[int | str], rank: int, record: bool) -> tuple[str, str]:
        """A @ B at [r, c]: the sum over the inner index of A[r, k] * B[k, c]."""
        a, b = self.value(node.left), self.value(node.right)
        if a.dim() != 2 or b.dim() != 2 or len(index) != 2:
            raise Unsupported(ast.unparse(node))
        r, c = index
        ls, _ = self.write(node.left, [r, INNER], 2, record=False)
        rs, _ = self.write(node.right, [INNER, c], 2, record=False)
        terms = []
        for k in range(min(a.shape[1], SHOWN_TERMS)):
            if isinstance(r, int) and isinstance(c, int):
                terms.append(
                    f"{self.write(node.left, [r, k], 2, record)[1]}·{self.write(node.right, [k, c], 2, record)[1]}"
                )
        more = f" + … ({a.shape[1]} terms)" if a.shape[1] > SHOWN_TERMS else ""
        return f"Σ_{INNER} {ls}·{rs}", "(" + " + ".join(terms) + more + ")"

    def view(self, node: ast.Call, base: ast.expr, index: list[int | str], rank: int, record: bool):
        """x.view(shape) at an entry: the entry of x at the same position in memory order."""
        out, src = self.value(node), self.value(base)
        if not all(isinstance(i, int) for i in index) or out.dim() != len(index):
            raise Unsupported(ast.unparse(node))
        flat = 0
        for size, i in zip(out.shape, index, strict=True):
            flat = flat * size + int(i)
        at = []
        for size in reversed(src.shape):
            at.append(flat % size)
            flat //= size
        return self.write(base, list(reversed(at)), src.dim(), record)


PRECEDENCE = {ast.Add: 1, ast.Sub: 1, ast.Mult: 2, ast.Div: 2, ast.MatMult: 2, ast.Pow: 4}


def _precedence(node: ast.expr) -> int:
    if isinstance(node, ast.BinOp):
        return PRECEDENCE.get(type(node.op), 0)
    return 3 if isinstance(node, ast.UnaryOp) else 5


def _inner(parent: ast.BinOp, child: ast.expr, side: str) -> bool:
    """Whether `child` needs parentheses as the `side` operand of `parent`, as Python reads it."""
    p, c = _precedence(parent), _precedence(child)
    if isinstance(parent.op, ast.Pow):
        return c <= p if side == "left" else c < 3
    if c < p:
        return True
    # same precedence: as Python needs it on the right of - and /, and for reading where the operators differ
    return c == p and (
        side == "right" and isinstance(parent.op, ast.Sub | ast.Div) or type(child.op) is not type(parent.op)
    )  # type: ignore[attr-defined]


def _paren(text: str, needed: bool, otherwise=lambda t: t) -> str:
    return f"({text})" if needed else otherwise(text)


def write_rule(code: str, target: str, scope: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """The rule `code` (which assigns d`target`) written out at `index`: lines, operands read, the entry's value."""
    tree = ast.parse(code)
    grad = f"d{target}"
    where = "[" + ",".join(str(i) for i in index) + "]"
    single = len(tree.body) == 1 and isinstance(tree.body[0], ast.Assign | ast.AugAssign)
    if single:
        stmt = tree.body[0]
        aim = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
        if isinstance(aim, ast.Name) and aim.id == grad:
            writer = Writer(dict(scope))
            out = writer.value(stmt.value)
            try:
                sym, numbers = writer.write(stmt.value, list(index), len(index))
            except (Unsupported, KeyError, IndexError, TypeError):
                pass
            else:
                at = Writer.entry(out, list(index), len(index))
                value = entry(out, at)
                op = "+=" if isinstance(stmt, ast.AugAssign) else "="
                lines = [f"{grad}{where} {op} {sym}", f"= {numbers}", f"= {num(value)}"]
                return {"lines": lines, "operands": [o.public() for o in writer.operands], "value": value}
    return _trace(tree, grad, scope, index)


def _trace(tree: ast.Module, grad: str, scope: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """A rule of several statements: the entry after each one (the statements run on copies of the tensors)."""
    local = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in scope.items()}
    local.pop(grad, None)
    if isinstance(tree.body[0], ast.AugAssign) and isinstance(local.get(grad[1:]), torch.Tensor):
        # a `+=` line alone: the contribution, added to nothing (zeros of the node's shape)
        local[grad] = torch.zeros_like(local[grad[1:]])
    where = "[" + ",".join(str(i) for i in index) + "]"
    lines, value = [], None
    for stmt in tree.body:
        exec(compile(ast.Module([stmt], []), "<rule>", "exec"), {"__builtins__": {"range": range}}, local)  # noqa: S102
        t = local.get(grad)
        if isinstance(t, torch.Tensor):
            value = entry(t, index)
            lines.append(f"{ast.unparse(stmt)}   → {grad}{where} = {num(value)}")
        else:
            lines.append(ast.unparse(stmt))
    return {"lines": lines, "operands": [], "value": value}
