"""The op-rule library (server/net/library.py): every op's rules against autograd in float64, with broadcasting,
their code lines computing what their functions compute, and derivations the page can show."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from server.explain.why import mathml
from server.net import library as lib
from server.net.library import Call, Operand

RTOL, ATOL = 1e-10, 1e-12  # float64: a rule against autograd's vector-Jacobian product
N = 6  # the rows of the 2-D cases: not any other size, so a slipped dim shows


def t(name: str, *shape: int, grad: bool = True) -> Operand:
    return Operand(name, tuple(shape), grad=grad)


def c(text: str, value: float) -> Operand:
    return Operand(text, node=False, grad=False, value=lambda v: value)


# (id, the call, the value of each tensor operand: "pos" positive, "int<k>" indices below k, else standard normal)
CASES = [
    ("index", Call("index", (t("C", 27, 5), t("Xb", N, 3, grad=False))), {"Xb": "int27"}),
    ("view", Call("view", (t("x", N, 3, 5),), sizes=(c("n", N), c("-1", -1))), {}),
    ("reshape", Call("reshape", (t("x", N, 15),), sizes=(c("n", N), c("3", 3), c("5", 5))), {}),
    ("transpose_2d", Call("transpose", (t("x", N, 5),), dim=(0, 1)), {}),
    ("transpose_3d", Call("transpose", (t("x", 2, N, 5),), dim=(-2, -1)), {}),
    ("matmul_2d", Call("matmul", (t("a", N, 4), t("b", 4, 5))), {}),
    ("matmul_batched", Call("matmul", (t("a", 2, N, 4), t("b", 2, 4, 5))), {}),
    ("matmul_batched_shared", Call("matmul", (t("a", 2, N, 4), t("b", 4, 5))), {}),
    ("linear", Call("linear", (t("a", N, 4), t("b", 4, 5), t("c", 5))), {}),
    ("add_row", Call("add", (t("a", N, 5), t("b", 1, 5))), {}),
    ("add_vector", Call("add", (t("a", N, 5), t("b", 5))), {}),
    ("add_column", Call("add", (t("a", N, 1), t("b", N, 5))), {}),
    ("add_3d_2d", Call("add", (t("a", 2, N, 5), t("b", N, 1))), {}),
    ("add_const", Call("add", (t("a", N, 5), c("1e-5", 1e-5))), {}),
    ("sub_column", Call("sub", (t("a", N, 5), t("b", N, 1))), {}),
    ("sub_from_const", Call("sub", (c("1.0", 1.0), t("a", N, 5))), {}),
    ("mul_row", Call("mul", (t("a", N, 5), t("b", 1, 5))), {}),
    ("mul_same", Call("mul", (t("a", N, 5), t("b", N, 5))), {}),
    ("mul_const", Call("mul", (c("0.5", 0.5), t("a", N, 5))), {}),
    ("mul_const_expression", Call("mul", (t("a", N, 5), c("1 - 0.25", 0.75))), {}),  # (1 - 0.25) * da
    ("div_column", Call("div", (t("a", N, 5), t("b", N, 1))), {"b": "pos"}),
    ("div_const_by", Call("div", (c("1.0", 1.0), t("a", N, 5))), {"a": "pos"}),
    ("div_by_const", Call("div", (t("a", N, 5), c("n", N))), {}),
    ("pow_square", Call("pow", (t("a", N, 5), c("2", 2))), {}),
    ("pow_inverse", Call("pow", (t("a", N, 1), c("-1", -1))), {"a": "pos"}),
    ("pow_rsqrt", Call("pow", (t("a", 1, 5), c("-0.5", -0.5))), {"a": "pos"}),
    ("affine", Call("affine", (t("g", 1, 5), t("x", N, 5), t("b", 1, 5))), {}),
    ("shifted_pow", Call("shifted_pow", (t("x", 1, 5), c("1e-5", 1e-5), c("-0.5", -0.5))), {"x": "pos"}),
    ("neg", Call("neg", (t("x", N, 5),)), {}),
    ("exp", Call("exp", (t("x", N, 5),)), {}),
    ("log", Call("log", (t("x", N, 5),)), {"x": "pos"}),
    ("tanh", Call("tanh", (t("x", N, 5),)), {}),
    ("relu", Call("relu", (t("x", N, 5),)), {}),
    ("sigmoid", Call("sigmoid", (t("x", N, 5),)), {}),
    ("sqrt", Call("sqrt", (t("x", N, 5),)), {"x": "pos"}),
    ("sum_0_keepdim", Call("sum", (t("x", N, 5),), dim=0, keepdim=True), {}),
    ("sum_1", Call("sum", (t("x", N, 5),), dim=1), {}),
    ("sum_all", Call("sum", (t("x", N, 5),)), {}),
    ("sum_tuple_3d", Call("sum", (t("x", 2, N, 5),), dim=(0, 1)), {}),
    ("sum_scaled", Call("sum", (t("x", N, 5),), dim=0, keepdim=True, scale=c("1/n", 1 / N)), {}),
    ("mean_0_keepdim", Call("mean", (t("x", N, 5),), dim=0, keepdim=True), {}),
    ("mean_tuple_3d", Call("mean", (t("x", 2, N, 5),), dim=(0, 1)), {}),
    ("mean_negative_dim", Call("mean", (t("x", 2, N, 5),), dim=-1, keepdim=True), {}),
    ("max_1_keepdim", Call("max", (t("x", N, 5),), dim=1, keepdim=True), {}),
    ("max_0", Call("max", (t("x", N, 5),), dim=0), {}),
    ("max_3d_1", Call("max", (t("x", 2, N, 5),), dim=1), {}),  # one_hot's classes walked back to dim 1
    ("max_3d_0_keepdim", Call("max", (t("x", 2, N, 5),), dim=0, keepdim=True), {}),
    ("var_bessel", Call("var", (t("x", N, 5),), dim=0, keepdim=True), {}),
    ("var_biased_3d", Call("var", (t("x", 2, N, 5),), dim=(0, 1), keepdim=True, correction=0), {}),
    ("var_1", Call("var", (t("x", N, 5),), dim=1), {}),
    ("softmax", Call("softmax", (t("x", N, 5),), dim=1), {}),
    ("softmax_3d_last", Call("softmax", (t("x", 2, N, 5),), dim=-1), {}),
    ("log_softmax", Call("log_softmax", (t("x", N, 5),), dim=1), {}),
    (
        "masked_fill",
        Call("masked_fill", (t("x", N, 5), c("-1e9", -1e9)), mask=lambda v: v.m > 0, mask_text="m > 0"),
        {"m": "mask"},
    ),
    ("cat", Call("cat", (t("a", N, 2), t("b", N, 3)), dim=1), {}),
    ("cat_0", Call("cat", (t("a", 2, 5), t("b", N, 5)), dim=0), {}),
    ("cat_3d_three", Call("cat", (t("a", 2, N, 2), t("b", 2, N, 3), t("c", 2, N, 4)), dim=-1), {}),  # a middle slice
    ("cross_entropy", Call("cross_entropy", (t("logits", N, 5), t("Yb", N, grad=False))), {"Yb": "int5"}),
    ("nll", Call("nll", (t("logprobs", N, 5), t("Yb", N, grad=False))), {"Yb": "int5"}),
]


def values_for(call: Call, kinds: dict[str, str]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    out: dict[str, torch.Tensor] = {}
    for a in call.args:
        if not a.node:
            continue
        kind = kinds.get(a.text, "")
        if kind.startswith("int"):
            out[a.text] = torch.randint(0, int(kind[3:]), a.shape, generator=g)
        elif kind == "pos":
            out[a.text] = torch.rand(a.shape, generator=g, dtype=torch.float64) + 0.5
        else:
            out[a.text] = torch.randn(a.shape, generator=g, dtype=torch.float64)
    if kinds.get("m") == "mask":
        out["m"] = torch.randn(call.args[0].shape, generator=g, dtype=torch.float64)
    return out


@pytest.fixture(params=CASES, ids=[case[0] for case in CASES])
def case(request):
    """The op run forward with autograd, its rules' gradients and autograd's for an upstream gradient."""
    _, call, kinds = request.param
    values = values_for(call, kinds)
    leaves = {k: (x.requires_grad_(True) if x.is_floating_point() else x) for k, x in values.items()}
    v = SimpleNamespace(**leaves, n=N)
    out = lib.forward(call)(v)
    g = torch.Generator().manual_seed(11)
    dout = torch.randn(out.shape, generator=g, dtype=torch.float64)
    if not out.dim():  # the loss: dloss = 1, as the backward starts
        dout = torch.ones_like(dout)
    shaped = Operand("out", tuple(out.shape))
    rules = lib.rules(call, shaped)
    targets = [r.target for r in rules]
    ref = torch.autograd.grad(out, [leaves[k] for k in targets], dout, allow_unused=True)
    v_plain = SimpleNamespace(**{k: x.detach() for k, x in leaves.items()}, out=out.detach(), n=N)
    d = SimpleNamespace(out=dout)
    return call, rules, dict(zip(targets, ref, strict=True)), v_plain, d


def test_each_rule_agrees_with_autograd_in_float64(case):
    call, rules, ref, v, d = case
    expected = {a.text for a in call.args if a.node and a.grad}
    assert {r.target for r in rules} == expected  # a rule for each input that gets a gradient, none for the others
    for rule in rules:
        got = rule.fn(v, d)
        assert got.shape == ref[rule.target].shape, rule.target
        torch.testing.assert_close(got.to(torch.float64), ref[rule.target], rtol=RTOL, atol=ATOL, msg=rule.target)


def test_each_rules_code_line_computes_what_its_function_computes(case):
    """The line a learner would write, run as written, gives the rule's gradient."""
    _, rules, ref, v, d = case
    for rule in rules:
        scope = {"torch": torch, "F": F, **vars(v), "dout": d.out}
        exec(rule.code, scope)
        got = scope["d" + rule.target]
        torch.testing.assert_close(got.to(torch.float64), ref[rule.target], rtol=RTOL, atol=ATOL, msg=rule.code)


def test_each_rule_has_a_derivation_the_page_can_show(case):
    _, rules, _, _, _ = case
    for rule in rules:
        assert len(rule.tex) == 3 and rule.note  # forward line, local derivative, chain rule; and why
        for line in rule.tex:
            assert "<math" in mathml(line)
        assert any("\\text{dout}" in line or "\\text{out}" in line for line in rule.tex)


@pytest.mark.parametrize(
    ("shape", "target", "code"),
    [
        ((N, 5), (1, 5), "g.sum(0, keepdim=True)"),
        ((N, 5), (5,), "g.sum(0)"),
        ((N, 5), (N, 1), "g.sum(1, keepdim=True)"),
        ((2, N, 5), (N, 1), "g.sum(2, keepdim=True).sum(0)"),
        ((N, 5), (N, 5), "g"),
    ],
)
def test_the_sum_over_broadcast_dims_is_read_off_the_shapes(shape, target, code):
    got, fn, note = lib.unbroadcast("g", lambda v, d: d.g, shape, target)
    assert got == code and bool(note) == (code != "g")
    grad = torch.randn(shape, dtype=torch.float64)
    assert fn(None, SimpleNamespace(g=grad)).shape == target


def test_the_lectures_lines_come_out_as_the_lecture_writes_them():
    """Three of Exercise 1's lines, generated: the learner reads the same code the notebook has."""
    (dh, dW2) = lib.rules(Call("matmul", (t("h", N, 64), t("W2", 64, 27))), Operand("logits", (N, 27)))
    assert (dh.code, dW2.code) == ("dh = dlogits @ W2.T", "dW2 = h.T @ dlogits")
    (dcounts, dinv) = lib.rules(Call("mul", (t("counts", N, 27), t("counts_sum_inv", N, 1))), Operand("probs", (N, 27)))
    assert dinv.code == "dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)"
    (dhpre,) = lib.rules(Call("tanh", (t("hpreact", N, 64),)), Operand("h", (N, 64)))
    assert dhpre.code == "dhpreact = (1.0 - h**2) * dh"


def test_an_exponent_that_is_a_tensor_is_refused():
    with pytest.raises(lib.Unsupported, match="exponent"):
        lib.rules(Call("pow", (t("a", N, 5), t("b", N, 5))), Operand("out", (N, 5)))
