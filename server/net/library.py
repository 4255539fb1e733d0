"""The op-rule library: each standard op's forward and its backward rules, written once, for any operands.

A network file (server/net/netfile.py) is read into calls of these ops; each call gives its declare.py Rules from
its operands' names and shapes: the line a learner would write (`dh = dlogits @ W2.T`), the function that
computes it, a note on why it looks like that and the derivation in LaTeX. Broadcasting is read off the shapes:
an operand broadcast in the forward pass has its gradient summed over those dims (keepdim where it had a 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from .declare import Rule

Value = Callable[[Any], Any]  # v -> a tensor or a number (the forward values by name, with the sizes)


@dataclass(frozen=True)
class Operand:
    """An input of an op: a tensor of the forward pass by name, or a constant with its source text."""

    text: str  # a node's name, or the constant as written
    shape: tuple[int, ...] = ()  # the tensor's shape in the shape run (a constant: ())
    node: bool = True  # a tensor of the forward pass; False: a constant
    grad: bool = True  # receives a gradient (False: an index tensor, the targets, a constant)
    value: Value | None = None  # a constant's value, from the sizes in v

    def get(self, v: Any) -> Any:
        """The operand's value in a pass."""
        if self.node:
            return getattr(v, self.text)
        assert self.value is not None
        return self.value(v)


@dataclass(frozen=True)
class Call:
    """One op of the library applied to operands: what one line of a network file does."""

    kind: str  # a key of OPS
    args: tuple[Operand, ...]
    dim: int | tuple[int, ...] | None = None  # reductions, softmax, cat, transpose (two dims)
    keepdim: bool = False
    correction: int = 1  # var: Bessel's correction (unbiased=False: 0)
    scale: Operand | None = None  # `c * x.sum(...)`: a constant factor in front of a reduction
    sizes: tuple[Operand, ...] = ()  # view/reshape: the new shape
    mask: Value | None = None  # masked_fill: v -> the boolean mask
    mask_text: str = ""  # the mask as written
    extra: dict[str, Any] = field(default_factory=dict)


class Unsupported(ValueError):
    """An op, or a use of one, that the library has no rule for."""


def T(name: str) -> str:
    """A node's name in a derivation (the page points at \\text{name} in the graph)."""
    return rf"\text{{{name}}}"


def dT(name: str) -> str:
    return rf"\text{{d{name}}}"


def _dims(dims: Sequence[int]) -> str:
    return str(dims[0]) if len(dims) == 1 else "(" + ", ".join(map(str, dims)) + ")"


def _norm_dims(dim: int | tuple[int, ...] | None, rank: int) -> tuple[int, ...]:
    """A reduction's dims as non-negative ints (None: every dim)."""
    if dim is None:
        return tuple(range(rank))
    dims = (dim,) if isinstance(dim, int) else dim
    return tuple(sorted(d % rank for d in dims))


def unbroadcast(
    code: str, fn: Callable[[Any, Any], torch.Tensor], shape: tuple[int, ...], target: tuple[int, ...]
) -> tuple[str, Callable[[Any, Any], torch.Tensor], str]:
    """A gradient of `shape` summed down to the operand's `target` shape: the dims it was broadcast over.

    The dims where the operand had a 1 are summed with keepdim; the leading dims it did not have at all, without.
    Returns the code, the function and the note (empty where nothing was broadcast).
    """
    lead = len(shape) - len(target)
    kept = tuple(lead + i for i, size in enumerate(target) if size == 1 and shape[lead + i] != 1)
    leading = tuple(range(lead))
    if not kept and not leading:
        return code, fn, ""
    text, notes = _wrap(code), []
    if kept:
        text += f".sum({_dims(kept)}, keepdim=True)"
        notes.append(f"broadcast over dim {_dims(kept)} in the forward pass → sum over it here (keepdim)")
    if leading:
        text += f".sum({_dims(leading)})"
        notes.append(f"broadcast along the leading dim {_dims(leading)} it lacked → sum over it here")

    def summed(v: Any, d: Any) -> torch.Tensor:
        g = fn(v, d)
        if kept:
            g = g.sum(kept, keepdim=True)
        if leading:
            g = g.sum(leading)
        return g

    return text, summed, "; ".join(notes)


def _rule(target: str, expr: str, fn: Callable[[Any, Any], torch.Tensor], note: str, tex: tuple[str, ...]) -> Rule:
    """A rule `dtarget = expr`; `+=` is the network file's business (a tensor used more than once)."""
    return Rule(target, f"d{target} = {expr}", fn, note, tex=tex)


def _grad_of(out: str) -> Callable[[Any, Any], torch.Tensor]:
    return lambda v, d: getattr(d, out)


def _elementwise(
    out: Operand, a: Operand, expr: str, local: Callable[[Any, Any], torch.Tensor], note: str, tex: tuple[str, ...]
) -> Rule:
    """`da = local * dout`, summed over the dims `a` was broadcast along."""
    code, fn, bnote = unbroadcast(expr, local, out.shape, a.shape)
    if code == f"d{out.text}":  # the gradient passes through unchanged: a copy, not the same tensor
        code, fn = f"d{out.text}.clone()", (lambda v, d, o=out.text: getattr(d, o).clone())
    tex_chain = tex if not bnote else (*tex[:-1], tex[-1] + r" \quad \text{(summed over the broadcast dims)}")
    rule = _rule(a.text, code, fn, "; ".join(x for x in (note, bnote) if x), tex_chain)
    return replace(rule, example=_sum_example(code, out.shape))


def _sum_example(code: str, shape: tuple[int, ...]) -> str | None:
    """The Why drawer's worked sum, where it can show one: a 2-D gradient summed over one dim."""
    return "sum" if len(shape) == 2 and code.count(".sum(") == 1 and ".sum((" not in code else None


# --- the forward of each op -------------------------------------------------------------------------------------


def forward(call: Call) -> Callable[[Any], torch.Tensor]:
    """The function that computes the op (v -> its output)."""
    a = call.args
    k = call.kind
    if k == "index":
        return lambda v: a[0].get(v)[a[1].get(v)]
    if k in ("view", "reshape"):
        return lambda v: getattr(a[0].get(v), k)(*[int(s.get(v)) for s in call.sizes])
    if k == "transpose":
        d0, d1 = call.dim  # type: ignore[misc]
        return lambda v: a[0].get(v).transpose(d0, d1)
    if k in BINARY:
        op = BINARY[k]
        return lambda v: op(a[0].get(v), a[1].get(v))
    if k == "neg":
        return lambda v: -a[0].get(v)
    if k in UNARY:
        f = UNARY[k][0]
        return lambda v: f(a[0].get(v))
    if k in ("sum", "mean", "max", "var", "softmax", "log_softmax"):
        reduce = _reduction(call)
        if call.scale is None:
            return lambda v: reduce(a[0].get(v))
        scale = call.scale
        return lambda v: scale.get(v) * reduce(a[0].get(v))
    if k == "masked_fill":
        mask, fill = call.mask, a[1]
        assert mask is not None
        return lambda v: a[0].get(v).masked_fill(mask(v), fill.get(v))
    if k == "cat":
        dim = call.dim
        return lambda v: torch.cat([x.get(v) for x in a], dim)  # type: ignore[arg-type]
    if k == "cross_entropy":
        return lambda v: F.cross_entropy(a[0].get(v), a[1].get(v))
    if k == "nll":
        return lambda v: -a[0].get(v)[torch.arange(a[1].get(v).shape[0]), a[1].get(v)].mean()
    if k == "linear":
        return lambda v: a[0].get(v) @ a[1].get(v) + a[2].get(v)
    if k == "affine":
        return lambda v: a[0].get(v) * a[1].get(v) + a[2].get(v)
    if k == "shifted_pow":
        return lambda v: (a[0].get(v) + a[1].get(v)) ** a[2].get(v)
    raise Unsupported(f"no op {k!r} in the library")


BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y,
    "pow": lambda x, y: x**y,
    "matmul": lambda x, y: x @ y,
}
# each op's label in the drawn graph (the op's kind where it has none)
SYMBOLS = {
    "add": "+",
    "sub": "−",
    "mul": "*",
    "div": "/",
    "pow": "**",
    "matmul": "@",
    "neg": "−",
    "linear": "@ +",
    "affine": "* +",
    "shifted_pow": "+ **",
    "index": "[ ]",
    "nll": "nll mean",
}

# unary ops: forward, the local derivative as code (x: the input, o: the output), its function, the derivative in
# LaTeX, and why
UNARY: dict[str, tuple[Callable[[Any], Any], str, Callable[[Any, Any], Any], str, str]] = {
    "exp": (torch.exp, "§o", lambda x, o: o, r"e^{§x} = §o", "exp is its own derivative: reuse the output"),
    "log": (torch.log, "(1.0 / §x)", lambda x, o: 1.0 / x, r"\frac{1}{§x}", "d log(x) = 1/x"),
    "tanh": (torch.tanh, "(1.0 - §o**2)", lambda x, o: 1.0 - o**2, r"1 - §o^2", "tanh' = 1 - tanh²: reuse the output"),
    "relu": (
        torch.relu,
        "(§o > 0)",
        lambda x, o: o > 0,
        r"[§x > 0]",
        "relu passes the gradient where the input was positive, and nothing elsewhere",
    ),
    "sigmoid": (
        torch.sigmoid,
        "§o * (1 - §o)",
        lambda x, o: o * (1 - o),
        r"§o\,(1 - §o)",
        "σ' = σ(1 - σ): reuse the output",
    ),
    "sqrt": (torch.sqrt, "(0.5 / §o)", lambda x, o: 0.5 / o, r"\frac{1}{2\,§o}", "d sqrt(x) = 1/(2 sqrt(x))"),
}


def _reduction(call: Call) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward of a reduction (or softmax) over call.dim."""
    k, dim, keep = call.kind, call.dim, call.keepdim
    if k == "sum":
        return lambda x: x.sum() if dim is None else x.sum(dim, keepdim=keep)
    if k == "mean":
        return lambda x: x.mean() if dim is None else x.mean(dim, keepdim=keep)
    if k == "max":
        return lambda x: x.max(dim, keepdim=keep).values
    if k == "var":
        c = call.correction
        return lambda x: x.var(correction=c) if dim is None else x.var(dim, keepdim=keep, correction=c)
    if k == "softmax":
        return lambda x: F.softmax(x, dim)
    return lambda x: F.log_softmax(x, dim)


# --- the backward rules ----------------------------------------------------------------------------------------


def rules(call: Call, out: Operand) -> tuple[Rule, ...]:
    """The op's backward rule for each input that receives a gradient."""
    make = RULES.get(call.kind)
    if make is None:
        raise Unsupported(f"no backward rule for {call.kind!r}")
    return tuple(rule for rule in make(call, out) if rule is not None)


def _index_rules(call: Call, out: Operand) -> list[Rule | None]:
    table, idx = call.args
    if not table.grad:
        return []
    o, c, i = out.text, table.text, idx.text
    rest = "" if len(table.shape) == 1 else (f"{c}.shape[1]" if len(table.shape) == 2 else f"*{c}.shape[1:]")

    def fn(v: Any, d: Any) -> torch.Tensor:
        t = getattr(v, c)
        g = torch.zeros_like(t)
        g.index_add_(0, getattr(v, i).reshape(-1), getattr(d, o).reshape(-1, *t.shape[1:]))
        return g

    code = f"d{c} = torch.zeros_like({c})\nd{c}.index_add_(0, {i}.view(-1), d{o}.view(-1{', ' + rest if rest else ''}))"
    tex = (
        rf"{T(o)}_{{k,\dots}} = {T(c)}_{{{T(i)}_{{k}},\,\dots}}",
        rf"\frac{{\partial\,{T(o)}_{{k,\dots}}}}{{\partial\,{T(c)}_{{r,\dots}}}} = [{T(i)}_{{k}} = r]",
        rf"{dT(c)}_{{r,\dots}} = \sum_{{k}} [{T(i)}_{{k}} = r]\;{dT(o)}_{{k,\dots}}",
    )
    note = f"a row of {c} is gathered once per occurrence of its index → scatter-add every use back"
    # the Why drawer's worked example reads the lecture's names
    example = "gather" if (c, i, o) == ("C", "Xb", "emb") and len(table.shape) == 2 else None
    return [Rule(c, code, fn, note, tex=tex, example=example)]


def _view_rules(call: Call, out: Operand) -> list[Rule | None]:
    x = call.args[0]
    o = out.text
    tex = (
        rf"{T(o)} = \operatorname{{view}}({T(x.text)})",
        rf"\text{{each entry of }} {T(o)} \text{{ is one entry of }} {T(x.text)}: \text{{derivative }} 1",
        rf"{dT(x.text)} = {dT(o)} \text{{ viewed back to the shape of }} {T(x.text)}",
    )
    return [
        Rule(
            x.text,
            f"d{x.text} = d{o}.view({x.text}.shape)",
            lambda v, d: getattr(d, o).reshape(getattr(v, x.text).shape),
            "a view only rearranges: the gradient is viewed back to the original shape",
            tex=tex,
        )
    ]


def _transpose_rules(call: Call, out: Operand) -> list[Rule | None]:
    x, o = call.args[0], out.text
    d0, d1 = call.dim  # type: ignore[misc]
    tex = (
        rf"{T(o)}_{{\dots i \dots j \dots}} = {T(x.text)}_{{\dots j \dots i \dots}}",
        r"\text{each entry moves: derivative } 1",
        rf"{dT(x.text)} = {dT(o)} \text{{ transposed back (dims {d0} and {d1})}}",
    )
    return [
        Rule(
            x.text,
            f"d{x.text} = d{o}.transpose({d0}, {d1})",
            lambda v, d: getattr(d, o).transpose(d0, d1),
            "a transpose moves entries: the gradient is transposed back",
            tex=tex,
        )
    ]


def _matmul_parts(a: Operand, b: Operand, o: str, ob_shape: tuple[int, ...]) -> list[Rule | None]:
    """The rules of `o = a @ b` (2-D, or batched over leading dims, a 2-D operand shared by the batch)."""
    A, B = a.text, b.text
    t = ".T" if len(a.shape) == 2 and len(b.shape) == 2 else ".transpose(-2, -1)"
    note = "matrix multiply: the shapes dictate the transpose"
    example = "matmul" if len(a.shape) == 2 and len(b.shape) == 2 else None  # the Why drawer's 2-D slice
    out: list[Rule | None] = []
    if a.grad:
        code, fn, bnote = unbroadcast(
            f"d{o} @ {B}{t}", lambda v, d: getattr(d, o) @ getattr(v, B).transpose(-2, -1), ob_shape, a.shape
        )
        tex = (
            rf"{T(o)}_{{ij}} = \sum_k {T(A)}_{{ik}}\,{T(B)}_{{kj}}",
            rf"\frac{{\partial\,{T(o)}_{{ij}}}}{{\partial\,{T(A)}_{{ik}}}} = {T(B)}_{{kj}} \quad \text{{for every column }} j",
            rf"{dT(A)}_{{ik}} = \sum_j {dT(o)}_{{ij}}\;{T(B)}_{{kj}} = ({dT(o)}\;{T(B)}^{{\top}})_{{ik}}",
        )
        out.append(Rule(A, f"d{A} = {code}", fn, "; ".join(x for x in (note, bnote) if x), tex=tex, example=example))
    if b.grad:
        code, fn, bnote = unbroadcast(
            f"{A}{t} @ d{o}", lambda v, d: getattr(v, A).transpose(-2, -1) @ getattr(d, o), ob_shape, b.shape
        )
        tex = (
            rf"{T(o)}_{{ij}} = \sum_k {T(A)}_{{ik}}\,{T(B)}_{{kj}}",
            rf"\frac{{\partial\,{T(o)}_{{ij}}}}{{\partial\,{T(B)}_{{kj}}}} = {T(A)}_{{ik}} \quad \text{{for every row }} i",
            rf"{dT(B)}_{{kj}} = \sum_i {T(A)}_{{ik}}\;{dT(o)}_{{ij}} = ({T(A)}^{{\top}}\;{dT(o)})_{{kj}}",
        )
        out.append(Rule(B, f"d{B} = {code}", fn, "; ".join(x for x in (note, bnote) if x), tex=tex, example=example))
    return out


def _matmul_rules(call: Call, out: Operand) -> list[Rule | None]:
    a, b = call.args
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise Unsupported("@ with a 1-D operand: make it a (1, k) or (k, 1) matrix")
    # a batched product's output: the broadcast of the leading dims, then (rows of a, columns of b)
    return _matmul_parts(a, b, out.text, out.shape)


def _linear_rules(call: Call, out: Operand) -> list[Rule | None]:
    a, b, c = call.args
    mm = _matmul_parts(a, b, out.text, out.shape)
    if not c.grad:
        return mm
    o = out.text
    tex = (
        rf"{T(o)} = {T(a.text)}\;{T(b.text)} + {T(c.text)}",
        rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(c.text)}}} = 1",
        rf"{dT(c.text)} = {dT(o)} \quad \text{{summed over the dims it was broadcast along}}",
    )
    return [*mm, _elementwise(out, c, f"d{o}", _grad_of(o), "addition passes the gradient through", tex)]


def _binary_rules(call: Call, out: Operand) -> list[Rule | None]:
    a, b = call.args
    o, A, B = out.text, a.text, b.text
    k = call.kind
    g = _grad_of(o)
    rules_: list[Rule | None] = []
    fwd = rf"{T(o)} = {_tx(a)} {_TEXOP[k]} {_tx(b)}"
    if k in ("add", "sub"):
        for x, sign in ((a, 1), (b, 1 if k == "add" else -1)):
            if not x.grad:
                continue
            expr = f"d{o}" if sign == 1 else f"(-d{o})"
            fn = g if sign == 1 else (lambda v, d: -getattr(d, o))
            what = "passes the gradient through" + ("" if sign == 1 else ", with a minus sign")
            tex = (
                fwd,
                rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(x.text)}}} = {'' if sign == 1 else '-'}1",
                rf"{dT(x.text)} = {'' if sign == 1 else '-'}{dT(o)}",
            )
            rules_.append(_elementwise(out, x, expr, fn, ("addition " if k == "add" else "subtraction ") + what, tex))
    elif k == "mul":
        for x, y in ((a, b), (b, a)):
            if not x.grad:
                continue
            yv = y
            tex = (
                fwd,
                rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(x.text)}}} = {_tx(y)}",
                rf"{dT(x.text)} = {_tx(y)}\;{dT(o)}",
            )
            rules_.append(
                _elementwise(
                    out,
                    x,
                    f"{y.text if y.node else _paren(y)} * d{o}",
                    lambda v, d, yv=yv: yv.get(v) * getattr(d, o),
                    "product rule",
                    tex,
                )
            )
    elif k == "div":
        if a.grad:
            tex = (
                fwd,
                rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(A)}}} = \frac{{1}}{{{_tx(b)}}}",
                rf"{dT(A)} = {dT(o)} / {_tx(b)}",
            )
            rules_.append(
                _elementwise(out, a, f"d{o} / {_paren(b)}", lambda v, d: getattr(d, o) / b.get(v), "quotient rule", tex)
            )
        if b.grad:
            tex = (
                fwd,
                rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(B)}}} = -\frac{{{_tx(a)}}}{{{_tx(b)}^2}}",
                rf"{dT(B)} = -\frac{{{_tx(a)}}}{{{_tx(b)}^2}}\;{dT(o)}",
            )
            rules_.append(
                _elementwise(
                    out,
                    b,
                    f"(-{_paren(a)} / {B}**2) * d{o}",
                    lambda v, d: (-a.get(v) / b.get(v) ** 2) * getattr(d, o),
                    "quotient rule",
                    tex,
                )
            )
    elif k == "pow":
        if b.node:
            raise Unsupported("a tensor as the exponent: write the power as a number (x**2, x**-0.5)")
        if a.grad:
            tex = (
                fwd,
                rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(A)}}} = {B}\,{T(A)}^{{{B} - 1}}",
                rf"{dT(A)} = {B}\,{T(A)}^{{{B} - 1}}\;{dT(o)}",
            )
            rules_.append(
                _elementwise(
                    out,
                    a,
                    f"{_power_derivative(A, B)} * d{o}",
                    lambda v, d: (b.get(v) * a.get(v) ** (b.get(v) - 1)) * getattr(d, o),
                    "power rule",
                    tex,
                )
            )
    return rules_


def _power_derivative(x: str, p: str) -> str:
    """p * x**(p-1) as the lecture writes it: (2*x) for a square, (-x**-2) for an inverse."""
    try:
        value = float(p)
    except ValueError:
        return f"(({p})*{x}**(({p}) - 1))"
    lower = value - 1
    shown = str(int(lower)) if lower.is_integer() else repr(lower)
    if value == 2:
        return f"(2*{x})"
    if value == -1:
        return f"(-{x}**{shown})"
    return f"({p}*{x}**{shown})"


def _affine_rules(call: Call, out: Operand) -> list[Rule | None]:
    a, b, c = call.args
    o = out.text
    got: list[Rule | None] = []
    for x, y in ((a, b), (b, a)):
        if x.grad:
            tex = (
                rf"{T(o)} = {T(a.text)}\;{T(b.text)} + {T(c.text)}",
                rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(x.text)}}} = {T(y.text)}",
                rf"{dT(x.text)} = {T(y.text)}\;{dT(o)}",
            )
            got.append(
                _elementwise(
                    out, x, f"{y.text} * d{o}", lambda v, d, y=y: y.get(v) * getattr(d, o), "product rule", tex
                )
            )
    if c.grad:
        tex = (
            rf"{T(o)} = {T(a.text)}\;{T(b.text)} + {T(c.text)}",
            rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(c.text)}}} = 1",
            rf"{dT(c.text)} = {dT(o)}",
        )
        got.append(_elementwise(out, c, f"d{o}", _grad_of(o), "addition passes the gradient through", tex))
    return got


def _shifted_pow_rules(call: Call, out: Operand) -> list[Rule | None]:
    x, c, p = call.args
    o, X = out.text, x.text
    tex = (
        rf"{T(o)} = ({T(X)} + {c.text})^{{{p.text}}}",
        rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(X)}}} = {p.text}\,({T(X)} + {c.text})^{{{p.text} - 1}}",
        rf"{dT(X)} = {p.text}\,({T(X)} + {c.text})^{{{p.text} - 1}}\;{dT(o)}",
    )
    # the exponent minus one as the lecture writes it: -0.5 → -1.5
    try:
        lower = repr(float(p.text) - 1)
    except ValueError:
        lower = f"({p.text} - 1)"
    code = f"({p.text}*({X} + {c.text})**{lower}) * d{o}"
    return [
        _elementwise(
            out,
            x,
            code,
            lambda v, d: (p.get(v) * (x.get(v) + c.get(v)) ** (p.get(v) - 1)) * getattr(d, o),
            "power rule",
            tex,
        )
    ]


def _unary_rules(call: Call, out: Operand) -> list[Rule | None]:
    x = call.args[0]
    if not x.grad:
        return []
    o, X = out.text, x.text
    _, code, local, dtex, why = UNARY[call.kind]
    expr = code.replace("§o", o).replace("§x", X)
    tdx = dtex.replace("§o", T(o)).replace("§x", T(X))
    tex = (
        rf"{T(o)} = \operatorname{{{call.kind}}}({T(X)})",
        rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(X)}}} = {tdx}",
        rf"{dT(X)} = {tdx}\;{dT(o)}",
    )
    rule = _rule(X, f"{expr} * d{o}", lambda v, d: local(getattr(v, X), getattr(v, o)) * getattr(d, o), why, tex)
    return [replace(rule, example="tanh" if call.kind == "tanh" and len(out.shape) == 2 else None)]


def _neg_rules(call: Call, out: Operand) -> list[Rule | None]:
    x, o = call.args[0], out.text
    tex = (
        rf"{T(o)} = -{T(x.text)}",
        rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(x.text)}}} = -1",
        rf"{dT(x.text)} = -{dT(o)}",
    )
    return [_rule(x.text, f"-d{o}", lambda v, d: -getattr(d, o), "negation flips the gradient's sign", tex)]


def _spread(call: Call, out: Operand, x: Operand) -> tuple[str, Callable[[Any, Any], torch.Tensor], tuple[int, ...]]:
    """dout with the reduced dims put back as 1s (code, function, the dims): it broadcasts over x again."""
    o = out.text
    dims = _norm_dims(call.dim, len(x.shape))
    if call.keepdim or call.dim is None:
        return f"d{o}", _grad_of(o), dims
    code = f"d{o}" + "".join(f".unsqueeze({d})" for d in dims)

    def spread(v: Any, d: Any) -> torch.Tensor:  # the pass's own sizes: the shapes given are only the dims' count
        return getattr(d, o).reshape([1 if i in dims else s for i, s in enumerate(getattr(v, x.text).shape)])

    return code, spread, dims


def _reduce_note(dims: tuple[int, ...]) -> str:
    return f"summed over dim {_dims(dims)} in the forward pass → the gradient is copied (broadcast) along it"


def _sum_rules(call: Call, out: Operand) -> list[Rule | None]:
    x = call.args[0]
    X, o = x.text, out.text
    spread, g, dims = _spread(call, out, x)
    scale = call.scale
    mean = call.kind == "mean"
    if mean:
        count = " * ".join(f"{X}.shape[{d}]" for d in dims)
        code = (
            f"torch.ones_like({X}) * {spread} / ({count})"
            if len(dims) > 1
            else f"torch.ones_like({X}) * {spread} / {count}"
        )
    else:
        code = f"torch.ones_like({X}) * {spread}"
    if scale is not None:
        code = f"{_paren(scale)} * ({code})"

    def fn(v: Any, d: Any) -> torch.Tensor:
        t = getattr(v, X)
        grad = torch.ones_like(t) * g(v, d)
        if mean:
            grad = grad / math.prod(t.shape[i] for i in dims)
        return grad if scale is None else scale.get(v) * grad

    what = r"\frac{1}{N}" if mean else ""
    factor = (scale.text + r"\,") if scale is not None else ""
    tex = (
        rf"{T(o)} = {factor}{what}\sum_{{\text{{dim }} {_dims(dims)}}} {T(X)}",
        rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(X)}}} = {factor}{what or '1'} \quad \text{{for every entry summed}}",
        rf"{dT(X)} = {factor}{what}\;{dT(o)} \quad \text{{copied along dim {_dims(dims)}}}",
    )
    note = _reduce_note(dims) + ("; a mean divides by the count N" if mean else "")
    return [_rule(X, code, fn, note, tex)]


def _max_rules(call: Call, out: Operand) -> list[Rule | None]:
    x = call.args[0]
    if not isinstance(call.dim, int):
        raise Unsupported("max over one dim: x.max(dim, keepdim=True).values")
    X, o = x.text, out.text
    dim = call.dim % len(x.shape)
    spread, g, _ = _spread(call, out, x)
    # one_hot puts the classes last: transposes walk them back to the reduced dim (the learner's syntax, no scatter_)
    walk = "".join(f".transpose({k - 1}, {k})" for k in range(len(x.shape) - 1, dim, -1))
    code = f"F.one_hot({X}.max({dim}).indices, num_classes={X}.shape[{dim}]){walk} * {spread}"

    def fn(v: Any, d: Any) -> torch.Tensor:
        t = getattr(v, X)
        spread_grad = g(v, d).expand([1 if i == dim else s for i, s in enumerate(t.shape)])
        return torch.zeros_like(t).scatter_(dim, t.max(dim, keepdim=True).indices, spread_grad)

    tex = (
        rf"{T(o)} = \max_{{\text{{dim }} {dim}}} {T(X)}",
        rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(X)}}} = [\text{{the entry is the maximum}}]",
        rf"{dT(X)} = [{T(X)} = \max]\;{dT(o)}",
    )
    rule = _rule(X, code, fn, "only the maximum of each slice reaches the output: it alone gets the gradient", tex)
    shown = len(x.shape) == 2 and dim == 1 and call.keepdim  # the Why drawer's row and its maximum
    return [replace(rule, example="max" if shown else None)]


def _var_rules(call: Call, out: Operand) -> list[Rule | None]:
    x = call.args[0]
    X, o = x.text, out.text
    spread, g, dims = _spread(call, out, x)
    c = call.correction
    count = " * ".join(f"{X}.shape[{d}]" for d in dims)
    count = f"({count})" if len(dims) > 1 else count
    denom = f"({count} - {c})" if c else count
    code = f"2 * ({X} - {X}.mean({_dims(dims)}, keepdim=True)) / {denom} * {spread}"

    def fn(v: Any, d: Any) -> torch.Tensor:
        t = getattr(v, X)
        count_ = math.prod(t.shape[i] for i in dims)
        return 2 * (t - t.mean(dims, keepdim=True)) / (count_ - c) * g(v, d)

    bessel = "N - 1" if c == 1 else ("N" if c == 0 else f"N - {c}")
    tex = (
        rf"{T(o)} = \frac{{1}}{{{bessel}}} \sum (x_k - \mu)^2, \quad x = {T(X)}, \ \mu = \frac{{1}}{{N}}\sum_k x_k",
        rf"\frac{{\partial\,{T(o)}}}{{\partial x_i}} = \frac{{2}}{{{bessel}}}(x_i - \mu) \quad \text{{(the mean's share sums to 0)}}",
        rf"{dT(X)}_i = \frac{{2}}{{{bessel}}}(x_i - \mu)\;{dT(o)}",
    )
    return [_rule(X, code, fn, _reduce_note(dims) + f"; the variance divides by {bessel}", tex)]


def _softmax_rules(call: Call, out: Operand) -> list[Rule | None]:
    x = call.args[0]
    X, o, dim = x.text, out.text, call.dim
    if call.kind == "softmax":
        code = f"{o} * (d{o} - ({o} * d{o}).sum({dim}, keepdim=True))"

        def fn(v: Any, d: Any) -> torch.Tensor:
            p, g = getattr(v, o), getattr(d, o)
            return p * (g - (p * g).sum(dim, keepdim=True))

        tex = (
            rf"{T(o)}_i = \frac{{e^{{x_i}}}}{{\sum_k e^{{x_k}}}}, \quad x = {T(X)}",
            rf"\frac{{\partial\,{T(o)}_i}}{{\partial x_j}} = {T(o)}_i\,([i = j] - {T(o)}_j)",
            rf"{dT(X)}_j = {T(o)}_j\Big({dT(o)}_j - \sum_i {T(o)}_i\,{dT(o)}_i\Big)",
        )
        return [_rule(X, code, fn, "softmax's Jacobian: the output times (the gradient minus its weighted mean)", tex)]
    code = f"d{o} - {o}.exp() * d{o}.sum({dim}, keepdim=True)"

    def fn_log(v: Any, d: Any) -> torch.Tensor:
        g = getattr(d, o)
        return g - getattr(v, o).exp() * g.sum(dim, keepdim=True)

    tex = (
        rf"{T(o)}_i = x_i - \log \sum_k e^{{x_k}}, \quad x = {T(X)}",
        rf"\frac{{\partial\,{T(o)}_i}}{{\partial x_j}} = [i = j] - p_j, \quad p = e^{{{T(o)}}} \text{{ (the softmax)}}",
        rf"{dT(X)}_j = {dT(o)}_j - p_j \sum_i {dT(o)}_i",
    )
    return [_rule(X, code, fn_log, "log_softmax: the gradient minus the softmax times its sum", tex)]


def _masked_fill_rules(call: Call, out: Operand) -> list[Rule | None]:
    x = call.args[0]
    X, o = x.text, out.text
    mask = call.mask
    assert mask is not None
    tex = (
        rf"{T(o)} = {T(X)} \text{{ where the mask is false, a constant where it is true}}",
        rf"\frac{{\partial\,{T(o)}}}{{\partial\,{T(X)}}} = [\text{{not masked}}]",
        rf"{dT(X)} = {dT(o)} \text{{ with the masked entries set to }} 0",
    )
    return [
        _rule(
            X,
            f"d{o}.masked_fill({call.mask_text}, 0.0)",
            lambda v, d: getattr(d, o).masked_fill(mask(v), 0.0),
            "a filled entry is a constant: no gradient flows back through it",
            tex,
        )
    ]


def _cat_rules(call: Call, out: Operand) -> list[Rule | None]:
    o = out.text
    dim = call.dim
    assert isinstance(dim, int)
    got: list[Rule | None] = []
    for i, x in enumerate(call.args):
        before = call.args[:i]
        if not x.grad:
            continue
        begin = " + ".join(f"{p.text}.shape[{dim}]" for p in before) or "0"
        tex = (
            rf"{T(o)} = \operatorname{{cat}}(\dots, {T(x.text)}, \dots) \text{{ along dim {dim}}}",
            r"\text{each entry is copied: derivative } 1",
            rf"{dT(x.text)} = {dT(o)} \text{{ at }} {T(x.text)}\text{{'s entries of dim {dim}}}",
        )

        def fn(v: Any, d: Any, x: Operand = x, before: tuple[Operand, ...] = before) -> torch.Tensor:
            start = sum(getattr(v, p.text).shape[dim] for p in before)
            return getattr(d, o).narrow(dim, start, getattr(v, x.text).shape[dim])

        # the learner's slicing, not .narrow: the lecture's syntax, and what the sandbox lets a learner write
        at = ":, " * (dim % len(out.shape))
        width = f"{x.text}.shape[{dim}]"
        if not before:
            code = f"d{o}[{at}:{width}]"
        elif i == len(call.args) - 1:
            code = f"d{o}[{at}{begin}:]"
        else:
            code = f"d{o}[{at}{begin}:{begin} + {width}]"
        got.append(
            _rule(
                x.text,
                code,
                fn,
                "cat places its inputs side by side: each gets its own slice of the gradient back",
                tex,
            )
        )
    return got


def _dlogits_ce(logits: str, targets: str) -> Callable[[Any, Any], torch.Tensor]:
    def fn(v: Any, d: Any) -> torch.Tensor:
        z, y = getattr(v, logits), getattr(v, targets)
        g = F.softmax(z, 1)
        g[torch.arange(z.shape[0]), y] -= 1
        return g / z.shape[0]

    return fn


def _cross_entropy_rules(call: Call, out: Operand) -> list[Rule | None]:
    z, y = call.args
    Z, Y = z.text, y.text
    tex = (
        rf"{T(out.text)} = \frac{{1}}{{n}}\sum_i \Big(-{T(Z)}_{{i,y_i}} + \log \sum_k e^{{{T(Z)}_{{ik}}}}\Big), \quad y_i = {T(Y)}_i",
        rf"\frac{{\partial}}{{\partial\,{T(Z)}_{{ij}}}} \log \sum_k e^{{{T(Z)}_{{ik}}}} = p_{{ij}} \quad \text{{(the softmax)}}",
        rf"{dT(Z)} = \big(\operatorname{{softmax}}({T(Z)}) - \operatorname{{onehot}}({T(Y)})\big) / n",
    )
    code = f"d{Z} = F.softmax({Z}, 1)\nd{Z}[range(n), {Y}] -= 1\nd{Z} /= n"
    rule = Rule(
        Z,
        code,
        _dlogits_ce(Z, Y),
        "softmax minus one-hot of the target, divided by n",
        tex=tex,
        example="forces" if Z == "logits" else None,  # the Why drawer's forces read the lecture's logits
        rounding="F.cross_entropy's backward takes the softmax from log_softmax in one fused kernel, where F.softmax "
        "computes exp(x - max) / sum: the same number, rounded differently",
    )
    return [rule]


def _nll_rules(call: Call, out: Operand) -> list[Rule | None]:
    x, y = call.args
    X, Y = x.text, y.text

    def fn(v: Any, d: Any) -> torch.Tensor:
        t, targets = getattr(v, X), getattr(v, Y)
        g = torch.zeros_like(t)
        g[torch.arange(t.shape[0]), targets] = -1.0 / t.shape[0]
        return g

    tex = (
        rf"{T(out.text)} = -\frac{{1}}{{n}}\sum_i {T(X)}_{{i,\,{T(Y)}_i}}",
        rf"\frac{{\partial\,{T(out.text)}}}{{\partial\,{T(X)}_{{ij}}}} = -\frac{{1}}{{n}}\,[j = {T(Y)}_i]",
        rf"{dT(X)}_{{ij}} = -\frac{{1}}{{n}}\,[j = {T(Y)}_i] \quad (\text{{dloss}} = 1)",
    )
    return [
        Rule(
            X,
            f"d{X} = torch.zeros_like({X})\nd{X}[range(n), {Y}] = -1.0/n",
            fn,
            "only the target's entry in each row enters the mean: -1/n there, 0 elsewhere",
            tex=tex,
        )
    ]


RULES: dict[str, Callable[[Call, Operand], list[Rule | None]]] = {
    "index": _index_rules,
    "view": _view_rules,
    "reshape": _view_rules,
    "transpose": _transpose_rules,
    "matmul": _matmul_rules,
    "linear": _linear_rules,
    "add": _binary_rules,
    "sub": _binary_rules,
    "mul": _binary_rules,
    "div": _binary_rules,
    "pow": _binary_rules,
    "affine": _affine_rules,
    "shifted_pow": _shifted_pow_rules,
    "neg": _neg_rules,
    **dict.fromkeys(UNARY, _unary_rules),
    "sum": _sum_rules,
    "mean": _sum_rules,
    "max": _max_rules,
    "var": _var_rules,
    "softmax": _softmax_rules,
    "log_softmax": _softmax_rules,
    "masked_fill": _masked_fill_rules,
    "cat": _cat_rules,
    "cross_entropy": _cross_entropy_rules,
    "nll": _nll_rules,
}

_TEXOP = {"add": "+", "sub": "-", "mul": r"\cdot", "div": "/", "pow": "^"}


def _wrap(code: str) -> str:
    """The code in parentheses unless it is a name or already one parenthesised whole."""
    if code.isidentifier():
        return code
    if code.startswith("(") and code.endswith(")"):
        depth = 0
        for i, ch in enumerate(code):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0 and i < len(code) - 1:
                break
        else:
            return code
    return f"({code})"


def _tx(x: Operand) -> str:
    return T(x.text) if x.node else x.text


def _paren(x: Operand) -> str:
    """A constant's text, in parentheses unless it is a name or a number."""
    text = x.text
    return text if text.replace(".", "", 1).isdigit() or text.isidentifier() else f"({text})"
