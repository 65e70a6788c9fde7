//! Warm pools on Kubernetes: the pool routes of `spawner api` (create, list, get, resize,
//! drain) and the claim (`POST /v1/backends` with `"pool"`). The controller's side is
//! `controller/pools.rs`.
//!
//! A pool is a [`SessionLivedBackendPool`]; its members are SessionLivedBackends labelled
//! with its name ([`pool_members`]). A claim takes a Ready unclaimed member with a patch
//! conditional on the member's `resourceVersion`, so that two API replicas never hand out
//! one member twice. A claim with a key first finds the key's backend through the key's
//! Lease, or makes the Lease pending and claims a member under it, which the Lease then
//! names ([`crate::api::key_lease`]).

use crate::api::key_lease::{lock_key, KeyState};
use crate::api::{ApiState, Error};
use crate::model::crd::{SessionLivedBackend, ANNOTATION_STOP};
use crate::model::pool_crd::{SessionLivedBackendPool, LABEL_KEY_ID, LABEL_POOL};
use crate::model::pool_members::{self as members, claim_patch, claimable, counts, surplus};
use axum::http::StatusCode;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use spawner_api::page::{Page, PageRequest};
use spawner_api::{ApiError, ErrorCode, Spawned};
use spawner_core::lifecycle::StopReason;
use spawner_core::pool::{
    self, validate_name, ClaimNotice, ClaimRequest, IfNoneReady, PoolDrained, PoolList,
    PoolMetrics, PoolSize, PoolSpec, PoolStatus,
};
use spawner_core::BackendId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tracing::{info, warn};

/// What this API process saw of one pool's claims since it started.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    claims: u64,
    cold_claims: u64,
    refused: u64,
}

/// Claims answered by this API process, per pool.
#[derive(Debug, Default)]
pub struct PoolStats(Mutex<HashMap<String, Tally>>);

impl PoolStats {
    fn update(&self, pool: &str, f: impl FnOnce(&mut Tally)) {
        if let Ok(mut m) = self.0.lock() {
            f(m.entry(pool.to_string()).or_default());
        }
    }

    fn claimed(&self, pool: &str, cold: bool) {
        self.update(pool, |t| {
            t.claims += 1;
            t.cold_claims += u64::from(cold);
        });
    }

    fn get(&self, pool: &str) -> Tally {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(pool).copied())
            .unwrap_or_default()
    }
}

/// The pools' series for `/metrics`, as the embedded server names them: the gauges counted
/// from the members, the counters this API process's.
pub async fn render_metrics(state: &ApiState) -> Result<String, kube::Error> {
    let mut pools = pools_api(state).list(&ListParams::default()).await?.items;
    pools.sort_by_key(|p| p.pool_name());
    let mut rows = Vec::with_capacity(pools.len());
    for p in &pools {
        let name = p.pool_name();
        let counts = counts(&members_of(&state.slabs(), &name).await?);
        let t = state.pool_stats.get(&name);
        rows.push(PoolMetrics {
            name,
            counts,
            claims: t.claims,
            cold_claims: t.cold_claims,
            refused: t.refused,
        });
    }
    Ok(spawner_core::pool::render_metrics(
        &rows,
        " (this API process)",
    ))
}

/// How often a claim waiting for a Ready member looks again.
const POLL: Duration = Duration::from_millis(100);

fn pools_api(state: &ApiState) -> Api<SessionLivedBackendPool> {
    Api::namespaced(state.client.clone(), &state.config.namespace)
}

fn no_pool(name: &str) -> ApiError {
    spawner_api::control_plane::no_pool(name)
}

async fn members_of(
    slabs: &Api<SessionLivedBackend>,
    pool: &str,
) -> Result<Vec<SessionLivedBackend>, kube::Error> {
    let lp = ListParams::default().labels(&format!("{LABEL_POOL}={pool}"));
    Ok(slabs.list(&lp).await?.items)
}

async fn status_of(state: &ApiState, pool: &SessionLivedBackendPool) -> Result<PoolStatus, Error> {
    let spec = pool.pool_spec();
    let members = members_of(&state.slabs(), &spec.name).await?;
    let c = counts(&members);
    let Tally {
        claims,
        cold_claims,
        ..
    } = state.pool_stats.get(&spec.name);
    Ok(PoolStatus {
        name: spec.name,
        template: spec.template,
        min_ready: spec.min_ready,
        max: spec.max,
        ready: c.ready,
        starting: c.starting,
        claimed: c.claimed,
        claims,
        cold_claims,
    })
}

/// `spec` is validated.
pub(crate) async fn create_pool(state: &ApiState, spec: PoolSpec) -> Result<PoolStatus, Error> {
    let obj = SessionLivedBackendPool::from_pool_spec(&spec)?;
    let created = match pools_api(state).create(&PostParams::default(), &obj).await {
        Ok(c) => c,
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            return Err(spawner_api::control_plane::pool_exists(&spec.name).into())
        }
        Err(e) => return Err(e.into()),
    };
    info!(pool = %spec.name, min_ready = spec.min_ready, max = spec.max, "pool created");
    status_of(state, &created).await
}

/// A page of the pools, by name, as the embedded server gives it (the cursor is the last
/// name of the page before): each pool's counts are read for the page's pools only.
pub(crate) async fn list_pools(state: &ApiState, request: &PageRequest) -> Result<PoolList, Error> {
    let mut objs = pools_api(state).list(&ListParams::default()).await?.items;
    objs.sort_by_key(|p| p.pool_name());
    let mut page = Page::new(request);
    let mut next = None;
    let mut last = None;
    for p in &objs {
        let name = p.pool_name();
        if request.after.as_deref().is_some_and(|a| name.as_str() <= a) {
            continue;
        }
        if page.is_full() {
            next = last;
            break;
        }
        let status = status_of(state, p).await?;
        let bytes = spawner_core::limits::spec_bytes(&status.template.spec);
        page.push(status, bytes);
        last = Some(name);
    }
    Ok(PoolList {
        pools: page.items,
        next,
    })
}

async fn fetch_pool(state: &ApiState, name: &str) -> Result<SessionLivedBackendPool, Error> {
    validate_name(name).map_err(|_| no_pool(name))?;
    pools_api(state)
        .get_opt(name)
        .await?
        .ok_or_else(|| no_pool(name).into())
}

pub(crate) async fn get_pool(state: &ApiState, name: &str) -> Result<PoolStatus, Error> {
    let pool = fetch_pool(state, name).await?;
    status_of(state, &pool).await
}

/// `size` is validated.
pub(crate) async fn resize_pool(
    state: &ApiState,
    name: &str,
    size: PoolSize,
) -> Result<PoolStatus, Error> {
    let patch = json!({"spec": {"minReady": size.min_ready, "max": size.max}});
    let pool = match pools_api(state)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(p) => p,
        Err(kube::Error::Api(s)) if s.is_not_found() => return Err(no_pool(name).into()),
        Err(e) => return Err(e.into()),
    };
    info!(pool = %name, min_ready = size.min_ready, max = size.max, "pool resized");
    status_of(state, &pool).await
}

/// Deletes the pool and stops its unclaimed members; claimed ones run on. (The
/// controller stops unclaimed members of a pool that no longer exists too, should this
/// API stop half-way.)
pub(crate) async fn drain_pool(state: &ApiState, name: &str) -> Result<PoolDrained, Error> {
    match pools_api(state)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_not_found() => return Err(no_pool(name).into()),
        Err(e) => return Err(e.into()),
    }
    let slabs = state.slabs();
    let members = members_of(&slabs, name).await?;
    let stopping = surplus(&members, members.len());
    for m in &stopping {
        crate::model::write::request_stop(&slabs, &m.name_any(), StopReason::Terminate, false)
            .await?;
    }
    info!(pool = %name, stopping = stopping.len(), "pool drained");
    Ok(PoolDrained {
        name: name.to_string(),
        stopping: stopping.len() as u32,
    })
}

/// `POST /v1/backends` with `"pool"`: claims a Ready member of the pool for the request
/// (the oldest, after its claim hook accepted); with none Ready, the next to be Ready (one
/// more is started for it unless the request says `wait`). A key that has a live backend
/// gets that one (200).
pub async fn claim(state: &ApiState, req: ClaimRequest) -> Result<Spawned, Error> {
    // From the watch when it has the pool (a claim's template does not change).
    let cached = state.pool_cache.as_ref().and_then(|c| c.pool(&req.pool));
    let pool = match cached {
        Some(p) => p,
        None => fetch_pool(state, &req.pool).await?,
    };
    let mode = pool
        .spec
        .template
        .access
        .as_ref()
        .map_or(spawner_core::access::AccessMode::Open, |a| a.mode.into());
    let ask = spawner_core::access::Access::for_claim(mode, req.access.as_ref())?;
    if ask.is_some() {
        crate::api::access::key(state)?;
    }
    // The template's labels with the claim's: within the limits of any spec.
    req.claimed_spec(&pool.pool_spec().template.spec)
        .validate()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(req.wait_seconds);
    let lock = match &req.key {
        Some(key) => {
            let hold =
                Duration::from_secs(req.wait_seconds) + spawner_proxy::claim_hook::TIMEOUT * 3;
            match lock_key(state, key, hold, deadline).await? {
                KeyState::Found(existing) => {
                    let existing = crate::api::woken_for_key(state, *existing).await?;
                    let response =
                        crate::api::access::with_connect(state, &existing, ask.as_ref()).await?;
                    return Ok(Spawned {
                        created: false,
                        response,
                    });
                }
                KeyState::Locked(lock, id) => Some((lock, id)),
            }
        }
        None => None,
    };
    let key_id = lock.as_ref().map(|(_, id)| id.as_str().to_string());
    let result = claim_member(state, &pool, &req, key_id.as_deref(), deadline).await;
    if let Some((lock, _)) = lock {
        match &result {
            Ok((obj, _)) => lock.name_later(obj),
            Err(_) => lock.release_later(),
        }
    }
    let (obj, cold) = result?;
    state.pool_stats.claimed(&req.pool, cold);
    info!(backend = %obj.name_any(), pool = %req.pool, key = ?req.key, "claimed");
    let response = crate::api::access::with_connect(state, &obj, ask.as_ref()).await?;
    Ok(Spawned {
        created: true,
        response,
    })
}

/// Takes a Ready member for `req` until `deadline`: returns it claimed, and whether the
/// claim had to wait for one.
async fn claim_member(
    state: &ApiState,
    pool: &SessionLivedBackendPool,
    req: &ClaimRequest,
    key_id: Option<&str>,
    deadline: tokio::time::Instant,
) -> Result<(SessionLivedBackend, bool), Error> {
    let slabs = state.slabs();
    let spec = pool.pool_spec();
    let claimed_spec = req.claimed_spec(&spec.template.spec);
    let mut cold = false;
    let mut started: Option<String> = None;
    // Refusals of the claim hook during this claim, what the last one said, and until when
    // this claim starts no member: refusals hold starts back as failures do (0.1 s, doubling,
    // at most 30 s), so that a hook that refuses everything does not cycle members.
    let mut refusals = 0u32;
    let mut last_refusal: Option<String> = None;
    let mut hold_until: Option<tokio::time::Instant> = None;
    // Without a claim hook the claim's event is written with the claim: one write.
    let hook = spec.template.claim_path.as_deref();
    let cache = state.pool_cache.as_ref();
    let mut changes = cache.map(|c| c.subscribe());
    loop {
        if let Some(rx) = changes.as_mut() {
            rx.borrow_and_update();
        }
        // The watch's members (a stale one costs a 409 and the next is tried), or a list.
        let members = match cache.and_then(|c| c.members(&spec.name)) {
            Some(m) => m,
            None => members_of(&slabs, &spec.name).await?,
        };
        for m in claimable(&members) {
            let now = spawner_core::time::now_millis();
            let patch = claim_patch(m, &claimed_spec, key_id, now, hook.is_none());
            let taken = match slabs
                .patch(
                    &m.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(t) => t,
                // Another claim took it (or it changed): try the next.
                Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let Some(path) = hook else {
                return Ok((taken, cold));
            };
            let notice = ClaimNotice {
                key: req.key.clone(),
                labels: claimed_spec.labels.clone(),
            };
            if let Err(why) = claim_hook(&taken, path, &notice).await {
                warn!(backend = %taken.name_any(), pool = %spec.name, %why, "the claim hook refused; replacing the backend");
                state.pool_stats.update(&spec.name, |t| t.refused += 1);
                // What it answered, in its timeline (as the embedded server records it).
                let said = format!("claim refused: {why}");
                let now = spawner_core::time::now_millis();
                if let Err(e) =
                    crate::model::write::note(&slabs, &taken.name_any(), &said, now).await
                {
                    warn!(backend = %taken.name_any(), error = %e, "could not record the refusal's answer");
                }
                // Stopped, and its key freed: the claim takes another member for it.
                let refuse = json!({
                    "metadata": {
                        "annotations": {ANNOTATION_STOP: StopReason::ClaimRefused.as_str()},
                        "labels": {LABEL_KEY_ID: null},
                    },
                    "spec": {"key": null},
                });
                slabs
                    .patch(
                        &taken.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&refuse),
                    )
                    .await?;
                refusals += 1;
                last_refusal = Some(why);
                hold_until = Some(tokio::time::Instant::now() + members::backoff_after(refusals));
                continue;
            }
            // The hook took it: the claim in the backend's timeline, with its key.
            let reason = pool::claimed_reason(req.key.as_deref());
            let now = spawner_core::time::now_millis();
            let name = taken.name_any();
            let taken = match crate::model::write::note_on(
                &slabs,
                &name,
                Some(taken.clone()),
                &reason,
                now,
            )
            .await
            {
                Ok(Some(noted)) => noted,
                Ok(None) => taken,
                Err(e) => {
                    warn!(backend = %taken.name_any(), error = %e, "could not record the claim's event");
                    taken
                }
            };
            return Ok((taken, cold));
        }
        cold = true;
        let known = cache.is_some_and(|c| c.pool(&spec.name).is_some());
        if !known && fetch_pool_opt(state, &spec.name).await?.is_none() {
            return Err(no_pool(&spec.name).into());
        }
        // One more member for this claim (within max), unless it waits for the refill. The
        // one it started is starting until it shows otherwise (a watch may not show it yet).
        let own_starting = match &started {
            Some(name) => match members.iter().find(|m| &m.name_any() == name) {
                Some(m) => members::role(m) == members::Role::Starting,
                None => true,
            },
            None => false,
        };
        let held = hold_until.is_some_and(|at| tokio::time::Instant::now() < at);
        if req.if_none_ready == IfNoneReady::Start && !own_starting && !held {
            let plan = pool::plan(spec.size(), counts(&members), 1);
            if plan.start > 0 {
                started = Some(start_member(&slabs, pool).await?);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let message = pool::exhausted_message(
                &spec.name,
                req.wait_seconds,
                hook,
                last_refusal.as_deref(),
            );
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::PoolExhausted,
                message,
            )
            .into());
        }
        // The watch's next change (a member Ready, claimed, started), or a poll without one.
        match changes.as_mut() {
            Some(rx) => {
                let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
            }
            None => tokio::time::sleep(POLL).await,
        }
    }
}

async fn fetch_pool_opt(
    state: &ApiState,
    name: &str,
) -> Result<Option<SessionLivedBackendPool>, kube::Error> {
    pools_api(state).get_opt(name).await
}

/// Creates one new unclaimed member of `pool`; returns its name.
async fn start_member(
    slabs: &Api<SessionLivedBackend>,
    pool: &SessionLivedBackendPool,
) -> Result<String, Error> {
    let id = BackendId::generate().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("no randomness for an id: {e}"),
        )
    })?;
    let created = slabs
        .create(&PostParams::default(), &pool.member(id.as_str()))
        .await?;
    info!(pool = %pool.pool_name(), backend = %created.name_any(), "starting a backend for the pool");
    Ok(created.name_any())
}

/// POSTs the claim to the member's sidecar at `path`; `Err` says why it counts as refused.
async fn claim_hook(
    obj: &SessionLivedBackend,
    path: &str,
    notice: &ClaimNotice,
) -> Result<(), String> {
    let authority =
        crate::model::read::target_of(obj).map_err(|e| format!("it has no address ({e:?})"))?;
    spawner_proxy::claim_hook::post(authority.as_str(), path, notice).await
}
