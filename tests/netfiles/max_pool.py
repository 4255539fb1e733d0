"""Max over the context

Each context position's embedding through one tanh layer, then for each unit its largest value over the positions
(a max over dim 1 of a 3-D tensor), then the logits.
"""
# ruff: noqa: F821 -- Xb, Yb and vocab_size are the server's: the file is read, never run

import torch
import torch.nn.functional as F

n_embd = 12
n_hidden = 40
block_size = 5
g = torch.Generator().manual_seed(7)
C = torch.randn((vocab_size, n_embd), generator=g)
W1 = torch.randn((n_embd, n_hidden), generator=g) * n_embd**-0.5
W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.1
b2 = torch.randn(vocab_size, generator=g) * 0.01
parameters = [C, W1, W2, b2]

emb = C[Xb]  # (n, block_size, n_embd)
hpre = emb @ W1  # (n, block_size, n_hidden)
h = torch.tanh(hpre)
pooled = h.max(1).values  # (n, n_hidden): each unit's largest value over the positions
logits = pooled @ W2 + b2
loss = F.cross_entropy(logits, Yb)
