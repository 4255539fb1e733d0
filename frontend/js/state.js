// The one state object, and its round trip through the URL (a URL is a permalink).
// The modes and the config's defaults are the server's (/api/meta): every function here is given them.

const VIEWS = ["value", "manual", "autograd", "diff"];

// each config field's default, as /api/meta serves it
export function defaults(meta) {
  return Object.fromEntries(Object.entries(meta.config).map(([key, field]) => [key, field.default]));
}

export function fromURL(search, meta) {
  const q = new URLSearchParams(search);
  const base = defaults(meta);
  const config = { ...base };
  for (const key of Object.keys(config)) {
    if (q.has(key)) config[key] = typeof base[key] === "number" ? Number(q.get(key)) : q.get(key);
  }
  const mode = meta.modes.some((m) => m.name === q.get("mode")) ? q.get("mode") : meta.default_mode;
  const step = q.has("step") ? Math.max(0, parseInt(q.get("step"), 10) || 0) : 0;
  const view = VIEWS.includes(q.get("view")) ? q.get("view") : "manual";
  return { config, mode, step, node: q.get("node") || null, slice: Number(q.get("slice") || 0), pinned: q.get("pin") === "1", view, why: q.get("why") === "1" };
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
