//! The control routes: spawn (or get-or-create by key), list, get, terminate.

use super::ApiError;
use crate::app::App;
use crate::live::{Live, StopRequest};
use crate::store::{Inserted, Row};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use spawner_api::parse::{self, ListFilter};
use spawner_core::lifecycle::StopReason;
use spawner_core::{BackendRecord, BackendSpec, SpawnResponse};
use std::sync::Arc;

pub async fn spawn(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let spec: BackendSpec = parse::json(&body)?;
    let (status, resp) = create(&app, spec)?;
    Ok((status, Json(resp)).into_response())
}

/// Validates, records and launches a backend; with a key, returns the live one if any.
pub(super) fn create(
    app: &Arc<App>,
    spec: BackendSpec,
) -> Result<(StatusCode, SpawnResponse), ApiError> {
    spec.validate()?;
    let runtime = app.runtimes.for_spec(&spec).map_err(|why| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "runtime_unavailable", why)
    })?;
    let id = spawner_core::BackendId::generate().map_err(ApiError::internal)?;
    let runtime_name = runtime.name();
    match app
        .store
        .insert(id.as_str(), &spec, runtime_name)
        .map_err(ApiError::internal)?
    {
        Inserted::Existing(row) => {
            let state = app.registry.get(&row.id).map_or(row.state, |l| l.state());
            Ok((
                StatusCode::OK,
                spawn_response(app, &row.id, row.key.clone(), state),
            ))
        }
        Inserted::New(row) => {
            let live = Arc::new(Live::new(
                row.id.clone(),
                row.spec,
                row.created_at,
                runtime_name,
                row.state,
                1,
            ));
            app.registry.insert(live.clone());
            crate::reconciler::launch(app, live);
            Ok((
                StatusCode::CREATED,
                spawn_response(app, &row.id, row.key, row.state),
            ))
        }
    }
}

fn spawn_response(
    app: &App,
    id: &str,
    key: Option<String>,
    state: spawner_core::State,
) -> SpawnResponse {
    SpawnResponse {
        id: id.to_string(),
        key,
        state,
        url: app.urls.backend(id),
        ready_url: app.urls.api(id, "ready"),
        status_url: app.urls.api(id, "status"),
        status_stream_url: app.urls.api(id, "status/stream"),
    }
}

pub(super) fn record(app: &App, row: Row, with_events: bool) -> Result<BackendRecord, ApiError> {
    let live = app.registry.get(&row.id);
    let events = if with_events {
        app.store.events(&row.id, 0).map_err(ApiError::internal)?
    } else {
        Vec::new()
    };
    Ok(BackendRecord {
        url: app.urls.backend(&row.id),
        state: live.as_ref().map_or(row.state, |l| l.state()),
        live_connections: live.as_ref().map_or(0, |l| l.monitor.live()),
        last_activity: live.as_ref().map(|l| l.monitor.last_activity()),
        node: Some("local".to_string()),
        address: row.address,
        runtime: Some(row.runtime),
        exit_code: row.exit_code,
        created_at: row.created_at,
        events,
        id: row.id,
        key: row.key,
        spec: row.spec,
    })
}

pub async fn list(
    State(app): State<Arc<App>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let filter = ListFilter::from_query(params)?;
    let rows = app
        .store
        .list(filter.state, filter.key.as_deref())
        .map_err(ApiError::internal)?;
    let backends = rows
        .into_iter()
        .filter(|row| filter.labels_match(&row.spec.labels))
        .map(|row| record(&app, row, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(serde_json::json!({ "backends": backends })).into_response())
}

pub async fn get_one(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<BackendRecord>, ApiError> {
    let id = parse::id(&id)?;
    let row = app
        .store
        .get(id.as_str())
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(id.as_str()))?;
    Ok(Json(record(&app, row, true)?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TerminateBody {
    #[serde(default)]
    hard: bool,
}

pub async fn terminate(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = parse::id(&id)?;
    let body: TerminateBody = parse::json_or_default(&body)?;
    let row = app
        .store
        .get(id.as_str())
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(id.as_str()))?;
    if !row.state.is_terminal() {
        // Durably first: a backend whose runtime is unavailable now is stopped when Spawner
        // next supervises it.
        app.store
            .set_stop(id.as_str(), StopReason::Terminate.as_str(), body.hard)
            .map_err(ApiError::internal)?;
    }
    let state = match app.registry.get(id.as_str()) {
        Some(live) => {
            live.request_stop(StopRequest {
                reason: StopReason::Terminate,
                hard: body.hard,
            });
            live.state()
        }
        None => row.state,
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"id": id.as_str(), "state": state, "hard": body.hard})),
    )
        .into_response())
}
