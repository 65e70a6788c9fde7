// What the tests share: the real server they run against (crates/spawner/tests/clients.rs
// starts one and passes SPAWNER_URL and SPAWNER_TOKEN), and a TCP relay that can cut
// connections, to drop a stream mid-way.
import net from "node:net";
import { Spawner } from "../spawner.js";

export const URL_ = process.env.SPAWNER_URL;
export const TOKEN = process.env.SPAWNER_TOKEN;
if (!URL_ || !TOKEN) {
  throw new Error("SPAWNER_URL and SPAWNER_TOKEN must name a running spawner serve (cargo nextest run -p spawner --test clients runs these tests with one)");
}

export const client = (options = {}) => new Spawner({ url: URL_, token: TOKEN, ...options });

/** The bundled example app; `spawner` is the server's own binary. */
export const exampleApp = (extra = {}) => ({ executable: { command: ["spawner", "example-app"] }, ...extra });

let n = 0;
/** A name no other test uses, for keys, labels and pools. */
export const unique = (prefix) => `${prefix}-${process.pid}-${++n}`;

/**
 * A TCP relay to the server: `url` reaches the server through it; `cut()` destroys every
 * connection through it (both sides), as a network failure would; `breakAfterEvent(n)`
 * has the next connection carry the server's bytes up to the end of the SSE message with
 * `id: n` and no further, then die (mid-stream, whatever the chunks). `requests` holds the
 * head of every request seen.
 */
export async function relay() {
  const target = new URL(URL_);
  const pairs = new Set();
  const requests = [];
  let armed;
  const server = net.createServer((down) => {
    const up = net.connect(Number(target.port), target.hostname);
    const pair = { down, up };
    pairs.add(pair);
    let head = "";
    down.on("data", (d) => {
      if (head.length < 4096) {
        head += d.toString("latin1");
        const end = head.indexOf("\r\n\r\n");
        if (end >= 0) {
          requests.push(head.slice(0, end));
          head = "";
        }
      }
    });
    down.pipe(up);
    let seen = "";
    const breakAt = armed;
    armed = undefined;
    up.on("data", (d) => {
      if (breakAt === undefined) return void down.write(d);
      const before = seen.length;
      seen += d.toString("latin1");
      const m = new RegExp(`(^|\n)id: ${breakAt}\n(?:[^\n]+\n)*\n`).exec(seen);
      if (!m) return void down.write(d);
      down.write(d.subarray(0, m.index + m[0].length - before), () => close());
    });
    const close = () => {
      down.destroy();
      up.destroy();
      pairs.delete(pair);
    };
    down.on("error", close).on("close", close);
    up.on("error", close).on("close", close);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    breakAfterEvent(n) {
      armed = n;
    },
    cut() {
      for (const { down, up } of pairs) {
        down.resetAndDestroy ? down.resetAndDestroy() : down.destroy();
        up.destroy();
      }
      pairs.clear();
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
