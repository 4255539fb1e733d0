// Pure renderer of the node panel: formula, backward rules with live shapes, checks, heatmaps.
import * as heatmaps from "./heatmaps.js";
import { esc } from "./dom.js";

// floats as Python prints them, so the line reads exactly like the lecture's cmp()
const pyFloat = (x) => (x === null ? "NaN/Inf" : Number.isInteger(x) ? x.toFixed(1) : String(x));

function cmpLine(cmp) {
  if (!cmp) return "";
  return `exact: ${cmp.exact ? "True" : "False"} | approximate: ${cmp.approx ? "True" : "False"} | maxdiff: ${pyFloat(cmp.maxdiff)}`;
}

export function render(el, { detail, graph, slice, key, onSlice }) {
  const producer = graph.ops.find((op) => op.outputs.includes(detail.name));
  const rules = graph.ops.flatMap((op) => op.rules.filter((r) => r.target === detail.name).map((r) => ({ op, r })));
  const ruleHtml = rules.map(({ op, r }) => `
      <pre data-testid="rule">${esc(r.code)}    ${esc(r.shapes)}</pre>
      <ul class="notes"><li>from the backward step of <code>${esc(op.name)}</code></li>${r.notes.map((n) => `<li>${esc(n)}</li>`).join("")}</ul>`).join("");
  const n = detail.numeric;
  const numeric = n
    ? `finite differences (float64, ${n.entries_checked} entries): max relative error ${n.max_rel_err.toExponential(2)}` +
      (n.near_zero_entries ? `; ${n.near_zero_entries} entries ≈ 0, max abs error ${n.near_zero_max_abs_err.toExponential(2)}` : "")
    : "not differentiable: an input of the network";
  let status;
  if (detail.status === "complete") status = `<span data-testid="cmp">${esc(detail.name.padEnd(15))} | ${cmpLine(detail.cmp)}</span>`;
  else if (detail.status === "partial") status = `partial: ${detail.contributions[0]} of ${detail.contributions[1]} contributions so far — the manual heatmap shows the partial sum; compared once complete`;
  else if (detail.status === "pending") status = "not reached yet: step the backward pass further";
  else status = "no gradient";
  const slicer = detail.shape.length === 3
    ? `<label class="slice">context position <select data-testid="slice">${detail.labels[1].map((l, i) => `<option value="${i}" ${i === slice ? "selected" : ""}>${esc(l)}</option>`).join("")}</select></label>`
    : "";
  // the text is rebuilt; the heatmaps container is kept so that its plots update in place
  let maps = el.querySelector(".heatmaps");
  if (!maps || el.dataset.node !== detail.name) {
    el.innerHTML = '<div class="panel-text"></div><div class="heatmaps" data-testid="heatmaps"></div>';
    el.dataset.node = detail.name;
    maps = el.querySelector(".heatmaps");
  }
  el.querySelector(".panel-text").innerHTML = `
    <h2 data-testid="panel-title">${esc(detail.name)} <small>(${esc(detail.kind)}, shape (${detail.shape.join(", ")}))</small></h2>
    <p class="hint">${esc(detail.about)}</p>
    <div><b>forward:</b> ${producer ? `<code data-testid="formula">${esc(producer.formula)}</code>` : "a leaf: an input or a parameter"}</div>
    <div><b>backward:</b> ${ruleHtml || "<span class=hint>none</span>"}</div>
    <div class="cmp"><b>check:</b> ${status}</div>
    <div class="cmp" data-testid="numeric">${esc(numeric)}</div>
    ${slicer}`;
  const select = el.querySelector('[data-testid="slice"]');
  if (select) select.addEventListener("change", () => onSlice(Number(select.value)));
  return heatmaps.render(maps, detail, slice, key);
}
