"""Attention over the context

One softmax attention over the context's embeddings (queries, keys and values), its output scaled by a gate made
from the concatenated queries and keys, then a normalised linear head: a file that exercises 3-D ops.
"""
# ruff: noqa: F821 -- Xb, Yb, n, block_size and vocab_size are the server's: the file is read, never run

import torch
import torch.nn.functional as F

n_embd = 10
g = torch.Generator().manual_seed(1337)
C = torch.randn((vocab_size, n_embd), generator=g)
Wq = torch.randn((n_embd, n_embd), generator=g) * n_embd**-0.5
Wk = torch.randn((n_embd, n_embd), generator=g) * n_embd**-0.5
Wv = torch.randn((n_embd, n_embd), generator=g) * n_embd**-0.5
W2 = torch.randn((n_embd * block_size, vocab_size), generator=g) * 0.1
parameters = [C, Wq, Wk, Wv, W2]

emb = C[Xb]  # (n, block_size, n_embd)
q = emb @ Wq  # the queries
k = emb @ Wk  # the keys
v = emb @ Wv  # the values
kT = k.transpose(-2, -1)  # (n, n_embd, block_size)
att = q @ kT  # (n, block_size, block_size): each query against each key
wei = att * n_embd**-0.5
masked = wei.masked_fill(wei < -1.0, -1e4)  # the weakest pairs all but take no part (a row may be all weak)
p = F.softmax(masked, dim=-1)
out = p @ v  # (n, block_size, n_embd)
qk = torch.cat([q, k], 2)  # (n, block_size, 2 * n_embd)
gpre = qk.max(2, keepdim=True).values  # each position's largest query or key entry
gate = torch.sigmoid(gpre)
gated = out * gate
feat = gated.view(n, -1)
fmean = feat.mean(1, keepdim=True)
centred = feat - fmean
spread = centred.var(1, keepdim=True)
std = torch.sqrt(spread)
normed = centred / std
logits = normed @ W2
loss = F.cross_entropy(logits, Yb)
