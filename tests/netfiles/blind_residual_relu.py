"""A residual ReLU MLP

Two ReLU layers of the same width, the second added back onto the first (a skip connection), then the logits.
"""
# ruff: noqa: F821, B018 -- the notebook's cell as pasted: Xtr, Ytr and vocab_size are the server's, never run

import torch
import torch.nn.functional as F

n_embd = 8  # the dimensionality of the character embedding vectors
n_hidden = 48  # the width of both hidden layers
block_size = 3  # the context length
batch_size = 32  # the minibatch size
g = torch.Generator().manual_seed(42)
C = torch.randn((vocab_size, n_embd), generator=g)
W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * 0.3
b1 = torch.randn(n_hidden, generator=g) * 0.01
W2 = torch.randn((n_hidden, n_hidden), generator=g) * 0.1
b2 = torch.randn(n_hidden, generator=g) * 0.01
W3 = torch.randn((n_hidden, vocab_size), generator=g) * 0.1
b3 = torch.randn(vocab_size, generator=g) * 0.0
parameters = [C, W1, b1, W2, b2, W3, b3]
for p in parameters:
    p.requires_grad = True

ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=g)
Xb, Yb = Xtr[ix], Ytr[ix]

emb = C[Xb]  # (batch, block_size, n_embd)
embcat = emb.view(emb.shape[0], -1)  # (batch, n_embd * block_size)
h1pre = embcat @ W1 + b1  # first layer pre-activation
h1 = torch.relu(h1pre)  # first hidden layer
h2pre = h1 @ W2 + b2  # second layer pre-activation
h2 = torch.relu(h2pre)  # second hidden layer
hres = h1 + h2  # the skip connection: h1 is used twice
logits = hres @ W3 + b3  # output layer
loss = F.cross_entropy(logits, Yb)

loss.backward()
loss
