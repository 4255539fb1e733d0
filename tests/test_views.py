"""What the explorer shows (server/explain/views.py): the graph's rule numbering, each step's statuses, tick labels."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from server.core.config import ModelConfig
from server.core.engine import run_backward
from server.explain.views import UnknownNode, axis_labels, build_graph, build_state, build_tensor
from tests.lecture import MODES, NODES, backward_schedule, nodes_for_mode, ops_for_mode

LECTURE = ModelConfig()


@pytest.fixture(scope="module")
def passes(lecture_dataset):
    return {mode: run_backward(LECTURE, lecture_dataset, mode) for mode in MODES}


def _steps_reaching(mode: str) -> dict[str, list[int]]:
    """node -> the backward steps (1-based) whose op has a rule for it, read off the declaration."""
    steps: dict[str, list[int]] = {"loss": [0]}  # dloss = 1 before the first step
    for k, op in enumerate(backward_schedule(mode), start=1):
        for rule in op.rules:
            steps.setdefault(rule.target, []).append(k)
    return steps


@pytest.mark.parametrize("mode", MODES)
def test_each_rule_says_which_contribution_it_is_and_its_shapes(passes, mode):
    bp = passes[mode]
    g = build_graph(bp)
    steps = _steps_reaching(mode)
    schedule = [op.name for op in backward_schedule(mode)]
    assert g["schedule"] == schedule and [op["name"] for op in g["ops"]] == [op.name for op in ops_for_mode(mode)]
    for op in g["ops"]:
        k = schedule.index(op["name"]) + 1
        out = tuple(bp.values[op["outputs"][0]].shape)
        for rule in op["rules"]:
            target = rule["target"]
            assert (rule["contribution"], rule["of"]) == (steps[target].index(k) + 1, len(steps[target]))
            shape = tuple(bp.values[target].shape)
            written = "(" + ",".join(map(str, out)) + ")→(" + ",".join(map(str, shape)) + ")"
            assert rule["shapes"] == written
            assert rule["bug"] is False and rule["correct_code"] is None
    assert {n["name"]: n["contributions"] for n in g["nodes"]} == {
        n.name: len(steps.get(n.name, ())) for n in nodes_for_mode(mode)
    }


@pytest.mark.parametrize("mode", MODES)
def test_the_state_after_each_step_follows_the_schedule(passes, mode):
    bp = passes[mode]
    steps = _steps_reaching(mode)
    schedule = [op.name for op in backward_schedule(mode)]
    for step in range(len(schedule) + 1):
        state = build_state(bp, step)
        assert state["op"] == (schedule[step - 1] if step else None)
        assert state["next_op"] == (schedule[step] if step < len(schedule) else None)
        for name, node in state["nodes"].items():
            reached = [s for s in steps.get(name, ()) if s <= step]
            total = len(steps.get(name, ()))
            if NODES[name].kind == "input":
                expected = "none"
            else:
                expected = "pending" if not reached else "partial" if len(reached) < total else "complete"
            assert node["status"] == expected, (name, step)
            assert node["contributions"] == [len(reached), total]
            assert (node["cmp"] is None) == (expected in ("none", "pending")), (name, step)


def test_tick_labels_spell_the_batch_and_the_concatenated_embedding(passes, lecture_dataset):
    bp = passes["atomic"]
    itos = lecture_dataset.itos
    Xb, Yb = bp.values["Xb"], bp.values["Yb"]
    labels = axis_labels(bp, lecture_dataset, "batch", LECTURE.batch_size)
    assert labels[0] == "".join(itos[int(i)] for i in Xb[0]) + "→" + itos[int(Yb[0])]
    assert len(labels) == LECTURE.batch_size
    embcat = axis_labels(bp, lecture_dataset, "embcat", LECTURE.n_embd * LECTURE.block_size)
    # column j of embcat is embedding entry j % n_embd of context character j // n_embd
    emb, cat = bp.values["emb"], bp.values["embcat"]
    for j, label in enumerate(embcat):
        c, e = (int(s[1:]) for s in label.split("·"))
        assert torch.equal(cat[:, j], emb[:, c, e]), label


def test_a_tensor_of_another_mode_is_an_unknown_node(passes, lecture_dataset):
    fused = passes["fused_ce"]
    assert "counts" in [n.name for n in nodes_for_mode("atomic")]
    with pytest.raises(UnknownNode, match="counts"):
        build_tensor(fused, lecture_dataset, "counts", 1)


def test_a_partial_gradient_is_shown_against_autograd_through_the_same_paths(passes, lecture_dataset):
    bp = passes["atomic"]
    first, second = _steps_reaching("atomic")["counts"]
    t = build_tensor(bp, lecture_dataset, "counts", first)
    assert t["status"] == "partial" and t["contributions"] == [1, 2] and t["numeric"] is None
    assert [s["step"] for s in t["split"]] == [first]
    # the reference is autograd through the first consumer alone: the manual contribution matches it
    manual = torch.as_tensor(t["grad_manual"]["data"])
    reference = torch.as_tensor(t["grad_autograd"]["data"])
    torch.testing.assert_close(manual, reference)
    assert not torch.allclose(reference, bp.ref_grads["counts"])  # not autograd's complete gradient
    assert t["reference"].startswith("autograd through contribution 1 of 2")
    full = build_tensor(bp, lecture_dataset, "counts", second)
    assert full["status"] == "complete" and full["reference"] == "autograd, complete"
    assert full["numeric"] is not None and [s["step"] for s in full["split"]] == [first, second]


@pytest.fixture(scope="module")
def broadcast_bug(lecture_dataset):
    return run_backward(replace(LECTURE, bug="no_broadcast_sum"), lecture_dataset, "atomic")


def test_the_bug_labs_line_is_labelled_with_the_shape_it_makes(broadcast_bug):
    bp = broadcast_bug
    (made,) = [c.grad for c in bp.contributions("counts_sum_inv", bp.total_steps) if c.op == "probs"]
    assert made.shape == (32, 27)  # the premise: the line without .sum(1, keepdim=True) makes (32,27)
    probs = next(op for op in build_graph(bp)["ops"] if op["name"] == "probs")
    rule = next(r for r in probs["rules"] if r["target"] == "counts_sum_inv")
    assert rule["bug"] and rule["shapes"] == "(32,27)→(32,27)"


def test_a_relative_error_where_autograds_gradient_is_zero_is_on_the_manual_ones_scale(broadcast_bug):
    bp = broadcast_bug
    ref, manual = bp.ref_grads["logit_maxes"], bp.grad_at("logit_maxes", bp.total_steps)
    assert float(ref.abs().max()) < 1e-7 < 1e-3 < float(manual.abs().max())  # the premise: autograd's is ~0
    state = build_state(bp, bp.total_steps)
    cmp = state["nodes"]["logit_maxes"]["cmp"]
    diff = float((manual - ref).abs().max())
    assert cmp["rel_err"] == pytest.approx(diff / float(manual.abs().max())) and cmp["rel_err"] <= 1.0
    # a gradient of the wrong shape: no numbers, a line that says why
    cmp = state["nodes"]["counts_sum_inv"]["cmp"]
    assert cmp["maxdiff"] is None and cmp["rel_err"] is None
    assert cmp["shape_mismatch"] == "shape (32,27) against autograd's (32,1): no difference to measure"
