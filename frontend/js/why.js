// The "why" drawer: for the inspector's node, the derivation of every rule that makes its gradient (MathML from
// the server), worked examples and the forces on the logits from the live tensors, where an approximate gradient
// differs and why, and the lecture's check cell at the step. The builders return strings (Node tests import them);
// open/close/refresh touch the page.
import { checkCell, esc } from "./text.js";

// four significant digits, plain or e-notation: the drawer's numbers (the server's are the same entries)
export function num4(x) {
  if (x === null || x === undefined) return "—";
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e-3 && a < 1e5) return String(Number(x.toPrecision(4)));
  return x.toExponential(3).replace(/\.?0+e/, "e");
}

// a number the drawer read from a tensor: its source rides along, so that a check can compare it with the served data
function cell(x, tensor, grad, index, step) {
  return `<span class="num" data-tensor="${esc(tensor)}" data-grad="${grad ? 1 : 0}" data-index="${index.join(",")}"` +
    `${step === undefined ? "" : ` data-step="${step}"`} data-value="${x}">${esc(num4(x))}</span>`;
}

const at = (index) => `[${index.join(", ")}]`;

function derivationHtml(rule) {
  return `<ol class="derivation" data-testid="derivation">${rule.lines.map((l, i) => `
    <li><div class="math" tabindex="0" role="group" aria-label="derivation, line ${i + 1}">${l.mathml}</div>${l.note ? `<div class="why-note">${esc(l.note)}</div>` : ""}</li>`).join("")}</ol>`;
}

function matmulHtml(ex, opStep) {
  const label = (m) => `${m.grad ? "d" : ""}${m.tensor}${m.transposed ? ".T" : ""}`;
  // each operand as it enters the product, every number with its index in the tensor itself
  const matrix = (m) => `
    <table class="mini"><caption>${esc(label(m))}[${m.rows[0]}:${m.rows.at(-1) + 1}, ${m.cols[0]}:${m.cols.at(-1) + 1}]</caption>${m.values.map((row, p) => `<tr>${row.map((v, q) =>
      `<td>${cell(v, m.tensor, m.grad, m.indices[p][q], m.grad ? opStep - 1 : undefined)}</td>`).join("")}</tr>`).join("")}</table>`;
  const entries = ex.entries.map((e) => `<li data-testid="matmul-entry" data-index="${e.index.join(",")}" data-full="${e.full}">
    d${esc(ex.target)}${at(e.index)} = ${e.terms.map((t) => esc(num4(t))).join(" + ")} + … (${ex.inner - e.terms.length} more) = <b>${esc(num4(e.full))}</b></li>`).join("");
  return `<div class="mats">${matrix(ex.a)}<span class="times">@</span>${matrix(ex.b)}</div>
    <ul class="terms">${entries}</ul>`;
}

function sumHtml(ex) {
  const shown = ex.terms.map((t) => `<li data-operands='${esc(JSON.stringify(t.operands))}' data-value="${t.value}">
    <span class="muted">${at(t.index)}</span> ${esc(t.text)} = ${esc(num4(t.value))}</li>`).join("");
  return `<ol class="terms sum-terms" data-testid="sum-terms" tabindex="0" aria-label="the terms of the sum">${shown}</ol>
    <p>sum of the ${ex.terms.length} terms = <b data-testid="sum-total" data-value="${ex.total}">${esc(num4(ex.total))}</b></p>`;
}

function maxHtml(ex, labels, opStep) {
  const chips = ex.values.map((v, j) => `<span class="chip-num${j === ex.argmax ? " hit" : ""}" title="${esc(labels[j] ?? j)}">${esc(labels[j] ?? j)} ${cell(v, ex.source, false, [ex.row, j])}</span>`).join(" ");
  return `<p class="chips" data-testid="max-row" data-argmax="${ex.argmax}">${chips}</p>
    <p>contribution: d${esc(ex.source)}[${ex.row}, ${ex.argmax}] += d${esc(ex.output)}[${ex.row}, 0] = ${cell(ex.upstream, ex.output, true, [ex.row, 0], opStep - 1)}, every other column of the row += 0</p>`;
}

function gatherHtml(ex, opStep) {
  const counts = ex.occurrences.filter((o) => o.count).map((o) => `<span class="chip-num${o.char === ex.label ? " hit" : ""}">'${esc(o.char)}' ×${o.count}</span>`).join(" ");
  const uses = ex.uses.map((u) => `<li>row ${u.row}, position ${u.position}: demb[${u.row}, ${u.position}, ${ex.dim}] = ${cell(u.value, "emb", true, [u.row, u.position, ex.dim], opStep - 1)}</li>`).join("");
  return `<p class="chips" data-testid="char-counts">characters in this batch: ${counts}</p>
    <ul class="terms" data-testid="gather-uses">${uses}</ul>
    <p>dC[${ex.char}, ${ex.dim}] = sum over the ${ex.uses.length} uses = <b data-testid="gather-total" data-value="${ex.total}">${esc(num4(ex.total))}</b></p>`;
}

function tanhHtml(ex, opStep) {
  const rows = ex.units.map((u) => `<tr><td>${esc(u.label)} ${at(u.index)}</td>
    <td>${cell(u.h, ex.output, false, u.index)}</td><td>${esc(num4(u.local))}</td><td>${cell(u.dh, ex.output, true, u.index, opStep - 1)}</td><td>${esc(num4(u.dhpreact))}</td></tr>`).join("");
  return `<table class="mini wide" data-testid="tanh-units"><tr><th>unit</th><th>${esc(ex.output)}</th><th>1 − ${esc(ex.output)}²</th><th>d${esc(ex.output)}</th><th>d${esc(ex.input)}</th></tr>${rows}</table>
    <p>${ex.saturated} of ${ex.entries} activations have |h| &gt; ${ex.threshold}.</p>`;
}

function logHtml(ex, opStep) {
  const rows = ex.entries.map((u) => `<tr><td>${esc(u.label)} ${at(u.index)}</td>
    <td>${cell(u.x, ex.input, false, u.index)}</td><td>${esc(num4(u.local))}</td><td>${cell(u.dout, ex.output, true, u.index, opStep - 1)}</td><td>${esc(num4(u.din))}</td></tr>`).join("");
  return `<table class="mini wide" data-testid="log-entries"><tr><th>entry</th><th>${esc(ex.input)}</th><th>1 / ${esc(ex.input)}</th><th>d${esc(ex.output)}</th><th>d${esc(ex.input)}</th></tr>${rows}</table>`;
}

export function exampleHtml(ex, { labels = [], opStep = 0 } = {}) {
  const body = ex.kind === "matmul" ? matmulHtml(ex, opStep) : ex.kind === "sum" ? sumHtml(ex)
    : ex.kind === "max" ? maxHtml(ex, labels, opStep) : ex.kind === "gather" ? gatherHtml(ex, opStep)
    : ex.kind === "tanh" ? tanhHtml(ex, opStep) : ex.kind === "log" ? logHtml(ex, opStep) : "";
  if (!body) return "";
  return `<div class="example" data-testid="example-${esc(ex.kind)}"><h4>Worked example: ${esc(ex.title)}</h4>
    ${ex.text ? `<p>${esc(ex.text)}</p>` : ""}${body}</div>`;
}

export function forcesHtml(f, rowLabels = []) {
  const scale = Math.max(1, ...f.force.map(Math.abs));
  const rows = f.labels.map((label, j) => {
    const p = f.probs[j], force = f.force[j];
    const w = (Math.abs(force) / scale) * 50;
    return `<div class="force-row${j === f.target ? " target" : ""}" data-testid="force-row" data-prob="${p}" data-force="${force}">
      <span class="force-char"${j === f.target ? ' title="the target"' : ""}>${esc(label)}${j === f.target ? " ◀ target" : ""}</span>
      <span class="prob-bar" title="p = ${esc(num4(p))}"><i style="width:${(p * 100).toFixed(2)}%"></i>${f.onehot[j] ? '<b class="onehot" title="one-hot: 1"></b>' : ""}</span>
      <span class="force-bar"><i class="${force < 0 ? "neg" : "pos"}" style="width:${w.toFixed(2)}%;${force < 0 ? `right:50%` : "left:50%"}"></i></span>
      <span class="force-num">${esc(num4(force))}</span></div>`;
  }).join("");
  const options = rowLabels.map((l, i) => `<option value="${i}"${i === f.row ? " selected" : ""}>${i}: ${esc(l)}</option>`).join("");
  const choose = options ? ` <label class="small-select">row <select data-testid="forces-row">${options}</select></label>` : "";
  return `<section class="why-forces" data-testid="forces"><h3>dlogits as forces, batch row ${f.row}${choose}</h3>
    <p>${esc(f.text)}</p>
    <div class="force-head"><span>char</span><span>softmax p (bar) and one-hot (mark)</span><span>n·dlogits = p − one-hot</span><span></span></div>
    ${rows}
    <p>the row's forces sum to <b data-testid="forces-sum" data-value="${f.sum}">${esc(Math.abs(f.sum) < 1e-9 ? "0" : num4(f.sum))}</b>
    <span class="muted">(in float64; the backward's float32 n·dlogits agree to ${esc(num4(f.backward_maxdiff))})</span></p></section>`;
}

export function approxHtml(a, labels) {
  const where = a.index.map((i, d) => (labels[d] && labels[d][i] !== undefined ? `${i} (${labels[d][i]})` : String(i))).join(", ");
  return `<section class="why-approx" data-testid="approx"><h3>Why ≈ and not exact</h3>
    <p>The largest difference sits at [${esc(where)}]: manual <b>${esc(String(a.manual))}</b>, autograd <b>${esc(String(a.reference))}</b>,
    |difference| ${esc(num4(a.abs))}, relative ${esc(a.rel === null ? "—" : a.rel.toExponential(2))}.</p>
    <p data-testid="approx-cause">${esc(a.cause)}</p></section>`;
}

export function divisionHtml(d) {
  const rows = d.rows.map((r) => `<tr><td><code>${esc(r.forward)}</code></td><td>${r.exact ? "True" : "False"}</td><td>${r.approx ? "True" : "False"}</td><td>${esc(String(r.maxdiff))}</td></tr>`).join("");
  return `<section class="why-division" data-testid="division"><h3>The lecture's remark: counts_sum**-1, not 1.0 / counts_sum</h3>
    <p>${esc(d.text)}</p><p>Autograd through each forward against <code>${esc(d.rule)}</code>, measured on this batch:</p>
    <table class="mini wide"><tr><th>forward</th><th>exact</th><th>approximate</th><th>maxdiff</th></tr>${rows}</table></section>`;
}

export function checkCellHtml(lines, step) {
  return `<section class="why-check" data-testid="check-cell"><h3>The lecture's check cell after step ${step}
    <button type="button" data-testid="copy-check" class="small">Copy</button></h3>
    <pre data-testid="check-cell-text" tabindex="0" role="region" aria-label="the check cell's lines">${esc(lines.length ? lines.join("\n") : "# no gradient is complete yet: step forward")}</pre></section>`;
}

// the whole drawer for one /api/why answer; `hidden(step)`: the note that replaces what challenge mode hides of the
// gradient as made up to `step` ("" where nothing is hidden)
export function drawerHtml(answer, { labels = [], checkLines = [], hidden = () => "" } = {}) {
  const rules = answer.rules.map((r) => hidden(r.step) ? `
    <section class="why-rule" data-testid="why-hidden" data-op="${esc(r.op)}">
      <h3>from the backward step of <code>${esc(r.op)}</code> (step ${r.step})</h3><p>${esc(hidden(r.step))}</p>
    </section>` : `
    <section class="why-rule" data-testid="why-rule" data-op="${esc(r.op)}">
      <h3>from the backward step of <code>${esc(r.op)}</code> (step ${r.step})${r.of > 1 ? ` · contribution ${r.contribution} of ${r.of}` : ""}${r.reached ? "" : ' <span class="muted">· not reached yet</span>'}</h3>
      <div class="code-line">forward <code>${esc(r.formula)}</code></div>
      ${derivationHtml(r)}
      <pre class="rule-code">${esc(r.code)}</pre>
      ${r.bug_code ? `<div class="bug-rule"><span class="bug-tag">BUG</span> the bug lab runs <code>${esc(r.bug_code)}</code> in its place</div>` : ""}
      ${r.example ? exampleHtml(r.example, { labels: labels[1] || [], opStep: r.step }) : ""}
    </section>`).join("");
  const none = answer.rules.length ? "" : '<p class="muted">No gradient flows into this tensor: it is an input of the network.</p>';
  return `<header class="why-head"><h2 id="why-title">Why <code>d${esc(answer.name)}</code> is what it is</h2>
      <button type="button" data-testid="why-close" aria-label="close the why drawer">Close</button></header>
    <p class="muted">${esc(answer.mode)} · after step ${answer.step} · hover a name in the math to find it in the graph · the examples use entry ${at(answer.index)}: click a cell of the heatmap to pick another</p>
    ${none}${rules}
    ${answer.forces && !hidden(Infinity) ? forcesHtml(answer.forces, labels[0] || []) : ""}
    ${answer.approx && !hidden(Infinity) ? approxHtml(answer.approx, labels) : ""}
    ${answer.division && !hidden(Infinity) ? divisionHtml(answer.division) : ""}
    ${checkCellHtml(checkLines, answer.step)}`;
}

// ---- the page --------------------------------------------------------------------------------------------

let shown = null; // the URL of the answer drawn

// Open (or refresh) the drawer on `name`: `ctx` = {fetchWhy, params, graph, view, order, labels, onClose}
export async function show(el, name, ctx) {
  const params = ctx.at ? { ...ctx.params, at: ctx.at.join(",") } : ctx.params;
  const url = `${name}?${new URLSearchParams(params)}`;
  // docked beside the inspector on a wide screen (see style.css); below the toolbar where there is room, so that
  // Next and Previous stay in reach; over everything on a phone
  const header = document.querySelector("header.top .toolbar");
  const main = document.querySelector("main");
  el.style.top = window.innerWidth >= 1100 && main ? `${Math.round(main.getBoundingClientRect().top + 6)}px`
    : window.innerWidth >= 700 && header ? `${Math.round(header.getBoundingClientRect().bottom)}px` : "0px";
  el.hidden = false;
  docked(true);
  // challenge mode hides the derivation of a step not solved nor revealed: what it hides is part of what is drawn
  const key = `${url}#${ctx.hidden ? ctx.hidden(Infinity) : ""}`;
  if (shown === key) return;
  shown = key;
  el.setAttribute("aria-busy", "true");
  let answer;
  try {
    answer = await ctx.fetchWhy(name, params);
  } catch (e) {
    if (shown !== key) return;
    el.innerHTML = `<header class="why-head"><h2>Why</h2><button type="button" data-testid="why-close">Close</button></header><p class="error">${esc(e.message)}</p>`;
    bind(el, ctx);
    el.removeAttribute("aria-busy");
    return;
  }
  if (shown !== key) return; // a newer node or step was asked for meanwhile
  el.innerHTML = drawerHtml(answer, { labels: ctx.labels, checkLines: checkCell(ctx.view, ctx.graph, ctx.order), hidden: ctx.hidden });
  breakMath(el);
  markSymbols(el, ctx.graph);
  bind(el, ctx);
  el.removeAttribute("aria-busy");
  el.dataset.node = name;
  el.dataset.step = String(answer.step);
}

export function close(el) {
  el.hidden = true;
  shown = null;
  docked(false);
  highlight(null);
}

// docked on a wide screen, the drawer takes its width from the graph and the inspector: both lay out again
function docked(on) {
  if (document.body.classList.contains("why-open") === on) return;
  document.body.classList.toggle("why-open", on);
  window.dispatchEvent(new Event("resize"));
}

function bind(el, ctx) {
  el.querySelector('[data-testid="why-close"]').onclick = () => ctx.onClose();
  const row = el.querySelector('[data-testid="forces-row"]');
  if (row) row.onchange = () => ctx.onEntry([Number(row.value), 0]);
  // a name folded into this mode's op opens in Exercise 1's atomic graph
  for (const t of el.querySelectorAll("mtext.sym-elsewhere")) t.onclick = () => ctx.onAtomic(t.dataset.atomic);
  const copy = el.querySelector('[data-testid="copy-check"]');
  if (copy) {
    copy.onclick = async () => {
      const text = el.querySelector('[data-testid="check-cell-text"]').textContent;
      try {
        await navigator.clipboard.writeText(text);
        copy.textContent = "Copied";
      } catch {
        // no clipboard permission (an insecure origin): select the text for the learner to copy
        const range = document.createRange();
        range.selectNodeContents(el.querySelector('[data-testid="check-cell-text"]'));
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        copy.textContent = "Selected: Ctrl+C";
      }
    };
  }
}

const MATHML = "http://www.w3.org/1998/Math/MathML";
const BREAK_BEFORE = new Set(["=", "+", "−", "≈"]); // a long line breaks before a relation or a term; after a comma

// Chromium lays a MathML line out on one line however wide (the fused batchnorm's are ~650 px): each line is cut
// into pieces at its top level, each its own <math>, with spaces between them where the text may wrap. Continued
// lines hang under the first (style.css), so that the line still reads as one equation.
function breakMath(root) {
  for (const math of root.querySelectorAll(".derivation .math > math")) {
    const first = math.firstElementChild;
    const row = math.children.length === 1 && first.localName === "mrow" ? first : math;
    const pieces = [[]];
    for (const child of [...row.children]) {
      const op = child.localName === "mo" ? child.textContent.trim() : "";
      if (BREAK_BEFORE.has(op) && pieces.at(-1).length) pieces.push([]);
      pieces.at(-1).push(child);
      if (op === ",") pieces.push([]);
    }
    const kept = pieces.filter((p) => p.length);
    if (kept.length < 2) continue;
    const lines = Object.assign(document.createElement("span"), { className: "math-lines" });
    kept.forEach((piece, i) => {
      const part = document.createElementNS(MATHML, "math");
      const mrow = document.createElementNS(MATHML, "mrow");
      mrow.append(...piece);
      part.append(mrow);
      if (i) lines.append(" ");
      lines.append(part);
    });
    math.replaceWith(lines);
  }
}

// names in the math: `\text{probs}` (a value) and `\text{dprobs}` (its gradient) point at the node in the graph
function markSymbols(el, graph) {
  const names = new Set(graph.nodes.map((n) => n.name));
  for (const t of el.querySelectorAll("math mtext")) {
    const text = t.textContent.trim();
    const name = names.has(text) ? text : text.startsWith("d") && names.has(text.slice(1)) ? text.slice(1) : null;
    if (name) {
      t.classList.add("sym");
      t.dataset.node = name;
    } else if (/^d?[a-z_]+\d*$/.test(text) && text.includes("_")) {
      t.classList.add("sym-elsewhere");
      t.dataset.atomic = text.replace(/^d(?=[a-z])/, "");
      t.setAttribute("title", "a node of Exercise 1's atomic graph, folded into this mode's op: click to open it there");
    }
  }
  el.onpointerover = (event) => {
    const sym = event.target.closest && event.target.closest("mtext.sym");
    highlight(sym ? sym.dataset.node : null);
  };
  el.onpointerleave = () => highlight(null);
}

function highlight(name) {
  for (const old of document.querySelectorAll("#graph .sym-hl")) old.classList.remove("sym-hl");
  for (const m of document.querySelectorAll("#why mtext.sym-on")) m.classList.remove("sym-on");
  if (!name) return;
  const node = document.querySelector(`#graph [data-testid="gnode-${CSS.escape(name)}"]`);
  if (node) node.classList.add("sym-hl");
  for (const m of document.querySelectorAll(`#why mtext.sym[data-node="${CSS.escape(name)}"]`)) m.classList.add("sym-on");
}
