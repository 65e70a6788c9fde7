//! Phase 4: many live backends at once: the control plane's memory, and whether the API
//! and the proxy still answer quickly.

use crate::api::{Api, Server};
use crate::report::{fmt, Check, Phase};
use crate::util::{self, ms, Dist};
use crate::Ctx;
use anyhow::{bail, Result};
use futures_util::StreamExt;
use http::Method;
use serde_json::json;
use std::time::{Duration, Instant};

pub async fn run(ctx: &Ctx) -> Result<Phase> {
    Server::phase(ctx, "scale", async |_, server| measure(ctx, server).await).await
}

/// Times `calls` GETs of `path(i)` with `workers` clients in parallel; returns the
/// latencies of the successful ones and the number of failures.
async fn time_calls(
    api: &Api,
    calls: usize,
    workers: usize,
    path: impl Fn(usize) -> String,
) -> Result<(Dist, usize)> {
    let path = &path;
    let results: Vec<Result<f64>> = futures_util::stream::iter(0..calls)
        .map(|i| async move {
            let p = path(i);
            let t = Instant::now();
            let (status, _) = api.call(Method::GET, &p, None).await?;
            if !status.is_success() {
                bail!("GET {p}: {status}");
            }
            Ok(ms(t.elapsed()))
        })
        .buffer_unordered(workers)
        .collect()
        .await;
    let failures = results.iter().filter(|r| r.is_err()).count();
    if failures == calls {
        bail!("every call failed");
    }
    Ok((
        Dist::new(results.into_iter().filter_map(Result::ok).collect()),
        failures,
    ))
}

async fn measure(ctx: &Ctx, server: &Server) -> Result<Phase> {
    let spec = crate::spawn::backend_spec(ctx, 3600);
    let idle_rss = server.rss_kib()?;
    // Spawned 32 at a time; a backend that fails to start (see docs/benchmarks.md: a
    // free port can be taken before the backend binds it) is replaced, twice at most.
    let t0 = Instant::now();
    let mut failed = 0;
    let mut ready_ids: Vec<String> = Vec::new();
    for _ in 0..3 {
        let missing = ctx.scale.saturating_sub(ready_ids.len());
        if missing == 0 {
            break;
        }
        let spawned: Vec<Result<String>> = futures_util::stream::iter(0..missing)
            .map(|_| {
                let spec = &spec;
                async move {
                    let id = server.api.spawn(spec).await?;
                    server
                        .api
                        .wait_for(&id, "Ready", Duration::from_secs(120))
                        .await?;
                    Ok(id)
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        failed += spawned.iter().filter(|r| r.is_err()).count();
        ready_ids.extend(spawned.into_iter().filter_map(Result::ok));
    }
    let all_ready = t0.elapsed();
    let ids: Vec<String> = server
        .api
        .list_all("?state=Ready")
        .await?
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_string))
        .collect();
    let ready = ids.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let live_rss = server.rss_kib()?;

    // Spread the calls over every backend (a stride that is coprime with most counts).
    let n = ids.len().max(1);
    let pick = |i: usize| &ids[(i * 7919) % n];
    let (status, status_failed) =
        time_calls(&server.api, ctx.scale_calls, ctx.scale_workers, |i| {
            format!("/v1/backends/{}/status", pick(i))
        })
        .await?;
    let (proxied, proxied_failed) =
        time_calls(&server.api, ctx.scale_calls, ctx.scale_workers, |i| {
            format!("/p/{}/", pick(i))
        })
        .await?;
    // The largest page (a list answers in pages: docs/api.md).
    let (list, _) = time_calls(&server.api, 10, 1, |_| {
        "/v1/backends?limit=1000".to_string()
    })
    .await?;
    let after_rss = server.rss_kib()?;

    let mut phase = Phase::new("4. Scale: live `spawner example-app` backends at once");
    phase.row(
        "backends Ready (spawned 32 at a time); failed starts replaced",
        format!("{ready} in {:.1} s; {failed}", all_ready.as_secs_f64()),
    );
    phase.row(
        "control-plane RSS: empty / all live / after the calls",
        format!(
            "{} / {} / {} MiB",
            fmt(idle_rss as f64 / 1024.0),
            fmt(live_rss as f64 / 1024.0),
            fmt(after_rss as f64 / 1024.0)
        ),
    );
    phase.row(
        format!(
            "status call p50 / p99 ({} calls, {} clients)",
            status.len(),
            ctx.scale_workers
        ),
        format!(
            "{} / {} ms ({status_failed} failed)",
            fmt(status.pct(50.0)),
            fmt(status.pct(99.0))
        ),
    );
    phase.row(
        format!(
            "proxied GET / p50 / p99 ({} calls over all backends)",
            proxied.len()
        ),
        format!(
            "{} / {} ms ({proxied_failed} failed)",
            fmt(proxied.pct(50.0)),
            fmt(proxied.pct(99.0))
        ),
    );
    phase.row(
        format!("list, a page of up to 1000 of the {ready}, p50 (10 calls)"),
        format!("{} ms", fmt(list.pct(50.0))),
    );
    let peak_mib = live_rss.max(after_rss) as f64 / 1024.0;
    phase.checks.push(Check::at_least(
        &format!("live backends (of {})", ctx.scale),
        ready as f64,
        1000.0,
        "",
        "1,000".into(),
    ));
    phase.checks.push(Check::at_most(
        "control-plane RSS with the backends live",
        peak_mib,
        100.0,
        "MiB",
        "≤ 100 MiB".into(),
    ));
    phase.checks.push(Check::at_most(
        "status call p99 under scale",
        status.pct(99.0),
        10.0,
        "ms",
        "≤ 10 ms".into(),
    ));
    phase.json = json!({
        "backends": ctx.scale,
        "ready": ready,
        "failed_starts": failed,
        "status_failed": status_failed,
        "proxied_failed": proxied_failed,
        "all_ready_seconds": util::round3(all_ready.as_secs_f64()),
        "rss_empty_kib": idle_rss,
        "rss_live_kib": live_rss,
        "rss_after_calls_kib": after_rss,
        "status_ms": status.json(),
        "proxied_ms": proxied.json(),
        "list_ms": list.json(),
        "workers": ctx.scale_workers,
    });
    Ok(phase)
}
