"""The model configuration and the backward modes, with the bounds a request must respect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dtype = Literal["float32", "float64"]
Init = Literal["lecture", "zero_bias"]
Mode = Literal["atomic", "fused_ce", "fused_bn", "fused"]

MODES: tuple[Mode, ...] = ("atomic", "fused_ce", "fused_bn", "fused")
# which blocks of atomic lines each mode collapses into one fused op
FUSED_BLOCKS: dict[str, frozenset[str]] = {
    "atomic": frozenset(),
    "fused_ce": frozenset({"ce"}),
    "fused_bn": frozenset({"bn"}),
    "fused": frozenset({"ce", "bn"}),
}
MODE_TITLES: dict[str, str] = {
    "atomic": "Exercise 1: backprop through every atomic line",
    "fused_ce": "Exercise 2: cross-entropy backward in one step",
    "fused_bn": "Exercise 3: batchnorm backward in one step",
    "fused": "Exercises 2+3: both fused (the backward used to train in Exercise 4)",
}

# (low, high) inclusive bounds of every integer field; the web layer turns them into 422s
BOUNDS: dict[str, tuple[int, int]] = {
    "seed": (0, 2**53 - 1),  # the largest integer a browser (a JS number) holds exactly
    "batch_size": (2, 256),
    "n_embd": (1, 64),
    "n_hidden": (1, 512),
    "block_size": (1, 8),
    "run": (0, 2**31 - 1),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything that determines one forward/backward pass (defaults = the lecture's Exercise 1)."""

    seed: int = 2147483647  # the lecture's torch.Generator seed
    batch_size: int = 32  # n, the minibatch size
    n_embd: int = 10  # dimensionality of the character embedding vectors
    n_hidden: int = 64  # neurons in the hidden layer
    block_size: int = 3  # context length: how many characters predict the next one
    dtype: Dtype = "float32"  # float64 casts the float32-drawn parameters, then runs in double
    init: Init = "lecture"  # zero_bias: b1, b2, bnbias = 0 and bngain = 1 (hides wrong grads)
    run: int = 0  # > 0: the parameters of this finished training run instead of the initialisation
    bug: str = ""  # a bug-lab name (server/bugs.py): that wrong backward rule replaces the right one

    def __post_init__(self) -> None:
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.init not in ("lecture", "zero_bias"):
            raise ValueError(f"init must be lecture or zero_bias, got {self.init!r}")
