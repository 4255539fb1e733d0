// The page's state and its URL (frontend/js/state.js): a URL is a permalink, defaults stay out of it.
import assert from "node:assert/strict";
import { test } from "node:test";

import { apiParams, defaults, fromURL, parseURL, toURL } from "../../frontend/js/state.js";
import { META } from "./meta.mjs";

test("a bare URL is the server's defaults at step 0", () => {
  const state = fromURL("", META);
  assert.deepEqual(state.config, { seed: 1234, batch_size: 32, dtype: "float32", bug: "" });
  assert.equal(state.mode, "atomic");
  assert.equal(state.step, 0);
  assert.equal(state.view, "manual");
  assert.equal(state.pinned, false);
  assert.equal(toURL(state, META), "?step=0");
});

test("every field round-trips through the URL, numbers as numbers", () => {
  const search = "?seed=7&dtype=float64&bug=bessel_n&mode=fused&step=5&node=h&axes=2,0&slice=2&pin=1&view=diff";
  const state = fromURL(search, META);
  assert.equal(state.config.seed, 7);
  assert.equal(typeof state.config.seed, "number");
  assert.deepEqual([state.mode, state.step, state.node, state.slice, state.axes, state.pinned, state.view], ["fused", 5, "h", 2, [2, 0], true, "diff"]);
  assert.deepEqual(fromURL(toURL(state, META), META), state);
  // a 3-D node's own map (no axes asked) stays out of the URL, and so does slice 0
  const plain = fromURL("?step=3&node=emb", META);
  assert.deepEqual([plain.axes, plain.slice], [null, 0]);
  assert.equal(toURL(plain, META), "?step=3&node=emb");
});

test("a value equal to its default is left out; an unknown mode or view falls back", () => {
  const url = toURL({ ...fromURL("", META), config: { ...defaults(META), seed: 1234, batch_size: 16 } }, META);
  assert.equal(url, "?batch_size=16&step=0");
  const state = fromURL("?mode=fused_everything&view=sideways&step=-3", META);
  assert.deepEqual([state.mode, state.view, state.step], ["atomic", "manual", 0]);
});

test("the API's parameters are the config, the mode and (unless left out) the step", () => {
  const state = fromURL("?mode=fused&step=3&seed=9", META);
  assert.deepEqual(apiParams(state), { seed: 9, batch_size: 32, dtype: "float32", bug: "", mode: "fused", step: 3 });
  assert.equal("step" in apiParams(state, false), false);
});

test("each bad parameter of a URL is named with what is shown instead, at the nearest valid state", () => {
  const bugModes = { bessel_n: ["atomic"] };
  const cases = [
    ["?bug=nonsense", (s) => s.config.bug === "", /^bug=nonsense is not one of bessel_n: showing no bug$/],
    ["?step=99", (s) => s.step === 20, /^step=99 is past the last step of Exercise 1: showing step 20$/],
    ["?mode=fused&step=99", (s) => s.step === 7, /showing step 7$/],
    ["?batch_size=1", (s) => s.config.batch_size === 32, /^batch_size=1 is below the minimum, 2: showing batch_size=32$/],
    ["?seed=-1", (s) => s.config.seed === 1234, /^seed=-1 is below the minimum, 0: showing seed=1234$/],
    ["?seed=1.5", (s) => s.config.seed === 1234, /^seed=1.5 is not a whole number/],
    ["?seed=", (s) => s.config.seed === 1234, /^seed= is not a whole number/],
    ["?mode=fused&bug=bessel_n", (s) => s.mode === "fused" && s.config.bug === "", /bessel_n sits in an op this mode \(Exercises 2\+3\) fuses away: showing no bug$/],
    ["?mode=foo", (s) => s.mode === "atomic", /^there is no mode "foo": showing Exercise 1$/],
    ["?view=sideways", (s) => s.view === "manual", /^view=sideways is not one of value, manual, autograd, diff: showing manual$/],
    ["?step=-3", (s) => s.step === 0, /^step=-3 is not a step: showing step 0$/],
    ["?slice=-1", (s) => s.slice === 0, /^slice=-1 is not an index: showing slice 0$/],
    ["?slice=1.5", (s) => s.slice === 0, /^slice=1.5 is not an index/],
    ["?axes=1,1", (s) => s.axes === null, /^axes=1,1 is not two different axes of a 3-D tensor .*showing the node's own map$/],
    ["?axes=0,3", (s) => s.axes === null, /^axes=0,3 is not two different axes/],
    ["?axes=rows", (s) => s.axes === null, /^axes=rows is not two different axes/],
  ];
  for (const [search, valid, note] of cases) {
    const { state, notes } = parseURL(search, META, bugModes);
    assert.ok(valid(state), search);
    assert.equal(notes.length, 1, search);
    assert.match(notes[0], note, search);
  }
  // a valid URL has nothing to say
  assert.deepEqual(parseURL("?mode=atomic&bug=bessel_n&step=20&seed=0", META, bugModes).notes, []);
});

test("a bug is checked against the net's own bugs, not every net's choices", () => {
  const meta = { ...META, config: { ...META.config, bug: { ...META.config.bug, choices: ["", "bessel_n", "ln_batch_dim"] } } };
  const { state, notes } = parseURL("?bug=ln_batch_dim", meta, { bessel_n: ["atomic"] });
  assert.equal(state.config.bug, "");
  assert.deepEqual(notes, ["bug=ln_batch_dim is not one of bessel_n: showing no bug"]);
  assert.equal(parseURL("?bug=ln_batch_dim", meta, { ln_batch_dim: ["atomic"] }).state.config.bug, "ln_batch_dim");
});
