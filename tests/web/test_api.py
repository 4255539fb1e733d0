"""The JSON API over the lecture's data: lecture numbers, permalinks, validation, no 500s."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

import server.core.engine as engine
from server.core.config import ModelConfig
from server.explain.layout import graph_layout
from server.net.packs import NETS
from server.web.app import create_app
from tests.lecture import BUGS, LAYERS, MODES, NET, PARAMS, backward_schedule, bug_modes, nodes_for_mode, ops_for_mode


@pytest.fixture(scope="module")
def client(lecture_dataset):
    with TestClient(create_app(lecture_dataset), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


def test_health_and_dataset(client):
    assert client.get("/api/health").json()["status"] == "ok"
    ds = client.get("/api/dataset").json()
    assert ds["words"] == 32033
    assert ds["splits"] == {"train": 182625, "val": 22655, "test": 22866}
    assert ds["vocab"][:3] == [".", "a", "b"] and ds["vocab_size"] == 27
    assert ds["sha256"] == "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
    assert ds["embedded"] is False  # the lecture's file, from ../shared


def test_the_embedded_names_say_so_wherever_the_file_lies(embedded_dataset, tmp_path):
    from server.core.data import DEFAULT_DATA, load_dataset

    copy = tmp_path / "my-names.txt"
    copy.write_bytes(DEFAULT_DATA.read_bytes())
    for ds in (embedded_dataset, load_dataset(copy)):
        with TestClient(create_app(ds), base_url="http://127.0.0.1") as c:
            assert c.get("/api/dataset").json()["embedded"] is True


def test_meta_serves_the_modes_as_each_graph_answer_has_them(client):
    meta = client.get("/api/meta").json()
    assert [m["name"] for m in meta["modes"]] == ["atomic", "fused_ce", "fused_bn", "fused"]  # the lecture's order
    assert meta["default_mode"] == "atomic"
    for mode in meta["modes"]:
        graph = client.get("/api/graph", params={"mode": mode["name"]}).json()
        assert (mode["title"], mode["steps"]) == (graph["mode_title"], len(graph["schedule"]))
        assert mode["label"].split(":")[0] == mode["title"].split(":")[0]  # the same exercise, said short
        last = client.get("/api/state", params={"mode": mode["name"]}).json()
        assert last["total_steps"] == mode["steps"]


def test_meta_defaults_are_what_a_pass_without_parameters_uses(client):
    meta = client.get("/api/meta").json()
    defaults = {name: field["default"] for name, field in meta["config"].items()}
    # the lecture's Exercise 1 setup
    assert defaults == {"seed": 2147483647, "batch_size": 32, "n_embd": 10, "n_hidden": 64, "block_size": 3,
                        "dtype": "float32", "init": "lecture", "run": 0, "bug": "", "net": "makemore4"}  # fmt: skip
    bare = client.get("/api/state", params={"step": 4})
    spelled = client.get("/api/state", params={**defaults, "mode": meta["default_mode"], "step": 4})
    assert bare.status_code == spelled.status_code == 200 and bare.content == spelled.content
    # and each default matters: one changed, the answer changes
    for name, other in (("seed", 42), ("batch_size", 16), ("n_hidden", 32), ("dtype", "float64")):
        changed = client.get("/api/state", params={name: other, "step": 4})
        assert changed.status_code == 200 and changed.content != bare.content, name


def test_meta_bounds_and_choices_are_the_ones_enforced(client):
    config = client.get("/api/meta").json()["config"]
    bounded = {name: f for name, f in config.items() if f["minimum"] is not None}
    assert {"seed", "batch_size", "n_embd", "n_hidden", "block_size", "run"} <= set(bounded)
    for name, field in bounded.items():
        for outside in (field["minimum"] - 1, field["maximum"] + 1):
            r = client.get("/api/graph", params={name: outside})
            assert r.status_code == 422 and name in r.text, (name, outside)
    assert client.get("/api/graph", params={"batch_size": config["batch_size"]["minimum"]}).status_code == 200
    assert config["dtype"]["choices"] == ["float32", "float64"]
    assert config["init"]["choices"] == ["lecture", "zero_bias"]
    # every network's bugs (which of them a network has is a 422 of its own, below)
    nets = [net["name"] for net in client.get("/api/nets").json()["nets"]]
    assert config["net"]["choices"] == nets and nets[0] == "makemore4"
    bugs = [b["name"] for net in nets for b in client.get("/api/bugs", params={"net": net}).json()["bugs"]]
    assert config["bug"]["choices"] == ["", *bugs]
    other = client.get("/api/state", params={"net": "layernorm", "mode": "atomic", "bug": "bessel_n"})
    assert other.status_code == 422 and "no bug 'bessel_n' in layernorm" in other.text
    for name in ("dtype", "init", "bug"):
        assert client.get("/api/graph", params={name: "float16"}).status_code == 422, name


@pytest.mark.parametrize("mode", MODES)
def test_graph_per_mode(client, mode):
    g = client.get("/api/graph", params={"mode": mode}).json()
    # the counts come from the declaration (the lecture's own numbers are pinned once, in tests/test_graph.py)
    assert [n["name"] for n in g["nodes"]] == [n.name for n in nodes_for_mode(mode)]
    assert len(g["schedule"]) == len(ops_for_mode(mode)) == len(g["ops"])
    assert g["schedule"] == [op["name"] for op in reversed(g["ops"])]
    kinds = {n["name"]: n["kind"] for n in g["nodes"]}
    assert kinds["Xb"] == "input" and kinds["W1"] == "param" and kinds["loss"] == "loss"
    shapes = {n["name"]: n["shape"] for n in g["nodes"]}
    assert shapes["logits"] == [32, 27] and shapes["W1"] == [30, 64] and shapes["loss"] == []


def test_graph_rule_text_and_notes(client):
    g = client.get("/api/graph").json()
    ops = {op["name"]: op for op in g["ops"]}
    rule = ops["probs"]["rules"][1]
    assert rule["code"] == "dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)"
    assert rule["shapes"] == "(32,27)→(32,1)"
    assert any("broadcast over dim 1 in the forward pass → sum over dim 1" in n for n in rule["notes"])
    second = ops["counts_sum"]["rules"][0]
    assert second["target"] == "counts" and (second["contribution"], second["of"]) == (2, 2)
    assert any("second contribution: +=" in n for n in second["notes"])
    nodes = {n["name"]: n for n in g["nodes"]}
    assert nodes["hprebn"]["op"] == "hprebn" and nodes["hprebn"]["inputs"] == ["embcat", "W1", "b1"]
    assert nodes["counts"]["contributions"] == 2


def test_state_steps_and_statuses(client):
    s0 = client.get("/api/state", params={"step": 0}).json()
    steps = len(ops_for_mode("atomic"))
    assert s0["step"] == 0 and s0["total_steps"] == steps and s0["op"] is None and s0["next_op"] == "loss"
    assert s0["nodes"]["logprobs"]["status"] == "pending"
    s3 = client.get("/api/state", params={"step": 3}).json()
    assert s3["op"] == "probs"
    counts = s3["nodes"]["counts"]
    assert (counts["status"], counts["contributions"], counts["origin"]) == ("partial", [1, 2], False)
    # the first contribution, right, against autograd through the same path: exact, not red
    assert counts["cmp"]["exact"] and counts["cmp"]["rel_err"] == 0.0 and counts["cmp"]["shape_ok"]
    assert s3["nodes"]["counts_sum"]["cmp"] is None  # pending: nothing to compare yet
    assert s3["nodes"]["counts_sum_inv"]["status"] == "complete"
    full = client.get("/api/state").json()
    assert full["step"] == steps
    for name, node in full["nodes"].items():
        if name in ("Xb", "Yb"):
            continue
        assert node["status"] == "complete" and node["cmp"]["approx"], name
    # bitwise equal to autograd down to the last tanh's output (h, W2, b2 in the lecture's network), not after it
    out = LAYERS.output
    for name in ("logprobs", "probs", "counts", out.out, out.x, out.W, out.b):
        assert full["nodes"][name]["cmp"]["exact"] is True, name
    assert full["nodes"][LAYERS.hidden[-1].hpreact]["cmp"]["exact"] is False
    assert math.isclose(full["loss"], s0["loss"])


def test_tensor_detail(client):
    t = client.get("/api/tensor/counts", params={"step": 3}).json()
    assert t["status"] == "partial" and t["contributions"] == [1, 2]
    assert t["shape"] == [32, 27] and t["cmp"]["approx"]
    assert t["grad_manual"]["shape"] == [32, 27] and t["grad_autograd"]["shape"] == [32, 27]
    assert t["labels"][1][:3] == [".", "a", "b"]
    assert all("→" in label for label in t["labels"][0]) and len(t["labels"][0]) == 32
    manual = torch.tensor(t["grad_manual"]["data"])
    ref = torch.tensor(t["grad_autograd"]["data"])
    assert torch.allclose(torch.tensor(t["diff"]["data"]), manual - ref)
    assert t["numeric"] is None  # finite differences check the complete gradient, which does not exist yet
    before = client.get("/api/tensor/probs", params={"step": 1}).json()
    assert before["grad_manual"] is None and before["status"] == "pending"
    emb = client.get("/api/tensor/emb").json()
    assert emb["shape"] == [32, 3, 10] and emb["axes"] == ["batch", "context", "embd"]
    xb = client.get("/api/tensor/Xb").json()
    assert xb["grad_manual"] is None and xb["numeric"] is None
    assert len(xb["value"]["data"][0]) == 3 and all(0 <= i < 27 for i in xb["value"]["data"][0])


def test_first_batch_targets_through_the_api(client, lecture_dataset):
    # the engine's first batch (the lecture's, [8, 14, 15, 22, ...], is pinned in tests/test_graph.py)
    _, g = engine.init_params(ModelConfig(), lecture_dataset.vocab_size)
    _, Yb = engine.sample_batch(ModelConfig(), lecture_dataset, g)
    yb = client.get("/api/tensor/Yb").json()
    assert yb["value"]["data"] == Yb.tolist()
    assert [label.split("→")[1] for label in yb["labels"][0]] == [lecture_dataset.itos[int(y)] for y in Yb]


def test_permalink_is_deterministic(client):
    params = {"seed": 7, "batch_size": 8, "n_hidden": 16, "step": 5}
    a = client.get("/api/tensor/hprebn", params=params).json()
    client.get("/api/state", params={"seed": 8})
    b = client.get("/api/tensor/hprebn", params=params).json()
    assert a == b


def test_float64_and_zero_bias(client):
    s = client.get("/api/state", params={"dtype": "float64"}).json()
    assert s["nodes"]["hpreact"]["cmp"]["maxdiff"] < 1e-15
    t = client.get("/api/tensor/b2", params={"init": "zero_bias"}).json()
    assert t["value"]["min"] == 0 and t["value"]["max"] == 0


def test_zero_bias_does_what_its_description_says(client):
    # the description is read off the declaration ("zero_bias: b1=b2=bnbias=0, bngain=1" in the lecture's network)
    description = client.get("/api/meta").json()["config"]["init"]["description"]
    said = {name: float(group[-1]) for group in (g.split("=") for g in description.split(": ")[1].split(", "))
            for name in group[:-1]}  # fmt: skip
    assert set(said) == {n.name for n in PARAMS if n.init.zero_bias is not None} and said
    for name, value in said.items():
        t = client.get(f"/api/tensor/{name}", params={"init": "zero_bias"}).json()
        assert t["value"]["min"] == t["value"]["max"] == value, name


# the longest schedule of any net (the query's bound; a step past a shorter mode's end is that mode's 422)
MAX_STEPS = max(len(net.ops_for_mode(mode)) for net in NETS.values() for mode in net.mode_names)
LECTURE_STEPS = len(ops_for_mode("atomic"))
FUSED = len(ops_for_mode("fused"))


@pytest.mark.parametrize(
    ("path", "params", "status", "needle"),
    [
        ("/api/state", {"batch_size": 1}, 422, "batch_size"),
        ("/api/state", {"batch_size": 257}, 422, "batch_size"),
        ("/api/state", {"n_hidden": 513}, 422, "n_hidden"),
        ("/api/state", {"n_embd": 0}, 422, "n_embd"),
        ("/api/state", {"block_size": 9}, 422, "block_size"),
        ("/api/state", {"seed": -1}, 422, "seed"),
        ("/api/state", {"seed": "abc"}, 422, "seed"),
        ("/api/state", {"mode": "nope"}, 422, "mode"),
        ("/api/state", {"dtype": "float16"}, 422, "dtype"),
        ("/api/state", {"init": "kaiming"}, 422, "init"),
        ("/api/state", {"step": MAX_STEPS + 1}, 422, f"less than or equal to {MAX_STEPS}"),
        ("/api/state", {"step": LECTURE_STEPS + 1}, 422, f"past the end: mode atomic has {LECTURE_STEPS} backward"),
        ("/api/state", {"step": FUSED + 1, "mode": "fused"}, 422, f"past the end: mode fused has {FUSED} backward"),
        ("/api/state", {"step": -1}, 422, "step"),
        ("/api/state", {"data": "/etc/passwd"}, 422, "data"),
        ("/api/graph", {"path": "../shared/data/names.txt"}, 422, "path"),
        ("/api/tensor/nope", {}, 404, "no tensor 'nope'"),
        ("/api/tensor/bnraw", {"mode": "fused_bn"}, 404, "no tensor 'bnraw' in mode fused_bn"),
    ],
)
def test_bad_requests_get_a_reason(client, path, params, status, needle):
    r = client.get(path, params=params)
    assert r.status_code == status
    assert needle in r.text
    assert client.get("/api/health").status_code == 200


def test_body_size_capped(client):
    r = client.request("GET", "/api/health", content=b"x" * (70 * 1024))
    assert r.status_code == 413


def test_nonfinite_tensors_never_500(lecture_dataset, monkeypatch):
    real = engine.init_params

    def poisoned(config, vocab_size):
        params, g = real(config, vocab_size)
        params["W2"] = params["W2"].clone()
        params["W2"][0, 0] = math.inf
        return params, g

    monkeypatch.setattr(engine, "init_params", poisoned)
    with TestClient(create_app(lecture_dataset), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        s = c.get("/api/state")
        assert s.status_code == 200
        t = c.get("/api/tensor/logits")
        assert t.status_code == 200
        body = t.json()
        assert body["value"]["nonfinite"]["posinf"] + body["value"]["nonfinite"]["neginf"] > 0
        assert None in [x for row in body["value"]["data"] for x in row]
        w2 = c.get("/api/tensor/W2").json()
        assert w2["value"]["nonfinite"]["posinf"] == 1 and w2["value"]["data"][0][0] is None
        assert c.get("/api/graph").status_code == 200


def test_plotly_is_the_installed_packages_and_cacheable(client):
    import plotly

    from server.web.app import COMPILE_HINT, PLOTLY_JS

    assert PLOTLY_JS.is_relative_to(Path(plotly.__file__).parent)
    r = client.get("/vendor/plotly.min.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.content == COMPILE_HINT + PLOTLY_JS.read_bytes() and COMPILE_HINT.startswith(b"//")
    assert "max-age" in r.headers["cache-control"]
    again = client.get("/vendor/plotly.min.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_every_bug_in_float64(client, bug):
    mode = bug_modes(BUGS[bug])[0]
    r = client.get("/api/state", params={"bug": bug, "dtype": "float64", "mode": mode})
    assert r.status_code == 200, r.text  # clipped_loss wrote a float32 tensor into float64 dlogprobs: a 500
    assert not all(n["cmp"] is None or n["cmp"]["approx"] for n in r.json()["nodes"].values())


def test_bug_lab_over_the_api(client):
    bugs = {b["name"]: b for b in client.get("/api/bugs").json()["bugs"]}
    assert len(bugs) >= 5 and "clipped_loss" in bugs
    state = client.get("/api/state", params={"bug": "no_broadcast_sum"}).json()
    assert state["nodes"]["counts_sum_inv"]["cmp"]["shape_ok"] is False
    assert state["nodes"]["probs"]["cmp"]["exact"]  # downstream of the bug: untouched
    wrong_mode = client.get("/api/state", params={"bug": "no_broadcast_sum", "mode": "fused"})
    assert wrong_mode.status_code == 422 and "fuses away" in wrong_mode.text
    assert client.get("/api/state", params={"bug": "nope"}).status_code == 422


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"mode": "fused_everything"}, "mode", "'atomic'"),  # the choices are named
        ({"bug": "off_by_one"}, "bug", "'bessel_n'"),
        ({"bug": "bessel_n", "mode": "fused_bn"}, "bug", "which mode fused_bn fuses away; use atomic or fused_ce"),
        ({"bug": "clipped_loss", "mode": "fused"}, "bug", "loss, which mode fused fuses away"),
    ],
)
@pytest.mark.parametrize("path", ["/api/graph", "/api/state", "/api/tensor/h", "/api/hints"])
def test_an_undeclared_mode_or_bug_is_a_422_with_the_reason(client, path, params, field, reason):
    r = client.get(path, params={"step": 1, **params} if path == "/api/hints" else params)
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["query", field] and reason in error["msg"]


def _tensor(t):
    return torch.tensor(t["data"], dtype=torch.float64)


def test_a_partial_gradient_is_shown_against_the_same_paths(client):
    partial = client.get("/api/tensor/counts", params={"step": 3}).json()
    full = client.get("/api/tensor/counts", params={"step": 5}).json()
    assert partial["reference"] == "autograd through contribution 1 of 2 (from probs)"
    assert full["reference"] == "autograd, complete" and full["cmp"]["exact"]
    # the reference moves with the contributions: through probs alone it is not autograd's full gradient
    assert not torch.allclose(_tensor(partial["grad_autograd"]), _tensor(full["grad_autograd"]))
    assert torch.equal(_tensor(partial["grad_manual"]), _tensor(partial["grad_autograd"]))
    assert max(abs(v) for row in partial["diff"]["data"] for v in row) == 0.0
    [first] = partial["split"]
    assert (first["op"], first["step"], first["overwrites"]) == ("probs", 3, False)
    assert first["manual"]["data"] == partial["grad_manual"]["data"]
    # complete: contribution 1 | contribution 2 | sum, each beside autograd through the same op
    one, two = full["split"]
    assert [(c["op"], c["step"]) for c in full["split"]] == [("probs", 3), ("counts_sum", 5)]
    torch.testing.assert_close(_tensor(one["manual"]) + _tensor(two["manual"]), _tensor(full["grad_manual"]))
    torch.testing.assert_close(_tensor(one["autograd"]) + _tensor(two["autograd"]), _tensor(full["grad_autograd"]))
    assert client.get("/api/tensor/probs", params={"step": 3}).json()["split"] is None  # one consumer: no split


def test_finite_differences_speak_of_the_complete_gradient_only(client):
    partial = client.get("/api/tensor/counts", params={"step": 3}).json()
    assert partial["numeric"] is None
    assert partial["numeric_note"] == "finite differences check the complete gradient: available from step 5"
    pending = client.get("/api/tensor/W1", params={"step": 0}).json()
    made_at = [op.name for op in backward_schedule("atomic")].index("hprebn") + 1  # its one consumer's step
    assert pending["numeric"] is None and pending["numeric_note"].endswith(f"available from step {made_at}")
    done = client.get("/api/tensor/counts", params={"step": 5}).json()
    assert done["numeric_note"] is None and done["numeric"]["max_rel_err"] < 1e-2
    xb = client.get("/api/tensor/Xb").json()
    assert xb["numeric"] is None and xb["numeric_note"] is None and xb["reference"] is None


def test_a_shape_mismatch_shows_both_shapes_and_no_difference(client):
    r = client.get("/api/tensor/counts_sum_inv", params={"bug": "no_broadcast_sum"})
    t = r.json()
    assert t["grad_manual"]["shape"] == [32, 27] and t["grad_autograd"]["shape"] == [32, 1]
    assert t["diff"] is None
    assert t["cmp"] == {"exact": False, "approx": False, "maxdiff": None, "max_rel": None, "rel_err": None,
                        "shape_ok": False, "shape": [32, 27], "expected_shape": [32, 1],
                   "shape_mismatch": "shape (32,27) against autograd's (32,1): no difference to measure"}  # fmt: skip
    assert b"NaN" not in r.content and b"Infinity" not in r.content
    for key in ("grad_manual", "grad_autograd"):
        assert t[key]["nonfinite"] == {"nan": 0, "posinf": 0, "neginf": 0}
    state = client.get("/api/state", params={"bug": "no_broadcast_sum"}).json()
    assert state["nodes"]["counts_sum_inv"]["cmp"] == t["cmp"]


def test_the_state_marks_where_an_error_starts_and_how_large_it_is(client):
    clean = client.get("/api/state").json()
    assert not any(node["origin"] for node in clean["nodes"].values())
    bessel = client.get("/api/state", params={"bug": "bessel_n"}).json()["nodes"]
    assert [name for name, node in bessel.items() if node["origin"]] == ["bndiff2"]
    assert 0.02 <= bessel["bndiff2"]["cmp"]["rel_err"] <= 0.05  # 1/n, n = 32
    assert not bessel["W1"]["cmp"]["approx"] and not bessel["W1"]["origin"]  # wrong, but not where it starts
    lost = client.get("/api/state", params={"bug": "overwrite_second_contribution"}).json()["nodes"]
    assert [name for name, node in lost.items() if node["origin"]] == ["counts"]
    assert lost["counts"]["cmp"]["rel_err"] > bessel["bndiff2"]["cmp"]["rel_err"]
    before = client.get("/api/state", params={"bug": "overwrite_second_contribution", "step": 4}).json()["nodes"]
    assert before["counts"]["cmp"]["approx"] and not before["counts"]["origin"]  # the first contribution is right


def test_the_graph_shows_the_rule_the_bug_lab_runs(client):
    bugs = {b["name"]: b for b in client.get("/api/bugs").json()["bugs"]}
    ops = {op["name"]: op for op in client.get("/api/graph", params={"bug": "no_broadcast_sum"}).json()["ops"]}
    wrong = ops["probs"]["rules"][1]
    assert wrong["target"] == "counts_sum_inv" and wrong["bug"] is True
    assert wrong["code"] == bugs["no_broadcast_sum"]["code"]
    assert wrong["code"].split("#")[0].strip() == "dcounts_sum_inv = counts * dprobs"
    assert wrong["correct_code"] == "dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)"
    others = [r for op in ops.values() for r in op["rules"] if r is not wrong]
    assert others and not any(r["bug"] for r in others) and all(r["correct_code"] is None for r in others)
    clean = client.get("/api/graph").json()["ops"]
    assert not any(r["bug"] for op in clean for r in op["rules"])
    for bug in bugs.values():  # every bug: its one rule, in its op
        graph = client.get("/api/graph", params={"bug": bug["name"], "mode": bug["modes"][0]}).json()
        marked = [(op["name"], r["target"], r["code"]) for op in graph["ops"] for r in op["rules"] if r["bug"]]
        assert marked == [(bug["op"], bug["target"], bug["code"])], bug["name"]


def test_a_large_configs_json_is_made_off_the_event_loop(client, monkeypatch):
    import asyncio

    import server.web.routes as routes

    on_loop, real = [], routes.dumps

    def dumps(content):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # a worker thread has no running loop
            on_loop.append(False)
        return real(content)

    monkeypatch.setattr(routes, "dumps", dumps)
    large = {"batch_size": 64, "n_hidden": 512}  # above the lecture's 4x: computed in a worker thread
    assert client.get("/api/tensor/W1", params=large).json()["shape"] == [30, 512]
    assert client.get("/api/state", params={"step": 2}).status_code == 200  # the lecture's: on the loop
    assert on_loop == [False, True]


def test_a_chunked_body_over_the_cap_is_413(client):
    def chunks():  # no Content-Length: httpx sends it with Transfer-Encoding: chunked
        for _ in range(70):
            yield b"x" * 1024

    json_type = {"content-type": "application/json"}
    r = client.post("/api/runs", content=chunks(), headers=json_type)
    assert r.status_code == 413 and "body over" in r.json()["detail"]
    small = client.post("/api/check", content=(c for c in [b'{"step": 1, ', b'"code": "x = 1"}']), headers=json_type)
    assert small.status_code == 503  # under the cap, a chunked body reaches the endpoint whole (checks are off)


def test_the_body_cap_answers_as_soon_as_it_is_crossed():
    import asyncio

    from server.web.guards import MAX_BODY_BYTES, LimitBody

    read, sent, reached = [], [], []

    async def receive():  # an endless chunked body
        read.append(1)
        return {"type": "http.request", "body": b"x" * 4096, "more_body": True}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        reached.append(scope)

    scope = {"type": "http", "method": "POST", "path": "/api/check", "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(LimitBody(app)(scope, receive, send))
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert len(read) == MAX_BODY_BYTES // 4096 + 1 and not reached


def test_a_422_echoes_an_excerpt_not_the_whole_input(client):
    code = "dlogprobs = 1  # " + "x" * 60_000
    r = client.post("/api/check", json={"step": 1, "code": code})
    assert r.status_code == 422 and len(r.content) < 2000, len(r.content)
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "code"] and error["input"].startswith("dlogprobs = 1  # xxx")
    assert "60,017 characters" in error["input"]
    many = client.post("/api/check", json={"step": 1, "code": "x = 1"} | {f"key{i}": "y" * 1000 for i in range(50)})
    assert many.status_code == 422 and len(many.content) < 4000, len(many.content)
    assert many.json()["detail"][-1]["msg"] == "42 more errors"


@pytest.mark.parametrize(
    "body",
    [b'{"step": 1e400, "code": 1}', b'{"step": 1, "code": 1, "seed": NaN}', b'{"step": -Infinity, "code": "x"}',
     b'{"step": 1, "code": "\\ud800"}', b'{"step": 1, "code": "x", "mode": "\\ud800"}',
     b'{"step": 1, "code": "x", "\\udfff": 1}', b'{"step": 1, "code": "x" "y"}', b"\xff\xfe"],
)  # fmt: skip
def test_unencodable_json_values_get_a_422_with_a_reason(client, body):
    r = client.post("/api/check", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail and all(isinstance(e["msg"], str) and e["msg"] for e in detail)


def test_an_integer_json_cannot_read_is_a_400_with_the_reason(client):
    body = b'{"step": 1, "code": "x", "seed": 1' + b"0" * 5000 + b"}"  # Python's int parsing stops at 4300 digits
    r = client.post("/api/check", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "4300 digits" in r.json()["detail"], r.text


def test_a_bug_is_a_json_500_not_plain_text(lecture_dataset, monkeypatch):
    app = create_app(lecture_dataset)

    def broken(config, mode):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.cache, "get", broken)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        r = c.get("/api/state", params={"seed": 5})
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert "RuntimeError" in r.json()["detail"] and "a bug" not in r.text


@pytest.mark.parametrize("path", ["/api/health", "/api/dataset", "/api/state?step=2", "/", "/train.html"])
def test_head_is_answered_as_get_without_the_body(client, path):
    get, head = client.get(path), client.head(path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    # the length GET sends, on the wire (compressed where the client accepts it, as both asked)
    assert head.headers.get("content-encoding") == get.headers.get("content-encoding")
    assert head.headers["content-length"] == get.headers["content-length"]
    identity = client.get(path, headers={"Accept-Encoding": "identity"})
    assert client.head(path, headers={"Accept-Encoding": "identity"}).headers["content-length"] == str(
        len(identity.content)
    )


def test_served_with_the_graph(embedded_dataset):
    with TestClient(create_app(embedded_dataset), base_url="http://127.0.0.1") as client:
        for mode in MODES:
            g = client.get("/api/graph", params={"mode": mode}).json()
            assert g["layout"] == graph_layout(NET, mode)
            assert {op["name"]: op["symbol"] for op in g["ops"]} == {op.name: op.symbol for op in ops_for_mode(mode)}
            assert set(g["layout"]["nodes"]) == {n["name"] for n in g["nodes"]}


def test_a_large_config_does_not_hold_up_everyone_else(lecture_dataset, monkeypatch):
    """A large pass is computed in a worker thread: while it is held there, the lecture's pass is answered."""
    import threading

    from server.web import routes

    entered, release = threading.Event(), threading.Event()
    build_tensor = routes.views.build_tensor

    def held(bp, *args, **kwargs):  # the large answer waits, in its thread, until the lecture's were given
        if bp.config.batch_size == 256:
            entered.set()
            assert release.wait(120), "never released"
        return build_tensor(bp, *args, **kwargs)

    monkeypatch.setattr(routes.views, "build_tensor", held)
    large = "batch_size=256&n_hidden=512&n_embd=64&block_size=8&dtype=float64&step=3"
    finished: list[str] = []
    with TestClient(create_app(lecture_dataset), base_url="http://127.0.0.1") as c:

        def fetch_large() -> None:
            assert c.get(f"/api/tensor/hprebn?{large}").status_code == 200
            finished.append("large")

        slow = threading.Thread(target=fetch_large)
        slow.start()
        assert entered.wait(120), "the large request never reached its view"
        for _ in range(3):
            assert c.get("/api/state?step=5").status_code == 200
            finished.append("lecture")
        release.set()
        slow.join(120)
    assert finished == ["lecture", "lecture", "lecture", "large"], finished


def test_nets_say_which_statistics_training_calibrates(client):
    """The training page says what is calibrated after training: the lecture's batchnorm running statistics, and
    nothing for LayerNorm (each example is normalised on its own, in training as in evaluation)."""
    nets = {n["name"]: n for n in client.get("/api/nets").json()["nets"]}
    assert nets["makemore4"]["default"] and not nets["layernorm"]["default"]
    assert sorted(nets["makemore4"]["calibrated"]) == ["bnmean_running", "bnvar_running"]  # the lecture's names
    assert nets["layernorm"]["calibrated"] == []
