"""The engine: the lecture's numbers, the manual backward pass against autograd, cmp() and finite differences."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from server import engine, numeric
from server.config import ModelConfig
from server.engine import compare, init_params, run_backward, sample_batch
from server.graph import (
    MODE_LIST,
    MODES,
    NODES,
    PARAM_NAMES,
    Rule,
    Undeclared,
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
    assert bp.total_steps == len(ops_for_mode("atomic"))  # the lecture's count is pinned in test_graph.py
    assert [op.name for op in bp.schedule[:4]] == ["loss", "logprobs", "probs", "counts_sum_inv"]
    dlogprobs = bp.grad_at("logprobs", 1)
    n = LECTURE.batch_size
    assert torch.equal(dlogprobs.sum(1), torch.full((n,), -1.0 / n))
    assert bp.grad_at("probs", 1) is None


# the lecture's four exercises: the blocks each fuses, and its schedule's length (8 cross-entropy lines -> 1,
# 7 batchnorm lines -> 1)
LECTURE_MODES = {
    "atomic": (set(), 20),
    "fused_ce": ({"ce"}, 13),
    "fused_bn": ({"bn"}, 14),
    "fused": ({"ce", "bn"}, 7),
}


@pytest.mark.parametrize("mode", MODE_LIST, ids=lambda m: m.name)
def test_each_declared_mode_fuses_its_blocks(mode):
    blocks, steps = LECTURE_MODES[mode.name]
    assert mode.fuses == blocks and mode.title.startswith("Exercise")
    ops = ops_for_mode(mode.name)
    assert len(ops) == steps
    # a fused block: its one fused op and none of its atomic lines; any other block: its lines, no fused op
    assert {op.fuses for op in ops if op.fuses} == blocks
    assert not {op.block for op in ops if op.block} & blocks


def test_the_modes_are_the_lectures_exercises_in_order():
    assert MODES == tuple(LECTURE_MODES)


def test_an_undeclared_mode_is_a_typed_error():
    with pytest.raises(Undeclared) as raised:
        ops_for_mode("fused_everything")
    assert raised.value.field == "mode"
    assert "'fused_everything'" in str(raised.value) and "fused_bn" in str(raised.value)


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


def test_the_engine_steps_whatever_schedule_it_is_given(lecture_dataset):
    # no bug in the config: a rule substituted by hand runs all the same, `=` over the earlier contribution included
    good = run_backward(LECTURE, lecture_dataset, "atomic")
    zero = Rule("counts", "dcounts = 0", lambda v, d: torch.zeros_like(v.counts), overwrite=True)
    schedule = [replace(op, rules=(zero,)) if op.name == "counts_sum" else op for op in backward_schedule("atomic")]
    bp = engine.BackwardPass(LECTURE, "atomic", good.params, good.values, schedule)
    step = next(i for i, op in enumerate(schedule, start=1) if op.name == "counts_sum")
    assert torch.equal(bp.grad_at("counts", step), torch.zeros_like(good.values["counts"]))
    assert torch.equal(bp.grad_at("counts", step - 1), good.grad_at("counts", step - 1))  # probs' path, before
    assert [c.overwrites for c in bp.contributions("counts", step)] == [False, True]


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
