// Pure renderers of tensors: the inspector's main heatmap (a Plotly frame of axes and titles; cells,
// crosshair, colour bar and row and column sums painted on canvases laid on it) and small multiples drawn
// straight onto canvases (a step redraws four of them). The canvases need no Plotly: until plotly.js has
// arrived they are painted where its frame will put them, and the frame's axes are drawn around them later.
import { AXIS_TITLE, GRAD_SCALE, VALUE_SCALE } from "./config.js";
import { defaultLayout, sliceOf } from "./slices.js";

// an axis's title: the lecture's axes have their words, any other pack's axis its own name
export const axisTitle = (axis) => AXIS_TITLE[axis] ?? axis;

// Any tensor as a 2-D grid (rows, cols) with tick labels and axis titles. A 3-D one is one slice of it: `at` =
// {rows, cols, cut, index} (slices.js), the node's default layout at index 0 when left out; the grid keeps it.
export function as2d(tensor, labels, axes, at = null) {
  const shape = tensor.shape;
  if (shape.length === 0) return { z: [[tensor.data]], x: [""], y: [""], xt: "", yt: "" };
  if (shape.length === 1) return { z: [tensor.data], x: labels[0], y: [""], xt: axisTitle(axes[0]), yt: "" };
  if (shape.length === 2) return { z: tensor.data, x: labels[1], y: labels[0], xt: axisTitle(axes[1]), yt: axisTitle(axes[0]) };
  if (tensor.slice) return served2d(tensor, labels, axes, at);
  const cut = { ...defaultLayout(axes), index: 0, ...(at || {}) };
  const z = sliceOf(tensor.data, shape, cut, cut.index);
  return { z, x: labels[cut.cols], y: labels[cut.rows], xt: axisTitle(axes[cut.cols]), yt: axisTitle(axes[cut.rows]), cut };
}

// A 3-D tensor the server sent as one slice (tensor.slice = [dim, index]; data: the other two dims in order),
// laid out as `at` asks where it cuts the same dim (the page asks for the slice it draws), in order otherwise.
function served2d(tensor, labels, axes, at) {
  const [dim, index] = tensor.slice;
  const [a, b] = [0, 1, 2].filter((d) => d !== dim);
  const turned = at && at.cut === dim && at.rows === b;
  const cut = turned ? { rows: b, cols: a, cut: dim, index } : { rows: a, cols: b, cut: dim, index };
  const z = turned ? tensor.data[0].map((_, j) => tensor.data.map((row) => row[j])) : tensor.data;
  return { z, x: labels[cut.cols], y: labels[cut.rows], xt: axisTitle(axes[cut.cols]), yt: axisTitle(axes[cut.rows]), cut };
}

// the largest |entry|, rounded up to 3 significant digits: a colour scale's end
export function absMax(...tensors) {
  let m = 0;
  for (const t of tensors) if (t) m = Math.max(m, Math.abs(t.min ?? 0), Math.abs(t.max ?? 0));
  if (!(m > 0) || !Number.isFinite(m)) return m === Infinity ? Number.MAX_VALUE : 0;
  const unit = 10 ** (Math.floor(Math.log10(m)) - 2);
  return Number((Math.ceil(m / unit * (1 - 1e-12)) * unit).toPrecision(3)); // 3.01, not 3.0100000000000002
}

export const identical = (t) => t && t.min === 0 && t.max === 0 && !(t.nonfinite.nan + t.nonfinite.posinf + t.nonfinite.neginf);

// Row and column sums of a 2-D grid (nulls skipped): the marginal bars, where a broadcast's sum shows.
export function marginals(z) {
  const rows = z.map((row) => row.reduce((a, v) => (v === null ? a : a + v), 0));
  const cols = z[0].map((_, j) => z.reduce((a, row) => (row[j] === null ? a : a + row[j]), 0));
  return { rows, cols };
}

// a number as the server sent it (its shortest round-trip form)
export const num = (v) => (v === null || v === undefined ? "NaN/Inf" : String(v));

function parseColor(c) {
  const h = c.replace("#", "");
  return [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
}

// colour of t in [0, 1] on a scale given as [[stop, "#rrggbb"], ...] (the same stops Plotly draws)
export function colorAt(scale, t) {
  const u = Math.max(0, Math.min(1, Number.isFinite(t) ? t : 0.5));
  for (let i = 1; i < scale.length; i++) {
    const [s1, c1] = scale[i];
    if (u <= s1) {
      const [s0, c0] = scale[i - 1];
      const f = s1 === s0 ? 0 : (u - s0) / (s1 - s0);
      const a = parseColor(c0), b = parseColor(c1);
      return `rgb(${a.map((x, k) => Math.round(x + (b[k] - x) * f)).join(",")})`;
    }
  }
  return scale[scale.length - 1][1];
}

// how a panel's numbers map to colours: gradients on one zero-centred range, values on their own
export function rangeOf(panel) {
  if (panel.range) return { lo: -panel.range, hi: panel.range, scale: GRAD_SCALE };
  const t = panel.tensor;
  return { lo: t.min ?? 0, hi: t.max ?? 1, scale: VALUE_SCALE };
}

// 256 colours of a scale, computed once: a thumbnail is then a lookup per cell
const luts = new Map();
function lut(scale) {
  if (!luts.has(scale)) {
    const table = new Uint8ClampedArray(256 * 3);
    for (let k = 0; k < 256; k++) {
      const [r, g, b] = colorAt(scale, k / 255).slice(4, -1).split(",").map(Number);
      table.set([r, g, b], k * 3);
    }
    luts.set(scale, table);
  }
  return luts.get(scale);
}

// The cells of a grid painted into a w×h box of a 2-D context: one pixel per cell, scaled up without
// smoothing (about 1 ms for 32x64); NaN/Inf cells black with a white ×.
function paintCells(ctx, grid, range, w, h) {
  const rows = grid.z.length, cols = grid.z[0].length;
  const table = lut(range.scale), span = range.hi - range.lo || 1;
  const pixels = new ImageData(cols, rows);
  const nonfinite = [];
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const v = grid.z[i][j], at = (i * cols + j) * 4;
      const k = v === null ? -1 : Math.max(0, Math.min(255, Math.round(((v - range.lo) / span) * 255)));
      if (k >= 0) pixels.data.set(table.subarray(k * 3, k * 3 + 3), at);
      else nonfinite.push([i, j]);
      pixels.data[at + 3] = 255; // a NaN/Inf cell stays black
    }
  }
  const cells = new OffscreenCanvas(cols, rows);
  cells.getContext("2d").putImageData(pixels, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(cells, 0, 0, w, h);
  const cw = w / cols, ch = h / rows;
  if (nonfinite.length && cw >= 4 && ch >= 4) {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    for (const [i, j] of nonfinite) {
      const d = Math.min(cw, ch) * 0.3, x = (j + 0.5) * cw, y = (i + 0.5) * ch;
      ctx.moveTo(x - d, y - d); ctx.lineTo(x + d, y + d);
      ctx.moveTo(x + d, y - d); ctx.lineTo(x - d, y + d);
    }
    ctx.stroke();
  }
  return nonfinite;
}

// a canvas sized to its box in CSS pixels (sharp on high-density screens), its context in CSS pixels
function sized(canvas, w, h) {
  const ratio = window.devicePixelRatio || 1;
  const pw = Math.round(w * ratio), ph = Math.round(h * ratio);
  const ctx = canvas.getContext("2d");
  if (canvas.width !== pw || canvas.height !== ph) {
    canvas.width = pw;
    canvas.height = ph;
  } else {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, pw, ph);
  }
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return ctx;
}

// the cell `cross` = [row, col] outlined: black inside, white outside, visible on any colour
function outline(ctx, cross, cw, ch) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = 2;
  ctx.strokeRect(cross[1] * cw - 1, cross[0] * ch - 1, cw + 2, ch + 2);
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 1;
  ctx.strokeRect(cross[1] * cw - 2.5, cross[0] * ch - 2.5, cw + 5, ch + 5);
}

// A small multiple on its canvas (a step redraws four of them, no Plotly redraw).
export function thumb(canvas, grid, range, cross = null) {
  const w = canvas.clientWidth || 120, h = canvas.clientHeight || 80;
  const ctx = sized(canvas, w, h);
  paintCells(ctx, grid, range, w, h);
  if (cross) outline(ctx, cross, w / grid.z[0].length, h / grid.z.length);
  canvas.grid = grid; // what it shows (the main plot's cells keep theirs the same way)
  canvas.dataset.cross = cross ? cross.join(",") : "";
}

// the cell under a pointer on a thumbnail
export function cellAt(canvas, grid, event) {
  const r = canvas.getBoundingClientRect();
  const i = Math.floor(((event.clientY - r.top) / r.height) * grid.z.length);
  const j = Math.floor(((event.clientX - r.left) / r.width) * grid.z[0].length);
  return i >= 0 && j >= 0 && i < grid.z.length && j < grid.z[0].length ? [i, j] : null;
}

const AXIS_FONT = { size: 10 };

// Colour-bar ticks: round numbers (1, 2, 2.5 or 5 × a power of ten) inside [lo, hi], about `count` of them and
// never fewer than three (a round step can overshoot a narrow range: a finer one is taken)
export function niceTicks(lo, hi, count = 5) {
  const span = hi - lo;
  if (!(span > 0) || !Number.isFinite(span)) return [lo];
  let ticks = [];
  for (let c = count; ticks.length < 3 && c <= 4 * count; c++) {
    const raw = span / (c - 1), power = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw * 0.999);
    ticks = [];
    for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi * (1 + 1e-12) + 1e-300; k++) ticks.push(Number((k * step).toPrecision(12)));
  }
  return ticks;
}

// a tick label in plain or scientific notation, never SI prefixes ("1p", "20µ"): 0.05, 12, 2.5e-5
export function tickText(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e-3 && a < 1e5) return String(Number(v.toPrecision(4)));
  const [m, e] = v.toExponential(3).split("e");
  return `${String(Number(m))}e${Number(e)}`;
}

// The frame of the main heatmap: axes, tick labels, axis titles (Plotly). It depends on the grid's size and
// labels only, so a step to a tensor of the same shape leaves it untouched (the plot's title, which changes
// more often, is HTML above it: a Plotly title change relayouts the figure, ~40 ms).
function frameOf(grid, width) {
  // numeric axes with the labels as tick text: a batch can hold the same context twice
  const rows = grid.z.length, cols = grid.z[0].length;
  // at most 27 labels across (every character), 14 px apart, and 16 down: each tick label costs ~0.5 ms of
  // a relayout, and a phone's narrow plot would crowd them
  const every = (n, most) => Math.ceil(n / most);
  // a phone's plot gives the cells the width: the rows' long labels (a context, "emm→a") become their numbers,
  // fewer of them (the readout under the plot names the row tapped)
  const narrow = width < 480;
  const left = narrow ? 34 : 96;
  const across = Math.max(4, Math.min(27, Math.floor((width * SUMS_X - left - 8) / 14)));
  const yt = grid.y.map((_, i) => i).filter((i) => i % every(rows, narrow ? 8 : 16) === 0);
  const xt = grid.x.map((_, j) => j).filter((j) => j % every(cols, across) === 0);
  return {
    margin: { l: left, r: 8, t: 34, b: 104 }, showlegend: false,
    xaxis: { domain: [0, SUMS_X], tickvals: xt, ticktext: xt.map((j) => grid.x[j]), range: [-0.5, cols - 0.5], zeroline: false, showgrid: false,
      tickfont: AXIS_FONT, title: { text: grid.xt, font: { size: 12 }, standoff: 4 }, automargin: false, fixedrange: true, ticks: "outside", ticklen: 3 },
    yaxis: { domain: [0, SUMS_Y], tickvals: yt, ticktext: yt.map((i) => (narrow ? String(i) : grid.y[i])), range: [rows - 0.5, -0.5], zeroline: false, showgrid: false,
      tickfont: AXIS_FONT, title: { text: grid.yt, font: { size: 12 }, standoff: 4 }, automargin: false, fixedrange: true, ticks: "outside", ticklen: 3 },
  };
}

// The main heatmap: Plotly draws its frame (axes, labels, titles), and the cells, the crosshair, the colour
// bar and the row and column sums are canvases laid on it. A step changes the numbers far more often than the
// frame: restyling a Plotly heatmap's z replots the whole figure (~30 ms, measured), painting a canvas ~1 ms.
// `cross` = [row, col] or null. Resolves once drawn.
export function renderMain(div, grid, range, { title, cross = null }) {
  const wrap = div.parentElement;
  let heading = wrap.querySelector(".main-title");
  if (!heading) {
    heading = Object.assign(document.createElement("div"), { className: "main-title" });
    heading.dataset.testid = scoped(wrap, "main-title");
    wrap.append(heading);
  }
  if (heading.textContent !== title) heading.textContent = title;
  heading.hidden = false;
  const drawn = ensureFrame(div, grid);
  div.drawing = { grid, range, cross };
  if (drawn) return drawn.then(() => paintMain(div));
  paintMain(div);
  return Promise.resolve();
}

// Draw the frame for a grid unless it is drawn already: a promise while Plotly draws, null when nothing
// changed. A plot on standby (a kept one, or one prepared before it is needed) is laid out but not seen.
// Before plotly.js has arrived the plot waits (drawWaiting draws it): null.
export function ensureFrame(div, grid) {
  if (!window.Plotly) {
    div.waitingGrid = grid;
    waiting.add(div);
    return null;
  }
  const frame = frameOf(grid, div.parentElement.clientWidth || 600);
  const key = JSON.stringify(frame);
  if (div.dataset.frame === key) return null;
  div.dataset.frame = key;
  const config = { displayModeBar: false, responsive: true, staticPlot: true };
  const drawn = div.data ? Plotly.react(div, [], frame, config) : Plotly.newPlot(div, [], frame, config);
  if (!div.dataset.bound) {
    div.dataset.bound = "1";
    // a resize or the full window moves the axes: the plot in view repaints its cells
    div.on("plotly_afterplot", () => { if (!div.classList.contains("standby") && div.drawing) paintMain(div); });
  }
  return drawn;
}

const waiting = new Set(); // the plots whose frame waits for plotly.js

// Once plotly.js has arrived: draw the frames that waited for it (each plot's latest grid). Resolves once drawn.
export function drawWaiting() {
  const drawn = [];
  for (const div of waiting) {
    waiting.delete(div);
    if (!div.isConnected) continue;
    const frame = ensureFrame(div, div.drawing ? div.drawing.grid : div.waitingGrid);
    if (frame) drawn.push(frame.then(() => { if (div.drawing && !div.classList.contains("standby")) paintMain(div); }));
  }
  return Promise.all(drawn);
}

const SUMS_X = 0.84; // the heatmap's share of the width: its row sums take the rest
const SUMS_Y = 0.82; // and of the height: its column sums above it

// a test id inside a heatmap's wrapper: the inspector's as they are, another's (data-scope) prefixed
const scoped = (wrap, testid) => (wrap.dataset.scope ? `${wrap.dataset.scope}-${testid}` : testid);

// the overlay canvas `key` of the plot's wrapper, created once and placed at (left, top) with size w×h
// (style written only when it changes: a write makes the next read of any size lay the page out again)
function overlay(wrap, key, testid, left, top, w, h) {
  let canvas = wrap.querySelector(`canvas[data-overlay="${key}"]`);
  if (!canvas) {
    canvas = document.createElement("canvas");
    canvas.dataset.overlay = key;
    canvas.dataset.testid = scoped(wrap, testid);
    canvas.className = `overlay ${key}`;
    canvas.setAttribute("role", "img");
    wrap.append(canvas);
  }
  const box = `${left},${top},${w},${h}`;
  if (canvas.dataset.box !== box) {
    canvas.dataset.box = box;
    Object.assign(canvas.style, { left: `${left}px`, top: `${top}px`, width: `${w}px`, height: `${h}px` });
  }
  return canvas;
}

// Where the frame puts the cells, as Plotly lays it out: its axes' offset and length, and the figure's width.
// Before plotly.js has arrived, the same sums from the frame's margins and domains (the canvases stay put
// when the axes are drawn around them).
function geometry(div) {
  const full = div._fullLayout;
  if (full && full.xaxis._length) return { xa: full.xaxis, ya: full.yaxis, width: full.width };
  const width = div.clientWidth, height = div.clientHeight;
  if (!width || !height || !div.drawing) return null;
  const { margin, xaxis, yaxis } = frameOf(div.drawing.grid, div.parentElement.clientWidth || 600);
  const w = width - margin.l - margin.r, h = height - margin.t - margin.b;
  return {
    xa: { _offset: margin.l + w * xaxis.domain[0], _length: w * (xaxis.domain[1] - xaxis.domain[0]) },
    ya: { _offset: margin.t + h * (1 - yaxis.domain[1]), _length: h * (yaxis.domain[1] - yaxis.domain[0]) },
    width: div.getBoundingClientRect().width, // the figure's own width is not rounded: the row sums end there
  };
}

// Paint what the frame holds: cells and crosshair, colour bar, marginal sums.
function paintMain(div) {
  const { grid, range, cross } = div.drawing;
  const wrap = div.parentElement, at = geometry(div);
  if (!at || !at.xa._length) return;
  const { xa, ya } = at;
  const w = xa._length, h = ya._length;
  const cells = overlay(wrap, "cells", "main-cells", xa._offset, ya._offset, w, h);
  cells.hidden = false;
  const nonfinite = paintCells(sized(cells, w, h), grid, range, w, h);
  if (cross) outline(cells.getContext("2d"), cross, w / grid.z[0].length, h / grid.z.length);
  cells.grid = grid; // what the pointer is over (see cellAt)
  cells.dataset.cross = cross ? cross.join(",") : "";
  cells.dataset.nonfinite = nonfinite.map((c) => c.join(",")).join(";");
  cells.dataset.zmin = String(range.lo);
  cells.dataset.zmax = String(range.hi);
  cells.setAttribute("aria-label", `heatmap of ${grid.z.length} × ${grid.z[0].length} cells, colours from ${tickText(range.lo)} to ${tickText(range.hi)}`);
  paintColorBar(wrap, range, xa._offset + w * 0.1, ya._offset + h + 62, w * 0.8);
  paintSums(wrap, grid, xa, ya, at.width);
}

// the colour bar under the x-axis title: the scale, and round numbers under it
function paintColorBar(wrap, range, left, top, w) {
  const bar = 10, h = bar + 16;
  const canvas = overlay(wrap, "colorbar", "colorbar", left, top, w, h);
  canvas.hidden = false;
  const ctx = sized(canvas, w, h);
  const table = lut(range.scale);
  for (let x = 0; x < w; x++) {
    const k = Math.round((x / Math.max(1, w - 1)) * 255) * 3;
    ctx.fillStyle = `rgb(${table[k]},${table[k + 1]},${table[k + 2]})`;
    ctx.fillRect(x, 0, 1.5, bar);
  }
  ctx.strokeStyle = "#6b7a90";
  ctx.lineWidth = 1;
  ctx.strokeRect(0.5, 0.5, w - 1, bar - 1);
  // about one label per 70 px: a phone's narrow bar gets three
  const ticks = niceTicks(range.lo, range.hi, Math.max(3, Math.min(5, Math.floor(w / 70)))), span = range.hi - range.lo || 1;
  ctx.fillStyle = "#1d2330";
  ctx.font = "10px system-ui, sans-serif";
  ctx.textBaseline = "top";
  const labels = ticks.map(tickText);
  ticks.forEach((t, i) => {
    const x = ((t - range.lo) / span) * (w - 1);
    ctx.fillRect(Math.round(x), bar, 1, 3);
    const width = ctx.measureText(labels[i]).width;
    ctx.fillText(labels[i], Math.max(0, Math.min(w - width, x - width / 2)), bar + 4);
  });
  canvas.dataset.ticks = JSON.stringify(labels);
  canvas.setAttribute("aria-label", `colour scale from ${tickText(range.lo)} to ${tickText(range.hi)}`);
}

// Row sums (right) and column sums (above) as bars aligned with the heatmap's cells: a broadcast's sum
// shows as one bar per row or column.
function paintSums(wrap, grid, xa, ya, width) {
  const { rows, cols } = marginals(grid.z);
  const right = xa._offset + xa._length;
  const sides = [
    { key: "rows", values: rows, left: right + 8, top: ya._offset - 14, w: width - right - 12, h: ya._length + 14, across: true },
    { key: "cols", values: cols, left: xa._offset, top: 26, w: xa._length, h: ya._offset - 30, across: false },
  ];
  for (const side of sides) {
    const canvas = overlay(wrap, side.key, side.key === "rows" ? "row-sums" : "col-sums", side.left, side.top, Math.max(0, side.w), Math.max(0, side.h));
    const show = !(side.key === "rows" && grid.z.length === 1) && side.w > 20 && side.h > 20;
    canvas.hidden = !show;
    canvas.dataset.values = JSON.stringify(side.values);
    if (!show) continue;
    const max = Math.max(...side.values.map(Math.abs)) || 1;
    canvas.setAttribute("aria-label", `${side.key === "rows" ? "row" : "column"} sums${grid.cut ? " of this slice" : ""}, from ${Math.min(...side.values).toPrecision(3)} to ${Math.max(...side.values).toPrecision(3)}`);
    const ctx = sized(canvas, side.w, side.h);
    const n = side.values.length, caption = 14; // a line of text above the bars
    const cell = (side.across ? side.h - caption : side.w) / n;
    const half = (side.across ? side.w : side.h - caption) / 2; // bars grow both ways from zero
    ctx.fillStyle = "#6b7a90";
    side.values.forEach((v, i) => {
      const len = (v / max) * half;
      if (side.across) ctx.fillRect(half + Math.min(0, len), caption + i * cell + cell * 0.1, Math.abs(len), cell * 0.8);
      else ctx.fillRect(i * cell + cell * 0.1, caption + half - Math.max(0, len), cell * 0.8, Math.abs(len));
    });
    ctx.fillStyle = "#1d2330";
    if (side.across) ctx.fillRect(half, caption, 1, side.h - caption);
    else ctx.fillRect(0, caption + half, side.w, 1);
    ctx.font = "11px system-ui, sans-serif";
    const zero = side.values.every((v) => v === 0);
    // a slice's sums are over the cells shown, not the whole tensor: the caption says so, as far as it fits
    const what = `Σ ${side.across ? "rows" : "columns"}`, scale = zero ? "all 0" : `±${max.toPrecision(2)}`;
    const captions = grid.cut ? [`${what} of this slice ${scale}`, `${what} of this slice`, `${what}, slice ${scale}`, `${what}, slice`, what] : [];
    const text = captions.find((c) => ctx.measureText(c).width <= side.w) || `${what} ${scale}`;
    ctx.fillText(text, 0, 11);
    canvas.dataset.caption = text;
  }
}

// Move the crosshair of the main heatmap: a repaint of its cells (~1 ms).
export function moveCross(div, cross) {
  if (!div || !div.drawing) return;
  div.drawing.cross = cross;
  paintMain(div);
}

// hide the overlays and the title (nothing to draw in the main plot)
export function hideOverlays(wrap) {
  for (const c of wrap.querySelectorAll("canvas.overlay, .main-title")) c.hidden = true;
}
