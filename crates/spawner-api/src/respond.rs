//! Answers of the status routes that depend only on a backend's state.

use crate::ApiError;
use crate::ErrorCode;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use spawner_core::{Event, Expiring, State};

/// `GET /ready`: `302` to the backend when Ready, `410` once ended or stopping (it will not
/// be Ready again), `409` while starting.
pub fn ready(id: &str, state: State, url: &str) -> Response {
    match state {
        // A sleeping backend is woken by the visit it is sent to.
        State::Ready | State::Sleeping => {
            (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
        }
        State::Terminating => ApiError::new(
            StatusCode::GONE,
            ErrorCode::Gone,
            format!("backend {id} is stopping (Terminating) and will not be Ready again"),
        )
        .into_response(),
        s if s.is_terminal() => ApiError::new(
            StatusCode::GONE,
            ErrorCode::Gone,
            format!("backend {id} has ended ({s})"),
        )
        .into_response(),
        s => {
            let mut resp = ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::NotReady,
                format!("backend {id} is {s}, not Ready yet"),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
    }
}

/// One event of the status stream: `id:` its sequence number, `data:` its JSON.
pub fn sse_event(e: &Event) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_default();
    SseEvent::default().id(e.seq.to_string()).data(data)
}

/// An `expiring` announcement on the status stream: `event: expiring`, no `id:` (it is not
/// one of the backend's events), `data:` its JSON. Clients that only read unnamed events
/// (an `EventSource`'s `onmessage`) do not see it.
pub fn sse_expiring(e: &Expiring) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_default();
    SseEvent::default().event("expiring").data(data)
}

/// A keepalive of a backend that is stopping or has ended (`410 gone`): it will not be
/// swept later, it is stopping now.
pub fn not_kept_alive(id: &str, state: State) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        ErrorCode::Gone,
        format!("backend {id} is {state}: it cannot be kept alive"),
    )
}
