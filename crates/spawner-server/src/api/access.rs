//! Per-user access to a backend (control routes): mint a connect URL for a user, list who
//! holds access, revoke a user.

use super::ApiError;
use crate::app::App;
use axum::http::StatusCode;
use spawner_api::ErrorCode;
use spawner_core::access::{AccessGrant, AccessList, ConnectAsk, ConnectResponse};
use spawner_core::BackendId;
use std::sync::Arc;

/// `POST /v1/backends/{id}/connect`: a connect URL for another user of a live token-mode
/// backend.
pub(super) async fn connect(
    app: &App,
    id: &BackendId,
    ask: &ConnectAsk,
) -> Result<ConnectResponse, ApiError> {
    let live = app
        .registry
        .get(id.as_str())
        .filter(|l| !l.state().is_terminal() && l.state() < spawner_core::State::Terminating);
    let Some(live) = live else {
        return Err(ended_or_unknown(app, id.as_str())?);
    };
    crate::access::mint(app, &live, ask).await
}

/// `GET /v1/backends/{id}/access`: the backend's mode and who holds access now.
pub(super) fn list(app: &App, id: &BackendId) -> Result<AccessList, ApiError> {
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
        return Ok(AccessList {
            mode: live.spec.access_mode(),
            users,
        });
    }
    // An ended backend: nobody holds access any more.
    let row = app
        .store
        .get(id.as_str())
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(id.as_str()))?;
    Ok(AccessList {
        mode: row.spec.access_mode(),
        users: Vec::new(),
    })
}

/// `DELETE /v1/backends/{id}/access/{user}`: the user's cookies and connect URLs stop
/// working and their WebSockets are closed (1008).
pub(super) async fn revoke(app: &Arc<App>, id: &BackendId, user: &str) -> Result<bool, ApiError> {
    if app
        .store
        .get(id.as_str())
        .map_err(ApiError::internal)?
        .is_none()
    {
        return Err(ApiError::not_found(id.as_str()));
    }
    // In a task of its own: a client that goes away cannot leave it half done.
    let (revoking, key, user) = (app.clone(), id.as_str().to_string(), user.to_string());
    tokio::spawn(async move { crate::access::revoke(&revoking, &key, &user).await })
        .await
        .map_err(ApiError::internal)?
}

fn ended_or_unknown(app: &App, id: &str) -> Result<ApiError, ApiError> {
    Ok(match app.store.get(id).map_err(ApiError::internal)? {
        None => ApiError::not_found(id),
        Some(_) => ApiError::new(
            StatusCode::GONE,
            ErrorCode::Gone,
            format!("backend {id} has ended or is stopping: nobody can connect to it any more"),
        ),
    })
}
