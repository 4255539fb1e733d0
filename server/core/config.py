"""The model configuration, with the bounds a request must respect (a net's modes are in its pack)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ..net.declare import Net
from ..net.packs import DEFAULT_NET, net_of

Dtype = Literal["float32", "float64"]
Init = Literal["lecture", "zero_bias"]

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
    init: Init = "lecture"  # zero_bias: every bias 0 and every batchnorm gain 1 (hides wrong grads)
    run: int = 0  # > 0: the parameters of this finished training run instead of the initialisation
    bug: str = ""  # a bug-lab name (server/net/bugs.py): that wrong backward rule replaces the right one
    net: str = DEFAULT_NET  # the network pack (server/net/packs/): the lecture's MLP by default

    def __post_init__(self) -> None:
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        for name, choices in (("dtype", get_args(Dtype)), ("init", get_args(Init))):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be {' or '.join(choices)}, got {getattr(self, name)!r}")
        for name, (low, high) in net_of(self.net).bounds.items():  # net_of: Undeclared (a ValueError) for no such net
            if not low <= getattr(self, name) <= high:
                raise ValueError(
                    f"{name} must be in [{low}, {high}] for the {self.net} network, got {getattr(self, name)}"
                )

    @property
    def pack(self) -> Net:
        """The network this config builds."""
        return net_of(self.net)
