"""The engine: forward, autograd and manual backward passes, numeric checks, data, the pass cache, JSON."""
