//! The HTTP API of `../shared/design/api.md` over the [`App`]: the contract's routes are
//! spawner-api's; this server is a [`spawner_api::ControlPlane`] ([`plane`]).

mod access;
mod backends;
mod logs;
mod plane;
mod pools;
mod status;
mod watch;

pub use spawner_api::ApiError;

use crate::app::App;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// All routes but the proxy's: the contract's (`spawner_api::control_plane`) over this
/// server, and its metrics.
pub fn router(app: Arc<App>) -> Router {
    let mount = spawner_api::Mount {
        token: app.config.token.clone(),
        login: app.login.clone(),
        guard: guard(&app.config),
        control: Router::new()
            .route("/metrics", get(metrics))
            .with_state(app.clone()),
    };
    spawner_api::control_plane::router(Arc::new(plane::Embedded(app)), mount)
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
