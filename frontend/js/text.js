// Text helpers with no page around them (the renderers use them; unit tests import them in Node).

// text for innerHTML: the server's names, formulas and messages are shown, never interpreted
export const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

// A float as Python's repr() writes it (the notebook prints maxdiff with it): shortest round-trip digits, fixed
// notation for 1e-4 <= |x| < 1e16 with at least one decimal, else d.ddde±XX. null (a NaN or ±Inf JSON could not
// carry) prints as nan.
export function pyFloat(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const sign = x < 0 ? "-" : "";
  const [mantissa, e] = Math.abs(x).toExponential().split("e");
  const exp = Number(e);
  const digits = mantissa.replace(".", "");
  if (exp >= -4 && exp < 16) {
    if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
    return `${sign}${digits.slice(0, exp + 1).padEnd(exp + 1, "0")}.${digits.slice(exp + 1) || "0"}`;
  }
  const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  return `${sign}${m}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
}

const pyBool = (b) => (b ? "True" : "False");

// One line of the notebook's cmp(): f'{s:15s} | exact: {str(ex):5s} | approximate: {str(app):5s} | maxdiff: {maxdiff}'
export function cmpLine(name, cmp) {
  if (cmp.shape_mismatch) return `${name.padEnd(15)} | ${cmp.shape_mismatch}`; // no maxdiff between different shapes
  if (cmp.shape_ok === false) {
    return `${name.padEnd(15)} | shape (${cmp.shape.join(", ")}), expected (${cmp.expected_shape.join(", ")})`;
  }
  return `${name.padEnd(15)} | exact: ${pyBool(cmp.exact).padEnd(5)} | approximate: ${pyBool(cmp.approx).padEnd(5)} | maxdiff: ${pyFloat(cmp.maxdiff)}`;
}

// The lecture's check cell at a step: a cmp line for each complete gradient, in the order the backward completed
// them (ties in the notebook's order), with its relative error; a partial gradient as a comment.
export function checkCell(view, graph, order) {
  const completedAt = {};
  graph.schedule.forEach((opName, i) => {
    const op = graph.ops.find((o) => o.name === opName);
    for (const r of op.rules) completedAt[r.target] = i + 1;
  });
  const rank = (name) => (order.includes(name) ? order.indexOf(name) : order.length);
  const names = Object.keys(completedAt).filter((n) => view.nodes[n] && view.nodes[n].cmp)
    .sort((a, b) => completedAt[a] - completedAt[b] || rank(a) - rank(b));
  const lines = [];
  for (const name of names) {
    const node = view.nodes[name];
    if (node.status === "complete") {
      const rel = node.cmp.rel_err === null || node.cmp.rel_err === undefined ? "" : ` | relative error: ${node.cmp.rel_err.toExponential(2)}`;
      lines.push(`${cmpLine(name, node.cmp)}${node.cmp.shape_ok === false ? "" : rel}`);
    } else if (node.status === "partial") {
      lines.push(`# ${name}: ${node.contributions[0]} of ${node.contributions[1]} contributions so far (its cmp comes with the last)`);
    }
  }
  return lines;
}
