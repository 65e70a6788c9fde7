// Spawner's dashboard: plain JavaScript, no build step. It speaks the HTTP API of
// docs/api.md with the token of this tab (sessionStorage), always as an Authorization
// header: event streams are read with fetch() because EventSource cannot send headers.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "spawner-token";
const TERMINAL = new Set(["Swept", "Failed", "Terminated"]);
const ORDER = ["Submitted", "Constructed", "Scheduled", "Running", "Ready", "Sleeping", "Waking",
  "Terminating", "Swept", "Failed", "Terminated"];
const LOOP = new Set(["Sleeping", "Waking"]);

/** Whether a backend in `from` may be in `to` next (the server's rule): forward in ORDER,
 * except the sleep loop, Ready → Sleeping → Waking → Ready, entered along its edges only. */
function mayFollow(from, to) {
  if (TERMINAL.has(from)) return false;
  if ((from === "Ready" && to === "Sleeping") || (from === "Sleeping" && to === "Waking")) return true;
  if (LOOP.has(to)) return false;
  if (from === "Waking" && to === "Ready") return true;
  return ORDER.indexOf(to) > ORDER.indexOf(from);
}

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

/** A duration in seconds as people say it: `45 s`, `3 min 20 s`, `2 h 5 min`, `3 d 4 h`. */
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min" + (s % 60 && s < 600 ? " " + (s % 60) + " s" : "");
  if (s < 86400) return Math.floor(s / 3600) + " h" + (s % 3600 >= 60 ? " " + Math.floor((s % 3600) / 60) + " min" : "");
  return Math.floor(s / 86400) + " d" + (s % 86400 >= 3600 ? " " + Math.floor((s % 86400) / 3600) + " h" : "");
}

/** How long ago `iso` was, without "ago" (the list's columns). */
function ago(iso) {
  if (!iso) return "–";
  return duration((Date.now() - Date.parse(iso)) / 1000);
}

/** `12 s ago` or `in 5 min`, from now to `ms` (epoch milliseconds). */
function relative(ms) {
  const d = ms - Date.now();
  // Within a second counts as now, so that "in 0 s" never shows for a time just past.
  if (d <= 500) return duration(-d / 1000) + " ago";
  return "in " + duration(d / 1000);
}

/** Local date and time, for titles: the API's times are UTC, people read their own. */
function localTime(ms) {
  return new Date(ms).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZoneName: "short",
  });
}

/** The local time of day to the millisecond (an event's time; its date is in its title). */
function clockTime(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString(undefined, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

/** A `<time>` that says how long ago (or until) it is, kept current by the clock below, with
 * the local date and time as its title. */
function timeNode(ms) {
  if (!Number.isFinite(ms)) return el("span", {}, "–");
  const t = el("time", { datetime: new Date(ms).toISOString(), title: localTime(ms), "data-at": String(ms) });
  t.className = "rel";
  t.textContent = relative(ms);
  return t;
}

/** Every relative time on view moves with the clock, each second, without a reload. */
function tickTimes() {
  for (const t of document.querySelectorAll("main > section:not([hidden]) time[data-at]")) {
    setText(t, relative(Number(t.dataset.at)));
  }
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

/**
 * Puts `parts` (strings and nodes) into `node`, unless the same parts are there already (a
 * rebuilt node would lose its hover); `sig` says what they show.
 */
function setParts(node, sig, parts) {
  if (node.dataset.sig === sig) return;
  node.dataset.sig = sig;
  node.replaceChildren(...parts.map((p) => (typeof p === "string" ? document.createTextNode(p) : p)));
}

// ---- Confirmation -------------------------------------------------------------------------

/** Asks before a stop: resolves true when confirmed, false when cancelled or dismissed. */
function confirmStop(text, action) {
  const dialog = $("confirm");
  if (dialog.open) return Promise.resolve(false);
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = action;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

async function postTerminate(id, hard) {
  return api("/v1/backends/" + id + "/terminate", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ hard }),
  });
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

/** Applies the records that arrived since the last frame: only their rows change, and the
 * rows move only when the order they are sorted by changed. */
function flush() {
  frameAsked = false;
  const batch = pending;
  pending = new Map();
  for (const record of batch.values()) {
    const known = backends.get(record.id);
    // A record read by itself (the backend's page) may hold fields a list's lacks.
    backends.set(record.id, known ? Object.assign({}, known, record) : record);
    if (known) updateRow(backends.get(record.id));
    else {
      $("backend-rows").appendChild(makeRow(record));
    }
    for (const f of listeners) f(backends.get(record.id));
  }
  if (batch.size) reorder();
  updateCount();
}

function makeRow(record) {
  const tr = el("div", { class: "row", role: "row", "data-id": record.id });
  const cells = {};
  for (const name of ["id", "key", "state", "runtime", "conns", "age", "activity", "labels", "row-actions"]) {
    cells[name] = tr.appendChild(el("span", { class: name === "conns" ? "num conns" : name }));
  }
  const a = cells.id.appendChild(el("a", { href: "#/backends/" + record.id }, record.id));
  a.className = "mono";
  cells.keyText = cells.key.appendChild(el("span", { class: "key-text" }));
  cells.poolBadge = cells.key.appendChild(el("span", { class: "pool-badge" }));
  cells.stateBadge = cells.state.appendChild(el("span", { class: "state" }));
  cells.reason = cells.state.appendChild(el("span", { class: "reason" }));
  cells.open = cells["row-actions"].appendChild(el("a", { class: "open", target: "_blank", rel: "noopener" }, "Open"));
  const wake = cells["row-actions"].appendChild(el("button", { type: "button", class: "wake" }, "Wake"));
  wake.onclick = () => wakeRow(record.id);
  cells.wake = wake;
  const stop = cells["row-actions"].appendChild(el("button", { type: "button", class: "terminate danger" }, "Terminate"));
  stop.onclick = () => terminateRow(record.id);
  cells.stop = stop;
  rows.set(record.id, { tr, cells });
  updateRow(record);
  return tr;
}

function updateRow(record) {
  const row = rows.get(record.id);
  if (!row) return;
  const c = row.cells;
  setText(c.keyText, record.key || "");
  setText(c.poolBadge, record.pool ? "pool " + record.pool : "");
  c.poolBadge.hidden = !record.pool;
  if (c.stateBadge.dataset.state !== record.state) {
    c.stateBadge.dataset.state = record.state;
    c.stateBadge.textContent = record.state;
    row.tr.dataset.state = record.state;
  }
  setText(c.reason, record.reason || "");
  if (c.reason.title !== (record.reason || "")) c.reason.title = record.reason || "";
  setText(c.runtime, record.runtime || "");
  setText(c.conns, String(record.live_connections || 0));
  tickRow(row, record);
  const labels = labelsText(record.labels || (record.spec && record.spec.labels));
  if (c.labels.dataset.text !== labels) {
    c.labels.dataset.text = labels;
    c.labels.replaceChildren(...labels.split(" ").filter(Boolean).map((l) => el("span", { class: "label" }, l)));
  }
  if (record.url && c.open.getAttribute("href") !== record.url) c.open.setAttribute("href", record.url);
  const ended = TERMINAL.has(record.state);
  c.open.hidden = ended;
  c.stop.hidden = ended;
  c.stop.disabled = record.state === "Terminating";
  c.wake.hidden = record.state !== "Sleeping";
  row.tr.hidden = !matches(record);
}

/** The columns that move with the clock: age and last activity, the local time as title. */
function tickRow(row, record) {
  const c = row.cells;
  setText(c.age, ago(record.created_at));
  const created = record.created_at ? localTime(Date.parse(record.created_at)) : "";
  if (c.age.title !== created) c.age.title = created;
  const ended = TERMINAL.has(record.state);
  setText(c.activity, ended ? "–" : ago(record.last_activity));
  const active = !ended && record.last_activity ? localTime(Date.parse(record.last_activity)) : "";
  if (c.activity.title !== active) c.activity.title = active;
}

async function postWake(id) {
  return api("/v1/backends/" + id + "/wake", { method: "POST" });
}

/** Wakes a Sleeping backend ahead of its user (no confirmation: nothing is lost). */
async function wakeRow(id) {
  const resp = await postWake(id);
  setText($("list-error"), resp.ok ? "" : id + ": " + (await errorText(resp)));
}

async function terminateRow(id) {
  const record = backends.get(id);
  if (!record || TERMINAL.has(record.state)) return;
  const what = id + (record.key ? " (key " + record.key + ")" : "");
  if (!(await confirmStop("Terminate " + what + "? Its clients are disconnected and the process is stopped.", "Terminate"))) return;
  const resp = await postTerminate(id, false);
  setText($("list-error"), resp.ok ? "" : id + ": " + (await errorText(resp)));
}

// ---- Sort ----------------------------------------------------------------------------------

let sort = { by: "age", desc: false }; // age ascending: the newest first

const SORT_KEYS = {
  id: (r) => r.id,
  key: (r) => r.key || "\uffff", // no key sorts last
  state: (r) => ORDER.indexOf(r.state),
  conns: (r) => r.live_connections || 0,
  age: (r) => -Date.parse(r.created_at || 0),
  activity: (r) => (r.last_activity && !TERMINAL.has(r.state) ? -Date.parse(r.last_activity) : Infinity),
};

function compare(a, b) {
  const key = SORT_KEYS[sort.by];
  const x = key(a), y = key(b);
  let c = x < y ? -1 : x > y ? 1 : 0;
  if (sort.desc) c = -c;
  if (c === 0) c = a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : a.id < b.id ? -1 : 1;
  return c;
}

/** Puts the rows in the order chosen, moving them only if it changed. */
function reorder() {
  const body = $("backend-rows");
  const sorted = [...backends.values()].sort(compare);
  let same = body.children.length === sorted.length;
  if (same) {
    let child = body.firstElementChild;
    for (const r of sorted) {
      if (!child || child.dataset.id !== r.id) {
        same = false;
        break;
      }
      child = child.nextElementSibling;
    }
  }
  if (same) return;
  const frag = document.createDocumentFragment();
  for (const r of sorted) {
    const row = rows.get(r.id);
    if (row) frag.appendChild(row.tr);
  }
  body.appendChild(frag);
}

function setSort(by) {
  sort = sort.by === by ? { by, desc: !sort.desc } : { by, desc: by === "conns" };
  for (const b of document.querySelectorAll("#backends .head [data-sort]")) {
    const on = b.dataset.sort === sort.by;
    b.classList.toggle("sorted", on);
    // Age and activity sort by how long ago: ascending is the most recent first.
    if (on) b.setAttribute("aria-sort", sort.desc ? "descending" : "ascending");
    else b.removeAttribute("aria-sort");
  }
  reorder();
}

// ---- Filters ----------------------------------------------------------------------------

let filter = { state: "", labels: [], ended: false, search: "" };

function readFilter() {
  const labels = $("filter-label").value.split(/[,\s]+/).filter(Boolean).map((p) => {
    const i = p.indexOf("=");
    return i < 0 ? [p, null] : [p.slice(0, i), p.slice(i + 1)];
  });
  filter = {
    state: $("filter-state").value,
    labels,
    ended: $("filter-ended").checked,
    search: $("filter-search").value.trim().toLowerCase(),
  };
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
  if (filter.search && !record.id.includes(filter.search) && !(record.key || "").toLowerCase().includes(filter.search)) {
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

/** Ages and idle times move with the clock: refreshed each second for the rows on view. */
function tickList() {
  if ($("view-list").hidden) return;
  for (const record of backends.values()) {
    const row = rows.get(record.id);
    if (row && !row.tr.hidden) tickRow(row, record);
  }
}

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

// {id, abort, record (once read: the actions act on it alone), acting (what was asked)}
let page = null;
const ID_SHAPE = /^[a-z][a-z2-7]{25}$/;

function openBackend(id) {
  if (page && page.id === id) {
    showOnly("view-backend");
    return;
  }
  closeBackend();
  const abort = new AbortController();
  page = { id, abort, record: null, acting: "" };
  for (const f of ["b-state", "b-reason", "b-key", "b-conns", "b-activity", "b-created",
    "b-runtime", "b-address", "b-exit", "b-spec", "b-logs", "b-action-result", "b-logs-state",
    "b-lifetime", "b-idle", "b-grace", "b-busy", "b-client-activity", "b-pool", "b-claimed"]) {
    $(f).textContent = "";
    delete $(f).dataset.sig;
  }
  delete $("b-state").dataset.state;
  $("b-expiring").hidden = true;
  $("b-event-rows").replaceChildren();
  $("b-id").textContent = id;
  // Nothing to act on until this backend's record is read.
  $("b-actions").hidden = true;
  $("b-terminate").disabled = true;
  $("b-kill").disabled = true;
  $("b-wake").hidden = true;
  if (!ID_SHAPE.test(id)) {
    notFound("No backend has the id " + JSON.stringify(id) + ": ids are 26 letters and digits.");
    return;
  }
  showOnly("view-backend");
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

function notFound(text) {
  closeBackend();
  setText($("notfound-text"), text);
  showOnly("view-notfound");
}

listeners.add((record) => {
  if (page && page.id === record.id) showRecord(record);
});

/** Shows `record` on the backend's page; a field it lacks keeps what was shown. */
function showRecord(update) {
  if (!page || page.id !== update.id) return;
  const shown = page.record;
  if (shown && update.state && update.state !== shown.state && !mayFollow(shown.state, update.state)) {
    // States only move forward: a record read before the last event keeps that event's.
    update = Object.assign({}, update, { state: shown.state, reason: shown.reason, exit_code: shown.exit_code });
  }
  const record = Object.assign({}, page.record || {}, update);
  page.record = record;
  const badge = $("b-state");
  if (badge.dataset.state !== record.state) {
    badge.dataset.state = record.state;
    badge.textContent = record.state;
  }
  const ended = TERMINAL.has(record.state);
  setText($("b-reason"), record.reason || "");
  setText($("b-key"), record.key || "–");
  showOptional("b-pool", record.pool, () => [el("a", { href: "#/pools/" + record.pool }, record.pool)]);
  showOptional("b-claimed", record.claimed_at, () => [timeNode(Date.parse(record.claimed_at))]);
  setText($("b-conns"), String(record.live_connections || 0));
  const spec = record.spec || {};
  const created = Date.parse(record.created_at);
  setParts($("b-created"), record.created_at, [timeNode(created)]);
  // The lifetime counts from Submitted, or from the claim for a pool's backend.
  const lifetime = spec.lifetime_limit_seconds;
  if (lifetime) {
    const from = record.claimed_at ? Date.parse(record.claimed_at) : created;
    const at = from + lifetime * 1000;
    setParts($("b-lifetime"), lifetime + "/" + at + "/" + ended, ended
      ? [duration(lifetime)]
      : [duration(lifetime) + " · stops ", timeNode(at)]);
  } else {
    setParts($("b-lifetime"), "none", ["none"]);
  }
  const idle = spec.idle_timeout_seconds;
  const lca = record.last_client_activity ? Date.parse(record.last_client_activity) : null;
  const busy = record.busy_until ? Date.parse(record.busy_until) : null;
  if (idle) {
    const parts = [duration(idle) + " of client silence"];
    if (!ended && record.state === "Ready" && lca !== null) {
      // Not before a keepalive's time, whatever the clients do.
      parts.push(" · due ", timeNode(Math.max(lca + idle * 1000, busy || 0)));
    }
    setParts($("b-idle"), idle + "/" + lca + "/" + busy + "/" + record.state, parts);
  } else {
    setParts($("b-idle"), "none", ["none"]);
  }
  const grace = spec.grace_period_seconds;
  setText($("b-grace"), grace ? duration(grace) + " without a connection" : "–");
  setParts($("b-busy"), String(busy), busy ? [timeNode(busy)] : ["–"]);
  setParts($("b-client-activity"), String(lca), lca !== null ? [timeNode(lca)] : ["–"]);
  const act = record.last_activity ? Date.parse(record.last_activity) : null;
  setParts($("b-activity"), String(act) + ended, act !== null && !ended ? [timeNode(act)] : ["–"]);
  setText($("b-runtime"), [record.runtime, record.node].filter(Boolean).join(" on "));
  setText($("b-address"), record.address || "–");
  setText($("b-exit"), record.exit_code == null ? "–" : String(record.exit_code));
  if (record.url) $("b-url").href = record.url;
  $("b-url").hidden = ended;
  $("b-terminate").disabled = ended;
  $("b-kill").disabled = ended;
  $("b-wake").hidden = record.state !== "Sleeping";
  if (ended) {
    page.acting = "";
    $("b-expiring").hidden = true;
  }
  setText($("b-action-result"), record.state === "Terminating" && !page.acting ? "terminating…" : page.acting);
  if (record.spec) setText($("b-spec"), JSON.stringify(record.spec, null, 2));
}

/** A fact that only some records have (`pool`, `claimed_at`): shown when there. */
function showOptional(id, value, parts) {
  $(id).hidden = !value;
  $(id + "-term").hidden = !value;
  if (value) setParts($(id), String(value), parts());
}

async function loadRecord(id, signal) {
  try {
    const resp = await api("/v1/backends/" + id, { signal });
    if (!page || page.id !== id) return;
    if (resp.status === 404) {
      notFound("No backend " + id + " on this server: it never existed, or it ended and was forgotten.");
      return;
    }
    if (!resp.ok) {
      setText($("b-reason"), await errorText(resp));
      return;
    }
    const record = await resp.json();
    delete record.events;
    const known = backends.get(id);
    // The list stream may already know a later state than this read.
    if (known && mayFollow(record.state, known.state)) record.state = known.state;
    showRecord(record);
    $("b-actions").hidden = false;
    upsert(record);
  } catch (e) {
    if (!signal.aborted) setText($("b-reason"), e.message);
  }
}

/** The status stream: every event, then new ones until a terminal state; each event shows
 * at once (state, reason, exit code), and the record is read again when it has ended. */
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
        if (type === "expiring") {
          const e = JSON.parse(data);
          const note = $("b-expiring");
          setParts(note, data, ["Stops ", timeNode(Date.parse(e.at)), " (" + e.reason + ")"]);
          note.hidden = false;
          return;
        }
        if (type !== "message") return;
        const e = JSON.parse(data);
        last = seq;
        if (first === null) first = Date.parse(e.time);
        const tr = el("tr", { "data-state": e.state });
        const at = Date.parse(e.time);
        const when = tr.appendChild(el("td", { class: "mono", title: localTime(at) }, clockTime(at)));
        when.dataset.utc = e.time;
        tr.appendChild(el("td", { class: "num" }, "+" + (Date.parse(e.time) - first) + " ms"));
        const st = tr.appendChild(el("td"));
        st.appendChild(el("span", { class: "state", "data-state": e.state }, e.state));
        tr.appendChild(el("td", { class: "reason-cell" }, e.reason || ""));
        $("b-event-rows").appendChild(tr);
        ended = TERMINAL.has(e.state);
        const known = (page && page.id === id && page.record) || backends.get(id);
        // States only move forward: a replayed old event never takes the record back.
        if (known && (e.state === known.state || mayFollow(known.state, e.state))) {
          const patch = { id, state: e.state, reason: e.reason || null };
          if (e.exit_code != null) patch.exit_code = e.exit_code;
          showRecord(patch);
          if (backends.has(id)) upsert(Object.assign({}, backends.get(id), patch));
        }
      });
      if (ended) {
        // What the end changed besides the state: connections, activity, the exit code.
        loadRecord(id, signal);
        return;
      }
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

/** Terminate or Kill, asked first, and only ever of the backend whose record is shown. */
async function terminate(hard) {
  const record = page && page.record;
  if (!record || TERMINAL.has(record.state)) return;
  const id = record.id;
  const asked = hard
    ? "Kill " + id + " now? It gets SIGKILL at once, with no time to save anything."
    : "Terminate " + id + "? Its clients are disconnected and it gets SIGTERM, then SIGKILL after the stop grace.";
  if (!(await confirmStop(asked, hard ? "Kill" : "Terminate"))) return;
  if (!page || page.id !== id) return;
  const resp = await postTerminate(id, hard);
  if (!page || page.id !== id) return;
  if (resp.ok) {
    const answer = await resp.json();
    if (!TERMINAL.has(answer.state)) page.acting = hard ? "killing…" : "terminating…";
    showRecord({ id, state: answer.state });
  } else {
    setText($("b-action-result"), await errorText(resp));
  }
}

async function wake() {
  const record = page && page.record;
  if (!record || record.state !== "Sleeping") return;
  const id = record.id;
  const resp = await postWake(id);
  if (!page || page.id !== id) return;
  if (resp.ok) {
    const answer = await resp.json();
    showRecord({ id, state: answer.state });
  } else {
    setText($("b-action-result"), await errorText(resp));
  }
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
    tr.appendChild(el("td")).appendChild(timeNode(Date.parse(u.granted_at)));
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
    optionalNumber("spawn-idle", "idle_timeout_seconds", spec);
    optionalNumber("spawn-lifetime", "lifetime_limit_seconds", spec);
    optionalNumber("spawn-startup", "startup_timeout_seconds", spec);
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

/** Every pool's status, a page at a time by name. */
async function readPools() {
  const resp = await api("/v1/pools");
  if (!resp.ok) {
    throw new Error(resp.status === 404 ? "This server has no pools (a version before warm pools)." : await errorText(resp));
  }
  let { pools, next } = await resp.json();
  while (next) {
    const more = await api("/v1/pools?after=" + encodeURIComponent(next));
    if (!more.ok) throw new Error(await errorText(more));
    const page = await more.json();
    pools = pools.concat(page.pools);
    next = page.next;
  }
  return pools;
}

/** Shows every pool's counts, read again each second while the view is open. */
async function showPools() {
  try {
    const pools = await readPools();
    $("pools-error").textContent = "";
    const rows = $("pool-rows");
    rows.replaceChildren(
      ...pools.map((p) => {
        const row = el("div", { class: "row pool", role: "row", "data-pool": p.name });
        row.append(el("span", { class: "name" }));
        row.firstChild.append(el("a", { href: "#/pools/" + p.name }, p.name));
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

function followPools(show) {
  stopPools();
  show();
  poolTimer = setInterval(show, 1000);
}

function stopPools() {
  if (poolTimer) clearInterval(poolTimer);
  poolTimer = null;
}

function optionalNumber(id, field, out) {
  const v = $(id).value.trim();
  if (v !== "") out[field] = Number(v);
}

/** The create form: a pool's sizes and its template (a spawn body without a key). */
async function createPool(ev) {
  ev.preventDefault();
  const error = $("pool-create-error");
  error.textContent = "";
  let body;
  try {
    const command = shellSplit($("pool-command").value.trim());
    const image = $("pool-image").value.trim();
    if (!command.length && !image) throw new Error("Give the template a command or an image.");
    const executable = {};
    if (command.length) executable.command = command;
    if (image) executable.image = image;
    const env = pairs($("pool-env").value, "Environment");
    if (Object.keys(env).length) executable.env = env;
    optionalNumber("pool-port", "port", executable);
    const template = { executable };
    optionalNumber("pool-grace", "grace_period_seconds", template);
    optionalNumber("pool-idle", "idle_timeout_seconds", template);
    optionalNumber("pool-lifetime", "lifetime_limit_seconds", template);
    optionalNumber("pool-startup", "startup_timeout_seconds", template);
    const labels = pairs($("pool-labels").value, "Labels");
    if (Object.keys(labels).length) template.labels = labels;
    if ($("pool-claim-path").value.trim()) template.claim_path = $("pool-claim-path").value.trim();
    body = {
      name: $("pool-name").value.trim(),
      min_ready: Number($("pool-min").value),
      max: Number($("pool-max").value),
      template,
    };
  } catch (e) {
    error.textContent = e.message;
    return;
  }
  $("pool-submit").disabled = true;
  try {
    const resp = await api("/v1/pools", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!resp.ok) {
      error.textContent = await errorText(resp);
      return;
    }
    $("pool-form").reset();
    $("pool-create-box").open = false;
    location.hash = "#/pools/" + body.name;
  } catch (e) {
    error.textContent = e.message;
  } finally {
    $("pool-submit").disabled = false;
  }
}

// ---- A pool's page -----------------------------------------------------------------------

let poolPage = null; // {name, status, sized (the resize form was filled)}

function openPool(name) {
  poolPage = { name, status: null, sized: false };
  for (const f of ["p-name", "p-error", "p-ready", "p-starting", "p-claimed", "p-claims", "p-template",
    "p-result", "p-members-count"]) {
    $(f).textContent = "";
  }
  // Emptied, so drawn again from the first status read even when its members are unchanged.
  $("p-member-rows").replaceChildren();
  delete $("p-member-rows").dataset.sig;
  $("p-name").textContent = name;
  $("p-resize").hidden = true;
  followPools(showPool);
}

async function showPool() {
  const name = poolPage && poolPage.name;
  if (!name) return;
  const resp = await api("/v1/pools/" + encodeURIComponent(name));
  if (!poolPage || poolPage.name !== name) return;
  if (resp.status === 404) {
    stopPools();
    notFound("No pool " + JSON.stringify(name) + " on this server.");
    return;
  }
  if (!resp.ok) {
    setText($("p-error"), await errorText(resp));
    return;
  }
  setText($("p-error"), "");
  const status = await resp.json();
  poolPage.status = status;
  setText($("p-ready"), status.ready + " (keeps " + status.min_ready + " Ready or starting)");
  setText($("p-starting"), String(status.starting));
  setText($("p-claimed"), status.claimed + " (at most " + status.max + " in all)");
  setText($("p-claims"), status.claims + " answered, " + status.cold_claims + " of them cold");
  const exe = (status.template && status.template.executable) || {};
  setText($("p-template"), exe.image || (exe.command || []).join(" "));
  if (!poolPage.sized) {
    poolPage.sized = true;
    $("p-min").value = status.min_ready;
    $("p-max").value = status.max;
    $("p-resize").hidden = false;
  }
  showMembers(status);
}

/** The pool's backends that have not ended: the records that name it as their `pool`. */
function showMembers(status) {
  const members = [...backends.values()]
    .filter((r) => !TERMINAL.has(r.state) && r.pool === status.name)
    .sort(compare);
  setText($("p-members-count"), "(" + members.length + ")");
  const sig = members.map((r) => [r.id, r.state, r.key, r.claimed_at].join("/")).join(" ");
  const body = $("p-member-rows");
  if (body.dataset.sig === sig) return;
  body.dataset.sig = sig;
  body.replaceChildren(...members.map((r) => {
    const tr = el("tr", { "data-id": r.id });
    tr.appendChild(el("td", { class: "id" })).appendChild(el("a", { href: "#/backends/" + r.id, class: "mono" }, r.id));
    tr.appendChild(el("td")).appendChild(el("span", { class: "state", "data-state": r.state }, r.state));
    const cell = tr.appendChild(el("td", { class: "claim" }, r.claimed_at ? "claimed" + (r.key ? " by " + r.key : "") : "unclaimed"));
    if (r.claimed_at) cell.append(" ", timeNode(Date.parse(r.claimed_at)));
    tr.appendChild(el("td")).appendChild(timeNode(Date.parse(r.created_at)));
    return tr;
  }));
}

async function resizePool(ev) {
  ev.preventDefault();
  const name = poolPage && poolPage.name;
  if (!name) return;
  const resp = await api("/v1/pools/" + encodeURIComponent(name), {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ min_ready: Number($("p-min").value), max: Number($("p-max").value) }),
  });
  setText($("p-result"), resp.ok ? "resized" : await errorText(resp));
  if (resp.ok) showPool();
}

async function deletePool() {
  const name = poolPage && poolPage.name;
  if (!name) return;
  const status = poolPage.status;
  const unclaimed = status ? status.ready + status.starting : 0;
  const asked = "Delete pool " + name + "? Its " + unclaimed + " unclaimed backend(s) are stopped; claimed ones run on.";
  if (!(await confirmStop(asked, "Delete pool"))) return;
  const resp = await api("/v1/pools/" + encodeURIComponent(name), { method: "DELETE" });
  if (!resp.ok) {
    setText($("p-result"), await errorText(resp));
    return;
  }
  const answer = await resp.json();
  setText($("pools-result"), "Deleted pool " + answer.name + "; stopping " + answer.stopping + " unclaimed backend(s).");
  location.hash = "#/pools";
}

// ---- Overview: the server's own figures over time ------------------------------------

const METRICS_KEY = "spawner-metrics";
const HISTORY_MS = 3600 * 1000;
const SAMPLE_MS = 2000;
const STARTING = ["Submitted", "Constructed", "Scheduled", "Running", "Waking"];
let samples = loadSamples();
let sampling = false;
let metricsNote = "";

function loadSamples() {
  try {
    const kept = JSON.parse(sessionStorage.getItem(METRICS_KEY) || "[]");
    return Array.isArray(kept) ? kept : [];
  } catch (_) {
    return [];
  }
}

/** Prometheus text: {name: [{labels, value}]}. */
function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    (out[m[1]] = out[m[1]] || []).push({ labels, value: Number(m[3]) });
  }
  return out;
}

/** What the charts need of one reading; a series the server does not report is null. */
function digest(m, t) {
  const by = (name, label) => (m[name] ? Object.fromEntries(m[name].map((x) => [x.labels[label], x.value])) : null);
  const sum = (name) => (m[name] ? m[name].reduce((a, x) => a + x.value, 0) : null);
  const buckets = m.spawner_spawn_to_ready_seconds_bucket;
  return {
    t,
    st: by("spawner_backends", "state"),
    tr: by("spawner_state_transitions_total", "state"),
    sw: sum("spawner_sweeps_total"),
    lc: sum("spawner_live_connections"),
    h: buckets ? buckets.map((x) => [x.labels.le, x.value]) : null,
    pr: by("spawner_pool_ready", "pool"),
  };
}

/** Reads `/metrics` every 2 s, whatever the view, so that the history has no holes. */
async function sampleMetrics() {
  if (sampling) return;
  sampling = true;
  for (;;) {
    try {
      const resp = await api("/metrics");
      if (resp.ok) {
        const now = Date.now();
        samples.push(digest(parseMetrics(await resp.text()), now));
        while (samples.length && samples[0].t < now - HISTORY_MS) samples.shift();
        try {
          sessionStorage.setItem(METRICS_KEY, JSON.stringify(samples));
        } catch (_) {
          samples = samples.slice(samples.length >> 1); // storage full: keep the recent half
        }
        metricsNote = "";
      } else {
        metricsNote = resp.status === 404 ? "this server has no /metrics" : await errorText(resp);
      }
    } catch (e) {
      metricsNote = e.message;
    }
    if (!$("view-overview").hidden) drawOverview();
    await sleep(SAMPLE_MS);
  }
}

/** The sample to measure the window ending at sample `i` from: the last one at least
 * `span` ms before it, or the first. */
function baseline(i, span) {
  let j = i;
  while (j > 0 && samples[i].t - samples[j].t < span) j--;
  return j;
}

/** How much a counter rose over the window; a restarted server's counter starts again. */
function increase(now, then) {
  if (now == null) return null;
  if (then == null || now < then) return now;
  return now - then;
}

/** Prometheus' histogram_quantile over the observations between two readings. */
function quantile(q, now, then) {
  if (!now) return null;
  const before = new Map((then || []).map(([le, n]) => [le, n]));
  const buckets = now
    .map(([le, n]) => [le === "+Inf" ? Infinity : Number(le), n - (before.get(le) || 0)])
    .sort((a, b) => a[0] - b[0]);
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!(total > 0) || buckets.some(([, n]) => n < 0)) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const [upper, n] of buckets) {
    if (n >= rank) {
      if (upper === Infinity) return lower;
      return lower + ((upper - lower) * (rank - below)) / Math.max(n - below, 1e-9);
    }
    lower = upper;
    below = n;
  }
  return lower;
}

function seconds(v) {
  if (v == null) return "–";
  return v < 1 ? Math.round(v * 1000) + " ms" : v.toFixed(v < 10 ? 2 : 1) + " s";
}

const COLORS = ["#2457c5", "#0d7a3e", "#c27c0e", "#b42318", "#7b3fc4", "#0e7490", "#6b7280"];

/**
 * One chart: lines over time in an SVG, a legend, and a readout of the current values
 * (`[name, text]` pairs). `series` is [{name, points: [[t, v|null]]}]; null breaks a line.
 */
function drawChart(id, series, readout, missing) {
  const fig = $(id);
  const plot = fig.querySelector(".plot");
  const out = fig.querySelector(".readout");
  fig.classList.toggle("missing", !!missing);
  if (missing) {
    setText(out, "");
    plot.replaceChildren(el("p", { class: "muted not-reported" }, missing));
    return;
  }
  setParts(out, JSON.stringify(readout), readout.flatMap(([name, text], i) => {
    const s = el("span", { class: "value", "data-series": name }, (name ? name + " " : "") + text);
    return i ? [" · ", s] : [s];
  }));
  const W = 600, H = 150;
  const last = samples.length ? samples[samples.length - 1].t : Date.now();
  const first = samples.length ? samples[0].t : last;
  const span = Math.min(HISTORY_MS, Math.max(2 * 60 * 1000, last - first));
  const x0 = last - span;
  let top = 0;
  for (const s of series) for (const [, v] of s.points) if (v != null && v > top) top = v;
  top = top > 0 ? top * 1.15 : 1;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  for (const f of [0.5, 1]) {
    const y = H - (H * f) / 1.15;
    const grid = document.createElementNS(svg.namespaceURI, "line");
    for (const [k, v] of [["x1", 0], ["x2", W], ["y1", y], ["y2", y], ["class", "grid"]]) grid.setAttribute(k, v);
    svg.appendChild(grid);
  }
  series.forEach((s, i) => {
    let d = "", pen = false;
    for (const [t, v] of s.points) {
      if (v == null || t < x0) {
        pen = false;
        continue;
      }
      const x = ((t - x0) / span) * W, y = H - (v / top) * H;
      d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      pen = true;
    }
    const path = document.createElementNS(svg.namespaceURI, "path");
    path.setAttribute("d", d || "M0 " + H);
    path.setAttribute("stroke", COLORS[i % COLORS.length]);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke-width", "2");
    path.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(path);
  });
  const legend = el("div", { class: "legend" });
  series.forEach((s, i) => {
    const key = document.createElementNS(svg.namespaceURI, "svg");
    key.setAttribute("viewBox", "0 0 10 10");
    key.setAttribute("class", "swatch");
    const r = document.createElementNS(svg.namespaceURI, "rect");
    for (const [k, v] of [["width", 10], ["height", 10], ["rx", 2], ["fill", COLORS[i % COLORS.length]]]) r.setAttribute(k, v);
    key.appendChild(r);
    legend.append(key, el("span", {}, s.name));
  });
  const scale = el("div", { class: "scale muted" });
  scale.append(el("span", {}, "max " + (Number.isInteger(top / 1.15) ? top / 1.15 : (top / 1.15).toFixed(2))),
    el("span", {}, "last " + duration(span / 1000)));
  plot.replaceChildren(scale, svg, legend);
}

const NOT_REPORTED = "not reported by this server";

function drawOverview() {
  setText($("ov-status"), metricsNote ? "(" + metricsNote + ")" : samples.length ? "" : "(reading…)");
  const now = samples[samples.length - 1];
  if (!now) return;
  const at = (f) => samples.map((s, i) => [s.t, f(s, i)]);
  // Backends by state: the live ones (ended ones are in the list).
  if (now.st) {
    const starting = (s) => (s.st ? STARTING.reduce((a, k) => a + (s.st[k] || 0), 0) : null);
    const get = (k) => (s) => (s.st ? s.st[k] || 0 : null);
    drawChart("chart-states", [
      { name: "Ready", points: at(get("Ready")) },
      { name: "starting", points: at(starting) },
      { name: "Sleeping", points: at(get("Sleeping")) },
      { name: "Terminating", points: at(get("Terminating")) },
    ], [["Ready", String(now.st.Ready || 0)], ["starting", String(starting(now))],
      ["Sleeping", String(now.st.Sleeping || 0)], ["Terminating", String(now.st.Terminating || 0)]]);
  } else {
    drawChart("chart-states", [], [], NOT_REPORTED);
  }
  // Spawns (backends entering Submitted) and sweeps in the minute up to each reading.
  if (now.tr || now.sw != null) {
    const perMinute = (f) => (s, i) => {
      const j = baseline(i, 60000);
      return increase(f(s), f(samples[j]));
    };
    const spawned = (s) => (s.tr ? s.tr.Submitted || 0 : null);
    const swept = (s) => s.sw;
    const last = samples.length - 1;
    const series = [], readout = [];
    if (now.tr) {
      series.push({ name: "spawns", points: at(perMinute(spawned)) });
      readout.push(["spawns", String(perMinute(spawned)(now, last))]);
    }
    series.push({ name: "sweeps", points: at(perMinute(swept)) });
    readout.push(["sweeps", now.sw == null ? NOT_REPORTED : String(perMinute(swept)(now, last))]);
    drawChart("chart-spawns", series, readout);
  } else {
    drawChart("chart-spawns", [], [], NOT_REPORTED);
  }
  if (now.lc != null) {
    drawChart("chart-conns", [{ name: "connections", points: at((s) => s.lc) }], [["", String(now.lc)]]);
  } else {
    drawChart("chart-conns", [], [], NOT_REPORTED);
  }
  if (now.h) {
    const q = (p) => (s, i) => quantile(p, s.h, samples[baseline(i, 300000)].h);
    const last = samples.length - 1;
    const p50 = q(0.5)(now, last), p99 = q(0.99)(now, last);
    drawChart("chart-latency", [{ name: "p50", points: at(q(0.5)) }, { name: "p99", points: at(q(0.99)) }],
      p50 == null ? [["", "no backend became Ready in the window"]] : [["p50", seconds(p50)], ["p99", seconds(p99)]]);
  } else {
    drawChart("chart-latency", [], [], NOT_REPORTED);
  }
  if (now.pr && Object.keys(now.pr).length) {
    const names = Object.keys(now.pr).sort();
    drawChart("chart-pools", names.map((n) => ({ name: n, points: at((s) => (s.pr ? (s.pr[n] ?? null) : null)) })),
      names.map((n) => [n, String(now.pr[n])]));
  } else {
    drawChart("chart-pools", [], [], "no pool reported by this server");
  }
}

// ---- Views ------------------------------------------------------------------------------

const VIEWS = ["login", "view-list", "view-backend", "view-notfound", "view-spawn", "view-pools", "view-pool", "view-overview"];

function showOnly(name) {
  for (const v of VIEWS) $(v).hidden = v !== name;
  for (const [nav, views] of [["nav-list", ["view-list", "view-backend"]], ["nav-overview", ["view-overview"]],
    ["nav-pools", ["view-pools", "view-pool"]], ["nav-spawn", ["view-spawn"]]]) {
    $(nav).classList.toggle("current", views.includes(name));
  }
}

function route() {
  if (asking) return;
  const hash = location.hash || "#/";
  const backend = hash.match(/^#\/backends\/([^/]*)$/);
  const pool = hash.match(/^#\/pools\/([^/]+)$/);
  stopPools();
  if (!backend) closeBackend();
  if (!pool) poolPage = null;
  followList();
  sampleMetrics();
  if (backend) {
    openBackend(decodeURIComponent(backend[1]));
  } else if (pool) {
    showOnly("view-pool");
    openPool(decodeURIComponent(pool[1]));
  } else if (hash === "#/pools") {
    showOnly("view-pools");
    followPools(showPools);
  } else if (hash === "#/overview") {
    showOnly("view-overview");
    drawOverview();
  } else if (hash === "#/spawn") {
    showOnly("view-spawn");
    $("spawn-command").focus();
  } else if (hash === "#/" || hash === "#") {
    showOnly("view-list");
  } else {
    notFound("Nothing is at " + hash + ".");
  }
}

$("filter-state").onchange = readFilter;
$("filter-label").oninput = readFilter;
$("filter-search").oninput = readFilter;
$("filter-ended").onchange = readFilter;
for (const b of document.querySelectorAll("#backends .head [data-sort]")) b.onclick = () => setSort(b.dataset.sort);
$("spawn-form").onsubmit = spawn;
$("pool-form").onsubmit = createPool;
$("p-resize").onsubmit = resizePool;
$("p-delete").onclick = deletePool;
$("b-terminate").onclick = () => terminate(false);
$("b-wake").onclick = () => wake();
$("b-kill").onclick = () => terminate(true);
$("b-share").onsubmit = share;
$("logout").hidden = !sessionStorage.getItem(TOKEN_KEY);
$("logout").onclick = () => {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(METRICS_KEY);
  location.reload();
};
setInterval(() => {
  tickTimes();
  tickList();
}, 1000);
// A login link opened in a tab that shows the dashboard already changes only the fragment.
window.addEventListener("hashchange", () => redeemLogin().then(route));
redeemLogin().then(route);
