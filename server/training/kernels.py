"""The two training steps of Exercise 4: the hand-tuned fused manual backward, and autograd's.

The manual step is a fast twin of a net's declared rules in its trained mode, for nets of the lecture's shape
(embedding, hidden blocks of linear, batchnorm and tanh, a linear output; server/net/layers.py): tests check it
against them, and against autograd, in float64. Every step loops over the net's hidden blocks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..net.declare import Net
from ..net.layers import layers_of
from ..net.packs import default_net


def forward_loss(
    p: dict[str, torch.Tensor], Xb: torch.Tensor, Yb: torch.Tensor, net: Net | None = None
) -> torch.Tensor:
    """The lecture's Exercise 4 forward pass (batchnorm with batch statistics), as autograd sees it.

    Not the declared forward run for autograd: the declaration normalises first (bngain * bnraw), this
    line scales first (bngain * bndiff), and the other rounding changes the last bits of autograd's
    gradients, which the training checks compare with."""
    net = net or default_net()
    layers, eps = layers_of(net), net.eps
    n = Xb.shape[0]
    h = p[layers.embedding][Xb].view(n, -1)  # (n, block_size * n_embd)
    for block in layers.hidden:
        hprebn = h @ p[block.linear.W] + p[block.linear.b]  # (n, n_hidden)
        bnmean = hprebn.mean(0, keepdim=True)  # (1, n_hidden)
        bnvar = hprebn.var(0, keepdim=True, unbiased=True)  # (1, n_hidden)
        hpreact = p[block.gain] * (hprebn - bnmean) * (bnvar + eps) ** -0.5 + p[block.bias]
        h = torch.tanh(hpreact)  # (n, n_hidden)
    logits = h @ p[layers.output.W] + p[layers.output.b]  # (n, vocab_size)
    return F.cross_entropy(logits, Yb)


class ManualBackward:
    """One training step's forward and fused manual backward, written for speed.

    The step is dispatch-bound (~40 small ops), so: fused kernels (addmm, addcmul), centring and
    variance as matrix products (var_mean is ~6x slower at this size), in-place
    updates, transposed views made once (they follow the parameters' in-place updates), the
    batchnorm sums reused (dhpreact.sum(0) is dbnbias, (bnraw * dhpreact).sum(0) is dbngain), the
    1/n of dlogits moved into the step size, and one _foreach_add_ for the SGD update.
    """

    def __init__(self, p: dict[str, torch.Tensor], batch_size: int, net: Net | None = None) -> None:
        net = net or default_net()
        layers, param_names = layers_of(net), net.param_names  # NoKernel where the net is of another shape
        self.eps = net.eps
        self.params = [p[k] for k in param_names]
        self.C = p[layers.embedding]
        slot = {name: i for i, name in enumerate(param_names)}  # where each gradient goes in the list returned
        # each hidden block: W, W.T, b, bngain, bnbias, the slots of dW, db, dbngain, dbnbias, and the names its
        # kept activations go by (hprebn, hpreact, h, dhpreact, dhprebn)
        self.hidden = [
            (p[blk.linear.W], p[blk.linear.W].t(), p[blk.linear.b], p[blk.gain], p[blk.bias],
             (slot[blk.linear.W], slot[blk.linear.b], slot[blk.gain], slot[blk.bias]),
             (blk.hprebn, blk.hpreact, blk.h, "d" + blk.hpreact, "d" + blk.hprebn))
            for blk in layers.hidden
        ]  # fmt: skip
        self.W2, self.b2 = p[layers.output.W], p[layers.output.b]
        self.W2t = self.W2.t()
        self.output_slots = slot[layers.output.W], slot[layers.output.b], slot[layers.embedding]
        self.logits_names = layers.output.out, "d" + layers.output.out
        self.zeros_C = torch.zeros_like(self.C)  # dC = zeros with each context's gradient added at its rows
        n = batch_size
        dtype = self.C.dtype
        self.minus_ones = torch.full((n, 1), -1.0, dtype=dtype)
        self.centering = torch.eye(n, dtype=dtype) - 1.0 / n  # centering @ x = x - x.mean(0, keepdim=True)
        self.bessel_row = torch.full((1, n), 1.0 / (n - 1), dtype=dtype)  # row @ x = x.sum(0, keepdim=True) / (n-1)
        self.n_embd = self.C.shape[1]

    def forward(self, xflat: torch.Tensor, n: int) -> tuple[torch.Tensor, list[tuple[Any, ...]]]:
        """Logits, and per hidden block (input, hprebn, bnvar_inv, bnraw, hpreact, h, W.T, bngain, slots, names)."""
        h = self.C.index_select(0, xflat).view(n, -1)  # embcat: (n, block_size * n_embd), C[Xb]
        saved = []  # what each hidden block's backward reads
        for W, Wt, b, bngain, bnbias, slots, names in self.hidden:
            x = h
            hprebn = torch.addmm(b, x, W)  # (n, n_hidden)
            bndiff = torch.mm(self.centering, hprebn)  # hprebn - bnmeani, (n, n_hidden)
            bnvar_inv = torch.mm(self.bessel_row, bndiff * bndiff).add_(self.eps).rsqrt_()  # (1, n_hidden)
            bnraw = bndiff.mul_(bnvar_inv)  # (n, n_hidden)
            hpreact = torch.addcmul(bnbias, bngain, bnraw)  # (n, n_hidden)
            h = torch.tanh(hpreact)  # (n, n_hidden)
            saved.append((x, hprebn, bnvar_inv, bnraw, hpreact, h, Wt, bngain, slots, names))
        return torch.addmm(self.b2, h, self.W2), saved  # logits: (n, vocab_size)

    def grads(
        self, Xb: torch.Tensor, Yb: torch.Tensor, keep: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        """Logits and n x the gradients (the net's parameter order); with keep, the true gradients and activations.

        The backward needs no loss value: the loss of each step is computed later, many steps at once
        (losses()), which takes a cross-entropy call off every step."""
        n = Xb.shape[0]
        xflat = Xb.view(-1)  # (n * block_size,)
        logits, saved = self.forward(xflat, n)
        h = saved[-1][5]  # the last hidden block's output
        acts: dict[str, torch.Tensor] = {}  # with keep: the activations and their gradients by declared name
        if keep:
            for _, hprebn, _, _, hpreact, h_out, *_, names in saved:
                acts[names[0]], acts[names[1]], acts[names[2]] = hprebn, hpreact, h_out
        # backward, every gradient n times its true value: dlogits = softmax - one_hot, without the / n
        dlogits = torch.softmax(logits, 1)  # (n, vocab_size)
        dlogits.scatter_add_(1, Yb.view(-1, 1), self.minus_ones)
        dh = torch.mm(dlogits, self.W2t)  # (n, n_hidden)
        grads: list[torch.Tensor] = [None] * len(self.params)  # type: ignore[list-item]
        W2_slot, b2_slot, C_slot = self.output_slots
        grads[W2_slot] = torch.mm(h.t(), dlogits)  # dW2: (n_hidden, vocab_size)
        grads[b2_slot] = dlogits.sum(0)  # db2: (vocab_size,)
        for x, _, bnvar_inv, bnraw, _, h, Wt, bngain, (W_slot, b_slot, gain_slot, bias_slot), names in reversed(saved):
            dhpreact = dh.addcmul_(dh, h * h, value=-1.0)  # (1 - h**2) * dh, (n, n_hidden); x*x beats square()
            dbngain = (bnraw * dhpreact).sum(0, keepdim=True)  # (1, n_hidden)
            dbnbias = dhpreact.sum(0, keepdim=True)  # (1, n_hidden)
            if keep:
                acts[names[3]] = dhpreact / n  # before the in-place lines below make it dhprebn
            # the lecture's bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))
            # with its n divided out: bngain*bnvar_inv * (dhpreact - dbnbias/n - bnraw*dbngain/(n-1))
            dhprebn = dhpreact.sub_(dbnbias, alpha=1.0 / n).addcmul_(bnraw, dbngain, value=-1.0 / (n - 1))
            dhprebn.mul_(bngain * bnvar_inv)  # (n, n_hidden)
            grads[W_slot] = torch.mm(x.t(), dhprebn)  # dW1: (fan_in, n_hidden)
            grads[b_slot] = dhprebn.sum(0)  # db1: (n_hidden,)
            grads[gain_slot], grads[bias_slot] = dbngain, dbnbias
            dh = torch.mm(dhprebn, Wt)  # the block's input: (n, n_hidden), or dembcat (n, block_size * n_embd)
            if keep:
                acts[names[4]] = dhprebn / n
        grads[C_slot] = torch.index_add(self.zeros_C, 0, xflat, dh.view(-1, self.n_embd))  # dC: (vocab_size, n_embd)
        if not keep:
            return logits, grads, acts
        acts[self.logits_names[0]], acts[self.logits_names[1]] = logits, dlogits / n
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

    def __init__(self, p: dict[str, torch.Tensor], batch_size: int, net: Net | None = None) -> None:
        self.net = net = net or default_net()
        self.layers, self.eps, self.param_names = layers_of(net), net.eps, net.param_names
        self.p = p
        self.params = [p[k] for k in self.param_names]
        dtype = p[self.layers.embedding].dtype
        self.centering = torch.eye(batch_size, dtype=dtype) - 1.0 / batch_size
        self.bessel_row = torch.full((1, batch_size), 1.0 / (batch_size - 1), dtype=dtype)

    def grads(self, Xb: torch.Tensor, Yb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.enable_grad():
            leaves = {k: t.detach().requires_grad_(True) for k, t in self.p.items()}
            loss = forward_loss(leaves, Xb, Yb, self.net)  # the net it checks, not the default's
            loss.backward()
        return loss.detach(), [leaves[k].grad for k in self.param_names]  # type: ignore[misc]

    def fast_loss(self, Xb: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
        """The manual step's forward, op for op (fused kernels, batch statistics by products): a fair baseline."""
        p, n = self.p, Xb.shape[0]
        h = p[self.layers.embedding][Xb].view(n, -1)  # embcat: (n, block_size * n_embd)
        for blk in self.layers.hidden:
            hprebn = torch.addmm(p[blk.linear.b], h, p[blk.linear.W])  # (n, n_hidden)
            bndiff = torch.mm(self.centering, hprebn)  # (n, n_hidden)
            bnvar_inv = (torch.mm(self.bessel_row, bndiff * bndiff) + self.eps).rsqrt()  # (1, n_hidden)
            h = torch.tanh(torch.addcmul(p[blk.bias], p[blk.gain], bndiff * bnvar_inv))  # (n, n_hidden)
        return F.cross_entropy(torch.addmm(p[self.layers.output.b], h, p[self.layers.output.W]), Yb)

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
