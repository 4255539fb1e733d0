// What the pages keep in this browser (localStorage): one key per feature, and the reads both pages make.

export const CHALLENGE_KEY = "backprop-explorer:challenge"; // challenge mode, per mode: solved steps, drafts, the cell
export const TRAIN_CODE_KEY = "backprop-explorer:train-code"; // the training page's code box, as last typed

// the whole cell challenge mode keeps for a mode ("" when none)
export function savedCell(mode) {
  try { return JSON.parse(localStorage.getItem(CHALLENGE_KEY))?.modes?.[mode]?.cell || ""; } catch { return ""; }
}
