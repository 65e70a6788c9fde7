//! Phase 2: WebSocket round trips through the proxy against straight to the backend, and
//! the proxy's memory per idle open WebSocket.

use crate::api::Server;
use crate::report::{fmt, Check, Phase};
use crate::util::{self, median, ms, Dist, Proc};
use crate::Ctx;
use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type PlainWs = WebSocketStream<tokio::net::TcpStream>;
/// A client WebSocket as `connect_async` opens it.
pub type Ws = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn run(ctx: &Ctx) -> Result<Phase> {
    Server::phase(ctx, "ws", async |dir, server| {
        measure(ctx, dir, server).await
    })
    .await
}

async fn measure(ctx: &Ctx, dir: &Path, server: &Server) -> Result<Phase> {
    let (id, address) = spawn_example(ctx, server).await?;
    let direct = format!("ws://{address}/ws");
    let proxied = format!("ws://{}/p/{id}/ws", server.api.addr);
    let (nginx, nginx_port) = start_nginx(ctx, dir, &address).await?;
    let via_nginx = format!("ws://127.0.0.1:{nginx_port}/ws");

    // Round trips, alternating direct, Spawner and nginx, one connection each.
    let mut direct_runs = Vec::new();
    let mut proxy_runs = Vec::new();
    let mut nginx_runs = Vec::new();
    for _ in 0..ctx.rounds {
        direct_runs.push(round_trips(&direct, ctx.ws_messages).await?);
        proxy_runs.push(round_trips(&proxied, ctx.ws_messages).await?);
        nginx_runs.push(round_trips(&via_nginx, ctx.ws_messages).await?);
    }
    nginx.stop().await;
    let nginx_ratio50 = median(
        &direct_runs
            .iter()
            .zip(&nginx_runs)
            .map(|(d, x)| x.pct(50.0) / d.pct(50.0))
            .collect::<Vec<_>>(),
    );
    let p = |runs: &[Dist], q: f64| median(&runs.iter().map(|d| d.pct(q)).collect::<Vec<_>>());
    let ratio50 = median(
        &direct_runs
            .iter()
            .zip(&proxy_runs)
            .map(|(d, x)| x.pct(50.0) / d.pct(50.0))
            .collect::<Vec<_>>(),
    );
    let ratio99 = median(
        &direct_runs
            .iter()
            .zip(&proxy_runs)
            .map(|(d, x)| x.pct(99.0) / d.pct(99.0))
            .collect::<Vec<_>>(),
    );

    // Memory per idle WebSocket. The proxy holds two descriptors per WebSocket, so the
    // count is bounded by the limit on open files (which the harness cannot always raise).
    let limit = util::nofile_limit();
    let conns = ctx.ws_conns.min(limit.saturating_sub(400) as usize / 2);
    let before = server.rss_kib()?;
    let started = Instant::now();
    let held = open_idle(server.api.addr, &id, conns).await?;
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_kib()?;
    let record = server.api.get_json(&format!("/v1/backends/{id}")).await?;
    let live = record["live_connections"].as_u64().unwrap_or(0);
    drop(held);
    let per_conn_kib = (after as f64 - before as f64) / conns.max(1) as f64;

    let mut phase = Phase::new("2. WebSocket: 1-byte text echo, `spawner example-app`");
    phase.row(
        format!(
            "direct round trip p50 / p99 ({} msgs × {} runs)",
            ctx.ws_messages, ctx.rounds
        ),
        format!(
            "{} / {} ms",
            fmt(p(&direct_runs, 50.0)),
            fmt(p(&direct_runs, 99.0))
        ),
    );
    phase.row(
        "through the proxy round trip p50 / p99",
        format!(
            "{} / {} ms",
            fmt(p(&proxy_runs, 50.0)),
            fmt(p(&proxy_runs, 99.0))
        ),
    );
    phase.row(
        "through nginx (reference) round trip p50 / p99",
        format!(
            "{} / {} ms",
            fmt(p(&nginx_runs, 50.0)),
            fmt(p(&nginx_runs, 99.0))
        ),
    );
    phase.row(
        "ratio proxy / direct p50 / p99",
        format!("{} / {}", fmt(ratio50), fmt(ratio99)),
    );
    phase.row("ratio nginx / direct p50 (reference)", fmt(nginx_ratio50));
    phase.row(
        format!(
            "idle WebSockets through the proxy (opened in {:.1} s)",
            opened.as_secs_f64()
        ),
        format!("{conns} (live_connections {live}; open-file limit {limit})"),
    );
    phase.row(
        "proxy RSS before / after; per WebSocket",
        format!(
            "{} / {} MiB; {} KiB",
            fmt(before as f64 / 1024.0),
            fmt(after as f64 / 1024.0),
            fmt(per_conn_kib)
        ),
    );
    phase.checks.push(Check::at_most(
        "WebSocket round trip proxy ÷ direct (p50)",
        ratio50,
        1.2,
        "×",
        "≤ 1.2×".into(),
    ));
    phase.checks.push(Check::at_most(
        "proxy memory per idle WebSocket",
        per_conn_kib,
        20.0,
        "KiB",
        "≤ 20 KiB".into(),
    ));
    phase.json = json!({
        "messages_per_run": ctx.ws_messages,
        "runs": ctx.rounds,
        "direct_ms": direct_runs.iter().map(Dist::json).collect::<Vec<_>>(),
        "proxied_ms": proxy_runs.iter().map(Dist::json).collect::<Vec<_>>(),
        "direct_p50_ms": util::round3(p(&direct_runs, 50.0)),
        "direct_p99_ms": util::round3(p(&direct_runs, 99.0)),
        "proxied_p50_ms": util::round3(p(&proxy_runs, 50.0)),
        "proxied_p99_ms": util::round3(p(&proxy_runs, 99.0)),
        "nginx_ms": nginx_runs.iter().map(Dist::json).collect::<Vec<_>>(),
        "nginx_p50_ms": util::round3(p(&nginx_runs, 50.0)),
        "nginx_p99_ms": util::round3(p(&nginx_runs, 99.0)),
        "nginx_ratio_p50": util::round3(nginx_ratio50),
        "ratio_p50": util::round3(ratio50),
        "ratio_p99": util::round3(ratio99),
        "idle_connections": conns,
        "live_connections_reported": live,
        "open_file_limit": limit,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": util::round3(per_conn_kib),
        "open_seconds": util::round3(opened.as_secs_f64()),
    });
    Ok(phase)
}

/// Spawns `spawner example-app` (a WebSocket echo) through `server`'s API and waits until it
/// is Ready; its id and address.
pub async fn spawn_example(ctx: &Ctx, server: &Server) -> Result<(String, String)> {
    let spec = crate::spawn::backend_spec(ctx, 3600);
    let id = server
        .api
        .spawn_ready(&spec, Duration::from_secs(20))
        .await?;
    let record = server.api.get_json(&format!("/v1/backends/{id}")).await?;
    let address = record["address"]
        .as_str()
        .ok_or_else(|| anyhow!("no address in {record}"))?
        .to_string();
    Ok((id, address))
}

/// nginx as a WebSocket reverse proxy to the backend at `address`, for reference; the
/// process and its port.
pub async fn start_nginx(ctx: &Ctx, dir: &Path, address: &str) -> Result<(Proc, u16)> {
    let nginx_port = util::free_port()?;
    let conf = dir.join("nginx-ws.conf");
    let d = dir.display();
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::write(
        &conf,
        format!(
            "{common}http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  \
             server {{\n    listen 127.0.0.1:{nginx_port};\n    location / {{\n      proxy_pass http://{address};\n      \
             proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n      \
             proxy_set_header Connection \"upgrade\";\n      proxy_set_header Host $host;\n      \
             proxy_read_timeout 3600s;\n    }}\n  }}\n}}\n",
            common = crate::proxy::nginx_common(dir, "nginx-ws", "auto")
        ),
    )?;
    let mut nginx =
        crate::proxy::start_nginx(ctx, dir, &conf, "nginx (WebSocket proxy)", "nginx-ws")?;
    nginx
        .wait_port(([127, 0, 0, 1], nginx_port).into(), Duration::from_secs(10))
        .await?;
    Ok((nginx, nginx_port))
}

/// Sends `n` one-byte texts, one at a time, and times each echo (after a warm-up).
async fn round_trips(url: &str, n: usize) -> Result<Dist> {
    let mut ws = connect(url).await?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 200 {
        let t = Instant::now();
        round_trip(&mut ws, url).await?;
        if i >= 200 {
            samples.push(ms(t.elapsed()));
        }
    }
    let _ = ws.close(None).await;
    Ok(Dist::new(samples))
}

/// A WebSocket to the example app at `url`, past its greeting.
pub async fn connect(url: &str) -> Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    first_message(&mut ws).await?;
    Ok(ws)
}

/// Sends a one-byte text and waits for its echo.
pub async fn round_trip(ws: &mut Ws, url: &str) -> Result<()> {
    ws.send(Message::text("x")).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "echo: x" => return Ok(()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => bail!("{url} closed the WebSocket"),
            Err(_) => bail!("no echo from {url} within 5 s"),
        }
    }
}

/// The example app greets every WebSocket with `count N`.
async fn first_message<S>(ws: &mut WebSocketStream<S>) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(_))) => Ok(()),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(None) => bail!("the WebSocket closed before its greeting"),
        Err(_) => bail!("no greeting within 10 s"),
    }
}

/// Opens `n` WebSockets through the proxy and keeps them open, idle. Source addresses
/// rotate over 127.0.0.1–127.0.0.8 so that ephemeral ports cannot run short.
async fn open_idle(spawner: SocketAddr, id: &str, n: usize) -> Result<Vec<PlainWs>> {
    let url = format!("ws://{spawner}/p/{id}/ws");
    let opened: Vec<Result<PlainWs>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let url = url.clone();
            async move {
                let source = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1 + (i % 8) as u8), 0));
                let socket = TcpSocket::new_v4()?;
                socket.bind(source)?;
                let stream = socket.connect(spawner).await?;
                stream.set_nodelay(true)?;
                let (mut ws, _) = tokio::time::timeout(
                    Duration::from_secs(20),
                    tokio_tungstenite::client_async(url.as_str(), stream),
                )
                .await
                .map_err(|_| anyhow!("WebSocket handshake timed out"))??;
                first_message(&mut ws).await?;
                Ok(ws)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut held = Vec::with_capacity(n);
    let mut failures = 0;
    let mut last_error = None;
    for r in opened {
        match r {
            Ok(ws) => held.push(ws),
            Err(e) => {
                failures += 1;
                last_error = Some(e);
            }
        }
    }
    if let Some(e) = last_error {
        bail!("{failures} of {n} WebSockets failed to open; last: {e:#}");
    }
    Ok(held)
}
