//! The shared state of one embedded server, and the one place state changes are recorded.

use crate::config::{Config, Urls};
use crate::live::{Live, Registry};
use crate::metrics::Metrics;
use crate::runtimes::Runtimes;
use crate::store::{Store, StoreError};
use spawner_core::{Event, State};
use spawner_proxy::Forwarder;
use spawner_runtime::PortAllocator;
use std::path::PathBuf;
use std::sync::Arc;

pub struct App {
    pub config: Config,
    pub urls: Urls,
    pub store: Store,
    pub registry: Registry,
    pub runtimes: Runtimes,
    pub forwarder: Forwarder,
    /// Ports for process backends that name none.
    pub ports: PortAllocator,
    pub metrics: Metrics,
    /// This installation's id (kept in the database): marks its processes and containers.
    pub instance: String,
}

impl App {
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("logs").join(format!("{id}.log"))
    }

    /// Records what a live backend is doing within its state (e.g. pulling its image), as
    /// an event of that state; status streams see it.
    pub fn note(&self, live: &Live, reason: &str) -> Result<(), StoreError> {
        if let Some(e) = self.store.note(&live.id, reason)? {
            tracing::info!(backend = %live.id, state = %e.state, %reason, "note");
            live.set_state(e.state, e.seq, e.reason.as_deref());
            self.registry.changed();
        }
        Ok(())
    }

    /// Records state changes of a live backend: durably first, then in memory, where status
    /// streams and the proxy see them. A terminal state retires it from the registry.
    pub fn record(
        self: &Arc<Self>,
        live: &Live,
        states: &[(State, Option<String>)],
        exit_code: Option<i32>,
    ) -> Result<Vec<Event>, StoreError> {
        let events = self.store.transition(&live.id, states, exit_code)?;
        self.recorded(live, &events);
        Ok(events)
    }

    /// [`App::record`] of a backend's start, with where it runs, in one transaction.
    pub fn record_started(
        self: &Arc<Self>,
        live: &Live,
        handle: &serde_json::Value,
        address: &str,
        states: &[(State, Option<String>)],
    ) -> Result<Vec<Event>, StoreError> {
        let events = self.store.started(&live.id, handle, address, states)?;
        self.recorded(live, &events);
        Ok(events)
    }

    /// Makes recorded events visible in memory: state, logs, metrics, the registry.
    fn recorded(&self, live: &Live, events: &[Event]) {
        if let Some(last) = events.last() {
            live.set_state(last.state, last.seq, last.reason.as_deref());
            for e in events {
                match &e.reason {
                    Some(reason) => {
                        tracing::info!(backend = %live.id, state = %e.state, %reason, "state")
                    }
                    None => tracing::info!(backend = %live.id, state = %e.state, "state"),
                }
                self.metrics.on_state(live, e);
            }
            if last.state.is_terminal() {
                self.registry.remove(&live.id);
            } else {
                self.registry.changed();
            }
        }
    }
}
