// What the pages keep in this browser (localStorage): one key per feature, and the reads both pages make.

export const CHALLENGE_KEY = "backprop-explorer:challenge"; // challenge mode, per mode: solved steps, drafts, the cell
export const TRAIN_CODE_KEY = "backprop-explorer:train-code"; // the training page's code box, as last typed
export const RUN_TOKENS_KEY = "backprop-explorer:run-tokens"; // {run id: owner token} of the runs started here

function runTokens() {
  try { return JSON.parse(localStorage.getItem(RUN_TOKENS_KEY)) || {}; } catch { return {}; }
}

// the owner tokens of runs just started (POST /api/runs answers with them, once): cancel and delete need them
export function keepRunTokens(runs) {
  const tokens = runTokens();
  for (const run of runs) if (run.owner_token) tokens[run.id] = run.owner_token;
  localStorage.setItem(RUN_TOKENS_KEY, JSON.stringify(tokens));
}

// this browser's token of run `id` ("" when another browser started it)
export const runToken = (id) => runTokens()[id] || "";

export function forgetRunToken(id) {
  const tokens = runTokens();
  delete tokens[id];
  localStorage.setItem(RUN_TOKENS_KEY, JSON.stringify(tokens));
}

// the whole cell challenge mode keeps for a mode ("" when none)
export function savedCell(mode) {
  try { return JSON.parse(localStorage.getItem(CHALLENGE_KEY))?.modes?.[mode]?.cell || ""; } catch { return ""; }
}
