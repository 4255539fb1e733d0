// The teacher's class page: start a class, then watch its students' checks live (the summary's stream). The token
// is kept in this browser (localStorage) and sent in a header: it never appears in a URL.
import * as api from "./api.js";
import { esc } from "./dom.js";
import { slowestHtml, stepAsks, stepsHtml } from "./classview.js";
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

// the nets' titles and their modes' labels, as the explorer shows them: asked for once each
const names = { nets: {}, modes: {}, asks: {} };
const asked = new Set();
const askedSteps = new Set(); // the net/mode pairs whose steps' gradients were asked for
let shown = null; // the summary on screen: drawn again once names arrive

async function learnNames(steps) {
  const nets = [...new Set(steps.map((s) => s.net))].filter((net) => !asked.has(net));
  const pairs = [...new Set(steps.map((s) => `${s.net}/${s.mode}`))].filter((key) => !askedSteps.has(key));
  if (!nets.length && !pairs.length) return;
  nets.forEach((net) => asked.add(net));
  pairs.forEach((key) => askedSteps.add(key));
  try {
    if (!Object.keys(names.nets).length) {
      for (const net of (await api.fetchNets()).nets) names.nets[net.name] = net.title;
    }
    for (const net of nets) {
      for (const mode of (await api.fetchMeta(net)).modes) names.modes[`${net}/${mode.name}`] = mode.label;
    }
    for (const key of pairs) { // the net's own default sizes: a step asks for the same gradients at any size
      const [net, mode] = key.split("/");
      names.asks[key] = stepAsks(await api.fetchGraph({ net, mode }));
    }
  } catch { return; } // the names stay as they are: the numbers matter more
  if (shown) render(shown);
}

function render(summary) {
  shown = summary;
  $("class-title").textContent = summary.title;
  document.title = `Backprop Explorer — ${summary.title}`;
  $("class-steps").innerHTML = stepsHtml(summary.steps, names);
  $("class-slowest").innerHTML = slowestHtml(summary.steps, names);
  learnNames(summary.steps);
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
