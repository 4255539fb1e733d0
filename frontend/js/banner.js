// Pure renderers of the explorer's text around the graph: the step banner, the bug lab's note, the note of a
// trained run's parameters, and the node a step follows. No DOM access: each returns a string (or a name).
import { esc } from "./text.js";

const firstLine = (formula) => formula.split("\n")[0];

// the banner over the graph: what this step backpropagates through, its rules (a bug's marked), or the forward
export function bannerHtml(view, graph) {
  const op = view.op ? graph.ops.find((o) => o.name === view.op) : null;
  const next = view.next_op ? graph.ops.find((o) => o.name === view.next_op) : null;
  if (op) {
    return `<b>step ${view.step} of ${view.total_steps}:</b> backprop through <code>${esc(firstLine(op.formula))}</code>` +
      op.rules.map((r) => `<div class="${r.bug ? "bug-rule" : ""}">${r.bug ? '<span class="bug-tag">BUG</span> ' : ""}<code>${esc(r.code.replace(/\n/g, "; "))}</code> <span class="muted">${esc(r.shapes)}${r.of > 1 ? ` · contribution ${r.contribution} of ${r.of}` : ""}</span></div>`).join("");
  }
  if (view.step === 0) {
    return `<b>Forward pass done</b>, loss = ${esc(String(view.loss))}. ${next ? `Next ▶ backprops through <code>${esc(firstLine(next.formula))}</code>` : ""}`;
  }
  return "";
}

// the bug lab's note: which line is wrong, why, and how a learner would notice
export function bugNoteHtml(bug) {
  return `<b>Bug lab: ${esc(bug.title)}</b> — in the backward step of <code>${esc(bug.op)}</code>, ` +
    `<code>d${esc(bug.target)}</code> is computed by <code class="bug-code">${esc(bug.code)}</code><br>Why it is wrong: ${esc(bug.why)}<br>How you would notice: ${esc(bug.notice)}`;
}

// a bug switched off because the new mode fuses its op away
export const bugOffText = (bug) => `Bug lab: "${bug.title}" sits in the backward step of ${bug.op}, which this mode fuses away: switched off.`;

// the explorer opened on a trained run's parameters
export const runNoteHtml = (run) => `parameters of <a href="/train.html?run=${Number(run)}">trained run #${Number(run)}</a> ` +
  '(batch drawn with the seed) · <a href="#" data-testid="use-init">use the initialisation</a>';

// Which names list the server loaded: its file, size and checksum; the embedded list says it is not the lecture's
// (`embedded`, from /api/dataset) and how to load the lecture's file
export function dataLineHtml(ds) {
  const line = `data: <code>${esc(ds.file)}</code>, ${ds.words.toLocaleString("en")} words, sha256 <code title="${esc(ds.sha256)}">${esc(ds.sha256.slice(0, 12))}</code>`;
  if (!ds.embedded) return line;
  return `${line} — the embedded names list, not the lecture's: its loss and every number differ from the video's. ` +
    "For the lecture's numbers, start the server with the lecture's names.txt: <code>--data path/to/names.txt</code>";
}

// the node a step follows: the gradient the step produced (its op's first rule); none before the first step
export function followed(graph, step) {
  if (!graph || step === 0) return null;
  const op = graph.ops.find((o) => o.name === graph.schedule[step - 1]);
  return op && op.rules.length ? op.rules[0].target : null;
}
