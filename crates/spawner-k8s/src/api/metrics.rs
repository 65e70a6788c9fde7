//! The lifecycle series of `spawner api`'s `/metrics` that the embedded server counts where
//! things happen, counted here from what the API observes of the objects at each scrape:
//! `spawner_spawn_to_ready_seconds` (Submitted to Ready, from the status history) and
//! `spawner_sweeps_total` (backends stopped for idleness), `spawner_wakes_total` and
//! `spawner_wake_to_ready_seconds` (sleepers woken, Waking to Ready). Each object is counted
//! once per API process, by its uid (a sleeper's wakes one by one, by their place in its
//! history); one created and deleted between two scrapes (deleted 60 s after its end by
//! default) is not seen.

use crate::model::crd::SessionLivedBackend;
use spawner_api::metrics::{LATENCY_BUCKETS, SPAWN_TO_READY, SWEEPS};
use spawner_core::lifecycle::StopReason;
use spawner_core::State;
use std::collections::{HashMap, HashSet};
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
    /// Per uid: the wakes counted (Waking entries), and those of them whose Ready was timed.
    woken: HashMap<String, (usize, usize)>,
    wakes: u64,
    wake_buckets: Vec<u64>,
    wake_sum: f64,
    wake_count: u64,
}

/// The names of the wake series, as the embedded server's.
const WAKES: &str = "spawner_wakes_total";
const WAKE_TO_READY: &str = "spawner_wake_to_ready_seconds";

/// Adds `seconds` to a histogram's (non-cumulative) buckets of [`LATENCY_BUCKETS`].
fn observe(buckets: &mut [u64], sum: &mut f64, count: &mut u64, seconds: f64) {
    if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
        buckets[i] += 1;
    }
    *sum += seconds;
    *count += 1;
}

/// A histogram as Prometheus text.
fn histogram(text: &mut String, name: &str, buckets: &[u64], sum: f64, count: u64) {
    let mut cumulative = 0;
    for (bound, n) in LATENCY_BUCKETS.iter().zip(buckets) {
        cumulative += n;
        text.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {cumulative}\n"));
    }
    text.push_str(&format!(
        "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}\n"
    ));
}

/// The wakes of a history: each Waking's time, with its Ready's if it came.
fn wakes_of(events: &[spawner_core::Event]) -> Vec<(i64, Option<i64>)> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if e.state == State::Waking {
            let ready = events[i + 1..]
                .iter()
                .take_while(|n| n.state == State::Waking || n.state == State::Ready)
                .find(|n| n.state == State::Ready)
                .map(|n| n.time);
            out.push((e.time, ready));
        }
    }
    out
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
            c.wake_buckets = vec![0; LATENCY_BUCKETS.len()];
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
            let wakes = wakes_of(&events);
            if !wakes.is_empty() {
                let (counted, timed) = c.woken.get(uid).copied().unwrap_or((0, 0));
                c.wakes += (wakes.len() - counted.min(wakes.len())) as u64;
                let mut now_timed = timed;
                for (waking, ready) in wakes.iter().skip(timed) {
                    let Some(ready) = ready else { break };
                    let seconds = (ready - waking).max(0) as f64 / 1000.0;
                    let c = &mut *c;
                    observe(
                        &mut c.wake_buckets,
                        &mut c.wake_sum,
                        &mut c.wake_count,
                        seconds,
                    );
                    now_timed += 1;
                }
                c.woken
                    .insert(uid.clone(), (wakes.len().max(counted), now_timed));
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
        text.push_str(&format!(
            "# HELP {WAKES} Sleeping backends woken (objects this API process saw)\n# TYPE {WAKES} counter\n{WAKES} {}\n",
            c.wakes
        ));
        text.push_str(&format!(
            "# HELP {WAKE_TO_READY} From Waking to Ready: a sleeping backend's wake (objects this API process saw)\n# TYPE {WAKE_TO_READY} histogram\n"
        ));
        histogram(
            &mut text,
            WAKE_TO_READY,
            &c.wake_buckets,
            c.wake_sum,
            c.wake_count,
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::status::SessionLivedBackendStatus;

    fn line<'a>(text: &'a str, name: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    #[test]
    fn wakes_are_counted_once_each_and_timed_to_their_ready() {
        let mut obj = crate::model::crd::tests::object("b1");
        let mut st = SessionLivedBackendStatus::default();
        for (state, at) in [
            (State::Submitted, 0),
            (State::Ready, 1_000),
            (State::Sleeping, 5_000),
            (State::Waking, 10_000),
            (State::Ready, 12_500),
            (State::Sleeping, 20_000),
            (State::Waking, 30_000),
        ] {
            assert!(st.enter(state, at, None, None));
        }
        obj.status = Some(st.clone());
        let stats = LifecycleStats::default();
        let text = stats.render(std::slice::from_ref(&obj));
        assert_eq!(line(&text, "spawner_wakes_total "), "spawner_wakes_total 2");
        assert_eq!(
            line(&text, "spawner_wake_to_ready_seconds_count"),
            "spawner_wake_to_ready_seconds_count 1"
        );
        assert_eq!(
            line(&text, "spawner_wake_to_ready_seconds_sum"),
            "spawner_wake_to_ready_seconds_sum 2.5"
        );
        // Scraped again: nothing counted twice; the second wake's Ready, once it comes.
        let text = stats.render(std::slice::from_ref(&obj));
        assert_eq!(line(&text, "spawner_wakes_total "), "spawner_wakes_total 2");
        st.enter(State::Ready, 31_000, None, None);
        obj.status = Some(st);
        let text = stats.render(std::slice::from_ref(&obj));
        assert_eq!(line(&text, "spawner_wakes_total "), "spawner_wakes_total 2");
        assert_eq!(
            line(&text, "spawner_wake_to_ready_seconds_count"),
            "spawner_wake_to_ready_seconds_count 2"
        );
        assert_eq!(
            line(&text, "spawner_sweeps_total"),
            "spawner_sweeps_total 0"
        );
    }
}
