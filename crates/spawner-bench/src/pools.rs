//! The pools phase (issue 18): claim-to-Ready of a warm pool against a cold spawn of the
//! same template in the same run, for process and Docker backends; 50 claims at once; and
//! the claims per second a pool sustains while it refills.

use crate::api::{Api, Server};
use crate::report::{fmt, Check, Phase};
use crate::util::{self, ms, Dist};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use http::Method;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);
/// The busybox image of scripts/build-test-images.sh: `httpd` on `$PORT`.
const DOCKER_IMAGE: &str = "spawner-test/busybox:1";

pub async fn run(ctx: &Ctx) -> Result<Phase> {
    Server::phase(ctx, "pools", async |_, server| measure(ctx, server).await).await
}

/// One kind of backend the phase measures.
struct Kind {
    name: &'static str,
    template: Value,
    cold_spawns: usize,
    claims: usize,
    at_once: usize,
    sustain: Duration,
    max: u32,
}

/// What was measured for one kind.
struct Figures {
    cold: Dist,
    claim: Dist,
    at_once: Dist,
    at_once_wall: f64,
    at_once_cold: u64,
    sustained_per_s: f64,
    sustained_claims: u64,
    sustained_cold: u64,
}

async fn measure(ctx: &Ctx, server: &Server) -> Result<Phase> {
    let mut kinds = vec![Kind {
        name: "process (`spawner example-app`)",
        template: json!({"executable": {"command": [ctx.spawner, "example-app"]}, "grace_period_seconds": 3600}),
        cold_spawns: ctx.pool_claims.min(50),
        claims: ctx.pool_claims,
        at_once: ctx.pool_at_once,
        sustain: Duration::from_secs(ctx.pool_sustain_seconds),
        max: (ctx.pool_at_once as u32 + 20).max(60),
    }];
    let docker = docker_image_present();
    if let Some(image) = &docker {
        kinds.push(Kind {
            name: "Docker (busybox httpd)",
            template: json!({"executable": {"image": image}, "grace_period_seconds": 3600}),
            cold_spawns: 10,
            claims: ctx.pool_claims.min(50),
            at_once: ctx.pool_at_once,
            sustain: Duration::from_secs(ctx.pool_sustain_seconds),
            max: ctx.pool_at_once as u32 + 10,
        });
    }
    let mut phase = Phase::new(
        "Pools: claim-to-Ready of a warm pool against a cold spawn of the same template",
    );
    let mut results = serde_json::Map::new();
    for (i, kind) in kinds.iter().enumerate() {
        let pool = format!("bench-{i}");
        let measured = measure_kind(server, &pool, kind).await;
        if measured.is_err() {
            // Drained, or the pool would refill what the server's stop terminates.
            let path = format!("/v1/pools/{pool}");
            let _ = server.api.call(Method::DELETE, &path, None).await;
        }
        let f = measured.with_context(|| kind.name)?;
        phase.row(
            format!(
                "{}: cold spawn-to-Ready p50 / p99 ({} spawns)",
                kind.name,
                f.cold.len()
            ),
            format!("{} / {} ms", fmt(f.cold.pct(50.0)), fmt(f.cold.pct(99.0))),
        );
        phase.row(
            format!(
                "{}: claim-to-Ready p50 / p99 ({} claims, one at a time)",
                kind.name,
                f.claim.len()
            ),
            format!("{} / {} ms", fmt(f.claim.pct(50.0)), fmt(f.claim.pct(99.0))),
        );
        phase.row(
            format!(
                "{}: {} claims at once, p50 / p99 / wall (cold among them)",
                kind.name, kind.at_once
            ),
            format!(
                "{} / {} / {} ms ({})",
                fmt(f.at_once.pct(50.0)),
                fmt(f.at_once.pct(99.0)),
                fmt(f.at_once_wall),
                f.at_once_cold
            ),
        );
        phase.row(
            format!(
                "{}: claims/s sustained while refilling ({} s, 8 clients; cold among them)",
                kind.name,
                kind.sustain.as_secs()
            ),
            format!(
                "{} ({} claims; {})",
                fmt(f.sustained_per_s),
                f.sustained_claims,
                f.sustained_cold
            ),
        );
        phase.checks.push(Check::at_most(
            &format!("{}: claim-to-Ready p50", kind.name),
            f.claim.pct(50.0),
            5.0,
            "ms",
            "≤ 5 ms".into(),
        ));
        phase.checks.push(Check::at_most(
            &format!("{}: claim-to-Ready p99", kind.name),
            f.claim.pct(99.0),
            20.0,
            "ms",
            "≤ 20 ms".into(),
        ));
        results.insert(
            kind.name.to_string(),
            json!({
                "template": kind.template,
                "cold_spawn_to_ready_ms": f.cold.json(),
                "claim_to_ready_ms": f.claim.json(),
                "at_once": kind.at_once,
                "at_once_ms": f.at_once.json(),
                "at_once_wall_ms": util::round3(f.at_once_wall),
                "at_once_cold_claims": f.at_once_cold,
                "sustained_seconds": kind.sustain.as_secs(),
                "sustained_claims_per_s": util::round3(f.sustained_per_s),
                "sustained_claims": f.sustained_claims,
                "sustained_cold_claims": f.sustained_cold,
            }),
        );
    }
    if docker.is_none() {
        phase.row(
            "Docker",
            "not measured: no Docker engine, or no spawner-test/busybox:1 (scripts/build-test-images.sh)",
        );
    }
    phase.json = Value::Object(results);
    Ok(phase)
}

/// The test image, if an engine answers and has it.
fn docker_image_present() -> Option<String> {
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", DOCKER_IMAGE])
        .output()
        .ok()?;
    out.status.success().then(|| DOCKER_IMAGE.to_string())
}

async fn measure_kind(server: &Server, pool: &str, kind: &Kind) -> Result<Figures> {
    let api = &server.api;
    // Cold: the template spawned as it is, one at a time, until Ready.
    let mut cold = Vec::new();
    for _ in 0..kind.cold_spawns {
        let t0 = Instant::now();
        let id = api.spawn(&kind.template).await?;
        let ready = api.wait_for(&id, "Ready", LIMIT).await?;
        cold.push(ms(ready.at.duration_since(t0)));
        api.terminate(&id, true).await?;
        api.follow(&id, "Terminated", LIMIT).await?;
    }

    let (status, body) = api
        .call(
            Method::POST,
            "/v1/pools",
            Some(
                &json!({"name": pool, "template": kind.template, "min_ready": 4, "max": kind.max}),
            ),
        )
        .await?;
    if !status.is_success() {
        bail!(
            "creating the pool: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    // One at a time, each finding a Ready backend (the wait for the refill is not counted).
    let mut claims = Vec::new();
    for _ in 0..kind.claims {
        wait_ready(api, pool, 1).await?;
        let (took, id, _) = claim(api, pool, "start").await?;
        claims.push(ms(took));
        end_later(api, id);
    }

    // Many at once, from a pool holding that many Ready.
    resize(api, pool, kind.at_once as u32, kind.max).await?;
    wait_ready(api, pool, kind.at_once as u32).await?;
    let before = cold_claims(api, pool).await?;
    let t0 = Instant::now();
    let done: Vec<Result<(Duration, String, bool)>> = futures_util::stream::iter(0..kind.at_once)
        .map(|_| claim(api, pool, "start"))
        .buffer_unordered(kind.at_once)
        .collect()
        .await;
    let at_once_wall = ms(t0.elapsed());
    let mut at_once = Vec::new();
    for r in done {
        let (took, id, _) = r?;
        at_once.push(ms(took));
        end_later(api, id);
    }
    let at_once_cold = cold_claims(api, pool).await? - before;

    // Sustained: 8 clients claim (waiting for the refill when the pool is empty) for a
    // while; every claimed backend is ended at once, which makes room for the refill.
    resize(api, pool, 10, kind.max).await?;
    wait_ready(api, pool, 10).await?;
    let before = cold_claims(api, pool).await?;
    let count = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + kind.sustain;
    let t0 = Instant::now();
    let clients = (0..8).map(|_| {
        let api = api.clone();
        let pool = pool.to_string();
        let count = count.clone();
        async move {
            while Instant::now() < until {
                let (_, id, _) = claim(&api, &pool, "wait").await?;
                count.fetch_add(1, Ordering::Relaxed);
                end_later(&api, id);
            }
            anyhow::Ok(())
        }
    });
    for r in futures_util::future::join_all(clients).await {
        r?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let sustained_claims = count.load(Ordering::Relaxed);
    let sustained_cold = cold_claims(api, pool).await? - before;

    let (status, body) = api
        .call(Method::DELETE, &format!("/v1/pools/{pool}"), None)
        .await?;
    if !status.is_success() {
        bail!(
            "draining the pool: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    api.terminate_all().await?;
    Ok(Figures {
        cold: Dist::new(cold),
        claim: Dist::new(claims),
        at_once: Dist::new(at_once),
        at_once_wall,
        at_once_cold,
        sustained_per_s: sustained_claims as f64 / elapsed,
        sustained_claims,
        sustained_cold,
    })
}

/// Claims a backend; how long until the answer (Ready), its id, whether it was created.
async fn claim(api: &Api, pool: &str, if_none_ready: &str) -> Result<(Duration, String, bool)> {
    let body = json!({"pool": pool, "if_none_ready": if_none_ready, "wait_seconds": 120});
    let t0 = Instant::now();
    let (status, bytes) = api.call(Method::POST, "/v1/backends", Some(&body)).await?;
    let took = t0.elapsed();
    if !status.is_success() {
        bail!(
            "claim refused: {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let v: Value = serde_json::from_slice(&bytes)?;
    if v["state"] != "Ready" {
        bail!("a claim answered a backend that is not Ready: {v}");
    }
    let id = v["id"]
        .as_str()
        .context("claim answer without id")?
        .to_string();
    Ok((took, id, status == http::StatusCode::CREATED))
}

/// Ends a claimed backend in the background (the measurement goes on).
fn end_later(api: &Api, id: String) {
    let api = api.clone();
    tokio::spawn(async move {
        let _ = api.terminate(&id, true).await;
    });
}

async fn resize(api: &Api, pool: &str, min_ready: u32, max: u32) -> Result<()> {
    let (status, body) = api
        .call(
            Method::PUT,
            &format!("/v1/pools/{pool}"),
            Some(&json!({"min_ready": min_ready, "max": max})),
        )
        .await?;
    if !status.is_success() {
        bail!(
            "resizing the pool: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

async fn status(api: &Api, pool: &str) -> Result<Value> {
    api.get_json(&format!("/v1/pools/{pool}")).await
}

async fn cold_claims(api: &Api, pool: &str) -> Result<u64> {
    Ok(status(api, pool).await?["cold_claims"]
        .as_u64()
        .unwrap_or(0))
}

/// Waits (bounded) until the pool holds at least `n` Ready backends.
async fn wait_ready(api: &Api, pool: &str, n: u32) -> Result<()> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let s = status(api, pool).await?;
        if s["ready"].as_u64().unwrap_or(0) >= u64::from(n) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("pool {pool} not {n} Ready within {LIMIT:?}: {s}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
