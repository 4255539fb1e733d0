// Challenge mode: write the next backward step's gradient(s) yourself; the server grades them in a sandbox.
// Progress (solved / revealed steps and drafts) is kept in this browser, per mode.
import * as api from "./api.js";
import { esc } from "./dom.js";
import { newlineAt, rowsFor } from "./editor.js";
import { absMax, as2d, identical, rangeOf, renderMain } from "./heatmaps.js";

const $ = (id) => document.getElementById(id);
const KEY = "backprop-explorer:challenge";
let ctx = null; // {params, step, total, op}: the step to solve
let level = 0;
let ladder = null;

function load() {
  try { return JSON.parse(localStorage.getItem(KEY)) || {}; } catch { return {}; }
}

function store(mutate) {
  const all = load();
  const mode = ctx.params.mode;
  all.modes = all.modes || {};
  all.modes[mode] = all.modes[mode] || { solved: {}, revealed: {}, drafts: {} };
  mutate(all.modes[mode]);
  localStorage.setItem(KEY, JSON.stringify(all));
}

const py = (b) => (b ? "True" : "False");

function fit() {
  $("challenge-code").rows = rowsFor($("challenge-code").value);
}

function renderProgress() {
  const mode = load().modes?.[ctx.params.mode] || { solved: {}, revealed: {} };
  const solved = Object.keys(mode.solved).length;
  const revealed = Object.keys(mode.revealed).filter((s) => !mode.solved[s]).length;
  $("challenge-progress").textContent = `— ${ctx.params.mode}: ${solved} of ${ctx.total} steps solved` +
    (revealed ? `, ${revealed} revealed` : "") + (mode.solved[ctx.step] ? " · this one ✓" : "");
}

export function init() {
  const on = load().on === true;
  $("challenge-toggle").checked = on;
  $("challenge-body").hidden = !on;
  $("challenge-toggle").addEventListener("change", () => {
    const all = load();
    all.on = $("challenge-toggle").checked;
    localStorage.setItem(KEY, JSON.stringify(all));
    $("challenge-body").hidden = !all.on;
  });
  $("challenge-code").addEventListener("input", () => {
    fit();
    if (ctx) store((m) => { m.drafts[ctx.step] = $("challenge-code").value; });
  });
  $("challenge-code").addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.shiftKey || e.ctrlKey || e.altKey || e.metaKey || e.isComposing) return;
    const box = e.target;
    e.preventDefault();
    const text = newlineAt(box.value, box.selectionStart);
    // insertText keeps the browser's undo; it fires the input event that saves the draft
    if (!document.execCommand("insertText", false, text)) {
      box.setRangeText(text, box.selectionStart, box.selectionEnd, "end");
      box.dispatchEvent(new Event("input"));
    }
  });
  $("challenge-check").addEventListener("click", check);
  $("challenge-hint").addEventListener("click", hint);
}

// called after every render with the step that comes next
export function update({ params, step, total, op }) {
  const same = ctx && ctx.step === step && JSON.stringify(ctx.params) === JSON.stringify(params);
  ctx = { params, step, total, op };
  renderProgress();
  if (same) return;
  level = 0;
  ladder = null;
  $("challenge-hints").replaceChildren();
  $("challenge-feedback").replaceChildren();
  $("challenge-diff").hidden = true;
  if (!op) {
    $("challenge-task").textContent = "The backward pass is complete: Reset or step back to try a step.";
    $("challenge-code").value = "";
    fit();
    return;
  }
  const targets = op.rules.map((r) => `d${r.target}`).join(", ");
  $("challenge-task").innerHTML = `Step ${step}: backprop through <code>${esc(op.formula.split("\n")[0])}</code>. ` +
    `Write <b>${esc(targets)}</b>, then Check (Next shows the answer).`;
  $("challenge-code").value = load().modes?.[params.mode]?.drafts?.[step] ?? "";
  fit();
}

async function check() {
  if (!ctx || !ctx.op) return;
  $("challenge-check").disabled = true;
  try {
    const result = await api.checkCode({ ...ctx.params, step: ctx.step }, $("challenge-code").value);
    renderResult(result);
    if (result.correct) store((m) => { m.solved[ctx.step] = true; });
    renderProgress();
  } catch (e) {
    $("challenge-diff").hidden = true;
    $("challenge-feedback").innerHTML = `<p class="bad" data-testid="challenge-refused">${esc(e.message)}</p>`;
  } finally {
    $("challenge-check").disabled = false;
  }
}

function renderResult(result) {
  $("challenge-feedback").innerHTML = result.results.map((item) => {
    const cmp = item.cmp
      ? `${item.name.padEnd(15)} | exact: ${py(item.cmp.exact)} | approximate: ${py(item.cmp.approx)} | maxdiff: ${item.cmp.maxdiff}`
      : item.name;
    const ok = item.cmp && item.cmp.approx;
    return `<p><span class="${ok ? "ok" : "bad"}">${ok ? "✓" : "✗"}</span> <code>${esc(cmp)}</code><br>` +
      item.feedback.map((f) => esc(f)).join("<br>") + "</p>";
  }).join("");
  // the first gradient that differs from autograd (one equal to it has nothing to show but zeros)
  const shown = result.results.find((r) => r.diff && !identical(r.diff));
  $("challenge-diff").hidden = !shown;
  if (shown) renderDiff(shown);
}

// the first wrong tensor's difference, drawn as the inspector draws its heatmaps (one context position of a 3-D one)
function renderDiff(item) {
  const t = item.diff;
  const labels = t.shape.map((n) => Array.from({ length: n }, (_, i) => String(i)));
  const grid = as2d(t, labels, t.shape.map(() => "one"), 0);
  $("challenge-diff").dataset.shape = t.shape.join("x");
  const title = `${item.name}: yours − autograd${t.shape.length === 3 ? " (context position 0)" : ""}`;
  return renderMain($("challenge-diff").querySelector(".main-plot"), grid, rangeOf({ range: absMax(t) || 1e-12 }), { title });
}

async function hint() {
  if (!ctx || !ctx.op) return;
  try {
    ladder = ladder || (await api.fetchHints({ ...ctx.params, step: ctx.step })).ladder;
  } catch (e) {
    $("challenge-feedback").innerHTML = `<p class="bad">${esc(e.message)}</p>`;
    return;
  }
  if (level >= 4) return;
  const labels = ["shape", "local derivative", "chain rule", "answer"];
  const li = document.createElement("li");
  li.innerHTML = `<b>${labels[level]}:</b> ` + ladder.map((t) => esc(t.hints[level])).join("<br>");
  $("challenge-hints").append(li);
  if (level === 3) store((m) => { m.revealed[ctx.step] = true; });
  level += 1;
  $("challenge-hint").textContent = level >= 4 ? "No more hints" : level === 3 ? "Reveal the answer" : "Next hint";
  renderProgress();
}
