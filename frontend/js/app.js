// Wiring: one state object, round-tripped through the URL; every change re-renders from the server.
import * as api from "./api.js";
import * as challenge from "./challenge.js";
import * as classJoin from "./classjoin.js";
import * as graphView from "./graph.js";
import * as panelView from "./panel.js";
import * as whyView from "./why.js";
import { apiParams, defaults, fromURL, parseURL, toURL } from "./state.js";
import { bannerHtml, bugNoteHtml, bugOffText, dataLineHtml, followed, runNoteHtml } from "./banner.js";
import { esc, loadPlotly } from "./dom.js";
import { drawWaiting } from "./heatmaps.js";

const $ = (id) => document.getElementById(id);
let meta = null; // the net's modes and the config's defaults, bounds and choices (/api/meta): the controls are built from it
let nets = []; // the networks there are (/api/nets): the network select's options
let state = null;
let graph = null;
let shownGraph = null; // the graph as challenge mode lets it be shown (challenge.maskGraph): what every panel draws
let graphKey = "";
let renders = 0;
const controls = () => document.querySelectorAll("button, select, input");

// a plain line for each part of the URL that could not be shown, and what is shown instead
function urlNote(line) {
  const note = $("url-note");
  note.append(Object.assign(document.createElement("p"), { textContent: line }));
  note.hidden = false;
}

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
    $("run-note").innerHTML = runNoteHtml(run);
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
  $("op-banner").innerHTML = bannerHtml(view, shownGraph);
}

async function fetchView() {
  // the graph (per config and mode), the state and the selected tensor, all at once
  const key = JSON.stringify(apiParams(state, false));
  const graphPromise = key === graphKey ? Promise.resolve(graph) : api.fetchGraph(apiParams(state, false));
  const statePromise = api.fetchState(apiParams(state));
  // a large 3-D node's one slice, once the graph (its shape) is known: the first load asks for the whole
  const shown = key === graphKey && state.node ? graph.nodes.find((n) => n.name === state.node) : null;
  const params = { ...apiParams(state), ...panelView.sliceQuery(shown, state) };
  const detailPromise = state.node ? api.fetchTensor(state.node, params) : Promise.resolve(null);
  // a node the mode does not have is a 404 here; it is dropped from the state below, not shown as an error
  const [g, view, detail] = await Promise.all([graphPromise, statePromise, detailPromise.catch((e) => e)]);
  graph = g;
  graphKey = key;
  if (state.node && !graph.nodes.some((n) => n.name === state.node)) {
    if (!renders) urlNote(`there is no tensor "${state.node}" in this mode: showing none`);
    state.node = null;
    state.pinned = false;
    return { view, detail: null };
  }
  if (detail instanceof Error) throw detail;
  fitSlice(detail);
  return { view, detail };
}

// The slice a URL asks for, made one the node has: an index past its dim is its last, and a node that is not 3-D
// has no slice or map (the URL's line says so, and the URL then names what is shown)
function fitSlice(detail) {
  if (!detail) return;
  const at = panelView.cutOf(detail, state);
  if (!at && (state.slice || state.axes)) {
    if (!renders) urlNote(`${detail.name} has ${detail.shape.length} dims: a slice and a map are for a 3-D tensor`);
    state = { ...state, slice: 0, axes: null };
  } else if (at && at.index !== state.slice) {
    if (!renders) urlNote(`slice=${state.slice} is past ${detail.name}'s dim ${at.cut} (${detail.shape[at.cut]} entries): showing ${at.index}`);
    state = { ...state, slice: at.index };
  }
}

function openNode(name) {
  if (name === state.node && state.pinned) return;
  // a node opened by hand is pinned: stepping no longer moves the inspector away from it
  update({ node: name, slice: 0, axes: null, pinned: true });
}

// when the click or key press that asked for the next render happened: the time a busy page took to take it
// counts as part of that render (performance.now() timebase)
let inputAt = null;
for (const type of ["click", "keydown"]) document.addEventListener(type, (event) => { inputAt = event.timeStamp; }, true);

async function load({ push = false, revert = null, fallback = false } = {}) {
  performance.mark("render-start");
  const askedAt = push && inputAt !== null && performance.now() - inputAt < 1000 ? inputAt : performance.now();
  inputAt = null;
  const focused = document.activeElement;
  setBusy(true);
  let view;
  try {
    const fetched = await fetchView();
    view = fetched.view;
    challenge.bindGraph(graph, apiParams(state, false));
    shownGraph = challenge.maskGraph(graph);
    const detail = challenge.maskTensor(fetched.detail, view.step);
    performance.mark("fetched");
    showError("");
    $("config-error").hidden = true;
    await graphView.render($("graph"), { graph: shownGraph, state: view, selected: state.node, onOpen: openNode });
    tooltip.refresh();
    if (view.op && !state.pinned) graphView.reveal($("graph"), graph, view.op, true);
    else if (state.node && !push) graphView.reveal($("graph"), graph, state.node);
    performance.mark("graph-drawn");
    if (!push) performance.measure("load:interactive-graph", "render-start", "graph-drawn");
    // on the first load, let the browser paint the graph (and take clicks) before the heatmaps
    if (!push) await new Promise((resolve) => setTimeout(resolve, 0));
    await renderPanel(detail, view);
  } catch (e) {
    if (!(e instanceof api.ApiError)) console.error(e); // a bug in the page, not an answer of the server
    setBusy(false);
    if (revert && e.status === 422) {
      $("config-error").textContent = e.message;
      $("config-error").hidden = false;
      state = revert;
      syncInputs();
    } else if (fallback && e.status === 422) { // a URL the page let through and the server did not
      urlNote("the server refused the URL's configuration: showing the defaults");
      state = { ...state, config: { ...defaults(meta), net: state.config.net }, step: 0 }; // the net's own defaults
      syncInputs();
      return load();
    } else {
      showError(e.message);
    }
    return;
  }
  setBusy(false);
  syncControls(view);
  keepFocus(focused);
  challenge.update({
    params: apiParams(state, false), step: view.step + 1, total: view.total_steps,
    op: view.next_op ? graph.ops.find((o) => o.name === view.next_op) : null,
  });
  showBug();
  const url = toURL(state, meta);
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
  performance.mark("render-end");
  const what = push ? "update" : "load";
  performance.measure(what, { start: askedAt, end: "render-end" }); // from the click (or key) that asked
  performance.measure(`${what}:fetch`, "render-start", "fetched");
  performance.measure(`${what}:graph`, "fetched", "graph-drawn");
  performance.measure(`${what}:panel`, "graph-drawn", "render-end");
  renders += 1;
  document.body.dataset.renders = String(renders);
  document.body.dataset.steppable = "1";
  plotted ||= plotlyAfterPaint();
  plotted.then(() => { document.body.dataset.ready = "1"; });
  prefetchSteps(view);
  refreshWhy();
}

// plotly.js once the first graph is painted: a learner reads and steps while it loads; the heatmap frames that
// waited for it are drawn when it arrives. Resolves once they are (then the page is `ready`: every plot drawn).
let plotted = null;
function plotlyAfterPaint() {
  const painted = new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  return painted.then(loadPlotly).then(drawWaiting).then(
    () => performance.mark("plots-drawn"),
    (e) => showError(e.message),
  );
}

// The why drawer follows the inspector's node and the step; closed, it asks for nothing.
function setWhy(on) {
  state.why = on;
  history.replaceState(null, "", toURL(state, meta));
  const button = $("panel").querySelector('[data-testid="why-open"]');
  if (button) button.setAttribute("aria-pressed", on ? "true" : "false");
  refreshWhy();
  if (!on && button) button.focus();
}

let whyAt = null; // the entry the drawer's examples use: the last cell clicked in the heatmap (null: the first)
function refreshWhy() {
  const el = $("why");
  if (!state.why || !state.node || !graph || !lastView) {
    whyView.close(el);
    return;
  }
  const node = state.node;
  whyView.show(el, node, {
    fetchWhy: api.fetchWhy, params: apiParams(state), graph: shownGraph, view: lastView, order: meta.cmp_order,
    hidden: (upTo) => (challenge.hidden(node, upTo) ? challenge.hiddenText(node, challenge.hiddenBy(node, upTo)) : ""),
    labels: lastDetail && lastDetail.name === state.node ? lastDetail.labels : [], onClose: () => setWhy(false),
    at: whyAt && whyAt.node === state.node ? whyAt.index : null,
    onEntry: (index) => { whyAt = { node: state.node, index }; refreshWhy(); },
    onAtomic: (name) => { // Exercise 1's graph of this net, at its last step: every gradient there
      const atomic = meta.modes.find((m) => m.name === meta.default_mode);
      const config = { ...defaults(meta), net: state.config.net };
      location.search = toURL({ config, mode: atomic.name, step: atomic.steps, node: name, slice: 0, axes: null, pinned: true, view: "manual", why: true }, meta);
    },
  });
}

// The rules of the entry under the pointer, written out by the server with the entry's numbers.
let cellTimer = 0;
function showCellRule(index, box) {
  clearTimeout(cellTimer);
  const node = state.node;
  if (challenge.hidden(node, state.step)) { // the rule with numbers is the answer with numbers
    box.hidden = false;
    box.dataset.index = index.join(",");
    box.textContent = challenge.hiddenText(node, challenge.hiddenBy(node, state.step));
    return;
  }
  const params = { ...apiParams(state), at: index.join(",") };
  cellTimer = setTimeout(() => {
    api.fetchInstance(node, params).then((answer) => {
      if (state.node !== node || !box.isConnected) return;
      box.hidden = false;
      box.dataset.index = answer.index.join(",");
      box.dataset.operands = JSON.stringify(answer.parts.flatMap((p) => p.operands));
      box.dataset.total = String(answer.total);
      box.innerHTML = answer.parts.map((p) => `<div class="part"><span class="muted">from ${esc(p.op)} (step ${p.step})${p.bug ? ' <span class="bug-tag">BUG</span>' : ""}</span><pre>${esc(p.lines.join("\n"))}</pre></div>`).join("") +
        (answer.parts.length > 1 ? `<div>sum of the ${answer.parts.length} contributions: <b>${esc(String(answer.total))}</b></div>` : "");
    }, () => {});
  }, 60);
}

let lastView = null;
let lastDetail = null;
function renderPanel(detail, view) {
  lastView = view;
  lastDetail = detail;
  const panel = $("panel");
  if (!detail) {
    panel.innerHTML = panelView.intro(netTitle(state.config.net));
    delete panel.dataset.node;
    return Promise.resolve();
  }
  return panelView.render(panel, {
    detail, graph: shownGraph, nodeState: view.nodes[detail.name], view: state.view, slice: state.slice, axes: state.axes,
    pinned: state.pinned, expanded: document.body.classList.contains("expanded"),
    onView: (v) => { state.view = v; history.replaceState(null, "", toURL(state, meta)); panelView.setView(panel, v); },
    onSlice: ({ slice, axes }) => update({ slice, axes }),
    onPin: (pinned) => update({ pinned }),
    onExpand: (on) => expand(on, detail),
    why: state.why,
    onWhy: (on) => setWhy(on),
    onCell: showCellRule,
    onPick: (index) => { whyAt = { node: detail.name, index }; if (state.why) refreshWhy(); },
  });
}

function expand(on, detail) {
  document.body.classList.toggle("expanded", on);
  renderPanel(detail, lastView).then(() => {
    const plot = $("panel").querySelector('[data-testid="heatmap-main"]');
    if (plot && plot.data && window.Plotly) Plotly.Plots.resize(plot);
    $("panel").querySelector('[data-testid="expand"]')?.focus();
  });
}

// a button that the new step disabled (Next at the end) hands its focus to its neighbour
function keepFocus(focused) {
  if (!focused || focused === document.body) return;
  if (!document.contains(focused)) { // the inspector drew its controls anew (a 3-D slice's slider): the new one
    const id = focused.dataset && focused.dataset.testid;
    const twin = id && $("panel").querySelector(`[data-testid="${id}"]`);
    if (twin && !twin.disabled) twin.focus();
    return;
  }
  if (!focused.disabled) { if (document.activeElement !== focused) focused.focus(); return; }
  const fallback = { next: "prev", all: "prev", prev: "next", reset: "next" }[focused.id];
  if (fallback && !$(fallback).disabled) $(fallback).focus();
}

// Ask for the state and tensor of a step before its control is clicked, so that the click needs no
// round trip. A step already kept is not asked for again (the page keeps its answers).
function prefetchAt(steps, total) {
  const params = apiParams(state);
  for (const step of steps) {
    if (step < 0 || step > total || step === state.step) continue;
    api.prefetchState({ ...params, step });
    const node = state.pinned ? state.node : followed(graph, step) || state.node;
    if (!node) continue;
    const choice = node === state.node ? { slice: state.slice, axes: state.axes } : {};
    const slice = panelView.sliceQuery(graph.nodes.find((n) => n.name === node), choice);
    // the inspector's frame for that tensor drawn while the page is idle, so that the click only paints
    api.prefetchTensor(node, { ...params, step, ...slice }).then(
      (detail) => panelView.idle(() => panelView.prepare($("panel"), detail, choice)),
      () => {},
    );
  }
}

// Next and Previous, the likeliest clicks, while a step is shown. Run all's and Reset's steps are asked
// for only when the pointer or the keyboard focus reaches their button: asked on arrival, a class
// opening the page at once costs the server a whole backward pass and check each (100 students in
// lockstep, p99 151/195/178 ms without them, 372/322/224 ms with them; bench/api_bench.py +ends).
function prefetchSteps(view) {
  prefetchAt([view.step + 1, view.step - 1], view.total_steps);
  reserveEnd();
}

// The frame of the gradient Run all will show, drawn once per graph while the page is idle (panel.reserve).
// Its labels and shape do not change with the step: they come from that tensor at step 0, an answer the
// server makes without a backward pass (~5 ms, in-process), where Run all's own step is asked for only on intent.
let reserving = null; // the graph and node whose frame is being fetched and drawn
function reserveEnd() {
  const node = state.pinned ? null : followed(graph, graph.schedule.length);
  const key = `${graphKey}|${node}`;
  const wrap = $("panel").querySelector(".main-wrap");
  if (!node || !wrap || reserving === key) return;
  if (wrap.querySelector(".main-plot[data-reserved]")?.dataset.reserved === key) return;
  reserving = key;
  panelView.idle(() => api.fetchTensor(node, { ...apiParams(state), step: 0 }).then(
    (detail) => panelView.idle(() => { reserving = null; panelView.reserve($("panel"), detail, key); }),
    () => { reserving = null; },
  ));
}

function prefetchOnIntent(id, step) {
  const intent = () => { if (graph && !$(id).disabled) prefetchAt([step()], graph.schedule.length); };
  $(id).addEventListener("pointerenter", intent);
  $(id).addEventListener("focus", intent);
}

function update(patch) {
  $("url-note").hidden = true; // it told what the URL asked for: a choice made here replaces it
  const previous = structuredClone(state);
  state = { ...state, ...patch };
  return load({ push: true, revert: patch.config ? previous : null });
}

// a step moves the inspector to the gradient it produced, unless a node is pinned
function goTo(step) {
  const node = state.pinned ? state.node : followed(graph, step) || state.node;
  const same = node === state.node; // the same node keeps its slice while stepping
  update({ step, node, slice: same ? state.slice : 0, axes: same ? state.axes : null });
}

function stepBy(delta) {
  const total = graph ? graph.schedule.length : 0;
  goTo(Math.max(0, Math.min(total, state.step + delta)));
}

let bugs = {};
async function loadBugs() {
  try {
    for (const bug of (await api.fetchBugs(state.config.net)).bugs) bugs[bug.name] = bug;
    bugOptions();
    showBug();
  } catch (e) {
    showError(e.message);
  }
}

// the bug select offers the bugs of the current mode only
function bugOptions() {
  const select = $("config").elements.bug;
  const options = [new Option("none", "")];
  for (const bug of Object.values(bugs)) if (bug.modes.includes(state.mode)) options.push(new Option(bug.title, bug.name));
  select.replaceChildren(...options);
  select.value = state.config.bug;
}

function showBug() {
  const bug = bugs[state.config.bug];
  $("bug-note").hidden = !bug;
  if (!bug) return;
  $("bug-note").innerHTML = bugNoteHtml(bug);
}

function bind() {
  $("next").addEventListener("click", () => stepBy(1));
  $("prev").addEventListener("click", () => stepBy(-1));
  $("reset").addEventListener("click", () => goTo(0));
  $("all").addEventListener("click", () => goTo(graph.schedule.length));
  prefetchOnIntent("all", () => graph.schedule.length);
  prefetchOnIntent("reset", () => 0);
  $("mode").addEventListener("change", () => {
    const mode = $("mode").value;
    const bug = bugs[state.config.bug];
    // a bug whose op the new mode fuses away is switched off, and the page says so
    const off = bug && !bug.modes.includes(mode);
    const config = off ? { ...state.config, bug: "" } : state.config;
    update({ mode, step: 0, config }).then(() => {
      bugOptions();
      $("mode-note").hidden = !off;
      if (off) $("mode-note").textContent = bugOffText(bug);
    });
  });
  $("config").elements.bug.addEventListener("change", () => {
    $("mode-note").hidden = true;
    update({ config: { ...state.config, bug: $("config").elements.bug.value } });
  });
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
    // keys aimed at a form control or a tab are theirs (a select's arrows change its choice, a tab's move the tabs)
    if (event.target.closest("input, select, textarea, [role=tab]") || document.body.dataset.busy === "1") return;
    if (event.key === "ArrowRight") stepBy(1);
    else if (event.key === "ArrowLeft") stepBy(-1);
    else if (event.key === "Home") goTo(0);
    else if (event.key === "End") goTo(graph.schedule.length);
    else if ((event.key === "w" || event.key === "W") && state.node) setWhy(!state.why);
  });
  // a select hands the focus back to the page once a choice is made: the arrow keys then step again, instead
  // of choosing the next option (capture: before the change's own render remembers the focused control)
  document.addEventListener("change", (event) => { if (event.target.tagName === "SELECT") event.target.blur(); }, true);
  window.addEventListener("popstate", () => {
    // another net's entry (a URL typed into this document's history): its meta and bugs are that net's
    if ((new URLSearchParams(location.search).get("net") || lectureNet()) !== state.config.net) return location.reload();
    state = fromURL(location.search, meta);
    load();
  });
  // another network is another page: its own modes, steps and bugs, from its start
  $("config").elements.net.addEventListener("change", () => {
    const net = $("config").elements.net.value;
    location.assign(net === lectureNet() ? location.pathname : `${location.pathname}?${new URLSearchParams({ net })}`);
  });
}

const lectureNet = () => meta.config.net.default;
const netTitle = (name) => nets.find((n) => n.name === name)?.title || name;

// the mode select and the config form's bounds and choices, as the server declares them
function buildControls() {
  $("mode").replaceChildren(...meta.modes.map((m) => Object.assign(new Option(m.label, m.name), { title: m.title })));
  const form = $("config");
  for (const [key, field] of Object.entries(meta.config)) {
    const control = form.elements[key];
    if (!control || key === "bug") continue; // the bug select offers the current mode's bugs (bugOptions)
    if (key === "net") { // each net by its title, its about line as the option's title
      const listed = nets.length ? nets : field.choices.map((name) => ({ name, title: name, about: "" }));
      control.replaceChildren(...listed.map((n) => Object.assign(new Option(n.title, n.name), { title: n.about })));
      continue;
    }
    if (control.tagName === "SELECT") {
      control.replaceChildren(...field.choices.map((c) => new Option(c.replace(/_/g, " "), c)));
    } else {
      if (field.minimum !== null) control.min = field.minimum;
      if (field.maximum !== null) control.max = field.maximum;
    }
  }
}

function legend() {
  $("legend").innerHTML = graphView.legendHtml();
}

const tooltip = graphView.bindTooltip($("graph"), $("graph-tip"));
let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if (graph && lastView) graphView.render($("graph"), { graph: shownGraph, state: lastView, selected: state.node, onOpen: openNode });
  }, 120);
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state && state.why) {
    setWhy(false);
    return;
  }
  if (event.key === "Escape" && document.body.classList.contains("expanded")) {
    document.body.classList.remove("expanded");
    load();
  }
});

// The URL's net's meta and bugs; a net the server does not have: the default net's (parseURL then notes the URL's)
async function netMeta(asked) {
  const bugsOf = (net) => api.fetchBugs(net).catch(() => ({ bugs: [] }));
  const [served, listed] = await Promise.all([api.fetchMeta(asked).catch((e) => e), bugsOf(asked)]);
  if (!(served instanceof api.ApiError && served.status === 422 && asked)) {
    if (served instanceof Error) throw served;
    return [served, listed];
  }
  return Promise.all([api.fetchMeta(), bugsOf("")]);
}

async function start() {
  let bugModes = {};
  // the data line is drawn before the first graph: filled in later, it would push the page down under the pointer
  const dataLine = api.fetchDataset().then((ds) => { $("data-line").innerHTML = dataLineHtml(ds); }, () => {});
  try {
    // the bugs too: a URL's bug must exist in its mode (asked for at once, and kept for the bug select)
    const asked = new URLSearchParams(location.search).get("net") || "";
    const [[served, listed], known] = await Promise.all([netMeta(asked), api.fetchNets().catch(() => ({ nets: [] }))]);
    meta = served;
    nets = known.nets;
    bugModes = Object.fromEntries(listed.bugs.map((b) => [b.name, b.modes]));
  } catch (e) {
    showError(e.message);
    return;
  }
  const parsed = parseURL(location.search, meta, bugModes);
  state = parsed.state;
  for (const line of parsed.notes) urlNote(line);
  buildControls();
  legend();
  bind();
  challenge.init(meta, () => load());
  classJoin.init();
  await dataLine;
  await load({ fallback: true });
  loadBugs();
}

start();
