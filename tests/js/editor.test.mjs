// The code box's typing aids (frontend/js/editor.js): indentation on Enter, rows that fit the code.
import assert from "node:assert/strict";
import { test } from "node:test";

import { MAX_ROWS, MIN_ROWS, newlineAt, rowsFor } from "../../frontend/js/editor.js";

test("Enter indents the body of a for line and keeps the indentation inside it", () => {
  const loop = "dC = torch.zeros_like(C)\nfor k in range(Xb.shape[0]):";
  assert.equal(newlineAt(loop, loop.length), "\n  ");
  const inner = loop + "\n  for j in range(Xb.shape[1]):";
  assert.equal(newlineAt(inner, inner.length), "\n    ");
  const body = inner + "\n    ix = Xb[k,j]";
  assert.equal(newlineAt(body, body.length), "\n    ");
  assert.equal(newlineAt("dh = dlogits @ W2.T", 19), "\n");
  // the caret in the middle of a line: the text before it decides
  assert.equal(newlineAt("for k in range(n): x = k", 18), "\n  ");
  assert.equal(newlineAt("", 0), "\n");
});

test("the box grows with the code, within bounds", () => {
  assert.equal(rowsFor("dh = dlogits @ W2.T"), MIN_ROWS);
  assert.equal(rowsFor("a\nb\nc\nd\ne"), 5);
  assert.equal(rowsFor("x\n".repeat(40)), MAX_ROWS);
});
