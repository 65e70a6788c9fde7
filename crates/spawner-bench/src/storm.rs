//! Phase `storm`: spawns per second. Many keep-alive connections POST spawns of a cheap
//! backend (`/bin/true`) as fast as they are answered, while another client GETs one
//! backend's record every few milliseconds (the API's latency for other routes during the
//! storm); then 1,000 `spawner example-app` POSTed at once until all are Ready. Reports
//! accepted spawns/s, POST p50/p99, the control plane's CPU time per spawn (from the first
//! POST until every spawned backend has ended, its children's CPU not counted) and the GET's
//! p50/p99, measured twice at once: by a client in the storm client's runtime (its answers
//! wait there behind the storm's) and by one on a thread of its own.
//!
//! The client is hyper's HTTP/1 connection API with one request body serialized once: on
//! this machine it spends a fraction of the server's CPU per spawn (the figure is printed).

use crate::api::{Api, Server};
use crate::report::{fmt, Check, Phase};
use crate::util::{self, ms, Dist};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(120);

/// How many backends are in `state` now, from `/metrics`.
pub async fn count_state(api: &Api, state: &str) -> Result<usize> {
    count_states(api, &[state]).await
}

/// How many backends are in any of `states` now, from one `/metrics`.
async fn count_states(api: &Api, states: &[&str]) -> Result<usize> {
    let (status, body) = api.call(Method::GET, "/metrics", None).await?;
    if !status.is_success() {
        bail!("GET /metrics: {status}");
    }
    let text = std::str::from_utf8(&body)?;
    Ok(states
        .iter()
        .map(|state| {
            let prefix = format!("spawner_backends{{state=\"{state}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map_or(0, |v| v as usize)
        })
        .sum())
}

/// What one storm of POSTs measured.
struct Storm {
    latencies: Dist,
    accepted: usize,
    refused: usize,
    elapsed: Duration,
}

/// POSTs `body` to `/v1/backends` `total` times over `conns` keep-alive connections.
async fn storm(addr: SocketAddr, body: Bytes, total: usize, conns: usize) -> Result<Storm> {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..conns.min(total).max(1))
        .map(|_| {
            let next = next.clone();
            let body = body.clone();
            tokio::spawn(async move { one_connection(addr, body, next, total).await })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    let (mut accepted, mut refused) = (0, 0);
    for task in tasks {
        let (l, a, r) = task.await.context("a storm connection panicked")??;
        latencies.extend(l);
        accepted += a;
        refused += r;
    }
    Ok(Storm {
        latencies: Dist::new(latencies),
        accepted,
        refused,
        elapsed: t0.elapsed(),
    })
}

async fn one_connection(
    addr: SocketAddr,
    body: Bytes,
    next: Arc<AtomicUsize>,
    total: usize,
) -> Result<(Vec<f64>, usize, usize)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let uri = format!("http://{addr}/v1/backends");
    let mut latencies = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    while next.fetch_add(1, Ordering::Relaxed) < total {
        let req = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, crate::api::AUTH)
            .body(Full::new(body.clone()))?;
        let t = Instant::now();
        send.ready().await?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        latencies.push(ms(t.elapsed()));
        if status == StatusCode::CREATED {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    Ok((latencies, accepted, refused))
}

/// GETs `path` every `every` until `stop`; the latencies.
async fn prober(api: Api, path: String, every: Duration, stop: Arc<AtomicBool>) -> Result<Dist> {
    let mut latencies = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let t = Instant::now();
        let (status, _) = api.call(Method::GET, &path, None).await?;
        if !status.is_success() {
            bail!("GET {path}: {status}");
        }
        latencies.push(ms(t.elapsed()));
    }
    Ok(Dist::new(latencies))
}

/// [`prober`] on a thread and runtime of its own: a client that does not wait in the storm
/// client's run queue for its answers to be read, as another application calling the API
/// would not (both share the machine's cores all the same).
fn prober_apart(
    addr: SocketAddr,
    path: String,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<Dist>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(prober(Api::new(addr), path, every, stop))
    })
}

/// Waits until `count` backends are in one of `states`; when that was, from `t0`. One
/// `/metrics` per look, every 10 ms: the looking costs the server little beside the storm.
async fn wait_count(api: &Api, states: &[&str], count: usize, t0: Instant) -> Result<Duration> {
    loop {
        let n = count_states(api, states).await?;
        if n >= count {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > LIMIT {
            bail!("only {n} of {count} backends {states:?} after {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn run(ctx: &Ctx) -> Result<Phase> {
    Server::phase(ctx, "storm", async |_, server| measure(ctx, server).await).await
}

async fn measure(ctx: &Ctx, server: &Server) -> Result<Phase> {
    let pid = server.proc.pid();
    // The backend whose record is read during the storm.
    let probed = server
        .api
        .spawn_ready(&crate::spawn::backend_spec(ctx, 3600), LIMIT)
        .await?;

    // Warm-up: a small storm of the same kind.
    let cheap = Bytes::from(serde_json::to_vec(&json!({
        "executable": {"command": ["/bin/true"]},
        "grace_period_seconds": 60,
    }))?);
    let warm = (ctx.storm / 20).max(10);
    storm(server.api.addr, cheap.clone(), warm, ctx.storm_conns).await?;
    let ended = ["Terminated", "Failed"];
    wait_count(&server.api, &ended, warm, Instant::now()).await?;

    // The storm, with the prober beside it.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = tokio::spawn(prober(
        Api::new(server.api.addr),
        format!("/v1/backends/{probed}"),
        Duration::from_millis(2),
        stop.clone(),
    ));
    let apart = prober_apart(
        server.api.addr,
        format!("/v1/backends/{probed}"),
        Duration::from_millis(2),
        stop.clone(),
    );
    let cpu0 = util::cpu_time(pid, false)?;
    let client_cpu0 = util::cpu_time(std::process::id() as i32, false)?;
    let t0 = Instant::now();
    let result = storm(server.api.addr, cheap, ctx.storm, ctx.storm_conns).await;
    let client_cpu = util::cpu_time(std::process::id() as i32, false)?.saturating_sub(client_cpu0);
    stop.store(true, Ordering::Relaxed);
    let during = probe.await.context("the prober panicked")?;
    let during_apart = tokio::task::spawn_blocking(move || apart.join())
        .await
        .context("joining the prober thread")?
        .map_err(|_| anyhow::anyhow!("the prober thread panicked"))?;
    let cheap_storm = result?;
    let during = during?;
    let during_apart = during_apart?;
    let all_ended = wait_count(&server.api, &ended, warm + ctx.storm, t0).await?;
    let cpu = util::cpu_time(pid, false)?.saturating_sub(cpu0);
    let cpu_per_spawn_us = cpu.as_secs_f64() * 1e6 / ctx.storm as f64;
    let client_per_spawn_us = client_cpu.as_secs_f64() * 1e6 / ctx.storm as f64;
    let rate = cheap_storm.accepted as f64 / cheap_storm.elapsed.as_secs_f64();

    // 1,000 real backends at once, until all are Ready.
    let real = Bytes::from(serde_json::to_vec(&crate::spawn::backend_spec(ctx, 3600))?);
    let ready_before = count_state(&server.api, "Ready").await?;
    let cpu1 = util::cpu_time(pid, false)?;
    let t1 = Instant::now();
    let real_storm = storm(server.api.addr, real, ctx.storm_real, ctx.storm_conns).await?;
    let all_ready = wait_count(&server.api, &["Ready"], ready_before + ctx.storm_real, t1).await?;
    let real_cpu = util::cpu_time(pid, false)?.saturating_sub(cpu1);
    let real_rate = real_storm.accepted as f64 / real_storm.elapsed.as_secs_f64();

    let mut phase = Phase::new("S. Spawn storm: POST /v1/backends as fast as answered");
    phase.row(
        format!(
            "`/bin/true` × {} over {} connections: accepted spawns/s (refused)",
            ctx.storm, ctx.storm_conns
        ),
        format!("{rate:.0} ({})", cheap_storm.refused),
    );
    phase.row(
        "POST p50 / p99",
        format!(
            "{} / {} ms",
            fmt(cheap_storm.latencies.pct(50.0)),
            fmt(cheap_storm.latencies.pct(99.0))
        ),
    );
    phase.row(
        "all ended (Terminated) after the first POST",
        format!("{:.2} s", all_ended.as_secs_f64()),
    );
    phase.row(
        "control-plane CPU per spawn (server; harness client)",
        format!("{cpu_per_spawn_us:.0} µs; {client_per_spawn_us:.0} µs"),
    );
    phase.row(
        format!(
            "GET /v1/backends/{{id}} during the storm, p50 / p99 ({} calls)",
            during.len()
        ),
        format!("{} / {} ms", fmt(during.pct(50.0)), fmt(during.pct(99.0))),
    );
    phase.row(
        format!(
            "… the same GET from a client on a thread of its own, p50 / p99 ({} calls)",
            during_apart.len()
        ),
        format!(
            "{} / {} ms",
            fmt(during_apart.pct(50.0)),
            fmt(during_apart.pct(99.0))
        ),
    );
    phase.row(
        format!(
            "`spawner example-app` × {}: accepted/s, POST p50 / p99",
            ctx.storm_real
        ),
        format!(
            "{real_rate:.0}, {} / {} ms",
            fmt(real_storm.latencies.pct(50.0)),
            fmt(real_storm.latencies.pct(99.0))
        ),
    );
    phase.row(
        format!(
            "`spawner example-app` × {}: all Ready after the first POST",
            ctx.storm_real
        ),
        format!("{:.2} s", all_ready.as_secs_f64()),
    );
    phase.row(
        "… control-plane CPU per spawn until all Ready",
        format!(
            "{:.0} µs",
            real_cpu.as_secs_f64() * 1e6 / ctx.storm_real as f64
        ),
    );
    phase.checks.push(Check::at_least(
        "accepted spawns/s (cheap backend)",
        rate,
        2000.0,
        "/s",
        "≥ 2,000/s".into(),
    ));
    phase.checks.push(Check::at_most(
        "GET a backend during the storm, p99",
        during.pct(99.0),
        10.0,
        "ms",
        "< 10 ms".into(),
    ));
    phase.json = json!({
        "cheap": {
            "spawns": ctx.storm,
            "connections": ctx.storm_conns,
            "accepted_per_s": util::round3(rate),
            "refused": cheap_storm.refused,
            "post_ms": cheap_storm.latencies.json(),
            "all_ended_s": util::round3(all_ended.as_secs_f64()),
            "server_cpu_per_spawn_us": util::round3(cpu_per_spawn_us),
            "client_cpu_per_spawn_us": util::round3(client_per_spawn_us),
            "get_during_ms": during.json(),
            "get_during_apart_ms": during_apart.json(),
        },
        "example_app": {
            "spawns": ctx.storm_real,
            "accepted_per_s": util::round3(real_rate),
            "post_ms": real_storm.latencies.json(),
            "all_ready_s": util::round3(all_ready.as_secs_f64()),
            "server_cpu_per_spawn_us": util::round3(real_cpu.as_secs_f64() * 1e6 / ctx.storm_real as f64),
        },
    });
    Ok(phase)
}
