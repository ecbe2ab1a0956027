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
    const chosen = $("h-agent").value;
    $("h-agent").replaceChildren(h("option", { value: "" }, "any agent"),
      ...body.agents.map((a) => h("option", { value: a.key, selected: a.key === chosen }, a.name)));
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

// The jitter buffer's depth (CallMedia.stats()): now, and the deepest it went in the call.
function jitterDepth(a) {
  if (a.jitter_depth_ms === undefined) return "–";
  const max = a.jitter_depth_max_ms;
  return max !== undefined && max !== a.jitter_depth_ms
    ? `${a.jitter_depth_ms} ms (max ${max})` : `${a.jitter_depth_ms} ms`;
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
    ["jitter buffer", jitterDepth(a)],
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

// ---------------------------------------------------------------- history (ended calls)

const past = {
  params: null,        // URLSearchParams of the current search (filters only)
  pages: [],           // cursors of the pages shown so far (null: the first)
  next: null,          // the cursor of the next page, if any
  shownCall: null,     // id of the call page shown
  loaded: false,
  asked: 0,            // searches sent (only the last one's answer is shown)
  totalsAsked: 0,
};

const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  for (const child of children) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function fmtDateTime(t) {
  if (!t) return "–";
  return new Date(t * 1000).toLocaleString([], { hour12: false, year: "numeric",
    month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function fmtCost(value) {
  return value === null || value === undefined ? "–" : `$${Number(value).toFixed(4)}`;
}

function fmtMinutes(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(1);
}

function historyFilters() {
  const params = new URLSearchParams();
  for (const el of $("history-form").querySelectorAll("input, select")) {
    const value = el.value.trim();
    if (value) params.set(el.name, value);
  }
  return params;
}

function showView() {
  const hash = window.location.hash || "#live";
  const inHistory = hash.startsWith("#history");
  const inCampaigns = hash.startsWith("#campaigns");
  $("live-view").hidden = inHistory || inCampaigns;
  $("history-view").hidden = !inHistory;
  $("campaigns-view").hidden = !inCampaigns;
  $("tab-live").classList.toggle("active", !inHistory && !inCampaigns);
  $("tab-history").classList.toggle("active", inHistory);
  $("tab-campaigns").classList.toggle("active", inCampaigns);
  watchCampaigns(inCampaigns);
  if (!inHistory) return;
  if (!past.loaded) {
    past.loaded = true;
    searchHistory();
  }
  const match = hash.match(/^#history\/call\/(.+)$/);
  const id = match ? decodeURIComponent(match[1]) : null;
  $("history-list").hidden = Boolean(id);
  $("history-call").hidden = !id;
  if (id && id !== past.shownCall) openHistoryCall(id);
  if (!id) past.shownCall = null;
}

function historyMessage(text, error) {
  const el = $("h-result");
  el.textContent = text;
  el.className = `form-result ${error ? "error" : "ok"}`;
}

async function searchHistory(event) {
  if (event) event.preventDefault();
  past.params = historyFilters();
  past.pages = [null];
  $("history-csv").href = `/api/history.csv${past.params.toString() ? "?" + past.params : ""}`;
  await loadHistoryPage(null);
  loadTotals();
}

async function loadHistoryPage(cursor) {
  const params = new URLSearchParams(past.params);
  params.set("limit", "50");
  if (cursor) params.set("after", cursor);
  historyMessage("Searching…", false);
  const asked = ++past.asked;     // an older search answering late is not shown
  let page;
  try {
    page = await api(`/api/history?${params}`);
  } catch (e) {
    if (asked === past.asked) historyMessage(`Search failed: ${e.message}`, true);
    return;
  }
  if (asked !== past.asked) return;
  past.next = page.next;
  $("history-rows").replaceChildren(...page.calls.map(historyRow));
  $("history-empty").hidden = page.calls.length > 0;
  $("h-count").textContent = String(page.calls.length) + (page.next ? "+" : "");
  $("h-next").hidden = !page.next;
  $("h-first").hidden = past.pages.length <= 1;
  $("h-page").textContent = past.pages.length > 1 || page.next ? `page ${past.pages.length}` : "";
  historyMessage(page.calls.length ? "" : "No call matches.", false);
}

function historyRow(row) {
  const open = () => { window.location.hash = `#history/call/${encodeURIComponent(row.id)}`; };
  return h("tr", { "data-id": row.id, tabindex: "0", onclick: open,
    onkeydown: (e) => { if (e.key === "Enter") open(); } },
    h("td", { class: "num" }, fmtDateTime(row.started_at)),
    h("td", {}, h("div", { class: "who" }, row.caller_name || row.caller_number || "unknown"),
      row.caller_name ? h("div", { class: "sub" }, row.caller_number) : null),
    h("td", {}, row.agent, row.direction === "outbound" ? h("span", { class: "tag" }, "outbound") : null),
    h("td", { class: "num" }, fmtDuration(row.duration_s || 0)),
    h("td", { class: "reason" }, row.end_reason || ""),
    h("td", { class: "num" }, ms(row.turn_p95_ms)),
    h("td", { class: "num" }, fmtCost(row.cost_usd)),
    h("td", {}, row.has_recording ? h("span", { class: "tag status-ok", title: "recorded" }, "rec") : ""));
}

async function nextHistoryPage() {
  if (!past.next) return;
  past.pages.push(past.next);
  await loadHistoryPage(past.next);
}

async function firstHistoryPage() {
  past.pages = [null];
  await loadHistoryPage(null);
}

// totals: per agent and per day, with a bar chart of calls per day

async function loadTotals() {
  const params = new URLSearchParams();
  for (const key of ["since", "until", "agent"]) {
    if (past.params.get(key)) params.set(key, past.params.get(key));
  }
  let body;
  const asked = ++past.totalsAsked;
  try {
    body = await api(`/api/stats/daily${params.toString() ? "?" + params : ""}`);
  } catch (e) {
    if (asked !== past.totalsAsked) return;
    $("totals-span").textContent = `unavailable: ${e.message}`;
    $("totals-agents").replaceChildren();
    $("totals-days").replaceChildren();
    $("totals-chart").replaceChildren();
    return;
  }
  if (asked !== past.totalsAsked) return;
  const days = body.days || [];
  const day = (t) => new Date(t * 1000).toISOString().slice(0, 10);
  $("totals-span").textContent = `${day(body.since)} to ${day(body.until - 1)} (UTC)`;
  $("totals-empty").hidden = days.length > 0;
  const cells = (r) => [h("td", { class: "num" }, r.calls), h("td", { class: "num" }, fmtMinutes(r.minutes)),
    h("td", { class: "num" }, ms(r.turn_avg_ms)), h("td", { class: "num" }, ms(r.turn_p95_ms)),
    h("td", { class: "num" }, r.barge_ins), h("td", { class: "num" }, fmtCost(r.cost_usd))];
  $("totals-days").replaceChildren(...days.map((r) => h("tr", {}, h("td", {}, r.day),
    h("td", {}, r.agent), ...cells(r))));
  const agents = new Map();
  for (const r of days) {
    const a = agents.get(r.agent) || { calls: 0, minutes: 0, turnSum: 0, turnCalls: 0,
      turn_p95_ms: null, barge_ins: 0, cost_usd: 0 };
    a.calls += r.calls || 0;
    a.minutes += r.minutes || 0;
    if (r.turn_avg_ms !== null && r.turn_avg_ms !== undefined) {
      a.turnSum += r.turn_avg_ms * (r.calls || 0);
      a.turnCalls += r.calls || 0;
    }
    if (r.turn_p95_ms !== null && r.turn_p95_ms !== undefined) {
      a.turn_p95_ms = Math.max(a.turn_p95_ms || 0, r.turn_p95_ms);   // the worst day's
    }
    a.barge_ins += r.barge_ins || 0;
    a.cost_usd += r.cost_usd || 0;
    agents.set(r.agent, a);
  }
  $("totals-agents").replaceChildren(...[...agents.entries()].sort().map(([name, a]) => {
    a.turn_avg_ms = a.turnCalls ? a.turnSum / a.turnCalls : null;
    return h("tr", {}, h("td", {}, name), ...cells(a));
  }));
  drawDailyChart(days);
}

function drawDailyChart(rows) {
  const chart = $("totals-chart");
  const perDay = new Map();
  for (const r of rows) {
    const d = perDay.get(r.day) || { calls: 0, minutes: 0 };
    d.calls += r.calls || 0;
    d.minutes += r.minutes || 0;
    perDay.set(r.day, d);
  }
  const days = [...perDay.keys()].sort();
  const width = 640;
  const height = 140;
  const base = height - 20;
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  if (!days.length) {
    chart.replaceChildren(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle",
      class: "chart-label" }, "no calls"));
    return;
  }
  const top = Math.max(1, ...days.map((d) => perDay.get(d).calls));
  const slot = width / days.length;
  const bar = Math.max(2, Math.min(40, slot * 0.7));
  const parts = [svg("line", { x1: 0, y1: base, x2: width, y2: base, class: "chart-axis" })];
  days.forEach((d, i) => {
    const value = perDay.get(d);
    const barHeight = Math.max(1, ((base - 16) * value.calls) / top);
    const x = i * slot + (slot - bar) / 2;
    parts.push(svg("rect", { x, y: base - barHeight, width: bar, height: barHeight, rx: 2,
      class: "chart-bar", "data-day": d },
      svg("title", {}, `${d}: ${value.calls} call${value.calls === 1 ? "" : "s"}, ` +
        `${fmtMinutes(value.minutes)} min`)));
    parts.push(svg("text", { x: x + bar / 2, y: base - barHeight - 4, "text-anchor": "middle",
      class: "chart-value" }, value.calls));
    if (days.length <= 16 || i % Math.ceil(days.length / 16) === 0) {
      parts.push(svg("text", { x: x + bar / 2, y: height - 5, "text-anchor": "middle",
        class: "chart-label" }, d.slice(5)));
    }
  });
  chart.replaceChildren(...parts);
}

// one ended call's page

async function openHistoryCall(id) {
  past.shownCall = id;
  $("hc-title").textContent = "Loading…";
  $("hc-meta").textContent = "";
  for (const list of ["hc-transcript", "hc-tools", "hc-events", "hc-quality", "hc-usage",
    "hc-latency", "hc-recording"]) $(list).replaceChildren();
  let call;
  try {
    call = await api(`/api/history/${encodeURIComponent(id)}`);
  } catch (e) {
    $("hc-title").textContent = `Cannot load the call: ${e.message}`;
    return;
  }
  if (past.shownCall !== id) return;
  renderHistoryCall(call);
}

function statCells(target, cells) {
  $(target).replaceChildren(...cells.map(([label, value, bad]) =>
    h("div", {}, h("dt", {}, label), h("dd", { class: bad ? "bad" : "" }, String(value)))));
}

function renderHistoryCall(call) {
  $("hc-title").textContent = call.caller_name
    ? `${call.caller_name} (${call.caller_number || "unknown"})` : (call.caller_number || "unknown caller");
  const meta = [`agent ${call.agent}`, call.direction,
    `${fmtDateTime(call.started_at)} → ${fmtTime(call.ended_at)}`,
    fmtDuration(call.duration_s || 0), call.end_reason, `cost ${fmtCost(call.cost_usd)}`];
  if (call.worker) meta.push(`worker ${call.worker}${call.host ? " on " + call.host : ""}`);
  $("hc-meta").textContent = meta.filter(Boolean).join(" · ");

  const transcript = [];
  const events = [];
  for (const e of call.transcript || []) {
    if (e.kind === "event") events.push(e);
    else transcript.push(e.kind === "tool" ? historyTool(e) : renderEntry(e));
  }
  $("hc-transcript").replaceChildren(...transcript.filter(Boolean));
  $("hc-transcript-empty").hidden = transcript.length > 0;
  $("hc-events").replaceChildren(...events.map((e) => h("li", {}, h("time", {}, fmtTime(e.t)),
    h("span", { class: `level ${e.level || "info"}` }, e.level || "info"), h("span", {}, e.text))));
  const tools = call.tools || [];
  $("hc-tools").replaceChildren(...tools.map((t) => historyTool(Object.assign({ text: t.name }, t))));
  $("hc-tools-empty").hidden = tools.length > 0;

  if (call.recording_path) {
    const audio = h("audio", { controls: true, preload: "metadata", id: "hc-audio",
      src: `/api/history/${encodeURIComponent(call.id)}/recording` });
    const failed = h("p", { class: "empty small", hidden: true }, "The recording cannot be played (it may have been removed).");
    audio.addEventListener("error", () => { failed.hidden = false; });
    $("hc-recording").replaceChildren(audio, failed);
  } else {
    $("hc-recording").replaceChildren(h("p", { class: "empty" }, "This call was not recorded."));
  }

  const q = call.quality || {};
  const lossPct = q.rtp_in ? (100 * (q.lost || 0)) / (q.rtp_in + (q.lost || 0)) : 0;
  const lat = call.turn_latency_ms || {};
  const pacing = q.pacing && typeof q.pacing === "object" ? q.pacing : {};
  const cells = [
    ["RTP in", q.rtp_in ?? "–"], ["RTP out", q.rtp_out ?? "–"],
    ["lost", `${q.lost ?? 0} (${lossPct.toFixed(1)}%)`, (q.lost || 0) > 0],
    ["late", q.late ?? 0, (q.late || 0) > 0],
    ["jitter", q.jitter_ms !== undefined ? `${q.jitter_ms} ms` : "–"],
    ["jitter buffer", jitterDepth(q)],
    ["turns", lat.count ?? 0], ["turn p50", ms(lat.p50)], ["turn p95", ms(lat.p95)],
    ["turn max", ms(lat.max)], ["barge-ins", call.barge_ins ?? 0],
  ];
  for (const [key, value] of Object.entries(pacing)) {
    if (typeof value !== "object") cells.push([`pacing ${key.replace(/_/g, " ")}`, value]);
  }
  const model = call.model || {};
  const errors = Object.values(model.errors || {}).reduce((x, y) => x + y, 0);
  cells.push(["model errs", errors, errors > 0], ["reconnects", model.reconnects ?? 0]);
  statCells("hc-quality", cells);
  const values = lat.values || [];
  const top = Math.max(100, ...values);
  $("hc-latency").replaceChildren(...values.map((v) => {
    const bar = h("span", { class: v > 1500 ? "slow" : "", title: ms(v) });
    bar.style.height = `${Math.max(4, (100 * v) / top)}%`;
    return bar;
  }));

  const u = call.usage || {};
  statCells("hc-usage", [
    ["text in", u.input_text ?? 0], ["audio in", u.input_audio ?? 0],
    ["cached text", u.input_cached_text ?? 0], ["cached audio", u.input_cached_audio ?? 0],
    ["text out", u.output_text ?? 0], ["audio out", u.output_audio ?? 0],
    ["responses", u.responses ?? 0], ["cost", fmtCost(call.cost_usd)],
    ["model", model.name || "–"],
  ]);
}

function historyTool(e) {
  // a tool call as the history keeps it: name, arguments, status, result or error, duration
  const status = e.status || "called";
  const row = (label, text) => h("pre", {}, h("b", {}, `${label} `), text);
  const body = [h("div", {}, h("span", { class: "tool-kind" }, "tool"),
    h("span", { class: "tool-name" }, e.text || e.name),
    h("span", { class: `tag status-${status}` }, status),
    e.duration_ms !== undefined && e.duration_ms !== null
      ? h("span", { class: "label" }, ` ${Math.round(e.duration_ms)} ms`) : null)];
  const args = pretty(e.arguments);
  if (args) body.push(row("arguments", args));
  if (e.result !== undefined && e.result !== null) body.push(row("result", pretty(e.result)));
  if (e.output !== undefined) body.push(row("result", pretty(e.output)));
  if (e.error) body.push(row("error", pretty(e.error)));
  return h("li", { class: `tool ${status}` }, ...body);
}

// ---------------------------------------------------------------- campaigns

const campaigns = { timer: null, agentsLoaded: false };
const CAMPAIGN_ACTIONS = { draft: ["start", "stop"], running: ["pause", "stop"],
                           paused: ["resume", "stop"], stopped: [], completed: [] };

function watchCampaigns(on) {
  if (on && !campaigns.timer) {
    loadCampaignAgents();
    loadCampaigns();
    campaigns.timer = setInterval(loadCampaigns, 1000);
  } else if (!on && campaigns.timer) {
    clearInterval(campaigns.timer);
    campaigns.timer = null;
  }
}

function campaignMessage(text, error) {
  const el = $("c-result");
  el.textContent = text;
  el.className = `form-result ${error ? "error" : "ok"}`;
}

async function loadCampaignAgents() {
  if (campaigns.agentsLoaded) return;
  try {
    const body = await api("/api/agents");
    const select = $("c-agent");
    select.replaceChildren(...body.agents.map((a) => h("option",
      { value: a.key, selected: a.key === body.active }, a.name ? `${a.key} · ${a.name}` : a.key)));
    campaigns.agentsLoaded = true;
  } catch (e) {
    campaignMessage(`cannot list the agents: ${e.message}`, true);
  }
}

function campaignRow(c) {
  const p = c.progress || {};
  const o = p.outcomes || {};
  const done = p.contacts ? Math.round((100 * p.completed) / p.contacts) : 0;
  const fill = h("div", { class: "progress-done" });
  fill.style.width = `${done}%`;        // CSSOM: the page's policy refuses style attributes
  const bar = h("div", { class: "progress", title: `${p.completed} of ${p.contacts} contacts` },
    fill, h("span", { class: "progress-label" }, `${p.completed}/${p.contacts}`));
  const cell = (key, value) => h("td", { class: "num", "data-count": key }, value || 0);
  const buttons = (CAMPAIGN_ACTIONS[c.state] || []).map((action) => h("button", {
    type: "button", class: action === "stop" ? "ghost c-action" : "c-action",
    "data-action": action, onclick: () => controlCampaign(c.id, action) }, action));
  return h("tr", { "data-id": c.id, "data-state": c.state },
    h("td", {}, h("div", { class: "who" }, c.name),
      h("div", { class: "label" }, `${c.agent} · ${c.max_concurrent} at once · `
        + `${c.calls_per_s}/s`)),
    h("td", {}, h("span", { class: `tag state-${c.state}` }, c.state)),
    h("td", {}, bar),
    cell("waiting", p.waiting), cell("dialling", p.dialling), cell("answered", o.answered),
    cell("completed", p.completed), cell("busy", o.busy), cell("no_answer", o.no_answer),
    cell("machine", o.machine), cell("failed", (o.failed || 0) + (o.rejected || 0)
      + (o.interrupted || 0)),
    h("td", { class: "actions" }, buttons));
}

async function loadCampaigns() {
  try {
    const body = await api("/api/campaigns");
    $("campaign-rows").replaceChildren(...body.campaigns.map(campaignRow));
    $("c-count").textContent = body.campaigns.length;
    $("c-empty").hidden = body.campaigns.length > 0;
  } catch (e) {
    campaignMessage(e.message, true);
  }
}

async function controlCampaign(id, action) {
  try {
    await api(`/api/campaigns/${encodeURIComponent(id)}/${action}`, { method: "POST" });
    campaignMessage(`${action}: done`, false);
  } catch (e) {
    campaignMessage(e.message, true);
  }
  loadCampaigns();
}

async function createCampaign(event) {
  event.preventDefault();
  const file = $("c-file").files[0];
  if (!file) { campaignMessage("choose a CSV file", true); return; }
  const params = new URLSearchParams();
  const put = (key, value) => { if (String(value).trim()) params.set(key, String(value).trim()); };
  put("name", $("c-name").value);
  put("agent", $("c-agent").value);
  put("max_concurrent", $("c-concurrent").value);
  put("calls_per_s", $("c-rate").value);
  put("timezone", $("c-tz").value);
  put("ring_timeout_s", $("c-ring").value);
  put("retry", $("c-retry").value);
  const start = $("c-hours-start").value;
  const end = $("c-hours-end").value;
  if (start || end) params.set("hours", `${start}-${end}`);
  try {
    const created = await api(`/api/campaigns?${params}`, {
      method: "POST", headers: { "Content-Type": "text/csv" }, body: await file.text() });
    campaignMessage(`campaign ${created.name}: ${created.progress.contacts} contacts`, false);
  } catch (e) {
    campaignMessage(e.message, true);
  }
  loadCampaigns();
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
  $("history-form").addEventListener("submit", searchHistory);
  $("history-form").addEventListener("reset", () => setTimeout(() => searchHistory(), 0));
  $("h-next").addEventListener("click", nextHistoryPage);
  $("h-first").addEventListener("click", firstHistoryPage);
  $("campaign-form").addEventListener("submit", createCampaign);
  window.addEventListener("hashchange", showView);
  showView();
  loadAgents();
  connect();
  setInterval(tickDurations, 1000);
});
