//! Phase 3: spawn-to-Ready through the API against the backend's own start-up, one at a
//! time and 200 at once.

use crate::api::Server;
use crate::report::{fmt, Check, Phase};
use crate::util::{self, median, ms, Dist, Proc};
use crate::Ctx;
use anyhow::Result;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

pub async fn run(ctx: &Ctx) -> Result<Phase> {
    Server::phase(ctx, "spawn", async |_, server| measure(ctx, server).await).await
}

/// The minimal backend: `spawner example-app` (a tokio/axum server, the same binary).
pub fn backend_spec(ctx: &Ctx, grace: u64) -> Value {
    json!({
        "executable": {"command": [ctx.spawner, "example-app"]},
        "grace_period_seconds": grace,
    })
}

/// Starts the backend's command without Spawner and waits until its port accepts.
pub async fn own_start(ctx: &Ctx, log: &std::path::Path) -> Result<(Duration, Proc)> {
    let port = util::free_port()?;
    let mut cmd = tokio::process::Command::new(&ctx.spawner);
    cmd.arg("example-app").env("PORT", port.to_string());
    let t0 = Instant::now();
    let proc = Proc::start("example-app", cmd, &ctx.token, log)?;
    util::wait_port(SocketAddr::from(([127, 0, 0, 1], port)), LIMIT).await?;
    Ok((t0.elapsed(), proc))
}

/// Spawns through the API and follows the status stream until Ready.
async fn via_spawner(server: &Server, spec: &Value) -> Result<(Duration, String)> {
    let t0 = Instant::now();
    let id = server.api.spawn(spec).await?;
    let ready = server.api.wait_for(&id, "Ready", LIMIT).await?;
    Ok((ready.at.duration_since(t0), id))
}

/// Terminates a backend hard and waits until it has ended.
async fn end(server: &Server, id: &str) -> Result<()> {
    server.api.terminate(id, true).await?;
    server.api.follow(id, "Terminated", LIMIT).await?;
    Ok(())
}

async fn measure(ctx: &Ctx, server: &Server) -> Result<Phase> {
    let spec = backend_spec(ctx, 3600);
    let logs = server.dir.join("own-logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("own.log");

    // Warm-up (page cache, pools), then alternate own start-ups and spawns through
    // Spawner, each started on a quiet machine: the previous backend is gone first.
    for _ in 0..3 {
        own_start(ctx, &log).await?.1.stop().await;
        let (_, id) = via_spawner(server, &spec).await?;
        end(server, &id).await?;
    }
    let mut own = Vec::with_capacity(ctx.spawns);
    let mut via = Vec::with_capacity(ctx.spawns);
    for i in 0..ctx.spawns {
        for step in [i % 2, 1 - i % 2] {
            if step == 0 {
                let (took, proc) = own_start(ctx, &log).await?;
                own.push(ms(took));
                proc.stop().await;
            } else {
                let (took, id) = via_spawner(server, &spec).await?;
                via.push(ms(took));
                end(server, &id).await?;
            }
        }
    }
    let own = Dist::new(own);
    let via = Dist::new(via);

    // Many at once: the same number of plain launches, then of spawns.
    let (mut own_failed, mut via_failed) = (0, 0);
    let mut own_walls = Vec::new();
    let mut via_walls = Vec::new();
    for _ in 0..ctx.concurrent_rounds {
        let t0 = Instant::now();
        let started: Vec<Result<(Duration, Proc)>> = futures_util::stream::iter(0..ctx.concurrent)
            .map(|_| own_start(ctx, &log))
            .buffer_unordered(ctx.concurrent)
            .collect()
            .await;
        own_walls.push(ms(t0.elapsed()));
        own_failed += started.iter().filter(|r| r.is_err()).count();
        let procs = started.into_iter().filter_map(Result::ok);
        futures_util::future::join_all(procs.map(|(_, p)| p.stop())).await;

        let t0 = Instant::now();
        let spawned: Vec<Result<(Duration, String)>> =
            futures_util::stream::iter(0..ctx.concurrent)
                .map(|_| via_spawner(server, &spec))
                .buffer_unordered(ctx.concurrent)
                .collect()
                .await;
        via_walls.push(ms(t0.elapsed()));
        via_failed += spawned.iter().filter(|r| r.is_err()).count();
        server.api.terminate_all().await?;
    }
    let own_wall = median(&own_walls);
    let via_wall = median(&via_walls);
    let over_wall = median(
        &own_walls
            .iter()
            .zip(&via_walls)
            .map(|(o, v)| v - o)
            .collect::<Vec<_>>(),
    );

    let mut phase = Phase::new("3. Spawn: `spawner example-app`, POST until the Ready event");
    phase.row(
        format!(
            "own start-up p50 / p99 (launch until the port accepts, {} runs)",
            own.len()
        ),
        format!("{} / {} ms", fmt(own.pct(50.0)), fmt(own.pct(99.0))),
    );
    phase.row(
        format!("spawn-to-Ready p50 / p99 ({} spawns)", via.len()),
        format!("{} / {} ms", fmt(via.pct(50.0)), fmt(via.pct(99.0))),
    );
    phase.row(
        "overhead p50 / p99",
        format!(
            "{} / {} ms",
            fmt(via.pct(50.0) - own.pct(50.0)),
            fmt(via.pct(99.0) - own.pct(99.0))
        ),
    );
    phase.row(
        format!(
            "{} at once: own start-up wall / all Ready wall (median of {})",
            ctx.concurrent, ctx.concurrent_rounds
        ),
        format!("{} / {} ms", fmt(own_wall), fmt(via_wall)),
    );
    phase.row(
        "failed starts at once: own / through Spawner (port taken before the bind)",
        format!("{own_failed} / {via_failed}"),
    );
    phase.checks.push(Check::at_most(
        "spawn-to-Ready p50 − own start-up p50",
        via.pct(50.0) - own.pct(50.0),
        5.0,
        "ms",
        "≤ 5 ms".into(),
    ));
    phase.checks.push(Check::at_most(
        "spawn-to-Ready p99 − own start-up p99",
        via.pct(99.0) - own.pct(99.0),
        25.0,
        "ms",
        "≤ 25 ms".into(),
    ));
    phase.checks.push(Check::at_most(
        &format!(
            "{} concurrent spawns, all Ready, beyond own start-up",
            ctx.concurrent
        ),
        over_wall / 1000.0,
        2.0,
        "s",
        "≤ 2 s".into(),
    ));
    phase.json = json!({
        "backend": "spawner example-app",
        "own_startup_ms": own.json(),
        "spawn_to_ready_ms": via.json(),
        "overhead_p50_ms": util::round3(via.pct(50.0) - own.pct(50.0)),
        "overhead_p99_ms": util::round3(via.pct(99.0) - own.pct(99.0)),
        "concurrent": ctx.concurrent,
        "concurrent_own_wall_ms": own_walls.iter().map(|v| util::round3(*v)).collect::<Vec<_>>(),
        "concurrent_spawn_wall_ms": via_walls.iter().map(|v| util::round3(*v)).collect::<Vec<_>>(),
        "concurrent_beyond_own_ms": util::round3(over_wall),
        "concurrent_own_failed": own_failed,
        "concurrent_spawn_failed": via_failed,
    });
    Ok(phase)
}
