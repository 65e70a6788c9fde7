//! The status routes: the last event, the event stream (SSE), and the ready redirect. The
//! unguessable id is the capability, so these need no token.

use super::ApiError;
use crate::app::App;
use crate::live::Live;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use spawner_api::StatusItem;
use spawner_core::lifecycle::{expiring, Expiry};
use spawner_core::time::now_millis;
use spawner_core::{BackendId, Event, Expiring};
use std::sync::Arc;
use std::time::Duration;

pub(super) fn status(app: &App, id: &BackendId) -> Result<Event, ApiError> {
    // A `Ready` shown and not committed yet is the newest; read before the store, which has
    // it once it is no longer among the shown ones.
    let shown = app
        .registry
        .get(id.as_str())
        .and_then(|l| l.unstored_after(0).pop());
    let stored = app
        .store
        .last_event(id.as_str())
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(id.as_str()))?;
    Ok(shown.filter(|e| e.seq > stored.seq).unwrap_or(stored))
}

/// The state `/ready` answers by: in memory while live, else the store's.
pub(super) fn state(app: &App, id: &BackendId) -> Result<spawner_core::State, ApiError> {
    match app.registry.get(id.as_str()) {
        Some(live) => Ok(live.state()),
        None => Ok(app
            .store
            .get(id.as_str())
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found(id.as_str()))?
            .state),
    }
}

/// Replays every event after `after` (all of them for 0), then follows new ones; the stream
/// ends after a terminal state.
pub(super) fn stream(
    app: &Arc<App>,
    id: &BackendId,
    after: u64,
) -> Result<BoxStream<'static, StatusItem>, ApiError> {
    let id = id.as_str().to_string();
    if app.store.get(&id).map_err(ApiError::internal)?.is_none() {
        return Err(ApiError::not_found(&id));
    }
    let live = app.registry.get(&id);
    Ok(events(app.clone(), id, after, live).boxed())
}

/// What the stream still has to do.
struct Cursor {
    app: Arc<App>,
    id: String,
    after: u64,
    /// The backend while it is live: its events are waited for.
    live: Option<Arc<Live>>,
    pending: std::vec::IntoIter<spawner_core::Event>,
    done: bool,
    /// The stop last announced as `expiring` (while it stays due).
    announced: Option<Expiry>,
}

/// While an announced stop stays due, how often the stream looks whether client activity
/// moved it (an idle timeout) to announce it again.
const EXPIRY_LOOK: Duration = Duration::from_secs(1);

fn events(
    app: Arc<App>,
    id: String,
    after: u64,
    live: Option<Arc<Live>>,
) -> impl Stream<Item = StatusItem> {
    let cursor = Cursor {
        app,
        id,
        after,
        live,
        pending: Vec::new().into_iter(),
        done: false,
        announced: None,
    };
    futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.pending.next() {
                c.after = c.after.max(e.seq);
                c.done = e.state.is_terminal();
                return Some((StatusItem::Event(e), c));
            }
            if c.done {
                return None;
            }
            // Followed before reading, so that no event falls between the read and the wait.
            let live = c.live.clone();
            let mut changes = live.as_deref().map(Live::events);
            // A `Ready` shown and not committed yet (`App::ready`), read before the store: it
            // leaves the shown ones only once committed, so it is in one or the other.
            let shown = c
                .app
                .registry
                .get(&c.id)
                .map(|l| l.unstored_after(c.after))
                .unwrap_or_default();
            match c.app.store.events(&c.id, c.after) {
                Ok(mut fresh) => {
                    let stored = fresh.last().map_or(c.after, |e| e.seq);
                    fresh.extend(shown.into_iter().filter(|e| e.seq > stored));
                    if !fresh.is_empty() {
                        c.pending = fresh.into_iter();
                        continue;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading events for a stream");
                    return None;
                }
            }
            let (due, look_at) = match c.app.registry.get(&c.id) {
                Some(live) => expiring(&live.timing, &live.observed(), now_millis()),
                None => (None, None),
            };
            match due {
                Some(e) if c.announced.is_none_or(|a| moved(a, e)) => {
                    c.announced = Some(e);
                    let note = Expiring::new(e.at, e.reason.as_str());
                    return Some((StatusItem::Expiring(note), c));
                }
                Some(_) => {}
                None => c.announced = None,
            }
            let wake = match (due, look_at) {
                (Some(_), _) => Some(now_millis() + EXPIRY_LOOK.as_millis() as i64),
                (None, at) => at,
            };
            let sleep = async {
                match wake {
                    Some(at) => {
                        let ms = u64::try_from(at - now_millis()).unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(ms)).await
                    }
                    None => std::future::pending().await,
                }
            };
            match changes.as_mut() {
                Some(changes) => {
                    tokio::select! {
                        () = changes.changed() => {
                            // Retired: what is left is read, then the stream ends.
                            if c.app.registry.get(&c.id).is_none() {
                                c.live = None;
                            }
                        }
                        () = sleep => {}
                    }
                }
                // Not live and nothing new: the stream has said everything.
                None => return None,
            }
        }
    })
}

/// An announced stop that is now due at another time (client activity moved an idle
/// timeout) or for another reason: announced again.
fn moved(announced: Expiry, now: Expiry) -> bool {
    announced.reason != now.reason || (now.at - announced.at).abs() >= 1000
}
