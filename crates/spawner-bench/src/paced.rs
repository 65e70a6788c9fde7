//! Paced WebSocket traffic, as a game room or a shared editor makes it: many connections,
//! each sending a small message now and then. The proxy's threads keep polling for a
//! moment after each message they relay (`spawner serve --busy-poll-us`); this is what that
//! costs in CPU time at such rates, against the same proxy without it and against nginx,
//! with the round trips each gives.

use crate::api::Server;
use crate::report::{fmt, Phase};
use crate::util::{self, median, ms, Dist};
use crate::ws::{self, Ws};
use crate::Ctx;
use anyhow::{anyhow, Result};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;

/// One way to the backend, with the process whose CPU time it costs (none for direct).
struct Path {
    name: &'static str,
    url: String,
    cpu: Option<(i32, bool)>,
}

/// One paced run over one path.
struct Run {
    rtt: Dist,
    cpu: Option<Duration>,
    wall: Duration,
}

pub async fn run(ctx: &Ctx) -> Result<Phase> {
    let dir = ctx.dir.join("paced");
    let polling = Server::start(ctx, &dir.join("spawner"), &ctx.token).await?;
    let quiet = Server::start_with(
        ctx,
        &dir.join("spawner-no-poll"),
        &ctx.token,
        &[("SPAWNER_BUSY_POLL_US", "0")],
    )
    .await;
    let result = match &quiet {
        Ok(quiet) => measure(ctx, &dir, &polling, quiet).await,
        Err(e) => Err(anyhow!("starting the second spawner serve: {e:#}")),
    };
    let stopped = polling.stop().await;
    if let Ok(quiet) = quiet {
        quiet.stop().await?;
    }
    let phase = result?;
    stopped?;
    Ok(phase)
}

async fn measure(
    ctx: &Ctx,
    dir: &std::path::Path,
    polling: &Server,
    quiet: &Server,
) -> Result<Phase> {
    let (id, address) = ws::spawn_example(ctx, polling).await?;
    let (quiet_id, _) = ws::spawn_example(ctx, quiet).await?;
    let (nginx, nginx_port) = ws::start_nginx(ctx, dir, &address).await?;
    let paths = [
        Path {
            name: "direct",
            url: format!("ws://{address}/ws"),
            cpu: None,
        },
        Path {
            name: "spawner",
            url: format!("ws://{}/p/{id}/ws", polling.api.addr),
            cpu: Some((polling.proc.pid(), false)),
        },
        Path {
            name: "spawner without busy polling",
            url: format!("ws://{}/p/{quiet_id}/ws", quiet.api.addr),
            cpu: Some((quiet.proc.pid(), false)),
        },
        Path {
            name: "nginx",
            url: format!("ws://127.0.0.1:{nginx_port}/ws"),
            cpu: Some((nginx.pid(), true)),
        },
    ];
    // Rounds alternate the paths, so that a noisy moment of the machine is shared.
    let mut runs: Vec<Vec<Run>> = paths.iter().map(|_| Vec::new()).collect();
    for _ in 0..ctx.rounds {
        for (path, runs) in paths.iter().zip(&mut runs) {
            runs.push(paced(ctx, path).await?);
        }
    }
    nginx.stop().await;

    let per_message_us = |runs: &[Run]| {
        median(
            &runs
                .iter()
                .filter_map(|r| {
                    r.cpu
                        .map(|c| c.as_secs_f64() * 1e6 / r.rtt.len().max(1) as f64)
                })
                .collect::<Vec<_>>(),
        )
    };
    let core_share = |runs: &[Run]| {
        median(
            &runs
                .iter()
                .filter_map(|r| r.cpu.map(|c| c.as_secs_f64() / r.wall.as_secs_f64()))
                .collect::<Vec<_>>(),
        )
    };
    let p = |runs: &[Run], q: f64| median(&runs.iter().map(|r| r.rtt.pct(q)).collect::<Vec<_>>());
    let messages = runs[0].first().map_or(0, |r| r.rtt.len());

    let mut phase = Phase::new("2b. Paced WebSocket traffic: proxy CPU time at a game room's rate");
    phase.row(
        "connections × messages per second each × seconds (runs)",
        format!(
            "{} × {} × {} s ({} runs; {messages} echoes per run)",
            ctx.paced_conns, ctx.paced_hz, ctx.paced_seconds, ctx.rounds
        ),
    );
    let mut json_paths = serde_json::Map::new();
    for (path, runs) in paths.iter().zip(&runs) {
        let cpu = if path.cpu.is_some() {
            format!(
                "; proxy CPU {} % of a core, {} µs per echo",
                fmt(core_share(runs) * 100.0),
                fmt(per_message_us(runs))
            )
        } else {
            String::new()
        };
        phase.row(
            format!("{}: round trip p50 / p99", path.name),
            format!("{} / {} ms{cpu}", fmt(p(runs, 50.0)), fmt(p(runs, 99.0))),
        );
        json_paths.insert(
            path.name.to_string(),
            json!({
                "rtt_p50_ms": util::round3(p(runs, 50.0)),
                "rtt_p99_ms": util::round3(p(runs, 99.0)),
                "cpu_core_share": path.cpu.map(|_| util::round3(core_share(runs))),
                "cpu_us_per_echo": path.cpu.map(|_| util::round3(per_message_us(runs))),
                "runs": runs.iter().map(|r| json!({
                    "rtt_ms": r.rtt.json(),
                    "cpu_ms": r.cpu.map(|c| util::round3(ms(c))),
                    "wall_s": util::round3(r.wall.as_secs_f64()),
                })).collect::<Vec<_>>(),
            }),
        );
    }
    // The paths' order above: direct, spawner, without busy polling, nginx.
    let spawner = per_message_us(&runs[1]);
    let (vs_quiet, vs_nginx) = (
        spawner / per_message_us(&runs[2]),
        spawner / per_message_us(&runs[3]),
    );
    phase.row(
        "ratio proxy CPU per echo: spawner / without busy polling; spawner / nginx",
        format!("{}; {}", fmt(vs_quiet), fmt(vs_nginx)),
    );
    phase.json = json!({
        "connections": ctx.paced_conns,
        "hz": ctx.paced_hz,
        "seconds": ctx.paced_seconds,
        "rounds": ctx.rounds,
        "paths": json_paths,
        "ratio_cpu_vs_no_busy_poll": util::round3(vs_quiet),
        "ratio_cpu_vs_nginx": util::round3(vs_nginx),
    });
    Ok(phase)
}

/// `ctx.paced_conns` WebSockets over `path`, each sending a one-byte text `ctx.paced_hz`
/// times a second for `ctx.paced_seconds` and timing its echo; their starts are spread
/// over one period, as independent clients' are. The CPU time is read around the sending.
async fn paced(ctx: &Ctx, path: &Path) -> Result<Run> {
    let mut conns: Vec<Ws> = Vec::with_capacity(ctx.paced_conns);
    for _ in 0..ctx.paced_conns {
        conns.push(ws::connect(&path.url).await?);
    }
    let period = Duration::from_secs_f64(1.0 / f64::from(ctx.paced_hz));
    let start = Instant::now() + Duration::from_millis(50);
    let until = start + Duration::from_secs(ctx.paced_seconds);
    let cpu_before = path
        .cpu
        .map(|(pid, kids)| util::cpu_time(pid, kids))
        .transpose()?;
    let began = Instant::now();
    let n = conns.len();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let url = path.url.clone();
            let first = start + period.mul_f64(i as f64 / n as f64);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(first.into(), period);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut samples = Vec::new();
                loop {
                    if tick.tick().await.into_std() >= until {
                        break;
                    }
                    let t = Instant::now();
                    ws::round_trip(&mut ws, &url).await?;
                    samples.push(ms(t.elapsed()));
                }
                let _ = ws.close(None).await;
                Ok::<_, anyhow::Error>(samples)
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut failed = None;
    for task in tasks {
        match task.await {
            Ok(Ok(s)) => samples.extend(s),
            Ok(Err(e)) => failed = Some(e),
            Err(e) => failed = Some(e.into()),
        }
    }
    let wall = began.elapsed();
    let cpu = match (path.cpu, cpu_before) {
        (Some((pid, kids)), Some(before)) => {
            Some(util::cpu_time(pid, kids)?.saturating_sub(before))
        }
        _ => None,
    };
    if let Some(e) = failed {
        return Err(e.context(format!("paced WebSockets over {}", path.name)));
    }
    Ok(Run {
        rtt: Dist::new(samples),
        cpu,
        wall,
    })
}
