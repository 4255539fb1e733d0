"""Why a gradient is what it is (server/explain/why.py, instance.py): derivations, examples, forces, ≈ explained.

The expected numbers come from the engine's own backward (its running sums and contributions), from torch
recomputing the identities (softmax − one-hot), or from the lecture's remarks; never from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient

from server.core.cache import PassCache
from server.core.config import ModelConfig
from server.explain import why
from server.explain.instance import write_rule
from server.web.app import create_app
from tests.lecture import MODES, ops_for_mode

# the worked examples the lecture's stumbling blocks call for, by the kind of op (every linear layer, every tanh,
# the embedding, the fused cross-entropy) and, in the softmax the hidden layers do not touch, by name
BY_KERNEL = {
    "linear": ("matmul", "matmul", "sum"),
    "tanh": ("tanh",),
    "embedding": ("gather",),
    "cross_entropy": ("forces",),
}
BY_NAME = {("probs", "counts_sum_inv"): "sum", ("logit_maxes", "logits"): "max", ("logprobs", "probs"): "log"}


def same(x: float, t: torch.Tensor) -> bool:
    """x is this float32 entry (the answers write float32 entries in float32's shortest digits)."""
    return np.float32(x) == t.numpy()


@pytest.fixture(scope="module")
def cache(lecture_dataset) -> PassCache:
    return PassCache(lecture_dataset)


def _all_rules():
    for mode in MODES:
        for op in ops_for_mode(mode):
            for rule in op.rules:
                yield mode, op, rule


def test_every_rule_has_a_derivation_that_names_its_gradient_and_renders_as_mathml():
    for mode, op, rule in _all_rules():
        assert rule.tex, f"{mode}: {op.name}'s rule for d{rule.target} has no derivation"
        rendered = [why.mathml(line) for line in rule.tex]
        for line, ml in zip(rule.tex, rendered, strict=True):
            assert ml.startswith("<math") and "merror" not in ml, line
            assert "\\" not in ml.replace("\\\\", ""), f"raw LaTeX left in {line!r}"
        # the last line is the chain rule: it says what d<target> is
        assert f"<mtext>d{rule.target}</mtext>" in rendered[-1], (op.name, rule.target, rule.tex[-1])
        if rule.tex_notes:
            assert len(rule.tex_notes) == len(rule.tex)


def test_the_listed_rules_have_their_worked_example():
    seen = set()
    for _, op, rule in _all_rules():
        if op.kernel in BY_KERNEL:
            index = [r.target for r in op.rules].index(rule.target)
            assert rule.example == BY_KERNEL[op.kernel][index], (op.name, rule.target)
            seen.add(op.kernel)
        if (op.name, rule.target) in BY_NAME:
            assert rule.example == BY_NAME[op.name, rule.target]
            seen.add((op.name, rule.target))
    assert seen == set(BY_KERNEL) | set(BY_NAME)


def step_of(bp, op_name: str) -> int:
    """The backward step of an op, read from the schedule."""
    return next(step for step, op in enumerate(bp.schedule, start=1) if op.name == op_name)


def _scope(bp, step, op):
    scope = {**bp.values, "torch": torch, "F": F}
    for out in op.outputs:
        scope[f"d{out}"] = bp.grad_at(out, step - 1)
    return scope


@pytest.mark.parametrize("mode", MODES)
def test_a_rule_written_out_at_an_entry_is_the_engines_contribution_there(cache, mode):
    bp = cache.get(ModelConfig(), mode)
    for step, op in enumerate(bp.schedule, start=1):
        for rule in op.rules:
            target = bp.values[rule.target]
            contribution = next(c.grad for c in bp.contributions(rule.target, step) if c.step == step)
            for corner in (0, -1):  # the first and the last entry
                index = [0 if corner == 0 else size - 1 for size in target.shape]
                written = write_rule(rule.code, rule.target, _scope(bp, step, op), index)
                want = contribution[tuple(index)] if index else contribution
                assert same(written["value"], want), (mode, op.name, rule.target, index, written["lines"])
                assert written["lines"], rule.code
                for operand in written["operands"]:
                    source = (
                        bp.grad_at(operand["tensor"], step - 1) if operand["grad"] else bp.values[operand["tensor"]]
                    )
                    assert same(operand["value"], source[tuple(operand["index"])]), operand


def test_the_instance_of_a_node_fed_twice_adds_both_contributions(cache):
    bp = cache.get(ModelConfig(), "atomic")
    answer = why.instance(bp, "counts", bp.total_steps, [3, 7])
    assert [p["op"] for p in answer["parts"]] == ["probs", "counts_sum"]
    assert same(answer["total"], bp.grad_at("counts", bp.total_steps)[3, 7])
    assert answer["parts"][0]["lines"][0].startswith("dcounts[3,7] = counts_sum_inv[3,0] * dprobs[3,7]")
    assert answer["parts"][1]["lines"][0].startswith("dcounts[3,7] += ")


def test_the_matmul_example_is_the_engines_gradient_entry_by_entry(cache):
    bp = cache.get(ModelConfig(), "atomic")
    for node in ("W2", "h"):  # a weight and an activation: dW = x.T @ dout, dx = dout @ W.T
        answer = why.explain(bp, cache.dataset, node, bp.total_steps, [5, 3])
        ex = answer["rules"][0]["example"]
        assert ex["kind"] == "matmul"
        manual = bp.grad_at(node, bp.total_steps)
        for entry in ex["entries"]:
            r, c = entry["index"]
            assert same(entry["full"], manual[r, c])  # the rule's own product: the gradient's entry, bit for bit
            assert len(entry["terms"]) == 3 and entry["partial"] == pytest.approx(sum(entry["terms"]))
        # the slices are the tensors' entries, each at the index it names (a transposed operand read across)
        op = next(op for op in bp.schedule if op.kernel == "linear" and node in op.inputs)
        out = bp.grad_at(op.outputs[0], step_of(bp, op.name) - 1)  # dout as the linear's backward step received it
        for m in (ex["a"], ex["b"]):
            source = out if m["grad"] else bp.values[m["tensor"]]
            for p, r in enumerate(m["rows"]):
                for q, c in enumerate(m["cols"]):
                    assert m["indices"][p][q] == ([c, r] if m["transposed"] else [r, c])
                    assert same(m["values"][p][q], source[tuple(m["indices"][p][q])])


@pytest.mark.parametrize("sizes", [{"n_hidden": 1}, {"batch_size": 2, "n_embd": 1}, {"n_hidden": 2, "block_size": 1}])
def test_the_matmul_example_fits_dims_smaller_than_its_window(cache, sizes):
    # one hidden unit, a batch of two: fewer rows, columns or inner terms than the 2×3 @ 3×2 window (it was a 500)
    bp = cache.get(ModelConfig(**sizes), "atomic")
    for node in ("W1", "embcat", "W2", "h"):
        manual = bp.grad_at(node, bp.total_steps)
        last = [size - 1 for size in manual.shape]
        for at in ([0, 0], last):
            ex = why.explain(bp, cache.dataset, node, bp.total_steps, at)["rules"][0]["example"]
            assert ex["kind"] == "matmul"
            assert [at] == [e["index"] for e in ex["entries"] if e["index"] == at]  # the asked entry is shown
            inner = min(3, ex["inner"])
            for entry in ex["entries"]:
                r, c = entry["index"]
                assert 0 <= r < manual.shape[0] and 0 <= c < manual.shape[1]
                assert same(entry["full"], manual[r, c]) and len(entry["terms"]) == inner


def test_the_sum_example_adds_up_to_the_gradient_entry(cache):
    bp = cache.get(ModelConfig(), "atomic")
    answer = why.explain(bp, cache.dataset, "counts_sum_inv", bp.total_steps, [4, 0])
    ex = answer["rules"][0]["example"]
    assert ex["kind"] == "sum" and ex["dim"] == 1 and len(ex["terms"]) == 27
    assert sum(t["value"] for t in ex["terms"]) == pytest.approx(
        float(bp.grad_at("counts_sum_inv", bp.total_steps)[4, 0]), rel=1e-5
    )
    assert same(ex["total"], bp.grad_at("counts_sum_inv", bp.total_steps)[4, 0])
    for term in ex["terms"]:
        j = term["index"][1]
        by = {(o["tensor"], o["grad"]): o["value"] for o in term["operands"]}
        assert same(by[("counts", False)], bp.values["counts"][4, j])
        assert same(by[("probs", True)], bp.grad_at("probs", step_of(bp, "logprobs"))[4, j])


def test_the_gather_example_collects_every_use_of_a_character(cache):
    bp = cache.get(ModelConfig(), "atomic")
    ex = why.explain(bp, cache.dataset, "C", bp.total_steps, [1, 0])["rules"][0]["example"]
    Xb = bp.values["Xb"]
    assert len(ex["uses"]) == int((Xb == ex["char"]).sum())
    assert sum(o["count"] for o in ex["occurrences"]) == Xb.numel()
    assert ex["total"] == pytest.approx(float(bp.grad_at("C", bp.total_steps)[ex["char"], 0]), rel=1e-5, abs=1e-9)


def test_the_tanh_example_finds_a_saturated_unit(cache):
    bp = cache.get(ModelConfig(), "atomic")
    ex = why.explain(bp, cache.dataset, "hpreact", bp.total_steps, [0, 0])["rules"][0]["example"]
    h = bp.values["h"]
    assert ex["saturated"] == int((h.abs() > 0.99).sum())
    worst = ex["units"][1]
    assert same(abs(worst["h"]), h.abs().max())
    assert worst["local"] == pytest.approx(1 - worst["h"] ** 2)


def test_the_log_example_shows_one_over_probs_at_the_rows_target(cache):
    bp = cache.get(ModelConfig(), "atomic")
    ex = why.explain(bp, cache.dataset, "probs", bp.total_steps, [3, 0])["rules"][0]["example"]
    assert ex["kind"] == "log"
    probs, y = bp.values["probs"], int(bp.values["Yb"][3])
    chosen, target = ex["entries"]
    assert target["index"] == [3, y] and same(target["x"], probs[3, y])
    assert target["dout"] == pytest.approx(-1 / 32) and chosen["dout"] == (0.0 if y != 0 else chosen["dout"])
    # the served dprobs at the target is the example's (1/p)·dlogprobs, as the lecture's rule computes it
    assert target["din"] == pytest.approx(float(bp.grad_at("probs", bp.total_steps)[3, y]), rel=1e-6)
    assert f"{1 / target['x']:.1f} times" in ex["text"]


@pytest.mark.parametrize("mode", MODES)
def test_the_forces_on_a_row_are_softmax_minus_one_hot_and_sum_to_zero(cache, mode):
    bp = cache.get(ModelConfig(), mode)
    forces = why.explain(bp, cache.dataset, "logits", 0, [6, 0])["forces"]
    logits, y = bp.values["logits"], int(bp.values["Yb"][6])
    p = torch.softmax(logits[6].double(), 0)
    assert forces["target"] == y and forces["onehot"][y] == 1.0 and sum(forces["onehot"]) == 1.0
    assert forces["force"] == pytest.approx([float(p[j]) - (j == y) for j in range(27)], abs=1e-12)
    assert forces["probs"] == pytest.approx(p.tolist(), abs=1e-6)
    assert abs(forces["sum"]) < 1e-12
    # the backward's own n·dlogits says the same
    n_dlogits = bp.ref_grads["logits"][6] * bp.values["n"]
    assert forces["force"] == pytest.approx(n_dlogits.tolist(), abs=1e-6)


def test_the_lectures_division_remark_holds(cache):
    bp = cache.get(ModelConfig(), "atomic")
    rows = {r["forward"]: r for r in why.explain(bp, cache.dataset, "counts_sum", bp.total_steps)["division"]["rows"]}
    assert rows["counts_sum_inv = counts_sum**-1"]["exact"] is True
    assert rows["counts_sum_inv = 1.0 / counts_sum"]["exact"] is False
    assert rows["counts_sum_inv = 1.0 / counts_sum"]["approx"] is True


def test_an_approximate_gradient_says_where_and_why(cache):
    bp = cache.get(ModelConfig(), "atomic")
    approx = why.explain(bp, cache.dataset, "hpreact", bp.total_steps)["approx"]
    diff = (bp.grad_at("hpreact", bp.total_steps) - bp.ref_grads["hpreact"]).abs()
    assert approx["abs"] == pytest.approx(float(diff.max()), rel=1e-6)
    assert float(diff[tuple(approx["index"])]) == float(diff.max())
    assert "tanh" in approx["cause"]
    # downstream, the same difference is inherited, and says where it started
    inherited = why.explain(bp, cache.dataset, "W1", bp.total_steps)["approx"]["cause"]
    assert inherited.startswith("inherited") and "dhpreact" in inherited
    # exact gradients have nothing to explain
    assert why.explain(bp, cache.dataset, "probs", bp.total_steps)["approx"] is None


def test_under_the_bessel_bug_bnmeani_stays_approximate_and_says_the_error_cancels(cache):
    bp = cache.get(ModelConfig(bug="bessel_n"), "atomic")
    state = {n: bp.cmp_at(n, bp.total_steps) for n in ("bnmeani", "bndiff")}
    assert state["bndiff"]["approx"] is False and state["bnmeani"]["approx"] is True
    assert "cancels" in why.explain(bp, cache.dataset, "bnmeani", bp.total_steps)["approx"]["cause"]
    # and the derivation of the fused batchnorm says why
    notes = " ".join(
        ln["note"]
        for ln in why.explain(cache.get(ModelConfig(), "fused_bn"), cache.dataset, "hprebn", 3)["rules"][0]["lines"]
    )
    assert "Bessel" in notes and "Σᵢ bndiffᵢ = 0" in notes


@pytest.fixture(scope="module")
def client(lecture_dataset):
    with TestClient(create_app(lecture_dataset), base_url="http://127.0.0.1") as c:
        yield c


def test_the_why_and_instance_endpoints_refuse_bad_input(client):
    assert client.get("/api/why/nope").status_code == 404
    assert client.get("/api/why/W2?at=64,0").status_code == 422  # W2 is (64, 27)
    assert client.get("/api/why/W2?at=1").status_code == 422  # one index for a matrix
    assert client.get("/api/why/W2?at=a,b").status_code == 422
    assert client.get("/api/instance/W2?at=1,2&step=99").status_code == 422
    assert client.get("/api/why/W2?at=3,4").status_code == 200  # and the server goes on serving
    # without an entry, the first one, as the why drawer's examples take it (the schema says at is optional)
    assert client.get("/api/instance/C").json()["index"] == [0, 0]


def test_the_instance_endpoint_serves_the_written_rule(client):
    answer = client.get("/api/instance/probs", params={"step": 2, "at": "3,7"}).json()
    tensor = client.get("/api/tensor/probs", params={"step": 2}).json()
    assert answer["total"] == tensor["grad_manual"]["data"][3][7]
    assert answer["parts"][0]["lines"][0] == "dprobs[3,7] = (1.0 / probs[3,7]) * dlogprobs[3,7]"
    probs = next(o for o in answer["parts"][0]["operands"] if o["tensor"] == "probs")
    assert probs["value"] == tensor["value"]["data"][3][7]
