// Pure renderer of the four heatmaps: value | manual grad | autograd grad | manual − autograd.
import { GRAD_SCALE, VALUE_SCALE } from "./config.js";

// Any tensor as a 2-D grid (rows, cols) with tick labels; emb (3-D) shows one context position.
export function as2d(tensor, labels, slice) {
  const shape = tensor.shape;
  if (shape.length === 0) return { z: [[tensor.data]], x: [""], y: [""] };
  if (shape.length === 1) return { z: [tensor.data], x: labels[0], y: [""] };
  if (shape.length === 2) return { z: tensor.data, x: labels[1], y: labels[0] };
  return { z: tensor.data.map((row) => row[slice]), x: labels[2], y: labels[0] };
}

function emptyLike(tensor) {
  const fill = (shape) => (shape.length === 0 ? null : Array.from({ length: shape[0] }, () => fill(shape.slice(1))));
  return { shape: tensor.shape, data: fill(tensor.shape), min: null, max: null, nonfinite: { nan: 0, posinf: 0, neginf: 0 } };
}

// the largest |entry|, rounded up to 3 significant digits: a colour scale's end, which a gradient
// that differs from autograd's in its last bits leaves where it was (so the autograd plot is not redrawn)
export function absMax(...tensors) {
  let m = 0;
  for (const t of tensors) if (t) m = Math.max(m, Math.abs(t.min ?? 0), Math.abs(t.max ?? 0));
  if (!(m > 0) || !Number.isFinite(m)) return m === Infinity ? Number.MAX_VALUE : 1e-12;
  const unit = 10 ** (Math.floor(Math.log10(m)) - 2);
  return Math.ceil(m / unit * (1 - 1e-12)) * unit;
}

function nonfiniteMarks(grid, xaxis, yaxis) {
  const x = [], y = [];
  grid.z.forEach((row, i) => row.forEach((v, j) => { if (v === null) { x.push(grid.x[j]); y.push(grid.y[i]); } }));
  return { type: "scatter", mode: "markers", x, y, xaxis, yaxis, hoverinfo: "skip",
    marker: { symbol: "x", size: 8, color: "#000" }, name: "NaN/Inf" };
}

// `key` names the config and mode: with it, a plot whose tensor cannot have changed is not redrawn
// (stepping changes only the manual gradient and the difference, and only when a contribution lands)
export function render(el, detail, slice = 0, key = null) {
  const { labels } = detail;
  const g = absMax(detail.grad_manual, detail.grad_autograd);
  const d = absMax(detail.diff);
  const partial = detail.status === "partial" ? ` (partial: ${detail.contributions[0]} of ${detail.contributions[1]})` : "";
  const panels = [
    { key: "value", title: "value", tensor: detail.value, scale: VALUE_SCALE, range: null, perStep: false },
    { key: "manual", title: `manual grad${partial}`, tensor: detail.grad_manual, scale: GRAD_SCALE, range: g, perStep: true },
    { key: "autograd", title: "autograd grad", tensor: detail.grad_autograd, scale: GRAD_SCALE, range: g, perStep: false },
    { key: "diff", title: "manual − autograd", tensor: detail.diff, scale: GRAD_SCALE, range: d, perStep: true },
  ];
  // the four divs persist across steps, so Plotly.react updates plots instead of rebuilding them
  if (el.children.length !== panels.length) {
    el.replaceChildren(...panels.map((p) => Object.assign(document.createElement("div"), { className: "hm" })));
    panels.forEach((p, i) => { el.children[i].dataset.testid = `heatmap-${p.key}`; });
  }
  const promises = [];
  panels.forEach((p, i) => {
    const div = el.children[i];
    // a step changes the manual gradient and the difference; the autograd plot only follows the shared
    // scale g (which the manual gradient can widen)
    const changes = p.perStep ? `${detail.contributions[0]}:${p.range}` : p.range === g ? `${g}` : "";
    const revision = key === null ? null : [key, detail.name, slice, changes].join("|");
    if (revision !== null && div.dataset.revision === revision) return;
    if (revision === null) delete div.dataset.revision;
    else div.dataset.revision = revision;
    if (!p.tensor && !detail.grad_autograd) {
      // an input: no gradient will ever come
      if (div.data) Plotly.purge(div);
      delete div.dataset.shape;
      div.innerHTML = `<p class="hint"><b>${p.title}</b><br>none (not differentiable)</p>`;
      return;
    }
    if (!div.data) div.replaceChildren();
    // a gradient not reached yet is an empty grid of the tensor's shape: the plot stays, and the step
    // that produces the gradient updates it in place instead of building a new plot
    const tensor = p.tensor ?? emptyLike(detail.value);
    if (p.tensor) div.dataset.shape = p.tensor.shape.join("x");
    else delete div.dataset.shape;
    const raw = as2d(tensor, labels, slice);
    const grid = { z: raw.z, x: raw.x.map(String), y: raw.y.map(String) };
    const nf = tensor.nonfinite;
    const bad = nf.nan + nf.posinf + nf.neginf;
    // hover shows each number as the server sent it (its shortest round-trip form): Plotly's own %{z}
    // rounds it and writes SI prefixes (0.00093554263 as "935.5426μ")
    const exact = grid.z.map((row) => row.map((v) => (v === null ? "" : String(v))));
    const trace = {
      type: "heatmap", z: grid.z, x: grid.x, y: grid.y, text: exact,
      colorscale: p.scale, reversescale: p.scale === GRAD_SCALE,
      zmid: p.range ? 0 : undefined, zmin: p.range ? -p.range : undefined, zmax: p.range ? p.range : undefined,
      hovertemplate: "row %{y}<br>col %{x}<br>%{text}<extra></extra>", hoverongaps: false,
      colorbar: { thickness: 8, len: 0.8, tickfont: { size: 9 } },
    };
    const traces = [trace];
    if (bad) traces.push(nonfiniteMarks(grid, "x", "y"));
    const missing = p.key === "diff" && detail.grad_manual ? " — shapes differ" : " — not reached yet at this step";
    const note = !p.tensor ? missing : bad ? ` — ${nf.nan} NaN, ${nf.posinf + nf.neginf} Inf (×)` : "";
    const title = `${p.title}${note}`;
    const axes = `${key}|${detail.name}|${slice}`;
    if (div.data && div.data.length === 1 && traces.length === 1 && div.dataset.axes === axes) {
      // same grid, new numbers: a restyle of z redraws less than react (12 vs 17 ms measured); a new
      // title goes with it in one update (one redraw, not two)
      const range = p.range ? { zmin: [-p.range], zmax: [p.range] } : {};
      const restyle = { z: [grid.z], text: [exact], ...range };
      promises.push(div.layout.title.text === title
        ? Plotly.restyle(div, restyle, [0])
        : Plotly.update(div, restyle, { "title.text": title }, [0]));
      return;
    }
    div.dataset.axes = axes;
    promises.push(Plotly.react(div, traces, {
      title: { text: title, font: { size: 12 } }, margin: { l: 52, r: 6, t: 30, b: 40 },
      xaxis: { tickfont: { size: 8 }, type: "category" },
      yaxis: { tickfont: { size: 8 }, autorange: "reversed", type: "category" },
      showlegend: false,
    }, { displayModeBar: false, responsive: true }));
  });
  return Promise.all(promises);
}
