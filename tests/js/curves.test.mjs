// The training page's update-ratio plot (frontend/js/curves.js): one colour per weight matrix the server lists.
import assert from "node:assert/strict";
import { test } from "node:test";

import { renderUpdateRatio } from "../../frontend/js/curves.js";

globalThis.Plotly = { react: (el, traces) => traces }; // the renderer's traces, without a page

const run = (names) => ({ id: 1, ud: [[0, Object.fromEntries(names.map((n) => [n, -3]))]] });

test("the lecture's weight matrices keep their colours", () => {
  const colors = renderUpdateRatio(null, run(["C", "W1", "W2"])).slice(0, 3).map((t) => [t.name, t.line.color]);
  assert.deepEqual(colors, [["C", "#009E73"], ["W1", "#0072B2"], ["W2", "#CC79A7"]]);
});

test("a weight matrix of a layer more gets a colour of its own, with no entry for its name", () => {
  const traces = renderUpdateRatio(null, run(["C", "W1", "W3", "W2"])).slice(0, 4);
  assert.deepEqual(traces.map((t) => t.name), ["C", "W1", "W3", "W2"]);
  assert.equal(new Set(traces.map((t) => t.line.color)).size, 4);
  assert.ok(traces.every((t) => /^#[0-9A-F]{6}$/.test(t.line.color)));
});
