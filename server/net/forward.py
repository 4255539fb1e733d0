"""The forward executor: runs declared ops (a pack's, server/net/packs/) on a dict of values."""

from __future__ import annotations

from types import SimpleNamespace

from .declare import Op


def run_forward(ops: list[Op], values: dict[str, object], start: int = 0) -> dict[str, object]:
    """Execute ops[start:] in order, adding their outputs (and saved tensors) to `values`."""
    v = SimpleNamespace(**values)
    for op in ops[start:]:
        out = op.forward(v)
        produced = out if isinstance(out, dict) else {op.outputs[0]: out}
        for name, tensor in produced.items():
            setattr(v, name, tensor)
    return vars(v)
