"""The bug lab: realistic wrong backward rules (a pack declares its Bugs next to its rules), switched on by name.

Switched on, a bug's wrong rule is substituted for the right one in the backward schedule before any
step runs (the engine steps whatever schedule it is given); the manual gradient goes wrong at that node
from the step that runs the op, and the error flows upstream as the learner steps on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .declare import Bug, Net, Op, Rule, Undeclared


@dataclass(frozen=True)
class WrongRule(Rule):
    """A bug's rule, standing in the schedule where the right one was."""

    bug: Bug = field(kw_only=True)
    right: Rule = field(kw_only=True)  # the rule it replaces


def right_rule(rule: Rule) -> Rule:
    """The declared rule: the one a bug's rule stands in for, or the rule itself."""
    return rule.right if isinstance(rule, WrongRule) else rule


def schedule_with_bug(net: Net, mode: str, bug: str = "") -> list[Op]:
    """The mode's backward schedule with the bug's wrong rule substituted for the right one ('': none)."""
    schedule = net.backward_schedule(mode)
    if not bug:
        return schedule
    if bug not in net.bugs_by_name:
        if not net.bugs_by_name:  # a network file's: its rules come from the library, none is broken on purpose
            raise Undeclared("bug", f"no bug {bug!r}: {net.name} has no bug lab, leave bug empty")
        raise Undeclared("bug", f"no bug {bug!r} in {net.name}: the bugs are {', '.join(net.bugs_by_name)}")
    wrong = net.bugs_by_name[bug]
    modes = net.bug_modes(wrong)
    if mode not in modes:
        raise Undeclared(
            "bug",
            f"bug {bug} sits in the backward step of {wrong.op}, which mode {mode} fuses away; "
            f"use {' or '.join(modes)}",
        )
    return [
        replace(op, rules=tuple(_substitute(rule, op, wrong) for rule in op.rules)) if op.name == wrong.op else op
        for op in schedule
    ]


def _substitute(rule: Rule, op: Op, bug: Bug) -> Rule:
    if (op.name, rule.target) != (bug.op, bug.target):
        return rule
    return WrongRule(rule.target, bug.code, bug.fn, rule.note, bug.overwrite, bug=bug, right=rule)
