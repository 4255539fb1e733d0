// One function per endpoint. Errors carry the server's reason.
export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function reason(body) {
  if (!body || body.detail === undefined) return "";
  if (typeof body.detail === "string") return body.detail;
  return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
}

// The explorer's answers are a pure function of their URL: the last ones used or asked for ahead (the
// steps next to the one shown, the one a button is about to ask for) are kept, so a step asked for
// ahead or already seen (Next, Previous, back/forward) redraws without a round trip. Failures are
// asked again.
const recent = new Map();
const RECENT_MAX = 64;
// a trained run's answers are not kept (a deleted run's id can come back with other parameters):
// one asked for ahead waits here until it is used, once
const ahead = new Map();
const AHEAD_MAX = 8;

function get(path, params) {
  return request(`${path}?${new URLSearchParams(params)}`);
}

function keep(url, promise) {
  recent.delete(url); // most recently used or asked for last
  recent.set(url, promise);
  if (recent.size > RECENT_MAX) recent.delete(recent.keys().next().value);
}

function ask(url, pure) {
  const promise = request(url);
  if (pure) {
    keep(url, promise);
    promise.catch(() => { if (recent.get(url) === promise) recent.delete(url); });
  }
  return promise;
}

function getPure(path, params) {
  const url = `${path}?${new URLSearchParams(params)}`;
  const pure = !Number(params.run);
  const known = recent.get(url) || ahead.get(url);
  ahead.delete(url);
  if (!known) return ask(url, pure);
  if (pure) keep(url, known);
  return known;
}

// Ask for an answer before it is needed; returns its promise (a failure is reported only where it is used).
function prefetch(path, params) {
  const url = `${path}?${new URLSearchParams(params)}`;
  const pure = !Number(params.run);
  const known = recent.get(url);
  if (known) {
    keep(url, known); // still wanted: not the next one to go
    return known;
  }
  if (ahead.has(url)) return ahead.get(url);
  const promise = ask(url, pure);
  promise.catch(() => {}); // a failed prefetch is reported when (if) its response is used
  if (!pure) {
    ahead.set(url, promise);
    if (ahead.size > AHEAD_MAX) ahead.delete(ahead.keys().next().value);
  }
  return promise;
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
// why a gradient is what it is (the drawer), and one entry's rules written out with its numbers
export const fetchWhy = (name, params) => getPure(`/api/why/${encodeURIComponent(name)}`, params);
export const fetchInstance = (name, params) => getPure(`/api/instance/${encodeURIComponent(name)}`, params);
export const fetchDataset = () => get("/api/dataset", {});
// a net's modes, and each config field's default and bounds; the default net's is the URL the pages preload (no "?")
export const fetchMeta = (net = "") => request(net ? `/api/meta?${new URLSearchParams({ net })}` : "/api/meta");
// the networks there are: each one's name, title, about line and trained mode
export const fetchNets = () => get("/api/nets", {});
export const prefetchState = (params) => prefetch("/api/state", params);
export const prefetchTensor = (name, params) => prefetch(`/api/tensor/${encodeURIComponent(name)}`, params);

// training runs (Exercise 4)
const send = (method, path, body, headers = {}) => request(path, {
  method,
  headers: body ? { ...headers, "Content-Type": "application/json" } : headers,
  body: body ? JSON.stringify(body) : undefined,
});
// a run's owner token (the training page keeps those of the runs it started): cancel and delete need it
const owner = (token) => (token ? { Authorization: `Bearer ${token}` } : {});

export const startRuns = (config) => send("POST", "/api/runs", config);
export const listRuns = () => get("/api/runs", {});
export const fetchRun = (id) => get(`/api/runs/${id}`, {});
export const cancelRun = (id, token) => send("POST", `/api/runs/${id}/cancel`, undefined, owner(token));
export const deleteRun = (id, token) => send("DELETE", `/api/runs/${id}`, undefined, owner(token));
// a stream of the run's events; EventSource reconnects by itself and resumes after the last event id
export const runEvents = (id) => new EventSource(`/api/runs/${id}/events`);

// challenge mode and the bug lab
export const fetchBugs = (net = "") => get("/api/bugs", net ? { net } : {});
export const fetchHints = (params) => getPure("/api/hints", params);
export const checkCode = (params, code) => send("POST", "/api/check", { ...params, code });

// a teacher's class: the token goes in the Authorization header, never in a URL
const classURL = (code, rest = "") => `/api/classes/${encodeURIComponent(code)}${rest}`;
export const fetchClass = (code) => request(classURL(code, "/about"));
export const createClass = (title) => send("POST", "/api/classes", { title });
export const classSummary = (code, token) => request(classURL(code), { headers: owner(token) });
export const deleteClass = (code, token) => send("DELETE", classURL(code), undefined, owner(token));
export async function classCsv(code, token) {
  const response = await fetch(classURL(code, "/summary.csv"), { headers: owner(token) });
  if (!response.ok) throw new ApiError(`the CSV could not be made (${response.status})`, response.status);
  return response.blob();
}
// the class's summary, again each time it changes (Server-Sent Events read with fetch: EventSource sends no
// header); onEvent(kind, data) per event; resolves when the stream ends, rejects with the server's reason
export async function classEvents(code, token, onEvent, signal) {
  const response = await fetch(classURL(code, "/events"), { headers: owner(token), signal });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    throw new ApiError(reason(body) || response.statusText, response.status);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const kind = (/^event: (.*)$/m.exec(block) || [])[1];
      const data = (/^data: (.*)$/m.exec(block) || [])[1];
      if (kind) onEvent(kind, data ? JSON.parse(data) : null);
    }
  }
}

// the learner's cell or solved steps as a .py or .ipynb: {name, blob} to download
export async function exportFile(params, body) {
  let response;
  try {
    response = await fetch("/api/export", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ...params, ...body }),
    });
  } catch (e) {
    throw new ApiError(`The server is unreachable (${e.message}). Is it still running?`, 0);
  }
  if (!response.ok) {
    let answer = null;
    try { answer = await response.json(); } catch { answer = null; }
    throw new ApiError(reason(answer) || response.statusText, response.status);
  }
  const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  return { name: name ? name[1] : `backprop.${body.format}`, blob: await response.blob() };
}
