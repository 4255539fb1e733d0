"""Exercise 4: train the MLP with the hand-written fused backward pass (or autograd, to compare).

No web code here: `train()` reports through an `emit(kind, data)` callback and asks `should_stop()`
between chunks of steps; server/worker.py connects both to the run store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .config import ModelConfig
from .data import Dataset
from .engine import init_params
from .forward import run_forward
from .graph import EPS, PARAM_NAMES, PARAMS, eval_ops

Backward = Literal["manual", "autograd"]
TRAIN_BOUNDS: dict[str, tuple[int, int]] = {
    "max_steps": (1, 1_000_000),
    "lr_decay_step": (0, 1_000_000),
    "check_every": (1, 1_000_000),
}
MAX_LR = 1e38  # anything float32 holds: a huge rate is allowed, to watch the loss blow up to NaN
EMIT_EVERY_S = 0.5  # progress events at most this often; a stop is looked for as often (the clock read every step)
STATS_EVERY = 100  # update-to-data ratio and tanh saturation sampled every this many steps ...
STATS_POINTS = 2000  # ... or fewer: at most this many samples per run
CHECK_EVENTS = 500  # check events per run at most: more frequent checks are reported in groups, each its worst
N_CHECKPOINTS = 10  # histograms at this many evenly spaced steps (and at step 0)
CURVE_POINTS = 2000  # raw per-step losses kept for the curve, evenly spaced
SMOOTH_BUCKETS = 200  # the smoothed line: mean log10 loss over max_steps / 200 steps (1000 in the lecture)
SATURATED = 0.97  # |tanh| above this counts as saturated, as in the previous lecture
N_SAMPLES = 20
HIST_BINS = 40
# the weight matrices (2-D, no broadcast axis): their update ratios and gradient histograms are plotted
WEIGHTS = tuple(node.name for node in PARAMS if len(node.axes) == 2 and "one" not in node.axes)


@dataclass(frozen=True)
class TrainConfig:
    """One training run (defaults = the lecture's Exercise 4)."""

    seed: int = 2147483647  # the lecture's generator: parameters, then every batch
    n_embd: int = 10  # embedding dimensions per character
    n_hidden: int = 200  # hidden layer size (Exercise 4 uses 200)
    block_size: int = 3  # context length
    batch_size: int = 32  # minibatch size n
    max_steps: int = 200_000  # optimisation steps
    lr: float = 0.1  # learning rate before the decay step
    lr_decay_step: int = 100_000  # from this step on, lr_after
    lr_after: float = 0.01  # the decayed learning rate
    check_every: int = 1000  # K: compare the manual gradients with autograd every K steps
    backward: Backward = "manual"  # manual (the fused Exercise 2+3 backward) or autograd

    def __post_init__(self) -> None:
        self.model()  # validates seed, sizes
        for name, (low, high) in TRAIN_BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        for name in ("lr", "lr_after"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= MAX_LR:
                raise ValueError(f"{name} must be a finite number in [0, {MAX_LR:g}], got {value!r}")
        if self.backward not in ("manual", "autograd"):
            raise ValueError(f"backward must be manual or autograd, got {self.backward!r}")

    def model(self) -> ModelConfig:
        return ModelConfig(
            seed=self.seed, batch_size=self.batch_size, n_embd=self.n_embd,
            n_hidden=self.n_hidden, block_size=self.block_size,
        )  # fmt: skip

    def lr_at(self, step: int) -> float:
        return self.lr if step < self.lr_decay_step else self.lr_after

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def forward_loss(p: dict[str, torch.Tensor], Xb: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
    """The lecture's Exercise 4 forward pass (batchnorm with batch statistics), as autograd sees it."""
    n = Xb.shape[0]
    embcat = p["C"][Xb].view(n, -1)  # (n, block_size * n_embd)
    hprebn = embcat @ p["W1"] + p["b1"]  # (n, n_hidden)
    bnmean = hprebn.mean(0, keepdim=True)  # (1, n_hidden)
    bnvar = hprebn.var(0, keepdim=True, unbiased=True)  # (1, n_hidden)
    hpreact = p["bngain"] * (hprebn - bnmean) * (bnvar + EPS) ** -0.5 + p["bnbias"]
    h = torch.tanh(hpreact)  # (n, n_hidden)
    logits = h @ p["W2"] + p["b2"]  # (n, vocab_size)
    return F.cross_entropy(logits, Yb)


class ManualBackward:
    """One training step's forward and fused manual backward, written for speed.

    The step is dispatch-bound (~40 small ops), so: fused kernels (addmm, addcmul), centring and
    variance as matrix products (var_mean is ~6x slower at this size), in-place
    updates, transposed views made once (they follow the parameters' in-place updates), the
    batchnorm sums reused (dhpreact.sum(0) is dbnbias, (bnraw * dhpreact).sum(0) is dbngain), the
    1/n of dlogits moved into the step size, and one _foreach_add_ for the SGD update.
    """

    def __init__(self, p: dict[str, torch.Tensor], batch_size: int) -> None:
        self.params = [p[k] for k in PARAM_NAMES]
        self.C, self.W1, self.b1, self.W2, self.b2 = p["C"], p["W1"], p["b1"], p["W2"], p["b2"]
        self.bngain, self.bnbias = p["bngain"], p["bnbias"]
        self.W1t, self.W2t = self.W1.t(), self.W2.t()
        self.zeros_C = torch.zeros_like(self.C)  # dC = zeros with each context's gradient added at its rows
        n = batch_size
        dtype = self.C.dtype
        self.minus_ones = torch.full((n, 1), -1.0, dtype=dtype)
        self.centering = torch.eye(n, dtype=dtype) - 1.0 / n  # centering @ x = x - x.mean(0, keepdim=True)
        self.bessel_row = torch.full((1, n), 1.0 / (n - 1), dtype=dtype)  # row @ x = x.sum(0, keepdim=True) / (n-1)
        self.n_embd = self.C.shape[1]

    def grads(
        self, Xb: torch.Tensor, Yb: torch.Tensor, keep: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        """Logits and n x the seven gradients (PARAM_NAMES order); with keep, the true gradients and activations.

        The backward needs no loss value: the loss of each step is computed later, many steps at once
        (losses()), which takes a cross-entropy call off every step."""
        n = Xb.shape[0]
        xflat = Xb.view(-1)  # (n * block_size,)
        # forward
        embcat = self.C.index_select(0, xflat).view(n, -1)  # (n, block_size * n_embd): C[Xb]
        hprebn = torch.addmm(self.b1, embcat, self.W1)  # (n, n_hidden)
        bndiff = torch.mm(self.centering, hprebn)  # hprebn - bnmeani, (n, n_hidden)
        bnvar_inv = torch.mm(self.bessel_row, bndiff * bndiff).add_(EPS).rsqrt_()  # (1, n_hidden)
        bnraw = bndiff.mul_(bnvar_inv)  # (n, n_hidden)
        hpreact = torch.addcmul(self.bnbias, self.bngain, bnraw)  # (n, n_hidden)
        h = torch.tanh(hpreact)  # (n, n_hidden)
        logits = torch.addmm(self.b2, h, self.W2)  # (n, vocab_size)
        # backward, every gradient n times its true value: dlogits = softmax - one_hot, without the / n
        dlogits = torch.softmax(logits, 1)  # (n, vocab_size)
        dlogits.scatter_add_(1, Yb.view(-1, 1), self.minus_ones)
        dh = torch.mm(dlogits, self.W2t)  # (n, n_hidden)
        dW2 = torch.mm(h.t(), dlogits)  # (n_hidden, vocab_size)
        db2 = dlogits.sum(0)  # (vocab_size,)
        dhpreact = dh.addcmul_(dh, h * h, value=-1.0)  # (1 - h**2) * dh, (n, n_hidden); x*x beats square()
        dbngain = (bnraw * dhpreact).sum(0, keepdim=True)  # (1, n_hidden)
        dbnbias = dhpreact.sum(0, keepdim=True)  # (1, n_hidden)
        kept = dhpreact.clone() if keep else dhpreact
        # the lecture's bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))
        # with its n divided out: bngain*bnvar_inv * (dhpreact - dbnbias/n - bnraw*dbngain/(n-1))
        dhprebn = dhpreact.sub_(dbnbias, alpha=1.0 / n).addcmul_(bnraw, dbngain, value=-1.0 / (n - 1))
        dhprebn.mul_(self.bngain * bnvar_inv)  # (n, n_hidden)
        dW1 = torch.mm(embcat.t(), dhprebn)  # (block_size * n_embd, n_hidden)
        db1 = dhprebn.sum(0)  # (n_hidden,)
        dembcat = torch.mm(dhprebn, self.W1t)  # (n, block_size * n_embd)
        dC = torch.index_add(self.zeros_C, 0, xflat, dembcat.view(-1, self.n_embd))  # (vocab_size, n_embd)
        by_name = {"C": dC, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "bngain": dbngain, "bnbias": dbnbias}
        grads = [by_name[k] for k in PARAM_NAMES]
        if not keep:
            return logits, grads, {}
        acts = {"hprebn": hprebn, "hpreact": hpreact, "h": h, "logits": logits,
                "dlogits": dlogits / n, "dhpreact": kept / n, "dhprebn": dhprebn / n}  # fmt: skip
        return logits, [g / n for g in grads], acts

    def step(self, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step, called under no_grad; returns what losses() needs: (logits, Yb)."""
        logits, grads, _ = self.grads(Xb, Yb)
        torch._foreach_add_(self.params, grads, alpha=-lr / Xb.shape[0])  # grads are n x the gradient
        return logits, Yb

    @staticmethod
    def losses(records: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The mean cross-entropy of each step's (logits, Yb), all steps in one call: (steps,)."""
        logits = torch.stack([r[0] for r in records])  # (steps, n, vocab_size)
        targets = torch.stack([r[1] for r in records])  # (steps, n)
        per_example = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        return per_example.view(targets.shape).mean(1)


class AutogradBackward:
    """The same training step with loss.backward(): the baseline, and the reference for checks."""

    def __init__(self, p: dict[str, torch.Tensor], batch_size: int) -> None:
        self.p = p
        self.params = [p[k] for k in PARAM_NAMES]
        dtype = p["C"].dtype
        self.centering = torch.eye(batch_size, dtype=dtype) - 1.0 / batch_size
        self.bessel_row = torch.full((1, batch_size), 1.0 / (batch_size - 1), dtype=dtype)

    def grads(self, Xb: torch.Tensor, Yb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.enable_grad():
            leaves = {k: t.detach().requires_grad_(True) for k, t in self.p.items()}
            loss = forward_loss(leaves, Xb, Yb)
            loss.backward()
        return loss.detach(), [leaves[k].grad for k in PARAM_NAMES]  # type: ignore[misc]

    def fast_loss(self, Xb: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
        """The manual step's forward, op for op (fused kernels, batch statistics by products): a fair baseline."""
        p, n = self.p, Xb.shape[0]
        embcat = p["C"][Xb].view(n, -1)  # (n, block_size * n_embd)
        hprebn = torch.addmm(p["b1"], embcat, p["W1"])  # (n, n_hidden)
        bndiff = torch.mm(self.centering, hprebn)  # (n, n_hidden)
        bnvar_inv = (torch.mm(self.bessel_row, bndiff * bndiff) + EPS).rsqrt()  # (1, n_hidden)
        h = torch.tanh(torch.addcmul(p["bnbias"], p["bngain"], bndiff * bnvar_inv))  # (n, n_hidden)
        return F.cross_entropy(torch.addmm(p["b2"], h, p["W2"]), Yb)

    def step(self, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> torch.Tensor:
        """Called under no_grad, like the manual step: autograd is switched on for the forward only."""
        with torch.enable_grad():
            leaves = [t.requires_grad_(True) for t in self.params]
            for t in leaves:
                t.grad = None
            loss = self.fast_loss(Xb, Yb)
            loss.backward()
        torch._foreach_add_(leaves, [t.grad for t in leaves], alpha=-lr)  # type: ignore[misc]
        return loss.detach()

    @staticmethod
    def losses(records: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(records)


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


@torch.no_grad()
def calibrate_bn(p: dict[str, torch.Tensor], X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batchnorm's mean and variance over a whole split, as the lecture does after training."""
    hprebn = run_forward(eval_ops("hprebn"), {**p, "Xb": X, "n": X.shape[0]})["hprebn"]  # (N, n_hidden)
    assert isinstance(hprebn, torch.Tensor)
    return hprebn.mean(0, keepdim=True), hprebn.var(0, keepdim=True, unbiased=True)


def _eval_values(p: dict[str, torch.Tensor], bn: tuple[torch.Tensor, torch.Tensor], X: torch.Tensor) -> dict[str, Any]:
    """The inputs of the trained model's forward: parameters, calibrated batchnorm statistics, contexts."""
    return {**p, "bnmean_running": bn[0], "bnvar_running": bn[1], "Xb": X, "n": X.shape[0]}


@torch.no_grad()
def split_loss(
    p: dict[str, torch.Tensor], bn: tuple[torch.Tensor, torch.Tensor], X: torch.Tensor, Y: torch.Tensor
) -> float:
    """Cross-entropy over a split with the calibrated batchnorm statistics."""
    loss = run_forward(eval_ops("loss"), {**_eval_values(p, bn, X), "Yb": Y})["loss"]
    assert isinstance(loss, torch.Tensor)
    return float(loss)


@torch.no_grad()
def sample_names(
    p: dict[str, torch.Tensor],
    bn: tuple[torch.Tensor, torch.Tensor],
    dataset: Dataset,
    block_size: int,
    seed: int,
    count: int = N_SAMPLES,
) -> list[str]:
    """Names from the trained model, as the lecture samples them (generator seeded with seed + 10)."""
    g = torch.Generator().manual_seed(seed + 10)
    ops = eval_ops("logits")
    out = []
    for _ in range(count):
        context, chars = [0] * block_size, []
        for _ in range(64):  # a model that never says '.' still stops
            logits = run_forward(ops, _eval_values(p, bn, torch.tensor([context])))["logits"]  # (1, vocab_size)
            assert isinstance(logits, torch.Tensor)
            probs = F.softmax(logits, dim=1)
            if not bool(torch.isfinite(probs).all()):
                break
            ix = int(torch.multinomial(probs, num_samples=1, generator=g))
            if ix == 0:
                break
            context = context[1:] + [ix]
            chars.append(dataset.itos[ix])
        out.append("".join(chars))
    return out


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
        self.splits = dataset.splits(config.block_size)
        self.p, self.g = init_params(config.model(), dataset.vocab_size)
        self.manual = ManualBackward(self.p, config.batch_size)
        self.reference = AutogradBackward(self.p, config.batch_size)
        self.stepper = self.manual if config.backward == "manual" else self.reference
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
        if not self.flush(total):
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
            maxdiff = {k: _finite(float((a - b).abs().max())) for k, a, b in zip(PARAM_NAMES, grads, ref, strict=True)}
            self.record_check(i, maxdiff, last=i == total - 1)
        if i in self.checkpoints:
            weights = dict(zip(PARAM_NAMES, grads, strict=True))
            self.emit("histograms", {
                "step": i,
                "activations": {k: _histogram(acts[k]) for k in ("hprebn", "hpreact", "h", "logits")},
                "activation_grads": {k: _histogram(acts[k]) for k in ("dlogits", "dhpreact", "dhprebn")},
                "weight_grads": {k: _histogram(weights[k]) for k in WEIGHTS},
            })  # fmt: skip
        if i % self.stats_every == 0:
            # the previous lecture's update-to-data ratio, log10(std(lr * grad) / std(param)), per weight matrix
            self.ud.append([i, {
                k: _finite(float(((lr * gr).std() / t.std()).log10()))
                for k, gr, t in zip(PARAM_NAMES, grads, self.manual.params, strict=True) if k in WEIGHTS
            }])  # fmt: skip
            self.saturation.append([i, float((acts["h"].abs() > SATURATED).float().mean())])
        if cfg.backward == "autograd":
            return self.reference.step(Xb, Yb, lr)
        torch._foreach_add_(self.manual.params, grads, alpha=-lr)
        return logits, Yb

    def record_check(self, step: int, maxdiff: dict[str, float | None], last: bool) -> None:
        """Emit a check event, or fold this comparison into the group's (each parameter's worst; None is sticky)."""
        group = self.pending_check
        if group is None:
            group = self.pending_check = {"step": step, "maxdiff": maxdiff, "checks": 0}
        else:
            before = group["maxdiff"]
            group["step"] = step
            group["maxdiff"] = {k: _worse(before[k], v) for k, v in maxdiff.items()}
        group["checks"] += 1
        if group["checks"] == self.check_group or last:
            values = group["maxdiff"].values()
            worst = max((v for v in values if v is not None), default=None)
            self.emit("check", {**group, "max": worst if None not in values else None})
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
        if done == total and (total - 1) % self.stride:
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

    def stop(self, status: str) -> str:
        if self.pending:
            self.flush(self.flushed + len(self.pending))
        self.emit("status", {"status": status, "step": self.flushed})
        return status

    def evaluate(self) -> None:
        """The lecture's ending: calibrate batchnorm on the training split, split losses, 20 samples."""
        p, sp = self.p, self.splits
        bn = calibrate_bn(p, sp.Xtr)
        self.emit("result", {
            "train_loss": _finite(split_loss(p, bn, sp.Xtr, sp.Ytr)),
            "val_loss": _finite(split_loss(p, bn, sp.Xdev, sp.Ydev)),
            "samples": sample_names(p, bn, self.dataset, self.config.block_size, self.config.seed),
            "duration_s": self.clock() - self.started,
        })  # fmt: skip
