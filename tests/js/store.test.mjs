// Where the pages keep a net's challenge progress and training code: the lecture's net under the keys it always had.
import assert from "node:assert/strict";
import { test } from "node:test";

import { CHALLENGE_KEY, TRAIN_CODE_KEY, progressKey, trainCodeKey } from "../../frontend/js/store.js";

test("the lecture's progress and code keep their keys; another net's are its own", () => {
  assert.equal(CHALLENGE_KEY, "backprop-explorer:challenge"); // progress saved before there were nets is found
  assert.equal(progressKey("makemore4", "atomic", "makemore4"), "atomic");
  assert.equal(progressKey(undefined, "fused", "makemore4"), "fused");
  assert.equal(progressKey("layernorm", "atomic", "makemore4"), "layernorm/atomic");
  assert.notEqual(progressKey("layernorm", "fused", "makemore4"), progressKey("makemore4", "fused", "makemore4"));
  assert.equal(trainCodeKey("makemore4", "makemore4"), "backprop-explorer:train-code");
  assert.equal(trainCodeKey("layernorm", "makemore4"), `${TRAIN_CODE_KEY}:layernorm`);
});
