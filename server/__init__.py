"""Backprop Explorer: Karpathy's backprop-ninja lecture as a browsable computation graph."""
