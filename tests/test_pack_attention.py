"""The attention pack (server/net/packs/attention.py): its forward against a plain PyTorch head, every rule in every
mode against autograd in float64, the fused softmax, the bugs, the API, training and the checks of its lines."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from server.explain.why import mathml
from server.net.declare import Rule
from server.net.forward import run_forward
from server.net.packs import attention as pack

N, N_EMBD, BLOCK_SIZE, HS = 20, 6, 5, 4  # small; n, n_embd, T and hs all differ, so a slipped dim shows
LEAF_KINDS = ("input", "param")
FORMULA_RTOL, FORMULA_ATOL = 1e-12, 1e-14  # float64: a formula and its code differ only in rounding, if at all
RULE_RTOL, RULE_ATOL = 1e-10, 1e-12  # float64: a rule against autograd's vector-Jacobian product

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


# --- the batch, the forward and autograd's gradients ---------------------------------------------------------


@pytest.fixture(scope="module")
def leaves(lecture_dataset) -> dict[str, object]:
    """Parameters drawn by each node's Init (float64) and a random batch of the lecture's data, plus the sizes."""
    g = torch.Generator().manual_seed(7)
    vocab = lecture_dataset.vocab_size
    sizes = {"vocab": vocab, "embd": N_EMBD, "head": HS, "context": BLOCK_SIZE, "one": 1}
    params = {}
    for node in pack.NODE_LIST:
        if node.init is not None:
            shape = tuple(sizes[axis] for axis in node.axes)
            params[node.name] = node.init.scale(torch.randn(shape, generator=g, dtype=torch.float64), sizes)
    splits = lecture_dataset.splits(BLOCK_SIZE)
    ix = torch.randint(0, splits.Xtr.shape[0], (N,), generator=g)
    return {**params, "Xb": splits.Xtr[ix], "Yb": splits.Ytr[ix], "n": N, "n_embd": N_EMBD, "hs": HS, "T": BLOCK_SIZE}


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


def test_the_loss_is_a_causal_attention_head_then_cross_entropy(leaves, forwards):
    """Independent of the declared ops: the head as the GPT lecture writes it, with F.softmax and F.cross_entropy."""
    p = leaves
    x = p["C"][p["Xb"]] + p["P"]  # (n, T, n_embd)
    q, k, v = x @ p["Wq"], x @ p["Wk"], x @ p["Wv"]  # (n, T, hs)
    scores = q @ k.transpose(-2, -1) / math.sqrt(HS)  # (n, T, T)
    tril = torch.tril(torch.ones(BLOCK_SIZE, BLOCK_SIZE))
    weights = F.softmax(scores.masked_fill(tril == 0, float("-inf")), dim=-1)
    logits = (weights @ v)[:, -1, :] @ p["W2"] + p["b2"]  # (n, vocab)
    expected = F.cross_entropy(logits, p["Yb"])
    for mode in MODES:
        torch.testing.assert_close(forwards[mode]["loss"], expected, rtol=FORMULA_RTOL, atol=FORMULA_ATOL)
    # the attention weights: causal (nothing above the diagonal) and each query's row sums to 1
    att = forwards["atomic"]["att"]
    torch.testing.assert_close(att, weights, rtol=FORMULA_RTOL, atol=FORMULA_ATOL)
    assert not att.triu(1).any()
    torch.testing.assert_close(att.sum(-1), torch.ones(N, BLOCK_SIZE, dtype=torch.float64))


# --- the declaration as data -----------------------------------------------------------------------------------


def test_names_are_unique_and_every_op_speaks_of_declared_nodes():
    assert len(NODES) == len(pack.NODE_LIST) and len(OPS) == len(pack.OPS) and len(MODES) == len(pack.MODE_LIST)
    for op in pack.OPS:
        assert set(op.inputs) | set(op.outputs) <= set(NODES), op.name
        assert not any(NODES[out].kind in LEAF_KINDS for out in op.outputs), op.name
    assert {name for op in pack.OPS for name in (*op.inputs, *op.outputs)} == set(NODES)
    assert pack.TRAINED_MODE == "fused" and pack.TRAINED_MODE in MODES


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
    size = {"batch": N, "vocab": lecture_dataset.vocab_size, "context": BLOCK_SIZE, "query": BLOCK_SIZE,
            "key": BLOCK_SIZE, "embd": N_EMBD, "head": HS, "one": 1}  # fmt: skip
    for name in nodes_for(mode):
        assert tuple(forwards[mode][name].shape) == tuple(size[a] for a in NODES[name].axes), name
    # the attention map is a query × key map per example: the names the page's 3-D view reads
    assert NODES["att"].axes == ("batch", "query", "key")


def test_the_sizes_the_forward_reads_come_from_the_parameters(leaves):
    params = {name: leaves[name] for name in pack.NET.param_names}
    assert pack.NET.sizes(params, N) == {"n": N, "n_embd": N_EMBD, "hs": HS, "T": BLOCK_SIZE}


def test_the_modes_fuse_the_softmax_and_the_cross_entropy():
    block = [op.name for op in pack.OPS if op.block == "sm"]
    assert block == ["wei_maxes", "wei_norm", "wei_counts", "wei_sum", "wei_sum_inv", "att"]
    assert [op.name for op in pack.OPS if op.fuses] == ["softmax", "cross_entropy"]
    assert [m.fuses for m in pack.MODE_LIST] == [frozenset(), {"ce"}, {"sm"}, {"ce", "sm"}]
    assert {op.rows for op in pack.OPS if op.outputs != ("loss",)} == {"each"}  # a query sees its own example only


def test_the_lectures_ops_are_reused_not_copied():
    from tests.lecture import OPS_BY_NAME

    for name in ("emb", "logit_maxes", "counts", "loss", "cross_entropy"):
        assert OPS[name] is OPS_BY_NAME[name], name


@pytest.mark.parametrize("mode", MODES)
def test_the_formulas_run_in_order_give_the_executors_forward(leaves, forwards, mode):
    namespace: dict[str, object] = {"torch": torch, "F": F, **leaves}
    for op in ops_for(mode):
        if op.saves:  # the notebook's lines name what the op keeps (tril)
            exec(op.notebook, namespace)
        lhs, rhs = op.formula.split(" = ", 1)
        assert (lhs,) == op.outputs[:1]
        namespace[lhs] = eval(rhs, namespace)
        torch.testing.assert_close(namespace[lhs], forwards[mode][lhs], rtol=FORMULA_RTOL, atol=FORMULA_ATOL)


@pytest.mark.parametrize("mode", [m for m in MODES if m != "atomic"])
def test_fused_modes_make_the_same_tensors_as_atomic(forwards, mode):
    for name in nodes_for(mode):
        torch.testing.assert_close(forwards[mode][name], forwards["atomic"][name], rtol=FORMULA_RTOL,
                                   atol=FORMULA_ATOL, msg=name)  # fmt: skip


# --- every rule: its code and autograd ---------------------------------------------------------------------------


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


def test_only_the_last_query_carries_gradient_and_the_masked_keys_none(autograd):
    """The loss reads the last position alone: every other query's row of datt is 0, and dwei is 0 where masked."""
    datt, dwei = autograd["atomic"]["att"], autograd["atomic"]["wei"]
    assert not datt[:, :-1, :].any() and datt[:, -1, :].any()
    assert not dwei.triu(1).any()


def test_the_fused_softmax_rule_is_the_atomic_chain(forwards):
    """Exercise 3's closed form gives the dwei_masked that the six atomic lines' rules give, from the same datt."""
    atomic = forwards["atomic"]
    datt = torch.randn(N, BLOCK_SIZE, BLOCK_SIZE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    v = SimpleNamespace(**{k: plain(t) for k, t in atomic.items()})
    grads = {"att": datt}
    for op in reversed([op for op in pack.OPS if op.block == "sm"]):
        d = SimpleNamespace(**grads)
        for rule, c in [(rule, rule.fn(v, d)) for rule in op.rules]:
            grads[rule.target] = grads[rule.target] + c if rule.target in grads else c
    (rule,) = OPS["softmax"].rules
    torch.testing.assert_close(rule.fn(v, SimpleNamespace(att=datt)), grads["wei_masked"], rtol=RULE_RTOL,
                               atol=RULE_ATOL)  # fmt: skip


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
    assert OPS["softmax"].rules[0].tex_notes, "the fused rule explains which atomic lines it folds"


# --- modes, cmp order, cells, warm-up -----------------------------------------------------------------------------


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
        assert cell.exercise and cell.about
        assert set(cell.grads) <= grads_of(mode), mode
    assert pack.CELLS["fused_sm"].grads == ("wei_masked",) and pack.CELLS["fused_ce"].grads == ("logits",)


@pytest.mark.parametrize("warm", pack.WARMUP, ids=[w.target or "cell" for w in pack.WARMUP])
def test_a_warm_up_program_computes_its_steps_gradients_right(forwards, autograd, warm):
    """Run with torch on the forward and autograd's upstream gradients: the target gradient is autograd's."""
    consumers = [op for op in ops_for(warm.mode) if warm.target in [r.target for r in op.rules]]
    assert len(consumers) == 1, "a warm-up's target names one backward step"
    (op,) = consumers
    out = op.outputs[0]
    values = {k: plain(t) for k, t in forwards[warm.mode].items()}
    upstream = torch.ones_like(values["loss"]) if out == "loss" else autograd[warm.mode][out]
    namespace = {"torch": torch, "F": F, **values, f"d{out}": upstream}
    exec(warm.code, namespace)
    want = autograd[warm.mode][warm.target]
    torch.testing.assert_close(namespace[f"d{warm.target}"], want, rtol=RULE_RTOL, atol=RULE_ATOL)


# --- the bug lab ------------------------------------------------------------------------------------------------


def _bug_modes(bug) -> list[str]:
    return [mode for mode in MODES if any(op.name == bug.op for op in ops_for(mode))]


def test_there_are_three_bugs_with_unique_names():
    assert len(pack.BUGS) == 3 and len({bug.name for bug in pack.BUGS}) == 3


@pytest.mark.parametrize("bug", pack.BUGS, ids=lambda bug: bug.name)
def test_a_bugs_line_is_its_function(forwards, bug):
    assert bug.op in OPS and bug.target in [r.target for r in OPS[bug.op].rules]
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
        assert got.shape == want.shape and not torch.allclose(got, want), f"{mode}: the bug is not wrong"


def test_the_forgotten_scale_is_off_by_sqrt_hs_everywhere_upstream_and_nowhere_downstream(forwards, autograd):
    bug = pack.NET.bugs_by_name["forgot_scale"]
    wrong = Rule(bug.target, bug.code, bug.fn)
    grads = manual_backward("atomic", forwards["atomic"], swap={(bug.op, bug.target): wrong})
    want = autograd["atomic"]
    for name in ("qk", "q", "kT", "k", "Wq", "Wk"):
        torch.testing.assert_close(grads[name], want[name] * math.sqrt(HS), rtol=1e-9, atol=1e-13, msg=name)
    for name in ("wei", "att", "v", "Wv", "W2"):
        torch.testing.assert_close(grads[name], want[name], rtol=RULE_RTOL, atol=RULE_ATOL, msg=name)


def test_the_missing_transpose_keeps_the_shape_of_dv(forwards, autograd):
    bug = pack.NET.bugs_by_name["square_no_transpose"]
    grads = manual_backward("atomic", forwards["atomic"], swap={(bug.op, bug.target): Rule("v", bug.code, bug.fn)})
    assert grads["v"].shape == autograd["atomic"]["v"].shape
    assert not torch.allclose(grads["v"], autograd["atomic"]["v"])


@pytest.mark.parametrize("bug", pack.BUGS, ids=lambda bug: bug.name)
def test_a_bugs_texts_quote_no_sizes(bug):
    for text in (bug.title, bug.why, bug.notice, bug.code):
        numbers = set(re.findall(r"\d+(?:\.\d+)?", text))
        assert numbers <= {"0", "1", "2", "0.5"}, (bug.name, numbers)


def test_the_slips_the_pack_names_are_sqrt_hs_and_its_inverse(leaves):
    forgot, twice = pack.SLIPS
    assert forgot.factor(SimpleNamespace(**leaves)) == pytest.approx(math.sqrt(HS)) and "hs**-0.5" in forgot.why
    assert twice.factor(SimpleNamespace(**leaves)) == pytest.approx(1 / math.sqrt(HS)) and "once" in twice.why


# --- the API ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(lecture_dataset):
    from fastapi.testclient import TestClient

    from server.web.app import create_app

    with TestClient(create_app(lecture_dataset), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


def test_api_nets_lists_the_attention_head_with_its_defaults_and_bounds(client):
    nets = {net["name"]: net for net in client.get("/api/nets").json()["nets"]}
    net = nets["attention"]
    assert net["defaults"] == {"block_size": 8, "n_embd": 16, "n_hidden": 16} and not net["default"]
    assert net["modes"] == ["atomic", "fused_ce", "fused_sm", "fused"] and net["calibrated"] == []
    config = client.get("/api/meta", params={"net": "attention"}).json()["config"]
    assert (config["block_size"]["minimum"], config["block_size"]["maximum"]) == (2, 8)
    refused = client.get("/api/state", params={"net": "attention", "block_size": 1})
    assert refused.status_code == 422 and "block_size" in refused.text and "attention" in refused.text


def test_the_attention_map_is_served_as_a_query_by_key_tensor(client):
    att = client.get("/api/tensor/att", params={"net": "attention", "step": 0}).json()
    assert att["shape"] == [32, 8, 8] and att["axes"] == ["batch", "query", "key"]
    assert att["labels"][1] == [f"q{i}" for i in range(8)] and att["labels"][2] == [f"k{i}" for i in range(8)]


@pytest.mark.parametrize("mode", MODES)
def test_every_gradient_at_the_last_step_agrees_with_autograd_through_the_api(client, mode):
    state = client.get("/api/state", params={"net": "attention", "mode": mode}).json()
    assert state["step"] == state["total_steps"] == len(ops_for(mode))
    checked = {name: node["cmp"] for name, node in state["nodes"].items() if node["cmp"] is not None}
    assert set(checked) >= grads_of(mode)
    wrong = {name: cmp["maxdiff"] for name, cmp in checked.items() if not cmp["approx"]}
    assert not wrong
    for name in grads_of(mode):
        assert state["nodes"][name]["status"] == "complete", name


def test_the_why_drawer_and_the_rule_with_numbers_answer_for_every_atomic_gradient(client):
    params = {"net": "attention", "mode": "atomic", "n_hidden": 4, "n_embd": 6, "block_size": 5}
    for name in sorted(grads_of("atomic")):
        assert client.get(f"/api/why/{name}", params=params).status_code == 200, name
        assert client.get(f"/api/instance/{name}", params=params).status_code == 200, name


def test_the_rule_with_numbers_writes_a_batched_product_out_entry_by_entry(client):
    """dx[0,4,1] += Σ_k dq[0,4,k]·Wq[1,k]: the entry's own example and row, the weight transposed."""
    params = {"net": "attention", "mode": "atomic", "n_hidden": 4, "n_embd": 6, "block_size": 5, "at": "0,4,1",
              "dtype": "float64"}  # fmt: skip
    body = client.get("/api/instance/x", params=params).json()
    last = body["parts"][-1]
    assert last["lines"][0] == "dx[0,4,1] += Σ_k dq[0,4,k]·Wq[1,k]"
    dq = [o for o in last["operands"] if o["grad"]]
    wq = [o for o in last["operands"] if not o["grad"]]
    assert [o["index"] for o in dq] == [[0, 4, k] for k in range(3)]
    assert [o["index"] for o in wq] == [[1, k] for k in range(3)]
    total = sum(part["value"] for part in body["parts"])
    assert body["total"] == pytest.approx(total, rel=1e-9)


# --- training -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_1500_step_run_trains_with_the_packs_declared_backward(lecture_dataset):
    """No hand-tuned kernel: the generic trainer runs the pack's rules, checked against autograd as it goes."""
    from server.training.config import TrainConfig
    from server.training.generic import DeclaredBackward
    from server.training.loop import Training

    events: list[tuple[str, dict]] = []
    config = TrainConfig(net="attention", max_steps=1500, lr_decay_step=1000, check_every=300, **pack.DEFAULTS)
    training = Training(config, lecture_dataset, lambda kind, data: events.append((kind, data)))
    assert isinstance(training.manual, DeclaredBackward)
    assert training.run() == "finished"
    checks = [data for kind, data in events if kind == "check"]
    assert len(checks) == 6 and not any(check["wrong"] for check in checks)  # steps 0, 300, ..., 1200 and the last
    losses = training.losses
    assert float(losses[-100:].mean()) < float(losses[:100].mean()) - 0.2  # the first 100 steps average ~2.9
    (result,) = [data for kind, data in events if kind == "result"]
    assert result["val_loss"] < 2.7 and len(result["samples"]) == 20


# the notebook's Exercise 4 block for the head: from dlogits to the gradients of its parameters, in the order the
# lecture would write them (each gradient complete before it is read)
TRAINING_BLOCK = """\
dlogits = F.softmax(logits, 1)
dlogits[range(n), Yb] -= 1
dlogits /= n
dout_last = dlogits @ W2.T
dW2 = out_last.T @ dlogits
db2 = dlogits.sum(0)
dout = torch.zeros_like(out)
dout[:, -1, :] = dout_last
datt = dout @ v.transpose(-2, -1)
dv = att.transpose(-2, -1) @ dout
dwei_masked = att * (datt - (att * datt).sum(-1, keepdim=True))
dwei = dwei_masked.masked_fill(tril == 0, 0.0)
dqk = dwei * hs**-0.5
dq = dqk @ kT.transpose(-2, -1)
dkT = q.transpose(-2, -1) @ dqk
dk = dkT.transpose(-2, -1)
dx = dv @ Wv.T
dWv = (x.transpose(-2, -1) @ dv).sum(0)
dx += dk @ Wk.T
dWk = (x.transpose(-2, -1) @ dk).sum(0)
dx += dq @ Wq.T
dWq = (x.transpose(-2, -1) @ dq).sum(0)
demb = dx.clone()
dP = dx.sum((0,))
dC = torch.zeros_like(C)
dC.index_add_(0, Xb.view(-1), demb.view(-1, n_embd))
grads = [dC, dP, dWq, dWk, dWv, dW2, db2]
"""


@pytest.mark.slow
def test_the_heads_training_block_compiles_and_trains_as_the_declared_backward_does(lecture_dataset):
    """The compiled training block learns the head's vocabulary: transpose, batched @, masked_fill, tril, tuples of
    dims. The same seed and batches as the declared backward: the same losses, every check agreeing."""
    from server.training.code_backward import CodeBackward
    from server.training.config import TrainConfig
    from server.training.loop import Training

    runs = {}
    for backward, code in (("manual", None), ("code", TRAINING_BLOCK)):
        config = TrainConfig(net="attention", max_steps=300, lr_decay_step=200, check_every=100, backward=backward,
                             code=code, **pack.DEFAULTS)  # fmt: skip
        events: list[tuple[str, dict]] = []
        training = Training(config, lecture_dataset, lambda kind, data, events=events: events.append((kind, data)))
        assert training.run() == "finished"
        runs[backward] = (training, [data for kind, data in events if kind == "check"])
    training, checks = runs["code"]
    assert isinstance(training.manual, CodeBackward) and not training.manual.program.interpreted
    assert len(checks) == 4 and not any(check["wrong"] for check in checks)
    assert float((training.losses - runs["manual"][0].losses).abs().max()) < 1e-4


# --- the checks: every step's right lines, as the lecture would write them, through /api/check ----------------

# the atomic mode's backward, a step at a time (one op's lines each), in the order the lecture would write them
ATOMIC_STEPS = {
    "loss": "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n",
    "logprobs": "dprobs = (1.0 / probs) * dlogprobs",
    "probs": "dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)\ndcounts = counts_sum_inv * dprobs",
    "counts_sum_inv": "dcounts_sum = (-counts_sum**-2) * dcounts_sum_inv",
    "counts_sum": "dcounts += torch.ones_like(counts) * dcounts_sum",
    "counts": "dnorm_logits = counts * dcounts",
    "norm_logits": "dlogits = dnorm_logits.clone()\ndlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)",
    "logit_maxes": "dlogits += F.one_hot(logits.max(1).indices, num_classes=logits.shape[1]) * dlogit_maxes",
    "logits": "dout_last = dlogits @ W2.T\ndW2 = out_last.T @ dlogits\ndb2 = dlogits.sum(0)",
    "out_last": "dout = torch.zeros_like(out)\ndout[:, -1, :] = dout_last",
    "out": "datt = dout @ v.transpose(-2, -1)\ndv = att.transpose(-2, -1) @ dout",
    "att": "dwei_sum_inv = (wei_counts * datt).sum(-1, keepdim=True)\ndwei_counts = wei_sum_inv * datt",
    "wei_sum_inv": "dwei_sum = (-wei_sum**-2) * dwei_sum_inv",
    "wei_sum": "dwei_counts += torch.ones_like(wei_counts) * dwei_sum",
    "wei_counts": "dwei_norm = wei_counts * dwei_counts",
    "wei_norm": "dwei_masked = dwei_norm.clone()\ndwei_maxes = (-dwei_norm).sum(-1, keepdim=True)",
    "wei_maxes": "dwei_masked += F.one_hot(wei_masked.max(-1).indices, num_classes=T) * dwei_maxes",
    "wei_masked": "dwei = dwei_masked.masked_fill(tril == 0, 0.0)",
    "wei": "dqk = dwei * hs**-0.5",
    "qk": "dq = dqk @ kT.transpose(-2, -1)\ndkT = q.transpose(-2, -1) @ dqk",
    "kT": "dk = dkT.transpose(-2, -1)",
    "v": "dx = dv @ Wv.T\ndWv = (x.transpose(-2, -1) @ dv).sum(0)",
    "k": "dx += dk @ Wk.T\ndWk = (x.transpose(-2, -1) @ dk).sum(0)",
    "q": "dx += dq @ Wq.T\ndWq = (x.transpose(-2, -1) @ dq).sum(0)",
    "x": "demb = dx.clone()\ndP = dx.sum(0)",
    "emb": "dC = torch.zeros_like(C)\ndC.index_add_(0, Xb.view(-1), demb.view(-1, n_embd))",
}
FUSED_STEPS = {  # the fused mode's lines that differ: Exercise 2's dlogits and Exercise 3's softmax
    "cross_entropy": "dlogits = F.softmax(logits, 1)\ndlogits[range(n), Yb] -= 1\ndlogits /= n",
    "softmax": "dwei_masked = att * (datt - (att * datt).sum(-1, keepdim=True))",
}


@pytest.fixture(scope="module")
def check_client(lecture_dataset):
    from fastapi.testclient import TestClient

    from server.settings import Settings
    from server.web.app import create_app

    app = create_app(lecture_dataset, Settings(check_workers=1))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("mode", ["atomic", "fused"])
def test_every_steps_right_lines_are_accepted_by_the_check_in_the_lectures_order(check_client, mode):
    steps = {**ATOMIC_STEPS, **FUSED_STEPS}
    schedule = [op.name for op in reversed(ops_for(mode))]
    assert set(schedule) <= set(steps)
    for step, op in enumerate(schedule, start=1):
        body = {"net": "attention", "mode": mode, "step": step, "code": steps[op]}
        answer = check_client.post("/api/check", json=body)
        assert answer.status_code == 200, (op, answer.text)
        result = answer.json()
        assert result["op"] == op and result["correct"], (op, result["results"])


def test_a_missing_one_over_sqrt_hs_is_named_with_its_factor(check_client):
    step = [op.name for op in reversed(ops_for("atomic"))].index("wei") + 1
    body = {"net": "attention", "mode": "atomic", "step": step, "code": "dqk = dwei.clone()"}
    (item,) = check_client.post("/api/check", json=body).json()["results"]
    # the default head is 16 wide: the gradient is sqrt(16) = 4 times autograd's, and the feedback says why
    assert item["feedback"] == [
        "dqk is 4× autograd's — √hs is 4: did you forget the hs**-0.5 of the scores (wei = qk * hs**-0.5)?"
    ]


def test_a_scale_applied_twice_is_named_with_its_factor(check_client):
    step = [op.name for op in reversed(ops_for("atomic"))].index("wei") + 1
    body = {"net": "attention", "mode": "atomic", "step": step, "code": "dqk = dwei * hs**-1"}
    (item,) = check_client.post("/api/check", json=body).json()["results"]
    assert item["feedback"] == [
        "dqk is 0.25× autograd's — 1/√hs is 0.25: did you scale twice, or by hs**-1? The forward scaled the "
        "scores once, by hs**-0.5"
    ]


def test_a_softmax_summed_over_the_queries_is_named_as_the_wrong_dim(check_client):
    step = [op.name for op in reversed(ops_for("fused_sm"))].index("softmax") + 1
    code = "dwei_masked = att * (datt - (att * datt).sum(-2, keepdim=True))"
    body = {"net": "attention", "mode": "fused_sm", "step": step, "code": code}
    (item,) = check_client.post("/api/check", json=body).json()["results"]
    assert item["feedback"] == [
        "dwei_masked sums over the wrong dimension: line 1: (att * datt).sum(-2, keepdim=True) → "
        "(att * datt).sum(-1, keepdim=True) gives autograd's"
    ]


@pytest.mark.slow
def test_the_whole_atomic_cell_is_graded_right_and_its_export_runs_and_agrees(check_client, tmp_path):
    """Exercise 1's cell for the head, every line in the lecture's order: one check of the cell, then the .py the
    page exports, run with this project's Python on the lecture's names: every cmp line approximately right."""
    from tests.test_export import all_right, cmp_lines, run_py

    cell = "\n".join(ATOMIC_STEPS[op.name] for op in reversed(ops_for("atomic")))
    body = {"net": "attention", "mode": "atomic", "code": cell}
    graded = check_client.post("/api/check", json=body)
    assert graded.status_code == 200 and graded.json()["correct"], graded.text
    exported = check_client.post("/api/export", json={**body, "format": "py"})
    assert exported.status_code == 200, exported.text
    lines = cmp_lines(run_py(tmp_path, "attention.py", exported.content))
    assert set(lines) == set(pack.CMP_ORDER) and all_right(lines)


@pytest.mark.parametrize("code", ["hs = 1\ndqk = dwei * hs**-0.5", "T = 1\ndqk = dwei * hs**-0.5"])
def test_the_heads_sizes_cannot_be_rebound_in_its_checks(check_client, code):
    step = [op.name for op in reversed(ops_for("atomic"))].index("wei") + 1
    body = {"net": "attention", "mode": "atomic", "step": step, "code": code}
    refused = check_client.post("/api/check", json=body)
    assert refused.status_code == 422 and "cannot be reassigned" in refused.json()["detail"]
