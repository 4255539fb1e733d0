// A run's history rebuilt from its events, as the server's RunStore.history() merges them: the loss curve
// (per step and smoothed), update/data ratios, saturation, checks, histograms and the latest progress.
// Pure: no page, no requests (train.js feeds it the event stream; tests/js feed it a fixture).

export const emptyHistory = () => ({ points: [], smooth: [], ud: [], saturation: [], checks: [], histograms: [], progress: null });

// Fold one event into `run` (a model holding emptyHistory()'s fields); returns what changed: "status",
// "history" or "result".
export function mergeEvent(run, kind, data) {
  if (kind === "status") {
    run.status = data.status;
    if (data.reason !== undefined) run.reason = data.reason;
    return "status";
  }
  if (kind === "progress") {
    const { points, smooth, ud, saturation, ...progress } = data;
    run.points.push(...points);
    run.smooth.push(...smooth);
    run.ud.push(...ud);
    run.saturation.push(...saturation);
    run.progress = progress;
    run.step = data.step;
  } else if (kind === "check") {
    run.checks.push(data);
  } else if (kind === "histograms") {
    run.histograms.push(data);
  } else if (kind === "result") {
    run.result = data;
    return "result";
  }
  return "history";
}
