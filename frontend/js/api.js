// One function per endpoint. Errors carry the server's reason.
export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function reason(body) {
  if (!body || body.detail === undefined) return "";
  if (typeof body.detail === "string") return body.detail;
  return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
}

// responses asked for ahead of time (the next step while the learner reads this one), used once
const ahead = new Map();
const AHEAD_MAX = 8;
// the explorer's answers are a pure function of their URL: the last ones used are kept, so Previous,
// Reset and back/forward to a step already seen redraw without a round trip. Not for a trained run's
// passes (a deleted run's id can come back with other parameters), and failures are asked again.
const recent = new Map();
const RECENT_MAX = 48;

function get(path, params) {
  return request(`${path}?${new URLSearchParams(params)}`);
}

function getPure(path, params) {
  const url = `${path}?${new URLSearchParams(params)}`;
  let promise = recent.get(url);
  if (promise) {
    recent.delete(url); // most recently used last
  } else {
    promise = ahead.get(url) || request(url);
    ahead.delete(url);
    promise.catch(() => recent.delete(url));
  }
  if (!Number(params.run)) recent.set(url, promise);
  if (recent.size > RECENT_MAX) recent.delete(recent.keys().next().value);
  return promise;
}

function prefetch(path, params) {
  const url = `${path}?${new URLSearchParams(params)}`;
  if (ahead.has(url) || recent.has(url)) return;
  const promise = request(url);
  promise.catch(() => {}); // a failed prefetch is reported when (if) its response is used
  ahead.set(url, promise);
  if (ahead.size > AHEAD_MAX) ahead.delete(ahead.keys().next().value);
}

async function request(url, init = {}) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw new ApiError(`The server is unreachable (${e.message}). Is it still running?`, 0);
  }
  let body = null;
  try { body = response.status === 204 ? null : await response.json(); } catch { body = null; }
  if (!response.ok) {
    const why = reason(body) || response.statusText;
    throw new ApiError(response.status >= 500 ? `Server error ${response.status}: ${why}` : why, response.status);
  }
  return body;
}

export const fetchGraph = (params) => getPure("/api/graph", params);
export const fetchState = (params) => getPure("/api/state", params);
export const fetchTensor = (name, params) => getPure(`/api/tensor/${encodeURIComponent(name)}`, params);
export const fetchDataset = () => get("/api/dataset", {});
export const prefetchState = (params) => prefetch("/api/state", params);
export const prefetchTensor = (name, params) => prefetch(`/api/tensor/${encodeURIComponent(name)}`, params);

// training runs (Exercise 4)
const send = (method, path, body) => request(path, {
  method,
  headers: body ? { "Content-Type": "application/json" } : {},
  body: body ? JSON.stringify(body) : undefined,
});

export const startRuns = (config) => send("POST", "/api/runs", config);
export const listRuns = () => get("/api/runs", {});
export const fetchRun = (id) => get(`/api/runs/${id}`, {});
export const cancelRun = (id) => send("POST", `/api/runs/${id}/cancel`);
export const deleteRun = (id) => send("DELETE", `/api/runs/${id}`);
// a stream of the run's events; EventSource reconnects by itself and resumes after the last event id
export const runEvents = (id) => new EventSource(`/api/runs/${id}/events`);

// challenge mode and the bug lab
export const fetchBugs = () => get("/api/bugs", {});
export const fetchHints = (params) => getPure("/api/hints", params);
export const checkCode = (params, code) => send("POST", "/api/check", { ...params, code });
