"""Sandbox bench: what the notebook's loops and the loops at each cap cost a check, in the sandbox's own terms.

Grades each program in this process as a sandbox process does (one torch thread) and prints one row each: the
outcome (graded, or the cap that refused it), what the dry run counted, and the seconds the check took (median
of --runs), against the sandbox process's timeout; then the same for whole cells (the notebook's, and floods of
what only a cell has: cmp lines, wrong lines kept to be told). Not a test: the figures go to docs/challenge.md.
Usage: python bench/sandbox_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.core.config import ModelConfig  # noqa: E402
from server.core.data import load_dataset  # noqa: E402
from server.core.engine import run_backward  # noqa: E402
from server.learner.cells import grade_cell  # noqa: E402
from server.learner.challenge import context, grade  # noqa: E402
from server.learner.sandbox import Cost, Refused, evaluate  # noqa: E402
from server.sandbox_pool import TIMEOUT_S  # noqa: E402
from tests.test_cells import EXERCISE_1_CMP  # noqa: E402 (the notebook's cells, as literal text)
from tests.test_challenge import EXERCISE_1, EXERCISE_4  # noqa: E402

LECTURE_DATA = ROOT.parent / "shared" / "data" / "names.txt"
LARGEST = ModelConfig(batch_size=256, n_hidden=512, n_embd=64, block_size=8, dtype="float64")
DC_LOOP = (
    "dC = torch.zeros_like(C)\nfor k in range(Xb.shape[0]):\n  for j in range(Xb.shape[1]):\n    ix = Xb[k,j]\n"
    "    dC[ix] += demb[k,j]"
)
GROW = "a = (torch.ones_like(hprebn).view(2048, 1) * torch.ones_like(b1)[0:16].view(1, 16)).view(128, 256)\n"
WIDE = "a = torch.ones_like(hprebn).view(-1, 1) * torch.ones_like(b1)[0:16].view(1, 16)\n"  # 2M entries, largest config
PROGRAMS = [  # (label, config, step, code)
    ("notebook dC loop", "lecture", 20, DC_LOOP),
    ("notebook dC loop", "largest", 20, DC_LOOP),
    ("notebook dW1, dembcat (heaviest step)", "largest", 18,
     "dembcat = dhprebn @ W1.T\ndW1 = embcat.T @ dhprebn\ndb1 = dhprebn.sum(0)"),
    ("4,096 loop-body runs, cheap body", "lecture", 4, "for i in range(64):\n  for j in range(63):\n    x = i"),
    ("iterations cap: 16 x 16 x 17", "lecture", 4,
     "for a in range(16):\n for b in range(16):\n  for c in range(17):\n   x = a"),
    ("just under the tensor operations cap", "lecture", 4, "for i in range(2040):\n  x = counts * 2\n  y = x + 1"),
    ("tensor operations cap: 2,100 x 2 ops", "lecture", 4, "for i in range(2100):\n  x = counts * 2\n  y = x + 1"),
    ("expressions cap: 4,000 x 21", "lecture", 4,
     "for i in range(4000):\n  x = ((i, i, i, i), (i, i, i, i), (i, i, i, i), (i, i, i, i))"),
    ("entries cap: (128,256) @ (256,128) x 300", "lecture", 4, GROW + "for i in range(300):\n  y = a @ a.T"),
    ("just under the entries cap: 2M-entry adds", "largest", 4,
     WIDE + "for i in range(40):\n  y = a + a"),
    ("entries cap, largest config: 2M-entry adds", "largest", 4,
     WIDE + "for i in range(400):\n  y = a + a"),
]  # fmt: skip


SIGN_FLIP = EXERCISE_1.replace("dcounts_sum = (-counts_sum**-2)", "dcounts_sum = (counts_sum**-2)")
CELLS = [  # (label, config, mode, cell)
    ("notebook Exercise 1 cell + its 26 cmp lines", "lecture", "atomic", EXERCISE_1 + EXERCISE_1_CMP),
    ("notebook Exercise 1 cell + its 26 cmp lines", "largest", "atomic", EXERCISE_1 + EXERCISE_1_CMP),
    ("Exercise 1 cell, a sign flip on line 6", "largest", "atomic", SIGN_FLIP),
    ("notebook Exercise 4 block", "largest", "fused", EXERCISE_4),
    ("250 cmp lines of 2M entries each", "largest", "atomic",
     "d = torch.ones_like(hprebn[0:16, 0:1]).unsqueeze(2)\n" + "cmp('x', d, hprebn)\n" * 250),
    ("100 wrong lines, each kept to be told", "largest", "atomic", "dhprebn = hprebn * 2\n" * 100),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(LECTURE_DATA)
    passes = {
        "lecture": run_backward(ModelConfig(), dataset, "atomic"),
        "largest": run_backward(LARGEST, dataset, "atomic"),
    }
    for bp in passes.values():
        bp.ref_grads, bp.history  # noqa: B018 (the reference and every step, computed before the clock starts)
        grade(bp, 20, DC_LOOP)  # warm, as a sandbox process is
    print(f"{'program':44s} {'config':8s} {'outcome':32s} {'iter':>6s} {'ops':>6s} {'exprs':>7s} {'entries':>13s} "
          f"{'s (median)':>10s} {'of timeout':>10s}")  # fmt: skip
    for label, config, step, code in PROGRAMS:
        bp = passes[config]
        ctx, cost = context(bp, step), Cost()
        try:
            evaluate(code, ctx["scope"], ctx["shared"], ctx["mutable"], ctx["later"], cost=cost)
        except Refused:
            pass
        times, outcome = [], ""
        for _ in range(args.runs):
            start = time.perf_counter()
            try:
                result = grade(bp, step, code)
                outcome = "graded, correct" if result["correct"] else "graded"
            except Refused as e:
                text = str(e)
                outcome = "refused: " + next(
                    (cap for cap in ("times in all", "tensor operations", "expressions evaluated", "tensor entries")
                     if cap in text), text[:20])  # fmt: skip
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"{label:44s} {config:8s} {outcome:32s} {cost.iterations:6,d} {cost.tensor_ops:6,d} "
              f"{cost.evaluations:7,d} {cost.work:13,d} {median:10.3f} {median / TIMEOUT_S:10.0%}")  # fmt: skip
    print(f"\n{'whole cell':44s} {'config':8s} {'outcome':32s} {'s (median)':>10s} {'of timeout':>10s}")
    cell_passes = {(config, mode): passes[config] if mode == "atomic" else run_backward(
        LARGEST if config == "largest" else ModelConfig(), dataset, mode) for _, config, mode, _ in CELLS}  # fmt: skip
    for bp in cell_passes.values():
        bp.ref_grads, bp.history  # noqa: B018
        grade_cell(bp, EXERCISE_1 if bp.mode == "atomic" else EXERCISE_4)  # warm
    for label, config, mode, cell in CELLS:
        bp = cell_passes[config, mode]
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            result = grade_cell(bp, cell)
            times.append(time.perf_counter() - start)
        wrong = result["first_wrong"]
        outcome = "correct" if result["correct"] else f"wrong, first: line {wrong['line']}" if wrong else "wrong"
        median = statistics.median(times)
        print(f"{label:44s} {config:8s} {outcome:32s} {median:10.3f} {median / TIMEOUT_S:10.0%}")


if __name__ == "__main__":
    main()
