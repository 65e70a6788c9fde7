// Type-checked, never run: index.d.ts describes the calls as an application writes them
// (tests/clients.rs runs `tsc -p` on this directory). A wrong declaration fails here.
import { Spawner, SpawnerError, type BackendRecord, type StatusItem } from "../index.js";

export async function app(): Promise<void> {
  const spawner = new Spawner({ url: "http://127.0.0.1:8080", token: "t" });
  const b = await spawner.spawn({ key: "doc-42", executable: { command: ["spawner", "example-app"] }, labels: { owner: "u" } });
  const created: boolean = b.created;
  const url: string = b.url;
  const ready = await spawner.waitReady(b.id, { timeout: 30_000 });
  const n: number = ready.id;
  for await (const item of spawner.status(b.id, { lastEventId: n })) {
    const i: StatusItem = item;
    if (i.type === "expiring") {
      const at: string = i.at;
      void at;
    } else {
      const state: string = i.state;
      void state;
    }
  }
  await spawner.keepalive(b.id, 600);
  const stop = await spawner.terminate(b.id, { hard: true });
  const hard: boolean = stop.hard;
  const claimed = await spawner.claim("notebooks", { key: "user-7", if_none_ready: "wait", wait_seconds: 30 });
  const all: BackendRecord[] = await spawner.list({ state: "Ready", labels: { owner: "u" } });
  const page = await spawner.listPage({ key: "doc-42" }, { limit: 10 });
  const next: string | undefined = page.next;
  for await (const change of spawner.watchList({ label: ["a=b"] })) {
    if (change.type === "snapshot") void change.backends.length;
    else void change.backend.id;
  }
  const text: string = await spawner.logs(b.id);
  for await (const chunk of spawner.logs(b.id, { follow: true })) void (chunk as string);
  const pool = await spawner.createPool({ name: "p", template: { executable: { command: ["x"] }, claim_path: "/claim" }, min_ready: 1, max: 2 });
  const ready2: number = (await spawner.resizePool(pool.name, { min_ready: 0, max: 1 })).ready;
  const drained: number = (await spawner.deletePool("p")).stopping;
  const pools = await spawner.listPools();
  const isReady: boolean = await spawner.isReady(b.id);
  const resp: Response = await spawner.request("GET", "/v1/backends", { query: { limit: "1" } });
  try {
    await spawner.get("x");
  } catch (e) {
    if (e instanceof SpawnerError) {
      const code: string = e.code;
      const status: number = e.status;
      void [code, status];
    }
  }
  void [created, url, hard, claimed, all, next, text, ready2, drained, pools, isReady, resp];
}
