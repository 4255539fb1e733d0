"""Exercise 4 with the learner's own backward: the notebook's block from `dlogits = F.softmax(logits, 1)` to
`grads = [...]`, checked once and compiled into closures that every training step runs.

The block is read as a whole cell (server/learner/cells.py takes off its cmp lines and `grads = [...]`), checked against
the sandbox's allowlist and dry-run on the meta device with the run's shapes, under every cap a single check has
(server/learner/sandbox.py), then run once for real by the interpreter. The forward is the declared one (the trained
mode's ops), so the block sees the names the notebook's training loop has. The closures skip the interpreter's
checks, which is sound only while what the dry run checked holds at every step: every loop count must be a Python
value made of numbers, n and shapes (never read out of a tensor's data), and no shape or tuple index may come from
a tensor's values. A block for which that cannot be shown runs through the interpreter at every step instead.
A loop nest that adds one entry's row at a time (the notebook's dC loop) compiles to one index_add_, which adds the
same rows in the same order. The first compiled run is compared bit for bit with the interpreter's (every name,
every input, memory layout included) before the block is accepted, and both run on copies: no cached tensor is
ever in reach of a learner's program.
"""

from __future__ import annotations

import ast
import operator
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..core.config import ModelConfig
from ..core.engine import backward_from
from ..learner.cells import grade_cell, split_cell
from ..learner.sandbox import (
    AUGOPS,
    BINOPS,
    COMPARISONS,
    INFINITIES,
    Cost,
    Interpreter,
    Refused,
    fmt_shape,
    parse,
    short_error,
)
from ..net.declare import Net
from ..net.forward import run_forward
from ..net.layers import NoKernel, layers_of
from ..net.packs import default_net
from .kernels import ManualBackward

Env = dict[str, Any]
Expr = Callable[[Env], Any]
Stmt = Callable[[Env], None]


def default_grads(net: Net) -> tuple[str, ...]:
    """Without grads = [...]: the parameters' names with d, in the net's parameter order."""
    return tuple("d" + name for name in net.param_names)


def reads(net: Net) -> tuple[str, ...]:
    """What a block reads: the trained forward's tensors in its order (what an op saves for its backward after its
    output), the parameters, the batch and the sizes (n, and the net's: n_embd, hs, ...)."""
    forward = (name for op in net.ops_for_mode(net.trained_mode) for name in (*op.outputs, *op.saves))
    return (*forward, *net.param_names, "Xb", "Yb", "n", *(name for _, name in net.size_names))


@dataclass
class Program:
    """A checked block: its tree, its compiled statements, what its dry run spent, and the gradients it returns."""

    tree: ast.Module
    statements: list[Stmt]
    grads: tuple[str, ...]  # the block's names of the parameters' gradients (the net's parameter order)
    cost: Cost
    fused_loops: int  # loop nests compiled into one index_add_ (where the shapes allow it when they run)
    in_place: int  # operations that write their result into an operand the expression made
    # why the block runs through the interpreter at every step instead of the closures ("": it is compiled)
    interpreted: str = ""
    dropped: frozenset[str] = frozenset()  # names the closures do not keep (nothing reads them)


def scope_of(values: dict[str, Any]) -> Env:
    """What a block reads: the declared forward's tensors, the parameters, Xb, Yb and n (no _-prefixed internals)."""
    return {k: v for k, v in values.items() if isinstance(v, torch.Tensor | int) and not k.startswith("_")}


def forward_scope(params: dict[str, torch.Tensor], Xb: torch.Tensor, Yb: torch.Tensor, net: Net | None = None) -> Env:
    """The trained mode's declared forward of one batch, as the block sees it."""
    net = net or default_net()
    sizes = net.sizes(params, Xb.shape[0])
    values = run_forward(net.ops_for_mode(net.trained_mode), {**params, "Xb": Xb, "Yb": Yb, **sizes})
    return scope_of(values)


def check_block(source: str, scope: Env, params: dict[str, torch.Tensor], net: Net | None = None) -> Program:
    """The block checked, dry-run and compiled for a scope of these shapes; Refused with a reason otherwise."""
    net = net or default_net()
    param_names, grads_default = net.param_names, default_grads(net)
    cell = split_cell(source)
    tree = parse(cell.program, cell=True)
    shared = {k for k, v in scope.items() if isinstance(v, torch.Tensor)}
    meta = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in scope.items()}
    dry = Interpreter(meta, shared, set(), {}, meta=True, unit="line")
    dry.run(tree)
    grads = tuple(cell.grads) if cell.grads is not None else grads_default
    if len(grads) != len(param_names):
        raise Refused(f"line {cell.grads_line}: grads lists {len(grads)} gradients; the net has {len(param_names)} "
                      f"parameters, in this order: {', '.join(param_names)}")  # fmt: skip
    for grad, name in zip(grads, param_names, strict=True):
        got = dry.env.get(grad)
        where = f"line {cell.grads_line}: " if cell.grads is not None else ""
        if not isinstance(got, torch.Tensor):
            raise Refused(
                f"{where}{grad} is not computed by the block"
                + ("" if cell.grads is not None else f" (end it with grads = [{', '.join(grads_default)}])")
            )
        want = params[name].shape
        if got.dtype != params[name].dtype or not _updates(got.shape, want):
            raise Refused(f"{where}{grad} has shape {fmt_shape(got.shape)} ({got.dtype}); the update subtracts it from "
                          f"{name}, of shape {fmt_shape(want)}")  # fmt: skip
    # the interpreter's own run on copies first: an error only the values show (an index past the end) is told as
    # the interpreter tells it, with its line and loop iteration
    with torch.no_grad():
        want_env = Interpreter(_copies(scope), shared, set(), {}, meta=False, unit="line").run(tree)
    # compiled once to note each operation's shapes and layouts on this batch, then for good, writing results into
    # operands the expression has just made where the shapes and layouts allow it
    recorder = Compiler(tree, records={})
    try:
        statements = [recorder.statement(s) for s in tree.body]
        env = _copies(scope)
        with torch.no_grad():
            for statement in statements:
                statement(env)
    except Exception:
        raise Refused(DIFFERS.format("the block")) from None
    compiler = Compiler(tree, plan=recorder.in_place())
    ints = {k for k, v in scope.items() if isinstance(v, int)}
    interpreted = _not_static(tree, ints) or recorder.data_dependent
    program = Program(
        tree, [compiler.statement(s) for s in tree.body], grads, dry.cost, compiler.fused, len(compiler.plan),
        interpreted, compiler.dropped,
    )  # fmt: skip
    # the compiled run on copies of its own: every name it makes and every input it was given, bit for bit and in
    # the same memory layout as the interpreter's, or the block is not trained
    given = _copies(scope)
    try:
        with torch.no_grad():
            got_env = run_program(program, dict(given))
    except Exception:
        raise Refused(DIFFERS.format("the block")) from None
    wrong = differences(want_env, got_env, program.dropped) or differences(_copies(scope), given)
    if wrong:
        raise Refused(DIFFERS.format(wrong[0]))
    return program


DIFFERS = "{}: the compiled block differs from the interpreted one (a bug of this server)"


def differences(want: Env, got: Env, skip: frozenset[str] = frozenset()) -> list[str]:
    """The names whose values differ in bits, shape, dtype or memory layout (NaN equals NaN here, bit for bit)."""
    return [k for k in want.keys() | got.keys() if k not in skip and not _same(want.get(k), got.get(k))]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
            and a.shape == b.shape and a.dtype == b.dtype and a.stride() == b.stride()
            and torch.equal(_bits(a), _bits(b))
        )  # fmt: skip
    if isinstance(a, tuple) and isinstance(b, tuple):  # .max(dim)'s (values, indices)
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


BITS = {8: torch.int64, 4: torch.int32, 2: torch.int16}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """A float tensor's bits as integers: -0.0 is not 0.0, and a NaN equals the same NaN."""
    return t.contiguous().view(BITS[t.element_size()]) if t.is_floating_point() else t


def _copies(scope: Env) -> Env:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in scope.items()}


def run_program(program: Program, env: Env) -> Env:
    """The block's names after one run on env (compiled, or interpreted where the block must be)."""
    if program.interpreted:
        shared = {k for k, v in env.items() if isinstance(v, torch.Tensor)}
        return Interpreter(env, shared, set(), {}, meta=False, unit="line").run(program.tree)
    for statement in program.statements:
        statement(env)
    return env


def _updates(grad: torch.Size, param: torch.Size) -> bool:
    """Whether param -= lr * grad keeps param's shape (a (64,) gradient of a (1,64) gain does, as in the notebook)."""
    try:
        return torch.broadcast_shapes(grad, param) == param
    except RuntimeError:
        return False


# what a call makes anew (never a view or its own tensor): an operation may write its result into it
FRESH_CALLS = {
    "sum", "mean", "exp", "log", "tanh", "clone", "abs", "sqrt", "pow", "softmax", "log_softmax", "sigmoid",
    "zeros_like", "ones_like", "masked_fill", "tril", "ones",
}  # fmt: skip
IN_PLACE = {ast.Add: "add_", ast.Sub: "sub_", ast.Mult: "mul_", ast.Div: "div_"}
# a tensor's shape, dtype and strides (the layout torch gives a result follows its operands'); None: not a tensor
Meta = tuple[torch.Size, torch.dtype, tuple[int, ...]] | None


class Compiler:
    """Closures that do what the interpreter's real run does (server/learner/sandbox.py), without its checks.

    `records`: compile to note, as it runs, each top-level operation's operands and result (shape, dtype,
    layout); `plan`: from those notes, the operations whose result may be written into an operand that the
    expression just made (`(1.0 - h**2) * dh`: into 1.0 - h**2), which computes the same numbers in the same layout
    without a new tensor. A recording run also notes a value read out of a tensor's data that decides a shape or a
    tuple's entry (`data_dependent`): such a block is not compiled."""

    def __init__(
        self,
        tree: ast.Module,
        records: dict[int, tuple[Meta, Meta, Meta, bool, bool]] | None = None,
        plan: dict[int, str] | None = None,
    ) -> None:
        self.fused = 0
        self.loads = _loads(tree)  # a name nothing else reads need not be kept up to date
        self.dropped: frozenset[str] = frozenset()
        self.data_dependent = ""
        self.records, self.plan = records, plan or {}
        self.depth = 0  # loops around the code being compiled: shapes inside may change from one iteration to the next
        self.fresh: dict[int, tuple[bool, bool, type]] = {}  # each operation: whether its operands are made anew
        self.ranges: dict[range, torch.Tensor] = {}  # range(n) as an index tensor, made once (nothing can change it)

    def range_tensor(self, r: range) -> torch.Tensor:
        t = self.ranges.get(r)
        if t is None:
            t = self.ranges[r] = torch.tensor(r)
        return t

    def in_place(self) -> dict[int, str]:
        """From the records: which operand each top-level operation may write its result into."""
        plan = {}
        for key, (left, right, out, left_alone, right_alone) in (self.records or {}).items():
            fresh_left, fresh_right, op = self.fresh[key]
            if out is None:
                continue
            # made by the expression (by its syntax, and shares memory with no name when it ran) and of the
            # result's shape, dtype and layout: writing into it gives the very tensor the interpreter makes
            if fresh_left and left_alone and left == out:
                plan[key] = "left"
            elif fresh_right and right_alone and right == out and op in (ast.Add, ast.Mult):  # they commute exactly
                plan[key] = "right"
        return plan

    # --- statements ---
    def statement(self, node: ast.stmt) -> Stmt:
        if isinstance(node, ast.Assign):
            target, value = node.targets[0], self.expr(node.value)
            if isinstance(target, ast.Name):
                name = target.id

                def assign(env: Env) -> None:
                    env[name] = value(env)

                return assign
            assert isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
            base, index = target.value.id, self.index(target.slice)

            def set_item(env: Env) -> None:
                v = value(env)
                env[base][index(env)] = v

            return set_item
        if isinstance(node, ast.AugAssign):
            method, value = AUGOPS[type(node.op)], self.expr(node.value)
            if isinstance(node.target, ast.Name):
                name = node.target.id

                def augment(env: Env) -> None:
                    v = value(env)
                    getattr(env[name], method)(v)

                return augment
            target = node.target
            assert isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
            base, index = target.value.id, self.index(target.slice)

            def augment_item(env: Env) -> None:
                v = value(env)
                tensor, i = env[base], index(env)
                tensor[i] = getattr(tensor[i], method)(v)

            return self.entries_once(node, base, value, augment_item) or augment_item
        if isinstance(node, ast.For):
            return self.loop(node)
        assert isinstance(node, ast.Expr)  # an in-place method call: x.index_add_(...)
        call = self.expr(node.value)

        def effect(env: Env) -> None:
            call(env)

        return effect

    def entries_once(self, node: ast.AugAssign, base: str, value: Expr, general: Stmt) -> Stmt | None:
        """x[range(n), Yb] -= 1 as one index_put_ that adds -1: the pairs are distinct (a range of increasing
        integers from 0 in front), so adding at each pair is the read, subtract and write of x[...] -= 1."""
        target = node.target
        assert isinstance(target, ast.Subscript)
        at, number = target.slice, node.value
        if not (
            type(node.op) in (ast.Add, ast.Sub)
            and isinstance(number, ast.Constant) and not isinstance(number.value, bool)
            and isinstance(at, ast.Tuple) and len(at.elts) >= 2
            and isinstance(at.elts[0], ast.Call) and isinstance(at.elts[0].func, ast.Name)
            and _pure(at)  # run again as the general statement where the values do not allow it
        ):  # fmt: skip
            return None
        first, rest = self.expr(at.elts[0]), [self.index(e) for e in at.elts[1:]]
        added = number.value if isinstance(node.op, ast.Add) else -number.value
        values: dict[torch.dtype, torch.Tensor] = {}

        def add_at_pairs(env: Env) -> None:
            value(env)
            r = first(env)
            tensor, others = env[base], [i(env) for i in rest]
            if not (
                isinstance(r, range) and r.start >= 0 and r.step > 0 and len(r) > 0
                and all(isinstance(o, torch.Tensor) and o.dtype == torch.int64 and o.shape == (len(r),) for o in others)
                # distinct pairs are distinct entries only in memory of its own (an expand_as view repeats them),
                # and a float is added to floats only (x[...] -= 0.5 on integers is an error, not -0)
                and tensor.is_contiguous() and (tensor.is_floating_point() or isinstance(added, int))
                and tensor.dtype != torch.bool
            ):  # fmt: skip
                general(env)
                return
            rows = self.range_tensor(r)
            v = values.get(tensor.dtype)
            if v is None:
                v = values[tensor.dtype] = torch.tensor(added, dtype=tensor.dtype)
            tensor.index_put_((rows, *others), v, accumulate=True)

        return add_at_pairs

    def loop(self, node: ast.For) -> Stmt:
        assert isinstance(node.target, ast.Name)
        name, span = node.target.id, self.expr(node.iter)
        self.depth += 1
        body = [self.statement(s) for s in node.body]
        self.depth -= 1

        def loop(env: Env) -> None:
            for value in span(env):
                env[name] = value
                for statement in body:
                    statement(env)

        scatter = _scatter_nest(node)
        # the batch's entries are characters, counted from 0: other entries may be negative, which Python's
        # indexing counts from the end and index_add_ refuses
        if scatter is None or scatter.index != "Xb":
            return loop
        self.fused += 1
        names, spans = scatter.loops, [self.expr(n.iter) for n in scatter.nodes]
        index_name, table, rows, entries, dims = scatter.ix, scatter.table, scatter.rows, scatter.index, len(names)
        if index_name is not None and self.loads[index_name] == _loads(node)[index_name]:
            index_name = None  # ix = X[k, j] is read by the loop only: not kept after it
            self.dropped |= {scatter.ix}  # type: ignore[arg-type]

        def decide(env: Env) -> tuple[tuple[int, ...], dict[str, int], tuple[int, ...]] | None:
            """(the rows' shape for index_add_, the loop variables' last values, the last entry), or None: a loop."""
            ranges = [s(env) for s in spans]
            t, x, v = env.get(table), env.get(entries), env.get(rows)
            sizes = tuple(len(r) for r in ranges)
            if not (
                all(r.start == 0 and r.step == 1 and len(r) > 0 for r in ranges)
                and isinstance(t, torch.Tensor) and isinstance(x, torch.Tensor) and isinstance(v, torch.Tensor)
                and x.dtype == torch.int64 and tuple(x.shape) == sizes
                and tuple(v.shape[:dims]) == sizes and v.shape[dims:] == t.shape[1:] and v.dtype == t.dtype
                # rows of their own memory, none shared (a row added once per entry, as the loop adds it), and
                # entries and rows the adding cannot change
                and t.is_contiguous() and not _overlap(t, x) and not _overlap(t, v)
            ):  # fmt: skip
                return None
            lasts = {loop_name: r[-1] for loop_name, r in zip(names, ranges, strict=True)}
            return (-1, *t.shape[1:]), lasts, tuple(r[-1] for r in ranges)

        top = self.depth == 0  # at the top level every value it decides on is the same at every step
        decided: list[Any] = []

        def scatter_add(env: Env) -> None:
            """T[X[k, j]] += V[k, j] for every k and j, in that order: one index_add_ when the shapes allow it."""
            plan = decided[0] if decided else decide(env)
            if top and not decided:
                decided.append(plan)
            if plan is None:
                loop(env)
                return
            row_shape, lasts, last = plan
            x = env[entries]
            env[table].index_add_(0, x.reshape(-1), env[rows].reshape(row_shape))
            env.update(lasts)  # as after the loops: each variable at its last value
            if index_name is not None:
                env[index_name] = x[last]

        return scatter_add

    # --- expressions ---
    def expr(self, node: ast.expr) -> Expr:
        if isinstance(node, ast.Constant):
            constant = node.value
            return lambda env: constant
        if isinstance(node, ast.Name):
            name = node.id
            return lambda env: env[name]
        if isinstance(node, ast.UnaryOp):
            operand = self.expr(node.operand)
            if isinstance(node.op, ast.USub):
                return lambda env: -operand(env)
            return lambda env: +operand(env)
        if isinstance(node, ast.BinOp):
            op, left, right = BINOPS[type(node.op)], self.expr(node.left), self.expr(node.right)
            if self.depth == 0 and type(node.op) in IN_PLACE:
                key = id(node)
                self.fresh[key] = (_fresh(node.left), _fresh(node.right), type(node.op))
                if self.records is not None:
                    records = self.records

                    def record(env: Env) -> Any:
                        a, b = left(env), right(env)
                        out = op(a, b)
                        records[key] = (_meta(a), _meta(b), _meta(out), _alone(a, env, b), _alone(b, env, a))
                        return out

                    return record
                method = IN_PLACE[type(node.op)]
                if self.plan.get(key) == "left":
                    return lambda env: getattr(left(env), method)(right(env))
                if self.plan.get(key) == "right":

                    def into_right(env: Env) -> Any:
                        a = left(env)
                        return getattr(right(env), method)(a)

                    return into_right
            # a name or a number as an operand is read in place: one call less per operation
            a, b = node.left, node.right
            if isinstance(a, ast.Name) and isinstance(b, ast.Name):
                x, y = a.id, b.id
                return lambda env: op(env[x], env[y])
            if isinstance(a, ast.Name) and isinstance(b, ast.Constant):
                x, c = a.id, b.value
                return lambda env: op(env[x], c)
            if isinstance(a, ast.Constant) and isinstance(b, ast.Name):
                c, y = a.value, b.id
                return lambda env: op(c, env[y])
            return lambda env: op(left(env), right(env))
        if isinstance(node, ast.Tuple):
            parts = [self.expr(e) for e in node.elts]
            return lambda env: tuple(p(env) for p in parts)
        if isinstance(node, ast.Compare):  # tril == 0: the allowlist lets one comparison through, never a chain
            compare, left, right = COMPARISONS[type(node.ops[0])], self.expr(node.left), self.expr(node.comparators[0])
            return lambda env: compare(left(env), right(env))
        if isinstance(node, ast.Attribute):
            base, attr = self.expr(node.value), node.attr
            if attr == "shape":
                return lambda env: tuple(base(env).shape)
            if attr == "T":
                if isinstance(node.value, ast.Name):
                    name = node.value.id
                    return lambda env: env[name].T
                return lambda env: base(env).T
            return lambda env: getattr(base(env), attr)  # .values, .indices of max(dim)
        if isinstance(node, ast.Subscript):
            base, index = self.expr(node.value), self.index(node.slice)
            if self.records is not None:

                def noted(env: Env) -> Any:
                    b, i = base(env), index(env)
                    if isinstance(b, tuple | range) and _tensors(i):  # x.shape[Yb[0]]: a value read out of data
                        self.data_dependent = f"line {node.lineno}: a tuple's entry is chosen by a tensor's value"
                    return b[i]

                return noted
            return lambda env: base(env)[index(env)]
        assert isinstance(node, ast.Call)
        return self.call(node)

    def index(self, node: ast.expr) -> Expr:
        if isinstance(node, ast.Slice):
            parts = [self.expr(p) if p is not None else None for p in (node.lower, node.upper, node.step)]
            return lambda env: slice(*(p(env) if p is not None else None for p in parts))
        if isinstance(node, ast.Tuple):
            parts = [self.index(e) for e in node.elts]
            return lambda env: tuple(p(env) for p in parts)
        value = self.expr(node)

        def index(env: Env) -> Any:
            v = value(env)
            return self.range_tensor(v) if isinstance(v, range) else v

        return index

    def call(self, node: ast.Call) -> Expr:
        func = node.func
        if isinstance(func, ast.Name) and func.id == "float":  # float('-inf'): a constant
            infinity = INFINITIES[node.args[0].value]  # type: ignore[attr-defined]
            return lambda env: infinity
        args = [self.expr(a) for a in node.args]
        kwargs = {k.arg: self.expr(k.value) for k in node.keywords}
        func = node.func
        if self.records is not None and isinstance(func, ast.Attribute):
            function = isinstance(func.value, ast.Name) and func.value.id in ("torch", "F")
            # the arguments that are data: a function's tensor, an exponent, what index_add_ adds where, expand_as's
            data = (
                {0}
                if function
                else {"pow": {0}, "expand_as": {0}, "index_add_": {1, 2}, "masked_fill": {0, 1}}.get(func.attr, set())
            )
            args = [a if i in data else self.dimension(a, node) for i, a in enumerate(args)]
            kwargs = {k: self.dimension(v, node) for k, v in kwargs.items()}
        if isinstance(func, ast.Name):  # range
            return lambda env: range(*(a(env) for a in args))
        assert isinstance(func, ast.Attribute)
        attr = func.attr
        if isinstance(func.value, ast.Name) and func.value.id in ("torch", "F"):
            if attr == "one_hot":
                tensor, classes = args[0], args[1] if len(args) > 1 else kwargs["num_classes"]
                return lambda env: F.one_hot(tensor(env), classes(env))
            function = getattr(torch if func.value.id == "torch" else F, attr)
            if not kwargs:
                return lambda env: function(*(a(env) for a in args))
            return lambda env: function(*(a(env) for a in args), **{k: v(env) for k, v in kwargs.items()})
        if all(isinstance(a, ast.Constant) for a in (*node.args, *(k.value for k in node.keywords))):
            # x.sum(0, keepdim=True): the call made once (operator.methodcaller), applied to the tensor each step
            call = operator.methodcaller(
                attr,
                *(a.value for a in node.args),  # type: ignore[attr-defined]
                **{k.arg: k.value.value for k in node.keywords},
            )  # type: ignore[attr-defined]
            if isinstance(func.value, ast.Name):
                name = func.value.id
                return lambda env: call(env[name])
            tensor = self.expr(func.value)
            return lambda env: call(tensor(env))
        base = self.expr(func.value)  # a method: its arguments first, then its tensor, as the interpreter does

        def method(env: Env) -> Any:
            values = [a(env) for a in args]
            named = {k: v(env) for k, v in kwargs.items()}
            return getattr(base(env), attr)(*values, **named)

        return method

    def dimension(self, argument: Expr, node: ast.Call) -> Expr:
        """An argument that says a dimension or a size, noted if a tensor's value gives it (x.sum(Yb[0]))."""

        def noted(env: Env) -> Any:
            v = argument(env)
            if isinstance(v, torch.Tensor) and v.dim() == 0 and not v.is_floating_point():
                assert isinstance(node.func, ast.Attribute)
                self.data_dependent = f"line {node.lineno}: .{node.func.attr}(...) takes a tensor's value as a size"
            return v

        return noted


@dataclass(frozen=True)
class _Scatter:
    """The notebook's dC loop, read off its syntax: for k ...: for j ...: ix = X[k, j]; T[ix] += V[k, j]."""

    nodes: tuple[ast.For, ...]  # the loops, outermost first
    loops: tuple[str, ...]  # their variables
    ix: str | None  # the name the entry is put in first (ix = X[k, j]), if it is
    table: str  # T
    index: str  # X
    rows: str  # V


def _scatter_nest(node: ast.For) -> _Scatter | None:
    nodes = [node]
    while len(nodes[-1].body) == 1 and isinstance(nodes[-1].body[0], ast.For):
        nodes.append(nodes[-1].body[0])
    loops = tuple(n.target.id for n in nodes if isinstance(n.target, ast.Name))
    body = nodes[-1].body
    # a range may not read an outer loop's variable (the nest is then not a box of entries)
    # spans evaluated again by the loop where the values do not allow one index_add_: nothing in them may write
    if len(set(loops)) != len(nodes) or any(_reads(n.iter) & set(loops) or not _pure(n.iter) for n in nodes):
        return None
    ix = None
    if len(body) == 2 and isinstance(body[0], ast.Assign) and isinstance(body[0].targets[0], ast.Name):
        ix, entry = body[0].targets[0].id, body[0].value
        body = body[1:]
    if len(body) != 1:
        return None
    stmt = body[0]
    if not (
        isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add)
        and isinstance(stmt.target, ast.Subscript) and isinstance(stmt.target.value, ast.Name)
    ):  # fmt: skip
        return None
    table, at = stmt.target.value.id, stmt.target.slice
    if ix is None:
        entry = at
    elif not (isinstance(at, ast.Name) and at.id == ix):
        return None
    index = _entry_of(entry, loops)
    rows = _entry_of(stmt.value, loops)
    if index is None or rows is None:
        return None
    if len({table, index, rows, ix, *loops} - {None}) != 3 + len(loops) + (ix is not None):
        return None
    return _Scatter(tuple(nodes), loops, ix, table, index, rows)


def _fresh(node: ast.expr) -> bool:
    """Whether an expression's tensor is made by it, so that nothing else holds it: an operation's or a call's.

    Not +x (torch.positive returns x itself), nor a view (.T, .view, x[k], .expand_as), nor what may return its
    tensor (.float(), .reshape, .squeeze)."""
    if isinstance(node, ast.BinOp):
        return True
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, ast.USub)
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FRESH_CALLS


def _meta(value: Any) -> Meta:
    return (value.shape, value.dtype, value.stride()) if isinstance(value, torch.Tensor) else None


def _alone(value: Any, env: Env, other: Any) -> bool:
    """Whether a tensor shares its memory with no name in env and not with the other operand."""
    if not isinstance(value, torch.Tensor):
        return False
    return not any(_overlap(value, t) for t in (*env.values(), other) if isinstance(t, torch.Tensor))


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors share memory (the same storage: a view of the other, or the same tensor)."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _tensors(index: Any) -> bool:
    return any(isinstance(p, torch.Tensor) for p in (index if isinstance(index, tuple) else (index,)))


def _pure(node: ast.AST) -> bool:
    """Whether evaluating an expression changes nothing: no call but range(...)'s (.index_add_ writes)."""
    return all(
        not isinstance(n, ast.Call) or (isinstance(n.func, ast.Name) and n.func.id == "range") for n in ast.walk(node)
    )


def _not_static(tree: ast.Module, ints: set[str]) -> str:
    """Why some loop's count may differ from one batch to the next ('' if none may): each must be made of numbers,
    ints of the scope (n), shapes and loop variables, through names that only ever hold such values."""
    values: dict[str, list[ast.expr | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values.setdefault(node.targets[0].id, []).append(node.value)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            values.setdefault(node.target.id, []).append(None)  # x += ...: a tensor's, in place
        elif isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            values.setdefault(node.target.id, []).append(node.iter)
    static = {name for name in ints if name not in values}
    grown = True
    while grown:  # a name is static once every value it is given is
        grown = False
        for name, given in values.items():
            if name not in static and all(v is not None and _static(v, static) for v in given):
                static.add(name)
                grown = True
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and not _static(node.iter, static):
            return f"line {node.lineno}: this loop's count may depend on a tensor's values"
    return ""


def _static(node: ast.AST, names: set[str]) -> bool:
    """Whether an expression's value is the same for every batch: numbers, those names, shapes and their parts."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id in names
    if isinstance(node, ast.Attribute):
        return node.attr == "shape"  # a shape is the run's, whatever the tensor's values
    if isinstance(node, ast.Subscript):
        return _static(node.value, names) and _static(node.slice, names)
    if isinstance(node, ast.Slice):
        return all(p is None or _static(p, names) for p in (node.lower, node.upper, node.step))
    if isinstance(node, ast.Tuple):
        return all(_static(e, names) for e in node.elts)
    if isinstance(node, ast.BinOp):
        return _static(node.left, names) and _static(node.right, names)
    if isinstance(node, ast.UnaryOp):
        return _static(node.operand, names)
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id == "range" and all(_static(a, names) for a in node.args)
    return False


def _entry_of(node: ast.expr, loops: tuple[str, ...]) -> str | None:
    """X for X[k, j] subscripted by exactly the loop variables in order; None otherwise."""
    if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)):
        return None
    parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    if [p.id if isinstance(p, ast.Name) else None for p in parts] != list(loops):
        return None
    return node.value.id


def _reads(node: ast.expr) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _loads(tree: ast.AST) -> Counter[str]:
    """How often each name is read (x += ... reads x)."""
    counts = Counter(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))
    counts.update(
        n.target.id for n in ast.walk(tree) if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name)
    )
    return counts


# a step's block may take this many times its check's run (processor time, so a loaded machine or a stopped process
# does not count), and never less than STEP_FLOOR_S: past it the run fails with the reason
STEP_FACTOR = 200
STEP_FLOOR_S = 1.0
CPU_EVERY = 16


class StepTooLong(Refused):
    """A training step whose block ran far longer than its check did."""


class CodeBackward:
    """A training step whose backward is the learner's block: the forward, the block, the SGD update.

    The same interface as ManualBackward (kernels.py): grads() gives true gradients, step() updates. The
    forward each step is ManualBackward's fused one, a tested twin of the declared forward: at the start its
    tensors are compared with the declared forward's on the first batch, and the declared one runs instead if
    they differ in name, shape or value. A step's block is bounded by step_budget_s of processor time (`cpu`),
    looked at only when the step's wall time (`clock`, cheaper to read) is past it already."""

    def __init__(
        self,
        p: dict[str, torch.Tensor],
        batch_size: int,
        source: str,
        Xb: torch.Tensor,
        Yb: torch.Tensor,
        clock: Callable[[], float] = time.perf_counter,
        cpu: Callable[[], float] = time.thread_time,
        net: Net | None = None,
    ):
        self.net = net = net or default_net()
        Xb, Yb = Xb.clone(), Yb.clone()  # the caller's may be views of a cached split, kept for later learners
        self.p = p
        self.params = [p[k] for k in net.param_names]
        declared = forward_scope(p, Xb, Yb, net)
        self.program = check_block(source, declared, p, net)
        self.reads_loss = "loss" in _loads(self.program.tree)
        self.constants = {k: v for k, v in declared.items() if k in p or isinstance(v, int)}
        trained = net.ops_for_mode(net.trained_mode)
        self.logits = next(op.inputs[0] for op in trained if op.kernel == "cross_entropy")
        self.losses = ManualBackward.losses  # the mean cross-entropy of (logits, Yb): any net with the lecture's head
        self.fast = False
        try:  # the hand-tuned forward, where the net has the shape it computes (one hidden block)
            layers = layers_of(net)
            if len(layers.hidden) == 1:
                self.kernel = ManualBackward(p, batch_size, net)
                block = layers.hidden[0]
                bnraw, bnvar_inv = next(op.saves for op in trained if op.kernel == "batchnorm")
                self.names = (layers.embcat, block.hprebn, bnvar_inv, bnraw, block.hpreact, block.h)
                self.emb = next(op.outputs[0] for op in trained if op.kernel == "embedding")
                self.embcat = layers.embcat
                self.fast = self.twin_agrees(declared, self.fused_scope(Xb, Yb))
        except NoKernel:  # the declared forward each step
            pass
        # the check's own run of the block, timed: what every later step is measured against
        self.clock, self.cpu = clock, cpu
        env = _copies(self.scope(Xb, Yb))
        started = cpu()
        with torch.no_grad():
            run_program(self.program, env)
        self.check_s = cpu() - started
        self.step_budget_s = max(STEP_FACTOR * self.check_s, STEP_FLOOR_S)
        self.steps, self.cpu_mark = 0, cpu()  # processor time read every CPU_EVERY steps: it costs a system call

    def scope(self, Xb: torch.Tensor, Yb: torch.Tensor) -> Env:
        """The block's names for one batch."""
        return self.fused_scope(Xb, Yb) if self.fast else forward_scope(self.p, Xb, Yb, self.net)

    def fused_scope(self, Xb: torch.Tensor, Yb: torch.Tensor) -> Env:
        """The block's names for one batch, from the manual step's fused forward."""
        n = Xb.shape[0]
        logits, saved = self.kernel.forward(Xb.view(-1), n)
        env = dict(self.constants)
        env.update(zip(self.names, saved[0][:6], strict=True))
        env["Xb"], env["Yb"], env[self.logits] = Xb, Yb, logits
        env[self.emb] = env[self.embcat].view(n, Xb.shape[1], -1)  # (n, block_size, n_embd)
        if self.reads_loss:
            env["loss"] = F.cross_entropy(logits, Yb)
        return env

    @staticmethod
    def twin_agrees(declared: Env, fast: Env) -> bool:
        """Whether the fused forward gives the declared forward's tensors (names, shapes, values to rounding)."""
        declared = {k: v for k, v in declared.items() if k != "loss" or k in fast}
        if declared.keys() != fast.keys():
            return False
        for k, want in declared.items():
            got = fast[k]
            if isinstance(want, torch.Tensor):
                if not (isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == want.dtype):
                    return False
                if want.is_floating_point() and not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
                    return False
                if not want.is_floating_point() and not torch.equal(got, want):
                    return False
            elif got != want:
                return False
        return True

    def grads(
        self, Xb: torch.Tensor, Yb: torch.Tensor, keep: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        """Logits, the block's gradients (the net's parameter order) and, with keep, every tensor by name."""
        env = self.scope(Xb, Yb)
        started = self.clock()
        try:
            env = run_program(self.program, env)
        except Exception as e:  # a value only this batch has (an index past the end): the interpreter says where
            env = self.interpret(Xb, Yb, e)
        took = self.clock() - started
        if took > self.step_budget_s:  # a stopped or starved process, or a step that ran long: which one?
            took = self.cpu() - self.cpu_mark  # this step's and at most CPU_EVERY short ones' before it
        if took > self.step_budget_s:
            raise StepTooLong(
                f"a step of your block ran {took:.2f} s, more than {STEP_FACTOR} times the {self.check_s * 1e3:.1f} ms "
                f"its check took (at most {self.step_budget_s:.2f} s): does a loop's count or a size depend on the "
                "batch's values?"
            )
        self.steps += 1
        if self.steps % CPU_EVERY == 0:
            self.cpu_mark = self.cpu()
        # a (64,) gradient of a (1,64) gain updates it as the notebook's p.data += -lr * grad does: broadcast
        grads = [
            g if g.shape == p.shape else g.expand(p.shape)
            for g, p in zip((env[name] for name in self.program.grads), self.params, strict=True)
        ]
        return env[self.logits], grads, env if keep else {}

    def interpret(self, Xb: torch.Tensor, Yb: torch.Tensor, error: Exception) -> Env:
        """The batch's names as the interpreter makes them, after the compiled block failed on it: its refusal, with
        the line and loop iteration, is the step's error (and the compiled one's, should the interpreter pass)."""
        env = self.scope(Xb, Yb)
        shared = {k for k, v in env.items() if isinstance(v, torch.Tensor)}
        try:
            with torch.no_grad():
                return Interpreter(env, shared, set(), {}, meta=False, unit="line").run(self.program.tree)
        except Refused:
            raise
        except Exception:
            raise Refused(f"{type(error).__name__}: {short_error(error)}") from None

    def step(self, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step, called under no_grad; returns what losses() needs: (logits, Yb)."""
        logits, grads, _ = self.grads(Xb, Yb)
        torch._foreach_add_(self.params, grads, alpha=-lr)
        return logits, Yb


def where_wrong(
    code: str, config: ModelConfig, params: dict[str, torch.Tensor], Xb: torch.Tensor, Yb: torch.Tensor
) -> str | None:
    """The block's first wrong line and its slip, as Exercise 4's whole-cell check says them on this batch; None
    where the check finds no wrong line (or cannot run the block as a cell)."""
    try:
        with torch.enable_grad():  # the training step runs without autograd; the check's reference needs it
            graded = grade_cell(backward_from(config, config.pack.trained_mode, params, Xb, Yb), code)
    except Refused:
        return None
    first = graded["first_wrong"]
    if first is None:
        return None
    slip = "; ".join(first["feedback"]) or f"{first['name']} differs from autograd's"
    if first["line"] is None:
        return f"{first['name']}: {slip}"
    if first["end_line"] != first["line"]:  # the lines that build the gradient together: the slip is in one of them
        return f"lines {first['line']}–{first['end_line']}, which make {first['name']}: {slip}"
    return f"line {first['line']} `{first['code'].strip()}`: {slip}"
