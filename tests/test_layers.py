"""server/net/layers.py: the trained mode's layers as declared; a forward the kernels lack is refused."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from server.net.layers import NoKernel, read_layers
from tests.lecture import LAYERS, PARAM_NAMES, TRAINED_MODE, eval_ops, ops_for_mode

OPS = ops_for_mode(TRAINED_MODE)


def test_every_op_and_parameter_of_the_trained_mode_is_in_a_layer():
    assert len(OPS) == 2 + 3 * len(LAYERS.hidden) + 2 and LAYERS.hidden  # C[Xb], view, blocks, output, loss
    named = {LAYERS.embedding, LAYERS.output.W, LAYERS.output.b}
    for block in LAYERS.hidden:
        named |= {block.linear.W, block.linear.b, block.gain, block.bias}
    assert named == set(PARAM_NAMES)


def test_each_block_reads_what_the_one_before_makes():
    inputs = [LAYERS.embcat, *(block.h for block in LAYERS.hidden)]
    assert [block.linear.x for block in LAYERS.hidden] + [LAYERS.output.x] == inputs
    made = {out for op in OPS for out in op.outputs}
    for block in LAYERS.hidden:
        assert {block.hprebn, block.hpreact, block.h} <= made


def test_a_batchnorm_reads_the_statistics_it_names_after_training():
    n_hidden = 5
    for block in LAYERS.hidden:
        op = next(op for op in eval_ops() if op.outputs[0] == block.hpreact)
        values = {name: torch.ones(1, n_hidden) for name in (block.gain, block.bias, *block.running)}
        values[block.hprebn] = torch.randn(4, n_hidden, generator=torch.Generator().manual_seed(0))
        assert op.forward(SimpleNamespace(**values)).shape == (4, n_hidden)
        for name in block.running:  # without either one, the evaluation form cannot run
            with pytest.raises(AttributeError, match=name):
                op.forward(SimpleNamespace(**{k: v for k, v in values.items() if k != name}))


@pytest.mark.parametrize(
    "change",
    [
        lambda ops: [op for op in ops if op.kernel != "tanh"],  # no non-linearity
        lambda ops: [replace(op, kernel=None) if op.kernel == "tanh" else op for op in ops],  # one with no twin
        lambda ops: [replace(op, calibrated=()) if op.kernel == "batchnorm" else op for op in ops],  # nothing to read
        lambda ops: [replace(op, inputs=("Xb", *op.inputs[1:])) if op.kernel == "linear" else op for op in ops],
    ],
    ids=["no tanh", "an op without a kernel", "uncalibrated batchnorm", "a linear layer off the chain"],
)
def test_a_forward_the_kernels_do_not_compute_is_refused(change):
    assert read_layers(OPS) == LAYERS
    with pytest.raises(NoKernel):
        read_layers(change(OPS))
