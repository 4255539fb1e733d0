// Pure renderer of the tensor inspector: what the node is, its forward line and backward rule(s), the
// lecture's check, one large heatmap (value | manual | autograd | manual − autograd) with marginal sums
// and a crosshair linked to four small multiples; tiny tensors as numbers; a partial gradient's split.
import { SCALAR_MAX, SLICE_OVER, STATUS } from "./config.js";
import { esc } from "./text.js";
import { nodeStatus, statusText } from "./graph.js";
import { absMax, as2d, axisTitle, cellAt, ensureFrame, hideOverlays, identical, moveCross, num, rangeOf, renderMain, thumb } from "./heatmaps.js";
import { LAYOUTS, clampIndex, defaultLayout, entryAt, layoutOf } from "./slices.js";

export const VIEWS = [
  { key: "value", label: "value" },
  { key: "manual", label: "manual grad" },
  { key: "autograd", label: "autograd grad" },
  { key: "diff", label: "manual − autograd" },
];

// floats as Python prints them, so the line reads exactly like the lecture's cmp()
const pyFloat = (x) => (x === null ? "NaN/Inf" : Number.isInteger(x) ? x.toFixed(1) : String(x));
const shapeText = (shape) => `(${shape.join(",")})`;

export function cmpLine(cmp) {
  if (!cmp) return "";
  if (cmp.shape_mismatch) return cmp.shape_mismatch; // no maxdiff exists between tensors of different shapes
  if (cmp.shape_ok === false) return `shape ${shapeText(cmp.shape)}, expected ${shapeText(cmp.expected_shape)}`;
  const rel = cmp.rel_err === undefined || cmp.rel_err === null ? "" : ` | relative error: ${cmp.rel_err.toPrecision(3)}`;
  return `exact: ${cmp.exact ? "True" : "False"} | approximate: ${cmp.approx ? "True" : "False"} | maxdiff: ${pyFloat(cmp.maxdiff)}${rel}`;
}

// the four panels of a tensor: which tensor, its colour range, and why it is empty when it is
export function panelsOf(detail) {
  const g = absMax(detail.grad_manual, detail.grad_autograd) || 1e-12;
  const d = absMax(detail.diff) || 1e-12;
  const shapesDiffer = detail.grad_manual && detail.grad_autograd && detail.cmp && detail.cmp.shape_ok === false;
  const hide = detail.hidden || { manual: false, autograd: false };
  const noGrad = !detail.grad_autograd && !detail.grad_manual && !hide.autograd;
  const missing = noGrad ? "no gradient: an input of the network"
    : hide.manual ? hide.note : !detail.grad_manual ? "not reached yet at this step" : "";
  const ref = detail.reference && detail.status === "partial" ? ` (${detail.reference})` : "";
  return {
    value: { key: "value", title: "value", tensor: detail.value, range: null },
    manual: { key: "manual", title: detail.status === "partial" ? `manual grad: ${detail.contributions[0]} of ${detail.contributions[1]} contributions` : "manual grad",
      tensor: detail.grad_manual, range: g, empty: detail.grad_manual ? "" : missing },
    autograd: { key: "autograd", title: `autograd grad${ref}`, tensor: detail.grad_autograd, range: g,
      empty: detail.grad_autograd ? "" : hide.autograd ? hide.note : "no gradient: an input of the network" },
    diff: { key: "diff", title: "manual − autograd", tensor: detail.diff, range: d,
      empty: hide.autograd ? hide.note : shapesDiffer ? `shapes differ: manual ${shapeText(detail.grad_manual.shape)}, expected ${shapeText(detail.grad_autograd.shape)} — nothing to subtract`
        : identical(detail.diff) ? "identical: 0 everywhere" : missing || (detail.diff ? "" : "nothing to compare") },
  };
}

let cross = null; // [row, col] the pointer is on, shared by the main plot and the small multiples
let current = null; // what is drawn: {detail, at, view, grids}

// Where a 3-D node is cut: the layout asked for (or the node's own) and the slice's index inside its axis
// (null for a node of another rank). `choice` = {slice, axes} as the page's state holds them.
export function cutOf(detail, choice = {}) {
  if (detail.shape.length !== 3) return null;
  const layout = layoutOf(detail.axes, choice.axes || null);
  return { ...layout, index: clampIndex(choice.slice ?? 0, detail.shape[layout.cut]) };
}

// The tensor endpoint's slice parameters for a node of the graph ({shape, axes}): a large 3-D one is asked for as
// the one slice the heatmaps draw (a WaveNet activation whole is megabytes), anything else whole ({}).
export function sliceQuery(node, choice = {}) {
  if (!node || node.shape.length !== 3 || node.shape.reduce((a, b) => a * b, 1) <= SLICE_OVER) return {};
  const at = cutOf(node, choice);
  return { slice_dim: at.cut, slice_index: at.index };
}

function gridOf(detail, tensor, at) {
  const own = tensor.shape.length === detail.shape.length && tensor.shape.every((n, i) => n === detail.shape[i]);
  // a wrong-shaped 3-D gradient is cut the same way, at an index it has
  const cut = at && tensor.shape.length === 3 ? { ...at, index: clampIndex(at.index, tensor.shape[at.cut]) } : at;
  return as2d(tensor, own ? detail.labels : fallbackLabels(tensor), detail.axes, cut);
}

// an axis's title up to its colon ("batch row: context → target" is a "batch row"), for the controls
const shortTitle = (axis) => axisTitle(axis).split(":")[0];
// a dim of a node by its axis's short title, or by its number where the axis has no title (a kept dim of size 1)
const dimName = (detail, d) => shortTitle(detail.axes[d]) || `dim ${d}`;

// The slice's controls: which two axes are the map (a select of the six layouts) and where the third is cut
// (a slider, the slice it shows beside it). Both keyboard controls with a label each.
function sliceControls(detail, at) {
  const options = LAYOUTS.map((l) => {
    const text = `${dimName(detail, l.rows)} × ${dimName(detail, l.cols)} (${detail.shape[l.rows]} × ${detail.shape[l.cols]})`;
    return `<option value="${l.rows},${l.cols}" ${l.rows === at.rows && l.cols === at.cols ? "selected" : ""}>${esc(text)}</option>`;
  }).join("");
  return `<div class="slice3d" role="group" aria-label="which 2-D slice of the 3-D tensor the heatmaps show" data-testid="slice-controls">
      <label>rows × columns <select data-testid="slice-axes">${options}</select></label>
      <label>${esc(shortTitle(detail.axes[at.cut]) ? `${shortTitle(detail.axes[at.cut])} (dim ${at.cut})` : `dim ${at.cut}`)} <input type="range" data-testid="slice" min="0" max="${detail.shape[at.cut] - 1}"
        step="1" value="${at.index}" aria-valuetext="${esc(sliceValue(detail, at))}"></label>
      <output data-testid="slice-label">${esc(sliceText(detail, at))}</output>
    </div>`;
}

// the slice shown, as the index that takes it and its label where it has one: "h1[3, :, :] · emm→a"
function sliceText(detail, at) {
  const index = [0, 1, 2].map((d) => (d === at.cut ? String(at.index) : ":")).join(", ");
  const label = detail.labels[at.cut][at.index];
  return `${detail.name}[${index}]${label !== String(at.index) ? ` · ${label}` : ""}`;
}

// the slider's value in words: "batch row 3 of 32: emm→a"
function sliceValue(detail, at) {
  const label = detail.labels[at.cut][at.index];
  return `${dimName(detail, at.cut)} ${at.index} of ${detail.shape[at.cut]}${label !== String(at.index) ? `: ${label}` : ""}`;
}

// a wrong-shaped gradient is drawn in its own shape: its labels are indices where the node's do not fit
function fallbackLabels(tensor) {
  return tensor.shape.map((n) => Array.from({ length: n }, (_, i) => String(i)));
}

function ruleHtml(graph, name) {
  const rules = graph.ops.flatMap((op) => op.rules.filter((r) => r.target === name).map((r) => ({ op, r })))
    .sort((a, b) => a.r.contribution - b.r.contribution);
  if (!rules.length) return '<span class="muted">none: no gradient flows into an input</span>';
  return rules.map(({ op, r }) => r.hidden ? `
    <pre data-testid="rule" class="hidden-rule">${esc(r.code)}    <span class="muted">${esc(r.shapes)}</span></pre>
    <ul class="notes"><li>from the backward step of <code>${esc(op.name)}</code>: ${esc(r.hidden)}</li></ul>` : `
    <pre data-testid="rule" class="${r.bug ? "bug-rule" : ""}">${r.bug ? '<span class="bug-tag" data-testid="bug-tag">BUG</span> ' : ""}${esc(r.code)}    <span class="muted">${esc(r.shapes)}</span></pre>
    ${r.bug ? `<div class="correct-rule">right: <code>${esc(r.correct_code)}</code></div>` : ""}
    <ul class="notes"><li>from the backward step of <code>${esc(op.name)}</code>${r.of > 1 ? ` (contribution ${r.contribution} of ${r.of})` : ""}</li>${r.notes.map((n) => `<li>${esc(n)}</li>`).join("")}</ul>`).join("");
}

function numericLine(detail) {
  const n = detail.numeric;
  if (n) {
    return `finite differences (float64, ${n.entries_checked} entries): max relative error ${n.max_rel_err.toExponential(2)}` +
      (n.near_zero_entries ? `; ${n.near_zero_entries} entries ≈ 0, max abs error ${n.near_zero_max_abs_err.toExponential(2)}` : "");
  }
  return detail.numeric_note || (detail.grad_autograd ? "" : "finite differences: none (an input of the network)");
}

function checkLine(detail) {
  const cmp = detail.cmp;
  const name = esc(detail.name.padEnd(15));
  if (detail.status === "pending") return "not reached yet: step the backward pass further";
  if (detail.status === "none") return "no gradient: an input of the network";
  if (!cmp) return detail.status === "partial" ? `partial: ${detail.contributions[0]} of ${detail.contributions[1]} contributions` : "";
  const against = detail.status === "partial" && detail.reference ? ` <span class="muted">(against ${esc(detail.reference)})</span>` : "";
  return `<span data-testid="cmp">${name} | ${esc(cmpLine(cmp))}</span>${against}`;
}

function smallTable(detail, panels) {
  const flat = (t) => (t ? (t.shape.length === 0 ? [t.data] : t.data.flat(Infinity)) : null);
  const cols = VIEWS.map((v) => ({ label: v.label, values: flat(panels[v.key].tensor), empty: panels[v.key].empty }));
  const n = detail.shape.reduce((a, b) => a * b, 1);
  const rows = [];
  for (let i = 0; i < n; i++) {
    const index = detail.shape.length === 0 ? detail.name : `[${i}]`;
    rows.push(`<tr><th scope="row">${esc(index)}</th>${cols.map((c) => `<td>${c.values ? esc(num(c.values[i])) : `<span class="muted">${esc(c.empty || "—")}</span>`}</td>`).join("")}</tr>`);
  }
  return `<table class="numbers" data-testid="numbers"><thead><tr><th></th>${cols.map((c) => `<th scope="col">${esc(c.label)}</th>`).join("")}</tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

export function render(el, { detail, graph, nodeState, view, slice, axes = null, pinned, expanded, why, onView, onSlice, onPin, onExpand, onWhy, onCell, onPick }) {
  const panels = panelsOf(detail);
  const at = cutOf(detail, { slice, axes });
  const status = STATUS[nodeStatus(nodeState)];
  const producer = graph.ops.find((op) => op.outputs.includes(detail.name));
  const small = detail.shape.reduce((a, b) => a * b, 1) <= SCALAR_MAX;
  // the plots stay from node to node (Plotly then updates a plot instead of building a new one, ~60 ms)
  const moved = el.dataset.node !== detail.name;
  const recut = el.dataset.layout !== (at ? `${at.rows},${at.cols}` : "");
  if (moved || recut) cross = null; // another map: the crosshair's cell is not on it
  el.dataset.layout = at ? `${at.rows},${at.cols}` : "";
  const fresh = el.dataset.small !== String(small) || !el.querySelector(".insp-text");
  if (fresh) {
    el.innerHTML = `<div class="insp-text"></div>
      <div class="insp-plots">${small ? '<div class="numbers-wrap"></div>' : `
        <div class="views" role="tablist" aria-label="what the large heatmap shows">${VIEWS.map((v) => `<button type="button" role="tab" id="view-tab-${v.key}" aria-controls="main-view" data-view="${v.key}" data-testid="view-${v.key}">${esc(v.label)}</button>`).join("")}</div>
        <div class="main-wrap" id="main-view" role="tabpanel" aria-label="the large heatmap"></div>
        <div class="main-empty muted" data-testid="main-empty" hidden></div>
        <div class="readout" data-testid="readout" aria-live="polite">Hover a cell: its four numbers appear here.</div>
        <div class="cell-rule" data-testid="cell-rule" hidden></div>
        <div class="thumbs">${VIEWS.map((v) => `<figure class="thumb" data-view="${v.key}" data-testid="thumb-${v.key}"><figcaption></figcaption><canvas></canvas><div class="thumb-empty muted" hidden></div></figure>`).join("")}</div>
        <div class="split" data-testid="split" hidden></div>`}</div>`;
    el.dataset.small = String(small);
  }
  el.dataset.node = detail.name;
  const readout = el.querySelector(".readout");
  if (moved && readout && !fresh) {
    readout.textContent = "Hover a cell: its four numbers appear here.";
    delete readout.dataset.cell;
    const rule = el.querySelector(".cell-rule");
    if (rule) rule.hidden = true;
  }
  el.querySelector(".insp-text").innerHTML = `
    <div class="insp-head">
      <h2 data-testid="panel-title">${esc(detail.name)} <small>${esc(detail.kind)} · shape (${detail.shape.join(", ")})</small></h2>
      <span class="chip" data-testid="status" style="border-color:${status.color};background:${status.fill}">${esc(statusText(nodeState))}</span>
      <span class="insp-buttons">
        <button type="button" data-testid="why-open" aria-pressed="${why ? "true" : "false"}" title="the derivation, worked examples and the check cell (W)">Why?</button>
        <button type="button" data-testid="pin" aria-pressed="${pinned ? "true" : "false"}" title="keep this node open while stepping">${pinned ? "Pinned" : "Pin"}</button>
        <button type="button" data-testid="expand" aria-pressed="${expanded ? "true" : "false"}">${expanded ? "Close full window" : "Full window"}</button>
      </span>
    </div>
    <p class="about">${esc(detail.about)}</p>
    <div class="code-line"><b>forward</b> ${producer ? `<code data-testid="formula">${esc(producer.formula)}</code>` : '<span class="muted">a leaf: an input or a parameter</span>'}</div>
    <div class="code-line"><b>backward</b> ${ruleHtml(graph, detail.name)}</div>
    <div class="cmp" data-testid="check"><b>check</b> ${checkLine(detail)}</div>
    <div class="cmp muted" data-testid="numeric">${esc(numericLine(detail))}</div>
    ${at && !small ? sliceControls(detail, at) : ""}`;
  el.querySelector('[data-testid="pin"]').onclick = () => onPin(!pinned);
  el.querySelector('[data-testid="expand"]').onclick = () => onExpand(!expanded);
  el.querySelector('[data-testid="why-open"]').onclick = () => onWhy(!why);
  const slider = el.querySelector('[data-testid="slice"]');
  if (slider) {
    const label = el.querySelector('[data-testid="slice-label"]');
    // while dragging, the label follows; the heatmaps (and the URL) on release or on each key press
    slider.oninput = () => {
      const moved = { ...at, index: Number(slider.value) };
      label.textContent = sliceText(detail, moved);
      slider.setAttribute("aria-valuetext", sliceValue(detail, moved));
      if (!detail.value.slice) preview(el, moved); // held whole: every slice drawn while dragging
    };
    // the node's own layout stays out of the URL (null), as its defaults do
    const own = defaultLayout(detail.axes);
    const asked = (rows, cols) => (rows === own.rows && cols === own.cols ? null : [rows, cols]);
    slider.onchange = () => onSlice({ slice: Number(slider.value), axes: asked(at.rows, at.cols) });
    const layouts = el.querySelector('[data-testid="slice-axes"]');
    // another layout cuts another axis: its first slice
    layouts.onchange = () => onSlice({ slice: 0, axes: asked(...layouts.value.split(",").map(Number)) });
  }
  if (small) {
    el.querySelector(".numbers-wrap").innerHTML = smallTable(detail, panels);
    current = null;
    return Promise.resolve();
  }
  const grids = {};
  for (const v of VIEWS) if (panels[v.key].tensor) grids[v.key] = gridOf(detail, panels[v.key].tensor, at);
  current = { detail, at, view, grids, panels, onCell, onPick };
  // the switch and the thumbnails
  markView(el, view);
  for (const b of el.querySelectorAll(".views button")) {
    b.onclick = () => onView(b.dataset.view);
    b.onkeydown = (event) => { // the ARIA tabs pattern: the arrows move between the views, not through the steps
      const tabs = [...el.querySelectorAll(".views button")];
      const at = tabs.indexOf(b);
      const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (to === undefined) return;
      event.preventDefault();
      event.stopPropagation();
      const next = tabs[(to + tabs.length) % tabs.length];
      next.focus();
      onView(next.dataset.view);
    };
  }
  for (const fig of el.querySelectorAll(".thumbs .thumb")) {
    const p = panels[fig.dataset.view];
    fig.classList.toggle("active", fig.dataset.view === view);
    fig.querySelector("figcaption").textContent = p.title;
    const canvas = fig.querySelector("canvas");
    const empty = fig.querySelector(".thumb-empty");
    const drawable = grids[p.key] && !p.empty;
    canvas.hidden = !drawable;
    empty.hidden = !!drawable;
    empty.textContent = p.empty || "";
    fig.dataset.shape = p.tensor ? p.tensor.shape.join("x") : "";
    fig.onclick = () => onView(p.key);
    if (drawable) thumb(canvas, grids[p.key], rangeOf(p), sameShape(p.key) ? cross : null);
    canvas.onpointermove = (event) => { if (grids[p.key]) setCross(el, cellAt(canvas, grids[p.key], event), p.key); };
  }
  renderSplit(el.querySelector(".split"), detail);
  return drawMain(el);
}

// A slice drawn while the slider is dragged, from the tensor the page holds whole: no request and no URL change
// until the slider is let go (its change event), which takes the slice as any other choice.
function preview(el, at) {
  if (!current || !current.at) return;
  const { detail, panels, grids } = current;
  current.at = at;
  for (const v of VIEWS) if (panels[v.key].tensor) grids[v.key] = gridOf(detail, panels[v.key].tensor, at);
  for (const fig of el.querySelectorAll(".thumbs .thumb")) {
    const p = panels[fig.dataset.view];
    if (grids[p.key] && !p.empty) thumb(fig.querySelector("canvas"), grids[p.key], rangeOf(p), sameShape(p.key) ? cross : null);
  }
  renderSplit(el.querySelector(".split"), detail);
  drawMain(el);
  if (cross) setCross(el, cross, current.view); // the readout's numbers are the new slice's
}

// the crosshair spans panels of the node's own shape (a wrong-shaped gradient has other cells)
function sameShape(key) {
  const g = current && current.grids[key];
  const v = current && current.grids.value;
  return g && v && g.z.length === v.z.length && g.z[0].length === v.z[0].length;
}

// run `work` when the page has nothing else to do (a click meanwhile waits for it: keep it short)
export const idle = (work) => (window.requestIdleCallback ? requestIdleCallback(work, { timeout: 1000 }) : setTimeout(work, 50));

const PLOTS_KEPT = 3; // plots kept per grid size: the next tensor usually has one of a few shapes

// The plot for a grid size (made if missing, the oldest dropped past PLOTS_KEPT); shown when `show`, the others
// on standby. A kept plot's frame is drawn already: showing it costs nothing, where Plotly draws a new one in
// ~100 ms (measured in the browser bench).
function plotFor(el, grid, show = true) {
  const wrap = el.querySelector(".main-wrap");
  const key = `${grid.z.length}x${grid.z[0].length}`;
  let div = wrap.querySelector(`.main-plot[data-grid="${key}"]`);
  if (!div) {
    div = Object.assign(document.createElement("div"), { className: "main-plot standby" });
    div.dataset.grid = key;
    wrap.prepend(div);
    // the reserved plot (Run all's, see reserve) is not counted and never dropped
    const plots = wrap.querySelectorAll(".main-plot:not([data-reserved])");
    if (plots.length > PLOTS_KEPT) {
      const oldest = plots[plots.length - 1];
      if (oldest.data && window.Plotly) Plotly.purge(oldest);
      oldest.remove();
    }
  } else if (show) {
    wrap.prepend(div); // most recently used first
  }
  if (!show) return div;
  for (const d of wrap.querySelectorAll(".main-plot")) {
    d.hidden = false;
    d.classList.toggle("standby", d !== div);
    if (d === div) d.dataset.testid = "heatmap-main";
    else delete d.dataset.testid;
  }
  return div;
}

// Draw, on standby, the frame the inspector will need for this tensor (the next step's, prefetched; or the
// open node's while its gradient is not there yet): called when the page is idle.
export function prepare(el, detail, choice = {}) {
  const wrap = el.querySelector(".main-wrap");
  if (!wrap || !detail || detail.shape.reduce((a, b) => a * b, 1) <= SCALAR_MAX) return;
  const grid = gridOf(detail, detail.value, cutOf(detail, choice));
  const div = plotFor(el, grid, false);
  if (div.classList.contains("standby")) ensureFrame(div, grid);
}

// Draw, on standby, the frame of the tensor Run all will show, and keep it however many other shapes the steps
// show before: Run all jumps to a gradient of a shape no step near it has (the embedding's dC, 27×10), and
// drawing its frame at the click took ~55 ms of Run all's ~120 (measured in the browser). One plot is reserved.
export function reserve(el, detail, key) {
  const wrap = el.querySelector(".main-wrap");
  if (!wrap || !detail || detail.shape.reduce((a, b) => a * b, 1) <= SCALAR_MAX) return;
  const grid = gridOf(detail, detail.value, cutOf(detail));
  const div = plotFor(el, grid, false);
  for (const d of wrap.querySelectorAll(".main-plot[data-reserved]")) if (d !== div) delete d.dataset.reserved;
  div.dataset.reserved = key;
  if (div.classList.contains("standby")) ensureFrame(div, grid);
}

function drawMain(el) {
  const { view, grids, panels } = current;
  const p = panels[view];
  const empty = el.querySelector(".main-empty");
  if (!grids[view] || p.empty) {
    for (const d of el.querySelectorAll(".main-plot")) d.hidden = true;
    hideOverlays(el.querySelector(".main-wrap"));
    idle(() => prepare(el, current.detail, current.at && { slice: current.at.index, axes: [current.at.rows, current.at.cols] })); // the frame its gradient will need
    const last = el.querySelector('[data-testid="heatmap-main"]');
    if (last) last.dataset.view = view; // what the switch shows: here, the reason there is nothing to draw
    empty.hidden = false;
    empty.textContent = `${p.title}: ${p.empty}`;
    return Promise.resolve();
  }
  const div = plotFor(el, grids[view]);
  div.dataset.view = view;
  empty.hidden = true;
  const wrap = el.querySelector(".main-wrap");
  // the pointer over the painted cells moves the crosshair (one listener for the wrapper's life)
  wrap.onpointermove = (event) => {
    const t = event.target;
    if (t.dataset.overlay === "cells" && t.grid) setCross(el, cellAt(t, t.grid, event), current.view);
  };
  wrap.onpointerdown = (event) => { // a tap on a phone, too; a click also picks the why drawer's entry
    const t = event.target;
    if (t.dataset.overlay !== "cells" || !t.grid) return;
    const cell = cellAt(t, t.grid, event);
    setCross(el, cell, current.view);
    if (cell && current.onPick) current.onPick(entryOf(current.detail, cell, current.at));
  };
  const title = current.at ? `${p.title} · ${sliceText(current.detail, current.at)}` : p.title;
  return renderMain(div, grids[view], rangeOf(p), { title, cross: sameShape(view) ? cross : null });
}

// Mark the same cell in the main plot and every thumbnail of the node's shape, and print its four numbers.
function setCross(el, cell, from) {
  if (!current || !cell) return;
  if (!sameShape(from)) return;
  cross = cell;
  const [i, j] = cell;
  const { grids, panels, view } = current;
  for (const fig of el.querySelectorAll(".thumbs .thumb")) {
    const key = fig.dataset.view;
    if (grids[key] && !panels[key].empty) thumb(fig.querySelector("canvas"), grids[key], rangeOf(panels[key]), sameShape(key) ? cell : null);
  }
  if (grids[view] && !panels[view].empty && sameShape(view)) moveCross(el.querySelector('[data-testid="heatmap-main"]'), cell);
  const v = grids.value;
  const cells = VIEWS.map((x) => {
    const g = grids[x.key];
    const text = g && sameShape(x.key) ? num(g.z[i][j]) : "—";
    return `<span>${esc(x.label)}: <b data-testid="readout-${x.key}">${esc(text)}</b></span>`;
  });
  el.querySelector(".readout").innerHTML = `<span class="muted">${where(current.detail, current.at, i, j, v)}</span> ${cells.join(" ")}`;
  el.querySelector(".readout").dataset.cell = `${i},${j}`;
  el.querySelector(".readout").dataset.index = entryOf(current.detail, cell, current.at).join(",");
  // the rules of the entry under the pointer, written out with its numbers (the server writes them)
  if (current.onCell && current.detail.grad_manual) current.onCell(entryOf(current.detail, cell, current.at), el.querySelector(".cell-rule"));
}

// the tensor index of a drawn cell: a vector is one row, a 3-D tensor is drawn one slice (`at`) at a time
export function entryOf(detail, [i, j], at) {
  const rank = detail.shape.length;
  return rank === 1 ? [j] : rank === 2 ? [i, j] : entryAt(at, at.index, i, j);
}

// Where the hovered cell is: row and column with their labels; a 3-D entry by its full index, each dim named.
function where(detail, at, i, j, grid) {
  if (!at) return `row ${i} ${esc(grid.y[i])} · col ${j} ${esc(grid.x[j])}`;
  const index = entryAt(at, at.index, i, j);
  // a label that only repeats the index ("q7", "h5") is left out; a context ("emm→a"), a pair ("p1·e3") is said
  const plain = (label, k) => new RegExp(`^[a-z]*${k}$`).test(label);
  const named = index.map((k, d) => `${esc(dimName(detail, d))} ${k}${plain(detail.labels[d][k], k) ? "" : ` ${esc(detail.labels[d][k])}`}`);
  return `${esc(detail.name)}[${index.join(", ")}] · ${named.join(" · ")}`;
}

// A node fed by several ops: each op's contribution and their sum, side by side.
function renderSplit(div, detail) {
  const split = detail.split;
  if (!split || detail.contributions[1] < 2) { div.hidden = true; div.replaceChildren(); return; }
  div.hidden = false;
  const total = detail.contributions[1];
  const g = absMax(...split.map((s) => s.manual), detail.grad_manual) || 1e-12;
  const range = rangeOf({ range: g });
  const items = [];
  for (let k = 0; k < total; k++) {
    const s = split[k];
    items.push({ title: s ? `contribution ${k + 1}: from ${s.op} (step ${s.step})` : `contribution ${k + 1}: not yet`, tensor: s ? s.manual : null });
  }
  items.push({ title: `sum so far (${split.length} of ${total})`, tensor: detail.grad_manual });
  div.innerHTML = `<div class="split-title">${esc(detail.name)} is used by ${total} ops: its gradient is the sum of their contributions</div>` +
    items.map((it, k) => `<figure class="thumb" data-testid="split-${k}"><figcaption>${esc(it.title)}</figcaption>${it.tensor ? "<canvas></canvas>" : '<div class="thumb-empty muted">arrives later</div>'}</figure>`).join("");
  items.forEach((it, k) => {
    if (!it.tensor) return;
    const canvas = div.querySelector(`[data-testid="split-${k}"] canvas`);
    thumb(canvas, gridOf(detail, it.tensor, current ? current.at : cutOf(detail)), range);
  });
}

// the view's tab selected, and the one tab stop of the tablist (roving tabindex)
function markView(el, view) {
  for (const b of el.querySelectorAll(".views button")) {
    b.setAttribute("aria-selected", b.dataset.view === view ? "true" : "false");
    b.tabIndex = b.dataset.view === view ? 0 : -1;
  }
}

export function setView(el, view) {
  if (!current) return Promise.resolve();
  current.view = view;
  markView(el, view);
  for (const fig of el.querySelectorAll(".thumbs .thumb")) fig.classList.toggle("active", fig.dataset.view === view);
  return drawMain(el);
}

// how to read the page; `net`: the network's title, as the network select names it
export function intro(net = "") {
  return `<div class="intro" data-testid="intro">
    <h2>How to read this page</h2>
    <ol>
      <li>The graph is the network's forward pass${net ? ` (${esc(net)})` : ""}, top to bottom: boxes are tensors, ellipses the ops between them.</li>
      <li>Press <b>Next ▶</b> (or →) to backpropagate through one op. The gradient it produces opens here, compared with PyTorch autograd.</li>
      <li>Each tensor's box tells its state: ${Object.entries(STATUS).filter(([k]) => k !== "none").map(([, s]) => `${s.symbol} ${esc(s.label)}`).join(", ")}.</li>
      <li>Click any box (or Tab into the graph, arrows, Enter) to open it; <b>Pin</b> keeps it open while you step.</li>
    </ol></div>`;
}
