// Spawner's dashboard: plain JavaScript, no build step. It speaks the HTTP API of
// docs/api.md with the token of this tab (sessionStorage), always as an Authorization
// header: event streams are read with fetch() because EventSource cannot send headers.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "spawner-token";
const TERMINAL = new Set(["Swept", "Failed", "Terminated"]);
const ORDER = ["Submitted", "Constructed", "Scheduled", "Running", "Ready", "Terminating",
  "Swept", "Failed", "Terminated"];

// ---- API access -------------------------------------------------------------------------

let asking = null; // the pending token prompt, shared by every request that met a 401
let answered = null; // answers that prompt with a token

function askToken(message) {
  // Shown again whatever view a route() since the first 401 put up.
  showOnly("login");
  if (message || !asking) $("login-error").textContent = message || "";
  if (!asking) {
    asking = new Promise((resolve) => {
      $("login-token").value = "";
      $("login-token").focus();
      answered = (token) => {
        sessionStorage.setItem(TOKEN_KEY, token);
        $("logout").hidden = false;
        asking = answered = null;
        resolve();
        route();
      };
      $("login-form").onsubmit = (ev) => {
        ev.preventDefault();
        answered($("login-token").value.trim());
      };
    });
  }
  return asking;
}

/**
 * A login link (`#login=CODE`, printed by `spawner serve` and `spawner dashboard`): the code
 * is traded once for the token, and the fragment is dropped from the address and history.
 */
async function redeemLogin() {
  const m = location.hash.match(/^#login=([0-9a-f]+)$/);
  if (!m) return;
  history.replaceState(null, "", location.pathname + location.search + "#/");
  const resp = await fetch("/v1/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: m[1] }),
  });
  if (resp.ok) {
    const token = (await resp.json()).token;
    if (answered) {
      answered(token); // a prompt was up: the requests waiting on it go on
    } else {
      sessionStorage.setItem(TOKEN_KEY, token);
      $("logout").hidden = false;
    }
  } else if (!sessionStorage.getItem(TOKEN_KEY)) {
    askToken(await errorText(resp)); // not awaited: the prompt stays up until answered
  }
}

/** fetch() on the API with the tab's token; a 401 asks for the token once and retries. */
async function api(path, options = {}) {
  for (;;) {
    const headers = Object.assign({}, options.headers || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["Authorization"] = "Bearer " + token;
    const resp = await fetch(path, Object.assign({}, options, { headers }));
    if (resp.status !== 401) return resp;
    await askToken(token ? "That token was refused; try again." : "");
  }
}

/** The API's error as one line: its message, or the status. */
async function errorText(resp) {
  try {
    const body = await resp.json();
    return body.message || body.error || resp.statusText;
  } catch (_) {
    return resp.status + " " + resp.statusText;
  }
}

/** Reads a Server-Sent Events response; calls onEvent(type, data, id) per event. */
async function readSse(resp, onEvent) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let type = "message", id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (field === "event") type = v;
        else if (field === "data") data.push(v);
        else if (field === "id") id = v;
      }
      if (data.length) onEvent(type, data.join("\n"), id);
    }
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- Formatting -------------------------------------------------------------------------

function ago(iso) {
  if (!iso) return "–";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d";
}

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function labelsText(labels) {
  return Object.entries(labels || {}).map(([k, v]) => k + "=" + v).join(" ");
}

// ---- The backends, kept current by the list stream ---------------------------------------

const backends = new Map(); // id -> record (without events)
const rows = new Map(); // id -> {tr, cells} (tr: the row's element)
let pending = new Map(); // records waiting for the next frame
let frameAsked = false;
const listeners = new Set(); // functions called with each updated record

function upsert(record) {
  pending.set(record.id, record);
  if (!frameAsked) {
    frameAsked = true;
    requestAnimationFrame(flush);
  }
}

/** Applies the records that arrived since the last frame: only their rows change. */
function flush() {
  frameAsked = false;
  const batch = pending;
  pending = new Map();
  const fresh = [];
  for (const record of batch.values()) {
    const known = backends.has(record.id);
    backends.set(record.id, record);
    if (known) updateRow(record);
    else fresh.push(record);
    for (const f of listeners) f(record);
  }
  if (fresh.length) {
    // Newest first: a batch arrives newest first (a snapshot) or one at a time.
    fresh.sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
    const frag = document.createDocumentFragment();
    for (const record of fresh) frag.appendChild(makeRow(record));
    const body = $("backend-rows");
    const first = body.firstChild;
    const oldest = fresh[fresh.length - 1].created_at;
    if (first && backends.get(first.dataset.id).created_at > oldest) body.appendChild(frag);
    else body.insertBefore(frag, first);
  }
  updateCount();
}

function makeRow(record) {
  const tr = el("div", { class: "row", role: "row", "data-id": record.id });
  const cells = {};
  for (const name of ["id", "key", "state", "runtime", "conns", "age", "activity", "labels"]) {
    cells[name] = tr.appendChild(el("span", { class: name === "conns" ? "num conns" : name }));
  }
  const a = cells.id.appendChild(el("a", { href: "#/backends/" + record.id }, record.id));
  a.className = "mono";
  cells.stateBadge = cells.state.appendChild(el("span", { class: "state" }));
  cells.reason = cells.state.appendChild(el("span", { class: "reason" }));
  rows.set(record.id, { tr, cells });
  updateRow(record);
  return tr;
}

function updateRow(record) {
  const row = rows.get(record.id);
  if (!row) return;
  const c = row.cells;
  setText(c.key, record.key || "");
  if (c.stateBadge.dataset.state !== record.state) {
    c.stateBadge.dataset.state = record.state;
    c.stateBadge.textContent = record.state;
    row.tr.dataset.state = record.state;
  }
  setText(c.reason, record.reason || "");
  if (c.reason.title !== (record.reason || "")) c.reason.title = record.reason || "";
  setText(c.runtime, record.runtime || "");
  setText(c.conns, String(record.live_connections || 0));
  setText(c.age, ago(record.created_at));
  setText(c.activity, TERMINAL.has(record.state) ? "–" : ago(record.last_activity));
  const labels = labelsText(record.labels || (record.spec && record.spec.labels));
  if (c.labels.dataset.text !== labels) {
    c.labels.dataset.text = labels;
    c.labels.replaceChildren(...labels.split(" ").filter(Boolean).map((l) => el("span", { class: "label" }, l)));
  }
  row.tr.hidden = !matches(record);
}

// ---- Filters ----------------------------------------------------------------------------

let filter = { state: "", labels: [], ended: false };

function readFilter() {
  const labels = $("filter-label").value.split(/[,\s]+/).filter(Boolean).map((p) => {
    const i = p.indexOf("=");
    return i < 0 ? [p, null] : [p.slice(0, i), p.slice(i + 1)];
  });
  filter = { state: $("filter-state").value, labels, ended: $("filter-ended").checked };
  for (const record of backends.values()) {
    const row = rows.get(record.id);
    if (row) row.tr.hidden = !matches(record);
  }
  updateCount();
}

function matches(record) {
  if (filter.state) {
    if (record.state !== filter.state) return false;
  } else if (!filter.ended && TERMINAL.has(record.state)) {
    return false;
  }
  const labels = (record.spec && record.spec.labels) || {};
  return filter.labels.every(([k, v]) => (v === null ? k in labels : labels[k] === v));
}

function updateCount() {
  let shown = 0;
  for (const r of backends.values()) if (matches(r)) shown++;
  setText($("list-count"), shown + " shown of " + backends.size);
  $("list-empty").hidden = shown > 0;
}

/** Ages and idle times move with the clock: refreshed for the rows on view. */
setInterval(() => {
  if ($("view-list").hidden) return;
  for (const record of backends.values()) {
    const row = rows.get(record.id);
    if (!row || row.tr.hidden) continue;
    setText(row.cells.age, ago(record.created_at));
    setText(row.cells.activity, TERMINAL.has(record.state) ? "–" : ago(record.last_activity));
  }
}, 5000);

// ---- The list stream (with polling where a server has none) ----------------------------

let followingList = false;

async function followList() {
  if (followingList) return;
  followingList = true;
  for (;;) {
    try {
      const resp = await api("/v1/backends/stream", { headers: { Accept: "text/event-stream" } });
      if (resp.status === 404 || resp.status === 405) {
        await pollList();
        continue;
      }
      if (!resp.ok) throw new Error(await errorText(resp));
      setText($("conn-state"), "live");
      await readSse(resp, (type, data) => {
        const body = JSON.parse(data);
        if (type === "snapshot") {
          body.backends.forEach(upsert);
          updateCount();
          // The snapshot is the list's first page; the stream sends changes of them all.
          readPages(body.next).catch((e) => setText($("conn-state"), "live (older pages: " + e.message + ")"));
        }
        else if (type === "backend") upsert(body);
      });
    } catch (e) {
      setText($("conn-state"), "reconnecting… (" + e.message + ")");
    }
    await sleep(1000);
  }
}

/** A server without the list stream: the list every 2 s. */
async function pollList() {
  setText($("conn-state"), "polling");
  const resp = await api("/v1/backends");
  if (!resp.ok) throw new Error(await errorText(resp));
  const body = await resp.json();
  body.backends.forEach(upsert);
  await readPages(body.next);
  updateCount();
  await sleep(1000);
}

/** The list's pages after the one that gave `next` (the API answers a page at a time). */
async function readPages(next) {
  while (next) {
    const resp = await api("/v1/backends?after=" + encodeURIComponent(next));
    if (!resp.ok) throw new Error(await errorText(resp));
    const page = await resp.json();
    page.backends.forEach(upsert);
    next = page.next;
  }
  updateCount();
}

// ---- A backend's page -------------------------------------------------------------------

let page = null; // {id, abort, record}

function openBackend(id) {
  if (page && page.id === id) return;
  closeBackend();
  const abort = new AbortController();
  page = { id, abort };
  for (const f of ["b-state", "b-reason", "b-key", "b-conns", "b-activity", "b-created",
    "b-runtime", "b-address", "b-exit", "b-spec", "b-logs", "b-action-result", "b-logs-state"]) {
    $(f).textContent = "";
  }
  delete $("b-state").dataset.state;
  $("b-event-rows").replaceChildren();
  $("b-id").textContent = id;
  const known = backends.get(id);
  if (known) showRecord(known);
  loadRecord(id, abort.signal);
  loadAccess(id);
  followEvents(id, abort.signal);
  followLogs(id, abort.signal);
}

function closeBackend() {
  if (page) page.abort.abort();
  page = null;
}

listeners.add((record) => {
  if (page && page.id === record.id) showRecord(record);
});

function showRecord(record) {
  const badge = $("b-state");
  if (badge.dataset.state !== record.state) {
    badge.dataset.state = record.state;
    badge.textContent = record.state;
  }
  setText($("b-reason"), record.reason || "");
  setText($("b-key"), record.key || "–");
  setText($("b-conns"), String(record.live_connections || 0));
  setText($("b-activity"), record.last_activity ? record.last_activity + " (" + ago(record.last_activity) + " ago)" : "–");
  setText($("b-created"), record.created_at + " (" + ago(record.created_at) + " ago)");
  setText($("b-runtime"), [record.runtime, record.node].filter(Boolean).join(" on "));
  setText($("b-address"), record.address || "–");
  setText($("b-exit"), record.exit_code == null ? "–" : String(record.exit_code));
  $("b-url").href = record.url;
  const ended = TERMINAL.has(record.state);
  $("b-terminate").disabled = ended;
  $("b-kill").disabled = ended;
  if (record.spec) setText($("b-spec"), JSON.stringify(record.spec, null, 2));
}

async function loadRecord(id, signal) {
  try {
    const resp = await api("/v1/backends/" + id, { signal });
    if (!resp.ok) {
      setText($("b-reason"), await errorText(resp));
      return;
    }
    const record = await resp.json();
    delete record.events;
    const known = backends.get(id);
    // The list stream may already know more than this read.
    if (!known || known.state === record.state) showRecord(record);
    if (!known) upsert(record);
  } catch (e) {
    if (!signal.aborted) setText($("b-reason"), e.message);
  }
}

/** The status stream: every event, then new ones until a terminal state. */
async function followEvents(id, signal) {
  let last = null;
  let first = null;
  while (!signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (last) headers["Last-Event-ID"] = last;
      const resp = await api("/v1/backends/" + id + "/status/stream", { headers, signal });
      if (!resp.ok) return;
      let ended = false;
      await readSse(resp, (type, data, seq) => {
        if (type !== "message") return; // an announcement (expiring), not a state change
        const e = JSON.parse(data);
        last = seq;
        if (first === null) first = Date.parse(e.time);
        const tr = el("tr", { "data-state": e.state });
        tr.appendChild(el("td", { class: "mono" }, e.time));
        tr.appendChild(el("td", { class: "num" }, "+" + (Date.parse(e.time) - first) + " ms"));
        const st = tr.appendChild(el("td"));
        st.appendChild(el("span", { class: "state", "data-state": e.state }, e.state));
        tr.appendChild(el("td", { class: "reason-cell" }, e.reason || ""));
        $("b-event-rows").appendChild(tr);
        ended = TERMINAL.has(e.state);
        const known = backends.get(id);
        // States only move forward: a replayed old event never takes the record back.
        if (known && ORDER.indexOf(e.state) > ORDER.indexOf(known.state)) {
          upsert(Object.assign({}, known, { state: e.state, reason: e.reason || null }));
        }
      });
      if (ended) return;
    } catch (e) {
      if (signal.aborted) return;
    }
    await sleep(1000);
  }
}

/** The logs, followed until the backend has ended. */
async function followLogs(id, signal) {
  const out = $("b-logs");
  const MAX = 512 * 1024;
  try {
    setText($("b-logs-state"), "(following)");
    const resp = await api("/v1/backends/" + id + "/logs?follow=true", { signal });
    if (!resp.ok) {
      setText($("b-logs-state"), "(" + (await errorText(resp)) + ")");
      return;
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atBottom = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      out.appendChild(document.createTextNode(value));
      if (out.textContent.length > MAX) out.textContent = out.textContent.slice(-MAX / 2);
      if (atBottom) out.scrollTop = out.scrollHeight;
    }
    setText($("b-logs-state"), "(complete)");
  } catch (e) {
    if (!signal.aborted) setText($("b-logs-state"), "(" + e.message + ")");
  }
}

async function terminate(hard) {
  if (!page) return;
  const id = page.id;
  const resp = await api("/v1/backends/" + id + "/terminate", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ hard }),
  });
  setText($("b-action-result"), resp.ok ? (hard ? "killing…" : "terminating…") : await errorText(resp));
}

/** Who holds access to a token-mode backend; a revoke button per user. */
async function loadAccess(id) {
  $("b-access").hidden = true;
  $("b-share-link").hidden = true;
  $("b-share-link").value = "";
  setText($("b-access-result"), "");
  const resp = await api("/v1/backends/" + id + "/access");
  if (!resp.ok || !page || page.id !== id) return;
  const list = await resp.json();
  setText($("b-access-mode"), "(" + list.mode + ")");
  $("b-access").hidden = list.mode !== "token";
  const rows = list.users.map((u) => {
    const tr = el("tr", { "data-user": u.user });
    tr.appendChild(el("td", { class: "mono user" }, u.user));
    tr.appendChild(el("td", { class: "mono" }, u.granted_at));
    tr.appendChild(el("td", { class: "mono" }, u.user_data == null ? "" : JSON.stringify(u.user_data)));
    const button = el("button", { class: "danger revoke" }, "Revoke");
    button.onclick = () => revoke(id, u.user);
    tr.appendChild(el("td")).appendChild(button);
    return tr;
  });
  $("b-access-rows").replaceChildren(...rows);
}

async function revoke(id, user) {
  const resp = await api("/v1/backends/" + id + "/access/" + encodeURIComponent(user), { method: "DELETE" });
  setText($("b-access-result"), resp.ok ? "revoked " + user : await errorText(resp));
  loadAccess(id);
}

/** The share form: a connect URL for another user, shown to be passed on. */
async function share(ev) {
  ev.preventDefault();
  if (!page) return;
  const id = page.id;
  const user = $("b-share-user").value.trim();
  const resp = await api("/v1/backends/" + id + "/connect", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user, ttl_seconds: 600 }),
  });
  if (!resp.ok) {
    setText($("b-access-result"), await errorText(resp));
    return;
  }
  const answer = await resp.json();
  await loadAccess(id);
  const link = $("b-share-link");
  link.value = answer.connect_url;
  link.hidden = false;
  setText($("b-access-result"), "a link for " + user + ", valid 10 minutes, once:");
}

// ---- The spawn form ---------------------------------------------------------------------

/** Splits a command line like a POSIX shell would, quotes and backslashes included. */
function shellSplit(line) {
  const words = [];
  let word = null, quote = null;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quote === "'") {
      if (ch === "'") quote = null; else word += ch;
    } else if (quote === '"') {
      if (ch === '"') quote = null;
      else if (ch === "\\" && i + 1 < line.length && '"\\$`'.includes(line[i + 1])) word += line[++i];
      else word += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch; word = word || "";
    } else if (ch === "\\" && i + 1 < line.length) {
      word = (word || "") + line[++i];
    } else if (/\s/.test(ch)) {
      if (word !== null) words.push(word);
      word = null;
    } else {
      word = (word || "") + ch;
    }
  }
  if (quote) throw new Error("Command: unbalanced " + quote + " quote");
  if (word !== null) words.push(word);
  return words;
}

function pairs(text, what) {
  const out = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const i = line.indexOf("=");
    if (i <= 0) throw new Error(what + ": " + JSON.stringify(line) + " must be NAME=VALUE");
    out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

async function spawn(ev) {
  ev.preventDefault();
  const error = $("spawn-error");
  error.textContent = "";
  let spec;
  try {
    const command = shellSplit($("spawn-command").value.trim());
    const image = $("spawn-image").value.trim();
    if (!command.length && !image) throw new Error("Give a command or an image.");
    const executable = {};
    if (command.length) executable.command = command;
    if (image) executable.image = image;
    const env = pairs($("spawn-env").value, "Environment");
    if (Object.keys(env).length) executable.env = env;
    if ($("spawn-port").value) executable.port = Number($("spawn-port").value);
    spec = { executable };
    if ($("spawn-grace").value) spec.grace_period_seconds = Number($("spawn-grace").value);
    if ($("spawn-key").value.trim()) spec.key = $("spawn-key").value.trim();
    const labels = pairs($("spawn-labels").value, "Labels");
    if (Object.keys(labels).length) spec.labels = labels;
  } catch (e) {
    error.textContent = e.message;
    return;
  }
  $("spawn-submit").disabled = true;
  try {
    const resp = await api("/v1/backends", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(spec),
    });
    if (!resp.ok) {
      error.textContent = await errorText(resp);
      return;
    }
    const created = await resp.json();
    location.hash = "#/backends/" + created.id;
  } catch (e) {
    error.textContent = e.message;
  } finally {
    $("spawn-submit").disabled = false;
  }
}

// ---- Pools -------------------------------------------------------------------------------

let poolTimer = null;

/** Shows every pool's counts, read again each second while the view is open. */
async function showPools() {
  try {
    const resp = await api("/v1/pools");
    if (!resp.ok) {
      $("pools-error").textContent =
        resp.status === 404 ? "This server has no pools (a version before warm pools)." : await errorText(resp);
      return;
    }
    $("pools-error").textContent = "";
    let { pools, next } = await resp.json();
    // A page at a time, by name.
    while (next) {
      const more = await api("/v1/pools?after=" + encodeURIComponent(next));
      if (!more.ok) throw new Error(await errorText(more));
      const page = await more.json();
      pools = pools.concat(page.pools);
      next = page.next;
    }
    const rows = $("pool-rows");
    rows.replaceChildren(
      ...pools.map((p) => {
        const row = el("div", { class: "row pool", role: "row", "data-pool": p.name });
        row.append(el("span", {}, p.name));
        for (const n of [p.ready, p.starting, p.claimed, p.min_ready, p.max, p.claims, p.cold_claims]) {
          row.append(el("span", { class: "num" }, String(n)));
        }
        return row;
      }),
    );
    $("pools-empty").hidden = pools.length > 0;
  } catch (e) {
    $("pools-error").textContent = e.message;
  }
}

function followPools() {
  stopPools();
  showPools();
  poolTimer = setInterval(showPools, 1000);
}

function stopPools() {
  if (poolTimer) clearInterval(poolTimer);
  poolTimer = null;
}

// ---- Views ------------------------------------------------------------------------------

function showOnly(name) {
  for (const v of ["login", "view-list", "view-backend", "view-spawn", "view-pools"]) $(v).hidden = v !== name;
}

function route() {
  if (asking) return;
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/backends\/([a-z2-7]+)$/);
  if (hash !== "#/pools") stopPools();
  if (hash === "#/pools") {
    closeBackend();
    showOnly("view-pools");
    followPools();
    return;
  }
  if (m) {
    showOnly("view-backend");
    openBackend(m[1]);
  } else if (hash === "#/spawn") {
    closeBackend();
    showOnly("view-spawn");
    $("spawn-command").focus();
  } else {
    closeBackend();
    showOnly("view-list");
  }
  followList();
}

$("filter-state").onchange = readFilter;
$("filter-label").oninput = readFilter;
$("filter-ended").onchange = readFilter;
$("spawn-form").onsubmit = spawn;
$("b-terminate").onclick = () => terminate(false);
$("b-kill").onclick = () => terminate(true);
$("b-share").onsubmit = share;
$("logout").hidden = !sessionStorage.getItem(TOKEN_KEY);
$("logout").onclick = () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
};
// A login link opened in a tab that shows the dashboard already changes only the fragment.
window.addEventListener("hashchange", () => redeemLogin().then(route));
redeemLogin().then(route);
