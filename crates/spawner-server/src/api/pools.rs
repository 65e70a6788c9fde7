//! The pool routes (create, list, get, resize, drain) and the claim: `POST /v1/backends`
//! with `"pool"`.

use super::ApiError;
use crate::app::App;
use crate::pools::{claim_hook, stop};
use crate::store::pools::Claim;
use axum::http::StatusCode;
use spawner_api::page::PageRequest;
use spawner_api::{ErrorCode, Spawned};
use spawner_core::access::{Access, AccessMode};
use spawner_core::lifecycle::{StopReason, Timing};
use spawner_core::pool::{
    ClaimNotice, ClaimRequest, Claimed, IfNoneReady, PoolDrained, PoolList, PoolSize, PoolSpec,
    PoolStatus,
};
use std::sync::Arc;
use std::time::Duration;

use spawner_api::control_plane::{no_pool, pool_exists};

/// `spec` is validated.
pub(super) fn create(app: &Arc<App>, mut spec: PoolSpec) -> Result<PoolStatus, ApiError> {
    // The server's default access applies to a template that names none.
    if spec.template.spec.access.is_none() && app.config.access == AccessMode::Token {
        spec.template.spec.access = Some(Access::stored(AccessMode::Token));
    }
    app.runtimes.for_spec(&spec.template.spec).map_err(|why| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RuntimeUnavailable,
            format!("template: {why}"),
        )
    })?;
    if !app.store.create_pool(&spec).map_err(super::store_error)? {
        return Err(pool_exists(&spec.name));
    }
    tracing::info!(pool = %spec.name, min_ready = spec.min_ready, max = spec.max, "pool created");
    let name = spec.name.clone();
    app.pools.insert(spec);
    let pool = app.pools.get(&name).ok_or_else(|| no_pool(&name))?;
    Ok(app.pools.status(app, &pool))
}

pub(super) fn list(app: &Arc<App>, page: &PageRequest) -> PoolList {
    app.pools.page(app, page)
}

pub(super) fn get(app: &Arc<App>, name: &str) -> Result<PoolStatus, ApiError> {
    let pool = app.pools.get(name).ok_or_else(|| no_pool(name))?;
    Ok(app.pools.status(app, &pool))
}

/// `size` is validated.
pub(super) fn resize(app: &Arc<App>, name: &str, size: PoolSize) -> Result<PoolStatus, ApiError> {
    let spec = app
        .store
        .resize_pool(name, size)
        .map_err(super::store_error)?
        .ok_or_else(|| no_pool(name))?;
    tracing::info!(pool = %name, min_ready = size.min_ready, max = size.max, "pool resized");
    app.pools.resized(spec);
    get(app, name)
}

pub(super) async fn drain(app: &Arc<App>, name: &str) -> Result<PoolDrained, ApiError> {
    let ids = app
        .store
        .drain_pool(name, StopReason::Terminate.as_str())
        .map_err(super::store_error)?
        .ok_or_else(|| no_pool(name))?;
    app.pools.remove(name);
    tracing::info!(pool = %name, stopping = ids.len(), "pool drained");
    for id in &ids {
        if let Some(live) = app.registry.get(id) {
            stop(app, &live, StopReason::Terminate, "pool drained").await;
        }
    }
    Ok(PoolDrained {
        name: name.to_string(),
        stopping: ids.len() as u32,
    })
}

/// How long a claim waits for a member shown Ready to have its Ready committed before it
/// counts as finding none.
const COMMIT_WAIT: Duration = Duration::from_secs(1);

/// Claims a Ready backend of the pool for the request: the oldest Ready one, after its
/// claim hook (if the template has one) accepted; with none Ready, the next to be Ready
/// (one more is started for it unless the request says `wait`). A key that has a live
/// backend gets that one.
/// `req` is validated.
pub(super) async fn claim(app: &Arc<App>, req: ClaimRequest) -> Result<Spawned, ApiError> {
    let pool = app.pools.get(&req.pool).ok_or_else(|| no_pool(&req.pool))?;
    let ask = Access::for_claim(pool.spec().template.spec.access_mode(), req.access.as_ref())?;
    // The template's labels with the claim's: within the limits of any spec.
    req.claimed_spec(&pool.spec().template.spec).validate()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(req.wait_seconds);
    let mut changes = app.registry.subscribe();
    let mut waiting = None;
    let mut cold = false;
    let mut claiming = Some(app.pools.claiming());
    let mut starved = None;
    let mut committing = None;
    loop {
        if claiming.is_none() {
            claiming = Some(app.pools.claiming());
        }
        changes.borrow_and_update();
        match app.store.claim(&req).map_err(super::store_error)? {
            Claim::Existing(row) => {
                // A sleeping one is woken for its key's user.
                let state = match app.registry.get(&row.id) {
                    Some(live) => super::backends::wake_live(app, &live).await,
                    None => row.state,
                };
                let resp = super::backends::spawn_response(app, &row.id, row.key, state);
                let response = super::backends::with_connect(app, resp, ask.as_ref()).await?;
                return Ok(Spawned {
                    created: false,
                    response,
                });
            }
            Claim::Claimed(row, at) => {
                app.pools.mark_claimed(
                    &row.id,
                    Claimed {
                        at,
                        timing: Timing::of(&row.spec),
                    },
                    row.spec.clone(),
                );
                app.pools.wake();
                app.registry.changed();
                let Some(live) = app.registry.get(&row.id) else {
                    continue;
                };
                // Ready is committed before it is set in memory, where the proxy reads it:
                // the claim answers once the proxy routes to it too.
                let mut events = live.events();
                while live.state() < spawner_core::State::Ready {
                    let caught_up = tokio::time::timeout(Duration::from_secs(1), events.changed());
                    if caught_up.await.is_err() {
                        break;
                    }
                }
                let hook = match &pool.spec().template.claim_path {
                    Some(path) => {
                        let notice = ClaimNotice {
                            key: row.key.clone(),
                            labels: row.spec.labels.clone(),
                        };
                        claim_hook(&live, path, &notice).await
                    }
                    None => Ok(()),
                };
                if let Err(why) = hook {
                    tracing::warn!(backend = %row.id, pool = %req.pool, %why, "the claim hook refused; replacing the backend");
                    pool.refused(&why);
                    if let Err(e) = app
                        .store
                        .refuse_claim(&row.id, StopReason::ClaimRefused.as_str())
                    {
                        tracing::warn!(backend = %row.id, error = %e, "could not record the refusal");
                    }
                    stop(
                        app,
                        &live,
                        StopReason::ClaimRefused,
                        &format!("claim refused: {why}"),
                    )
                    .await;
                    continue;
                }
                pool.hook_took();
                let reason = spawner_core::pool::claimed_reason(row.key.as_deref());
                if let Err(e) = app.note(&live, &reason).await {
                    tracing::warn!(backend = %row.id, error = %e, "could not record the claim's event");
                }
                // The grace clock starts at the claim.
                live.monitor.touch();
                pool.claimed(cold);
                tracing::info!(backend = %row.id, pool = %req.pool, key = ?row.key, "claimed");
                let resp = super::backends::spawn_response(app, &row.id, row.key, live.state());
                let response = super::backends::with_connect(app, resp, ask.as_ref()).await?;
                return Ok(Spawned {
                    created: true,
                    response,
                });
            }
            Claim::NoneReady => {
                if app.pools.get(&req.pool).is_none() {
                    return Err(no_pool(&req.pool));
                }
                // A member is shown Ready before its Ready is committed (claims take
                // committed ones): its commit wakes this loop. Waiting for it is neither a
                // cold claim nor a reason to start one more; if the commit does not come
                // (the store failing), the claim waits as for none Ready after a second.
                let since = *committing.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() < COMMIT_WAIT && app.pools.ready_uncommitted(app, &req.pool) {
                    tokio::select! {
                        r = changes.changed() => if r.is_err() { return Err(ApiError::internal("the registry closed")) },
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                    continue;
                }
                cold = true;
                // Waiting for a start: the starts must not wait for this claim.
                claiming = None;
                if starved.is_none() {
                    starved = Some(app.pools.starved());
                }
                if req.if_none_ready == IfNoneReady::Start && waiting.is_none() {
                    waiting = Some(pool.wait());
                    app.pools.wake();
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return Err(ApiError::internal("the registry closed")) },
                    _ = tokio::time::sleep_until(deadline) => {
                        let message = spawner_core::pool::exhausted_message(
                            &req.pool,
                            req.wait_seconds,
                            pool.spec().template.claim_path.as_deref(),
                            pool.refusing().as_deref(),
                        );
                        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::PoolExhausted, message));
                    }
                }
            }
        }
    }
}
