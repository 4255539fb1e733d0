// Visual constants in one place: status colours and glyphs, edge styles, colour scales, axis titles.

// Status colours: each ≥ 3:1 against white (WCAG 2.1 graphics), pairwise distinct under the common
// colour-vision deficiencies (checked by simulation in the browser tests); glyph and text say it too.
export const STATUS = {
  none: { color: "#8A8F98", fill: "#f1f2f4", symbol: "", label: "input (no gradient)" },
  pending: { color: "#8A8F98", fill: "#ffffff", symbol: "·", label: "not reached" },
  partial: { color: "#B86E00", fill: "#fff1dc", symbol: "◐", label: "partial: k of m contributions" },
  exact: { color: "#1E8F5E", fill: "#e3f4ec", symbol: "✓", label: "exact (bitwise)" },
  approx: { color: "#2A64C5", fill: "#e6eefb", symbol: "≈", label: "approximately equal" },
  mismatch: { color: "#7A1F3D", fill: "#f7e4ea", symbol: "✗", label: "mismatch" },
};
export const TEXT = "#1d2330"; // node labels (the page's text colour, --fg in style.css)
export const MUTED = "#4f5766"; // 7.3:1 on white
// edges: not yet traversed (forward arrows), traversed by the gradient, carried by the current step
export const EDGE = {
  pending: { color: "#a3a9b3", width: 1.2, arrow: 7 },
  traversed: { color: "#5B7FB0", width: 1.8, arrow: 8 },
  current: { color: "#6D28D9", width: 3.4, arrow: 13 },
};
export const CURRENT = EDGE.current.color;
// colour scales as stops, so that the canvas thumbnails and Plotly draw the same colours
export const VALUE_SCALE = [[0, "#440154"], [0.25, "#3b528b"], [0.5, "#21918c"], [0.75, "#5ec962"], [1, "#fde725"]]; // viridis
export const GRAD_SCALE = [[0, "#2166ac"], [0.25, "#92c5de"], [0.5, "#f7f7f7"], [0.75, "#f4a582"], [1, "#b2182b"]]; // negative blue, positive red
export const SLICE_OVER = 4096; // a 3-D tensor of more entries is asked for one 2-D slice at a time (the one drawn)
export const SCALAR_MAX = 8; // tensors with at most this many entries are printed as numbers, not drawn
// what each axis of a tensor means, as the heatmap's axis title
export const AXIS_TITLE = {
  batch: "batch row: context → target",
  vocab: "character",
  context: "context position",
  embd: "embedding dimension",
  embcat: "context position · embedding dimension",
  hidden: "hidden unit",
  time: "time position",
  embd2: "two positions · embedding dimension",
  hidden2: "two positions · hidden unit",
  head: "head dimension",
  query: "query position",
  key: "key position",
  one: "",
  time: "time position (after fusing consecutive pairs)",
  embd2: "pair position · embedding dimension",
  hidden2: "pair position · hidden unit",
};
export const BACKWARD_COLOR = { manual: "#0072B2", autograd: "#D55E00", code: "#009E73" }; // Okabe-Ito blue / vermillion / green
export const WRONG_COLOR = "#b3261e"; // a check that disagrees with autograd
// one per weight matrix, in the order the server lists them (the declaration's): a new layer needs no entry
export const WEIGHT_COLORS = ["#009E73", "#0072B2", "#CC79A7", "#D55E00", "#E69F00", "#56B4E9"]; // Okabe-Ito
