// The client against a real `spawner serve`: every call, its answers and its errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Spawner, SpawnerError } from "../spawner.js";
import { client, exampleApp, relay, unique, URL_ } from "./helpers.js";

test("spawn is get-or-create by key; get, lastEvent, isReady, terminate", async () => {
  const s = client();
  const key = unique("doc");
  const first = await s.spawn(exampleApp({ key, labels: { owner: "u1" } }));
  assert.equal(first.created, true);
  assert.equal(first.key, key);
  const again = await s.spawn(exampleApp({ key }));
  assert.equal(again.created, false);
  assert.equal(again.id, first.id);

  const ready = await s.waitReady(first.id, { timeout: 30_000 });
  assert.equal(ready.state, "Ready");
  assert.equal(await s.isReady(first.id), true);
  assert.equal((await s.lastEvent(first.id)).state, "Ready");
  const record = await s.get(first.id);
  assert.equal(record.state, "Ready");
  assert.deepEqual(record.spec.labels, { owner: "u1" });
  assert.deepEqual(record.events.map((e) => e.state).slice(-1), ["Ready"]);

  const stop = await s.terminate(first.id);
  assert.equal(stop.state, "Terminating");
  for await (const ev of s.status(first.id)) if (ev.type === "event") assert.notEqual(ev.state, "Failed");
  assert.equal((await s.get(first.id)).state, "Terminated");
  await assert.rejects(s.isReady(first.id), { name: "SpawnerError", code: "gone", status: 410 });
  assert.equal((await s.terminate(first.id, { hard: true })).state, "Terminated");
});

test("list filters as the API does and reads every page", async () => {
  const s = client();
  const owner = unique("owner");
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await s.spawn(exampleApp({ labels: { owner }, key: `${owner}-${i}` }))).id);
  const all = await s.list({ labels: { owner } });
  assert.deepEqual(all.map((b) => b.id).sort(), [...ids].sort());
  assert.deepEqual((await s.list({ label: `owner=${owner}` })).length, 3);
  assert.deepEqual((await s.list({ key: `${owner}-1` })).map((b) => b.id), [ids[1]]);

  // A page at a time: limit 2 gives two pages, and list() reads them all.
  const page = await s.listPage({ labels: { owner } }, { limit: 2 });
  assert.equal(page.backends.length, 2);
  assert.ok(page.next);
  const rest = await s.listPage({ labels: { owner } }, { limit: 2, after: page.next });
  assert.equal(rest.backends.length, 1);
  assert.equal(rest.next, undefined);

  await Promise.all(ids.map((id) => s.waitReady(id, { timeout: 30_000 })));
  const ready = await s.list({ labels: { owner }, state: "Ready" });
  assert.equal(ready.length, 3);
  await Promise.all(ids.map((id) => s.terminate(id, { hard: true })));
  await assert.rejects(s.list({ state: "Sleepy" }), { code: "invalid_query", status: 400 });
});

test("waitReady: a backend that ends first is gone, with its reason; a timeout is timeout", async () => {
  const s = client();
  const failing = await s.spawn({ executable: { command: ["sh", "-c", "exit 3"] } });
  await assert.rejects(s.waitReady(failing.id, { timeout: 30_000 }), (e) => {
    assert.ok(e instanceof SpawnerError);
    assert.equal(e.code, "gone");
    assert.match(e.message, /Failed: exited with code 3/);
    return true;
  });
  // Never Ready: it does not listen.
  const silent = await s.spawn({ executable: { command: ["sleep", "60"] } });
  await assert.rejects(s.waitReady(silent.id, { timeout: 300 }), { code: "timeout", status: 0 });
  assert.equal(await s.isReady(silent.id), false);
  await s.terminate(silent.id, { hard: true });
});

test("a resumed status stream loses no event and repeats none", async () => {
  const r = await relay();
  try {
    const direct = client();
    const through = client({ url: r.url });
    const { id } = await direct.spawn(exampleApp());
    await direct.waitReady(id, { timeout: 30_000 });
    // The first connection dies right after event 2 of the replay (3 to 5 never arrive on
    // it); the second is cut while live, after Ready, before the events of the terminate.
    r.breakAfterEvent(2);
    const seen = [];
    for await (const ev of through.status(id)) {
      assert.equal(ev.type, "event");
      seen.push(ev);
      if (ev.state === "Ready") {
        r.cut();
        await direct.terminate(id);
      }
    }
    const ids = seen.map((e) => e.id);
    assert.deepEqual(ids, ids.map((_, i) => i + 1), `ids seen: ${ids}`);
    // Exactly the server's events, in order.
    const record = await direct.get(id);
    assert.deepEqual(
      seen.map(({ state, time, reason }) => ({ state, time, reason })),
      record.events.map(({ state, time, reason }) => ({ state, time, reason })),
    );
    assert.equal(seen.at(-1).state, "Terminated");
    // It reconnected, and said where it was.
    const streams = r.requests.filter((h) => h.includes(`/v1/backends/${id}/status/stream`));
    const resumedFrom = streams.map((h) => (/^last-event-id: (\d+)$/im.exec(h) || [])[1]);
    assert.deepEqual(resumedFrom, [undefined, "2", "5"], streams.join("\n---\n"));
  } finally {
    await r.close();
  }
});

test("a stream that cannot be resumed ends with stream_broken", async () => {
  const s = new Spawner({ url: "http://127.0.0.1:9", retries: 1 });
  await assert.rejects(async () => {
    for await (const _ of s.status("a")) void _;
  }, { name: "SpawnerError", code: "stream_broken", status: 0 });
});

test("the status stream yields expiring ahead of the lifetime limit", async () => {
  const s = client();
  const { id } = await s.spawn(exampleApp({ lifetime_limit_seconds: 3, lifetime_warning_seconds: 3 }));
  const items = [];
  for await (const item of s.status(id)) items.push(item);
  const expiring = items.filter((i) => i.type === "expiring");
  assert.ok(expiring.length >= 1, JSON.stringify(items));
  assert.equal(expiring[0].reason, "lifetime limit");
  assert.ok(!Number.isNaN(Date.parse(expiring[0].at)));
  const last = items.at(-1);
  assert.equal(last.state, "Terminated");
  assert.equal(last.reason, "lifetime limit");
});

test("keepalive sets busy_until", async () => {
  const s = client();
  const { id } = await s.spawn(exampleApp());
  const answer = await s.keepalive(id, 600);
  assert.equal(answer.id, id);
  const until = Date.parse(answer.busy_until);
  assert.ok(until > Date.now() + 500_000);
  assert.equal((await s.get(id)).busy_until, answer.busy_until);
  await assert.rejects(s.keepalive(id, 0), { code: "invalid_field", status: 400 });
  await s.terminate(id, { hard: true });
});

test("access: a token-mode backend's connect URLs, who holds access, revoke", async () => {
  const s = client();
  const b = await s.spawn(exampleApp({ access: { mode: "token", user: "alice", user_data: { role: "owner" } } }));
  assert.ok(b.connect_url.startsWith(b.url) && b.connect_url.includes("spawner_token="), b.connect_url);
  const shared = await s.connect(b.id, { user: "bob", ttl_seconds: 30 });
  assert.ok(shared.connect_url.includes("spawner_token="));
  assert.ok(Date.parse(shared.expires_at) > Date.now());
  const held = await s.access(b.id);
  assert.equal(held.mode, "token");
  assert.deepEqual(held.users.map((u) => u.user).sort(), ["alice", "bob"]);
  assert.deepEqual(held.users.find((u) => u.user === "alice").user_data, { role: "owner" });
  await s.revoke(b.id, "bob");
  assert.deepEqual((await s.access(b.id)).users.map((u) => u.user), ["alice"]);
  await assert.rejects(s.revoke(b.id, "bob"), { code: "not_found", status: 404 });
  await assert.rejects(s.connect(b.id, { user: "" }), { code: "invalid_field", status: 400 });
  const open = await s.spawn(exampleApp());
  await assert.rejects(s.connect(open.id, { user: "carol" }), { code: "open_access", status: 409 });
  await s.terminate(b.id, { hard: true });
  await s.terminate(open.id, { hard: true });
});

test("logs, and logs followed until the backend ends", async () => {
  const s = client();
  const { id } = await s.spawn({ executable: { command: ["sh", "-c", "echo one; echo two >&2; sleep 0.3; echo three"] } });
  let followed = "";
  for await (const text of s.logs(id, { follow: true })) followed += text;
  for (const line of ["one", "two", "three"]) assert.match(followed, new RegExp(`^${line}$`, "m"));
  const all = await s.logs(id);
  assert.match(all, /three/);
});

test("pools: create, get, list, claim, resize, delete", async () => {
  const s = client();
  const name = unique("pool").replace(/[^a-z0-9-]/g, "");
  const created = await s.createPool({ name, template: exampleApp({ grace_period_seconds: 60 }), min_ready: 1, max: 3 });
  assert.equal(created.name, name);
  await assert.rejects(s.createPool({ name, template: exampleApp(), min_ready: 0, max: 1 }), { code: "pool_exists", status: 409 });
  assert.ok((await s.listPools()).some((p) => p.name === name));
  const page = await s.listPoolsPage({ limit: 1000 });
  assert.ok(page.pools.some((p) => p.name === name));

  const key = unique("user");
  const claimed = await s.claim(name, { key, labels: { owner: key }, wait_seconds: 30 });
  assert.equal(claimed.created, true);
  assert.equal(claimed.state, "Ready");
  const again = await s.claim(name, { key });
  assert.equal(again.created, false);
  assert.equal(again.id, claimed.id);
  assert.equal((await s.get(claimed.id)).spec.labels.owner, key);

  const resized = await s.resizePool(name, { min_ready: 0, max: 2 });
  assert.equal(resized.min_ready, 0);
  assert.equal(resized.max, 2);
  assert.equal((await s.getPool(name)).claimed, 1);
  const drained = await s.deletePool(name);
  assert.equal(drained.name, name);
  await assert.rejects(s.getPool(name), { code: "not_found", status: 404 });
  await assert.rejects(s.claim(name, { key: unique("k") }), { code: "not_found", status: 404 });
  await s.terminate(claimed.id, { hard: true });
});

test("watchList yields a snapshot, then each change", async () => {
  const s = client();
  const owner = unique("watcher");
  const abort = new AbortController();
  const it = s.watchList({ labels: { owner } }, { signal: abort.signal });
  const first = await it.next();
  assert.equal(first.value.type, "snapshot");
  assert.deepEqual(first.value.backends, []);
  const { id } = await s.spawn(exampleApp({ labels: { owner } }));
  let sawReady = false;
  for await (const change of it) {
    assert.equal(change.type, "backend");
    assert.equal(change.backend.id, id);
    if (change.backend.state === "Ready") {
      sawReady = true;
      break;
    }
  }
  assert.ok(sawReady);
  abort.abort();
  await s.terminate(id, { hard: true });
});

test("watchList reconnects after a dropped connection, with a fresh snapshot", async () => {
  const r = await relay();
  try {
    const owner = unique("rewatch");
    const { id } = await client().spawn(exampleApp({ labels: { owner } }));
    const abort = new AbortController();
    const it = client({ url: r.url }).watchList({ labels: { owner }, state: "Terminated" }, { signal: abort.signal });
    assert.deepEqual((await it.next()).value, { type: "snapshot", backends: [] });
    r.cut();
    await client().terminate(id, { hard: true });
    // The list as it is now, whatever happened while the connection was down.
    for (;;) {
      const { value } = await it.next();
      const backends = value.type === "snapshot" ? value.backends : [value.backend];
      if (backends.some((b) => b.id === id && b.state === "Terminated")) break;
    }
    abort.abort();
    const streams = r.requests.filter((h) => h.startsWith("GET /v1/backends/stream"));
    assert.equal(streams.length, 2);
  } finally {
    await r.close();
  }
});

test("errors carry the API's code, status and message", async () => {
  const s = client();
  await assert.rejects(s.get("nosuchbackend"), (e) => {
    assert.ok(e instanceof SpawnerError);
    assert.equal(e.code, "not_found");
    assert.equal(e.status, 404);
    assert.ok(e.message.length > 0);
    return true;
  });
  await assert.rejects(s.spawn({ executable: { command: ["x"] }, grace_period_secs: 3 }), { code: "invalid_body", status: 400 });
  await assert.rejects(s.spawn({ executable: { command: ["x"], env: { PORT: "1" } } }), { code: "invalid_field", status: 400 });
  await assert.rejects(new Spawner({ url: URL_, token: "wrong" }).list(), { code: "unauthorized", status: 401 });
  await assert.rejects(new Spawner({ url: "http://127.0.0.1:9" }).get("a"), { code: "unreachable", status: 0 });
});

test("operations: health, metrics, login links, login, request", async () => {
  const s = client();
  assert.equal(await s.health(), true);
  assert.match(await s.metrics(), /spawner_backends/);
  const link = await s.loginLink();
  const code = new URL(link.url).hash.replace("#login=", "");
  const { token } = await new Spawner({ url: URL_ }).login(code);
  assert.equal(token, s.token);
  await assert.rejects(new Spawner({ url: URL_ }).login(code), { code: "invalid_login_code", status: 401 });
  // Any route, for those newer than this client, with the same errors.
  const resp = await s.request("GET", "/v1/backends", { query: { limit: "1" } });
  assert.equal(resp.status, 200);
  assert.ok(Array.isArray((await resp.json()).backends));
  await assert.rejects(s.request("GET", "/backend/nosuch/status"), { code: "not_found", status: 404 });
});

test("a sleeping backend is woken by wake(), and its request is held while it wakes", async () => {
  const s = client();
  const b = await s.spawn(exampleApp({ idle_action: "sleep", grace_period_seconds: 1 }));
  await s.waitReady(b.id, { timeout: 30_000 });
  // Already awake: a no-op that says so.
  assert.equal((await s.wake(b.id)).state, "Ready");
  const deadline = Date.now() + 30_000;
  while ((await s.lastEvent(b.id)).state !== "Sleeping") {
    assert.ok(Date.now() < deadline, "not Sleeping within 30 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal((await s.get(b.id)).state, "Sleeping");
  assert.deepEqual(await s.wake(b.id), { id: b.id, state: "Waking" });
  while ((await s.lastEvent(b.id)).state !== "Ready") {
    assert.ok(Date.now() < deadline, "not Ready again within 30 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  // After the sleep: Waking (with the runtime's notes, more Waking events), then Ready.
  const states = (await s.get(b.id)).events.map((e) => e.state);
  // (It may be asleep again by now: the wake is what followed its first sleep.)
  const first = states.indexOf("Sleeping");
  const next = states.indexOf("Sleeping", first + 1);
  const woken = states.slice(first + 1, next < 0 ? undefined : next);
  assert.equal(woken[0], "Waking", JSON.stringify(states));
  assert.equal(woken.at(-1), "Ready", JSON.stringify(states));
  assert.ok(woken.slice(0, -1).every((st) => st === "Waking"), JSON.stringify(states));
  await s.terminate(b.id, { hard: true });
  await assert.rejects(s.wake(b.id), { name: "SpawnerError", code: "gone", status: 410 });
});
