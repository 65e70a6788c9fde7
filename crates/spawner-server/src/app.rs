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
    /// One-time dashboard login links (none without a token).
    pub login: Option<Arc<spawner_api::login::LoginCodes>>,
    pub store: Store,
    pub registry: Registry,
    pub runtimes: Runtimes,
    pub forwarder: Forwarder,
    /// Ports for process backends that name none.
    pub ports: PortAllocator,
    pub metrics: Metrics,
    /// Warm pools and their members.
    pub pools: crate::pools::Pools,
    /// This installation's id (kept in the database): marks its processes and containers.
    pub instance: String,
    /// The master key of per-user access (`access.key` in the data directory).
    pub access_key: spawner_proxy::access::MasterKey,
    /// Single-use connect tokens already exchanged.
    pub nonces: spawner_proxy::access::Nonces,
}

impl App {
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("logs").join(format!("{id}.log"))
    }

    /// Records what a live backend is doing within its state (e.g. pulling its image), as
    /// an event of that state; status streams see it.
    pub async fn note(&self, live: &Live, reason: &str) -> Result<(), StoreError> {
        if let Some(e) = self.store.note(&live.id, reason).await? {
            tracing::info!(backend = %live.id, state = %e.state, %reason, "note");
            live.set_state(e.state, e.seq, e.reason.as_deref());
            self.registry.changed();
        }
        Ok(())
    }

    /// Records state changes of a live backend: durably first, then in memory, where status
    /// streams and the proxy see them. A terminal state retires it from the registry.
    pub async fn record(
        self: &Arc<Self>,
        live: &Live,
        states: &[(State, Option<String>)],
        exit_code: Option<i32>,
    ) -> Result<Vec<Event>, StoreError> {
        // A Ready shown and not stored (its commit failed, a full disk, or is still queued)
        // is recorded first, so that what follows does not take its sequence number: a
        // status stream that saw it would skip the event that did. The store passes over
        // it when it is there already.
        let shown = live
            .unstored_after(0)
            .into_iter()
            .find(|e| e.state == State::Ready);
        let with_ready: Vec<(State, Option<String>)>;
        let states = match &shown {
            Some(_) => {
                with_ready = std::iter::once((State::Ready, None))
                    .chain(states.iter().cloned())
                    .collect();
                &with_ready[..]
            }
            None => states,
        };
        let events = self.store.transition(&live.id, states, exit_code).await?;
        if let Some(ready) = &shown {
            let stored = events.iter().find(|e| e.state == State::Ready);
            if let Some(stored) = stored {
                live.settled(ready.seq, Some(stored.seq));
            }
        }
        self.recorded(live, &events, true);
        Ok(events)
    }

    /// Records that a live backend listens: `Ready` is shown at once (the proxy routes to
    /// it; GET, lists, status streams and claims' waits see it) and committed by the writer
    /// without waiting for it, in order with the backend's other writes. Not durable when
    /// shown: after a crash before the commit, the restarted server finds the backend
    /// `Running`, adopts it and watches again for it to listen (docs/operations.md).
    pub fn ready(self: &Arc<Self>, live: &Arc<Live>) {
        let event = Event {
            seq: live.last_seq() + 1,
            state: State::Ready,
            time: spawner_core::time::now_millis(),
            reason: None,
            exit_code: None,
        };
        let stored = self.store.ready(&live.id, event.time);
        live.announce(&event);
        self.recorded(live, std::slice::from_ref(&event), false);
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(backend = %live.id, error = %e, "could not queue Ready for the store; shown all the same");
                return;
            }
        };
        let (app, live) = (self.clone(), live.clone());
        tokio::spawn(async move {
            match stored.await {
                Ok(events) => {
                    live.settled(event.seq, events.last().map(|e| e.seq));
                    // Claims take Ready backends from the store: they look again.
                    app.registry.changed();
                }
                Err(e) => {
                    tracing::warn!(backend = %live.id, error = %e, "could not record Ready; shown all the same, found Running after a restart");
                }
            }
        });
    }

    /// [`App::record`] of a backend's start, with where it runs, in one transaction.
    pub async fn record_started(
        self: &Arc<Self>,
        live: &Live,
        handle: &serde_json::Value,
        address: &str,
        states: &[(State, Option<String>)],
    ) -> Result<Vec<Event>, StoreError> {
        let events = self
            .store
            .started(&live.id, handle, address, states)
            .await?;
        self.recorded(live, &events, true);
        Ok(events)
    }

    /// [`App::note`] of a woken backend's start, with where it runs now, in one transaction.
    pub async fn record_started_again(
        &self,
        live: &Live,
        handle: &serde_json::Value,
        address: &str,
        note: &str,
    ) -> Result<(), StoreError> {
        if let Some(e) = self
            .store
            .started_again(&live.id, handle, address, note)
            .await?
        {
            tracing::info!(backend = %live.id, state = %e.state, reason = %note, "note");
            live.set_state(e.state, e.seq, e.reason.as_deref());
            self.registry.changed();
        }
        Ok(())
    }

    /// [`App::record`] of a backend's sleep (`Sleeping`, for `reason`), its handle and
    /// address cleared, in one transaction.
    pub async fn record_slept(
        self: &Arc<Self>,
        live: &Live,
        reason: &str,
    ) -> Result<Vec<Event>, StoreError> {
        let events = self.store.slept(&live.id, reason).await?;
        self.recorded(live, &events, true);
        Ok(events)
    }

    /// Makes recorded events visible in memory: state (unless `set`, already shown), logs,
    /// metrics, the registry.
    fn recorded(&self, live: &Live, events: &[Event], set: bool) {
        if let Some(last) = events.last() {
            if set {
                live.set_state(last.state, last.seq, last.reason.as_deref());
            }
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
