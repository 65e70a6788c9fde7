// A document app on Node's own HTTP server (no dependencies): every document gets its own
// backend (here `spawner example-app`), the browser follows it starting, live, then goes to it.
//
//   SPAWNER_URL=http://127.0.0.1:8080 SPAWNER_TOKEN=$(spawner token) node examples/node/server.js
//   open http://127.0.0.1:3000/docs/42
//
// The token stays here, on the server: it can start and stop anything. The browser gets the
// document's backend id and this server's narrow status route, which serves only backends
// this app started.
import http from "node:http";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
// In an application: import { Spawner, SpawnerError } from "spawner-client";
import { Spawner, SpawnerError } from "../../clients/js/spawner.js";

const spawner = new Spawner({ url: process.env.SPAWNER_URL || "http://127.0.0.1:8080", token: process.env.SPAWNER_TOKEN });
const APP = "example-node";
const clientModule = fileURLToPath(new URL("../../clients/js/spawner.js", import.meta.url));

/** The document's backend: get-or-create by key, so every user of doc 42 shares one. */
async function backendOf(doc) {
  return spawner.spawn({
    key: `${APP}/${doc}`,
    executable: { command: ["spawner", "example-app"] },
    grace_period_seconds: 60,
    labels: { app: APP, doc },
  });
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://app");
  try {
    let m;
    if (url.pathname === "/") return send(res, 200, "text/html", index());
    if ((m = url.pathname.match(/^\/docs\/([a-z0-9-]{1,40})$/))) {
      const backend = await backendOf(m[1]);
      return send(res, 200, "text/html", page(m[1], backend));
    }
    if (url.pathname === "/spawner.js") {
      // The same client module, for the page (a real app would bundle it).
      return send(res, 200, "text/javascript", await readFile(clientModule));
    }
    if ((m = url.pathname.match(/^\/v1\/backends\/([a-z0-9]{1,40})\/status\/stream$/))) {
      return await statusStream(req, res, m[1]);
    }
    send(res, 404, "text/plain", "not found\n");
  } catch (e) {
    // SpawnerError: the API's code, status and message; show what the user can act on.
    const status = !(e instanceof SpawnerError) ? 500 : e.status === 404 ? 404 : 502;
    send(res, status, "text/plain", `${e.code || "error"}: ${e.message}\n`);
  }
});

/**
 * The browser's status stream, through this app: only backends of this app, resumed from
 * the browser's Last-Event-ID. The app follows Spawner's stream with its client (which
 * itself resumes if its own connection drops) and passes each event on with its id.
 */
async function statusStream(req, res, id) {
  const record = await spawner.get(id);
  if (record.spec.labels?.app !== APP) return send(res, 404, "text/plain", "not found\n");
  const last = Number(req.headers["last-event-id"]);
  const abort = new AbortController();
  res.on("close", () => abort.abort()); // the browser went away
  res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-store" });
  const options = { signal: abort.signal, ...(Number.isInteger(last) ? { lastEventId: last } : {}) };
  for await (const item of spawner.status(id, options)) {
    if (item.type === "expiring") {
      res.write(`event: expiring\ndata: ${JSON.stringify({ at: item.at, reason: item.reason })}\n\n`);
    } else {
      const { type, id: seq, ...event } = item;
      res.write(`id: ${seq}\ndata: ${JSON.stringify(event)}\n\n`);
    }
  }
  res.end();
}

function send(res, status, type, body) {
  res.writeHead(status, { "Content-Type": `${type}; charset=utf-8` });
  res.end(body);
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function index() {
  return `<!doctype html><meta charset="utf-8"><title>Documents</title>
<h1>Documents</h1>
<form onsubmit="location.href='/docs/'+encodeURIComponent(this.doc.value);return false">
<input name="doc" value="42" pattern="[a-z0-9-]+"> <button>Open</button></form>`;
}

/** The document's page: its backend's status, live, and a link to it once Ready. */
function page(doc, backend) {
  return `<!doctype html><meta charset="utf-8"><title>Document ${esc(doc)}</title>
<h1>Document ${esc(doc)}</h1>
<p>Backend <code id="backend">${esc(backend.id)}</code>: <strong id="state">${esc(backend.state)}</strong></p>
<p id="notice"></p>
<ol id="events"></ol>
<p><a id="open" hidden href="${esc(backend.url)}">Open the document</a></p>
<script type="module">
import { Spawner } from "/spawner.js";
// No token here: the status route of this app needs none, and serves this app's backends only.
const spawner = new Spawner({ url: location.origin });
const $ = (id) => document.getElementById(id);
for await (const item of spawner.status(${JSON.stringify(backend.id)})) {
  if (item.type === "expiring") {
    $("notice").textContent = "This document closes at " + new Date(item.at).toLocaleTimeString() + " (" + item.reason + ")";
    continue;
  }
  const li = document.createElement("li");
  li.textContent = item.state + (item.reason ? " (" + item.reason + ")" : "");
  $("events").append(li);
  $("state").textContent = item.state;
  $("open").hidden = item.state !== "Ready";
}
</script>`;
}

server.listen(Number(process.env.PORT ?? 3000), "127.0.0.1", () => {
  console.log(`example-node listening on http://127.0.0.1:${server.address().port}`);
});
