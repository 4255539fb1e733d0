"""The declaration (server/net/graph.py): its order, its formulas, its backward rules and its modes, checked as data."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from server.core.config import ModelConfig
from server.core.engine import init_params, run_backward, run_forward, sample_batch
from tests.lecture import (
    LAYERS,
    MODES,
    MODES_BY_NAME,
    NODE_LIST,
    NODES,
    OPS,
    OPS_BY_NAME,
    backward_schedule,
    nodes_for_mode,
    ops_for_mode,
)

# the blocks each mode fuses, as its declaration says
FUSED_BLOCKS = {name: MODES_BY_NAME[name].fuses for name in MODES}
LECTURE64 = ModelConfig(dtype="float64")
LEAF_KINDS = ("input", "param")
FORMULA_RTOL, FORMULA_ATOL = 1e-12, 1e-14  # float64: a formula and its code differ only in rounding, if at all
RULE_RTOL, RULE_ATOL = 1e-10, 1e-12  # float64: a rule against autograd's vector-Jacobian product
# the first mode in which each op exists: every op is checked once
OP_MODE = [(op.name, next(m for m in MODES if op in ops_for_mode(m))) for op in OPS]


@pytest.fixture(scope="module")
def leaves(lecture_dataset) -> dict[str, object]:
    """The lecture's parameters and first batch in float64, plus the sizes the formulas name (n, n_embd)."""
    params, g = init_params(LECTURE64, lecture_dataset.vocab_size)
    Xb, Yb = sample_batch(LECTURE64, lecture_dataset, g)
    return {**params, "Xb": Xb, "Yb": Yb, "n": LECTURE64.batch_size, "n_embd": LECTURE64.n_embd}


@pytest.fixture(scope="module")
def forwards(leaves) -> dict[str, dict[str, object]]:
    """The executor's forward of each mode, from the same leaves."""
    return {mode: run_forward(ops_for_mode(mode), dict(leaves)) for mode in MODES}


def _split_formula(formula: str) -> tuple[str, str]:
    lhs, rhs = formula.split(" = ", 1)
    return lhs.strip(), rhs


# --- order and wiring --------------------------------------------------------------------------


def test_names_are_unique_and_every_op_speaks_of_declared_nodes():
    assert len({n.name for n in NODE_LIST}) == len(NODE_LIST)
    assert len({op.name for op in OPS}) == len(OPS)
    for op in OPS:
        assert set(op.inputs) | set(op.outputs) <= set(NODES), op.name
        assert not any(NODES[out].kind in LEAF_KINDS for out in op.outputs), op.name
    used = {name for op in OPS for name in (*op.inputs, *op.outputs)}
    assert used == set(NODES)  # no node declared and never used


@pytest.mark.parametrize("mode", MODES)
def test_ops_are_in_topological_order(mode):
    produced = {n.name for n in NODE_LIST if n.kind in LEAF_KINDS}
    for op in ops_for_mode(mode):
        missing = [i for i in op.inputs if i not in produced]
        assert not missing, f"{op.name} reads {missing} before any op of {mode} makes them"
        assert not set(op.outputs) & produced, f"{op.name} remakes a node"
        produced |= set(op.outputs)
    assert {n.name for n in nodes_for_mode(mode)} <= produced
    assert ops_for_mode(mode)[-1].outputs == ("loss",)


@pytest.mark.parametrize("mode", MODES)
def test_the_schedule_is_the_forward_reversed(mode):
    assert [op.name for op in backward_schedule(mode)] == [op.name for op in reversed(ops_for_mode(mode))]


@pytest.mark.parametrize("mode", MODES)
def test_nodes_of_a_mode_are_those_its_ops_touch(mode):
    touched = {name for op in ops_for_mode(mode) for name in (*op.inputs, *op.outputs)}
    assert [n.name for n in nodes_for_mode(mode)] == [n.name for n in NODE_LIST if n.name in touched]


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_each_rule_targets_an_input_and_each_differentiable_input_has_one(op):
    targets = [rule.target for rule in op.rules]
    assert len(targets) == len(set(targets)), "two rules for one input"
    assert set(targets) <= set(op.inputs), f"a rule for a node {op.name} does not read"
    # the integer inputs (Xb, Yb) get no gradient; every other input gets exactly one rule
    assert set(targets) == {i for i in op.inputs if NODES[i].kind != "input"}


@pytest.mark.parametrize("mode", MODES)
def test_axes_name_each_dimension_of_the_forwards_tensors(lecture_dataset, forwards, mode):
    size = {"batch": LECTURE64.batch_size, "vocab": lecture_dataset.vocab_size, "context": LECTURE64.block_size,
            "embd": LECTURE64.n_embd, "embcat": LECTURE64.n_embd * LECTURE64.block_size,
            "hidden": LECTURE64.n_hidden, "one": 1}  # fmt: skip
    for node in nodes_for_mode(mode):
        t = forwards[mode][node.name]
        assert tuple(t.shape) == tuple(size[axis] for axis in node.axes), node.name


# --- formulas: the text shown is the code that runs -----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_the_formulas_run_in_order_give_the_executors_forward(leaves, forwards, mode):
    """Each op's formula text, evaluated with torch on the tensors the earlier formulas made, float64."""
    namespace: dict[str, object] = {"torch": torch, "F": F, **leaves}
    for op in ops_for_mode(mode):
        lhs, rhs = _split_formula(op.formula)
        assert (lhs,) == op.outputs[:1], f"{op.name}: the formula assigns {lhs}, the op makes {op.outputs[0]}"
        namespace[lhs] = eval(rhs, namespace)  # the declared text itself, nothing else
        torch.testing.assert_close(namespace[lhs], forwards[mode][lhs], rtol=FORMULA_RTOL, atol=FORMULA_ATOL)


@pytest.mark.parametrize("mode", MODES)
def test_the_loss_is_the_cross_entropy_of_the_batch(leaves, forwards, mode):
    """Independent of the declared ops: the lecture's model written out with torch's own functions, one
    linear, batchnorm and tanh per hidden block the trained mode has (server/net/layers.py)."""
    p = leaves
    emb = p["C"][p["Xb"]]  # (n, block_size, n_embd)
    h = emb.view(emb.shape[0], -1)  # (n, block_size * n_embd)
    for block in LAYERS.hidden:
        hprebn = h @ p[block.linear.W] + p[block.linear.b]  # (n, n_hidden)
        normed = (hprebn - hprebn.mean(0, keepdim=True)) / (hprebn.var(0, keepdim=True) + 1e-5).sqrt()
        h = torch.tanh(p[block.gain] * normed + p[block.bias])  # (n, n_hidden)
    logits = h @ p[LAYERS.output.W] + p[LAYERS.output.b]  # (n, vocab)
    expected = F.cross_entropy(logits, p["Yb"])
    torch.testing.assert_close(forwards[mode]["loss"], expected, rtol=FORMULA_RTOL, atol=FORMULA_ATOL)


def _rule_namespace(op, values, upstream):
    return {"torch": torch, "F": F, **values, f"d{op.outputs[0]}": upstream}


@pytest.mark.parametrize(("op_name", "mode"), OP_MODE)
def test_each_rules_code_text_computes_what_its_function_does(forwards, op_name, mode):
    """The lecture's line shown for a rule, executed, gives the tensor the rule's function gives."""
    op = OPS_BY_NAME[op_name]
    values = forwards[mode]
    out = values[op.outputs[0]]
    g = torch.Generator().manual_seed(1)
    upstream = torch.randn(out.shape, generator=g, dtype=torch.float64)
    for rule in op.rules:
        grad_name = f"d{rule.target}"
        namespace = _rule_namespace(op, values, upstream)
        accumulates = f"{grad_name} +=" in rule.code
        if accumulates:  # `+=` adds this op's contribution to what an earlier step left: start from 0
            namespace[grad_name] = torch.zeros_like(values[rule.target])
        else:
            assert rule.code.startswith(f"{grad_name} = "), rule.code
        exec(rule.code, namespace)
        v = SimpleNamespace(**values)
        d = SimpleNamespace(**{op.outputs[0]: upstream})
        torch.testing.assert_close(namespace[grad_name], rule.fn(v, d), rtol=0, atol=0, msg=rule.target)


@pytest.mark.parametrize(("op_name", "mode"), OP_MODE)
def test_each_rule_is_the_vector_jacobian_product(lecture_dataset, op_name, mode):
    """micrograd style: each op's local rule against torch.autograd.grad of its own forward, float64."""
    bp = run_backward(replace(ModelConfig(), dtype="float64"), lecture_dataset, mode)
    op = next(o for o in bp.ops if o.name == op_name)
    g = torch.Generator().manual_seed(0)
    inputs = {
        name: t.double().clone().requires_grad_(True) if t.is_floating_point() else t
        for name, t in ((name, bp.values[name]) for name in op.inputs)
    }
    v = SimpleNamespace(**{**bp.values, **inputs})
    out = run_forward([op], vars(v))
    y = out[op.outputs[0]]
    # the loss is the root: its rules start from dloss = 1, as in the lecture
    upstream = torch.ones_like(y) if op.outputs == ("loss",) else torch.randn(y.shape, generator=g, dtype=torch.float64)
    # the fused rules need their saved tensors; they are in `out`
    vd = SimpleNamespace(**{k: (t.detach() if isinstance(t, torch.Tensor) else t) for k, t in out.items()})
    d = SimpleNamespace(**{op.outputs[0]: upstream})
    targets = [r.target for r in op.rules]
    expected = torch.autograd.grad(y, [inputs[t] for t in targets], upstream)
    with torch.no_grad():
        for rule, want in zip(op.rules, expected, strict=True):
            got = rule.fn(vd, d)
            assert got.shape == want.shape, rule.target
            torch.testing.assert_close(got, want, rtol=RULE_RTOL, atol=RULE_ATOL)


def _batch_inputs(op):
    return [name for name in op.inputs if NODES[name].axes[:1] == ("batch",)]


@pytest.mark.parametrize(
    ("op_name", "mode"), [(name, mode) for name, mode in OP_MODE if _batch_inputs(OPS_BY_NAME[name])]
)
def test_each_ops_row_declaration_holds(lecture_dataset, op_name, mode):
    """Op.rows, which the row-local finite differences rely on, checked by moving one batch row."""
    n = ModelConfig().batch_size
    bp = run_backward(replace(ModelConfig(), dtype="float64"), lecture_dataset, mode)
    op = OPS_BY_NAME[op_name]
    r = 5
    moved = dict(bp.values)
    for name in _batch_inputs(op):
        t = moved[name].clone()
        if t.is_floating_point():
            t[r] += 0.37
        else:
            t[r] = (t[r] + 1) % lecture_dataset.vocab_size  # another character
        moved[name] = t
    before, after = run_forward([op], dict(bp.values)), run_forward([op], moved)
    out = op.outputs[0]
    if op.rows == "each":
        assert NODES[out].axes[:1] == ("batch",)
        keep = torch.arange(n) != r
        assert torch.equal(before[out][keep], after[out][keep]), "another row changed"
        assert not torch.equal(before[out][r], after[out][r]), "the row did not change"
    elif op.rows == "mean":
        # the loss is the mean over rows of the op applied to each row alone
        rows = [
            run_forward([op], {**bp.values, **{k: bp.values[k][i : i + 1] for k in op.inputs}, "n": 1})[out]
            for i in range(n)
        ]
        torch.testing.assert_close(before[out], torch.stack(rows).mean(), rtol=1e-12, atol=0)
    else:
        assert op.rows == "mixed"
        changed = before[out] != after[out]
        if NODES[out].axes[:1] == ("batch",):
            changed = torch.cat([changed[:r], changed[r + 1 :]])
        assert changed.any(), "declared mixed, but no other row (or batch statistic) moved"


# --- modes: a fused op replaces exactly its block ------------------------------------------------

BLOCKS = sorted({op.block for op in OPS if op.block is not None})


def test_every_block_has_one_fused_op_and_every_fused_op_a_block():
    assert sorted(op.fuses for op in OPS if op.fuses is not None) == BLOCKS
    assert set().union(*FUSED_BLOCKS.values()) == set(BLOCKS)
    assert set(FUSED_BLOCKS) == set(MODES)


@pytest.mark.parametrize("mode", MODES)
def test_a_mode_is_the_atomic_ops_with_its_blocks_swapped_for_their_fused_ops(mode):
    atomic = [op.name for op in ops_for_mode("atomic")]
    assert not any(OPS_BY_NAME[name].fuses for name in atomic)
    expected = []
    for name in atomic:
        block = OPS_BY_NAME[name].block
        if block in FUSED_BLOCKS[mode]:
            fused = next(op.name for op in OPS if op.fuses == block)
            if fused not in expected:
                expected.append(fused)  # where the block's first line stood
        else:
            expected.append(name)
    assert [op.name for op in ops_for_mode(mode)] == expected


@pytest.mark.parametrize("block", BLOCKS)
def test_a_fused_op_reads_and_makes_what_its_block_does(block):
    lines = [op for op in ops_for_mode("atomic") if op.block == block]
    fused = next(op for op in OPS if op.fuses == block)
    made = {out for op in lines for out in op.outputs}
    read_from_outside = {i for op in lines for i in op.inputs if i not in made}
    read_after = {i for op in ops_for_mode("atomic") if op.block != block for i in op.inputs} | {"loss"}
    assert set(fused.inputs) == read_from_outside
    assert set(fused.outputs) == made & read_after


@pytest.mark.parametrize("mode", [m for m in MODES if m != "atomic"])
def test_fused_modes_make_the_same_tensors_as_atomic(forwards, mode):
    for node in nodes_for_mode(mode):
        torch.testing.assert_close(
            forwards[mode][node.name], forwards["atomic"][node.name], rtol=FORMULA_RTOL, atol=FORMULA_ATOL,
            msg=node.name,
        )  # fmt: skip


# --- counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_node_and_step_counts_follow_from_the_declaration(lecture_dataset, mode):
    bp = run_backward(ModelConfig(), lecture_dataset, mode)
    leaves = [n for n in NODE_LIST if n.kind in LEAF_KINDS]
    assert bp.total_steps == len(ops_for_mode(mode)) == len(bp.schedule)
    made = {out for op in ops_for_mode(mode) for out in op.outputs if out in NODES}
    assert len(bp.node_names()) == len(leaves) + len(made)  # every leaf is read in every mode
    # a fused op replaces its block's lines with one step
    removed = sum(len([op for op in OPS if op.block == b]) - 1 for b in FUSED_BLOCKS[mode])
    assert bp.total_steps == len(ops_for_mode("atomic")) - removed


def test_the_lectures_counts(lecture_dataset):
    """Lecture fidelity, pinned once (every other test derives its counts from the declaration): Exercise 1
    backprops through 20 forward lines over 29 tensors (9 leaves); fusing the cross-entropy (8 lines) and the
    batchnorm (7 lines) leaves 13, 14 and 7 steps; 4137 parameters, then the first batch as read out in the lecture."""
    steps = {mode: len(ops_for_mode(mode)) for mode in MODES}
    nodes = {mode: len(nodes_for_mode(mode)) for mode in MODES}
    assert steps == {"atomic": 20, "fused_ce": 13, "fused_bn": 14, "fused": 7}
    assert nodes == {"atomic": 29, "fused_ce": 22, "fused_bn": 23, "fused": 16}
    params, g = init_params(ModelConfig(), lecture_dataset.vocab_size)
    assert sum(p.numel() for p in params.values()) == 4137
    _, Yb = sample_batch(ModelConfig(), lecture_dataset, g)
    assert Yb[:8].tolist() == [8, 14, 15, 22, 0, 19, 9, 14]


# --- helpers: ops built from names are the lecture's lines ---------------------------------------


def test_the_linear_layers_show_the_lectures_lines():
    """Lecture fidelity: both linear layers, built by one helper from names, read as the notebook writes them."""
    lines = {
        name: [OPS_BY_NAME[name].formula, *(r.code for r in OPS_BY_NAME[name].rules)] for name in ("hprebn", "logits")
    }
    assert lines == {
        "hprebn": ["hprebn = embcat @ W1 + b1", "dembcat = dhprebn @ W1.T", "dW1 = embcat.T @ dhprebn",
                   "db1 = dhprebn.sum(0)"],
        "logits": ["logits = h @ W2 + b2", "dh = dlogits @ W2.T", "dW2 = h.T @ dlogits", "db2 = dlogits.sum(0)"],
    }  # fmt: skip


def test_the_fused_batchnorm_reuses_the_scale_and_shift_rules():
    """dbngain and dbnbias are the same in Exercises 1 and 3: one rule each, not two copies that could drift."""
    atomic = {r.target: r for r in OPS_BY_NAME["hpreact"].rules}
    fused = {r.target: r for r in OPS_BY_NAME["batchnorm"].rules}
    assert fused["bngain"] is atomic["bngain"]
    assert fused["bnbias"] is atomic["bnbias"]
