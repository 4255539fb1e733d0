// What the pages keep in this browser (localStorage): one key per feature, and the reads both pages make.

export const CHALLENGE_KEY = "backprop-explorer:challenge"; // challenge mode, per net and mode: solved steps, drafts, the cell
export const TRAIN_CODE_KEY = "backprop-explorer:train-code"; // the training page's code box, as last typed (per net)

// Where a net's mode keeps its challenge progress, under CHALLENGE_KEY's `modes`: the lecture's net (`lecture`, the
// default) by the mode's name alone, as before there were other nets, so that progress made then is still found
export const progressKey = (net, mode, lecture) => (!net || net === lecture ? mode : `${net}/${mode}`);

// the training page's code box of a net: the lecture's under the key it always had
export const trainCodeKey = (net, lecture) => (!net || net === lecture ? TRAIN_CODE_KEY : `${TRAIN_CODE_KEY}:${net}`);
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

// the whole cell challenge mode keeps for a net's mode ("" when none)
export function savedCell(net, mode, lecture) {
  const key = progressKey(net, mode, lecture);
  try { return JSON.parse(localStorage.getItem(CHALLENGE_KEY))?.modes?.[key]?.cell || ""; } catch { return ""; }
}
export const CLASS_KEY = "backprop-explorer:class"; // the class this browser joined: {code, title, student}
export const CLASS_TEACHER_KEY = "backprop-explorer:class-teacher"; // {class code: teacher token} of classes made here
