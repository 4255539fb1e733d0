// Pure renderers of tensors: the inspector's main heatmap (Plotly, with row and column sums as marginal
// bars and a crosshair) and small multiples drawn straight onto canvases (a step redraws four of them).
import { AXIS_TITLE, GRAD_SCALE, VALUE_SCALE } from "./config.js";

// Any tensor as a 2-D grid (rows, cols) with tick labels and axis titles; emb (3-D) shows one context position.
export function as2d(tensor, labels, axes, slice = 0) {
  const shape = tensor.shape;
  if (shape.length === 0) return { z: [[tensor.data]], x: [""], y: [""], xt: "", yt: "" };
  if (shape.length === 1) return { z: [tensor.data], x: labels[0], y: [""], xt: AXIS_TITLE[axes[0]], yt: "" };
  if (shape.length === 2) return { z: tensor.data, x: labels[1], y: labels[0], xt: AXIS_TITLE[axes[1]], yt: AXIS_TITLE[axes[0]] };
  return { z: tensor.data.map((row) => row[slice]), x: labels[2], y: labels[0], xt: AXIS_TITLE[axes[2]], yt: AXIS_TITLE[axes[0]] };
}

// the largest |entry|, rounded up to 3 significant digits: a colour scale's end
export function absMax(...tensors) {
  let m = 0;
  for (const t of tensors) if (t) m = Math.max(m, Math.abs(t.min ?? 0), Math.abs(t.max ?? 0));
  if (!(m > 0) || !Number.isFinite(m)) return m === Infinity ? Number.MAX_VALUE : 0;
  const unit = 10 ** (Math.floor(Math.log10(m)) - 2);
  return Math.ceil(m / unit * (1 - 1e-12)) * unit;
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

// A small multiple: one pixel per cell, scaled up without smoothing (about 1 ms for 32x64, no Plotly redraw).
export function thumb(canvas, grid, range, cross = null) {
  const rows = grid.z.length, cols = grid.z[0].length;
  const table = lut(range.scale), span = range.hi - range.lo || 1;
  const pixels = new ImageData(cols, rows);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const v = grid.z[i][j], at = (i * cols + j) * 4;
      const k = v === null ? -1 : Math.max(0, Math.min(255, Math.round(((v - range.lo) / span) * 255)));
      if (k >= 0) pixels.data.set(table.subarray(k * 3, k * 3 + 3), at);
      pixels.data[at + 3] = 255; // a NaN/Inf cell stays black
    }
  }
  const cells = new OffscreenCanvas(cols, rows);
  cells.getContext("2d").putImageData(pixels, 0, 0);
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 120, h = canvas.clientHeight || 80;
  canvas.width = Math.round(w * ratio);
  canvas.height = Math.round(h * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(cells, 0, 0, w, h);
  if (cross) {
    const cw = w / cols, ch = h / rows;
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 2;
    ctx.strokeRect(cross[1] * cw - 1, cross[0] * ch - 1, cw + 2, ch + 2);
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 1;
    ctx.strokeRect(cross[1] * cw - 2.5, cross[0] * ch - 2.5, cw + 5, ch + 5);
  }
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
const NUMBERS = { exponentformat: "e", showexponent: "all" }; // never SI prefixes ("1p", "20µ")

// The main heatmap with its row sums (right) and column sums (top). `cross` = [row, col] or null.
export function renderMain(div, grid, range, { title, cross = null }) {
  // numeric axes with the labels as tick text: a batch can hold the same context twice
  const xi = grid.x.map((_, j) => j), yi = grid.y.map((_, i) => i);
  // at most 27 labels across (every character) and 16 down: each tick label costs ~0.5 ms of every redraw
  const every = (n, most) => Math.ceil(n / most);
  const xt = xi.filter((j) => j % every(xi.length, 27) === 0), yt = yi.filter((i) => i % every(yi.length, 16) === 0);
  const traces = [{
    type: "heatmap", name: "main", z: grid.z, x: xi, y: yi, xaxis: "x", yaxis: "y",
    colorscale: range.scale, zmin: range.lo, zmax: range.hi, hoverongaps: false,
    // no hover box: the crosshair's readout prints the cell's four numbers as the server sent them (a
    // per-cell hover text costs ~12 ms a redraw, and Plotly's own %{z} rounds and writes SI prefixes)
    hoverinfo: "none",
    colorbar: { orientation: "h", thickness: 10, len: 0.8, x: 0.41, xanchor: "center", y: -0.17, yanchor: "top",
      tickfont: { size: 10 }, ...NUMBERS, nticks: 5 },
  }];
  const nulls = [];
  grid.z.forEach((row, i) => row.forEach((v, j) => { if (v === null) nulls.push([j, i]); }));
  if (nulls.length) {
    traces.push({ type: "scatter", mode: "markers", name: "nonfinite", x: nulls.map((p) => p[0]), y: nulls.map((p) => p[1]),
      xaxis: "x", yaxis: "y", hoverinfo: "skip", marker: { symbol: "x", size: 8, color: "#000" } });
  }
  const shapes = cross ? [{
    type: "rect", xref: "x", yref: "y", line: { color: "#000", width: 2 },
    x0: cross[1] - 0.5, x1: cross[1] + 0.5, y0: cross[0] - 0.5, y1: cross[0] + 0.5,
  }] : [];
  const layout = {
    title: { text: title, font: { size: 13 }, x: 0, xanchor: "left" },
    margin: { l: 96, r: 8, t: 34, b: 104 }, showlegend: false,
    xaxis: { domain: [0, SUMS_X], tickvals: xt, ticktext: xt.map((j) => grid.x[j]), range: [-0.5, xi.length - 0.5], zeroline: false, showgrid: false, tickfont: AXIS_FONT, title: { text: grid.xt, font: { size: 12 }, standoff: 4 }, automargin: false },
    yaxis: { domain: [0, SUMS_Y], tickvals: yt, ticktext: yt.map((i) => grid.y[i]), range: [yi.length - 0.5, -0.5], zeroline: false, showgrid: false, tickfont: AXIS_FONT,
      title: { text: grid.yt, font: { size: 12 }, standoff: 4 }, automargin: false },
    shapes,
  };
  const names = traces.map((t) => t.name).join(",");
  const same = div.data && div.dataset.traces === names && div.dataset.rows === String(grid.z.length)
    && div.dataset.cols === String(grid.z[0].length);
  div.dataset.rows = String(grid.z.length);
  div.dataset.cols = String(grid.z[0].length);
  div.dataset.traces = names;
  const drawn = same ? restyle(div, traces, layout) : Plotly.react(div, traces, layout, { displayModeBar: false, responsive: true });
  div.sumsGrid = grid;
  if (!div.dataset.sumsBound) {
    div.dataset.sumsBound = "1";
    // a resize or the full window moves the cells (a kept, hidden plot draws no sums)
    div.on("plotly_afterplot", () => { if (!div.hidden) drawSums(div, div.sumsGrid); });
  }
  return drawn.then(() => drawSums(div, grid));
}

const SUMS_X = 0.84; // the heatmap's share of the width: its row sums take the rest
const SUMS_Y = 0.82; // and of the height: its column sums above it

// Row sums (right) and column sums (above) as bars on canvases aligned with the heatmap's cells: a broadcast's
// sum shows as one bar per row or column. Canvases, because each Plotly subplot adds ~10 ms to every redraw.
function drawSums(div, grid) {
  const { rows, cols } = marginals(grid.z);
  const wrap = div.parentElement;
  const xa = div._fullLayout.xaxis, ya = div._fullLayout.yaxis, width = div._fullLayout.width;
  const right = xa._offset + xa._length;
  const sides = [
    { key: "rows", values: rows, left: right + 8, top: ya._offset - 14, w: width - right - 12, h: ya._length + 14, across: true },
    { key: "cols", values: cols, left: xa._offset, top: 26, w: xa._length, h: ya._offset - 30, across: false },
  ];
  for (const side of sides) {
    let canvas = wrap.querySelector(`canvas[data-sums="${side.key}"]`);
    if (!canvas) {
      canvas = document.createElement("canvas");
      canvas.dataset.sums = side.key;
      canvas.dataset.testid = side.key === "rows" ? "row-sums" : "col-sums";
      canvas.className = "sums";
      canvas.setAttribute("role", "img");
      wrap.append(canvas);
    }
    const show = !(side.key === "rows" && grid.z.length === 1) && side.w > 20 && side.h > 20;
    canvas.hidden = !show;
    canvas.dataset.values = JSON.stringify(side.values);
    if (!show) continue;
    const max = Math.max(...side.values.map(Math.abs)) || 1;
    canvas.setAttribute("aria-label", `${side.key === "rows" ? "row" : "column"} sums, from ${Math.min(...side.values).toPrecision(3)} to ${Math.max(...side.values).toPrecision(3)}`);
    Object.assign(canvas.style, { left: `${side.left}px`, top: `${side.top}px`, width: `${side.w}px`, height: `${side.h}px` });
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(side.w * ratio);
    canvas.height = Math.round(side.h * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
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
    ctx.fillText(`Σ ${side.across ? "rows" : "columns"} ±${max.toPrecision(2)}`, 0, 11);
  }
}

// The same grid with new numbers and labels (the next node often has the current one's shape): a restyle and
// relayout of what changed redraws in a few ms, where react replots the whole figure (~60 ms measured)
function restyle(div, traces, layout) {
  // only what changed, trace by trace: a new colour scale or new coordinates make Plotly recalculate more
  const changed = traces.map((t, i) => {
    const update = {};
    for (const key of ["z", "zmin", "zmax", "colorscale", "x", "y", "customdata"]) {
      if (t[key] !== undefined && JSON.stringify(t[key]) !== JSON.stringify(div.data[i][key])) update[key] = [t[key]];
    }
    return update;
  });
  const old = div.layout;
  const relayout = { shapes: layout.shapes };
  if (old.title.text !== layout.title.text) relayout["title.text"] = layout.title.text;
  for (const axis of ["xaxis", "yaxis"]) {
    const a = layout[axis], o = old[axis];
    if (JSON.stringify(o.ticktext) !== JSON.stringify(a.ticktext) || JSON.stringify(o.tickvals) !== JSON.stringify(a.tickvals)) {
      relayout[`${axis}.tickvals`] = a.tickvals;
      relayout[`${axis}.ticktext`] = a.ticktext;
    }
    if (o.title.text !== a.title.text) relayout[`${axis}.title.text`] = a.title.text;
  }
  const bars = changed.slice(1).map((u, k) => Object.keys(u).length ? Plotly.restyle(div, u, [k + 1]) : null);
  return Promise.all(bars).then(() => Plotly.update(div, changed[0], relayout, [0]));
}

// Move the crosshair of the main heatmap without redrawing its data.
export function moveCross(div, cross) {
  if (!div.layout) return Promise.resolve();
  const shapes = cross ? [{ type: "rect", xref: "x", yref: "y", line: { color: "#000", width: 2 },
    x0: cross[1] - 0.5, x1: cross[1] + 0.5, y0: cross[0] - 0.5, y1: cross[0] + 0.5 }] : [];
  return Plotly.relayout(div, { shapes });
}
