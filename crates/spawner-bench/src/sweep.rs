//! Phase 5: how long after its grace period ends an idle backend is Swept.

use crate::api::Server;
use crate::report::{fmt, Check, Phase};
use crate::util::{self, Dist};
use crate::Ctx;
use anyhow::{anyhow, bail, Result};
use futures_util::StreamExt;
use http::Method;
use serde_json::json;
use std::time::Duration;

const GRACE_MS: i64 = 1000;

pub async fn run(ctx: &Ctx) -> Result<Phase> {
    Server::phase(ctx, "sweep", async |_, server| measure(ctx, server).await).await
}

/// One backend: Ready, one proxied request (its last activity), then idle until Swept.
/// Returns (Terminating event − deadline, Swept received − deadline) in milliseconds.
async fn one(ctx: &Ctx, server: &Server) -> Result<(f64, f64)> {
    let api = &server.api;
    let id = api
        .spawn_ready(&crate::spawn::backend_spec(ctx, 1), Duration::from_secs(30))
        .await?;
    let (status, _) = api.call(Method::GET, &format!("/p/{id}/"), None).await?;
    if !status.is_success() {
        bail!("proxied GET of {id}: {status}");
    }
    let record = api.get_json(&format!("/v1/backends/{id}")).await?;
    let last = record["last_activity"]
        .as_str()
        .and_then(util::parse_rfc3339_ms)
        .ok_or_else(|| anyhow!("no last_activity in {record}"))?;
    let seen = api.follow(&id, "Swept", Duration::from_secs(30)).await?;
    let deadline = last + GRACE_MS;
    let terminating = seen
        .iter()
        .find(|s| s.state == "Terminating")
        .and_then(|s| s.time_ms)
        .ok_or_else(|| anyhow!("no Terminating event for {id}"))?;
    match seen.last() {
        Some(s) if s.state == "Swept" => Ok((
            (terminating - deadline) as f64,
            (s.wall_ms - deadline) as f64,
        )),
        Some(s) => bail!("backend {id} ended {} instead of Swept", s.state),
        None => bail!("no events for {id}"),
    }
}

async fn measure(ctx: &Ctx, server: &Server) -> Result<Phase> {
    let results: Vec<Result<(f64, f64)>> = futures_util::stream::iter(0..ctx.sweeps)
        .map(|i| async move {
            // Staggered, so that the deadlines fall at different points of the sweep tick.
            tokio::time::sleep(Duration::from_millis(37 * i as u64)).await;
            one(ctx, server).await
        })
        .buffer_unordered(ctx.sweeps.max(1))
        .collect()
        .await;
    let pairs = results.into_iter().collect::<Result<Vec<_>>>()?;
    let decided = Dist::new(pairs.iter().map(|p| p.0).collect());
    let swept = Dist::new(pairs.iter().map(|p| p.1).collect());

    let mut phase =
        Phase::new("5. Sweep precision: grace_period_seconds = 1, one request then idle");
    phase.row(
        format!(
            "Terminating after the grace period ended: p50 / max ({} backends)",
            decided.len()
        ),
        format!("{} / {} ms", fmt(decided.pct(50.0)), fmt(decided.max())),
    );
    phase.row(
        "Swept event received after the grace period ended: p50 / p99 / max",
        format!(
            "{} / {} / {} ms",
            fmt(swept.pct(50.0)),
            fmt(swept.pct(99.0)),
            fmt(swept.max())
        ),
    );
    phase.checks.push(Check::at_most(
        "Swept after the grace period (max)",
        swept.max() / 1000.0,
        1.0,
        "s",
        "≤ 1 s".into(),
    ));
    phase.json = json!({
        "backends": pairs.len(),
        "grace_ms": GRACE_MS,
        "terminating_after_deadline_ms": decided.json(),
        "swept_after_deadline_ms": swept.json(),
    });
    Ok(phase)
}
