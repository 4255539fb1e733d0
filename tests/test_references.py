"""Per-path references: a partial gradient is checked against autograd through the same paths, and errors
are traced to the node where they start."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from server.core.config import ModelConfig
from server.core.engine import compare, run_backward
from tests.lecture import BUGS, MODES, bug_modes

LECTURE = ModelConfig()
F64 = replace(LECTURE, dtype="float64")


def _origins(bp, step):
    return [name for name in bp.node_names() if bp.is_origin(name, step)]


@pytest.mark.parametrize("mode", MODES)
def test_the_paths_through_each_consumer_add_up_to_autograds_gradient_float64(lecture_dataset, mode):
    bp = run_backward(F64, lecture_dataset, mode)
    multi = [name for name, k in bp.totals.items() if k > 1]
    assert bool(multi) == (mode != "fused")  # fused has no node used twice: its check is the single-path one
    for name, steps in bp.contribution_steps.items():
        if name == "loss":
            continue  # dloss = 1 has no consumer
        paths = [bp.path_ref(name, step) for step in steps]
        # one consumer: its path is the whole gradient; several: the paths add up to it
        torch.testing.assert_close(sum(paths), bp.ref_grads[name], rtol=1e-12, atol=1e-15, msg=name)
        if len(paths) > 1 and name != "logits":  # dlogit_maxes is ~0: the softmax ignores a shift
            # each path alone is not the whole gradient: the other path carries a part of it
            assert not any(torch.allclose(p, bp.ref_grads[name]) for p in paths), name


def test_a_path_reference_is_the_consumers_local_rule_only(lecture_dataset):
    """counts -> probs alone: counts_sum_inv * dprobs (product rule), not counts' whole gradient."""
    bp = run_backward(F64, lecture_dataset, "atomic")
    probs_step = bp.contribution_steps["counts"][0]
    assert bp.schedule[probs_step - 1].name == "probs"
    by_hand = bp.values["counts_sum_inv"] * bp.ref_grads["probs"]  # (n, vocab) broadcast over the row
    torch.testing.assert_close(bp.path_ref("counts", probs_step), by_hand, rtol=1e-12, atol=0)
    # the indirect path counts -> counts_sum -> counts_sum_inv -> probs is the other contribution's
    assert (bp.ref_grads["counts"] - by_hand).abs().max() > 1e-4


def test_a_partial_gradient_is_compared_with_the_same_paths(lecture_dataset):
    bp = run_backward(LECTURE, lecture_dataset, "atomic")
    assert bp.status("counts", 3) == "partial" and bp.contributions_done("counts", 3) == 1
    partial = bp.cmp_at("counts", 3)
    assert partial is not None and partial["approx"] and partial["shape_ok"]
    # what the page showed before: the correct partial sum against autograd's full gradient, saturated red
    assert not compare(bp.grad_at("counts", 3), bp.ref_grads["counts"])["approx"]
    # complete: the lecture's comparison against autograd's full gradient, exact at the lecture's defaults
    assert bp.cmp_at("counts", bp.total_steps) is bp.cmp["counts"] and bp.cmp["counts"]["exact"]
    assert bp.cmp_at("counts", 2) is None  # nothing received yet: nothing to compare


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_without_a_bug_no_error_has_an_origin(lecture_dataset, mode, dtype):
    bp = run_backward(replace(LECTURE, dtype=dtype), lecture_dataset, mode)
    for step in range(bp.total_steps + 1):
        assert _origins(bp, step) == [], step
        for name in bp.node_names():
            cmp = bp.cmp_at(name, step)
            if cmp is not None:
                assert cmp["approx"], (name, step)  # partial ones too: each against its own paths


BUG_MODES = [(name, mode) for name, bug in sorted(BUGS.items()) for mode in bug_modes(bug)]


@pytest.mark.parametrize(("name", "mode"), BUG_MODES)
def test_each_bug_has_exactly_one_origin_its_target(lecture_dataset, name, mode):
    bug = BUGS[name]
    bp = run_backward(replace(LECTURE, bug=name), lecture_dataset, mode)
    buggy_step = next(i for i, op in enumerate(bp.schedule, start=1) if op.name == bug.op)
    for step in range(bp.total_steps + 1):
        # from the step that runs the wrong rule on, the error starts at its target; nowhere before
        assert _origins(bp, step) == ([bug.target] if step >= buggy_step else []), step
    downstream = [n for n in bp.node_names() if (c := bp.cmp_at(n, bp.total_steps)) and not c["approx"]]
    assert len(downstream) > 1  # the error did flow on: the single origin is a choice among several wrong nodes


def _origin_rel_err(dataset, name):
    bug = BUGS[name]
    bp = run_backward(replace(LECTURE, bug=name), dataset, bug_modes(bug)[0])
    cmp = bp.cmp_at(bug.target, bp.total_steps)
    assert bp.is_origin(bug.target, bp.total_steps) and cmp is not None
    return cmp["rel_err"]


def test_the_origins_error_has_a_size(lecture_dataset):
    """n instead of n-1 is off by 1/n (~3% at n = 32); a lost += by a whole contribution."""
    bessel = _origin_rel_err(lecture_dataset, "bessel_n")
    overwrite = _origin_rel_err(lecture_dataset, "overwrite_second_contribution")
    assert 0.02 <= bessel <= 0.05
    assert bessel < overwrite


def test_a_shape_mismatch_has_shapes_and_no_number_in_place_of_a_difference(lecture_dataset):
    bp = run_backward(replace(LECTURE, bug="no_broadcast_sum"), lecture_dataset, "atomic")
    cmp = bp.cmp_at("counts_sum_inv", bp.total_steps)
    assert cmp == {"exact": False, "approx": False, "maxdiff": None, "max_rel": None, "rel_err": None,
                   "shape_ok": False, "shape": [32, 27], "expected_shape": [32, 1],
                   "shape_mismatch": "shape (32,27) against autograd's (32,1): no difference to measure"}  # fmt: skip
    assert bp.is_origin("counts_sum_inv", bp.total_steps)
    assert not bp.is_origin("counts_sum", bp.total_steps)  # wrong too, but from the wrong dcounts_sum_inv


def test_contributions_are_kept_apart_from_the_running_sum(lecture_dataset):
    bp = run_backward(LECTURE, lecture_dataset, "atomic")
    parts = bp.contributions("counts", bp.total_steps)
    assert [(c.op, c.step) for c in parts] == [("probs", 3), ("counts_sum", 5)]
    assert not any(c.overwrites for c in parts)
    torch.testing.assert_close(parts[0].grad + parts[1].grad, bp.grad_at("counts", bp.total_steps), rtol=0, atol=0)
    assert len(bp.contributions("counts", 4)) == 1
    lost = run_backward(replace(LECTURE, bug="overwrite_second_contribution"), lecture_dataset, "atomic")
    first, second = lost.contributions("counts", lost.total_steps)
    assert second.overwrites and not first.overwrites
    assert torch.equal(lost.grad_at("counts", lost.total_steps), second.grad)
