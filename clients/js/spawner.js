// Spawner's client for JavaScript: one ES module, no dependencies, for Node 18+ and
// browsers (fetch and ReadableStream only; nothing of Node is imported). Bodies and records
// are the API's JSON as docs/api.md describes them (snake_case), passed through unchanged,
// so that every field the server learns is usable without a new release of this module.

/**
 * The routes of the API this client calls, by the operation id of the server's OpenAPI
 * document (`GET /v1/openapi.json`). test/openapi.test.js compares them with the document.
 */
export const ROUTES = Object.freeze({
  spawn: ["POST", "/v1/backends"],
  list: ["GET", "/v1/backends"],
  list_stream: ["GET", "/v1/backends/stream"],
  get: ["GET", "/v1/backends/{id}"],
  terminate: ["POST", "/v1/backends/{id}/terminate"],
  wake: ["POST", "/v1/backends/{id}/wake"],
  keepalive: ["POST", "/v1/backends/{id}/keepalive"],
  connect: ["POST", "/v1/backends/{id}/connect"],
  access: ["GET", "/v1/backends/{id}/access"],
  revoke: ["DELETE", "/v1/backends/{id}/access/{user}"],
  logs: ["GET", "/v1/backends/{id}/logs"],
  status: ["GET", "/v1/backends/{id}/status"],
  status_stream: ["GET", "/v1/backends/{id}/status/stream"],
  ready: ["GET", "/v1/backends/{id}/ready"],
  create_pool: ["POST", "/v1/pools"],
  list_pools: ["GET", "/v1/pools"],
  get_pool: ["GET", "/v1/pools/{name}"],
  resize_pool: ["PUT", "/v1/pools/{name}"],
  drain_pool: ["DELETE", "/v1/pools/{name}"],
  login: ["POST", "/v1/login"],
  login_links: ["POST", "/v1/login-links"],
  healthz: ["GET", "/healthz"],
  metrics: ["GET", "/metrics"],
  openapi: ["GET", "/v1/openapi.json"],
});

/** The method of `Spawner` that calls each operation of `ROUTES`. */
export const METHODS = Object.freeze({
  spawn: "spawn", // and claim(): the same route with `pool`
  list: "list", // and listPage()
  list_stream: "watchList",
  get: "get",
  terminate: "terminate",
  wake: "wake",
  keepalive: "keepalive",
  connect: "connect",
  access: "access",
  revoke: "revoke",
  logs: "logs",
  status: "lastEvent",
  status_stream: "status", // and waitReady()
  ready: "isReady",
  create_pool: "createPool",
  list_pools: "listPools", // and listPoolsPage()
  get_pool: "getPool",
  resize_pool: "resizePool",
  drain_pool: "deletePool",
  login: "login",
  login_links: "loginLink",
  healthz: "health",
  metrics: "metrics",
  openapi: "openapi",
});

const TERMINAL = new Set(["Swept", "Failed", "Terminated"]);

/**
 * Every failure of a call. `code` is the API's error code (`not_found`, `pool_exhausted`…,
 * docs/api.md "Errors") and `status` its HTTP status; failures that are not the API's have
 * status 0 and the codes `unreachable` (no answer), `not_spawner` (an answer that is not
 * Spawner's), `timeout` (waitReady) or `stream_broken` (a stream that could not be resumed).
 */
export class SpawnerError extends Error {
  constructor(code, status, message) {
    super(message);
    this.name = "SpawnerError";
    this.code = code;
    this.status = status;
  }
}

export class Spawner {
  /**
   * @param {{url: string, token?: string, fetch?: typeof fetch, retries?: number}} options
   * `url`: the server's base URL. `token`: the control token (`spawner token`); the status
   * routes need none, so a browser page can follow a status stream without it.
   * `retries`: how many reconnections in a row a stream may make before it gives up (5).
   */
  constructor({ url, token, fetch: fetchImpl, retries = 5 } = {}) {
    if (!url) throw new TypeError("Spawner: url is required");
    this.url = String(url).replace(/\/+$/, "");
    this.token = token;
    this._fetch = fetchImpl || globalThis.fetch.bind(globalThis);
    this.retries = retries;
  }

  // ---- backends -------------------------------------------------------------------------

  /** Spawns a backend, or returns the live one with `spec.key` (then `created` is false). */
  async spawn(spec) {
    const resp = await this._call("spawn", {}, { body: spec });
    return { ...(await resp.json()), created: resp.status === 201 };
  }

  /**
   * Claims a Ready backend of a warm pool: `options` are the claim's fields (`key`,
   * `labels`, `grace_period_seconds`, `lifetime_limit_seconds`, `if_none_ready`,
   * `wait_seconds`).
   */
  async claim(pool, options = {}) {
    return this.spawn({ ...options, pool });
  }

  /** The whole record of a backend, with its events. */
  async get(id) {
    return (await this._call("get", { id })).json();
  }

  /** Every backend matching `filter` (`{state, key, label, labels}`), all pages read. */
  async list(filter = {}) {
    const out = [];
    let after;
    for (;;) {
      const page = await this.listPage(filter, { after });
      out.push(...page.backends);
      if (!page.next || page.next === after) return out;
      after = page.next;
    }
  }

  /** One page of the list: `{backends, next}`; pass `next` as `after` for the next page. */
  async listPage(filter = {}, { limit, after } = {}) {
    const query = listQuery(filter);
    if (limit !== undefined) query.push(["limit", String(limit)]);
    if (after) query.push(["after", after]);
    return (await this._call("list", {}, { query })).json();
  }

  /**
   * The list kept current (`GET /v1/backends/stream`): yields `{type: "snapshot", backends,
   * next}` first, then `{type: "backend", backend}` on every change. After a dropped
   * connection it reconnects and yields a fresh snapshot. Ends when `signal` aborts.
   */
  async *watchList(filter = {}, { signal } = {}) {
    let failures = 0;
    for (;;) {
      let resp;
      try {
        resp = await this._call("list_stream", {}, { query: listQuery(filter), signal });
        for await (const msg of sseMessages(resp.body, signal)) {
          failures = 0;
          if (msg.event === "snapshot") yield { type: "snapshot", ...JSON.parse(msg.data) };
          else if (msg.event === "backend") yield { type: "backend", backend: JSON.parse(msg.data) };
        }
      } catch (e) {
        if (signal?.aborted) return;
        if (e instanceof SpawnerError && e.status !== 0) throw e;
        if (++failures > this.retries) throw broken(e);
        await sleep(backoff(failures), signal);
        continue;
      }
      if (signal?.aborted) return;
      if (++failures > this.retries) throw broken(new Error("the list stream kept ending"));
      await sleep(backoff(failures), signal);
    }
  }

  /**
   * The status stream: yields `{type: "event", id, state, time, reason?, exit_code?}` for
   * every event (past ones first, from after `lastEventId` when given), and `{type:
   * "expiring", at, reason}` when a lifetime limit or idle timeout is near. A dropped
   * connection is resumed with `Last-Event-ID`: no event is lost or repeated. Ends after a
   * terminal state (or when `signal` aborts).
   */
  async *status(id, { lastEventId, signal } = {}) {
    let last = lastEventId;
    let failures = 0;
    for (;;) {
      const headers = last !== undefined ? { "Last-Event-ID": String(last) } : {};
      try {
        const resp = await this._call("status_stream", { id }, { headers, signal });
        for await (const msg of sseMessages(resp.body, signal)) {
          if (msg.event === "expiring") {
            const { at, reason } = JSON.parse(msg.data);
            yield { type: "expiring", at, reason };
            continue;
          }
          if (msg.event !== "message" || msg.id === undefined) continue;
          const seq = Number(msg.id);
          if (last !== undefined && seq <= last) continue; // never repeat one
          failures = 0;
          last = seq;
          const ev = { type: "event", id: seq, ...JSON.parse(msg.data) };
          yield ev;
          if (TERMINAL.has(ev.state)) return;
        }
      } catch (e) {
        if (signal?.aborted) return;
        if (e instanceof SpawnerError && e.status !== 0) throw e;
        if (++failures > this.retries) throw broken(e);
        await sleep(backoff(failures), signal);
        continue;
      }
      if (signal?.aborted) return;
      // The server ends the stream only after a terminal state: an end before one is a
      // dropped connection.
      if (++failures > this.retries) throw broken(new Error("the status stream kept ending early"));
      await sleep(backoff(failures), signal);
    }
  }

  /**
   * Waits until the backend is Ready and returns its `Ready` event. A backend that ends
   * first is a `SpawnerError` `gone` (410, with the ending's reason); `timeout` (ms)
   * exceeded is `timeout`.
   */
  async waitReady(id, { timeout } = {}) {
    const abort = new AbortController();
    const timer = timeout !== undefined ? setTimeout(() => abort.abort(), timeout) : undefined;
    try {
      for await (const ev of this.status(id, { signal: abort.signal })) {
        if (ev.type !== "event") continue;
        if (ev.state === "Ready") return ev;
        if (TERMINAL.has(ev.state)) {
          const why = ev.reason ? `: ${ev.reason}` : "";
          throw new SpawnerError("gone", 410, `backend ${id} ended ${ev.state}${why} before it was Ready`);
        }
      }
      throw new SpawnerError("timeout", 0, `backend ${id} was not Ready within ${timeout} ms`);
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  }

  /** The backend's last event (`GET .../status`). */
  async lastEvent(id) {
    return (await this._call("status", { id })).json();
  }

  /** Whether the backend is Ready (`GET .../ready`): false while it starts, `gone` once it ends. */
  async isReady(id) {
    const resp = await this._raw("ready", { id }, { redirect: "manual", ok: [409] });
    return resp.status !== 409; // 302, or a browser's opaque redirect (status 0)
  }

  /** Keeps the backend from being swept for `seconds` from now: `{id, busy_until}`. */
  async keepalive(id, seconds) {
    return (await this._call("keepalive", { id }, { body: { seconds } })).json();
  }

  // ---- per-user access (docs/api.md, "Access") -----------------------------------------

  /**
   * A connect URL of a token-mode backend for `user` (another user shares it): `{connect_url,
   * expires_at}`. Send the browser there; the URL is a secret, good once and for
   * `ttl_seconds` (60 by default) unless `reusable`.
   */
  async connect(id, { user, user_data, ttl_seconds, reusable } = {}) {
    const body = { user };
    if (user_data !== undefined) body.user_data = user_data;
    if (ttl_seconds !== undefined) body.ttl_seconds = ttl_seconds;
    if (reusable !== undefined) body.reusable = reusable;
    return (await this._call("connect", { id }, { body })).json();
  }

  /** Who holds access to the backend: `{mode, users: [{user, user_data?, granted_at}]}`. */
  async access(id) {
    return (await this._call("access", { id })).json();
  }

  /** Ends `user`'s access: their next request is refused, their WebSockets closed (1008). */
  async revoke(id, user) {
    await this._call("revoke", { id, user });
  }

  /** Stops the backend (`hard`: SIGKILL at once): `{id, state, hard}`. */
  async terminate(id, { hard = false } = {}) {
    return (await this._call("terminate", { id }, { body: { hard } })).json();
  }

  /**
   * Wakes a Sleeping backend (one spawned with `idle_action: "sleep"`) ahead of its user:
   * `{id, state}`, `state` being `Waking`, or the state of one that was not asleep.
   */
  async wake(id) {
    return (await this._call("wake", { id })).json();
  }

  /**
   * The backend's stdout and stderr: a string; with `{follow: true}` an async iterator of
   * text chunks that ends when the backend has ended.
   */
  logs(id, { follow = false, signal } = {}) {
    if (!follow) return this._call("logs", { id }).then((r) => r.text());
    const self = this;
    return (async function* () {
      const resp = await self._call("logs", { id }, { query: [["follow", "true"]], signal });
      const decoder = new TextDecoder();
      for await (const chunk of chunks(resp.body, signal)) yield decoder.decode(chunk, { stream: true });
    })();
  }

  // ---- pools ----------------------------------------------------------------------------

  /** Creates a warm pool `{name, template, min_ready, max}`; returns its status. */
  async createPool(spec) {
    return (await this._call("create_pool", {}, { body: spec })).json();
  }

  async getPool(name) {
    return (await this._call("get_pool", { name })).json();
  }

  /** Every pool, all pages read. */
  async listPools() {
    const out = [];
    let after;
    for (;;) {
      const page = await this.listPoolsPage({ after });
      out.push(...page.pools);
      if (!page.next || page.next === after) return out;
      after = page.next;
    }
  }

  async listPoolsPage({ limit, after } = {}) {
    const query = [];
    if (limit !== undefined) query.push(["limit", String(limit)]);
    if (after) query.push(["after", after]);
    return (await this._call("list_pools", {}, { query })).json();
  }

  async resizePool(name, { min_ready, max }) {
    return (await this._call("resize_pool", { name }, { body: { min_ready, max } })).json();
  }

  /** Removes the pool and stops its unclaimed backends: `{name, stopping}`. */
  async deletePool(name) {
    return (await this._call("drain_pool", { name })).json();
  }

  // ---- operations -----------------------------------------------------------------------

  /** Trades a login link's code for the token (`{token}`). */
  async login(code) {
    return (await this._call("login", {}, { body: { code } })).json();
  }

  /** A new one-time login link to the dashboard: `{url, expires_in_seconds}`. */
  async loginLink() {
    return (await this._call("login_links", {}, { body: {} })).json();
  }

  /** True when the server answers `/healthz`. */
  async health() {
    await this._call("healthz");
    return true;
  }

  /** The Prometheus text of `/metrics`. */
  async metrics() {
    return (await this._call("metrics")).text();
  }

  /** The server's OpenAPI document. */
  async openapi() {
    return (await this._call("openapi")).json();
  }

  /**
   * Any route, with the token and error handling of the others: for routes newer than this
   * client. `query` is an object or a list of pairs. Returns the `Response`.
   */
  async request(method, path, { body, query, headers, signal } = {}) {
    return this._send(method, path, { body, query, headers, signal });
  }

  // ---- plumbing -------------------------------------------------------------------------

  _call(op, params = {}, options = {}) {
    return this._raw(op, params, options);
  }

  _raw(op, params, options) {
    const [method, template] = ROUTES[op];
    const path = template.replace(/\{(\w+)\}/g, (_, name) => {
      if (params[name] === undefined) throw new TypeError(`${op}: ${name} is required`);
      return encodeURIComponent(params[name]);
    });
    return this._send(method, path, options);
  }

  async _send(method, path, { body, query, headers = {}, signal, redirect, ok = [] } = {}) {
    let url = this.url + path;
    const pairs = Array.isArray(query) ? query : Object.entries(query || {});
    if (pairs.length) url += "?" + new URLSearchParams(pairs).toString();
    const h = { ...headers };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    const init = { method, headers: h, signal };
    if (redirect) init.redirect = redirect;
    if (body !== undefined) {
      h["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await this._fetch(url, init);
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new SpawnerError("unreachable", 0, `cannot reach Spawner at ${this.url}: ${cause(e)}`);
    }
    if (resp.ok || ok.includes(resp.status) || (redirect === "manual" && (resp.status === 0 || (resp.status >= 300 && resp.status < 400)))) {
      return resp;
    }
    const text = await resp.text().catch(() => "");
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (parsed && typeof parsed.error === "string") {
      throw new SpawnerError(parsed.error, resp.status, parsed.message || parsed.error);
    }
    const start = text.replace(/\s+/g, " ").slice(0, 60);
    throw new SpawnerError("not_spawner", resp.status, `${url} answered ${resp.status} ${JSON.stringify(start)}: that is not Spawner's API; is the url that of spawner serve?`);
  }
}

function listQuery(filter) {
  const q = [];
  if (filter.state) q.push(["state", filter.state]);
  if (filter.key) q.push(["key", filter.key]);
  for (const l of [].concat(filter.label || [])) q.push(["label", l]);
  for (const [k, v] of Object.entries(filter.labels || {})) q.push(["label", `${k}=${v}`]);
  return q;
}

function cause(e) {
  let c = e;
  while (c && c.cause) c = c.cause;
  return (c && (c.code || c.message)) || String(e);
}

function broken(e) {
  if (e instanceof SpawnerError && e.code === "stream_broken") return e;
  return new SpawnerError("stream_broken", 0, `the stream broke and could not be resumed: ${e instanceof SpawnerError ? e.message : cause(e)}`);
}

const backoff = (n) => Math.min(100 * 2 ** (n - 1), 2000);

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/** The chunks of a fetch body (a ReadableStream), released when the consumer stops. */
async function* chunks(body, signal) {
  const reader = body.getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    reader.cancel().catch(() => {});
  }
}

/** Server-Sent Events (the WHATWG format): `{event, id, data}` per message. */
async function* sseMessages(body, signal) {
  const decoder = new TextDecoder();
  let buf = "";
  let event = "message";
  let id;
  let data = [];
  for await (const chunk of chunks(body, signal)) {
    buf += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (data.length) yield { event, id, data: data.join("\n") };
        event = "message";
        id = undefined;
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") event = value;
      else if (field === "id") id = value;
    }
  }
}
