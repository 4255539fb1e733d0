"""The LayerNorm pack (server/net/packs/layernorm.py): its forward, every rule in every mode against autograd and
finite differences in float64, its fused closed form, its bugs, cmp order, cells and warm-up programs."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from server.explain.why import mathml
from server.net.declare import Rule
from server.net.forward import run_forward
from server.net.packs import layernorm as pack

N, N_EMBD, BLOCK_SIZE, N_HIDDEN = 20, 5, 3, 24  # a small batch; n != n_hidden, so a slipped dim shows
LEAF_KINDS = ("input", "param")
FORMULA_RTOL, FORMULA_ATOL = 1e-12, 1e-14  # float64: a formula and its code differ only in rounding, if at all
RULE_RTOL, RULE_ATOL = 1e-10, 1e-12  # float64: a rule against autograd's vector-Jacobian product
FD_RTOL, FD_ATOL = 1e-6, 1e-9  # float64 five-point central differences against a gradient
FD_ENTRIES = 6  # entries per tensor measured by finite differences: half the largest, half at random
STENCIL = (-2.0, -1.0, 1.0, 2.0)

NODES = {node.name: node for node in pack.NODE_LIST}
OPS = {op.name: op for op in pack.OPS}
MODES = {mode.name: mode for mode in pack.MODE_LIST}


def ops_for(mode: str) -> list:
    """The mode's forward, read off the declaration: a fused op stands where the first line of its block stood."""
    fused = MODES[mode].fuses
    chosen, seen = [], set()
    for op in pack.OPS:
        if op.fuses is not None:
            continue
        if op.block in fused:
            if op.block not in seen:
                seen.add(op.block)
                chosen.append(next(f for f in pack.OPS if f.fuses == op.block))
        else:
            chosen.append(op)
    return chosen


def nodes_for(mode: str) -> list[str]:
    touched = {name for op in ops_for(mode) for name in (*op.inputs, *op.outputs)}
    return [node.name for node in pack.NODE_LIST if node.name in touched]


def grads_of(mode: str) -> set[str]:
    return {rule.target for op in ops_for(mode) for rule in op.rules}


OP_MODE = [(op.name, mode) for mode in MODES for op in ops_for(mode)]
RULE_MODE = [(op_name, rule.target, mode) for op_name, mode in OP_MODE for rule in OPS[op_name].rules]


# --- the batch, the forward and autograd's gradients ---------------------------------------------------------


@pytest.fixture(scope="module")
def leaves(lecture_dataset) -> dict[str, object]:
    """Parameters drawn by each node's Init (float64) and a random batch of the lecture's data, plus the sizes."""
    g = torch.Generator().manual_seed(7)
    vocab = lecture_dataset.vocab_size
    sizes = {"vocab": vocab, "embd": N_EMBD, "embcat": N_EMBD * BLOCK_SIZE, "hidden": N_HIDDEN, "one": 1}
    params = {}
    for node in pack.NODE_LIST:
        if node.init is not None:
            shape = tuple(sizes[axis] for axis in node.axes)
            params[node.name] = node.init.scale(torch.randn(shape, generator=g, dtype=torch.float64), sizes)
    splits = lecture_dataset.splits(BLOCK_SIZE)
    ix = torch.randint(0, splits.Xtr.shape[0], (N,), generator=g)
    return {**params, "Xb": splits.Xtr[ix], "Yb": splits.Ytr[ix], "n": N, "n_embd": N_EMBD, "n_hidden": N_HIDDEN}


@pytest.fixture(scope="module")
def forwards(leaves) -> dict[str, dict[str, object]]:
    return {mode: run_forward(ops_for(mode), dict(leaves)) for mode in MODES}


@pytest.fixture(scope="module")
def autograd(leaves) -> dict[str, dict[str, torch.Tensor]]:
    """Autograd's gradient of every node of each mode (loss.backward() through the declared forward)."""
    out = {}
    for mode in MODES:
        inputs = {k: t.clone().requires_grad_(True) if NODES.get(k) and NODES[k].kind == "param" else t
                  for k, t in leaves.items()}  # fmt: skip
        values = run_forward(ops_for(mode), inputs)
        for name in nodes_for(mode):
            t = values[name]
            if isinstance(t, torch.Tensor) and t.requires_grad and not t.is_leaf:
                t.retain_grad()
        values["loss"].backward()
        out[mode] = {
            name: values[name].grad for name in nodes_for(mode) if values[name].grad is not None and name != "loss"
        }
    return out


def plain(t):
    return t.detach() if isinstance(t, torch.Tensor) else t


def test_the_loss_is_layer_norm_then_cross_entropy(leaves, forwards):
    """Independent of the declared ops: the net written with torch's own F.layer_norm and F.cross_entropy."""
    p = leaves
    embcat = p["C"][p["Xb"]].view(N, -1)  # (n, block_size * n_embd)
    hprebn = embcat @ p["W1"] + p["b1"]  # (n, n_hidden)
    normed = F.layer_norm(hprebn, (N_HIDDEN,), p["lngain"].view(-1), p["lnbias"].view(-1), eps=1e-5)
    logits = torch.tanh(normed) @ p["W2"] + p["b2"]  # (n, vocab)
    expected = F.cross_entropy(logits, p["Yb"])
    for mode in MODES:
        torch.testing.assert_close(forwards[mode]["loss"], expected, rtol=FORMULA_RTOL, atol=FORMULA_ATOL)
    # and the normalisation itself: per example, over the hidden units
    torch.testing.assert_close(forwards["atomic"]["hpreact"], normed, rtol=FORMULA_RTOL, atol=FORMULA_ATOL)


# --- the declaration as data -----------------------------------------------------------------------------------


def test_names_are_unique_and_every_op_speaks_of_declared_nodes():
    assert len(NODES) == len(pack.NODE_LIST) and len(OPS) == len(pack.OPS) and len(MODES) == len(pack.MODE_LIST)
    for op in pack.OPS:
        assert set(op.inputs) | set(op.outputs) <= set(NODES), op.name
        assert not any(NODES[out].kind in LEAF_KINDS for out in op.outputs), op.name
    assert {name for op in pack.OPS for name in (*op.inputs, *op.outputs)} == set(NODES)
    assert pack.TRAINED_MODE == "fused" and pack.TRAINED_MODE in MODES
    assert pack.TITLE and pack.ABOUT


@pytest.mark.parametrize("mode", MODES)
def test_ops_are_in_topological_order_and_end_in_the_loss(mode):
    produced = {n.name for n in pack.NODE_LIST if n.kind in LEAF_KINDS}
    for op in ops_for(mode):
        assert set(op.inputs) <= produced, f"{op.name} reads a node before {mode} makes it"
        assert not set(op.outputs) & produced, f"{op.name} remakes a node"
        produced |= set(op.outputs)
    assert ops_for(mode)[-1].outputs == ("loss",)


@pytest.mark.parametrize("op", pack.OPS, ids=lambda op: op.name)
def test_each_rule_targets_an_input_and_each_differentiable_input_has_one(op):
    targets = [rule.target for rule in op.rules]
    assert len(targets) == len(set(targets))
    assert set(targets) == {i for i in op.inputs if NODES[i].kind != "input"}


@pytest.mark.parametrize("mode", MODES)
def test_axes_name_each_dimension(lecture_dataset, forwards, mode):
    size = {"batch": N, "vocab": lecture_dataset.vocab_size, "context": BLOCK_SIZE, "embd": N_EMBD,
            "embcat": N_EMBD * BLOCK_SIZE, "hidden": N_HIDDEN, "one": 1}  # fmt: skip
    for name in nodes_for(mode):
        assert tuple(forwards[mode][name].shape) == tuple(size[a] for a in NODES[name].axes), name


def test_the_layernorm_lines_are_one_block_fused_by_one_op_and_per_example():
    """LayerNorm's statistics are per example: every line of its block, and its fused op, keep rows apart."""
    block = [op for op in pack.OPS if op.block == "ln"]
    assert [op.name for op in block] == ["lnmeani", "lndiff", "lndiff2", "lnvar", "lnvar_inv", "lnraw", "hpreact"]
    fused = [op for op in pack.OPS if op.fuses == "ln"]
    assert [op.name for op in fused] == ["layernorm"]
    assert {op.rows for op in (*block, *fused)} == {"each"}
    assert all(op.eval_forward is None and not op.calibrated for op in pack.OPS), "layernorm needs no calibration"
    assert {op.fuses for op in pack.OPS if op.fuses} == {"ln", "ce"}
    assert [m.fuses for m in pack.MODE_LIST] == [frozenset(), {"ce"}, {"ln"}, {"ce", "ln"}]


def test_the_counts_are_the_lectures_with_layernorm_for_batchnorm():
    """Pinned once: seven layernorm lines stand where batchnorm's seven stood, so the lecture's counts hold: 20
    atomic lines over 29 tensors; fusing the cross-entropy (8 lines) and layernorm (7) leaves 13, 14 and 7 steps."""
    assert {mode: len(ops_for(mode)) for mode in MODES} == {"atomic": 20, "fused_ce": 13, "fused_ln": 14, "fused": 7}
    assert {mode: len(nodes_for(mode)) for mode in MODES} == {"atomic": 29, "fused_ce": 22, "fused_ln": 23, "fused": 16}


def test_the_lectures_ops_are_reused_not_copied():
    from tests.lecture import OPS_BY_NAME

    for name in ("emb", "embcat", "hprebn", "h", "logits", "logit_maxes", "loss", "cross_entropy"):
        assert OPS[name] is OPS_BY_NAME[name], name


def test_gain_and_bias_are_initialised_as_the_lectures_batchnorm_gain_and_bias():
    from tests.lecture import NODES as LECTURE

    for ours, theirs in (("lngain", "bngain"), ("lnbias", "bnbias")):
        a, b = NODES[ours].init, LECTURE[theirs].init
        assert a.code == b.code.replace("bn", "ln") and (a.generator, a.zero_bias) == (b.generator, b.zero_bias)
        r = torch.randn(1, N_HIDDEN, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a.scale(r, {}), b.scale(r, {}))
        exec(a.code, ns := {"torch": torch, "n_hidden": N_HIDDEN})
        assert ns[ours].shape == (1, N_HIDDEN)


@pytest.mark.parametrize("mode", MODES)
def test_the_formulas_run_in_order_give_the_executors_forward(leaves, forwards, mode):
    namespace: dict[str, object] = {"torch": torch, "F": F, **leaves}
    for op in ops_for(mode):
        lhs, rhs = op.formula.split(" = ", 1)
        assert (lhs,) == op.outputs[:1]
        namespace[lhs] = eval(rhs, namespace)
        torch.testing.assert_close(namespace[lhs], forwards[mode][lhs], rtol=FORMULA_RTOL, atol=FORMULA_ATOL)


@pytest.mark.parametrize("mode", [m for m in MODES if m != "atomic"])
def test_fused_modes_make_the_same_tensors_as_atomic(forwards, mode):
    for name in nodes_for(mode):
        torch.testing.assert_close(forwards[mode][name], forwards["atomic"][name], rtol=FORMULA_RTOL,
                                   atol=FORMULA_ATOL, msg=name)  # fmt: skip


def test_the_fused_ops_notebook_form_computes_its_output_and_what_it_saves(leaves, forwards):
    op = OPS["layernorm"]
    assert op.saves == ("lnraw", "lnvar_inv")
    namespace = {"torch": torch, **{name: forwards["atomic"][name] for name in op.inputs}}  # what it reads, alone
    exec(op.notebook, namespace)
    produced = op.forward(SimpleNamespace(**forwards["atomic"]))
    for name in ("hpreact", *op.saves):
        torch.testing.assert_close(namespace[name], produced[name], rtol=FORMULA_RTOL, atol=FORMULA_ATOL)
        torch.testing.assert_close(produced[name], forwards["atomic"][name], rtol=FORMULA_RTOL, atol=FORMULA_ATOL)


@pytest.mark.parametrize(("op_name", "mode"), [(o, m) for o, m in OP_MODE if OPS[o].block == "ln" or o == "layernorm"])
def test_each_layernorm_op_keeps_the_examples_apart(forwards, op_name, mode):
    """Op.rows == "each": moving one example's row of the op's inputs moves that row of its output alone."""
    op, r = OPS[op_name], 5
    values = forwards[mode]
    moved = dict(values)
    for name in op.inputs:
        if NODES[name].axes[0] == "batch":
            t = values[name].clone()
            t[r] += torch.linspace(0.1, 0.5, t[r].numel(), dtype=t.dtype).view(t[r].shape)
            moved[name] = t
    out = op.outputs[0]
    before, after = run_forward([op], dict(values))[out], run_forward([op], moved)[out]
    keep = torch.arange(N) != r
    assert torch.equal(before[keep], after[keep]), "another example's row changed"
    assert not torch.equal(before[r], after[r])


# --- every rule: its code, autograd, finite differences ------------------------------------------------------


def _upstream(y: torch.Tensor, is_loss: bool) -> torch.Tensor:
    if is_loss:
        return torch.ones_like(y)  # the loss is the root: dloss = 1, as in the lecture
    return torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _run_op(op, values: dict[str, object], **replaced: torch.Tensor) -> dict[str, object]:
    return run_forward([op], {**values, **replaced})


@pytest.mark.parametrize(("op_name", "mode"), OP_MODE)
def test_each_rules_code_text_computes_what_its_function_does(forwards, op_name, mode):
    op = OPS[op_name]
    values = {k: plain(t) for k, t in forwards[mode].items()}
    out = _run_op(op, values)
    upstream = _upstream(out[op.outputs[0]], op.outputs == ("loss",))
    v, d = SimpleNamespace(**out), SimpleNamespace(**{op.outputs[0]: upstream})
    for rule in op.rules:
        grad = f"d{rule.target}"
        namespace = {"torch": torch, "F": F, **out, f"d{op.outputs[0]}": upstream}
        if f"{grad} +=" in rule.code:
            namespace[grad] = torch.zeros_like(values[rule.target])
        else:
            assert rule.code.startswith(f"{grad} = "), rule.code
        exec(rule.code, namespace)
        torch.testing.assert_close(namespace[grad], rule.fn(v, d), rtol=0, atol=0, msg=rule.target)


@pytest.mark.parametrize(("op_name", "mode"), OP_MODE)
def test_each_rule_is_the_vector_jacobian_product(forwards, op_name, mode):
    """micrograd style: each op's local rule against torch.autograd.grad of its own forward, float64."""
    op = OPS[op_name]
    values = {k: plain(t) for k, t in forwards[mode].items()}
    inputs = {name: values[name].clone().requires_grad_(True) for name in op.inputs if values[name].is_floating_point()}
    out = _run_op(op, values, **inputs)
    y = out[op.outputs[0]]
    upstream = _upstream(y, op.outputs == ("loss",))
    targets = [rule.target for rule in op.rules]
    expected = torch.autograd.grad(y, [inputs[t] for t in targets], upstream)
    v = SimpleNamespace(**{k: plain(t) for k, t in out.items()})
    d = SimpleNamespace(**{op.outputs[0]: upstream})
    with torch.no_grad():
        for rule, want in zip(op.rules, expected, strict=True):
            got = rule.fn(v, d)
            assert got.shape == want.shape, rule.target
            torch.testing.assert_close(got, want, rtol=RULE_RTOL, atol=RULE_ATOL, msg=rule.target)


def _entries(grad: torch.Tensor) -> list[int]:
    """Half the entries with the largest |gradient|, half at random (a fixed draw)."""
    flat = grad.reshape(-1)
    k = min(FD_ENTRIES, flat.numel())
    top = flat.abs().argsort(descending=True, stable=True)[: k // 2].tolist()
    rest = [
        i for i in torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(1)).tolist() if i not in top
    ]
    return sorted(top + rest[: k - len(top)])


def _finite_differences(f, x: torch.Tensor, entries: list[int]) -> torch.Tensor:
    """d f / d x at flat entries, five-point central differences in float64."""
    out = []
    for i in entries:
        h = 1e-3 * max(abs(float(x.reshape(-1)[i])), 0.1)
        fs = []
        for s in STENCIL:
            xp = x.clone()
            xp.view(-1)[i] += s * h
            fs.append(float(f(xp)))
        out.append((fs[0] - 8 * fs[1] + 8 * fs[2] - fs[3]) / (12 * h))
    return torch.tensor(out, dtype=torch.float64)


def _assert_matches_differences(got: torch.Tensor, f, x: torch.Tensor, what: str) -> None:
    entries = _entries(got)
    numeric = _finite_differences(f, x, entries)
    torch.testing.assert_close(got.reshape(-1)[entries], numeric, rtol=FD_RTOL, atol=FD_ATOL, msg=what)


@pytest.mark.parametrize(("op_name", "target", "mode"), RULE_MODE)
def test_each_rule_agrees_with_finite_differences(forwards, op_name, target, mode):
    """The rule's contribution, entry by entry, against d <upstream, op(x)> / dx measured by finite differences."""
    op = OPS[op_name]
    rule = next(r for r in op.rules if r.target == target)
    values = {k: plain(t) for k, t in forwards[mode].items()}
    out = _run_op(op, values)
    upstream = _upstream(out[op.outputs[0]], op.outputs == ("loss",))
    got = rule.fn(SimpleNamespace(**out), SimpleNamespace(**{op.outputs[0]: upstream}))

    def f(x: torch.Tensor) -> torch.Tensor:
        return (upstream * _run_op(op, values, **{target: x})[op.outputs[0]]).sum()

    _assert_matches_differences(got, f, values[target], f"{op_name}/d{target}")


def manual_backward(mode: str, values: dict[str, object], swap: dict[tuple[str, str], Rule] | None = None) -> dict:
    """The manual backward of a mode: each op's rules in reverse order, `+=` across ops, `=` where a rule overwrites;
    `swap` puts a rule in the place of (op, target)'s."""
    swap = swap or {}
    v = SimpleNamespace(**{k: plain(t) for k, t in values.items()})
    grads: dict[str, torch.Tensor] = {"loss": torch.ones_like(v.loss)}
    for op in reversed(ops_for(mode)):
        d = SimpleNamespace(**grads)
        contributions = [(r := swap.get((op.name, rule.target), rule), r.fn(v, d)) for rule in op.rules]
        for rule, c in contributions:
            previous = grads.get(rule.target)
            grads[rule.target] = c if previous is None or rule.overwrite else previous + c
    return grads


@pytest.mark.parametrize("mode", MODES)
def test_the_manual_backward_of_every_mode_is_autograds(forwards, autograd, mode):
    grads = manual_backward(mode, forwards[mode])
    assert set(grads) - {"loss"} == set(autograd[mode]) == grads_of(mode)
    for name, want in autograd[mode].items():
        torch.testing.assert_close(grads[name], want, rtol=RULE_RTOL, atol=RULE_ATOL, msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_the_manual_backward_of_every_mode_agrees_with_finite_differences_of_the_loss(forwards, mode):
    """Every complete gradient of the mode against the loss re-run from that node on, by finite differences."""
    ops = ops_for(mode)
    values = {k: plain(t) for k, t in forwards[mode].items()}
    grads = manual_backward(mode, values)
    for name in sorted(grads_of(mode)):
        start = next((i + 1 for i, op in enumerate(ops) if name in op.outputs), 0)

        def loss_with(x: torch.Tensor, name=name, start=start) -> torch.Tensor:
            return run_forward(ops, {**values, name: x}, start)["loss"]

        _assert_matches_differences(grads[name], loss_with, values[name], f"{mode}: d{name}")


def test_the_fused_layernorm_rule_is_the_atomic_chain(forwards):
    """Exercise 3's closed form gives the dhprebn that the seven atomic lines' rules give, from the same dhpreact."""
    atomic = forwards["atomic"]
    dhpreact = torch.randn(N, N_HIDDEN, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    v = SimpleNamespace(**{k: plain(t) for k, t in atomic.items()})
    grads = {"hpreact": dhpreact}
    for op in reversed([op for op in pack.OPS if op.block == "ln"]):
        d = SimpleNamespace(**grads)
        for rule, c in [(rule, rule.fn(v, d)) for rule in op.rules]:
            grads[rule.target] = grads[rule.target] + c if rule.target in grads else c
    fused = OPS["layernorm"]
    saved = fused.forward(v)
    vf = SimpleNamespace(**{**vars(v), **{k: plain(t) for k, t in saved.items()}})
    for rule in fused.rules:
        got = rule.fn(vf, SimpleNamespace(hpreact=dhpreact))
        torch.testing.assert_close(got, grads[rule.target], rtol=RULE_RTOL, atol=RULE_ATOL, msg=rule.target)
    # the gain and bias rules are the atomic op's own, not copies that could drift
    atomic_rules = {r.target: r for r in OPS["hpreact"].rules}
    assert all(atomic_rules[t] is r for r in fused.rules if (t := r.target) in ("lngain", "lnbias"))


def test_every_rule_has_a_derivation_that_names_its_gradient_and_renders_as_mathml():
    for op in pack.OPS:
        for rule in op.rules:
            assert rule.tex and rule.note, (op.name, rule.target)
            rendered = [mathml(line) for line in rule.tex]
            for line, ml in zip(rule.tex, rendered, strict=True):
                assert ml.startswith("<math") and "merror" not in ml, line
                assert "\\" not in ml.replace("\\\\", ""), f"raw LaTeX left in {line!r}"
            assert f"<mtext>d{rule.target}</mtext>" in rendered[-1], (op.name, rule.target)
            assert not rule.tex_notes or len(rule.tex_notes) == len(rule.tex)
            assert rule.example in (None, "matmul", "sum", "max", "gather", "tanh", "log", "forces")
    assert OPS["layernorm"].rules[0].tex_notes, "the fused rule explains which atomic lines it folds"


# --- modes, cmp order, cells ---------------------------------------------------------------------------------


def test_the_cmp_order_covers_every_gradient_of_the_atomic_mode_once_in_the_order_the_backward_completes_them():
    assert len(pack.CMP_ORDER) == len(set(pack.CMP_ORDER))
    assert set(pack.CMP_ORDER) == grads_of("atomic")
    completed: dict[str, int] = {}
    for step, op in enumerate(reversed(ops_for("atomic")), start=1):
        for rule in op.rules:
            completed[rule.target] = step
    steps = [completed[name] for name in pack.CMP_ORDER]
    assert steps == sorted(steps)


def test_the_cells_name_gradients_of_their_mode():
    assert set(pack.CELLS) == set(MODES)
    for mode, (exercise, about, grads) in pack.CELLS.items():
        assert exercise and about
        assert set(grads) <= grads_of(mode), mode
    assert pack.CELLS["fused_ln"][2] == ("hprebn",) and pack.CELLS["fused_ce"][2] == ("logits",)


# --- the bug lab ------------------------------------------------------------------------------------------------


def _bug_modes(bug) -> list[str]:
    return [mode for mode in MODES if any(op.name == bug.op for op in ops_for(mode))]


def test_there_are_bugs_with_unique_names():
    assert len(pack.BUGS) >= 2
    assert len({bug.name for bug in pack.BUGS}) == len(pack.BUGS)


@pytest.mark.parametrize("bug", pack.BUGS, ids=lambda bug: bug.name)
def test_a_bugs_op_and_target_exist_and_its_line_is_its_function(forwards, bug):
    assert bug.op in OPS and bug.target in [r.target for r in OPS[bug.op].rules]
    assert _bug_modes(bug)
    right = next(r for r in OPS[bug.op].rules if r.target == bug.target)
    assert bug.code.startswith(f"d{bug.target} = ") and bug.code != right.code
    assert bug.overwrite == (f"d{bug.target} +=" in right.code)
    mode = _bug_modes(bug)[0]
    values = {k: plain(t) for k, t in forwards[mode].items()}
    out = OPS[bug.op].outputs[0]
    upstream = _upstream(values[out], out == "loss")
    namespace = {"torch": torch, "F": F, **values, f"d{out}": upstream}
    exec(bug.code, namespace)
    got = bug.fn(SimpleNamespace(**values), SimpleNamespace(**{out: upstream}))
    torch.testing.assert_close(namespace[f"d{bug.target}"], got, rtol=0, atol=0)


@pytest.mark.parametrize("bug", pack.BUGS, ids=lambda bug: bug.name)
def test_a_bugs_rule_makes_its_target_differ_from_autograd_in_every_mode_it_has(forwards, autograd, bug):
    wrong = Rule(bug.target, bug.code, bug.fn, overwrite=bug.overwrite)
    for mode in _bug_modes(bug):
        grads = manual_backward(mode, forwards[mode], swap={(bug.op, bug.target): wrong})
        got, want = grads[bug.target], autograd[mode][bug.target]
        assert got.shape != want.shape or not torch.allclose(got, want), f"{mode}: the bug is not wrong"


@pytest.mark.parametrize("bug", pack.BUGS, ids=lambda bug: bug.name)
def test_a_bugs_texts_quote_no_sizes(bug):
    for text in (bug.title, bug.why, bug.notice, bug.code):
        numbers = set(re.findall(r"\d+(?:\.\d+)?", text)) - {"1e-5"}
        assert numbers <= {"0", "1", "2", "0.5", "1.0", "1.5"}, (bug.name, numbers)


def test_at_the_fewest_hidden_units_allowed_every_rule_and_bug_is_finite(lecture_dataset):
    low = pack.BOUNDS["n_hidden"][0]
    g = torch.Generator().manual_seed(5)
    leaves = {"C": torch.randn(lecture_dataset.vocab_size, N_EMBD, generator=g, dtype=torch.float64),
              "W1": torch.randn(N_EMBD * BLOCK_SIZE, low, generator=g, dtype=torch.float64),
              "b1": torch.zeros(low, dtype=torch.float64), "lngain": torch.ones(1, low, dtype=torch.float64),
              "lnbias": torch.zeros(1, low, dtype=torch.float64),
              "W2": torch.randn(low, lecture_dataset.vocab_size, generator=g, dtype=torch.float64),
              "b2": torch.zeros(lecture_dataset.vocab_size, dtype=torch.float64),
              "Xb": torch.randint(0, lecture_dataset.vocab_size, (N, BLOCK_SIZE), generator=g),
              "Yb": torch.randint(0, lecture_dataset.vocab_size, (N,), generator=g),
              "n": N, "n_embd": N_EMBD, "n_hidden": low}  # fmt: skip
    for bug in pack.BUGS:
        for mode in _bug_modes(bug):
            wrong = Rule(bug.target, bug.code, bug.fn, overwrite=bug.overwrite)
            grads = manual_backward(mode, run_forward(ops_for(mode), dict(leaves)), swap={(bug.op, bug.target): wrong})
            assert all(t.isfinite().all() for t in grads.values()), (bug.name, mode)


def test_the_gain_bug_hides_behind_a_gain_of_one_as_its_notice_says(leaves):
    bug = next(b for b in pack.BUGS if b.name == "gain_outside_sums")
    values = run_forward(ops_for("fused_ln"), {**leaves, "lngain": torch.ones(1, N_HIDDEN, dtype=torch.float64)})
    v = SimpleNamespace(**values)
    d = SimpleNamespace(hpreact=_upstream(v.hpreact, False))
    right = next(r for r in OPS["layernorm"].rules if r.target == "hprebn")
    torch.testing.assert_close(bug.fn(v, d), right.fn(v, d), rtol=RULE_RTOL, atol=RULE_ATOL)


def test_the_bessel_bug_is_off_by_n_hidden_over_n_hidden_minus_one(forwards):
    bug = next(b for b in pack.BUGS if b.name == "bessel_habit")
    v = SimpleNamespace(**{k: plain(t) for k, t in forwards["atomic"].items()})
    d = SimpleNamespace(lnvar=_upstream(v.lnvar, False))
    right = next(r for r in OPS["lnvar"].rules if r.target == "lndiff2")
    torch.testing.assert_close(bug.fn(v, d), right.fn(v, d) * N_HIDDEN / (N_HIDDEN - 1), rtol=1e-14, atol=0)


# --- the check workers' warm-up ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "target", "code"), pack.WARMUP, ids=[w[1] for w in pack.WARMUP])
def test_a_warm_up_program_computes_its_steps_gradients_right(forwards, autograd, mode, target, code):
    """Run with torch on the forward and autograd's upstream gradients: the target gradient is autograd's, and
    every other gradient of the step it writes is that step's contribution."""
    consumers = [op for op in ops_for(mode) if target in [r.target for r in op.rules]]
    assert len(consumers) == 1, "a warm-up's target names one backward step"
    (op,) = consumers
    out = op.outputs[0]
    values = {k: plain(t) for k, t in forwards[mode].items()}
    upstream = torch.ones_like(values["loss"]) if out == "loss" else autograd[mode][out]
    namespace = {"torch": torch, "F": F, **values, f"d{out}": upstream}
    exec(code, namespace)
    torch.testing.assert_close(namespace[f"d{target}"], autograd[mode][target], rtol=RULE_RTOL, atol=RULE_ATOL)
    v, d = SimpleNamespace(**values), SimpleNamespace(**{out: upstream})
    for rule in op.rules:
        if f"d{rule.target}" in namespace and rule.target != target:
            torch.testing.assert_close(namespace[f"d{rule.target}"], rule.fn(v, d), rtol=RULE_RTOL, atol=RULE_ATOL)


def test_the_warm_up_visits_both_layernorm_forms():
    assert {(mode, target) for mode, target, _ in pack.WARMUP} >= {("atomic", "lnvar"), ("fused_ln", "hprebn")}
    assert all(mode in MODES for mode, _, _ in pack.WARMUP)


def test_a_2000_step_run_trains_with_the_packs_declared_backward(lecture_dataset):
    """No hand-tuned kernel: the generic trainer runs the pack's rules, checked against autograd as it goes."""
    from server.training.config import TrainConfig
    from server.training.generic import DeclaredBackward
    from server.training.loop import Training

    events: list[tuple[str, dict]] = []
    config = TrainConfig(net="layernorm", max_steps=2000, lr_decay_step=1000, check_every=200)
    training = Training(config, lecture_dataset, lambda kind, data: events.append((kind, data)))
    assert isinstance(training.manual, DeclaredBackward)
    assert training.run() == "finished"
    checks = [data for kind, data in events if kind == "check"]
    assert len(checks) == 11 and not any(check["wrong"] for check in checks)  # steps 0, 200, ..., 1800 and the last
    losses = training.losses
    assert float(losses[-100:].mean()) < float(losses[:100].mean()) - 0.3  # the first 100 steps average ~2.8
    (result,) = [data for kind, data in events if kind == "result"]
    assert result["val_loss"] < 2.6 and len(result["samples"]) == 20  # nothing to calibrate: evaluated as trained
