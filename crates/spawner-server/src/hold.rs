//! The proxy's hold: a request (or WebSocket upgrade) for a backend that sleeps wakes it
//! and waits until it is Ready, then goes on as any other; one for a backend waking, or
//! going to sleep (its process stopping: it is woken right after), waits the same way.
//! Many held requests start it once: they all ask, its supervisor wakes it once.

use crate::app::App;
use crate::live::Live;
use spawner_core::State;
use std::sync::Arc;
use std::time::Duration;

/// Why a held request was not let through.
pub enum Refused {
    /// The wake failed or did not finish in time: answered 503 with `Retry-After`.
    WakeFailed(String),
    /// It stops or has ended meanwhile (or was never waking): answered as for that state.
    State(State),
}

/// Whether a request finding the backend in `state` (not routable now) is held.
pub fn holds(live: &Live, state: State) -> bool {
    match state {
        State::Sleeping | State::Waking => true,
        // Ready without an address: going to sleep.
        State::Ready => live.authority().is_none(),
        _ => false,
    }
}

/// Waits until the backend is Ready with an address, waking it if it sleeps; at most its
/// startup timeout after the wait for it to finish going to sleep (`stop_grace`).
pub async fn until_awake(app: &Arc<App>, live: &Arc<Live>) -> Result<(), Refused> {
    let stop_grace = app.config.stop_grace;
    let mut events = live.events();
    let limit = Duration::from_secs(live.spec.startup_timeout_seconds)
        .saturating_add(stop_grace)
        .saturating_add(SLACK);
    let deadline = tokio::time::Instant::now() + limit;
    let mut waited = false;
    loop {
        events.borrow_and_update();
        let state = live.state();
        match state {
            State::Ready if live.authority().is_some() => return Ok(()),
            State::Ready | State::Waking => waited = true,
            State::Sleeping => {
                waited = true;
                crate::reconciler::wake(app, live);
            }
            State::Failed if waited => {
                return Err(Refused::WakeFailed(
                    live.reason().unwrap_or_else(|| "its start failed".into()),
                ))
            }
            s => return Err(Refused::State(s)),
        }
        tokio::select! {
            () = events.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Refused::WakeFailed(format!(
                    "not Ready within {}s of the wake",
                    limit.as_secs()
                )))
            }
        }
    }
}

/// Beyond the startup timeout: the sweeper fails a wake that overruns it within a tick,
/// and the held request hears of that first.
const SLACK: Duration = Duration::from_secs(1);
