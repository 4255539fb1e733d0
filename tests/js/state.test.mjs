// The page's state and its URL (frontend/js/state.js): a URL is a permalink, defaults stay out of it.
import assert from "node:assert/strict";
import { test } from "node:test";

import { apiParams, defaults, fromURL, toURL } from "../../frontend/js/state.js";
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
  const search = "?seed=7&dtype=float64&bug=bessel_n&mode=fused&step=5&node=h&slice=2&pin=1&view=diff";
  const state = fromURL(search, META);
  assert.equal(state.config.seed, 7);
  assert.equal(typeof state.config.seed, "number");
  assert.deepEqual([state.mode, state.step, state.node, state.slice, state.pinned, state.view], ["fused", 5, "h", 2, true, "diff"]);
  assert.deepEqual(fromURL(toURL(state, META), META), state);
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
