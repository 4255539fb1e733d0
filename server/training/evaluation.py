"""After training: batchnorm calibration, split losses and sampling, all through the declared forward."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from ..core.data import Dataset
from ..net.declare import Net
from ..net.forward import run_forward
from ..net.layers import NoKernel, layers_of
from ..net.packs import default_net

N_SAMPLES = 20  # names sampled at the end of a run, as in the lecture


@torch.no_grad()
def calibrate_bn(p: dict[str, torch.Tensor], X: torch.Tensor, net: Net | None = None) -> dict[str, torch.Tensor]:
    """Each batchnorm's mean and variance over a whole split, as the lecture does after training.

    Block by block: a later batchnorm is calibrated on what the calibrated earlier blocks make. A net with no
    batch statistics (LayerNorm normalises each example alone) has nothing to calibrate."""
    net = net or default_net()
    try:
        hidden = layers_of(net).hidden
    except NoKernel:
        return _calibrate_declared(p, X, net)
    ops = net.eval_ops("loss")
    made_by = {out: i for i, op in enumerate(ops) for out in op.outputs}
    values: dict[str, Any] = {**p, "Xb": X, **net.sizes(p, X.shape[0])}
    bn: dict[str, torch.Tensor] = {}
    done = 0
    for block in hidden:
        end = made_by[block.hprebn] + 1
        values = run_forward(ops[:end], values, start=done)  # on from the previous block's calibrated batchnorm
        hprebn = values[block.hprebn]  # (N, n_hidden)
        mean, var = block.running
        bn[mean], bn[var] = hprebn.mean(0, keepdim=True), hprebn.var(0, keepdim=True, unbiased=True)  # (1, n_hidden)
        values.update({mean: bn[mean], var: bn[var]})
        done = end
    return bn


def _calibrate_declared(p: dict[str, torch.Tensor], X: torch.Tensor, net: Net) -> dict[str, torch.Tensor]:
    """The same, for a net the kernels do not compute: each op's own calibrate, on what the ops before it make."""
    ops = net.eval_ops("loss")
    last = max((i for i, op in enumerate(ops) if op.calibrated), default=-1)
    values: dict[str, Any] = {**p, "Xb": X, **net.sizes(p, X.shape[0])}
    stats: dict[str, torch.Tensor] = {}
    for i, op in enumerate(ops[: last + 1]):
        if op.calibrated:
            if op.calibrate is None:
                raise NoKernel(f"op {op.name} reads calibrated statistics but declares no calibrate")
            found = op.calibrate(SimpleNamespace(**values))
            values.update(found)
            stats.update(found)
        values = run_forward(ops[: i + 1], values, start=i)
    return stats


def _eval_values(net: Net, p: dict[str, torch.Tensor], bn: dict[str, torch.Tensor], X: torch.Tensor) -> dict[str, Any]:
    """The inputs of the trained model's forward: parameters, calibrated batchnorm statistics, contexts."""
    return {**p, **bn, "Xb": X, **net.sizes(p, X.shape[0])}


@torch.no_grad()
def split_loss(
    p: dict[str, torch.Tensor], bn: dict[str, torch.Tensor], X: torch.Tensor, Y: torch.Tensor, net: Net | None = None
) -> float:
    """Cross-entropy over a split with the calibrated batchnorm statistics."""
    net = net or default_net()
    loss = run_forward(net.eval_ops("loss"), {**_eval_values(net, p, bn, X), "Yb": Y})["loss"]
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
    net: Net | None = None,
) -> list[str]:
    """Names from the trained model, as the lecture samples them (generator seeded with seed + 10)."""
    g = torch.Generator().manual_seed(seed + 10)
    net = net or default_net()
    ops = net.eval_ops(next(op.inputs[0] for op in net.ops if op.kernel == "cross_entropy"))
    out = []
    for _ in range(count):
        context, chars = [0] * block_size, []
        for _ in range(64):  # a model that never says '.' still stops
            logits = run_forward(ops, _eval_values(net, p, bn, torch.tensor([context])))[
                ops[-1].outputs[0]
            ]  # the logits: (1, vocab_size)
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
