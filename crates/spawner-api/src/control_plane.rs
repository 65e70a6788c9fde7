//! The contract written once: what a control plane does ([`ControlPlane`], implemented by
//! the embedded server and by `spawner api` on Kubernetes) and the routes over it
//! ([`router`]): paths, bodies, the order of the checks, the answers' shapes and status
//! codes. A difference between the modes can only come from what a plane answers, never
//! from a route written twice (issue 27: two copies drifted in about 20 places).

use crate::bodies::{
    BackendList, KeepaliveRequest, KeepaliveResponse, TerminateRequest, TerminateResponse,
    WakeResponse,
};
use crate::login::LoginCodes;
use crate::page::PageRequest;
use crate::parse::{self, ListFilter};
use crate::seed::SeedSpawn;
use crate::{ApiError, BearerToken, ErrorCode, Guard};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as Extract};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use spawner_core::access::{AccessList, ConnectAsk, ConnectRequest, ConnectResponse};
use spawner_core::pool::{ClaimRequest, PoolDrained, PoolList, PoolSize, PoolSpec, PoolStatus};
use spawner_core::time::Millis;
use spawner_core::{BackendId, BackendRecord, BackendSpec, Event, Expiring, SpawnResponse, State};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// What a spawn or a claim gave: a new backend (`201`) or the live one of its key (`200`).
#[derive(Debug)]
pub struct Spawned {
    pub created: bool,
    pub response: SpawnResponse,
}

/// Where a spawn came from: the seed's `/spawn` makes open backends whatever the server's
/// default access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnRoute {
    V1,
    Seed,
}

/// The list stream's source: a snapshot, then changed records.
pub struct ListWatch {
    pub snapshot: BackendList,
    pub changes: BoxStream<'static, BackendRecord>,
}

/// One item of a status stream: one of the backend's events, or an `expiring` notice.
#[derive(Debug, Clone)]
pub enum StatusItem {
    Event(Event),
    Expiring(Expiring),
}

/// The operations of the contract, as a control plane carries them out. Inputs are parsed
/// and checked for shape by the router; rules that need the plane's state (a key's live
/// backend, a pool's existence, a backend's state) are the plane's.
#[async_trait::async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Creates a backend for `spec` (not yet validated: the plane validates, after applying
    /// its defaults), or returns the live one of its key.
    async fn spawn(&self, spec: BackendSpec, route: SpawnRoute) -> Result<Spawned, ApiError>;
    /// Claims a Ready backend of a warm pool (`POST /v1/backends` with `"pool"`).
    async fn claim(&self, req: ClaimRequest) -> Result<Spawned, ApiError>;
    /// The record with its events.
    async fn get(&self, id: &BackendId) -> Result<BackendRecord, ApiError>;
    /// One page of the list, newest first, records without events.
    async fn list(&self, filter: &ListFilter) -> Result<BackendList, ApiError>;
    /// The list's first page, and the records of backends that change from then on (no
    /// change falls between the two): the list stream sends those `filter` selects.
    async fn watch_list(&self, filter: &ListFilter) -> Result<ListWatch, ApiError>;
    /// Stops the backend; returns the state it is in from this moment: `Terminating`, or
    /// the terminal state of one that had ended.
    async fn terminate(&self, id: &BackendId, hard: bool) -> Result<State, ApiError>;
    /// Wakes a Sleeping backend ahead of its user; returns the state it is in from this
    /// moment (`Waking`; a backend that is awake or starting keeps its state), `410 gone`
    /// for one that stops or has ended.
    async fn wake(&self, id: &BackendId) -> Result<State, ApiError>;
    /// Whether `token` is the backend's own keepalive secret.
    async fn keepalive_token_matches(&self, id: &BackendId, token: &str) -> Result<bool, ApiError>;
    /// Keeps a live backend from being swept until `until`; `410 gone` once it stops.
    async fn keepalive(&self, id: &BackendId, until: Millis) -> Result<(), ApiError>;
    /// The backend's stdout and stderr, whole or followed until it has ended.
    async fn logs(&self, id: &BackendId, follow: bool) -> Result<Body, ApiError>;
    /// The last event.
    async fn status(&self, id: &BackendId) -> Result<Event, ApiError>;
    /// The state `/ready` answers by.
    async fn state(&self, id: &BackendId) -> Result<State, ApiError>;
    /// The events numbered above `after`, then new ones and `expiring` notices; ends after
    /// a terminal state.
    async fn status_stream(
        &self,
        id: &BackendId,
        after: u64,
    ) -> Result<BoxStream<'static, StatusItem>, ApiError>;
    async fn connect(&self, id: &BackendId, ask: ConnectAsk) -> Result<ConnectResponse, ApiError>;
    async fn access_list(&self, id: &BackendId) -> Result<AccessList, ApiError>;
    /// `Ok(false)`: the user holds no access to the backend.
    async fn revoke(&self, id: &BackendId, user: &str) -> Result<bool, ApiError>;
    /// `spec` is validated.
    async fn create_pool(&self, spec: PoolSpec) -> Result<PoolStatus, ApiError>;
    async fn list_pools(&self, page: &PageRequest) -> Result<PoolList, ApiError>;
    async fn get_pool(&self, name: &str) -> Result<PoolStatus, ApiError>;
    /// `size` is validated.
    async fn resize_pool(&self, name: &str, size: PoolSize) -> Result<PoolStatus, ApiError>;
    async fn drain_pool(&self, name: &str) -> Result<PoolDrained, ApiError>;
    /// Whether the plane's store answers (`/healthz`).
    async fn healthy(&self) -> Result<(), ApiError>;
    /// This API's public base URL, without a trailing slash (the seed's answers).
    fn api_base(&self) -> String;
    /// The backend's own URL.
    fn backend_url(&self, id: &str) -> String;
}

/// What a mode mounts besides the contract: its token, login links, browser guard, and
/// routes of its own (`/metrics`: control; others: open).
pub struct Mount {
    pub token: Option<String>,
    pub login: Option<Arc<LoginCodes>>,
    pub guard: Guard,
    /// Behind the control token (as `/metrics`).
    pub control: Router,
}

type Plane = Arc<dyn ControlPlane>;

/// Every route of docs/api.md but the proxy's, over `plane`.
pub fn router(plane: Plane, mount: Mount) -> Router {
    let control = Router::new()
        .route("/v1/backends", post(spawn).get(list))
        .route("/v1/backends/stream", get(list_stream))
        .route("/v1/backends/{id}", get(get_one))
        .route("/v1/backends/{id}/terminate", post(terminate))
        .route("/v1/backends/{id}/wake", post(wake))
        .route("/v1/backends/{id}/logs", get(logs))
        .route("/v1/backends/{id}/connect", post(connect))
        .route("/v1/backends/{id}/access", get(access_list))
        .route("/v1/backends/{id}/access/{user}", delete(revoke))
        .route("/v1/pools", post(create_pool).get(list_pools))
        .route(
            "/v1/pools/{name}",
            get(get_pool).put(resize_pool).delete(drain_pool),
        )
        .route("/spawn", post(seed_spawn))
        .with_state(plane.clone())
        .merge(mount.control)
        .merge(crate::login::control_routes(mount.login.clone()))
        // Inside the token's check: a body is read only for a client that may send one.
        .route_layer(middleware::from_fn(crate::body_limit::limit_body))
        .route_layer(middleware::from_fn_with_state(
            BearerToken::new(mount.token.as_deref()),
            crate::require_token,
        ));
    let open = Router::new()
        .route("/v1/backends/{id}/status", get(status))
        .route("/v1/backends/{id}/status/stream", get(status_stream))
        .route("/v1/backends/{id}/ready", get(ready))
        .route("/backend/{id}/status", get(status))
        .route("/backend/{id}/status/stream", get(status_stream))
        .route("/backend/{id}/ready", get(ready))
        .route("/healthz", get(healthz))
        // The control token, or the backend's own token: checked by the handler.
        .route(
            "/v1/backends/{id}/keepalive",
            post(keepalive).route_layer(middleware::from_fn(crate::body_limit::limit_body)),
        )
        .with_state(OpenState {
            plane,
            token: BearerToken::new(mount.token.as_deref()),
        })
        .merge(crate::login::open_routes(mount.login))
        .merge(crate::public_routes());
    mount.guard.layer(
        control
            .merge(open)
            .fallback(|| async { ApiError::no_route() })
            .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() }),
    )
}

/// The open routes' state: the plane, and the control token a keepalive may carry instead
/// of the backend's own.
#[derive(Clone)]
struct OpenState {
    plane: Plane,
    token: BearerToken,
}

impl axum::extract::FromRef<OpenState> for Plane {
    fn from_ref(s: &OpenState) -> Plane {
        s.plane.clone()
    }
}

fn spawned(s: Spawned) -> Response {
    let code = if s.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (code, Json(s.response)).into_response()
}

async fn spawn(Extract(plane): Extract<Plane>, body: Bytes) -> Result<Response, ApiError> {
    if parse::names_pool(&body) {
        let req: ClaimRequest = parse::json(&body)?;
        req.validate()?;
        return Ok(spawned(plane.claim(req).await?));
    }
    let spec: BackendSpec = parse::json(&body)?;
    Ok(spawned(plane.spawn(spec, SpawnRoute::V1).await?))
}

async fn seed_spawn(Extract(plane): Extract<Plane>, body: Bytes) -> Result<Response, ApiError> {
    let request: SeedSpawn = parse::json(&body)?;
    let s = plane.spawn(request.into_spec(), SpawnRoute::Seed).await?;
    let code = if s.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let base = plane.api_base();
    let answer = crate::seed::response(&base, &s.response.id, &s.response.url);
    Ok((code, Json(answer)).into_response())
}

async fn list(
    Extract(plane): Extract<Plane>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<BackendList>, ApiError> {
    let filter = ListFilter::from_query(params)?;
    Ok(Json(plane.list(&filter).await?))
}

/// The list stream (`GET /v1/backends/stream`): the list's first page once (`snapshot`),
/// then each record the filter selects whenever it changes (`backend`).
async fn list_stream(
    Extract(plane): Extract<Plane>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let filter = ListFilter::from_query(params)?;
    let ListWatch { snapshot, changes } = plane.watch_list(&filter).await?;
    let first = futures_util::stream::once(async move { json_event("snapshot", &snapshot) });
    let rest = changes
        .filter(move |rec| std::future::ready(selects(&filter, rec)))
        .map(|rec| json_event("backend", &rec));
    Ok(Sse::new(first.chain(rest).map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Whether the list's filter selects a record (its page aside).
pub fn selects(filter: &ListFilter, rec: &BackendRecord) -> bool {
    filter.state.is_none_or(|s| s == rec.state)
        && filter
            .key
            .as_deref()
            .is_none_or(|k| rec.key.as_deref() == Some(k))
        && filter.labels_match(&rec.spec.labels)
}

fn json_event(name: &str, body: &impl serde::Serialize) -> SseEvent {
    SseEvent::default()
        .event(name)
        .data(serde_json::to_string(body).unwrap_or_default())
}

async fn get_one(
    Extract(plane): Extract<Plane>,
    Path(id): Path<String>,
) -> Result<Json<BackendRecord>, ApiError> {
    let id = parse::id(&id)?;
    Ok(Json(plane.get(&id).await?))
}

async fn terminate(
    Extract(plane): Extract<Plane>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = parse::id(&id)?;
    let body: TerminateRequest = parse::json_or_default(&body)?;
    let state = plane.terminate(&id, body.hard).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TerminateResponse::new(id.as_str(), state, body.hard)),
    )
        .into_response())
}

async fn wake(
    Extract(plane): Extract<Plane>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse::id(&id)?;
    let state = plane.wake(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(WakeResponse {
            id: id.as_str().to_string(),
            state,
        }),
    )
        .into_response())
}

/// `POST /v1/backends/{id}/keepalive`: with the control token, or the backend's own token
/// (`?token=`, from its `SPAWNER_KEEPALIVE_URL`); who asks is checked before the body is.
async fn keepalive(
    Extract(state): Extract<OpenState>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = parse::id(&id)?;
    let given = query.iter().find(|(k, _)| k == "token").map(|(_, v)| v);
    let allowed = match given {
        Some(given) => state.plane.keepalive_token_matches(&id, given).await?,
        None => state.token.allows(&headers),
    };
    if !allowed {
        return Err(crate::auth::keepalive_refused());
    }
    let req: KeepaliveRequest = parse::json(&body)?;
    req.validate()?;
    let until = req.until(spawner_core::time::now_millis());
    state.plane.keepalive(&id, until).await?;
    Ok(Json(KeepaliveResponse {
        id: id.as_str().to_string(),
        busy_until: until,
    })
    .into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
}

async fn logs(
    Extract(plane): Extract<Plane>,
    Path(id): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("{e}; the only parameter is follow=true|false"),
        )
    })?;
    let id = parse::id(&id)?;
    let body = plane.logs(&id, query.follow).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

async fn status(
    Extract(plane): Extract<Plane>,
    Path(id): Path<String>,
) -> Result<Json<Event>, ApiError> {
    let id = parse::id(&id)?;
    Ok(Json(plane.status(&id).await?))
}

async fn ready(
    Extract(plane): Extract<Plane>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse::id(&id)?;
    let state = plane.state(&id).await?;
    Ok(crate::respond::ready(
        id.as_str(),
        state,
        &plane.backend_url(id.as_str()),
    ))
}

async fn status_stream(
    Extract(plane): Extract<Plane>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse::id(&id)?;
    let after = parse::last_event_id(&headers)?;
    let items = plane.status_stream(&id, after).await?;
    let events = items.map(|item| {
        Ok::<_, Infallible>(match item {
            StatusItem::Event(e) => crate::respond::sse_event(&e),
            StatusItem::Expiring(e) => crate::respond::sse_expiring(&e),
        })
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

async fn connect(
    Extract(plane): Extract<Plane>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ConnectResponse>, ApiError> {
    let id = parse::id(&id)?;
    let req: ConnectRequest = parse::json(&body)?;
    let ask = req.ask()?;
    Ok(Json(plane.connect(&id, ask).await?))
}

async fn access_list(
    Extract(plane): Extract<Plane>,
    Path(id): Path<String>,
) -> Result<Json<AccessList>, ApiError> {
    let id = parse::id(&id)?;
    Ok(Json(plane.access_list(&id).await?))
}

async fn revoke(
    Extract(plane): Extract<Plane>,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = parse::id(&id)?;
    if plane.revoke(&id, &user).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("user {user:?} holds no access to backend {id}: GET /v1/backends/{id}/access lists who does"),
        ))
    }
}

/// The answer for a pool name that names no pool (malformed names included).
pub fn no_pool(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no pool named {name:?}; create it with POST /v1/pools"),
    )
}

/// The answer to a pool create whose name is taken.
pub fn pool_exists(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::PoolExists,
        format!(
            "a pool named {name:?} exists: resize it with PUT /v1/pools/{name}, or drain it with DELETE first"
        ),
    )
}

async fn create_pool(Extract(plane): Extract<Plane>, body: Bytes) -> Result<Response, ApiError> {
    let spec: PoolSpec = parse::json(&body)?;
    spec.validate()?;
    let status = plane.create_pool(spec).await?;
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

async fn list_pools(
    Extract(plane): Extract<Plane>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<PoolList>, ApiError> {
    let page = PageRequest::from_query(params)?;
    // The cursor is the last name of the page before.
    if let Some(after) = &page.after {
        spawner_core::pool::validate_name(after).map_err(|_| crate::page::bad_cursor())?;
    }
    Ok(Json(plane.list_pools(&page).await?))
}

fn pool_name(name: &str) -> Result<(), ApiError> {
    spawner_core::pool::validate_name(name).map_err(|_| no_pool(name))
}

async fn get_pool(
    Extract(plane): Extract<Plane>,
    Path(name): Path<String>,
) -> Result<Json<PoolStatus>, ApiError> {
    pool_name(&name)?;
    Ok(Json(plane.get_pool(&name).await?))
}

async fn resize_pool(
    Extract(plane): Extract<Plane>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<PoolStatus>, ApiError> {
    pool_name(&name)?;
    let size: PoolSize = parse::json(&body)?;
    size.validate()?;
    Ok(Json(plane.resize_pool(&name, size).await?))
}

async fn drain_pool(
    Extract(plane): Extract<Plane>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    pool_name(&name)?;
    let drained = plane.drain_pool(&name).await?;
    Ok((StatusCode::ACCEPTED, Json(drained)).into_response())
}

async fn healthz(Extract(plane): Extract<Plane>) -> Result<&'static str, ApiError> {
    plane.healthy().await?;
    Ok("ok\n")
}
