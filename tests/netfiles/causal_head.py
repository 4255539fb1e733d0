"""A causal self-attention head

One head of self-attention over the context's character embeddings, as the GPT lecture writes it: keys, queries and
values, their affinities scaled by 1/sqrt(head size), the causal mask (no position sees the future), a softmax over
the past, every position's output averaged, then a linear layer to the next character's logits.
"""
# ruff: noqa: F821 -- Xb, Yb, n and vocab_size are the server's: the file is read, never run

import torch
import torch.nn.functional as F

n_embd = 16  # the dimensionality of the character embedding vectors
n_hidden = 16  # the head size: the width of each key, query and value
block_size = 8  # the context length: how many characters predict the next one
batch_size = 32
g = torch.Generator().manual_seed(1337)
C = torch.randn((vocab_size, n_embd), generator=g)
Wk = torch.randn((n_embd, n_hidden), generator=g) * n_embd**-0.5  # key = nn.Linear(n_embd, head_size, bias=False)
Wq = torch.randn((n_embd, n_hidden), generator=g) * n_embd**-0.5
Wv = torch.randn((n_embd, n_hidden), generator=g) * n_embd**-0.5
W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.1
b2 = torch.randn(vocab_size, generator=g) * 0.01
parameters = [C, Wk, Wq, Wv, W2, b2]
tril = torch.tril(torch.ones(block_size, block_size))  # a buffer, not a parameter: the lower triangle

x = C[Xb]  # (B, T, C)
k = x @ Wk  # (B, T, head_size)
q = x @ Wq  # (B, T, head_size)
kT = k.transpose(-2, -1)  # (B, head_size, T)
wei = q @ kT  # (B, T, T): each query against each key
wei_scaled = wei * n_hidden**-0.5  # keep the softmax diffuse at initialisation
wei_masked = wei_scaled.masked_fill(tril == 0, float("-inf"))  # the future does not communicate with the past
att = F.softmax(wei_masked, dim=-1)  # (B, T, T): each row sums to 1 over the positions it may see
v = x @ Wv  # (B, T, head_size)
out = att @ v  # (B, T, head_size)
pooled = out.mean(1)  # (B, head_size): every position's output, averaged
logits = pooled @ W2 + b2  # (B, vocab_size)
loss = F.cross_entropy(logits, Yb)
