//! Per-user access in `spawner api` (docs/api.md, "Access"): the same routes, bodies and
//! errors as the embedded server. Grants live in the object's `spec.access.grants`
//! ([`crate::model::access`]); each grant or revocation is one merge PATCH conditional on the
//! version read (retried on a conflict). Connect tokens are minted at answer time from
//! the access key and never stored.

use crate::api::{fetch, ApiState, Error};
use crate::model::access::{self as k8s_access, SlabAccess, SlabAccessMode, SlabGrant};
use crate::model::crd::SessionLivedBackend;
use crate::model::read::state_of;
use axum::http::StatusCode;
use kube::api::{Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;
use spawner_api::ApiError;
use spawner_api::ErrorCode;
use spawner_core::access::{
    Access, AccessGrant, AccessList, AccessMode, ConnectAsk, ConnectResponse,
};
use spawner_core::time::now_millis;
use spawner_core::{BackendId, BackendSpec, SpawnResponse, State as BackendState};
use spawner_proxy::access::MasterKey;

/// The access key, or the error that names what to configure.
pub fn key(state: &ApiState) -> Result<&MasterKey, ApiError> {
    state.config.access_key.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            ErrorCode::AccessNotConfigured,
            "per-user access needs an access key, and this API has none: create the Secret \
             spawner-access and give it to the API, the router and the controller as \
             SPAWNER_ACCESS_KEY (docs/kubernetes.md, \"Per-user access\"), or spawn with \
             \"access\": {\"mode\": \"open\"}",
        )
    })
}

/// The spec's access checked (a spawn without `access` is open on Kubernetes), and the
/// connect URL it asks for; the spec keeps the mode alone.
pub fn resolve(state: &ApiState, spec: &mut BackendSpec) -> Result<Option<ConnectAsk>, Error> {
    let (mode, ask) = Access::resolve(spec.access.as_ref(), AccessMode::Open)?;
    if mode == AccessMode::Token {
        key(state)?;
    }
    spec.access = spec.access.is_some().then(|| Access::stored(mode));
    Ok(ask)
}

/// The answer to a spawn or a claim of `obj`: with a connect URL for `ask` when the
/// backend is token-mode (a get-or-create that found an open backend answers without one).
pub async fn with_connect(
    state: &ApiState,
    obj: &SessionLivedBackend,
    ask: Option<&ConnectAsk>,
) -> Result<SpawnResponse, Error> {
    let mut resp = state.spawn_response(obj);
    let Some(ask) = ask else {
        return Ok(resp);
    };
    if k8s_access::mode_of(obj) != AccessMode::Token {
        return Ok(resp);
    }
    let connect = mint(state, &obj.name_any(), ask).await?;
    resp.connect_url = Some(connect.connect_url);
    resp.connect_expires_at = Some(connect.expires_at);
    Ok(resp)
}

/// A connect URL for `ask.user` of backend `id`: their standing grant (its generation, so
/// that their other devices stay in), or a new one written to the object first.
pub async fn mint(state: &ApiState, id: &str, ask: &ConnectAsk) -> Result<ConnectResponse, Error> {
    let slabs = state.slabs();
    let mut generation = None;
    for _ in 0..5 {
        let obj = fetch(state, id).await?;
        if state_of(&obj) >= BackendState::Terminating {
            return Err(gone(id).into());
        }
        if k8s_access::mode_of(&obj) != AccessMode::Token {
            return Err(open_access(id).into());
        }
        // Asked once the backend is known to need it: an ended or open backend is told so
        // first, as on the embedded server.
        key(state)?;
        let mut access = obj.spec.access.clone().unwrap_or_default();
        if let Some(g) = access.grants.iter().find(|g| g.user == ask.user) {
            generation = Some(g.generation);
            break;
        }
        let fresh = k8s_access::new_generation()
            .map_err(|_| ApiError::internal("the system's random source failed; no grant made"))?;
        access.grants.push(SlabGrant {
            user: ask.user.clone(),
            user_data: ask.user_data.as_ref().map(|d| d.to_string()),
            generation: fresh,
            granted_at: spawner_core::time::rfc3339(now_millis()),
        });
        match write(&slabs, &obj, &access).await {
            Ok(()) => {
                tracing::info!(backend = %id, user = %ask.user, "access granted");
                generation = Some(fresh);
                break;
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let Some(generation) = generation else {
        return Err(busy().into());
    };
    let master = key(state)?;
    let (connect_url, expires_at) = spawner_proxy::access::connect_url(
        &master.backend_key(id),
        &state.config.urls.backend_url(id),
        &ask.user,
        generation,
        ask.ttl_seconds,
        ask.reusable,
        now_millis(),
    )
    .map_err(|_| ApiError::internal("the system's random source failed; no token made"))?;
    Ok(ConnectResponse {
        connect_url,
        expires_at,
    })
}

/// Writes `access` into the object, if it has not changed since it was read.
async fn write(
    slabs: &kube::Api<SessionLivedBackend>,
    obj: &SessionLivedBackend,
    access: &SlabAccess,
) -> Result<(), kube::Error> {
    let patch = json!({
        "metadata": {"resourceVersion": obj.resource_version()},
        "spec": {"access": access},
    });
    slabs
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(drop)
}

/// `GET /v1/backends/{id}/access`: the mode and who holds access now (nobody once it ended).
pub async fn list(state: &ApiState, id: &BackendId) -> Result<AccessList, Error> {
    let obj = fetch(state, id.as_str()).await?;
    let ended = state_of(&obj) >= BackendState::Terminating;
    let users = obj
        .spec
        .access
        .iter()
        .flat_map(|a| a.grants.iter())
        .filter(|_| !ended)
        .map(|g| AccessGrant {
            user: g.user.clone(),
            user_data: g.user_data(),
            granted_at: g.granted_at_millis(),
        })
        .collect();
    Ok(AccessList {
        mode: k8s_access::mode_of(&obj),
        users,
    })
}

/// `DELETE /v1/backends/{id}/access/{user}`: the entry removed from the object; the routers
/// see it by their watch and refuse the user's cookies, closing their WebSockets (1008).
/// `Ok(false)`: the user holds no access.
pub async fn revoke(state: &ApiState, id: &BackendId, user: &str) -> Result<bool, Error> {
    let slabs = state.slabs();
    for _ in 0..5 {
        let obj = fetch(state, id.as_str()).await?;
        let mut access = obj.spec.access.clone().unwrap_or(SlabAccess {
            mode: SlabAccessMode::Open,
            grants: Vec::new(),
        });
        let before = access.grants.len();
        access.grants.retain(|g| g.user != user);
        if access.grants.len() == before {
            return Ok(false);
        }
        match write(&slabs, &obj, &access).await {
            Ok(()) => {
                tracing::info!(backend = %id, %user, "access revoked");
                return Ok(true);
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(busy().into())
}

fn open_access(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::OpenAccess,
        format!(
            "backend {id} is open: its URL admits whoever has it, no connect URL is needed; \
             spawn with \"access\": {{\"mode\": \"token\", \"user\": ...}} for per-user access"
        ),
    )
}

fn gone(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        ErrorCode::Gone,
        format!("backend {id} has ended or is stopping: nobody can connect to it any more"),
    )
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Busy,
        "the backend kept changing while its access was being written; retry",
    )
}
