// Pure renderers of a training run's plots: render*(el, runs) with Plotly.react. `runs` are the page's
// run models (see train.js): config, points, smooth, checks, ud, saturation, histograms.
import { BACKWARD_COLOR, WEIGHT_COLORS, WRONG_COLOR } from "./config.js";

const base = (title, ytitle, extra = {}) => ({
  title: { text: title, font: { size: 13 } },
  margin: { l: 56, r: 10, t: 34, b: 38 },
  xaxis: { title: { text: "step", font: { size: 11 } }, tickfont: { size: 10 } },
  yaxis: { title: { text: ytitle, font: { size: 11 } }, tickfont: { size: 10 } },
  legend: { orientation: "h", y: -0.22, font: { size: 10 } },
  ...extra,
});
const CONFIG = { displayModeBar: false, responsive: true };
const label = (run) => `#${run.id} ${run.config.backward}`;

export function renderLoss(el, runs) {
  const traces = runs.flatMap((run) => [
    {
      type: "scatter", mode: "lines", name: `${label(run)}: per step`,
      x: run.points.map((p) => p[0]), y: run.points.map((p) => p[1]),
      line: { width: 0.6, color: BACKWARD_COLOR[run.config.backward] }, opacity: 0.35,
      hovertemplate: "step %{x}<br>log10 loss %{y:.4f}<extra></extra>",
    },
    {
      type: "scatter", mode: "lines", name: `${label(run)}: mean of ${run.bucket} steps`,
      x: run.smooth.map((p) => p[0]), y: run.smooth.map((p) => p[1]),
      line: { width: 2.2, color: BACKWARD_COLOR[run.config.backward], dash: run.config.backward === "autograd" ? "dot" : "solid" },
      hovertemplate: "step %{x}<br>mean log10 loss %{y:.4f}<extra></extra>",
    },
  ]);
  return Plotly.react(el, traces, base("loss (log10), per step and smoothed", "log10 loss"), CONFIG);
}

export function renderChecks(el, runs) {
  const traces = runs.map((run) => ({
    type: "scatter", mode: "lines+markers", name: label(run),
    x: run.checks.map((c) => c.step), y: run.checks.map((c) => c.max),
    marker: { size: 4 }, line: { color: BACKWARD_COLOR[run.config.backward] },
    hovertemplate: "step %{x}<br>max |manual − autograd| %{y:.3g}<extra></extra>",
  }));
  // the checks where a gradient disagrees with autograd's, marked, with their names
  for (const run of runs) {
    const wrong = run.checks.filter((c) => c.wrong?.length);
    if (!wrong.length) continue;
    traces.push({
      type: "scatter", mode: "markers", name: `${label(run)}: disagrees`,
      x: wrong.map((c) => c.step), y: wrong.map((c) => c.max),
      text: wrong.map((c) => c.wrong.map((k) => `d${k}`).join(", ")),
      marker: { symbol: "x", size: 9, color: WRONG_COLOR },
      hovertemplate: "step %{x}: %{text} disagree<br>max |manual − autograd| %{y:.3g}<extra></extra>",
    });
  }
  return Plotly.react(el, traces, base("manual vs autograd: max |diff| over all parameters", "max abs diff",
    { yaxis: { type: "log", exponentformat: "e", tickfont: { size: 10 } } }), CONFIG);
}

export function renderUpdateRatio(el, run) {
  const names = run.ud.length ? Object.keys(run.ud[0][1]) : [];
  const traces = names.map((name, i) => ({
    type: "scatter", mode: "lines", name, x: run.ud.map((u) => u[0]), y: run.ud.map((u) => u[1][name]),
    line: { color: WEIGHT_COLORS[i % WEIGHT_COLORS.length], width: 1.4 },
  }));
  const steps = run.ud.map((u) => u[0]);
  if (steps.length) {
    traces.push({ type: "scatter", mode: "lines", name: "1e-3 (the lecture's rule of thumb)", x: [steps[0], steps[steps.length - 1]],
      y: [-3, -3], line: { color: "#888", dash: "dash", width: 1 }, hoverinfo: "skip" });
  }
  return Plotly.react(el, traces, base(`update / data ratio of #${run.id}`, "log10 std(lr·grad) / std(W)"), CONFIG);
}

export function renderSaturation(el, runs) {
  const traces = runs.map((run) => ({
    type: "scatter", mode: "lines", name: label(run),
    x: run.saturation.map((s) => s[0]), y: run.saturation.map((s) => 100 * s[1]),
    line: { color: BACKWARD_COLOR[run.config.backward], width: 1.4 },
    hovertemplate: "step %{x}<br>%{y:.1f}% of tanh units saturated<extra></extra>",
  }));
  return Plotly.react(el, traces, base("saturated tanh units (|h| > 0.97)", "% of units", { yaxis: { rangemode: "tozero" } }), CONFIG);
}

// one checkpoint's histograms: the activations of each layer and the gradients of the weights
export function renderHistograms(el, run, index) {
  const checkpoint = run.histograms[index];
  if (!checkpoint) return Plotly.purge(el);
  const line = (group, name, axis) => {
    const h = checkpoint[group][name];
    const centers = h.edges.slice(1).map((e, i) => (e + h.edges[i]) / 2);
    return {
      type: "scatter", mode: "lines", name: `${name} (mean ${h.mean?.toFixed(3)}, std ${h.std?.toFixed(3)})`,
      x: centers, y: h.counts, xaxis: axis, yaxis: axis.replace("x", "y"), line: { width: 1.3 },
    };
  };
  const traces = [
    ...Object.keys(checkpoint.activations).map((name) => line("activations", name, "x")),
    ...Object.keys(checkpoint.weight_grads).map((name) => line("weight_grads", name, "x2")),
  ];
  const layout = base(`histograms at step ${checkpoint.step}: activations | weight gradients`, "count", {
    grid: { rows: 1, columns: 2, pattern: "independent" },
    xaxis: { title: { text: "activation", font: { size: 11 } }, tickfont: { size: 10 } },
    xaxis2: { title: { text: "gradient", font: { size: 11 } }, tickfont: { size: 10 }, exponentformat: "e" },
    // hung from its top below the axis titles: a legend that wraps (a phone's width) grows down, never up over them
    legend: { orientation: "h", x: 0, xanchor: "left", y: -0.32, yanchor: "top", font: { size: 10 } },
  });
  return Plotly.react(el, traces, layout, CONFIG);
}
