"""Network files (server/net/netfile.py): the lecture's forward cell read into a Net whose generated rules agree with
the lecture's hand-written ones, a network no pack has served and trained, and the lines the server refuses."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from server.core.config import ModelConfig
from server.core.engine import init_params, run_backward, sample_batch
from server.net import netfile
from server.net.netfile import NetFileError
from server.net.packs import NET_FILE_ENV, NETS, add_net_file
from server.runs.store import ACTIVE
from server.sandbox_pool import SandboxPool

from .conftest import LECTURE_DATA
from .live_server import live_server
from .test_cli import refused_at_start  # noqa: F401 -- the fixture: main() in this process, refusing to serve

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "tests" / "netfiles"
LECTURE_FILE = FILES / "lecture_forward.py"
GATED_FILE = FILES / "gated_mlp.py"
MIX_FILE = FILES / "attention_mix.py"  # batched @, transpose, masked_fill, softmax, cat, mean, var, sqrt, /
HEAD_FILE = FILES / "causal_head.py"  # a causal self-attention head: the tril buffer, its -inf mask, a mean over time
ALL_FILES = (LECTURE_FILE, GATED_FILE, MIX_FILE, HEAD_FILE)
# a max over dim 1 of a 3-D tensor: for the check only (positions tie where contexts pad with '.': no derivative there)
MAX_FILE = FILES / "max_pool.py"
F32_RTOL, F32_ATOL = 1e-5, 1e-7  # float32: the same rules, rounded in another order at most
F64_RTOL, F64_ATOL = 1e-10, 1e-12  # float64: the declared forward against a plain PyTorch one


def get(url: str) -> dict:
    with urllib.request.urlopen(url) as response:
        return json.load(response)


def post(url: str, body: dict) -> tuple[int, dict]:
    """POST a JSON body as the page does; (status, JSON answer), a 4xx included."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Origin": url.split("/api")[0]},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def wait_for(what: str, ready: Callable[[], object], timeout_s: float = 240.0) -> object:
    """Poll `ready` until it returns something true; fail with `what` after a generous deadline."""
    deadline = time.monotonic() + timeout_s
    while not (value := ready()):
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.2)
    return value


@pytest.fixture(scope="module")
def served():
    """The two files' nets registered beside the packs for this module's tests, then taken out again."""
    nets = {path.stem: add_net_file(str(path), path.read_text()) for path in ALL_FILES}
    yield nets
    for name in nets:
        NETS.pop(name, None)


def test_the_lecture_files_generated_rules_agree_with_the_lectures_hand_written_ones(served, lecture_dataset):
    """Every gradient of Exercise 1, from the file's generated rules and from the pack's own, in float32."""
    generated = run_backward(ModelConfig(net="lecture_forward"), lecture_dataset, "atomic")
    lecture = run_backward(ModelConfig(net="makemore4"), lecture_dataset, "atomic")
    assert float(generated.loss) == float(lecture.loss)  # the same parameters, batch and forward
    names = set(lecture.completed_at) - {"loss"}
    assert names == set(generated.completed_at) - {"loss"}  # the same tensors: one node a line
    for name in names:
        ours = generated.grad_at(name, generated.total_steps)
        theirs = lecture.grad_at(name, lecture.total_steps)
        assert ours is not None and theirs is not None
        torch.testing.assert_close(ours, theirs, rtol=F32_RTOL, atol=F32_ATOL, msg=name)


def test_the_lecture_files_lines_read_as_the_notebooks(served):
    """The learner sees the notebook's own lines for the rules the library writes as the lecture does."""
    codes = {(op.name, rule.target): rule.code for op in served["lecture_forward"].ops for rule in op.rules}
    assert codes[("logits", "h")] == "dh = dlogits @ W2.T"
    assert codes[("logits", "W2")] == "dW2 = h.T @ dlogits"
    assert codes[("bndiff2", "bndiff")] == "dbndiff += (2*bndiff) * dbndiff2"  # bndiff feeds two lines: +=
    assert codes[("bnvar_inv", "bnvar")] == "dbnvar = (-0.5*(bnvar + 1e-5)**-1.5) * dbnvar_inv"
    assert codes[("counts_sum", "counts")] == "dcounts += torch.ones_like(counts) * dcounts_sum"
    assert codes[("h", "hpreact")] == "dhpreact = (1.0 - h**2) * dh"


def gated_forward(p: dict[str, torch.Tensor], Xb: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
    """The gated MLP in plain PyTorch, written apart from the file: the reference for its loss and gradients."""
    x = p["C"][Xb].flatten(1)
    h1 = F.relu(F.linear(x, p["W1"].T, p["b1"])) * torch.sigmoid(x @ p["Wg"] + p["bg"])
    h = h1 + torch.tanh(h1 @ p["W2"])
    return F.cross_entropy(h @ p["W3"], Yb)


def test_a_network_no_pack_has_gets_every_gradient_right_through_the_api(served, lecture_dataset):
    config = ModelConfig(net="gated_mlp", dtype="float64")
    params, g = init_params(config, lecture_dataset.vocab_size)
    Xb, Yb = sample_batch(config, lecture_dataset, g)
    leaves = {k: t.clone().requires_grad_(True) for k, t in params.items()}
    loss = gated_forward(leaves, Xb, Yb)
    ref = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))

    bp = run_backward(config, lecture_dataset, "atomic")
    torch.testing.assert_close(
        torch.as_tensor(bp.loss, dtype=torch.float64), loss.detach(), rtol=F64_RTOL, atol=F64_ATOL
    )
    for name, grad in ref.items():  # the manual backward's parameter gradients against plain PyTorch's autograd
        torch.testing.assert_close(bp.grad_at(name, bp.total_steps), grad, rtol=F64_RTOL, atol=F64_ATOL, msg=name)


def test_a_network_file_trains_with_the_generic_trainer(served, lecture_dataset):
    from server.training.config import TrainConfig
    from server.training.generic import DeclaredBackward
    from server.training.loop import Training

    events: list[tuple[str, dict]] = []
    config = TrainConfig(net="gated_mlp", max_steps=400, lr_decay_step=300, check_every=200)
    training = Training(config, lecture_dataset, lambda kind, data: events.append((kind, data)))
    assert isinstance(training.manual, DeclaredBackward)
    assert training.run() == "finished"
    checks = [data for kind, data in events if kind == "check"]
    assert checks and not any(check["wrong"] for check in checks)  # the manual step agrees with autograd's
    losses = training.losses
    assert float(losses[-50:].mean()) < float(losses[:50].mean()) - 0.3  # from ~3.3 (27 characters) down


LECTURE_HEAD = """import torch
g = torch.Generator().manual_seed(1)
C = torch.randn((vocab_size, n_embd), generator=g)
W = torch.randn((n_embd * block_size, vocab_size), generator=g) * 0.1
parameters = [C, W]
emb = C[Xb]
x = emb.view(emb.shape[0], -1)
"""


@pytest.mark.parametrize(
    ("tail", "line", "says"),
    [
        ("logits = x @ W\nz = logits.abs()\nloss = F.cross_entropy(z, Yb)\n", 9, "no rule here"),
        ("logits = torch.tanh(x @ W)\nloss = F.cross_entropy(logits, Yb)\n", 8, "one op a line"),
        ("logits = x @ W\n", 8, "must end in loss"),
        ("logits = x @ W\nloss = F.cross_entropy(logits Yb)\n", 9, "not Python"),
        ("logits = x @ W\nloss = F.cross_entropy(logits, Yb)\nloss2 = logits.sum()\n", 10, "must end in loss"),
        ("logits = x @ W\nlogits = logits * 2\nloss = F.cross_entropy(logits, Yb)\n", 9, "assigned twice"),
        ("logits = x @ W\nloss = logits.sum()\n", 9, "the loss is loss = F.cross_entropy"),
        ("logits = x @ Q\nloss = F.cross_entropy(logits, Yb)\n", 8, "not defined above"),
        ("import numpy\nlogits = x @ W\nloss = F.cross_entropy(logits, Yb)\n", 8, "only `import torch`"),
        ("logits = x @ W\nlogits.retain_grad()\nwith torch.no_grad():\n    pass\n", 10, "not a line the server reads"),
        ("logits = x @ W\nlp = logits.log()\nloss = F.cross_entropy(lp, Yb)\n", 9, "lp is not a number at start-up"),
        ("t = emb.T\nlogits = x @ W\nloss = F.cross_entropy(logits, Yb)\n", 8, "write x.transpose(-2, -1)"),
    ],
    ids=[
        "undifferentiable",
        "two_ops",
        "no_loss",
        "syntax",
        "after_loss",
        "reassigned",
        "loss_not_cross_entropy",
        "undefined",
        "import",
        "with_block",
        "nan",
        "T_of_3d",
    ],
)
def test_a_line_the_server_cannot_use_is_refused_with_its_number_and_what_to_do(tail, line, says):
    with pytest.raises(NetFileError) as refused:
        netfile.build(LECTURE_HEAD + tail, "bad")
    assert refused.value.line == line
    assert str(refused.value).startswith(f"line {line}: ") and says in str(refused.value)


def test_numbers_in_place_of_sizes_are_refused_where_the_shapes_stop_fitting():
    source = LECTURE_HEAD.replace("x = emb.view(emb.shape[0], -1)", "x = emb.view(32, 30)")
    source += "logits = x @ W\nloss = F.cross_entropy(logits, Yb)\n"
    with pytest.raises(NetFileError, match=r"^line 7: the shapes do not fit .*by name"):
        netfile.build(source, "bad")


def test_the_server_refuses_a_bad_network_file_in_one_line_with_exit_code_2(tmp_path, refused_at_start):  # noqa: F811
    path = tmp_path / "mynet.py"
    path.write_text(LECTURE_HEAD + "logits = torch.tanh(x @ W)\nloss = F.cross_entropy(logits, Yb)\n")
    code, err = refused_at_start("--net-file", str(path))
    assert code == 2
    assert err.strip().count("\n") == 0  # one line
    assert f"cannot use the network file {path}: line 8: " in err and "one op a line" in err
    assert "mynet" not in NETS


def test_the_server_started_with_a_network_file_serves_it_and_every_gradient_agrees_with_autograd(url):
    """The real server's processes read the file as the command line named it: /api/nets lists it, the API steps it."""
    assert "mynet" in [net["name"] for net in get(f"{url}/api/nets")["nets"]]
    graph = get(f"{url}/api/graph?net=mynet&mode=atomic")
    assert {node["name"] for node in graph["nodes"]} >= {"C", "W1", "gate", "h", "logprobs", "loss"}
    state = get(f"{url}/api/state?net=mynet&mode=atomic")
    assert state["step"] == state["total_steps"] == 13  # one backward step a forward line
    checked = {name: node["cmp"] for name, node in state["nodes"].items() if node["cmp"] is not None}
    assert {"C", "W1", "b1", "Wg", "bg", "W2", "W3"} <= set(checked)
    assert all(cmp["approx"] for cmp in checked.values()), checked
    why = get(f"{url}/api/why/gpre?net=mynet&mode=atomic&step=13")  # the Why drawer: the sigmoid's rule
    (rule,) = why["rules"]
    assert rule["op"] == "gate" and "dgpre = gate * (1 - gate) * dgate" in json.dumps(rule)
    # a training run: a training process of its own, which reads the file's text from the server
    body = json.dumps({"net": "mynet", "max_steps": 400, "lr_decay_step": 300, "check_every": 100}).encode()
    started = urllib.request.Request(
        f"{url}/api/runs", data=body, headers={"Content-Type": "application/json", "Origin": url}
    )
    with urllib.request.urlopen(started) as response:
        run_id = json.load(response)["runs"][0]["id"]
    run = wait_for("the run to end", lambda: (r := get(f"{url}/api/runs/{run_id}"))["status"] not in ACTIVE and r)
    assert run["status"] == "finished" and "agreed with autograd" in run["reason"], run["reason"]
    assert run["result"]["val_loss"] < 2.8  # from ln 27 ≈ 3.3, the uniform guess


def test_the_docs_example_loads_and_every_gradient_agrees_with_autograd(lecture_dataset):
    """docs/your-own-network.md's example file, as a teacher would copy it."""
    page = (ROOT / "docs" / "your-own-network.md").read_text()
    source = page.split("```python\n", 1)[1].split("```", 1)[0]
    net = add_net_file("/srv/relu_mlp.py", source)
    try:
        assert net.name == "relu_mlp" and net.title == "A ReLU MLP with log-softmax"
        bp = run_backward(ModelConfig(net="relu_mlp", dtype="float64"), lecture_dataset, "atomic")
        names = [name for name in bp.completed_at if name != "loss"]
        assert {"C", "W1", "b1", "W2", "b2", "logits", "h"} <= set(names)
        for name in names:  # the engine's reference: loss.backward() through the declared forward
            torch.testing.assert_close(
                bp.grad_at(name, bp.total_steps), bp.ref_grads[name], rtol=F64_RTOL, atol=F64_ATOL, msg=name
            )
    finally:
        NETS.pop("relu_mlp", None)


def test_a_worker_started_by_hand_reads_the_file_its_environment_names():
    """A PostgreSQL training worker is started apart from the server: the variable may name the file's path."""
    code = "from server.net.packs import NETS; print(' '.join(NETS))"
    env = {key: value for key, value in os.environ.items() if key != NET_FILE_ENV}
    packs = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    env[NET_FILE_ENV] = str(GATED_FILE)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    assert "gated_mlp" not in packs.stdout.split()
    assert out.stdout.split() == [*packs.stdout.split(), "gated_mlp"]  # the packs, then the file's network
    env[NET_FILE_ENV] = f"{GATED_FILE}{os.pathsep}{HEAD_FILE}"  # several files: separated as in PATH
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == [*packs.stdout.split(), "gated_mlp", "causal_head"]


def test_two_files_of_one_name_are_refused_at_start(tmp_path, refused_at_start):  # noqa: F811
    (tmp_path / "other").mkdir()
    first, second = tmp_path / "mynet.py", tmp_path / "other" / "mynet.py"
    first.write_text(GATED_FILE.read_text())
    second.write_text(GATED_FILE.read_text())
    code, err = refused_at_start("--net-file", str(first), "--net-file", str(second))
    assert code == 2
    assert f"cannot use the network file {second}: " in err and "already served: rename the file" in err
    NETS.pop("mynet", None)  # main() ran in this process: the first file's network was registered here


FD_REL = 1e-5  # float64 five-point differences against a right gradient


@pytest.mark.parametrize("name", ["lecture_forward", "gated_mlp", "attention_mix", "causal_head"])
def test_every_gradient_agrees_with_autograd_through_the_declared_forward(served, lecture_dataset, name):
    bp = run_backward(ModelConfig(net=name, dtype="float64"), lecture_dataset, "atomic")
    names = [name for name in bp.completed_at if name != "loss"]
    assert len(names) == len(served[name].nodes) - 3  # every tensor but Xb, Yb and the loss
    for node in names:  # the engine's reference: loss.backward() through the forward the file declares
        torch.testing.assert_close(
            bp.grad_at(node, bp.total_steps), bp.ref_grads[node], rtol=F64_RTOL, atol=F64_ATOL, msg=node
        )


@pytest.mark.parametrize("name", ["lecture_forward", "gated_mlp", "attention_mix", "causal_head"])
def test_finite_differences_agree_with_every_generated_gradient(served, lecture_dataset, name):
    """The finite differences re-run only a perturbed row where the file's ops keep rows apart (Op.rows)."""
    bp = run_backward(ModelConfig(net=name, dtype="float64"), lecture_dataset, "atomic")
    # a perturbed embedding moves every unit of hpre a little, and the few near 0 cross relu's kink within the
    # stencil: differences there measure the kink, not the gradient
    kinked = {"C", "emb", "x"} if name == "gated_mlp" else set()
    if name == "attention_mix":  # a row of qk whose two largest entries lie closer than the stencil: max's kink
        kinked = {"qk"}
    measured = [node.name for node in served[name].nodes if node.kind != "input" and node.name not in kinked]
    errors = {n: bp.numeric(n)["max_rel_err"] for n in measured}  # type: ignore[index]
    assert max(errors.values()) < FD_REL, errors


@pytest.mark.parametrize("name", ["lecture_forward", "gated_mlp", "attention_mix", "causal_head"])
def test_the_why_drawer_explains_every_gradient_and_writes_each_rule_with_its_numbers(served, lecture_dataset, name):
    from server.explain.why import explain, instance

    bp = run_backward(ModelConfig(net=name, dtype="float64"), lecture_dataset, "atomic")
    for node in [n for n in bp.completed_at if n != "loss"]:
        why = explain(bp, lecture_dataset, node, bp.total_steps)
        writers = [op.name for op in bp.schedule if any(rule.target == node for rule in op.rules)]
        assert [rule["op"] for rule in why["rules"]] == writers, node
        written = instance(bp, node, bp.total_steps, None)
        # each rule written out at the first entry: its contributions add up to the gradient's entry
        assert len(written["parts"]) == len(writers)
        assert sum(part["value"] for part in written["parts"]) == pytest.approx(written["total"], rel=1e-9, abs=1e-12)


def test_the_export_of_every_generated_step_runs_and_its_cmp_lines_agree(served, tmp_path):
    """The take-home file of a network file's steps, each the generated line, run as a learner runs it."""
    from server.learner.export import export

    net = served["lecture_forward"]
    steps = {k: "\n".join(r.code for r in op.rules) for k, op in enumerate(net.backward_schedule("atomic"), 1)}
    _, content = export("atomic", ModelConfig(net=net.name), "py", steps=steps)
    script = tmp_path / "backprop.py"
    script.write_bytes(content)
    out = subprocess.run([sys.executable, str(script), str(LECTURE_DATA)], capture_output=True, text=True, check=True)
    cmp_lines = [line for line in out.stdout.splitlines() if "| approximate:" in line]
    assert len(cmp_lines) == len(net.cmp_order) == 26
    assert all("approximate: True" in line for line in cmp_lines), out.stdout


# --- the page's sizes: the file's own ------------------------------------------------------------------------------

# each file's numbers as its teacher wrote them (its sizes and its generator's seed), read off the files here
PINNED = """import torch
n_embd = 6
block_size = 4
fan_in = n_embd * block_size  # a number computed once from two sizes: they cannot change under it
g = torch.Generator().manual_seed(3)
C = torch.randn((vocab_size, n_embd), generator=g)
W = torch.randn((n_embd * block_size, vocab_size), generator=g) / fan_in**0.5
parameters = [C, W]
emb = C[Xb]
x = emb.view(emb.shape[0], -1)
logits = x @ W
loss = F.cross_entropy(logits, Yb)
"""


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """One real server started with every test file (--net-file given once for each), one sandbox process: a copy
    of the gated MLP as mynet.py (a file's name is its network's), and the pinned-size file."""
    tmp = tmp_path_factory.mktemp("netfiles")
    (tmp / "mynet.py").write_text(GATED_FILE.read_text())
    (tmp / "pinned.py").write_text(PINNED)
    files = (*ALL_FILES, MAX_FILE, tmp / "mynet.py", tmp / "pinned.py")
    with live_server(*(arg for path in files for arg in ("--net-file", str(path))), "--check-workers", "1") as url:
        yield url


FILE_SIZES = {
    LECTURE_FILE: {"n_embd": 10, "n_hidden": 64, "batch_size": 32, "seed": 2147483647},
    GATED_FILE: {"n_embd": 8, "n_hidden": 48, "seed": 42},
    MIX_FILE: {"n_embd": 10, "seed": 1337},
    HEAD_FILE: {"n_embd": 16, "n_hidden": 16, "block_size": 8, "batch_size": 32, "seed": 1337},
    MAX_FILE: {"n_embd": 12, "n_hidden": 40, "block_size": 5, "seed": 7},
}
# hand-written lines a learner may write instead of the generated one: (file, the op's output) -> the step's code
LEARNER_LINES = {
    (GATED_FILE, "hrelu"): "dhpre = (hpre > 0).float() * dhrelu",
    (LECTURE_FILE, "logit_maxes"): (
        "dlogits += F.one_hot(logits.max(1).indices, num_classes=logits.shape[1]) * dlogit_maxes"
    ),
    (HEAD_FILE, "wei"): "dq = dwei @ k\ndkT = q.transpose(1, 2) @ dwei",
    (HEAD_FILE, "wei_masked"): "dwei_scaled = dwei_masked.masked_fill(tril == 0, 0)",
    (HEAD_FILE, "pooled"): "dout = dpooled.unsqueeze(1).expand_as(out) / out.shape[1]",
    (MIX_FILE, "qk"): "dq = dqk[:, :, :n_embd]\ndk = dqk[:, :, n_embd:]",
    (
        MAX_FILE,
        "pooled",
    ): "dh = F.one_hot(h.max(1).indices, num_classes=h.shape[1]).transpose(1, 2) * dpooled.view(n, 1, -1)",
}


@pytest.mark.parametrize("path", (*ALL_FILES, MAX_FILE), ids=lambda path: path.stem)
def test_the_page_opens_at_the_files_sizes_and_the_check_accepts_every_steps_right_line(path, served, url):
    """Through the real server: /api/nets and /api/meta give the file's numbers as the defaults, a pass without
    sizes runs at them, and the right lines of every step, posted to /api/check in the order written, are correct."""
    name, sizes = path.stem, FILE_SIZES[path]
    net = served[name] if name in served else netfile.load(path)
    listed = {net["name"]: net for net in get(f"{url}/api/nets")["nets"]}
    assert listed[name]["defaults"] == sizes
    meta = get(f"{url}/api/meta?net={name}")
    assert {field: meta["config"][field]["default"] for field in sizes} == sizes
    assert {field: meta["train"][field]["default"] for field in sizes} == sizes  # a run trains at them too
    state = get(f"{url}/api/state?net={name}&mode=atomic")
    embd = sizes["n_embd"]
    assert state["nodes"]["C"]["cmp"]["expected_shape"] == [
        27,
        embd,
    ]  # the file's embedding, not the lecture's 10 by default
    emb = next(op.name for op in net.ops if op.inputs == ("C", "Xb"))
    assert state["nodes"][emb]["cmp"]["expected_shape"] == [
        sizes.get("batch_size", 32),
        sizes.get("block_size", 3),
        embd,
    ]
    steps = net.backward_schedule("atomic")
    assert state["total_steps"] == len(steps)
    for step, op in enumerate(steps, start=1):
        lines = ["\n".join(rule.code for rule in op.rules)]
        if (path, op.name) in LEARNER_LINES:
            lines.append(LEARNER_LINES[path, op.name])
        for code in lines:
            # in float64: float32's rounding of the earlier steps can put a right line's near-0 entry past the
            # lecture's allclose (attention_mix's dWv, on the server's default data); float64 leaves only the line
            body = {"net": name, "mode": "atomic", "step": step, "code": code, "dtype": "float64"}
            status, answer = post(f"{url}/api/check", body)
            assert status == 200, (op.name, code, answer)
            assert answer["op"] == op.name and answer["correct"], (op.name, code, answer["results"])
    if path == MAX_FILE:  # the generated line walks one_hot's classes back to dim 1, in the sandbox's vocabulary
        assert ".transpose(1, 2) * dpooled" in net.ops_by_name["pooled"].rules[0].code
    used = {key for key in LEARNER_LINES if key[0] == path}
    assert {(path, op.name) for op in net.ops} >= used  # every hand-written line was posted


def test_a_size_another_number_was_computed_from_is_pinned_and_a_request_for_another_is_a_422(url):
    meta = get(f"{url}/api/meta?net=pinned")
    for field, size in (("n_embd", 6), ("block_size", 4)):
        assert (meta["config"][field]["minimum"], meta["config"][field]["maximum"]) == (size, size), field
    assert meta["config"]["n_hidden"]["maximum"] > meta["config"]["n_hidden"]["minimum"]  # no file's n_hidden
    assert get(f"{url}/api/state?net=pinned&mode=atomic")["nodes"]["x"]["cmp"]["expected_shape"] == [32, 24]
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(f"{url}/api/state?net=pinned&mode=atomic&n_embd=7")
    assert refused.value.code == 422
    assert "n_embd must be in [6, 6] for the pinned network" in refused.value.read().decode()


def test_a_size_the_explorer_cannot_take_is_refused_at_its_line():
    from server.core.config import BOUNDS

    low, high = BOUNDS["n_hidden"]
    source = LECTURE_HEAD.replace("import torch\n", f"import torch\nn_hidden = {high + 1}\n")
    source += "logits = x @ W\nloss = F.cross_entropy(logits, Yb)\n"
    with pytest.raises(NetFileError) as refused:
        netfile.build(source, "big")
    assert refused.value.line == 2
    assert f"n_hidden is {high + 1}: the explorer's n_hidden is between {low} and {high}" in str(refused.value)


# --- a buffer: the causal head ------------------------------------------------------------------------------------


def head_forward(p: dict[str, torch.Tensor], Xb: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
    """The head in plain PyTorch, as the GPT lecture's Head module computes it: the reference, written apart."""
    x = p["C"][Xb]  # (B, T, C)
    T = x.shape[1]
    k, q, v = x @ p["Wk"], x @ p["Wq"], x @ p["Wv"]
    wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    out = F.softmax(wei.masked_fill(future, float("-inf")), dim=-1) @ v
    return F.cross_entropy(out.mean(1) @ p["W2"] + p["b2"], Yb)


HEAD_CONFIG = {"n_embd": 16, "n_hidden": 16, "block_size": 8, "seed": 1337}  # the file's own


def test_the_head_files_buffer_masks_and_every_parameter_gradient_agrees_with_plain_pytorch(served, lecture_dataset):
    net = served["causal_head"]
    assert "tril" not in net.nodes_by_name and "tril" not in net.param_names  # a buffer: no node, no gradient
    (masking,) = [op for op in net.ops if op.saves]
    assert masking.name == "wei_masked" and masking.saves == ("tril",)  # saved for the learner's masked_fill
    config = ModelConfig(net="causal_head", dtype="float64", **HEAD_CONFIG)
    params, g = init_params(config, lecture_dataset.vocab_size)
    Xb, Yb = sample_batch(config, lecture_dataset, g)
    leaves = {k: t.clone().requires_grad_(True) for k, t in params.items()}
    loss = head_forward(leaves, Xb, Yb)
    ref = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))

    bp = run_backward(config, lecture_dataset, "atomic")
    torch.testing.assert_close(
        torch.as_tensor(bp.loss, dtype=torch.float64), loss.detach(), rtol=F64_RTOL, atol=F64_ATOL
    )
    tril = bp.values["tril"]
    assert torch.equal(tril, torch.tril(torch.ones(8, 8, dtype=torch.float64)))
    att = bp.values["att"]
    assert float(att.triu(1).abs().max()) == 0.0  # no position attends to a later one
    for name, grad in ref.items():
        torch.testing.assert_close(bp.grad_at(name, bp.total_steps), grad, rtol=F64_RTOL, atol=F64_ATOL, msg=name)


def test_the_head_file_trains_with_the_generic_trainer(served, lecture_dataset):
    from server.training.config import TrainConfig
    from server.training.loop import Training

    events: list[tuple[str, dict]] = []
    config = TrainConfig(net="causal_head", max_steps=300, lr_decay_step=250, check_every=100, **HEAD_CONFIG)
    training = Training(config, lecture_dataset, lambda kind, data: events.append((kind, data)))
    assert training.run() == "finished"
    checks = [data for kind, data in events if kind == "check"]
    assert len(checks) >= 3 and not any(check["wrong"] for check in checks)  # the manual step agrees with autograd
    losses = training.losses
    assert float(losses[-50:].mean()) < math.log(27) - 0.4  # well below the uniform guess over 27 characters
    assert float(losses[-50:].mean()) < float(losses[:50].mean()) - 0.2


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("h = x * tril\n", "tril is a constant buffer"),
        ("t = torch.tril(torch.ones(block_size, block_size), 1)\n", "a buffer is torch.tril(torch.ones("),
    ],
    ids=["buffer_as_operand", "buffer_options"],
)
def test_a_buffer_used_as_other_than_a_mask_is_refused_at_its_line(line, says):
    source = LECTURE_HEAD + "tril = torch.tril(torch.ones(block_size, block_size))\n" + line
    source += "loss = F.cross_entropy(logits, Yb)\n"
    with pytest.raises(NetFileError) as refused:
        netfile.build(source, "bad")
    assert refused.value.line == 9 and says in str(refused.value)


def test_the_docs_head_example_loads_opens_at_its_sizes_and_every_gradient_agrees_with_autograd(lecture_dataset):
    """docs/your-own-network.md's second example, the self-attention head with its buffer, as a teacher copies it."""
    page = (ROOT / "docs" / "your-own-network.md").read_text()
    source = page.split("```python\n")[2].split("```", 1)[0]
    assert "tril = torch.tril(torch.ones(block_size, block_size))" in source
    net = add_net_file("/srv/head.py", source)
    try:
        assert net.title == "A causal self-attention head"
        assert dict(net.defaults) == {"n_embd": 16, "n_hidden": 16, "block_size": 8, "seed": 1337}  # as written there
        config = ModelConfig(net="head", dtype="float64", **net.defaults)
        bp = run_backward(config, lecture_dataset, "atomic")
        assert bp.values["att"].shape == (32, 8, 8)
        names = [name for name in bp.completed_at if name != "loss"]
        assert {"C", "Wk", "Wq", "Wv", "W2", "b2", "wei_scaled"} <= set(names)
        for name in names:
            torch.testing.assert_close(
                bp.grad_at(name, bp.total_steps), bp.ref_grads[name], rtol=F64_RTOL, atol=F64_ATOL, msg=name
            )
    finally:
        NETS.pop("head", None)


def test_the_heads_export_makes_its_buffer_and_every_cmp_line_agrees(served, tmp_path):
    """The take-home file of the head's generated steps: its forward makes tril before the mask reads it."""
    from server.learner.export import export

    net = served["causal_head"]
    steps = {k: "\n".join(r.code for r in op.rules) for k, op in enumerate(net.backward_schedule("atomic"), 1)}
    _, content = export("atomic", ModelConfig(net=net.name, **HEAD_CONFIG), "py", steps=steps)
    text = content.decode()
    assert text.index("tril = torch.tril(torch.ones(block_size, block_size))") < text.index("masked_fill(tril == 0")
    script = tmp_path / "backprop.py"
    script.write_bytes(content)
    out = subprocess.run([sys.executable, str(script), str(LECTURE_DATA)], capture_output=True, text=True, check=True)
    cmp_lines = [line for line in out.stdout.splitlines() if "| approximate:" in line]
    assert len(cmp_lines) == len(net.cmp_order) == len(net.nodes) - 3  # every tensor but Xb, Yb and the loss
    assert all("approximate: True" in line for line in cmp_lines), out.stdout


def test_a_sandbox_process_serves_the_network_files_named_after_its_forkserver_started(
    served, lecture_dataset, monkeypatch
):
    # sandbox processes are forked from a server started with the first pool, in that moment's environment: a pool
    # made later (a network file named since) hands its own environment over, and its processes read the files there
    SandboxPool(lecture_dataset, size=1).close()
    monkeypatch.setenv(NET_FILE_ENV, str(GATED_FILE))
    pool = SandboxPool(lecture_dataset, size=1)
    try:
        answer = pool.run({"config": ModelConfig(net="gated_mlp"), "mode": "atomic", "step": 1, "hints": True})
        assert answer.get("hints"), answer  # the file's network, where "no network 'gated_mlp'" was refused
    finally:
        pool.close()
    monkeypatch.delenv(NET_FILE_ENV)
    pool = SandboxPool(lecture_dataset, size=1)
    try:
        answer = pool.run({"config": ModelConfig(net="gated_mlp"), "mode": "atomic", "step": 1, "hints": True})
        assert "no network 'gated_mlp'" in answer.get("refused", ""), answer  # and a pool without it does not
    finally:
        pool.close()
