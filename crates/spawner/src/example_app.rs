//! `spawner example-app`: a small backend to try Spawner with, needing nothing installed.
//! A page with a counter shared by every open WebSocket, an echo, and `/request`, which
//! shows the request as the backend received it (headers, path) for checking the proxy,
//! and the variables Spawner gave it (the keepalive URL's token redacted: it is the
//! backend's secret, and anyone who reaches the backend reaches `/request`).
//! `POST /claim` takes a warm pool's claim (who the backend now serves); `GET /claim` shows it.
//! On SIGTERM it tells every open WebSocket (`sigterm`) before it stops: Spawner's own close
//! frame (1001) reaches the clients first, so they never see it through Spawner's proxy.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Args, Debug)]
pub struct ExampleArgs {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on [default: 0.0.0.0 in a container (Docker, Podman, Kubernetes),
    /// where the proxy reaches it from outside, else 127.0.0.1].
    #[arg(long, env = "HOST")]
    host: Option<std::net::IpAddr>,
}

/// Whether this process is a container's program, where listening on loopback would make
/// it unreachable: Docker and Podman leave a marker file, Kubernetes sets a variable, and a
/// container's program is its PID 1 or a child of its init (a parent outside its PID
/// namespace reads as 0). A local backend of a Spawner that itself runs in a container is
/// Spawner's child, and keeps to loopback.
fn in_container() -> bool {
    let marked = std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    marked && (std::process::id() == 1 || matches!(std::os::unix::process::parent_id(), 0 | 1))
}

struct Counter {
    value: AtomicU64,
    changes: broadcast::Sender<u64>,
    /// The claim Spawner POSTed when a pool handed this backend out.
    claim: std::sync::Mutex<Option<serde_json::Value>>,
    /// Sent once, on SIGTERM.
    terminating: tokio::sync::watch::Sender<bool>,
}

pub async fn run(args: ExampleArgs) -> anyhow::Result<()> {
    let state = Arc::new(Counter {
        value: AtomicU64::new(0),
        changes: broadcast::channel(64).0,
        claim: std::sync::Mutex::new(None),
        terminating: tokio::sync::watch::channel(false).0,
    });
    let terminating = state.terminating.clone();
    let app = Router::new()
        .route("/", get(page))
        .route("/ws", get(ws))
        .route("/request", get(request).post(request))
        .route("/claim", get(claimed).post(claim))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(state);
    let host = args.host.unwrap_or(if in_container() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::LOCALHOST.into()
    });
    let listener = tokio::net::TcpListener::bind((host, args.port)).await?;
    println!("example-app listening on {}", listener.local_addr()?);
    let shutdown = async move {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
        println!("example-app: SIGTERM, shutting down");
        terminating.send_replace(true);
        // A moment for the sessions to say so.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn page() -> Html<String> {
    let id = std::env::var("SPAWNER_BACKEND_ID").unwrap_or_else(|_| "(not under Spawner)".into());
    Html(PAGE.replace("{{ID}}", &id))
}

/// A warm pool's claim hook: remembers who claimed this backend.
async fn claim(
    State(counter): State<Arc<Counter>>,
    Json(body): Json<serde_json::Value>,
) -> axum::http::StatusCode {
    if let Ok(mut c) = counter.claim.lock() {
        *c = Some(body);
    }
    axum::http::StatusCode::NO_CONTENT
}

async fn claimed(State(counter): State<Arc<Counter>>) -> Json<serde_json::Value> {
    Json(
        counter
            .claim
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or_default(),
    )
}

async fn request(
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Json<serde_json::Value> {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    Json(serde_json::json!({
        "method": method.as_str(),
        "uri": uri.to_string(),
        "headers": headers,
        "body_bytes": body.len(),
        "env": {
            "PORT": std::env::var("PORT").ok(),
            "SPAWNER_BACKEND_ID": std::env::var("SPAWNER_BACKEND_ID").ok(),
            "SPAWNER_BASE_PATH": std::env::var("SPAWNER_BASE_PATH").ok(),
            "SPAWNER_PUBLIC_URL": std::env::var("SPAWNER_PUBLIC_URL").ok(),
            "SPAWNER_DATA_DIR": std::env::var("SPAWNER_DATA_DIR").ok(),
            // Its token is this backend's secret: whoever reaches the page must not read it.
            "SPAWNER_KEEPALIVE_URL": std::env::var("SPAWNER_KEEPALIVE_URL").ok().map(|u| redacted(&u)),
        },
    }))
}

/// A URL with the value of its `token` query parameter replaced: what it is, not the secret.
fn redacted(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=REDACTED".to_string(),
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

async fn ws(upgrade: WebSocketUpgrade, State(counter): State<Arc<Counter>>) -> impl IntoResponse {
    upgrade.on_upgrade(move |socket| session(socket, counter))
}

/// One WebSocket: sends `count N` on connect and on every change; `inc` increments the
/// shared counter; any other text comes back as `echo: <text>`. On SIGTERM: `sigterm`.
async fn session(mut socket: WebSocket, counter: Arc<Counter>) {
    let mut changes = counter.changes.subscribe();
    let mut terminating = counter.terminating.subscribe();
    let now = counter.value.load(Ordering::Relaxed);
    if socket
        .send(Message::Text(format!("count {now}").into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) if t.as_str() == "inc" => {
                    let n = counter.value.fetch_add(1, Ordering::Relaxed) + 1;
                    let _ = counter.changes.send(n);
                }
                Some(Ok(Message::Text(t))) => {
                    if socket.send(Message::Text(format!("echo: {}", t.as_str()).into())).await.is_err() {
                        return;
                    }
                }
                // The closing handshake (RFC 6455 §5.5.1): the WebSocket queued the answer
                // to the client's close frame when it read it; closing sends it.
                Some(Ok(Message::Close(_))) => {
                    let _ = futures_util::SinkExt::close(&mut socket).await;
                    return;
                }
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            change = changes.recv() => match change {
                Ok(n) => {
                    if socket.send(Message::Text(format!("count {n}").into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // The channel's guard is dropped inside: it must not live across an await.
            true = async { terminating.wait_for(|t| *t).await.is_ok() } => {
                let _ = socket.send(Message::Text("sigterm".into())).await;
                std::future::pending::<()>().await;
            }
        }
    }
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Spawner example</title>
<style>body{font:16px system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}
#count{font-size:4rem;font-weight:700}button{font-size:1.2rem;padding:.4rem 1.2rem}</style></head>
<body><h1>A session-lived backend</h1>
<p>Backend <code>{{ID}}</code>. Every browser tab open on this URL shares this counter over a
WebSocket; close them all and Spawner sweeps the backend after its grace period.</p>
<div id="count">…</div><button id="inc" disabled>+1</button> <span id="link">connecting</span>
<script>
// By getElementById: a bare `status` would be window.status, which is not the element.
const [count, inc, link] = ["count", "inc", "link"].map((id) => document.getElementById(id));
const url = new URL("ws", location.href); url.protocol = url.protocol.replace("http", "ws");
const ws = new WebSocket(url);
ws.onopen = () => { link.textContent = "connected"; inc.disabled = false; };
ws.onclose = () => { link.textContent = "disconnected"; inc.disabled = true; };
ws.onmessage = (m) => { if (m.data.startsWith("count ")) count.textContent = m.data.slice(6); };
inc.onclick = () => ws.send("inc");
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn the_keepalive_token_is_redacted() {
        assert_eq!(
            super::redacted("http://h:1/v1/backends/x/keepalive?token=s3cret"),
            "http://h:1/v1/backends/x/keepalive?token=REDACTED"
        );
        assert_eq!(
            super::redacted("http://h/_keepalive?a=1&token=s3cret&b=2"),
            "http://h/_keepalive?a=1&token=REDACTED&b=2"
        );
        assert_eq!(super::redacted("http://h/x"), "http://h/x");
    }
}
