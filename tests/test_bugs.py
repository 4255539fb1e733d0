"""The bug lab (server/net/bugs.py): each wrong rule is declared where its op is, is wrong, and breaks what it says."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from server.core.config import ModelConfig
from server.core.engine import run_backward
from server.net.bugs import right_rule
from server.net.declare import Undeclared
from tests.lecture import BUGS, CLIP, MODES, OPS_BY_NAME, backward_schedule, bug_modes, ops_for_mode, schedule_with_bug

LECTURE = ModelConfig()


def _rule(op, target):
    return next(rule for rule in op.rules if rule.target == target)


@pytest.mark.parametrize("name", sorted(BUGS))
def test_a_bug_is_offered_in_exactly_the_modes_where_its_rule_runs(name):
    bug = BUGS[name]
    having = [mode for mode in MODES if any(op.name == bug.op for op in ops_for_mode(mode))]
    assert list(bug_modes(bug)) == having, "a mode that has the op is missing, or one that fuses it away is listed"
    for mode in bug_modes(bug):
        op = next(op for op in ops_for_mode(mode) if op.name == bug.op)
        assert bug.target in [rule.target for rule in op.rules], (mode, bug.target)


@pytest.mark.parametrize("name", sorted(BUGS))
def test_a_bugs_line_assigns_the_gradient_it_gets_wrong_and_overwrites_only_a_sum(name):
    bug = BUGS[name]
    right = _rule(OPS_BY_NAME[bug.op], bug.target)
    assert bug.code.startswith(f"d{bug.target}"), bug.code
    assert bug.code != right.code
    # `=` where `+=` belongs is the overwrite bug: the right rule must add, the wrong one assign
    assert bug.overwrite == (f"d{bug.target} +=" in right.code and f"d{bug.target} +=" not in bug.code)


@pytest.mark.parametrize("name", sorted(BUGS))
def test_a_bugs_contribution_differs_from_the_right_rules_unless_it_overwrites(lecture_dataset, name):
    bug = BUGS[name]
    bp = run_backward(LECTURE, lecture_dataset, bug_modes(bug)[0])
    out = OPS_BY_NAME[bug.op].outputs[0]
    v = SimpleNamespace(**{k: t.detach() if isinstance(t, torch.Tensor) else t for k, t in bp.values.items()})
    d = SimpleNamespace(**{out: bp.ref_grads[out] if out != "loss" else torch.ones(())})
    wrong, right = bug.fn(v, d), _rule(OPS_BY_NAME[bug.op], bug.target).fn(v, d)
    if bug.overwrite:  # the contribution is right; what is wrong is that it replaces the earlier one
        assert torch.equal(wrong, right)
    else:
        assert wrong.shape != right.shape or not torch.allclose(wrong, right), "the wrong rule computes the right thing"


def test_the_clipped_loss_gives_no_gradient_to_the_examples_above_the_clip(lecture_dataset):
    bp = run_backward(replace(LECTURE, bug="clipped_loss"), lecture_dataset, "atomic")
    n, Yb = LECTURE.batch_size, bp.values["Yb"]
    per_example = -torch.log_softmax(bp.values["logits"].detach(), 1)[range(n), Yb]  # (n,)
    assert (per_example > CLIP).any() and (per_example <= CLIP).any()  # both kinds of row in the batch
    expected = torch.zeros(n, bp.values["logits"].shape[1])
    expected[range(n), Yb] = torch.where(per_example > CLIP, 0.0, -1.0 / n)
    assert torch.equal(bp.grad_at("logprobs", 1), expected)


@pytest.mark.parametrize("name", sorted(BUGS))
def test_each_bug_breaks_its_node_and_everything_upstream(lecture_dataset, name):
    bug = BUGS[name]
    mode = bug_modes(bug)[0]
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


@pytest.mark.parametrize("name", sorted(BUGS))
def test_each_bug_runs_in_float64(lecture_dataset, name):
    bad = run_backward(replace(LECTURE, bug=name, dtype="float64"), lecture_dataset, bug_modes(BUGS[name])[0])
    assert bad.grad_at(BUGS[name].target, len(bad.schedule)).dtype == torch.float64


def test_the_missing_gain_bug_hides_behind_zero_bias_init(lecture_dataset):
    hidden = run_backward(replace(LECTURE, init="zero_bias", bug="missing_gain"), lecture_dataset, "atomic")
    assert all(c["approx"] for c in hidden.cmp.values())
    # with bngain = 1 the missing factor changes no bit: no check can tell the bug from the right rule
    right = run_backward(replace(LECTURE, init="zero_bias"), lecture_dataset, "atomic")
    for name in right.node_names():
        assert right.grad_at(name, right.total_steps) is None or torch.equal(
            hidden.grad_at(name, hidden.total_steps), right.grad_at(name, right.total_steps)
        ), name
    assert hidden.numeric("bnraw") == right.numeric("bnraw")
    caught = run_backward(replace(LECTURE, bug="missing_gain"), lecture_dataset, "atomic")
    assert not caught.cmp["bnraw"]["approx"]


# the modes each bug applies to, as the bug lab listed them by hand before they were derived: a bug on a
# cross-entropy line exists only where ce is not fused, a bug on a batchnorm line only where bn is not
BUG_MODES = {
    "no_broadcast_sum": ("atomic", "fused_bn"),
    "overwrite_second_contribution": ("atomic", "fused_bn"),
    "bessel_n": ("atomic", "fused_ce"),
    "clipped_loss": ("atomic", "fused_bn"),
    "missing_gain": ("atomic", "fused_ce"),
}


def test_each_bugs_modes_are_the_schedules_with_its_rule():
    assert {name: bug_modes(bug) for name, bug in BUGS.items()} == BUG_MODES


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(BUGS))
def test_a_bug_substitutes_its_rule_into_the_schedule(name, mode):
    bug, right = BUGS[name], backward_schedule(mode)
    if mode not in BUG_MODES[name]:
        with pytest.raises(Undeclared) as raised:
            schedule_with_bug(mode, name)
        assert raised.value.field == "bug" and f"{bug.op}, which mode {mode} fuses away" in str(raised.value)
        return
    wrong = schedule_with_bug(mode, name)
    assert [op.name for op in wrong] == [op.name for op in right]
    changed = [
        (op.name, w.target) for op, bad in zip(right, wrong, strict=True)
        for r, w in zip(op.rules, bad.rules, strict=True) if w != r
    ]  # fmt: skip
    assert changed == [(bug.op, bug.target)]  # one rule, the bug's; every other rule is the declared one
    [rule] = [r for op in wrong if op.name == bug.op for r in op.rules if r.target == bug.target]
    assert (rule.code, rule.fn, rule.overwrite) == (bug.code, bug.fn, bug.overwrite)
    assert right_rule(rule) in OPS_BY_NAME[bug.op].rules and right_rule(rule).code != bug.code


def test_an_undeclared_bug_is_a_typed_error(lecture_dataset):
    with pytest.raises(Undeclared) as raised:
        schedule_with_bug("atomic", "off_by_one")
    assert raised.value.field == "bug" and "'off_by_one'" in str(raised.value) and "bessel_n" in str(raised.value)
    with pytest.raises(Undeclared) as raised:
        run_backward(replace(LECTURE, bug="bessel_n"), lecture_dataset, "fused_bn")
    assert raised.value.field == "bug" and "use atomic or fused_ce" in str(raised.value)


def test_the_missing_gain_note_says_what_the_check_says_under_zero_bias(lecture_dataset):
    hidden = run_backward(replace(LECTURE, init="zero_bias", bug="missing_gain"), lecture_dataset, "atomic")
    said = hidden.cmp["bnraw"]
    assert said["approx"] and not said["exact"]  # the data: ≈, not exact
    why = BUGS["missing_gain"].why
    assert "check passes: approximate (≈)" in why and "not exact" in why and "says exact" not in why
