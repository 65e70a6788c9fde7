//! The seed's spawn route, kept so that its clients keep working.

use super::backends::{create, parse_json};
use super::ApiError;
use crate::app::App;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use spawner_core::spec::{DEFAULT_GRACE_SECONDS, DEFAULT_STARTUP_TIMEOUT_SECONDS};
use spawner_core::{BackendSpec, Executable};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The seed's camelCase request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SeedSpawn {
    image: Option<String>,
    command: Option<Vec<String>>,
    port: Option<u16>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    grace_period_seconds: Option<u64>,
}

pub async fn spawn(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let seed: SeedSpawn = parse_json(&body)?;
    let spec = BackendSpec {
        key: None,
        executable: Executable {
            command: seed.command,
            image: seed.image,
            env: seed.env,
            port: seed.port,
            ..Executable::default()
        },
        grace_period_seconds: seed.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS),
        lifetime_limit_seconds: None,
        startup_timeout_seconds: DEFAULT_STARTUP_TIMEOUT_SECONDS,
        labels: BTreeMap::new(),
        resources: None,
        strip_prefix: true,
    };
    let (status, resp) = create(&app, spec)?;
    let base = app.urls.base();
    Ok((
        status,
        Json(serde_json::json!({
            "url": resp.url,
            "name": resp.id,
            "readyUrl": format!("{base}/backend/{}/ready", resp.id),
            "statusUrl": format!("{base}/backend/{}/status", resp.id),
        })),
    )
        .into_response())
}
