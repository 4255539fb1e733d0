// The one state object, and its round trip through the URL (a URL is a permalink).
// The modes and the config's defaults are the server's (/api/meta): every function here is given them.
import { layoutParam, parseLayout } from "./slices.js";

const VIEWS = ["value", "manual", "autograd", "diff"];

// each config field's default, as /api/meta serves it
export function defaults(meta) {
  return Object.fromEntries(Object.entries(meta.config).map(([key, field]) => [key, field.default]));
}

export const fromURL = (search, meta, bugModes = {}) => parseURL(search, meta, bugModes).state;

// what is wrong with a config field's value, by the bounds and choices the server declares ("" when nothing)
function fault(field, value, numeric) {
  if (numeric && !Number.isInteger(value)) return "is not a whole number";
  if (numeric && field.minimum !== null && field.minimum !== undefined && value < field.minimum) return `is below the minimum, ${field.minimum}`;
  if (numeric && field.maximum !== null && field.maximum !== undefined && value > field.maximum) return `is above the maximum, ${field.maximum}`;
  if (field.choices && !field.choices.includes(value)) {
    const named = field.choices.filter(Boolean);
    return named.length <= 6 ? `is not one of ${named.join(", ")}` : "is not one the server knows";
  }
  return "";
}

// The state a URL asks for, at the nearest valid state, and a plain line for each parameter that was not valid
// (what was wrong, and what is shown instead). `bugModes` = {bug: the modes it exists in} (/api/bugs).
export function parseURL(search, meta, bugModes = {}) {
  const q = new URLSearchParams(search);
  const base = defaults(meta);
  const config = { ...base };
  const notes = [];
  const label = (name) => meta.modes.find((m) => m.name === name).label;
  let mode = meta.default_mode;
  if (q.has("mode") && !meta.modes.some((m) => m.name === q.get("mode"))) {
    notes.push(`there is no mode "${q.get("mode")}": showing ${label(mode)}`);
  } else if (q.has("mode")) mode = q.get("mode");
  for (const [key, field] of Object.entries(meta.config)) {
    if (!q.has(key)) continue;
    const numeric = typeof base[key] === "number";
    const value = numeric ? (q.get(key).trim() === "" ? NaN : Number(q.get(key))) : q.get(key);
    // a bug is one of the net's own (/api/bugs of its net): the config's choices are every net's
    const own = key === "bug" && Object.keys(bugModes).length ? { ...field, choices: ["", ...Object.keys(bugModes)] } : field;
    const wrong = fault(own, value, numeric);
    if (!wrong) config[key] = value;
    else notes.push(`${key}=${q.get(key)} ${wrong}: showing ${key === "bug" ? "no bug" : `${key}=${base[key]}`}`);
  }
  if (config.bug && bugModes[config.bug] && !bugModes[config.bug].includes(mode)) {
    notes.push(`the bug ${config.bug} sits in an op this mode (${label(mode)}) fuses away: showing no bug`);
    config.bug = base.bug;
  }
  const last = meta.modes.find((m) => m.name === mode).steps;
  let step = 0;
  if (q.has("step")) {
    const asked = Number(q.get("step"));
    if (!Number.isInteger(asked) || asked < 0) notes.push(`step=${q.get("step")} is not a step: showing step 0`);
    else if (asked > last) { step = last; notes.push(`step=${asked} is past the last step of ${label(mode)}: showing step ${last}`); }
    else step = asked;
  }
  let view = "manual";
  if (q.has("view") && !VIEWS.includes(q.get("view"))) notes.push(`view=${q.get("view")} is not one of ${VIEWS.join(", ")}: showing manual`);
  else if (q.has("view")) view = q.get("view");
  // a 3-D node's map: which two axes are its rows and columns (null: the node's default) and where the third is cut
  let slice = 0;
  if (q.has("slice")) {
    const asked = Number(q.get("slice"));
    if (!Number.isInteger(asked) || asked < 0) notes.push(`slice=${q.get("slice")} is not an index: showing slice 0`);
    else slice = asked;
  }
  const axes = parseLayout(q.get("axes"));
  if (q.has("axes") && !axes) notes.push(`axes=${q.get("axes")} is not two different axes of a 3-D tensor (as rows,columns from 0, 1, 2): showing the node's own map`);
  const state = { config, mode, step, node: q.get("node") || null, slice, axes, pinned: q.get("pin") === "1", view, why: q.get("why") === "1" };
  return { state, notes };
}

export function toURL(state, meta) {
  const q = new URLSearchParams();
  const base = defaults(meta);
  for (const [key, value] of Object.entries(state.config)) {
    if (value !== base[key]) q.set(key, value);
  }
  if (state.mode !== meta.default_mode) q.set("mode", state.mode);
  q.set("step", state.step);
  if (state.node) q.set("node", state.node);
  if (state.axes) q.set("axes", layoutParam(state.axes));
  if (state.slice) q.set("slice", state.slice);
  if (state.pinned) q.set("pin", "1");
  if (state.view !== "manual") q.set("view", state.view);
  if (state.why) q.set("why", "1");
  return `?${q}`;
}

export function apiParams(state, withStep = true) {
  const p = { ...state.config, mode: state.mode };
  if (withStep) p.step = state.step;
  return p;
}
