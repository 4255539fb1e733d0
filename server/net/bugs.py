"""The bug lab: realistic wrong backward rules, declared as data next to the rule each one replaces.

Switched on, a bug's wrong rule is substituted for the right one in the backward schedule before any
step runs (the engine steps whatever schedule it is given); the manual gradient goes wrong at that node
from the step that runs the op, and the error flows upstream as the learner steps on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .graph import MODES, Fn, Op, Rule, Undeclared, backward_schedule, ops_for_mode

CLIP = 3.5  # the clipped-loss bug: examples whose loss is above this get no gradient


@dataclass(frozen=True)
class Bug:
    name: str
    title: str
    op: str  # the op whose backward step goes wrong
    target: str  # the gradient it gets wrong
    code: str  # the wrong line, as someone would write it
    fn: Fn  # (v, d) -> the wrong contribution
    why: str  # why it happens
    notice: str  # how one would notice it in real code
    overwrite: bool = False  # `=` where `+=` belongs: the earlier contribution is lost

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes whose schedule has the rule this bug replaces (the others fuse its op away)."""
        return tuple(mode for mode in MODES if any(_replaced(op, self) for op in ops_for_mode(mode)))


@dataclass(frozen=True)
class WrongRule(Rule):
    """A bug's rule, standing in the schedule where the right one was."""

    bug: Bug = field(kw_only=True)
    right: Rule = field(kw_only=True)  # the rule it replaces


def right_rule(rule: Rule) -> Rule:
    """The declared rule: the one a bug's rule stands in for, or the rule itself."""
    return rule.right if isinstance(rule, WrongRule) else rule


def _replaced(op: Op, bug: Bug) -> bool:
    return op.name == bug.op and any(rule.target == bug.target for rule in op.rules)


def schedule_with_bug(mode: str, bug: str = "") -> list[Op]:
    """The mode's backward schedule with the bug's wrong rule substituted for the right one ('': none)."""
    schedule = backward_schedule(mode)
    if not bug:
        return schedule
    if bug not in BUGS:
        raise Undeclared("bug", f"no bug {bug!r}: the bugs are {', '.join(BUGS)}")
    wrong = BUGS[bug]
    if mode not in wrong.modes:
        raise Undeclared(
            "bug",
            f"bug {bug} sits in the backward step of {wrong.op}, which mode {mode} fuses away; "
            f"use {' or '.join(wrong.modes)}",
        )
    return [
        replace(op, rules=tuple(_substitute(rule, op, wrong) for rule in op.rules)) if op.name == wrong.op else op
        for op in schedule
    ]


def _substitute(rule: Rule, op: Op, bug: Bug) -> Rule:
    if (op.name, rule.target) != (bug.op, bug.target):
        return rule
    return WrongRule(rule.target, bug.code, bug.fn, rule.note, bug.overwrite, bug=bug, right=rule)


def _clipped_dlogprobs(v: Any, d: Any) -> torch.Tensor:
    dlogprobs = torch.zeros_like(v.logprobs)  # (n, vocab)
    picked = -v.logprobs[range(v.n), v.Yb]  # (n,) per-example loss
    # two Python scalars make a tensor of the default dtype: cast, or float64 passes fail the index put
    dlogprobs[range(v.n), v.Yb] = torch.where(picked > CLIP, 0.0, -1.0 / v.n).to(dlogprobs.dtype)
    return dlogprobs


BUGS: dict[str, Bug] = {
    bug.name: bug
    for bug in (
        Bug(
            "no_broadcast_sum",
            "forgot the sum over a broadcast dimension",
            "probs",
            "counts_sum_inv",
            "dcounts_sum_inv = counts * dprobs   # .sum(1, keepdim=True) missing",
            lambda v, d: v.counts * d.probs,
            "counts_sum_inv (32,1) was broadcast over the 27 columns in the forward pass, so every column "
            "contributes to its gradient: the contributions must be summed over dim 1.",
            "The gradient has the shape of the other operand, (32,27) instead of (32,1); broadcasting later "
            "hides it, so compare shapes with the tensor's own shape (assert dx.shape == x.shape).",
        ),
        Bug(
            "overwrite_second_contribution",
            "forgot the second contribution to a reused node (= instead of +=)",
            "counts_sum",
            "counts",
            "dcounts = torch.ones_like(counts) * dcounts_sum   # = where += belongs",
            lambda v, d: torch.ones_like(v.counts) * d.counts_sum,
            "counts feeds two ops (probs and counts_sum); its gradient is the sum of both paths. Assigning "
            "the second path's contribution throws away the first one.",
            "Only nodes used more than once are affected, and the value is plausible; a gradient check "
            "(finite differences or autograd) on that node is what catches it.",
            overwrite=True,
        ),
        Bug(
            "bessel_n",
            "n instead of n-1 in the batchnorm variance backward",
            "bnvar",
            "bndiff2",
            "dbndiff2 = (1.0/n)*torch.ones_like(bndiff2) * dbnvar   # the forward used 1/(n-1)",
            lambda v, d: (1.0 / v.n) * torch.ones_like(v.bndiff2) * d.bnvar,
            "The forward pass uses the unbiased variance (Bessel's correction, 1/(n-1)); the backward must "
            "differentiate that same formula, not the biased 1/n one.",
            "The gradients are off by a factor (n-1)/n ≈ 0.97 for n = 32: small enough to train fine, so "
            "only an exact check against autograd shows it.",
        ),
        Bug(
            "clipped_loss",
            "clipped loss: outliers get no gradient",
            "loss",
            "logprobs",
            f"dlogprobs[range(n), Yb] = where(-logprobs[range(n), Yb] > {CLIP}, 0, -1.0/n)   # loss.clamp(max={CLIP})",
            _clipped_dlogprobs,
            "Clamping each example's loss at a maximum (to 'stabilise' training) makes the loss flat for "
            "the examples above it: their gradient is exactly zero, and the net stops learning from the "
            "examples it gets most wrong.",
            "The loss value looks normal; the rows of the worst examples in dlogprobs are all zero. Clip "
            "gradients (by norm), not the loss.",
        ),
        Bug(
            "missing_gain",
            "forgot the batchnorm gain (hidden by zero-initialised biases)",
            "hpreact",
            "bnraw",
            "dbnraw = dhpreact   # bngain * missing",
            lambda v, d: d.hpreact,
            "hpreact = bngain * bnraw + bnbias, so dbnraw = bngain * dhpreact. With init=zero_bias "
            "(bngain = 1, biases 0) the missing factor is 1 and the check passes: approximate (≈), off by float "
            "rounding alone, not exact, so nothing shows the bug.",
            "Tests with 'clean' initialisations (ones and zeros) pass; use small random gains and biases, "
            "as the lecture does, to catch rules that multiply by them.",
        ),
    )
}
