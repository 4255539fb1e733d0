"""A teacher's network file read into a Net: the lecture's forward cell, one op a line, its rules from the library.

The file is read with `ast` and never run: only its allowed forms are evaluated (numbers and sizes, the seeded
generator, `torch.randn` parameter lines, `parameters = [...]`, and forward lines that are one op of the library
each). Every line's shapes come from a dry run on the meta device; every generated rule is checked against
autograd in float64 before the Net is served. Anything else is a NetFileError naming the line and what to do.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from . import library as lib
from .declare import Cell, Init, Mode, Net, Node, Op, Warmup
from .forward import run_forward
from .library import Call, Operand, Unsupported

# the shape run's sizes: distinct, so that each dim of each line names its axis (7 * 13 = 91, the concatenation)
SHAPE_RUN = {"n": 97, "n_embd": 13, "n_hidden": 89, "block_size": 7, "vocab_size": 27}
AXIS_OF_SIZE = {97: "batch", 27: "vocab", 13: "embd", 89: "hidden", 7: "context", 91: "embcat", 1: "one"}
PARAM_AXES = ("vocab", "embd", "embcat", "hidden", "one")  # the axes a parameter's sizes come from (the config's)
VOCAB = 27  # the lecture's characters: the load check's indices
CHECK_RTOL, CHECK_ATOL = 1e-7, 1e-10  # float64: a right rule agrees with autograd to rounding
CHECK_SIZES = {"n": 32, "n_embd": 10, "n_hidden": 64, "block_size": 3}  # the load check's sizes, unless the file's
SIZE_NAMES = ("n", "batch_size", "n_embd", "n_hidden", "block_size", "vocab_size")
SUPPORTED = (
    "C[Xb], .view/.reshape, .T/.transpose, @, + - * / ** (with broadcasting), -x, exp, log, tanh, relu, sigmoid, "
    "sqrt, sum/mean/max/var over dims, softmax, log_softmax, masked_fill, torch.cat, F.cross_entropy"
)


class NetFileError(ValueError):
    """A line the server cannot turn into a network: its number, what is wrong and what to do."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass
class _Line:
    """A forward line: its output, its library call, where it is in the file."""

    out: str
    call: Call
    lineno: int
    source: str
    comment: str


class _Reader:
    """Reads one file's statements in order (see the module's docstring for what it accepts)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.constants: dict[str, float] = {}  # the file's numbers by name (sizes, eps, ...)
        self.constant_lines: dict[str, int] = {}  # each number's line
        self.reads: dict[str, set[str]] = {}  # the names each number's expression reads
        self.generator: str | None = None
        self.generator_line = 1
        self.seed: int | None = None
        self.params: dict[str, tuple[int, tuple[ast.expr, ...], ast.expr, str, str]] = {}  # name -> its line's parts
        self.listed: list[str] | None = None
        self.lines: list[_Line] = []
        self.tensors: set[str] = {"Xb", "Yb"}
        # constant tensors made from the sizes (a causal mask's tril): no parameter, no gradient -> line, its maker
        self.buffers: dict[str, tuple[int, Callable[[Any, torch.Tensor], torch.Tensor]]] = {}
        self.buffer_lines: dict[str, str] = {}  # each buffer's line as written: the export's forward writes it
        self.comments = _comments(source)
        self.doc = ""
        self.vocab: dict[str, tuple[str, int]] = {}  # "at": a parameter with a vocab axis and its dim (vocab_size)

    # --- constants: numbers, sizes, x.shape[k] --------------------------------------------------------------

    def const(self, node: ast.expr, lineno: int) -> Operand:
        """A constant expression as an Operand whose value is computed from the sizes of the pass."""
        self._check_const(node, lineno)
        text = ast.get_source_segment(self.source, node) or ast.unparse(node)
        constants, vocab = dict(self.constants), self.vocab

        def value(v: Any) -> Any:
            return _eval(node, _env(v, constants, vocab))

        return Operand(text, node=False, grad=False, value=value)

    def is_const(self, node: ast.expr) -> bool:
        """Whether an expression is a number: numbers, names of numbers, arithmetic, x.shape[k], float('inf')."""
        if isinstance(node, ast.Constant):
            return isinstance(node.value, int | float) and not isinstance(node.value, bool)
        if isinstance(node, ast.Name):
            return node.id not in self.tensors and node.id not in self.buffers and node.id not in ("torch", "F")
        if isinstance(node, ast.BinOp):
            return type(node.op) in _ARITH and self.is_const(node.left) and self.is_const(node.right)
        if isinstance(node, ast.UnaryOp):
            return isinstance(node.op, ast.USub | ast.UAdd) and self.is_const(node.operand)
        if _is_shape(node):
            return node.value.value.id in self.tensors  # type: ignore[attr-defined]
        return _is_float_call(node)

    def _check_const(self, node: ast.expr, lineno: int, also: tuple[str, ...] = ()) -> None:
        if not self.is_const(node):
            raise NetFileError(lineno, f"{ast.unparse(node)} is not a number or a size")
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and sub.id not in (*SIZE_NAMES, *self.constants, *also, "float"):
                if not any(_is_shape(s) and s.value.value is sub for s in ast.walk(node)):  # type: ignore[attr-defined]
                    raise NetFileError(
                        lineno, f"{sub.id} is not defined above: define it (a number or a tensor) on a line before"
                    )

    # --- statements ---------------------------------------------------------------------------------------------

    def read(self) -> None:
        try:
            tree = ast.parse(self.source)
        except SyntaxError as e:
            raise NetFileError(e.lineno or 1, f"not Python: {e.msg}; fix the syntax and start again") from None
        body = tree.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            self.doc = str(body[0].value.value).strip()
            body = body[1:]
        for stmt in body:
            self._statement(stmt)

    def _statement(self, stmt: ast.stmt) -> None:
        n = stmt.lineno
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            names = {a.name for a in stmt.names}
            if getattr(stmt, "module", None) not in (None, "torch.nn", "torch") or not names <= _IMPORTS:
                raise NetFileError(n, "only `import torch` and `import torch.nn.functional as F` are read")
            return
        if _bookkeeping(stmt):
            return
        if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1 or not isinstance(stmt.targets[0], ast.Name):
            raise NetFileError(
                n,
                "not a line the server reads: one name = one expression (sizes, the generator, parameters, "
                "parameters = [...], then the forward pass, one op a line)",
            )
        name, value = stmt.targets[0].id, stmt.value
        if name in self.tensors or name in self.params or name in self.constants or name in self.buffers:
            raise NetFileError(n, f"{name} is assigned twice: give each line's result a new name")
        if _is_generator(value):
            self.generator, self.generator_line = name, n
            try:
                self.seed = int(_eval(value.args[0], self.constants))  # type: ignore[attr-defined]
            except (KeyError, TypeError, ValueError) as e:
                raise NetFileError(n, f"the generator's seed is not a number ({e})") from None
            return
        if any(_is_randn(sub) for sub in ast.walk(value)):
            self._param(name, value, n)
            return
        if _is_buffer(value):
            self._buffer(name, value, n)
            self.buffer_lines[name] = ast.get_source_segment(self.source, stmt) or f"{name} = {ast.unparse(value)}"
            return
        if (maker := _made_from_nothing(value)) is not None:
            sizes = ", ".join(ast.unparse(a) for a in value.args)  # type: ignore[attr-defined]
            raise NetFileError(
                n,
                f"{name} = {maker}(...) is not read: a parameter is one torch.randn(...) draw, scaled and shifted by "
                f"numbers; for one that starts at 0 write {name} = torch.randn({sizes}) * 0.0 (+ 1.0 for ones), "
                "a draw of its own that leaves the generator's sequence as it was",
            )
        if name == "parameters":
            if not isinstance(value, ast.List) or not all(isinstance(e, ast.Name) for e in value.elts):
                raise NetFileError(n, "parameters = [...] lists the parameters by name")
            self.listed = [e.id for e in value.elts]  # type: ignore[attr-defined]
            return
        if self.lines and self.is_const(value):
            raise NetFileError(n, f"{name} is a number: define the numbers above the parameters")
        if self.is_const(value):
            try:
                self.constants[name] = _eval(value, {**self.constants})
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
                raise NetFileError(n, f"{name} is not a number the server can compute ({e})") from None
            self.constant_lines[name] = n
            self.reads[name] = {sub.id for sub in ast.walk(value) if isinstance(sub, ast.Name)}
            return
        if self.listed is None and self.params:
            raise NetFileError(n, "list the parameters (parameters = [...]) before the forward pass")
        self._forward(name, value, n, ast.get_source_segment(self.source, stmt) or "")

    def _param(self, name: str, value: ast.expr, n: int) -> None:
        draws = [sub for sub in ast.walk(value) if _is_randn(sub)]
        if len(draws) != 1:
            raise NetFileError(n, "a parameter is one torch.randn(...) draw, scaled and shifted by numbers")
        draw = draws[0]
        assert isinstance(draw, ast.Call)
        shape = (
            tuple(draw.args[0].elts)
            if len(draw.args) == 1 and isinstance(draw.args[0], ast.Tuple)
            else tuple(draw.args)
        )
        gen = next((k.value for k in draw.keywords if k.arg == "generator"), None)
        if gen is not None and not (isinstance(gen, ast.Name) and gen.id == self.generator):
            raise NetFileError(n, "draw parameters with the file's generator (generator=g) or with none")
        for dim in shape:
            self._check_const(dim, n)
        # the draw is a name in the scaling expression, evaluated with the axis sizes (Init.scale)
        scaled = _Draw().visit(ast.parse(ast.unparse(value), mode="eval").body)
        self._check_scale(scaled, n)
        code = ast.get_source_segment(self.source, value) or ast.unparse(value)
        self.params[name] = (n, shape, scaled, "seeded" if gen is not None else "fresh", f"{name} = {code}")
        self.tensors.add(name)

    def _check_scale(self, node: ast.expr, n: int) -> None:
        if not self.is_const(node):
            raise NetFileError(n, f"{ast.unparse(node)}: a parameter's draw is scaled and shifted by numbers only")
        self._check_const(node, n, also=(DRAW,))

    def _buffer(self, name: str, value: ast.expr, n: int) -> None:
        """`tril = torch.tril(torch.ones(block_size, block_size))`: a constant of the sizes, made in each pass."""
        assert isinstance(value, ast.Call) and isinstance(value.args[0], ast.Call)
        ones = value.args[0]
        dims = ones.args[0].elts if len(ones.args) == 1 and isinstance(ones.args[0], ast.Tuple) else ones.args
        if len(dims) != 2 or ones.keywords or value.keywords or len(value.args) != 1:
            raise NetFileError(n, "a buffer is torch.tril(torch.ones(block_size, block_size)): two sizes, no options")
        rows, cols = (self.const(d, n) for d in dims)

        def make(v: Any, like: torch.Tensor) -> torch.Tensor:
            shape = (int(rows.get(v)), int(cols.get(v)))
            return torch.tril(torch.ones(shape, dtype=like.dtype, device=like.device))

        self.buffers[name] = (n, make)

    # --- forward lines ----------------------------------------------------------------------------------------

    def _forward(self, name: str, value: ast.expr, n: int, source: str) -> None:
        try:
            call = self._call(value, n)
        except NetFileError:
            picked = next((sub for sub in ast.walk(value) if _picks_targets(sub)), None)
            if picked is None:
                raise
            raise NetFileError(  # a line of its own would be refused too: say the loss line's form
                n,
                f"{ast.unparse(picked)} is read in the loss line only, as the lecture writes it: "
                "loss = -logprobs[range(n), Yb].mean(), or loss = F.cross_entropy(logits, Yb)",
            ) from None
        self.lines.append(_Line(name, call, n, source, self.comments.get(n, "")))
        self.tensors.add(name)

    def _tensor(self, node: ast.expr, n: int) -> Operand:
        if not isinstance(node, ast.Name):
            raise NetFileError(
                n, f"{ast.unparse(node)} is an op of its own: one op a line, give it a name on a line above"
            )
        if node.id in self.buffers:
            raise NetFileError(
                n, f"{node.id} is a constant buffer: it masks (x.masked_fill({node.id} == 0, float('-inf'))), no more"
            )
        if node.id not in self.tensors:
            raise NetFileError(n, f"{node.id} is not a tensor defined above")
        return Operand(node.id, grad=node.id not in ("Xb", "Yb"))

    def _operand(self, node: ast.expr, n: int) -> Operand:
        """A tensor by name, or a constant."""
        if isinstance(node, ast.Name) and node.id in self.tensors:
            return self._tensor(node, n)
        if self.is_const(node):
            return self.const(node, n)
        return self._tensor(node, n)  # raises: an op inside the line

    def _call(self, value: ast.expr, n: int) -> Call:  # noqa: C901 -- one branch per form of the library
        v = value
        if isinstance(v, ast.Subscript) and isinstance(v.value, ast.Name) and isinstance(v.slice, ast.Name):
            return Call("index", (self._tensor(v.value, n), replace(self._tensor(v.slice, n), grad=False)))
        if isinstance(v, ast.UnaryOp) and isinstance(v.op, ast.USub):
            inner = v.operand
            nll = _nll_parts(inner)
            if nll is not None:
                return Call("nll", (self._tensor(nll[0], n), replace(self._tensor(nll[1], n), grad=False)))
            return Call("neg", (self._tensor(inner, n),))
        if isinstance(v, ast.BinOp):
            left, right = v.left, v.right
            if isinstance(v.op, ast.Add) and isinstance(left, ast.BinOp) and isinstance(left.op, ast.MatMult):
                return Call("linear", (self._tensor(left.left, n), self._tensor(left.right, n), self._tensor(right, n)))
            if (
                isinstance(v.op, ast.Add)
                and isinstance(left, ast.BinOp)
                and isinstance(left.op, ast.Mult)
                and all(isinstance(x, ast.Name) and x.id in self.tensors for x in (left.left, left.right, right))
            ):
                return Call("affine", (self._tensor(left.left, n), self._tensor(left.right, n), self._tensor(right, n)))
            if (
                isinstance(v.op, ast.Pow)
                and isinstance(left, ast.BinOp)
                and isinstance(left.op, ast.Add)
                and self.is_const(left.right)
                and self.is_const(right)
            ):
                return Call(
                    "shifted_pow", (self._tensor(left.left, n), self.const(left.right, n), self.const(right, n))
                )
            if isinstance(v.op, ast.Mult) and (scaled := self._scaled_reduction(left, right, n)) is not None:
                return scaled
            kind = _BINOPS.get(type(v.op))
            if kind is None:
                raise NetFileError(n, f"the operator in {ast.unparse(v)} has no rule: the ops are {SUPPORTED}")
            a, b = self._operand(left, n), self._operand(right, n)
            if not a.node and not b.node:
                raise NetFileError(n, "a line of numbers only: define it with the sizes, above the parameters")
            if kind == "matmul" and not (a.node and b.node):
                raise NetFileError(n, "@ multiplies two tensors")
            if kind == "pow" and b.node:
                raise NetFileError(n, "a tensor as an exponent has no rule here: write the power as a number")
            return Call(kind, (a, b))
        if isinstance(v, ast.Attribute) and v.attr == "T":
            return Call("transpose", (self._tensor(v.value, n),), dim=(0, 1), extra={"T": True})
        if isinstance(v, ast.Attribute) and v.attr == "values" and isinstance(v.value, ast.Call):
            inner = v.value
            if isinstance(inner.func, ast.Attribute) and inner.func.attr == "max":
                return self._reduction("max", self._tensor(inner.func.value, n), inner, n)
        if isinstance(v, ast.Call):
            return self._method_or_function(v, n)
        raise NetFileError(n, f"{ast.unparse(v)} is not an op the server has a rule for: the ops are {SUPPORTED}")

    def _scaled_reduction(self, left: ast.expr, right: ast.expr, n: int) -> Call | None:
        for c, r in ((left, right), (right, left)):
            if (
                self.is_const(c)
                and isinstance(r, ast.Call)
                and isinstance(r.func, ast.Attribute)
                and r.func.attr in ("sum", "mean")
            ):
                call = self._reduction(r.func.attr, self._tensor(r.func.value, n), r, n)
                return replace(call, scale=self.const(c, n))
        return None

    def _method_or_function(self, v: ast.Call, n: int) -> Call:
        f = v.func
        if not isinstance(f, ast.Attribute):
            raise NetFileError(n, f"{ast.unparse(v)}: call torch's functions as torch.x / F.x, or a tensor's methods")
        owner = f.value.id if isinstance(f.value, ast.Name) else None
        if owner in ("torch", "F"):
            name = f.attr
            if name in lib.UNARY and len(v.args) == 1:
                return Call(name, (self._tensor(v.args[0], n),))
            if name in ("softmax", "log_softmax"):
                return Call(name, (self._tensor(v.args[0], n),), dim=self._dim(v, n, position=1))
            if name == "cat":
                if not v.args or not isinstance(v.args[0], ast.List | ast.Tuple):
                    raise NetFileError(n, "torch.cat([a, b], dim): the tensors in a list")
                parts = tuple(self._tensor(e, n) for e in v.args[0].elts)
                return Call("cat", parts, dim=self._dim(v, n, position=1))
            if name == "cross_entropy" and owner == "F" and len(v.args) == 2:
                return Call(
                    "cross_entropy", (self._tensor(v.args[0], n), replace(self._tensor(v.args[1], n), grad=False))
                )
            if name in ("sum", "mean", "var", "max") and v.args:
                call = ast.Call(ast.Attribute(v.args[0], name), v.args[1:], v.keywords)
                return self._reduction(name, self._tensor(v.args[0], n), call, n)
            raise NetFileError(n, f"{owner}.{name} has no rule here: the ops are {SUPPORTED}")
        x = self._tensor(f.value, n)
        name = f.attr
        if name in lib.UNARY and not v.args:
            return Call(name, (x,))
        if name in ("view", "reshape"):
            dims = v.args[0].elts if len(v.args) == 1 and isinstance(v.args[0], ast.Tuple) else v.args
            return Call(name, (x,), sizes=tuple(self.const(d, n) for d in dims))
        if name == "transpose" and len(v.args) == 2:
            return Call("transpose", (x,), dim=(int(_literal(v.args[0], n)), int(_literal(v.args[1], n))))
        if name in ("softmax", "log_softmax"):
            return Call(name, (x,), dim=self._dim(v, n, position=0))
        if name in ("sum", "mean", "var"):
            return self._reduction(name, x, v, n)
        if name == "max":
            raise NetFileError(n, "x.max(dim, keepdim=True).values: the values, as the lecture takes them")
        if name == "masked_fill" and len(v.args) == 2:
            return self._masked_fill(x, v.args[0], v.args[1], n)
        raise NetFileError(n, f".{name}(...) has no rule here: the ops are {SUPPORTED}")

    def _dim(self, v: ast.Call, n: int, position: int) -> int:
        kw = next((k.value for k in v.keywords if k.arg == "dim"), None)
        node = kw if kw is not None else (v.args[position] if len(v.args) > position else None)
        if node is None:
            raise NetFileError(n, "say the dim (dim=1)")
        return int(_literal(node, n))

    def _reduction(self, kind: str, x: Operand, v: ast.Call, n: int) -> Call:
        kw = {k.arg: k.value for k in v.keywords}
        dim_node = kw.get("dim", v.args[0] if v.args else None)
        dim: int | tuple[int, ...] | None = None
        if dim_node is not None:
            lit = _literal(dim_node, n)
            dim = tuple(int(d) for d in lit) if isinstance(lit, tuple) else int(lit)
        keep = kw.get("keepdim", kw.get("keepdims", v.args[1] if len(v.args) > 1 else None))
        keepdim = bool(_literal(keep, n)) if keep is not None else False
        correction = 1
        if "unbiased" in kw:
            correction = 1 if _literal(kw["unbiased"], n) else 0
        if "correction" in kw:
            correction = int(_literal(kw["correction"], n))
        if kind == "max" and not isinstance(dim, int):
            raise NetFileError(n, "x.max(dim, keepdim=True).values: the max over one dim")
        return Call(kind, (x,), dim=dim, keepdim=keepdim, correction=correction)

    def _masked_fill(self, x: Operand, mask: ast.expr, fill: ast.expr, n: int) -> Call:
        if not (
            isinstance(mask, ast.Compare)
            and len(mask.ops) == 1
            and isinstance(mask.left, ast.Name)
            and (mask.left.id in self.tensors or mask.left.id in self.buffers)
            and self.is_const(mask.comparators[0])
        ):
            raise NetFileError(n, "masked_fill's mask is a tensor compared with a number (mask == 0)")
        ref = mask.left.id
        value = self.const(mask.comparators[0], n)
        compare = _COMPARE.get(type(mask.ops[0]))
        assert compare is not None
        text = ast.get_source_segment(self.source, mask) or ast.unparse(mask)
        if ref in self.buffers:
            make = self.buffers[ref][1]
            return Call(
                "masked_fill",
                (x, self.const(fill, n)),
                mask=lambda v: compare(make(v, x.get(v)), value.get(v)),
                mask_text=text,
                extra={"buffer": ref, "make": make},
            )
        return Call(
            "masked_fill",
            (x, self.const(fill, n)),
            mask=lambda v: compare(getattr(v, ref), value.get(v)),
            mask_text=text,
            extra={"mask_of": ref},
        )


_IMPORTS = {"torch", "torch.nn.functional", "functional", "math"}  # import torch, torch.nn.functional as F
_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow", ast.MatMult: "matmul"}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Pow: lambda a, b: a**b,
}
DRAW = "__draw__"  # the standard normal draw, by name in a parameter's scaling expression


class _Draw(ast.NodeTransformer):
    """torch.randn(...) replaced by a name: the parameter line becomes a function of the draw and the sizes."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        return ast.Name(DRAW, ast.Load()) if _is_randn(node) else self.generic_visit(node)


def _eval(node: ast.expr, env: Mapping[str, Any]) -> Any:
    """The value of a constant expression: numbers, names, arithmetic, x.shape[k] and float('inf')."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise KeyError(node.id)
        return env[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        return _ARITH[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        x = _eval(node.operand, env)
        return -x if isinstance(node.op, ast.USub) else x
    if _is_shape(node):
        assert isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
        tensor = env[SHAPES][node.value.value.id]  # type: ignore[attr-defined]
        return tensor.shape[_eval(node.slice, env)]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "float"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and str(node.args[0].value).lstrip("+-") in ("inf", "nan")
    ):
        return float(node.args[0].value)
    raise ValueError(f"{ast.unparse(node)} is not a number")


SHAPES = "__tensors__"  # in an _eval environment: the tensors whose .shape[k] it may read


def _env(v: Any, constants: Mapping[str, float], vocab: Mapping[str, tuple[str, int]]) -> dict[str, Any]:
    """The names a constant may read in a pass: the file's numbers, then the pass's sizes over them."""
    env: dict[str, Any] = dict(constants)
    values = vars(v)
    env["n"] = env["batch_size"] = values["n"]
    for key in ("n_embd", "n_hidden"):
        if key in values:
            env[key] = values[key]
    if "Xb" in values:
        env["block_size"] = values["Xb"].shape[1]
    if "at" in vocab:
        param, dim = vocab["at"]
        env["vocab_size"] = values[param].shape[dim]
    env[SHAPES] = values
    return env


def _is_shape(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "shape"
        and isinstance(node.value.value, ast.Name)
        and isinstance(node.slice, ast.Constant)
    )


def _bookkeeping(stmt: ast.stmt) -> bool:
    """The notebook's lines around the forward that the server does itself: the minibatch's draw (Xb, Yb), the
    parameters' requires_grad and grad = None, retain_grad(), loss.backward(), and a value shown (`loss`, print)."""
    if isinstance(stmt, ast.For) and isinstance(stmt.iter, ast.Name | ast.List):
        return all(_bookkeeping(s) for s in stmt.body)
    if isinstance(stmt, ast.Assign):
        text = ast.unparse(stmt.targets[0])
        if text.endswith((".requires_grad", ".grad")) or text in ("Xb, Yb", "(Xb, Yb)"):
            return True
        return text == "ix" and isinstance(stmt.value, ast.Call) and ast.unparse(stmt.value.func) == "torch.randint"
    if isinstance(stmt, ast.Expr):
        value = stmt.value
        if isinstance(value, ast.Name):
            return True
        if isinstance(value, ast.Call):
            func = ast.unparse(value.func)
            return func == "print" or func.endswith((".backward", ".retain_grad"))
    return False


def _is_float_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float"


def _literal(node: ast.expr, n: int) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise NetFileError(n, f"{ast.unparse(node)}: write the dim as a number (or True/False)") from None


def _is_randn(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.randn"


_MAKERS = frozenset({"zeros", "ones", "full", "empty", "rand", "tensor", "zeros_like", "ones_like", "eye", "arange"})


def _made_from_nothing(node: ast.expr) -> str | None:
    """`torch.zeros(...)` and kin: the function's name, for a parameter line that is not a randn draw."""
    if isinstance(node, ast.Call) and ast.unparse(node.func) in {f"torch.{m}" for m in _MAKERS}:
        return ast.unparse(node.func)
    return None


def _is_buffer(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and ast.unparse(node.func) == "torch.tril"
        and bool(node.args)
        and isinstance(node.args[0], ast.Call)
        and ast.unparse(node.args[0].func) == "torch.ones"
    )


def _is_generator(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "manual_seed"
        and ast.unparse(node.func.value) == "torch.Generator()"
        and len(node.args) == 1
    )


def _picks_targets(node: ast.AST) -> bool:
    """`x[range(n), Yb]`: the targets' entries picked from each row, a part of the lecture's loss line."""
    return (
        isinstance(node, ast.Subscript)
        and isinstance(node.slice, ast.Tuple)
        and any(isinstance(e, ast.Call) and ast.unparse(e.func) == "range" for e in node.slice.elts)
    )


def _nll_parts(node: ast.expr) -> tuple[ast.expr, ast.expr] | None:
    """`x[range(n), Yb].mean()` -> (x, Yb): the lecture's negative log-likelihood line, after its minus."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "mean"):
        return None
    sub = node.func.value
    if not (isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Tuple) and len(sub.slice.elts) == 2):
        return None
    rows, targets = sub.slice.elts
    if not (isinstance(rows, ast.Call) and ast.unparse(rows.func) == "range"):
        return None
    return sub.value, targets


def _comments(source: str) -> dict[int, str]:
    """Each line's trailing comment (the node's line for the learner)."""
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


# --- from the lines to the Net --------------------------------------------------------------------------------


def _axes(shape: tuple[int, ...]) -> tuple[str, ...]:
    """Each dim's meaning, read off the shape run's distinct sizes (a size of none of them: 'one', plain indices)."""
    return tuple(AXIS_OF_SIZE.get(s, "one") for s in shape)


def _shape_run(reader: _Reader) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Every tensor's shape from a dry run on the meta device, and each parameter's shape in axis sizes."""
    sizes = SHAPE_RUN
    env = {**reader.constants, **sizes, "batch_size": sizes["n"]}
    values: dict[str, Any] = {
        "Xb": torch.zeros((sizes["n"], sizes["block_size"]), dtype=torch.long, device="meta"),
        "Yb": torch.zeros((sizes["n"],), dtype=torch.long, device="meta"),
        "n": sizes["n"],
        "n_embd": sizes["n_embd"],
        "n_hidden": sizes["n_hidden"],
        "vocab_size": sizes["vocab_size"],
    }
    for name, (lineno, shape, *_) in reader.params.items():
        try:
            dims = tuple(int(_eval(d, env)) for d in shape)
        except (KeyError, ValueError, TypeError) as e:
            raise NetFileError(lineno, f"{name}'s shape is not sizes the server knows ({e})") from None
        if any(AXIS_OF_SIZE.get(d) not in PARAM_AXES for d in dims):
            raise NetFileError(
                lineno,
                f"{name}'s shape: a parameter's sizes are vocab_size, n_embd, n_embd*block_size, n_hidden or 1 "
                "(the explorer's size controls set them)",
            )
        values[name] = torch.zeros(dims, device="meta")
    at = next(
        (
            (p, axes.index("vocab"))
            for p, t in values.items()
            if isinstance(t, torch.Tensor) and p in reader.params and "vocab" in (axes := _axes(tuple(t.shape)))
        ),
        None,
    )
    if at is not None:
        reader.vocab["at"] = at
    ns = SimpleNamespace(**values)
    shapes = {k: tuple(t.shape) for k, t in values.items() if isinstance(t, torch.Tensor)}
    for line in reader.lines:
        try:
            out = lib.forward(line.call)(ns)
        except (RuntimeError, IndexError, ValueError, TypeError, KeyError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise NetFileError(
                line.lineno,
                f"the shapes do not fit ({why}); write sizes by name (n, n_embd, n_hidden, block_size, vocab_size), "
                "not as numbers",
            ) from None
        setattr(ns, line.out, out)
        shapes[line.out] = tuple(out.shape)
    return shapes, {k: shapes[k] for k in reader.params}


def _rows(call: Call, axes: Mapping[str, tuple[str, ...]], out: str) -> str:
    """How the op treats batch rows (Op.rows): 'each' only where it plainly keeps them apart."""
    if call.kind in ("cross_entropy", "nll"):
        return "mean"
    if axes[out][:1] != ("batch",):
        return "mixed"
    batch_inputs = [a for a in call.args if a.node and axes[a.text][:1] == ("batch",)]
    if not batch_inputs:
        return "mixed"
    if call.kind in ("sum", "mean", "max", "var"):
        dims = lib._norm_dims(call.dim, len(axes[call.args[0].text]))
        return "mixed" if 0 in dims else "each"
    if call.kind in ("softmax", "log_softmax", "cat"):
        return "mixed" if call.dim in (0, -len(axes[out])) else "each"
    if call.kind == "transpose":
        return "mixed" if 0 in [d % len(axes[out]) for d in call.dim] else "each"  # type: ignore[union-attr]
    if call.kind == "matmul" and axes[call.args[0].text][:1] != ("batch",):
        return "mixed"
    if call.kind == "masked_fill" and "mask_of" in call.extra and axes[call.extra["mask_of"]][:1] != ("batch",):
        return "mixed"
    return "each"


# what training reads off an op's kernel (server/training/loop.py): the embedding and the view are not plotted, tanh
# outputs are sampled for saturation, and the loss's input is what losses and sampling read as logits. The lecture's
# `-logprobs[range(n), Yb].mean()` is the cross-entropy of log-probabilities (log_softmax leaves them as they are)
_KERNELS = {
    "index": "embedding",
    "view": "view",
    "reshape": "view",
    "tanh": "tanh",
    "cross_entropy": "cross_entropy",
    "nll": "cross_entropy",
}


def _saving_buffer(forward: Callable[[Any], Any], out: str, call: Call) -> Callable[[Any], Any]:
    """The op's forward, with the buffer its mask reads saved by name (as the attention pack saves tril)."""
    name, make, x = call.extra["buffer"], call.extra["make"], call.args[0]
    return lambda v: {out: forward(v), name: make(v, x.get(v))}


def _with_accumulation(ops: list[Op]) -> list[Op]:
    """`+=` in the code of a rule whose target already has a gradient from a later line (used more than once)."""
    seen: set[str] = set()
    fixed: dict[str, Op] = {}
    for op in reversed(ops):
        new_rules = []
        for rule in op.rules:
            t = rule.target
            if t in seen:
                code = rule.code
                if code.startswith(f"d{t} = torch.zeros_like({t})\n") and ".index_add_(" in code:
                    code = code.split("\n", 1)[1]  # the scatter-add goes into the gradient so far
                elif code.startswith(f"d{t} = ") and "\n" not in code:
                    code = f"d{t} += " + code[len(f"d{t} = ") :]
                rule = replace(rule, code=code)
            new_rules.append(rule)
        for rule in op.rules:
            seen.add(rule.target)
        fixed[op.name] = replace(op, rules=tuple(new_rules))
    return [fixed[op.name] for op in ops]


def _cmp_order(ops: list[Op]) -> tuple[str, ...]:
    """The order the backward completes each gradient: at the step of its first consumer in the forward."""
    remaining: dict[str, int] = {}
    for op in ops:
        for rule in op.rules:
            remaining[rule.target] = remaining.get(rule.target, 0) + 1
    order: list[str] = []
    for op in reversed(ops):
        for rule in op.rules:
            remaining[rule.target] -= 1
            if remaining[rule.target] == 0 and rule.target not in order:
                order.append(rule.target)
    return tuple(order)


# the file's sizes by name -> the config field the explorer's controls set them with
CONFIG_OF_SIZE = {"n_embd": "n_embd", "n_hidden": "n_hidden", "block_size": "block_size", "batch_size": "batch_size"}


def _explorer_bounds() -> Mapping[str, tuple[int, int]] | None:
    """The config's bounds (core/config.py); None in a process that reads the file while those are importing."""
    try:
        from ..core.config import BOUNDS  # late: core.config imports the packs, and they read the network file
    except ImportError:  # a spawned process, handed a file its server already checked at start
        return None
    return BOUNDS


def page_config(reader: _Reader) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """The page's defaults from the file's own numbers (its sizes and seed), and bounds pinning each size that
    another of its numbers was computed from (that number would not follow the size's control)."""
    sizes = {**CONFIG_OF_SIZE, "n": "batch_size"}
    named = {name: field for name, field in sizes.items() if name in reader.constants}
    if "batch_size" in named:
        named.pop("n", None)  # n = batch_size: the notebook's shorter name for the same size
    defaults: dict[str, int] = {}
    lines: dict[str, int] = {}
    for name, field in named.items():
        value = reader.constants[name]
        if value != int(value):
            raise NetFileError(reader.constant_lines[name], f"{name} = {value:g}: a size is a whole number")
        defaults[field], lines[field] = int(value), reader.constant_lines[name]
    if reader.seed is not None:
        defaults["seed"] = reader.seed
        lines["seed"] = reader.generator_line
    bounds = _explorer_bounds()
    for field, value in defaults.items():
        low, high = bounds[field] if bounds is not None else (value, value)
        if not low <= value <= high:
            raise NetFileError(
                lines[field],
                f"{field} is {value}: the explorer's {field} is between {low} and {high}: use one of those",
            )
    fixed = {
        sizes[read]
        for name, reads in reader.reads.items()
        if name not in sizes
        for read in reads
        if read in sizes and read in reader.constants
    }
    return defaults, {field: (defaults[field], defaults[field]) for field in sorted(fixed) if field in defaults}


def _init_for(reader: _Reader, name: str) -> Init:
    lineno, _, scaled, generator, code = reader.params[name]
    constants = dict(reader.constants)

    def scale(r: torch.Tensor, s: Mapping[str, int]) -> torch.Tensor:
        env: dict[str, Any] = {**constants, DRAW: r}
        env.update(vocab_size=s["vocab"], n_embd=s["embd"], n_hidden=s["hidden"], block_size=s["embcat"] // s["embd"])
        return _eval(scaled, env)

    return Init(code, scale, generator)


def build(source: str, name: str) -> Net:
    """The Net of a network file's text, every rule checked against autograd; NetFileError where it cannot."""
    reader = _Reader(source)
    reader.read()
    last = source.count("\n") + 1
    if not reader.params:
        raise NetFileError(last, "no parameter lines: W = torch.randn((n_hidden, vocab_size), generator=g) * 0.1")
    if reader.listed is None:
        raise NetFileError(last, "no parameters = [...] line: list the parameters after drawing them")
    missing = [p for p in reader.params if p not in reader.listed]
    extra = [p for p in reader.listed if p not in reader.params]
    if missing or extra:
        line = next(iter(reader.params.values()))[0]
        raise NetFileError(
            line, f"parameters = [...] must list exactly the parameters: missing {missing}, not parameters {extra}"
        )
    if not reader.lines or reader.lines[-1].out != "loss":
        at = reader.lines[-1].lineno if reader.lines else last
        raise NetFileError(at, "the forward pass must end in loss: its last line is loss = ... (a number)")
    final = reader.lines[-1]
    if final.call.kind not in ("cross_entropy", "nll") or final.call.args[1].text != "Yb":
        raise NetFileError(
            final.lineno,
            "the loss is loss = F.cross_entropy(logits, Yb) or loss = -logprobs[range(n), Yb].mean(): what training, "
            "evaluation and sampling read the predictions from",
        )
    defaults, bounds = page_config(reader)
    shapes, _ = _shape_run(reader)
    if shapes["loss"] != ():
        raise NetFileError(reader.lines[-1].lineno, f"loss has shape {shapes['loss']}: it must be one number")
    for line in reader.lines:
        if line.call.extra.get("T") and len(shapes[line.call.args[0].text]) != 2:
            raise NetFileError(line.lineno, ".T of a tensor that is not 2-D: write x.transpose(-2, -1)")
    axes = {k: _axes(s) for k, s in shapes.items()}
    axes["Xb"], axes["Yb"] = ("batch", "context"), ("batch",)
    used = {a.text for line in reader.lines for a in line.call.args if a.node}
    for p, (lineno, *_) in reader.params.items():
        if p not in used:
            raise NetFileError(lineno, f"{p} is never used in the forward pass: use it or leave it out")
    ops = []
    for line in reader.lines:
        call = replace(line.call, args=tuple(replace(a, shape=shapes[a.text]) if a.node else a for a in line.call.args))
        out = Operand(line.out, shapes[line.out])
        try:
            rules = lib.rules(call, out)
        except Unsupported as e:
            raise NetFileError(line.lineno, f"{e}") from None
        forward, saves, notebook = lib.forward(call), (), ""
        if "buffer" in call.extra:  # the buffer is saved beside the output: the learner's line masks with it too
            forward, saves = _saving_buffer(forward, line.out, call), (call.extra["buffer"],)
            notebook = f"{reader.buffer_lines[call.extra['buffer']]}\n{line.source}"  # a take-home file makes it
        ops.append(
            Op(
                line.out,
                tuple(a.text for a in call.args if a.node)
                + ((call.extra["mask_of"],) if "mask_of" in call.extra else ()),
                (line.out,),
                line.source,
                forward,
                rules,
                line.comment or f"{call.kind} ({line.source})",
                symbol=lib.SYMBOLS.get(call.kind, call.kind),
                rows=_rows(call, axes, line.out),
                kernel=_KERNELS.get(call.kind),
                saves=saves,
                notebook=notebook,
            )
        )
    ops = _with_accumulation(ops)
    nodes = [
        Node("Xb", "input", ("batch", "context"), "the minibatch of contexts: n rows of block_size character indices"),
        Node("Yb", "input", ("batch",), "the character that follows each context: the targets"),
    ]
    for p in reader.params:
        nodes.append(
            Node(
                p,
                "param",
                axes[p],
                reader.comments.get(reader.params[p][0], "") or f"parameter {p}",
                _init_for(reader, p),
            )
        )
    for line in reader.lines:
        kind = "loss" if line.out == "loss" else "intermediate"
        nodes.append(Node(line.out, kind, axes[line.out], line.comment or line.source))
    title = reader.doc.splitlines()[0] if reader.doc else f"{name} (a network file)"
    described = " ".join(reader.doc.split("\n", 1)[1].split()) if "\n" in reader.doc else ""  # the docstring's rest
    net = Net(
        name=name,
        title=title,
        about=(described or title) if reader.doc else f"the network of {name}.py, its rules from the library",
        nodes=tuple(nodes),
        ops=tuple(ops),
        modes=(Mode("atomic", "atomic", "backprop through every line of the file", frozenset()),),
        trained_mode="atomic",
        cmp_order=_cmp_order(ops),
        cells={
            "atomic": Cell("atomic backward", "the whole backward pass, line by line, from dloss to the parameters")
        },
        warmup=(Warmup("atomic", ops[-1].rules[0].target, ops[-1].rules[0].code),) if ops[-1].rules else (),
        defaults=defaults,
        bounds=bounds,
    )
    check(net, reader, shapes)
    return net


def check(net: Net, reader: _Reader, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Every generated rule against autograd in float64 at the file's sizes: a NetFileError at the first wrong one."""
    sizes = {k: int(reader.constants.get(k, d)) for k, d in CHECK_SIZES.items()}
    n = int(reader.constants.get("batch_size", reader.constants.get("n", sizes["n"])))
    g = torch.Generator().manual_seed(reader.seed if reader.seed is not None else 0)
    axis = {"vocab": VOCAB, "embd": sizes["n_embd"], "hidden": sizes["n_hidden"], "one": 1}
    axis["embcat"] = sizes["n_embd"] * sizes["block_size"]
    params = {}
    for node in net.params:
        assert node.init is not None
        draw = torch.randn(tuple(axis[a] for a in node.axes), generator=g)
        try:
            params[node.name] = node.init.scale(draw, axis).to(torch.float64).requires_grad_(True)
        except (KeyError, ValueError, TypeError, ZeroDivisionError) as e:
            raise NetFileError(reader.params[node.name][0], f"{node.name}'s scaling is not a number ({e})") from None
    Xb = torch.randint(0, VOCAB, (n, sizes["block_size"]), generator=g)
    Yb = torch.randint(0, VOCAB, (n,), generator=g)
    ops = net.ops_for_mode("atomic")
    start = {**params, "Xb": Xb, "Yb": Yb, "vocab_size": VOCAB, **net.sizes(params, n)}
    line_of = {line.out: line.lineno for line in reader.lines}
    values: dict[str, Any] = dict(start)
    for op in ops:  # line by line: a line that fails with real numbers is named
        try:
            values = run_forward([op], values)
        except (RuntimeError, IndexError, ValueError) as e:
            raise NetFileError(line_of[op.name], f"it fails at start-up ({str(e).splitlines()[0]})") from None
    loss = values["loss"]
    assert isinstance(loss, torch.Tensor)
    if not torch.isfinite(loss):
        first = next((op.name for op in ops if torch.isnan(values[op.name]).any()), "loss")
        raise NetFileError(
            line_of[first], f"{first} is not a number at start-up (NaN: a log or sqrt of a negative number?)"
        )
    tensors = [k for k, t in values.items() if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(loss, [values[k] for k in tensors], allow_unused=True)
    ref = {k: g for k, g in zip(tensors, grads, strict=True) if g is not None}  # a mask's tensor: no gradient
    tensors = list(ref)
    v = SimpleNamespace(**{k: t.detach() if isinstance(t, torch.Tensor) else t for k, t in values.items()})
    d = SimpleNamespace(loss=torch.ones_like(loss))
    for op in net.backward_schedule("atomic"):
        try:
            with torch.no_grad():
                contributions = [(rule, rule.fn(v, d)) for rule in op.rules]
        except (RuntimeError, IndexError, ValueError) as e:
            why = str(e).splitlines()[0]
            raise NetFileError(line_of[op.name], f"the library's rule fails here ({why}): split the line") from None
        for rule, c in contributions:
            previous = getattr(d, rule.target, None)
            setattr(d, rule.target, c if previous is None else previous + c)
    for k in tensors:
        got = getattr(d, k, None)
        if got is None or got.shape != ref[k].shape or not torch.allclose(got, ref[k], CHECK_RTOL, CHECK_ATOL):
            consumer = next(op for op in net.ops if any(r.target == k for r in op.rules))
            raise NetFileError(line_of[consumer.name], f"the library's rule for d{k} disagrees with autograd here")


def _name_of(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", path.stem)
    return name if name and not name[0].isdigit() else f"net_{name}"


def load(path: Path | str, source: str | None = None) -> Net:
    """The Net of a network file (its text read from the path unless given); NetFileError where it cannot."""
    path = Path(path)
    if source is None:
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise NetFileError(1, f"cannot read it: {e}") from None
    return build(source, _name_of(path))
