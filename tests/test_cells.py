"""Whole cells: the notebook's backward cells, typed as the notebook types them, graded at once; their cmp lines are
what the notebook prints, computed here by running the same text as plain Python against autograd."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F

from server.core.config import ModelConfig
from server.core.engine import run_backward
from server.learner.cells import grade_cell, split_cell
from server.learner.sandbox import Refused

from .test_challenge import EXERCISE_1, EXERCISE_2, EXERCISE_3, EXERCISE_4

# the notebook's cmp lines after Exercise 1's cell, as it writes them
EXERCISE_1_CMP = """\
cmp('logprobs', dlogprobs, logprobs)
cmp('probs', dprobs, probs)
cmp('counts_sum_inv', dcounts_sum_inv, counts_sum_inv)
cmp('counts_sum', dcounts_sum, counts_sum)
cmp('counts', dcounts, counts)
cmp('norm_logits', dnorm_logits, norm_logits)
cmp('logit_maxes', dlogit_maxes, logit_maxes)
cmp('logits', dlogits, logits)
cmp('h', dh, h)
cmp('W2', dW2, W2)
cmp('b2', db2, b2)
cmp('hpreact', dhpreact, hpreact)
cmp('bngain', dbngain, bngain)
cmp('bnbias', dbnbias, bnbias)
cmp('bnraw', dbnraw, bnraw)
cmp('bnvar_inv', dbnvar_inv, bnvar_inv)
cmp('bnvar', dbnvar, bnvar)
cmp('bndiff2', dbndiff2, bndiff2)
cmp('bndiff', dbndiff, bndiff)
cmp('bnmeani', dbnmeani, bnmeani)
cmp('hprebn', dhprebn, hprebn)
cmp('embcat', dembcat, embcat)
cmp('W1', dW1, W1)
cmp('b1', db1, b1)
cmp('emb', demb, emb)
cmp('C', dC, C)
"""
EXERCISE_2_CMP = "cmp('logits', dlogits, logits) # I can only get approximate to be true, my maxdiff is 6e-9\n"
EXERCISE_3_CMP = "cmp('hprebn', dhprebn, hprebn) # I can only get approximate to be true, my maxdiff is 9e-10\n"
# Exercise 4's block ends with the gradients the update zips with the parameters; the notebook's check after the
# loop (commented out there) prints one line per parameter
EXERCISE_4_GRADS = "grads = [dC, dW1, db1, dW2, db2, dbngain, dbnbias]\n"
EXERCISE_4_CHECK = "for p,g in zip(parameters, grads):\n  cmp(str(tuple(p.shape)), g, p)\n"
# the order of the lecture: Exercise 1's cmp lines, and the fused mode's gradients in it
ATOMIC_ORDER = [line.split("'")[1] for line in EXERCISE_1_CMP.splitlines()]
FUSED_ORDER = ["logits", "h", "W2", "b2", "hpreact", "bngain", "bnbias", "hprebn", "embcat", "W1", "b1", "emb", "C"]


LECTURE = ModelConfig()


@pytest.fixture(scope="module")
def passes(lecture_dataset):
    return {mode: run_backward(LECTURE, lecture_dataset, mode) for mode in ("atomic", "fused_ce", "fused_bn", "fused")}


def notebook_prints(mode: str, bp, cell: str, cmp_lines: str) -> list[str]:
    """The notebook's cell, then its cmp lines, as plain Python: each cmp compares with the tensor's autograd .grad."""
    printed: list[str] = []
    tensors, scope = _notebook_scope(mode, bp)
    if mode == "fused_bn":  # Exercise 1's lines up to dhpreact came before Exercise 3's cell
        exec(EXERCISE_1[: EXERCISE_1.index("dbngain")], scope)
    exec(textwrap.dedent(cell), scope)

    def cmp(s, dt, t):  # the notebook's cmp, printing into a list
        ex = torch.all(dt == t.grad).item()
        app = torch.allclose(dt, t.grad)
        maxdiff = (dt - t.grad).abs().max().item()
        printed.append(f"{s:15s} | exact: {str(ex):5s} | approximate: {str(app):5s} | maxdiff: {maxdiff}")

    parameters = [tensors[k] for k in ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")]
    exec(cmp_lines, {**scope, **tensors, "cmp": cmp, "parameters": parameters})  # the tensors with their .grad
    return printed


def _notebook_scope(mode: str, bp) -> tuple[dict, dict]:
    """The notebook's forward of the mode on the server's parameters and batch: its tensors (autograd's .grad on
    each), and the cell's scope (the same values, detached, with n, Xb, Yb, torch and F)."""
    p = {k: t.clone().requires_grad_(True) for k, t in bp.params.items()}
    C, W1, b1, bngain, bnbias, W2, b2 = (p[k] for k in ("C", "W1", "b1", "bngain", "bnbias", "W2", "b2"))
    Xb, Yb = bp.values["Xb"], bp.values["Yb"]
    n = Xb.shape[0]
    emb = C[Xb]
    embcat = emb.view(emb.shape[0], -1)
    hprebn = embcat @ W1 + b1
    if mode in ("atomic", "fused_ce"):  # Exercise 1's forward
        bnmeani = 1 / n * hprebn.sum(0, keepdim=True)
        bndiff = hprebn - bnmeani
        bndiff2 = bndiff**2
        bnvar = 1 / (n - 1) * (bndiff2).sum(0, keepdim=True)
        bnvar_inv = (bnvar + 1e-5) ** -0.5
        bnraw = bndiff * bnvar_inv
    else:  # Exercise 4's training loop
        bnmean = hprebn.mean(0, keepdim=True)
        bnvar = hprebn.var(0, keepdim=True, unbiased=True)
        bnvar_inv = (bnvar + 1e-5) ** -0.5
        bnraw = (hprebn - bnmean) * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = torch.tanh(hpreact)
    logits = h @ W2 + b2
    if mode in ("atomic", "fused_bn"):  # the lecture's loss, line by line
        logit_maxes = logits.max(1, keepdim=True).values
        norm_logits = logits - logit_maxes
        counts = norm_logits.exp()
        counts_sum = counts.sum(1, keepdims=True)
        counts_sum_inv = counts_sum**-1
        probs = counts * counts_sum_inv
        logprobs = probs.log()
        loss = -logprobs[range(n), Yb].mean()
    else:  # Exercise 2's loss_fast
        loss = F.cross_entropy(logits, Yb)
    tensors = {k: t for k, t in locals().items() if isinstance(t, torch.Tensor) and t.requires_grad}
    for t in tensors.values():
        if not t.is_leaf:
            t.retain_grad()
    loss.backward()
    assert torch.equal(loss.detach(), bp.values["loss"])  # the notebook's forward is the server's
    values = {k: t.detach() for k, t in tensors.items()}
    return tensors, {"torch": torch, "F": F, "n": n, "Xb": Xb, "Yb": Yb, **values}


CELLS = {  # the notebook's cells as it writes them, cmp lines and all
    "atomic": (EXERCISE_1, EXERCISE_1_CMP),
    "fused_ce": ("# backward pass\n\n# -----------------\n# YOUR CODE HERE :)\n" + EXERCISE_2 + "# -----------------\n",
                 EXERCISE_2_CMP),
    "fused_bn": ("# -----------------\n# YOUR CODE HERE :)\n" + EXERCISE_3 + "# -----------------\n", EXERCISE_3_CMP),
    "fused": (EXERCISE_4 + EXERCISE_4_GRADS, EXERCISE_4_CHECK),
}  # fmt: skip


@pytest.mark.parametrize("mode", list(CELLS))
def test_the_notebooks_cells_grade_right_with_their_cmp_lines_as_the_notebook_prints_them(passes, mode):
    bp = passes[mode]
    cell, cmp_lines = CELLS[mode]
    expected = notebook_prints(mode, bp, cell, cmp_lines)
    answer = grade_cell(bp, cell + "\n" + cmp_lines)
    assert answer["correct"] and answer["first_wrong"] is None and answer["notes"] == [], answer
    assert [p["text"] for p in answer["printed"]] == expected
    assert all(p["ok"] for p in answer["printed"])


@pytest.mark.parametrize("mode", list(CELLS))
def test_a_check_line_per_gradient_in_the_lectures_order(passes, mode):
    bp = passes[mode]
    cell = CELLS[mode][0]
    order = {"atomic": ATOMIC_ORDER, "fused_ce": ["logits"], "fused_bn": ["hprebn"], "fused": FUSED_ORDER}[mode]
    cmp_lines = "".join(f"cmp('{name}', d{name}, {name})\n" for name in order)
    expected = notebook_prints(mode, bp, cell, cmp_lines)
    answer = grade_cell(bp, cell)  # without cmp lines: the check lines say the same
    assert [c["name"] for c in answer["checks"]] == order
    assert [c["text"] for c in answer["checks"]] == expected
    assert all(c["ok"] and c["required"] for c in answer["checks"]) and answer["printed"] == []


def test_exercise_4s_block_as_it_stands_in_the_training_loop(passes):
    indented = textwrap.indent(EXERCISE_4 + EXERCISE_4_GRADS, "  ")  # copied from inside for i in range(max_steps):
    assert indented.startswith("  # manual backprop!")
    answer = grade_cell(passes["fused"], indented)
    assert answer == grade_cell(passes["fused"], EXERCISE_4 + EXERCISE_4_GRADS) and answer["correct"]


def test_the_lectures_exact_and_approximate_gradients(passes):
    # the lecture's video: bit-exact down to b2; from hpreact on only approximately (tanh's backward kernel)
    checks = grade_cell(passes["atomic"], EXERCISE_1)["checks"]
    exact = [c["name"] for c in checks if c["cmp"]["exact"]]
    assert exact == ATOMIC_ORDER[: ATOMIC_ORDER.index("hpreact")]
    assert all(c["cmp"]["approx"] for c in checks)
    # the notebook's dbnmeani is (64,) for (1,64): right, and told its shape
    (bnmeani,) = (c for c in checks if c["name"] == "bnmeani")
    assert bnmeani["ok"] and "keepdim=True" in bnmeani["feedback"][0]


def test_a_cell_that_goes_on_past_its_exercise_is_checked_further(passes):
    # Exercise 2's three lines, then Exercise 1's lines from dh: the rest of the mode's backward
    cell = EXERCISE_2 + EXERCISE_1[EXERCISE_1.index("dh = ") :]
    answer = grade_cell(passes["fused_ce"], cell)
    names = [c["name"] for c in answer["checks"]]
    assert names == [n for n in ATOMIC_ORDER if n in passes["fused_ce"].totals]
    assert answer["correct"] and [c["required"] for c in answer["checks"]] == [True] + [False] * (len(names) - 1)


# --- the first wrong line: each premise checked against autograd here, by running the same text ------------------


def wrong(bp, cell: str, mode: str = "atomic") -> tuple[dict, list[str]]:
    """The answer on a wrong cell, and what the notebook prints for it (every gradient, in the lecture's order)."""
    answer = grade_cell(bp, cell)
    assert not answer["correct"]
    printed = notebook_prints(mode, bp, cell, "".join(f"cmp('{n}', d{n}, {n})\n" for n in ATOMIC_ORDER))
    assert [c["text"] for c in answer["checks"]] == printed
    return answer, printed


def test_a_sign_flip_is_the_first_wrong_line_and_everything_after_it_is_wrong(passes):
    cell = EXERCISE_1.replace("dcounts_sum = (-counts_sum**-2)", "dcounts_sum = (counts_sum**-2)")
    answer, printed = wrong(passes["atomic"], cell)
    # the notebook's own lines: right up to counts_sum_inv, wrong from counts_sum on, as autograd says
    right = [line.split()[0] for line in printed if "approximate: True" in line]
    assert right == ["logprobs", "probs", "counts_sum_inv"]
    first = answer["first_wrong"]
    assert first["line"] == 6 and first["code"] == "dcounts_sum = (counts_sum**-2) * dcounts_sum_inv"
    assert first["feedback"] == [
        "dcounts_sum is autograd's with the sign flipped: a minus sign is missing, or one too many"
    ]
    assert first["diff"]["shape"] == [32, 1]


def test_an_assignment_where_the_second_path_adds_is_named(passes):
    cell = EXERCISE_1.replace("dcounts += torch.ones_like", "dcounts = torch.ones_like")
    answer, printed = wrong(passes["atomic"], cell)
    assert "counts          | exact: False" in printed[4]
    first = answer["first_wrong"]
    assert first["line"] == 7 and first["name"] == "dcounts"
    assert first["feedback"][0].startswith("dcounts is only this step's contribution: counts is used by 2 ops")


def test_a_second_path_left_out_is_named_where_the_gradient_is_used(passes):
    cell = EXERCISE_1.replace("dbndiff += (2*bndiff) * dbndiff2\n", "")
    answer, printed = wrong(passes["atomic"], cell)
    assert "bndiff          | exact: False | approximate: False" in printed[ATOMIC_ORDER.index("bndiff")]
    first = answer["first_wrong"]
    assert first["code"] == "dhprebn = dbndiff.clone()"
    assert first["feedback"][0] == (
        f"line {first['line']} reads dbndiff, which holds 1 of its 2 contributions there: add them all (the += "
        "lines) before dbndiff is used"
    )
    # a cell that stops there: the gradient itself is told
    cell = EXERCISE_1[: EXERCISE_1.index("dcounts += ")]
    answer = grade_cell(passes["atomic"], cell)
    first = answer["first_wrong"]
    assert first["line"] == 5 and first["feedback"] == [
        "dcounts holds 1 of its 2 contributions: counts feeds 2 ops in the forward pass; add the other path with "
        "dcounts += ..."
    ]


def test_a_gradient_used_before_its_second_path_is_added_is_named(passes):
    lines = EXERCISE_1.splitlines()
    moved = lines.index("dnorm_logits = counts * dcounts")
    before = lines.index("dcounts_sum = (-counts_sum**-2) * dcounts_sum_inv")
    lines.insert(before, lines.pop(moved))  # dnorm_logits from dcounts before dcounts += ...
    answer, printed = wrong(passes["atomic"], "\n".join(lines) + "\n")
    assert "norm_logits     | exact: False | approximate: False" in printed[5]
    first = answer["first_wrong"]
    assert first["line"] == before + 1 and first["name"] == "dnorm_logits"
    assert first["feedback"][0] == (
        f"line {before + 1} reads dcounts, which holds 1 of its 2 contributions there: add them all (the += lines) "
        "before dcounts is used"
    )


def test_a_gradient_changed_through_another_name_is_named(passes):
    # without .clone(), dhprebn is dbndiff: the += on dhprebn changes dbndiff too
    cell = EXERCISE_1.replace("dhprebn = dbndiff.clone()", "dhprebn = dbndiff")
    answer, printed = wrong(passes["atomic"], cell)
    assert "bndiff          | exact: False | approximate: False" in printed[ATOMIC_ORDER.index("bndiff")]
    assert "hprebn          | exact: False | approximate: True" in printed[ATOMIC_ORDER.index("hprebn")]
    first = answer["first_wrong"]
    assert first["name"] == "dbndiff" and first["code"] == "dbndiff += (2*bndiff) * dbndiff2"
    assert first["feedback"] == [
        f"dbndiff was right after line {first['line']} and changed after it: line {first['line'] + 1} makes dhprebn "
        "the same memory as dbndiff, so changing dhprebn in place (+=, [...] =) changes dbndiff too: dhprebn = "
        "dbndiff.clone() makes a copy"
    ]


def test_a_sum_over_the_wrong_dim_in_a_cell_is_named(passes):
    cell = EXERCISE_3.replace(".sum(0)", ".sum(1, keepdim=True)")
    answer = grade_cell(passes["fused_bn"], cell)
    assert not answer["correct"] and answer["first_wrong"]["line"] == 1
    assert answer["first_wrong"]["feedback"][0].startswith("dhprebn sums over the wrong dimension: line 1:")


def test_a_missing_gradient_is_not_defined(passes):
    cell = EXERCISE_1[: EXERCISE_1.index("dC = ")]
    answer = grade_cell(passes["atomic"], cell)
    (last,) = answer["checks"][-1:]
    assert not answer["correct"] and last["name"] == "C" and last["text"] == "C               | dC is not defined"
    assert answer["first_wrong"]["line"] is None and answer["first_wrong"]["name"] == "dC"


def test_a_cmp_line_is_answered_where_it_stands(passes):
    # a cmp line between the lines: dcounts holds its first path there, and the notebook would say so too
    cell = EXERCISE_1.replace("dcounts_sum = ", "cmp('counts', dcounts, counts)\ndcounts_sum = ")
    answer = grade_cell(passes["atomic"], cell)
    (early,) = answer["printed"]
    first_five = "\n".join(EXERCISE_1.splitlines()[:5])
    (expected,) = notebook_prints("atomic", passes["atomic"], first_five, "cmp('counts', dcounts, counts)")
    assert early == {"line": 6, "text": expected, "ok": False}
    assert "counts          | exact: False | approximate: False" in expected
    assert answer["correct"]  # the cell itself is right


def test_grads_in_another_order_is_said(passes):
    cell = EXERCISE_4 + "grads = [dW1, dC, db1, dW2, db2, dbngain, dbnbias]\n"
    answer = grade_cell(passes["fused"], cell)
    assert not answer["correct"] and all(c["ok"] for c in answer["checks"])
    line = EXERCISE_4.count("\n") + 1
    assert answer["notes"] == [
        f"line {line}: grads = [dW1, dC, db1, dW2, db2, dbngain, dbnbias]: the update zips it with parameters = "
        "[C, W1, b1, W2, b2, bngain, bnbias], so it must be [dC, dW1, db1, dW2, db2, dbngain, dbnbias]"
    ]


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("dlogits = F.softmax(logits, 1)\nfor k in range(n):\n  cmp('logits', dlogits, logits)", "top level"),
        ("dlogits = F.softmax(logits, 1); cmp('logits', dlogits, logits)", "a line of its own"),
        ("cmp('logits', dlogits.T, logits)", "cmp takes the name"),
        ("print(logits)", "print(...) cannot be called"),
        ("x = 'logits'", "strings are not allowed"),
        ("grads = [dC, 1]", "grads lists the gradients by name"),
        ("for p,g in zip(parameters, grads):\n  cmp(str(tuple(p.shape)), g, p)", "write grads = [dC, dW1, ...]"),
        ("dlogits = F.softmax(logits, 1)\n" + "# " + "x" * 8000, "at most 8000"),
        ("logits += 1", "logits is shared"),
        ("dh = dlogits @ W2.T", "dlogits is not defined yet at this line"),
        ("cmp('logits', dlogits, logits)", "there is no code"),
    ],
)  # fmt: skip
def test_refused_cells_say_why(passes, cell, reason):
    with pytest.raises(Refused, match=None) as refused:
        grade_cell(passes["fused"], cell)
    assert reason in str(refused.value)


def test_cmp_lines_are_capped_like_everything_else_a_cell_computes(passes):
    from server.learner.cells import MAX_CMP_ENTRIES, MAX_CMP_WORK

    # (1024,1,1) against hprebn's (32,64): 2M entries a line, as many as one line may compare
    per_line = 1024 * 32 * 64
    assert per_line == MAX_CMP_ENTRIES
    lines = MAX_CMP_WORK // per_line + 1
    cell = "d = hprebn.view(2048, 1, 1)[0:1024]\n" + "cmp('x', d, hprebn)\n" * lines
    printed = grade_cell(passes["fused"], cell)["printed"]
    assert all("| exact: False | approximate: False" in p["text"] for p in printed[:-1])
    assert (
        printed[-1]["text"] == "x               | not compared: the cell's cmp lines compare more than 16,777,216 "
        "entries in all"
    )
    # one line past the per-line cap is said, not computed
    (line,) = grade_cell(passes["fused"], "d = hprebn.view(2048, 1, 1)\ncmp('x', d, hprebn)")["printed"]
    assert line["text"] == "x               | shape (2048, 1, 1) against (32, 64) broadcasts to (2048, 32, 64)"


@pytest.mark.parametrize("label", ["\\ud800", "\\udfff", "\\x00", "a\\nb", "\\u00e9"])
def test_a_cmp_label_that_is_not_plain_text_is_refused(label):
    with pytest.raises(Refused, match="line 2: a cmp label is plain text"):
        split_cell(f"dlogits = F.softmax(logits, 1)\ncmp('{label}', dlogits, logits)")


def test_a_cells_feedback_reruns_cost_a_fixed_multiple_of_its_own_check(passes, monkeypatch):
    """An expensive loop early in a cell, a wrong-dim line later: the reruns that look for the slip rerun the loop."""
    from server.learner import sandbox

    spent = sandbox.Cost()
    run = sandbox.Interpreter.run

    def counted(self, tree, after=None):
        try:
            return run(self, tree, after)
        finally:
            if self.meta:  # the dry run counts what the real run will spend
                spent.add(self.cost)

    monkeypatch.setattr(sandbox.Interpreter, "run", counted)
    loop = "for k in range(2000):\n  t = logits[0, 0]\n"
    right = loop + "dlogits = (F.softmax(logits, 1) - F.one_hot(Yb, 27)) / n"
    # four reductions over a dim: twelve variants, none of which gives autograd's
    wrong = loop + (
        "dlogits = F.softmax(logits, 0) + logits.sum(0, keepdim=True) * 0 + logits.sum(1, keepdim=True) * 0 "
        "+ logits.max(0, keepdim=True).values * 0"
    )
    assert grade_cell(passes["fused_ce"], right)["correct"]
    check = sandbox.Cost(**vars(spent))
    spent.__init__()
    answer = grade_cell(passes["fused_ce"], wrong)
    assert not answer["correct"] and answer["first_wrong"]["line"] == 3
    assert spent.iterations <= 5 * check.iterations and spent.evaluations <= 5 * check.evaluations, (spent, check)
    assert spent.tensor_ops <= 5 * check.tensor_ops and spent.work <= 5 * check.work, (spent, check)


# --- a cell's diagnosis names the same slips a step does, on the value the lines that build a gradient leave


def _final(bp, cell: str, name: str) -> torch.Tensor:
    """The gradient the cell leaves, run as plain Python on the pass's values (the test's own premise)."""
    scope = dict(bp.values) | {"F": F, "torch": torch, "n": bp.config.batch_size}
    scope |= {f"d{k}": bp.ref_grads[k] for k in ("logits", "hpreact") if k in bp.ref_grads}
    exec(textwrap.dedent(cell), scope)  # noqa: S102 - the test's own cells, as the notebook runs them
    return scope[name]


def test_a_left_out_division_by_n_in_exercise_2s_cell_names_the_missing_line(passes):
    bp = passes["fused_ce"]
    cell = EXERCISE_2.replace("dlogits /= n\n", "")
    assert torch.allclose(_final(bp, cell, "dlogits"), 32 * bp.ref_grads["logits"])
    first = grade_cell(bp, cell)["first_wrong"]
    # no line that is there is blamed: the line that is not there is named
    assert first["line"] is None and first["missing"] == {"after": 2, "code": "dlogits /= n"}
    assert first["feedback"] == [
        "dlogits is 32× autograd's — n is 32: did you forget /n?",
        "no line divides dlogits by n (lines 1–2 make it): the line `dlogits /= n` is missing after line 2",
    ]


def test_a_softmax_over_the_wrong_dim_in_exercise_2s_cell_is_named(passes):
    bp = passes["fused_ce"]
    first = grade_cell(bp, EXERCISE_2.replace("F.softmax(logits, 1)", "F.softmax(logits, 0)"))["first_wrong"]
    assert first["line"] == 1 and first["end_line"] == 3 and first["missing"] is None
    assert first["feedback"] == [
        "dlogits reduces over the wrong dimension: line 1: F.softmax(logits, 0) → F.softmax(logits, 1) gives autograd's"
    ]


def test_a_sign_flip_in_exercise_2s_cell_is_named(passes):
    bp = passes["fused_ce"]
    cell = EXERCISE_2.replace("dlogits[range(n), Yb] -= 1", "dlogits[range(n), Yb] -= 1\ndlogits = -dlogits")
    assert torch.allclose(_final(bp, cell, "dlogits"), -bp.ref_grads["logits"])
    first = grade_cell(bp, cell)["first_wrong"]
    assert first["feedback"] == [
        "dlogits is autograd's with the sign flipped: a minus sign is missing, or one too many"
    ]


@pytest.mark.parametrize(
    ("new", "factor", "said"),
    [
        ("bngain*bnvar_inv * (", 32, "dhprebn is 32× autograd's — n is 32: did you forget /n?"),
        ("bngain*bnvar_inv/n/n * (", 1 / 32, "dhprebn is 1/32× autograd's — n is 32: divided by n once too often?"),
    ],
    ids=["forgot-n", "n-too-often"],
)
def test_a_factor_in_exercise_3s_cell_is_named(passes, new, factor, said):
    bp = passes["fused_bn"]
    cell = EXERCISE_3.replace("bngain*bnvar_inv/n * (", new)
    assert torch.allclose(_final(bp, cell, "dhprebn"), factor * bp.ref_grads["hprebn"])
    first = grade_cell(bp, cell)["first_wrong"]
    assert first["line"] == 1 and first["feedback"] == [said]


def test_a_sign_flip_in_exercise_3s_cell_is_named(passes):
    bp = passes["fused_bn"]
    first = grade_cell(bp, "dhprebn = -(" + EXERCISE_3.strip().removeprefix("dhprebn = ") + ")\n")["first_wrong"]
    assert first["line"] == 1 and first["feedback"] == [
        "dhprebn is autograd's with the sign flipped: a minus sign is missing, or one too many"
    ]


def test_exercise_1s_cell_names_a_missing_chain_factor_and_a_missing_division(passes):
    bp = passes["atomic"]
    first = grade_cell(bp, EXERCISE_1.replace("dprobs = (1.0 / probs) * dlogprobs", "dprobs = (1.0 / probs)"))
    assert first["first_wrong"]["line"] == 3 and first["first_wrong"]["feedback"] == [
        "dprobs equals the local derivative alone: multiply by dlogprobs (the chain rule)"
    ]
    first = grade_cell(bp, EXERCISE_1.replace("= -1.0/n", "= -1.0"))["first_wrong"]
    assert first["line"] is None and first["missing"] == {"after": 2, "code": "dlogprobs /= n"}
    assert first["feedback"][0] == "dlogprobs is 32× autograd's — n is 32: did you forget /n?"


def test_a_left_out_one_hot_line_in_exercise_2s_cell_is_named_where_it_goes(passes):
    bp = passes["fused_ce"]
    cell = EXERCISE_2.replace("dlogits[range(n), Yb] -= 1\n", "")
    # the premise: the cell's dlogits is autograd's plus 1/n at [range(n), Yb], and only there
    diff = _final(bp, cell, "dlogits") - bp.ref_grads["logits"]
    n, Yb = 32, bp.values["Yb"]
    assert torch.allclose(diff[range(n), Yb], torch.full((n,), 1 / n))
    diff[range(n), Yb] = 0
    assert float(diff.abs().max()) < 1e-6
    first = grade_cell(bp, cell)["first_wrong"]
    assert first["line"] is None and first["missing"] == {"after": 1, "code": "dlogits[range(n), Yb] -= 1"}
    assert first["feedback"] == [
        "dlogits differs from autograd's only at [range(n), Yb], each by 1/n: the line `dlogits[range(n), Yb] -= 1` "
        "is missing after line 1"
    ]
