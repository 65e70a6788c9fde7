//! Prometheus metrics of the embedded server.

use crate::live::Live;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use spawner_core::{Event, State};
use std::time::Duration;

pub struct Metrics {
    registry: Registry,
    backends: IntGaugeVec,
    transitions: IntCounterVec,
    spawn_to_ready: Histogram,
    probe: Histogram,
    live_connections: IntGauge,
    tasks: IntGauge,
    pub proxied: IntCounter,
    pub sweeps: IntCounter,
    /// Sleeping backends woken (`Waking` entered).
    pub wakes: IntCounter,
    wake_to_ready: Histogram,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let backends = IntGaugeVec::new(
            Opts::new("spawner_backends", "Backends by state"),
            &["state"],
        )?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "spawner_state_transitions_total",
                "State changes recorded, by state entered",
            ),
            &["state"],
        )?;
        let buckets = spawner_api::metrics::LATENCY_BUCKETS.to_vec();
        let spawn_to_ready = Histogram::with_opts(
            HistogramOpts::new(
                spawner_api::metrics::SPAWN_TO_READY,
                "From Submitted to Ready",
            )
            .buckets(buckets.clone()),
        )?;
        let probe = Histogram::with_opts(
            HistogramOpts::new(
                "spawner_start_to_ready_seconds",
                "From the runtime's start to the port accepting connections",
            )
            .buckets(buckets),
        )?;
        let live_connections = IntGauge::new(
            "spawner_live_connections",
            "Open connections through the proxy (WebSockets and requests in flight)",
        )?;
        let tasks = IntGauge::new(
            "spawner_control_tasks",
            "Tasks alive in the control plane's runtime: supervisors of running backends, \
             streams, API connections (a sleeping backend has none)",
        )?;
        let proxied = IntCounter::new(
            "spawner_proxied_requests_total",
            "Requests and upgraded connections forwarded to backends",
        )?;
        let sweeps = IntCounter::new(
            spawner_api::metrics::SWEEPS,
            "Backends stopped for idleness",
        )?;
        let wakes = IntCounter::new(
            "spawner_wakes_total",
            "Sleeping backends woken (idle_action sleep)",
        )?;
        let wake_to_ready = Histogram::with_opts(
            HistogramOpts::new(
                "spawner_wake_to_ready_seconds",
                "From Waking to Ready: a sleeping backend's wake",
            )
            .buckets(spawner_api::metrics::LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(wakes.clone()))?;
        registry.register(Box::new(wake_to_ready.clone()))?;
        registry.register(Box::new(backends.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(spawn_to_ready.clone()))?;
        registry.register(Box::new(probe.clone()))?;
        registry.register(Box::new(live_connections.clone()))?;
        registry.register(Box::new(tasks.clone()))?;
        registry.register(Box::new(proxied.clone()))?;
        registry.register(Box::new(sweeps.clone()))?;
        Ok(Metrics {
            registry,
            backends,
            transitions,
            spawn_to_ready,
            probe,
            live_connections,
            tasks,
            proxied,
            sweeps,
            wakes,
            wake_to_ready,
        })
    }

    pub fn on_state(&self, _live: &Live, event: &Event) {
        self.transitions
            .with_label_values(&[event.state.as_str()])
            .inc();
    }

    /// A backend entered `Submitted`: recorded by its spawn or claim, not through
    /// [`Metrics::on_state`], and counted once (not again when a restart starts it).
    pub fn submitted(&self) {
        self.transitions
            .with_label_values(&[State::Submitted.as_str()])
            .inc();
    }

    pub fn spawn_to_ready(&self, total_ms: i64, probe: Duration) {
        self.spawn_to_ready.observe(total_ms.max(0) as f64 / 1000.0);
        self.probe.observe(probe.as_secs_f64());
    }

    pub fn wake_to_ready(&self, ms: i64) {
        self.wake_to_ready.observe(ms.max(0) as f64 / 1000.0);
    }

    /// Renders the text format, refreshing the gauges computed from current state.
    pub fn render(
        &self,
        by_state: &[(String, i64)],
        live: &[std::sync::Arc<Live>],
    ) -> Result<String, prometheus::Error> {
        for s in State::ALL {
            let n = by_state
                .iter()
                .find(|(name, _)| name == s.as_str())
                .map_or(0, |(_, n)| *n);
            self.backends.with_label_values(&[s.as_str()]).set(n);
        }
        self.live_connections
            .set(live.iter().map(|l| l.monitor.live() as i64).sum());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let alive = runtime.metrics().num_alive_tasks();
            self.tasks.set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
