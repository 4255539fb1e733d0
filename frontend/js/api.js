// One function per endpoint. Errors carry the server's reason.
export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function reason(body) {
  if (!body || body.detail === undefined) return "";
  if (typeof body.detail === "string") return body.detail;
  return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
}

async function get(path, params) {
  const url = `${path}?${new URLSearchParams(params)}`;
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new ApiError(`The server is unreachable (${e.message}). Is it still running?`, 0);
  }
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) {
    const why = reason(body) || response.statusText;
    throw new ApiError(response.status >= 500 ? `Server error ${response.status}: ${why}` : why, response.status);
  }
  return body;
}

export const fetchGraph = (params) => get("/api/graph", params);
export const fetchState = (params) => get("/api/state", params);
export const fetchTensor = (name, params) => get(`/api/tensor/${encodeURIComponent(name)}`, params);
export const fetchDataset = () => get("/api/dataset", {});
