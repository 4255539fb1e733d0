"""Exercise 4 with the learner's own backward (server/training/code_backward.py): the notebook's block, checked
once, compiled, and trained; the compiled block computes what the interpreter computes; wrong blocks show in the
checks and the loss.
"""

from __future__ import annotations

import pytest
import torch

from server.core.engine import init_params
from server.learner.sandbox import Interpreter, Refused
from server.training.code_backward import CodeBackward, run_program
from server.training.config import TrainConfig
from server.training.loop import Training

from .test_challenge import EXERCISE_4

# the notebook's block inside the training loop, as it writes it, and the list its update zips with the parameters
BLOCK = EXERCISE_4 + "grads = [dC, dW1, db1, dW2, db2, dbngain, dbnbias]\n"
SHORT = {"max_steps": 2000, "lr_decay_step": 1000, "check_every": 100}


def train(dataset, **fields):
    events: list[tuple[str, dict]] = []
    training = Training(TrainConfig(**{**SHORT, **fields}), dataset, lambda kind, data: events.append((kind, data)))
    status = training.run()
    return training, status, events


@pytest.fixture(scope="module")
def built_in(lecture_dataset):
    return train(lecture_dataset)


def test_the_lectures_block_trains_as_the_built_in_backward_does(lecture_dataset, built_in):
    reference, _, _ = built_in
    training, status, events = train(lecture_dataset, backward="code", code=BLOCK)
    assert status == "finished"
    # the same seed, the same batches: after 2,000 steps the losses are the built-in run's within 1e-4
    assert float((training.losses - reference.losses).abs().max()) < 1e-4
    assert abs(float(training.losses[-100:].mean()) - float(reference.losses[-100:].mean())) < 1e-4
    assert float(training.losses[-100:].mean()) < float(training.losses[:100].mean()) - 0.4  # it learned
    checks = [data for kind, data in events if kind == "check"]
    assert [c["step"] for c in checks] == [*range(0, 2000, 100), 1999]
    assert all(c["wrong"] == [] and c["max"] < 1e-6 for c in checks)
    verdict = training.verdict(status)
    assert verdict.startswith("your backward agreed with autograd at all 21 checks") and "the loss fell" in verdict
    result = next(data for kind, data in events if kind == "result")
    assert len(result["samples"]) == 20 and result["val_loss"] < 2.8
    # the histograms of the gradients the block names as the built-in backward does
    hist = next(data for kind, data in events if kind == "histograms")
    assert set(hist["activation_grads"]) == {"dlogits", "dhpreact", "dhprebn"}


@pytest.mark.parametrize(
    ("broken", "wrong"),
    [
        # a sign flipped at the top: every gradient points uphill and the loss climbs
        (BLOCK.replace("dlogits /= n", "dlogits /= -n"), {"C", "W1", "W2", "b2", "bngain", "bnbias"}),
        # the one-hot forgotten: the gradient only pushes the logits towards uniform, and the loss stalls at ln 27
        (BLOCK.replace("dlogits[range(n), Yb] -= 1\n", ""), {"C", "W1", "W2", "b2", "bngain", "bnbias"}),
    ],
)
def test_a_broken_block_fails_its_checks_and_the_loss_does_not_fall_as_it_should(
    lecture_dataset, built_in, broken, wrong
):
    reference, _, _ = built_in
    training, status, events = train(lecture_dataset, backward="code", code=broken)
    checks = [data for kind, data in events if kind == "check"]
    assert set(checks[0]["wrong"]) >= wrong and all(c["wrong"] for c in checks)
    assert all(c["max"] is None or c["max"] > 1e-3 for c in checks)
    verdict = training.verdict(status)
    assert verdict.startswith("your backward disagrees with autograd from the check at step 0: dC (max |diff|")
    end = float(training.losses[training.flushed - 100 : training.flushed].mean())
    assert not end < float(reference.losses[-100:].mean()) + 0.5  # nowhere near what the right block reaches
    assert status == "diverged" or "; the loss did not fall: " in verdict or "no lower than a uniform guess" in verdict


@pytest.fixture(scope="module")
def lecture_params():
    config = TrainConfig()
    p, g = init_params(config.model(), 27)
    batches = [(torch.randint(0, 27, (32, 3), generator=g), torch.randint(0, 27, (32,), generator=g)) for _ in range(4)]
    return p, batches


NOTEBOOK_DC = (
    "for k in range(Xb.shape[0]):\n  for j in range(Xb.shape[1]):\n    ix = Xb[k,j]\n    dC[ix] += demb[k,j]\n"
)
VARIANTS = {
    "the notebook's": (BLOCK, 1),
    "without ix": (
        BLOCK.replace(NOTEBOOK_DC, "for k in range(n):\n  for j in range(3):\n    dC[Xb[k,j]] += demb[k,j]\n"),
        1,
    ),
    "ix read after the loop": (BLOCK.replace("grads =", "dC[ix] += 0.0 * dC[ix]\ngrads ="), 1),
    "index_add_": (BLOCK.replace(NOTEBOOK_DC, "dC.index_add_(0, Xb.view(-1), demb.view(-1, 10))\n"), 0),
    # recognised by its syntax, but not a box of entries when it runs: run as the loop it is
    "a loop from 1": (BLOCK.replace("range(Xb.shape[0])", "range(1, Xb.shape[0])"), 1),
    # a row per context: Xb[k] indexes three rows at once, and a repeated row is added once, as PyTorch does
    "rows at once": (BLOCK.replace(NOTEBOOK_DC, "for k in range(n):\n  dC[Xb[k]] += demb[k]\n"), 1),
    "one-hot": (BLOCK.replace("dlogits[range(n), Yb] -= 1", "dlogits = dlogits - F.one_hot(Yb, num_classes=27)"), 1),
    "no grads line": (EXERCISE_4, 1),
    # x[range(...), Yb] -= 1 is one index_put_ only for a range of increasing rows from 0 or more
    "pairs from 1": (
        BLOCK.replace(
            "dlogits[range(n), Yb] -= 1", "dlogits[range(1, n), Yb[1:]] -= 1\ndlogits[range(1), Yb[:1]] -= 1"
        ),
        1,
    ),
    "pairs backwards": (BLOCK.replace("dlogits[range(n), Yb] -= 1", "dlogits[range(n - 1, -1, -1), Yb] -= 1"), 1),
    # a result larger than the operand made for it: a new tensor, as the interpreter makes
    "a broadcast": (
        BLOCK.replace(
            "db2 = dlogits.sum(0)",
            "t = dlogits.sum(0, keepdim=True) + dlogits\ndb2 = (t - dlogits.sum(0, keepdim=True)).sum(0) / n",
        ),
        1,
    ),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_the_compiled_block_computes_bit_for_bit_what_the_interpreter_does(lecture_params, name):
    p, batches = lecture_params
    source, fused = VARIANTS[name]
    code = CodeBackward(p, 32, source, *batches[0])
    assert code.program.fused_loops == fused
    for Xb, Yb in batches[1:]:
        env = code.scope(Xb, Yb)
        shared = {k for k, v in env.items() if isinstance(v, torch.Tensor)}
        copies = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in env.items()}
        with torch.no_grad():
            want = Interpreter(copies, shared, set(), {}, meta=False, unit="line").run(code.program.tree)
            got = run_program(code.program, dict(env))
        for grad in code.program.grads:
            assert torch.equal(got[grad], want[grad]), grad
        for loop_name in ("k", "j", "ix"):  # as after the loops (ix: only where something reads it after them)
            if loop_name in got:
                assert torch.equal(torch.as_tensor(got[loop_name]), torch.as_tensor(want[loop_name]))
        assert "ix" in got or name != "ix read after the loop"


def test_the_fused_forward_is_the_declared_forward(lecture_params):
    from server.training.code_backward import forward_scope, reads
    from tests.lecture import NET

    p, batches = lecture_params
    code = CodeBackward(p, 32, BLOCK, *batches[0])
    assert code.fast  # the fused twin agreed with the declared forward on the first batch
    # what /api/meta says a block reads, and the sizes it may read
    assert set(reads(NET)) | {"n_embd", "n_hidden"} == forward_scope(p, *batches[0]).keys()
    for Xb, Yb in batches:
        declared, fast = forward_scope(p, Xb, Yb), code.scope(Xb, Yb)
        assert declared.keys() - {"loss"} == fast.keys()
        for k, v in fast.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                torch.testing.assert_close(v, declared[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (BLOCK.replace("grads = [dC, ", "grads = ["), "grads lists 6 gradients; the net has 7 parameters, in this "
         "order: C, W1, b1, W2, b2, bngain, bnbias"),
        (EXERCISE_4.replace("dC = torch.zeros_like(C)", "dCC = torch.zeros_like(C)").replace("dC[ix]", "dCC[ix]"),
         "dC is not computed by the block (end it with grads = [dC, dW1, db1, dW2, db2, dbngain, dbnbias])"),
        (BLOCK.replace("dbngain = (bnraw * dhpreact).sum(0, keepdim=True)", "dbngain = dhpreact.sum(0).view(-1, 1)"),
         "dbngain has shape (200,1) (torch.float32); the update subtracts it from bngain, of shape (1,200)"),
        # the safety of a check holds for every step of a run: loops and sizes are refused before anything runs
        (BLOCK + "for a in range(100):\n  for b in range(100):\n    dW1 = dW1 * 1.0\n", "the loops would run"),
        (BLOCK + "big = W1.view(-1, 1) * W1.view(1, -1)\n", "too big"),
        (BLOCK + "for n in range(3):\n  dW1 = dW1 * 1.0\n", "the loop variable n would hide n"),
        (BLOCK + "for W1 in range(3):\n  dW1 = dW1 * 1.0\n", "the loop variable W1 would hide the tensor W1"),
        (BLOCK + "W1 += 1.0\n", "W1 is shared (add-assignment would change it)"),
        (BLOCK + "w = W1.T\nw += 1.0\n", "w is shared"),
        (BLOCK + "for a in range(Xb[0,0]):\n  dW1 = dW1 * 1.0\n", "range takes 1 to 3 integers"),
        (BLOCK + "for a in range(3):\n  for b in range(3):\n    for c in range(3):\n      for d in range(3):\n"
         "        dW1 = dW1 * 1.0\n", "loops nest at most 3 deep"),
        (BLOCK.replace("dh = dlogits @ W2.T", "dh = dlogits @ W2"), "inner sizes 27 and 200 — did you mean"),
        ("import os\n" + BLOCK, "only assignments"),
        (BLOCK + "#" + "x" * 8000, "at most 8000"),
    ],
)  # fmt: skip
def test_a_block_that_cannot_train_is_refused_with_its_reason(lecture_params, source, reason):
    p, batches = lecture_params
    with pytest.raises(Refused, match=None) as e:
        CodeBackward(p, 32, source, *batches[0])
    assert reason in str(e.value)
    for t in p.values():
        assert not t.requires_grad


def test_parameters_are_unchanged_by_a_refused_or_checked_block(lecture_params):
    p, batches = lecture_params
    before = {k: t.clone() for k, t in p.items()}
    CodeBackward(p, 32, BLOCK, *batches[0]).grads(*batches[1])
    with pytest.raises(Refused):
        CodeBackward(p, 32, BLOCK + "W1 += 1.0\n", *batches[0])
    assert all(torch.equal(before[k], p[k]) for k in p)


def test_a_batch_only_a_later_step_draws_fails_the_step_with_its_line(lecture_params):
    p, _ = lecture_params
    Xb, Yb = torch.zeros(32, 3, dtype=torch.long), torch.zeros(32, dtype=torch.long)
    source = BLOCK.replace("dC[ix] += demb[k,j]", "dC[ix * 2] += demb[k,j]")  # fine while every entry is below 14
    code = CodeBackward(p, 32, source, Xb, Yb)
    later = Xb.clone()
    later[5, 1] = 20
    with pytest.raises(Refused) as e:
        code.grads(later, Yb)
    assert "line 26 (k = 5, j = 1)" in str(e.value) and "out of bounds" in str(e.value)


def interpreted(code: CodeBackward, Xb: torch.Tensor, Yb: torch.Tensor) -> dict:
    """The interpreter's run of the block on copies of a batch's names (what a check runs), told apart from the code."""
    env = code.scope(Xb, Yb)
    shared = {k for k, v in env.items() if isinstance(v, torch.Tensor)}
    copies = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in env.items()}
    with torch.no_grad():
        return Interpreter(copies, shared, set(), {}, meta=False, unit="line").run(code.program.tree)


def same_bits(a, b) -> bool:
    """Equal shape, dtype, layout and bits (NaN equal to the same NaN, -0.0 unequal to 0.0)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if (a.shape, a.dtype, a.stride()) != (b.shape, b.dtype, b.stride()):
            return False
        if a.is_floating_point():
            ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
            a, b = a.contiguous().view(ints), b.contiguous().view(ints)
        return torch.equal(a, b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same_bits(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def assert_as_interpreted(code: CodeBackward, batches, kept: tuple[str, ...] = ()) -> None:
    """Every name the block leaves, and every input it was given, as the interpreter leaves them, on each batch
    (the compiled block need not keep ix, the dC loop's, unless something reads it after the loop: `kept`)."""
    for Xb, Yb in batches:
        want = interpreted(code, Xb, Yb)
        given = code.scope(Xb, Yb)
        before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in given.items()}
        with torch.no_grad():
            got = run_program(code.program, dict(given))
        assert want.keys() - got.keys() <= {"ix"} - set(kept)
        for k in want.keys() & got.keys():
            assert same_bits(got[k], want[k]), k
        for k, v in before.items():
            assert same_bits(given[k], v), f"the block wrote into its input {k}"


LAST_LINE = "grads = ["


def inserted(lines: str) -> str:
    """The notebook's block with lines added just before its grads = [...]."""
    return BLOCK.replace(LAST_LINE, lines + LAST_LINE)


@pytest.mark.parametrize("name", ["W1", "Xb", "h", "emb"])
def test_plus_x_is_x_itself_and_no_tensor_to_write_into(lecture_params, name):
    p, batches = lecture_params
    before = {k: t.clone() for k, t in p.items()}
    split = torch.cat([batches[0][0], batches[1][0]])  # a cached training split: the check gets a view of it
    kept = split.clone()
    code = CodeBackward(p, 32, inserted(f"junk = (+{name}) * 0\n"), split[:32], batches[0][1])
    assert all(torch.equal(before[k], p[k]) for k in p), "the check wrote into a parameter"
    assert torch.equal(split, kept), "the check wrote into the cached split"
    assert_as_interpreted(code, batches[1:])
    code.step(*batches[1], 0.1)
    assert torch.equal(split, kept)


RIGHT_CODE = {
    # the result written into the right-hand operand takes that operand's layout: the transposed dh's is another
    "a transposed operand on the left": BLOCK.replace("dh = dlogits @ W2.T", "dh = (W2 @ dlogits.T).T").replace(
        "dhpreact = (1.0 - h**2) * dh", "dhpreact = dh * (1.0 - h**2)"
    ),
    "a transposed operand on the right": BLOCK.replace("dh = dlogits @ W2.T", "dh = (W2 @ dlogits.T).T"),
    # characters counted from the end: -27 is 0 and -1 is 26 for Python's indexing; index_add_ refuses them
    "negative entries": BLOCK.replace(NOTEBOOK_DC, "X = Xb - 27\n" + NOTEBOOK_DC.replace("Xb[k,j]", "X[k,j]")),
    # the rows added are the table's own, changed as the loop goes
    "rows read from the table": inserted(
        "T = demb.clone().view(-1, 10)\nV = T.view(emb.shape)\n"
        "for k in range(n):\n  for j in range(3):\n    ix = Xb[k,j]\n    T[ix] += V[k,j]\n"
    ),
    # every row of the table is one row of memory
    "a table of one row": inserted(
        "T = torch.zeros_like(C[0:1]).expand_as(C)\n"
        "for k in range(n):\n  for j in range(3):\n    ix = Xb[k,j]\n    T[ix] += demb[k,j]\n"
    ),
    "ix changed after the loop": BLOCK.replace(
        NOTEBOOK_DC, "X = Xb.clone()\n" + NOTEBOOK_DC.replace("Xb[k,j]", "X[k,j]")
    ).replace(LAST_LINE, "ix += 0\n" + LAST_LINE),
    # every row of e is one row of memory: the interpreter subtracts 1 once at each place, however often Yb names it
    "a -= through expand_as": inserted("e = F.softmax(logits, 1)[0:1].expand_as(logits)\ne[range(n), Yb] -= 1\n"),
    # a method's arguments are evaluated before its tensor: u is dC after the index_add_
    "a method's arguments first": inserted("u = (dC * 1.0).expand_as(dC.index_add_(0, Xb[0], demb[0]))\n"),
}


@pytest.mark.parametrize("name", RIGHT_CODE)
def test_right_code_is_accepted_and_compiled_as_the_interpreter_runs_it(lecture_params, name):
    p, batches = lecture_params
    code = CodeBackward(p, 32, RIGHT_CODE[name], *batches[0])
    assert_as_interpreted(code, batches, kept=("ix",) if "ix +=" in RIGHT_CODE[name] else ())
    assert not code.program.interpreted  # and compiled, not run by the interpreter at every step


def test_the_check_batch_s_own_error_is_told_with_its_line_and_iteration(lecture_params):
    p, (_, (Xb, Yb), *_) = lecture_params
    Xb = Xb.clamp(max=13)
    Xb[1, 2] = 20  # 40 is past dC's 27 rows; the dry run cannot see values
    source = BLOCK.replace("dC[ix] += demb[k,j]", "dC[ix * 2] += demb[k,j]")
    with pytest.raises(Refused) as e:
        CodeBackward(p, 32, source, Xb, Yb)
    assert str(e.value).startswith("line 26 (k = 1, j = 2): ") and "out of bounds" in str(e.value)


def counts(check: int) -> str:
    """A tuple read out of the data: all 32 entries of the batch where Yb[0] is the check batch's, 5 elsewhere."""
    return "(" + ", ".join("32" if i == check else "5" for i in range(27)) + ")"


# 0 on a batch whose Yb[0] is 0, 1 on the others
ONCE = "(0" + ", 1" * 26 + ")"


def test_a_loop_whose_count_comes_from_the_data_is_not_fused_from_the_check_batch(lecture_params):
    p, batches = lecture_params
    source = BLOCK.replace(
        "for k in range(Xb.shape[0]):", f"m = {counts(int(batches[0][1][0]))}[Yb[0]]\nfor k in range(m):"
    )
    try:
        code = CodeBackward(p, 32, source, *batches[0])
    except Refused as e:  # refused by the sandbox's rules: a value read out of data decides no loop
        assert "compiled block differs" not in str(e)
        return
    assert {int(Yb[0]) for _, Yb in batches} != {int(batches[0][1][0])}  # the counts differ from batch to batch
    assert_as_interpreted(code, batches)
    assert code.program.interpreted


def test_a_loop_body_the_check_batch_never_runs_is_checked_when_it_runs(lecture_params):
    p, batches = lecture_params
    Yb = batches[0][1].clone()
    Yb[0] = 0
    source = inserted(f"for q in range({ONCE}[Yb[0]]):\n  W1 *= 0.0\n")
    before = p["W1"].clone()
    try:
        code = CodeBackward(p, 32, source, batches[0][0], Yb)
    except Refused as e:
        assert "compiled block differs" not in str(e)
        return
    later = next((X, Y) for X, Y in batches[1:] if int(Y[0]) != 0)
    with pytest.raises(Refused, match="W1 is shared"):
        code.step(*later, 0.1)
    assert torch.equal(p["W1"], before)


def test_a_step_past_a_multiple_of_its_check_s_time_fails_with_its_reason(lecture_params):
    from server.training.code_backward import STEP_FACTOR, StepTooLong

    p, batches = lecture_params
    budget = STEP_FACTOR * 0.01
    # processor time: the check's run takes 10 ms; then the marks of the first step, a stopped one, a slow one
    cpu = iter([0.0, 0.01, 1.0, 1.0 + 0.002, 2.0 + budget + 0.001])
    # wall time: a fine step, one stopped for an hour (its processor time did not run), one slow
    wall = iter([0.0, 0.001, 10.0, 3610.0, 4000.0, 4000.0 + budget + 0.001])
    code = CodeBackward(p, 32, BLOCK, *batches[0], clock=lambda: next(wall), cpu=lambda: next(cpu))
    assert code.check_s == pytest.approx(0.01) and code.step_budget_s == pytest.approx(budget)
    before = {k: t.clone() for k, t in p.items()}
    code.step(*batches[1], 0.1)
    code.step(*batches[2], 0.1)  # an hour by the wall clock, 2 ms of processor time: fine
    assert not torch.equal(before["W1"], p["W1"])
    moved = {k: t.clone() for k, t in p.items()}
    with pytest.raises(StepTooLong, match=f"more than {STEP_FACTOR} times the 10.0 ms its check took"):
        code.step(*batches[3], 0.1)
    assert all(torch.equal(moved[k], p[k]) for k in p)  # no update from a step that failed


def test_a_wrong_blocks_verdict_names_its_first_wrong_line_and_the_slip(lecture_dataset):
    broken = BLOCK.replace("dh = dlogits @ W2.T\n", "dh = dlogits @ W2.T * n\n")
    assert broken.splitlines()[6] == "dh = dlogits @ W2.T * n"  # line 7 of the block
    training, status, _ = train(lecture_dataset, backward="code", code=broken, max_steps=101, lr_decay_step=50)
    verdict = training.verdict(status)
    assert verdict.startswith("your backward disagrees with autograd from the check at step 0: ")
    assert (
        "; Exercise 4's cell check of your block: line 7 `dh = dlogits @ W2.T * n`: dh is 32× autograd's — n is "
        "32: did you forget /n?" in verdict
    )


def test_manual_and_autograd_runs_get_a_one_line_verdict(lecture_dataset, built_in):
    training, status, _ = built_in  # backward=manual, the default
    verdict = training.verdict(status)
    assert (
        verdict.startswith("the manual backward agreed with autograd at all 21 checks") and "the loss fell" in verdict
    )
    training, status, _ = train(lecture_dataset, backward="autograd", max_steps=200, lr_decay_step=100)
    verdict = training.verdict(status)
    assert verdict.startswith("trained on autograd's gradients; the loss ")
