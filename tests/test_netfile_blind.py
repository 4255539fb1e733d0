"""Network files written from docs/your-own-network.md alone: each loads, draws its parameters as the file says,
gets every gradient right against a plain PyTorch forward written apart from it, serves through the API, trains."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from server.core.config import ModelConfig
from server.core.engine import init_params, run_backward, sample_batch
from server.net import netfile
from server.net.netfile import NetFileError
from server.net.packs import NETS, add_net_file

from .live_server import live_server
from .test_netfile import get

FILES = Path(__file__).resolve().parent / "netfiles"
F64_RTOL, F64_ATOL = 1e-10, 1e-12  # float64: the generated rules against a plain PyTorch forward
Params = dict[str, torch.Tensor]


def residual_forward(p: Params, Xb: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
    x = p["C"][Xb].flatten(1)
    h1 = F.relu(F.linear(x, p["W1"].T, p["b1"]))
    h2 = F.relu(F.linear(h1, p["W2"].T, p["b2"]))
    return F.cross_entropy((h1 + h2) @ p["W3"] + p["b3"], Yb)


def highway_forward(p: Params, Xb: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
    h = torch.tanh(p["C"][Xb].flatten(1) @ p["W1"] + p["b1"])
    gate = torch.sigmoid(h @ p["Wt"] + p["bt"])
    y = torch.lerp(h, torch.tanh(h @ p["Wh"] + p["bh"]), gate)  # gate * u + (1 - gate) * h
    return F.nll_loss(F.log_softmax(y @ p["W2"] + p["b2"], dim=1), Yb)


def tied_attention_forward(p: Params, Xb: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
    x = p["C"][Xb]  # (B, T, C)
    T = x.shape[1]
    q = x @ p["Wq"]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = torch.einsum("btd,bsd->bts", q, q) / q.shape[-1] ** 0.5
    att = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    pooled = torch.amax(att @ x, dim=1)
    return F.cross_entropy(torch.tanh(pooled @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"], Yb)


@dataclass(frozen=True)
class Blind:
    """One file: its plain PyTorch forward, its parameters' draws in order, the sizes it writes."""

    forward: Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]
    draws: tuple[tuple[str, tuple[str, ...], float, float], ...]  # name, axes, scale, shift: randn * scale + shift
    sizes: dict[str, int]  # the file's numbers: the page opens there


BLIND = {
    "blind_residual_relu": Blind(
        residual_forward,
        (
            ("C", ("vocab", "embd"), 1.0, 0.0),
            ("W1", ("in", "hidden"), 0.3, 0.0),
            ("b1", ("hidden",), 0.01, 0.0),
            ("W2", ("hidden", "hidden"), 0.1, 0.0),
            ("b2", ("hidden",), 0.01, 0.0),
            ("W3", ("hidden", "vocab"), 0.1, 0.0),
            ("b3", ("vocab",), 0.0, 0.0),
        ),
        {"seed": 42, "n_embd": 8, "n_hidden": 48, "block_size": 3, "batch_size": 32},
    ),
    "blind_highway_gate": Blind(
        highway_forward,
        (
            ("C", ("vocab", "embd"), 1.0, 0.0),
            ("W1", ("in", "hidden"), 0.2, 0.0),
            ("b1", ("hidden",), 0.01, 0.0),
            ("Wt", ("hidden", "hidden"), 0.1, 0.0),
            ("bt", ("hidden",), 0.1, -1.0),
            ("Wh", ("hidden", "hidden"), 0.1, 0.0),
            ("bh", ("hidden",), 0.01, 0.0),
            ("W2", ("hidden", "vocab"), 0.1, 0.0),
            ("b2", ("vocab",), 0.01, 0.0),
        ),
        {"seed": 2147483647, "n_embd": 10, "n_hidden": 32},
    ),
    "blind_tied_attention": Blind(
        tied_attention_forward,
        (
            ("C", ("vocab", "embd"), 1.0, 0.0),
            ("Wq", ("embd", "hidden"), 12**-0.5, 0.0),
            ("W1", ("embd", "hidden"), 12**-0.5, 0.0),
            ("b1", ("hidden",), 0.01, 0.0),
            ("W2", ("hidden", "vocab"), 0.1, 0.0),
            ("b2", ("vocab",), 0.01, 0.0),
        ),
        {"seed": 7, "n_embd": 12, "n_hidden": 24, "block_size": 5, "batch_size": 16},
    ),
}
# sizes other than the file's (n_embd kept): the rules are written for any shapes, not the file's alone
OTHER_SIZES = {"seed": 3, "n_hidden": 20, "block_size": 4, "batch_size": 7}


@pytest.fixture(scope="module")
def served():
    """The three files' nets registered beside the packs for this module's tests, then taken out again."""
    nets = {name: add_net_file(str(FILES / f"{name}.py"), (FILES / f"{name}.py").read_text()) for name in BLIND}
    yield nets
    for name in nets:
        NETS.pop(name, None)


def file_config(name: str, **changes: object) -> ModelConfig:
    """The config the page opens the file at (its own numbers, the lecture's for the rest), changed."""
    return ModelConfig(**{"net": name, **BLIND[name].sizes, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(BLIND))
def test_the_file_is_read_as_written_and_its_numbers_are_the_defaults(served, name):
    net = served[name]
    doc = (FILES / f"{name}.py").read_text().split('"""')[1]
    assert net.title == doc.splitlines()[0]
    assert net.about == " ".join(doc.split("\n", 1)[1].split())  # the rest of the docstring, not the title again
    assert dict(net.defaults) == BLIND[name].sizes
    assert [node.name for node in net.nodes if node.kind == "param"] == [d[0] for d in BLIND[name].draws]


@pytest.mark.parametrize("name", list(BLIND))
def test_the_parameters_are_drawn_in_the_files_order_from_its_generator(served, lecture_dataset, name):
    config = file_config(name)
    params, _ = init_params(config, lecture_dataset.vocab_size)
    block = config.block_size
    axes = {"vocab": 27, "embd": config.n_embd, "hidden": config.n_hidden, "in": config.n_embd * block}
    g = torch.Generator().manual_seed(config.seed)
    for pname, dims, scale, shift in BLIND[name].draws:
        expected = torch.randn(tuple(axes[d] for d in dims), generator=g) * scale + shift
        torch.testing.assert_close(params[pname], expected, rtol=1e-6, atol=1e-7, msg=pname)


@pytest.mark.parametrize("sizes", ["the files", "others"])
@pytest.mark.parametrize("name", list(BLIND))
def test_every_gradient_agrees_with_a_plain_pytorch_forward_in_float64(served, lecture_dataset, name, sizes):
    changes = {} if sizes == "the files" else dict(OTHER_SIZES)
    config = file_config(name, dtype="float64", **changes)
    params, g = init_params(config, lecture_dataset.vocab_size)
    Xb, Yb = sample_batch(config, lecture_dataset, g)
    leaves = {k: t.clone().requires_grad_(True) for k, t in params.items()}
    loss = BLIND[name].forward(leaves, Xb, Yb)
    ref = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))

    bp = run_backward(config, lecture_dataset, "atomic")
    torch.testing.assert_close(torch.as_tensor(bp.loss, dtype=torch.float64), loss.detach(), rtol=1e-12, atol=0)
    for pname, grad in ref.items():
        torch.testing.assert_close(bp.grad_at(pname, bp.total_steps), grad, rtol=F64_RTOL, atol=F64_ATOL, msg=pname)
    inner = [n for n in bp.completed_at if n != "loss" and n not in ref]
    assert len(inner) == bp.total_steps - 1  # one tensor a forward line, the loss's own step aside
    for node in inner:  # every intermediate gradient against loss.backward() through the declared forward
        torch.testing.assert_close(
            bp.grad_at(node, bp.total_steps), bp.ref_grads[node], rtol=F64_RTOL, atol=F64_ATOL, msg=node
        )


@pytest.fixture(scope="module")
def url():
    """The real server with the three files (--net-file once for each): the API's net field is fixed at start-up, so
    not in this process."""
    files = (arg for name in BLIND for arg in ("--net-file", str(FILES / f"{name}.py")))
    with live_server(*files, "--check-workers", "0") as url:
        yield url


@pytest.mark.parametrize("name", list(BLIND))
def test_the_server_started_with_the_file_lists_it_and_every_gradient_at_the_last_step_agrees(served, name, url):
    listed = {net["name"]: net for net in get(f"{url}/api/nets")["nets"]}
    assert listed[name]["defaults"] == BLIND[name].sizes and listed[name]["modes"] == ["atomic"]
    steps = get(f"{url}/api/meta?net={name}")["modes"][0]["steps"]
    assert steps == len(served[name].ops)  # one backward step a forward line
    state = get(f"{url}/api/state?net={name}&step={steps}&dtype=float64")
    assert state["step"] == state["total_steps"] == steps
    checked = {n: node["cmp"] for n, node in state["nodes"].items() if node["cmp"] is not None}
    assert set(checked) == {node.name for node in served[name].nodes} - {"Xb", "Yb"}
    assert all(cmp["approx"] and cmp["maxdiff"] < 1e-12 for cmp in checked.values()), checked


@pytest.mark.parametrize("name", list(BLIND))
def test_each_file_trains_with_its_generated_rules_and_the_loss_falls(served, lecture_dataset, name):
    from server.training.config import TrainConfig
    from server.training.loop import Training

    events: list[tuple[str, dict]] = []
    config = TrainConfig(net=name, max_steps=300, check_every=100, **BLIND[name].sizes)  # type: ignore[arg-type]
    training = Training(config, lecture_dataset, lambda kind, data: events.append((kind, data)))
    assert training.run() == "finished"
    checks = [data for kind, data in events if kind == "check"]
    assert {0, 100, 200} <= {check["step"] for check in checks}  # every K steps
    assert not any(check["wrong"] for check in checks)  # the generated rules agree with autograd as it trains
    losses = training.losses
    assert float(losses[-50:].mean()) < float(losses[:50].mean()) - 0.2  # seeded: 0.35 to 0.5 measured
    assert float(losses[-50:].mean()) < 2.8  # well below ln 27 ≈ 3.3, the uniform guess


ZERO_BIAS = """import torch
g = torch.Generator().manual_seed(1)
C = torch.randn((vocab_size, n_embd), generator=g)
W = torch.randn((n_embd * block_size, vocab_size), generator=g) * 0.1
b = torch.zeros(vocab_size)
parameters = [C, W, b]
emb = C[Xb]
x = emb.view(emb.shape[0], -1)
logits = x @ W + b
loss = F.cross_entropy(logits, Yb)
"""


def test_a_bias_made_with_torch_zeros_is_refused_on_its_line_with_the_draw_to_write(lecture_dataset):
    """The notebook's habit (b = torch.zeros(...)) once got "list the parameters before the forward pass"."""
    with pytest.raises(NetFileError) as refused:
        netfile.build(ZERO_BIAS, "zero_bias")
    assert refused.value.line == 5
    assert "b = torch.randn(vocab_size) * 0.0" in str(refused.value) and "parameters = [...]" not in str(refused.value)
    # the line it suggests is read, starts at 0 and leaves the file's generator to the other parameters
    suggested = ZERO_BIAS.replace("torch.zeros(vocab_size)", "torch.randn(vocab_size) * 0.0")
    fixed = add_net_file("/srv/zero_bias.py", suggested)
    try:
        config = ModelConfig(net=fixed.name, seed=1, n_embd=4, block_size=3)  # the file's seed
        params, _ = init_params(config, lecture_dataset.vocab_size)
        g = torch.Generator().manual_seed(1)
        assert torch.equal(params["C"], torch.randn((27, 4), generator=g))
        assert torch.equal(params["W"], torch.randn((12, 27), generator=g) * 0.1)
        assert torch.equal(params["b"], torch.zeros(27))
    finally:
        NETS.pop(fixed.name, None)


@pytest.mark.parametrize(
    "loss_lines",
    ["loss = -logprobs[range(n), Yb].sum() / n\n", "picked = logprobs[range(n), Yb]\nloss = -picked.mean()\n"],
    ids=["sum_over_n", "picked_first"],
)
def test_a_loss_written_another_way_is_refused_with_the_loss_lines_form(loss_lines):
    """Once "an op of its own: give it a name" or "no rule": advice that led to the next refusal, not to a loss."""
    source = ZERO_BIAS.replace("torch.zeros(vocab_size)", "torch.randn(vocab_size) * 0.0").replace(
        "loss = F.cross_entropy(logits, Yb)\n", "logprobs = F.log_softmax(logits, dim=1)\n" + loss_lines
    )
    with pytest.raises(NetFileError) as refused:
        netfile.build(source, "other_loss")
    assert refused.value.line == 11
    assert str(refused.value) == (
        "line 11: logprobs[range(n), Yb] is read in the loss line only, as the lecture writes it: "
        "loss = -logprobs[range(n), Yb].mean(), or loss = F.cross_entropy(logits, Yb)"
    )


def test_a_bug_asked_of_a_network_file_says_it_has_no_bug_lab(served, lecture_dataset):
    """Its rules all come from the library: the refusal once ended on an empty list ("the bugs are ")."""
    from server.net.declare import Undeclared

    with pytest.raises(Undeclared, match=r"^no bug 'bessel_n': blind_highway_gate has no bug lab, leave bug empty$"):
        run_backward(file_config("blind_highway_gate", bug="bessel_n"), lecture_dataset, "atomic")
