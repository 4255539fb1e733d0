// The one state object, and its round trip through the URL (a URL is a permalink).
import { DEFAULT_CONFIG } from "./config.js";

const MODES = ["atomic", "fused_ce", "fused_bn", "fused"];
const VIEWS = ["value", "manual", "autograd", "diff"];

export function fromURL(search) {
  const q = new URLSearchParams(search);
  const config = { ...DEFAULT_CONFIG };
  for (const key of Object.keys(config)) {
    if (q.has(key)) config[key] = typeof DEFAULT_CONFIG[key] === "number" ? Number(q.get(key)) : q.get(key);
  }
  const mode = MODES.includes(q.get("mode")) ? q.get("mode") : "atomic";
  const step = q.has("step") ? Math.max(0, parseInt(q.get("step"), 10) || 0) : 0;
  const view = VIEWS.includes(q.get("view")) ? q.get("view") : "manual";
  return { config, mode, step, node: q.get("node") || null, slice: Number(q.get("slice") || 0), pinned: q.get("pin") === "1", view };
}

export function toURL(state) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(state.config)) {
    if (value !== DEFAULT_CONFIG[key]) q.set(key, value);
  }
  if (state.mode !== "atomic") q.set("mode", state.mode);
  q.set("step", state.step);
  if (state.node) q.set("node", state.node);
  if (state.slice) q.set("slice", state.slice);
  if (state.pinned) q.set("pin", "1");
  if (state.view !== "manual") q.set("view", state.view);
  return `?${q}`;
}

export function apiParams(state, withStep = true) {
  const p = { ...state.config, mode: state.mode };
  if (withStep) p.step = state.step;
  return p;
}
