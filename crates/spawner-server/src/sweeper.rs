//! The sweeper: applies the lifecycle rules to every live backend, often enough that an
//! idle backend is stopped within a tick of its grace period ending.

use crate::app::App;
use crate::live::StopRequest;
use spawner_core::lifecycle::{decide, Decision};
use spawner_core::time::now_millis;
use std::sync::Arc;

pub async fn run(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = std::time::Instant::now();
    loop {
        tick.tick().await;
        sweep_once(&app).await;
        if let Some(retention) = app.config.retention {
            // Pruning is not urgent: as often as the retention, at most once a minute.
            if last_prune.elapsed() >= retention.min(PRUNE_EVERY) {
                last_prune = std::time::Instant::now();
                prune(&app, retention).await;
            }
        }
    }
}

const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Forgets the backends that ended longer than `retention` ago: logs first, then records
/// and events, so that a crash in between leaves a record to prune again, never a log
/// nobody would remove.
pub async fn prune(app: &Arc<App>, retention: std::time::Duration) {
    let before = now_millis() - retention.as_millis() as i64;
    let ids = match app.store.ended_before(before) {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "could not list ended backends to prune");
            return;
        }
    };
    let mut pruned = 0;
    for id in &ids {
        match tokio::fs::remove_file(app.log_path(id)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(backend = %id, error = %e, "could not remove the log of a backend to prune; keeping it");
                continue;
            }
        }
        match app.store.forget(id).await {
            Ok(()) => pruned += 1,
            Err(e) => tracing::warn!(backend = %id, error = %e, "could not prune an ended backend"),
        }
    }
    if pruned > 0 {
        tracing::info!(
            count = pruned,
            "pruned backends that ended over the retention ago"
        );
    }
}

pub async fn sweep_once(app: &Arc<App>) {
    let now = now_millis();
    for live in app.registry.all() {
        // A pooled backend is judged from its claim, and not at all while it waits for one.
        let Some((timing, since)) = app.pools.sweep_clock(&live) else {
            continue;
        };
        let mut observed = live.observed();
        observed.created_at = since;
        match decide(&timing, &observed, now) {
            Decision::Stop(reason) => {
                if let Err(e) = app.store.set_stop(&live.id, reason.as_str(), false).await {
                    tracing::error!(backend = %live.id, error = %e, "could not record a stop");
                    continue;
                }
                crate::reconciler::stop(
                    app,
                    &live,
                    StopRequest {
                        reason,
                        hard: false,
                    },
                );
            }
            // Not recorded as a stop: a restart meanwhile finds it Ready, idle, and the
            // next tick asks again.
            Decision::Sleep(reason) => live.request_sleep(reason),
            Decision::Keep { .. } => {}
        }
    }
}
