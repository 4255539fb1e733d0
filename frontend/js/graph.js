// Pure renderer of the computation graph: render(el, {graph, state, selected}) with Plotly.react.
import { HIGHLIGHT, KIND_SYMBOL, NODE_SIZE, STATUS } from "./config.js";
import { esc } from "./dom.js";

export function nodeStatus(nodeState) {
  if (!nodeState) return "pending";
  if (nodeState.status !== "complete") return nodeState.status;
  const cmp = nodeState.cmp;
  if (!cmp) return "exact";
  return cmp.exact ? "exact" : cmp.approx ? "approx" : "mismatch";
}

// Forward order top to bottom: each op's output on the main column at the op's row; inputs and
// parameters on side columns at the row of the op that first reads them.
export function layout(graph) {
  const pos = {};
  graph.ops.forEach((op, row) => { for (const out of op.outputs) pos[out] = { x: 0, y: row }; });
  graph.ops.forEach((op, row) => {
    let side = 0;
    for (const name of op.inputs) {
      if (pos[name]) continue;
      side += 1;
      pos[name] = { x: -side * 1.3, y: row };
    }
  });
  return pos;
}

export function render(el, { graph, state, selected }) {
  const pos = layout(graph);
  const current = state.op ? graph.ops.find((op) => op.name === state.op) : null;
  const touched = new Set(current ? current.rules.map((r) => r.target) : []);
  const edgeX = [], edgeY = [];
  for (const op of graph.ops) {
    const to = pos[op.outputs[0]];
    for (const name of op.inputs) {
      const from = pos[name];
      edgeX.push(from.x);
      edgeY.push(from.y);
      if (from.x === 0 && to.y - from.y > 1) { // skip connection: bend it around the nodes between
        edgeX.push(0.28);
        edgeY.push((from.y + to.y) / 2);
      }
      edgeX.push(to.x, null);
      edgeY.push(to.y, null);
    }
  }
  const nodes = graph.nodes;
  const statuses = nodes.map((n) => nodeStatus(state.nodes[n.name]));
  const text = nodes.map((n, i) => {
    const s = state.nodes[n.name];
    const st = statuses[i];
    const tag = st === "partial" ? ` ◐ ${s.contributions[0]} of ${s.contributions[1]}` : STATUS[st].symbol ? ` ${STATUS[st].symbol}` : "";
    return `${n.name}${tag}`;
  });
  const hover = nodes.map((n, i) => {
    const s = state.nodes[n.name];
    const cmp = s && s.cmp ? `<br>exact: ${s.cmp.exact} | approx: ${s.cmp.approx} | maxdiff: ${s.cmp.maxdiff}` : "";
    return `<b>${n.name}</b> (${n.kind}) shape (${n.shape.join(", ")})<br>${n.about}<br>status: ${STATUS[statuses[i]].label}${cmp}`;
  });
  const nodeTrace = {
    type: "scatter", mode: "markers+text", name: "nodes",
    x: nodes.map((n) => pos[n.name].x), y: nodes.map((n) => pos[n.name].y),
    text, textposition: nodes.map((n) => (pos[n.name].x === 0 ? "middle right" : "top center")),
    textfont: { size: 12, color: statuses.map((s) => (s === "mismatch" ? STATUS.mismatch.color : "#1d2330")) },
    hovertext: hover, hoverinfo: "text", customdata: nodes.map((n) => n.name),
    marker: {
      size: nodes.map((n) => (n.name === selected ? NODE_SIZE + 6 : NODE_SIZE)),
      symbol: nodes.map((n) => KIND_SYMBOL[n.kind]),
      color: statuses.map((s) => STATUS[s].color),
      line: {
        width: nodes.map((n) => (touched.has(n.name) || n.name === selected ? 3 : 1)),
        color: nodes.map((n) => (touched.has(n.name) ? HIGHLIGHT : n.name === selected ? "#1d2330" : "#6b7280")),
      },
    },
  };
  const edgeTrace = {
    type: "scatter", mode: "lines", x: edgeX, y: edgeY, hoverinfo: "skip", name: "edges",
    line: { color: "#b9bfc9", width: 1, shape: "spline" },
  };
  // formulas as one text trace, not 22 annotations: Plotly redraws annotations one by one on every step
  const rowOf = new Map(graph.ops.map((op, row) => [op, row]));
  const formulaTrace = {
    type: "scatter", mode: "text", name: "formulas", hoverinfo: "skip",
    x: graph.ops.map(() => 3.0), y: graph.ops.map((op, row) => row),
    text: graph.ops.map((op) => (op === current ? `<b>${esc(short(op.formula))}</b>` : esc(short(op.formula)))),
    textposition: "middle right",
    textfont: {
      family: "ui-monospace, Menlo, monospace", size: 10.5,
      color: graph.ops.map((op) => (op === current ? HIGHLIGHT : "#5b6474")),
    },
  };
  const rows = graph.ops.length;
  const minX = Math.min(...Object.values(pos).map((p) => p.x));
  const shapes = current ? [{
    type: "rect", xref: "x", yref: "y", layer: "below", line: { width: 0 }, fillcolor: "#e8efff",
    x0: 2.95, x1: 9.5, y0: rowOf.get(current) - 0.42, y1: rowOf.get(current) + 0.42,
  }] : [];
  const layoutSpec = {
    margin: { l: 10, r: 10, t: 10, b: 10 }, showlegend: false, hovermode: "closest",
    xaxis: { visible: false, range: [minX - 0.7, 9.6], fixedrange: true },
    yaxis: { visible: false, range: [rows - 0.4, -0.7], fixedrange: true },
    shapes, plot_bgcolor: "#fff", paper_bgcolor: "#fff",
  };
  return Plotly.react(el, [edgeTrace, formulaTrace, nodeTrace], layoutSpec, { displayModeBar: false, responsive: true });
}

// long formulas (the fused batchnorm) are cut in the graph; the panel shows them whole
function short(s) {
  const line = s.split("\n")[0];
  return line.length > 42 ? `${line.slice(0, 41)}…` : line;
}
