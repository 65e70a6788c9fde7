//! `spawner api`: the HTTP contract of the embedded server (docs/api.md), backed by
//! SessionLivedBackend objects.
//!
//! Spawning creates an object; the controller does the rest. Get-or-create by key is
//! race-safe because the object name is derived from the key ([`crate::model::naming`]): of two
//! concurrent creates the API server accepts one and answers the other AlreadyExists; and
//! because a keyed spawn holds the key's Lease, as a keyed claim of a warm pool does, and
//! the Lease then names the key's backend ([`crate::api::key_lease`]).
//! Status routes read the object's status history, and the status stream follows the
//! object with a watch.

pub mod access;
pub mod control_plane;
pub mod key_lease;
pub mod list_watch;
pub mod metrics;
pub mod pool_cache;
pub mod pools;

use crate::model::crd::SessionLivedBackend;
use crate::model::naming::{name_for_key, Urls};
use crate::model::read::{millis_of, state_of};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::api::{Preconditions, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use spawner_api::bodies::BackendList;
use spawner_api::page::{ListPosition, Page};
use spawner_api::parse::ListFilter;
use spawner_api::{respond, ApiError, ErrorCode, SpawnRoute, Spawned, StatusItem};
use spawner_core::lifecycle::{expiring, Expiry, Observed, StopReason, Timing};
use spawner_core::time::{now_millis, Millis};
use spawner_core::Expiring;
use spawner_core::{BackendId, BackendRecord, BackendSpec, Event, SpawnResponse, ValidationError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, warn};

/// The API's settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The namespace backends are created in.
    pub namespace: String,
    /// Where browsers reach backends (the router).
    pub urls: Urls,
    /// This API's public base URL, for `ready_url`, `status_url`, `status_stream_url`.
    pub api_base: String,
    /// The bearer token of the control routes; `None` leaves them open (`--no-token`).
    pub token: Option<String>,
    /// What browsers may do ([`spawner_api::guard`]): the API's own names and origins.
    pub guard: spawner_api::Guard,
    /// The secret keying object names derived from keys.
    pub key_secret: Vec<u8>,
    /// The access key (`SPAWNER_ACCESS_KEY`): connect URLs are signed with keys derived from
    /// it. Without it, token-mode spawns and claims are refused.
    pub access_key: Option<spawner_proxy::access::MasterKey>,
}

pub struct ApiState {
    pub client: Client,
    pub config: ApiConfig,
    /// One-time dashboard login links (none without a token).
    pub login: Option<Arc<spawner_api::login::LoginCodes>>,
    /// Claims this process answered, per pool.
    pub pool_stats: crate::api::pools::PoolStats,
    /// Spawn-to-ready times and sweeps this process saw ([`crate::api::metrics`]).
    pub lifecycle_stats: crate::api::metrics::LifecycleStats,
    /// The watch of pools and members that claims read; `None` reads the API server.
    pub pool_cache: Option<crate::api::pool_cache::PoolCache>,
}

impl ApiState {
    pub(crate) fn slabs(&self) -> Api<SessionLivedBackend> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn api_url(&self, id: &str, route: &str) -> String {
        format!(
            "{}/v1/backends/{id}/{route}",
            self.config.api_base.trim_end_matches('/')
        )
    }

    pub(crate) fn spawn_response(&self, obj: &SessionLivedBackend) -> SpawnResponse {
        let id = obj.name_any();
        SpawnResponse {
            key: obj.spec.key.clone(),
            state: state_of(obj),
            url: self.config.urls.backend_url(&id),
            ready_url: self.api_url(&id, "ready"),
            status_url: self.api_url(&id, "status"),
            status_stream_url: self.api_url(&id, "status/stream"),
            id,
            connect_url: None,
            connect_expires_at: None,
        }
    }

    pub(crate) fn record(&self, obj: &SessionLivedBackend, with_events: bool) -> BackendRecord {
        let id = obj.name_any();
        let status = crate::model::read::status(obj);
        let mut events = events_in(obj, &status);
        let reason = events.last().and_then(|e| e.reason.clone());
        if !with_events {
            events.clear();
        }
        let live = !state_of(obj).is_terminal();
        BackendRecord {
            key: obj.spec.key.clone(),
            state: state_of(obj),
            reason,
            url: self.config.urls.backend_url(&id),
            spec: obj.backend_spec(),
            created_at: created_at(obj),
            events,
            exit_code: status.exit_code,
            live_connections: status.live_connections.unwrap_or(0),
            last_activity: status
                .last_activity
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis()),
            node: status.node_name.clone(),
            address: status
                .port
                .map(|p| format!("{id}.{}.svc:{p}", obj.namespace().unwrap_or_default())),
            runtime: Some("kubernetes".to_string()),
            // As on the embedded server: what keeps a backend alive is shown while it lives.
            busy_until: live
                .then(|| status.busy_until.as_deref().and_then(millis_of))
                .flatten(),
            last_client_activity: live
                .then(|| status.last_client_activity.as_deref().and_then(millis_of))
                .flatten(),
            pool: crate::model::pool_members::pool_of(obj).map(str::to_string),
            claimed_at: crate::model::pool_members::claimed_at(obj),
            id,
        }
    }
}

fn created_at(obj: &SessionLivedBackend) -> Millis {
    obj.metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_millisecond())
}

/// The events of the status history; before the controller's first write, the Submitted
/// event it will record (same number, same time), so that streams never see it twice.
pub fn events_of(obj: &SessionLivedBackend) -> Vec<Event> {
    events_in(obj, &crate::model::read::status(obj))
}

/// [`events_of`], from `status` already read off `obj` with [`crate::model::read::status`].
fn events_in(
    obj: &SessionLivedBackend,
    status: &crate::model::status::SessionLivedBackendStatus,
) -> Vec<Event> {
    let events = status.events();
    if !events.is_empty() {
        return events;
    }
    vec![Event {
        seq: 1,
        state: spawner_core::State::Submitted,
        time: created_at(obj),
        reason: None,
        exit_code: None,
    }]
}

/// What a handler can fail with: an answer of the contract, or a failure of the Kubernetes
/// API (reported as the contract's error shape).
#[derive(Debug)]
pub enum Error {
    Contract(ApiError),
    Kube(kube::Error),
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Contract(e)
    }
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::Contract(e.into())
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Contract(e) => e,
            Error::Kube(e) => {
                error!(error = %e, "Kubernetes API request failed");
                match &e {
                    kube::Error::Api(s) if s.is_forbidden() => ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        ErrorCode::Forbidden,
                        format!("the API's service account is not allowed to do this: {}; check deploy/kubernetes RBAC", s.message),
                    ),
                    _ => ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        ErrorCode::KubernetesUnavailable,
                        format!("the Kubernetes API failed: {e}"),
                    ),
                }
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// The contract's routes (`spawner_api::control_plane`) over the Kubernetes API, and this
/// API's metrics.
pub fn router(state: Arc<ApiState>) -> Router {
    let mount = spawner_api::Mount {
        token: state.config.token.clone(),
        login: state.login.clone(),
        guard: state.config.guard.clone(),
        control: Router::new()
            .route("/metrics", get(metrics))
            .with_state(state.clone()),
    };
    spawner_api::control_plane::router(Arc::new(crate::api::control_plane::KubePlane(state)), mount)
}

pub(crate) async fn fetch(state: &ApiState, id: &str) -> Result<SessionLivedBackend, Error> {
    let id = spawner_api::parse::id(id)?;
    state
        .slabs()
        .get_opt(id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(id.as_str()).into())
}

/// `POST /v1/backends` (or the seed's `/spawn`, whose backends are open).
pub(crate) async fn spawn(
    state: &ApiState,
    mut spec: BackendSpec,
    route: SpawnRoute,
) -> Result<Spawned, Error> {
    let ask = match route {
        SpawnRoute::V1 => crate::api::access::resolve(state, &mut spec)?,
        SpawnRoute::Seed => None,
    };
    let (code, obj) = create(state, &spec).await?;
    let response = crate::api::access::with_connect(state, &obj, ask.as_ref()).await?;
    Ok(Spawned {
        created: code == StatusCode::CREATED,
        response,
    })
}

/// Creates the object for `spec`, or returns the live one of its key (200). A terminal
/// object holding the key's name is deleted first: at most one live backend per key.
pub async fn create(
    state: &ApiState,
    spec: &BackendSpec,
) -> Result<(StatusCode, SessionLivedBackend), Error> {
    spec.validate()?;
    // A keyed spawn holds the key's Lease, as a keyed claim of a pool does: the key's
    // backend may be a pool member claimed with it, which the Lease names.
    let lock = match &spec.key {
        Some(key) => {
            let deadline = tokio::time::Instant::now() + KEY_WAIT;
            match crate::api::key_lease::lock_key(state, key, KEY_WAIT, deadline).await? {
                crate::api::key_lease::KeyState::Found(found) => {
                    return Ok((StatusCode::OK, woken_for_key(state, *found).await?))
                }
                crate::api::key_lease::KeyState::Locked(lock, _) => Some(lock),
            }
        }
        None => None,
    };
    let result = create_object(state, spec).await;
    if let Some(lock) = lock {
        match &result {
            Ok((_, obj)) => lock.name_later(obj),
            Err(_) => lock.release_later(),
        }
    }
    result
}

/// How long a keyed spawn waits for its key's Lease (held by another spawn or claim of
/// the key), and after how long a Lease left by an API that stopped is taken over.
const KEY_WAIT: Duration = Duration::from_secs(30);

/// Creates the object for `spec` (validated), or finds the live one of its key's name.
async fn create_object(
    state: &ApiState,
    spec: &BackendSpec,
) -> Result<(StatusCode, SessionLivedBackend), Error> {
    let slabs = state.slabs();
    // A few rounds cover the races: the key's object deleted or ended between our create
    // and our read, or (for random names) a collision, which 129 random bits make moot.
    for _ in 0..4 {
        let id = match &spec.key {
            Some(key) => name_for_key(&state.config.key_secret, &state.config.namespace, key),
            None => BackendId::generate().map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    format!("no randomness for an id: {e}"),
                )
            })?,
        };
        let obj = SessionLivedBackend::from_backend_spec(id.as_str(), spec)?;
        match slabs.create(&PostParams::default(), &obj).await {
            Ok(created) => return Ok((StatusCode::CREATED, created)),
            Err(kube::Error::Api(s)) if s.is_already_exists() && spec.key.is_some() => {
                let Some(existing) = slabs.get_opt(id.as_str()).await? else {
                    continue;
                };
                if existing.spec.key != spec.key {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        ErrorCode::NameTaken,
                        format!("object {id} exists but belongs to another key; delete it or change the key secret"),
                    )
                    .into());
                }
                if !state_of(&existing).is_terminal() {
                    return Ok((StatusCode::OK, woken_for_key(state, existing).await?));
                }
                let dp = DeleteParams {
                    preconditions: existing.metadata.uid.clone().map(|uid| Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match slabs.delete(id.as_str(), &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Busy,
        "the backend of this key kept changing while it was being created; retry",
    )
    .into())
}

pub(crate) async fn list(state: &ApiState, filter: &ListFilter) -> Result<BackendList, Error> {
    Ok(match &filter.key {
        // A key names one object, and the pool members claimed with it (by label): read
        // those instead of listing them all; a handful at most, so one page.
        Some(k) => {
            let id = name_for_key(&state.config.key_secret, &state.config.namespace, k);
            let lp = ListParams::default().labels(&format!(
                "{}={}",
                crate::model::pool_crd::LABEL_KEY_ID,
                id.as_str()
            ));
            let mut objs: Vec<SessionLivedBackend> = Vec::new();
            if filter.page.after.is_none() {
                objs.extend(state.slabs().get_opt(id.as_str()).await?);
                objs.extend(state.slabs().list(&lp).await?.items);
            }
            let backends = objs
                .iter()
                .filter(|o| o.spec.key == filter.key && selected(filter, o))
                .map(|o| state.record(o, false))
                .collect();
            BackendList {
                backends,
                next: None,
            }
        }
        None => page(state, filter).await?,
    })
}

/// Whether an object passes the filter's labels and state (its key is filtered apart).
fn selected(filter: &ListFilter, obj: &SessionLivedBackend) -> bool {
    filter.labels_match(obj.labels()) && filter.state.is_none_or(|s| state_of(obj) == s)
}

/// Objects read from the API server at once while the list is read.
const LIST_CHUNK: u32 = 500;

/// One page of the list, newest first (`created_at` descending, then the id), with the
/// embedded server's cursor as `next`: the objects the labels select are read, ordered,
/// and the page taken after the cursor.
async fn page(state: &ApiState, filter: &ListFilter) -> Result<BackendList, Error> {
    let after = filter
        .page
        .after
        .as_deref()
        .map(ListPosition::from_cursor)
        .transpose()?;
    let selector = filter.label_selector();
    let mut objects = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().labels(&selector).limit(LIST_CHUNK);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let chunk = state.slabs().list(&lp).await?;
        objects.extend(chunk.items.into_iter().filter(|o| selected(filter, o)));
        token = chunk.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    let position = |o: &SessionLivedBackend| ListPosition {
        created_at: created_at(o),
        id: o.name_any(),
    };
    objects.sort_by(|a, b| {
        let (a, b) = (position(a), position(b));
        (std::cmp::Reverse(a.created_at), a.id).cmp(&(std::cmp::Reverse(b.created_at), b.id))
    });
    let mut page = Page::new(&filter.page);
    let mut last = None;
    for o in &objects {
        let at = position(o);
        if after.as_ref().is_some_and(|a| !at.is_after(a)) {
            continue;
        }
        if page.is_full() {
            return Ok(BackendList {
                backends: page.items,
                next: last.as_ref().map(ListPosition::cursor),
            });
        }
        let record = state.record(o, false);
        let bytes = spawner_core::limits::spec_bytes(&record.spec);
        page.push(record, bytes);
        last = Some(at);
    }
    Ok(BackendList {
        backends: page.items,
        next: None,
    })
}

pub(crate) async fn get_one(state: &ApiState, id: &BackendId) -> Result<BackendRecord, Error> {
    let obj = fetch(state, id.as_str()).await?;
    Ok(state.record(&obj, true))
}

/// The last event of the status history.
pub(crate) async fn status(state: &ApiState, id: &BackendId) -> Result<Event, Error> {
    let obj = fetch(state, id.as_str()).await?;
    let mut events = events_of(&obj);
    Ok(events.pop().unwrap_or(Event {
        seq: 1,
        state: spawner_core::State::Submitted,
        time: created_at(&obj),
        reason: None,
        exit_code: None,
    }))
}

/// The state `/ready` answers by.
pub(crate) async fn current_state(
    state: &ApiState,
    id: &BackendId,
) -> Result<spawner_core::State, Error> {
    Ok(state_of(&fetch(state, id.as_str()).await?))
}

/// Wakes a Sleeping backend ahead of its user: `Waking` is written within this request
/// (the controller then creates its Pod again). An awake or starting backend keeps its
/// state; one that stops or has ended is `410 gone`. The state it is in from now on.
pub(crate) async fn wake(state: &ApiState, id: &BackendId) -> Result<spawner_core::State, Error> {
    let obj = fetch(state, id.as_str()).await?;
    let woken = crate::model::write::wake(
        &state.slabs(),
        id.as_str(),
        Some(obj),
        WOKEN_BY_API,
        now_millis(),
    )
    .await?;
    match woken {
        None => Err(ApiError::not_found(id.as_str()).into()),
        Some(s) if s >= spawner_core::State::Terminating => Err(ApiError::new(
            StatusCode::GONE,
            ErrorCode::Gone,
            format!("backend {id} is {s}: only a live backend can be woken; spawn a new one"),
        )
        .into()),
        Some(s) => Ok(s),
    }
}

/// The reasons of the `Waking` events, by who woke it.
pub(crate) const WOKEN_BY_API: &str = "woken by POST /v1/backends/{id}/wake";
pub(crate) const WOKEN_BY_KEY: &str = "woken by a spawn or claim of its key";

/// The key's backend as a keyed spawn or claim hands it back: woken if it sleeps (the
/// caller is about to send its user there).
pub(crate) async fn woken_for_key(
    state: &ApiState,
    found: SessionLivedBackend,
) -> Result<SessionLivedBackend, Error> {
    if state_of(&found) != spawner_core::State::Sleeping {
        return Ok(found);
    }
    let name = found.name_any();
    let slabs = state.slabs();
    crate::model::write::wake(
        &slabs,
        &name,
        Some(found.clone()),
        WOKEN_BY_KEY,
        now_millis(),
    )
    .await?;
    Ok(slabs.get_opt(&name).await?.unwrap_or(found))
}

/// Stops the backend: `Terminating` is written within this request (and the annotation the
/// controller acts on), so that status, `/ready`, keepalive and the routers say so from the
/// answer on; a no-op on a terminal backend. The state it is in from now on.
pub(crate) async fn terminate(
    state: &ApiState,
    id: &BackendId,
    hard: bool,
) -> Result<spawner_core::State, Error> {
    let obj = fetch(state, id.as_str()).await?;
    let current = state_of(&obj);
    if current.is_terminal() {
        return Ok(current);
    }
    let name = obj.name_any();
    Ok(crate::model::write::stop_now(
        &state.slabs(),
        &name,
        StopReason::Terminate,
        hard,
        now_millis,
    )
    .await?)
}

/// Whether `given` is the backend's own secret (the one of its Pod; the backend's own
/// `SPAWNER_KEEPALIVE_URL` is its sidecar's, which needs no API at all).
pub(crate) async fn keepalive_token_matches(
    state: &ApiState,
    id: &BackendId,
    given: &str,
) -> Result<bool, Error> {
    let pods: Api<Pod> = Api::namespaced(state.client.clone(), &state.config.namespace);
    let secret = pods
        .get_opt(id.as_str())
        .await?
        .as_ref()
        .and_then(crate::model::read::secret_of);
    Ok(secret.is_some_and(|t| spawner_api::auth::constant_time_eq(given.as_bytes(), t.as_bytes())))
}

/// Keeps a live backend from being swept until `until`, by recording `busyUntil` in its
/// status (the sweeper judges by it).
pub(crate) async fn keepalive(
    state: &ApiState,
    id: &BackendId,
    until: Millis,
) -> Result<(), Error> {
    // Conditional on the version read, so that a backend that began stopping meanwhile is
    // not written to; the sweeper's activity writes change the version too, so a conflict
    // is read again and retried.
    let mut written = false;
    for _ in 0..5 {
        let obj = fetch(state, id.as_str()).await?;
        let current = state_of(&obj);
        if current >= spawner_core::State::Terminating {
            return Err(respond::not_kept_alive(id.as_str(), current).into());
        }
        let patch = json!({
            "metadata": {"resourceVersion": obj.resource_version()},
            "status": {"busyUntil": spawner_core::time::rfc3339(until)},
        });
        match state
            .slabs()
            .patch_status(id.as_str(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                written = true;
                break;
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if !written {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Busy,
            "the backend kept changing while it was being kept alive; retry",
        )
        .into());
    }
    Ok(())
}

/// The application container's output, from the kubelet through the API server.
pub(crate) async fn logs(state: &ApiState, id: &BackendId, follow: bool) -> Result<Body, Error> {
    let obj = fetch(state, id.as_str()).await?;
    let container = obj.spec.template.containers.first().map(|c| c.name.clone());
    let pods: Api<Pod> = Api::namespaced(state.client.clone(), &state.config.namespace);
    let lp = LogParams {
        container,
        follow,
        ..LogParams::default()
    };
    if follow {
        let reader = pods.log_stream(&obj.name_any(), &lp).await?;
        let lines = futures_util::io::AsyncBufReadExt::lines(reader)
            .map_ok(|l| Bytes::from(format!("{l}\n")));
        Ok(Body::from_stream(lines))
    } else {
        Ok(Body::from(pods.logs(&obj.name_any(), &lp).await?))
    }
}

/// Replays the events after `after` (all for 0), then follows the object with a watch;
/// ends after a terminal state, or when the object is deleted.
pub(crate) async fn stream(
    state: &ApiState,
    id: &BackendId,
    after: u64,
) -> Result<BoxStream<'static, StatusItem>, Error> {
    let obj = fetch(state, id.as_str()).await?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(follow(state.slabs(), obj, after, tx));
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
}

/// Sends the object's events numbered above `after`, then waits for changes, until a
/// terminal state, the object's deletion, or the client leaving.
async fn follow(
    slabs: Api<SessionLivedBackend>,
    mut obj: SessionLivedBackend,
    mut after: u64,
    tx: mpsc::Sender<StatusItem>,
) {
    let name = obj.name_any();
    // The stop last announced as `expiring`, while it stays due.
    let mut announced: Option<Expiry> = None;
    loop {
        let since = after;
        for e in events_of(&obj).into_iter().filter(|e| e.seq > since) {
            after = e.seq;
            let terminal = e.state.is_terminal();
            if tx.send(StatusItem::Event(e)).await.is_err() || terminal {
                return;
            }
        }
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(290);
        let rv = obj.resource_version().unwrap_or_default();
        let watch = tokio::select! {
            _ = tx.closed() => return,
            w = slabs.watch(&wp, &rv) => w,
        };
        let mut watch = match watch {
            Ok(w) => w.boxed(),
            Err(e) => {
                warn!(error = %e, %name, "watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                match slabs.get_opt(&name).await {
                    Ok(Some(fresh)) => obj = fresh,
                    Ok(None) => return,
                    Err(_) => {}
                }
                continue;
            }
        };
        loop {
            let (due, look_at) = expiring(
                &Timing::of(&obj.backend_spec()),
                &observed(&obj),
                now_millis(),
            );
            match due {
                Some(e) if announced.is_none_or(|a| moved(a, e)) => {
                    announced = Some(e);
                    let note = Expiring::new(e.at, e.reason.as_str());
                    if tx.send(StatusItem::Expiring(note)).await.is_err() {
                        return;
                    }
                }
                Some(_) => {}
                None => announced = None,
            }
            // While a stop is due, look again each second: the sweeper's activity writes
            // (which the watch brings) may have moved an idle timeout.
            let wake = match (due, look_at) {
                (Some(_), _) => Some(now_millis().saturating_add(1000)),
                (None, at) => at,
            };
            let sleep = async {
                match wake {
                    Some(at) => {
                        let ms = u64::try_from(at.saturating_sub(now_millis())).unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                _ = tx.closed() => return,
                n = watch.next() => n,
                () = sleep => continue,
            };
            match next {
                Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                    obj = o;
                    break;
                }
                Some(Ok(WatchEvent::Deleted(_))) => return,
                Some(Ok(WatchEvent::Bookmark(b))) => {
                    obj.metadata.resource_version = Some(b.metadata.resource_version);
                }
                // The resourceVersion is too old (410 Gone) or the stream broke: read afresh.
                Some(Ok(WatchEvent::Error(_)) | Err(_)) => {
                    match slabs.get_opt(&name).await {
                        Ok(Some(fresh)) => obj = fresh,
                        Ok(None) => return,
                        Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                    break;
                }
                // The watch timed out with no change: watch again from the same version.
                None => break,
            }
        }
    }
}

/// What the lifecycle rules observe of a backend, from its object: the sweeper's record of
/// its connections and activity (at most about a second old), and its keepalive.
fn observed(obj: &SessionLivedBackend) -> Observed {
    let status = crate::model::read::status(obj);
    let created = created_at(obj);
    let since = status.entered_at().unwrap_or(created);
    let time = |t: &Option<String>| t.as_deref().and_then(millis_of).unwrap_or(since);
    Observed {
        state: state_of(obj),
        created_at: created,
        live_connections: status.live_connections.unwrap_or(0),
        last_activity: time(&status.last_activity),
        last_client_activity: time(&status.last_client_activity),
        busy_until: status.busy_until.as_deref().and_then(millis_of),
        since,
    }
}

/// An announced stop that is now due at another time (client activity moved an idle
/// timeout) or for another reason: announced again.
fn moved(announced: Expiry, now: Expiry) -> bool {
    announced.reason != now.reason || (now.at - announced.at).abs() >= 1000
}

/// Prometheus text: backends by state and open connections, from the objects' status; the
/// spawn-to-ready histogram and the sweeps as this process saw the objects
/// ([`crate::api::metrics`]).
async fn metrics(State(state): State<Arc<ApiState>>) -> Result<Response, Error> {
    let objects = state.slabs().list(&ListParams::default()).await?.items;
    let mut by_state: BTreeMap<&'static str, u64> = spawner_core::State::ALL
        .iter()
        .map(|s| (s.as_str(), 0))
        .collect();
    let mut live = 0u64;
    for obj in &objects {
        *by_state.entry(state_of(obj).as_str()).or_default() += 1;
        live += obj
            .status
            .as_ref()
            .and_then(|s| s.live_connections)
            .unwrap_or(0);
    }
    let mut text =
        String::from("# HELP spawner_backends Backends by state\n# TYPE spawner_backends gauge\n");
    for (name, n) in by_state {
        text.push_str(&format!("spawner_backends{{state=\"{name}\"}} {n}\n"));
    }
    text.push_str("# HELP spawner_live_connections Open connections through the sidecars, as the sweepers last saw them\n# TYPE spawner_live_connections gauge\n");
    text.push_str(&format!("spawner_live_connections {live}\n"));
    text.push_str(&state.lifecycle_stats.render(&objects));
    text.push_str(&crate::api::pools::render_metrics(&state).await?);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Serves the API on `listener` until the future `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
