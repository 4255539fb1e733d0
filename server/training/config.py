"""The configuration of one training run (Exercise 4), with the bounds a request must respect."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..core.config import ModelConfig
from ..learner.sandbox import MAX_CELL_CHARS
from ..net.packs import DEFAULT_NET

Backward = Literal["manual", "autograd", "code"]
TRAIN_BOUNDS: dict[str, tuple[int, int]] = {
    "max_steps": (1, 1_000_000),
    "lr_decay_step": (0, 1_000_000),
    "check_every": (1, 1_000_000),
}
STATS_POINTS = 2000  # a run keeps at most this many statistics samples (sampled more sparsely in long runs)
CHECK_EVENTS = 500  # check events per run at most: more frequent checks are reported in groups, each its worst
MAX_LR = 1e38  # anything float32 holds: a huge rate is allowed, to watch the loss blow up to NaN


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
    backward: Backward = "manual"  # manual (the fused Exercise 2+3 backward), autograd, or code (the learner's)
    code: str | None = None  # backward=code: the notebook's block from dlogits = F.softmax(logits, 1) to grads = [...]
    net: str = DEFAULT_NET  # the network pack it trains

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
        if self.backward not in ("manual", "autograd", "code"):
            raise ValueError(f"backward must be manual, autograd or code, got {self.backward!r}")
        if (self.backward == "code") != isinstance(self.code, str):
            raise ValueError("code is the backward block of a run with backward=code, and only of one")
        if isinstance(self.code, str) and not 0 < len(self.code) <= MAX_CELL_CHARS:
            raise ValueError(f"code must be 1 to {MAX_CELL_CHARS} characters long")

    def model(self) -> ModelConfig:
        return ModelConfig(
            seed=self.seed, batch_size=self.batch_size, n_embd=self.n_embd,
            n_hidden=self.n_hidden, block_size=self.block_size, net=self.net,
        )  # fmt: skip

    def lr_at(self, step: int) -> float:
        return self.lr if step < self.lr_decay_step else self.lr_after

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
