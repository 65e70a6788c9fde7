//! Warm pools on Kubernetes: the pool routes of `spawner api` (create, list, get, resize,
//! drain) and the claim (`POST /v1/backends` with `"pool"`). The controller's side is
//! `controller/pools.rs`.
//!
//! A pool is a [`SessionLivedBackendPool`]; its members are SessionLivedBackends labelled
//! with its name ([`pool_members`]). A claim takes a Ready unclaimed member with a patch
//! conditional on the member's `resourceVersion`, so that two API replicas never hand out
//! one member twice. A claim with a key first takes the key's Lease (`spawner-key-{id}`,
//! the id [`name_for_key`] derives): claims of one key are serialized, and each looks for
//! the key's backend (a keyed spawn's object, or a member claimed with the key) while
//! holding it.

use crate::api::{ApiState, Error};
use crate::model::crd::{SessionLivedBackend, ANNOTATION_STOP};
use crate::model::naming::name_for_key;
use crate::model::pool_crd::{SessionLivedBackendPool, LABEL_KEY_ID, LABEL_POOL};
use crate::model::pool_members::{self as members, claim_patch, claimable, counts, surplus};
use crate::model::read::state_of;
use axum::http::StatusCode;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::ObjectMeta;
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
/// How often a spawn or claim waiting for a key's Lease looks again.
const LOCK_POLL: Duration = Duration::from_millis(20);

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

/// The key's Lease, held while one spawn or claim of the key looks for its backend and
/// creates or claims one.
pub(crate) struct KeyLock {
    leases: Api<Lease>,
    /// The Lease as created: its release deletes this one only, not one that took over.
    lease: Lease,
}

impl KeyLock {
    fn lease_name(id: &BackendId) -> String {
        format!("spawner-key-{}", id.as_str())
    }

    /// Takes the Lease, waiting while another spawn or claim holds it; one left by an API
    /// that stopped is taken over once its duration has passed.
    async fn take(
        leases: Api<Lease>,
        id: &BackendId,
        hold: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<KeyLock, Error> {
        let name = Self::lease_name(id);
        loop {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    acquire_time: Some(MicroTime(Timestamp::now())),
                    lease_duration_seconds: Some(i32::try_from(hold.as_secs()).unwrap_or(i32::MAX)),
                    ..LeaseSpec::default()
                }),
            };
            match leases.create(&PostParams::default(), &lease).await {
                Ok(lease) => return Ok(KeyLock { leases, lease }),
                Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(held) = leases.get_opt(&name).await? {
                let expired = held.spec.as_ref().is_some_and(|s| {
                    let since = s.acquire_time.as_ref().map(|t| t.0);
                    let dur = i64::from(s.lease_duration_seconds.unwrap_or(0));
                    since.is_some_and(|t| Timestamp::now().as_second() > t.as_second() + dur)
                });
                if expired {
                    warn!(lease = %name, "taking over the expired Lease of a key");
                    delete_exactly(&leases, &held).await?;
                    continue;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Busy,
                    "another spawn or claim of this key is under way; retry",
                )
                .into());
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    pub(crate) async fn release(self) {
        if let Err(e) = delete_exactly(&self.leases, &self.lease).await {
            warn!(lease = %self.lease.name_any(), error = %e, "could not release a key's Lease; it expires");
        }
    }

    /// Releases the Lease after the answer, not before it: what it guarded (the claim or
    /// the create) is written by now, and a release that never happens (the process
    /// stopped) only makes the key's next spawn or claim wait for the Lease to expire, as
    /// after any crash. One write fewer on the request's path.
    pub(crate) fn release_later(self) {
        tokio::spawn(self.release());
    }
}

async fn delete_exactly(leases: &Api<Lease>, lease: &Lease) -> Result<(), kube::Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: lease.metadata.uid.clone(),
            resource_version: lease.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match leases.delete(&lease.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The live backend of the key whose object name derives `id`: the keyed spawn's object,
/// or a pool member claimed with the key.
pub async fn backend_of_key(
    slabs: &Api<SessionLivedBackend>,
    id: &BackendId,
    key: &str,
) -> Result<Option<SessionLivedBackend>, kube::Error> {
    let live =
        |o: &SessionLivedBackend| o.spec.key.as_deref() == Some(key) && !state_of(o).is_terminal();
    // Both looks at once: one round trip instead of two on every keyed spawn and claim.
    let lp = ListParams::default().labels(&format!("{LABEL_KEY_ID}={}", id.as_str()));
    let (named, labelled) = tokio::try_join!(slabs.get_opt(id.as_str()), slabs.list(&lp))?;
    if let Some(o) = named.filter(live) {
        return Ok(Some(o));
    }
    Ok(labelled
        .items
        .into_iter()
        .filter(|o| members::role(o) == members::Role::Claimed)
        .find(live))
}

/// What a get-or-create of a key found: the key's live backend, or the key's Lease, taken
/// (with the id the key derives), to create or claim one under.
pub(crate) enum KeyState {
    Found(Box<SessionLivedBackend>),
    Locked(Box<KeyLock>, BackendId),
}

/// Looks for the key's live backend, and takes the key's Lease when there is none: a keyed
/// spawn and a keyed claim both hold it while they look again and create or claim one, so
/// that whatever mix of them runs at once, one backend per key results. A Lease held for
/// longer than `hold` (by an API that stopped) is taken over.
pub(crate) async fn lock_key(
    state: &ApiState,
    key: &str,
    hold: Duration,
    deadline: tokio::time::Instant,
) -> Result<KeyState, Error> {
    let slabs = state.slabs();
    let id = name_for_key(&state.config.key_secret, &state.config.namespace, key);
    // The Lease first, then one look for the key's backend under it: a new key (the usual
    // case) costs the Lease and one look, not a look before it as well.
    let leases = Api::namespaced(state.client.clone(), &state.config.namespace);
    let lock = KeyLock::take(leases, &id, hold, deadline).await?;
    match backend_of_key(&slabs, &id, key).await {
        Ok(Some(found)) => {
            lock.release_later();
            Ok(KeyState::Found(Box::new(found)))
        }
        Ok(None) => Ok(KeyState::Locked(Box::new(lock), id)),
        Err(e) => {
            lock.release().await;
            Err(e.into())
        }
    }
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
        lock.release_later();
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
            let patch = claim_patch(m, &claimed_spec, key_id, spawner_core::time::now_millis());
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
            if let Some(path) = &spec.template.claim_path {
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
                    hold_until =
                        Some(tokio::time::Instant::now() + members::backoff_after(refusals));
                    continue;
                }
            }
            // The claim in the backend's timeline, with its key.
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
                spec.template.claim_path.as_deref(),
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
