// The teacher's class page renderers (frontend/js/classview.js): bars, the commonest slip, the slowest steps.
import assert from "node:assert/strict";
import { test } from "node:test";

import { slowest, slowestHtml, stepAsks, stepLabel, stepsHtml, topSlip } from "../../frontend/js/classview.js";

const step = (s) => ({ net: "makemore4", mode: "atomic", step: 1, attempts: 0, students: 0, solved: 0,
  median_attempts_to_solve: null, slips: {}, slip_texts: {}, ...s });

test("the slowest steps: most students not solved first, then most checks to solve; unchecked steps left out", () => {
  const steps = [
    step({ step: 1, attempts: 9, students: 6, solved: 3, median_attempts_to_solve: 2 }),
    step({ step: 2, attempts: 5, students: 4, solved: 1, median_attempts_to_solve: 4 }),
    step({ step: 3, attempts: 7, students: 3, solved: 1, median_attempts_to_solve: 2 }),
    step({ step: null, mode: "fused_ce", attempts: 1, students: 1, solved: 1, median_attempts_to_solve: 1 }),
    step({ step: 4 }),
  ];
  // steps 1 and 2 have 3 students each not solved yet: step 2 took more checks to solve
  assert.deepEqual(slowest(steps).map((s) => s.step), [2, 1, 3]);
  assert.deepEqual(slowest(steps, 10).map((s) => s.step), [2, 1, 3, null]);
  assert.match(slowestHtml(steps), /^<li>atomic · step 2: 3 of 4 not solved yet, median 4 checks to solve<\/li>/);
});

test("a step's bar is its solved share; the commonest slip comes with the line the students saw, escaped", () => {
  const s = step({ attempts: 1, students: 4, solved: 1, median_attempts_to_solve: 1,
    slips: { "factor n": 3, sign: 1 }, slip_texts: { "factor n": "dx is 32× <autograd's>", sign: "flipped" } });
  assert.deepEqual(topSlip(s), ["factor n", 3, "dx is 32× <autograd's>"]);
  const html = stepsHtml([s]);
  assert.match(html, /style="width:25.0%"/);
  assert.match(html, /1 of 4 solved · 1 check · median 1 to solve/);
  assert.match(html, /most common slip: <b>factor n<\/b> \(3×\) — <q>dx is 32× &lt;autograd's&gt;<\/q>/);
  assert.equal(topSlip(step({})), null);
  assert.doesNotMatch(stepsHtml([step({ attempts: 2, students: 1 })]), /median|most common slip/);
  assert.match(stepsHtml([step({ step: null })]), /whole cell/);
  assert.match(stepsHtml([]), /No checks yet/);
});

test("a step is named by its mode's label, and by its net's title where the class used more than one net", () => {
  const names = { nets: { makemore4: "The lecture's MLP" }, modes: { "makemore4/atomic": "Exercise 1: atomic" } };
  assert.equal(stepLabel(step({ step: 3 }), names), "Exercise 1: atomic · step 3");
  assert.equal(stepLabel(step({ step: null, mode: "fused" }), names), "fused · whole cell"); // not known yet: its name
  assert.equal(stepLabel(step({}), names, true), "The lecture's MLP · Exercise 1: atomic · step 1");
  const two = stepsHtml([step({ attempts: 1, students: 1 }), step({ net: "layernorm", attempts: 1, students: 1 })], names);
  assert.match(two, /The lecture's MLP · Exercise 1: atomic · step 1/);
  assert.match(two, /layernorm · atomic · step 1/);
});

test("a step names the gradients it asks for, once the mode's graph is known: both of a two-gradient step", () => {
  const graph = {
    schedule: ["probs", "logprobs"],
    ops: [
      { name: "logprobs", rules: [{ target: "probs" }] },
      { name: "probs", rules: [{ target: "counts" }, { target: "counts_sum_inv" }, { target: "counts" }] },
    ],
  };
  const names = { modes: {}, asks: { "makemore4/atomic": stepAsks(graph) } };
  assert.deepEqual(stepAsks(graph), ["dcounts, dcounts_sum_inv", "dprobs"]);
  assert.equal(stepLabel(step({ step: 1 }), names), "atomic · step 1 · dcounts, dcounts_sum_inv");
  assert.equal(stepLabel(step({ step: 2 }), names), "atomic · step 2 · dprobs");
  assert.equal(stepLabel(step({ step: null }), names), "atomic · whole cell"); // a cell asks for the whole mode
  assert.equal(stepLabel(step({ step: 1, mode: "fused" }), names), "fused · step 1"); // not known yet
});
