// Challenge mode: write the next backward step's gradient(s) yourself, or the mode's whole backward cell; the server
// grades them in a sandbox. Progress (solved steps and their code, revealed steps, drafts, the cell) is kept in this
// browser, per net and mode; solved steps and the cell download as a runnable .py or .ipynb.
import * as api from "./api.js";
import { CELL_MAX_ROWS, CELL_MIN_ROWS, cellResultHtml, cellScopeText, cellTaskHtml } from "./cell.js";
import { esc } from "./dom.js";
import { newlineAt, rowsFor } from "./editor.js";
import { absMax, as2d, identical, rangeOf, renderMain } from "./heatmaps.js";
import { CHALLENGE_KEY as KEY, progressKey } from "./store.js";
import { check as checkInClass } from "./classjoin.js";

const $ = (id) => document.getElementById(id);
let meta = null; // /api/meta: each mode's cell
let ctx = null; // {params, step, total, op}: the step to solve
let cellKey = ""; // the params the cell's answer is for
let level = 0;
let ladder = null;
let onChange = () => {}; // the page re-renders: a step solved or revealed shows its answer now
let shown = { graph: null, key: null }; // the graph on screen and its progress key: what hidden() looks the steps up in

// ---- the one gate: every panel that shows a rule, a gradient or a derivation asks it --------------------------

// where the progress of the params' net and mode is kept (the lecture's net: by the mode alone, as it always was)
const keyOf = (params) => progressKey(params.net, params.mode, meta.config.net.default);

// the graph the page is showing, and its params (net and mode)
export function bindGraph(graph, params) {
  shown = { graph, key: keyOf(params) };
}

// the steps whose backward rules write d`name` (1-based, in the schedule's order)
function stepsOf(name) {
  const { graph } = shown;
  return graph.schedule.map((op, i) => ({ op: graph.ops.find((o) => o.name === op), step: i + 1 }))
    .filter(({ op }) => op && op.rules.some((r) => r.target === name)).map(({ step }) => step);
}

// Whether challenge mode hides d`name` as made by the steps up to `upTo` (all of them by default): it does while
// one of those steps is neither solved nor revealed. Its rule, its gradient (manual, autograd, their difference),
// its derivation and its worked numbers all go through this.
export function hidden(name, upTo = Infinity) {
  const all = load();
  if (all.on !== true || !shown.graph) return false;
  const mode = all.modes?.[shown.key] || {};
  return stepsOf(name).some((s) => s <= upTo && !mode.solved?.[s] && !mode.revealed?.[s]);
}

// the first step up to `upTo` that keeps d`name` hidden (for the note that says which step to solve)
export function hiddenBy(name, upTo = Infinity) {
  const mode = load().modes?.[shown.key] || {};
  return stepsOf(name).find((s) => s <= upTo && !mode.solved?.[s] && !mode.revealed?.[s]) ?? null;
}

export const hiddenText = (name, step) => `hidden in challenge mode: solve step ${step} (or Show the answer) to see d${name}`;

// The graph as challenge mode lets it be shown: a rule of a step not solved nor revealed keeps its target, shapes
// and place, and loses its code, its correct code and its notes.
export function maskGraph(graph) {
  if (load().on !== true || !shown.graph) return graph;
  return {
    ...graph,
    ops: graph.ops.map((op) => {
      const step = graph.schedule.indexOf(op.name) + 1;
      return { ...op, rules: op.rules.map((r) => (hidden(r.target, step)
        ? { ...r, code: `d${r.target} = ?`, correct_code: "", notes: [], hidden: hiddenText(r.target, hiddenBy(r.target, step)) } : r)) };
    }),
  };
}

// A tensor's answer (/api/tensor) as challenge mode lets it be shown at view step `step`: the manual gradient while
// a step up to `step` that makes it is open, autograd's (and the difference) while any step that makes it is.
export function maskTensor(detail, step) {
  if (!detail) return detail;
  const manual = hidden(detail.name, step);
  const autograd = hidden(detail.name);
  if (!manual && !autograd) return detail;
  const note = hiddenText(detail.name, hiddenBy(detail.name));
  return {
    ...detail,
    grad_manual: manual ? null : detail.grad_manual,
    split: manual ? null : detail.split,
    grad_autograd: null,
    diff: null,
    numeric: null,
    numeric_note: note,
    hidden: { manual, autograd, note },
  };
}

function load() {
  try { return JSON.parse(localStorage.getItem(KEY)) || {}; } catch { return {}; }
}

function store(mutate) {
  const all = load();
  const mode = keyOf(ctx.params);
  all.modes = all.modes || {};
  all.modes[mode] = all.modes[mode] || { solved: {}, revealed: {}, drafts: {} };
  mutate(all.modes[mode]);
  localStorage.setItem(KEY, JSON.stringify(all));
}

const py = (b) => (b ? "True" : "False");

function fit() {
  $("challenge-code").rows = rowsFor($("challenge-code").value);
  $("cell-code").rows = rowsFor($("cell-code").value, CELL_MIN_ROWS, CELL_MAX_ROWS);
}

// solved steps with their code (a step solved before the code was kept: its draft)
function solvedSteps(mode) {
  return Object.entries(mode.solved)
    .map(([step, code]) => ({ step: Number(step), code: typeof code === "string" ? code : mode.drafts?.[step] }))
    .filter((s) => s.code)
    .sort((a, b) => a.step - b.step);
}

function renderProgress() {
  const mode = load().modes?.[keyOf(ctx.params)] || { solved: {}, revealed: {} };
  const solved = Object.keys(mode.solved).length;
  const revealed = Object.keys(mode.revealed).filter((s) => !mode.solved[s]).length;
  $("challenge-progress").textContent = `— ${ctx.params.mode}: ${solved} of ${ctx.total} steps solved` +
    (revealed ? `, ${revealed} revealed` : "") + (mode.solved[ctx.step] ? " · this one ✓" : "");
  const none = !solvedSteps({ drafts: {}, ...mode }).length;
  for (const b of document.querySelectorAll("[data-testid^=steps-export-]")) {
    b.disabled = none;
    b.title = none ? "solve a step first" : "download your solved steps, the lecture's lines in the gaps";
  }
}

function showTab(tab) {
  for (const [name, panel] of [["step", "challenge-step"], ["cell", "challenge-cell"]]) {
    const on = name === tab;
    $(`tab-${name}`).setAttribute("aria-selected", String(on));
    $(`tab-${name}`).tabIndex = on ? 0 : -1;
    $(panel).hidden = !on;
  }
  fit();
}

function bindEditor(box, save) {
  box.addEventListener("input", () => {
    fit();
    if (ctx) store((m) => save(m, box.value));
  });
  box.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.shiftKey || e.ctrlKey || e.altKey || e.metaKey || e.isComposing) return;
    e.preventDefault();
    const text = newlineAt(box.value, box.selectionStart);
    // insertText keeps the browser's undo; it fires the input event that saves the draft
    if (!document.execCommand("insertText", false, text)) {
      box.setRangeText(text, box.selectionStart, box.selectionEnd, "end");
      box.dispatchEvent(new Event("input"));
    }
  });
}

async function download(body, button) {
  if (!ctx) return;
  button.disabled = true;
  try {
    const { name, blob } = await api.exportFile(ctx.params, { ...body, format: button.dataset.format });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  } catch (e) {
    const where = body.code !== undefined ? "cell-feedback" : "challenge-feedback";
    $(where).innerHTML = `<p class="bad" data-testid="export-refused">${esc(e.message)}</p>`;
  } finally {
    button.disabled = false;
    if (body.steps) renderProgress();
  }
}

export function init(served, changed = () => {}) {
  meta = served;
  onChange = changed;
  const on = load().on === true;
  $("challenge-toggle").checked = on;
  $("challenge-body").hidden = !on;
  $("challenge-toggle").addEventListener("change", () => {
    const all = load();
    all.on = $("challenge-toggle").checked;
    localStorage.setItem(KEY, JSON.stringify(all));
    $("challenge-body").hidden = !all.on;
    fit();
    onChange();
  });
  // the tabs: a click, or the arrow keys between them (the ARIA tabs pattern)
  for (const name of ["step", "cell"]) {
    $(`tab-${name}`).addEventListener("click", () => {
      const all = load();
      all.tab = name;
      localStorage.setItem(KEY, JSON.stringify(all));
      showTab(name);
    });
    $(`tab-${name}`).addEventListener("keydown", (e) => {
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      const other = name === "step" ? "cell" : "step";
      $(`tab-${other}`).click();
      $(`tab-${other}`).focus();
    });
  }
  showTab(load().tab === "cell" ? "cell" : "step");
  bindEditor($("challenge-code"), (m, code) => { m.drafts[ctx.step] = code; });
  bindEditor($("cell-code"), (m, code) => { m.cell = code; });
  $("challenge-check").addEventListener("click", check);
  $("challenge-hint").addEventListener("click", hint);
  $("challenge-reveal").addEventListener("click", reveal);
  $("cell-check").addEventListener("click", checkCell);
  for (const b of document.querySelectorAll("[data-testid^=steps-export-]")) {
    b.addEventListener("click", () => {
      const mode = load().modes?.[keyOf(ctx.params)] || { solved: {}, drafts: {} };
      download({ steps: solvedSteps(mode) }, b);
    });
  }
  for (const b of document.querySelectorAll("[data-testid^=cell-export-]")) {
    b.addEventListener("click", () => download({ code: $("cell-code").value }, b));
  }
}

// the mode's cell: its task, and the draft kept for it; its answer stays while the mode and config do
function updateCell(params) {
  const key = JSON.stringify(params);
  if (key === cellKey) return;
  const modeChanged = !cellKey || keyOf(JSON.parse(cellKey)) !== keyOf(params);
  cellKey = key;
  const cell = meta.modes.find((m) => m.name === params.mode).cell;
  $("cell-task").innerHTML = cellTaskHtml(cell);
  $("cell-scope").textContent = cellScopeText(cell);
  if (modeChanged) $("cell-code").value = load().modes?.[keyOf(params)]?.cell ?? "";
  $("cell-feedback").replaceChildren();
  $("cell-diff").hidden = true;
  fit();
}

// called after every render with the step that comes next
export function update({ params, step, total, op }) {
  const same = ctx && ctx.step === step && JSON.stringify(ctx.params) === JSON.stringify(params);
  ctx = { params, step, total, op };
  updateCell(params);
  renderProgress();
  if (same) return;
  level = 0;
  ladder = null;
  $("challenge-hints").replaceChildren();
  $("challenge-feedback").replaceChildren();
  $("challenge-diff").hidden = true;
  $("challenge-reveal").disabled = !op;
  if (!op) {
    $("challenge-task").textContent = "The backward pass is complete: Reset or step back to try a step.";
    $("challenge-code").value = "";
    fit();
    return;
  }
  const targets = op.rules.map((r) => `d${r.target}`).join(", ");
  $("challenge-task").innerHTML = `Step ${step}: backprop through <code>${esc(op.formula.split("\n")[0])}</code>. ` +
    `Write <b>${esc(targets)}</b>, then Check. Show the answer reveals it; Next moves on without it.`;
  $("challenge-code").value = load().modes?.[keyOf(params)]?.drafts?.[step] ?? "";
  fit();
}

async function check() {
  if (!ctx || !ctx.op) return;
  $("challenge-check").disabled = true;
  try {
    const code = $("challenge-code").value;
    const result = await checkInClass({ ...ctx.params, step: ctx.step }, code);
    renderResult(result);
    if (result.correct) store((m) => { m.solved[ctx.step] = code; }); // the code travels home with the export
    renderProgress();
    if (result.correct) onChange();
  } catch (e) {
    $("challenge-diff").hidden = true;
    $("challenge-feedback").innerHTML = `<p class="bad" data-testid="challenge-refused">${esc(e.message)}</p>`;
  } finally {
    $("challenge-check").disabled = false;
  }
}

function renderResult(result) {
  $("challenge-feedback").innerHTML = result.results.map((item) => {
    const cmp = item.cmp?.shape_mismatch ? `${item.name.padEnd(15)} | ${item.cmp.shape_mismatch}` // no maxdiff to print
      : item.cmp
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

// the first wrong tensor's difference, drawn as the inspector draws its heatmaps (a 3-D one cut at index 0 of dim 1)
function renderDiff(item, wrap = $("challenge-diff"), against = "autograd") {
  const t = item.diff;
  const labels = t.shape.map((n) => Array.from({ length: n }, (_, i) => String(i)));
  const grid = as2d(t, labels, t.shape.map(() => "one"), { rows: 0, cols: 2, cut: 1, index: 0 });
  wrap.dataset.shape = t.shape.join("x");
  const title = `${item.name}: yours − ${against}${t.shape.length === 3 ? " (index 0 of dim 1)" : ""}`;
  return renderMain(wrap.querySelector(".main-plot"), grid, rangeOf({ range: absMax(t) || 1e-12 }), { title });
}

async function checkCell() {
  if (!ctx) return;
  $("cell-check").disabled = true;
  const params = ctx.params;
  try {
    const result = await checkInClass(params, $("cell-code").value);
    if (JSON.stringify(params) !== cellKey) return; // the mode or config changed meanwhile
    $("cell-feedback").innerHTML = cellResultHtml(result);
    if (result.correct && params.mode === meta.train_mode) { // Exercise 4's block: the training page takes it
      const net = params.net === meta.config.net.default ? "" : `&net=${encodeURIComponent(params.net)}`;
      $("cell-feedback").insertAdjacentHTML("beforeend", `<p><a href="/train.html?code=cell${esc(net)}" data-testid="cell-train">` +
        "Train the net with this block (Exercise 4) →</a></p>");
    }
    const first = result.first_wrong;
    const shown = first && first.diff && !identical(first.diff);
    $("cell-diff").hidden = !shown;
    if (shown) renderDiff(first, $("cell-diff"), `what line ${first.line} should make`);
  } catch (e) {
    $("cell-diff").hidden = true;
    $("cell-feedback").innerHTML = `<p class="bad" data-testid="cell-refused">${esc(e.message)}</p>`;
  } finally {
    $("cell-check").disabled = false;
  }
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
  if (level === 4) onChange();
}

// Show the answer on purpose: the step counts as revealed (not solved), and its rule and gradients are shown
function reveal() {
  if (!ctx || !ctx.op) return;
  store((m) => { m.revealed[ctx.step] = true; });
  renderProgress();
  onChange();
}
