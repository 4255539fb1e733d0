"""The lecture's network (makemore part 4): the forward pass declared once as data, the first network pack.

Every op is one forward line of the notebook, with its formula text, the code that runs it and, right next to
it, the local backward rule for each of its inputs (the lecture's own line of code). Every parameter node
carries its initialisation (the lecture's line). Its modes are the lecture's exercises; its bugs, cells and
the check processes' warm-up are declared here too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..declare import Bug, Cell, Init, Mode, Net, Node, Op, Rule, Warmup

EPS_CODE = "1e-5"  # batchnorm's epsilon as the notebook writes it: keeps 1/sqrt(var + eps) finite
EPS = float(EPS_CODE)
CLIP = 3.5  # the clipped-loss bug: examples whose loss is above this get no gradient
TRAINED_MODE = "fused"  # Exercise 4 trains with both blocks fused: a trained model evaluates, samples and opens in it


NODE_LIST = [
    Node("Xb", "input", ("batch", "context"), "the minibatch of contexts: n rows of block_size character indices"),
    Node("Yb", "input", ("batch",), "the character that follows each context: the targets"),
    Node(
        "C",
        "param",
        ("vocab", "embd"),
        "the embedding table: one n_embd-vector per character",
        Init("C = torch.randn((vocab_size, n_embd), generator=g)", lambda r, s: r),
    ),
    Node(
        "W1",
        "param",
        ("embcat", "hidden"),
        "weights of the hidden layer, scaled by (5/3)/sqrt(fan_in) for tanh",
        Init(
            "W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * (5/3)/((n_embd * block_size)**0.5)",
            lambda r, s: r * (5 / 3) / (s["embcat"] ** 0.5),
        ),
    ),
    Node(
        "b1",
        "param",
        ("hidden",),
        "bias of the hidden layer (useless: batchnorm subtracts the mean)",
        Init("b1 = torch.randn(n_hidden, generator=g) * 0.1", lambda r, s: r * 0.1, zero_bias=0.0),
    ),
    Node(
        "bngain",
        "param",
        ("one", "hidden"),
        "batchnorm gain, multiplies the normalised activations",
        Init("bngain = torch.randn((1, n_hidden))*0.1 + 1.0", lambda r, s: r * 0.1 + 1.0, "fresh", zero_bias=1.0),
    ),
    Node(
        "bnbias",
        "param",
        ("one", "hidden"),
        "batchnorm bias, added after the gain",
        Init("bnbias = torch.randn((1, n_hidden))*0.1", lambda r, s: r * 0.1, "fresh", zero_bias=0.0),
    ),
    Node(
        "W2",
        "param",
        ("hidden", "vocab"),
        "weights of the output layer",
        Init("W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.1", lambda r, s: r * 0.1),
    ),
    Node(
        "b2",
        "param",
        ("vocab",),
        "bias of the output layer",
        Init("b2 = torch.randn(vocab_size, generator=g) * 0.1", lambda r, s: r * 0.1, zero_bias=0.0),
    ),
    Node("emb", "intermediate", ("batch", "context", "embd"), "the embedding vector of every context character"),
    Node("embcat", "intermediate", ("batch", "embcat"), "the context embeddings concatenated into one vector per row"),
    Node("hprebn", "intermediate", ("batch", "hidden"), "hidden layer pre-activation, before batchnorm"),
    Node("bnmeani", "intermediate", ("one", "hidden"), "batch mean of every hidden unit"),
    Node("bndiff", "intermediate", ("batch", "hidden"), "pre-activations with the batch mean removed"),
    Node("bndiff2", "intermediate", ("batch", "hidden"), "squared deviations from the batch mean"),
    Node("bnvar", "intermediate", ("one", "hidden"), "batch variance, Bessel-corrected (divides by n-1)"),
    Node("bnvar_inv", "intermediate", ("one", "hidden"), "1/sqrt(variance + eps)"),
    Node("bnraw", "intermediate", ("batch", "hidden"), "the normalised activations: zero mean, unit variance"),
    Node("hpreact", "intermediate", ("batch", "hidden"), "pre-activation after batchnorm's gain and bias"),
    Node("h", "intermediate", ("batch", "hidden"), "the hidden layer's tanh activations"),
    Node("logits", "intermediate", ("batch", "vocab"), "unnormalised log-probabilities of the next character"),
    Node("logit_maxes", "intermediate", ("batch", "one"), "each row's largest logit, subtracted for stability"),
    Node("norm_logits", "intermediate", ("batch", "vocab"), "logits shifted so each row's maximum is 0"),
    Node("counts", "intermediate", ("batch", "vocab"), "exponentiated logits: unnormalised probabilities"),
    Node("counts_sum", "intermediate", ("batch", "one"), "each row's total count"),
    Node(
        "counts_sum_inv", "intermediate", ("batch", "one"), "1 / counts_sum (the lecture avoids division for exactness)"
    ),
    Node("probs", "intermediate", ("batch", "vocab"), "the softmax: each row sums to 1"),
    Node("logprobs", "intermediate", ("batch", "vocab"), "log-probability of every character"),
    Node("loss", "loss", (), "the mean negative log-likelihood of the targets"),
]

BCAST_1 = "broadcast over dim 1 in the forward pass → sum over dim 1 here (keepdim)"
BCAST_0 = "broadcast over dim 0 in the forward pass → sum over dim 0 here"
SUM_1 = "summed over dim 1 in the forward pass → the gradient is copied (broadcast) along dim 1"
SUM_0 = "summed over dim 0 in the forward pass → the gradient is copied (broadcast) along dim 0"


def _fused_batchnorm(v: Any) -> dict[str, torch.Tensor]:
    # saved tensors (bnraw, bnvar_inv) are what the closed-form backward needs, like autograd's ctx
    bnmean = v.hprebn.mean(0, keepdim=True)  # (1, n_hidden)
    bnvar = v.hprebn.var(0, keepdim=True, unbiased=True)  # (1, n_hidden)
    bnvar_inv = (bnvar + EPS) ** -0.5  # (1, n_hidden)
    bnraw = (v.hprebn - bnmean) * bnvar_inv  # (n, n_hidden)
    return {"hpreact": v.bngain * bnraw + v.bnbias, "bnraw": bnraw, "bnvar_inv": bnvar_inv}


def _batchnorm_eval(v: Any) -> torch.Tensor:
    # the lecture's evaluation line: the statistics calibrated over the training split (bnmean/bnvar_running)
    return v.bngain * (v.hprebn - v.bnmean_running) * (v.bnvar_running + EPS) ** -0.5 + v.bnbias


def _dhprebn_fused(v: Any, d: Any) -> torch.Tensor:
    n = v.n
    dsum = d.hpreact.sum(0)  # (n_hidden,)
    dproj = (d.hpreact * v.bnraw).sum(0)  # (n_hidden,)
    return v.bngain * v.bnvar_inv / n * (n * d.hpreact - dsum - n / (n - 1) * v.bnraw * dproj)


def _dlogits_fused(v: Any, d: Any) -> torch.Tensor:
    dlogits = F.softmax(v.logits, 1)  # (n, vocab)
    dlogits[range(v.n), v.Yb] -= 1
    dlogits /= v.n
    return dlogits


def _dlogprobs(v: Any, d: Any) -> torch.Tensor:
    dlogprobs = torch.zeros_like(v.logprobs)  # (n, vocab)
    dlogprobs[range(v.n), v.Yb] = -1.0 / v.n
    return dlogprobs


def _dC(v: Any, d: Any) -> torch.Tensor:
    dC = torch.zeros_like(v.C)  # (vocab, n_embd)
    dC.index_add_(0, v.Xb.view(-1), d.emb.view(-1, v.n_embd))
    return dC


MATMUL = "matrix multiply: the shapes dictate the transpose"

# a linear layer's derivations, one per input: §o, §x, §w and §b stand for the names of out, x, w and b
_LINEAR_TEX = {
    "x": (
        r"\text{§o}_{ij} = \sum_k \text{§x}_{ik}\,\text{§w}_{kj} + \text{§b}_j",
        r"\frac{\partial\,\text{§o}_{ij}}{\partial\,\text{§x}_{ik}} = \text{§w}_{kj} \quad \text{for every column } j",
        r"\text{d§x}_{ik} = \sum_j \text{d§o}_{ij}\;\text{§w}_{kj} = (\text{d§o}\;\text{§w}^{\top})_{ik}",
    ),
    "w": (
        r"\text{§o}_{ij} = \sum_k \text{§x}_{ik}\,\text{§w}_{kj} + \text{§b}_j",
        r"\frac{\partial\,\text{§o}_{ij}}{\partial\,\text{§w}_{kj}} = \text{§x}_{ik} \quad \text{for every row } i",
        r"\text{d§w}_{kj} = \sum_i \text{§x}_{ik}\;\text{d§o}_{ij} = (\text{§x}^{\top}\;\text{d§o})_{kj}",
    ),
    "b": (
        r"\text{§o}_{ij} = \sum_k \text{§x}_{ik}\,\text{§w}_{kj} + \text{§b}_j",
        r"\frac{\partial\,\text{§o}_{ij}}{\partial\,\text{§b}_j} = 1 \quad \text{for every row } i",
        r"\text{d§b}_j = \sum_i \text{d§o}_{ij}",
    ),
}


def _linear_tex(part: str, out: str, x: str, w: str, b: str) -> tuple[str, ...]:
    names = {"§o": out, "§x": x, "§w": w, "§b": b}
    lines = _LINEAR_TEX[part]
    for mark, name in names.items():
        lines = tuple(line.replace(mark, name) for line in lines)
    return lines


def linear_op(out: str, x: str, w: str, b: str, about: str) -> Op:
    """A linear layer `out = x @ w + b` with the lecture's three rules: dx = dout @ w.T, dw = x.T @ dout, db."""
    return Op(
        out,
        (x, w, b),
        (out,),
        f"{out} = {x} @ {w} + {b}",
        lambda v: getattr(v, x) @ getattr(v, w) + getattr(v, b),
        (
            Rule(
                x,
                f"d{x} = d{out} @ {w}.T",
                lambda v, d: getattr(d, out) @ getattr(v, w).T,
                MATMUL,
                tex=_linear_tex("x", out, x, w, b),
                example="matmul",
            ),
            Rule(
                w,
                f"d{w} = {x}.T @ d{out}",
                lambda v, d: getattr(v, x).T @ getattr(d, out),
                MATMUL,
                tex=_linear_tex("w", out, x, w, b),
                example="matmul",
            ),
            Rule(
                b,
                f"d{b} = d{out}.sum(0)",
                lambda v, d: getattr(d, out).sum(0),
                BCAST_0,
                tex=_linear_tex("b", out, x, w, b),
                example="sum",
            ),
        ),
        about,
        symbol="@ +",
        rows="each",
        kernel="linear",
    )


def gain_rule(out: str, raw: str, gain: str, bias: str, note: str) -> Rule:
    """The gain's rule of `out = gain * raw + bias`, a gain per column shared by every row (keepdim)."""
    return Rule(
        gain,
        f"d{gain} = ({raw} * d{out}).sum(0, keepdim=True)",
        lambda v, d: (getattr(v, raw) * getattr(d, out)).sum(0, keepdim=True),
        note,
        tex=(
            rf"\text{{{out}}}_{{ij}} = \text{{{gain}}}_j\;\text{{{raw}}}_{{ij}} + \text{{{bias}}}_j",
            rf"\frac{{\partial\,\text{{{out}}}_{{ij}}}}{{\partial\,\text{{{gain}}}_j}} = \text{{{raw}}}_{{ij}} \quad \text{{for every row }} i",
            rf"\text{{d{gain}}}_j = \sum_i \text{{{raw}}}_{{ij}}\;\text{{d{out}}}_{{ij}}",
        ),
        example="sum",
    )


def bias_rule(out: str, raw: str, gain: str, bias: str, note: str) -> Rule:
    """The bias's rule of `out = gain * raw + bias`: the column sums of the output's gradient (keepdim)."""
    return Rule(
        bias,
        f"d{bias} = d{out}.sum(0, keepdim=True)",
        lambda v, d: getattr(d, out).sum(0, keepdim=True),
        note,
        tex=(
            rf"\text{{{out}}}_{{ij}} = \text{{{gain}}}_j\;\text{{{raw}}}_{{ij}} + \text{{{bias}}}_j",
            rf"\frac{{\partial\,\text{{{out}}}_{{ij}}}}{{\partial\,\text{{{bias}}}_j}} = 1 \quad \text{{for every row }} i",
            rf"\text{{d{bias}}}_j = \sum_i \text{{d{out}}}_{{ij}}",
        ),
        example="sum",
    )


# the gain's and the bias's rules of `hpreact = bngain * bnraw + bnbias`: the fused batchnorm has the same two
_DBNGAIN = gain_rule("hpreact", "bnraw", "bngain", "bnbias", BCAST_0 + " (keepdim)")
_DBNBIAS = bias_rule("hpreact", "bnraw", "bngain", "bnbias", BCAST_0 + " (keepdim)")


def scale_shift(out: str, raw: str, gain: Rule, bias: Rule, about: str, block: str) -> Op:
    """`out = gain * raw + bias`, a normalisation's last line, with its gain's and bias's rules (the fused op's too)."""
    gain_name, bias_name = gain.target, bias.target
    return Op(
        out,
        (gain_name, raw, bias_name),
        (out,),
        f"{out} = {gain_name} * {raw} + {bias_name}",
        lambda v: getattr(v, gain_name) * getattr(v, raw) + getattr(v, bias_name),
        (
            gain,
            Rule(
                raw,
                f"d{raw} = {gain_name} * d{out}",
                lambda v, d: getattr(v, gain_name) * getattr(d, out),
                "product rule",
                tex=(
                    rf"\text{{{out}}}_{{ij}} = \text{{{gain_name}}}_j\;\text{{{raw}}}_{{ij}} + \text{{{bias_name}}}_j",
                    rf"\frac{{\partial\,\text{{{out}}}_{{ij}}}}{{\partial\,\text{{{raw}}}_{{ij}}}} = \text{{{gain_name}}}_j",
                    rf"\text{{d{raw}}}_{{ij}} = \text{{{gain_name}}}_j\;\text{{d{out}}}_{{ij}}",
                ),
            ),
            bias,
        ),
        about,
        symbol="* +",
        block=block,
        rows="each",
    )


OPS: list[Op] = [
    Op(
        "emb",
        ("C", "Xb"),
        ("emb",),
        "emb = C[Xb]",
        lambda v: v.C[v.Xb],
        (
            Rule(
                "C",
                "dC = torch.zeros_like(C)\ndC.index_add_(0, Xb.view(-1), demb.view(-1, n_embd))",
                _dC,
                "a row of C is gathered once per occurrence of its character → scatter-add every use back",
                tex=(
                    r"\text{emb}_{k,t,e} = \text{C}_{\text{Xb}_{kt},\,e}",
                    r"\frac{\partial\,\text{emb}_{k,t,e}}{\partial\,\text{C}_{c,e}} = [\text{Xb}_{kt} = c]",
                    r"\text{dC}_{c,e} = \sum_{k,t} [\text{Xb}_{kt} = c]\;\text{demb}_{k,t,e}",
                ),
                example="gather",
            ),
        ),
        "look up the embedding of every context character",
        symbol="C[Xb]",
        rows="each",
        kernel="embedding",
    ),
    Op(
        "embcat",
        ("emb",),
        ("embcat",),
        "embcat = emb.view(n, -1)",
        lambda v: v.emb.view(v.n, -1),
        (
            Rule(
                "emb",
                "demb = dembcat.view(emb.shape)",
                lambda v, d: d.embcat.view(v.emb.shape),
                "a view only rearranges: the gradient is viewed back to the original shape",
                tex=(
                    r"\text{embcat}_{k,\;t\,n_{\mathrm{embd}} + e} = \text{emb}_{k,t,e}",
                    r"\frac{\partial\,\text{embcat}_{k,\;t\,n_{\mathrm{embd}} + e}}{\partial\,\text{emb}_{k,t,e}} = 1",
                    r"\text{demb}_{k,t,e} = \text{dembcat}_{k,\;t\,n_{\mathrm{embd}} + e}",
                ),
            ),
        ),
        "concatenate the block_size embeddings of each row",
        symbol="view",
        rows="each",
        kernel="view",
    ),
    linear_op("hprebn", "embcat", "W1", "b1", "linear layer 1"),
    Op(
        "bnmeani",
        ("hprebn",),
        ("bnmeani",),
        "bnmeani = 1/n * hprebn.sum(0, keepdim=True)",
        lambda v: 1 / v.n * v.hprebn.sum(0, keepdim=True),
        (
            Rule(
                "hprebn",
                "dhprebn += 1.0/n * (torch.ones_like(hprebn) * dbnmeani)",
                lambda v, d: 1.0 / v.n * (torch.ones_like(v.hprebn) * d.bnmeani),
                SUM_0,
                tex=(
                    r"\text{bnmeani}_j = \frac{1}{n}\sum_i \text{hprebn}_{ij}",
                    r"\frac{\partial\,\text{bnmeani}_j}{\partial\,\text{hprebn}_{ij}} = \frac{1}{n} \quad \text{for every row } i",
                    r"\text{dhprebn}_{ij} \;\text{+=}\; \frac{1}{n}\,\text{dbnmeani}_j",
                ),
            ),
        ),
        "batchnorm: the batch mean",
        symbol="mean",
        block="bn",
        rows="mixed",
    ),
    Op(
        "bndiff",
        ("hprebn", "bnmeani"),
        ("bndiff",),
        "bndiff = hprebn - bnmeani",
        lambda v: v.hprebn - v.bnmeani,
        (
            Rule(
                "hprebn",
                "dhprebn = dbndiff.clone()",
                lambda v, d: d.bndiff.clone(),
                "subtraction passes the gradient through",
                tex=(
                    r"\text{bndiff}_{ij} = \text{hprebn}_{ij} - \text{bnmeani}_j",
                    r"\frac{\partial\,\text{bndiff}_{ij}}{\partial\,\text{hprebn}_{ij}} = 1",
                    r"\text{dhprebn}_{ij} = \text{dbndiff}_{ij}",
                ),
            ),
            Rule(
                "bnmeani",
                "dbnmeani = (-dbndiff).sum(0, keepdim=True)",
                lambda v, d: (-d.bndiff).sum(0, keepdim=True),
                BCAST_0 + " (keepdim), with a minus sign",
                tex=(
                    r"\text{bndiff}_{ij} = \text{hprebn}_{ij} - \text{bnmeani}_j",
                    r"\frac{\partial\,\text{bndiff}_{ij}}{\partial\,\text{bnmeani}_j} = -1 \quad \text{for every row } i",
                    r"\text{dbnmeani}_j = -\sum_i \text{dbndiff}_{ij}",
                ),
                example="sum",
            ),
        ),
        "batchnorm: centre",
        symbol="−",
        block="bn",
        rows="each",
    ),
    Op(
        "bndiff2",
        ("bndiff",),
        ("bndiff2",),
        "bndiff2 = bndiff**2",
        lambda v: v.bndiff**2,
        (
            Rule(
                "bndiff",
                "dbndiff += (2*bndiff) * dbndiff2",
                lambda v, d: (2 * v.bndiff) * d.bndiff2,
                "power rule",
                tex=(
                    r"\text{bndiff2}_{ij} = \text{bndiff}_{ij}^2",
                    r"\frac{\partial\,\text{bndiff2}_{ij}}{\partial\,\text{bndiff}_{ij}} = 2\,\text{bndiff}_{ij}",
                    r"\text{dbndiff}_{ij} \;\text{+=}\; 2\,\text{bndiff}_{ij}\;\text{dbndiff2}_{ij}",
                ),
            ),
        ),
        "batchnorm: square the deviations",
        symbol="**2",
        block="bn",
        rows="each",
    ),
    Op(
        "bnvar",
        ("bndiff2",),
        ("bnvar",),
        "bnvar = 1/(n-1) * bndiff2.sum(0, keepdim=True)",
        lambda v: 1 / (v.n - 1) * v.bndiff2.sum(0, keepdim=True),
        (
            Rule(
                "bndiff2",
                "dbndiff2 = (1.0/(n-1))*torch.ones_like(bndiff2) * dbnvar",
                lambda v, d: (1.0 / (v.n - 1)) * torch.ones_like(v.bndiff2) * d.bnvar,
                SUM_0,
                tex=(
                    r"\text{bnvar}_j = \frac{1}{n-1}\sum_i \text{bndiff2}_{ij} \quad \text{(Bessel: } n-1 \text{, not } n\text{)}",
                    r"\frac{\partial\,\text{bnvar}_j}{\partial\,\text{bndiff2}_{ij}} = \frac{1}{n-1} \quad \text{for every row } i",
                    r"\text{dbndiff2}_{ij} = \frac{1}{n-1}\,\text{dbnvar}_j",
                ),
            ),
        ),
        "batchnorm: variance with Bessel's correction",
        symbol="var",
        block="bn",
        rows="mixed",
    ),
    Op(
        "bnvar_inv",
        ("bnvar",),
        ("bnvar_inv",),
        f"bnvar_inv = (bnvar + {EPS_CODE})**-0.5",
        lambda v: (v.bnvar + EPS) ** -0.5,
        (
            Rule(
                "bnvar",
                f"dbnvar = (-0.5*(bnvar + {EPS_CODE})**-1.5) * dbnvar_inv",
                lambda v, d: (-0.5 * (v.bnvar + EPS) ** -1.5) * d.bnvar_inv,
                "power rule",
                tex=(
                    r"\text{bnvar_inv}_j = (\text{bnvar}_j + \epsilon)^{-1/2}",
                    r"\frac{\partial\,\text{bnvar_inv}_j}{\partial\,\text{bnvar}_j} = -\frac{1}{2}\,(\text{bnvar}_j + \epsilon)^{-3/2}",
                    r"\text{dbnvar}_j = -\frac{1}{2}\,(\text{bnvar}_j + \epsilon)^{-3/2}\;\text{dbnvar_inv}_j",
                ),
            ),
        ),
        "batchnorm: inverse standard deviation",
        symbol="**-½",
        block="bn",
        rows="each",
    ),
    Op(
        "bnraw",
        ("bndiff", "bnvar_inv"),
        ("bnraw",),
        "bnraw = bndiff * bnvar_inv",
        lambda v: v.bndiff * v.bnvar_inv,
        (
            Rule(
                "bndiff",
                "dbndiff = bnvar_inv * dbnraw",
                lambda v, d: v.bnvar_inv * d.bnraw,
                "product rule",
                tex=(
                    r"\text{bnraw}_{ij} = \text{bndiff}_{ij}\;\text{bnvar_inv}_j",
                    r"\frac{\partial\,\text{bnraw}_{ij}}{\partial\,\text{bndiff}_{ij}} = \text{bnvar_inv}_j",
                    r"\text{dbndiff}_{ij} = \text{bnvar_inv}_j\;\text{dbnraw}_{ij}",
                ),
            ),
            Rule(
                "bnvar_inv",
                "dbnvar_inv = (bndiff * dbnraw).sum(0, keepdim=True)",
                lambda v, d: (v.bndiff * d.bnraw).sum(0, keepdim=True),
                BCAST_0 + " (keepdim)",
                tex=(
                    r"\text{bnraw}_{ij} = \text{bndiff}_{ij}\;\text{bnvar_inv}_j",
                    r"\frac{\partial\,\text{bnraw}_{ij}}{\partial\,\text{bnvar_inv}_j} = \text{bndiff}_{ij} \quad \text{for every row } i",
                    r"\text{dbnvar_inv}_j = \sum_i \text{bndiff}_{ij}\;\text{dbnraw}_{ij}",
                ),
                example="sum",
            ),
        ),
        "batchnorm: normalise",
        symbol="*",
        block="bn",
        rows="each",
    ),
    scale_shift("hpreact", "bnraw", _DBNGAIN, _DBNBIAS, "batchnorm: scale and shift", "bn"),
    Op(
        "batchnorm",
        ("hprebn", "bngain", "bnbias"),
        ("hpreact",),
        f"hpreact = bngain * (hprebn - hprebn.mean(0, keepdim=True)) / torch.sqrt(hprebn.var(0, keepdim=True, unbiased=True) + {EPS_CODE}) + bnbias",
        _fused_batchnorm,
        (
            Rule(
                "hprebn",
                "dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))",
                _dhprebn_fused,
                "Exercise 3: every atomic batchnorm line folded into one expression (Bessel-corrected variance)",
                tex_notes=(
                    "the names: every symbol is a node of Exercise 1's atomic batchnorm, which this one line folds",
                    "the forward in one column j: bnmeani (μ), bndiff = x − μ, bndiff2, bnvar with Bessel's 1/(n−1), bnvar_inv (s), bnraw (x̂) and hpreact",
                    "hpreact = γ·x̂ + β: what reaches x̂ is γ·dhpreact, the atomic dbnraw",
                    "x̂ₖ depends on xᵢ three ways: directly (bndiff: [k = i]·s), through the mean (bnmeani: −s/n) and through the variance (bndiff2 → bnvar → bnvar_inv: −s·x̂ₖx̂ᵢ/(n−1)); the mean's share of ∂σ²/∂xᵢ is 0, since the deviations sum to 0",
                    "the chain rule sums over every k that xᵢ reaches: dbndiff's two contributions and dhprebn's two (through bndiff and bnmeani) become one line",
                    "1/n pulled out in front turns Bessel's 1/(n−1) into n/(n−1); with the biased 1/n variance that factor would be 1. Under the bug lab's 1/n-for-1/(n−1) bug (Exercise 1) bnmeani stays ≈: its gradient −Σᵢ dbndiffᵢ sums the wrong term 2·bndiffᵢ·dbndiff2ᵢ over the batch, and Σᵢ bndiffᵢ = 0, so the error cancels; dhprebn reads dbndiff row by row and is ✗",
                ),
                tex=(
                    r"x = \text{hprebn},\; \mu = \text{bnmeani},\; \sigma^2 = \text{bnvar},\; s = \text{bnvar_inv},\; \hat{x} = \text{bnraw},\; y = \text{hpreact} \quad \text{(one column } j\text{)}",
                    r"\mu = \frac{1}{n}\sum_k x_k, \quad \sigma^2 = \frac{1}{n-1}\sum_k (x_k - \mu)^2, \quad s = (\sigma^2 + \epsilon)^{-1/2}, \quad \hat{x}_k = (x_k - \mu)\,s, \quad y_k = \gamma\,\hat{x}_k + \beta",
                    r"\text{dbnraw}_k = \gamma\;\text{dhpreact}_k \quad (\gamma = \text{bngain})",
                    r"\frac{\partial \hat{x}_k}{\partial x_i} = s\Big([k = i] - \frac{1}{n} - \frac{1}{n-1}\,\hat{x}_k\,\hat{x}_i\Big) \quad \Big(\frac{\partial \sigma^2}{\partial x_i} = \frac{2}{n-1}(x_i - \mu)\Big)",
                    r"\text{dhprebn}_i = \sum_k \frac{\partial \hat{x}_k}{\partial x_i}\,\text{dbnraw}_k = s\Big(\text{dbnraw}_i - \frac{1}{n}\sum_k \text{dbnraw}_k - \frac{1}{n-1}\,\hat{x}_i \sum_k \text{dbnraw}_k\,\hat{x}_k\Big)",
                    r"\text{dhprebn}_i = \frac{\gamma\,s}{n}\Big(n\,\text{dhpreact}_i - \sum_k \text{dhpreact}_k - \frac{n}{n-1}\,\hat{x}_i \sum_k \text{dhpreact}_k\,\hat{x}_k\Big)",
                ),
                rounding="the closed form regroups the atomic chain's sums and products: the same number, rounded in another order",
            ),
            _DBNGAIN,
            _DBNBIAS,
        ),
        "batchnorm in one op",
        symbol="batchnorm",
        fuses="bn",
        rows="mixed",
        eval_forward=_batchnorm_eval,
        calibrated=("bnmean_running", "bnvar_running"),
        kernel="batchnorm",
        saves=("bnraw", "bnvar_inv"),
        notebook=f"""\
# BatchNorm layer, as Exercise 4's training loop writes it
bnmean = hprebn.mean(0, keepdim=True)
bnvar = hprebn.var(0, keepdim=True, unbiased=True)
bnvar_inv = (bnvar + {EPS_CODE})**-0.5
bnraw = (hprebn - bnmean) * bnvar_inv
hpreact = bngain * bnraw + bnbias""",
    ),
    Op(
        "h",
        ("hpreact",),
        ("h",),
        "h = torch.tanh(hpreact)",
        lambda v: torch.tanh(v.hpreact),
        (
            Rule(
                "hpreact",
                "dhpreact = (1.0 - h**2) * dh",
                lambda v, d: (1.0 - v.h**2) * d.h,
                "tanh'(x) = 1 - tanh(x)², written with the output h",
                tex=(
                    r"\text{h}_{ij} = \tanh(\text{hpreact}_{ij})",
                    r"\frac{\partial\,\text{h}_{ij}}{\partial\,\text{hpreact}_{ij}} = 1 - \tanh^2(\text{hpreact}_{ij}) = 1 - \text{h}_{ij}^2",
                    r"\text{dhpreact}_{ij} = (1 - \text{h}_{ij}^2)\;\text{dh}_{ij}",
                ),
                example="tanh",
                rounding="autograd's tanh backward computes grad · (1 − y²) in one kernel; (1.0 - h**2) * dh rounds h**2, the subtraction and the product one by one: the same number, its last bits rounded differently",
            ),
        ),
        "the hidden layer's non-linearity",
        symbol="tanh",
        rows="each",
        kernel="tanh",
    ),
    linear_op("logits", "h", "W2", "b2", "linear layer 2: the output layer"),
    Op(
        "logit_maxes",
        ("logits",),
        ("logit_maxes",),
        "logit_maxes = logits.max(1, keepdim=True).values",
        lambda v: v.logits.max(1, keepdim=True).values,
        (
            Rule(
                "logits",
                "dlogits += F.one_hot(logits.max(1).indices, num_classes=logits.shape[1]) * dlogit_maxes",
                lambda v, d: F.one_hot(v.logits.max(1).indices, num_classes=v.logits.shape[1]) * d.logit_maxes,
                "max routes the gradient to the position of the maximum only",
                tex=(
                    r"\text{logit_maxes}_i = \max_j \text{logits}_{ij} = \text{logits}_{i,m_i}, \quad m_i = \operatorname{argmax}_j \text{logits}_{ij}",
                    r"\frac{\partial\,\text{logit_maxes}_i}{\partial\,\text{logits}_{ij}} = [j = m_i]",
                    r"\text{dlogits}_{ij} \;\text{+=}\; [j = m_i]\;\text{dlogit_maxes}_i",
                ),
                example="max",
            ),
        ),
        "each row's maximum (for numerical stability)",
        symbol="max",
        block="ce",
        rows="each",
    ),
    Op(
        "norm_logits",
        ("logits", "logit_maxes"),
        ("norm_logits",),
        "norm_logits = logits - logit_maxes",
        lambda v: v.logits - v.logit_maxes,
        (
            Rule(
                "logits",
                "dlogits = dnorm_logits.clone()",
                lambda v, d: d.norm_logits.clone(),
                "subtraction passes the gradient through",
                tex=(
                    r"\text{norm_logits}_{ij} = \text{logits}_{ij} - \text{logit_maxes}_i",
                    r"\frac{\partial\,\text{norm_logits}_{ij}}{\partial\,\text{logits}_{ij}} = 1",
                    r"\text{dlogits}_{ij} = \text{dnorm_logits}_{ij}",
                ),
            ),
            Rule(
                "logit_maxes",
                "dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)",
                lambda v, d: (-d.norm_logits).sum(1, keepdim=True),
                BCAST_1 + ", with a minus sign; ≈ 0, since the softmax ignores a shift",
                tex=(
                    r"\text{norm_logits}_{ij} = \text{logits}_{ij} - \text{logit_maxes}_i",
                    r"\frac{\partial\,\text{norm_logits}_{ij}}{\partial\,\text{logit_maxes}_i} = -1 \quad \text{for every column } j",
                    r"\text{dlogit_maxes}_i = -\sum_j \text{dnorm_logits}_{ij}",
                ),
                example="sum",
            ),
        ),
        "shift every row so its maximum is 0",
        symbol="−",
        block="ce",
        rows="each",
    ),
    Op(
        "counts",
        ("norm_logits",),
        ("counts",),
        "counts = norm_logits.exp()",
        lambda v: v.norm_logits.exp(),
        (
            Rule(
                "norm_logits",
                "dnorm_logits = counts * dcounts",
                lambda v, d: v.counts * d.counts,
                "exp is its own derivative: reuse the output",
                tex=(
                    r"\text{counts}_{ij} = e^{\text{norm_logits}_{ij}}",
                    r"\frac{\partial\,\text{counts}_{ij}}{\partial\,\text{norm_logits}_{ij}} = e^{\text{norm_logits}_{ij}} = \text{counts}_{ij}",
                    r"\text{dnorm_logits}_{ij} = \text{counts}_{ij}\;\text{dcounts}_{ij}",
                ),
            ),
        ),
        "exponentiate",
        symbol="exp",
        block="ce",
        rows="each",
    ),
    Op(
        "counts_sum",
        ("counts",),
        ("counts_sum",),
        "counts_sum = counts.sum(1, keepdim=True)",
        lambda v: v.counts.sum(1, keepdim=True),
        (
            Rule(
                "counts",
                "dcounts += torch.ones_like(counts) * dcounts_sum",
                lambda v, d: torch.ones_like(v.counts) * d.counts_sum,
                SUM_1,
                tex=(
                    r"\text{counts_sum}_i = \sum_j \text{counts}_{ij}",
                    r"\frac{\partial\,\text{counts_sum}_i}{\partial\,\text{counts}_{ij}} = 1 \quad \text{for every column } j",
                    r"\text{dcounts}_{ij} \;\text{+=}\; \text{dcounts_sum}_i",
                ),
            ),
        ),
        "each row's normaliser",
        symbol="sum",
        block="ce",
        rows="each",
    ),
    Op(
        "counts_sum_inv",
        ("counts_sum",),
        ("counts_sum_inv",),
        "counts_sum_inv = counts_sum**-1",
        lambda v: v.counts_sum**-1,
        (
            Rule(
                "counts_sum",
                "dcounts_sum = (-counts_sum**-2) * dcounts_sum_inv",
                lambda v, d: (-(v.counts_sum**-2)) * d.counts_sum_inv,
                "power rule",
                tex=(
                    r"\text{counts_sum_inv}_i = \text{counts_sum}_i^{-1}",
                    r"\frac{\partial\,\text{counts_sum_inv}_i}{\partial\,\text{counts_sum}_i} = -\text{counts_sum}_i^{-2}",
                    r"\text{dcounts_sum}_i = -\text{counts_sum}_i^{-2}\;\text{dcounts_sum_inv}_i",
                ),
            ),
        ),
        "its inverse",
        symbol="**-1",
        block="ce",
        rows="each",
    ),
    Op(
        "probs",
        ("counts", "counts_sum_inv"),
        ("probs",),
        "probs = counts * counts_sum_inv",
        lambda v: v.counts * v.counts_sum_inv,
        (
            Rule(
                "counts",
                "dcounts = counts_sum_inv * dprobs",
                lambda v, d: v.counts_sum_inv * d.probs,
                "product rule",
                tex=(
                    r"\text{probs}_{ij} = \text{counts}_{ij}\;\text{counts_sum_inv}_i",
                    r"\frac{\partial\,\text{probs}_{ij}}{\partial\,\text{counts}_{ij}} = \text{counts_sum_inv}_i",
                    r"\text{dcounts}_{ij} = \text{counts_sum_inv}_i\;\text{dprobs}_{ij}",
                ),
            ),
            Rule(
                "counts_sum_inv",
                "dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)",
                lambda v, d: (v.counts * d.probs).sum(1, keepdim=True),
                BCAST_1,
                tex=(
                    r"\text{probs}_{ij} = \text{counts}_{ij}\;\text{counts_sum_inv}_i",
                    r"\frac{\partial\,\text{probs}_{ij}}{\partial\,\text{counts_sum_inv}_i} = \text{counts}_{ij} \quad \text{for every column } j",
                    r"\text{dcounts_sum_inv}_i = \sum_j \text{counts}_{ij}\;\text{dprobs}_{ij}",
                ),
                example="sum",
            ),
        ),
        "normalise: softmax",
        symbol="*",
        block="ce",
        rows="each",
    ),
    Op(
        "logprobs",
        ("probs",),
        ("logprobs",),
        "logprobs = probs.log()",
        lambda v: v.probs.log(),
        (
            Rule(
                "probs",
                "dprobs = (1.0 / probs) * dlogprobs",
                lambda v, d: (1.0 / v.probs) * d.logprobs,
                "d log(x) = 1/x: a low probability for the target boosts its gradient",
                example="log",
                tex=(
                    r"\text{logprobs}_{ij} = \log(\text{probs}_{ij})",
                    r"\frac{\partial\,\text{logprobs}_{ij}}{\partial\,\text{probs}_{ij}} = \frac{1}{\text{probs}_{ij}}",
                    r"\text{dprobs}_{ij} = \frac{1}{\text{probs}_{ij}}\;\text{dlogprobs}_{ij}",
                ),
            ),
        ),
        "log of the probabilities",
        symbol="log",
        block="ce",
        rows="each",
    ),
    Op(
        "loss",
        ("logprobs", "Yb"),
        ("loss",),
        "loss = -logprobs[range(n), Yb].mean()",
        lambda v: -v.logprobs[range(v.n), v.Yb].mean(),
        (
            Rule(
                "logprobs",
                "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n",
                _dlogprobs,
                "only the target's log-probability in each row enters the mean: -1/n there, 0 elsewhere",
                tex=(
                    r"\text{loss} = -\frac{1}{n}\sum_i \text{logprobs}_{i,\,\text{Yb}_i}",
                    r"\frac{\partial\,\text{loss}}{\partial\,\text{logprobs}_{ij}} = -\frac{1}{n}\,[j = \text{Yb}_i]",
                    r"\text{dlogprobs}_{ij} = -\frac{1}{n}\,[j = \text{Yb}_i] \quad (\text{dloss} = 1)",
                ),
            ),
        ),
        "negative log-likelihood of the targets",
        symbol="nll mean",
        block="ce",
        rows="mean",
    ),
    Op(
        "cross_entropy",
        ("logits", "Yb"),
        ("loss",),
        "loss = F.cross_entropy(logits, Yb)",
        lambda v: F.cross_entropy(v.logits, v.Yb),
        (
            Rule(
                "logits",
                "dlogits = F.softmax(logits, 1)\ndlogits[range(n), Yb] -= 1\ndlogits /= n",
                _dlogits_fused,
                "Exercise 2: softmax minus one-hot of the target, divided by n",
                tex_notes=(
                    "each row's loss: minus the target's logit, plus the log of the row's normaliser (log-sum-exp)",
                    "the log-sum-exp's derivative is the softmax: the atomic chain counts → counts_sum → counts_sum_inv → probs, folded",
                    "so every logit's gradient is its probability, minus 1 at the target, and the mean divides by n",
                    "the notebook's three lines: softmax, subtract 1 at (row, Yb), divide by n",
                ),
                tex=(
                    r"\text{loss} = \frac{1}{n}\sum_i \Big(-\text{logits}_{i,y_i} + \log \sum_k e^{\text{logits}_{ik}}\Big), \quad y_i = \text{Yb}_i",
                    r"\frac{\partial}{\partial\,\text{logits}_{ij}} \log \sum_k e^{\text{logits}_{ik}} = \frac{e^{\text{logits}_{ij}}}{\sum_k e^{\text{logits}_{ik}}} = p_{ij} \quad \text{(the softmax)}",
                    r"\frac{\partial\,\text{loss}}{\partial\,\text{logits}_{ij}} = \frac{1}{n}\big(p_{ij} - [j = y_i]\big)",
                    r"\text{dlogits} = \big(\operatorname{softmax}(\text{logits}) - \operatorname{onehot}(\text{Yb})\big) / n",
                ),
                example="forces",
                rounding="F.cross_entropy's backward takes the softmax from log_softmax (exp of the log-probabilities) in one fused kernel, where F.softmax computes exp(x - max) / sum: the same number, rounded differently",
            ),
        ),
        "cross-entropy in one op",
        symbol="cross_entropy",
        fuses="ce",
        rows="mean",
        kernel="cross_entropy",
    ),
]

# the order of the notebook's cmp(...) lines (Exercise 1's cell; Exercises 2 and 3 print logits and hprebn): the
# check cell prints a step's complete gradients in the order the backward completes them, ties (the rules of one
# op) in this order
CMP_ORDER = (
    "logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits", "logit_maxes", "logits", "h",
    "W2", "b2", "hpreact", "bngain", "bnbias", "bnraw", "bnvar_inv", "bnvar", "bndiff2", "bndiff", "bnmeani",
    "hprebn", "embcat", "W1", "b1", "emb", "C",
)  # fmt: skip

MODE_LIST = [
    Mode("atomic", "Exercise 1: atomic", "Exercise 1: backprop through every atomic line", frozenset()),
    Mode(
        "fused_ce",
        "Exercise 2: fused cross-entropy",
        "Exercise 2: cross-entropy backward in one step",
        frozenset({"ce"}),
    ),
    Mode("fused_bn", "Exercise 3: fused batchnorm", "Exercise 3: batchnorm backward in one step", frozenset({"bn"})),
    Mode(
        "fused",
        "Exercises 2+3: both fused",
        "Exercises 2+3: both fused (the backward used to train in Exercise 4)",
        frozenset({"ce", "bn"}),
    ),
]


def _clipped_dlogprobs(v: Any, d: Any) -> torch.Tensor:
    dlogprobs = torch.zeros_like(v.logprobs)  # (n, vocab)
    picked = -v.logprobs[range(v.n), v.Yb]  # (n,) per-example loss
    # two Python scalars make a tensor of the default dtype: cast, or float64 passes fail the index put
    dlogprobs[range(v.n), v.Yb] = torch.where(picked > CLIP, 0.0, -1.0 / v.n).to(dlogprobs.dtype)
    return dlogprobs


BUGS = (
    Bug(
        "no_broadcast_sum",
        "forgot the sum over a broadcast dimension",
        "probs",
        "counts_sum_inv",
        "dcounts_sum_inv = counts * dprobs   # .sum(1, keepdim=True) missing",
        lambda v, d: v.counts * d.probs,
        "counts_sum_inv (n, 1) was broadcast over the vocabulary's columns in the forward pass, so every column "
        "contributes to its gradient: the contributions must be summed over dim 1.",
        "The gradient has the shape of the other operand, (n, vocab_size) instead of (n, 1); broadcasting later "
        "hides it, so compare shapes with the tensor's own shape (assert dx.shape == x.shape).",
    ),
    Bug(
        "overwrite_second_contribution",
        "forgot the second contribution to a reused node (= instead of +=)",
        "counts_sum",
        "counts",
        "dcounts = torch.ones_like(counts) * dcounts_sum   # = where += belongs",
        lambda v, d: torch.ones_like(v.counts) * d.counts_sum,
        "counts feeds two ops (probs and counts_sum); its gradient is the sum of both paths. Assigning "
        "the second path's contribution throws away the first one.",
        "Only nodes used more than once are affected, and the value is plausible; a gradient check "
        "(finite differences or autograd) on that node is what catches it.",
        overwrite=True,
    ),
    Bug(
        "bessel_n",
        "n instead of n-1 in the batchnorm variance backward",
        "bnvar",
        "bndiff2",
        "dbndiff2 = (1.0/n)*torch.ones_like(bndiff2) * dbnvar   # the forward used 1/(n-1)",
        lambda v, d: (1.0 / v.n) * torch.ones_like(v.bndiff2) * d.bnvar,
        "The forward pass uses the unbiased variance (Bessel's correction, 1/(n-1)); the backward must "
        "differentiate that same formula, not the biased 1/n one.",
        "The gradients are off by a factor (n-1)/n, close to 1 for any useful batch: small enough to train fine, so "
        "only an exact check against autograd shows it.",
    ),
    Bug(
        "clipped_loss",
        "clipped loss: outliers get no gradient",
        "loss",
        "logprobs",
        f"dlogprobs[range(n), Yb] = where(-logprobs[range(n), Yb] > {CLIP}, 0, -1.0/n)   # loss.clamp(max={CLIP})",
        _clipped_dlogprobs,
        "Clamping each example's loss at a maximum (to 'stabilise' training) makes the loss flat for "
        "the examples above it: their gradient is exactly zero, and the net stops learning from the "
        "examples it gets most wrong.",
        "The loss value looks normal; the rows of the worst examples in dlogprobs are all zero. Clip "
        "gradients (by norm), not the loss.",
    ),
    Bug(
        "missing_gain",
        "forgot the batchnorm gain (hidden by zero-initialised biases)",
        "hpreact",
        "bnraw",
        "dbnraw = dhpreact   # bngain * missing",
        lambda v, d: d.hpreact,
        "hpreact = bngain * bnraw + bnbias, so dbnraw = bngain * dhpreact. With init=zero_bias "
        "(bngain = 1, biases 0) the missing factor is 1 and the check passes: approximate (≈), off by float "
        "rounding alone, not exact, so nothing shows the bug.",
        "Tests with 'clean' initialisations (ones and zeros) pass; use small random gains and biases, "
        "as the lecture does, to catch rules that multiply by them.",
    ),
)

CELLS = {
    "atomic": Cell("Exercise 1", "the whole backward pass, atomic line by atomic line, from dlogprobs to dC"),
    "fused_ce": Cell("Exercise 2", "dlogits in one go: the cross-entropy backward", ("logits",)),
    "fused_bn": Cell("Exercise 3", "dhprebn in one go from dhpreact: the batchnorm backward", ("hprebn",)),
    "fused": Cell("Exercise 4", "the training loop's manual backprop, from dlogits to dC (and grads = [...])"),
}

# what a check process grades before its first learner: a first step, a step with two gradients and feedback
# (a slip), the loops of dC, and a whole cell
WARMUP = (
    Warmup("atomic", "logprobs", "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"),
    Warmup("atomic", "counts_sum_inv", "dcounts_sum_inv = counts * dprobs\ndcounts = counts_sum_inv * dprobs * 2"),
    Warmup(
        "atomic",
        "C",
        "dC = torch.zeros_like(C)\nfor k in range(n):\n  for j in range(Xb.shape[1]):\n    dC[Xb[k,j]] += demb[k,j]",
    ),
    Warmup(
        "atomic", "", "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n\ndprobs = 2 * dlogprobs"
    ),
)

NET = Net(
    name="makemore4",
    title="The lecture's MLP (batchnorm)",
    about="makemore part 4: embedding, a linear layer, batchnorm, tanh, a linear layer and the cross-entropy",
    nodes=tuple(NODE_LIST),
    ops=tuple(OPS),
    modes=tuple(MODE_LIST),
    trained_mode=TRAINED_MODE,
    cmp_order=CMP_ORDER,
    bugs=BUGS,
    cells=CELLS,
    warmup=WARMUP,
    eps_code=EPS_CODE,
)
