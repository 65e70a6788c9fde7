//! The bearer token that guards the control routes.

use crate::ApiError;
use crate::ErrorCode;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The token a server expects, if it has one.
#[derive(Clone, Default)]
pub struct BearerToken(Option<Arc<str>>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> Self {
        BearerToken(token.map(Arc::from))
    }
}

impl BearerToken {
    /// Whether `headers` carry the token (always, when the server has none).
    pub fn allows(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(token) = &self.0 else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
    }
}

/// The answer to a keepalive that has neither the control token nor the backend's own
/// keepalive token.
pub fn keepalive_refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        "keepalive needs \"Authorization: Bearer <token>\" with the server's token, or the backend's own URL from SPAWNER_KEEPALIVE_URL (its ?token=)",
    )
}

/// Middleware (`axum::middleware::from_fn_with_state`): refuses a request without the
/// right `Authorization: Bearer <token>` when a token is configured.
pub async fn require_token(State(token): State<BearerToken>, req: Request, next: Next) -> Response {
    if let Some(token) = &token.0 {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "this route needs the header \"Authorization: Bearer <token>\" with the server's token: on the server's machine the CLI reads it from the data directory (`spawner token` prints it, `spawner dashboard` prints a login link); elsewhere pass --token or SPAWNER_TOKEN",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    next.run(req).await
}

/// Compares without an early exit, so the time taken does not reveal a matching prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn compares_whole_tokens() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"abcd"));
    }
}
