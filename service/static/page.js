// keepcurrent's page: one question to every strategy at once, each answer streamed beside its sources;
// ratings and preferences to /feedback; the eval reports. Plain DOM, no framework, nothing from elsewhere.
// The API key lives in sessionStorage (this tab only) and goes out as a Bearer header, never in a URL.
"use strict";

const KEY = "keepcurrent.apiKey";
const STRATEGIES = ["closed_book", "rag", "long_context", "cpt", "auto"];
const CITATION = /\[(\d+)\]/g; // core/prompts.py's CITATION
const $ = (id) => document.getElementById(id);
const state = { config: null, question: "", columns: {}, answers: {} };

function apiKey() { return sessionStorage.getItem(KEY) || ""; }

function headers(json) {
  const out = json ? { "Content-Type": "application/json" } : {};
  if (apiKey()) out.Authorization = `Bearer ${apiKey()}`;
  return out;
}

async function problem(response) { // the gateway's error envelope, as one sentence
  try {
    const body = await response.json();
    return (body.error && body.error.message) || `HTTP ${response.status}`;
  } catch { return `HTTP ${response.status} ${response.statusText}`; }
}

function keyProblem(message) {
  keyStatus(apiKey()
    ? `The API key was refused (${message}). Enter the right key above.`
    : `This gateway needs an API key: enter it above (${message}).`, "problem");
}

function keyStatus(text, className) {
  $("key-status").textContent = text;
  $("key-status").className = className;
}

async function loadConfig() { // also tells whether the key is missing or wrong
  keyStatus("Checking with the gateway…", "checking");
  let response;
  try { response = await fetch("/web/config", { headers: headers(false) }); } catch (e) {
    keyStatus(`The gateway does not answer: ${e.message}`, "problem");
    return false;
  }
  if (response.status === 401) { keyProblem(await problem(response)); return false; }
  if (!response.ok) { keyStatus(await problem(response), "problem"); return false; }
  state.config = await response.json();
  keyStatus(apiKey() ? "Key accepted; kept for this tab only." : "No API key needed.", "");
  const cutoff = state.config.cutoff;
  $("cutoff").textContent = cutoff
    ? `The model's knowledge cutoff: ${cutoff}. Sources dated after it are marked "newer than the model".`
    : "The model's knowledge cutoff is not configured (KC_AUTO_CUTOFF), so no source is marked as newer.";
  return true;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function part(column, name) { return column.querySelector(`.${name}`); }

function setState(column, text, kind) {
  part(column, "state").textContent = text;
  column.dataset.state = kind || "";
}

function buildColumns() {
  const box = $("columns");
  box.textContent = "";
  state.columns = {};
  state.answers = {};
  for (const name of (state.config && state.config.strategies) || STRATEGIES) {
    const column = $("column-template").content.firstElementChild.cloneNode(true);
    column.id = `col-${name}`;
    column.dataset.strategy = name;
    part(column, "name").textContent = name;
    column.setAttribute("aria-label", `${name}'s answer`);
    box.append(column);
    state.columns[name] = column;
  }
}

function newerThanCutoff(date) {
  const cutoff = state.config && state.config.cutoff;
  return Boolean(cutoff) && date > cutoff; // both YYYY-MM-DD
}

function showSources(column, event) {
  const list = part(column, "sources");
  const name = column.dataset.strategy;
  for (const s of event.sources) {
    const card = element("li", "source");
    card.id = `src-${name}-${s.n}`;
    card.tabIndex = -1;
    const head = element("p", "source-head");
    head.append(element("span", "cite-n", `[${s.n}]`), " ", element("strong", "title", s.title));
    const when = element("p", "when");
    const time = element("time", "", s.date);
    time.dateTime = s.date;
    when.append(time);
    if (newerThanCutoff(s.date)) when.append(" ", element("span", "newer", "newer than the model"));
    const snippet = s.text.length > 280 ? `${s.text.slice(0, 280)}…` : s.text;
    const origin = s.score === null || s.score === undefined ? s.source : `${s.source} · score ${s.score.toFixed(2)}`;
    card.append(head, when, element("p", "snippet", snippet), element("p", "origin", origin));
    list.append(card);
  }
  if (!event.sources.length) {
    const none = part(column, "no-sources");
    none.hidden = false;
    none.textContent = name === "closed_book" || name === "cpt"
      ? "None: the model answers from its weights alone."
      : "No passage was put in the prompt.";
  }
  if (event.coverage) {
    const c = event.coverage;
    addMeta(column, "Coverage", `${c.documents_packed} of ${c.documents_total} documents in the window`);
  }
  setState(column, "Answering…", "streaming");
}

function showRoute(column, route) {
  const line = part(column, "route");
  line.hidden = false;
  line.textContent = `Route: ${route.chosen} (${route.reason})`;
}

function addMeta(column, term, value) {
  part(column, "meta").append(element("dt", "", term), element("dd", "", value));
}

function linkCitations(target, text, strategy) { // [n] -> a link to the source card it names
  target.textContent = "";
  let last = 0;
  for (const match of text.matchAll(CITATION)) {
    target.append(text.slice(last, match.index));
    const card = $(`src-${strategy}-${match[1]}`);
    if (card) {
      const link = element("a", "cite", match[0]);
      link.href = `#${card.id}`;
      const title = card.querySelector(".title").textContent;
      link.setAttribute("aria-label", `source ${match[1]}: ${title}`);
      target.append(link);
    } else { target.append(match[0]); }
    last = match.index + match[0].length;
  }
  target.append(text.slice(last));
}

function showAnswer(column, answer) {
  const name = column.dataset.strategy;
  state.answers[name] = answer;
  linkCitations(part(column, "answer"), answer.text, name);
  if (answer.route) showRoute(column, answer.route);
  if (answer.abstained) {
    const note = part(column, "abstained");
    note.hidden = false;
    note.textContent = `Abstained: no answer given${answer.abstain_reason ? ` (${answer.abstain_reason})` : ""}.`;
    setState(column, "Abstained", "abstained");
  } else {
    setState(column, answer.finish_reason === "length" ? "Answered (cut at max_tokens)" : "Answered", "done");
  }
  if (answer.model_text !== null && answer.model_text !== undefined) {
    const details = part(column, "model-text");
    details.hidden = false;
    details.querySelector("p").textContent = answer.model_text || "(nothing)";
  }
  const u = answer.usage;
  const ms = (x) => `${Math.round(x)} ms`;
  const l = answer.latency;
  addMeta(column, "Tokens", `${u.prompt_tokens} prompt + ${u.completion_tokens} completion = ${u.total_tokens}`);
  addMeta(column, "Latency", `${ms(l.total_ms)} (retrieve ${ms(l.retrieve_ms)}, generate ${ms(l.generate_ms)})`);
  addMeta(column, "Model", `${answer.model} · ${answer.checkpoint_id}`);
  part(column, "feedback").hidden = false;
}

function fail(column, message) {
  const box = part(column, "error");
  box.hidden = false;
  box.textContent = `Error: ${message}`;
  setState(column, "Failed", "error");
}

function parseEvent(frame) { // one server-sent event: "event: name" and "data: json" lines
  let name = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return { name, data: data.length ? JSON.parse(data.join("\n")) : null };
}

function handle(column, event) {
  if (event.name === "route") showRoute(column, event.data);
  else if (event.name === "sources") showSources(column, event.data);
  else if (event.name === "token") part(column, "answer").append(event.data.text);
  else if (event.name === "answer") showAnswer(column, event.data);
  else if (event.name === "error") fail(column, event.data.error.message);
}

async function streamCompare(question) { // one /ask compare stream; each event names its strategy
  const entries = Object.entries(state.columns);
  const failAll = (message) => entries.forEach(([name, column]) => { if (!state.answers[name]) fail(column, message); });
  entries.forEach(([, column]) => setState(column, "Asking…", "waiting"));
  let response;
  try {
    response = await fetch("/ask", {
      method: "POST", headers: headers(true), body: JSON.stringify({ question, strategy: "compare", stream: true }),
    });
  } catch (e) { failAll(`the gateway does not answer (${e.message})`); return; }
  if (!response.ok) {
    const message = await problem(response);
    if (response.status === 401) keyProblem(message);
    failAll(message);
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        const column = event.data && state.columns[event.data.strategy];
        if (column) handle(column, event);
      }
    }
  } catch (e) { failAll(`the stream broke off (${e.message})`); return; }
  for (const [name, column] of entries) {
    if (!state.answers[name] && column.dataset.state !== "error") fail(column, "the stream ended before the answer");
  }
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) { $("ask-status").textContent = "Type a question first."; $("question").focus(); return; }
  if (!state.config && !(await loadConfig())) {
    $("ask-status").textContent = "Cannot ask yet: see the message about the API key above.";
    return;
  }
  state.question = question;
  buildColumns();
  $("prefer-form").hidden = true;
  $("ask-button").disabled = true;
  $("ask-status").textContent = "Asking every strategy…";
  await streamCompare(question);
  $("ask-button").disabled = false;
  const answered = Object.keys(state.columns).filter((name) => state.answers[name]);
  $("ask-status").textContent = `Done: ${answered.length} of ${Object.keys(state.columns).length} strategies answered.`;
  offerPreference(answered);
}

async function sendFeedback(body, status) {
  status.textContent = "Sending…";
  let response;
  try {
    response = await fetch("/feedback", { method: "POST", headers: headers(true), body: JSON.stringify(body) });
  } catch (e) { status.textContent = `Not saved: the gateway does not answer (${e.message}).`; return false; }
  if (!response.ok) {
    const message = await problem(response);
    if (response.status === 401) keyProblem(message);
    status.textContent = `Not saved: ${message}`;
    return false;
  }
  status.textContent = `Saved as feedback #${(await response.json()).id}. Thank you.`;
  return true;
}

async function rate(event) {
  const button = event.target.closest("button[data-rating]");
  if (!button) return;
  const column = button.closest(".column");
  const answer = state.answers[column.dataset.strategy];
  const body = {
    kind: "rating", question: state.question, answer: answer.text, rating: Number(button.dataset.rating),
    strategy: answer.strategy, model: answer.model, checkpoint_id: answer.checkpoint_id,
  };
  if (await sendFeedback(body, part(column, "feedback-status"))) {
    for (const b of column.querySelectorAll("button[data-rating]")) {
      b.setAttribute("aria-pressed", String(b === button));
      b.disabled = true;
    }
  }
}

function followCitation(event) { // move to the cited card and give it the focus
  const link = event.target.closest("a.cite");
  if (!link) return;
  event.preventDefault();
  const card = $(link.hash.slice(1));
  card.scrollIntoView({ block: "nearest" });
  card.focus();
}

function offerPreference(answered) {
  if (answered.length < 2) return;
  for (const [id, pick] of [["prefer-a", 0], ["prefer-b", 1]]) {
    const select = $(id);
    select.textContent = "";
    for (const name of answered) select.append(new Option(name, name));
    select.selectedIndex = pick;
  }
  $("prefer-status").textContent = "";
  $("prefer-form").hidden = false;
}

async function prefer(event) {
  event.preventDefault();
  const [a, b] = [$("prefer-a").value, $("prefer-b").value];
  if (a === b) { $("prefer-status").textContent = "Pick two different answers."; return; }
  const chosen = state.answers[a];
  await sendFeedback({
    kind: "preference", question: state.question, chosen: chosen.text, rejected: state.answers[b].text,
    strategy: a, model: chosen.model, checkpoint_id: chosen.checkpoint_id,
    comment: `web page: ${a}'s answer preferred to ${b}'s`,
  }, $("prefer-status"));
}

async function showReport() { // this address is a report; the gateway sent the page because it needs the key
  $("ask-view").hidden = true;
  const view = $("reports-view");
  view.hidden = false;
  if (!apiKey()) { view.textContent = "The reports need the API key: enter it above."; return; }
  const response = await fetch(location.pathname, { headers: headers(false) });
  if (!response.ok) {
    const message = await problem(response);
    if (response.status === 401) keyProblem(message);
    view.textContent = `The report cannot be shown: ${message}`;
    return;
  }
  const doc = new DOMParser().parseFromString(await response.text(), "text/html");
  const report = doc.querySelector("main.report");
  report.querySelector("nav")?.remove();
  view.replaceChildren(...doc.querySelectorAll("style"), report);
  document.title = doc.title;
}

async function useKey(event) {
  event.preventDefault();
  const typed = $("key").value.trim();
  $("key").value = "";
  if (typed) sessionStorage.setItem(KEY, typed); else sessionStorage.removeItem(KEY);
  state.config = null;
  if ((await loadConfig()) && location.pathname.startsWith("/reports")) await showReport();
}

async function forgetKey() {
  sessionStorage.removeItem(KEY);
  state.config = null;
  await loadConfig();
}

function start() {
  $("key-form").addEventListener("submit", useKey);
  $("forget-key").addEventListener("click", forgetKey);
  $("ask-form").addEventListener("submit", ask);
  $("prefer-form").addEventListener("submit", prefer);
  $("columns").addEventListener("click", (e) => { followCitation(e); rate(e); });
  const current = location.pathname.startsWith("/reports") ? "nav-reports" : "nav-ask";
  $(current).setAttribute("aria-current", "page");
  loadConfig().then((ok) => {
    if (location.pathname.startsWith("/reports")) showReport();
    else if (ok) buildColumns();
  });
}

start();
