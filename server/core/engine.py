"""Run the declared forward pass, its autograd reference and the manual backward, step by step."""

from __future__ import annotations

import bisect
import functools
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from ..net.bugs import schedule_with_bug
from ..net.declare import Net, Op
from ..net.forward import run_forward
from .config import ModelConfig
from .data import Dataset
from .numeric import check_gradient, ops_after

ALLCLOSE_RTOL, ALLCLOSE_ATOL = 1e-5, 1e-8  # torch.allclose's defaults, which the lecture's cmp() uses
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def axis_sizes(config: ModelConfig, vocab_size: int) -> dict[str, int]:
    """The size of each named axis of a parameter (Node.axes) under a config."""
    ne, nh, bs = config.n_embd, config.n_hidden, config.block_size
    # embd2/hidden2: two consecutive positions' vectors side by side (a FlattenConsecutive(2) of the context);
    # a head's width (axis "head") is the config's n_hidden, a context position ranges over block_size
    pairs = {"embd2": 2 * ne, "hidden2": 2 * nh}
    return {
        "vocab": vocab_size,
        "embd": ne,
        "embcat": ne * bs,
        "hidden": nh,
        "one": 1,
        **pairs,
        "head": nh,
        "context": bs,
    }


def init_params(config: ModelConfig, vocab_size: int) -> tuple[dict[str, torch.Tensor], torch.Generator]:
    """The lecture's initialisation, in its order; returns the seeded generator for the batch draw."""
    g = torch.Generator().manual_seed(config.seed)
    # the lecture draws batchnorm's parameters from the unseeded global RNG; a fresh Generator makes them reproducible
    generators = {"seeded": g, "fresh": torch.Generator()}
    sizes = axis_sizes(config, vocab_size)
    dtype = DTYPES[config.dtype]
    params = {}
    for node in config.pack.params:
        init = node.init
        assert init is not None
        shape = tuple(sizes[axis] for axis in node.axes)
        t = init.scale(torch.randn(shape, generator=generators[init.generator]), sizes)
        if config.init == "zero_bias" and init.zero_bias is not None:
            t = torch.full_like(t, init.zero_bias)  # still drawn: the batch that follows is the same
        params[node.name] = t.to(dtype)
    return params, g


def sample_batch(config: ModelConfig, dataset: Dataset, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The minibatch: indices drawn from the training split with the seeded generator."""
    splits = dataset.splits(config.block_size)
    ix = torch.randint(0, splits.Xtr.shape[0], (config.batch_size,), generator=g)
    return splits.Xtr[ix], splits.Ytr[ix]  # (n, block_size), (n,)


@dataclass(frozen=True)
class Contribution:
    """What one backward step added to a node's manual gradient."""

    step: int  # the backward step that produced it
    op: str  # the op whose rule produced it: the consumer of the node in the forward pass
    grad: torch.Tensor  # the contribution alone, not the running sum
    overwrites: bool  # assigned with `=` over an earlier contribution (the bug lab): the sum lost that one


def compare(manual: torch.Tensor, ref: torch.Tensor) -> dict[str, object]:
    """The lecture's cmp(): exact (bitwise), approx (torch.allclose), maxdiff, plus relative errors and shapes."""
    shapes = {"shape": list(manual.shape), "expected_shape": list(ref.shape)}
    if manual.shape != ref.shape:
        # no difference exists between tensors of different shapes: no number stands in for one
        mismatch = f"shape {_fmt(manual.shape)} against autograd's {_fmt(ref.shape)}: no difference to measure"
        return {"exact": False, "approx": False, "maxdiff": None, "max_rel": None, "rel_err": None,
                "shape_ok": False, **shapes, "shape_mismatch": mismatch}  # fmt: skip
    if torch.equal(manual, ref):  # half the atomic nodes: nothing else to compute
        return {"exact": True, "approx": True, "maxdiff": 0.0, "max_rel": 0.0, "rel_err": 0.0, "shape_ok": True,
                **shapes}  # fmt: skip
    diff = (manual - ref).abs()
    maxdiff = diff.max().item() if diff.numel() else 0.0
    denom = torch.maximum(manual.abs(), ref.abs())
    if math.isfinite(maxdiff):
        # every entry finite in both (NaN and Inf propagate into diff): allclose's test without its overhead;
        # rel is 0/0 = NaN only where both entries are 0
        approx = bool((diff <= ALLCLOSE_ATOL + ALLCLOSE_RTOL * ref.abs()).all())
        rel = (diff / denom).nan_to_num(0.0)
    else:
        approx = torch.allclose(manual, ref, rtol=ALLCLOSE_RTOL, atol=ALLCLOSE_ATOL)
        rel = torch.where(denom > 0, diff / denom, torch.where(diff == 0, 0.0, math.inf))
    return {
        "exact": False,
        "approx": approx,
        "maxdiff": maxdiff,
        "max_rel": rel.max().item() if rel.numel() else 0.0,
        "rel_err": _rel_err(maxdiff, ref, manual),
        "shape_ok": True,
        **shapes,
    }


# autograd's gradient is negligible (0 up to its rounding: dlogit_maxes) below this fraction of the manual one's
# size: the manual one's scale measures the error instead (a relative error of ~100%, not of millions of %)
NEGLIGIBLE_SCALE = 1e-4


def _rel_err(maxdiff: float, ref: torch.Tensor, manual: torch.Tensor) -> float:
    """max|manual - ref| / max|ref|: one size per error, n vs n-1 (~3%) apart from a lost += (~100%); where
    autograd's gradient is ~0, the manual gradient's largest entry is the scale."""
    scale = ref.abs().max().item() if ref.numel() else 0.0
    theirs = manual.abs().max().item() if manual.numel() else 0.0
    if math.isfinite(theirs) and scale < NEGLIGIBLE_SCALE * theirs:
        scale = theirs
    if scale == 0.0:
        return 0.0 if maxdiff == 0.0 else math.inf
    return maxdiff / scale


def _fmt(shape: torch.Size) -> str:
    return "(" + ",".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


class Comparisons(Mapping[str, dict[str, object]]):
    """node -> compare(complete manual gradient, autograd's), each computed when first asked for.

    A class opening the page at once computes many passes together; the comparisons are spread
    over the steps that complete each node instead of all landing on the first request.
    """

    def __init__(self, bp: BackwardPass, names: list[str]) -> None:
        self._bp, self._names = bp, names
        self._done: dict[str, dict[str, object]] = {}

    def __getitem__(self, name: str) -> dict[str, object]:
        if name not in self._done:
            if name not in self._names:
                raise KeyError(name)
            complete = self._bp.grad_at(name, self._bp.completed_at[name])
            assert complete is not None
            self._done[name] = compare(complete, self._bp.ref_grads[name])
        return self._done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class BackwardPass:
    """One (config, mode): forward values, autograd's gradients and the manual gradients per step.

    Only the forward runs up front. Manual backward steps run when a step is first asked for, and
    the autograd reference when a gradient is first compared or shown: a class opening the page
    at once pays for step 0 only, and the rest is spread over the steps that need it.
    """

    def __init__(
        self,
        config: ModelConfig,
        mode: str,
        params: dict[str, torch.Tensor],
        values: dict[str, object],
        schedule: list[Op],
    ) -> None:
        self.config, self.mode = config, mode
        self.net: Net = config.pack
        self.ops = self.net.ops_for_mode(mode)
        self.schedule = schedule  # one step per op, in reverse: the mode's rules (a bug's substituted for one)
        self.params = {k: t.detach() for k, t in params.items()}
        self._graph = values  # the autograd forward (retain_grad on every node), until the reference ran
        self.values = {k: (t.detach() if isinstance(t, torch.Tensor) else t) for k, t in values.items()}
        # the steps that add to each node's gradient (the loss's dloss = 1 is there at step 0): how many, and the last
        self.contribution_steps: dict[str, list[int]] = {"loss": [0]}
        for step, op in enumerate(self.schedule, start=1):
            for rule in op.rules:
                self.contribution_steps.setdefault(rule.target, []).append(step)
        self.totals = {name: len(steps) for name, steps in self.contribution_steps.items()}
        self.completed_at = {name: steps[-1] for name, steps in self.contribution_steps.items()}
        names = [
            node.name for node in self.net.nodes_for_mode(mode) if node.kind != "input" and node.name in self.totals
        ]
        self.cmp: Mapping[str, dict[str, object]] = Comparisons(self, names)
        loss = self.values["loss"]
        assert isinstance(loss, torch.Tensor)
        self._d = SimpleNamespace(loss=torch.ones_like(loss))  # manual gradients so far: d.x reads as "dx"
        self._history: dict[str, list[tuple[int, torch.Tensor]]] = {"loss": [(0, self._d.loss)]}
        # each contribution apart from the running sum: what the op of that step added (or assigned, with `=`)
        self._contributions: dict[str, list[Contribution]] = {}
        self._stepped = 0  # manual backward steps run so far
        self._ref: dict[str, torch.Tensor] | None = None
        self._path_refs: dict[tuple[str, int], torch.Tensor] = {}  # (node, step) -> autograd through that op alone
        self._partial_refs: dict[tuple[str, int], torch.Tensor] = {}  # (node, k) -> the first k paths summed
        self._partial_cmps: dict[tuple[str, int], dict[str, object]] = {}  # (node, k) -> compare with that sum
        self._numeric: dict[str, dict[str, object]] = {}
        self._values64: dict[str, object] | None = None
        self._lock = threading.RLock()

    @property
    def total_steps(self) -> int:
        return len(self.schedule)

    @property
    def loss(self) -> float:
        return float(self.values["loss"])  # type: ignore[arg-type]

    @property
    def ref_grads(self) -> dict[str, torch.Tensor]:
        """Autograd's gradient of every node (loss.backward() on the same forward), run on first use."""
        with self._lock:
            if self._ref is None:
                graph = self._graph
                loss = graph["loss"]
                assert isinstance(loss, torch.Tensor)
                loss.backward()
                self._ref = {
                    n: t.grad
                    for n in self.node_names()
                    if isinstance(t := graph[n], torch.Tensor) and t.grad is not None
                }
                self._graph = {}  # the autograd graph is not needed any more
            return self._ref

    @property
    def history(self) -> dict[str, list[tuple[int, torch.Tensor]]]:
        """node -> [(step, gradient after that step)], for the whole schedule."""
        return self._advance(self.total_steps)

    def _advance(self, step: int) -> dict[str, list[tuple[int, torch.Tensor]]]:
        """Run the manual backward up to `step` (the steps not run yet), one op at a time."""
        with self._lock:
            if self._stepped >= step:
                return self._history
            v, d = SimpleNamespace(**self.values), self._d
            with torch.no_grad():
                for k in range(self._stepped + 1, step + 1):
                    op = self.schedule[k - 1]
                    # every rule of the step reads the gradients as they were before it
                    contributions = [(rule, rule.fn(v, d)) for rule in op.rules]
                    for rule, contribution in contributions:
                        previous = getattr(d, rule.target, None)
                        grad = contribution if previous is None or rule.overwrite else previous + contribution
                        setattr(d, rule.target, grad)
                        self._history.setdefault(rule.target, []).append((k, grad))
                        self._contributions.setdefault(rule.target, []).append(
                            Contribution(k, op.name, contribution, rule.overwrite and previous is not None)
                        )
                    self._stepped = k
            return self._history

    def contributions(self, name: str, step: int) -> list[Contribution]:
        """The contributions a node's manual gradient has received after `step` backward steps, in order."""
        with self._lock:
            self._advance(step)
            return [c for c in self._contributions.get(name, ()) if c.step <= step]

    def path_ref(self, name: str, step: int) -> torch.Tensor:
        """Autograd's gradient of `name` through the op of backward `step` alone (one consumer, no other path).

        The op's forward runs again with `name` as a fresh leaf and every other input detached, and
        autograd's gradient of the op's output flows back through it: the indirect paths (counts ->
        counts_sum -> ... -> probs) are left out, which autograd through the whole retained graph would add.
        """
        with self._lock:
            key = (name, step)
            if key not in self._path_refs:
                op = self.schedule[step - 1]
                out = op.outputs[0]  # the fused batchnorm's dict also holds its saved tensors: hpreact is the output
                leaf = self.values[name].detach().clone().requires_grad_(True)  # type: ignore[union-attr]
                with torch.enable_grad():
                    produced = op.forward(SimpleNamespace(**{**self.values, name: leaf}))
                    y = produced[out] if isinstance(produced, dict) else produced
                    (grad,) = torch.autograd.grad(y, leaf, grad_outputs=self.ref_grads[out])
                self._path_refs[key] = grad
            return self._path_refs[key]

    def reference(self, name: str, step: int) -> torch.Tensor | None:
        """What the manual gradient after `step` is compared with: autograd through the paths it has so far."""
        done, total = self.contributions_done(name, step), self.totals.get(name, 0)
        if not 0 < done < total:
            return self.ref_grads.get(name)  # complete, or nothing yet to compare: autograd's full gradient
        with self._lock:
            if (name, done) not in self._partial_refs:
                steps = self.contribution_steps[name][:done]
                self._partial_refs[name, done] = functools.reduce(
                    torch.add, (self.path_ref(name, s) for s in steps)
                )  # schedule order, as the manual += adds them
            return self._partial_refs[name, done]

    def cmp_at(self, name: str, step: int) -> dict[str, object] | None:
        """The comparison of the manual gradient after `step` with its reference (None before its first)."""
        done, total = self.contributions_done(name, step), self.totals.get(name, 0)
        if self.net.node(name).kind == "input" or done == 0:
            return None
        if done == total:
            return self.cmp[name]  # the lecture's cmp against autograd's full gradient
        with self._lock:
            if (name, done) not in self._partial_cmps:
                manual = self.grad_at(name, step)
                reference = self.reference(name, step)
                assert manual is not None and reference is not None
                self._partial_cmps[name, done] = compare(manual, reference)
            return self._partial_cmps[name, done]

    def is_origin(self, name: str, step: int) -> bool:
        """Whether the error starts here: this gradient is off while every gradient it was computed from is right.

        A node's gradient after `step` is computed from the output gradients of the ops whose contributions it
        has received; those are complete by then (the schedule runs backwards), and the loss's is dloss = 1.
        """
        cmp = self.cmp_at(name, step)
        if cmp is None or cmp["approx"]:
            return False
        steps = self.contribution_steps[name][: self.contributions_done(name, step)]
        sources = [self.schedule[s - 1].outputs[0] for s in steps if s > 0]
        return all(src == "loss" or self.cmp[src]["approx"] for src in sources)

    def ops_after(self, name: str) -> int:
        """Where the forward resumes when `name` changes: the index of the op after the one that makes it."""
        return ops_after(self.ops, name)

    def node_names(self) -> list[str]:
        return [node.name for node in self.net.nodes_for_mode(self.mode)]

    def contributions_done(self, name: str, step: int) -> int:
        # read from the schedule, without running the steps (the loss's dloss = 1 sits at step 0)
        return bisect.bisect_right(self.contribution_steps.get(name, ()), step)

    def grad_at(self, name: str, step: int) -> torch.Tensor | None:
        """The manual gradient of a node after `step` backward steps (None before its first)."""
        latest = None
        for s, grad in self._advance(step).get(name, ()):
            if s <= step:
                latest = grad
        return latest

    def status(self, name: str, step: int) -> str:
        if self.net.node(name).kind == "input":
            return "none"
        done, total = self.contributions_done(name, step), self.totals.get(name, 0)
        return "pending" if done == 0 else "partial" if done < total else "complete"

    def numeric(self, name: str) -> dict[str, object] | None:
        """Finite-difference check of the node's complete manual gradient (cached)."""
        if self.net.node(name).kind == "input":
            return None
        with self._lock:
            if name not in self._numeric:
                manual = self.grad_at(name, self.completed_at.get(name, self.total_steps))
                assert manual is not None
                self._numeric[name] = check_gradient(
                    self.net, self.ops, self._values_float64(), name, manual, self.ref_grads[name], self.config.dtype
                )
            return self._numeric[name]

    def _values_float64(self) -> dict[str, object]:
        """The forward values in float64: the finite differences re-run the forward from a node in double."""
        if self._values64 is None:
            self._values64 = {
                k: t.to(torch.float64) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                for k, t in self.values.items()
            }
        return self._values64


def run_backward(
    config: ModelConfig, dataset: Dataset, mode: str, trained: dict[str, torch.Tensor] | None = None
) -> BackwardPass:
    """Forward once with autograd (the reference), then the manual backward, one op at a time.

    With `trained` parameters (config.run), the batch comes from a generator seeded with config.seed.
    """
    if trained is None:
        params, g = init_params(config, dataset.vocab_size)
    else:
        params = {k: trained[k].to(DTYPES[config.dtype]) for k in config.pack.param_names}
        g = torch.Generator().manual_seed(config.seed)
    Xb, Yb = sample_batch(config, dataset, g)
    return backward_from(config, mode, params, Xb, Yb)


def backward_from(
    config: ModelConfig, mode: str, params: dict[str, torch.Tensor], Xb: torch.Tensor, Yb: torch.Tensor
) -> BackwardPass:
    """The forward of one batch through given parameters, ready for the manual and autograd backward."""
    net = config.pack
    schedule = schedule_with_bug(net, mode, config.bug)  # an undeclared mode or bug is refused before any work
    leaves = {k: t.detach().clone().requires_grad_(True) for k, t in params.items()}
    ops = net.ops_for_mode(mode)
    values = run_forward(ops, {**leaves, "Xb": Xb, "Yb": Yb, **net.sizes(leaves, config.batch_size)})
    for node in net.nodes_for_mode(mode):
        t = values[node.name]
        if isinstance(t, torch.Tensor) and t.requires_grad and not t.is_leaf:
            t.retain_grad()
    return BackwardPass(config, mode, params, values, schedule)
