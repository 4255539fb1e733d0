"""Challenge mode's grading: the notebook's own lines pass at every step of every mode, typed as the notebook
types them; a wrong gradient of the right shape is told what it has wrong."""

from __future__ import annotations

import ast
from dataclasses import replace

import pytest
import torch

from server.core.config import ModelConfig
from server.core.engine import run_backward
from server.learner.challenge import context, grade
from server.learner.sandbox import Refused, evaluate
from tests.lecture import MODES, NET, backward_schedule, nodes_for_mode

LECTURE = ModelConfig()

# the lecture notebook's lines, as it writes them: Exercise 1 ...
EXERCISE_1 = """\
dlogprobs = torch.zeros_like(logprobs)
dlogprobs[range(n), Yb] = -1.0/n
dprobs = (1.0 / probs) * dlogprobs
dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)
dcounts = counts_sum_inv * dprobs
dcounts_sum = (-counts_sum**-2) * dcounts_sum_inv
dcounts += torch.ones_like(counts) * dcounts_sum
dnorm_logits = counts * dcounts
dlogits = dnorm_logits.clone()
dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)
dlogits += F.one_hot(logits.max(1).indices, num_classes=logits.shape[1]) * dlogit_maxes
dh = dlogits @ W2.T
dW2 = h.T @ dlogits
db2 = dlogits.sum(0)
dhpreact = (1.0 - h**2) * dh
dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
dbnraw = bngain * dhpreact
dbnbias = dhpreact.sum(0, keepdim=True)
dbndiff = bnvar_inv * dbnraw
dbnvar_inv = (bndiff * dbnraw).sum(0, keepdim=True)
dbnvar = (-0.5*(bnvar + 1e-5)**-1.5) * dbnvar_inv
dbndiff2 = (1.0/(n-1))*torch.ones_like(bndiff2) * dbnvar
dbndiff += (2*bndiff) * dbndiff2
dhprebn = dbndiff.clone()
dbnmeani = (-dbndiff).sum(0)
dhprebn += 1.0/n * (torch.ones_like(hprebn) * dbnmeani)
dembcat = dhprebn @ W1.T
dW1 = embcat.T @ dhprebn
db1 = dhprebn.sum(0)
demb = dembcat.view(emb.shape)
dC = torch.zeros_like(C)
for k in range(Xb.shape[0]):
  for j in range(Xb.shape[1]):
    ix = Xb[k,j]
    dC[ix] += demb[k,j]
"""
# ... Exercise 2's dlogits ...
EXERCISE_2 = """\
dlogits = F.softmax(logits, 1)
dlogits[range(n), Yb] -= 1
dlogits /= n
"""
# ... Exercise 3's dhprebn ...
EXERCISE_3 = """\
dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))
"""
# ... and Exercise 4's manual backprop in the training loop (both fused), comments and all
EXERCISE_4 = """\
# manual backprop! #swole_doge_meme
# -----------------
dlogits = F.softmax(logits, 1)
dlogits[range(n), Yb] -= 1
dlogits /= n
# 2nd layer backprop
dh = dlogits @ W2.T
dW2 = h.T @ dlogits
db2 = dlogits.sum(0)
# tanh
dhpreact = (1.0 - h**2) * dh
# batchnorm backprop
dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
dbnbias = dhpreact.sum(0, keepdim=True)
dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))
# 1st layer
dembcat = dhprebn @ W1.T
dW1 = embcat.T @ dhprebn
db1 = dhprebn.sum(0)
# embedding
demb = dembcat.view(emb.shape)
dC = torch.zeros_like(C)
for k in range(Xb.shape[0]):
  for j in range(Xb.shape[1]):
    ix = Xb[k,j]
    dC[ix] += demb[k,j]
"""
_CE_END, _BN_START, _BN_END = EXERCISE_1.index("dh = "), EXERCISE_1.index("dbngain"), EXERCISE_1.index("dembcat")
_EX4_BN = EXERCISE_4[EXERCISE_4.index("dbngain") : EXERCISE_4.index("# 1st layer")]
NOTEBOOK = {
    "atomic": EXERCISE_1,
    "fused_ce": EXERCISE_2 + EXERCISE_1[_CE_END:],  # Exercise 2 stands for the cross-entropy lines
    "fused_bn": EXERCISE_1[:_BN_START] + _EX4_BN + EXERCISE_1[_BN_END:],  # Exercise 3 in Exercise 4's place
    "fused": EXERCISE_4,
}
assert EXERCISE_3 in _EX4_BN


def notebook_steps(bp, text: str) -> list[str]:
    """The notebook's lines cut into the schedule's steps, comments and all: a step takes the lines that write its
    gradients, in order, until a `name +=` adds a second path to a name the step already wrote (the next step's)."""
    stmts, lines = ast.parse(text).body, text.splitlines()
    steps, i, start = [], 0, 0  # start: the first line after the previous step's
    for op in bp.schedule:
        wanted = {f"d{rule.target}" for rule in op.rules}
        written: set[str] = set()
        end = start
        while i < len(stmts) and _writes(stmts[i]) & wanted:
            stmt = stmts[i]
            path = (
                isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add) and isinstance(stmt.target, ast.Name)
            )
            if path and stmt.target.id in written:
                break
            written |= _writes(stmt)
            end = stmt.end_lineno
            i += 1
        steps.append("\n".join(lines[start:end]))
        start = end
    assert i == len(stmts), f"lines left over: {[ast.unparse(s) for s in stmts[i:]]}"
    return steps


def _writes(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, ast.For):
        return {name for inner in stmt.body for name in _writes(inner)}
    target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
    while isinstance(target, ast.Subscript):
        target = target.value
    return {target.id}


def notebook_forward(params: dict[str, torch.Tensor], Xb: torch.Tensor, Yb: torch.Tensor) -> dict[str, torch.Tensor]:
    """The notebook's forward pass, line by line, and autograd's gradient of every tensor in it."""
    p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    C, W1, b1, bngain, bnbias, W2, b2 = (p[k] for k in ("C", "W1", "b1", "bngain", "bnbias", "W2", "b2"))
    n = Xb.shape[0]
    emb = C[Xb]
    embcat = emb.view(emb.shape[0], -1)
    hprebn = embcat @ W1 + b1
    bnmeani = 1 / n * hprebn.sum(0, keepdim=True)
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff**2
    bnvar = 1 / (n - 1) * (bndiff2).sum(0, keepdim=True)
    bnvar_inv = (bnvar + 1e-5) ** -0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = torch.tanh(hpreact)
    logits = h @ W2 + b2
    logit_maxes = logits.max(1, keepdim=True).values
    norm_logits = logits - logit_maxes
    counts = norm_logits.exp()
    counts_sum = counts.sum(1, keepdims=True)
    counts_sum_inv = counts_sum**-1
    probs = counts * counts_sum_inv
    logprobs = probs.log()
    loss = -logprobs[range(n), Yb].mean()
    tensors = {k: v for k, v in locals().items() if isinstance(v, torch.Tensor) and v.requires_grad}
    for t in tensors.values():
        t.retain_grad()
    loss.backward()
    grads = {k: t.grad for k, t in tensors.items() if t.grad is not None}
    return grads | {"loss": loss.detach()}


@pytest.fixture(scope="module")
def passes(lecture_dataset):
    return {mode: run_backward(LECTURE, lecture_dataset, mode) for mode in MODES}


@pytest.fixture(scope="module")
def autograd(passes):
    bp = passes["atomic"]
    grads = notebook_forward(bp.params, bp.values["Xb"], bp.values["Yb"])
    assert torch.equal(grads.pop("loss"), bp.values["loss"])  # the same batch through the same parameters
    return grads


@pytest.mark.parametrize("mode", MODES)
def test_every_step_typed_as_the_notebook_writes_it_grades_right(passes, autograd, mode):
    bp = passes[mode]
    mine: dict[str, torch.Tensor] = {}  # the notebook's gradients, each step computed from the ones before it
    for step, code in enumerate(notebook_steps(bp, NOTEBOOK[mode]), start=1):
        result = grade(bp, step, code)
        assert result["correct"], (mode, step, code, [r["feedback"] for r in result["results"]])
        ctx = context(bp, step)
        env = evaluate(code, ctx["scope"] | mine, ctx["shared"], ctx["mutable"], ctx["later"])
        mine |= {f"d{target}": env[f"d{target}"] for target in ctx["targets"]}
    # every gradient of the mode came out of the notebook's lines, and each is autograd's (the lecture's cmp:
    # torch.allclose, which broadcasts dbnmeani's (64,) against (1,64))
    names = {f"d{node.name}" for node in nodes_for_mode(mode) if node.kind != "input" and node.name != "loss"}
    assert set(mine) == names
    for name, grad in mine.items():
        assert torch.allclose(grad, autograd[name[1:]]), name


def test_the_notebooks_dbnmeani_is_right_and_told_its_shape(passes, autograd):
    bp = passes["atomic"]
    step = next(s for s, op in enumerate(bp.schedule, start=1) if op.name == "bndiff")
    result = grade(bp, step, "dhprebn = dbndiff.clone()\ndbnmeani = (-dbndiff).sum(0)")
    item = next(r for r in result["results"] if r["name"] == "dbnmeani")
    assert result["correct"] and item["cmp"]["approx"] and item["shape"] == [64] and item["expected_shape"] == [1, 64]
    assert item["feedback"][1] == (
        "dbnmeani has shape (64,), autograd's (1,64): keepdim=True in the sum gives the exact shape; the lecture's "
        "cmp passes because == and allclose broadcast (64,) against (1,64)"
    )
    # the lecture's cmp says so too: == and allclose broadcast
    ctx = context(bp, step)
    mine = evaluate("dbnmeani = (-dbndiff).sum(0)", ctx["scope"], ctx["shared"], ctx["mutable"], ctx["later"])
    assert mine["dbnmeani"].shape == (64,) and torch.allclose(mine["dbnmeani"], autograd["bnmeani"])
    # (32,) against (32,1) is no such case: it broadcasts to (32,32), and the lecture's cmp fails it too
    (item,) = grade(bp, 4, "dcounts_sum = ((-counts_sum**-2) * dcounts_sum_inv).view(-1)")["results"]
    assert item["cmp"]["approx"] is False and "expected (32,1)" in item["feedback"][0]


# --- feedback on wrong numbers of the right shape: the premise of each message is checked against autograd


@pytest.fixture(scope="module")
def atomic(passes):
    return passes["atomic"]


def step_of(bp, op: str) -> int:
    return next(s for s, o in enumerate(bp.schedule, start=1) if o.name == op)


def feedback(bp, step: int, code: str, name: str) -> tuple[list[str], torch.Tensor]:
    """The feedback on one gradient, and the gradient the code made (for the test to check the premise)."""
    result = grade(bp, step, code)
    item = next(r for r in result["results"] if r["name"] == name)
    assert not result["correct"] and not item["cmp"]["approx"]
    ctx = context(bp, step)
    env = evaluate(code, ctx["scope"], ctx["shared"], ctx["mutable"], ctx["later"])
    return item["feedback"], env[name]


def test_a_forgotten_division_by_n_is_named(atomic, autograd):
    said, got = feedback(
        atomic, 1, "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0", "dlogprobs"
    )
    assert torch.allclose(got, 32 * autograd["logprobs"])
    assert said == ["dlogprobs is 32× autograd's — n is 32: did you forget /n?"]


def test_a_sign_flip_is_named(atomic, autograd):
    said, got = feedback(atomic, 2, "dprobs = -(1.0 / probs) * dlogprobs", "dprobs")
    assert torch.allclose(got, -autograd["probs"])
    assert said == ["dprobs is autograd's with the sign flipped: a minus sign is missing, or one too many"]


def test_bessels_correction_left_out_is_named(atomic, autograd):
    said, got = feedback(
        atomic, step_of(atomic, "bnvar"), "dbndiff2 = (1.0/n)*torch.ones_like(bndiff2) * dbnvar", "dbndiff2"
    )
    assert torch.allclose(got, 31 / 32 * autograd["bndiff2"])
    assert said == ["dbndiff2 is 31/32× autograd's — did you divide by n where the forward pass divides by n-1 "
                    "(Bessel's correction in bnvar)?"]  # fmt: skip


def test_a_missing_chain_rule_factor_is_named(atomic, autograd):
    said, got = feedback(atomic, 2, "dprobs = 1.0 / probs", "dprobs")
    assert not torch.allclose(got, autograd["probs"])  # the local derivative of log, without dlogprobs
    assert said == ["dprobs equals the local derivative alone: multiply by dlogprobs (the chain rule)"]
    # with += onto the gradient so far, and the other way round: the upstream gradient alone
    said, _ = feedback(atomic, step_of(atomic, "counts_sum"), "dcounts += torch.ones_like(counts)", "dcounts")
    assert said == ["dcounts equals the local derivative alone: multiply by dcounts_sum (the chain rule)"]
    said, got = feedback(atomic, step_of(atomic, "h"), "dhpreact = dh", "dhpreact")
    assert torch.allclose(got, autograd["h"])
    assert said == ["dhpreact equals dh alone: multiply by the local derivative of h = torch.tanh(hpreact) "
                    "(the chain rule)"]  # fmt: skip


def test_a_transposed_gradient_is_named(lecture_dataset, atomic, autograd):
    # a wrong shape that is the transpose
    step = step_of(atomic, "logits")
    result = grade(atomic, step, "dh = dlogits @ W2.T\ndW2 = dlogits.T @ h\ndb2 = dlogits.sum(0)")
    (item,) = (r for r in result["results"] if r["name"] == "dW2")
    assert item["feedback"] == ["dW2: yours is (27,64), expected (64,27): it is autograd's transposed; "
                                "(A @ B).T = B.T @ A.T: swap the operands and transpose both"]  # fmt: skip
    # a square one, whose shape cannot tell: n_hidden = vocab size = 27
    bp = run_backward(replace(LECTURE, n_hidden=27), lecture_dataset, "atomic")
    said, got = feedback(bp, step, "dh = dlogits @ W2.T\ndW2 = dlogits.T @ h\ndb2 = dlogits.sum(0)", "dW2")
    reference = notebook_forward(bp.params, bp.values["Xb"], bp.values["Yb"])
    assert got.shape == (27, 27) and torch.allclose(got, reference["W2"].T)
    assert said == ["dW2 is autograd's transposed (square, so its shape could not tell): (A @ B).T = B.T @ A.T, "
                    "swap the operands and transpose both"]  # fmt: skip


def test_a_sum_over_the_wrong_dimension_is_named(passes):
    bp = passes["fused_bn"]
    wrong = EXERCISE_3.replace(".sum(0)", ".sum(1, keepdim=True)").strip()
    said, _ = feedback(bp, step_of(bp, "batchnorm"), wrong, "dhprebn")
    assert said == [
        "dhprebn sums over the wrong dimension: line 1: dhpreact.sum(1, keepdim=True) → dhpreact.sum(0, "
        "keepdim=True); line 1: (dhpreact * bnraw).sum(1, keepdim=True) → (dhpreact * bnraw).sum(0, keepdim=True) "
        "gives autograd's"
    ]
    said, _ = feedback(
        passes["fused"], 1, EXERCISE_2.replace("F.softmax(logits, 1)", "F.softmax(logits, 0)"), "dlogits"
    )
    assert said == ["dlogits reduces over the wrong dimension: line 1: F.softmax(logits, 0) → F.softmax(logits, 1) "
                    "gives autograd's"]  # fmt: skip


def test_only_some_rows_wrong_are_named(atomic, autograd):
    step = step_of(atomic, "emb")
    last_example_left_out = EXERCISE_1[EXERCISE_1.index("dC = ") :].replace("range(Xb.shape[0])", "range(n - 1)")
    said, got = feedback(atomic, step, last_example_left_out, "dC")
    rows = sorted(set(atomic.values["Xb"][-1].tolist()))  # the characters of the example the loop left out
    wrong = [i for i in range(27) if not torch.allclose(got[i], autograd["C"][i])]
    assert wrong == rows
    assert said == [f"dC: only rows {', '.join(map(str, rows))} are wrong ({len(rows)} of 27); the other rows match "
                    "autograd's"]  # fmt: skip


def test_torchs_shape_errors_are_said_with_the_operands(atomic):
    step = step_of(atomic, "logits")
    with pytest.raises(Refused) as refused:
        grade(atomic, step, "dh = dlogits @ W2.T\ndW2 = h @ dlogits\ndb2 = dlogits.sum(0)")
    assert (
        str(refused.value)
        == "line 2: h @ dlogits: (32,64) @ (32,27): inner sizes 64 and 32 — did you mean h.T @ dlogits?"
    )
    with pytest.raises(Refused) as refused:
        grade(atomic, step, "dh = W2 @ dlogits\ndW2 = h.T @ dlogits\ndb2 = dlogits.sum(0)")
    # the fix that gives dh its shape (32,64), of the ones that multiply
    assert (
        str(refused.value)
        == "line 1: W2 @ dlogits: (64,27) @ (32,27): inner sizes 27 and 32 — did you mean dlogits @ W2.T?"
    )
    with pytest.raises(Refused) as refused:
        grade(
            atomic, 3, "dcounts_sum_inv = (counts * dprobs.T).sum(1, keepdim=True)\ndcounts = counts_sum_inv * dprobs"
        )
    assert str(refused.value) == (
        "line 1: counts * dprobs.T: (32,27) and (27,32) do not broadcast: dim 1 has 27 and 32 (sizes must match, or "
        "one be 1) — did you mean counts * dprobs?"
    )


def test_a_loop_error_says_which_iteration(atomic):
    code = "dC = torch.zeros_like(C)\nfor k in range(n):\n  for j in range(4):\n    dC[Xb[k, j]] += demb[k, j]"
    with pytest.raises(Refused, match=r"^line 4 \(k = 0, j = 3\): index 3 is out of bounds for dimension 1"):
        grade(atomic, step_of(atomic, "emb"), code)


def test_the_notebooks_heaviest_steps_fit_the_caps_at_the_largest_config(lecture_dataset):
    largest = ModelConfig(batch_size=256, n_hidden=512, n_embd=64, block_size=8, dtype="float64")
    bp = run_backward(largest, lecture_dataset, "fused")
    steps = notebook_steps(bp, EXERCISE_4)
    for op in ("hprebn", "emb"):  # two 256x512x512 products; the dC loop's 2,048 iterations
        step = step_of(bp, op)
        assert grade(bp, step, steps[step - 1])["correct"], op


@pytest.mark.parametrize("mode", MODES)
def test_the_names_a_step_starts_with_are_the_passes_own(passes, mode):
    """The export has no pass: the names it checks a learner's code over, read from the declaration, are a check's."""
    from server.learner.cells import cell_names
    from server.learner.challenge import step_names

    bp = passes[mode]
    values = {k for k, v in bp.values.items() if isinstance(v, torch.Tensor | int) and not k.startswith("_")}
    for step in range(1, bp.total_steps + 1):
        grads = {f"d{n}" for n in bp.node_names() if n != "loss" and bp.grad_at(n, step - 1) is not None}
        assert step_names(NET, mode, step).given == values | grads, step
    cell = cell_names(NET, mode)
    made = {f"d{n}" for n in bp.totals if n != "loss"}
    assert set(cell.later) == made - cell.given and cell.unit == "line"


# --- a step that makes several gradients takes them one at a time, in either order (the lecture's order)

MULTI = [
    (mode, step)
    for mode in MODES
    for step, op in enumerate(backward_schedule(mode), start=1)
    if len({rule.target for rule in op.rules}) >= 2
]


@pytest.mark.parametrize(("mode", "step"), MULTI, ids=[f"{m}-{s}" for m, s in MULTI])
def test_each_gradient_of_a_step_alone_is_graded_and_the_rest_is_still_to_write(passes, autograd, mode, step):
    bp = passes[mode]
    rules = bp.schedule[step - 1].rules
    names = [f"d{rule.target}" for rule in rules]
    for rule in rules:
        name = f"d{rule.target}"
        result = grade(bp, step, rule.code)
        item = next(r for r in result["results"] if r["name"] == name)
        others = [n for n in names if n != name]
        assert item["cmp"]["approx"] and item["written"], (mode, step, rule.code, item["feedback"])
        assert not result["correct"] and result["written"] == [name] and result["remaining"] == others
        assert result["right"] == [name]
        for other in (r for r in result["results"] if r["name"] != name):
            assert not other["written"] and other["cmp"] is None
            assert other["feedback"] == [f"{other['name']} is still to write: this step makes {other['name']} too "
                                         f"({name} graded without it)"]  # fmt: skip
    # both (all) of them, in either order: the step is solved
    for codes in ([r.code for r in rules], [r.code for r in reversed(rules)]):
        result = grade(bp, step, "\n".join(codes))
        assert result["correct"] and result["remaining"] == [] and sorted(result["right"]) == sorted(names)


def test_the_lectures_order_at_the_step_through_probs(atomic, autograd):
    step = step_of(atomic, "probs")
    result = grade(atomic, step, "dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)")
    item = next(r for r in result["results"] if r["name"] == "dcounts_sum_inv")
    ctx = context(atomic, step)
    mine = evaluate("dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)", ctx["scope"], ctx["shared"],
                    ctx["mutable"], ctx["later"])["dcounts_sum_inv"]  # fmt: skip
    assert torch.allclose(mine, autograd["counts_sum_inv"]) and item["cmp"]["approx"]
    assert result["remaining"] == ["dcounts"] and not result["correct"]
    assert not any("not defined" in f for r in result["results"] for f in r["feedback"])
    # then dcounts below it: solved
    both = "dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)\ndcounts = counts_sum_inv * dprobs"
    assert grade(atomic, step, both)["correct"]


def test_columns_that_match_only_as_zeros_are_not_partly_right_and_a_wrong_local_derivative_is_named(atomic, autograd):
    said, got = feedback(atomic, 2, "dprobs = probs * dlogprobs", "dprobs")
    # the premise: every column that matches autograd's is 0 in both; the right columns carry nothing
    matching = [j for j in range(27) if torch.allclose(got[:, j], autograd["probs"][:, j])]
    assert matching and all(not autograd["probs"][:, j].any() and not got[:, j].any() for j in matching)
    # and got is (something) * dlogprobs: zero where dlogprobs is
    dlogprobs = autograd["logprobs"]
    assert not got[dlogprobs == 0].any() and (dlogprobs == 0).any()
    assert said == ["dprobs is zero wherever dlogprobs is, so the chain rule's × dlogprobs is there; the local "
                    "derivative is wrong: how does logprobs = probs.log() change when probs changes?"]  # fmt: skip
    assert not any("only" in s for s in said)
