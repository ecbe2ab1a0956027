// relay dashboard: live calls over /ws, details and changes over the REST API.
// Plain JavaScript, no build step. Every text from the server goes through textContent.
"use strict";

const state = {
  calls: new Map(),        // id -> summary (live calls)
  finished: [],            // summaries of ended calls, newest first
  selected: null,          // id of the call shown
  detail: null,            // its detail (config) as last fetched
  seen: new Set(),         // transcript entries shown (dedupe between fetch and events)
  tools: new Map(),        // the model's function_call_id -> its tool card
  receivedAt: new Map(),   // id -> [duration_s, performance.now()] for a ticking clock
  worker: null,
  workers: null,           // a fleet's worker processes (absent on a single worker)
  formDirty: false,
};

const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function fmtDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const m = Math.floor(s / 60);
  const hh = Math.floor(m / 60);
  const mm = String(m % 60).padStart(hh ? 2 : 1, "0");
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${mm}:${ss}` : `${mm}:${ss}`;
}

function fmtTime(t) {
  if (!t) return "";
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}

function ms(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value)} ms`;
}

function speakingOf(call) {
  // "assistant" lasts until the caller speaks; the agent is heard while audio is queued
  if (call.speaking === "assistant" && call.audio && call.audio.queued_ms === 0) return "";
  return call.speaking && call.speaking !== "nobody" ? call.speaking : "";
}

function who(call) {
  return call.caller_name ? `${call.caller_name} (${call.caller || "unknown"})`
    : (call.caller || "unknown caller");
}

// ---------------------------------------------------------------- API

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options));
  if (response.status === 401) {
    window.location.href = "/login";
    throw new Error("not logged in");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

// ---------------------------------------------------------------- live events

let socket = null;
let backoff = 1000;

function connect() {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${window.location.host}/ws`);
  socket.onopen = () => {
    backoff = 1000;
    $("link-state").textContent = "live";
    $("link-state").classList.add("live");
  };
  socket.onmessage = (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch (e) { return; }
    handle(message);
  };
  socket.onclose = () => {
    $("link-state").textContent = "reconnecting…";
    $("link-state").classList.remove("live");
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  };
}

function handle(message) {
  switch (message.type) {
    case "snapshot":
      state.calls = new Map(message.calls.map((c) => [c.id, c]));
      state.finished = message.finished || [];
      for (const c of message.calls) stamp(c);
      state.worker = message.worker;
      state.workers = message.workers || null;
      renderWorker();
      renderCalls();
      if (state.selected) selectCall(state.selected, true);
      break;
    case "stats":
      for (const c of message.calls) {
        if (state.calls.has(c.id)) { state.calls.set(c.id, c); stamp(c); }
      }
      state.worker = message.worker;
      state.workers = message.workers || null;
      renderWorker();
      renderCalls();
      if (state.selected && state.calls.has(state.selected)) {
        renderCallHead(state.calls.get(state.selected));
        renderAudio(state.calls.get(state.selected));
      }
      break;
    case "call":
      onCall(message.call);
      break;
    case "transcript":
      if ((message.call_id || message.entry.call_id) === state.selected) {
        addEntry(message.entry, true);
      }
      break;
    default:
      break;
  }
}

function stamp(call) {
  state.receivedAt.set(call.id, [call.duration_s || 0, performance.now()]);
}

function onCall(call) {
  if (call.state === "ended") {
    state.calls.delete(call.id);
    state.finished = [call].concat(state.finished.filter((c) => c.id !== call.id)).slice(0, 50);
  } else {
    state.calls.set(call.id, call);
    stamp(call);
  }
  renderCalls();
  if (call.id === state.selected) {
    renderCallHead(call);
    renderAudio(call);
  }
}

// ---------------------------------------------------------------- worker and lists

function renderWorker() {
  const w = state.worker;
  if (!w) return;
  const ari = $("chip-ari");
  ari.textContent = w.ari_connected ? "ARI connected" : "ARI disconnected";
  ari.className = "chip " + (w.ari_connected ? "good" : "bad");
  const acc = $("chip-accepting");
  acc.textContent = w.accepting ? "accepting calls" : "not accepting";
  acc.className = "chip " + (w.accepting ? "good" : "bad");
  const c = w.counters || {};
  $("chip-calls").textContent =
    `${w.calls_active} live · ${c.calls_total || 0} total · ${c.calls_failed || 0} failed`;
  const lat = w.turn_latency;
  $("chip-latency").textContent = lat && lat.count ? `turn p50 ≤ ${ms(lat.p50_ms)}` : "turn –";
  const p = w.pacing || {};
  $("chip-pacing").textContent = p.lateness_p99_ms !== undefined && p.lateness_p99_ms !== null
    ? `pacing p99 ≤ ${p.lateness_p99_ms} ms · ${p.late_ticks} late` : "pacing –";
  renderModelChip(w);
  renderWorkers();
}

function renderModelChip(w) {
  // the worker's circuit breaker of Realtime sockets, and what the calls' watchdogs did
  const chip = $("chip-model");
  const breaker = w.model_breaker;
  const c = w.counters || {};
  const dog = c.watchdog || {};
  const parts = [];
  if (!breaker) {            // a fleet's merged view: how often the workers' breakers opened
    parts.push(`model breaker opened ${c.model_breaker_opened || 0}×`);
  } else if (breaker.state !== "closed") {
    parts.push(breaker.state === "open" ? `model breaker open (${Math.ceil(breaker.retry_in_s)} s)`
      : "model breaker half-open");
  } else {
    parts.push("model ok");
  }
  if (dog.giveup) parts.push(`${dog.giveup} given up`);
  if (dog.hold) parts.push(`${dog.hold} held`);
  if (c.model_bad_events) parts.push(`${c.model_bad_events} bad events`);
  chip.textContent = parts.join(" · ");
  chip.className = "chip " + (breaker && breaker.state !== "closed" ? "bad" : "plain");
}

function renderWorkers() {
  // a fleet: how many of its worker processes feed this page (the details in the tooltip)
  const fleet = state.workers;
  let chip = $("chip-workers");
  if (!fleet) {
    if (chip) chip.remove();
    return;
  }
  if (!chip) {
    chip = h("span", { class: "chip", id: "chip-workers" });
    $("worker-chips").append(chip);
  }
  const linked = fleet.filter((w) => w.linked).length;
  chip.textContent = `${linked}/${fleet.length} worker${fleet.length === 1 ? "" : "s"}`;
  chip.className = "chip " + (fleet.length && linked === fleet.length ? "good" : "bad");
  chip.title = fleet.map((w) => `${w.name}: ${w.draining ? "draining" : w.healthy ? "healthy"
    : "unhealthy"}, ${w.calls_active} call${w.calls_active === 1 ? "" : "s"}` +
    (w.linked ? "" : ", not feeding this page")).join("\n");
}

function liveDuration(call) {
  const stampAt = state.receivedAt.get(call.id);
  if (!stampAt || call.state === "ended") return call.duration_s || 0;
  return stampAt[0] + (performance.now() - stampAt[1]) / 1000;
}

const listItems = new Map();    // "live:id" / "ended:id" -> its <li>, kept across updates

function callItem(call, ended) {
  const key = `${ended ? "ended" : "live"}:${call.id}`;
  let li = listItems.get(key);
  if (!li) {
    li = h("li", { "data-id": call.id, onclick: () => selectCall(call.id) });
    listItems.set(key, li);
  }
  const speaking = speakingOf(call);
  li.className = call.id === state.selected ? "selected" : "";
  li.replaceChildren(
    h("span", { class: "who" }, h("span", { class: `speaker-dot ${speaking}` }), who(call)),
    h("span", { class: "dur", "data-duration": ended ? null : call.id },
      fmtDuration(liveDuration(call))),
    h("span", { class: "sub" }, `${call.agent}`, call.worker ? ` · ${call.worker}` : "",
      speaking ? ` · ${speaking === "assistant" ? "agent" : "caller"} speaking` : "",
      ended && call.end_reason ? ` · ${call.end_reason}` : ""),
    h("span", {}, h("span", { class: `badge ${call.state}` }, call.state)));
  return li;
}

function syncList(list, items) {
  // keep the same <li> elements (a click in progress is not lost), in the given order
  items.forEach((li, index) => {
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] || null);
  });
  while (list.children.length > items.length) {
    const last = list.lastElementChild;
    for (const [key, li] of listItems) if (li === last) listItems.delete(key);
    last.remove();
  }
}

function renderCalls() {
  const live = [...state.calls.values()].sort((a, b) => a.started_at - b.started_at);
  syncList($("live-calls"), live.map((c) => callItem(c, false)));
  $("live-empty").hidden = live.length > 0;
  $("live-count").textContent = String(live.length);
  const ended = state.finished.slice(0, 12);
  syncList($("ended-calls"), ended.map((c) => callItem(c, true)));
  $("ended-empty").hidden = ended.length > 0;
}

function tickDurations() {
  for (const el of document.querySelectorAll("[data-duration]")) {
    const call = state.calls.get(el.getAttribute("data-duration"));
    if (call) el.textContent = fmtDuration(liveDuration(call));
  }
  if (state.selected && state.calls.has(state.selected)) {
    renderMeta(state.calls.get(state.selected));
  }
}

async function loadAgents() {
  try {
    const body = await api("/api/agents");
    $("agents").replaceChildren(...body.agents.map((a) => h("li", {},
      h("div", { class: "name" }, a.name, a.active ? h("span", { class: "tag" }, "active") : null),
      h("div", { class: "sub" }, `${a.key} · voice ${a.voice} · ${a.audio_format}`,
        ` · ${a.tools.length} tool${a.tools.length === 1 ? "" : "s"}`),
      h("details", {}, h("summary", {}, "instructions"), h("p", {}, a.instructions)))));
  } catch (e) {
    $("agents").replaceChildren(h("li", { class: "empty" }, `Agents unavailable: ${e.message}`));
  }
}

// ---------------------------------------------------------------- one call

async function selectCall(id, quiet) {
  const changed = id !== state.selected;
  state.selected = id;
  renderCalls();
  $("placeholder").hidden = true;
  $("call-view").hidden = false;
  if (changed) {
    state.seen.clear();
    state.tools.clear();
    $("transcript").replaceChildren();
    $("events").replaceChildren();
    $("cfg-result").textContent = "";
    state.formDirty = false;
    resetHangup();
  }
  let detail;
  try {
    detail = await api(`/api/calls/${encodeURIComponent(id)}`);
  } catch (e) {
    if (!quiet) showResult(`Cannot load the call: ${e.message}`, true);
    return;
  }
  if (state.selected !== id) return;
  state.detail = detail;
  for (const entry of detail.transcript || []) addEntry(entry, false);
  $("transcript-empty").hidden = $("transcript").children.length > 0;
  scrollToEnd($("transcript"), true);
  renderCallHead(detail);
  renderAudio(detail);
  if (detail.config && (!state.formDirty || changed)) fillForm(detail.config);
  $("config-form").hidden = !detail.live;
  $("hangup").hidden = !detail.live;
}

function renderCallHead(call) {
  $("call-title").textContent = who(call);
  const badge = $("call-state");
  badge.textContent = call.state;
  badge.className = `badge ${call.state}`;
  const speaking = speakingOf(call);
  $("call-speaking").replaceChildren(
    h("span", { class: `speaker-dot ${speaking}` }),
    speaking ? `${speaking === "assistant" ? "agent" : "caller"} speaking` : "silence");
  const ended = call.state === "ended" || call.state === "ending";
  $("hangup").disabled = ended;
  $("cfg-apply").disabled = call.state !== "active";
  renderMeta(call);
}

function renderMeta(call) {
  const parts = [`agent ${call.agent}`, fmtDuration(liveDuration(call))];
  if (call.setup_ms !== null && call.setup_ms !== undefined) parts.push(`set up in ${ms(call.setup_ms)}`);
  if (call.barge_ins) parts.push(`${call.barge_ins} interruption${call.barge_ins === 1 ? "" : "s"}`);
  const dog = call.watchdog || {};
  if (dog.giving_up && call.state === "active") parts.push(`giving up: ${dog.giving_up}`);
  if (call.end_reason) parts.push(call.end_reason);
  $("call-meta").textContent = parts.join(" · ");
}

function renderAudio(call) {
  const a = call.audio || {};
  const lat = call.turn_latency_ms || [];
  const avg = lat.length ? lat.reduce((x, y) => x + y, 0) / lat.length : null;
  const lossPct = a.rtp_in ? (100 * (a.lost || 0)) / (a.rtp_in + (a.lost || 0)) : 0;
  const cells = [
    ["RTP in", a.rtp_in ?? "–"], ["RTP out", a.rtp_out ?? "–"],
    ["lost", `${a.lost ?? 0} (${lossPct.toFixed(1)}%)`, (a.lost || 0) > 0],
    ["late", a.late ?? 0, (a.late || 0) > 0],
    ["jitter", a.jitter_ms !== undefined ? `${a.jitter_ms} ms` : "–"],
    ["queued", a.queued_ms !== undefined ? `${a.queued_ms} ms` : "–"],
    ["last turn", lat.length ? ms(lat[lat.length - 1]) : "–"],
    ["avg turn", ms(avg)],
  ];
  const w = state.worker && state.worker.pacing;
  if (w && w.lateness_p99_ms !== undefined) cells.push(["pacing p99", `≤ ${w.lateness_p99_ms} ms`]);
  cells.push(["talkspurts", a.talkspurts ?? "–"]);
  cells.push(["malformed", a.malformed ?? 0, (a.malformed || 0) > 0]);
  cells.push(["model errs", Object.values(call.model_errors || {}).reduce((x, y) => x + y, 0)]);
  cells.push(["reconnects", call.model_reconnects ?? 0, (call.model_failed_attempts || 0) > 0]);
  cells.push(["bad events", call.model_bad_events ?? 0, (call.model_bad_events || 0) > 0]);
  const dog = call.watchdog || {};
  const watch = dog.gave_up ? "gave up" : dog.state === "holding" ? "on hold"
    : dog.state === "retried" ? "asked again" : dog.state === "waiting" ? "waiting" : "ok";
  cells.push(["watchdog", watch, Boolean(dog.gave_up || dog.holds)]);
  $("audio-stats").replaceChildren(...cells.map(([label, value, bad]) =>
    h("div", {}, h("dt", {}, label), h("dd", { class: bad ? "bad" : "" }, String(value)))));
  const top = Math.max(100, ...lat);
  $("latency-spark").replaceChildren(...lat.slice(-24).map((v) => {
    const bar = h("span", { class: v > 1500 ? "slow" : "", title: ms(v) });
    bar.style.height = `${Math.max(4, (100 * v) / top)}%`;   // CSSOM: allowed by the CSP
    return bar;
  }));
}

function scrollToEnd(el, force) {
  const near = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  if (force || near) el.scrollTop = el.scrollHeight;
}

function entryKey(e) {
  return [e.t, e.kind, e.text, e.item_id || "", e.function_call_id || "", e.status || ""].join("|");
}

function addEntry(entry, live) {
  const key = entryKey(entry);
  if (state.seen.has(key)) return;
  state.seen.add(key);
  if (entry.kind === "event") {
    addEvent(entry);
    return;
  }
  const node = renderEntry(entry);
  if (!node) return;
  const list = $("transcript");
  const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  list.append(node);
  $("transcript-empty").hidden = true;
  if (live && stick) list.scrollTop = list.scrollHeight;
}

function renderEntry(e) {
  switch (e.kind) {
    case "caller": {
      const fallback = e.source === "fallback";
      return h("li", { class: "msg caller" },
        h("span", { class: "label" }, "Caller ", fmtTime(e.t),
          fallback ? h("span", { class: "tag fallback" },
            `fallback transcript${e.provider ? " · " + e.provider : ""}`) : null),
        h("div", { class: "bubble" }, e.text));
    }
    case "assistant":
      return h("li", { class: `msg assistant${e.interrupted ? " interrupted" : ""}` },
        h("span", { class: "label" }, "Agent ", fmtTime(e.t),
          e.interrupted ? h("span", { class: "tag" },
            `interrupted · heard ${e.heard_ms ?? "?"} ms`) : null),
        h("div", { class: "bubble" }, e.text));
    case "tool":
      return toolCard(e);
    case "dtmf":
      return h("li", { class: "keys" }, "keypad ", h("b", {}, e.text));
    case "dtmf_result":
      return h("li", { class: "keys" }, "keys entered ", h("b", {}, e.text));
    default:
      if (e.kind && e.kind.startsWith("fallback")) {
        return h("li", { class: "msg caller" },
          h("span", { class: "label" }, "Caller ", fmtTime(e.t),
            h("span", { class: "tag fallback" }, "fallback transcript")),
          h("div", { class: "bubble" }, e.text));
      }
      return h("li", { class: "other" }, `${e.kind}: ${e.text}`);
  }
}

function pretty(value) {
  if (value === undefined || value === null || value === "") return "";
  if (typeof value === "string") {
    try { return JSON.stringify(JSON.parse(value)); } catch (e) { return value; }
  }
  return JSON.stringify(value);
}

function toolCard(e) {
  const status = e.status || "called";
  const body = [h("div", {},
    h("span", { class: "tool-kind" }, "tool"),
    h("span", { class: "tool-name" }, e.text),
    h("span", { class: `tag status-${status}` }, status),
    e.duration_ms !== undefined ? h("span", { class: "label" }, ` ${Math.round(e.duration_ms)} ms`) : null)];
  const args = pretty(e.arguments);
  const row = (label, text) => h("pre", {}, h("b", {}, `${label} `), text);
  if (args) body.push(row("arguments", args));
  if (e.result !== undefined) body.push(row("result", pretty(e.result)));
  if (e.output !== undefined) body.push(row("result", pretty(e.output)));
  if (e.error) body.push(row("error", pretty(e.error)));
  const card = h("li", { class: `tool ${status}` }, ...body);
  const previous = e.function_call_id ? state.tools.get(e.function_call_id) : null;
  if (e.function_call_id) state.tools.set(e.function_call_id, card);
  if (previous && previous.parentNode) {   // the same call, now finished: update in place
    previous.replaceWith(card);
    return null;
  }
  return card;
}

function addEvent(e) {
  const level = e.level || "info";
  const item = h("li", {}, h("time", {}, fmtTime(e.t)),
    h("span", { class: `level ${level}` }, level), h("span", {}, e.text));
  const list = $("events");
  list.append(item);
  scrollToEnd(list, false);
}

// ---------------------------------------------------------------- the configuration form

function fillForm(config) {
  $("cfg-instructions").value = config.instructions || "";
  $("cfg-voice").replaceChildren(...config.voices.map((v) =>
    h("option", { value: v, selected: v === config.voice }, v)));
  $("voice-hint").hidden = !config.voice_locked;
  const td = config.turn_detection;
  $("cfg-td-type").value = td ? td.type : "server_vad";
  $("cfg-threshold").value = td && td.threshold !== undefined ? td.threshold : "";
  $("cfg-silence").value = td && td.silence_duration_ms !== undefined ? td.silence_duration_ms : "";
  $("cfg-padding").value = td && td.prefix_padding_ms !== undefined ? td.prefix_padding_ms : "";
  $("cfg-eagerness").value = td && td.eagerness ? td.eagerness : "auto";
  $("cfg-interrupt").checked = td ? td.interrupt_response !== false : true;
  showTdFields();
  const tools = $("cfg-tools");
  tools.querySelectorAll("label").forEach((el) => el.remove());
  $("tools-empty").hidden = config.available_tools.length > 0;
  for (const tool of config.available_tools) {
    tools.append(h("label", { title: tool.description || "" },
      h("input", { type: "checkbox", value: tool.name,
        checked: config.tools.includes(tool.name) }), tool.name));
  }
  state.formDirty = false;
}

function showTdFields() {
  const type = $("cfg-td-type").value;
  $("td-server").hidden = type !== "server_vad";
  $("td-semantic").hidden = type !== "semantic_vad";
}

function formTurnDetection(current) {
  // never null, never create_response false: relay refuses both (the agent would go deaf)
  const type = $("cfg-td-type").value;
  const td = current && current.type === type ? Object.assign({}, current) : { type };
  if (type === "server_vad") {
    const number = (id, key, int) => {
      const raw = $(id).value.trim();
      if (raw === "") { delete td[key]; return; }
      td[key] = int ? parseInt(raw, 10) : parseFloat(raw);
    };
    number("cfg-threshold", "threshold", false);
    number("cfg-silence", "silence_duration_ms", true);
    number("cfg-padding", "prefix_padding_ms", true);
  } else {
    td.eagerness = $("cfg-eagerness").value;
  }
  td.interrupt_response = $("cfg-interrupt").checked;
  return td;
}

function formChanges() {
  const config = state.detail.config;
  const changes = {};
  const instructions = $("cfg-instructions").value;
  if (instructions !== config.instructions) changes.instructions = instructions;
  const voice = $("cfg-voice").value;
  if (voice !== config.voice) changes.voice = voice;
  const td = formTurnDetection(config.turn_detection);
  if (JSON.stringify(td) !== JSON.stringify(config.turn_detection)) changes.turn_detection = td;
  const tools = [...$("cfg-tools").querySelectorAll("input:checked")].map((el) => el.value);
  if (JSON.stringify(tools) !== JSON.stringify(config.tools)) changes.tools = tools;
  return changes;
}

function showResult(text, error) {
  const el = $("cfg-result");
  el.textContent = text;
  el.className = `form-result ${error ? "error" : "ok"}`;
}

async function applyConfig(event) {
  event.preventDefault();
  if (!state.detail || !state.detail.config) return;
  const id = state.selected;
  const changes = formChanges();
  if (!Object.keys(changes).length) {
    showResult("Nothing changed.", true);
    return;
  }
  $("cfg-apply").disabled = true;
  try {
    const body = await api(`/api/calls/${encodeURIComponent(id)}/config`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(changes),
    });
    if (state.selected !== id) return;
    state.detail.config = body.config;
    fillForm(body.config);
    showResult(`Sent to the model: ${Object.keys(changes).join(", ")}.`, false);
  } catch (e) {
    showResult(`Refused: ${e.message}`, true);
  } finally {
    $("cfg-apply").disabled = false;
  }
}

// ---------------------------------------------------------------- hang up

let hangupTimer = null;

function resetHangup() {
  const button = $("hangup");
  button.textContent = "Hang up";
  button.classList.remove("confirm");
  clearTimeout(hangupTimer);
}

async function hangup() {
  const button = $("hangup");
  if (!button.classList.contains("confirm")) {     // two steps, no dialog
    button.textContent = "Click again to hang up";
    button.classList.add("confirm");
    hangupTimer = setTimeout(resetHangup, 4000);
    return;
  }
  resetHangup();
  button.disabled = true;
  try {
    await api(`/api/calls/${encodeURIComponent(state.selected)}/hangup`, { method: "POST" });
  } catch (e) {
    showResult(`Hang-up failed: ${e.message}`, true);
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  $("config-form").addEventListener("submit", applyConfig);
  $("config-form").addEventListener("input", () => { state.formDirty = true; });
  $("cfg-td-type").addEventListener("change", showTdFields);
  $("cfg-reset").addEventListener("click", () => {
    if (state.detail && state.detail.config) fillForm(state.detail.config);
    $("cfg-result").textContent = "";
  });
  $("hangup").addEventListener("click", hangup);
  loadAgents();
  connect();
  setInterval(tickDurations, 1000);
});
