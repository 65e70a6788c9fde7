//! The names and buckets of the `/metrics` series both modes give, so that a dashboard
//! built on one reads the other.

/// Histogram: from Submitted to Ready, seconds.
pub const SPAWN_TO_READY: &str = "spawner_spawn_to_ready_seconds";
/// Counter: backends stopped for idleness (grace period or idle timeout).
pub const SWEEPS: &str = "spawner_sweeps_total";
/// The buckets of the latency histograms, seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
