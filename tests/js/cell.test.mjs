// The whole-cell editor's text (frontend/js/cell.js): the task from /api/meta's cell, a graded cell as HTML.
import assert from "node:assert/strict";
import { test } from "node:test";

import { cellResultHtml, cellScopeText, cellTaskHtml } from "../../frontend/js/cell.js";

const EXERCISE_3 = { exercise: "Exercise 3", about: "dhprebn in one go", grads: ["dhprebn"], given: ["dlogprobs", "dprobs", "dcounts_sum_inv", "dhpreact"] };

test("the task names the cell's gradients and a cmp line of its own", () => {
  const html = cellTaskHtml(EXERCISE_3);
  assert.match(html, /<b>Exercise 3<\/b>: write dhprebn in one go, as one cell: <b>dhprebn<\/b>/);
  assert.match(html, /<code>cmp\('hprebn', dhprebn, hprebn\)<\/code>/);
  const atomic = cellTaskHtml({ ...EXERCISE_3, grads: ["dlogprobs", "dprobs", "dcounts", "dC"] });
  assert.match(atomic, /dlogprobs … dC \(4\)/);
  assert.match(cellScopeText(EXERCISE_3), /the gradients before this cell \(dlogprobs … dhpreact \(4\)\)/);
  assert.doesNotMatch(cellScopeText({ ...EXERCISE_3, given: [] }), /before this cell/);
});

const line = (name, ok) => `${name.padEnd(15)} | exact: False | approximate: ${ok ? "True " : "False"} | maxdiff: 0.5`;
const check = (name, ok, feedback = []) => ({ name, grad: `d${name}`, ok, text: line(name, ok), feedback });

test("a wrong cell: how many differ, the first wrong line and its feedback, every cmp line escaped", () => {
  const result = {
    exercise: "Exercise 1", correct: false, notes: [],
    checks: [check("probs", true), check("counts", false, ["dcounts holds 1 of its 2 contributions"])],
    printed: [],
    first_wrong: { line: 5, code: "dcounts = a < b\nmore", name: "dcounts", feedback: ["dcounts is 2× autograd's"] },
  };
  const html = cellResultHtml(result);
  assert.match(html, /1 of 2 gradients differ from autograd's; the first wrong line is line 5/);
  assert.match(html, /<b>line 5<\/b> <code>dcounts = a &lt; b …<\/code><ul><li>dcounts is 2× autograd's<\/li><\/ul>/);
  assert.match(html, /<span class="cmp-line same">probs {11}\| exact/);
  assert.match(html, /<span class="cmp-line differs">counts/);
  assert.match(html, /data-testid="cell-notes"><li>dcounts holds 1 of its 2 contributions<\/li>/);
  assert.doesNotMatch(html, /cell-printed/); // no cmp lines of its own
});

test("a right cell; its own cmp lines are shown only where they say something else", () => {
  const checks = [check("logits", true)];
  const same = { exercise: "Exercise 2", correct: true, notes: [], checks, first_wrong: null,
    printed: [{ line: 4, text: checks[0].text, ok: true }] };
  assert.match(cellResultHtml(same), /✓<\/span> Exercise 2: every gradient of the cell matches autograd's/);
  assert.doesNotMatch(cellResultHtml(same), /cell-printed/);
  const other = { ...same, printed: [{ line: 2, text: line("counts", false), ok: false }] };
  assert.match(cellResultHtml(other), /your cmp\(\.\.\.\) lines print:.*data-testid="cell-printed".*counts/s);
});
