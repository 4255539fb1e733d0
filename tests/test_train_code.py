"""Exercise 4 with the learner's own backward (server/train_code.py): the notebook's block, checked once, compiled,
and trained; the compiled block computes what the interpreter computes; wrong blocks show in the checks and the loss.
"""

from __future__ import annotations

import pytest
import torch

from server.engine import init_params
from server.sandbox import Interpreter, Refused
from server.train_code import CodeBackward, run_program
from server.train_config import TrainConfig
from server.training import Training

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
    from server.train_code import READS, forward_scope

    p, batches = lecture_params
    code = CodeBackward(p, 32, BLOCK, *batches[0])
    assert code.fast  # the fused twin agreed with the declared forward on the first batch
    assert set(READS) | {"n_embd"} == forward_scope(p, *batches[0]).keys()  # what /api/meta says a block reads
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
