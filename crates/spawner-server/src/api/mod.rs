//! The HTTP API of `../shared/design/api.md`, as axum routes over the [`App`].

mod access;
mod backends;
mod logs;
mod pools;
mod seed;
mod status;
mod watch;

pub use spawner_api::ApiError;

use crate::app::App;
use axum::extract::State;
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// All routes but the proxy's.
pub fn router(app: Arc<App>) -> Router {
    let control = Router::new()
        .route("/v1/backends", post(backends::spawn).get(backends::list))
        .route("/v1/backends/stream", get(watch::stream))
        .route("/v1/backends/{id}", get(backends::get_one))
        .route("/v1/backends/{id}/terminate", post(backends::terminate))
        .route("/v1/backends/{id}/logs", get(logs::logs))
        .route("/v1/backends/{id}/connect", post(access::connect))
        .route("/v1/backends/{id}/access", get(access::list))
        .route(
            "/v1/backends/{id}/access/{user}",
            axum::routing::delete(access::revoke),
        )
        .route("/v1/pools", post(pools::create).get(pools::list))
        .route(
            "/v1/pools/{name}",
            get(pools::get_one).put(pools::resize).delete(pools::drain),
        )
        .route("/spawn", post(seed::spawn))
        .route("/metrics", get(metrics))
        .merge(spawner_api::login::control_routes(app.login.clone()))
        // Inside the token's check: a body is read only for a client that may send one.
        .route_layer(middleware::from_fn(spawner_api::body_limit::limit_body))
        .route_layer(middleware::from_fn_with_state(
            spawner_api::BearerToken::new(app.config.token.as_deref()),
            spawner_api::require_token,
        ));
    let open = Router::new()
        .route("/v1/backends/{id}/status", get(status::status))
        .route("/v1/backends/{id}/status/stream", get(status::stream))
        .route("/v1/backends/{id}/ready", get(status::ready))
        // The control token, or the backend's own token: checked by the handler.
        .route(
            "/v1/backends/{id}/keepalive",
            post(backends::keepalive)
                .route_layer(middleware::from_fn(spawner_api::body_limit::limit_body)),
        )
        .route("/backend/{id}/status", get(status::status))
        .route("/backend/{id}/status/stream", get(status::stream))
        .route("/backend/{id}/ready", get(status::ready))
        .route("/healthz", get(healthz))
        .merge(spawner_api::login::open_routes(app.login.clone()))
        .merge(spawner_api::public_routes());
    let guard = guard(&app.config);
    guard.layer(
        control
            .merge(open)
            .fallback(|| async { ApiError::no_route() })
            .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
            .with_state(app),
    )
}

/// The browser rules of the API ([`spawner_api::guard`]) for this server's names.
fn guard(config: &crate::Config) -> spawner_api::Guard {
    let mut names = config.allowed_hosts.clone();
    names.push(config.domain.clone());
    spawner_api::Guard::for_server(
        config.listen,
        config.public_url.as_deref(),
        &names,
        &config.cors_origins,
    )
}

/// A store failure as the API answers it: a full disk is `503 storage_full`.
pub(crate) fn store_error(e: crate::store::StoreError) -> ApiError {
    if e.is_full() {
        ApiError::storage_full(e)
    } else {
        ApiError::internal(e)
    }
}

async fn healthz(State(app): State<Arc<App>>) -> Result<&'static str, ApiError> {
    app.store.ping().map_err(ApiError::internal)?;
    Ok("ok\n")
}

async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let by_state = app.store.count_by_state().map_err(ApiError::internal)?;
    let mut text = app
        .metrics
        .render(&by_state, &app.registry.all())
        .map_err(ApiError::internal)?;
    text.push_str(&app.pools.render_metrics(&app));
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
