//! The HTTP API of `../shared/design/api.md`, as axum routes over the [`App`].

mod backends;
mod error;
mod logs;
mod seed;
mod status;

pub use error::ApiError;

use crate::app::App;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// All routes but the proxy's.
pub fn router(app: Arc<App>) -> Router {
    let control = Router::new()
        .route("/v1/backends", post(backends::spawn).get(backends::list))
        .route("/v1/backends/{id}", get(backends::get_one))
        .route("/v1/backends/{id}/terminate", post(backends::terminate))
        .route("/v1/backends/{id}/logs", get(logs::logs))
        .route("/spawn", post(seed::spawn))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_token));
    let open = Router::new()
        .route("/v1/backends/{id}/status", get(status::status))
        .route("/v1/backends/{id}/status/stream", get(status::stream))
        .route("/v1/backends/{id}/ready", get(status::ready))
        .route("/backend/{id}/status", get(status::status))
        .route("/backend/{id}/status/stream", get(status::stream))
        .route("/backend/{id}/ready", get(status::ready))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    control.merge(open).fallback(not_found).with_state(app)
}

/// The bearer token guards every route that starts, lists or stops backends.
async fn require_token(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.config.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            let mut resp = ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this route needs the header \"Authorization: Bearer <token>\" with the server's token (SPAWNER_TOKEN)",
            )
            .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz(State(app): State<Arc<App>>) -> Result<&'static str, ApiError> {
    app.store.ping().map_err(ApiError::internal)?;
    Ok("ok\n")
}

async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let by_state = app.store.count_by_state().map_err(ApiError::internal)?;
    let text = app
        .metrics
        .render(&by_state, &app.registry.all())
        .map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see docs/api.md (backends are under /p/{id}/)",
    )
}
