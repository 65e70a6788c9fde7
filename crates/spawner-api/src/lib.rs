//! The HTTP contract (`docs/api.md`) as both API servers speak it: the embedded server
//! (`spawner-server`) and the Kubernetes API (`spawner-k8s`). What the two share — the error
//! shape, the bearer token, how bodies, ids, filters and `Last-Event-ID` are read, how
//! `/ready`, the event stream and the seed's routes answer, the OpenAPI document and the
//! dashboard — lives here, once.

pub mod auth;
pub mod bodies;
pub mod dashboard;
pub mod error;
pub mod openapi;
pub mod parse;
pub mod respond;
pub mod seed;

pub use auth::{require_token, BearerToken};
pub use error::ApiError;

/// The open routes that hold no data: the dashboard and the OpenAPI document.
pub fn public_routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    dashboard::routes().merge(openapi::routes())
}
