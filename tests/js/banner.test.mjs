// The explorer's text renderers (frontend/js/banner.js): the step banner, the bug note, the followed node.
import assert from "node:assert/strict";
import { test } from "node:test";

import { bannerHtml, bugNoteHtml, dataLineHtml, followed } from "../../frontend/js/banner.js";

const GRAPH = {
  schedule: ["loss", "probs"],
  ops: [
    { name: "probs", formula: "probs = counts * counts_sum_inv", rules: [
      { target: "counts_sum_inv", code: "dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)", shapes: "(32,27)→(32,1)", of: 1, contribution: 1 },
      { target: "counts", code: "dcounts = counts_sum_inv * dprobs", shapes: "(32,27)", of: 2, contribution: 1 },
    ] },
    { name: "loss", formula: "loss = -logprobs[range(n), Yb].mean()\n# the mean", rules: [
      { target: "logprobs", code: "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n", shapes: "()→(32,27)", of: 1, contribution: 1 },
    ] },
  ],
};

test("a step follows the first gradient its op produces; step 0 follows nothing", () => {
  assert.equal(followed(GRAPH, 0), null);
  assert.equal(followed(GRAPH, 1), "logprobs");
  assert.equal(followed(GRAPH, 2), "counts_sum_inv");
  assert.equal(followed(null, 1), null);
});

test("the banner names the step's op and each rule, a second contribution counted, code escaped", () => {
  const html = bannerHtml({ step: 2, total_steps: 2, op: "probs", next_op: null }, GRAPH);
  assert.match(html, /step 2 of 2:/);
  assert.match(html, /<code>probs = counts \* counts_sum_inv<\/code>/);
  assert.match(html, /contribution 1 of 2/);
  assert.equal((html.match(/<div/g) || []).length, 2);
  const first = bannerHtml({ step: 1, total_steps: 2, op: "loss", next_op: "probs" }, GRAPH);
  assert.match(first, /dlogprobs = torch.zeros_like\(logprobs\); dlogprobs\[range\(n\), Yb\] = -1.0\/n/); // lines joined
  assert.doesNotMatch(first, /# the mean/); // the formula's first line only
});

test("a bug's rule is marked as the bug; step 0 tells the loss and what Next does", () => {
  const bugged = structuredClone(GRAPH);
  bugged.ops[0].rules[0] = { ...bugged.ops[0].rules[0], code: "dcounts_sum_inv = counts * dprobs", bug: "no_broadcast_sum" };
  const html = bannerHtml({ step: 2, total_steps: 2, op: "probs" }, bugged);
  assert.match(html, /class="bug-rule"><span class="bug-tag">BUG<\/span> <code>dcounts_sum_inv = counts \* dprobs<\/code>/);
  const start = bannerHtml({ step: 0, total_steps: 2, op: null, next_op: "loss", loss: 3.3482 }, GRAPH);
  assert.match(start, /Forward pass done<\/b>, loss = 3.3482/);
  assert.match(start, /Next ▶ backprops through <code>loss = -logprobs\[range\(n\), Yb\].mean\(\)<\/code>/);
});

test("the bug note escapes what the server sends", () => {
  const html = bugNoteHtml({ title: "a <b>", op: "probs", target: "counts_sum_inv", code: "x < y", why: "w & z", notice: "n" });
  assert.match(html, /Bug lab: a &lt;b&gt;/);
  assert.match(html, /x &lt; y/);
  assert.match(html, /w &amp; z/);
  assert.doesNotMatch(html, /<b>"/);
});

test("the data line names the list loaded, and says when it is not the lecture's and how to load that", () => {
  const ds = { file: "names.txt", words: 29910, sha256: "f1e2d3c4b5a6978812345678", embedded: true };
  const embedded = dataLineHtml(ds);
  assert.match(embedded, /names\.txt<\/code>, 29,910 words, sha256 <code[^>]*>f1e2d3c4b5a6<\/code>/);
  assert.match(embedded, /not the lecture's/);
  assert.match(embedded, /<code>--data path\/to\/names\.txt<\/code>/);
  const lecture = dataLineHtml({ ...ds, words: 32033, embedded: false });
  assert.match(lecture, /32,033 words/);
  assert.doesNotMatch(lecture, /--data|not the lecture's/);
});
