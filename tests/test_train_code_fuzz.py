"""The compiled training block against the interpreter, differentially: random lines a learner might write inserted
into the notebook's Exercise 4 block; each block the sandbox accepts is run by both on the check batch and three
later ones, and every name in scope and every input must come out the same, bit for bit (or both fail alike).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from server.core.engine import init_params
from server.learner.sandbox import Interpreter, Refused
from server.training.code_backward import CodeBackward
from server.training.config import TrainConfig

from .test_train_code import BLOCK, same_bits

# the block's tensors by shape (batch 32, n_hidden 200, block 3, n_embd 10), forward and gradients alike: two
# names of one group always broadcast
GROUPS = [
    ["logits", "dlogits"],
    ["h", "hpreact", "bnraw", "hprebn", "dh", "dhpreact", "dhprebn"],
    ["embcat", "dembcat"],
    ["W1", "dW1"],
    ["W2", "dW2"],
    ["C", "dC"],
    ["bngain", "bnbias", "bnvar_inv", "dbngain", "dbnbias"],
    ["b1", "db1"],
    ["emb", "demb"],
]
OWN = ["dlogits", "dh", "dhpreact", "dhprebn", "dembcat", "dW1", "dW2", "dC", "demb", "db1", "db2", "t0", "t1"]
TOP = [i for i, line in enumerate(BLOCK.splitlines()) if line and not line[0].isspace() and not line[0] == "#"]


@st.composite
def operand(draw, group: list[str]) -> str:
    """An expression of the group's shape, as a learner may write it: views, copies, +x, transposes, arithmetic."""
    a, b = draw(st.sampled_from(group)), draw(st.sampled_from(group))
    forms = [
        "{a}", "+{a}", "-{a}", "(+{a}) * 0.0", "{a} * 0.5", "({a} + {b})", "{a} * {b}", "({a} - {b}) / 2.0",
        "{a}.T.T", "({a}.T * {b}.T).T", "{a}.clone()", "{a}.view({a}.shape)", "{a}.reshape({a}.shape)",
        "{a}.float()", "{a}.expand_as({b})", "{a}.sum(0, keepdim=True).expand_as({a})", "(1.0 - {a}**2)",
        "{a}.abs()", "torch.tanh({a})", "{b} * (1.0 - {a}**2)", "(+{a}) + {b}", "{a}.exp().log()",
    ]  # fmt: skip
    return draw(st.sampled_from(forms)).format(a=a, b=b)


@st.composite
def line(draw) -> str:
    """One statement (or a small loop) of the grammar."""
    group = draw(st.sampled_from(GROUPS))
    x, y = draw(operand(group)), draw(operand(group))
    target = draw(st.sampled_from(["t0", "t1", "junk", *group]))
    own = draw(st.sampled_from(OWN))
    kind = draw(st.integers(0, 14))
    if kind == 0:
        return f"{target} = {x}\n"
    if kind == 1:
        return f"{target} = {x} {draw(st.sampled_from(['+', '-', '*', '/']))} {y}\n"
    if kind == 2:  # in place, on a name of the learner's (or not: the interpreter then refuses)
        return f"{target} {draw(st.sampled_from(['+=', '-=', '*=', '/=']))} {x}\n"
    if kind == 3:
        return f"{own}[0] = {own}[1] * 2.0\n"
    if kind == 4:  # the one-hot subtraction, through views or copies
        t = draw(st.sampled_from(["dlogits", "t0", "dlogits.T.T"]))
        return f"t0 = {draw(operand(GROUPS[0]))}\n{t if t != 'dlogits.T.T' else 'dlogits'}[range(n), Yb] -= 1\n"
    if kind == 5:
        by = draw(st.sampled_from(["1", "0.5", "2"]))
        return f"e = {draw(operand(GROUPS[0]))}[0:1].expand_as(logits)\ne[range(n), Yb] -= {by}\n"
    if kind == 6:  # the dC loop, its table and rows drawn
        table = draw(st.sampled_from(["dC", "T", "T2"]))
        rows = draw(st.sampled_from(["demb", "demb * 2.0", "-demb", "V"]))
        index = draw(st.sampled_from(["Xb[k,j]", "Xb[k,j] - 27", "X[k,j]"]))
        setup = {
            "dC": "dC = torch.zeros_like(C)\n",
            "T": "T = demb.clone().view(-1, 10)\n",
            "T2": "T2 = torch.zeros_like(C[0:1]).expand_as(C)\n",
        }[table]
        extra = "V = demb * 1.0\n" if rows == "V" else ""
        extra += "X = Xb.clone()\n" if index == "X[k,j]" else ""
        after = draw(st.sampled_from(["", "ix += 0\n", "last = ix * 1\n"]))
        return (
            f"{setup}{extra}for k in range({draw(st.sampled_from(['n', 'Xb.shape[0]', '3', '1']))}):\n"
            f"  for j in range(3):\n    ix = {index}\n    {table}[ix] += ({rows})[k,j]\n{after}"
        )
    if kind == 7:
        count = draw(st.sampled_from(["n", "3", "Xb.shape[0]", "demb.shape[1]"]))
        return f"for k in range({count}):\n  {own}[k] += {own}[k] * 0.5\n"
    if kind == 8:  # the method's arguments before its tensor
        return "u = (dC * 1.0).expand_as(dC.index_add_(0, Xb[0], demb[0]))\n"
    if kind == 9:  # writing into the right-hand operand
        return "dh = (W2 @ dlogits.T).T\ndhpreact = dh * (1.0 - h**2)\n"
    if kind == 10:
        return f"t1 = {x}.T\nt0 = {y}.T * t1\n"
    if kind == 11:
        return f"{target} = {x}.sum(0) + {y}.sum(0)\n"
    if kind == 12:  # an index only some batches have
        return "dC[Xb[0, 0] * 2] += demb[0, 0]\n"
    if kind == 13:
        return f"{target} = {x}.max(1).values\n"
    # a count read out of the data (the checks may refuse it): 0, 1 or 2 as the batch's Yb[0] says
    counts = "(" + ", ".join(str(i % 3) for i in range(27)) + ")"
    return f"m = {counts}[Yb[0]]\nfor q in range(m):\n  {own}[0] += 1.0\n"


@st.composite
def block(draw) -> str:
    """The notebook's block with one to three lines inserted where a top-level statement starts."""
    lines = BLOCK.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        tops = [i for i, text in enumerate(lines) if text and not text[0].isspace() and text[0] != "#"]
        at = draw(st.sampled_from(tops[len(tops) // 2 :] + [tops[-1]] * 4))  # mostly late: most names exist there
        lines.insert(at, draw(line()))
    return "".join(lines)


@pytest.fixture(scope="module")
def setup():
    config = TrainConfig()
    p, g = init_params(config.model(), 27)
    batches = [(torch.randint(0, 27, (32, 3), generator=g), torch.randint(0, 27, (32,), generator=g)) for _ in range(4)]
    return p, batches


def interpreted(code: CodeBackward, Xb: torch.Tensor, Yb: torch.Tensor) -> tuple[dict | None, str]:
    env = code.scope(Xb, Yb)
    copies = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in env.items()}
    shared = {k for k, v in env.items() if isinstance(v, torch.Tensor)}
    try:
        with torch.no_grad():
            return Interpreter(copies, shared, set(), {}, meta=False, unit="line").run(code.program.tree), ""
    except Refused as e:
        return None, str(e)


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(source=block())
def test_the_compiled_block_leaves_every_tensor_as_the_interpreter_does(setup, source):
    p, batches = setup
    params = {k: t.clone() for k, t in p.items()}  # a run's own parameters: a step may not change them here
    inputs = [(Xb.clone(), Yb.clone()) for Xb, Yb in batches]
    try:
        code = CodeBackward(params, 32, source, *inputs[0])
    except Refused as e:
        assert "compiled block differs" not in str(e), source
        event("refused by the checks")
        return
    event("interpreted at every step" if code.program.interpreted else "compiled")
    kept = {k: t.clone() for k, t in params.items()}
    for (Xb, Yb), (X0, Y0) in zip(inputs, batches, strict=True):
        want, reason = interpreted(code, Xb, Yb)
        if want is None:
            with pytest.raises(Refused) as e:
                code.grads(Xb, Yb, keep=True)
            assert str(e.value) == reason, source
        else:
            _, _, got = code.grads(Xb, Yb, keep=True)
            assert want.keys() - got.keys() <= {"ix"}, source
            for k in want.keys() & got.keys():
                assert same_bits(got[k], want[k]), (k, source)
        assert torch.equal(Xb, X0) and torch.equal(Yb, Y0), source
        assert all(torch.equal(kept[k], params[k]) for k in p), source
