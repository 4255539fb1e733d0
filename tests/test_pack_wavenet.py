"""The WaveNet pack (server/net/packs/wavenet.py): its forward against makemore part 5's model written with torch,
every rule in every mode against autograd in float64, the fused batchnorms, the bugs, the API and training."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from server.core.config import ModelConfig
from server.core.engine import axis_sizes, init_params
from server.explain.why import mathml
from server.net.declare import Rule
from server.net.forward import run_forward
from server.net.packs import wavenet as pack

N, N_EMBD, BLOCK_SIZE, N_HIDDEN = 12, 5, 8, 7  # small; n, n*T and n_hidden all differ, so a slipped dim shows
LEAF_KINDS = ("input", "param")
FORMULA_RTOL, FORMULA_ATOL = 1e-12, 1e-14  # float64: a formula and its code differ only in rounding, if at all
RULE_RTOL, RULE_ATOL = 1e-10, 1e-12  # float64: a rule against autograd's vector-Jacobian product
LECTURE_PARAMS = 76_579  # makemore part 5's final model: n_embd 24, n_hidden 128, block_size 8

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


def plain(t):
    return t.detach() if isinstance(t, torch.Tensor) else t


@pytest.fixture(scope="module")
def leaves(lecture_dataset) -> dict[str, object]:
    """Parameters drawn by each node's Init, then jittered (gains off 1, biases off 0: a rule that drops one shows),
    in float64, and a random batch of the lecture's data, plus the sizes."""
    g = torch.Generator().manual_seed(7)
    vocab = lecture_dataset.vocab_size
    sizes = {"vocab": vocab, "embd": N_EMBD, "hidden": N_HIDDEN, "one": 1, "embd2": 2 * N_EMBD, "hidden2": 2 * N_HIDDEN}
    params = {}
    for node in pack.NODE_LIST:
        if node.init is not None:
            shape = tuple(sizes[axis] for axis in node.axes)
            t = node.init.scale(torch.randn(shape, generator=g, dtype=torch.float64), sizes)
            params[node.name] = t + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
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


# --- makemore part 5's model, written independently with torch ---------------------------------------------------


class _Linear:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = x @ self.weight
        return out if self.bias is None else out + self.bias


class _BatchNorm1d:
    """makemore part 5's layer in training: the batch's mean and (unbiased) variance over dim 0, or (0, 1) in 3-D."""

    def __init__(self, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> None:
        self.gamma, self.beta, self.eps = gamma, beta, eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dim = 0 if x.ndim == 2 else (0, 1)
        xmean, xvar = x.mean(dim, keepdim=True), x.var(dim, keepdim=True)
        return self.gamma * ((x - xmean) / torch.sqrt(xvar + self.eps)) + self.beta


class _FlattenConsecutive:
    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        x = x.view(B, T // self.n, C * self.n)
        return x.squeeze(1) if x.shape[1] == 1 else x


def _makemore5_loss(p: dict[str, torch.Tensor], Xb: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
    layers = [_FlattenConsecutive(2), _Linear(p["W1"]), _BatchNorm1d(p["bngain1"], p["bnbias1"]), torch.tanh,
              _FlattenConsecutive(2), _Linear(p["W2"]), _BatchNorm1d(p["bngain2"], p["bnbias2"]), torch.tanh,
              _FlattenConsecutive(2), _Linear(p["W3"]), _BatchNorm1d(p["bngain3"], p["bnbias3"]), torch.tanh,
              _Linear(p["W4"], p["b4"])]  # fmt: skip
    x = F.embedding(Xb, p["C"])  # (n, block_size, n_embd)
    for layer in layers:
        x = layer(x)
    return F.cross_entropy(x, Yb)


def test_the_loss_is_makemore_part_5s_model(leaves, forwards):
    """Independent of the declared ops: makemore part 5's layers as torch code, on the same parameters and batch."""
    expected = _makemore5_loss(leaves, leaves["Xb"], leaves["Yb"])
    for mode in MODES:
        torch.testing.assert_close(forwards[mode]["loss"], expected, rtol=FORMULA_RTOL, atol=FORMULA_ATOL)


def test_the_first_batchnorm_normalises_each_unit_over_the_batch_and_the_time_positions(forwards):
    raw = forwards["atomic"]["bnraw1"]  # (n, T, n_hidden)
    assert raw.shape == (N, BLOCK_SIZE // 2, N_HIDDEN)
    torch.testing.assert_close(raw.mean((0, 1)), torch.zeros(N_HIDDEN, dtype=torch.float64), rtol=0, atol=1e-12)
    m = N * BLOCK_SIZE // 2
    unbiased = (raw**2).sum((0, 1)) / (m - 1)  # Bessel over the n*T entries: ~1 up to eps
    torch.testing.assert_close(unbiased, torch.ones(N_HIDDEN, dtype=torch.float64), rtol=1e-3, atol=0)
    assert forwards["atomic"]["bnraw3"].shape == (N, N_HIDDEN)


def test_the_parameters_are_makemore_part_5s_76579_initialised_as_it_does(lecture_dataset):
    config = ModelConfig(net="wavenet", **pack.DEFAULTS)
    params, _ = init_params(config, lecture_dataset.vocab_size)
    assert sum(t.numel() for t in params.values()) == LECTURE_PARAMS
    assert set(params) == {
        "C",
        "W1",
        "W2",
        "W3",
        "W4",
        "b4",
        *(f"bn{k}{i}" for k in ("gain", "bias") for i in (1, 2, 3)),
    }
    for i in (1, 2, 3):
        assert torch.equal(params[f"bngain{i}"], torch.ones(128)) and torch.equal(
            params[f"bnbias{i}"], torch.zeros(128)
        )
    assert torch.equal(params["b4"], torch.zeros(lecture_dataset.vocab_size))
    # randn / sqrt(fan_in): the standard deviation of a weight is 1/sqrt(fan_in), the output layer's a tenth of it
    for name, fan_in, scale in (("W1", 48, 1.0), ("W2", 256, 1.0), ("W3", 256, 1.0), ("W4", 128, 0.1)):
        assert params[name].shape[0] == fan_in
        assert abs(float(params[name].std()) * fan_in**0.5 / scale - 1) < 0.05, name
    sizes = axis_sizes(config, lecture_dataset.vocab_size)
    for node in pack.NODE_LIST:
        if node.init is not None:  # the notebook's line makes the declared shape
            ns = {"torch": torch, "g": torch.Generator(), "n_embd": 24, "n_hidden": 128, "vocab_size": 27}
            exec(node.init.code, ns)
            assert tuple(ns[node.name].shape) == tuple(sizes[a] for a in node.axes), node.name


# --- the declaration as data -----------------------------------------------------------------------------------


def test_names_are_unique_and_every_op_speaks_of_declared_nodes():
    assert len(NODES) == len(pack.NODE_LIST) and len(OPS) == len(pack.OPS) and len(MODES) == len(pack.MODE_LIST)
    for op in pack.OPS:
        assert set(op.inputs) | set(op.outputs) <= set(NODES), op.name
        assert not any(NODES[out].kind in LEAF_KINDS for out in op.outputs), op.name
    assert {name for op in pack.OPS for name in (*op.inputs, *op.outputs)} == set(NODES)


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
            "hidden": N_HIDDEN, "one": 1, "embd2": 2 * N_EMBD, "hidden2": 2 * N_HIDDEN}  # fmt: skip
    halvings = {"flat1": 4, "flat2": 2}  # the time positions left after each flatten of consecutive pairs
    for name in nodes_for(mode):
        level = re.search(r"(\d)$", name)
        t = {"1": 4, "2": 2}.get(level.group(1)) if level else None
        t = halvings.get(name, t)
        want = tuple(t if a == "time" else size[a] for a in NODES[name].axes)
        assert tuple(forwards[mode][name].shape) == want, name


def test_the_modes_fuse_the_cross_entropy_and_each_levels_batchnorm():
    assert [m.fuses for m in pack.MODE_LIST] == [
        frozenset(),
        {"ce"},
        {"bn1", "bn2", "bn3"},
        {"ce", "bn1", "bn2", "bn3"},
    ]
    for level in (1, 2, 3):
        block = [op.name for op in pack.OPS if op.block == f"bn{level}"]
        assert block == [f"{s}{level}" for s in ("bnmeani", "bndiff")] + [f"bndiff2_{level}"] + [
            f"{s}{level}" for s in ("bnvar", "bnvar_inv", "bnraw", "hpreact")
        ]
        (fused,) = [op for op in pack.OPS if op.fuses == f"bn{level}"]
        assert fused.calibrated and fused.calibrate is not None and fused.eval_forward is not None
    assert pack.TRAINED_MODE == "fused"


def test_the_lectures_ops_are_reused_not_copied():
    from tests.lecture import OPS_BY_NAME

    for name in ("emb", "logit_maxes", "norm_logits", "counts", "probs", "logprobs", "loss", "cross_entropy"):
        assert OPS[name] is OPS_BY_NAME[name], name


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


@pytest.mark.parametrize("level", [1, 2, 3])
def test_the_fused_ops_notebook_form_computes_its_output_and_what_it_saves(forwards, level):
    op = OPS[f"batchnorm{level}"]
    namespace = {"torch": torch, **{name: forwards["atomic"][name] for name in op.inputs}}  # what it reads, alone
    exec(op.notebook, namespace)
    for name in (f"hpreact{level}", *op.saves):
        torch.testing.assert_close(namespace[name], forwards["atomic"][name], rtol=FORMULA_RTOL, atol=FORMULA_ATOL)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_the_calibrated_forward_with_the_batchs_statistics_is_the_training_forward(forwards, level):
    op, v = OPS[f"batchnorm{level}"], SimpleNamespace(**forwards["atomic"])
    stats = op.calibrate(v)
    assert set(stats) == set(op.calibrated)
    got = op.eval_forward(SimpleNamespace(**vars(v), **stats))
    torch.testing.assert_close(got, forwards["atomic"][f"hpreact{level}"], rtol=FORMULA_RTOL, atol=FORMULA_ATOL)


# --- every rule: its code, autograd ------------------------------------------------------------------------------


def _upstream(y: torch.Tensor, is_loss: bool) -> torch.Tensor:
    if is_loss:
        return torch.ones_like(y)  # the loss is the root: dloss = 1, as in the lecture
    return torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize(("op_name", "mode"), OP_MODE)
def test_each_rules_code_text_computes_what_its_function_does(forwards, op_name, mode):
    op = OPS[op_name]
    out = run_forward([op], {k: plain(t) for k, t in forwards[mode].items()})
    upstream = _upstream(out[op.outputs[0]], op.outputs == ("loss",))
    v, d = SimpleNamespace(**out), SimpleNamespace(**{op.outputs[0]: upstream})
    for rule in op.rules:
        grad = f"d{rule.target}"
        namespace = {"torch": torch, "F": F, **out, f"d{op.outputs[0]}": upstream}
        if f"{grad} +=" in rule.code:
            namespace[grad] = torch.zeros_like(out[rule.target])
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
    out = run_forward([op], {**values, **inputs})
    y = out[op.outputs[0]]
    upstream = _upstream(y, op.outputs == ("loss",))
    expected = torch.autograd.grad(y, [inputs[rule.target] for rule in op.rules], upstream)
    v = SimpleNamespace(**{k: plain(t) for k, t in out.items()})
    d = SimpleNamespace(**{op.outputs[0]: upstream})
    with torch.no_grad():
        for rule, want in zip(op.rules, expected, strict=True):
            got = rule.fn(v, d)
            assert got.shape == want.shape, rule.target
            torch.testing.assert_close(got, want, rtol=RULE_RTOL, atol=RULE_ATOL, msg=rule.target)


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


@pytest.mark.parametrize("level", [1, 2, 3])
def test_the_fused_batchnorm_rule_is_the_atomic_chain(forwards, level):
    """The closed form over the level's dims gives the dhprebn the seven atomic lines' rules give, same dhpreact."""
    atomic = forwards["atomic"]
    act = f"hpreact{level}"
    dy = torch.randn(atomic[act].shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    v = SimpleNamespace(**{k: plain(t) for k, t in atomic.items()})
    grads = {act: dy}
    for op in reversed([op for op in pack.OPS if op.block == f"bn{level}"]):
        d = SimpleNamespace(**grads)
        for rule, c in [(rule, rule.fn(v, d)) for rule in op.rules]:
            grads[rule.target] = grads[rule.target] + c if rule.target in grads else c
    fused = OPS[f"batchnorm{level}"]
    vf = SimpleNamespace(**{**vars(v), **{k: plain(t) for k, t in fused.forward(v).items()}})
    for rule in fused.rules:
        got = rule.fn(vf, SimpleNamespace(**{act: dy}))
        torch.testing.assert_close(got, grads[rule.target], rtol=RULE_RTOL, atol=RULE_ATOL, msg=rule.target)
    # the gain and bias rules are the atomic op's own, not copies that could drift
    atomic_rules = {r.target: r for r in OPS[act].rules}
    assert all(atomic_rules[r.target] is r for r in fused.rules[1:])


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


@pytest.mark.parametrize("mode", ["atomic", "fused"])
def test_the_engines_finite_differences_agree_with_every_gradient(lecture_dataset, mode):
    """The explorer's own check (which re-runs only a perturbed row where Op.rows says rows stay apart)."""
    from server.core.engine import run_backward

    config = ModelConfig(net="wavenet", block_size=8, n_embd=N_EMBD, n_hidden=N_HIDDEN, dtype="float64")
    bp = run_backward(config, lecture_dataset, mode)
    worst = {name: bp.numeric(name)["max_rel_err"] for name in bp.cmp}
    assert set(worst) >= grads_of(mode)
    assert max(worst.values()) < 1e-5, worst


# --- cmp order, cells, warm-up -----------------------------------------------------------------------------------


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
    for mode, cell in pack.CELLS.items():
        assert cell.exercise and cell.about and set(cell.grads) <= grads_of(mode), mode
    assert pack.CELLS["fused_bn"].grads == ("hprebn1",)


def _cell_code(mode: str, swap: dict[str, str] | None = None) -> str:
    """The mode's notebook cell written from the declared rules, from its first gradient on (`swap`: line -> line)."""
    from server.learner.cells import cell_grads

    grads, lines, started = set(cell_grads(pack.NET, mode)), [], False
    for op in pack.NET.backward_schedule(mode):
        started = started or any(rule.target in grads for rule in op.rules)
        lines += [rule.code for rule in op.rules] if started else []
    return "\n".join((swap or {}).get(line, line) for line in lines)


@pytest.mark.parametrize("mode", MODES)
def test_each_modes_cell_written_from_the_rules_passes_the_cell_check(lecture_dataset, mode):
    from server.core.engine import run_backward
    from server.learner.cells import grade_cell

    bp = run_backward(ModelConfig(net="wavenet", **pack.DEFAULTS), lecture_dataset, mode)
    graded = grade_cell(bp, _cell_code(mode))
    assert graded["correct"] and graded["first_wrong"] is None and len(graded["checks"]) >= 7


def test_exercise_3s_line_copied_onto_the_3_d_batchnorm_is_the_cells_first_wrong_line(lecture_dataset):
    from server.core.engine import run_backward
    from server.learner.cells import grade_cell

    bug = pack.NET.bugs_by_name["exercise3_verbatim"]
    right = next(rule.code for rule in OPS["batchnorm1"].rules if rule.target == "hprebn1")
    bp = run_backward(ModelConfig(net="wavenet", **pack.DEFAULTS), lecture_dataset, "fused_bn")
    graded = grade_cell(bp, _cell_code("fused_bn", {right: bug.code}))
    assert not graded["correct"] and "dhprebn1" in str(graded["first_wrong"])


@pytest.mark.parametrize(("mode", "target", "code"), pack.WARMUP, ids=[w[1] for w in pack.WARMUP])
def test_a_warm_up_program_computes_its_steps_gradients_right(forwards, autograd, mode, target, code):
    consumers = [op for op in ops_for(mode) if target in [r.target for r in op.rules]]
    assert len(consumers) == 1, "a warm-up's target names one backward step"
    out = consumers[0].outputs[0]
    values = {k: plain(t) for k, t in forwards[mode].items()}
    upstream = torch.ones_like(values["loss"]) if out == "loss" else autograd[mode][out]
    namespace = {"torch": torch, "F": F, **values, f"d{out}": upstream}
    exec(code, namespace)
    torch.testing.assert_close(namespace[f"d{target}"], autograd[mode][target], rtol=RULE_RTOL, atol=RULE_ATOL)


# --- the bug lab ------------------------------------------------------------------------------------------------


def _bug_modes(bug) -> list[str]:
    return [mode for mode in MODES if any(op.name == bug.op for op in ops_for(mode))]


def test_there_are_the_lectures_bug_and_two_more_with_unique_names():
    assert len(pack.BUGS) >= 3 and len({bug.name for bug in pack.BUGS}) == len(pack.BUGS)
    assert "bn_dim0_only" in {bug.name for bug in pack.BUGS}


@pytest.mark.parametrize("bug", pack.BUGS, ids=lambda bug: bug.name)
def test_a_bugs_line_is_its_function(forwards, bug):
    assert bug.op in OPS and bug.target in [r.target for r in OPS[bug.op].rules] and _bug_modes(bug)
    right = next(r for r in OPS[bug.op].rules if r.target == bug.target)
    assert bug.code.startswith(f"d{bug.target} = ") and bug.code != right.code
    values = {k: plain(t) for k, t in forwards[_bug_modes(bug)[0]].items()}
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


def test_the_lectures_bug_gives_one_gradient_per_time_position(forwards):
    bug = next(b for b in pack.BUGS if b.name == "bn_dim0_only")
    v = SimpleNamespace(**{k: plain(t) for k, t in forwards["atomic"].items()})
    got = bug.fn(v, SimpleNamespace(bnraw1=_upstream(v.bnraw1, False)))
    assert got.shape == (1, BLOCK_SIZE // 2, N_HIDDEN) and v.bnvar_inv1.shape == (1, 1, N_HIDDEN)


def test_the_count_bug_is_off_by_the_ratio_of_the_counts(forwards):
    bug = next(b for b in pack.BUGS if b.name == "count_n_for_m")
    v = SimpleNamespace(**{k: plain(t) for k, t in forwards["atomic"].items()})
    d = SimpleNamespace(bnvar1=_upstream(v.bnvar1, False))
    right = next(r for r in OPS["bnvar1"].rules if r.target == "bndiff2_1")
    m = N * BLOCK_SIZE // 2
    torch.testing.assert_close(bug.fn(v, d), right.fn(v, d) * (m - 1) / (N - 1), rtol=1e-14, atol=0)


@pytest.mark.parametrize("bug", pack.BUGS, ids=lambda bug: bug.name)
def test_a_bugs_texts_quote_no_sizes(bug):
    for text in (bug.title, bug.why, bug.notice, bug.code):
        numbers = set(re.findall(r"\d+(?:\.\d+)?", text)) - {"1e-5"}
        assert numbers <= {"0", "1", "2", "3", "5", "0.5", "1.0", "1.5"}, (bug.name, numbers)


# --- the API ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(lecture_dataset):
    from fastapi.testclient import TestClient

    from server.web.app import create_app

    with TestClient(create_app(lecture_dataset), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


def test_api_nets_lists_the_wavenet_with_its_defaults(client):
    nets = {net["name"]: net for net in client.get("/api/nets").json()["nets"]}
    net = nets["wavenet"]
    assert net["defaults"] == {"block_size": 8, "n_embd": 24, "n_hidden": 128} and not net["default"]
    assert net["modes"] == ["atomic", "fused_ce", "fused_bn", "fused"]
    assert set(net["calibrated"]) == {f"bn{s}_running{i}" for s in ("mean", "var") for i in (1, 2, 3)}
    assert net["train_defaults"] == {"lr_decay_step": 150_000}  # makemore part 5's schedule
    assert nets["makemore4"]["defaults"] == {} and nets["makemore4"]["train_defaults"] == {}
    train = client.get("/api/meta", params={"net": "wavenet"}).json()["train"]
    assert {k: train[k]["default"] for k in ("block_size", "n_hidden", "lr_decay_step", "lr", "lr_after")} == {
        "block_size": 8,
        "n_hidden": 128,
        "lr_decay_step": 150_000,
        "lr": 0.1,
        "lr_after": 0.01,
    }
    config = client.get("/api/meta", params={"net": "wavenet"}).json()["config"]
    assert {k: config[k]["default"] for k in ("block_size", "n_embd", "n_hidden")} == net["defaults"]
    assert (config["block_size"]["minimum"], config["block_size"]["maximum"]) == (8, 8)
    assert client.get("/api/meta").json()["config"]["block_size"]["default"] == 3  # the lecture's unchanged


def test_a_request_naming_the_wavenet_gets_its_sizes_and_a_wrong_block_size_is_a_422(client):
    tensor = client.get("/api/tensor/emb", params={"net": "wavenet", "step": 0}).json()
    assert tensor["shape"] == [32, 8, 24] and tensor["axes"] == ["batch", "context", "embd"]
    h1 = client.get("/api/tensor/h1", params={"net": "wavenet", "n_hidden": 16, "step": 0}).json()
    assert h1["shape"] == [32, 4, 16] and h1["labels"][1] == ["t0", "t1", "t2", "t3"]
    flat2 = client.get("/api/tensor/flat2", params={"net": "wavenet", "n_hidden": 16, "step": 0}).json()
    assert flat2["labels"][2][15:17] == ["p0·h15", "p1·h0"]
    refused = client.get("/api/state", params={"net": "wavenet", "block_size": 3})
    assert refused.status_code == 422 and "block_size" in refused.text and "wavenet" in refused.text


def test_a_training_run_naming_the_wavenet_gets_its_sizes_and_refuses_another_block_size():
    from pydantic import ValidationError

    from server.web.schemas import RunRequest

    (config,) = RunRequest.model_validate({"net": "wavenet", "n_hidden": 64}).to_configs()
    assert (config.block_size, config.n_embd, config.n_hidden, config.lr_decay_step) == (8, 24, 64, 150_000)
    (lecture,) = RunRequest.model_validate({}).to_configs()
    assert (lecture.block_size, lecture.n_embd, lecture.n_hidden, lecture.lr_decay_step) == (3, 10, 200, 100_000)
    with pytest.raises(ValidationError, match="block_size must be in \\[8, 8\\] for the wavenet network"):
        RunRequest.model_validate({"net": "wavenet", "block_size": 4})


def test_every_gradient_at_the_last_step_of_the_atomic_mode_agrees_with_autograd_through_the_api(client):
    state = client.get("/api/state", params={"net": "wavenet", "mode": "atomic"}).json()
    assert state["step"] == state["total_steps"] == len(ops_for("atomic"))
    checked = {name: node["cmp"] for name, node in state["nodes"].items() if node["cmp"] is not None}
    assert set(checked) >= grads_of("atomic")
    wrong = {name: cmp["maxdiff"] for name, cmp in checked.items() if not cmp["approx"]}
    assert not wrong
    for name in grads_of("atomic"):
        assert state["nodes"][name]["status"] == "complete", name


@pytest.mark.parametrize("mode", ["atomic", "fused_bn"])
def test_the_why_drawer_and_the_written_rules_answer_for_every_tensor_3_d_ones_included(client, mode):
    last = len(ops_for(mode))
    for name in grads_of(mode):
        params = {"net": "wavenet", "mode": mode, "step": last}
        why = client.get(f"/api/why/{name}", params=params)
        assert why.status_code == 200, (name, why.text)
        assert why.json()["rules"] and all(rule["lines"] for rule in why.json()["rules"]), name
        written = client.get(f"/api/instance/{name}", params=params)
        assert written.status_code == 200, (name, written.text)
        parts = written.json()["parts"]
        assert parts and all(part["value"] is not None for part in parts), name


def test_the_export_rebuilds_the_wavenet_with_its_init_lines(client):
    solved = {"step": 1, "code": "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"}
    exported = client.post("/api/export", json={"net": "wavenet", "mode": "atomic", "steps": [solved]})
    assert exported.status_code == 200
    for node in pack.NODE_LIST:
        if node.init is not None:
            assert node.init.code in exported.text, node.name
    assert "block_size = 8 " in exported.text  # the net's own context length


# --- training -----------------------------------------------------------------------------------------------------


@pytest.mark.slow  # about a minute: every step runs the declared rules one op at a time
def test_a_1500_step_run_trains_with_the_packs_declared_backward(lecture_dataset):
    """No hand-tuned kernel: the generic trainer runs the pack's rules, checked against autograd as it goes."""
    from server.training.config import TrainConfig
    from server.training.generic import DeclaredBackward
    from server.training.loop import Training

    events: list[tuple[str, dict]] = []
    config = TrainConfig(net="wavenet", max_steps=1500, lr_decay_step=1000, check_every=300, **pack.DEFAULTS)
    training = Training(config, lecture_dataset, lambda kind, data: events.append((kind, data)))
    assert isinstance(training.manual, DeclaredBackward)
    assert training.run() == "finished"
    checks = [data for kind, data in events if kind == "check"]
    assert len(checks) == 6 and not any(check["wrong"] for check in checks)  # steps 0, 300, ..., 1200 and the last
    losses = training.losses
    assert float(losses[-100:].mean()) < float(losses[:100].mean()) - 0.4  # the first 100 steps average ~3
    (result,) = [data for kind, data in events if kind == "result"]
    assert result["train_loss"] < 2.5 and result["val_loss"] < 2.5 and len(result["samples"]) == 20


@pytest.mark.slow  # the learner's block is checked and compiled, then trains; the evaluation takes most of it
def test_a_learners_block_written_from_the_fused_rules_trains_the_wavenet(lecture_dataset):
    """Exercise 4 with your own backward: the compiled block runs the 3-D lines (sums over dims (0, 1), views)."""
    from server.training.code_backward import CodeBackward, default_grads
    from server.training.config import TrainConfig
    from server.training.loop import Training

    lines = [rule.code for op in pack.NET.backward_schedule("fused") for rule in op.rules]
    code = "\n".join([*lines, f"grads = [{', '.join(default_grads(pack.NET))}]"])
    events: list[tuple[str, dict]] = []
    config = TrainConfig(
        net="wavenet", max_steps=200, lr_decay_step=150_000, check_every=50, backward="code", code=code, **pack.DEFAULTS
    )
    training = Training(config, lecture_dataset, lambda kind, data: events.append((kind, data)))
    assert isinstance(training.manual, CodeBackward)
    assert training.run() == "finished"
    checks = [data for kind, data in events if kind == "check"]
    assert len(checks) == 5 and not any(check["wrong"] for check in checks)
    assert float(training.losses[-20:].mean()) < float(training.losses[:20].mean()) - 0.3


@pytest.mark.long
def test_makemore_part_5s_result(lecture_dataset):
    """makemore part 5's final run, trained with the pack's manual backward alone: train 1.769, val 1.993."""
    from server.training.config import TrainConfig
    from server.training.loop import Training

    events: list[tuple[str, dict]] = []
    # the lecture's schedule: 200,000 steps of 32, lr 0.1, then 0.01 from step 150,000
    config = TrainConfig(net="wavenet", lr_decay_step=150_000, check_every=10_000, **pack.DEFAULTS)
    training = Training(config, lecture_dataset, lambda kind, data: events.append((kind, data)))
    assert training.run() == "finished"
    assert not any(data["wrong"] for kind, data in events if kind == "check")
    (result,) = [data for kind, data in events if kind == "result"]
    print(f"\nwavenet: train {result['train_loss']:.4f} val {result['val_loss']:.4f} in {result['duration_s']:.0f} s")
    assert abs(result["train_loss"] - 1.769) <= 0.03, result
    assert abs(result["val_loss"] - 1.993) <= 0.03, result


# --- the page -------------------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_the_explorer_opens_the_wavenet_at_its_own_sizes_and_steps_it(page, base_url):
    from playwright.sync_api import expect

    from tests.test_browser import act, click_node, graph_nodes, node_labels, open_page, served

    open_page(page, f"{base_url}/?net=wavenet")
    nodes = graph_nodes(page)
    assert {"flat1", "bnvar_inv1", "h3", "W4"} <= set(nodes) and "embcat" not in nodes, nodes
    total = len(served(page, "/api/graph?net=wavenet")["schedule"])
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 0 / {total}")
    expect(page.get_by_test_id("cfg-n_hidden")).to_have_value("128")  # the net's own default, from its meta
    assert "n_hidden" not in page.url  # a default: left out of the URL
    act(page, lambda: page.get_by_test_id("next").click())
    expect(page.get_by_test_id("step-label")).to_have_text(f"step 1 / {total}")
    act(page, lambda: page.get_by_test_id("run-all").click())
    labels = node_labels(page)
    assert all("✗" not in labels[name] for name in grads_of("atomic")), labels
    click_node(page, "h1")  # a 3-D tensor: batch, time, hidden
    expect(page.get_by_test_id("panel-title")).to_contain_text("shape (32, 4, 128)")
    expect(page.get_by_test_id("error")).to_be_hidden()


@pytest.mark.browser
def test_the_training_form_takes_the_wavenets_sizes_when_it_is_chosen(page, base_url):
    from playwright.sync_api import expect

    page.goto(f"{base_url}/train.html")
    page.wait_for_selector("body[data-ready='1']")
    form = page.get_by_test_id("run-form")
    expect(form.locator("input[name=block_size]")).to_have_value("3")
    page.get_by_test_id("cfg-net").select_option("wavenet")
    expect(form.locator("input[name=block_size]")).to_have_value("8")
    expect(form.locator("input[name=n_embd]")).to_have_value("24")
    expect(form.locator("input[name=n_hidden]")).to_have_value("128")
    expect(form.locator("input[name=lr_decay_step]")).to_have_value("150000")  # makemore part 5's schedule
    page.get_by_test_id("cfg-net").select_option("makemore4")
    expect(form.locator("input[name=block_size]")).to_have_value("3")
    expect(form.locator("input[name=n_hidden]")).to_have_value("200")
    expect(form.locator("input[name=lr_decay_step]")).to_have_value("100000")
