"""A gated MLP

Two hidden layers on the lecture's embedding: ReLU units, each scaled by a sigmoid gate computed from the same
input, then a tanh layer added back onto them (a residual sum), then log-probabilities and the cross-entropy.
"""
# ruff: noqa: F821 -- Xb, Yb, n, block_size and vocab_size are the server's: the file is read, never run

import torch
import torch.nn.functional as F

n_embd = 8
n_hidden = 48
g = torch.Generator().manual_seed(42)
C = torch.randn((vocab_size, n_embd), generator=g)
W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * (2 / (n_embd * block_size)) ** 0.5
b1 = torch.randn(n_hidden, generator=g) * 0.01
Wg = torch.randn((n_embd * block_size, n_hidden), generator=g) * 0.1
bg = torch.randn((1, n_hidden), generator=g) * 0.1 + 1.0  # the gates start mostly open
W2 = torch.randn((n_hidden, n_hidden), generator=g) * (5 / 3) / n_hidden**0.5
W3 = torch.randn((n_hidden, vocab_size), generator=g) * 0.1
parameters = [C, W1, b1, Wg, bg, W2, W3]

emb = C[Xb]  # each context character's embedding
x = emb.view(emb.shape[0], -1)  # one row per example
hpre = x @ W1 + b1  # the first layer's pre-activation
hrelu = torch.relu(hpre)
gpre = x @ Wg + bg  # each unit's gate, before the sigmoid
gate = torch.sigmoid(gpre)
h1 = hrelu * gate  # the gated units
h2pre = h1 @ W2
h2 = h2pre.tanh()
h = h1 + h2  # the residual sum
logits = h @ W3
logprobs = F.log_softmax(logits, dim=1)
loss = F.cross_entropy(logprobs, Yb)  # the cross-entropy of log-probabilities: log_softmax leaves them as they are
