// Visual constants in one place: status colours (Okabe-Ito, colour-blind safe) and their symbols.
export const STATUS = {
  none: { color: "#9aa0a6", symbol: "", label: "input (no gradient)" },
  pending: { color: "#c9ced6", symbol: "·", label: "not reached" },
  partial: { color: "#E69F00", symbol: "◐", label: "partial (k of 2 contributions)" },
  exact: { color: "#009E73", symbol: "✓", label: "exact (bitwise)" },
  approx: { color: "#56B4E9", symbol: "≈", label: "approximately equal" },
  mismatch: { color: "#D55E00", symbol: "✗", label: "mismatch" },
};
export const KIND_SYMBOL = { input: "square", param: "diamond", intermediate: "circle", loss: "star" };
export const KIND_LABEL = { input: "■ input", param: "◆ parameter", intermediate: "● intermediate", loss: "★ loss" };
export const NODE_SIZE = 15;
export const HIGHLIGHT = "#0b5fff";
export const VALUE_SCALE = "Viridis";
export const GRAD_SCALE = "RdBu"; // diverging, reversed so that negative is blue
export const DEFAULT_CONFIG = {
  seed: 2147483647, batch_size: 32, n_hidden: 64, n_embd: 10, block_size: 3, dtype: "float32", init: "lecture", run: 0,
  bug: "",
};
export const BACKWARD_COLOR = { manual: "#0072B2", autograd: "#D55E00" }; // Okabe-Ito blue / vermillion
export const WEIGHT_COLOR = { C: "#009E73", W1: "#0072B2", W2: "#CC79A7" };
export const RUN_DEFAULTS = {
  seed: 2147483647, n_embd: 10, n_hidden: 200, block_size: 3, batch_size: 32, max_steps: 200000,
  lr: 0.1, lr_decay_step: 100000, lr_after: 0.01, check_every: 1000, backward: "manual", keep_running: false,
};
