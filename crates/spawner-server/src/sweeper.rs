//! The sweeper: applies the lifecycle rules to every live backend, often enough that an
//! idle backend is stopped within a tick of its grace period ending.

use crate::app::App;
use crate::live::StopRequest;
use spawner_core::lifecycle::{decide, Decision, Observed};
use spawner_core::time::now_millis;
use std::sync::Arc;

pub async fn run(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep_once(&app);
    }
}

pub fn sweep_once(app: &Arc<App>) {
    let now = now_millis();
    for live in app.registry.all() {
        let observed = Observed {
            state: live.state(),
            created_at: live.created_at,
            live_connections: live.monitor.live(),
            last_activity: live.monitor.last_activity(),
        };
        if let Decision::Stop(reason) = decide(&live.timing, &observed, now) {
            if let Err(e) = app.store.set_stop(&live.id, reason.as_str(), false) {
                tracing::error!(backend = %live.id, error = %e, "could not record a stop");
                continue;
            }
            live.request_stop(StopRequest {
                reason,
                hard: false,
            });
        }
    }
}
