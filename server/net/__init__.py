"""The network's declaration: its nodes and ops with their backward rules, the forward executor, layers, bugs."""
