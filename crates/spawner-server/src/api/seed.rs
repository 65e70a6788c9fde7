//! The seed's spawn route, kept so that its clients keep working.

use super::backends::create;
use super::ApiError;
use crate::app::App;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use spawner_api::seed::{self, SeedSpawn};
use std::sync::Arc;

pub async fn spawn(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let request: SeedSpawn = spawner_api::parse::json(&body)?;
    let (status, resp) = create(&app, request.into_spec()).await?;
    Ok((
        status,
        Json(seed::response(app.urls.base(), &resp.id, &resp.url)),
    )
        .into_response())
}
