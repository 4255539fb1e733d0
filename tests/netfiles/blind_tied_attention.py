"""A tied-key attention over the context

Each position's query is also its key (one projection), the scaled affinities masked to the past, a softmax,
the embeddings themselves as the values, a max over the positions, then a tanh layer and the logits.
"""
# ruff: noqa: F821 -- Xb, Yb, n, block_size and vocab_size are the server's: the file is read, never run

import torch
import torch.nn.functional as F

n_embd = 12  # the dimensionality of the character embedding vectors
n_hidden = 24  # the query width, and the tanh layer's
block_size = 5  # the context length
batch_size = 16  # the minibatch size
g = torch.Generator().manual_seed(7)
C = torch.randn((vocab_size, n_embd), generator=g)
Wq = torch.randn((n_embd, n_hidden), generator=g) * n_embd**-0.5
W1 = torch.randn((n_embd, n_hidden), generator=g) * n_embd**-0.5
b1 = torch.randn(n_hidden, generator=g) * 0.01
W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.1
b2 = torch.randn(vocab_size, generator=g) * 0.01
parameters = [C, Wq, W1, b1, W2, b2]
tril = torch.tril(torch.ones(block_size, block_size))  # a buffer: the lower triangle

emb = C[Xb]  # (B, T, C)
x = emb.view(n, block_size, n_embd)  # (B, T, C), the same tensor by a view
q = x @ Wq  # (B, T, head): queries, and keys too
qT = q.transpose(-2, -1)  # (B, head, T)
wei = q @ qT  # (B, T, T): q is used twice
wei_scaled = wei * n_hidden**-0.5
wei_masked = wei_scaled.masked_fill(tril == 0, float("-inf"))  # only the past
att = F.softmax(wei_masked, dim=-1)  # (B, T, T)
out = att @ x  # (B, T, C): the embeddings are the values
pooled = out.max(1).values  # (B, C): the largest over the positions
hpre = pooled @ W1 + b1  # (B, n_hidden)
h = torch.tanh(hpre)  # (B, n_hidden)
logits = h @ W2 + b2  # (B, vocab_size)
loss = F.cross_entropy(logits, Yb)
