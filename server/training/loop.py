"""Exercise 4: a training run's loop, its progress events, and the evaluation at the end.

No web code here: `Training.run()` reports through an `emit(kind, data)` callback and asks `should_stop()`
between chunks of steps; server/runs/train_process.py connects both to the run store. The steps are in
kernels.py (or, for a net without a hand-tuned kernel, generic.py), the evaluation in evaluation.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from ..core.data import Dataset
from ..core.engine import init_params
from ..net.declare import Net
from ..net.layers import NoKernel
from .code_backward import CodeBackward, where_wrong
from .config import CHECK_EVENTS, STATS_POINTS, TrainConfig
from .evaluation import calibrate_bn, sample_names, split_loss
from .generic import DeclaredAutograd, DeclaredBackward
from .kernels import AutogradBackward, ManualBackward

EMIT_EVERY_S = 0.5  # progress events at most this often; a stop is looked for as often (the clock read every step)
STATS_EVERY = 100  # update-to-data ratio and tanh saturation sampled every this many steps (or sparser: STATS_POINTS)
N_CHECKPOINTS = 10  # histograms at this many evenly spaced steps (and at step 0)
CURVE_POINTS = 2000  # raw per-step losses kept for the curve, evenly spaced
SMOOTH_BUCKETS = 200  # the smoothed line: mean log10 loss over max_steps / 200 steps (1000 in the lecture)
SATURATED = 0.97  # |tanh| above this counts as saturated, as in the previous lecture
HIST_BINS = 40
CHECK_RTOL = 1e-4  # a gradient agrees with autograd's within this share of the step's largest gradient entry
LOSS_WINDOW = 100  # a run's first and last this many steps' mean loss tell whether the loss fell ...
LOSS_FELL = 0.02  # ... by more than this (nats)
# a step's CPU cost, a little above what bench/train_bench.py measures, for each run's CPU-time limit:
STEP_BASE_S = 5.5e-4  # per step whatever its size (Python, the batch draw, small kernels) ...
STEP_MAC_S = 1.3e-10  # ... per multiply-add of the forward's matrix products (the backward's come with them) ...
STEP_UNIT_S = 2e-8  # ... and per (row, hidden unit) and (row, character): the elementwise work around them
CODE_COST = 2.0  # a learner's compiled block costs at most this many built-in steps
RUN_BASE_CPU_S = 30.0  # a run's start (torch, the splits) and its evaluation at the end
CPU_SLACK = 3.0  # a run may use this multiple of its estimate (a slower CPU, a busy machine's caches)


def _plotted(net: Net) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """What a run plots: the weight matrices (2-D, no broadcast axis: update ratios and gradient histograms), the
    activations between the embedding and the loss in forward order, their gradients in backward order (the tanh
    outputs' are the next layer's input gradients), and the tanh outputs whose saturation is sampled."""
    weights = tuple(node.name for node in net.params if len(node.axes) == 2 and "one" not in node.axes)
    trained = net.ops_for_mode(net.trained_mode)
    activations = tuple(op.outputs[0] for op in trained if op.kernel not in ("embedding", "view", "cross_entropy"))
    tanh = tuple(op.outputs[0] for op in trained if op.kernel == "tanh")
    grads = tuple("d" + name for name in reversed(activations) if name not in tanh)
    return weights, activations, grads, tanh


def step_cpu_s(config: TrainConfig, vocab_size: int) -> float:
    """The CPU seconds one step of this run is expected to take (its checks against autograd included)."""
    n, h = config.batch_size, config.n_hidden
    macs = n * (config.block_size * config.n_embd * h + h * vocab_size)
    step = STEP_BASE_S + STEP_MAC_S * macs + STEP_UNIT_S * n * (h + vocab_size)
    step *= 1 + 1 / config.check_every  # every K-th step runs autograd's backward too, to compare
    return step * (CODE_COST if config.backward == "code" else 1.0)


def cpu_needed_s(config: TrainConfig, vocab_size: int, step_s: float | None = None) -> float:
    """The CPU seconds the whole run is expected to take; `step_s`: a step's measured cost, if known (the
    estimate still holds if it is lower: a measured step has no checks against autograd)."""
    return RUN_BASE_CPU_S + config.max_steps * max(step_s or 0.0, step_cpu_s(config, vocab_size))


def cpu_limit_s(config: TrainConfig, vocab_size: int, max_cpu_s: float, step_s: float | None = None) -> float:
    """The CPU-time limit of the run's training process: its estimate with slack, never above `max_cpu_s`."""
    step = max(step_s or 0.0, step_cpu_s(config, vocab_size))
    return min(max_cpu_s, RUN_BASE_CPU_S + CPU_SLACK * config.max_steps * step)


def cpu_text(seconds: float) -> str:
    """A CPU time as a learner reads it: 45 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _histogram(t: torch.Tensor) -> dict[str, Any]:
    t = t.detach().float().reshape(-1)
    finite = t[torch.isfinite(t)]
    if finite.numel() == 0:
        return {"edges": [], "counts": [], "mean": None, "std": None}
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1e-12
    counts = torch.histc(finite, bins=HIST_BINS, min=lo, max=hi)
    edges = torch.linspace(lo, hi, HIST_BINS + 1)
    return {
        "edges": edges.tolist(),
        "counts": counts.int().tolist(),
        "mean": float(finite.mean()),
        "std": float(finite.std()) if finite.numel() > 1 else 0.0,
    }


def _agrees(maxdiff: float | None, scale: float) -> bool:
    """Whether a gradient is autograd's up to float32 rounding: its max |diff| (None: not finite) <= CHECK_RTOL x
    `scale`, the largest entry of all of autograd's gradients of the step.

    Not cmp's entrywise allclose: its atol of 1e-8 fails the built-in backward's right gradients on small entries
    within a few hundred steps; nor relative to each gradient: db1 is 0 (batchnorm cancels it) up to rounding."""
    return maxdiff is not None and maxdiff <= CHECK_RTOL * scale


def _worst(maxdiff: dict[str, float | None]) -> float | None:
    """The largest of a check's maxdiffs; None (not finite) if one is."""
    values = maxdiff.values()
    return None if None in values else max(values, default=0.0)  # type: ignore[type-var]


def _num(x: float | None) -> str:
    return "not finite" if x is None else f"{x:.3g}"


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _worse(a: float | None, b: float | None) -> float | None:
    """The worse of two maxdiffs, None (not finite) being the worst."""
    return None if a is None or b is None else max(a, b)


class Training:
    """One run: the loop, its progress events, and the evaluation at the end."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset,
        emit: Callable[[str, dict[str, Any]], None],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config, self.dataset, self.emit, self.clock = config, dataset, emit, clock
        self.net = net = config.model().pack
        self.param_names = net.param_names
        self.weights, self.activations, self.activation_grads, self.tanh_outputs = _plotted(net)
        self.splits = dataset.splits(config.block_size)
        self.p, self.g = init_params(config.model(), dataset.vocab_size)
        self.manual: ManualBackward | CodeBackward | DeclaredBackward
        try:  # the hand-tuned twins, for a net of the lecture's shape
            self.reference: AutogradBackward | DeclaredAutograd = AutogradBackward(self.p, config.batch_size, net)
            kernel: ManualBackward | None = ManualBackward(self.p, config.batch_size, net)
        except NoKernel:  # any other net: its declared forward and rules, and autograd through the declared forward
            self.reference, kernel = DeclaredAutograd(self.p, net), None
        if config.code is not None:  # the learner's block, checked and compiled on the first batch of the split
            n = config.batch_size
            self.manual = CodeBackward(self.p, n, config.code, self.splits.Xtr[:n], self.splits.Ytr[:n], net=net)
        else:
            self.manual = kernel or DeclaredBackward(self.p, net)
        self.stepper = self.reference if config.backward == "autograd" else self.manual
        total = config.max_steps
        self.losses = torch.empty(total)  # every step's loss
        self.pending: list[Any] = []  # what the stepper's losses() turns into the losses of the last steps
        self.flushed = self.smoothed = 0  # steps written to `losses`; steps folded into the smooth line
        self.stride = max(1, total // CURVE_POINTS)
        self.bucket = max(1, total // SMOOTH_BUCKETS)
        self.checkpoints = {round(k * total / N_CHECKPOINTS) for k in range(N_CHECKPOINTS)} | {total - 1}
        self.stats_every = max(STATS_EVERY, -(-total // STATS_POINTS))
        n_checks = -(-total // config.check_every) + (1 if (total - 1) % config.check_every else 0)
        self.check_group = -(-n_checks // CHECK_EVENTS)  # comparisons per check event
        self.pending_check: dict[str, Any] | None = None  # the worst of the group so far
        self.checks_done = 0
        self.worst_check: float | None = 0.0  # the largest maxdiff of every check (None: one was not finite)
        self.first_wrong: tuple[int, dict[str, float | None]] | None = None  # the first check that failed
        self.wrong_line: str | None = None  # the learner's block at that check: its first wrong line, its slip
        self.ud: list[list[Any]] = []
        self.saturation: list[list[Any]] = []
        self.started = clock()

    @torch.no_grad()
    def run(self, should_stop: Callable[[], str | None] = lambda: None) -> str:
        """Train; returns finished, diverged, or the reason should_stop() gave."""
        cfg, total = self.config, self.config.max_steps
        stepper = self.stepper
        Xtr, Ytr, g, n = self.splits.Xtr, self.splits.Ytr, self.g, cfg.batch_size
        ntr = Xtr.shape[0]
        pending, checkpoints, clock, stats_every = self.pending, self.checkpoints, self.clock, self.stats_every
        last_emit = clock()
        self.emit("status", {"status": "running"})
        for i in range(total):
            ix = torch.randint(0, ntr, (n,), generator=g)  # the lecture's batch draw, from the same generator
            Xb, Yb = Xtr[ix], Ytr[ix]
            lr = cfg.lr_at(i)
            if i % stats_every and i % cfg.check_every and i not in checkpoints:
                pending.append(stepper.step(Xb, Yb, lr))
            else:
                pending.append(self.observed_step(i, Xb, Yb, lr))
            # by time, every step: a step of the largest config takes ~50 ms, so counting steps would
            # leave a cancelled run training for seconds
            if clock() - last_emit >= EMIT_EVERY_S:
                last_emit = clock()
                if not self.flush(i + 1):
                    return self.stop("diverged")
                reason = should_stop()
                if reason:
                    return self.stop(reason)
        # the clock may have flushed the last step already (a flush of nothing would have no last loss)
        if self.flushed < total and not self.flush(total):
            return self.stop("diverged")
        self.evaluate()
        self.emit("status", {"status": "finished", "step": total})
        return "finished"

    def observed_step(self, i: int, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> Any:
        """A step that also checks the manual gradients against autograd and records statistics."""
        cfg, total = self.config, self.config.max_steps
        logits, grads, acts = self.manual.grads(Xb, Yb, keep=True)
        if i % cfg.check_every == 0 or i == total - 1:
            _, ref = self.reference.grads(Xb, Yb)
            maxdiff = {
                k: _finite(float((a - b).abs().max())) for k, a, b in zip(self.param_names, grads, ref, strict=True)
            }
            scale = max(float(b.abs().max()) for b in ref)
            wrong = [k for k in self.param_names if not _agrees(maxdiff[k], scale)]
            if wrong and self.first_wrong is None and cfg.code is not None:
                # once, at the first check that fails: the whole-cell check of the block names its wrong line
                params = dict(zip(self.param_names, self.manual.params, strict=True))
                self.wrong_line = where_wrong(cfg.code, cfg.model(), params, Xb, Yb)
            self.record_check(i, maxdiff, wrong, last=i == total - 1)
        if i in self.checkpoints:
            weights = dict(zip(self.param_names, grads, strict=True))
            self.emit("histograms", {
                "step": i,
                # a learner's block may name its gradients otherwise: only those it has are drawn
                "activations": {k: _histogram(acts[k]) for k in self.activations if k in acts},
                "activation_grads": {k: _histogram(acts[k]) for k in self.activation_grads if k in acts},
                "weight_grads": {k: _histogram(weights[k]) for k in self.weights},
            })  # fmt: skip
        if i % self.stats_every == 0:
            # the previous lecture's update-to-data ratio, log10(std(lr * grad) / std(param)), per weight matrix
            self.ud.append([i, {
                k: _finite(float(((lr * gr).std() / t.std()).log10()))
                for k, gr, t in zip(self.param_names, grads, self.manual.params, strict=True) if k in self.weights
            }])  # fmt: skip
            if self.tanh_outputs:  # a net without tanh (an attention head, a ReLU file) has no saturation to plot
                # (n, units of every hidden block): a block's 3-D (n, T, units) tanh counts each position's units
                h = torch.cat([acts[k].reshape(Xb.shape[0], -1) for k in self.tanh_outputs], 1)
                self.saturation.append([i, float((h.abs() > SATURATED).float().mean())])
        if cfg.backward == "autograd":
            return self.reference.step(Xb, Yb, lr)
        torch._foreach_add_(self.manual.params, grads, alpha=-lr)
        return logits, Yb

    def record_check(self, step: int, maxdiff: dict[str, float | None], wrong: list[str], last: bool) -> None:
        """Emit a check event, or fold this comparison into the group's (each parameter's worst; None is sticky).

        `wrong`: the parameters whose gradient does not agree with autograd's (the event lists every one the group
        had)."""
        self.checks_done += 1
        self.worst_check = _worse(self.worst_check, _worst(maxdiff))
        if wrong and self.first_wrong is None:
            self.first_wrong = (step, {k: maxdiff[k] for k in wrong})
        group = self.pending_check
        if group is None:
            group = self.pending_check = {"step": step, "maxdiff": maxdiff, "checks": 0, "wrong": wrong}
        else:
            before = group["maxdiff"]
            group["step"] = step
            group["maxdiff"] = {k: _worse(before[k], v) for k, v in maxdiff.items()}
            group["wrong"] = [k for k in self.param_names if k in group["wrong"] or k in wrong]
        group["checks"] += 1
        if group["checks"] == self.check_group or last:
            self.emit("check", {**group, "max": _worst(group["maxdiff"])})
            self.pending_check = None

    def flush(self, done: int) -> bool:
        """Move pending losses into `losses` and emit progress; False once a loss is not finite."""
        total, start = self.config.max_steps, self.flushed
        if self.pending:
            self.losses[start : start + len(self.pending)] = self.stepper.losses(self.pending)
            self.pending.clear()
        chunk = self.losses[start:done]
        log10 = chunk.log10()
        first = start + (-start) % self.stride
        points = [[s, _finite(float(log10[s - start]))] for s in range(first, done, self.stride)]
        if done == total and (total - 1) % self.stride and len(chunk):
            points.append([total - 1, _finite(float(log10[-1]))])
        smooth = []
        while self.smoothed + self.bucket <= done:
            window = self.losses[self.smoothed : self.smoothed + self.bucket]
            smooth.append([self.smoothed + self.bucket // 2, _finite(float(window.log10().mean()))])
            self.smoothed += self.bucket
        self.flushed = done
        elapsed = self.clock() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        self.emit("progress", {
            "step": done, "max_steps": total, "steps_per_s": rate,
            "eta_s": (total - done) / rate if rate > 0 else None, "lr": self.config.lr_at(done - 1),
            "loss": _finite(float(chunk[-1])) if len(chunk) else None,
            "points": points, "smooth": smooth, "ud": self.ud, "saturation": self.saturation,
        })  # fmt: skip
        self.ud, self.saturation = [], []
        return bool(torch.isfinite(chunk).all())

    def verdict(self, status: str) -> str | None:
        """What a run with the learner's backward shows: do the checks agree with autograd, and did the loss fall."""
        who = {"code": "your backward", "manual": "the manual backward"}.get(self.config.backward)
        if who is None:
            checks = "trained on autograd's gradients"
        elif self.checks_done == 0:
            return None
        elif self.first_wrong is not None:
            step, wrong = self.first_wrong
            said = ", ".join(f"d{k} (max |diff| {_num(v)})" for k, v in wrong.items())
            checks = f"{who} disagrees with autograd from the check at step {step}: {said}"
            if self.wrong_line:
                checks += f"; Exercise 4's cell check of your block: {self.wrong_line}"
        else:
            checks = (
                f"{who} agreed with autograd at all {self.checks_done:,} checks (largest max |diff| "
                f"{_num(self.worst_check)}; {CHECK_RTOL:g} x the largest gradient entry counts as equal)"
            )
        done = self.flushed
        if status == "diverged":
            return f"{checks}; the loss became NaN or infinite at step {done:,}"
        window = max(1, min(LOSS_WINDOW, done // 10))
        if done < 2 * window:
            return checks
        first, last = float(self.losses[:window].mean()), float(self.losses[done - window : done].mean())
        fell = math.isfinite(first) and math.isfinite(last) and last < first - LOSS_FELL
        trend = "fell" if fell else "did not fall"
        said = f"{checks}; the loss {trend}: {first:.3f} in the first {window} steps, {last:.3f} in the last {window}"
        guess = math.log(self.dataset.vocab_size)  # a net that learned nothing predicts every character alike
        if fell and last > guess - LOSS_FELL:
            said += f", no lower than a uniform guess over the {self.dataset.vocab_size} characters (ln = {guess:.3f})"
        return said

    def stop(self, status: str) -> str:
        if self.pending:
            self.flush(self.flushed + len(self.pending))
        self.emit("status", {"status": status, "step": self.flushed})
        return status

    def evaluate(self) -> None:
        """The lecture's ending: calibrate batchnorm on the training split, split losses, 20 samples."""
        p, sp = self.p, self.splits
        net = self.net
        bn = calibrate_bn(p, sp.Xtr, net)
        self.emit("result", {
            "train_loss": _finite(split_loss(p, bn, sp.Xtr, sp.Ytr, net)),
            "val_loss": _finite(split_loss(p, bn, sp.Xdev, sp.Ydev, net)),
            "samples": sample_names(p, bn, self.dataset, self.config.block_size, self.config.seed, net=net),
            "duration_s": self.clock() - self.started,
        })  # fmt: skip
