"""A LayerNorm MLP, declared as data: the lecture's net with LayerNorm over the hidden units in place of batchnorm.

The lecture's data, context, embedding, first linear layer, tanh, output layer and cross-entropy are its own ops
(reused from the lecture's declaration); in between, LayerNorm normalises each example over its n_hidden units
(dim 1, the biased 1/n_hidden variance, as nn.LayerNorm computes it), written as atomic notebook lines in the
lecture's style, with its backward rules and derivations, and a fused op with Exercise 3's closed form.

Every LayerNorm line is per example: an example's statistics come from its own row, so no row reaches another
(Op.rows "each" throughout, where batchnorm's mean and variance mix the batch). The gain and bias are per hidden
unit and shared by every example, like batchnorm's: their gradients still sum over the batch (dim 0). And since
the statistics do not depend on the batch, training and evaluation run the same forward: nothing to calibrate
(no eval_forward), and a single example is normalised the same way alone as in any batch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

# the lecture's pack: its shared ops and nodes (embedding, linear layers, tanh, cross-entropy) are reused by name
from ..declare import Bug, Cell, Init, Mode, Net, Node, Op, Rule, Warmup
from .makemore4 import BCAST_0, BCAST_1, SUM_1, bias_rule, gain_rule, scale_shift
from .makemore4 import NET as LECTURE

NODES, OPS_BY_NAME = LECTURE.nodes_by_name, LECTURE.ops_by_name  # the lecture's, where this net has the same

TITLE = "LayerNorm MLP"
ABOUT = (
    "The lecture's MLP with LayerNorm in place of batchnorm: each example is normalised over its own hidden "
    "units (dim 1), so every line is per example, nothing mixes the batch and nothing needs calibrating after "
    "training; the gain and bias are still shared by the batch, so their gradients sum over dim 0."
)
EPS_CODE = "1e-5"  # nn.LayerNorm's default epsilon, as the notebook writes it: keeps 1/sqrt(var + eps) finite
EPS = float(EPS_CODE)
TRAINED_MODE = "fused"  # the training loop's backward: both blocks fused
# the config bounds this net narrows: one hidden unit has no spread to normalise (and the Bessel bug divides by 0)
BOUNDS: dict[str, tuple[int, int]] = {"n_hidden": (2, 512)}

# the lecture's cross-entropy lines, unchanged: their nodes and ops are the lecture's own
_LECTURE_CE = ("logit_maxes", "norm_logits", "counts", "counts_sum", "counts_sum_inv", "probs", "logprobs", "loss")
PER_EXAMPLE = "one statistic per example (row), over its n_hidden units: batchnorm's was one per unit, over the batch"

NODE_LIST = [
    NODES["Xb"],
    NODES["Yb"],
    NODES["C"],
    NODES["W1"],
    replace(NODES["b1"], about="bias of the hidden layer (layernorm removes only its mean over the hidden units)"),
    Node(
        "lngain",
        "param",
        ("one", "hidden"),
        "layernorm gain, one per hidden unit: multiplies the normalised activations",
        Init("lngain = torch.randn((1, n_hidden))*0.1 + 1.0", lambda r, s: r * 0.1 + 1.0, "fresh", zero_bias=1.0),
    ),
    Node(
        "lnbias",
        "param",
        ("one", "hidden"),
        "layernorm bias, one per hidden unit: added after the gain",
        Init("lnbias = torch.randn((1, n_hidden))*0.1", lambda r, s: r * 0.1, "fresh", zero_bias=0.0),
    ),
    NODES["W2"],
    NODES["b2"],
    NODES["emb"],
    NODES["embcat"],
    Node("hprebn", "intermediate", ("batch", "hidden"), "hidden layer pre-activation, before layernorm"),
    Node("lnmeani", "intermediate", ("batch", "one"), "each example's mean over its hidden units"),
    Node("lndiff", "intermediate", ("batch", "hidden"), "pre-activations with their example's mean removed"),
    Node("lndiff2", "intermediate", ("batch", "hidden"), "squared deviations from the example's mean"),
    Node(
        "lnvar", "intermediate", ("batch", "one"), "each example's variance over its hidden units (biased: 1/n_hidden)"
    ),
    Node("lnvar_inv", "intermediate", ("batch", "one"), "1/sqrt(variance + eps), one per example"),
    Node(
        "lnraw",
        "intermediate",
        ("batch", "hidden"),
        "the normalised activations: each row has zero mean, unit variance",
    ),
    Node("hpreact", "intermediate", ("batch", "hidden"), "pre-activation after layernorm's gain and bias"),
    *(NODES[name] for name in ("h", "logits", *_LECTURE_CE)),
]


def _fused_layernorm(v: Any) -> dict[str, torch.Tensor]:
    # saved tensors (lnraw, lnvar_inv) are what the closed-form backward needs, like autograd's ctx
    lnmean = v.hprebn.mean(1, keepdim=True)  # (n, 1)
    lnvar = v.hprebn.var(1, keepdim=True, unbiased=False)  # (n, 1)
    lnvar_inv = (lnvar + EPS) ** -0.5  # (n, 1)
    lnraw = (v.hprebn - lnmean) * lnvar_inv  # (n, n_hidden)
    return {"hpreact": v.lngain * lnraw + v.lnbias, "lnraw": lnraw, "lnvar_inv": lnvar_inv}


def _dhprebn_fused(v: Any, d: Any) -> torch.Tensor:
    # lngain*dhpreact is the atomic dlnraw: the gain varies along dim 1, so it stays inside the sums.
    # Written as the rule's line is, operation for operation: the line shown computes these very bits
    dsum = (v.lngain * d.hpreact).sum(1, keepdim=True)  # (n, 1)
    dproj = (v.lngain * d.hpreact * v.lnraw).sum(1, keepdim=True)  # (n, 1)
    return v.lnvar_inv / v.n_hidden * (v.n_hidden * v.lngain * d.hpreact - dsum - v.lnraw * dproj)


# the gain's and the bias's rules of `hpreact = lngain * lnraw + lnbias`: the fused layernorm has the same two
_DLNGAIN = gain_rule(
    "hpreact", "lnraw", "lngain", "lnbias",
    BCAST_0 + " (keepdim): the gain is per hidden unit, shared by every example, as in batchnorm",
)  # fmt: skip
_DLNBIAS = bias_rule(
    "hpreact", "lnraw", "lngain", "lnbias", BCAST_0 + " (keepdim): the bias is per hidden unit, shared by every example"
)

OPS: list[Op] = [
    OPS_BY_NAME["emb"],
    OPS_BY_NAME["embcat"],
    OPS_BY_NAME["hprebn"],
    Op(
        "lnmeani",
        ("hprebn",),
        ("lnmeani",),
        "lnmeani = 1/n_hidden*hprebn.sum(1, keepdim=True)",
        lambda v: 1 / v.n_hidden * v.hprebn.sum(1, keepdim=True),
        (
            Rule(
                "hprebn",
                "dhprebn += 1.0/n_hidden * (torch.ones_like(hprebn) * dlnmeani)",
                lambda v, d: 1.0 / v.n_hidden * (torch.ones_like(v.hprebn) * d.lnmeani),
                SUM_1 + ", over the example's own units only",
                tex=(
                    r"\text{lnmeani}_i = \frac{1}{n_{\mathrm{hidden}}}\sum_j \text{hprebn}_{ij}",
                    r"\frac{\partial\,\text{lnmeani}_i}{\partial\,\text{hprebn}_{ij}} = \frac{1}{n_{\mathrm{hidden}}} \quad \text{for every column } j",
                    r"\text{dhprebn}_{ij} \;\text{+=}\; \frac{1}{n_{\mathrm{hidden}}}\,\text{dlnmeani}_i",
                ),
            ),
        ),
        "layernorm: each example's mean over its hidden units; " + PER_EXAMPLE,
        symbol="mean",
        block="ln",
        rows="each",
    ),
    Op(
        "lndiff",
        ("hprebn", "lnmeani"),
        ("lndiff",),
        "lndiff = hprebn - lnmeani",
        lambda v: v.hprebn - v.lnmeani,
        (
            Rule(
                "hprebn",
                "dhprebn = dlndiff.clone()",
                lambda v, d: d.lndiff.clone(),
                "subtraction passes the gradient through",
                tex=(
                    r"\text{lndiff}_{ij} = \text{hprebn}_{ij} - \text{lnmeani}_i",
                    r"\frac{\partial\,\text{lndiff}_{ij}}{\partial\,\text{hprebn}_{ij}} = 1",
                    r"\text{dhprebn}_{ij} = \text{dlndiff}_{ij}",
                ),
            ),
            Rule(
                "lnmeani",
                "dlnmeani = (-dlndiff).sum(1, keepdim=True)",
                lambda v, d: (-d.lndiff).sum(1, keepdim=True),
                BCAST_1 + ", with a minus sign: the mean was broadcast along the example's units (batchnorm's "
                "along the batch, dim 0)",
                tex=(
                    r"\text{lndiff}_{ij} = \text{hprebn}_{ij} - \text{lnmeani}_i",
                    r"\frac{\partial\,\text{lndiff}_{ij}}{\partial\,\text{lnmeani}_i} = -1 \quad \text{for every column } j",
                    r"\text{dlnmeani}_i = -\sum_j \text{dlndiff}_{ij}",
                ),
                example="sum",
            ),
        ),
        "layernorm: centre each example",
        symbol="−",
        block="ln",
        rows="each",
    ),
    Op(
        "lndiff2",
        ("lndiff",),
        ("lndiff2",),
        "lndiff2 = lndiff**2",
        lambda v: v.lndiff**2,
        (
            Rule(
                "lndiff",
                "dlndiff += (2*lndiff) * dlndiff2",
                lambda v, d: (2 * v.lndiff) * d.lndiff2,
                "power rule; lndiff feeds lnraw too: this is its second contribution (+=)",
                tex=(
                    r"\text{lndiff2}_{ij} = \text{lndiff}_{ij}^2",
                    r"\frac{\partial\,\text{lndiff2}_{ij}}{\partial\,\text{lndiff}_{ij}} = 2\,\text{lndiff}_{ij}",
                    r"\text{dlndiff}_{ij} \;\text{+=}\; 2\,\text{lndiff}_{ij}\;\text{dlndiff2}_{ij}",
                ),
            ),
        ),
        "layernorm: square the deviations",
        symbol="**2",
        block="ln",
        rows="each",
    ),
    Op(
        "lnvar",
        ("lndiff2",),
        ("lnvar",),
        "lnvar = 1/n_hidden*lndiff2.sum(1, keepdim=True)",
        lambda v: 1 / v.n_hidden * v.lndiff2.sum(1, keepdim=True),
        (
            Rule(
                "lndiff2",
                "dlndiff2 = (1.0/n_hidden)*torch.ones_like(lndiff2) * dlnvar",
                lambda v, d: (1.0 / v.n_hidden) * torch.ones_like(v.lndiff2) * d.lnvar,
                SUM_1 + "; the biased variance (1/n_hidden, as nn.LayerNorm), not batchnorm's Bessel 1/(n-1)",
                tex=(
                    r"\text{lnvar}_i = \frac{1}{n_{\mathrm{hidden}}}\sum_j \text{lndiff2}_{ij} \quad \text{(biased: } n_{\mathrm{hidden}} \text{, no Bessel correction)}",
                    r"\frac{\partial\,\text{lnvar}_i}{\partial\,\text{lndiff2}_{ij}} = \frac{1}{n_{\mathrm{hidden}}} \quad \text{for every column } j",
                    r"\text{dlndiff2}_{ij} = \frac{1}{n_{\mathrm{hidden}}}\,\text{dlnvar}_i",
                ),
            ),
        ),
        "layernorm: each example's variance over its hidden units (biased, as nn.LayerNorm)",
        symbol="var",
        block="ln",
        rows="each",
    ),
    Op(
        "lnvar_inv",
        ("lnvar",),
        ("lnvar_inv",),
        f"lnvar_inv = (lnvar + {EPS_CODE})**-0.5",
        lambda v: (v.lnvar + EPS) ** -0.5,
        (
            Rule(
                "lnvar",
                f"dlnvar = (-0.5*(lnvar + {EPS_CODE})**-1.5) * dlnvar_inv",
                lambda v, d: (-0.5 * (v.lnvar + EPS) ** -1.5) * d.lnvar_inv,
                "power rule",
                tex=(
                    r"\text{lnvar_inv}_i = (\text{lnvar}_i + \epsilon)^{-1/2}",
                    r"\frac{\partial\,\text{lnvar_inv}_i}{\partial\,\text{lnvar}_i} = -\frac{1}{2}\,(\text{lnvar}_i + \epsilon)^{-3/2}",
                    r"\text{dlnvar}_i = -\frac{1}{2}\,(\text{lnvar}_i + \epsilon)^{-3/2}\;\text{dlnvar_inv}_i",
                ),
            ),
        ),
        "layernorm: inverse standard deviation, one per example",
        symbol="**-½",
        block="ln",
        rows="each",
    ),
    Op(
        "lnraw",
        ("lndiff", "lnvar_inv"),
        ("lnraw",),
        "lnraw = lndiff * lnvar_inv",
        lambda v: v.lndiff * v.lnvar_inv,
        (
            Rule(
                "lndiff",
                "dlndiff = lnvar_inv * dlnraw",
                lambda v, d: v.lnvar_inv * d.lnraw,
                "product rule",
                tex=(
                    r"\text{lnraw}_{ij} = \text{lndiff}_{ij}\;\text{lnvar_inv}_i",
                    r"\frac{\partial\,\text{lnraw}_{ij}}{\partial\,\text{lndiff}_{ij}} = \text{lnvar_inv}_i",
                    r"\text{dlndiff}_{ij} = \text{lnvar_inv}_i\;\text{dlnraw}_{ij}",
                ),
            ),
            Rule(
                "lnvar_inv",
                "dlnvar_inv = (lndiff * dlnraw).sum(1, keepdim=True)",
                lambda v, d: (v.lndiff * d.lnraw).sum(1, keepdim=True),
                BCAST_1 + ": the example's one inverse deviation scaled all its units",
                tex=(
                    r"\text{lnraw}_{ij} = \text{lndiff}_{ij}\;\text{lnvar_inv}_i",
                    r"\frac{\partial\,\text{lnraw}_{ij}}{\partial\,\text{lnvar_inv}_i} = \text{lndiff}_{ij} \quad \text{for every column } j",
                    r"\text{dlnvar_inv}_i = \sum_j \text{lndiff}_{ij}\;\text{dlnraw}_{ij}",
                ),
                example="sum",
            ),
        ),
        "layernorm: normalise each example",
        symbol="*",
        block="ln",
        rows="each",
    ),
    scale_shift(
        "hpreact",
        "lnraw",
        _DLNGAIN,
        _DLNBIAS,
        "layernorm: scale and shift (per hidden unit, shared by the batch)",
        "ln",
    ),
    Op(
        "layernorm",
        ("hprebn", "lngain", "lnbias"),
        ("hpreact",),
        f"hpreact = lngain * (hprebn - hprebn.mean(1, keepdim=True)) / torch.sqrt(hprebn.var(1, keepdim=True, unbiased=False) + {EPS_CODE}) + lnbias",
        _fused_layernorm,
        (
            Rule(
                "hprebn",
                "dhprebn = lnvar_inv/n_hidden * (n_hidden*lngain*dhpreact - (lngain*dhpreact).sum(1, keepdim=True) - lnraw*(lngain*dhpreact*lnraw).sum(1, keepdim=True))",
                _dhprebn_fused,
                "every atomic layernorm line folded into one expression, row by row; lngain*dhpreact is the atomic "
                "dlnraw, and the gain stays inside the sums over dim 1 (it varies along them, unlike batchnorm's "
                "sums over dim 0)",
                tex_notes=(
                    "the names: every symbol is a node of the atomic layernorm, which this one line folds",
                    "the forward in one row i (one example): lnmeani (μ), lndiff = x − μ, lndiff2, lnvar with the biased 1/n_hidden, lnvar_inv (s), lnraw (x̂) and hpreact",
                    "hpreact = γ·x̂ + β: what reaches x̂ is γ·dhpreact, the atomic dlnraw; γ differs from unit to unit, so unlike batchnorm's it cannot leave the sums over the units",
                    "x̂ₖ depends on xⱼ three ways: directly (lndiff: [k = j]·s), through the mean (lnmeani: −s/n_hidden) and through the variance (lndiff2 → lnvar → lnvar_inv: −s·x̂ₖx̂ⱼ/n_hidden); the mean's share of ∂σ²/∂xⱼ is 0, since the deviations sum to 0",
                    "the chain rule sums over every unit k of the same example that xⱼ reaches: dlndiff's two contributions and dhprebn's two (through lndiff and lnmeani) become one line; no other example takes part",
                    "1/n_hidden pulled out in front; with the biased variance no n/(n−1) factor appears (batchnorm's Bessel-corrected closed form has one)",
                ),
                tex=(
                    r"x = \text{hprebn},\; \mu = \text{lnmeani},\; \sigma^2 = \text{lnvar},\; s = \text{lnvar_inv},\; \hat{x} = \text{lnraw},\; y = \text{hpreact} \quad \text{(one row } i\text{, } H = n_{\mathrm{hidden}}\text{)}",
                    r"\mu = \frac{1}{H}\sum_k x_k, \quad \sigma^2 = \frac{1}{H}\sum_k (x_k - \mu)^2, \quad s = (\sigma^2 + \epsilon)^{-1/2}, \quad \hat{x}_k = (x_k - \mu)\,s, \quad y_k = \gamma_k\,\hat{x}_k + \beta_k",
                    r"\text{dlnraw}_k = \gamma_k\;\text{dhpreact}_k \quad (\gamma = \text{lngain})",
                    r"\frac{\partial \hat{x}_k}{\partial x_j} = s\Big([k = j] - \frac{1}{H} - \frac{1}{H}\,\hat{x}_k\,\hat{x}_j\Big) \quad \Big(\frac{\partial \sigma^2}{\partial x_j} = \frac{2}{H}(x_j - \mu)\Big)",
                    r"\text{dhprebn}_j = \sum_k \frac{\partial \hat{x}_k}{\partial x_j}\,\text{dlnraw}_k = s\Big(\text{dlnraw}_j - \frac{1}{H}\sum_k \text{dlnraw}_k - \frac{1}{H}\,\hat{x}_j \sum_k \text{dlnraw}_k\,\hat{x}_k\Big)",
                    r"\text{dhprebn}_j = \frac{s}{H}\Big(H\,\gamma_j\,\text{dhpreact}_j - \sum_k \gamma_k\,\text{dhpreact}_k - \hat{x}_j \sum_k \gamma_k\,\text{dhpreact}_k\,\hat{x}_k\Big)",
                ),
                rounding="the closed form regroups the atomic chain's sums and products: the same number, rounded in another order",
            ),
            _DLNGAIN,
            _DLNBIAS,
        ),
        "layernorm in one op",
        symbol="layernorm",
        fuses="ln",
        rows="each",
        saves=("lnraw", "lnvar_inv"),
        notebook=f"""\
# LayerNorm layer, as a training loop writes it: each example over its hidden units (dim 1)
lnmean = hprebn.mean(1, keepdim=True)
lnvar = hprebn.var(1, keepdim=True, unbiased=False)
lnvar_inv = (lnvar + {EPS_CODE})**-0.5
lnraw = (hprebn - lnmean) * lnvar_inv
hpreact = lngain * lnraw + lnbias""",
    ),
    OPS_BY_NAME["h"],
    OPS_BY_NAME["logits"],
    *(OPS_BY_NAME[name] for name in _LECTURE_CE),
    OPS_BY_NAME["cross_entropy"],
]

# the order of the check cell's cmp lines: a step's complete gradients in the order the backward completes them,
# ties (the rules of one op) as the lecture's notebook orders them
CMP_ORDER = (
    "logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits", "logit_maxes", "logits", "h",
    "W2", "b2", "hpreact", "lngain", "lnbias", "lnraw", "lnvar_inv", "lnvar", "lndiff2", "lndiff", "lnmeani",
    "hprebn", "embcat", "W1", "b1", "emb", "C",
)  # fmt: skip

MODE_LIST = [
    Mode(
        "atomic", "Exercise 1: atomic", "Exercise 1: backprop through every atomic line, layernorm's too", frozenset()
    ),
    Mode(
        "fused_ce",
        "Exercise 2: fused cross-entropy",
        "Exercise 2: cross-entropy backward in one step",
        frozenset({"ce"}),
    ),
    Mode(
        "fused_ln",
        "Exercise 3: fused layernorm",
        "Exercise 3: layernorm backward in one step, example by example",
        frozenset({"ln"}),
    ),
    Mode(
        "fused",
        "Exercises 2+3: both fused",
        "Exercises 2+3: both fused (the backward that trains the net)",
        frozenset({"ce", "ln"}),
    ),
]

# mode -> (exercise, what the learner writes in a line, the gradients the cell computes; (): every one of the mode)
CELLS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "atomic": (
        "Exercise 1",
        "the whole backward pass, atomic line by atomic line, from dlogprobs to dC: layernorm's sums run over dim 1",
        (),
    ),
    "fused_ce": ("Exercise 2", "dlogits in one go: the cross-entropy backward", ("logits",)),
    "fused_ln": (
        "Exercise 3",
        "dhprebn in one go from dhpreact: the layernorm backward, each example on its own (sums over dim 1)",
        ("hprebn",),
    ),
    "fused": ("Exercise 4", "the training loop's manual backprop, from dlogits to dC (and grads = [...])", ()),
}


# --- the bug lab: realistic wrong rules, each standing in for one declared rule ----------------------------------


def _dhprebn_gain_outside(v: Any, d: Any) -> torch.Tensor:
    dsum = d.hpreact.sum(1, keepdim=True)  # (n, 1)
    dproj = (d.hpreact * v.lnraw).sum(1, keepdim=True)  # (n, 1)
    return v.lngain * v.lnvar_inv / v.n_hidden * (v.n_hidden * d.hpreact - dsum - v.lnraw * dproj)


BUGS: tuple[Bug, ...] = (
    Bug(
        "ln_batch_dim",
        "summed over the batch (dim 0) where layernorm broadcast over the units (dim 1)",
        "lnraw",
        "lnvar_inv",
        "dlnvar_inv = (lndiff * dlnraw).sum(0, keepdim=True)   # batchnorm's dim; layernorm's is 1",
        lambda v, d: (v.lndiff * d.lnraw).sum(0, keepdim=True),
        "lnvar_inv holds one value per example, broadcast along that example's hidden units: its gradient sums "
        "over dim 1. Summing over dim 0 is the batchnorm habit, where the statistics are per hidden unit and "
        "broadcast along the batch.",
        "dlnvar_inv comes out with one entry per hidden unit instead of one per example (compare its shape with "
        "lnvar_inv's); the next line broadcasts it into a full batch-by-units tensor, and the error spreads upstream.",
    ),
    Bug(
        "bessel_habit",
        "Bessel's 1/(n_hidden-1) in the variance backward, where the forward used 1/n_hidden",
        "lnvar",
        "lndiff2",
        "dlndiff2 = (1.0/(n_hidden-1))*torch.ones_like(lndiff2) * dlnvar   # the forward used 1/n_hidden",
        lambda v, d: (1.0 / (v.n_hidden - 1)) * torch.ones_like(v.lndiff2) * d.lnvar,
        "LayerNorm uses the biased variance (1/n_hidden, as nn.LayerNorm does); the batchnorm lecture's "
        "Bessel-corrected 1/(n-1) is a habit carried over, and the backward must differentiate the forward's "
        "own formula.",
        "The gradients through the variance are off by the factor n_hidden/(n_hidden-1): close to 1 for a wide "
        "layer, so training looks fine and only an exact check against autograd shows it.",
    ),
    Bug(
        "lost_lndiff_path",
        "forgot the first contribution to lndiff (= instead of +=)",
        "lndiff2",
        "lndiff",
        "dlndiff = (2*lndiff) * dlndiff2   # = where += belongs",
        lambda v, d: (2 * v.lndiff) * d.lndiff2,
        "lndiff feeds two ops (lnraw directly, and lndiff2 on the way to the variance); its gradient is the sum "
        "of both paths. Assigning the variance path's contribution throws away the direct one, lnvar_inv * dlnraw.",
        "Only the nodes used more than once are affected, and dlndiff keeps its shape but is much too small: the "
        "direct path carries most of the gradient. A gradient check on dlndiff (or anything upstream) catches it.",
        overwrite=True,
    ),
    Bug(
        "gain_outside_sums",
        "pulled the gain out of the sums, as batchnorm's closed form may",
        "layernorm",
        "hprebn",
        "dhprebn = lngain*lnvar_inv/n_hidden * (n_hidden*dhpreact - dhpreact.sum(1, keepdim=True) - "
        "lnraw*(dhpreact*lnraw).sum(1, keepdim=True))   # lngain is not constant along dim 1",
        _dhprebn_gain_outside,
        "Batchnorm's closed form sums over the batch (dim 0), along which bngain is constant, so the gain factors "
        "out. LayerNorm sums over the hidden units (dim 1), along which lngain varies: the sums must be of "
        "lngain*dhpreact, the atomic dlnraw, not of dhpreact.",
        "With the gain at 1 (init=zero_bias, or ones as nn.LayerNorm initialises it) the two forms agree and the "
        "check passes; with the lecture's random gains dhprebn is off in every row.",
    ),
)

# right lines a check worker grades at start-up, to warm every path: (mode, the gradient whose step it grades, code);
# each target has one consumer in its mode, so it names one backward step
WARMUP: tuple[tuple[str, str, str], ...] = (
    ("atomic", "logprobs", "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"),
    ("atomic", "lnvar_inv", "dlnvar_inv = (lndiff * dlnraw).sum(1, keepdim=True)\ndlndiff = lnvar_inv * dlnraw"),
    ("atomic", "lnvar", f"dlnvar = (-0.5*(lnvar + {EPS_CODE})**-1.5) * dlnvar_inv"),
    (
        "atomic",
        "C",
        "dC = torch.zeros_like(C)\nfor k in range(n):\n  for j in range(Xb.shape[1]):\n    dC[Xb[k,j]] += demb[k,j]",
    ),
    (
        "fused_ln",
        "hprebn",
        "dlnraw = lngain * dhpreact\n"
        "dhprebn = lnvar_inv/n_hidden * (n_hidden*dlnraw - dlnraw.sum(1, keepdim=True) "
        "- lnraw*(dlnraw*lnraw).sum(1, keepdim=True))\n"
        "dlngain = (lnraw * dhpreact).sum(0, keepdim=True)\n"
        "dlnbias = dhpreact.sum(0, keepdim=True)",
    ),
)

NET = Net(
    name="layernorm",
    title=TITLE,
    about=ABOUT,
    nodes=tuple(NODE_LIST),
    ops=tuple(OPS),
    modes=tuple(MODE_LIST),
    trained_mode=TRAINED_MODE,
    cmp_order=CMP_ORDER,
    bugs=BUGS,
    cells={mode: Cell(*cell) for mode, cell in CELLS.items()},
    warmup=tuple(Warmup(*warm) for warm in WARMUP),
    eps_code=EPS_CODE,
    bounds=BOUNDS,
)
