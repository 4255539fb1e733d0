"""Pydantic schemas of the JSON API: XQuery for query strings, XPublic for responses."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, model_validator

from ..core.config import BOUNDS, Dtype, Init, ModelConfig
from ..learner.sandbox import MAX_CELL_CHARS, MAX_SOURCE_CHARS
from ..net.packs import DEFAULT_NET, NETS, default_net
from ..training.config import MAX_LR, TRAIN_BOUNDS, TrainConfig

_DEFAULTS = ModelConfig()
# every pack's names: which of them a net has is the engine's to say (a 422 naming the field, as here)
NetName = Literal.__getitem__(tuple(NETS))  # type: ignore[attr-defined]
BugName = Literal.__getitem__(("", *dict.fromkeys(b.name for net in NETS.values() for b in net.bugs)))  # type: ignore[attr-defined]
ModeName = Literal.__getitem__(tuple(dict.fromkeys(m for net in NETS.values() for m in net.mode_names)))  # type: ignore[attr-defined]
# the longest schedule of any pack's modes (its atomic one)
MAX_STEPS = max(len(net.ops_for_mode(mode)) for net in NETS.values() for mode in net.mode_names)


def _zero_bias() -> str:
    """What init=zero_bias sets, from the default net's declaration (b1=b2=bnbias=0, bngain=1 in the lecture's)."""
    names: dict[float, list[str]] = {}
    for node in default_net().params:
        if node.init is not None and node.init.zero_bias is not None:
            names.setdefault(node.init.zero_bias, []).append(node.name)
    return "zero_bias: " + ", ".join("=".join([*group, f"{value:g}"]) for value, group in names.items())


def _bounded(name: str, about: str, defaults: Any = _DEFAULTS) -> Any:
    """A field with the config's default and its bounds (a model field or a training-run field)."""
    low, high = {**BOUNDS, **TRAIN_BOUNDS}[name]
    return Field(getattr(defaults, name), ge=low, le=high, description=about)


def _net_bounds(fields: BaseModel) -> None:
    """A net's own bounds on the sizes (LayerNorm needs two hidden units): a 422 naming them, as the others."""
    net = NETS[fields.net]  # type: ignore[attr-defined]
    for name, (low, high) in net.bounds.items():
        value = getattr(fields, name)
        if not low <= value <= high:
            raise ValueError(f"{name} must be in [{low}, {high}] for the {net.name} network, got {value}")


def _with_net_defaults(data: Any, train: bool = False) -> Any:
    """A request naming a net without some of its sizes gets the net's own (Net.defaults), not the lecture's; a
    training run its schedule too (Net.train_defaults)."""
    if isinstance(data, dict) and isinstance(name := data.get("net"), str) and name in NETS:
        net = NETS[name]
        return {**net.defaults, **(net.train_defaults if train else {}), **data}
    return data


class PassQuery(BaseModel):
    """The config and mode of one forward/backward pass, carried in the query string."""

    model_config = ConfigDict(extra="forbid")

    seed: int = _bounded("seed", "torch.Generator seed for parameters and the batch")
    batch_size: int = _bounded("batch_size", "n, the minibatch size")
    n_embd: int = _bounded("n_embd", "embedding dimensions per character")
    n_hidden: int = _bounded("n_hidden", "hidden layer size")
    block_size: int = _bounded("block_size", "context length")
    dtype: Dtype = Field(_DEFAULTS.dtype, description="precision of the pass")
    init: Init = Field(_DEFAULTS.init, description=_zero_bias())
    run: int = _bounded("run", "a finished training run whose parameters to use (0: the initialisation)")
    bug: BugName = Field("", description="bug lab: a wrong backward rule to switch on ('' for none)")
    mode: ModeName = Field(
        default_net().mode_names[0], description="the backward mode: one exercise of the lecture (GET /api/meta)"
    )
    net: NetName = Field(DEFAULT_NET, description="the network (GET /api/nets): the lecture's MLP by default")

    _net_defaults = model_validator(mode="before")(_with_net_defaults)

    @model_validator(mode="after")
    def _within_the_nets_bounds(self) -> PassQuery:
        _net_bounds(self)
        return self

    def to_config(self) -> ModelConfig:
        return ModelConfig(**self.model_dump(exclude={"mode", "step", "code", "at", "slice_dim", "slice_index"}))


class StepQuery(PassQuery):
    """A pass plus how many backward steps have been taken (omitted: all of them)."""

    step: int | None = Field(
        None, ge=0, le=MAX_STEPS, description="backward steps taken; 0 = forward only; at most the mode's schedule"
    )


class TensorQuery(StepQuery):
    """A step's tensor; a 3-D one may be asked for as one 2-D slice (what the page's heatmaps draw at a time)."""

    slice_dim: int | None = Field(
        None, ge=0, le=2, description="a 3-D tensor's dim to cut: its tensors' data are then one slice alone"
    )
    slice_index: int | None = Field(None, ge=0, description="the index along slice_dim (with it, not alone)")

    @model_validator(mode="after")
    def _both_or_neither(self) -> TensorQuery:
        if (self.slice_dim is None) != (self.slice_index is None):
            raise ValueError("slice_dim and slice_index go together: give both, or neither for the whole tensor")
        return self

    @property
    def cut(self) -> tuple[int, int] | None:
        """(dim, index) of the slice asked for, or None for the whole tensor."""
        return None if self.slice_dim is None or self.slice_index is None else (self.slice_dim, self.slice_index)


class HealthPublic(BaseModel):
    status: Literal["ok"]
    cached_passes: int  # in the process that answered
    worker: int  # that process's id: with --workers N, requests spread over N of them


class SplitSizesPublic(BaseModel):
    train: int
    val: int
    test: int


class DatasetPublic(BaseModel):
    file: str
    words: int
    vocab: list[str]
    vocab_size: int
    block_size: int
    splits: SplitSizesPublic
    sha256: str
    embedded: bool  # the names list shipped with the server (not the lecture's: its numbers differ from the video's)


class TensorPublic(BaseModel):
    """A tensor on the wire: nested lists, non-finite entries as null, min/max over finite ones."""

    shape: list[int]
    data: Any
    min: float | None
    max: float | None
    nonfinite: dict[str, int]
    slice: list[int] | None = None  # [dim, index] where data is that slice alone (shape, min, max: the whole's)


class CmpPublic(BaseModel):
    """The lecture's comparison line: exact (bitwise), approx (torch.allclose), maxdiff; null where shapes differ."""

    exact: bool
    approx: bool
    maxdiff: float | None
    max_rel: float | None  # the largest relative error of one entry
    rel_err: float | None  # max|manual - reference| / max|reference|: the size of the error as a whole
    shape_ok: bool
    shape: list[int] | None = None  # the manual gradient's shape
    expected_shape: list[int] | None = None  # the reference's: the tensor's own shape
    # where the shapes differ (maxdiff, max_rel, rel_err null): a line to print instead of the missing numbers
    shape_mismatch: str | None = None


class NumericPublic(BaseModel):
    """Finite differences in float64 on a sample of entries (five-point stencil)."""

    max_rel_err: float | None
    entries_checked: int
    near_zero_entries: int
    near_zero_max_abs_err: float | None


class NodePublic(BaseModel):
    name: str
    kind: Literal["input", "param", "intermediate", "loss"]
    shape: list[int]
    op: str | None
    inputs: list[str]
    axes: list[str]
    about: str
    contributions: int


class RulePublic(BaseModel):
    target: str
    code: str  # the line that runs: the bug's, when the bug lab replaces this rule
    shapes: str
    contribution: int
    of: int
    notes: list[str]
    bug: bool  # the bug lab replaced this rule
    correct_code: str | None  # the right line, where the bug replaced it


class OpPublic(BaseModel):
    name: str
    inputs: list[str]
    outputs: list[str]
    formula: str
    about: str
    symbol: str
    fused: bool
    rules: list[RulePublic]


class BoxPublic(BaseModel):
    """A box of the drawn graph: its centre and size in CSS pixels, y growing downward."""

    x: float
    y: float
    w: float
    h: float


class OpBoxPublic(BoxPublic):
    symbol: str


class EdgePublic(BaseModel):
    """An arrow of the drawn graph: tensor → op ("in") or op → tensor ("out"), from box edge to box edge."""

    source: str
    target: str
    op: str
    tensor: str
    kind: Literal["in", "out"]
    points: list[tuple[float, float]]


class LayoutPublic(BaseModel):
    """The graph laid out top to bottom (server/explain/layout.py): boxes by name and every edge as a polyline."""

    width: float
    height: float
    nodes: dict[str, BoxPublic]
    ops: dict[str, OpBoxPublic]
    edges: list[EdgePublic]


class GraphPublic(BaseModel):
    mode: str
    mode_title: str
    nodes: list[NodePublic]
    ops: list[OpPublic]
    schedule: list[str]
    layout: LayoutPublic


class NodeStatePublic(BaseModel):
    status: Literal["none", "pending", "partial", "complete"]
    contributions: list[int]
    cmp: CmpPublic | None  # against autograd through the contributions received so far (all of them: complete)
    origin: bool  # this gradient is off while every gradient it was computed from is right: the error starts here


class StatePublic(BaseModel):
    mode: str
    loss: float | None
    step: int
    total_steps: int
    op: str | None
    next_op: str | None
    nodes: dict[str, NodeStatePublic]


class ContributionPublic(BaseModel):
    """One contribution to a node's manual gradient, beside autograd's gradient through the same op alone."""

    op: str
    step: int
    manual: TensorPublic
    autograd: TensorPublic
    overwrites: bool  # assigned with `=` (the bug lab): the earlier contributions are not in the gradient


class TensorDetailPublic(BaseModel):
    name: str
    kind: str
    about: str
    shape: list[int]
    axes: list[str]
    labels: list[list[str]]
    step: int
    status: str
    contributions: list[int]
    value: TensorPublic
    grad_manual: TensorPublic | None
    grad_autograd: TensorPublic | None
    reference: str | None  # what grad_autograd is: "autograd, complete" or autograd through the first k paths
    diff: TensorPublic | None
    cmp: CmpPublic | None
    split: list[ContributionPublic] | None  # a node used by several ops: each contribution so far
    numeric: NumericPublic | None  # finite differences of the complete gradient, once it is complete
    numeric_note: str | None  # before then: from which step they are available


class ErrorPublic(BaseModel):
    detail: Any


# --- training runs (Exercise 4) ---------------------------------------------------------------------

_TRAIN = TrainConfig()


def _number_not_text(value: Any) -> Any:
    # a JSON body says 5 or 5.0, never "5" or true: pydantic's lax mode would take those
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number")
    return value


JsonInt = Annotated[int, BeforeValidator(_number_not_text)]
JsonFloat = Annotated[float, BeforeValidator(_number_not_text)]


def _train_bounded(name: str, about: str) -> Any:
    return _bounded(name, about, _TRAIN)


class RunRequest(BaseModel):
    """A training run to start (defaults = the lecture's Exercise 4)."""

    model_config = ConfigDict(extra="forbid")

    seed: JsonInt = _train_bounded("seed", "generator seed: parameters, then every batch")
    n_embd: JsonInt = _train_bounded("n_embd", "embedding dimensions per character")
    n_hidden: JsonInt = _train_bounded("n_hidden", "hidden layer size")
    block_size: JsonInt = _train_bounded("block_size", "context length")
    batch_size: JsonInt = _train_bounded("batch_size", "minibatch size")
    max_steps: JsonInt = _train_bounded("max_steps", "optimisation steps")
    lr: JsonFloat = Field(_TRAIN.lr, ge=0, le=MAX_LR, allow_inf_nan=False, description="learning rate")
    lr_decay_step: JsonInt = _train_bounded("lr_decay_step", "step from which lr_after is used")
    lr_after: JsonFloat = Field(_TRAIN.lr_after, ge=0, le=MAX_LR, allow_inf_nan=False, description="decayed rate")
    check_every: JsonInt = _train_bounded("check_every", "compare manual gradients with autograd every K steps")
    backward: Literal["manual", "autograd", "both", "code"] = Field(
        "manual",
        description="manual (fused Exercise 2+3 backward), autograd, both from the same seed, or code: your own "
        "backward block",
    )
    code: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_CELL_CHARS,
        description="backward=code: the notebook's backward block inside the training loop, from "
        "dlogits = F.softmax(logits, 1) to grads = [dC, dW1, db1, dW2, db2, dbngain, dbnbias], in the lecture's "
        f"PyTorch syntax, at most {MAX_CELL_CHARS} characters",
    )
    keep_running: StrictBool = Field(False, description="train on when nobody watches its event stream")
    net: NetName = Field(DEFAULT_NET, description="the network to train (GET /api/nets)")

    _net_defaults = model_validator(mode="before")(lambda data: _with_net_defaults(data, train=True))

    @model_validator(mode="after")
    def _code_with_code(self) -> RunRequest:
        if (self.backward == "code") != (self.code is not None):
            raise ValueError("code goes with backward=code, and backward=code needs code: the backward block")
        _net_bounds(self)
        return self

    def to_configs(self) -> list[TrainConfig]:
        fields = self.model_dump(exclude={"backward", "keep_running", "code"})
        kinds = ["manual", "autograd"] if self.backward == "both" else [self.backward]
        return [TrainConfig(**fields, backward=kind, code=self.code) for kind in kinds]


class TrainConfigPublic(BaseModel):
    seed: int
    n_embd: int
    n_hidden: int
    block_size: int
    batch_size: int
    max_steps: int
    lr: float
    lr_decay_step: int
    lr_after: float
    check_every: int
    backward: Literal["manual", "autograd", "code"]
    code: str | None = None
    net: str = DEFAULT_NET  # runs from before networks were packs trained the lecture's


class RunResultPublic(BaseModel):
    train_loss: float | None
    val_loss: float | None
    samples: list[str]
    duration_s: float


class RunPublic(BaseModel):
    id: int
    created: float
    config: TrainConfigPublic
    group: int | None
    keep_running: bool
    status: Literal["queued", "running", "finished", "cancelled", "diverged", "failed", "interrupted"]
    reason: str | None
    step: int
    max_steps: int
    started: float | None
    ended: float | None
    result: RunResultPublic | None
    has_params: bool
    cpu_limit_s: float | None = None  # seconds of CPU its training process may use


class RunsPublic(BaseModel):
    runs: list[RunPublic]
    next: int | None = None  # GET /api/runs: the `before` of the next page; null on the last one


class RunStartedPublic(RunPublic):
    """A run just started: with its owner token, given only in this answer (cancel and delete need it)."""

    owner_token: str


class RunsStartedPublic(BaseModel):
    runs: list[RunStartedPublic]


class RunDetailPublic(RunPublic):
    """A run with its history, rebuilt from its events."""

    history: dict[str, Any]


class RunLossesPublic(BaseModel):
    steps: int
    loss: list[float | None]  # per step; null where the loss was not finite


class CellPublic(BaseModel):
    """The notebook's backward cell of a mode, which POST /api/check without a step grades whole."""

    exercise: str
    about: str  # what the learner writes, in a line
    grads: list[str]  # the gradients it computes, in the order of the notebook's cmp lines
    given: list[str]  # the gradients in scope before it (the notebook's earlier cells computed them)


class ModePublic(BaseModel):
    name: str
    label: str  # short, for a select
    title: str  # as GET /api/graph's mode_title
    steps: int  # backward steps in the mode's schedule
    cell: CellPublic


class FieldPublic(BaseModel):
    """A field of a request (PassQuery, RunRequest): its default, and its bounds or choices where it has them."""

    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: list[str] | None = None


class MetaPublic(BaseModel):
    """What the page builds its controls from: the declared modes, and every config field of a pass."""

    modes: list[ModePublic]
    default_mode: str
    config: dict[str, FieldPublic]  # PassQuery's fields but mode, in its order
    train: dict[str, FieldPublic]  # RunRequest's fields: the training form's defaults and bounds
    train_mode: str  # the mode a trained run is explored in (its backward's)
    train_code: TrainCodePublic
    cmp_order: list[str]  # the notebook's order of its cmp(...) lines: the check cell's ties


class TrainCodePublic(BaseModel):
    """A run with your own backward (backward=code): what its block reads and must leave for the update."""

    reads: list[str]  # the forward's tensors, the parameters, Xb, Yb and n, in the forward's order
    grads: list[str]  # grads = [dC, dW1, ...]: the gradients in the order of the parameters
    max_chars: int


class BugPublic(BaseModel):
    name: str
    title: str
    op: str
    target: str
    code: str
    modes: list[str]
    why: str
    notice: str


class BugsPublic(BaseModel):
    bugs: list[BugPublic]


class NetQuery(BaseModel):
    """Which network an answer about the declaration is for."""

    model_config = ConfigDict(extra="forbid")

    net: NetName = Field(DEFAULT_NET, description="the network (GET /api/nets): the lecture's MLP by default")


class NetPublic(BaseModel):
    name: str  # ?net=NAME
    title: str
    about: str
    default: bool  # what a request without net builds
    modes: list[str]
    trained_mode: str
    calibrated: list[str]  # the statistics set over the training split after training (batchnorm's); [] for none
    defaults: dict[str, int]  # the config fields a request naming this net without them gets ({}: the lecture's)
    train_defaults: dict[str, int | float]  # the same for a training run's own fields (its schedule)


class NetsPublic(BaseModel):
    nets: list[NetPublic]


CLASS_CODE_CHARS = 32  # a class code as typed (six letters and digits, with any spaces or dashes)
STUDENT_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"


class CheckRequest(PassQuery):
    """A learner's code for the gradient(s) of one backward step, or (no step) the mode's whole backward cell."""

    step: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="the backward step (1 = the first) whose gradients the code computes; none: the code is the "
        "mode's whole backward cell (Exercise 1's cell, 2's three lines, 3's one-liner, 4's block), cmp lines and all",
    )
    code: str = Field(
        max_length=MAX_CELL_CHARS,
        description=f"the lecture's PyTorch syntax, e.g. dlogprobs = ...; a step's code at most {MAX_SOURCE_CHARS} "
        "characters",
    )
    run: Literal[0] = Field(0, description="challenges use the initialisation")
    bug: Literal[""] = Field("", description="challenges use the right rules")
    class_code: str | None = Field(
        None,
        alias="class",
        max_length=CLASS_CODE_CHARS,
        description="a class's code (the teacher's board): the check's verdict and slips (never the code) are "
        "counted for the class's teacher; an unknown code is a 404 and nothing is checked",
    )
    student: str | None = Field(
        None,
        pattern=STUDENT_PATTERN,
        description="with class: the anonymous id the student's browser made up (no name)",
    )

    @model_validator(mode="after")
    def _step_code_size(self) -> CheckRequest:
        if self.step is not None and len(self.code) > MAX_SOURCE_CHARS:
            raise ValueError(f"a step's code is at most {MAX_SOURCE_CHARS} characters (a cell's {MAX_CELL_CHARS})")
        if self.class_code is not None and self.student is None:
            raise ValueError("a check in a class sends the student's anonymous id too (student)")
        return self

    def to_config(self) -> ModelConfig:
        return ModelConfig(**self.model_dump(exclude={"mode", "step", "code", "at", "class_code", "student"}))


class CheckItemPublic(BaseModel):
    name: str
    expected_shape: list[int]
    shape: list[int] | None = None
    complete: bool
    contribution: list[int]
    feedback: list[str]
    cmp: CmpPublic | None
    diff: TensorPublic | None
    written: bool  # the code assigns this gradient (false: still to write; not graded, cmp null)


class CheckPublic(BaseModel):
    step: int
    op: str
    formula: str
    correct: bool  # every gradient of the step right: the step is solved
    results: list[CheckItemPublic]
    written: list[str]  # the step's gradients the code assigns, in the step's order
    remaining: list[str]  # the step's gradients the code does not assign yet: still to write
    right: list[str]  # the step's gradients the code got right (a step of two is solved one at a time)


class ExportStep(BaseModel):
    """A step the learner solved: its number and their code."""

    model_config = ConfigDict(extra="forbid")

    step: JsonInt = Field(ge=1, le=MAX_STEPS, description="the backward step (1 = the first)")
    code: str = Field(max_length=MAX_SOURCE_CHARS, description="the learner's code for it")


class ExportRequest(PassQuery):
    """A learner's backward to take home as a runnable file: the mode's whole cell (code), or their solved steps."""

    code: str | None = Field(None, max_length=MAX_CELL_CHARS, description="the mode's whole backward cell")
    steps: list[ExportStep] | None = Field(
        None, min_length=1, max_length=MAX_STEPS, description="solved steps; the lecture's lines fill the gaps"
    )
    format: Literal["py", "ipynb"] = Field("py", description="a Python script, or a Jupyter notebook (nbformat 4)")
    run: Literal[0] = Field(0, description="exports rebuild the initialisation")
    bug: Literal[""] = Field("", description="exports use the right rules")

    @model_validator(mode="after")
    def _one_of(self) -> ExportRequest:
        if (self.code is None) == (self.steps is None):
            raise ValueError("send the whole cell as code, or the solved steps as steps: one of the two")
        if self.steps is not None and len({s.step for s in self.steps}) < len(self.steps):
            raise ValueError("each step once")
        return self

    def to_config(self) -> ModelConfig:
        return ModelConfig(**self.model_dump(exclude={"mode", "code", "steps", "format"}))


class CellCheckItemPublic(BaseModel):
    """One gradient of a whole cell, checked as the notebook's cmp line checks it: the cell's final value."""

    name: str  # the tensor, as the cmp line names it
    grad: str
    required: bool  # the notebook's cell computes it (else the cell went on past it, and it is checked too)
    line: int | None  # the cell's last line that wrote it
    text: str  # the notebook's cmp line: name | exact | approximate | maxdiff
    ok: bool  # the cmp line says approximate: True
    cmp: CmpPublic | None
    feedback: list[str]


class CellPrintedPublic(BaseModel):
    """A cmp(...) line of the cell, answered where it stands (with the names as they are there)."""

    line: int
    text: str
    ok: bool


class CellWrongPublic(BaseModel):
    """The first line whose gradient is wrong while everything it read was right: what is wrong with it."""

    line: int | None  # null: a gradient the cell never computes, or a line that is missing (see missing)
    end_line: int | None  # the last of the lines that build the gradient together (softmax, -= 1, /= n)
    code: str
    name: str
    feedback: list[str]
    diff: TensorPublic | None  # yours - what the line should make
    missing: MissingLinePublic | None = None  # the slip is a line that is not there


class MissingLinePublic(BaseModel):
    """A line the cell leaves out: where it goes and what it is (dlogits /= n after line 2)."""

    after: int
    code: str


class CellCheckPublic(BaseModel):
    mode: str
    exercise: str
    correct: bool
    checks: list[CellCheckItemPublic]  # in the order of the notebook's cmp lines
    printed: list[CellPrintedPublic]  # the cell's own cmp lines, in its order
    first_wrong: CellWrongPublic | None
    notes: list[str]


class HintPublic(BaseModel):
    target: str
    hints: list[str]


class HintsPublic(BaseModel):
    step: int
    op: str
    ladder: list[HintPublic]


class HintQuery(PassQuery):
    step: int = Field(ge=1, le=MAX_STEPS, description="the backward step (1 = the first)")


# --- why a gradient is what it is (server/explain/why.py) -------------------------------------------------------


class WhyQuery(StepQuery):
    at: str | None = Field(
        None,
        pattern=r"^\d{1,6}(,\d{1,6}){0,3}$",
        description="the entry the worked examples (or the written-out rule) use: indices, e.g. 3,7",
    )


class DerivationLinePublic(BaseModel):
    tex: str
    mathml: str  # the LaTeX as MathML, drawn by the browser
    note: str  # what the line does, in words ("" where the line says it)


class WhyRulePublic(BaseModel):
    op: str
    step: int
    formula: str
    code: str  # the right rule, as the notebook writes it
    bug_code: str | None  # the bug lab's line standing in for it
    contribution: int
    of: int
    reached: bool
    lines: list[DerivationLinePublic]
    example: dict[str, Any] | None  # a worked example from the live tensors: its "kind" says which


class ApproxPublic(BaseModel):
    index: list[int]  # where |manual - reference| is largest
    manual: float
    reference: float
    abs: float
    rel: float | None
    cause: str


class WhyPublic(BaseModel):
    name: str
    mode: str
    step: int
    index: list[int]
    rules: list[WhyRulePublic]
    forces: dict[str, Any] | None  # the logits: n·dlogits = softmax − one-hot for one row
    approx: ApproxPublic | None  # an approximate gradient: where it differs and why
    division: dict[str, Any] | None  # counts_sum: the lecture's 1.0/x vs x**-1 remark, measured


class OperandPublic(BaseModel):
    tensor: str
    grad: bool  # the gradient d<tensor> (else the forward value)
    index: list[int]
    value: float


class InstancePartPublic(BaseModel):
    op: str
    step: int
    code: str
    bug: bool
    lines: list[str]
    operands: list[OperandPublic]
    value: float | None


class InstancePublic(BaseModel):
    name: str
    step: int
    index: list[int]
    parts: list[InstancePartPublic]  # each rule that added to the entry by this step, written out
    total: float | None  # the manual gradient's entry


# --- a teacher's class (server/runs/classes.py) ---------------------------------------------------------------


class ClassRequest(BaseModel):
    """A new class: its title, as its teacher's page shows it."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=120, description="what the class page calls it, e.g. 'CS101 week 3'")


class ClassCreatedPublic(BaseModel):
    code: str  # what the students type (or open as /?class=CODE)
    teacher_token: str  # the teacher's secret: Authorization: Bearer <token> reads and deletes the class
    title: str


class ClassInfoPublic(BaseModel):
    code: str
    title: str


class ClassStepPublic(BaseModel):
    net: str
    mode: str
    step: int | None  # null: the mode's whole backward cell
    attempts: int
    students: int  # distinct students who checked it
    solved: int  # students with a right check
    median_attempts_to_solve: float | None  # over the students who solved it: checks up to their first right one
    slips: dict[str, int]  # kind -> checks that told it, most common first
    slip_texts: dict[str, str]  # kind -> the line most often shown for it (without any code)


class ClassSummaryPublic(BaseModel):
    code: str
    title: str
    steps: list[ClassStepPublic]
