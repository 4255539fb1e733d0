"""Training benchmark: one SGD step with the manual fused backward vs the learner's code (the notebook's block,
compiled as a backward=code run compiles it) and loss.backward(), then the lecture's run.

Same process, same seed, one torch thread; the step kinds alternate in blocks so that machine noise
hits all of them alike. Every step's loss is kept, as training does for its curve (the manual step
computes its losses a block at a time: its backward does not need them). Baselines: autograd on the
lecture's own forward pass (what the lecture's training loop does), and autograd on the very forward
the manual step uses (fused kernels, centring and variance by products), so that the ratio credits
the backward pass alone. Then the whole Exercise 4 run (200,000 steps, with its checks and
statistics) through Training, timed. Ratios: > 1 is faster.
Usage: python bench/train_bench.py [--blocks 10] [--steps 500] [--no-full-run]
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

from server.core.data import DEFAULT_DATA, load_dataset  # noqa: E402
from server.core.engine import init_params  # noqa: E402
from server.training.code_backward import CodeBackward  # noqa: E402
from server.training.config import TrainConfig  # noqa: E402
from server.training.kernels import AutogradBackward, ManualBackward, forward_loss  # noqa: E402
from server.training.loop import Training  # noqa: E402

LECTURE_DATA = ROOT.parent / "shared" / "data" / "names.txt"
YOUR_CODE = "your code: the notebook's block"
# Exercise 4's backward as the notebook writes it inside the training loop (backward=code runs it)
NOTEBOOK_BLOCK = """\
dlogits = F.softmax(logits, 1)
dlogits[range(n), Yb] -= 1
dlogits /= n
dh = dlogits @ W2.T
dW2 = h.T @ dlogits
db2 = dlogits.sum(0)
dhpreact = (1.0 - h**2) * dh
dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
dbnbias = dhpreact.sum(0, keepdim=True)
dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))
dembcat = dhprebn @ W1.T
dW1 = embcat.T @ dhprebn
db1 = dhprebn.sum(0)
demb = dembcat.view(emb.shape)
dC = torch.zeros_like(C)
for k in range(Xb.shape[0]):
  for j in range(Xb.shape[1]):
    ix = Xb[k,j]
    dC[ix] += demb[k,j]
grads = [dC, dW1, db1, dW2, db2, dbngain, dbnbias]
"""


def steppers(config: TrainConfig, vocab_size: int) -> dict:
    """Each kind of step with its own parameters and generator, all from the same seed."""
    out = {}
    for kind in (
        "manual fused backward",
        YOUR_CODE,
        "loss.backward(), same forward",
        "loss.backward(), lecture's forward",
    ):
        p, g = init_params(config.model(), vocab_size)
        if kind.startswith("manual"):
            step, losses = ManualBackward(p, config.batch_size).step, ManualBackward.losses
        elif kind == YOUR_CODE:  # checked and compiled on a batch of its own, as a run does on the split's first
            Xb = torch.randint(0, vocab_size, (config.batch_size, config.block_size), generator=torch.Generator())
            Yb = torch.randint(0, vocab_size, (config.batch_size,), generator=torch.Generator())
            code = CodeBackward(p, config.batch_size, NOTEBOOK_BLOCK, Xb, Yb)
            step, losses = code.step, code.losses
        elif "same" in kind:
            step, losses = AutogradBackward(p, config.batch_size).step, AutogradBackward.losses
        else:
            losses = AutogradBackward.losses
            params = list(p.values())

            def step(Xb, Yb, lr, p=p, params=params):  # the lecture's loop: forward, zero grads, backward, update
                with torch.enable_grad():
                    for t in params:
                        t.requires_grad_(True)
                        t.grad = None
                    loss = forward_loss(p, Xb, Yb)
                    loss.backward()
                torch._foreach_add_(params, [t.grad for t in params], alpha=-lr)
                return loss

        out[kind] = (step, losses, g)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=30, help="alternating blocks per kind")
    parser.add_argument("--steps", type=int, default=200, help="steps per block")
    parser.add_argument("--no-full-run", action="store_true", help="skip the 200,000-step run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = LECTURE_DATA if LECTURE_DATA.is_file() else DEFAULT_DATA
    dataset = load_dataset(data)
    config = TrainConfig()
    splits = dataset.splits(config.block_size)
    Xtr, Ytr, n = splits.Xtr, splits.Ytr, config.batch_size
    kinds = steppers(config, dataset.vocab_size)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    with torch.no_grad():
        for _ in range(args.blocks):
            for kind, (step, losses, g) in kinds.items():
                t0 = time.perf_counter()
                records = []
                for _ in range(args.steps):
                    ix = torch.randint(0, Xtr.shape[0], (n,), generator=g)
                    records.append(step(Xtr[ix], Ytr[ix], 0.1))
                losses(records)  # every step's loss, as training keeps them for the curve
                times[kind].append((time.perf_counter() - t0) / args.steps)
    manual = statistics.median(times["manual fused backward"])
    fastest = min(times["manual fused backward"])
    print(f"data: {data}; one training step (batch 32, n_hidden 200, incl. the batch draw), torch threads: 1")
    print(f"{args.blocks} alternating blocks of {args.steps} steps; median and fastest block (noise only adds time)\n")
    print(f"{'step':38s} {'us/step':>8s} {'steps/s':>8s} {'speed-up':>9s} {'fastest':>8s} {'speed-up':>9s}")
    for kind, values in times.items():
        t, best = statistics.median(values), min(values)
        print(f"{kind:38s} {t * 1e6:8.1f} {1 / t:8.0f} {t / manual:8.2f}x {best * 1e6:8.1f} {best / fastest:8.2f}x")
    code = statistics.median(times[YOUR_CODE])
    print(
        f"target: manual >= 2.0x loss.backward(); your code <= 1.5x manual: {code / manual:.2f}x "
        f"(ratio to target {code / manual / 1.5:.2f})"
    )
    if args.no_full_run:
        return
    t0 = time.perf_counter()
    events: dict[str, dict] = {}
    status = Training(config, dataset, lambda kind, d: events.__setitem__(kind, d)).run()
    wall = time.perf_counter() - t0
    result = events.get("result", {})
    print(f"\nthe lecture's run: 200,000 steps with the manual backward ({status}), checks every 1,000 steps")
    rate = events["progress"]["steps_per_s"]
    print(f"  time {wall:.1f} s (target 60 s, ratio {wall / 60:.2f}); {rate:.0f} steps/s")
    print(f"  train loss {result.get('train_loss'):.4f}, val loss {result.get('val_loss'):.4f} (lecture: 2.07 / 2.11)")


if __name__ == "__main__":
    main()
