"""Take it home: a learner's backward (a whole cell, or the steps they solved) as a runnable .py or .ipynb that
rebuilds the lecture's data and net, runs that backward and prints the notebook's cmp lines.

Everything but the learner's code comes from the net's pack: the initialisation lines (Node.init), the forward
lines (Op.formula, Op.notebook), the pack's backward lines for the steps the learner did not write (Rule.code) and
the order of the cmp lines (Net.cmp_order). The learner's code is checked first by every
static rule a check applies (sandbox.check_program: the allowlist, scope, binding and ownership; it is never run
here): the file holds the lecture's vocabulary, over the names the lecture gives, and nothing else.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass

import torch

from ..core.config import ModelConfig
from ..core.engine import axis_sizes
from ..net.bugs import right_rule
from ..net.declare import Net
from .cells import cell_given, cell_grads, cell_names, check_cell, order, split_cell, writes
from .challenge import step_names
from .sandbox import Refused, check_program, parse

FRESH_SEED = torch.Generator().initial_seed()  # what a new torch.Generator() starts at, as the explorer draws with it
CMP = """\
# utility function we will use later when comparing manual gradients to PyTorch gradients
def cmp(s, dt, t):
  ex = torch.all(dt == t.grad).item()
  app = torch.allclose(dt, t.grad)
  maxdiff = (dt - t.grad).abs().max().item()
  print(f'{s:15s} | exact: {str(ex):5s} | approximate: {str(app):5s} | maxdiff: {maxdiff}')"""

DATA = """\
# the names, one a line, as the explorer reads them (blank lines skipped)
words = [w.strip() for w in open(NAMES, encoding='utf-8-sig').read().splitlines() if w.strip()]
# build the vocabulary of characters and mappings to/from integers
chars = sorted(list(set(''.join(words))))
stoi = {s:i+1 for i,s in enumerate(chars)}
stoi['.'] = 0
itos = {i:s for s,i in stoi.items()}
vocab_size = len(itos)
print(len(words), 'words,', vocab_size, 'characters')

# build the dataset
block_size = BLOCK_SIZE # context length: how many characters do we take to predict the next one?

def build_dataset(words):
  X, Y = [], []

  for w in words:
    context = [0] * block_size
    for ch in w + '.':
      ix = stoi[ch]
      X.append(context)
      Y.append(ix)
      context = context[1:] + [ix] # crop and append

  X = torch.tensor(X)
  Y = torch.tensor(Y)
  return X, Y

random.seed(42)
random.shuffle(words)
n1 = int(0.8*len(words))
n2 = int(0.9*len(words))

Xtr,  Ytr  = build_dataset(words[:n1])     # 80%
Xdev, Ydev = build_dataset(words[n1:n2])   # 10%
Xte,  Yte  = build_dataset(words[n2:])     # 10%"""

PATH_PY = """\
# names.txt: the path given on the command line, or $NAMES_TXT, or the one beside this file
BESIDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'names.txt')
NAMES = sys.argv[1] if len(sys.argv) > 1 else os.environ.get('NAMES_TXT') or BESIDE"""
PATH_IPYNB = """\
# names.txt: $NAMES_TXT, or the one beside this notebook
NAMES = os.environ.get('NAMES_TXT', 'names.txt')"""


@dataclass(frozen=True)
class Section:
    """A notebook cell: its heading (markdown; a comment in the .py) and its code."""

    heading: str
    code: str


def export(
    mode: str,
    config: ModelConfig,
    fmt: str,
    cell: str | None = None,
    steps: dict[int, str] | None = None,
) -> tuple[str, bytes]:
    """(file name, content) of a runnable .py or .ipynb of the learner's cell or steps; Refused for code outside the
    challenge's vocabulary or a step the mode does not have."""
    sections = _sections(mode, config, fmt, cell, steps)
    return _name(mode, cell, fmt), (_py(sections) if fmt == "py" else _ipynb(sections)).encode()


def _name(mode: str, cell: str | None, fmt: str) -> str:
    return f"backprop_{mode}_{'cell' if cell is not None else 'steps'}.{fmt}"


def _sections(
    mode: str, config: ModelConfig, fmt: str, cell: str | None, steps: dict[int, str] | None
) -> list[Section]:
    net = config.pack
    schedule = net.backward_schedule(mode)
    exercise = net.cell_for(mode).exercise
    if cell is not None:
        text = split_cell(cell)
        check_cell(text, cell_names(net, mode))  # every rule a check of the cell applies, and nothing runs
        backward, checked = _cell_backward(net, mode, text.text, text.program)
        own_cmp = bool(text.printouts)
        what = f"your {exercise} cell"
    else:
        assert steps is not None
        backward, checked = _steps_backward(net, mode, steps)
        own_cmp = False
        what = f"your solved steps of {exercise} ({len(steps)} of {len(schedule)})"
    intro = (
        f"{net.mode_of(mode).title}. This rebuilds the lecture's data and the {net.name} network (seed {config.seed}, "
        + ("the lecture's initialisation" if config.init == "lecture" else f"init={config.init}")
        + "), runs the forward pass and PyTorch's loss.backward(), then your backward, and prints the notebook's "
        "cmp line for each gradient."
    )
    run = (
        f"Run it: python {_name(mode, cell, fmt)} path/to/names.txt (or set NAMES_TXT, or put names.txt beside it)."
        if fmt == "py"
        else "Put the lecture's names.txt beside this notebook (or set NAMES_TXT), then run all cells."
    )
    path = PATH_PY if fmt == "py" else PATH_IPYNB
    imports = (
        "import os\nimport random\n"
        + ("import sys\n" if fmt == "py" else "")
        + ("import torch\nimport torch.nn.functional as F\n\n" + path)
    )
    block_size = config.block_size
    cmp_lines = "\n".join(f"cmp('{name}', d{name}, {name})" for name in checked)
    return [
        Section(f"Backprop Explorer: {what}", f"{intro}\n\n{run}"),
        Section("Imports and the names file", imports),
        Section("The data: the lecture's vocabulary and 80/10/10 split", DATA.replace("BLOCK_SIZE", str(block_size))),
        Section("The network: the lecture's initialisation, and one minibatch", _network(net, config)),
        Section("The forward pass, and PyTorch's backward (the reference)", _forward(net, mode)),
        Section("The notebook's comparison", CMP),
        Section(f"Your backward ({exercise})", backward),
        *([] if own_cmp or not checked else [Section("Every gradient, in the order of the notebook's cmp lines",
                                                       cmp_lines)]),
    ]  # fmt: skip


def _network(net: Net, config: ModelConfig) -> str:
    seeded = [node for node in net.params if node.init is not None and node.init.generator == "seeded"]
    fresh = [node for node in net.params if node.init is not None and node.init.generator != "seeded"]
    sizes = axis_sizes(config, 0)  # the axes the net's sizes are read off (the vocabulary's is the data's)
    lines = [
        *(f"{name} = {sizes[axis]} # {net.size_about.get(name, axis)}" for axis, name in net.size_names),
        f"g = torch.Generator().manual_seed({config.seed}) # for reproducibility",
        *(node.init.code for node in seeded),  # type: ignore[union-attr]
        "# the lecture draws these from the global generator: seeded as a new torch.Generator() starts, they are the "
        "explorer's",
        f"torch.manual_seed({FRESH_SEED})",
        *(node.init.code for node in fresh),  # type: ignore[union-attr]
    ]
    if config.init == "zero_bias":
        lines.append("# init=zero_bias")
        lines += [
            f"{node.name} = torch.full_like({node.name}, {node.init.zero_bias!r})"
            for node in net.params
            if node.init is not None and node.init.zero_bias is not None
        ]
    if config.dtype == "float64":
        lines.append("# dtype=float64: drawn in float32, then cast")
        lines += [f"{name} = {name}.double()" for name in net.param_names]
    lines += [
        f"parameters = [{', '.join(net.param_names)}]",
        "print(sum(p.nelement() for p in parameters), 'parameters in total')",
        "for p in parameters:",
        "  p.requires_grad = True",
        "",
        f"batch_size = {config.batch_size}",
        "n = batch_size # a shorter variable also, for convenience",
        "# construct a minibatch",
        "ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=g)",
        "Xb, Yb = Xtr[ix], Ytr[ix] # batch X,Y",
    ]
    return "\n".join(lines)


def _forward(net: Net, mode: str) -> str:
    lines = [op.notebook or op.formula for op in net.ops_for_mode(mode)]  # a fused op: the lines naming what it saves
    kept = [node.name for node in net.nodes_for_mode(mode) if node.kind == "intermediate"]
    return "\n".join([
        "# forward pass",
        *lines,
        "",
        "# PyTorch backward pass",
        "for p in parameters:",
        "  p.grad = None",
        f"for t in [{', '.join(reversed(kept))}]:",
        "  t.retain_grad()",
        "loss.backward()",
        "print('loss', loss.item())",
    ])  # fmt: skip


def _gradients(net: Net, mode: str) -> list[str]:
    """The nodes the mode's backward computes a gradient for."""
    return [rule.target for op in net.backward_schedule(mode) for rule in op.rules]


def _lecture_lines(net: Net, mode: str, upto: int) -> list[str]:
    """The lecture's lines of the steps before `upto` (1-based), as the declaration has them."""
    return [right_rule(rule).code for op in net.backward_schedule(mode)[: upto - 1] for rule in op.rules]


def _cell_backward(net: Net, mode: str, text: str, program: str) -> tuple[str, list[str]]:
    """The learner's cell, after the lecture's lines of the steps before it; and the gradients to cmp."""
    grads = set(cell_grads(net, mode))
    schedule = net.backward_schedule(mode)
    first = min(k for k, op in enumerate(schedule, start=1) if any(rule.target in grads for rule in op.rules))
    before = _lecture_lines(net, mode, first)
    given = set(cell_given(net, mode))
    written = {name[1:] for stmt in parse(program, cell=True).body for name in writes(stmt)} & set(
        _gradients(net, mode)
    )
    checked = order(net, sorted(grads | (written - given)))
    prelude = (
        [
            "# the lines before this exercise's cell in the notebook (the explorer gives you these gradients)",
            *before,
            "",
        ]
        if before
        else []
    )
    return "\n".join([*prelude, text.rstrip("\n")]), checked


def _steps_backward(net: Net, mode: str, steps: dict[int, str]) -> tuple[str, list[str]]:
    """The learner's steps in order, the lecture's lines where a step before the last solved one is missing; and the
    gradients complete by then."""
    schedule = net.backward_schedule(mode)
    for step, code in steps.items():
        if not 1 <= step <= len(schedule):
            raise Refused(f"step {step}: mode {mode} has {len(schedule)} backward steps")
        try:
            check_program(code, step_names(net, mode, step))
        except Refused as e:
            raise Refused(f"step {step}: {e}") from None
    last = max(steps)
    lines: list[str] = []
    for k, op in enumerate(schedule[:last], start=1):
        lines.append(f"# step {k}: backprop through {op.formula.splitlines()[0]}")
        if k in steps:
            lines.append(textwrap.dedent(steps[k]).strip("\n"))
        else:
            lines.append("# (not solved in the explorer: the lecture's line)")
            lines += [right_rule(rule).code for rule in op.rules]
    done = {rule.target for op in schedule[:last] for rule in op.rules}
    later = {rule.target for op in schedule[last:] for rule in op.rules}
    return "\n".join(lines), order(net, sorted(done - later))


def _py(sections: list[Section]) -> str:
    title, intro = sections[0].heading, sections[0].code
    out = [f'"""{title}\n\n{intro}\n"""', ""]
    for section in sections[1:]:
        out += [f"# --- {section.heading} " + "-" * max(3, 100 - len(section.heading)), section.code, ""]
    return "\n".join(out)


def _ipynb(sections: list[Section]) -> str:
    title, intro = sections[0].heading, sections[0].code
    cells = [{"cell_type": "markdown", "id": "md-0", "metadata": {}, "source": _source(f"# {title}\n\n{intro}")}]
    for i, section in enumerate(sections[1:], start=1):
        cells.append(
            {"cell_type": "markdown", "id": f"md-{i}", "metadata": {}, "source": _source(f"## {section.heading}")}
        )
        cells.append({
            "cell_type": "code", "execution_count": None, "id": f"code-{i}", "metadata": {}, "outputs": [],
            "source": _source(section.code),
        })  # fmt: skip
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(notebook, indent=1) + "\n"


def _source(text: str) -> list[str]:
    """A cell's source as nbformat stores it: lines, each with its newline but the last."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]
