"""The trained model's layers, read off the declaration: embedding, hidden blocks, output layer.

The hand-tuned training kernels and the batchnorm calibration loop over a net's layers, so a hidden block
(linear, batchnorm, tanh) added to a pack needs no change in them; a net of another shape (layers_of raises
NoKernel) trains with the generic trainer, which runs the pack's declared rules.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .declare import Net, Op


@dataclass(frozen=True)
class Linear:
    """`out = x @ W + b`: the names of its tensors."""

    x: str
    W: str
    b: str
    out: str


@dataclass(frozen=True)
class HiddenBlock:
    """A hidden layer: `hprebn = x @ W + b`, batchnorm (`hpreact`), `h = tanh(hpreact)`."""

    linear: Linear
    gain: str  # bngain
    bias: str  # bnbias
    hpreact: str  # batchnorm's output, tanh's input
    h: str  # the block's output
    running: tuple[str, str]  # (mean, variance) that evaluation reads in place of the batch's

    @property
    def hprebn(self) -> str:
        return self.linear.out


@dataclass(frozen=True)
class Layers:
    """The forward of the trained mode: C[Xb] viewed as one row per context, hidden blocks, output layer."""

    embedding: str  # C
    embcat: str  # the first block's input
    hidden: tuple[HiddenBlock, ...]
    output: Linear  # logits, which the cross-entropy reads


class NoKernel(ValueError):
    """The trained mode declares a forward that the training kernels do not compute."""


def _linear(op: Op, x: str) -> Linear:
    if op.kernel != "linear" or op.inputs[0] != x:
        raise NoKernel(f"op {op.name}: a linear layer reading {x} was expected")
    _, w, b = op.inputs
    return Linear(x, w, b, op.outputs[0])


def read_layers(ops: list[Op]) -> Layers:
    """The layers of a forward: embedding, view, (linear, batchnorm, tanh) per hidden block, linear, cross-entropy."""
    expected = "embedding, view, (linear, batchnorm, tanh) per hidden block, linear, cross_entropy"
    kernels = [op.kernel for op in ops]
    middle = kernels[2:-2]
    if (
        kernels[:2] != ["embedding", "view"]
        or kernels[-2:] != ["linear", "cross_entropy"]
        or middle != ["linear", "batchnorm", "tanh"] * (len(middle) // 3)
    ):
        raise NoKernel(f"the training kernels compute {expected}; the forward is {kernels}")
    emb, view = ops[0], ops[1]
    if view.inputs != emb.outputs:
        raise NoKernel(f"op {view.name} must view {emb.outputs[0]}")
    x, hidden = view.outputs[0], []
    for linear_op, bn, tanh in zip(ops[2:-2:3], ops[3:-2:3], ops[4:-2:3], strict=True):
        linear = _linear(linear_op, x)
        wired = len(bn.inputs) == 3 and bn.inputs[0] == linear.out and tanh.inputs == bn.outputs[:1]
        if not wired or len(bn.calibrated) != 2:
            raise NoKernel(f"op {bn.name} must normalise {linear.out} into what {tanh.name} reads")
        mean, var = bn.calibrated
        hidden.append(HiddenBlock(linear, bn.inputs[1], bn.inputs[2], bn.outputs[0], tanh.outputs[0], (mean, var)))
        x = tanh.outputs[0]
    output = _linear(ops[-2], x)
    if ops[-1].inputs[0] != output.out:
        raise NoKernel(f"op {ops[-1].name} must read {output.out}")
    return Layers(emb.inputs[0], view.outputs[0], tuple(hidden), output)


@functools.cache
def layers_of(net: Net) -> Layers:
    """The layers of a net's trained mode; NoKernel where they are not the shape the kernels compute."""
    return read_layers(net.ops_for_mode(net.trained_mode))
