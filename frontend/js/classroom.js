// The teacher's class page: start a class, then watch its students' checks live (the summary's stream). The token
// is kept in this browser (localStorage) and sent in a header: it never appears in a URL.
import * as api from "./api.js";
import { esc } from "./dom.js";
import { CLASS_TEACHER_KEY } from "./store.js";

const $ = (id) => document.getElementById(id);
const RETRY_MS = 2000; // a dropped stream is opened again after this

function tokens() {
  try { return JSON.parse(localStorage.getItem(CLASS_TEACHER_KEY)) || {}; } catch { return {}; }
}

function keepToken(code, token) {
  localStorage.setItem(CLASS_TEACHER_KEY, JSON.stringify({ ...tokens(), [code]: token }));
}

function forgetToken(code) {
  const kept = tokens();
  delete kept[code];
  localStorage.setItem(CLASS_TEACHER_KEY, JSON.stringify(kept));
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

const plural = (n, what) => `${n} ${what}${n === 1 ? "" : "s"}`;

export const stepLabel = (s) => `${s.net} · ${s.mode} · ${s.step === null ? "whole cell" : `step ${s.step}`}`;

// the slip most students were told at a step: [kind, checks, the line they saw], or null
export function topSlip(s) {
  const [kind] = Object.keys(s.slips);
  return kind ? [kind, s.slips[kind], s.slip_texts[kind] || ""] : null;
}

// the steps a class takes longest over: most checks per solve (a step nobody solved: its checks), the first `k`
export function slowest(steps, k = 3) {
  const cost = (s) => (s.solved ? s.median_attempts_to_solve : s.attempts);
  const stuck = (s) => s.students - s.solved;
  return [...steps].filter((s) => s.attempts).sort((a, b) => stuck(b) - stuck(a) || cost(b) - cost(a)).slice(0, k);
}

export function stepsHtml(steps) {
  if (!steps.length) return '<p class="hint" data-testid="class-empty">No checks yet: the steps appear as your students check them.</p>';
  return steps.map((s) => {
    const share = s.students ? (100 * s.solved) / s.students : 0;
    const slip = topSlip(s);
    return `<div class="class-step" data-testid="class-step" data-mode="${esc(s.mode)}" data-step="${s.step ?? ""}">` +
      `<span class="class-step-label">${esc(stepLabel(s))}</span>` +
      `<span class="class-bar" role="img" aria-label="${s.solved} of ${s.students} solved"><span style="width:${share.toFixed(1)}%"></span></span>` +
      `<span class="class-step-numbers" data-testid="class-step-numbers">${s.solved} of ${s.students} solved · ${plural(s.attempts, "check")}` +
      `${s.median_attempts_to_solve === null ? "" : ` · median ${s.median_attempts_to_solve} to solve`}</span>` +
      (slip ? `<span class="class-slip" data-testid="class-slip">most common slip: <b>${esc(slip[0])}</b> (${slip[1]}×) — ` +
        `<q>${esc(slip[2])}</q></span>` : "") +
      "</div>";
  }).join("");
}

function render(summary) {
  $("class-title").textContent = summary.title;
  document.title = `Backprop Explorer — ${summary.title}`;
  $("class-steps").innerHTML = stepsHtml(summary.steps);
  $("class-slowest").innerHTML = slowest(summary.steps).map((s) =>
    `<li>${esc(stepLabel(s))}: ${s.students - s.solved} of ${s.students} not solved yet` +
    `${s.solved ? `, median ${plural(s.median_attempts_to_solve, "check")} to solve` : ""}</li>`).join("");
}

async function watch(code, token) {
  $("class-view").hidden = false;
  const link = `${location.origin}/?class=${code}`;
  Object.assign($("class-link"), { href: link, textContent: link });
  $("class-code").textContent = code;
  $("class-csv").onclick = async () => {
    try {
      const blob = await api.classCsv(code, token);
      const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: `class-${code}.csv` });
      a.click();
      URL.revokeObjectURL(a.href);
    } catch (e) { showError(e.message); }
  };
  let gone = false;
  $("class-delete").onclick = async () => {
    if (!confirm(`Delete class ${code} and everything its students' checks recorded?`)) return;
    try {
      await api.deleteClass(code, token);
      gone = true;
      forgetToken(code);
      location.assign("/class.html");
    } catch (e) { showError(e.message); }
  };
  for (;;) {
    $("class-live").textContent = "connecting…";
    try {
      await api.classEvents(code, token, (kind, data) => {
        if (kind === "summary") { render(data); $("class-live").textContent = "live"; showError(""); }
        if (kind === "deleted") gone = true;
      });
    } catch (e) {
      if ([401, 403, 404].includes(e.status)) {
        if (e.status !== 404) forgetToken(code);
        showError(e.message);
        $("class-view").hidden = true;
        if (e.status !== 404) askToken(code);
        return;
      }
    }
    if (gone) { showError(`class ${code} was deleted`); $("class-view").hidden = true; return; }
    $("class-live").textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

function askToken(code) {
  const form = $("token-form");
  $("token-code").textContent = code;
  form.hidden = false;
  form.onsubmit = (e) => {
    e.preventDefault();
    const token = form.elements.token.value.trim();
    if (!token) return;
    keepToken(code, token);
    form.hidden = true;
    form.reset();
    showError("");
    watch(code, token);
  };
}

function start() {
  const form = $("new-class");
  form.hidden = false;
  form.onsubmit = async (e) => {
    e.preventDefault();
    try {
      const made = await api.createClass(form.elements.title.value.trim());
      keepToken(made.code, made.teacher_token);
      history.replaceState(null, "", `/class.html?code=${made.code}`);
      form.hidden = true;
      const note = $("class-token-note");
      note.innerHTML = `Your teacher token (kept in this browser; keep a copy to open the class elsewhere): ` +
        `<code data-testid="class-token">${esc(made.teacher_token)}</code>`;
      note.hidden = false;
      watch(made.code, made.teacher_token);
    } catch (err) { showError(err.message); }
  };
}

const code = (new URLSearchParams(location.search).get("code") || "").trim().toUpperCase();
if (!code) start();
else if (tokens()[code]) watch(code, tokens()[code]);
else askToken(code);
