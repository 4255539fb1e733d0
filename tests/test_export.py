"""Take it home: the exported .py runs with the project's Python and the .ipynb in a Jupyter kernel, each rebuilding
the lecture's data and net from names.txt, running the learner's backward and printing the notebook's cmp lines."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest
import torch
from fastapi.testclient import TestClient
from nbclient import NotebookClient

from server.core.config import ModelConfig
from server.core.engine import run_backward
from server.learner.cells import grade_cell
from server.learner.export import export
from server.learner.sandbox import Refused
from server.web.app import create_app
from tests.lecture import OPS_BY_NAME

from .conftest import LECTURE_DATA
from .test_cells import ATOMIC_ORDER, EXERCISE_4_CHECK, EXERCISE_4_GRADS, FUSED_ORDER
from .test_challenge import EXERCISE_1, EXERCISE_2, EXERCISE_3, EXERCISE_4, NOTEBOOK, notebook_steps

LECTURE = ModelConfig()


def run_py(tmp_path, name: str, content: bytes) -> list[str]:
    """Runs the exported script with this project's Python, names.txt passed as its argument; its printed lines."""
    path = tmp_path / name
    path.write_bytes(content)
    done = subprocess.run(
        [sys.executable, str(path), str(LECTURE_DATA)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def cmp_lines(printed: list[str]) -> dict[str, str]:
    """name -> the rest of its cmp line."""
    return {line.split(" | ")[0].strip(): line for line in printed if " | exact: " in line}


def all_right(lines: dict[str, str]) -> bool:
    return bool(lines) and all("| approximate: True " in line for line in lines.values())


def test_the_notebooks_batchnorm_lines_are_the_declared_fused_op(lecture_dataset):
    bp = run_backward(LECTURE, lecture_dataset, "fused")
    scope = {"hprebn": bp.values["hprebn"], "bngain": bp.params["bngain"], "bnbias": bp.params["bnbias"]}
    op = OPS_BY_NAME["batchnorm"]
    exec(op.notebook, scope)
    declared = op.forward(type("V", (), scope))
    assert set(declared) == {*op.outputs, *op.saves}  # what it saves is what the declaration says it saves
    for name in declared:
        assert torch.equal(scope[name], declared[name]), name


@pytest.mark.slow
def test_the_exported_exercise_1_cell_runs_and_prints_what_the_explorer_checks(tmp_path, lecture_dataset):
    name, content = export("atomic", LECTURE, "py", cell=EXERCISE_1)
    assert name == "backprop_atomic_cell.py"
    printed = run_py(tmp_path, name, content)
    lines = cmp_lines(printed)
    assert list(lines) == ATOMIC_ORDER and all_right(lines)
    # bit-exact down to b2, as in the lecture
    assert [k for k, line in lines.items() if "exact: True " in line] == ATOMIC_ORDER[: ATOMIC_ORDER.index("hpreact")]
    # the same net, batch and numbers as the explorer's: its loss, and its check lines
    bp = run_backward(LECTURE, lecture_dataset, "atomic")
    assert f"loss {bp.loss!r}" in printed
    assert list(lines.values()) == [c["text"] for c in grade_cell(bp, EXERCISE_1)["checks"]]


@pytest.mark.slow
def test_a_wrong_line_prints_false_from_where_it_is_wrong(tmp_path):
    wrong = EXERCISE_1.replace("dcounts_sum = (-counts_sum**-2)", "dcounts_sum = (counts_sum**-2)")
    lines = cmp_lines(run_py(tmp_path, "wrong.py", export("atomic", LECTURE, "py", cell=wrong)[1]))
    right = [k for k, line in lines.items() if "| approximate: True " in line]
    assert right == ["logprobs", "probs", "counts_sum_inv"]  # upstream of the wrong line; everything after it False
    assert "counts_sum      | exact: False | approximate: False" in lines["counts_sum"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "cell", "names"),
    [
        ("fused_ce", EXERCISE_2 + "cmp('logits', dlogits, logits) # my maxdiff is 6e-9\n", ["logits"]),
        ("fused_bn", EXERCISE_3, ["hprebn"]),
        ("fused", EXERCISE_4, FUSED_ORDER),
    ],
)
def test_the_exported_exercise_2_3_and_4_cells_run_right(tmp_path, lecture_dataset, mode, cell, names):
    name, content = export(mode, LECTURE, "py", cell=cell)
    printed = run_py(tmp_path, name, content)
    lines = cmp_lines(printed)
    assert list(lines) == names and all_right(lines)
    assert f"loss {run_backward(LECTURE, lecture_dataset, mode).loss!r}" in printed


@pytest.mark.slow
def test_solved_steps_run_with_the_lectures_lines_in_the_gaps(tmp_path, lecture_dataset):
    bp = run_backward(LECTURE, lecture_dataset, "atomic")
    mine = notebook_steps(bp, NOTEBOOK["atomic"])
    steps = {k: mine[k - 1] for k in (1, 2, 3, 5, 9)}  # 4 and 6-8 not solved; the last solved is 9 (logits)
    content = export("atomic", LECTURE, "py", steps=steps)[1]
    text = content.decode()
    assert text.count("# (not solved in the explorer: the lecture's line)") == 4
    lines = cmp_lines(run_py(tmp_path, "steps.py", content))
    assert list(lines) == ATOMIC_ORDER[: ATOMIC_ORDER.index("b2") + 1] and all_right(lines)  # logits: h, W2, b2


@pytest.mark.slow
def test_the_exported_notebook_runs_in_a_kernel(tmp_path, monkeypatch):
    cell = EXERCISE_4 + EXERCISE_4_GRADS + EXERCISE_4_CHECK  # the training loop's block and the notebook's check
    name, content = export("fused", LECTURE, "ipynb", cell=cell)
    assert name == "backprop_fused_cell.ipynb"
    nb = nbformat.reads(content.decode(), as_version=4)
    nbformat.validate(nb)
    monkeypatch.setenv("NAMES_TXT", str(LECTURE_DATA))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs).splitlines()
    lines = cmp_lines(printed)
    # one line per parameter, labelled with its shape, as the notebook's check prints them
    assert list(lines) == ["(27, 10)", "(30, 64)", "(64,)", "(64, 27)", "(27,)", "(1, 64)"] and all_right(lines)
    assert sum(" | exact: " in line for line in printed) == 7  # bngain and bnbias are both (1, 64)
    # and a wrong line shows False, in the kernel too
    wrong = cell.replace("dW2 = h.T @ dlogits", "dW2 = h.T @ dlogits * 2")
    nb = nbformat.reads(export("fused", LECTURE, "ipynb", cell=wrong)[1].decode(), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs).splitlines()
    assert [line.split(" | ")[2] for line in printed if line.startswith("(64, 27)")] == ["approximate: False"]


def test_post_export_is_a_download(lecture_dataset):
    app = create_app(lecture_dataset)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.post("/api/export", json={"mode": "fused_bn", "code": EXERCISE_3, "format": "ipynb"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/x-ipynb+json"
        assert r.headers["content-disposition"] == 'attachment; filename="backprop_fused_bn_cell.ipynb"'
        cells = json.loads(r.content)["cells"]
        code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert EXERCISE_3.strip() in code and "dhpreact = (1.0 - h**2) * dh" in code  # and the lines before it
        r = client.post("/api/export", json={"steps": [{"step": 1, "code": "dlogprobs = -1.0/n"}]})
        assert r.headers["content-type"].startswith("text/x-python")
        assert "# step 1: backprop through loss = -logprobs[range(n), Yb].mean()\ndlogprobs = -1.0/n\n" in r.text
        for body, reason in [
            ({"code": "import os"}, "only assignments"),
            ({"code": "x = open('f').read()"}, ".read is not available"),
            ({"steps": [{"step": 2, "code": "torch.save(probs, 'x')"}]}, "step 2: "),
            ({"mode": "fused", "steps": [{"step": 8, "code": "x = 1"}]}, "past the end"),
            ({"code": "x = 1", "steps": [{"step": 1, "code": "x = 1"}]}, "one of the two"),
            ({"code": "x = 1", "format": "pdf"}, "'py' or 'ipynb'"),
        ]:
            r = client.post("/api/export", json=body)
            assert r.status_code == 422 and reason in r.text, (body, r.text)


# --- the export refuses what a check refuses, with the same reason ------------------------------------------------

# every payload here is refused by a check; an export that only parsed let each through into a file that runs it
REFUSED_BY_A_CHECK = [
    # rebinding what the lecture's file calls: range = chr, range = exec builds and runs a command when opened
    ("range = chr\nx = range(111)", "there is no chr here"),
    ("range = logits * 0", "range cannot be reassigned"),
    ("x = chr", "there is no chr here"),
    ("x = exec", "there is no exec here"),
    ("chr = logits * 0\nx = chr", "chr is a name Python has"),
    ("print = logits * 0", "print is a name Python has"),
    ("for print in range(3):\n  x = 1", "print is a name Python has"),
    ("for range in range(3):\n  x = 1", "would hide range"),
    ("torch = logits", "torch cannot be reassigned"),
    ("x = torch.exp", "torch can only be called"),
    ("x = torch.save(logits)", ".save is not available"),
    ("n = 5", "n cannot be reassigned"),
    ("logits = logits * 2", "logits is a tensor of the forward pass"),
    # the lecture's own names that a check's scope does not have: the file would hand them out
    ("x = words", "there is no words here"),
    ("x = stoi", "there is no stoi here"),
    ("x = cmp", "there is no cmp here"),
    ("x = parameters", "there is no parameters here"),
    # attributes: static, before anything runs
    ("x = logits.sum", ".sum is a method"),
    ("x = logits.data", ".data is not available"),
    ("x = logits.T(1)", ".T(...) is not available"),
    ("x = logits.T\nx.index_add_(0, Yb, logits)", "x is shared (.index_add_"),
    # writes into forward tensors and inputs, in loop bodies that run or not
    ("W2 *= 0.0", "W2 is shared (mult-assignment"),
    ("for k in range(0):\n  W2 *= 0.0", "W2 is shared (mult-assignment"),
    ("for k in range(n - n):\n  Yb *= 0", "Yb is shared (mult-assignment"),
    ("x = +W2\nx *= 0.0", "x is shared (mult-assignment"),
    ("x = logits.float()\nx[0] = 0.0", "x is shared (item assignment"),
    ("x = torch.zeros_like(W2)\nfor k in range(2):\n  x += 1\n  x = W2.T", "x is shared (add-assignment"),
]


@pytest.mark.parametrize(("code", "reason"), REFUSED_BY_A_CHECK)
def test_the_export_refuses_what_a_check_refuses_with_the_same_reason(lecture_dataset, code, reason):
    from server.learner.challenge import grade

    bp = run_backward(LECTURE, lecture_dataset, "fused")
    with pytest.raises(Refused) as checked:
        grade_cell(bp, code)
    assert reason in str(checked.value)
    with pytest.raises(Refused) as exported:
        export("fused", LECTURE, "py", cell=code)
    assert str(exported.value) == str(checked.value)
    with pytest.raises(Refused) as checked:
        grade(bp, 1, code)
    assert reason in str(checked.value)
    with pytest.raises(Refused) as exported:
        export("fused", LECTURE, "ipynb", steps={1: code})
    assert str(exported.value) == f"step 1: {checked.value}"


def test_an_exported_cells_grads_name_what_it_defines():
    code = EXERCISE_4 + "\ngrads = [dC, dW1, db1, dW2, chr, dbngain, dbnbias]"
    with pytest.raises(Refused, match="grads lists chr, which the cell does not define"):
        export("fused", LECTURE, "py", cell=code)
