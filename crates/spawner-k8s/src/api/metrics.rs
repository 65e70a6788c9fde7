//! The lifecycle series of `spawner api`'s `/metrics` that the embedded server counts where
//! things happen, counted here from what the API observes of the objects at each scrape:
//! `spawner_spawn_to_ready_seconds` (Submitted to Ready, from the status history) and
//! `spawner_sweeps_total` (backends stopped for idleness). Each object is counted once per
//! API process, by its uid; one created and deleted between two scrapes (deleted 60 s after
//! its end by default) is not seen.

use crate::model::crd::SessionLivedBackend;
use spawner_api::metrics::{LATENCY_BUCKETS, SPAWN_TO_READY, SWEEPS};
use spawner_core::lifecycle::StopReason;
use spawner_core::State;
use std::collections::HashSet;
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Counted {
    ready: HashSet<String>,
    swept: HashSet<String>,
    /// Per bucket of [`LATENCY_BUCKETS`] (not cumulative), then the sum and the count.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
    sweeps: u64,
}

/// What this API process has counted.
#[derive(Debug, Default)]
pub struct LifecycleStats(Mutex<Counted>);

impl LifecycleStats {
    /// Counts the objects not counted yet; returns the series as Prometheus text.
    pub fn render(&self, objects: &[SessionLivedBackend]) -> String {
        let Ok(mut c) = self.0.lock() else {
            return String::new();
        };
        if c.buckets.len() != LATENCY_BUCKETS.len() {
            c.buckets = vec![0; LATENCY_BUCKETS.len()];
        }
        for obj in objects {
            let (Some(uid), Some(status)) = (obj.metadata.uid.as_ref(), obj.status.as_ref()) else {
                continue;
            };
            let events = status.events();
            let at = |s: State| events.iter().find(|e| e.state == s).map(|e| e.time);
            if let (Some(submitted), Some(ready)) = (at(State::Submitted), at(State::Ready)) {
                if c.ready.insert(uid.clone()) {
                    let seconds = (ready - submitted).max(0) as f64 / 1000.0;
                    if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
                        c.buckets[i] += 1;
                    }
                    c.sum += seconds;
                    c.count += 1;
                }
            }
            let idle = status
                .stop_reason
                .as_deref()
                .and_then(StopReason::parse)
                .is_some_and(|r| matches!(r, StopReason::Idle | StopReason::IdleTimeout));
            if (idle || at(State::Swept).is_some()) && c.swept.insert(uid.clone()) {
                c.sweeps += 1;
            }
        }
        let mut text = format!(
            "# HELP {SPAWN_TO_READY} From Submitted to Ready (objects this API process saw)\n# TYPE {SPAWN_TO_READY} histogram\n"
        );
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&c.buckets) {
            cumulative += n;
            text.push_str(&format!(
                "{SPAWN_TO_READY}_bucket{{le=\"{bound}\"}} {cumulative}\n"
            ));
        }
        text.push_str(&format!(
            "{SPAWN_TO_READY}_bucket{{le=\"+Inf\"}} {}\n{SPAWN_TO_READY}_sum {}\n{SPAWN_TO_READY}_count {}\n",
            c.count, c.sum, c.count
        ));
        text.push_str(&format!(
            "# HELP {SWEEPS} Backends stopped for idleness (objects this API process saw)\n# TYPE {SWEEPS} counter\n{SWEEPS} {}\n",
            c.sweeps
        ));
        text
    }
}
