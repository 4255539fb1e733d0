"""A single causal self-attention head, declared as data: the attention every learner meets after makemore.

The lecture's data and embedding; a learned position embedding added to it; one head (queries, keys and values,
the scaled scores, the causal mask, the softmax over the keys, the weighted sum of the values); the last
position's output, a linear head to the vocabulary and the lecture's cross-entropy. One target a context: the
character after it, predicted from the context's last position, as makemore's MLP predicts it.

Why a position embedding (P, one n_embd-vector per context position, added to the embeddings): without it the
head cannot tell the positions apart but for the mask, and the last position, which sees every key, would read
its context as a bag of characters ("emm" and "mme" alike). A learner who met attention in a transformer expects
it there, as the GPT lecture adds one.

The head size hs is the config's n_hidden (the page's hidden-size field), T the context length (block_size).
Every line but the loss keeps the examples apart (Op.rows "each"): a query attends to the keys of its own example
only. Only the last query's output reaches the loss, so only the last row of each (T, T) attention map carries
gradient; the mask's -inf entries give exp() = 0, and their gradient is 0 on every path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..declare import Bug, Cell, Init, Mode, Net, Node, Op, Rule, Slip, Warmup
from .makemore4 import BCAST_0, MATMUL, linear_op
from .makemore4 import NET as LECTURE

NODES, OPS_BY_NAME = LECTURE.nodes_by_name, LECTURE.ops_by_name  # the lecture's, where this net has the same

TITLE = "Self-attention head"
ABOUT = (
    "One causal self-attention head on the embeddings (plus a position embedding): queries, keys and values, "
    "scores scaled by 1/sqrt(hs), the causal mask, a softmax over the keys, the weighted sum of the values; the "
    "last position's output predicts the next character. The head size hs is n_hidden."
)
TRAINED_MODE = "fused"  # the training loop's backward: the softmax and the cross-entropy fused
# the sizes this net narrows: a context of one character has nothing to attend over; a head wider than 64 only
# slows the page (the GPT lecture's heads are 16 to 64 wide)
BOUNDS: dict[str, tuple[int, int]] = {"block_size": (2, 8), "n_hidden": (1, 64)}
# the sizes a request naming this net gets unless it says otherwise: the whole context of makemore part 5 (eight
# characters, an (8, 8) attention map per example) and a head as wide as the embedding, as the GPT lecture's
DEFAULTS = {"block_size": 8, "n_embd": 16, "n_hidden": 16}
# the sizes a forward line reads by name: the head size (hs) and the context length (T), as the GPT lecture names them
SIZE_NAMES = (("embd", "n_embd"), ("head", "hs"), ("context", "T"))
SIZE_ABOUT = {
    "n_embd": "the dimensionality of the character embedding vectors",
    "hs": "the head size: the width of each query, key and value",
    "T": "the context length (block_size): the positions a query can attend to",
}

_LECTURE_CE = ("logit_maxes", "norm_logits", "counts", "counts_sum", "counts_sum_inv", "probs", "logprobs", "loss")
PER_KEY = "over the keys (the last dim, -1): one value per query"
BCAST_KEYS = "broadcast over the keys (dim -1) in the forward pass → sum over dim -1 here (keepdim)"
SUM_KEYS = "summed over the keys (dim -1) in the forward pass → the gradient is copied (broadcast) along dim -1"
BATCHED = MATMUL + "; batched: one matrix product per example, over the last two dims (transpose(-2, -1))"

NODE_LIST = [
    NODES["Xb"],
    NODES["Yb"],
    NODES["C"],
    Node(
        "P",
        "param",
        ("context", "embd"),
        "the position embedding: one n_embd-vector per context position, added to each character's",
        Init("P = torch.randn((block_size, n_embd), generator=g) * 0.1", lambda r, s: r * 0.1),
    ),
    *(
        Node(
            f"W{part}",
            "param",
            ("embd", "head"),
            f"the {what} projection: n_embd → hs, scaled by 1/sqrt(n_embd)",
            Init(
                f"W{part} = torch.randn((n_embd, hs), generator=g) * n_embd**-0.5",
                lambda r, s: r * s["embd"] ** -0.5,
            ),
        )
        for part, what in (("q", "query"), ("k", "key"), ("v", "value"))
    ),
    Node(
        "W2",
        "param",
        ("head", "vocab"),
        "weights of the output layer: the head's output → logits",
        Init("W2 = torch.randn((hs, vocab_size), generator=g) * 0.1", lambda r, s: r * 0.1),
    ),
    NODES["b2"],
    NODES["emb"],
    Node("x", "intermediate", ("batch", "context", "embd"), "character plus position embedding: the head's input"),
    Node("q", "intermediate", ("batch", "context", "head"), "the queries: what each position looks for"),
    Node("k", "intermediate", ("batch", "context", "head"), "the keys: what each position offers"),
    Node("v", "intermediate", ("batch", "context", "head"), "the values: what each position passes on when attended"),
    Node("kT", "intermediate", ("batch", "head", "context"), "the keys transposed (the last two dims swapped)"),
    Node("qk", "intermediate", ("batch", "query", "key"), "every query's dot product with every key"),
    Node("wei", "intermediate", ("batch", "query", "key"), "the scores scaled by 1/sqrt(hs): unit variance at init"),
    Node("wei_masked", "intermediate", ("batch", "query", "key"), "the scores with the future (key > query) at -inf"),
    Node(
        "wei_maxes", "intermediate", ("batch", "query", "one"), "each query's largest score, subtracted for stability"
    ),
    Node("wei_norm", "intermediate", ("batch", "query", "key"), "scores shifted so each query's maximum is 0"),
    Node("wei_counts", "intermediate", ("batch", "query", "key"), "exponentiated scores (0 where masked)"),
    Node("wei_sum", "intermediate", ("batch", "query", "one"), "each query's total count"),
    Node("wei_sum_inv", "intermediate", ("batch", "query", "one"), "1 / wei_sum"),
    Node(
        "att",
        "intermediate",
        ("batch", "query", "key"),
        "the attention weights: each query's softmax over the keys it may see (each row sums to 1)",
    ),
    Node("out", "intermediate", ("batch", "context", "head"), "each position's weighted sum of the values"),
    Node("out_last", "intermediate", ("batch", "head"), "the last position's output: it predicts the next character"),
    Node("logits", "intermediate", ("batch", "vocab"), "unnormalised log-probabilities of the next character"),
    *(NODES[name] for name in _LECTURE_CE),
]


def _masked(v: Any) -> dict[str, torch.Tensor]:
    # tril is the GPT lecture's buffer: saved, so that the backward (and a learner's code) can name it
    tril = torch.tril(torch.ones(v.T, v.T))  # (T, T)
    return {"wei_masked": v.wei.masked_fill(tril == 0, float("-inf")), "tril": tril}


def _dwei_masked_fused(v: Any, d: Any) -> torch.Tensor:
    return v.att * (d.att - (v.att * d.att).sum(-1, keepdim=True))


def _dout(v: Any, d: Any) -> torch.Tensor:
    dout = torch.zeros_like(v.out)  # (n, T, hs)
    dout[:, -1, :] = d.out_last
    return dout


_PROJECTED = {"q": "queries", "k": "keys", "v": "values"}


def _projection(part: str, first: bool) -> Op:
    """`part = x @ Wpart`: x (n, T, n_embd) feeds three of them; the last one in the forward is the first rule to run."""
    w = f"W{part}"
    eq = "=" if first else "+="
    return Op(
        part,
        ("x", w),
        (part,),
        f"{part} = x @ {w}",
        lambda v: v.x @ getattr(v, w),
        (
            Rule(
                "x",
                f"dx {eq} d{part} @ {w}.T",
                lambda v, d: getattr(d, part) @ getattr(v, w).T,
                MATMUL
                + "; x feeds the queries, the keys and the values: three contributions"
                + ("" if first else " (+=)"),
                tex=(
                    rf"\text{{{part}}}_{{bth}} = \sum_e \text{{x}}_{{bte}}\,\text{{{w}}}_{{eh}}",
                    rf"\frac{{\partial\,\text{{{part}}}_{{bth}}}}{{\partial\,\text{{x}}_{{bte}}}} = \text{{{w}}}_{{eh}} \quad \text{{for every }} h",
                    rf"\text{{dx}}_{{bte}} \;\text{{{eq}}}\; \sum_h \text{{d{part}}}_{{bth}}\;\text{{{w}}}_{{eh}} = (\text{{d{part}}}\;\text{{{w}}}^{{\top}})_{{bte}}",
                ),
            ),
            Rule(
                w,
                f"d{w} = (x.transpose(-2, -1) @ d{part}).sum(0)",
                lambda v, d: (v.x.transpose(-2, -1) @ getattr(d, part)).sum(0),
                BATCHED + "; the weights are shared by every example: their gradient sums over the batch (dim 0)",
                tex=(
                    rf"\text{{{part}}}_{{bth}} = \sum_e \text{{x}}_{{bte}}\,\text{{{w}}}_{{eh}}",
                    rf"\frac{{\partial\,\text{{{part}}}_{{bth}}}}{{\partial\,\text{{{w}}}_{{eh}}}} = \text{{x}}_{{bte}} \quad \text{{for every }} b, t",
                    rf"\text{{d{w}}}_{{eh}} = \sum_b \sum_t \text{{x}}_{{bte}}\;\text{{d{part}}}_{{bth}} = \sum_b (\text{{x}}_b^{{\top}}\;\text{{d{part}}}_b)_{{eh}}",
                ),
            ),
        ),
        f"the {_PROJECTED[part]}: a linear map of each position, no bias",
        symbol="@",
        rows="each",
    )


_SOFTMAX_BLOCK: list[Op] = [
    Op(
        "wei_maxes",
        ("wei_masked",),
        ("wei_maxes",),
        "wei_maxes = wei_masked.max(-1, keepdim=True).values",
        lambda v: v.wei_masked.max(-1, keepdim=True).values,
        (
            Rule(
                "wei_masked",
                "dwei_masked += F.one_hot(wei_masked.max(-1).indices, num_classes=T) * dwei_maxes",
                lambda v, d: F.one_hot(v.wei_masked.max(-1).indices, num_classes=v.T) * d.wei_maxes,
                "max routes the gradient to the position of the maximum only (never a masked key: the query's own "
                "key is always there)",
                tex=(
                    r"\text{wei_maxes}_{bt} = \max_s \text{wei_masked}_{bts} = \text{wei_masked}_{bt,m_{bt}}",
                    r"\frac{\partial\,\text{wei_maxes}_{bt}}{\partial\,\text{wei_masked}_{bts}} = [s = m_{bt}]",
                    r"\text{dwei_masked}_{bts} \;\text{+=}\; [s = m_{bt}]\;\text{dwei_maxes}_{bt}",
                ),
            ),
        ),
        "each query's maximum score (for numerical stability)",
        symbol="max",
        block="sm",
        rows="each",
    ),
    Op(
        "wei_norm",
        ("wei_masked", "wei_maxes"),
        ("wei_norm",),
        "wei_norm = wei_masked - wei_maxes",
        lambda v: v.wei_masked - v.wei_maxes,
        (
            Rule(
                "wei_masked",
                "dwei_masked = dwei_norm.clone()",
                lambda v, d: d.wei_norm.clone(),
                "subtraction passes the gradient through",
                tex=(
                    r"\text{wei_norm}_{bts} = \text{wei_masked}_{bts} - \text{wei_maxes}_{bt}",
                    r"\frac{\partial\,\text{wei_norm}_{bts}}{\partial\,\text{wei_masked}_{bts}} = 1",
                    r"\text{dwei_masked}_{bts} = \text{dwei_norm}_{bts}",
                ),
            ),
            Rule(
                "wei_maxes",
                "dwei_maxes = (-dwei_norm).sum(-1, keepdim=True)",
                lambda v, d: (-d.wei_norm).sum(-1, keepdim=True),
                BCAST_KEYS + ", with a minus sign; ≈ 0, since the softmax ignores a shift",
                tex=(
                    r"\text{wei_norm}_{bts} = \text{wei_masked}_{bts} - \text{wei_maxes}_{bt}",
                    r"\frac{\partial\,\text{wei_norm}_{bts}}{\partial\,\text{wei_maxes}_{bt}} = -1 \quad \text{for every key } s",
                    r"\text{dwei_maxes}_{bt} = -\sum_s \text{dwei_norm}_{bts}",
                ),
            ),
        ),
        "shift every query's scores so the maximum is 0",
        symbol="−",
        block="sm",
        rows="each",
    ),
    Op(
        "wei_counts",
        ("wei_norm",),
        ("wei_counts",),
        "wei_counts = wei_norm.exp()",
        lambda v: v.wei_norm.exp(),
        (
            Rule(
                "wei_norm",
                "dwei_norm = wei_counts * dwei_counts",
                lambda v, d: v.wei_counts * d.wei_counts,
                "exp is its own derivative: reuse the output (0 at the masked keys: exp(-inf) = 0)",
                tex=(
                    r"\text{wei_counts}_{bts} = e^{\text{wei_norm}_{bts}}",
                    r"\frac{\partial\,\text{wei_counts}_{bts}}{\partial\,\text{wei_norm}_{bts}} = e^{\text{wei_norm}_{bts}} = \text{wei_counts}_{bts}",
                    r"\text{dwei_norm}_{bts} = \text{wei_counts}_{bts}\;\text{dwei_counts}_{bts}",
                ),
            ),
        ),
        "exponentiate (the masked scores become 0)",
        symbol="exp",
        block="sm",
        rows="each",
    ),
    Op(
        "wei_sum",
        ("wei_counts",),
        ("wei_sum",),
        "wei_sum = wei_counts.sum(-1, keepdim=True)",
        lambda v: v.wei_counts.sum(-1, keepdim=True),
        (
            Rule(
                "wei_counts",
                "dwei_counts += torch.ones_like(wei_counts) * dwei_sum",
                lambda v, d: torch.ones_like(v.wei_counts) * d.wei_sum,
                SUM_KEYS,
                tex=(
                    r"\text{wei_sum}_{bt} = \sum_s \text{wei_counts}_{bts}",
                    r"\frac{\partial\,\text{wei_sum}_{bt}}{\partial\,\text{wei_counts}_{bts}} = 1 \quad \text{for every key } s",
                    r"\text{dwei_counts}_{bts} \;\text{+=}\; \text{dwei_sum}_{bt}",
                ),
            ),
        ),
        "each query's normaliser: " + PER_KEY,
        symbol="sum",
        block="sm",
        rows="each",
    ),
    Op(
        "wei_sum_inv",
        ("wei_sum",),
        ("wei_sum_inv",),
        "wei_sum_inv = wei_sum**-1",
        lambda v: v.wei_sum**-1,
        (
            Rule(
                "wei_sum",
                "dwei_sum = (-wei_sum**-2) * dwei_sum_inv",
                lambda v, d: (-(v.wei_sum**-2)) * d.wei_sum_inv,
                "power rule",
                tex=(
                    r"\text{wei_sum_inv}_{bt} = \text{wei_sum}_{bt}^{-1}",
                    r"\frac{\partial\,\text{wei_sum_inv}_{bt}}{\partial\,\text{wei_sum}_{bt}} = -\text{wei_sum}_{bt}^{-2}",
                    r"\text{dwei_sum}_{bt} = -\text{wei_sum}_{bt}^{-2}\;\text{dwei_sum_inv}_{bt}",
                ),
            ),
        ),
        "its inverse",
        symbol="**-1",
        block="sm",
        rows="each",
    ),
    Op(
        "att",
        ("wei_counts", "wei_sum_inv"),
        ("att",),
        "att = wei_counts * wei_sum_inv",
        lambda v: v.wei_counts * v.wei_sum_inv,
        (
            Rule(
                "wei_counts",
                "dwei_counts = wei_sum_inv * datt",
                lambda v, d: v.wei_sum_inv * d.att,
                "product rule",
                tex=(
                    r"\text{att}_{bts} = \text{wei_counts}_{bts}\;\text{wei_sum_inv}_{bt}",
                    r"\frac{\partial\,\text{att}_{bts}}{\partial\,\text{wei_counts}_{bts}} = \text{wei_sum_inv}_{bt}",
                    r"\text{dwei_counts}_{bts} = \text{wei_sum_inv}_{bt}\;\text{datt}_{bts}",
                ),
            ),
            Rule(
                "wei_sum_inv",
                "dwei_sum_inv = (wei_counts * datt).sum(-1, keepdim=True)",
                lambda v, d: (v.wei_counts * d.att).sum(-1, keepdim=True),
                BCAST_KEYS,
                tex=(
                    r"\text{att}_{bts} = \text{wei_counts}_{bts}\;\text{wei_sum_inv}_{bt}",
                    r"\frac{\partial\,\text{att}_{bts}}{\partial\,\text{wei_sum_inv}_{bt}} = \text{wei_counts}_{bts} \quad \text{for every key } s",
                    r"\text{dwei_sum_inv}_{bt} = \sum_s \text{wei_counts}_{bts}\;\text{datt}_{bts}",
                ),
            ),
        ),
        "normalise: the softmax over the keys, the attention weights",
        symbol="*",
        block="sm",
        rows="each",
    ),
]

OPS: list[Op] = [
    OPS_BY_NAME["emb"],
    Op(
        "x",
        ("emb", "P"),
        ("x",),
        "x = emb + P",
        lambda v: v.emb + v.P,
        (
            Rule(
                "emb",
                "demb = dx.clone()",
                lambda v, d: d.x.clone(),
                "addition passes the gradient through",
                tex=(
                    r"\text{x}_{bte} = \text{emb}_{bte} + \text{P}_{te}",
                    r"\frac{\partial\,\text{x}_{bte}}{\partial\,\text{emb}_{bte}} = 1",
                    r"\text{demb}_{bte} = \text{dx}_{bte}",
                ),
            ),
            Rule(
                "P",
                "dP = dx.sum(0)",
                lambda v, d: d.x.sum(0),
                BCAST_0 + ": every example adds the same position embedding",
                tex=(
                    r"\text{x}_{bte} = \text{emb}_{bte} + \text{P}_{te}",
                    r"\frac{\partial\,\text{x}_{bte}}{\partial\,\text{P}_{te}} = 1 \quad \text{for every example } b",
                    r"\text{dP}_{te} = \sum_b \text{dx}_{bte}",
                ),
                example="sum",
            ),
        ),
        "add the position embedding: (n, T, n_embd) + (T, n_embd) broadcasts over the batch",
        symbol="+",
        rows="each",
    ),
    _projection("q", first=False),
    _projection("k", first=False),
    _projection("v", first=True),
    Op(
        "kT",
        ("k",),
        ("kT",),
        "kT = k.transpose(-2, -1)",
        lambda v: v.k.transpose(-2, -1),
        (
            Rule(
                "k",
                "dk = dkT.transpose(-2, -1)",
                lambda v, d: d.kT.transpose(-2, -1),
                "a transpose only rearranges: the gradient is transposed back over the same two dims",
                tex=(
                    r"\text{kT}_{bht} = \text{k}_{bth}",
                    r"\frac{\partial\,\text{kT}_{bht}}{\partial\,\text{k}_{bth}} = 1",
                    r"\text{dk}_{bth} = \text{dkT}_{bht}",
                ),
            ),
        ),
        "swap the keys' last two dims (the batch stays first)",
        symbol="ᵀ",
        rows="each",
    ),
    Op(
        "qk",
        ("q", "kT"),
        ("qk",),
        "qk = q @ kT",
        lambda v: v.q @ v.kT,
        (
            Rule(
                "q",
                "dq = dqk @ kT.transpose(-2, -1)",
                lambda v, d: d.qk @ v.kT.transpose(-2, -1),
                BATCHED,
                tex=(
                    r"\text{qk}_{bts} = \sum_h \text{q}_{bth}\,\text{kT}_{bhs}",
                    r"\frac{\partial\,\text{qk}_{bts}}{\partial\,\text{q}_{bth}} = \text{kT}_{bhs} \quad \text{for every key } s",
                    r"\text{dq}_{bth} = \sum_s \text{dqk}_{bts}\;\text{kT}_{bhs} = (\text{dqk}_b\;\text{kT}_b^{\top})_{th}",
                ),
            ),
            Rule(
                "kT",
                "dkT = q.transpose(-2, -1) @ dqk",
                lambda v, d: v.q.transpose(-2, -1) @ d.qk,
                BATCHED,
                tex=(
                    r"\text{qk}_{bts} = \sum_h \text{q}_{bth}\,\text{kT}_{bhs}",
                    r"\frac{\partial\,\text{qk}_{bts}}{\partial\,\text{kT}_{bhs}} = \text{q}_{bth} \quad \text{for every query } t",
                    r"\text{dkT}_{bhs} = \sum_t \text{q}_{bth}\;\text{dqk}_{bts} = (\text{q}_b^{\top}\;\text{dqk}_b)_{hs}",
                ),
            ),
        ),
        "every query against every key of its example: a (T, T) map per example",
        symbol="@",
        rows="each",
    ),
    Op(
        "wei",
        ("qk",),
        ("wei",),
        "wei = qk * hs**-0.5",
        lambda v: v.qk * v.hs**-0.5,
        (
            Rule(
                "qk",
                "dqk = dwei * hs**-0.5",
                lambda v, d: d.wei * v.hs**-0.5,
                "a constant factor stays in the gradient: forget it and every upstream gradient is sqrt(hs) too large",
                tex=(
                    r"\text{wei}_{bts} = \frac{\text{qk}_{bts}}{\sqrt{hs}}",
                    r"\frac{\partial\,\text{wei}_{bts}}{\partial\,\text{qk}_{bts}} = \frac{1}{\sqrt{hs}}",
                    r"\text{dqk}_{bts} = \frac{1}{\sqrt{hs}}\;\text{dwei}_{bts}",
                ),
            ),
        ),
        "scale by 1/sqrt(hs): unit-variance scores, so the softmax does not saturate at init",
        symbol="*hs**-½",
        rows="each",
    ),
    Op(
        "wei_masked",
        ("wei",),
        ("wei_masked",),
        "wei_masked = wei.masked_fill(tril == 0, float('-inf'))",
        _masked,
        (
            Rule(
                "wei",
                "dwei = dwei_masked.masked_fill(tril == 0, 0.0)",
                lambda v, d: d.wei_masked.masked_fill(v.tril == 0, 0.0),
                "a masked entry is a constant (-inf), whatever wei was: its gradient is 0; the others pass through",
                tex=(
                    r"\text{wei_masked}_{bts} = \text{wei}_{bts} \;\text{if } s \le t, \quad -\infty \;\text{if } s > t",
                    r"\frac{\partial\,\text{wei_masked}_{bts}}{\partial\,\text{wei}_{bts}} = [s \le t]",
                    r"\text{dwei}_{bts} = [s \le t]\;\text{dwei_masked}_{bts}",
                ),
            ),
        ),
        "the causal mask: a query sees its own position and the ones before it",
        symbol="mask",
        rows="each",
        saves=("tril",),
        notebook="tril = torch.tril(torch.ones(T, T))\nwei_masked = wei.masked_fill(tril == 0, float('-inf'))",
    ),
    *_SOFTMAX_BLOCK,
    Op(
        "softmax",
        ("wei_masked",),
        ("att",),
        "att = F.softmax(wei_masked, dim=-1)",
        lambda v: F.softmax(v.wei_masked, dim=-1),
        (
            Rule(
                "wei_masked",
                "dwei_masked = att * (datt - (att * datt).sum(-1, keepdim=True))",
                _dwei_masked_fused,
                "the softmax's Jacobian, diag(p) - p pᵀ, applied query by query: one line for the six atomic ones",
                tex_notes=(
                    "each query's row of weights is a softmax of its row of scores",
                    "the softmax's derivative: p_s(1 - p_s) on the diagonal, -p_s p_r off it (the atomic chain folded)",
                    "the chain rule sums over every key r of the same query that the score s reaches",
                    "p_s pulled out: the sum is one number per query, broadcast back over its keys",
                ),
                tex=(
                    r"\text{att}_{bts} = \frac{e^{\text{wei_masked}_{bts}}}{\sum_r e^{\text{wei_masked}_{btr}}}",
                    r"\frac{\partial\,\text{att}_{btr}}{\partial\,\text{wei_masked}_{bts}} = \text{att}_{btr}\big([r = s] - \text{att}_{bts}\big)",
                    r"\text{dwei_masked}_{bts} = \sum_r \text{att}_{btr}\big([r = s] - \text{att}_{bts}\big)\,\text{datt}_{btr}",
                    r"\text{dwei_masked}_{bts} = \text{att}_{bts}\Big(\text{datt}_{bts} - \sum_r \text{att}_{btr}\,\text{datt}_{btr}\Big)",
                ),
                rounding="the closed form regroups the atomic chain's sums and products: the same number, rounded in "
                "another order",
            ),
        ),
        "the softmax over the keys in one op",
        symbol="softmax",
        fuses="sm",
        rows="each",
    ),
    Op(
        "out",
        ("att", "v"),
        ("out",),
        "out = att @ v",
        lambda v: v.att @ v.v,
        (
            Rule(
                "att",
                "datt = dout @ v.transpose(-2, -1)",
                lambda v, d: d.out @ v.v.transpose(-2, -1),
                BATCHED,
                tex=(
                    r"\text{out}_{bth} = \sum_s \text{att}_{bts}\,\text{v}_{bsh}",
                    r"\frac{\partial\,\text{out}_{bth}}{\partial\,\text{att}_{bts}} = \text{v}_{bsh} \quad \text{for every } h",
                    r"\text{datt}_{bts} = \sum_h \text{dout}_{bth}\;\text{v}_{bsh} = (\text{dout}_b\;\text{v}_b^{\top})_{ts}",
                ),
            ),
            Rule(
                "v",
                "dv = att.transpose(-2, -1) @ dout",
                lambda v, d: v.att.transpose(-2, -1) @ d.out,
                BATCHED + "; att is square (T, T), so a missing transpose still has the right shape",
                tex=(
                    r"\text{out}_{bth} = \sum_s \text{att}_{bts}\,\text{v}_{bsh}",
                    r"\frac{\partial\,\text{out}_{bth}}{\partial\,\text{v}_{bsh}} = \text{att}_{bts} \quad \text{for every query } t",
                    r"\text{dv}_{bsh} = \sum_t \text{att}_{bts}\;\text{dout}_{bth} = (\text{att}_b^{\top}\;\text{dout}_b)_{sh}",
                ),
            ),
        ),
        "each query's weighted sum of the values",
        symbol="@",
        rows="each",
    ),
    Op(
        "out_last",
        ("out",),
        ("out_last",),
        "out_last = out[:, -1, :]",
        lambda v: v.out[:, -1, :],
        (
            Rule(
                "out",
                "dout = torch.zeros_like(out)\ndout[:, -1, :] = dout_last",
                _dout,
                "indexing picks the last position: its gradient goes back there, every other position gets 0",
                tex=(
                    r"\text{out_last}_{bh} = \text{out}_{b,T-1,h}",
                    r"\frac{\partial\,\text{out_last}_{bh}}{\partial\,\text{out}_{bth}} = [t = T-1]",
                    r"\text{dout}_{bth} = [t = T-1]\;\text{dout_last}_{bh}",
                ),
            ),
        ),
        "the last position's output: it has seen the whole context",
        symbol="[:, -1]",
        rows="each",
    ),
    linear_op("logits", "out_last", "W2", "b2", "the output layer: the head's output → logits"),
    *(OPS_BY_NAME[name] for name in _LECTURE_CE),
    OPS_BY_NAME["cross_entropy"],
]

# the order of the check cell's cmp lines: a step's complete gradients in the order the backward completes them,
# ties (the rules of one op) in the op's order
CMP_ORDER = (
    "logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits", "logit_maxes", "logits",
    "out_last", "W2", "b2", "out", "att", "v", "wei_sum_inv", "wei_sum", "wei_counts", "wei_norm", "wei_maxes",
    "wei_masked", "wei", "qk", "q", "kT", "k", "Wv", "Wk", "x", "Wq", "emb", "P", "C",
)  # fmt: skip

MODE_LIST = [
    Mode(
        "atomic", "Exercise 1: atomic", "Exercise 1: backprop through every atomic line, the softmax's too", frozenset()
    ),
    Mode(
        "fused_ce",
        "Exercise 2: fused cross-entropy",
        "Exercise 2: cross-entropy backward in one step",
        frozenset({"ce"}),
    ),
    Mode(
        "fused_sm",
        "Exercise 3: fused softmax",
        "Exercise 3: the attention softmax's backward in one step, query by query",
        frozenset({"sm"}),
    ),
    Mode(
        "fused",
        "Exercises 2+3: both fused",
        "Exercises 2+3: both fused (the backward that trains the head)",
        frozenset({"ce", "sm"}),
    ),
]

CELLS = {
    "atomic": Cell(
        "Exercise 1",
        "the whole backward pass, atomic line by atomic line, from dlogprobs to dC: batched @ and transpose(-2, -1)",
    ),
    "fused_ce": Cell("Exercise 2", "dlogits in one go: the cross-entropy backward", ("logits",)),
    "fused_sm": Cell(
        "Exercise 3", "dwei_masked in one go from datt: the softmax backward over the keys", ("wei_masked",)
    ),
    "fused": Cell("Exercise 4", "the training loop's manual backprop, from dlogits to dC (and grads = [...])"),
}


# --- the bug lab: realistic wrong rules, each standing in for one declared rule ----------------------------------

BUGS: tuple[Bug, ...] = (
    Bug(
        "forgot_scale",
        "forgot the 1/sqrt(hs) of the scaled scores in the backward",
        "wei",
        "qk",
        "dqk = dwei.clone()   # * hs**-0.5 missing",
        lambda v, d: d.wei.clone(),
        "The forward multiplied the scores by hs**-0.5; the backward of that line multiplies by the same constant. "
        "Left out, dqk and everything upstream of it (the queries, the keys, their weights) are sqrt(hs) times "
        "too large.",
        "Every gradient before the scaling line is off by one constant factor, sqrt(hs), while the values and the "
        "output layer's are right: training still moves, with a larger step on the attention's weights.",
    ),
    Bug(
        "square_no_transpose",
        "att not transposed in dv (the square (T, T) shape hides it)",
        "out",
        "v",
        "dv = att @ dout   # att.transpose(-2, -1) missing",
        lambda v, d: v.att @ d.out,
        "out = att @ v, so dv = att.transpose(-2, -1) @ dout: the sum runs over the queries. att is square, "
        "(T, T) in every example, so the product without the transpose has the right shape and runs.",
        "A shape check passes; the values are wrong: with the causal mask att is lower-triangular, and the wrong "
        "product sends the last query's gradient to the last value only.",
    ),
    Bug(
        "softmax_wrong_dim",
        "the softmax backward summed over the queries (dim -2), not the keys (dim -1)",
        "softmax",
        "wei_masked",
        "dwei_masked = att * (datt - (att * datt).sum(-2, keepdim=True))   # the softmax ran over dim -1",
        lambda v, d: v.att * (d.att - (v.att * d.att).sum(-2, keepdim=True)),
        "Each query's weights are a softmax over the keys, the last dim: the sum in its backward runs over the "
        "same dim. Over dim -2 it mixes the queries of one key, which the forward never normalised together.",
        "The shape is right ((n, 1, T) broadcasts as (n, T, 1) would), and each row's gradient no longer sums to "
        "0 as a softmax's must.",
    ),
)

SLIPS = (
    Slip(
        lambda v: v.hs**0.5,
        "√hs",
        "did you forget the hs**-0.5 of the scores (wei = qk * hs**-0.5)?",
    ),
    Slip(
        lambda v: v.hs**-0.5,
        "1/√hs",
        "did you scale twice, or by hs**-1? The forward scaled the scores once, by hs**-0.5",
    ),
)

# what a check process grades before its first learner: a first step, the scaling, the mask, the batched products,
# the fused softmax and dC
WARMUP = (
    Warmup("atomic", "logprobs", "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"),
    Warmup("atomic", "qk", "dqk = dwei * hs**-0.5"),
    Warmup("atomic", "wei", "dwei = dwei_masked.masked_fill(tril == 0, 0.0)"),
    Warmup("atomic", "q", "dq = dqk @ kT.transpose(-2, -1)\ndkT = q.transpose(-2, -1) @ dqk"),
    Warmup("fused_sm", "wei_masked", "dwei_masked = att * (datt - (att * datt).sum(-1, keepdim=True))"),
    Warmup("atomic", "C", "dC = torch.zeros_like(C)\ndC.index_add_(0, Xb.view(-1), demb.view(-1, n_embd))"),
)

NET = Net(
    name="attention",
    title=TITLE,
    about=ABOUT,
    nodes=tuple(NODE_LIST),
    ops=tuple(OPS),
    modes=tuple(MODE_LIST),
    trained_mode=TRAINED_MODE,
    cmp_order=CMP_ORDER,
    bugs=BUGS,
    cells=CELLS,
    warmup=WARMUP,
    bounds=BOUNDS,
    defaults=DEFAULTS,
    size_names=SIZE_NAMES,
    size_about=SIZE_ABOUT,
    slips=SLIPS,
)
