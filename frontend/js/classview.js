// Pure renderers of the teacher's class page (class.html): a summary's steps as bars, its slowest steps. No DOM
// access: each returns a string.
import { esc } from "./text.js";

const plural = (n, what) => `${n} ${what}${n === 1 ? "" : "s"}`;

// a step as the teacher reads it: its mode's label (from /api/meta; its name until that is known), the gradients the
// step asks for (from the mode's /api/graph, once known), and its net's title where the class worked on more than one
export function stepLabel(s, names = {}, manyNets = false) {
  const key = `${s.net}/${s.mode}`;
  const mode = (names.modes || {})[key] || s.mode;
  const net = manyNets ? `${(names.nets || {})[s.net] || s.net} · ` : "";
  const asks = s.step === null ? null : ((names.asks || {})[key] || [])[s.step - 1];
  return `${net}${mode} · ${s.step === null ? "whole cell" : `step ${s.step}`}${asks ? ` · ${asks}` : ""}`;
}

// what each step of a mode asks for, from its graph: "dcounts_sum_inv, dcounts" for the step through probs
export const stepAsks = (graph) => {
  const ops = Object.fromEntries(graph.ops.map((op) => [op.name, op]));
  return graph.schedule.map((name) => [...new Set(ops[name].rules.map((r) => `d${r.target}`))].join(", "));
};

const manyNets = (steps) => new Set(steps.map((s) => s.net)).size > 1;

// the slip most students were told at a step: [kind, checks, the line they saw], or null
export function topSlip(s) {
  const [kind] = Object.keys(s.slips);
  return kind ? [kind, s.slips[kind], s.slip_texts[kind] || ""] : null;
}

// the steps a class takes longest over: most checks per solve (a step nobody solved: its checks), the first `k`
export function slowest(steps, k = 3) {
  const cost = (s) => (s.solved ? s.median_attempts_to_solve : s.attempts);
  const stuck = (s) => s.students - s.solved;
  return [...steps].filter((s) => s.attempts).sort((a, b) => stuck(b) - stuck(a) || cost(b) - cost(a)).slice(0, k);
}

export function stepsHtml(steps, names = {}) {
  if (!steps.length) return '<p class="hint" data-testid="class-empty">No checks yet: the steps appear as your students check them.</p>';
  const many = manyNets(steps);
  return steps.map((s) => {
    const share = s.students ? (100 * s.solved) / s.students : 0;
    const slip = topSlip(s);
    return `<div class="class-step" data-testid="class-step" data-mode="${esc(s.mode)}" data-step="${s.step ?? ""}">` +
      `<span class="class-step-label">${esc(stepLabel(s, names, many))}</span>` +
      `<span class="class-bar" role="img" aria-label="${s.solved} of ${s.students} solved"><span style="width:${share.toFixed(1)}%"></span></span>` +
      `<span class="class-step-numbers" data-testid="class-step-numbers">${s.solved} of ${s.students} solved · ${plural(s.attempts, "check")}` +
      `${s.median_attempts_to_solve === null ? "" : ` · median ${s.median_attempts_to_solve} to solve`}</span>` +
      (slip ? `<span class="class-slip" data-testid="class-slip">most common slip: <b>${esc(slip[0])}</b> (${slip[1]}×) — ` +
        `<q>${esc(slip[2])}</q></span>` : "") +
      "</div>";
  }).join("");
}

export function slowestHtml(steps, names = {}) {
  return slowest(steps).map((s) =>
    `<li>${esc(stepLabel(s, names, manyNets(steps)))}: ${s.students - s.solved} of ${s.students} not solved yet` +
    `${s.solved ? `, median ${plural(s.median_attempts_to_solve, "check")} to solve` : ""}</li>`).join("");
}
