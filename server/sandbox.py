"""A learner's gradient code, run safely: parsed with `ast`, interpreted from an allowlist, sizes checked
on the meta device before anything is computed, and every result capped.

No eval/exec and no sandbox library: once a torch object is reachable, a blocklist cannot work
(tensor and storage methods without underscores read and write files). Here nothing is reachable but
what the interpreter hands out: tensors, numbers, shapes, ranges, and calls to the methods and
functions listed below. No strings exist at all. The interpreter runs in a sandbox process with a
memory limit and a timeout (server/sandbox_pool.py); this module is the part that decides what may run.
"""

from __future__ import annotations

import ast
import math
import operator
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

MAX_SOURCE_CHARS = 2000
MAX_AST_NODES = 400
MAX_NUMEL = 1 << 21  # no tensor a program makes is larger than this (2M entries) ...
NUMEL_FACTOR = 16  # ... nor than 16 x the largest tensor in scope (lecture config: 32,768; a broadcast blows past)
MAX_INT = 10**6  # integer constants and computed integers
MAX_FLOAT = 1e12  # float constants and computed Python floats
MAX_EXPONENT = 16  # x ** p with |p| <= 16
MAX_RANGE = 10**5
MAX_TUPLE = 64  # a shape has at most this many entries (torch's own limit on dimensions)

STATEMENTS = (ast.Assign, ast.AugAssign, ast.Expr)
EXPRESSIONS = (
    ast.BinOp, ast.UnaryOp, ast.Call, ast.Attribute, ast.Subscript, ast.Name, ast.Constant, ast.Tuple,
    ast.Slice, ast.keyword, ast.Load, ast.Store,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.MatMult, ast.Pow, ast.USub, ast.UAdd,
)  # fmt: skip
BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.MatMult: operator.matmul, ast.Pow: operator.pow,
}  # fmt: skip
AUGOPS = {ast.Add: "add_", ast.Sub: "sub_", ast.Mult: "mul_", ast.Div: "div_"}
# the lecture's vocabulary of torch, and nothing else
METHODS = {
    "sum", "mean", "max", "min", "exp", "log", "tanh", "view", "reshape", "clone", "index_add_", "t",
    "abs", "sqrt", "pow", "unsqueeze", "squeeze", "softmax", "log_softmax", "float", "expand_as", "sigmoid",
}  # fmt: skip
IN_PLACE_METHODS = {"index_add_"}
ATTRIBUTES = {"T", "shape", "values", "indices"}
TORCH_FUNCTIONS = {"zeros_like", "ones_like", "tanh", "exp", "log", "softmax", "log_softmax", "sigmoid"}
F_FUNCTIONS = {"one_hot", "softmax", "log_softmax"}
KEYWORDS = {"dim", "keepdim", "num_classes"}
RESERVED = {"torch", "F", "range"}


class Refused(ValueError):
    """Code that will not run, with a reason a learner can act on."""


class NotDefined(Refused):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def parse(source: str) -> ast.Module:
    """The checked syntax tree of a program, or Refused."""
    if len(source) > MAX_SOURCE_CHARS:
        raise Refused(f"the code is {len(source)} characters long; at most {MAX_SOURCE_CHARS}")
    bad = sorted({c for c in source if not (c.isascii() and (c.isprintable() or c in "\n\t"))})
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:5])
        raise Refused(f"only plain ASCII is accepted (found {shown}): retype the line, look-alike letters hide here")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings would go to the server's log
            tree = ast.parse(source, mode="exec")
    except SyntaxError as e:
        raise Refused(f"syntax error on line {e.lineno}: {e.msg}") from None
    except (MemoryError, RecursionError, ValueError):  # parser bombs: deeply nested brackets
        raise Refused("the code is nested too deeply to read") from None
    count = 0
    for node in ast.walk(tree):
        count += 1
        if count > MAX_AST_NODES:
            raise Refused(f"the code has more than {MAX_AST_NODES} parts; a gradient takes a few lines")
        _check_node(node)
    if not tree.body:
        raise Refused("there is no code: write the gradient(s) of this step, e.g. dx = ...")
    return tree


def _check_node(node: ast.AST) -> None:
    if isinstance(node, ast.Module):
        return
    if isinstance(node, ast.stmt):
        if not isinstance(node, STATEMENTS):
            raise Refused(f"line {node.lineno}: only assignments (x = ..., x += ..., x[i] = ...) and "
                          f"x.index_add_(...) are allowed, not {type(node).__name__.lower()}")  # fmt: skip
        if isinstance(node, ast.Assign) and len(node.targets) != 1:
            raise Refused(f"line {node.lineno}: one target per assignment (a = b = ... is not allowed)")
        return
    if not isinstance(node, EXPRESSIONS):
        what = {
            ast.JoinedStr: "f-strings", ast.Lambda: "lambdas", ast.ListComp: "comprehensions",
            ast.GeneratorExp: "generators", ast.NamedExpr: "the walrus operator", ast.List: "lists",
            ast.Dict: "dicts", ast.Compare: "comparisons", ast.BoolOp: "and/or", ast.IfExp: "if expressions",
        }.get(type(node), type(node).__name__)  # fmt: skip
        raise Refused(f"{what} are not part of the gradient vocabulary here")
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or value is None:
            if value is None:
                raise Refused("None is not needed in a gradient")
            return
        if isinstance(value, str | bytes):
            raise Refused("strings are not allowed: a gradient is tensors and numbers")
        if not isinstance(value, int | float) or isinstance(value, complex):
            raise Refused(f"the constant {value!r} is not a real number")
        _check_number(value)
    elif isinstance(node, ast.Name):
        if node.id.startswith("_"):
            raise Refused(f"names starting with _ are not allowed ({node.id})")
    elif isinstance(node, ast.Attribute):
        if node.attr not in METHODS | ATTRIBUTES | TORCH_FUNCTIONS | F_FUNCTIONS:
            raise Refused(f".{node.attr} is not available: use tensor methods like .sum, .view, .T, .shape")
    elif isinstance(node, ast.keyword):
        if node.arg not in KEYWORDS:
            raise Refused(f"the keyword {node.arg}= is not available (dim=, keepdim=, num_classes= are)")
    elif isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id != "range":
            raise Refused(f"{node.func.id}(...) cannot be called: use torch.*, F.* or tensor methods")
        if not isinstance(node.func, ast.Name | ast.Attribute):
            raise Refused("only named functions and methods can be called")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise Refused("*args is not allowed")


def _check_number(value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise Refused(f"the number {value} is too large (at most {MAX_INT:,} in size)")
    if isinstance(value, float) and (not math.isfinite(value) or abs(value) > MAX_FLOAT):
        raise Refused(f"the number {value!r} is too large or not finite")


class Interpreter:
    """Walks a checked program over a scope of tensors. meta=True: shapes only (the dry run)."""

    def __init__(
        self, scope: dict[str, Any], shared: set[str], mutable: set[str], later: dict[str, str], meta: bool
    ) -> None:
        self.env = dict(scope)
        self.shared_ids = {id(scope[k]) for k in shared if isinstance(scope.get(k), torch.Tensor)}
        self.protected = set(shared)
        self.mutable = set(mutable)
        self.later = later  # gradient name -> when it becomes available
        self.meta = meta
        largest = max((v.numel() for v in scope.values() if isinstance(v, torch.Tensor)), default=0)
        self.max_numel = min(MAX_NUMEL, max(NUMEL_FACTOR * largest, 1 << 12))

    def run(self, tree: ast.Module) -> dict[str, Any]:
        for stmt in tree.body:
            try:
                self.statement(stmt)
            except Refused:
                raise
            except NotImplementedError:  # the meta device cannot know the result's shape
                raise Refused(f"line {stmt.lineno}: this needs the values of a tensor to know the size of the "
                              "result (data-dependent): not available here") from None  # fmt: skip
            except MemoryError:
                raise Refused(f"line {stmt.lineno}: out of memory") from None
            except RecursionError:
                raise Refused(f"line {stmt.lineno}: nested too deeply") from None
            except Exception as e:  # torch's own errors (shapes, dtypes, indices) are the learner's feedback
                raise Refused(f"line {stmt.lineno}: {_short(e)}") from None
        return self.env

    # --- statements ---
    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Assign):
            target = node.targets[0]
            value = self.expr(node.value)
            if isinstance(target, ast.Name):
                self.bind(target.id, value, node)
            elif isinstance(target, ast.Subscript):
                tensor = self.owned_tensor(target.value, node, "item assignment")
                index = self.index(target.slice)
                tensor[index] = value
            else:
                raise Refused(f"line {node.lineno}: assign to a name or to x[...]")
        elif isinstance(node, ast.AugAssign):
            if type(node.op) not in AUGOPS:
                raise Refused(f"line {node.lineno}: only += -= *= /= are allowed")
            value = self.expr(node.value)
            if isinstance(node.target, ast.Name):
                tensor = self.owned_tensor(node.target, node, f"{type(node.op).__name__.lower()}-assignment")
                getattr(tensor, AUGOPS[type(node.op)])(value)
            elif isinstance(node.target, ast.Subscript):
                tensor = self.owned_tensor(node.target.value, node, "item assignment")
                index = self.index(node.target.slice)
                tensor[index] = BINOPS[type(node.op)](tensor[index], value)
            else:
                raise Refused(f"line {node.lineno}: += needs a name or x[...]")
        else:  # Expr: only an in-place method call does anything
            call = node.value
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr in IN_PLACE_METHODS
            ):
                raise Refused(f"line {node.lineno}: this line computes a value and drops it; assign it: dx = ...")
            self.expr(call)

    def bind(self, name: str, value: Any, node: ast.stmt) -> None:
        if name in RESERVED or name in ("n", "n_embd"):
            raise Refused(f"line {node.lineno}: {name} cannot be reassigned")
        if name in self.protected:
            raise Refused(f"line {node.lineno}: {name} is a tensor of the forward pass; it cannot be reassigned")
        self.check_value(value)
        self.env[name] = value
        self.mutable.add(name)

    def owned_tensor(self, target: ast.expr, node: ast.stmt, what: str) -> torch.Tensor:
        if not isinstance(target, ast.Name):
            raise Refused(f"line {node.lineno}: {what} works on a name: x[...] = ..., x += ...")
        tensor = self.name(target.id)
        if target.id not in self.mutable or not isinstance(tensor, torch.Tensor) or self.shares_storage(tensor):
            raise Refused(f"line {node.lineno}: {target.id} is shared ({what} would change it); make your "
                          f"own first: {target.id}2 = {target.id}.clone() or torch.zeros_like(...)")  # fmt: skip
        return tensor

    def shares_storage(self, tensor: torch.Tensor) -> bool:
        base = tensor._base if tensor._base is not None else tensor
        return id(tensor) in self.shared_ids or id(base) in self.shared_ids

    # --- expressions ---
    def expr(self, node: ast.expr) -> Any:
        value = self._expr(node)
        self.check_value(value)
        return value

    def _expr(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in RESERVED:
                raise Refused(f"{node.id} can only be called, e.g. torch.zeros_like(x), F.one_hot(Yb, 27), range(n)")
            return self.name(node.id)
        if isinstance(node, ast.UnaryOp):
            value = self.expr(node.operand)
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node, ast.BinOp):
            left, right = self.expr(node.left), self.expr(node.right)
            if isinstance(node.op, ast.Pow):
                if not isinstance(right, int | float) or isinstance(right, bool) or abs(right) > MAX_EXPONENT:
                    raise Refused(f"exponents are numbers between -{MAX_EXPONENT} and {MAX_EXPONENT}")
                if not isinstance(left, torch.Tensor) and left == 0 and right < 0:
                    raise Refused("0 to a negative power")
            if isinstance(node.op, ast.Div) and not isinstance(right, torch.Tensor) and right == 0:
                raise Refused("division by zero")
            if isinstance(left, tuple | range) or isinstance(right, tuple | range):
                # refused before it runs: logprobs.shape * 1000000 is a 2M-entry tuple, in 40 bytes of code
                if not isinstance(node.op, ast.Add) or not (isinstance(left, tuple) and isinstance(right, tuple)):
                    raise Refused(f"line {node.lineno}: shapes and ranges do not do arithmetic; only two shapes "
                                  "join with + (x.shape + (1,))")  # fmt: skip
                if len(left) + len(right) > MAX_TUPLE:
                    raise Refused(f"line {node.lineno}: a shape of more than {MAX_TUPLE} entries")
            return BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.Tuple):
            return tuple(self.expr(e) for e in node.elts)
        if isinstance(node, ast.Attribute):
            base = self.expr(node.value)
            if node.attr not in ATTRIBUTES:
                raise Refused(f".{node.attr} is a method: call it, .{node.attr}(...)")
            if node.attr in ("values", "indices"):
                if not isinstance(base, tuple) or not hasattr(base, node.attr):
                    raise Refused(f".{node.attr} belongs to the result of .max(dim)")
                return getattr(base, node.attr)
            if not isinstance(base, torch.Tensor):
                raise Refused(f".{node.attr} needs a tensor")
            if node.attr == "T" and base.dim() != 2:
                raise Refused(f".T transposes a 2-D tensor; this one has shape {tuple(base.shape)}")
            return tuple(base.shape) if node.attr == "shape" else base.T
        if isinstance(node, ast.Subscript):
            base = self.expr(node.value)
            if not isinstance(base, torch.Tensor | tuple):
                raise Refused("only tensors and shapes can be indexed")
            return base[self.index(node.slice)]
        if isinstance(node, ast.Call):
            return self.call(node)
        raise Refused(f"{type(node).__name__} is not allowed")

    def index(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Slice):
            parts = [self.expr(p) if p is not None else None for p in (node.lower, node.upper, node.step)]
            if any(p is not None and not isinstance(p, int) for p in parts):
                raise Refused("slice bounds are integers")
            return slice(*parts)
        if isinstance(node, ast.Tuple):
            return tuple(self.index(e) for e in node.elts)
        value = self.expr(node)
        if isinstance(value, range):
            return torch.tensor(value, device="meta" if self.meta else "cpu")
        if isinstance(value, torch.Tensor) and value.dtype in (torch.bool, torch.uint8):
            raise Refused("boolean masks select a data-dependent number of entries: not available here")
        return value

    def call(self, node: ast.Call) -> Any:
        args = [self.expr(a) for a in node.args]
        kwargs = {k.arg: self.expr(k.value) for k in node.keywords}
        func = node.func
        if isinstance(func, ast.Name):  # range
            if (
                kwargs
                or not 1 <= len(args) <= 3
                or not all(isinstance(a, int) and not isinstance(a, bool) for a in args)
            ):
                raise Refused("range takes 1 to 3 integers, e.g. range(n)")
            r = range(*args)
            if len(r) > MAX_RANGE:
                raise Refused(f"range of {len(r):,} is too long")
            return r
        assert isinstance(func, ast.Attribute)
        if isinstance(func.value, ast.Name) and func.value.id in ("torch", "F"):
            module, allowed = (torch, TORCH_FUNCTIONS) if func.value.id == "torch" else (F, F_FUNCTIONS)
            if func.attr not in allowed:
                raise Refused(f"{func.value.id}.{func.attr} is not available; these are: "
                              f"{', '.join(sorted(allowed))}")  # fmt: skip
            if func.attr == "one_hot":
                return self.one_hot(args, kwargs)
            if func.attr in ("zeros_like", "ones_like") and kwargs:
                raise Refused(f"torch.{func.attr}(x) takes just the tensor")
            return getattr(module, func.attr)(*args, **kwargs)
        base = self.expr(func.value)
        if not isinstance(base, torch.Tensor):
            raise Refused(f".{func.attr}(...) needs a tensor")
        if func.attr not in METHODS:
            raise Refused(f".{func.attr}(...) is not available")
        if func.attr in IN_PLACE_METHODS:
            if not isinstance(func.value, ast.Name):
                raise Refused(f".{func.attr} changes a tensor in place: call it on a name, dC.{func.attr}(...)")
            self.owned_tensor(func.value, node, f".{func.attr}")  # type: ignore[arg-type]
        if func.attr in ("view", "reshape"):
            shape = args[0] if len(args) == 1 and isinstance(args[0], tuple) else tuple(args)
            if not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
                raise Refused(f".{func.attr} takes integers")
        return getattr(base, func.attr)(*args, **kwargs)

    def one_hot(self, args: list[Any], kwargs: dict[str, Any]) -> torch.Tensor:
        if len(args) < 1 or not isinstance(args[0], torch.Tensor) or args[0].dtype != torch.int64:
            raise Refused("F.one_hot takes an integer tensor such as Yb")
        classes = args[1] if len(args) > 1 else kwargs.get("num_classes")
        if not isinstance(classes, int) or not 1 <= classes <= 1024:
            raise Refused("F.one_hot needs num_classes: F.one_hot(Yb, num_classes=27)")
        if self.meta:  # one_hot reads its input to check it; on the meta device only the shape exists
            return torch.empty((*args[0].shape, classes), dtype=torch.int64, device="meta")
        return F.one_hot(args[0], classes)

    def name(self, name: str) -> Any:
        if name in self.env:
            return self.env[name]
        if name in self.later:
            raise NotDefined(name, f"{name} is not defined yet at this step: {self.later[name]}")
        raise NotDefined(name, f"there is no {name} here (misspelt? a forward tensor is named as in the lecture)")

    def check_value(self, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.numel() > self.max_numel:
                raise Refused(f"a tensor of shape {tuple(value.shape)} ({value.numel():,} entries) is too big; "
                              f"at most {self.max_numel:,} here")  # fmt: skip
            if value.requires_grad:
                raise Refused("autograd is not available here")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            _check_number(value)
        elif isinstance(value, tuple):
            if len(value) > MAX_TUPLE:
                raise Refused(f"a tuple of {len(value):,} entries; a shape has at most {MAX_TUPLE}")
            for v in value:
                self.check_value(v)
        elif not isinstance(value, bool | range | type(None)):
            raise Refused(f"a {type(value).__name__} is not a value a gradient needs")


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:300]


def evaluate(
    source: str, scope: dict[str, Any], shared: set[str], mutable: set[str], later: dict[str, str]
) -> dict[str, Any]:
    """Run the program on copies: first shapes only (meta device), then for real. Returns its names."""
    tree = parse(source)
    meta_scope = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in scope.items()}
    Interpreter(meta_scope, shared, mutable, later, meta=True).run(tree)
    real = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in scope.items()}
    with torch.no_grad():
        return Interpreter(real, shared, mutable, later, meta=False).run(tree)
