// Pure renderer of the computation graph at the positions the server's layered layout gives (/api/graph's
// layout): the arrowed edges are the page's own SVG (drawn before any plotting library has loaded); the tensor
// boxes and op ellipses are <button>s laid over them, which also take clicks, keyboard focus and tooltips.
// render(el, {graph, state, selected, onOpen}).
import { CURRENT, EDGE, MUTED, STATUS, TEXT } from "./config.js";
import { esc } from "./text.js";

const MIN_SCALE = 0.72;
const MAX_SCALE = 1.3;
const TAP_MIN = 24; // px: the least height of a node's button where it is tapped (WCAG 2.5.8)

export function nodeStatus(nodeState) {
  if (!nodeState) return "pending";
  const cmp = nodeState.cmp;
  if (nodeState.status === "partial") return cmp && !cmp.approx ? "mismatch" : "partial";
  if (nodeState.status !== "complete") return nodeState.status;
  if (!cmp) return "exact";
  return cmp.exact ? "exact" : cmp.approx ? "approx" : "mismatch";
}

export function relErrText(cmp) {
  if (!cmp) return "";
  if (cmp.shape_ok === false) return "shape";
  const r = cmp.rel_err;
  if (r === null || r === undefined || cmp.approx) return "";
  return r >= 0.1 ? `${Math.round(r * 100)}%` : r >= 0.001 ? `${(r * 100).toPrecision(2)}%` : r.toExponential(0);
}

// the node's status as words and glyph (colour is never the only cue)
export function statusText(nodeState) {
  const st = nodeStatus(nodeState);
  const s = STATUS[st];
  if (!nodeState) return `${s.symbol} ${s.label}`;
  const [done, total] = nodeState.contributions;
  const part = nodeState.status === "partial" ? ` (${done} of ${total} contributions)` : "";
  const err = relErrText(nodeState.cmp);
  const size = err === "shape" ? ", wrong shape" : err ? `, relative error ${err}` : "";
  const label = st === "partial" ? "partial" : s.label;
  return `${s.symbol} ${label}${part}${size}${nodeState.origin ? " — the error starts here" : ""}`.trim();
}

// the short tag drawn after a tensor's name: its glyph, k/m while partial, the size of an error
function tag(nodeState) {
  const st = nodeStatus(nodeState);
  if (!nodeState || st === "none") return "";
  const [done, total] = nodeState.contributions;
  const parts = nodeState.origin ? ["⚑", STATUS[st].symbol] : [STATUS[st].symbol];
  if (nodeState.status === "partial") parts.push(`${done}/${total}`);
  const err = relErrText(nodeState.cmp);
  if (err) parts.push(err);
  return parts.join(" ");
}

// which step of the backward pass carries each op's gradient: edges before it are traversed
function stepOf(graph) {
  return new Map(graph.schedule.map((name, i) => [name, i + 1]));
}

export function edgeState(edge, graph, step, steps) {
  const op = graph.ops.find((o) => o.name === edge.op);
  const carries = edge.kind === "out" || op.rules.some((r) => r.target === edge.tensor);
  if (!carries) return "pending"; // an input with no gradient (Xb, Yb)
  const at = steps.get(edge.op);
  return at < step ? "traversed" : at === step ? "current" : "pending";
}

// an arrowhead (a triangle `size` px long) with its tip at `tip`, pointing along (dx, dy), in screen pixels
export function arrowAt(tip, dx, dy, size) {
  const len = Math.hypot(dx, dy) || 1;
  const ux = dx / len, uy = dy / len;
  const bx = tip[0] - ux * size * 0.75, by = tip[1] - uy * size * 0.75, half = size * 0.58;
  return [tip, [bx - uy * half, by + ux * half], [bx + uy * half, by - ux * half]];
}

const px = (v) => Math.round(v * 10) / 10; // a tenth of a pixel: short SVG text, no visible loss

export function scaleFor(width, layout) {
  return Math.max(MIN_SCALE, Math.min(MAX_SCALE, (width - 12) / layout.width));
}

export function render(el, { graph, state, selected, onOpen }) {
  const layout = graph.layout;
  const scale = scaleFor(el.clientWidth, layout);
  const W = layout.width * scale, H = layout.height * scale;
  let canvas = el.querySelector(".graph-canvas");
  if (!canvas) {
    canvas = document.createElement("div");
    canvas.className = "graph-canvas";
    canvas.innerHTML = '<svg class="graph-plot" data-testid="graph-plot" aria-hidden="true"></svg><div class="graph-hits" role="group"></div>';
    el.append(canvas);
  }
  canvas.style.width = `${W}px`;
  canvas.style.height = `${H}px`;
  const svg = canvas.querySelector(".graph-plot");
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const steps = stepOf(graph);
  const step = state.step;

  // edges: three styles, drawn pending first and the current step's on top; forward arrows at the consumer
  // until the gradient flows back, then at the source
  const parts = [];
  for (const kind of ["pending", "traversed", "current"]) {
    const style = EDGE[kind];
    const lines = [], heads = [];
    for (const edge of layout.edges) {
      if (edgeState(edge, graph, step, steps) !== kind) continue;
      const pts = edge.points.map(([x, y]) => [x * scale, y * scale]);
      lines.push(`<path data-op="${esc(edge.op)}" data-tensor="${esc(edge.tensor)}" data-edge="${esc(edge.kind)}" d="M${pts.map(([x, y]) => `${px(x)} ${px(y)}`).join("L")}"/>`);
      const [a, b] = kind !== "pending" ? [pts[1], pts[0]] : [pts[pts.length - 2], pts[pts.length - 1]];
      const head = arrowAt(b, b[0] - a[0], b[1] - a[1], style.arrow);
      heads.push(`<path d="M${head.map(([x, y]) => `${px(x)} ${px(y)}`).join("L")}Z"/>`);
    }
    const width = px(style.width * Math.min(1, scale + 0.2));
    parts.push(`<g class="edges" data-kind="${kind}" fill="none" stroke="${style.color}" stroke-width="${width}" stroke-linejoin="round">${lines.join("")}</g>`,
      `<g class="arrows" data-kind="${kind}" fill="${style.color}">${heads.join("")}</g>`);
  }
  svg.innerHTML = parts.join("");

  // the nodes themselves are the buttons laid over the edges (see hits): HTML draws boxes and text
  // faster than an SVG of ~50 filled shapes and labels is rebuilt at every step
  const statuses = new Map(graph.nodes.map((n) => [n.name, nodeStatus(state.nodes[n.name])]));
  hits(canvas.querySelector(".graph-hits"), { graph, state, selected, scale, onOpen, statuses, steps });
}

// The buttons over the nodes: one tab stop for the whole graph (roving tabindex), arrows move between
// nodes, Enter or a click opens one; hover, focus or a tap shows its tooltip.
// mismatch fills darken with the relative error: < 1%, 1–10%, ≥ 10% (or a wrong shape)
const MISMATCH_FILLS = [STATUS.mismatch.fill, "#eab8c8", "#d98aa4"];
function mismatchFill(cmp) {
  const r = cmp && cmp.shape_ok !== false ? cmp.rel_err ?? 1 : 1;
  return MISMATCH_FILLS[r >= 0.1 ? 2 : r >= 0.01 ? 1 : 0];
}

function hits(group, { graph, state, selected, scale, onOpen, statuses, steps }) {
  const layout = graph.layout;
  group.setAttribute("aria-label", "computation graph: Tab into it, arrow keys move between nodes, Enter opens one");
  const items = [
    ...graph.nodes.filter((n) => layout.nodes[n.name]).map((n) => ({ kind: "tensor", name: n.name, node: n, at: layout.nodes[n.name] })),
    ...graph.ops.filter((o) => layout.ops[o.name]).map((o) => ({ kind: "op", name: o.name, op: o, at: layout.ops[o.name] })),
  ];
  const id = (item) => `${item.kind}:${item.name}`;
  const tap = window.matchMedia("(pointer: coarse)").matches || window.innerWidth < 700 ? TAP_MIN : 0;
  const focused = document.activeElement && group.contains(document.activeElement) ? document.activeElement.dataset.id : null;
  const stop = focused || (selected ? `tensor:${selected}` : `tensor:${graph.nodes[graph.nodes.length - 1].name}`);
  const byId = new Map([...group.children].map((b) => [b.dataset.id, b]));
  const keep = new Set();
  for (const item of items) {
    const key = id(item);
    keep.add(key);
    let b = byId.get(key);
    if (!b) {
      b = document.createElement("button");
      b.type = "button";
      b.className = `gnode gnode-${item.kind}`;
      b.innerHTML = '<span class="glabel"></span>';
      b.dataset.id = key;
      b.dataset.testid = item.kind === "tensor" ? `gnode-${item.name}` : `gop-${item.name}`;
      group.append(b);
    }
    const { x, y, w, h } = item.at;
    const tall = Math.max(h * scale, tap); // a finger's target: at least TAP_MIN px tall, centred where the node is
    b.style.left = `${(x - w / 2) * scale}px`;
    b.style.top = `${y * scale - tall / 2}px`;
    b.style.width = `${w * scale}px`;
    b.style.height = `${tall}px`;
    b.style.fontSize = `${(item.kind === "tensor" ? 12 : 11) * scale}px`;
    b.tabIndex = key === stop ? 0 : -1;
    const label = b.firstChild;
    if (item.kind === "tensor") {
      const st = statuses.get(item.name);
      const nodeState = state.nodes[item.name];
      const t = tag(nodeState);
      label.textContent = t ? `${item.name} ${t}` : item.name;
      b.style.borderColor = STATUS[st].color;
      b.style.background = st === "mismatch" ? mismatchFill(nodeState.cmp) : STATUS[st].fill;
      b.style.color = TEXT; // the colour the palette test checks against each fill
      b.dataset.kind = item.node.kind;
      b.setAttribute("aria-label", `${item.name}, ${item.node.kind}, shape (${item.node.shape.join(", ")}): ${statusText(state.nodes[item.name])}`);
      b.setAttribute("aria-pressed", item.name === selected ? "true" : "false");
      b.dataset.status = statuses.get(item.name);
      b.dataset.tip = tensorTip(item.node, state.nodes[item.name]);
    } else {
      label.textContent = item.at.symbol;
      const at = steps.get(item.name);
      const opState = at === state.step ? "current" : at < state.step ? "done" : "pending";
      b.dataset.state = opState;
      b.style.background = opState === "current" ? CURRENT : opState === "done" ? "#eef2f8" : "#ffffff";
      b.style.borderColor = opState === "current" ? CURRENT : opState === "done" ? EDGE.traversed.color : "#7d8491";
      b.setAttribute("aria-label", `op ${item.op.formula.split("\n")[0]}`);
      b.dataset.tip = opTip(item.op, graph, state);
      b.dataset.current = item.name === state.op ? "1" : "0";
    }
    b.onclick = () => onOpen(item.kind === "tensor" ? item.name : item.op.outputs[0]);
  }
  for (const [key, b] of byId) if (!keep.has(key)) b.remove();
  if (!group.dataset.bound) bindKeys(group, items.length ? scale : 1);
}

function tensorTip(node, nodeState) {
  const cmp = nodeState && nodeState.cmp;
  const line = !cmp ? "" : cmp.shape_mismatch ? `<br><code>${esc(cmp.shape_mismatch)}</code>`
    : cmp.shape_ok !== false ? `<br><code>exact: ${cmp.exact} | approx: ${cmp.approx} | maxdiff: ${cmp.maxdiff}</code>` : "";
  return `<b>${esc(node.name)}</b> <span class="tip-muted">${esc(node.kind)}, shape (${node.shape.join(", ")})</span><br>` +
    `${esc(node.about)}<br><b>${esc(statusText(nodeState))}</b>${line}`;
}

function opTip(op, graph, state) {
  const at = graph.schedule.indexOf(op.name) + 1;
  const when = at === state.step ? "this step backpropagates through it" : at < state.step ? `backpropagated at step ${at}` : `backward step ${at}`;
  const rules = op.rules.map((r) => `<pre class="${r.bug ? "tip-bug" : ""}">${r.bug ? "BUG: " : ""}${esc(r.code)}</pre>`).join("");
  return `<b>${esc(op.about)}</b> <span class="tip-muted">(${esc(when)})</span><pre>${esc(op.formula)}</pre>${rules}`;
}

function bindKeys(group) {
  group.dataset.bound = "1";
  const centre = (b) => ({ x: b.offsetLeft + b.offsetWidth / 2, y: b.offsetTop + b.offsetHeight / 2 });
  group.addEventListener("keydown", (event) => {
    const from = event.target.closest(".gnode");
    if (!from) return;
    const dirs = { ArrowUp: [0, -1], ArrowDown: [0, 1], ArrowLeft: [-1, 0], ArrowRight: [1, 0] };
    const dir = dirs[event.key];
    if (!dir) return;
    event.preventDefault();
    event.stopPropagation(); // the page's own arrow keys step the backward pass
    const a = centre(from);
    let best = null, bestScore = Infinity;
    for (const b of group.children) {
      if (b === from) continue;
      const c = centre(b);
      const dx = c.x - a.x, dy = c.y - a.y;
      const along = dx * dir[0] + dy * dir[1];
      if (along <= 2) continue;
      const across = Math.abs(dx * dir[1]) + Math.abs(dy * dir[0]);
      const score = along + 2.5 * across;
      if (score < bestScore) { bestScore = score; best = b; }
    }
    if (!best) return;
    from.tabIndex = -1;
    best.tabIndex = 0;
    best.focus();
    best.scrollIntoView({ block: "nearest", inline: "nearest" });
  });
}

// One tooltip for the graph: shown on hover and focus; a tap shows it and a tap elsewhere hides it.
export function bindTooltip(container, tip) {
  let shownFor = null;
  const show = (b) => {
    tip.innerHTML = b.dataset.tip;
    tip.hidden = false;
    const r = b.getBoundingClientRect();
    const tw = tip.offsetWidth, th = tip.offsetHeight;
    let left = r.right + 8 + window.scrollX;
    if (r.right + 8 + tw > window.innerWidth - 4) left = Math.max(4, r.left - tw - 8) + window.scrollX;
    if (left + tw > window.innerWidth + window.scrollX - 4) left = Math.max(4 + window.scrollX, window.innerWidth + window.scrollX - tw - 4);
    let top = r.top + window.scrollY;
    if (r.top + th > window.innerHeight - 4) top = Math.max(4, window.innerHeight - th - 4) + window.scrollY;
    tip.style.left = `${left}px`;
    tip.style.top = `${top}px`;
    shownFor = b;
  };
  const hide = () => { tip.hidden = true; shownFor = null; };
  container.addEventListener("pointerover", (e) => { const b = e.target.closest(".gnode"); if (b && e.pointerType !== "touch") show(b); });
  container.addEventListener("pointerout", (e) => { const b = e.target.closest(".gnode"); if (b && e.pointerType !== "touch" && !b.contains(e.relatedTarget)) hide(); });
  container.addEventListener("focusin", (e) => { const b = e.target.closest(".gnode"); if (b) show(b); });
  container.addEventListener("focusout", () => hide());
  container.addEventListener("pointerup", (e) => { const b = e.target.closest(".gnode"); if (b && e.pointerType === "touch") show(b); });
  document.addEventListener("pointerdown", (e) => { if (shownFor && !e.target.closest(".gnode") && !tip.contains(e.target)) hide(); });
  // a scroll moves the node away from a hover's tooltip; a focused node (scrolled into view by its focus) keeps its own
  container.addEventListener("scroll", () => { if (shownFor) (document.activeElement === shownFor ? show(shownFor) : hide()); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") hide(); });
  return { refresh: () => { if (shownFor && document.contains(shownFor)) show(shownFor); } };
}

// Bring a node (or op) into the scrolling graph pane, centred when it is out of view.
export function reveal(el, graph, name, isOp = false) {
  const at = isOp ? graph.layout.ops[name] : graph.layout.nodes[name];
  if (!at) return;
  const scale = scaleFor(el.clientWidth, graph.layout);
  const y = at.y * scale, x = at.x * scale;
  const visible = y > el.scrollTop + 40 && y < el.scrollTop + el.clientHeight - 40
    && x > el.scrollLeft + 20 && x < el.scrollLeft + el.clientWidth - 20;
  if (!visible) el.scrollTo({ top: y - el.clientHeight / 2, left: x - el.clientWidth / 2, behavior: "instant" });
}

export const legendHtml = () => Object.entries(STATUS).filter(([k]) => k !== "none").map(([k, s]) =>
  `<span><b class="swatch" style="background:${s.fill};border-color:${s.color};${k === "pending" ? "border-style:dotted" : ""}"></b>${s.symbol} ${esc(s.label)}</span>`).join("") +
  `<span><b class="edge-swatch" style="background:${EDGE.current.color}"></b>gradient this step</span>` +
  `<span><b class="edge-swatch" style="background:${EDGE.traversed.color}"></b>gradient done</span>` +
  `<span><b class="edge-swatch" style="background:${EDGE.pending.color}"></b>forward only</span>` +
  `<span style="color:${MUTED}"><i>italic</i>: parameter · ⚑ origin: where an error starts</span>`;
