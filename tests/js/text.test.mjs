// Pure text helpers (frontend/js/text.js): Python's float repr, the notebook's cmp line and check cell.
import assert from "node:assert/strict";
import { test } from "node:test";

import { checkCell, cmpLine, pyFloat } from "../../frontend/js/text.js";

test("floats print as Python's repr() prints them", () => {
  // the right-hand sides are what CPython 3.11 prints for repr(x)
  const cases = [
    [0, "0.0"], [-0, "-0.0"], [1, "1.0"], [0.5, "0.5"], [1e-4, "0.0001"], [1e-5, "1e-05"],
    [7.450580596923828e-09, "7.450580596923828e-09"], [4.656612873077393e-10, "4.656612873077393e-10"],
    [0.0011641532182693481, "0.0011641532182693481"], [123.25, "123.25"], [1e15, "1000000000000000.0"],
    [1e16, "1e+16"], [1.5e16, "1.5e+16"], [-2.5e-7, "-2.5e-07"], [1e100, "1e+100"], [0.1 + 0.2, "0.30000000000000004"],
    [null, "nan"], [Infinity, "inf"], [-Infinity, "-inf"],
  ];
  for (const [x, want] of cases) assert.equal(pyFloat(x), want, `repr(${x})`);
});

test("a cmp line is the notebook's f-string", () => {
  assert.equal(cmpLine("logprobs", { exact: true, approx: true, maxdiff: 0, shape_ok: true }),
    "logprobs        | exact: True  | approximate: True  | maxdiff: 0.0");
  assert.equal(cmpLine("hpreact", { exact: false, approx: true, maxdiff: 9.313225746154785e-10, shape_ok: true }),
    "hpreact         | exact: False | approximate: True  | maxdiff: 9.313225746154785e-10");
  assert.equal(cmpLine("counts_sum_inv", { shape_ok: false, shape: [32, 27], expected_shape: [32, 1] }),
    "counts_sum_inv  | shape (32, 27), expected (32, 1)");
});

test("the check cell: complete gradients in completion order, ties in the notebook's, partial ones as comments", () => {
  const graph = {
    schedule: ["hpreact", "h"],
    ops: [
      { name: "h", rules: [{ target: "hpreact" }] },
      { name: "hpreact", rules: [{ target: "bngain" }, { target: "bnraw" }, { target: "bnbias" }] },
    ],
  };
  const cmp = (exact, maxdiff, rel) => ({ exact, approx: true, maxdiff, rel_err: rel, shape_ok: true });
  const view = { nodes: {
    hpreact: { status: "complete", contributions: [1, 1], cmp: cmp(false, 1e-9, 2e-7) },
    bngain: { status: "complete", contributions: [1, 1], cmp: cmp(true, 0, 0) },
    bnraw: { status: "partial", contributions: [1, 2], cmp: cmp(true, 0, 0) },
    bnbias: { status: "complete", contributions: [1, 1], cmp: cmp(true, 0, 0) },
    loss: { status: "complete", contributions: [1, 1], cmp: null },
  } };
  assert.deepEqual(checkCell(view, graph, ["hpreact", "bngain", "bnbias", "bnraw"]), [
    "bngain          | exact: True  | approximate: True  | maxdiff: 0.0 | relative error: 0.00e+0",
    "bnbias          | exact: True  | approximate: True  | maxdiff: 0.0 | relative error: 0.00e+0",
    "# bnraw: 1 of 2 contributions so far (its cmp comes with the last)",
    "hpreact         | exact: False | approximate: True  | maxdiff: 1e-09 | relative error: 2.00e-7",
  ]);
});

test("a cmp line of a shape mismatch is the name and the server's sentence, without a maxdiff", () => {
  const said = "shape (32,27) against autograd's (32,1): no difference to measure";
  const cmp = { exact: false, approx: false, maxdiff: null, rel_err: null, shape_ok: false, shape: [32, 27],
    expected_shape: [32, 1], shape_mismatch: said };
  assert.equal(cmpLine("counts_sum_inv", cmp), `counts_sum_inv  | ${said}`);
  const view = { nodes: { counts_sum_inv: { status: "complete", cmp } } };
  const graph = { schedule: ["counts_sum_inv"], ops: [{ name: "counts_sum_inv", rules: [{ target: "counts_sum_inv" }] }] };
  assert.deepEqual(checkCell(view, graph, []), [`counts_sum_inv  | ${said}`]);
});
