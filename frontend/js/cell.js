// The whole-cell editor's text, pure: the task from /api/meta's cell of the mode, and a graded cell (POST /api/check
// without a step) as HTML: the notebook's cmp lines in a monospace block, and what is wrong with the first wrong line.
import { esc } from "./text.js";

export const CELL_MIN_ROWS = 10;
export const CELL_MAX_ROWS = 32;

// "dlogprobs … dC (26)" for a long list, the names for a short one
function names(list) {
  return list.length > 3 ? `${list[0]} … ${list[list.length - 1]} (${list.length})` : list.join(", ");
}

export function cellTaskHtml(cell) {
  const name = cell.grads[0].slice(1); // dlogprobs: logprobs
  return `<b>${esc(cell.exercise)}</b>: write ${esc(cell.about)}, as one cell: <b>${esc(names(cell.grads))}</b>. ` +
    `Add the notebook's <code>${esc(`cmp('${name}', d${name}, ${name})`)}</code> lines if you like: they print as ` +
    "in the notebook.";
}

export function cellScopeText(cell) {
  return "in scope: the forward tensors, n, Xb, Yb, torch, F" +
    (cell.given.length ? `, the gradients before this cell (${names(cell.given)})` : "") +
    "; loops: for k in range(...)";
}

// a block that scrolls sideways on a phone: focusable, so that a keyboard scrolls it too
function lines(items, testid, label) {
  const body = items.map((item) =>
    `<span class="cmp-line ${item.ok ? "same" : "differs"}">${esc(item.text)}</span>`).join("\n");
  return `<pre class="cmp-block" data-testid="${testid}" tabindex="0" aria-label="${label}">${body}</pre>`;
}

export function cellResultHtml(result) {
  const wrong = result.checks.filter((c) => !c.ok);
  const first = result.first_wrong;
  const parts = [];
  if (result.correct) {
    parts.push(`<p><span class="ok">✓</span> ${esc(result.exercise)}: every gradient of the cell matches autograd's ` +
      "(exact, or approximately: torch.allclose)</p>");
  } else {
    const where = first && first.line ? `; the first wrong line is line ${first.line}` : "";
    parts.push(`<p><span class="bad">✗</span> ${wrong.length} of ${result.checks.length} gradients differ from ` +
      `autograd's${where}</p>`);
  }
  if (first) {
    const code = first.line ? ` <code>${esc(first.code.split("\n")[0])}${first.code.includes("\n") ? " …" : ""}</code>` : "";
    const label = first.line ? `line ${first.line}` : first.name;
    parts.push(`<div class="first-wrong" data-testid="cell-first-wrong"><b>${esc(label)}</b>${code}` +
      `<ul>${first.feedback.map((f) => `<li>${esc(f)}</li>`).join("")}</ul></div>`);
  }
  for (const note of result.notes) parts.push(`<p class="bad">${esc(note)}</p>`);
  parts.push(`<p class="caption">every gradient, as the notebook's cmp prints it, in its order:</p>`);
  parts.push(lines(result.checks, "cell-cmp", "the cmp line of every gradient"));
  // the cell's own cmp lines, where they say something else than the check lines (other names, or mid-cell)
  const own = result.printed.map((p) => p.text);
  if (own.length && own.join("\n") !== result.checks.map((c) => c.text).join("\n")) {
    parts.push(`<p class="caption">your cmp(...) lines print:</p>`);
    parts.push(lines(result.printed, "cell-printed", "your cmp lines"));
  }
  const shown = new Set(first ? first.feedback : []);
  const notes = result.checks.flatMap((c) => c.feedback.filter((f) => !shown.has(f)).map((f) => `<li>${esc(f)}</li>`));
  if (notes.length) parts.push(`<ul class="check-notes" data-testid="cell-notes">${notes.join("")}</ul>`);
  return parts.join("");
}
