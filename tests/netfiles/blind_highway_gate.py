"""A highway layer with a sigmoid gate

A tanh layer, then a highway layer whose sigmoid gate mixes a transformed hidden state with the carried one,
log-probabilities in one op and the lecture's negative log-likelihood.
"""
# ruff: noqa: F821 -- Xb, Yb, n, block_size and vocab_size are the server's: the file is read, never run

import torch
import torch.nn.functional as F

n_embd = 10  # the dimensionality of the character embedding vectors
n_hidden = 32  # the width of the hidden state
g = torch.Generator().manual_seed(2147483647)
C = torch.randn((vocab_size, n_embd), generator=g)
W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * 0.2
b1 = torch.randn(n_hidden, generator=g) * 0.01
Wt = torch.randn((n_hidden, n_hidden), generator=g) * 0.1
bt = torch.randn(n_hidden, generator=g) * 0.1 - 1.0
Wh = torch.randn((n_hidden, n_hidden), generator=g) * 0.1
bh = torch.randn(n_hidden, generator=g) * 0.01
W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.1
b2 = torch.randn(vocab_size, generator=g) * 0.01
parameters = [C, W1, b1, Wt, bt, Wh, bh, W2, b2]

emb = C[Xb]  # embed the characters into vectors
embcat = emb.view(emb.shape[0], -1)  # concatenate the vectors
hpre = embcat @ W1 + b1  # hidden layer pre-activation
h = torch.tanh(hpre)  # hidden state
tpre = h @ Wt + bt  # the gate's pre-activation, biased towards carrying
t = torch.sigmoid(tpre)  # the transform gate
carry = 1.0 - t  # the carry gate
upre = h @ Wh + bh  # the candidate's pre-activation
u = torch.tanh(upre)  # the candidate hidden state
moved = t * u  # what the gate lets through
kept = carry * h  # what the carry keeps of h
y = moved + kept  # the highway's output
logits = y @ W2 + b2  # output layer
logprobs = F.log_softmax(logits, dim=1)  # log-probabilities
loss = -logprobs[range(n), Yb].mean()
