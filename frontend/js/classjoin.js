// A student in a class: the notice that says what a check shares (and what not), joining, leaving. Once joined, each
// check names the class and this browser's anonymous id (classFields); the membership is kept in this browser.
import * as api from "./api.js";
import { esc } from "./dom.js";
import { CLASS_KEY } from "./store.js";

const $ = (id) => document.getElementById(id);
// read before the page rewrites its URL from its state (the class is no part of what the explorer shows)
const invited = new URLSearchParams(location.search).get("class");

function joined() {
  try { return JSON.parse(localStorage.getItem(CLASS_KEY)); } catch { return null; }
}

// an id made up here, once per class joined: it names no one
function newStudentId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// what a check sends besides the code and the step: the class and the anonymous id, while in a class
export function classFields() {
  const member = joined();
  return member ? { class: member.code, student: member.student } : {};
}

export const SHARED = "the step, the mode and the network you check, whether it is right, the kind of slip the " +
  "feedback names, and an anonymous id made up by this browser";
export const NOT_SHARED = "your code and your name";

// a check, in the class while this browser is in one; a class deleted meanwhile (404) is left, and the check sent
// again as anyone's
export async function check(params, code) {
  const fields = classFields();
  try {
    return await api.checkCode({ ...params, ...fields }, code);
  } catch (e) {
    if (!fields.class || e.status !== 404 || !/no class/.test(e.message)) throw e;
    localStorage.removeItem(CLASS_KEY);
    gone(fields.class);
    return api.checkCode(params, code);
  }
}

function gone(code) {
  const box = $("class-notice");
  box.innerHTML = `The class <code>${esc(code)}</code> no longer exists (its teacher deleted it): you are in no class now. ` +
    '<button type="button" class="small" data-testid="class-dismiss">OK</button>';
  box.hidden = false;
  box.querySelector("[data-testid=class-dismiss]").onclick = render;
}

function render() {
  const box = $("class-notice");
  const member = joined();
  $("class-form").hidden = Boolean(member); // one class at a time: leave it to join another
  if (member) {
    box.innerHTML = `In class <b>${esc(member.title)}</b> (<code>${esc(member.code)}</code>): each check shares ` +
      `${SHARED}; never ${NOT_SHARED}. <button type="button" class="small" data-testid="class-leave">Leave the class</button>`;
    box.hidden = false;
    box.querySelector("[data-testid=class-leave]").onclick = () => { localStorage.removeItem(CLASS_KEY); render(); };
    return;
  }
  box.hidden = true;
  box.innerHTML = "";
}

// the notice before joining: what joining shares, a Join and a No thanks
async function invite(text) {
  const box = $("class-notice");
  box.hidden = false;
  box.textContent = "looking up the class…";
  let found;
  try {
    found = await api.fetchClass(text);
  } catch (e) {
    box.innerHTML = `${esc(e.message)} <button type="button" class="small" data-testid="class-dismiss">OK</button>`;
    box.querySelector("[data-testid=class-dismiss]").onclick = render;
    return;
  }
  box.innerHTML = `<b>Join the class ${esc(found.title)}</b> (<code>${esc(found.code)}</code>)? Your teacher sees, ` +
    `for each check you make: ${SHARED}. Your teacher never sees ${NOT_SHARED}. You can leave the class at any time. ` +
    '<button type="button" class="small primary" data-testid="class-join">Join</button> ' +
    '<button type="button" class="small" data-testid="class-decline">No thanks</button>';
  box.querySelector("[data-testid=class-join]").onclick = () => {
    localStorage.setItem(CLASS_KEY, JSON.stringify({ code: found.code, title: found.title, student: newStudentId() }));
    render();
  };
  box.querySelector("[data-testid=class-decline]").onclick = render;
}

export function init() {
  const form = $("class-form");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const code = form.elements.code.value.trim();
    if (code) invite(code);
  });
  const member = joined();
  if (invited && (!member || member.code !== invited.toUpperCase())) invite(invited);
  else render();
}
