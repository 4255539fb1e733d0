"""makemore part 5's WaveNet, declared as data: three FlattenConsecutive(2), Linear, BatchNorm1d, Tanh levels.

The lecture's data and embedding `C[Xb]` (one n_embd-vector per context character, block_size of them); then, three
times, two consecutive positions are viewed side by side (`(B, T, C) -> (B, T/2, 2C)`, the last time squeezed to
`(B, 2C)`), a linear layer without bias, batchnorm and tanh; then the output layer and the cross-entropy (the
lecture's own lines). The first two batchnorms see 3-D inputs: their mean and (Bessel-corrected) variance reduce
over the batch and the time positions, dims (0, 1), so each statistic counts n*T entries where the lecture's
counted n. Every line is written as an atomic notebook line with its rule and derivation; a fused batchnorm per
level folds its block with Exercise 3's closed form, n replaced by the count of reduced entries.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from ..declare import Bug, Cell, Init, Mode, Net, Node, Op, Rule, Warmup
from .makemore4 import NET as LECTURE
from .makemore4 import linear_op

NODES, OPS_BY_NAME = LECTURE.nodes_by_name, LECTURE.ops_by_name  # the lecture's, where this net has the same

TITLE = "WaveNet (makemore part 5)"
ABOUT = (
    "makemore part 5: the embedding, then three levels of FlattenConsecutive(2), linear, batchnorm and tanh that "
    "fuse the context two positions at a time, and the output layer; the first two batchnorms normalise 3-D "
    "tensors over the batch and the time positions, dims (0, 1)."
)
EPS_CODE = "1e-5"  # BatchNorm1d's epsilon in makemore part 5, as the notebook writes it
EPS = float(EPS_CODE)
TRAINED_MODE = "fused"  # the training loop's backward: every batchnorm and the cross-entropy fused
LEVELS = 3  # three halvings of the context: block_size must be 2**3
# makemore part 5's final configuration: a request naming this net without these fields gets them
DEFAULTS: dict[str, int] = {"block_size": 8, "n_embd": 24, "n_hidden": 128}
# makemore part 5's learning-rate schedule: 0.1, then 0.01 from step 150,000 (of 200,000)
TRAIN_DEFAULTS: dict[str, int | float] = {"lr_decay_step": 150_000}
# the context must halve three times to one position; two entries per statistic at least (Bessel's n-1)
BOUNDS: dict[str, tuple[int, int]] = {"block_size": (8, 8)}
_CE = ("logit_maxes", "norm_logits", "counts", "counts_sum", "counts_sum_inv", "probs", "logprobs", "loss")

BCAST_T = "broadcast over the batch and the time positions (dims 0 and 1) in the forward → sum over both here"
SUM_T = "a statistic over dims (0, 1) in the forward → its gradient is copied along both, 1/count each"
BCAST_B = "broadcast over dim 0 in the forward pass → sum over dim 0 here"
SUM_B = "summed over dim 0 in the forward pass → the gradient is copied (broadcast) along dim 0"


class _Level:
    """The names, reduced dims and entry count of one level's tensors (1-based level)."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.three_d = level < LEVELS  # the last level's input is squeezed to (n, 2C): batchnorm over dim 0 alone
        self.inp = "emb" if level == 1 else f"h{level - 1}"
        self.flat, self.W, self.pre = f"flat{level}", f"W{level}", f"hprebn{level}"
        self.mean, self.diff, self.diff2 = f"bnmeani{level}", f"bndiff{level}", f"bndiff2_{level}"
        self.var, self.var_inv, self.raw = f"bnvar{level}", f"bnvar_inv{level}", f"bnraw{level}"
        self.gain, self.bias, self.act, self.h = f"bngain{level}", f"bnbias{level}", f"hpreact{level}", f"h{level}"
        self.running = (f"bnmean_running{level}", f"bnvar_running{level}")
        self.dims: tuple[int, ...] = (0, 1) if self.three_d else (0,)
        self.dims_code = "(0, 1)" if self.three_d else "0"
        # the entries each statistic reduces, as a line of code and in LaTeX
        self.m_code = f"(n*{self.pre}.shape[1])" if self.three_d else "n"
        self.m_tex = "m" if self.three_d else "n"
        self.idx = "bt" if self.three_d else "i"  # an entry's batch (and time) index in the derivations
        self.sum_over = r"\sum_{b,t}" if self.three_d else r"\sum_i"
        self.bcast = BCAST_T if self.three_d else BCAST_B
        self.spread = SUM_T if self.three_d else SUM_B

    def example(self, kind: str) -> str | None:
        """The Why drawer's worked example of a rule: its examples read 2-D tensors, so a 3-D level has none."""
        return None if self.three_d else kind

    def m(self, v: Any) -> int:
        """The count of entries each statistic reduces: n*T on a 3-D input, n on the last, 2-D one."""
        x = getattr(v, self.pre)
        return v.n * x.shape[1] if self.three_d else v.n


def _t(name: str) -> str:
    """A node's name in a derivation, as the page points at it."""
    return rf"\text{{{name}}}"


def _d(name: str) -> str:
    """A node's gradient in a derivation."""
    return rf"\text{{d{name}}}"


# --- the nodes -------------------------------------------------------------------------------------------------


def _level_nodes(lv: _Level) -> list[Node]:
    time = ("batch", "time") if lv.three_d else ("batch",)
    stat = ("one", "one", "hidden") if lv.three_d else ("one", "hidden")
    width = "embd2" if lv.level == 1 else "hidden2"
    where = "over the batch and the time positions" if lv.three_d else "over the batch"
    return [
        Node(lv.flat, "intermediate", (*time, width), f"level {lv.level}: two consecutive positions side by side"),
        Node(
            lv.pre, "intermediate", (*time, "hidden"), f"level {lv.level}: the linear layer's output, before batchnorm"
        ),
        Node(lv.mean, "intermediate", stat, f"level {lv.level}: every hidden unit's mean {where}"),
        Node(lv.diff, "intermediate", (*time, "hidden"), f"level {lv.level}: pre-activations with their mean removed"),
        Node(lv.diff2, "intermediate", (*time, "hidden"), f"level {lv.level}: squared deviations from the mean"),
        Node(lv.var, "intermediate", stat, f"level {lv.level}: every unit's variance {where} (Bessel: count-1)"),
        Node(lv.var_inv, "intermediate", stat, f"level {lv.level}: 1/sqrt(variance + eps)"),
        Node(lv.raw, "intermediate", (*time, "hidden"), f"level {lv.level}: the normalised activations"),
        Node(lv.act, "intermediate", (*time, "hidden"), f"level {lv.level}: after batchnorm's gain and bias"),
        Node(lv.h, "intermediate", (*time, "hidden"), f"level {lv.level}: the tanh activations"),
    ]


def _param_nodes(lv: _Level) -> list[Node]:
    fan_in = "n_embd*2" if lv.level == 1 else "n_hidden*2"
    axis = "embd2" if lv.level == 1 else "hidden2"
    return [
        Node(
            lv.W,
            "param",
            (axis, "hidden"),
            f"level {lv.level}'s linear layer (no bias: batchnorm removes it), scaled by 1/sqrt(fan_in)",
            Init(
                f"{lv.W} = torch.randn(({fan_in}, n_hidden), generator=g) / ({fan_in})**0.5",
                lambda r, s, axis=axis: r / s[axis] ** 0.5,
            ),
        ),
        Node(
            lv.gain,
            "param",
            ("hidden",),
            f"level {lv.level}'s batchnorm gain, one per hidden unit",
            Init(f"{lv.gain} = torch.ones(n_hidden)", lambda r, s: torch.ones_like(r), "fresh", zero_bias=1.0),
        ),
        Node(
            lv.bias,
            "param",
            ("hidden",),
            f"level {lv.level}'s batchnorm bias, one per hidden unit",
            Init(f"{lv.bias} = torch.zeros(n_hidden)", lambda r, s: torch.zeros_like(r), "fresh", zero_bias=0.0),
        ),
    ]


LEVEL_LIST = [_Level(level) for level in range(1, LEVELS + 1)]

NODE_LIST = [
    NODES["Xb"],
    NODES["Yb"],
    NODES["C"],
    *(node for lv in LEVEL_LIST for node in _param_nodes(lv)),
    Node(
        "W4",
        "param",
        ("hidden", "vocab"),
        "weights of the output layer: 1/sqrt(fan_in), then *0.1 so the first predictions are nearly uniform",
        Init(
            "W4 = torch.randn((n_hidden, vocab_size), generator=g) / n_hidden**0.5 * 0.1",
            lambda r, s: r / s["hidden"] ** 0.5 * 0.1,
        ),
    ),
    Node(
        "b4",
        "param",
        ("vocab",),
        "bias of the output layer",
        Init("b4 = torch.zeros(vocab_size)", lambda r, s: torch.zeros_like(r), "fresh", zero_bias=0.0),
    ),
    NODES["emb"],
    *(node for lv in LEVEL_LIST for node in _level_nodes(lv)),
    *(NODES[name] for name in ("logits", *_CE)),
]


# --- the ops of one level --------------------------------------------------------------------------------------


def _flatten(lv: _Level) -> Op:
    x, out = lv.inp, lv.flat

    def forward(v: Any) -> torch.Tensor:
        t = getattr(v, x)  # (n, T, C) -> (n, T/2, 2C): positions 2t and 2t+1 side by side
        flat = t.view(v.n, t.shape[1] // 2, t.shape[2] * 2)
        return flat if lv.three_d else flat.squeeze(1)  # the last level's one position: (n, 2C)

    if lv.three_d:
        formula = f"{out} = {x}.view(n, {x}.shape[1]//2, {x}.shape[2]*2)"
        tex = (
            rf"{_t(out)}_{{b,t,\,p C + c}} = {_t(x)}_{{b,\,2t + p,\,c}} \quad (p \in \{{0, 1\}},\; C = \text{{{x}.shape[2]}})",
            rf"\frac{{\partial\,{_t(out)}_{{b,t,\,pC + c}}}}{{\partial\,{_t(x)}_{{b,\,2t+p,\,c}}}} = 1",
            rf"{_d(x)}_{{b,\,2t+p,\,c}} = {_d(out)}_{{b,t,\,pC + c}}",
        )
        about = f"FlattenConsecutive(2): positions 2t and 2t+1 of {x} side by side, half as many positions"
    else:
        formula = f"{out} = {x}.view(n, {x}.shape[1]//2, {x}.shape[2]*2).squeeze(1)"
        tex = (
            rf"{_t(out)}_{{b,\,p C + c}} = {_t(x)}_{{b,\,p,\,c}} \quad (p \in \{{0, 1\}},\; C = \text{{{x}.shape[2]}})",
            rf"\frac{{\partial\,{_t(out)}_{{b,\,pC + c}}}}{{\partial\,{_t(x)}_{{b,p,c}}}} = 1",
            rf"{_d(x)}_{{b,p,c}} = {_d(out)}_{{b,\,pC + c}}",
        )
        about = f"FlattenConsecutive(2) at the last level: the two positions of {x} side by side, squeezed to 2-D"
    return Op(
        out,
        (x,),
        (out,),
        formula,
        forward,
        (
            Rule(
                x,
                f"d{x} = d{out}.view({x}.shape)",
                lambda v, d: getattr(d, out).view(getattr(v, x).shape),
                "a view only rearranges (the squeeze too): the gradient is viewed back to the input's shape",
                tex=tex,
            ),
        ),
        about,
        symbol="flatten",
        rows="each",
    )


def _linear_no_bias(lv: _Level) -> Op:
    x, w, out = lv.flat, lv.W, lv.pre

    def dw(v: Any, d: Any) -> torch.Tensor:
        # every (batch, time) row is a row of one big matrix product: the weight is shared by all of them
        xs, ds = getattr(v, x), getattr(d, out)
        return xs.reshape(-1, xs.shape[-1]).T @ ds.reshape(-1, ds.shape[-1])

    if lv.three_d:
        dw_code = f"d{w} = {x}.view(-1, {x}.shape[-1]).T @ d{out}.view(-1, {out}.shape[-1])"
        ix, over = "b,t", r"\text{for every } b, t"
        dw_note = "matrix multiply over every (batch, time) row at once: the weight is shared by all, so dW sums them"
    else:
        dw_code = f"d{w} = {x}.T @ d{out}"
        ix, over = "b", r"\text{for every row } b"
        dw_note = "matrix multiply: the shapes dictate the transpose"
    sums = r"\sum_{b,t}" if lv.three_d else r"\sum_b"
    form = rf"{_t(out)}_{{{ix},j}} = \sum_k {_t(x)}_{{{ix},k}}\,{_t(w)}_{{kj}}"
    return Op(
        out,
        (x, w),
        (out,),
        f"{out} = {x} @ {w}",
        lambda v: getattr(v, x) @ getattr(v, w),
        (
            Rule(
                x,
                f"d{x} = d{out} @ {w}.T",
                lambda v, d: getattr(d, out) @ getattr(v, w).T,
                "matrix multiply: the shapes dictate the transpose (the last dim, at every position alike)",
                tex=(
                    form,
                    rf"\frac{{\partial\,{_t(out)}_{{{ix},j}}}}{{\partial\,{_t(x)}_{{{ix},k}}}} = {_t(w)}_{{kj}} \quad \text{{for every column }} j",
                    rf"{_d(x)}_{{{ix},k}} = \sum_j {_d(out)}_{{{ix},j}}\;{_t(w)}_{{kj}}",
                ),
                example=lv.example("matmul"),
            ),
            Rule(
                w,
                dw_code,
                dw,
                dw_note,
                tex=(
                    form,
                    rf"\frac{{\partial\,{_t(out)}_{{{ix},j}}}}{{\partial\,{_t(w)}_{{kj}}}} = {_t(x)}_{{{ix},k}} \quad {over}",
                    rf"{_d(w)}_{{kj}} = {sums} {_t(x)}_{{{ix},k}}\;{_d(out)}_{{{ix},j}}",
                ),
                example=lv.example("matmul"),
            ),
        ),
        f"level {lv.level}: a linear layer without bias (batchnorm follows)",
        symbol="@",
        rows="each",
    )


def _bn_ops(lv: _Level) -> list[Op]:
    """The atomic batchnorm lines of one level, block bn<level>: the lecture's seven, over lv.dims."""
    L, dims, dc, m_code, m_tex, i, S = lv, lv.dims, lv.dims_code, lv.m_code, lv.m_tex, lv.idx, lv.sum_over
    block = f"bn{lv.level}"
    count = r"\quad (m = n \cdot T\text{: every batch row at every time position})" if lv.three_d else ""
    return [
        Op(
            L.mean,
            (L.pre,),
            (L.mean,),
            f"{L.mean} = 1/{m_code} * {L.pre}.sum({dc}, keepdim=True)",
            lambda v: 1 / L.m(v) * getattr(v, L.pre).sum(dims, keepdim=True),
            (
                Rule(
                    L.pre,
                    f"d{L.pre} += 1.0/{m_code} * (torch.ones_like({L.pre}) * d{L.mean})",
                    lambda v, d: 1.0 / L.m(v) * (torch.ones_like(getattr(v, L.pre)) * getattr(d, L.mean)),
                    L.spread,
                    tex=(
                        rf"{_t(L.mean)}_j = \frac{{1}}{{{m_tex}}}{S} {_t(L.pre)}_{{{i}j}}{count}",
                        rf"\frac{{\partial\,{_t(L.mean)}_j}}{{\partial\,{_t(L.pre)}_{{{i}j}}}} = \frac{{1}}{{{m_tex}}}",
                        rf"{_d(L.pre)}_{{{i}j}} \;\text{{+=}}\; \frac{{1}}{{{m_tex}}}\,{_d(L.mean)}_j",
                    ),
                ),
            ),
            f"level {lv.level} batchnorm: the mean of every unit over dims {dc}",
            symbol="mean",
            block=block,
        ),
        Op(
            L.diff,
            (L.pre, L.mean),
            (L.diff,),
            f"{L.diff} = {L.pre} - {L.mean}",
            lambda v: getattr(v, L.pre) - getattr(v, L.mean),
            (
                Rule(
                    L.pre,
                    f"d{L.pre} = d{L.diff}.clone()",
                    lambda v, d: getattr(d, L.diff).clone(),
                    "subtraction passes the gradient through",
                    tex=(
                        rf"{_t(L.diff)}_{{{i}j}} = {_t(L.pre)}_{{{i}j}} - {_t(L.mean)}_j",
                        rf"\frac{{\partial\,{_t(L.diff)}_{{{i}j}}}}{{\partial\,{_t(L.pre)}_{{{i}j}}}} = 1",
                        rf"{_d(L.pre)}_{{{i}j}} = {_d(L.diff)}_{{{i}j}}",
                    ),
                ),
                Rule(
                    L.mean,
                    f"d{L.mean} = (-d{L.diff}).sum({dc}, keepdim=True)",
                    lambda v, d: (-getattr(d, L.diff)).sum(dims, keepdim=True),
                    L.bcast + " (keepdim), with a minus sign",
                    tex=(
                        rf"{_t(L.diff)}_{{{i}j}} = {_t(L.pre)}_{{{i}j}} - {_t(L.mean)}_j",
                        rf"\frac{{\partial\,{_t(L.diff)}_{{{i}j}}}}{{\partial\,{_t(L.mean)}_j}} = -1",
                        rf"{_d(L.mean)}_j = -{S} {_d(L.diff)}_{{{i}j}}",
                    ),
                    example=lv.example("sum"),
                ),
            ),
            f"level {lv.level} batchnorm: centre",
            symbol="−",
            block=block,
            rows="each",
        ),
        Op(
            L.diff2,
            (L.diff,),
            (L.diff2,),
            f"{L.diff2} = {L.diff}**2",
            lambda v: getattr(v, L.diff) ** 2,
            (
                Rule(
                    L.diff,
                    f"d{L.diff} += (2*{L.diff}) * d{L.diff2}",
                    lambda v, d: (2 * getattr(v, L.diff)) * getattr(d, L.diff2),
                    "power rule",
                    tex=(
                        rf"{_t(L.diff2)}_{{{i}j}} = {_t(L.diff)}_{{{i}j}}^2",
                        rf"\frac{{\partial\,{_t(L.diff2)}_{{{i}j}}}}{{\partial\,{_t(L.diff)}_{{{i}j}}}} = 2\,{_t(L.diff)}_{{{i}j}}",
                        rf"{_d(L.diff)}_{{{i}j}} \;\text{{+=}}\; 2\,{_t(L.diff)}_{{{i}j}}\;{_d(L.diff2)}_{{{i}j}}",
                    ),
                ),
            ),
            f"level {lv.level} batchnorm: square the deviations",
            symbol="**2",
            block=block,
            rows="each",
        ),
        Op(
            L.var,
            (L.diff2,),
            (L.var,),
            f"{L.var} = 1/({m_code}-1) * {L.diff2}.sum({dc}, keepdim=True)",
            lambda v: 1 / (L.m(v) - 1) * getattr(v, L.diff2).sum(dims, keepdim=True),
            (
                Rule(
                    L.diff2,
                    f"d{L.diff2} = (1.0/({m_code}-1))*torch.ones_like({L.diff2}) * d{L.var}",
                    lambda v, d: (1.0 / (L.m(v) - 1)) * torch.ones_like(getattr(v, L.diff2)) * getattr(d, L.var),
                    L.spread + "; Bessel's correction counts the reduced entries, minus one",
                    tex=(
                        rf"{_t(L.var)}_j = \frac{{1}}{{{m_tex}-1}}{S} {_t(L.diff2)}_{{{i}j}}{count}",
                        rf"\frac{{\partial\,{_t(L.var)}_j}}{{\partial\,{_t(L.diff2)}_{{{i}j}}}} = \frac{{1}}{{{m_tex}-1}}",
                        rf"{_d(L.diff2)}_{{{i}j}} = \frac{{1}}{{{m_tex}-1}}\,{_d(L.var)}_j",
                    ),
                ),
            ),
            f"level {lv.level} batchnorm: the variance over dims {dc}, with Bessel's correction",
            symbol="var",
            block=block,
        ),
        Op(
            L.var_inv,
            (L.var,),
            (L.var_inv,),
            f"{L.var_inv} = ({L.var} + {EPS_CODE})**-0.5",
            lambda v: (getattr(v, L.var) + EPS) ** -0.5,
            (
                Rule(
                    L.var,
                    f"d{L.var} = (-0.5*({L.var} + {EPS_CODE})**-1.5) * d{L.var_inv}",
                    lambda v, d: (-0.5 * (getattr(v, L.var) + EPS) ** -1.5) * getattr(d, L.var_inv),
                    "power rule",
                    tex=(
                        rf"{_t(L.var_inv)}_j = ({_t(L.var)}_j + \epsilon)^{{-1/2}}",
                        rf"\frac{{\partial\,{_t(L.var_inv)}_j}}{{\partial\,{_t(L.var)}_j}} = -\frac{{1}}{{2}}\,({_t(L.var)}_j + \epsilon)^{{-3/2}}",
                        rf"{_d(L.var)}_j = -\frac{{1}}{{2}}\,({_t(L.var)}_j + \epsilon)^{{-3/2}}\;{_d(L.var_inv)}_j",
                    ),
                ),
            ),
            f"level {lv.level} batchnorm: inverse standard deviation",
            symbol="**-½",
            block=block,
            rows="each",
        ),
        Op(
            L.raw,
            (L.diff, L.var_inv),
            (L.raw,),
            f"{L.raw} = {L.diff} * {L.var_inv}",
            lambda v: getattr(v, L.diff) * getattr(v, L.var_inv),
            (
                Rule(
                    L.diff,
                    f"d{L.diff} = {L.var_inv} * d{L.raw}",
                    lambda v, d: getattr(v, L.var_inv) * getattr(d, L.raw),
                    "product rule",
                    tex=(
                        rf"{_t(L.raw)}_{{{i}j}} = {_t(L.diff)}_{{{i}j}}\;{_t(L.var_inv)}_j",
                        rf"\frac{{\partial\,{_t(L.raw)}_{{{i}j}}}}{{\partial\,{_t(L.diff)}_{{{i}j}}}} = {_t(L.var_inv)}_j",
                        rf"{_d(L.diff)}_{{{i}j}} = {_t(L.var_inv)}_j\;{_d(L.raw)}_{{{i}j}}",
                    ),
                ),
                Rule(
                    L.var_inv,
                    f"d{L.var_inv} = ({L.diff} * d{L.raw}).sum({dc}, keepdim=True)",
                    lambda v, d: (getattr(v, L.diff) * getattr(d, L.raw)).sum(dims, keepdim=True),
                    L.bcast + " (keepdim)",
                    tex=(
                        rf"{_t(L.raw)}_{{{i}j}} = {_t(L.diff)}_{{{i}j}}\;{_t(L.var_inv)}_j",
                        rf"\frac{{\partial\,{_t(L.raw)}_{{{i}j}}}}{{\partial\,{_t(L.var_inv)}_j}} = {_t(L.diff)}_{{{i}j}}",
                        rf"{_d(L.var_inv)}_j = {S} {_t(L.diff)}_{{{i}j}}\;{_d(L.raw)}_{{{i}j}}",
                    ),
                    example=lv.example("sum"),
                ),
            ),
            f"level {lv.level} batchnorm: normalise",
            symbol="*",
            block=block,
            rows="each",
        ),
        Op(
            L.act,
            (L.gain, L.raw, L.bias),
            (L.act,),
            f"{L.act} = {L.gain} * {L.raw} + {L.bias}",
            lambda v: getattr(v, L.gain) * getattr(v, L.raw) + getattr(v, L.bias),
            (_gain_rule(lv), _raw_rule(lv), _bias_rule(lv)),
            f"level {lv.level} batchnorm: scale and shift (one gain and bias per unit, shared by every position)",
            symbol="* +",
            block=block,
            rows="each",
        ),
    ]


@functools.cache  # one Rule per level: the atomic scale-and-shift line and the fused op share it
def _gain_rule(lv: _Level) -> Rule:
    i, S = lv.idx, lv.sum_over
    return Rule(
        lv.gain,
        f"d{lv.gain} = ({lv.raw} * d{lv.act}).sum({lv.dims_code})",
        lambda v, d: (getattr(v, lv.raw) * getattr(d, lv.act)).sum(lv.dims),
        lv.bcast + ": the gain is 1-D, one per unit, as BatchNorm1d's",
        tex=(
            rf"{_t(lv.act)}_{{{i}j}} = {_t(lv.gain)}_j\;{_t(lv.raw)}_{{{i}j}} + {_t(lv.bias)}_j",
            rf"\frac{{\partial\,{_t(lv.act)}_{{{i}j}}}}{{\partial\,{_t(lv.gain)}_j}} = {_t(lv.raw)}_{{{i}j}}",
            rf"{_d(lv.gain)}_j = {S} {_t(lv.raw)}_{{{i}j}}\;{_d(lv.act)}_{{{i}j}}",
        ),
        example=lv.example("sum"),
    )


def _raw_rule(lv: _Level) -> Rule:
    i = lv.idx
    return Rule(
        lv.raw,
        f"d{lv.raw} = {lv.gain} * d{lv.act}",
        lambda v, d: getattr(v, lv.gain) * getattr(d, lv.act),
        "product rule",
        tex=(
            rf"{_t(lv.act)}_{{{i}j}} = {_t(lv.gain)}_j\;{_t(lv.raw)}_{{{i}j}} + {_t(lv.bias)}_j",
            rf"\frac{{\partial\,{_t(lv.act)}_{{{i}j}}}}{{\partial\,{_t(lv.raw)}_{{{i}j}}}} = {_t(lv.gain)}_j",
            rf"{_d(lv.raw)}_{{{i}j}} = {_t(lv.gain)}_j\;{_d(lv.act)}_{{{i}j}}",
        ),
    )


@functools.cache
def _bias_rule(lv: _Level) -> Rule:
    i, S = lv.idx, lv.sum_over
    return Rule(
        lv.bias,
        f"d{lv.bias} = d{lv.act}.sum({lv.dims_code})",
        lambda v, d: getattr(d, lv.act).sum(lv.dims),
        lv.bcast + ": the bias is 1-D, one per unit",
        tex=(
            rf"{_t(lv.act)}_{{{i}j}} = {_t(lv.gain)}_j\;{_t(lv.raw)}_{{{i}j}} + {_t(lv.bias)}_j",
            rf"\frac{{\partial\,{_t(lv.act)}_{{{i}j}}}}{{\partial\,{_t(lv.bias)}_j}} = 1",
            rf"{_d(lv.bias)}_j = {S} {_d(lv.act)}_{{{i}j}}",
        ),
        example=lv.example("sum"),
    )


def _fused_bn(lv: _Level) -> Op:
    """The level's batchnorm in one op: Exercise 3's closed form over lv.dims, n replaced by the count m."""
    dims, dc, mc = lv.dims, lv.dims_code, lv.m_code
    x, gain, bias, act, raw, var_inv = lv.pre, lv.gain, lv.bias, lv.act, lv.raw, lv.var_inv
    mean_name, var_name = lv.running

    def forward(v: Any) -> dict[str, torch.Tensor]:
        # saved tensors (bnraw, bnvar_inv) are what the closed-form backward needs, like autograd's ctx
        h = getattr(v, x)
        mean = h.mean(dims, keepdim=True)
        var = h.var(dims, keepdim=True, unbiased=True)
        inv = (var + EPS) ** -0.5
        normed = (h - mean) * inv
        return {act: getattr(v, gain) * normed + getattr(v, bias), raw: normed, var_inv: inv}

    def evaluate(v: Any) -> torch.Tensor:
        # the statistics calibrated over the training split in place of the batch's
        h = getattr(v, x)
        return getattr(v, gain) * (h - getattr(v, mean_name)) * (getattr(v, var_name) + EPS) ** -0.5 + getattr(v, bias)

    def calibrate(v: Any) -> dict[str, torch.Tensor]:
        h = getattr(v, x)
        return {mean_name: h.mean(dims, keepdim=True), var_name: h.var(dims, keepdim=True, unbiased=True)}

    def dx(v: Any, d: Any) -> torch.Tensor:
        # written as the rule's line is, operation for operation
        m = lv.m(v)
        dy = getattr(d, act)
        dsum = dy.sum(dims, keepdim=True)
        dproj = (dy * getattr(v, raw)).sum(dims, keepdim=True)
        return getattr(v, gain) * getattr(v, var_inv) / m * (m * dy - dsum - m / (m - 1) * getattr(v, raw) * dproj)

    m = lv.m_tex
    where = "every batch row at every time position: m = n·T entries per statistic" if lv.three_d else "n rows"
    return Op(
        f"batchnorm{lv.level}",
        (x, gain, bias),
        (act,),
        f"{act} = {gain} * ({x} - {x}.mean({dc}, keepdim=True)) / torch.sqrt({x}.var({dc}, keepdim=True, unbiased=True) + {EPS_CODE}) + {bias}",
        forward,
        (
            Rule(
                x,
                f"d{x} = {gain}*{var_inv}/{mc} * ({mc}*d{act} - d{act}.sum({dc}, keepdim=True) - {mc}/({mc}-1)*{raw}*(d{act}*{raw}).sum({dc}, keepdim=True))",
                dx,
                f"Exercise 3's closed form over dims {dc}: the count of reduced entries stands where n stood",
                tex_notes=(
                    "the names: every symbol is a node of the level's atomic batchnorm, which this one line folds",
                    f"one unit j: the statistics reduce over {where}",
                    "what reaches x̂ is γ·dhpreact, the atomic dbnraw; γ is one per unit, so it leaves the sums",
                    "x̂ₖ depends on xᵢ directly, through the mean and through the variance: the lecture's three paths, with its n read as the count of entries the statistics reduce",
                    "the chain rule sums over every entry k of the same unit that xᵢ reaches: every batch row and, on a 3-D input, every time position",
                    "1/m pulled out in front turns Bessel's 1/(m−1) into m/(m−1)",
                ),
                tex=(
                    rf"x = {_t(x)},\; \hat{{x}} = {_t(raw)},\; s = {_t(var_inv)},\; \gamma = {_t(gain)} \quad \text{{(one unit }} j\text{{; }} k \text{{ runs over the reduced entries)}}",
                    rf"\mu = \frac{{1}}{{{m}}}\sum_k x_k, \quad \sigma^2 = \frac{{1}}{{{m}-1}}\sum_k (x_k - \mu)^2, \quad s = (\sigma^2 + \epsilon)^{{-1/2}}, \quad \hat{{x}}_k = (x_k - \mu)\,s",
                    rf"\text{{d{raw}}}_k = \gamma\;{_d(act)}_k",
                    rf"\frac{{\partial \hat{{x}}_k}}{{\partial x_i}} = s\Big([k = i] - \frac{{1}}{{{m}}} - \frac{{1}}{{{m}-1}}\,\hat{{x}}_k\,\hat{{x}}_i\Big)",
                    rf"{_d(x)}_i = \sum_k \frac{{\partial \hat{{x}}_k}}{{\partial x_i}}\,\text{{d{raw}}}_k",
                    rf"{_d(x)}_i = \frac{{\gamma\,s}}{{{m}}}\Big({m}\,{_d(act)}_i - \sum_k {_d(act)}_k - \frac{{{m}}}{{{m}-1}}\,\hat{{x}}_i \sum_k {_d(act)}_k\,\hat{{x}}_k\Big)",
                ),
                rounding="the closed form regroups the atomic chain's sums and products: the same number, rounded in another order",
            ),
            _gain_rule(lv),
            _bias_rule(lv),
        ),
        f"level {lv.level} batchnorm in one op",
        symbol="batchnorm",
        fuses=f"bn{lv.level}",
        eval_forward=evaluate,
        calibrated=lv.running,
        calibrate=calibrate,
        saves=(raw, var_inv),
        notebook=f"""\
# BatchNorm1d over dims {dc}, as makemore part 5's layer computes it in training
bnmean = {x}.mean({dc}, keepdim=True)
bnvar = {x}.var({dc}, keepdim=True, unbiased=True)
{var_inv} = (bnvar + {EPS_CODE})**-0.5
{raw} = ({x} - bnmean) * {var_inv}
{act} = {gain} * {raw} + {bias}""",
    )


def _tanh(lv: _Level) -> Op:
    i = lv.idx
    return Op(
        lv.h,
        (lv.act,),
        (lv.h,),
        f"{lv.h} = torch.tanh({lv.act})",
        lambda v: torch.tanh(getattr(v, lv.act)),
        (
            Rule(
                lv.act,
                f"d{lv.act} = (1.0 - {lv.h}**2) * d{lv.h}",
                lambda v, d: (1.0 - getattr(v, lv.h) ** 2) * getattr(d, lv.h),
                "tanh'(x) = 1 - tanh(x)², written with the output",
                tex=(
                    rf"{_t(lv.h)}_{{{i}j}} = \tanh({_t(lv.act)}_{{{i}j}})",
                    rf"\frac{{\partial\,{_t(lv.h)}_{{{i}j}}}}{{\partial\,{_t(lv.act)}_{{{i}j}}}} = 1 - {_t(lv.h)}_{{{i}j}}^2",
                    rf"{_d(lv.act)}_{{{i}j}} = (1 - {_t(lv.h)}_{{{i}j}}^2)\;{_d(lv.h)}_{{{i}j}}",
                ),
                example=lv.example("tanh"),
                rounding="autograd's tanh backward computes grad · (1 − y²) in one kernel; the line rounds each operation",
            ),
        ),
        f"level {lv.level}: the non-linearity",
        symbol="tanh",
        rows="each",
        kernel="tanh",
    )


OPS: list[Op] = [
    OPS_BY_NAME["emb"],
    *(op for lv in LEVEL_LIST for op in (_flatten(lv), _linear_no_bias(lv), *_bn_ops(lv), _fused_bn(lv), _tanh(lv))),
    linear_op("logits", f"h{LEVELS}", "W4", "b4", "the output layer"),
    *(OPS_BY_NAME[name] for name in _CE),
    OPS_BY_NAME["cross_entropy"],
]


def _cmp_order() -> tuple[str, ...]:
    """Every gradient of the atomic mode once, in the order its backward completes them (ties: the op's rules)."""
    order: list[str] = [*_CE[::-1][1:], "logits", f"h{LEVELS}", "W4", "b4"]
    for lv in reversed(LEVEL_LIST):
        order += [lv.act, lv.gain, lv.bias, lv.raw, lv.var_inv, lv.var, lv.diff2, lv.diff, lv.mean, lv.pre]
        order += [lv.flat, lv.W, lv.inp]
    return (*order, "C")


CMP_ORDER = _cmp_order()
_BN_BLOCKS = frozenset(f"bn{lv.level}" for lv in LEVEL_LIST)

MODE_LIST = [
    Mode(
        "atomic", "Exercise 1: atomic", "Exercise 1: backprop through every atomic line, three batchnorms", frozenset()
    ),
    Mode(
        "fused_ce",
        "Exercise 2: fused cross-entropy",
        "Exercise 2: cross-entropy backward in one step",
        frozenset({"ce"}),
    ),
    Mode(
        "fused_bn",
        "Exercise 3: fused batchnorm",
        "Exercise 3: each level's batchnorm backward in one step, over dims (0, 1) on 3-D inputs",
        _BN_BLOCKS,
    ),
    Mode(
        "fused",
        "Exercises 2+3: both fused",
        "Exercises 2+3: both fused (the backward that trains the net)",
        _BN_BLOCKS | {"ce"},
    ),
]

CELLS = {
    "atomic": Cell("Exercise 1", "the whole backward pass, atomic line by atomic line, from dlogprobs to dC"),
    "fused_ce": Cell("Exercise 2", "dlogits in one go: the cross-entropy backward", ("logits",)),
    "fused_bn": Cell(
        "Exercise 3",
        "dhprebn1 in one go from dhpreact1: the first level's batchnorm backward, its sums over dims (0, 1)",
        ("hprebn1",),
    ),
    "fused": Cell("Exercise 4", "the training loop's manual backprop, from dlogits to dC (and grads = [...])"),
}


# --- the bug lab: realistic wrong rules, each standing in for one declared rule ----------------------------------

_L1 = LEVEL_LIST[0]


def _dhprebn1_exercise3(v: Any, d: Any) -> torch.Tensor:
    # Exercise 3's line as the lecture writes it, for a 2-D input: sums over dim 0 only, n for the count
    n, dy, raw = v.n, d.hpreact1, v.bnraw1
    return v.bngain1 * v.bnvar_inv1 / n * (n * dy - dy.sum(0) - n / (n - 1) * raw * (dy * raw).sum(0))


BUGS: tuple[Bug, ...] = (
    Bug(
        "bn_dim0_only",
        "batchnorm's sum over dim 0 only, on a 3-D input (the lecture's own bug)",
        _L1.raw,
        _L1.var_inv,
        f"d{_L1.var_inv} = ({_L1.diff} * d{_L1.raw}).sum(0, keepdim=True)   # the forward reduced over (0, 1)",
        lambda v, d: (v.bndiff1 * d.bnraw1).sum(0, keepdim=True),
        "The first batchnorm's statistics are over the batch and the time positions, dims (0, 1): one per unit. "
        "Summing the gradient over dim 0 alone is the 2-D habit (and makemore part 5's own bug in the forward, "
        "where BatchNorm1d reduced over dim 0 only and kept one statistic per time position).",
        "dbnvar_inv1 comes out with one entry per time position and unit instead of one per unit (compare its shape "
        "with bnvar_inv1's); the lines after it broadcast it back, and every gradient upstream is off.",
    ),
    Bug(
        "count_n_for_m",
        "n where the count of reduced entries is n*T, in the variance backward",
        _L1.var,
        _L1.diff2,
        f"d{_L1.diff2} = (1.0/(n-1))*torch.ones_like({_L1.diff2}) * d{_L1.var}   # the forward divided by n*T-1",
        lambda v, d: (1.0 / (v.n - 1)) * torch.ones_like(v.bndiff2_1) * d.bnvar1,
        "The lecture's 2-D batchnorm counts n entries per statistic; on a 3-D input each statistic reduces every "
        "batch row at every time position, n*T of them. Copying the lecture's 1/(n-1) keeps the old count.",
        "dbndiff2_1 has the right shape but is too large by the number of time positions (nearly): the gradients "
        "upstream are off by a factor, and training still works, so only a check against autograd shows it.",
    ),
    Bug(
        "exercise3_verbatim",
        "Exercise 3's closed form copied unchanged onto the 3-D batchnorm",
        "batchnorm1",
        _L1.pre,
        "dhprebn1 = bngain1*bnvar_inv1/n * (n*dhpreact1 - dhpreact1.sum(0) - n/(n-1)*bnraw1*(dhpreact1*bnraw1).sum(0))",
        _dhprebn1_exercise3,
        "The lecture's one-liner sums over dim 0 and counts n: right for a (n, n_hidden) input. On (n, T, n_hidden) "
        "the sums must run over dims (0, 1) and the count be n*T; dim 0's sums broadcast anyway, so nothing fails.",
        "The shape is right and the values are plausible: each time position is normalised as if it were its own "
        "batch. Only an exact check against autograd (or the atomic chain) shows it.",
    ),
)

# right lines a check worker grades at start-up, to warm every path: (mode, the gradient whose step it grades, code)
WARMUP: tuple[tuple[str, str, str], ...] = (
    ("atomic", "logprobs", "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"),
    (
        "atomic",
        _L1.var_inv,
        f"d{_L1.var_inv} = ({_L1.diff} * d{_L1.raw}).sum((0, 1), keepdim=True)\nd{_L1.diff} = {_L1.var_inv} * d{_L1.raw}",
    ),
    ("atomic", "h1", "dh1 = dflat2.view(h1.shape)"),
    (
        "atomic",
        "C",
        "dC = torch.zeros_like(C)\nfor k in range(n):\n  for j in range(Xb.shape[1]):\n    dC[Xb[k,j]] += demb[k,j]",
    ),
    ("fused_bn", _L1.pre, "\n".join(rule.code for rule in OPS[[op.name for op in OPS].index("batchnorm1")].rules)),
)

NET = Net(
    name="wavenet",
    title=TITLE,
    about=ABOUT,
    nodes=tuple(NODE_LIST),
    ops=tuple(OPS),
    modes=tuple(MODE_LIST),
    trained_mode=TRAINED_MODE,
    cmp_order=CMP_ORDER,
    bugs=BUGS,
    cells=CELLS,
    warmup=tuple(Warmup(*warm) for warm in WARMUP),
    eps_code=EPS_CODE,
    bounds=BOUNDS,
    data_about="the lecture's names, a context of block_size characters (8: three halvings to one position)",
    defaults=DEFAULTS,
    train_defaults=TRAIN_DEFAULTS,
)
