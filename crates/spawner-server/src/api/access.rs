//! Per-user access to a backend (control routes): mint a connect URL for a user, list who
//! holds access, revoke a user.

use super::ApiError;
use crate::app::App;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use spawner_api::parse;
use spawner_core::access::{AccessGrant, AccessList, ConnectRequest};
use std::sync::Arc;

/// `POST /v1/backends/{id}/connect`: a connect URL for another user of a live token-mode
/// backend.
pub async fn connect(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = parse::id(&id)?;
    let req: ConnectRequest = parse::json(&body)?;
    let ask = req.ask()?;
    let live = app
        .registry
        .get(id.as_str())
        .filter(|l| !l.state().is_terminal() && l.state() < spawner_core::State::Terminating);
    let Some(live) = live else {
        return Err(ended_or_unknown(&app, id.as_str())?);
    };
    let resp = crate::access::mint(&app, &live, &ask).await?;
    Ok(Json(resp).into_response())
}

/// `GET /v1/backends/{id}/access`: the backend's mode and who holds access now.
pub async fn list(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<AccessList>, ApiError> {
    let id = parse::id(&id)?;
    if let Some(live) = app.registry.get(id.as_str()) {
        let users = live
            .access(&app.access_key)
            .map(|a| {
                a.grants
                    .list()
                    .iter()
                    .map(|g| AccessGrant {
                        user: g.user.clone(),
                        user_data: g.user_data.clone(),
                        granted_at: g.granted_at,
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Json(AccessList {
            mode: live.spec.access_mode(),
            users,
        }));
    }
    // An ended backend: nobody holds access any more.
    let row = app
        .store
        .get(id.as_str())
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(id.as_str()))?;
    Ok(Json(AccessList {
        mode: row.spec.access_mode(),
        users: Vec::new(),
    }))
}

/// `DELETE /v1/backends/{id}/access/{user}`: the user's cookies and connect URLs stop
/// working and their WebSockets are closed (1008).
pub async fn revoke(
    State(app): State<Arc<App>>,
    Path((id, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse::id(&id)?;
    if app
        .store
        .get(id.as_str())
        .map_err(ApiError::internal)?
        .is_none()
    {
        return Err(ApiError::not_found(id.as_str()));
    }
    // In a task of its own: a client that goes away cannot leave it half done.
    let (revoking, key) = (app.clone(), id.as_str().to_string());
    let user_name = user.clone();
    let revoked =
        tokio::spawn(async move { crate::access::revoke(&revoking, &key, &user_name).await })
            .await
            .map_err(ApiError::internal)??;
    if !revoked {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("user {user:?} holds no access to backend {id}: GET /v1/backends/{id}/access lists who does"),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn ended_or_unknown(app: &App, id: &str) -> Result<ApiError, ApiError> {
    Ok(match app.store.get(id).map_err(ApiError::internal)? {
        None => ApiError::not_found(id),
        Some(_) => ApiError::new(
            StatusCode::GONE,
            "gone",
            format!("backend {id} has ended or is stopping: nobody can connect to it any more"),
        ),
    })
}
