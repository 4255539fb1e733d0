"""The vocabulary a network pack is declared in: nodes, ops with their backward rules, modes, bugs, cells, and Net.

A pack (server/net/packs/) declares one network as data in these records; the forward executor, the backward
schedule, the graph JSON, the explanations, the bug lab, the cells and the training loop all read the Net they
are given, never a module of a particular network.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

# v: forward values by name (plus n and the net's sizes, Net.size_names); d: manual gradients so far, d.x is "dx"
Fn = Callable[..., Any]


@dataclass(frozen=True)
class Init:
    """A parameter's initialisation: a standard normal draw of the node's shape, scaled as in the lecture."""

    code: str  # as written in the notebook
    scale: Callable[[torch.Tensor, Mapping[str, int]], torch.Tensor]  # (randn draw, axis sizes) -> the parameter
    # seeded: the config's generator; fresh: an unseeded torch.Generator(), where the lecture used the global RNG
    generator: str = "seeded"
    zero_bias: float | None = None  # what every entry is under init=zero_bias (None: drawn as usual)


@dataclass(frozen=True)
class Node:
    """A tensor of the forward pass."""

    name: str
    kind: str  # input | param | intermediate | loss
    # meaning of each dim: batch, vocab, context, embd, embcat, hidden, one; time (a context's positions after a
    # flatten of consecutive pairs), embd2 and hidden2 (two consecutive positions' vectors side by side)
    axes: tuple[str, ...]
    about: str  # one line for the learner
    init: Init | None = None  # parameters only


@dataclass(frozen=True)
class Mode:
    """A backward mode: one of the lecture's exercises, named by the blocks of atomic lines it fuses."""

    name: str
    label: str  # the mode select's short name
    title: str  # the exercise in a line, as the graph's heading
    fuses: frozenset[str]  # the blocks (Op.block) that collapse into their one fused op (Op.fuses)


class Undeclared(ValueError):
    """A mode or bug that the declaration does not have, or a bug that a mode has no rule for."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field  # the request field at fault: "mode" or "bug"


@dataclass(frozen=True)
class Rule:
    """The local backward rule for one input of an op: the lecture's line and its tensor code."""

    target: str  # the input node receiving the gradient
    code: str  # as written in the notebook
    fn: Fn  # (v, d) -> this op's contribution to d.target
    note: str = ""  # why the rule looks like this (broadcasts, reductions, ...)
    overwrite: bool = False  # `=` over the earlier contributions where `+=` belongs (only a bug's rule does this)
    # the derivation, forward line → local derivative → chain rule: LaTeX lines that the page shows as MathML;
    # \text{name} names a node (\text{dname} its gradient), so that the page can point at it in the graph
    tex: tuple[str, ...] = ()
    tex_notes: tuple[str, ...] = ()  # what each line does, in words (the fused rules: which atomic lines it folds)
    # the worked example the page computes from the live tensors: "matmul", "sum" (a broadcast's sum), "max",
    # "gather" (C[Xb]), "tanh", "log" (1/x at the target) or "forces" (dlogits); None: the derivation alone
    example: str | None = None
    # why this rule, right, is only approximately autograd's gradient (where it is): the cause in words
    rounding: str = ""


@dataclass(frozen=True)
class Op:
    """One forward line; `block` names the fused op that replaces it, `fuses` the block it replaces."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    formula: str
    forward: Fn  # v -> tensor, or dict of outputs (+ tensors saved for the backward)
    rules: tuple[Rule, ...]
    about: str
    symbol: str  # the op node's short label in the drawn graph
    block: str | None = None
    fuses: str | None = None
    # how the op treats the batch: "each" = row r of its outputs depends only on row r of its batch-shaped
    # inputs; "mean" = the mean over rows of such a term (the loss); "mixed" = rows interact (batch sums)
    rows: str = "mixed"
    # the op after training, if it differs: batchnorm with the calibrated statistics instead of the batch's
    eval_forward: Fn | None = None
    calibrated: tuple[str, ...] = ()  # the statistics eval_forward reads: computed over the training split
    # v -> those statistics over a whole split (v: the values up to the op); None: the training kernels compute them
    calibrate: Fn | None = None
    # the hand-tuned twin that computes the op when training (server/net/layers.py lists them); None: no twin
    kernel: str | None = None
    saves: tuple[str, ...] = ()  # the tensors its forward keeps for its backward, as the notebook names them
    # a fused op's forward as the notebook writes it, naming what it saves (the formula is the one-line version)
    notebook: str = ""


@dataclass(frozen=True)
class Bug:
    """A realistic wrong backward rule: the lab substitutes it for the right rule of `op` into `target`."""

    name: str
    title: str
    op: str  # the op whose backward step goes wrong
    target: str  # the gradient it gets wrong
    code: str  # the wrong line, as someone would write it
    fn: Fn  # (v, d) -> the wrong contribution
    why: str  # why it happens
    notice: str  # how one would notice it in real code
    overwrite: bool = False  # `=` where `+=` belongs: the earlier contribution is lost


@dataclass(frozen=True)
class Cell:
    """The notebook's backward cell of a mode: the gradients it computes. The ones before it are in scope."""

    exercise: str
    about: str  # what the learner writes, in a line
    grads: tuple[str, ...] = ()  # the nodes whose gradients the cell computes; (): every gradient of the mode


@dataclass(frozen=True)
class Slip:
    """A constant factor a wrong gradient may be off by, named for the learner from the net's own sizes."""

    factor: Fn  # v -> the number (v: the forward's values and sizes by name)
    label: str  # how the factor reads: "√hs"
    why: str  # the likely slip, as the feedback asks it


@dataclass(frozen=True)
class Warmup:
    """A right answer a check process grades before its first learner: imports, kernels and feedback paths warm."""

    mode: str
    target: str  # the gradient the code computes: the step is the one whose rules make it ("": a whole cell)
    code: str


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per pack, cached per object
class Net:
    """One network, declared as data: everything the explorer, the checks and the trainer know of it."""

    name: str  # ?net=NAME
    title: str  # the network select's label
    about: str  # one line for the learner
    nodes: tuple[Node, ...]
    ops: tuple[Op, ...]  # atomic lines and fused ops, in forward order (a fused op after its block)
    modes: tuple[Mode, ...]  # in the order the page offers them
    trained_mode: str  # the mode a training run uses: a trained model evaluates, samples and opens in it
    # the order of the notebook's cmp(...) lines: a step's complete gradients in the order the backward completes
    # them, ties (the rules of one op) in this order
    cmp_order: tuple[str, ...]
    bugs: tuple[Bug, ...] = ()
    cells: Mapping[str, Cell] = field(default_factory=dict)  # mode -> the notebook's cell ({} for a mode: all of it)
    warmup: tuple[Warmup, ...] = ()
    eps_code: str = "1e-5"  # the normalisation's epsilon as the notebook writes it
    # tighter (low, high) bounds of config fields than every net's (core/config.py BOUNDS), where the net needs them
    bounds: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    data_about: str = "the lecture's names, a context of block_size characters"  # what the export's data section is
    # config fields this net sets when a request names it without them (its own sizes: makemore part 5's, say)
    defaults: Mapping[str, int] = field(default_factory=dict)
    # the sizes a forward line reads by name: (axis, name), each read off the first parameter with that axis
    size_names: tuple[tuple[str, str], ...] = (("embd", "n_embd"), ("hidden", "n_hidden"))
    slips: tuple[Slip, ...] = ()  # factors of the net's own sizes the slip finder names (beyond n's)
    # what each size is, as the export's line that sets it says (the lecture's words for its own two)
    size_about: Mapping[str, str] = field(
        default_factory=lambda: {
            "n_embd": "the dimensionality of the character embedding vectors",
            "n_hidden": "the number of neurons in the hidden layer of the MLP",
        }
    )
    # the same for a training run's own fields (its lecture's learning-rate schedule, say); the sizes come from defaults
    train_defaults: Mapping[str, int | float] = field(default_factory=dict)

    @functools.cached_property
    def nodes_by_name(self) -> dict[str, Node]:
        return {node.name: node for node in self.nodes}

    @functools.cached_property
    def ops_by_name(self) -> dict[str, Op]:
        return {op.name: op for op in self.ops}

    @functools.cached_property
    def modes_by_name(self) -> dict[str, Mode]:
        return {mode.name: mode for mode in self.modes}

    @functools.cached_property
    def mode_names(self) -> tuple[str, ...]:
        return tuple(mode.name for mode in self.modes)

    @functools.cached_property
    def params(self) -> tuple[Node, ...]:
        """The parameters in the lecture's draw order: the seeded generator's first, then the global RNG's."""
        declared = (node for node in self.nodes if node.init is not None)
        return tuple(sorted(declared, key=lambda node: node.init.generator != "seeded"))  # type: ignore[union-attr]

    @functools.cached_property
    def param_names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.params)

    @functools.cached_property
    def bugs_by_name(self) -> dict[str, Bug]:
        return {bug.name: bug for bug in self.bugs}

    @functools.cached_property
    def eps(self) -> float:
        return float(self.eps_code)

    def sizes(self, params: Mapping[str, torch.Tensor], n: int) -> dict[str, int]:
        """The sizes a forward line reads by name (n and the net's size_names), read off the parameters' axes."""
        out = {"n": n}
        for axis, name in self.size_names:
            node = next((node for node in self.params if axis in node.axes), None)
            if node is not None:
                out[name] = params[node.name].shape[node.axes.index(axis)]
        return out

    def node(self, name: str) -> Node:
        return self.nodes_by_name[name]

    def mode_of(self, name: str) -> Mode:
        """The declared mode of that name; any other name is Undeclared."""
        if name not in self.modes_by_name:
            raise Undeclared("mode", f"no mode {name!r} in {self.name}: the modes are {', '.join(self.mode_names)}")
        return self.modes_by_name[name]

    def ops_for_mode(self, mode: str) -> list[Op]:
        """The forward ops of a mode, in forward order: fused ops replace their block of atomic lines."""
        return list(self._ops_for_mode(mode))

    def nodes_for_mode(self, mode: str) -> list[Node]:
        """The nodes that exist in a mode, in declaration order."""
        return list(self._nodes_for_mode(mode))

    def backward_schedule(self, mode: str) -> list[Op]:
        """The manual backward pass: one step per forward op, in reverse order."""
        return list(reversed(self.ops_for_mode(mode)))

    def eval_ops(self, until: str = "loss") -> list[Op]:
        """The trained model's forward up to the op that makes `until`, each op in its evaluation form."""
        return list(self._eval_ops(until))

    def bug_modes(self, bug: Bug) -> tuple[str, ...]:
        """The modes whose schedule has the rule this bug replaces (the others fuse its op away)."""
        return tuple(
            mode
            for mode in self.mode_names
            if any(
                op.name == bug.op and any(rule.target == bug.target for rule in op.rules)
                for op in self._ops_for_mode(mode)
            )
        )

    def cell_for(self, mode: str) -> Cell:
        """The notebook's cell of a mode; a mode the notebook has no cell for: its whole backward pass."""
        return self.cells.get(mode) or Cell(self.mode_of(mode).label, "the whole backward pass of this mode")

    @functools.cache  # noqa: B019 -- one object per pack, alive as long as the server: every request asks
    def _ops_for_mode(self, mode: str) -> tuple[Op, ...]:
        fused = self.mode_of(mode).fuses
        chosen = [
            op
            for op in self.ops
            if (op.block is None or op.block not in fused) and (op.fuses is None or op.fuses in fused)
        ]
        # a fused op stands where the first line of its block stood
        order = {op.name: i for i, op in enumerate(self.ops)}
        first_of_block: dict[str, int] = {}
        for op in self.ops:
            if op.block is not None:
                first_of_block.setdefault(op.block, order[op.name])

        def position(op: Op) -> int:
            return first_of_block[op.fuses] if op.fuses else order[op.name]

        return tuple(sorted(chosen, key=position))

    @functools.cache  # noqa: B019
    def _nodes_for_mode(self, mode: str) -> tuple[Node, ...]:
        names: set[str] = set()
        for op in self._ops_for_mode(mode):
            names.update(op.inputs)
            names.update(op.outputs)
        return tuple(node for node in self.nodes if node.name in names)

    @functools.cache  # noqa: B019
    def _eval_ops(self, until: str) -> tuple[Op, ...]:
        ops = []
        for op in self._ops_for_mode(self.trained_mode):
            ops.append(replace(op, forward=op.eval_forward) if op.eval_forward else op)
            if until in op.outputs:
                return tuple(ops)
        raise KeyError(f"no op of mode {self.trained_mode} of {self.name} makes {until}")
