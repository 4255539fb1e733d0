// Wiring: one state object, round-tripped through the URL; every change re-renders from the server.
import * as api from "./api.js";
import * as challenge from "./challenge.js";
import { KIND_LABEL, STATUS } from "./config.js";
import * as graphView from "./graph.js";
import * as panelView from "./panel.js";
import { apiParams, fromURL, toURL } from "./state.js";
import { esc, plotlyReady } from "./dom.js";

const $ = (id) => document.getElementById(id);
let state = fromURL(location.search);
let graph = null;
let graphKey = "";
let renders = 0;
const controls = () => document.querySelectorAll("button, select, input");

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setBusy(busy) {
  $("loading").hidden = !busy;
  for (const c of controls()) c.disabled = busy;
  document.body.dataset.busy = busy ? "1" : "0";
}

function syncInputs() {
  $("mode").value = state.mode;
  const form = $("config");
  for (const [key, value] of Object.entries(state.config)) if (form.elements[key]) form.elements[key].value = value;
}

function syncControls(view) {
  syncInputs();
  const run = state.config.run;
  $("run-note").hidden = !run;
  if (run) {
    $("run-note").innerHTML = `parameters of <a href="/train.html?run=${run}">trained run #${run}</a> ` +
      '(batch drawn with the seed) · <a href="#" data-testid="use-init">use the initialisation</a>';
    $("run-note").querySelector("a[data-testid=use-init]").addEventListener("click", (event) => {
      event.preventDefault();
      update({ config: { ...state.config, run: 0 }, step: 0 });
    });
  }
  $("step-label").textContent = `step ${view.step} / ${view.total_steps}`;
  $("prev").disabled = view.step === 0;
  $("reset").disabled = view.step === 0;
  $("next").disabled = view.step === view.total_steps;
  $("all").disabled = view.step === view.total_steps;
  const op = view.op ? graph.ops.find((o) => o.name === view.op) : null;
  const next = view.next_op ? graph.ops.find((o) => o.name === view.next_op) : null;
  $("op-banner").textContent = op
    ? `step ${view.step}: backprop through  ${op.formula.split("\n")[0]}\n` + op.rules.map((r) => `  ${r.code.replace(/\n/g, "; ")}    ${r.shapes}${r.of > 1 ? `   (contribution ${r.contribution} of ${r.of})` : ""}`).join("\n")
    : `forward pass done, loss = ${view.loss}. ${next ? `Next: backprop through  ${next.formula}` : ""}`;
}

async function fetchView() {
  // the graph (per config and mode), the state and the selected tensor, all at once
  const key = JSON.stringify(apiParams(state, false));
  const graphPromise = key === graphKey ? Promise.resolve(graph) : api.fetchGraph(apiParams(state, false));
  const statePromise = api.fetchState(apiParams(state));
  const detailPromise = state.node ? api.fetchTensor(state.node, apiParams(state)) : Promise.resolve(null);
  // a node the mode does not have is a 404 here; it is dropped from the state below, not shown as an error
  const [g, view, detail] = await Promise.all([graphPromise, statePromise, detailPromise.catch((e) => e)]);
  graph = g;
  graphKey = key;
  if (state.node && !graph.nodes.some((n) => n.name === state.node)) {
    state.node = null;
    return { view, detail: null };
  }
  if (detail instanceof Error) throw detail;
  return { view, detail };
}

async function load({ push = false, revert = null } = {}) {
  performance.mark("render-start");
  setBusy(true);
  let view;
  try {
    const fetched = await fetchView();
    view = fetched.view;
    const detail = fetched.detail;
    await plotlyReady;
    performance.mark("fetched");
    showError("");
    $("config-error").hidden = true;
    await graphView.render($("graph"), { graph, state: view, selected: state.node });
    bindGraphClicks();
    performance.mark("graph-drawn");
    if (!push) performance.measure("load:interactive-graph", "render-start", "graph-drawn");
    // on the first load, let the browser paint the graph (and take clicks) before the four heatmaps
    if (!push) await new Promise((resolve) => setTimeout(resolve, 0));
    if (detail) {
      await panelView.render($("panel"), {
        detail, graph, slice: state.slice, key: JSON.stringify(apiParams(state, false)),
        onSlice: (slice) => update({ slice }),
      });
    } else {
      $("panel").innerHTML = '<p class="hint">Click a node of the graph to inspect its value and gradients.</p>';
      delete $("panel").dataset.node;
    }
  } catch (e) {
    setBusy(false);
    if (revert && e.status === 422) {
      $("config-error").textContent = e.message;
      $("config-error").hidden = false;
      state = revert;
      syncInputs();
    } else {
      showError(e.message);
    }
    return;
  }
  setBusy(false);
  syncControls(view);
  challenge.update({
    params: apiParams(state, false), step: view.step + 1, total: view.total_steps,
    op: view.next_op ? graph.ops.find((o) => o.name === view.next_op) : null,
  });
  showBug();
  const url = toURL(state);
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
  performance.mark("render-end");
  const what = push ? "update" : "load";
  performance.measure(what, "render-start", "render-end");
  performance.measure(`${what}:fetch`, "render-start", "fetched");
  performance.measure(`${what}:graph`, "fetched", "graph-drawn");
  performance.measure(`${what}:panel`, "graph-drawn", "render-end");
  renders += 1;
  document.body.dataset.renders = String(renders);
  document.body.dataset.ready = "1";
  prefetchSteps(view);
}

// Ask for the state and tensor of a step before its control is clicked, so that the click needs no
// round trip. A step already kept is not asked for again (the page keeps its answers).
function prefetchAt(steps, total) {
  const params = apiParams(state);
  for (const step of steps) {
    if (step < 0 || step > total || step === state.step) continue;
    api.prefetchState({ ...params, step });
    if (state.node) api.prefetchTensor(state.node, { ...params, step });
  }
}

// Next and Previous, the likeliest clicks, while a step is shown. Run all's and Reset's steps are asked
// for only when the pointer or the keyboard focus reaches their button: asked on arrival, a class
// opening the page at once costs the server a whole backward pass and check each (100 students in
// lockstep, p99 151/195/178 ms without them, 372/322/224 ms with them; bench/api_bench.py +ends).
function prefetchSteps(view) {
  prefetchAt([view.step + 1, view.step - 1], view.total_steps);
}

function prefetchOnIntent(id, step) {
  const intent = () => { if (graph && !$(id).disabled) prefetchAt([step()], graph.schedule.length); };
  $(id).addEventListener("pointerenter", intent);
  $(id).addEventListener("focus", intent);
}

function update(patch) {
  const previous = structuredClone(state);
  state = { ...state, ...patch };
  return load({ push: true, revert: patch.config ? previous : null });
}

function stepBy(delta) {
  const total = graph ? graph.schedule.length : 0;
  const step = Math.max(0, Math.min(total, state.step + delta));
  if (step !== state.step) update({ step });
}

let bugs = {};
async function loadBugs() {
  try {
    for (const bug of (await api.fetchBugs()).bugs) {
      bugs[bug.name] = bug;
      $("config").elements.bug.append(new Option(`${bug.title} (${bug.modes.join(", ")})`, bug.name));
    }
    syncInputs();
    showBug();
  } catch (e) {
    showError(e.message);
  }
}

function showBug() {
  const bug = bugs[state.config.bug];
  $("bug-note").hidden = !bug;
  if (!bug) return;
  $("bug-note").innerHTML = `<b>Bug lab: ${esc(bug.title)}</b> — in the backward step of <code>${esc(bug.op)}</code>: ` +
    `<code>${esc(bug.code)}</code><br>Why it is wrong: ${esc(bug.why)}<br>How you would notice: ${esc(bug.notice)}`;
}

function legend() {
  const kinds = Object.values(KIND_LABEL).map((l) => `<span>${l}</span>`).join("");
  const statuses = Object.values(STATUS).map((s) => `<span><b style="background:${s.color}"></b>${s.symbol} ${s.label}</span>`).join("");
  $("legend").innerHTML = kinds + statuses + '<span>blue ring: gradients produced by the current step</span>';
}

function bind() {
  $("next").addEventListener("click", () => stepBy(1));
  $("prev").addEventListener("click", () => stepBy(-1));
  $("reset").addEventListener("click", () => update({ step: 0 }));
  $("all").addEventListener("click", () => update({ step: graph.schedule.length }));
  prefetchOnIntent("all", () => graph.schedule.length);
  prefetchOnIntent("reset", () => 0);
  $("mode").addEventListener("change", () => update({ mode: $("mode").value, step: 0 }));
  $("config").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = $("config");
    const config = { ...state.config };
    for (const key of Object.keys(config)) {
      if (!form.elements[key]) continue; // n_embd, block_size, run: set by a trained run's link
      const raw = form.elements[key].value;
      config[key] = typeof config[key] === "number" ? (raw === "" ? NaN : Number(raw)) : raw;
    }
    update({ config, step: 0 });
  });
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea") || document.body.dataset.busy === "1") return;
    if (event.key === "ArrowRight") stepBy(1);
    else if (event.key === "ArrowLeft") stepBy(-1);
    else if (event.key === "Home") update({ step: 0 });
    else if (event.key === "End") update({ step: graph.schedule.length });
  });
  window.addEventListener("popstate", () => { state = fromURL(location.search); load(); });
}

let clicksBound = false;
function bindGraphClicks() {
  if (clicksBound) return;
  clicksBound = true;
  $("graph").on("plotly_click", (event) => {
    const point = event.points.find((p) => p.customdata);
    if (point) update({ node: point.customdata, slice: 0 });
  });
}

legend();
bind();
challenge.init();
load().then(loadBugs);
