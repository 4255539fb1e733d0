// The inspector's pure parts (frontend/js/panel.js): the check line and what each of the four panels shows.
import assert from "node:assert/strict";
import { test } from "node:test";

import { cmpLine, cutOf, entryOf, panelsOf, sliceQuery } from "../../frontend/js/panel.js";

const tensor = (min, max, shape = [2, 2]) => ({ shape, min, max, nonfinite: { nan: 0, posinf: 0, neginf: 0 } });

test("the check line reads like the lecture's cmp(), or names both shapes", () => {
  assert.equal(cmpLine({ exact: true, approx: true, maxdiff: 0, rel_err: 0 }), "exact: True | approximate: True | maxdiff: 0.0 | relative error: 0.00");
  assert.equal(cmpLine({ exact: false, approx: true, maxdiff: 4.656612873077393e-10 }), "exact: False | approximate: True | maxdiff: 4.656612873077393e-10");
  assert.equal(cmpLine({ shape_ok: false, shape: [32, 27], expected_shape: [32, 1] }), "shape (32,27), expected (32,1)");
  assert.equal(cmpLine({ exact: false, approx: false, maxdiff: null }), "exact: False | approximate: False | maxdiff: NaN/Inf");
});

test("an exactly equal difference says so; gradients share one zero-centred range", () => {
  const detail = { status: "complete", value: tensor(-1, 1), grad_manual: tensor(-0.02, 0.01), grad_autograd: tensor(-0.03, 0.01), diff: tensor(0, 0), cmp: {} };
  const p = panelsOf(detail);
  assert.equal(p.diff.empty, "identical: 0 everywhere");
  assert.equal(p.manual.range, 0.03);
  assert.equal(p.autograd.range, 0.03);
  assert.equal(p.value.range, null); // values on their own scale
});

test("a partial gradient is titled k of m and compared with its own paths' reference", () => {
  const detail = { status: "partial", contributions: [1, 2], reference: "through contribution 1 of 2", value: tensor(0, 1),
    grad_manual: tensor(-1, 1), grad_autograd: tensor(-1, 1), diff: tensor(-1e-9, 1e-9), cmp: {} };
  const p = panelsOf(detail);
  assert.equal(p.manual.title, "manual grad: 1 of 2 contributions");
  assert.equal(p.autograd.title, "autograd grad (through contribution 1 of 2)");
  assert.equal(p.diff.empty, "");
});

test("a wrong-shaped gradient has nothing to subtract; a node not reached says so", () => {
  const wrong = { status: "complete", value: tensor(0, 1, [32, 1]), grad_manual: tensor(-1, 1, [32, 27]), grad_autograd: tensor(-1, 1, [32, 1]),
    diff: null, cmp: { shape_ok: false } };
  assert.match(panelsOf(wrong).diff.empty, /^shapes differ: manual \(32,27\), expected \(32,1\)/);
  const pending = { status: "pending", value: tensor(0, 1), grad_manual: null, grad_autograd: tensor(-1, 1), diff: null, cmp: null };
  assert.equal(panelsOf(pending).manual.empty, "not reached yet at this step");
});

test("a shape mismatch prints the server's sentence, never a maxdiff of null", () => {
  const said = "shape (32,27) against autograd's (32,1): no difference to measure";
  const cmp = { exact: false, approx: false, maxdiff: null, rel_err: null, shape_ok: false, shape: [32, 27],
    expected_shape: [32, 1], shape_mismatch: said };
  assert.equal(cmpLine(cmp), said);
  assert.doesNotMatch(cmpLine(cmp), /maxdiff|null|NaN/);
});

test("a 3-D node is cut where the state asks, inside its axes; a hovered cell names its full index", () => {
  const detail = { shape: [32, 4, 128], axes: ["batch", "pair", "hidden"] };
  assert.deepEqual(cutOf(detail), { rows: 1, cols: 2, cut: 0, index: 0 }); // batch row 0: pair × hidden
  assert.deepEqual(cutOf(detail, { slice: 40, axes: null }), { rows: 1, cols: 2, cut: 0, index: 31 });
  const at = cutOf(detail, { slice: 3, axes: [0, 2] });
  assert.deepEqual(at, { rows: 0, cols: 2, cut: 1, index: 3 });
  assert.deepEqual(entryOf(detail, [7, 100], at), [7, 3, 100]);
  assert.equal(cutOf({ shape: [32, 27], axes: ["batch", "vocab"] }, { slice: 3, axes: [0, 2] }), null);
  assert.deepEqual(entryOf({ shape: [32, 27] }, [5, 6], null), [5, 6]);
});

test("a large 3-D node is asked for as the slice drawn; a small one, or another rank, whole", () => {
  const big = { shape: [32, 4, 128], axes: ["batch", "time", "hidden"] };
  assert.deepEqual(sliceQuery(big), { slice_dim: 0, slice_index: 0 });
  assert.deepEqual(sliceQuery(big, { slice: 3, axes: [0, 2] }), { slice_dim: 1, slice_index: 3 });
  assert.deepEqual(sliceQuery(big, { slice: 99, axes: null }), { slice_dim: 0, slice_index: 31 });
  assert.deepEqual(sliceQuery({ shape: [32, 3, 10], axes: ["batch", "context", "embd"] }), {});
  assert.deepEqual(sliceQuery({ shape: [512, 200], axes: ["batch", "hidden"] }), {});
  assert.deepEqual(sliceQuery(null), {});
});
