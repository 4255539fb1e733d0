"""Training steps for any net: its declared forward and backward rules, and autograd through the declared forward.

The hand-tuned twins in kernels.py compute nets of the lecture's shape; a net of another shape (LayerNorm in place
of batchnorm, say) trains here, slower but with nothing written for it but its pack. The manual step runs the
trained mode's rules one op at a time, exactly as the explorer's engine steps them (every rule of an op reads the
gradients as they were before it; `+=` adds to an earlier contribution, `=` replaces it).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from ..net.declare import Net
from ..net.forward import run_forward
from .kernels import ManualBackward


def _logits_name(net: Net) -> str:
    """What the cross-entropy reads: the logits that losses() and sampling use."""
    return next(op.inputs[0] for op in net.ops_for_mode(net.trained_mode) if op.kernel == "cross_entropy")


class DeclaredBackward:
    """One training step through the net's declared trained-mode forward and its declared backward rules."""

    def __init__(self, p: dict[str, torch.Tensor], net: Net) -> None:
        self.p, self.net = p, net
        self.params = [p[k] for k in net.param_names]
        self.ops = net.ops_for_mode(net.trained_mode)
        self.schedule = list(reversed(self.ops))
        self.logits = _logits_name(net)

    def grads(
        self, Xb: torch.Tensor, Yb: torch.Tensor, keep: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        """Logits, the true gradients (the net's parameter order) and, with keep, every tensor by name."""
        values = run_forward(self.ops, {**self.p, "Xb": Xb, "Yb": Yb, **self.net.sizes(self.p, Xb.shape[0])})
        v = SimpleNamespace(**values)
        d = SimpleNamespace(loss=torch.ones_like(values["loss"]))  # type: ignore[arg-type]
        for op in self.schedule:
            contributions = [(rule, rule.fn(v, d)) for rule in op.rules]
            for rule, contribution in contributions:
                previous = getattr(d, rule.target, None)
                grad = contribution if previous is None or rule.overwrite else previous + contribution
                setattr(d, rule.target, grad)
        grads = vars(d)
        out = [grads[name] for name in self.net.param_names]
        kept: dict[str, torch.Tensor] = {}
        if keep:
            kept = {k: t for k, t in values.items() if isinstance(t, torch.Tensor)}
            kept.update({"d" + k: t for k, t in grads.items()})
        return values[self.logits], out, kept  # type: ignore[return-value]

    def step(self, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step, called under no_grad; returns what losses() needs: (logits, Yb)."""
        logits, grads, _ = self.grads(Xb, Yb)
        torch._foreach_add_(self.params, grads, alpha=-lr)
        return logits, Yb

    losses = staticmethod(ManualBackward.losses)  # the mean cross-entropy of each step's (logits, Yb)


class DeclaredAutograd:
    """The reference: loss.backward() through the net's declared trained-mode forward."""

    def __init__(self, p: dict[str, torch.Tensor], net: Net) -> None:
        self.p, self.net = p, net
        self.params = [p[k] for k in net.param_names]
        self.ops = net.ops_for_mode(net.trained_mode)

    def grads(self, Xb: torch.Tensor, Yb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The loss and autograd's gradients of the parameters (the net's parameter order)."""
        with torch.enable_grad():
            leaves = {k: t.detach().requires_grad_(True) for k, t in self.p.items()}
            sizes = self.net.sizes(self.p, Xb.shape[0])
            loss: Any = run_forward(self.ops, {**leaves, "Xb": Xb, "Yb": Yb, **sizes})["loss"]
            grads = torch.autograd.grad(loss, [leaves[k] for k in self.net.param_names])
        return loss.detach(), list(grads)

    def step(self, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> torch.Tensor:
        loss, grads = self.grads(Xb, Yb)
        torch._foreach_add_(self.params, grads, alpha=-lr)
        return loss

    @staticmethod
    def losses(records: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(records)
