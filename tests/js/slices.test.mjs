// A 3-D tensor cut into the heatmap's 2-D map (frontend/js/slices.js), checked against indexing the nested data.
import assert from "node:assert/strict";
import { test } from "node:test";

import { LAYOUTS, clampIndex, defaultLayout, entryAt, layoutOf, layoutParam, parseLayout, sliceOf } from "../../frontend/js/slices.js";

// a (2, 3, 4) tensor whose entry [a, b, c] is the number abc: any slice's entries name where they came from
const SHAPE = [2, 3, 4];
const DATA = [0, 1].map((a) => [0, 1, 2].map((b) => [0, 1, 2, 3].map((c) => 100 * a + 10 * b + c)));

test("the six layouts use each axis once: two as the map, the third sliced", () => {
  assert.equal(LAYOUTS.length, 6);
  for (const l of LAYOUTS) assert.deepEqual([l.rows, l.cols, l.cut].sort(), [0, 1, 2]);
  assert.equal(new Set(LAYOUTS.map((l) => layoutParam([l.rows, l.cols]))).size, 6);
});

test("every layout's every slice holds the tensor's entries at the index each cell names", () => {
  for (const l of LAYOUTS) {
    for (let index = 0; index < SHAPE[l.cut]; index++) {
      const z = sliceOf(DATA, SHAPE, l, index);
      assert.equal(z.length, SHAPE[l.rows]);
      assert.equal(z[0].length, SHAPE[l.cols]);
      z.forEach((row, i) => row.forEach((v, j) => {
        const [a, b, c] = entryAt(l, index, i, j);
        assert.equal(v, 100 * a + 10 * b + c);
        assert.equal([a, b, c][l.rows], i);
        assert.equal([a, b, c][l.cols], j);
        assert.equal([a, b, c][l.cut], index);
      }));
    }
  }
});

test("the default map slices the batch axis at row 0 (a (B,T,T) attention map: query × key)", () => {
  assert.deepEqual(defaultLayout(["batch", "query", "key"]), { rows: 1, cols: 2, cut: 0 });
  assert.deepEqual(defaultLayout(["batch", "context", "embd"]), { rows: 1, cols: 2, cut: 0 });
  assert.deepEqual(defaultLayout(["context", "batch", "embd"]), { rows: 0, cols: 2, cut: 1 });
  assert.deepEqual(defaultLayout(["one", "one", "one"]), { rows: 1, cols: 2, cut: 0 }); // no batch axis: the first
  assert.deepEqual(sliceOf(DATA, SHAPE, defaultLayout(["batch", "query", "key"]), 0)[2], [20, 21, 22, 23]);
});

test("a layout asked for is used; none or a wrong one is the node's default", () => {
  assert.deepEqual(layoutOf(["batch", "context", "embd"], [2, 0]), { rows: 2, cols: 0, cut: 1 });
  assert.deepEqual(layoutOf(["batch", "context", "embd"], null), { rows: 1, cols: 2, cut: 0 });
  assert.deepEqual(layoutOf(["batch", "context", "embd"], [1, 1]), { rows: 1, cols: 2, cut: 0 });
});

test("the slice index stays inside its axis", () => {
  assert.deepEqual([clampIndex(5, 3), clampIndex(-1, 3), clampIndex(2, 3), clampIndex(1.5, 3)], [2, 0, 2, 0]);
});

test("a layout round-trips through its URL text; anything else is refused", () => {
  for (const l of LAYOUTS) assert.deepEqual(parseLayout(layoutParam([l.rows, l.cols])), [l.rows, l.cols]);
  for (const bad of ["", "1", "1,1", "0,3", "-1,0", "0,1,2", " 0,1", "a,b", null]) assert.equal(parseLayout(bad), null, String(bad));
  assert.equal(layoutParam(null), null);
});
