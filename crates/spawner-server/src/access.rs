//! Per-user access in the embedded server: minting connect URLs (spawn, claim, connect),
//! grants kept in the store and in memory, and the proxy's side: both of the proxy's paths
//! apply `spawner_proxy::gate` (the check every proxy shares) with the backend's grants.

use crate::app::App;
use crate::live::Live;
use crate::store::grants::StoredGrant;
use http::{Request, Response, StatusCode};
use spawner_api::ApiError;
use spawner_api::ErrorCode;
use spawner_core::access::{ConnectAsk, ConnectResponse};
use spawner_core::time::now_millis;
use spawner_proxy::access::{self, Grant};
use spawner_proxy::gate::{self, Gate};
use spawner_proxy::{ProxyBody, RequestHead};
use std::sync::Arc;

/// Loads an adopted backend's grants from the store.
pub fn restore(app: &App, live: &Live) -> anyhow::Result<()> {
    let Some(state) = live.access(&app.access_key) else {
        return Ok(());
    };
    for g in app.store.grants(&live.id)? {
        match Grant::new(&g.user, g.generation, g.user_data, g.granted_at) {
            Some(grant) => {
                state.grants.insert(grant);
            }
            None => {
                tracing::warn!(backend = %live.id, user = %g.user, "a stored grant's user is not a header value; skipped")
            }
        }
    }
    Ok(())
}

/// A connect URL for `ask.user` of a token-mode backend: their standing grant, or a new one
/// recorded durably first.
pub async fn mint(app: &App, live: &Live, ask: &ConnectAsk) -> Result<ConnectResponse, ApiError> {
    let Some(state) = live.access(&app.access_key) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::OpenAccess,
            format!(
                "backend {} is open: its URL admits whoever has it, no connect URL is needed; \
                 spawn with \"access\": {{\"mode\": \"token\", \"user\": ...}} for per-user access",
                live.id
            ),
        ));
    };
    let grant = match state.grants.of(&ask.user) {
        Some(g) => g,
        None => {
            let generation = access::new_generation().map_err(|_| {
                ApiError::internal("the system's random source failed; no grant made")
            })?;
            let stored = app
                .store
                .grant(
                    &live.id,
                    StoredGrant {
                        user: ask.user.clone(),
                        generation,
                        user_data: ask.user_data.clone(),
                        granted_at: now_millis(),
                    },
                )
                .await
                .map_err(crate::api::store_error)?;
            let grant = Grant::new(
                &stored.user,
                stored.generation,
                stored.user_data,
                stored.granted_at,
            )
            .ok_or_else(|| ApiError::internal("a validated user is not a header value"))?;
            let grant = state.grants.insert(grant);
            tracing::info!(backend = %live.id, user = %ask.user, "access granted");
            grant
        }
    };
    let (connect_url, expires_at) = access::connect_url(
        &state.key,
        &app.urls.backend(&live.id),
        &ask.user,
        grant.generation,
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

/// Revokes `user`'s access: durably, then in memory (their WebSockets close with 1008).
pub async fn revoke(app: &App, id: &str, user: &str) -> Result<bool, ApiError> {
    let stored = app
        .store
        .revoke(id, user)
        .await
        .map_err(crate::api::store_error)?;
    let live = app
        .registry
        .get(id)
        .and_then(|l| l.access(&app.access_key).map(|a| a.grants.revoke(user)))
        .unwrap_or(false);
    if stored || live {
        tracing::info!(backend = %id, %user, "access revoked");
    }
    Ok(stored || live)
}

/// Who the relay may forward a request as ([`gate::relay_admits`]).
pub fn relay_admits(app: &App, live: &Live, head: &RequestHead) -> Option<Option<Arc<Grant>>> {
    gate::relay_admits(gate_of(app, live), head)
}

/// Hyper's path ([`gate::admit`]): the grant a request is admitted as (`None` for an open
/// backend), or the answer it gets instead.
pub fn gate<B>(
    app: &App,
    live: &Live,
    req: &Request<B>,
    path_prefix: usize,
) -> Result<Option<Arc<Grant>>, Box<Response<ProxyBody>>> {
    let now = now_millis() / 1000;
    gate::admit(gate_of(app, live), req, path_prefix, app.urls.secure(), now)
}

fn gate_of<'a>(app: &'a App, live: &'a Live) -> Option<Gate<'a>> {
    live.access(&app.access_key).map(|state| Gate {
        key: &state.key,
        grants: &state.grants,
        nonces: &app.nonces,
    })
}
