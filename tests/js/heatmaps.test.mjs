// The heatmaps' pure functions (frontend/js/heatmaps.js): grids, colour ranges, marginal sums, colour-bar ticks.
import assert from "node:assert/strict";
import { test } from "node:test";

import { absMax, as2d, colorAt, marginals, niceTicks, tickText } from "../../frontend/js/heatmaps.js";

test("colour-bar ticks are round numbers inside the range, at least three of them", () => {
  for (const [lo, hi] of [[-0.0123, 0.0123], [0.07, 1], [-3.2e-7, 3.2e-7], [-150, 2400], [1e-9, 1.5e-9]]) {
    const ticks = niceTicks(lo, hi);
    assert.ok(ticks.length >= 3 && ticks.length <= 11, `${lo}..${hi}: ${ticks}`);
    assert.ok(ticks.every((t) => t >= lo && t <= hi), `${lo}..${hi}: ${ticks}`);
    const step = ticks[1] - ticks[0];
    const mantissa = step / 10 ** Math.floor(Math.log10(step));
    assert.ok([1, 2, 2.5, 5].some((m) => Math.abs(mantissa - m) < 1e-6), `step ${step}`);
    ticks.slice(1).forEach((t, i) => assert.ok(Math.abs(t - ticks[i] - step) < step * 1e-9));
  }
  assert.deepEqual(niceTicks(2, 2), [2]); // an empty range: its one value
  // three asked for on a narrow bar: ±0.351 would get only 0 with a step of 0.5
  const narrow = niceTicks(-0.351, 0.351, 3);
  assert.ok(narrow.length >= 3 && narrow.includes(0) && narrow.every((t) => Math.abs(t) <= 0.351), `${narrow}`);
  assert.deepEqual(narrow, narrow.map((t) => (t === 0 ? 0 : -t)).reverse()); // symmetric, as the range is
});

test("tick labels are plain or scientific, never SI prefixes", () => {
  assert.equal(tickText(0), "0");
  assert.equal(tickText(0.25), "0.25");
  assert.equal(tickText(-12), "-12");
  assert.equal(tickText(2.5e-5), "2.5e-5");
  assert.equal(tickText(-1e-12), "-1e-12");
  assert.equal(tickText(3e7), "3e7");
  for (const v of [1e-15, 2e-9, 4.5e-6, 0.001, 7, 12345, 6e10]) assert.match(tickText(v), /^-?\d+(\.\d+)?(e-?\d+)?$/);
});

test("a colour range's end is the largest |entry| rounded up to three significant digits", () => {
  const t = (min, max) => ({ min, max });
  assert.equal(absMax(t(-0.01234, 0.005)), 0.0124);
  assert.equal(absMax(t(-1, 2), t(-3.001, 0)), 3.01);
  assert.equal(absMax(t(0, 0)), 0);
  assert.equal(absMax(null, t(-5, 5)), 5);
});

test("row and column sums skip NaN/Inf cells (sent as null)", () => {
  assert.deepEqual(marginals([[1, 2, null], [3, null, 4]]), { rows: [3, 7], cols: [4, 2, 4] });
});

test("any tensor becomes a 2-D grid with its labels; a 3-D one shows one slice", () => {
  const labels = [["r0", "r1"], ["c0", "c1", "c2"]];
  const two = as2d({ shape: [2, 3], data: [[1, 2, 3], [4, 5, 6]] }, labels, ["batch", "vocab"]);
  assert.deepEqual([two.z, two.x, two.y, two.xt], [[[1, 2, 3], [4, 5, 6]], ["c0", "c1", "c2"], ["r0", "r1"], "character"]);
  assert.deepEqual(as2d({ shape: [], data: 2.5 }, [], []).z, [[2.5]]);
  assert.deepEqual(as2d({ shape: [3], data: [1, 2, 3] }, [["a", "b", "c"]], ["hidden"]).z, [[1, 2, 3]]);
  // a 3-D one is the slice `at` asks for: rows, columns, their labels and titles from the two axes it keeps
  const t3 = { shape: [2, 3, 4], data: [0, 1].map((b) => [0, 1, 2].map((p) => [0, 1, 2, 3].map((e) => 100 * b + 10 * p + e))) };
  const labels3 = [["r0", "r1"], ["p0", "p1", "p2"], ["e0", "e1", "e2", "e3"]];
  const three = as2d(t3, labels3, ["batch", "context", "embd"], { rows: 0, cols: 2, cut: 1, index: 1 });
  assert.deepEqual(three.z, [[10, 11, 12, 13], [110, 111, 112, 113]]);
  assert.deepEqual([three.y, three.x, three.yt, three.xt], [labels3[0], labels3[2], "batch row: context → target", "embedding dimension"]);
  // left out: the batch row sliced at 0, the other two axes in order
  const first = as2d(t3, labels3, ["batch", "context", "embd"]);
  assert.deepEqual(first.z, [[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]]);
  assert.deepEqual([first.cut.cut, first.cut.index, first.y, first.x], [0, 0, labels3[1], labels3[2]]);
  // an axis the lecture has no words for is titled by its own name
  const other = as2d(t3, labels3, ["batch", "alpha", "beta"], { rows: 2, cols: 1, cut: 0, index: 1 });
  assert.deepEqual([other.yt, other.xt, other.z[3]], ["beta", "alpha", [103, 113, 123]]);
  // a slice the server sent alone (data: the other two dims in order) is drawn the same, either way round
  const sent = { shape: [2, 3, 4], slice: [1, 2], data: [[20, 21, 22, 23], [120, 121, 122, 123]] };
  const ways = [{ rows: 0, cols: 2, cut: 1, index: 2 }, { rows: 2, cols: 0, cut: 1, index: 2 }];
  for (const at of ways) {
    const mine = as2d(t3, labels3, ["batch", "context", "embd"], at), theirs = as2d(sent, labels3, ["batch", "context", "embd"], at);
    assert.deepEqual([theirs.z, theirs.x, theirs.y, theirs.cut], [mine.z, mine.x, mine.y, mine.cut]);
  }
});

test("a colour scale's ends and stops are its own colours, in between interpolated", () => {
  const scale = [[0, "#000000"], [0.5, "#ff0000"], [1, "#ffffff"]];
  assert.equal(colorAt(scale, 0), "rgb(0,0,0)");
  assert.equal(colorAt(scale, 0.5), "rgb(255,0,0)");
  assert.equal(colorAt(scale, 0.75), "rgb(255,128,128)");
  assert.equal(colorAt(scale, 7), "rgb(255,255,255)"); // clamped
});
