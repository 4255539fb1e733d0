"""A learner's gradient code, run safely: parsed with `ast`, interpreted from an allowlist, sizes checked
on the meta device before anything is computed, and every result capped.

No eval/exec and no sandbox library: once a torch object is reachable, a blocklist cannot work
(tensor and storage methods without underscores read and write files). Here nothing is reachable but
what the interpreter hands out: tensors, numbers, shapes, ranges, and calls to the methods and
functions listed below. No strings exist at all. The only control flow is `for name in range(...)`,
as the notebook writes dC: loops nest at most MAX_LOOP_DEPTH deep and a program's iterations, tensor
operations, evaluated expressions and computed entries are capped, counted in the dry run on the meta
device before anything is computed (a loop's count comes from integers and shapes, never from a
tensor's values, so the dry run spends what the real run will). The interpreter runs in a sandbox
process with a memory limit and a timeout (server/sandbox_pool.py); this module is the part that
decides what may run.
"""

from __future__ import annotations

import ast
import builtins
import math
import operator
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

MAX_SOURCE_CHARS = 2000
MAX_AST_NODES = 400
# a whole backward cell (server/learner/cells.py): the notebook's Exercise 1 cell is 473 parts, ~2,600 characters
# with its comments and cmp lines; every cap on what a program computes stays the same
MAX_CELL_CHARS = 8000
MAX_CELL_AST_NODES = 1200
MAX_NUMEL = 1 << 21  # no tensor a program makes is larger than this (2M entries) ...
NUMEL_FACTOR = 16  # ... nor than 16 x the largest tensor in scope (lecture config: 32,768; a broadcast blows past)
MAX_INT = 10**6  # integer constants and computed integers
MAX_FLOAT = 1e12  # float constants and computed Python floats
MAX_EXPONENT = 16  # x ** p with |p| <= 16
MAX_RANGE = 10**5
MAX_TUPLE = 64  # a shape has at most this many entries (torch's own limit on dimensions)
MAX_LOOP_DEPTH = 3  # for loops nest at most this deep (the notebook's dC loop nests 2)
# loop-body runs in all, outer loops' included: the largest config's dC loop (batch 256, block 8) runs 256 + 2,048
MAX_ITERATIONS = 4096
# tensor operations in all (that dC loop: 2,049); the dry run spends far more on one than on a name or an x[k, j]
MAX_TENSOR_OPS = 4096
MAX_EVALUATIONS = 1 << 16  # expressions evaluated in all, names and numbers included (that dC loop: ~20,000)
# tensor entries read and written in all, multiply-adds for @: 2x the largest config's heaviest step (dW1, dembcat)
MAX_WORK = 1 << 28

STATEMENTS = (ast.Assign, ast.AugAssign, ast.Expr, ast.For)
COMPARISONS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}  # fmt: skip
EXPRESSIONS = (
    ast.BinOp, ast.UnaryOp, ast.Call, ast.Attribute, ast.Subscript, ast.Name, ast.Constant, ast.Tuple,
    ast.Slice, ast.keyword, ast.Load, ast.Store, ast.Compare, *COMPARISONS,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.MatMult, ast.Pow, ast.USub, ast.UAdd,
)  # fmt: skip
# float('-inf'): the one string a program may write, as the causal mask's fill; float() of nothing else
INFINITIES = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf}
SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.MatMult: "@", ast.Pow: "**"}
BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.MatMult: operator.matmul, ast.Pow: operator.pow,
}  # fmt: skip
AUGOPS = {ast.Add: "add_", ast.Sub: "sub_", ast.Mult: "mul_", ast.Div: "div_"}
# the lecture's vocabulary of torch, and an attention head's (transpose, masked_fill), and nothing else
METHODS = {
    "sum", "mean", "max", "min", "exp", "log", "tanh", "view", "reshape", "clone", "index_add_", "t",
    "abs", "sqrt", "pow", "unsqueeze", "squeeze", "softmax", "log_softmax", "float", "expand_as", "sigmoid",
    "transpose", "masked_fill",
}  # fmt: skip
IN_PLACE_METHODS = {"index_add_"}
ATTRIBUTES = {"T", "shape", "values", "indices"}
TORCH_FUNCTIONS = {
    "zeros_like", "ones_like", "tanh", "exp", "log", "softmax", "log_softmax", "sigmoid", "tril", "ones",
}  # fmt: skip
F_FUNCTIONS = {"one_hot", "softmax", "log_softmax"}
KEYWORDS = {"dim", "keepdim", "num_classes"}
RESERVED = {"torch", "F", "range", "float"}
# methods whose every argument is a dim or a size
INT_ARGUMENTS = {"sum", "mean", "view", "reshape", "unsqueeze", "squeeze", "softmax", "log_softmax", "transpose"}
DATA_VALUE = (
    "a value read out of a tensor is data, which the dry run on shapes alone cannot know, so it never decides a "
    "shape, a loop or an index of a shape"
)


class Refused(ValueError):
    """Code that will not run, with a reason a learner can act on."""


@dataclass
class Cost:
    """What a program spends in a run; the dry run refuses it past a cap, before anything is computed."""

    iterations: int = 0  # loop-body runs
    tensor_ops: int = 0  # operations with a tensor operand or result
    evaluations: int = 0  # expressions evaluated
    work: int = 0  # tensor entries read and written, multiply-adds for @

    def add(self, other: Cost) -> None:
        self.iterations += other.iterations
        self.tensor_ops += other.tensor_ops
        self.evaluations += other.evaluations
        self.work += other.work

    def within(self, limit: Cost) -> bool:
        """Whether every count is at most the limit's."""
        return (
            self.iterations <= limit.iterations
            and self.tensor_ops <= limit.tensor_ops
            and self.evaluations <= limit.evaluations
            and self.work <= limit.work
        )


class OverBudget(Refused):
    """A run past a budget it was given below the caps (the feedback's reruns of a learner's code)."""


class NotDefined(Refused):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def read(source: str, cell: bool = False) -> ast.Module:
    """The syntax tree of plain-ASCII code of a bounded size, not yet checked against the allowlist; or Refused."""
    limit = MAX_CELL_CHARS if cell else MAX_SOURCE_CHARS
    if len(source) > limit:
        raise Refused(f"the code is {len(source)} characters long; at most {limit}")
    bad = sorted({c for c in source if not (c.isascii() and (c.isprintable() or c in "\n\t"))})
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:5])
        raise Refused(f"only plain ASCII is accepted (found {shown}): retype the line, look-alike letters hide here")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings would go to the server's log
            return ast.parse(source, mode="exec")
    except SyntaxError as e:
        raise Refused(f"syntax error on line {e.lineno}: {e.msg}") from None
    except (MemoryError, RecursionError, ValueError):  # parser bombs: deeply nested brackets
        raise Refused("the code is nested too deeply to read") from None


def parse(source: str, cell: bool = False) -> ast.Module:
    """The syntax tree of a program checked against the allowlist (cell: a whole backward cell, larger), or Refused."""
    return _check_tree(read(source, cell), cell)


def _check_tree(tree: ast.Module, cell: bool) -> ast.Module:
    limit = MAX_CELL_AST_NODES if cell else MAX_AST_NODES
    count = 0
    infinities = set()  # the string constants of float('-inf'): the only strings a program has
    for node in ast.walk(tree):
        count += 1
        if count > limit:
            raise Refused(
                f"the code has more than {limit} parts; "
                + ("a backward cell takes a few dozen lines" if cell else "a gradient takes a few lines")
            )
        if node in infinities:
            continue
        _check_node(node)
        if _is_float_call(node):
            infinities.add(node.args[0])  # type: ignore[attr-defined]
    if not tree.body:
        raise Refused("there is no code: write the gradient(s) of this step, e.g. dx = ...")
    _check_loop_depth(tree.body, 0)
    return tree


def _is_float_call(node: ast.AST) -> bool:
    """float('-inf') (or 'inf'), as the causal mask writes it; float() of anything else is refused."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float"):
        return False
    (arg,) = node.args  # _check_node refused any other form
    return isinstance(arg, ast.Constant) and arg.value in INFINITIES


def _check_loop_depth(body: list[ast.stmt], depth: int) -> None:
    for stmt in body:
        if isinstance(stmt, ast.For):
            if depth + 1 > MAX_LOOP_DEPTH:
                raise Refused(f"line {stmt.lineno}: loops nest at most {MAX_LOOP_DEPTH} deep")
            _check_loop_depth(stmt.body, depth + 1)


def _check_node(node: ast.AST) -> None:
    if isinstance(node, ast.Module):
        return
    if isinstance(node, ast.stmt):
        if not isinstance(node, STATEMENTS):
            raise Refused(f"line {node.lineno}: only assignments (x = ..., x += ..., x[i] = ...), x.index_add_(...) "
                          f"and for loops over range(...) are allowed, not {type(node).__name__.lower()}")  # fmt: skip
        if isinstance(node, ast.Assign) and len(node.targets) != 1:
            raise Refused(f"line {node.lineno}: one target per assignment (a = b = ... is not allowed)")
        if isinstance(node, ast.For):
            _check_loop(node)
        return
    if not isinstance(node, EXPRESSIONS):
        what = {
            ast.JoinedStr: "f-strings", ast.Lambda: "lambdas", ast.ListComp: "comprehensions",
            ast.GeneratorExp: "generators", ast.NamedExpr: "the walrus operator", ast.List: "lists",
            ast.Dict: "dicts", ast.BoolOp: "and/or", ast.IfExp: "if expressions",
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
    elif isinstance(node, ast.Compare):
        if len(node.ops) != 1:
            raise Refused("one comparison at a time (tril == 0), not a chain (a < b < c)")
    elif isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id == "float":
            args = node.args
            if (
                node.keywords
                or len(args) != 1
                or not isinstance(args[0], ast.Constant)
                or args[0].value not in INFINITIES
            ):
                raise Refused("float(...) writes an infinity only: float('-inf'), float('inf')")
        elif isinstance(node.func, ast.Name) and node.func.id != "range":
            raise Refused(f"{node.func.id}(...) cannot be called: use torch.*, F.* or tensor methods")
        if not isinstance(node.func, ast.Name | ast.Attribute):
            raise Refused("only named functions and methods can be called")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise Refused("*args is not allowed")


def _check_loop(node: ast.For) -> None:
    if not isinstance(node.target, ast.Name):
        raise Refused(f"line {node.lineno}: a loop variable is one plain name: for k in range(n)")
    it = node.iter
    if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"):
        raise Refused(f"line {node.lineno}: a loop runs over range(...) only: for k in range(Xb.shape[0])")
    if node.orelse:
        raise Refused(f"line {node.lineno}: for ... else is not available; a loop is for k in range(...) and its body")


def _check_number(value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise Refused(f"the number {value} is too large (at most {MAX_INT:,} in size)")
    if isinstance(value, float) and (not math.isfinite(value) or abs(value) > MAX_FLOAT):
        raise Refused(f"the number {value!r} is too large or not finite")


@dataclass(frozen=True)
class Names:
    """The names a program starts with, and what it may do with each."""

    given: frozenset[str]  # every name in scope
    shared: frozenset[str] = frozenset()  # tensors it reads but never rebinds or changes (forward tensors, inputs)
    mutable: frozenset[str] = frozenset()  # given tensors that are its own copies: it may change them in place
    later: Mapping[str, str] = field(default_factory=dict)  # names not in scope yet -> when they come
    unit: str = "step"  # what the program is: a backward "step", or a whole cell, read "line" by line

    @property
    def kept(self) -> frozenset[str]:
        """The names never rebound: the lecture's sizes, and every given name that is neither a tensor it reads
        nor one of its own (the net's sizes: hs, T)."""
        return frozenset(KEPT_NAMES) | (self.given - self.shared - self.mutable)


# calls whose result may be the tensor they are called on, or a view of it (torch returns x itself for x.float()
# of a float x and for +x): a name bound to one shares its memory; every other call and operator makes a new tensor
FRESH_METHODS = {
    "sum", "mean", "max", "min", "exp", "log", "tanh", "clone", "abs", "sqrt", "pow", "softmax", "log_softmax",
    "sigmoid", "masked_fill",
}  # fmt: skip
KEPT_NAMES = ("n", "n_embd", "n_hidden")
BUILTINS = frozenset(dir(builtins))  # integers of the scope a program reads and never rebinds


def check_program(program: str | ast.Module, names: Names, cell: bool = False) -> ast.Module:
    """Every static rule of learner code, for the sandbox, the export and the compiled block alike: the allowlist,
    then scope (a name is read after it is defined), binding (no name the lecture gives is rebound or hidden by a
    loop variable) and ownership (no in-place write into a tensor the program does not own, in any loop body,
    run or not). The checked tree, or Refused with the reason a learner is told."""
    tree = parse(program, cell) if isinstance(program, str) else _check_tree(program, cell)
    rules = _Rules(names)
    rules.block(tree.body, set(names.given), [])
    return tree


class _Rules:
    """The scope, binding and ownership rules, walked over the statements in order (loop bodies once)."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self.owned = set(names.mutable)
        self.bindings: dict[str, list[ast.expr]] = {}

    def block(self, body: list[ast.stmt], defined: set[str], loops: list[str]) -> None:
        if not loops:  # the whole program: which names own their tensor, from every binding anywhere in it
            self.ownership(body)
        for stmt in body:
            self.statement(stmt, defined, loops)

    def ownership(self, body: list[ast.stmt]) -> None:
        """A name owns its tensor if every binding of it, in any loop body, makes a tensor or a view of an owned one."""
        for stmt in body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    self.bindings.setdefault(node.targets[0].id, []).append(node.value)
        shared = self.names.given - self.names.mutable
        self.owned = (set(self.names.mutable) | set(self.bindings)) - shared
        changed = True
        while changed:
            changed = False
            for name, values in self.bindings.items():
                if name in self.owned and any(_aliases(v) - self.owned for v in values):
                    self.owned.discard(name)
                    changed = True

    def statement(self, stmt: ast.stmt, defined: set[str], loops: list[str]) -> None:
        line = stmt.lineno
        if isinstance(stmt, ast.Assign):
            self.reads(stmt.value, defined)
            target = stmt.targets[0]
            if isinstance(target, ast.Name):
                self.bind(target.id, line)
                defined.add(target.id)
            elif isinstance(target, ast.Subscript):
                self.reads(target.slice, defined)
                self.write(target.value, line, "item assignment", defined)
            else:
                raise Refused(f"line {line}: assign to a name or to x[...]")
        elif isinstance(stmt, ast.AugAssign):
            if type(stmt.op) not in AUGOPS:
                raise Refused(f"line {line}: only += -= *= /= are allowed")
            self.reads(stmt.value, defined)
            if isinstance(stmt.target, ast.Name):
                self.write(stmt.target, line, f"{type(stmt.op).__name__.lower()}-assignment", defined)
            elif isinstance(stmt.target, ast.Subscript):
                self.reads(stmt.target.slice, defined)
                self.write(stmt.target.value, line, "item assignment", defined)
            else:
                raise Refused(f"line {line}: += needs a name or x[...]")
        elif isinstance(stmt, ast.For):
            assert isinstance(stmt.target, ast.Name)  # the allowlist let only `for name in range(...)` through
            self.reads(stmt.iter, defined)
            name = stmt.target.id
            hidden = self.hidden_by(name, loops)
            if hidden:
                raise Refused(f"line {line}: the loop variable {name} would hide {hidden}; a loop variable is "
                              "a new name (k, j, i)")  # fmt: skip
            self.bind(name, line, loop=True)
            inside = defined | {name}
            self.block(stmt.body, inside, [*loops, name])
            # after the loop as Python has it; a loop that ran no times leaves them undefined, which the run says
            defined |= inside
        else:  # Expr: only an in-place method call does anything
            call = stmt.value
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr in IN_PLACE_METHODS
            ):
                raise Refused(f"line {line}: this line computes a value and drops it; assign it: dx = ...")
            self.reads(call, defined)

    def reads(self, node: ast.expr, defined: set[str]) -> None:
        """Every name the expression reads is defined, torch, F and range are only called, attributes are allowed."""
        if isinstance(node, ast.Name):
            if node.id in RESERVED:
                raise Refused(f"{node.id} can only be called, e.g. torch.zeros_like(x), F.one_hot(Yb, 27), range(n)")
            if node.id not in defined:
                if node.id in self.names.later:
                    raise NotDefined(node.id, f"{node.id} is not defined yet at this {self.names.unit}: "
                                              f"{self.names.later[node.id]}")  # fmt: skip
                raise NotDefined(node.id, f"there is no {node.id} here (misspelt? a forward tensor is named as in "
                                          "the lecture)")  # fmt: skip
            return
        if isinstance(node, ast.Call):
            func = node.func
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                self.reads(arg, defined)
            if isinstance(func, ast.Name):  # range or float('-inf'): the allowlist let no other name be called
                return
            assert isinstance(func, ast.Attribute)
            if isinstance(func.value, ast.Name) and func.value.id in ("torch", "F"):
                allowed = TORCH_FUNCTIONS if func.value.id == "torch" else F_FUNCTIONS
                if func.attr not in allowed:
                    raise Refused(f"{func.value.id}.{func.attr} is not available; these are: "
                                  f"{', '.join(sorted(allowed))}")  # fmt: skip
                return
            self.reads(func.value, defined)
            if func.attr not in METHODS:
                raise Refused(f".{func.attr}(...) is not available")
            if func.attr in IN_PLACE_METHODS:
                if not isinstance(func.value, ast.Name):
                    raise Refused(f".{func.attr} changes a tensor in place: call it on a name, dC.{func.attr}(...)")
                self.write(func.value, node.lineno, f".{func.attr}", defined)
            return
        if isinstance(node, ast.Attribute):
            self.reads(node.value, defined)
            if node.attr not in ATTRIBUTES:
                raise Refused(f".{node.attr} is a method: call it, .{node.attr}(...)")
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.reads(child, defined)

    def bind(self, name: str, line: int, loop: bool = False) -> None:
        if not loop:  # a loop variable: hidden_by said what it may not be
            if name in RESERVED or name in self.names.kept:
                raise Refused(f"line {line}: {name} cannot be reassigned")
            if name in self.names.shared:
                raise Refused(f"line {line}: {name} is a tensor of the forward pass; it cannot be reassigned")
        if name in BUILTINS:  # never a name a Python file has already: an exported file reads the learner's value
            raise Refused(f"line {line}: {name} is a name Python has; a gradient's names are the lecture's or new")

    def write(self, target: ast.expr, line: int, what: str, defined: set[str]) -> None:
        """An in-place write into the tensor a name holds: a tensor the program owns, never a shared one or a view."""
        if not isinstance(target, ast.Name):
            raise Refused(f"line {line}: {what} works on a name: x[...] = ..., x += ...")
        self.reads(target, defined)
        if target.id not in self.owned:
            raise Refused(f"line {line}: {target.id} is shared ({what} would change it); make your "
                          f"own first: {target.id}2 = {target.id}.clone() or torch.zeros_like(...)")  # fmt: skip

    def hidden_by(self, name: str, loops: list[str]) -> str:
        """What a loop variable of that name would hide ('' if nothing): only new names may count."""
        if name in RESERVED:
            return name
        if name in self.names.shared:
            return f"the tensor {name}"
        if name in self.names.given or name in self.names.later:
            return f"the gradient {name}" if name.startswith("d") else name
        if name in loops:
            return "the variable of the loop around it"
        return ""


def _aliases(node: ast.expr) -> set[str]:
    """The names whose tensor the value may be, or be a view of (x, x.T, x[k], x.view(...), +x, (x, y))."""
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Attribute):
        return set() if node.attr == "shape" else _aliases(node.value)
    if isinstance(node, ast.Subscript):
        return _aliases(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
        return _aliases(node.operand)
    if isinstance(node, ast.Tuple):
        return set().union(*map(_aliases, node.elts)) if node.elts else set()
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        func = node.func
        if isinstance(func.value, ast.Name) and func.value.id in ("torch", "F") or func.attr in FRESH_METHODS:
            return set()
        return _aliases(func.value)
    return set()  # arithmetic and constants make new values


class Interpreter:
    """Walks a checked program over a scope of tensors. meta=True: shapes only (the dry run)."""

    def __init__(
        self,
        scope: dict[str, Any],
        shared: set[str],
        mutable: set[str],
        later: dict[str, str],
        meta: bool,
        wanted: dict[str, tuple[int, ...]] | None = None,
        unit: str = "step",
        limit: Cost | None = None,
    ) -> None:
        self.env = dict(scope)
        self.given = set(scope)
        self.names = Names(frozenset(scope), frozenset(shared), frozenset(mutable), dict(later), unit)
        self.shared_ids = {id(scope[k]) for k in shared if isinstance(scope.get(k), torch.Tensor)}
        self.protected = set(shared)
        self.mutable = set(mutable)
        self.later = later  # gradient name -> when it becomes available
        self.unit = unit  # what the program is: a backward "step", or a whole cell, read "line" by line
        self.meta = meta
        self.wanted = wanted or {}  # gradient name -> its shape: a shape error can suggest the fix that gives it
        largest = max((v.numel() for v in scope.values() if isinstance(v, torch.Tensor)), default=0)
        self.max_numel = min(MAX_NUMEL, max(NUMEL_FACTOR * largest, 1 << 12))
        self.cost = Cost()
        self.limit = limit  # a budget below the caps (the feedback's reruns): past it, OverBudget
        self.loops: list[list[Any]] = []  # [name, value] of each loop running, outermost first
        self.assigned: tuple[ast.expr, tuple[int, ...]] | None = None  # (value node, wanted shape) of the statement

    def run(self, tree: ast.Module, after: Callable[[ast.stmt, dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Runs the program; after(statement, names) is called after each top-level statement."""
        check_program(tree, self.names, cell=self.unit == "line")  # the static rules hold before anything runs
        for stmt in tree.body:
            self.block([stmt])
            if after is not None:
                after(stmt, self.env)
        return self.env

    def block(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            try:
                self.statement(stmt)
            except Refused:
                raise
            except NotImplementedError:  # the meta device cannot know the result's shape
                raise Refused(f"{self.where(stmt)}: this needs the values of a tensor to know the size of the "
                              "result (data-dependent): not available here") from None  # fmt: skip
            except MemoryError:
                raise Refused(f"{self.where(stmt)}: out of memory") from None
            except RecursionError:
                raise Refused(f"{self.where(stmt)}: nested too deeply") from None
            except Exception as e:  # torch's own errors (shapes, dtypes, indices) are the learner's feedback
                raise Refused(f"{self.where(stmt)}: {short_error(e)}") from None

    def where(self, node: ast.stmt | ast.expr) -> str:
        """'line 4', or 'line 4 (k = 3, j = 1)' inside loops: which iteration went wrong."""
        loops = ", ".join(f"{name} = {value}" for name, value in self.loops)
        return f"line {node.lineno}" + (f" ({loops})" if loops else "")

    # --- statements ---
    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Assign):
            target = node.targets[0]
            wanted = self.wanted.get(target.id) if isinstance(target, ast.Name) else None
            self.assigned = (node.value, wanted) if wanted else None
            value = self.expr(node.value)
            self.assigned = None
            if isinstance(target, ast.Name):
                self.bind(target.id, value, node)
            elif isinstance(target, ast.Subscript):
                tensor = self.owned_tensor(target.value, node, "item assignment")
                index = self.index(target.slice)
                touched = self.touched(node, tensor, index)  # refused before it runs: x[i, j] = c writes N x N
                tensor[index] = value
                self.spend(node, value, macs=touched)
            else:
                raise Refused(f"line {node.lineno}: assign to a name or to x[...]")
        elif isinstance(node, ast.AugAssign):
            if type(node.op) not in AUGOPS:
                raise Refused(f"line {node.lineno}: only += -= *= /= are allowed")
            value = self.expr(node.value)
            if isinstance(node.target, ast.Name):
                tensor = self.owned_tensor(node.target, node, f"{type(node.op).__name__.lower()}-assignment")
                getattr(tensor, AUGOPS[type(node.op)])(value)
                self.spend(node, tensor, value)
            elif isinstance(node.target, ast.Subscript):
                tensor = self.owned_tensor(node.target.value, node, "item assignment")
                index = self.index(node.target.slice)
                touched = self.touched(node, tensor, index)
                # as Python runs x[i] += v: in place on x[i] (a view, or a copy for an index tensor), stored back
                part = getattr(tensor[index], AUGOPS[type(node.op)])(value)
                tensor[index] = part
                self.spend(node, part, value, macs=touched)  # read, changed (part), written back
            else:
                raise Refused(f"line {node.lineno}: += needs a name or x[...]")
        elif isinstance(node, ast.For):
            self.loop(node)
        else:  # Expr: an in-place method call (check_program refused any other before the run)
            self.expr(node.value)

    def loop(self, node: ast.For) -> None:
        assert isinstance(node.target, ast.Name)  # parse() let only `for name in range(...)` through
        name = node.target.id
        hidden = self.hidden_by(name)
        if hidden:
            raise Refused(f"line {node.lineno}: the loop variable {name} would hide {hidden}; a loop variable is "
                          "a new name (k, j, i)")  # fmt: skip
        span = self.expr(node.iter)
        assert isinstance(span, range)
        self.cost.iterations += len(span)  # counted before the loop runs: a too-long loop is refused at once
        self.check_limit()
        if self.cost.iterations > MAX_ITERATIONS:
            raise Refused(f"{self.where(node)}: the loops would run more than {MAX_ITERATIONS:,} times in all "
                          f"({self.cost.iterations:,} with this one); the notebook's dC loop runs n x block_size "
                          "times")  # fmt: skip
        self.loops.append([name, None])
        try:
            for value in span:
                self.loops[-1][1] = value
                self.env[name] = value
                self.block(node.body)
        finally:
            self.loops.pop()

    def hidden_by(self, name: str) -> str:
        """What a loop variable of that name would hide ('' if nothing): only new names may count."""
        if name in RESERVED:
            return name
        if name in self.protected:
            return f"the tensor {name}"
        if name in self.given or name in self.later:
            return f"the gradient {name}" if name.startswith("d") else name
        if any(name == running for running, _ in self.loops):
            return "the variable of the loop around it"
        return ""

    def bind(self, name: str, value: Any, node: ast.stmt) -> None:
        if name in RESERVED or name in self.names.kept:
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

    def spend(self, node: ast.AST, *values: Any, macs: int = 0) -> None:
        """Count one tensor operation and the entries it read and wrote; past a cap, the program is refused."""
        numel = macs
        tensors = macs > 0  # an indexed write of a number into a tensor is an operation on it
        for v in values:
            for t in v if isinstance(v, tuple) else (v,):
                if isinstance(t, torch.Tensor):
                    numel += t.numel()
                    tensors = True
        if not tensors:
            return
        self.cost.tensor_ops += 1
        self.cost.work += numel
        line = getattr(node, "lineno", 0)
        self.check_limit()
        if self.cost.tensor_ops > MAX_TENSOR_OPS:
            raise Refused(f"line {line}: more than {MAX_TENSOR_OPS:,} tensor operations in all; a gradient takes a "
                          "few (loop over fewer items, or use whole-tensor operations)")  # fmt: skip
        if self.cost.work > MAX_WORK:
            raise Refused(f"line {line}: the code computes more than {MAX_WORK:,} tensor entries in all; a "
                          "gradient takes far fewer")  # fmt: skip

    def check_limit(self) -> None:
        if self.limit is not None and not self.cost.within(self.limit):
            raise OverBudget("the reruns spent their budget")

    def touched(self, node: ast.AST, tensor: torch.Tensor, index: Any) -> int:
        """The entries x[index] reads or writes, from shapes alone: every index pair of the index tensors broadcast
        together, times the entries of the dims sliced; refused past the size of a tensor a program may make."""
        parts = index if isinstance(index, tuple) else (index,)
        if not _gathers(index):
            return 0  # a view: x[k, j] = v writes what v has, counted with it
        meta = tuple(
            (0 if p.dim() == 0 else torch.empty(p.shape, dtype=p.dtype, device="meta"))
            if isinstance(p, torch.Tensor)
            else p
            for p in parts
        )
        region = torch.empty(tensor.shape, device="meta")[meta].shape
        if region.numel() > self.max_numel:
            shapes = " and ".join(fmt_shape(p.shape) for p in parts if isinstance(p, torch.Tensor) and p.dim())
            raise Refused(f"{self.where(node)}: this index reaches {region.numel():,} entries (its index tensors, "
                          f"{shapes}, broadcast together, times the dims it slices); at most {self.max_numel:,} "
                          "here")  # fmt: skip
        return region.numel()

    # --- expressions ---
    def expr(self, node: ast.expr) -> Any:
        self.cost.evaluations += 1
        if self.limit is not None and self.cost.evaluations > self.limit.evaluations:
            raise OverBudget("the reruns spent their budget")
        if self.cost.evaluations > MAX_EVALUATIONS:
            raise Refused(f"line {node.lineno}: more than {MAX_EVALUATIONS:,} expressions evaluated in all; "
                          "loop over fewer items")  # fmt: skip
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
        if isinstance(node, ast.Compare):
            left, right = self.expr(node.left), self.expr(node.comparators[0])
            if (
                isinstance(left, torch.Tensor)
                and isinstance(right, torch.Tensor)
                and not _broadcasts(left.shape, right.shape)
            ):
                raise Refused(f"{self.where(node)}: {_operand(node.left)} and {_operand(node.comparators[0])}: "
                              f"{fmt_shape(left.shape)} and {fmt_shape(right.shape)} do not broadcast")  # fmt: skip
            if isinstance(left, tuple | range) or isinstance(right, tuple | range):
                raise Refused(f"{self.where(node)}: a comparison is of tensors and numbers (tril == 0)")
            result = COMPARISONS[type(node.ops[0])](left, right)
            self.spend(node, left, right, result)
            return result
        if isinstance(node, ast.UnaryOp):
            value = self.expr(node.operand)
            result = -value if isinstance(node.op, ast.USub) else +value
            self.spend(node, value, result)
            return result
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
            if isinstance(left, torch.Tensor) and isinstance(right, torch.Tensor):
                self.check_operands(node, left, right)
            result = BINOPS[type(node.op)](left, right)
            macs = 0
            if isinstance(node.op, ast.MatMult) and isinstance(result, torch.Tensor) and left.dim():
                macs = result.numel() * left.shape[-1]
            self.spend(node, left, right, result, macs=macs)
            return result
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
                raise Refused(f".T transposes a 2-D tensor; this one has shape {tuple(base.shape)}: "
                              "x.transpose(-2, -1) swaps its last two dims")  # fmt: skip
            return tuple(base.shape) if node.attr == "shape" else base.T
        if isinstance(node, ast.Subscript):
            base = self.expr(node.value)
            if not isinstance(base, torch.Tensor | tuple):
                raise Refused("only tensors and shapes can be indexed")
            index = self.index(node.slice, values=isinstance(base, tuple))
            if isinstance(base, tuple):
                if any(isinstance(p, torch.Tensor) for p in (index if isinstance(index, tuple) else (index,))):
                    # the dry run has no values: (1, 100000)[Yb[0]] would be 1 there and 100,000 when it runs
                    raise Refused(f"{self.where(node)}: a shape is indexed by integers (x.shape[0]), not by a "
                                  "tensor's value: " + DATA_VALUE)  # fmt: skip
                return base[index]
            if _gathers(index):  # an index tensor gathers a copy: an operation, where x[k, j] is a view
                self.touched(node, base, index)
                result = base[index]
                self.spend(node, base, result)
                return result
            return base[index]
        if isinstance(node, ast.Call):
            return self.call(node)
        raise Refused(f"{type(node).__name__} is not allowed")

    def check_operands(self, node: ast.BinOp, left: torch.Tensor, right: torch.Tensor) -> None:
        """torch's shape errors, said with the operands as written and their shapes (and the likely fix)."""
        a, b = _operand(node.left), _operand(node.right)
        op = SYMBOLS[type(node.op)]
        if isinstance(node.op, ast.MatMult):
            if not left.dim() or not right.dim():
                return  # torch says what is wrong with a 0-dim operand
            inner = right.shape[-2] if right.dim() >= 2 else right.shape[0]
            if left.shape[-1] == inner:
                return
            fix = self.matmul_fix(node, left, right) if left.dim() == right.dim() == 2 else None
            raise Refused(f"{self.where(node)}: {a} @ {b}: {fmt_shape(left.shape)} @ {fmt_shape(right.shape)}: "
                          f"inner sizes {left.shape[-1]} and {inner}"
                          + (f" — did you mean {fix}?" if fix else " differ: the left's last size must be the "
                             "right's first"))  # fmt: skip
        try:
            torch.broadcast_shapes(left.shape, right.shape)
            return
        except RuntimeError:
            pass
        ndim = max(left.dim(), right.dim())
        ls, rs = (1,) * (ndim - left.dim()) + tuple(left.shape), (1,) * (ndim - right.dim()) + tuple(right.shape)
        dim = next(i for i in range(ndim - 1, -1, -1) if ls[i] != rs[i] and 1 not in (ls[i], rs[i]))
        fix = ""
        if left.dim() == right.dim() == 2:
            if _broadcasts(left.shape, right.T.shape):
                fix = f" — did you mean {a} {op} {_transposed(node.right)}?"
            elif _broadcasts(left.T.shape, right.shape):
                fix = f" — did you mean {_transposed(node.left)} {op} {b}?"
        raise Refused(f"{self.where(node)}: {a} {op} {b}: {fmt_shape(left.shape)} and {fmt_shape(right.shape)} do not "
                      f"broadcast: dim {dim} has {ls[dim]} and {rs[dim]} (sizes must match, or one be 1)"
                      + fix)  # fmt: skip

    def matmul_fix(self, node: ast.BinOp, left: torch.Tensor, right: torch.Tensor) -> str | None:
        """The operands transposed or swapped so that the product exists; the one of the wanted shape first."""
        a, b = _operand(node.left), _operand(node.right)
        at, bt = _transposed(node.left), _transposed(node.right)
        (l0, l1), (r0, r1) = left.shape, right.shape
        options = [  # text, (rows, inner, inner, cols)
            (f"{at} @ {b}", (l1, l0, r0, r1)), (f"{a} @ {bt}", (l0, l1, r1, r0)), (f"{b} @ {a}", (r0, r1, l0, l1)),
            (f"{at} @ {bt}", (l1, l0, r1, r0)), (f"{bt} @ {a}", (r1, r0, l0, l1)), (f"{b} @ {at}", (r0, r1, l1, l0)),
        ]  # fmt: skip
        working = [(text, (rows, cols)) for text, (rows, i, j, cols) in options if i == j]
        wanted = self.assigned[1] if self.assigned and self.assigned[0] is node else None
        best = [text for text, shape in working if shape == wanted] or [text for text, _ in working]
        return best[0] if best else None

    def index(self, node: ast.expr, values: bool = False) -> Any:
        """An index as torch takes it; values: as it is (a tuple's index, checked to be integers by the caller)."""
        if isinstance(node, ast.Slice):
            parts = [self.expr(p) if p is not None else None for p in (node.lower, node.upper, node.step)]
            if any(p is not None and not isinstance(p, int) for p in parts):
                raise Refused("slice bounds are integers")
            return slice(*parts)
        if isinstance(node, ast.Tuple):
            return tuple(self.index(e, values) for e in node.elts)
        value = self.expr(node)
        if values:
            return value
        if isinstance(value, range):
            return torch.tensor(value, device="meta" if self.meta else "cpu")
        if isinstance(value, torch.Tensor) and value.dtype in (torch.bool, torch.uint8):
            raise Refused("boolean masks select a data-dependent number of entries: not available here")
        if self.meta and isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
            # a 0-dim integer tensor (ix = Xb[k,j]) indexes as the integer it holds: the dry run has no values,
            # and any integer gives the shape; the real run checks the value against the size
            return 0
        return value

    def call(self, node: ast.Call) -> Any:
        func = node.func
        if isinstance(func, ast.Name) and func.id == "float":  # float('-inf'): the allowlist let nothing else by
            return INFINITIES[node.args[0].value]  # type: ignore[attr-defined]
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
            self.integers(node, [*args[1:], *kwargs.values()])
            if func.attr == "one_hot":
                result = self.one_hot(args, kwargs)
            elif func.attr == "ones":
                result = self.ones(node, args, kwargs)
            else:
                if func.attr in ("zeros_like", "ones_like") and kwargs:
                    raise Refused(f"torch.{func.attr}(x) takes just the tensor")
                result = getattr(module, func.attr)(*args, **kwargs)
            self.spend(node, *args, *kwargs.values(), result)
            return result
        base = self.expr(func.value)
        if not isinstance(base, torch.Tensor):
            raise Refused(f".{func.attr}(...) needs a tensor")
        if func.attr not in METHODS:
            raise Refused(f".{func.attr}(...) is not available")
        if func.attr in IN_PLACE_METHODS:
            if not isinstance(func.value, ast.Name):
                raise Refused(f".{func.attr} changes a tensor in place: call it on a name, dC.{func.attr}(...)")
            self.owned_tensor(func.value, node, f".{func.attr}")  # type: ignore[arg-type]
        positions = args if func.attr in INT_ARGUMENTS else args[:1] if func.attr in IN_PLACE_METHODS else []
        self.integers(node, [*positions, *kwargs.values()])
        if func.attr in ("view", "reshape"):
            shape = args[0] if len(args) == 1 and isinstance(args[0], tuple) else tuple(args)
            if not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
                raise Refused(f".{func.attr} takes integers")
        result = getattr(base, func.attr)(*args, **kwargs)
        self.spend(node, base, *args, *kwargs.values(), result)
        return result

    def integers(self, node: ast.Call, values: list[Any]) -> None:
        """Dims, sizes and counts are Python integers: never a tensor, whose value only the real run knows."""
        if any(isinstance(v, torch.Tensor) for v in values):
            raise Refused(f"{self.where(node)}: a dim, a size or a count is an integer (1, n, x.shape[0]): "
                          + DATA_VALUE)  # fmt: skip

    def ones(self, node: ast.Call, args: list[Any], kwargs: dict[str, Any]) -> torch.Tensor:
        """torch.ones(T, T): a size of integers, refused past the cap before anything is made."""
        shape = args[0] if len(args) == 1 and isinstance(args[0], tuple) else tuple(args)
        if kwargs or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise Refused(f"{self.where(node)}: torch.ones takes sizes, integers: torch.ones(T, T)")
        if len(shape) > MAX_TUPLE or math.prod(shape) > self.max_numel:
            raise Refused(f"{self.where(node)}: a tensor of shape {fmt_shape(shape)} is too big; at most "
                          f"{self.max_numel:,} entries here")  # fmt: skip
        return torch.ones(shape, device="meta" if self.meta else "cpu")

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
            raise NotDefined(name, f"{name} is not defined yet at this {self.unit}: {self.later[name]}")
        raise NotDefined(name, f"there is no {name} here (misspelt? a forward tensor is named as in the lecture)")

    def check_value(self, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.numel() > self.max_numel:
                raise Refused(f"a tensor of shape {tuple(value.shape)} ({value.numel():,} entries) is too big; "
                              f"at most {self.max_numel:,} here")  # fmt: skip
            if value.requires_grad:
                raise Refused("autograd is not available here")
        elif isinstance(value, float) and math.isinf(value):
            pass  # float('-inf'), the causal mask's fill: a number, however large, costs nothing to hold
        elif isinstance(value, int | float) and not isinstance(value, bool):
            _check_number(value)
        elif isinstance(value, tuple):
            if len(value) > MAX_TUPLE:
                raise Refused(f"a tuple of {len(value):,} entries; a shape has at most {MAX_TUPLE}")
            for v in value:
                self.check_value(v)
        elif not isinstance(value, bool | range | type(None)):
            raise Refused(f"a {type(value).__name__} is not a value a gradient needs")


def fmt_shape(shape: tuple[int, ...] | torch.Size) -> str:
    """(32,27): a shape as the learner is told it."""
    return "(" + ",".join(map(str, shape)) + ")"


def _gathers(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dim() > 0 for p in parts)


def _broadcasts(a: torch.Size, b: torch.Size) -> bool:
    try:
        torch.broadcast_shapes(a, b)
    except RuntimeError:
        return False
    return True


def _operand(node: ast.expr) -> str:
    """An operand as the learner wrote it (from the checked tree: no strings), short, bracketed if needed."""
    text = ast.unparse(node)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"({text})" if isinstance(node, ast.BinOp) else text


def _transposed(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute) and node.attr == "T":
        return _operand(node.value)
    text = _operand(node)
    return f"{text}.T" if isinstance(node, ast.Name | ast.Attribute | ast.Subscript | ast.Call) else f"({text}).T"


def short_error(e: BaseException) -> str:
    """The first line of an error's message, at most 300 characters (its type when it has none)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:300]


def evaluate(
    source: str,
    scope: dict[str, Any],
    shared: set[str],
    mutable: set[str],
    later: dict[str, str],
    wanted: dict[str, tuple[int, ...]] | None = None,
    cost: Cost | None = None,
    cell: bool = False,
    after: Callable[[ast.stmt, dict[str, Any]], None] | None = None,
    limit: Cost | None = None,
) -> dict[str, Any]:
    """Run the program on copies: first shapes only (meta device), then for real. Returns its names.

    `wanted`: the shapes of the gradients the program should make (a shape error suggests the fix that
    gives them); `cost`: adds what the dry run spent; `cell`: a whole backward cell (larger, told line by
    line); `after(statement, names)`: called in the real run after each top-level statement; `limit`: a budget
    below the caps for what the run spends (OverBudget past it, before anything is computed).
    """
    unit = "line" if cell else "step"
    tree = check_program(source, Names(frozenset(scope), frozenset(shared), frozenset(mutable), later, unit), cell)
    meta_scope = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in scope.items()}
    dry = Interpreter(meta_scope, shared, mutable, later, meta=True, wanted=wanted, unit=unit, limit=limit)
    try:
        dry.run(tree)
    finally:
        if cost is not None:
            cost.add(dry.cost)
    real = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in scope.items()}
    with torch.no_grad():
        return Interpreter(real, shared, mutable, later, meta=False, wanted=wanted, unit=unit).run(tree, after)
