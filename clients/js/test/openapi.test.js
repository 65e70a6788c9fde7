// Every operation of the server's OpenAPI document is a method of this client.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { METHODS, ROUTES, Spawner } from "../spawner.js";
import { client } from "./helpers.js";

// Operations of the document that are not API calls of a client, and why.
const NOT_CALLS = {
  proxy: "the backend's own traffic: the browser goes to the backend's `url`",
  dashboard: "an HTML page: loginLink() gives its login link",
  seed_spawn: "the seed's routes, kept for the seed's clients: spawn() is their /v1 twin (request() reaches them too)",
  seed_status: "the seed's: lastEvent()",
  seed_status_stream: "the seed's: status()",
  seed_ready: "the seed's: isReady()",
};

test("every operation of the OpenAPI document is reachable from the client", async () => {
  const doc = await client().openapi();
  const ops = {};
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (op && op.operationId) ops[op.operationId] = [method.toUpperCase(), path];
    }
  }
  const problems = [];
  for (const [id, [method, path]] of Object.entries(ops)) {
    if (id in NOT_CALLS) continue;
    const mine = ROUTES[id];
    if (!mine) {
      problems.push(`missing: ${id} (${method} ${path})`);
    } else if (mine[0] !== method || mine[1] !== path) {
      problems.push(`${id}: the client calls ${mine.join(" ")}, the document says ${method} ${path}`);
    }
  }
  for (const id of Object.keys(ROUTES)) {
    if (!(id in ops)) problems.push(`the client calls ${id}, which the document does not have`);
    const name = METHODS[id];
    if (typeof Spawner.prototype[name] !== "function") problems.push(`${id}: no method Spawner.${name}`);
  }
  assert.deepEqual(problems, [], problems.join("\n"));
});

test("the module imports nothing, so that browsers load it as it is", async () => {
  const source = await readFile(new URL("../spawner.js", import.meta.url), "utf8");
  assert.doesNotMatch(source, /^\s*import\b|\brequire\(|\bprocess\.|\bBuffer\b/m);
});
