//! The status routes: the last event, the event stream (SSE), and the ready redirect. The
//! unguessable id is the capability, so these need no token.

use super::ApiError;
use crate::app::App;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

pub async fn status(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = spawner_api::parse::id(&id)?;
    let event = app
        .store
        .last_event(id.as_str())
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(id.as_str()))?;
    Ok(Json(event).into_response())
}

pub async fn ready(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = spawner_api::parse::id(&id)?;
    let state = match app.registry.get(id.as_str()) {
        Some(live) => live.state(),
        None => {
            app.store
                .get(id.as_str())
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::not_found(id.as_str()))?
                .state
        }
    };
    Ok(spawner_api::respond::ready(
        id.as_str(),
        state,
        &app.urls.backend(id.as_str()),
    ))
}

/// Replays every event after `Last-Event-ID` (all of them without it), then follows new
/// ones; the stream ends after a terminal state.
pub async fn stream(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let id = spawner_api::parse::id(&id)?.as_str().to_string();
    let after = spawner_api::parse::last_event_id(&headers)?;
    if app.store.get(&id).map_err(ApiError::internal)?.is_none() {
        return Err(ApiError::not_found(&id));
    }
    // Subscribe before reading, so that no event falls between the read and the wait.
    let changes = app.registry.get(&id).map(|l| l.seq.subscribe());
    Ok(Sse::new(events(app, id, after, changes))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// What the stream still has to do.
struct Cursor {
    app: Arc<App>,
    id: String,
    after: u64,
    changes: Option<tokio::sync::watch::Receiver<u64>>,
    pending: std::vec::IntoIter<spawner_core::Event>,
    done: bool,
}

fn events(
    app: Arc<App>,
    id: String,
    after: u64,
    changes: Option<tokio::sync::watch::Receiver<u64>>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let cursor = Cursor {
        app,
        id,
        after,
        changes,
        pending: Vec::new().into_iter(),
        done: false,
    };
    futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.pending.next() {
                c.after = c.after.max(e.seq);
                c.done = e.state.is_terminal();
                return Some((Ok(spawner_api::respond::sse_event(&e)), c));
            }
            if c.done {
                return None;
            }
            match c.app.store.events(&c.id, c.after) {
                Ok(fresh) if !fresh.is_empty() => {
                    c.pending = fresh.into_iter();
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "reading events for a stream");
                    return None;
                }
            }
            match c.changes.as_mut() {
                // A closed channel means the backend was retired: read what is left, then end.
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        c.changes = None;
                    }
                }
                // Not live and nothing new: the stream has said everything.
                None => return None,
            }
        }
    })
}
