"""After training: batchnorm calibration, split losses and sampling, all through the declared forward."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core.data import Dataset
from ..net.forward import run_forward
from ..net.graph import eval_ops
from ..net.layers import LAYERS

N_SAMPLES = 20  # names sampled at the end of a run, as in the lecture


@torch.no_grad()
def calibrate_bn(p: dict[str, torch.Tensor], X: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each batchnorm's mean and variance over a whole split, as the lecture does after training.

    Block by block: a later batchnorm is calibrated on what the calibrated earlier blocks make."""
    ops = eval_ops("loss")
    made_by = {out: i for i, op in enumerate(ops) for out in op.outputs}
    values: dict[str, Any] = {**p, "Xb": X, "n": X.shape[0]}
    bn: dict[str, torch.Tensor] = {}
    done = 0
    for block in LAYERS.hidden:
        end = made_by[block.hprebn] + 1
        values = run_forward(ops[:end], values, start=done)  # on from the previous block's calibrated batchnorm
        hprebn = values[block.hprebn]  # (N, n_hidden)
        mean, var = block.running
        bn[mean], bn[var] = hprebn.mean(0, keepdim=True), hprebn.var(0, keepdim=True, unbiased=True)  # (1, n_hidden)
        values.update({mean: bn[mean], var: bn[var]})
        done = end
    return bn


def _eval_values(p: dict[str, torch.Tensor], bn: dict[str, torch.Tensor], X: torch.Tensor) -> dict[str, Any]:
    """The inputs of the trained model's forward: parameters, calibrated batchnorm statistics, contexts."""
    return {**p, **bn, "Xb": X, "n": X.shape[0]}


@torch.no_grad()
def split_loss(p: dict[str, torch.Tensor], bn: dict[str, torch.Tensor], X: torch.Tensor, Y: torch.Tensor) -> float:
    """Cross-entropy over a split with the calibrated batchnorm statistics."""
    loss = run_forward(eval_ops("loss"), {**_eval_values(p, bn, X), "Yb": Y})["loss"]
    assert isinstance(loss, torch.Tensor)
    return float(loss)


@torch.no_grad()
def sample_names(
    p: dict[str, torch.Tensor],
    bn: dict[str, torch.Tensor],
    dataset: Dataset,
    block_size: int,
    seed: int,
    count: int = N_SAMPLES,
) -> list[str]:
    """Names from the trained model, as the lecture samples them (generator seeded with seed + 10)."""
    g = torch.Generator().manual_seed(seed + 10)
    ops = eval_ops("logits")
    out = []
    for _ in range(count):
        context, chars = [0] * block_size, []
        for _ in range(64):  # a model that never says '.' still stops
            logits = run_forward(ops, _eval_values(p, bn, torch.tensor([context])))["logits"]  # (1, vocab_size)
            assert isinstance(logits, torch.Tensor)
            probs = F.softmax(logits, dim=1)
            if not bool(torch.isfinite(probs).all()):
                break
            ix = int(torch.multinomial(probs, num_samples=1, generator=g))
            if ix == 0:
                break
            context = context[1:] + [ix]
            chars.append(dataset.itos[ix])
        out.append("".join(chars))
    return out
