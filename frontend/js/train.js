// The training page: a form that starts runs, live plots fed by each run's event stream, the runs list.
// State in the URL: ?run=ID (its group's partner runs are opened with it, their curves overlaid); ?net=NAME (from the
// explorer) picks the network the form trains.
import * as api from "./api.js";
import * as curves from "./curves.js";
import { esc, loadPlotly } from "./dom.js";
import { emptyHistory, mergeEvent } from "./history.js";
import { forgetRunToken, keepRunTokens, runToken, savedCell, trainCodeKey } from "./store.js";

const $ = (id) => document.getElementById(id);
const ACTIVE = ["queued", "running"];
const RENDER_EVERY_MS = 250;
let open = []; // the run models shown: {id, config, status, ..., points, smooth, checks, ud, saturation, histograms}
let streams = [];
let listed = [];
let renderTimer = null;
let renders = 0;
function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function fillForm(values) {
  const form = $("run-form");
  for (const [key, value] of Object.entries(values)) {
    const input = form.elements[key];
    if (!input || (key === "code" && value === null)) continue; // the defaults leave your code as it is
    if (input.type === "checkbox") input.checked = value;
    else input.value = value;
  }
}

// the training form's defaults, as the server declares them (/api/meta of the net the form trains): filled in
// before anything else; the network stays the one chosen
let meta = null;
let nets = []; // the networks there are (/api/nets): the network select's options, each run's net by its title
const net = () => $("run-form").elements.net.value;
const lectureNet = () => meta.train.net.default;
const netOf = (name) => nets.find((n) => n.name === name) || { name, title: name, about: "", calibrated: [], trained_mode: meta.train_mode };
const runDefaults = () => ({
  ...Object.fromEntries(Object.entries(meta.train).map(([key, field]) => [key, field.default])), net: net() || lectureNet(),
});

function readForm() {
  const form = $("run-form");
  const body = {};
  for (const [key, value] of Object.entries(runDefaults())) {
    const input = form.elements[key];
    if (key === "code") {
      if (form.elements.backward.value === "code") body.code = input.value;
      continue;
    }
    if (input.type === "checkbox") body[key] = input.checked;
    else if (typeof value === "number") body[key] = input.value === "" ? null : Number(input.value);
    else body[key] = input.value;
  }
  return body;
}

// your own backward: the code box, shown for backward=code; its text is kept in this browser as you type
const TEMPLATE = (grads) => `# manual backprop! #swole_doge_meme
# -----------------
# YOUR CODE HERE :)

grads = [${grads.join(", ")}]
# -----------------
`;

// your Exercise 4 cell of this net in the explorer's challenge
const explorerCell = () => savedCell(net(), meta.train_mode, lectureNet());

// the code box's text, kept in this browser as it changes (one per net: their blocks differ)
function keepCode() {
  localStorage.setItem(trainCodeKey(net(), lectureNet()), $("code").value);
  countCode();
}

function setCode(text) {
  $("code").value = text;
  keepCode();
}

function showCodeBox() {
  const on = $("run-form").elements.backward.value === "code";
  $("code-box").hidden = !on;
  if (!on) return;
  const code = $("code");
  if (!code.value) code.value = localStorage.getItem(trainCodeKey(net(), lectureNet())) || TEMPLATE(meta.train_code.grads);
  $("code-from-cell").hidden = !explorerCell();
  countCode();
}

function countCode() {
  const n = $("code").value.length, max = meta.train_code.max_chars;
  $("code-count").textContent = `${n.toLocaleString()} / ${max.toLocaleString()} characters`;
  $("code-count").classList.toggle("bad", n > max);
}

function codeHelp(tc) {
  const code = (names) => names.map((n) => `<code>${esc(n)}</code>`).join(", ");
  const params = tc.grads.map((g) => g.slice(1));
  const forward = tc.reads.filter((n) => !params.includes(n) && !["Xb", "Yb", "n"].includes(n));
  return `Write the backward pass as the notebook does inside its training loop, from <code>dlogits = F.softmax(logits, 1)</code>
    to <code>grads = [${tc.grads.map(esc).join(", ")}]</code> (in that order: the update zips it with the parameters).
    It reads the forward's tensors (${code(forward)}), the parameters (${code(params)}), <code>Xb</code>, <code>Yb</code> and
    <code>n</code>; loops are <code>for k in range(...)</code>, as the notebook's <code>dC</code> loop. It is checked
    before the run starts, with the limits of a challenge check, and then runs at every step; every K steps its gradients
    are compared with autograd's.`;
}

function model(run) {
  return { ...run, ...emptyHistory(), bucket: Math.max(1, Math.floor(run.max_steps / 200)) };
}

function onEvent(run, kind, data) {
  if (mergeEvent(run, kind, data) === "status" && data.final) refreshList();
  scheduleRender();
}

function closeStreams() {
  for (const s of streams) s.close();
  streams = [];
}

async function openRuns(id) {
  closeStreams();
  const run = await api.fetchRun(id);
  const members = run.group ? listed.filter((r) => r.group === run.group) : [];
  open = (members.length ? members.sort((a, b) => a.id - b.id) : [run]).map(model);
  $("checkpoint").replaceChildren();
  for (const m of open) {
    const source = api.runEvents(m.id);
    for (const kind of ["status", "progress", "check", "histograms", "result"]) {
      source.addEventListener(kind, (event) => {
        const data = JSON.parse(event.data);
        onEvent(m, kind, data);
        if (kind === "status" && data.final) source.close(); // the server ends the stream; do not reconnect
      });
    }
    streams.push(source);
  }
  scheduleRender();
}

function scheduleRender() {
  if (renderTimer) return;
  renderTimer = setTimeout(() => { renderTimer = null; render(); }, RENDER_EVERY_MS);
}

const fmtTime = (s) => (s === null || s === undefined ? "–" : s >= 90 ? `${Math.round(s / 60)} min` : `${Math.round(s)} s`);
const fmtLoss = (x) => (x === null || x === undefined ? "–" : x.toFixed(4));

// an ended run's one-line verdict (the server's reason for a run that finished or diverged): checks and loss
const judgedRun = (r) => ["finished", "diverged"].includes(r.status) && !!r.reason;

// a run's state in the title: its status, and why where the verdict does not say it ("cancelled by its owner"
// reads as it is, not as "cancelled — cancelled by its owner")
function runState(r) {
  if (!r.reason || judgedRun(r) || r.status === "finished") return r.status;
  return r.reason.startsWith(r.status) ? r.reason : `${r.status} — ${r.reason}`;
}

// the verdict's mark: ✗ where a check disagreed or the loss blew up, ✓ where the learner's or the manual backward
// agreed with autograd at every check, none for a run on autograd's own gradients (nothing was checked)
function verdictMark(r) {
  if (r.status === "diverged" || r.checks.some((c) => c.wrong?.length)) return "bad";
  return r.config.backward === "autograd" ? "plain" : "ok";
}

// the reason's `code` spans (the first wrong line of a block) as code, the rest as text
const withCode = (text) => esc(text).replace(/`([^`]+)`/g, "<code>$1</code>");

function renderHead() {
  const lead = open[0];
  if (!lead) return;
  const active = open.filter((r) => ACTIVE.includes(r.status));
  $("run-title").textContent = open.map((r) => `run #${r.id} (${runLabel(r)}): ${runState(r)}`).join(" · ");
  // every ended run says whether its checks agreed with autograd and whether the loss fell
  const judged = open.filter(judgedRun);
  $("verdict").hidden = !judged.length;
  $("verdict").innerHTML = judged.map((r) => {
    const mark = verdictMark(r);
    return `<p class="${mark}" data-testid="verdict-line">${{ bad: "✗ ", ok: "✓ ", plain: "" }[mark]}Run #${r.id} ` +
      `(${esc(runLabel(r))}): ${withCode(r.reason)}.</p>`;
  }).join("");
  const coded = open.find((r) => r.config.backward === "code");
  $("run-code").hidden = !coded;
  if (coded) $("run-code").querySelector("pre").textContent = coded.config.code;
  $("run-title").dataset.status = lead.status;
  const p = lead.progress;
  $("progress").max = lead.max_steps;
  $("progress").value = lead.step;
  $("progress-text").textContent = p
    ? `step ${p.step.toLocaleString()} / ${p.max_steps.toLocaleString()} · ${Math.round(p.steps_per_s).toLocaleString()} steps/s` +
      (ACTIVE.includes(lead.status) ? ` · ETA ${fmtTime(p.eta_s)}` : "") + ` · lr ${p.lr} · loss ${fmtLoss(p.loss)}`
    : lead.status === "queued" ? "waiting for a free worker…" : "";
  const mine = active.some((r) => runToken(r.id)); // only the runs started in this browser can be cancelled here
  $("cancel").disabled = !mine;
  $("cancel").title = active.length && !mine ? "only the browser that started this run can cancel it" : "";
  const explorable = open.find((r) => r.status === "finished" || r.status === "diverged");
  $("explore").hidden = !explorable;
  if (explorable) {
    const c = explorable.config;
    const params = { run: explorable.id, ...(c.net === lectureNet() ? {} : { net: c.net }), n_hidden: c.n_hidden,
      n_embd: c.n_embd, block_size: c.block_size, mode: netOf(c.net).trained_mode, step: 0 };
    $("explore").href = `/?${new URLSearchParams(params)}`;
  }
}

// what the trained net had calibrated before its losses were measured (batchnorm's running statistics)
function calibratedText(name) {
  const stats = netOf(name).calibrated;
  return stats.length ? `${stats.join(", ")} calibrated on the training split` : "nothing to calibrate: no batch statistics";
}

// a run by its backward, and its net where that is not the lecture's
const runLabel = (r) => (r.config.net && r.config.net !== lectureNet() ? `${netOf(r.config.net).title}, ` : "") + r.config.backward;

function renderResult() {
  const done = open.filter((r) => r.result);
  $("result").innerHTML = done.map((r) => `
    <h2 class="result-head">run #${r.id} (${esc(runLabel(r))}): train loss <b data-testid="train-loss">${fmtLoss(r.result.train_loss)}</b>,
      val loss <b>${fmtLoss(r.result.val_loss)}</b> <small data-testid="calibrated">(${esc(calibratedText(r.config.net))}; ${fmtTime(r.result.duration_s)})</small></h2>
    <p class="samples" data-testid="samples">${r.result.samples.map((s) => `<span>${esc(s || "(empty)")}</span>`).join(" ")}</p>`).join("");
}

function renderCheckpoints() {
  const lead = open[0];
  const select = $("checkpoint");
  if (!lead || select.options.length === lead.histograms.length) return;
  const following = select.selectedIndex === -1 || select.selectedIndex === select.options.length - 1;
  select.replaceChildren(...lead.histograms.map((h, i) => new Option(`step ${h.step}`, String(i))));
  if (following) select.selectedIndex = lead.histograms.length - 1; // stay on the newest unless one was picked
}

async function render() {
  await loadPlotly();
  renderHead();
  renderResult();
  renderCheckpoints();
  if (open.length) {
    await Promise.all([
      curves.renderLoss($("loss-plot"), open),
      curves.renderChecks($("check-plot"), open),
      curves.renderUpdateRatio($("ud-plot"), open[0]),
      curves.renderSaturation($("sat-plot"), open),
      curves.renderHistograms($("hist-plot"), open[0], $("checkpoint").selectedIndex),
    ]);
  }
  renders += 1;
  document.body.dataset.renders = String(renders);
}

function renderList() {
  $("runs-body").replaceChildren(...listed.map((r) => {
    const row = document.createElement("tr");
    row.dataset.testid = "run-row";
    row.dataset.run = r.id;
    const started = r.started ? new Date(r.started * 1000).toLocaleString() : "–";
    // data-label: a phone's narrow table shows each row as one wrapped line of labelled cells
    row.innerHTML = `<td><a href="?run=${r.id}" data-open="${r.id}">#${r.id}</a></td><td>${esc(r.status)}</td>
      <td data-label="backward">${esc(r.config.backward)}</td>
      <td data-label="steps">${r.step.toLocaleString()} / ${r.max_steps.toLocaleString()}</td>
      <td data-label="train">${fmtLoss(r.result?.train_loss)}</td><td data-label="val">${fmtLoss(r.result?.val_loss)}</td>
      <td data-label="network" data-testid="run-net" data-net="${esc(r.config.net)}">${esc(netOf(r.config.net).title)}</td>
      <td data-label="started">${started}</td>
      <td>${runToken(r.id) ? `<button data-delete="${r.id}" title="delete this run">delete</button>` : ""}</td>`;
    return row;
  }));
}

async function refreshList() {
  try {
    listed = (await api.listRuns()).runs;
    renderList();
  } catch (e) {
    showError(e.message);
  }
}

function bind() {
  $("run-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("run-error").hidden = true;
    try {
      const { runs } = await api.startRuns(readForm());
      keepRunTokens(runs);
      await refreshList();
      history.pushState(null, "", `?run=${runs[0].id}`);
      await openRuns(runs[0].id);
    } catch (e) {
      $("run-error").textContent = e.message;
      $("run-error").hidden = false;
    }
  });
  $("defaults").addEventListener("click", () => { fillForm(runDefaults()); showCodeBox(); });
  $("run-form").elements.net.addEventListener("change", () => chooseNet(net()));
  $("run-form").elements.backward.addEventListener("change", showCodeBox);
  $("code").addEventListener("input", keepCode);
  $("edit-code").addEventListener("click", () => {
    const coded = open.find((r) => r.config.backward === "code");
    fillForm({ ...coded.config, keep_running: false });
    showCodeBox();
    setCode(coded.config.code);
    $("code").focus();
    $("code-box").scrollIntoView({ block: "start" });
  });
  $("code-from-cell").addEventListener("click", () => setCode(explorerCell()));
  $("cancel").addEventListener("click", async () => {
    try {
      await Promise.all(open.filter((r) => ACTIVE.includes(r.status)).map((r) => api.cancelRun(r.id, runToken(r.id)).catch((e) => {
        if (e.status !== 409) throw e; // it ended meanwhile
      })));
    } catch (e) {
      showError(e.message);
    }
  });
  $("checkpoint").addEventListener("change", () => scheduleRender());
  $("runs-body").addEventListener("click", async (event) => {
    const target = event.target.closest("[data-open], [data-delete]");
    if (!target) return;
    event.preventDefault();
    try {
      if (target.dataset.open) {
        history.pushState(null, "", `?run=${target.dataset.open}`);
        await openRuns(Number(target.dataset.open));
      } else {
        const id = Number(target.dataset.delete);
        await api.deleteRun(id, runToken(id));
        forgetRunToken(id);
        if (open.some((r) => r.id === id)) {
          closeStreams();
          open = [];
          history.pushState(null, "", "train.html");
        }
        await refreshList();
      }
    } catch (e) {
      showError(e.message);
    }
  });
  window.addEventListener("popstate", () => route());
  // while a listed run is active its row (status, steps) follows it
  setInterval(() => { if (listed.some((r) => ACTIVE.includes(r.status))) refreshList(); }, 3000);
}

async function route() {
  const id = Number(new URLSearchParams(location.search).get("run"));
  if (id > 0) {
    try {
      await openRuns(id);
    } catch (e) {
      showError(`Run #${id}: ${e.message}`);
    }
  }
}

// The net the form trains: its meta (the code box's reads and grads, its trained mode), its about line, its block
async function chooseNet(name) {
  const before = meta;
  try {
    meta = await api.fetchMeta(name === lectureNet() ? "" : name);
  } catch (e) {
    showError(e.message);
    return;
  }
  // a net with sizes of its own (the WaveNet's): the fields whose default changes take the new net's
  const changed = Object.entries(meta.train).filter(([key, field]) => key !== "net" && before.train[key]?.default !== field.default);
  fillForm(Object.fromEntries(changed.map(([key, field]) => [key, field.default])));
  showNet();
  $("code").value = ""; // the other net's block: this net's kept one, or its template (showCodeBox)
  showCodeBox();
}

function showNet() {
  $("net-about").textContent = netOf(net()).about;
  $("code-help").innerHTML = codeHelp(meta.train_code);
}

async function start() {
  // a net named in the URL (the explorer's links): its meta, or the default's where the server has no such net
  const asked = new URLSearchParams(location.search).get("net") || "";
  try {
    const [served, known] = await Promise.all([
      api.fetchMeta(asked).catch((e) => (asked && e.status === 422 ? api.fetchMeta() : Promise.reject(e))),
      api.fetchNets().catch(() => ({ nets: [] })),
    ]);
    meta = served;
    nets = known.nets;
  } catch (e) {
    showError(e.message);
    return;
  }
  const listed = nets.length ? nets : meta.train.net.choices.map((name) => netOf(name));
  $("run-form").elements.net.replaceChildren(...listed.map((n) => Object.assign(new Option(n.title, n.name), { title: n.about })));
  $("run-form").elements.net.value = meta.train.net.choices.includes(asked) ? asked : lectureNet();
  fillForm(runDefaults());
  showNet();
  if (new URLSearchParams(location.search).get("code") === "cell" && explorerCell()) {
    // from the explorer's Exercise 4 cell: your block in the box, ready to train
    $("run-form").elements.backward.value = "code";
    setCode(explorerCell());
    history.replaceState(null, "", "train.html");
  }
  showCodeBox();
  bind();
  await refreshList();
  await route();
  document.body.dataset.ready = "1";
}

start();
