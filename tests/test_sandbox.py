"""Challenge mode: the lecture's own lines grade correct, feedback is specific, hostile code is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.core.config import ModelConfig
from server.core.engine import run_backward
from server.learner.challenge import grade
from server.learner.sandbox import Refused
from tests.lecture import MODES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def passes(lecture_dataset):
    return {mode: run_backward(ModelConfig(), lecture_dataset, mode) for mode in MODES}


@pytest.fixture(scope="module")
def atomic(passes):
    return passes["atomic"]


def snapshot(bp):
    tensors = {k: v for k, v in bp.values.items() if isinstance(v, torch.Tensor)}
    tensors |= {f"grad:{k}:{i}": g for k, hist in bp.history.items() for i, (_, g) in enumerate(hist)}
    return {k: v.clone() for k, v in tensors.items()}


def unchanged(bp, before) -> bool:
    now = snapshot(bp)
    return now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in before)


@pytest.mark.parametrize("mode", MODES)
def test_the_lectures_own_lines_grade_correct_at_every_step(passes, mode):
    bp = passes[mode]
    for step, op in enumerate(bp.schedule, start=1):
        result = grade(bp, step, "\n".join(rule.code for rule in op.rules))
        assert result["correct"], (mode, step, op.name, result["results"])


@pytest.mark.parametrize(
    "code",
    [
        "dlogprobs = torch.zeros_like(logprobs); dlogprobs[range(n), Yb] = -1.0/n",
        "dlogprobs = -F.one_hot(Yb, num_classes=27) / n",
        "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] -= 1\ndlogprobs /= n",
    ],
)
def test_equivalent_answers_are_accepted(atomic, code):
    assert grade(atomic, 1, code)["correct"]


def test_feedback_wrong_shape(atomic):
    item = grade(atomic, 3, "dcounts_sum_inv = counts * dprobs\ndcounts = counts_sum_inv * dprobs")["results"]
    bad = next(r for r in item if r["name"] == "dcounts_sum_inv")
    assert bad["feedback"] == [
        "dcounts_sum_inv: yours is (32,27), expected (32,1): the forward pass broadcast this over dim 1, "
        "so sum over dim 1 with keepdim=True"
    ]
    good = next(r for r in item if r["name"] == "dcounts")
    assert good["cmp"]["exact"] and "first 1 of 2" in good["feedback"][0]


def test_feedback_missing_contribution_nan_and_undefined(atomic):
    (item,) = grade(atomic, 5, "dcounts = torch.ones_like(counts) * dcounts_sum")["results"]
    assert "only this step's contribution" in item["feedback"][0] and "+=" in item["feedback"][0]
    (item,) = grade(atomic, 2, "dprobs = dlogprobs / (probs - probs)")["results"]
    assert any("NaN/Inf" in f for f in item["feedback"]) and item["diff"]["nonfinite"]["nan"] > 0
    made_at = next(i for i, op in enumerate(atomic.schedule, 1) if "h" in (r.target for r in op.rules))  # 9: logits
    with pytest.raises(Refused, match=f"dh is not defined yet at this step: it comes out of step {made_at} "):
        grade(atomic, 5, "dcounts += dh")
    (item,) = grade(atomic, 1, "x = 1")["results"]
    assert item["feedback"] == ["dlogprobs is not defined: this step produces dlogprobs"]


def test_a_wrong_value_has_a_diff_tensor(atomic):
    (item,) = grade(atomic, 2, "dprobs = (2.0 / probs) * dlogprobs")["results"]
    assert not item["cmp"]["approx"] and item["diff"]["shape"] == [32, 27]
    assert item["diff"]["min"] < 0 and item["diff"]["max"] == 0  # twice a gradient that is <= 0 everywhere


# --- hostile code: every payload refused with a reason; nothing created, nothing changed -----------

HOSTILE_REASONS = [
    # imports, builtins, exec
    ("import os", "only assignments"),
    ("logprobs.sum(0)", "computes a value and drops it"),
    ("from os import system", "only assignments"),
    ("__import__('os')", "cannot be called"),
    ("x = eval('1')", "cannot be called"),
    ("x = exec", "there is no "),
    ("x = open", "there is no "),
    ("x = getattr(counts, 'data')", "cannot be called"),
    ("x = globals()", "cannot be called"),
    ("x = vars()", "cannot be called"),
    ("x = dir()", "cannot be called"),
    ("x = breakpoint()", "cannot be called"),
    ("x = compile", "there is no "),
    ("x = print(1)", "cannot be called"),
    ("x = type(counts)", "cannot be called"),
    ("x = isinstance", "there is no "),
    # attribute and dunder escapes
    ("x = counts.__class__", "is not available: use tensor methods"),
    ("x = counts.__class__.__mro__", "is not available: use tensor methods"),
    ("x = ().__class__.__bases__[0].__subclasses__()", "is not available: use tensor methods"),
    ("x = counts._base", "is not available: use tensor methods"),
    ("x = counts.data", "is not available: use tensor methods"),
    ("x = counts.grad", "is not available: use tensor methods"),
    ("x = counts.__dict__", "is not available: use tensor methods"),
    ("x = torch.__builtins__", "is not available: use tensor methods"),
    ("x = F.__globals__", "is not available: use tensor methods"),
    ("x = counts.__reduce_ex__(2)", "is not available: use tensor methods"),
    ("x = torch._C", "is not available: use tensor methods"),
    ("x = torch.ops.aten", "is not available: use tensor methods"),
    ("x = torch.hub", "is not available: use tensor methods"),
    ("x = torch.hub.load('a', 'b')", "is not available: use tensor methods"),
    ("x = torch.utils", "is not available: use tensor methods"),
    ("x = torch.classes", "is not available: use tensor methods"),
    ("x = torch.Tensor", "is not available: use tensor methods"),
    # strings of every kind
    ("x = 'a'", "strings are not allowed"),
    ("x = b'a'", "strings are not allowed"),
    ("x = f'{counts}'", "f-strings are not part"),
    ("x = '%s' % 1", "strings are not allowed"),
    ("x = '{}'.format(1)", ".format is not available"),
    # file IO through torch or numpy
    ("torch.save(counts, 'x.pt')", "is not available: use tensor methods"),
    ("x = torch.load('x.pt')", "is not available: use tensor methods"),
    ("x = counts.numpy()", "is not available: use tensor methods"),
    ("x = counts.numpy().tofile", "is not available: use tensor methods"),
    ("x = counts.untyped_storage()", "is not available: use tensor methods"),
    ("x = counts.storage().from_file", "is not available: use tensor methods"),
    ("x = counts.storage().type('torch.FloatStorage')", "is not available: use tensor methods"),
    ("x = torch.from_file('x', size=1)", "is not available: use tensor methods"),
    ("x = counts.tolist()", "is not available: use tensor methods"),
    ("x = torch.UntypedStorage.from_file", "is not available: use tensor methods"),
    ("x = counts.new_tensor(1)", "is not available: use tensor methods"),
    ("counts.numpy().tofile(8)", "is not available: use tensor methods"),
    # lambdas, comprehensions, generators, walrus, control flow
    ("x = lambda: 1", "lambdas are not part of the gradient vocabulary"),
    ("x = [c for c in counts]", "comprehensions are not part of the gradient vocabulary"),
    ("x = (c for c in counts)", "generators are not part of the gradient vocabulary"),
    ("x = {1: 2}", "dicts are not part of the gradient vocabulary"),
    ("x = [1, 2]", "lists are not part of the gradient vocabulary"),
    ("(x := counts)", "the walrus operator are not part of the gradient vocabulary"),
    ("x = counts if 1 else counts", "if expressions are not part of the gradient vocabulary"),
    ("while True: pass", "only assignments"),
    ("def f(): pass", "only assignments"),
    ("class A: pass", "only assignments"),
    ("with counts: pass", "only assignments"),
    ("try:\n x = 1\nexcept: pass", "only assignments"),
    ("x = 1 < 2 < 3", "one comparison at a time"),
    ("x = not 1", "Not are not part"),
    ("x = 1 and 2", "and/or are not part"),
    ("assert 1", "only assignments"),
    ("del counts", "only assignments"),
    ("global x", "only assignments"),
    ("raise ValueError", "only assignments"),
    ("x = yield 1", "Yield are not part"),
    ("x = *counts,", "Starred are not part"),
    ("x = counts[...]", "is not a real number"),
    # huge allocations, broadcasts and numbers
    ("x = torch.zeros_like(counts).view(10**6, 10**6)", "is invalid for input of size"),
    ("x = counts.view(1, -1) + counts.view(-1, 1)", "entries) is too big"),
    ("x = counts.view(-1, 1) * counts.view(1, -1) * 1", "entries) is too big"),
    ("x = 10**100", "exponents are numbers"),
    ("x = 9**9**9", "is too large (at most 1,000,000"),
    ("x = 1e308 * 10", "is too large or not finite"),
    ("x = counts ** 100000", "exponents are numbers"),
    ("x = counts ** 1e10", "exponents are numbers"),
    ("x = range(10**9)", "is too large (at most 1,000,000"),
    ("x = torch.ones_like(counts)[range(10**6)]", "is too long"),
    ("x = 2 ** 64", "exponents are numbers"),
    ("x = 1.0 / 0", "division by zero"),
    ("x = 0 ** -1", "0 to a negative power"),
    # parser bombs and bytes
    ("x = " + "(" * 5000 + "1" + ")" * 5000, "characters long"),
    ("x = " + "-" * 100000 + "1", "characters long"),
    ("x = 1\x00", "only plain ASCII"),
    ("x = " + "(" * 900 + "1" + ")" * 900, "syntax error"),
    ("x = " + "-" * 1900 + "1", "parts; a gradient"),
    ("x = " + "counts." * 300 + "T", "characters long"),
    ("x = " + "1+" * 3000 + "1", "characters long"),
    # in-place mutation of shared tensors
    ("counts += 1", "is shared ("),
    ("counts[0] = 1", "is shared ("),
    ("x = counts\nx += 1", "is shared ("),
    ("x = counts.view(-1)\nx[0] = 1", "is shared ("),
    ("W1.index_add_(0, Xb.view(-1), W1)", "is shared ("),
    ("dprobs = probs\ndprobs[0, 0] = 7", "is a tensor of the forward pass"),
    ("x = counts.T\nx += 1", "is shared ("),
    ("counts = counts * 2", "is a tensor of the forward pass"),
    ("n = 5", "n cannot be reassigned"),
    ("torch = 1", "torch cannot be reassigned"),
    ("x = counts.mul_(2)", "is not available: use tensor methods"),
    ("x = counts.zero_()", "is not available: use tensor methods"),
    ("x = counts.copy_(probs)", "is not available: use tensor methods"),
    ("x = counts.resize_(1)", "is not available: use tensor methods"),
    # autograd hooks and backward
    ("x = counts.backward()", "is not available: use tensor methods"),
    ("x = counts.register_hook(counts)", "is not available: use tensor methods"),
    ("x = counts.requires_grad_()", "is not available: use tensor methods"),
    ("x = counts.retain_grad()", "is not available: use tensor methods"),
    ("x = torch.autograd", "is not available: use tensor methods"),
    # unicode look-alikes and other identifiers
    ("x = counts.\u0455um(1)", "only plain ASCII"),
    ("\uff45xec = 1", "only plain ASCII"),
    ("x = c\u043eunts", "only plain ASCII"),
    ("_x = 1", "names starting with _"),
    ("x = counts.__len__()", "is not available: use tensor methods"),
    # loops: the one control flow there is, bounded
    # only `for name in range(...)`: no else, no other targets or iterables, no other control flow
    ("for i in range(3):\n  x = i\nelse:\n  x = 1", "for ... else"),
    ("for i, j in range(3):\n  x = i", "one plain name"),
    ("for i in counts:\n  x = i", "range(...) only"),
    ("for i in (1, 2):\n  x = i", "range(...) only"),
    ("for i in range(3):\n  break", "only assignments"),
    ("for i in range(3):\n  if i:\n    x = 1", "only assignments"),
    ("async def f():\n  async for i in range(3):\n    x = i", "only assignments"),
    # nested past the cap, or iterating past it
    (
        "for a in range(2):\n for b in range(2):\n  for c in range(2):\n   for d in range(2):\n    x = a",
        "loops nest at most",
    ),
    ("for a in range(16):\n for b in range(16):\n  for c in range(17):\n   x = a", "times in all"),
    ("for i in range(100000):\n  x = i", "times in all"),
    ("for i in range(10**6):\n  x = i", "is too long"),
    (
        "for i in range(4000):\n  x = ((i, i, i, i), (i, i, i, i), (i, i, i, i), (i, i, i, i))",
        "expressions evaluated in all",
    ),
    ("for i in range(2100):\n  x = counts * 2\n  y = x + 1", "tensor operations in all"),
    (
        "a = (torch.ones_like(hprebn).view(2048, 1) * torch.ones_like(b1)[0:16].view(1, 16)).view(128, 256)\n"
        "for i in range(300):\n  y = a @ a.T",
        "tensor entries in all",
    ),
    # loops that grow tensors
    ("x = counts\nfor i in range(10):\n  x = x.view(-1, 1) * x.view(1, -1)", "entries) is too big"),
    ("x = counts.view(-1)\nfor i in range(4):\n  x = x + x.view(-1, 1)", "entries) is too big"),
    # loop variables that would hide shared names
    ("for counts in range(3):\n  x = 1", "would hide"),
    ("for n in range(3):\n  x = 1", "would hide"),
    ("for torch in range(3):\n  x = 1", "would hide"),
    ("for dprobs in range(3):\n  x = 1", "would hide"),
    ("for dcounts_sum in range(3):\n  x = 1", "would hide"),
    ("for i in range(3):\n  for i in range(3):\n    x = i", "would hide"),
    # in-place changes of shared tensors and their views, inside loops
    ("for k in range(n):\n  x = counts[k]\n  x += 1", "is shared ("),
    ("for k in range(n):\n  counts[k] += 1", "is shared ("),
    ("for k in range(3):\n  ix = Xb[k, 0]\n  ix += 1", "is shared ("),
    ("for k in range(3):\n  x = W1.T\n  x[k] = 0", "is shared ("),
    ("for k in range(3):\n  dprobs[k] *= 2", "is shared ("),
    ("for k in range(3):\n  dprobs.index_add_(0, Xb[k], dprobs)", "is shared ("),
    ("for k in range(3):\n  x = counts\n  counts = x", "is a tensor of the forward pass"),
    # iteration counts from data
    ("for i in range(Xb[0, 0]):\n  x = i", "range takes 1 to 3 integers"),
    ("for i in range(Yb.sum()):\n  x = i", "range takes 1 to 3 integers"),
    ("for i in range(n * Xb[0, 0]):\n  x = i", "range takes 1 to 3 integers"),
    ("for i in range(counts.shape[0] * 100000):\n  x = i", "is too large (at most 1,000,000"),
    # names: read only once defined, never rebound where the lecture (or Python) has them, torch and F only called
    ("x = dh", "is not defined yet at this step"),
    ("range = chr", "there is no chr here"),
    ("range = counts * 0", "range cannot be reassigned"),
    ("print = counts * 0", "print is a name Python has"),
    ("x = torch.exp", "torch can only be called"),
    ("x = counts.sum", ".sum is a method: call it"),
    ("x = counts.T(1)", ".T(...) is not available"),
    # writes into shared tensors where no run reaches, and through what torch returns as its operand
    ("for k in range(n - n):\n  W1 *= 0.0", "W1 is shared ("),
    ("x = +Xb\nx *= 0", "x is shared ("),
    # a tensor's value as a shape, a dim or a shape's index
    ("x = (1, 100000)[Yb[0]]", "not by a tensor's value"),
    ("x = counts.sum(Yb[0])", "a value read out of a tensor is data"),
    # an index that pairs every entry of one index tensor with every entry of another
    (
        "a = (Yb.view(-1, 1) * 0 + Xb.view(1, -1) * 0).view(-1)\nz = torch.zeros_like(counts)\n"
        "z[a.view(-1, 1), a.view(1, -1)] = 1.0",
        "this index reaches",
    ),
    # an attention head's vocabulary: masks, transposes, infinities and torch.ones open no hole
    ("x = W1.masked_fill_(W1 == 0, 1.0)", ".masked_fill_ is not available"),
    ("W1 = W1.masked_fill(W1 > 0, 0.0)", "W1 is a tensor of the forward pass"),
    ("x = W1.transpose(0, 1)\nx += 1.0", "x is shared ("),
    ("x = W1.transpose(0, 1).transpose(-2, -1)\nx[0] = 0.0", "x is shared ("),
    ("x = W1.transpose(Yb[0], 1)", "a value read out of a tensor is data"),
    ("x = counts[counts > 0]", "boolean masks select a data-dependent number"),
    ("x = counts.masked_fill(counts > 0, float('nan'))", "float(...) writes an infinity only"),
    ("x = float('1e308')", "float(...) writes an infinity only"),
    ("x = float(counts)", "float(...) writes an infinity only"),
    ("x = float", "float can only be called"),
    ("x = range(float('inf'))", "range takes 1 to 3 integers"),
    ("x = counts ** float('-inf')", "exponents are numbers"),
    ("x = torch.ones(100000, 100000)", "is too big; at most"),
    ("x = torch.ones(Yb[0], 3)", "torch.ones takes sizes"),
    ("x = torch.ones(n, dim=1)", "torch.ones takes sizes"),
    ("x = (counts == 0) == counts.shape", "a comparison is of tensors and numbers"),
    ("x = counts.T.T\ny = counts.view(1, 32, 27).T", ".T transposes a 2-D tensor"),
]
HOSTILE = [code for code, _ in HOSTILE_REASONS]
# what other tests write into the checkout while these run beside them (pytest-xdist): git-ignored outputs
TEST_OUTPUTS = {"artifacts", ".hypothesis", ".pytest_cache"}


def repo_files() -> set[str]:
    """The checkout's top-level names, less the other tests' outputs: a grade must add nothing to it."""
    return set(os.listdir(ROOT)) - TEST_OUTPUTS


@pytest.mark.parametrize(
    "code",
    ["t = logprobs.shape * 1000000", "t = 1000000 * logprobs.shape", "t = (1,) * 3", "t = range(n) * 2",
     "t = logprobs.shape\n" + "t = t + t\n" * 7],  # 2 entries doubled 6 times is past 64
)  # fmt: skip
def test_repeating_a_shape_is_refused_before_it_runs(atomic, code):
    with pytest.raises(Refused, match="shape"):
        grade(atomic, 1, code)


def test_two_shapes_still_join(atomic):
    code = (
        "dlogprobs = torch.zeros_like(logprobs).view(logprobs.shape + (1,))[:, :, 0]\ndlogprobs[range(n), Yb] = -1.0/n"
    )
    assert grade(atomic, 1, code)["correct"]


# every line of defence the sandbox has, by the words of its refusal: the corpus must reach each one, or
# a payload meant for it is stopped by another and that defence goes untested
DEFENCES = [
    "only plain ASCII", "characters long", "parts; a gradient", "syntax error", "only assignments",
    "not part of the gradient vocabulary", "strings are not allowed", "not a real number", "names starting with _",
    "is not available", "cannot be called", "there is no", "cannot be reassigned", "is a tensor of the forward pass",
    "is shared", "is too large", "exponents are numbers", "division by zero", "0 to a negative power", "is too long",
    "entries) is too big", "for ... else", "one plain name", "range(...) only", "loops nest at most",
    "times in all", "tensor operations in all", "expressions evaluated in all", "tensor entries in all", "would hide",
    "is not defined yet", "is a name Python has", "can only be called", "is a method: call it",
    "not by a tensor's value", "a value read out of a tensor is data", "this index reaches",
    "range takes 1 to 3 integers", "one comparison at a time", "boolean masks select a data-dependent number",
    "float(...) writes an infinity only", "is too big; at most", "torch.ones takes sizes",
    "a comparison is of tensors and numbers", ".T transposes a 2-D tensor",
]  # fmt: skip


@pytest.fixture(scope="module")
def hostile_reasons(atomic):
    reasons = []
    for code in HOSTILE:
        with pytest.raises(Refused) as refused:
            grade(atomic, 4, code)
        reasons.append(str(refused.value))
    return reasons


@pytest.mark.parametrize("defence", DEFENCES)
def test_the_hostile_corpus_reaches_every_line_of_defence(hostile_reasons, defence):
    assert len(set(HOSTILE)) == len(HOSTILE)
    assert any(defence in reason for reason in hostile_reasons), f"no payload is refused with {defence!r}"
    assert any(defence in reason for _, reason in HOSTILE_REASONS), f"no payload is meant for {defence!r}"


@pytest.mark.parametrize(("code", "reason"), HOSTILE_REASONS, ids=[f"p{i:03d}" for i in range(len(HOSTILE))])
def test_hostile_code_is_refused_by_its_own_defence(atomic, code, reason, tmp_path, monkeypatch):
    """Each payload is paired with the defence meant to stop it: with that defence gone, another one stopping it
    fails here (the corpus would not notice a deleted defence otherwise)."""
    monkeypatch.chdir(tmp_path)
    before = snapshot(atomic)
    files = repo_files()
    with pytest.raises(Refused) as refused:
        grade(atomic, 4, code)
    assert reason in str(refused.value) and "Traceback" not in str(refused.value), str(refused.value)
    assert os.listdir(tmp_path) == [] and repo_files() == files
    assert unchanged(atomic, before)


# --- fuzzing: thousands of generated programs keep the invariants ---------------------------------

NAMES = ["counts", "probs", "dprobs", "counts_sum", "dcounts_sum", "dcounts_sum_inv", "x", "y", "n", "Xb", "Yb",
         "torch", "F", "range", "dcounts", "W1", "os", "__builtins__", "_", "eval"]  # fmt: skip
ATTRS = ["sum", "view", "T", "shape", "exp", "log", "max", "values", "clone", "index_add_", "data", "numpy",
         "__class__", "storage", "zeros_like", "ones_like", "one_hot", "item", "tolist", "mul_"]  # fmt: skip
TOKENS = ["+", "-", "*", "/", "@", "**", "(", ")", "[", "]", ",", ".", ":", "=", "+=", " ", "\n", "1", "0", "-1",
          "2.5", "1e9", "keepdim=True", "dim=1", "'s'", "lambda", "for", "in", "if", "import", ";", "range(n)",
          ":\n  ", "for k in range(3):\n  ", "break"]  # fmt: skip


@st.composite
def programs(draw):
    parts = draw(st.lists(st.sampled_from(NAMES + ATTRS + TOKENS), min_size=1, max_size=25))
    return "".join(parts)


@st.composite
def plausible_programs(draw):
    # well-formed assignments out of the vocabulary: they get past the parser and exercise the interpreter
    def term(depth):
        if depth == 0:
            return draw(st.sampled_from(NAMES[:11] + ["1", "2.0", "-0.5", "range(n)"]))
        kind = draw(st.integers(0, 4))
        a = term(depth - 1)
        if kind == 0:
            return f"({a} {draw(st.sampled_from(['+', '-', '*', '/', '@', '**']))} {term(depth - 1)})"
        if kind == 1:
            return f"{a}.{draw(st.sampled_from(ATTRS))}"
        if kind == 2:
            args = draw(st.sampled_from(["", "1", "0, keepdim=True", "-1", "1, 27", "dim=1", "(-1,)"]))
            return f"{a}.{draw(st.sampled_from(ATTRS))}({args})"
        if kind == 3:
            return f"{a}[{term(depth - 1)}]"
        return f"torch.{draw(st.sampled_from(['zeros_like', 'ones_like', 'exp', 'log', 'tanh', 'save']))}({a})"

    lines = [f"{draw(st.sampled_from(NAMES[:8] + ['dcounts']))} {draw(st.sampled_from(['=', '+=']))} {term(3)}"
             for _ in range(draw(st.integers(1, 3)))]  # fmt: skip
    return "\n".join(lines)


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(code=st.one_of(programs(), plausible_programs()))
def test_fuzzed_programs_are_graded_or_refused_and_change_nothing(atomic, code):
    before_files = repo_files()
    before = {k: atomic.values[k].clone() for k in ("counts", "probs", "counts_sum", "W1", "Xb", "Yb")}
    try:
        result = grade(atomic, 5, code)
        assert result["step"] == 5 and len(result["results"]) == 1
    except Refused as e:
        assert str(e)
    assert all(torch.equal(atomic.values[k], v) for k, v in before.items())
    assert repo_files() == before_files


@st.composite
def loop_programs(draw):
    # the notebook's dC loop, mutated: nesting past the cap, long and data-driven ranges, loop variables named as
    # shared tensors, bodies that grow tensors or change shared ones (and their views) in place
    def bound():
        return draw(st.sampled_from(["2", "3", "n", "Xb.shape[1]", "Xb[0, 0]", "10**5", "k + 1", "-1", "n * n"]))

    body = [
        "x = counts[k]", "x += 1", "ix = Xb[k, 0]", "ix += 1", "y = torch.zeros_like(counts)", "y[ix] += dprobs[k]",
        "counts[k] += 1", "dprobs[k] *= 2", "z = y.view(-1, 1) * y.view(1, -1)", "y = y + y", "y[k] = counts[k]",
        "dcounts_sum = counts.sum(1, keepdim=True) * 0", "x = W1.T", "x[k] = 0", "x = y.view(-1)", "x -= 1",
        "dcounts_sum[k] += 1", "w = dprobs[range(n), Yb]", "w = w * w",
    ]  # fmt: skip
    shadows = ["counts", "n", "dprobs", "x", "dcounts_sum", "k"]
    lines = ["y = torch.zeros_like(counts)", "x = counts.clone()", "ix = Xb[0, 0]", "w = dprobs[0]"]
    lines += [line.replace("[k", "[0") for line in draw(st.lists(st.sampled_from(body), max_size=2))]
    for level in range(draw(st.sampled_from([1, 1, 2, 2, 3, 4]))):
        name = draw(st.sampled_from(["k", "j", "i"][level:] * 3 + shadows))
        lines.append(f"{'  ' * level}for {name} in range({bound()}):")
    depth = level + 1
    for line in draw(st.lists(st.sampled_from(body), min_size=1, max_size=4)):
        lines.append("  " * depth + line.replace("[k", f"[{name}"))  # indexed by the innermost loop's variable
    return "\n".join(lines)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(code=loop_programs())
def test_fuzzed_loops_are_graded_or_refused_and_change_nothing(atomic, code):
    before_files = repo_files()
    before = snapshot(atomic)
    try:
        result = grade(atomic, 4, code)
        assert result["step"] == 4 and len(result["results"]) == 1
    except Refused as e:
        assert str(e) and "Traceback" not in str(e)
    assert unchanged(atomic, before)
    assert repo_files() == before_files


# --- indexed reads and writes count every index pair they touch ----------------------------------------------------

ZEROS = "a = (Yb.view(-1, 1) * 0 + Xb.view(1, -1) * 0).view(-1)\n"  # 3,072 valid indices (all 0), no loop


@pytest.mark.parametrize(
    "code",
    [
        ZEROS + "z = torch.zeros_like(counts)\nz[a.view(-1, 1), a.view(1, -1)] = 1.0",  # 9.4M pairs of 2 tensors
        ZEROS + "z = torch.zeros_like(counts)\nz[a.view(-1, 1), a.view(1, -1)] += 1.0",  # index_put through +=
        ZEROS + "z = torch.zeros_like(counts)\nz[a.view(-1, 1), a.view(1, -1)] = counts[0, 0]",  # a 0-dim tensor value
        ZEROS + "b = a[0:64]\nz = torch.zeros_like(emb)\nz[b.view(-1, 1, 1), b.view(1, -1, 1), b.view(1, 1, -1)] = 1.0",
        ZEROS + "b = a[0:200]\nz = torch.zeros_like(emb)\nz[b.view(-1, 1), :, b.view(1, -1)] = 1.0",  # tensor, slice
        ZEROS + "b = a[0:2000]\nz = torch.zeros_like(counts)\nz[b] = 1.0",  # 2,000 rows x 27: the slice counts
        ZEROS + "z = counts[a.view(-1, 1), a.view(1, -1)]",  # a read
    ],
)
def test_an_index_that_reaches_past_the_cap_is_refused_before_it_runs(atomic, code):
    with pytest.raises(Refused, match=r"this index reaches [\d,]+ entries .* at most 32,768 here"):
        grade(atomic, 4, code)


def test_an_indexed_write_counts_every_pair_it_writes(atomic):
    from server.learner.challenge import context
    from server.learner.sandbox import Cost, evaluate

    ctx = context(atomic, 4)
    before = "b = Yb.view(-1) * 0\nz = torch.zeros_like(counts)\n"
    costs = []
    for write in ("", "z[b.view(-1, 1), b.view(1, -1)] = 1.0"):  # 32 x 32 pairs, of a Python number
        costs.append(Cost())
        evaluate(before + write, ctx["scope"], ctx["shared"], ctx["mutable"], ctx["later"], cost=costs[-1])
    assert costs[1].work - costs[0].work >= 32 * 32 and costs[1].tensor_ops > costs[0].tensor_ops


# --- a value read out of a tensor never decides a shape, a loop or an index of a shape ------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "x = (1, 100000)[Yb[0]]",
        "x = counts.shape[Yb[0]]",
        "x = counts.shape[Yb[0], 0]",
        "x = counts.sum(Yb[0])",
        "x = counts.sum(dim=Yb[0])",
        "x = counts.view(Yb[0], -1)",
        "x = counts.unsqueeze(Xb[0, 0])",
        "x = torch.softmax(counts, Yb[0])",
        "x = F.log_softmax(counts, dim=Yb[0])",
        "x = torch.zeros_like(counts)\nx.index_add_(Yb[0], Yb, counts)",
    ],
)
def test_a_tensors_value_is_refused_as_a_shape_or_a_dim(atomic, code):
    with pytest.raises(Refused, match="a value read out of a tensor is data"):
        grade(atomic, 4, code)


@pytest.mark.parametrize(
    "code",
    [
        "for k in range(n - n):\n  W1 *= 0.0",
        "for k in range(0):\n  Yb *= 0",
        "for k in range(0):\n  for j in range(0):\n    Xb[k, j] = 0",
        "x = +counts\nfor k in range(0):\n  x += 1",
        "x = counts.float()\nfor k in range(0):\n  x.index_add_(0, Yb, counts)",
        "x = counts.clone()\nfor k in range(0):\n  x = counts.T\nx += 1",
    ],
)
def test_a_write_into_a_shared_tensor_is_refused_in_a_loop_that_never_runs(atomic, code):
    before = snapshot(atomic)
    with pytest.raises(Refused, match="is shared"):
        grade(atomic, 4, code)
    assert unchanged(atomic, before)


@pytest.mark.parametrize("code", ["x = (1, 100000)[Yb[0]]", "for k in range(counts.shape[Yb[0]]):\n  y = k"])
def test_the_dry_run_alone_refuses_a_shape_indexed_by_a_tensor(atomic, code):
    from server.learner.challenge import context
    from server.learner.sandbox import Interpreter, parse

    ctx = context(atomic, 4)
    meta = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in ctx["scope"].items()}
    dry = Interpreter(meta, ctx["shared"], ctx["mutable"], ctx["later"], meta=True)
    with pytest.raises(Refused, match="not by a tensor's value"):
        dry.run(parse(code))
