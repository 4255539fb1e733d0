"""The lecture's numbers, every manual rule against autograd in float64, and finite differences."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from server import numeric
from server.bugs import BUGS
from server.config import MODES, ModelConfig
from server.engine import compare, init_params, run_backward, sample_batch
from server.forward import run_forward
from server.graph import (
    NODES,
    OPS,
    OPS_BY_NAME,
    PARAM_NAMES,
    backward_schedule,
    nodes_for_mode,
    ops_for_mode,
)

LECTURE = ModelConfig()
# the lecture's Exercise 1 check: these gradients come out bitwise equal to autograd
EXACT_IN_LECTURE = [
    "logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits",
    "logit_maxes", "logits", "h", "W2", "b2",
]  # fmt: skip


def test_parameter_count_and_first_batch(lecture_dataset):
    params, g = init_params(LECTURE, lecture_dataset.vocab_size)
    assert sum(p.numel() for p in params.values()) == 4137
    _, Yb = sample_batch(LECTURE, lecture_dataset, g)
    assert Yb[:8].tolist() == [8, 14, 15, 22, 0, 19, 9, 14]  # as read out in the lecture


def test_bn_params_come_from_a_default_seeded_generator(lecture_dataset):
    params, _ = init_params(LECTURE, lecture_dataset.vocab_size)
    g = torch.Generator().manual_seed(67280421310721)
    assert torch.equal(params["bngain"], torch.randn((1, 64), generator=g) * 0.1 + 1.0)
    assert torch.equal(params["bnbias"], torch.randn((1, 64), generator=g) * 0.1)


def test_declared_init_is_the_lectures_draws_in_its_order(lecture_dataset):
    # the lecture's lines, written out: same draws, same order, same arithmetic, bit for bit
    vocab_size, ne, nh, bs = lecture_dataset.vocab_size, 10, 64, 3
    g = torch.Generator().manual_seed(LECTURE.seed)
    lecture = {
        "C": torch.randn((vocab_size, ne), generator=g),
        "W1": torch.randn((ne * bs, nh), generator=g) * (5 / 3) / ((ne * bs) ** 0.5),
        "b1": torch.randn(nh, generator=g) * 0.1,
        "W2": torch.randn((nh, vocab_size), generator=g) * 0.1,
        "b2": torch.randn(vocab_size, generator=g) * 0.1,
    }
    g_bn = torch.Generator()
    lecture["bngain"] = torch.randn((1, nh), generator=g_bn) * 0.1 + 1.0
    lecture["bnbias"] = torch.randn((1, nh), generator=g_bn) * 0.1
    params, g_after = init_params(LECTURE, vocab_size)
    assert list(params) == list(lecture) == list(PARAM_NAMES)
    for name, t in lecture.items():
        assert torch.equal(params[name], t), name
    assert torch.equal(g_after.get_state(), g.get_state())  # the batch draw starts where the lecture's does


def test_global_rng_is_not_used(lecture_dataset):
    torch.manual_seed(0)
    a = run_backward(LECTURE, lecture_dataset, "atomic")
    torch.manual_seed(12345)
    b = run_backward(LECTURE, lecture_dataset, "atomic")
    assert a.loss == b.loss
    for name in a.ref_grads:
        assert torch.equal(a.grad_at(name, a.total_steps), b.grad_at(name, b.total_steps))


def test_float64_casts_the_float32_draw(lecture_dataset):
    p32, _ = init_params(LECTURE, lecture_dataset.vocab_size)
    p64, _ = init_params(replace(LECTURE, dtype="float64"), lecture_dataset.vocab_size)
    for k in p32:
        assert p64[k].dtype == torch.float64
        assert torch.equal(p64[k], p32[k].double())


def test_zero_bias_init_keeps_weights_and_batch(lecture_dataset):
    p, g = init_params(LECTURE, lecture_dataset.vocab_size)
    z, gz = init_params(replace(LECTURE, init="zero_bias"), lecture_dataset.vocab_size)
    assert torch.equal(p["W1"], z["W1"]) and torch.equal(p["C"], z["C"])
    assert not z["b1"].any() and not z["b2"].any() and not z["bnbias"].any()
    assert torch.equal(z["bngain"], torch.ones(1, 64))
    assert torch.equal(sample_batch(LECTURE, lecture_dataset, g)[1], sample_batch(LECTURE, lecture_dataset, gz)[1])


def test_atomic_float32_matches_the_lecture(lecture_dataset):
    bp = run_backward(LECTURE, lecture_dataset, "atomic")
    assert 3.2 < bp.loss < 3.5  # ~ -log(1/27) = 3.30 at init
    for name in EXACT_IN_LECTURE:
        assert bp.cmp[name]["exact"], name
    params_and_intermediates = [n.name for n in nodes_for_mode("atomic") if n.kind != "input"]
    assert set(bp.cmp) == set(params_and_intermediates)
    for name, cmp in bp.cmp.items():
        assert cmp["approx"], name
        assert cmp["maxdiff"] < 1e-8, (name, cmp["maxdiff"])


@pytest.mark.parametrize(
    ("mode", "node"), [("fused_ce", "logits"), ("fused", "logits"), ("fused_bn", "hprebn"), ("fused", "hprebn")]
)
def test_fused_gradients_float32(lecture_dataset, mode, node):
    bp = run_backward(LECTURE, lecture_dataset, mode)
    assert bp.cmp[node]["approx"]
    assert bp.cmp[node]["maxdiff"] < 1e-8


@pytest.mark.parametrize("mode", MODES)
def test_every_node_agrees_with_finite_differences_float64(lecture_dataset, mode):
    bp = run_backward(replace(LECTURE, dtype="float64"), lecture_dataset, mode)
    for name in bp.node_names():
        result = bp.numeric(name)
        if result is None:
            assert name in ("Xb", "Yb")
            continue
        assert result["entries_checked"] == min(16, bp.values[name].numel())
        assert result["max_rel_err"] < 1e-6, (name, result)
        assert result["near_zero_max_abs_err"] < 1e-9, (name, result)


def test_finite_differences_catch_a_wrong_gradient(lecture_dataset):
    bp = run_backward(replace(LECTURE, dtype="float64"), lecture_dataset, "atomic")
    step, grad = bp.history["W2"][-1]
    bp.history["W2"][-1] = (step, grad * 1.01)
    assert bp.numeric("W2")["max_rel_err"] > 5e-3


def _random_inputs(op, values, g):
    """Float64 leaves for every float input of the op, taken from a real forward pass."""
    leaves = {}
    for name in op.inputs:
        t = values[name]
        leaves[name] = t.double().clone().requires_grad_(True) if t.is_floating_point() else t
    return leaves


OP_MODE = [(op.name, next(m for m in MODES if op in ops_for_mode(m))) for op in OPS]


@pytest.mark.parametrize(("op_name", "mode"), OP_MODE)
def test_each_rule_is_the_vector_jacobian_product(lecture_dataset, op_name, mode):
    """micrograd style: each op's local rule against torch.autograd.grad of its own forward, float64."""
    bp = run_backward(replace(LECTURE, dtype="float64"), lecture_dataset, mode)
    op = next(o for o in bp.ops if o.name == op_name)
    g = torch.Generator().manual_seed(0)
    leaves = _random_inputs(op, bp.values, g)
    v = SimpleNamespace(**{**bp.values, **leaves})
    out = run_forward([op], vars(v))
    y = out[op.outputs[0]]
    # the loss is the root: its rules start from dloss = 1, as in the lecture
    upstream = torch.ones_like(y) if op.outputs == ("loss",) else torch.randn(y.shape, generator=g, dtype=torch.float64)
    # the fused rules need their saved tensors; they are in `out`
    vd = SimpleNamespace(**{k: (t.detach() if isinstance(t, torch.Tensor) else t) for k, t in out.items()})
    d = SimpleNamespace(**{op.outputs[0]: upstream})
    targets = [r.target for r in op.rules]
    expected = torch.autograd.grad(y, [leaves[t] for t in targets], upstream)
    with torch.no_grad():
        for rule, want in zip(op.rules, expected, strict=True):
            got = rule.fn(vd, d)
            assert got.shape == want.shape, rule.target
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_schedule_and_partial_status(lecture_dataset, mode):
    bp = run_backward(LECTURE, lecture_dataset, mode)
    assert [op.name for op in bp.schedule] == [op.name for op in backward_schedule(mode)]
    assert bp.total_steps == len(ops_for_mode(mode))
    reused = {name for name, k in bp.totals.items() if k == 2}
    expected_reused = {"atomic": {"counts", "logits", "bndiff", "hprebn"}, "fused_ce": {"bndiff", "hprebn"},
                       "fused_bn": {"counts", "logits"}, "fused": set()}[mode]  # fmt: skip
    assert reused == expected_reused
    for name in reused:
        steps = [s for s, _ in bp.history[name]]
        first, second = steps
        assert bp.status(name, first - 1) == "pending"
        assert bp.status(name, first) == "partial"
        assert bp.status(name, second) == "complete"
        # the partial value is the first contribution alone: not yet autograd's gradient (for logits
        # it nearly is: dlogit_maxes is ~0 because the softmax ignores a shift)
        if name != "logits":
            assert not torch.allclose(bp.grad_at(name, first), bp.ref_grads[name])
    for name in bp.node_names():
        expected = "none" if name in ("Xb", "Yb") else "complete"
        assert bp.status(name, bp.total_steps) == expected
        if name not in ("Xb", "Yb", "loss"):
            assert bp.status(name, 0) == "pending"


def test_atomic_step_counts_and_first_steps(lecture_dataset):
    bp = run_backward(LECTURE, lecture_dataset, "atomic")
    assert bp.total_steps == 20
    assert [op.name for op in bp.schedule[:4]] == ["loss", "logprobs", "probs", "counts_sum_inv"]
    dlogprobs = bp.grad_at("logprobs", 1)
    n = LECTURE.batch_size
    assert torch.equal(dlogprobs.sum(1), torch.full((n,), -1.0 / n))
    assert bp.grad_at("probs", 1) is None


_entries = st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-9, 3.5, 1e30, math.nan, math.inf, -math.inf])


@settings(max_examples=300, deadline=None)
@given(
    a=st.lists(_entries | st.floats(-10, 10, width=32), min_size=1, max_size=6),
    noise=st.lists(st.sampled_from([0.0, 1e-12, 1e-7, 1e-3, 1.0, math.nan, math.inf]), min_size=6, max_size=6),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_compare_is_the_lectures_cmp(a, noise, dtype):
    manual = torch.tensor(a, dtype=dtype)
    ref = manual + torch.tensor(noise[: len(a)], dtype=dtype)
    out = compare(manual, ref)
    assert out["exact"] == torch.equal(manual, ref)
    assert out["approx"] == torch.allclose(manual, ref)
    # bitwise-equal tensors differ by 0 even where both hold ±inf (where inf - inf would say NaN)
    expected = 0.0 if torch.equal(manual, ref) else (manual - ref).abs().max().item()
    assert out["maxdiff"] == expected or (math.isnan(out["maxdiff"]) and math.isnan(expected))
    assert out["max_rel"] >= 0 or math.isnan(out["max_rel"])


def test_compare_relative_error_and_shape_mismatch():
    out = compare(torch.tensor([1.0, 0.0, -2.0]), torch.tensor([1.1, 0.0, -2.0]))
    assert out["max_rel"] == pytest.approx(0.1 / 1.1, rel=1e-6)
    assert out["maxdiff"] == pytest.approx(0.1, rel=1e-6) and not out["approx"]
    assert out["rel_err"] == pytest.approx(0.1 / 2.0, rel=1e-6)  # against the reference's largest entry, |-2|
    assert compare(torch.ones(3), torch.ones(3))["rel_err"] == 0.0
    mismatch = compare(torch.zeros(2, 1), torch.zeros(2, 3))
    assert mismatch["shape_ok"] is False and (mismatch["shape"], mismatch["expected_shape"]) == ([2, 1], [2, 3])
    assert mismatch["maxdiff"] is None and mismatch["rel_err"] is None  # no stand-in number such as inf


@pytest.mark.parametrize("name", sorted(BUGS))
def test_each_bug_breaks_its_node_and_everything_upstream(lecture_dataset, name):
    bug = BUGS[name]
    mode = bug.modes[0]
    good = run_backward(LECTURE, lecture_dataset, mode)
    bad = run_backward(replace(LECTURE, bug=name), lecture_dataset, mode)
    step = next(i for i, op in enumerate(bad.schedule, start=1) if op.name == bug.op)
    # before the buggy step every gradient is the correct one
    for node in bad.node_names():
        before = bad.grad_at(node, step - 1)
        if before is not None:
            assert torch.equal(before, good.grad_at(node, step - 1)), node
    assert not torch.equal(bad.grad_at(bug.target, step), good.grad_at(bug.target, step))
    assert not bad.cmp[bug.target]["approx"]
    # the error flows upstream: the parameters that the wrong gradient feeds are wrong too
    assert not bad.cmp["W1"]["approx"] and not bad.cmp["C"]["approx"]
    assert bug.why and bug.notice and bug.code


@pytest.mark.parametrize("name", sorted(BUGS))
def test_each_bug_runs_in_float64(lecture_dataset, name):
    bad = run_backward(replace(LECTURE, bug=name, dtype="float64"), lecture_dataset, BUGS[name].modes[0])
    assert bad.grad_at(BUGS[name].target, len(bad.schedule)).dtype == torch.float64


def test_the_missing_gain_bug_hides_behind_zero_bias_init(lecture_dataset):
    hidden = run_backward(replace(LECTURE, init="zero_bias", bug="missing_gain"), lecture_dataset, "atomic")
    assert all(c["approx"] for c in hidden.cmp.values())
    assert hidden.numeric("bnraw")["max_rel_err"] < 1e-5
    caught = run_backward(replace(LECTURE, bug="missing_gain"), lecture_dataset, "atomic")
    assert not caught.cmp["bnraw"]["approx"]


def _batch_inputs(op):
    return [name for name in op.inputs if NODES[name].axes[:1] == ("batch",)]


@pytest.mark.parametrize(
    ("op_name", "mode"), [(name, mode) for name, mode in OP_MODE if _batch_inputs(OPS_BY_NAME[name])]
)
def test_each_ops_row_declaration_holds(lecture_dataset, op_name, mode):
    """Op.rows, which the row-local finite differences rely on, checked by moving one batch row."""
    bp = run_backward(replace(LECTURE, dtype="float64"), lecture_dataset, mode)
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
        keep = torch.arange(LECTURE.batch_size) != r
        assert torch.equal(before[out][keep], after[out][keep]), "another row changed"
        assert not torch.equal(before[out][r], after[out][r]), "the row did not change"
    elif op.rows == "mean":
        # the loss is the mean over rows of the op applied to each row alone
        rows = [
            run_forward([op], {**bp.values, **{k: bp.values[k][i : i + 1] for k in op.inputs}, "n": 1})[out]
            for i in range(LECTURE.batch_size)
        ]
        torch.testing.assert_close(before[out], torch.stack(rows).mean(), rtol=1e-12, atol=0)
    else:
        assert op.rows == "mixed"
        changed = before[out] != after[out]
        if NODES[out].axes[:1] == ("batch",):
            changed = torch.cat([changed[:r], changed[r + 1 :]])
        assert changed.any(), "declared mixed, but no other row (or batch statistic) moved"


@pytest.mark.parametrize("mode", MODES)
def test_row_local_finite_differences_measure_what_the_full_forward_does(lecture_dataset, mode, monkeypatch):
    """Re-running only the perturbed row gives the same derivative as re-running the whole batch."""
    config = replace(LECTURE, dtype="float64")
    probe = run_backward(config, lecture_dataset, mode)
    row_local = [n for n in probe.node_names() if _uses_row_path(probe, n)]
    assert {"h", "logits"} <= set(row_local)  # after batchnorm, in every mode
    results = {}
    for path in ("rows", "full"):
        if path == "full":
            monkeypatch.setattr(numeric, "row_local", lambda ops, name: False)
        bp = run_backward(config, lecture_dataset, mode)
        for name in row_local:
            # a manual gradient 1% off: both paths must see 0.01/1.01 in every checked entry
            step, grad = bp.history[name][-1]
            bp.history[name][-1] = (step, grad * 1.01)
            results[path, name] = bp.numeric(name)
    for name in row_local:
        rows, full = results["rows", name], results["full", name]
        assert rows["entries_checked"] == full["entries_checked"]
        assert rows["near_zero_entries"] == full["near_zero_entries"]
        if rows["near_zero_entries"] == rows["entries_checked"]:  # logit_maxes: a ~0 gradient, 1% of ~0
            assert rows["near_zero_max_abs_err"] < 1e-9 and full["near_zero_max_abs_err"] < 1e-9
            continue
        assert rows["max_rel_err"] == pytest.approx(0.01 / 1.01, abs=1e-6), name  # the accuracy the issue asks
        assert full["max_rel_err"] == pytest.approx(0.01 / 1.01, abs=1e-6), name


def _uses_row_path(bp, name):
    return NODES[name].kind != "loss" and numeric.row_local(bp.ops[bp.ops_after(name) :], name)


@pytest.mark.parametrize("mode", MODES)
def test_steps_asked_in_any_order_give_the_same_gradients(lecture_dataset, mode):
    """The manual backward runs on demand: asking step 7, then 2, then all equals running all at once."""
    eager = run_backward(LECTURE, lecture_dataset, mode).history
    lazy = run_backward(LECTURE, lecture_dataset, mode)
    total = lazy.total_steps
    for step in (min(7, total), 2, 0, total):
        for name in lazy.node_names():
            expected = [g for s, g in eager.get(name, ()) if s <= step]
            got = lazy.grad_at(name, step)
            assert (got is None) == (not expected)
            if expected:
                assert torch.equal(got, expected[-1]), (name, step)
    assert lazy.history.keys() == eager.keys()


def test_finite_differences_stay_accurate_where_probabilities_are_tiny(lecture_dataset):
    """A wider net has probabilities far below the step's floor: their entries get a step relative to themselves."""
    bp = run_backward(
        replace(LECTURE, batch_size=128, n_hidden=200, dtype="float64", seed=3), lecture_dataset, "fused_bn"
    )
    # within a few fixed steps (1e-4) of 0, where log's curvature makes a five-point stencil with that step wrong
    assert bp.values["probs"].min() < 1e-3
    for name in bp.node_names():
        if name not in ("Xb", "Yb"):
            assert bp.numeric(name)["max_rel_err"] < 1e-6, (name, bp.numeric(name))
    # and a wrong gradient there is still caught, by the same margin at every step size
    wrong = run_backward(
        replace(LECTURE, batch_size=128, n_hidden=200, dtype="float64", seed=3), lecture_dataset, "fused_bn"
    )
    step, grad = wrong.history["probs"][-1]
    wrong.history["probs"][-1] = (step, grad * 1.01)
    assert wrong.numeric("probs")["max_rel_err"] == pytest.approx(0.01 / 1.01, abs=1e-6)
