//! The OpenAPI 3.1 document of the contract (`GET /v1/openapi.json`). Schemas come from
//! the Rust types the servers serialize; the operations below are declarations only (the
//! handlers live in spawner-server and spawner-k8s), one per route of docs/api.md.

use crate::bodies::{
    BackendList, KeepaliveRequest, KeepaliveResponse, TerminateRequest, TerminateResponse,
    WakeResponse,
};
use crate::error::{ErrorBody, ErrorCode};
use crate::login::{LoginLink, LoginRequest, LoginResponse};
use crate::seed::{SeedResponse, SeedSpawn};
use axum::routing::get;
use axum::{Json, Router};
use spawner_core::access::{
    Access, AccessGrant, AccessList, AccessMode, ConnectRequest, ConnectResponse,
};
use spawner_core::pool::{
    ClaimNotice, ClaimRequest, IfNoneReady, PoolDrained, PoolList, PoolSize, PoolSpec, PoolStatus,
    PoolTemplate,
};
use spawner_core::{
    BackendRecord, BackendSpec, Event, Executable, Expiring, IdleAction, PullPolicy, Resources,
    SpawnResponse, State,
};
use std::sync::OnceLock;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Spawner",
        description = "Session-lived backends: the HTTP API of `spawner serve` and of `spawner api` on Kubernetes (docs/api.md).",
        license(name = "Apache-2.0")
    ),
    paths(
        spawn, list, list_stream, get_one, terminate, wake, keepalive, logs, status, status_stream, ready,
        seed_spawn, seed_status, seed_status_stream, seed_ready, proxy, healthz, metrics,
        openapi_json, dashboard, login, login_links, create_pool, list_pools, get_pool, resize_pool, drain_pool,
        connect, access_list, revoke
    ),
    components(schemas(
        BackendSpec, Executable, PullPolicy, Resources, State, Event, SpawnResponse,
        BackendRecord, BackendList, TerminateRequest, TerminateResponse, WakeResponse, IdleAction, ErrorBody, ErrorCode,
        SeedSpawn, SeedResponse, SpawnBody, ClaimRequest, IfNoneReady, ClaimNotice, PoolSpec, PoolTemplate,
        PoolSize, PoolStatus, PoolList, PoolDrained,
        KeepaliveRequest, KeepaliveResponse, Expiring, LoginRequest, LoginResponse, LoginLink,
        Access, AccessMode, ConnectRequest, ConnectResponse, AccessList, AccessGrant
    )),
    modifiers(&Bearer),
    tags(
        (name = "control", description = "Needs `Authorization: Bearer <token>` when the server has a token."),
        (name = "pools", description = "Warm pools (both modes; on Kubernetes, SessionLivedBackendPool objects). Need `Authorization: Bearer <token>` when the server has a token."),
        (name = "status", description = "Open: the unguessable id is the capability."),
        (name = "seed", description = "The seed's routes, kept for its clients."),
        (name = "operations", description = "Health, metrics, this document, the dashboard and the proxy.")
    )
)]
struct Doc;

struct Bearer;

/// The body of `POST /v1/backends`: a spawn, or a claim of a warm pool (it has `pool`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum SpawnBody {
    Spawn(BackendSpec),
    Claim(ClaimRequest),
}

impl utoipa::Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// The document, built once.
pub fn document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_value(Doc::openapi()).unwrap_or_default())
}

/// `GET /v1/openapi.json`, for a router of any state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/v1/openapi.json", get(|| async { Json(document()) }))
}

#[utoipa::path(
    post, path = "/v1/backends", tag = "control", operation_id = "spawn",
    description = "Spawn a backend, or return the live one with the same `key` (get-or-create). \
        A body with `pool` is a claim (`ClaimRequest`): a Ready backend of the pool, answered Ready \
        (201), or the live backend with the claim's `key` (200).",
    request_body = SpawnBody,
    responses(
        (status = 201, description = "A new backend (a claim: a Ready backend of the pool)", body = SpawnResponse),
        (status = 200, description = "The live backend with this key", body = SpawnResponse),
        (status = 400, description = "`invalid_body` or `invalid_field`; the message names the field", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`host_not_allowed`: the `Host` is not one of the server's names; `cross_origin`: sent by another site's page (every route answers these)", body = ErrorBody),
        (status = 413, description = "`body_too_large`: the body is over 256 KiB (docs/api.md, \"Limits\")", body = ErrorBody),
        (status = 404, description = "`not_found`: a claim of a pool that does not exist", body = ErrorBody),
        (status = 405, description = "`method_not_allowed`: a method the route does not serve; `Allow` lists those it does (every route answers this)", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body not sent as `Content-Type: application/json` (every route)", body = ErrorBody),
        (status = 422, description = "`runtime_unavailable`: the spec needs a runtime this server lacks", body = ErrorBody),
        (status = 409, description = "`name_taken` (Kubernetes): the object name the key derives belongs to another key", body = ErrorBody),
        (status = 500, description = "`internal`; `forbidden` (Kubernetes): the API's service account may not do this", body = ErrorBody),
        (status = 501, description = "`access_not_configured` (Kubernetes): a token-mode spawn or claim without an access key", body = ErrorBody),
        (status = 502, description = "`kubernetes_unavailable` (Kubernetes): the Kubernetes API failed", body = ErrorBody),
        (status = 503, description = "`storage_full`: Spawner cannot write its data; nothing was started. `pool_exhausted`: a claim found no Ready backend within `wait_seconds`. `busy` (Kubernetes): another spawn or claim of the key held it too long; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn spawn() {}

#[utoipa::path(
    get, path = "/v1/backends", tag = "control", operation_id = "list",
    description = "Backends, newest first (on Kubernetes: by name), records without events, a page at a \
        time: `next` is the cursor of the next page (pass it as `after`), absent on the last. Filters combine.",
    params(
        ("state" = Option<State>, Query, description = "only backends in this state"),
        ("key" = Option<String>, Query, description = "only the backends of this key"),
        ("label" = Option<Vec<String>>, Query, description = "`name=value`, repeatable; all must match", explode = true),
        ("limit" = Option<u32>, Query, description = "records in the page, 1 to 1000; default 100 (a page also ends once its records hold about 4 MiB)", minimum = 1, maximum = 1000),
        ("after" = Option<String>, Query, description = "the `next` of the previous page: the page after it"),
    ),
    responses(
        (status = 200, description = "A page of the list", body = BackendList),
        (status = 400, description = "`invalid_query`: an unknown filter or state, a `limit` out of range, an `after` that is not this list's cursor", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn list() {}

#[utoipa::path(
    get, path = "/v1/backends/stream", tag = "control", operation_id = "list_stream",
    description = "Server-Sent Events of the list: first `event: snapshot` with `data:` a `BackendList` \
        (the list's first page as `GET /v1/backends` answers it, same filters and `limit`; its `next` \
        is read with `GET /v1/backends?after=`), then `event: backend` with `data:` a \
        `BackendRecord` (without events) each time a backend is created, changes state, or its live \
        connections or last activity change (at most about once a second each). The stream does not end; \
        a client that reconnects gets a fresh snapshot.",
    params(
        ("state" = Option<State>, Query, description = "only backends in this state"),
        ("key" = Option<String>, Query, description = "only the backends of this key"),
        ("label" = Option<Vec<String>>, Query, description = "`name=value`, repeatable", explode = true),
        ("limit" = Option<u32>, Query, description = "records in the snapshot, 1 to 1000; default 100", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn list_stream() {}

#[utoipa::path(
    get, path = "/v1/backends/{id}", tag = "control", operation_id = "get",
    params(("id" = String, Path, description = "the backend's id")),
    responses(
        (status = 200, description = "The record with its events", body = BackendRecord),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn get_one() {}

#[utoipa::path(
    post, path = "/v1/backends/{id}/connect", tag = "control", operation_id = "connect",
    description = "A connect URL for a user of a live token-mode backend: the backend's URL with a \
        short-lived signed token (`spawner_token=`), which the proxy exchanges for a cookie of the \
        backend's origin. The user holds access from now until revoked or the backend ends. A secret: \
        this answer is the only place it appears.",
    params(("id" = String, Path, description = "the backend's id")),
    request_body = ConnectRequest,
    responses(
        (status = 200, description = "The connect URL", body = ConnectResponse),
        (status = 400, description = "`invalid_body` or `invalid_field` (`user`, `user_data`, `ttl_seconds`)", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`open_access`: the backend is open (its URL admits whoever has it)", body = ErrorBody),
        (status = 410, description = "`gone`: the backend has ended or is stopping", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn connect() {}

#[utoipa::path(
    get, path = "/v1/backends/{id}/access", tag = "control", operation_id = "access",
    description = "The backend's access mode and who holds access (none once it has ended).",
    params(("id" = String, Path, description = "the backend's id")),
    responses(
        (status = 200, description = "Its mode and users", body = AccessList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn access_list() {}

#[utoipa::path(
    delete, path = "/v1/backends/{id}/access/{user}", tag = "control", operation_id = "revoke",
    description = "Revokes a user's access: their cookies and connect URLs stop working at once and \
        their open WebSockets through the proxy get a close frame 1008 (policy violation). A later \
        connect for the same user starts a new grant; old cookies stay dead.",
    params(
        ("id" = String, Path, description = "the backend's id"),
        ("user" = String, Path, description = "the user (percent-encoded)"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such backend, or the user holds no access", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn revoke() {}

#[utoipa::path(
    post, path = "/v1/backends/{id}/terminate", tag = "control", operation_id = "terminate",
    description = "Stop it: SIGTERM, then SIGKILL after the stop grace (`hard`: SIGKILL at once). A no-op on an ended backend.",
    params(("id" = String, Path, description = "the backend's id")),
    request_body(content = Option<TerminateRequest>, description = "optional"),
    responses(
        (status = 202, description = "The stop is carried out", body = TerminateResponse),
        (status = 400, description = "`invalid_body`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 413, description = "`body_too_large`: the body is over 256 KiB (docs/api.md, \"Limits\")", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn terminate() {}

#[utoipa::path(
    post, path = "/v1/backends/{id}/wake", tag = "control", operation_id = "wake",
    description = "Wake a Sleeping backend (`idle_action: \"sleep\"`) ahead of its user: it is started again from its spec (`Waking`, then `Ready`). A no-op on one that is awake or starting.",
    params(("id" = String, Path, description = "the backend's id")),
    responses(
        (status = 202, description = "The wake is under way (or it was awake)", body = WakeResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 410, description = "`gone`: it stops or has ended", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn wake() {}

#[utoipa::path(
    post, path = "/v1/backends/{id}/keepalive", tag = "control", operation_id = "keepalive",
    description = "Keep it from being swept (grace period and idle timeout) until `seconds` from now, \
        connections or not; the record shows `busy_until`. The lifetime limit and terminate still win. \
        Needs the control token, or the backend's own `?token=` (on the embedded server its \
        `SPAWNER_KEEPALIVE_URL` is this route with it; on Kubernetes it is the backend's sidecar's \
        `/_keepalive?token=`, which takes the same body).",
    params(
        ("id" = String, Path, description = "the backend's id"),
        ("token" = Option<String>, Query, description = "the backend's own keepalive token, instead of the control token"),
    ),
    request_body = KeepaliveRequest,
    responses(
        (status = 200, description = "Busy until `busy_until`", body = KeepaliveResponse),
        (status = 400, description = "`invalid_body` or `invalid_field` (`seconds` 1 to 86400)", body = ErrorBody),
        (status = 401, description = "`unauthorized`: neither the control token nor the backend's token", body = ErrorBody),
        (status = 413, description = "`body_too_large`: the body is over 256 KiB (docs/api.md, \"Limits\")", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 410, description = "`gone`: it is stopping or has ended", body = ErrorBody),
        (status = 503, description = "`busy` (Kubernetes): the object kept changing while it was written; retry", body = ErrorBody),
    ),
    security(("bearer" = []), ())
)]
#[allow(dead_code)]
fn keepalive() {}

#[utoipa::path(
    get, path = "/v1/backends/{id}/logs", tag = "control", operation_id = "logs",
    description = "The backend's stdout and stderr.",
    params(
        ("id" = String, Path, description = "the backend's id"),
        ("follow" = Option<bool>, Query, description = "stream what is written until the backend has ended; default false"),
    ),
    responses(
        (status = 200, description = "Its output", content_type = "text/plain", body = String),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn logs() {}

#[utoipa::path(
    get, path = "/v1/backends/{id}/status", tag = "status", operation_id = "status",
    params(("id" = String, Path, description = "the backend's id")),
    responses(
        (status = 200, description = "Its last event", body = Event),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn status() {}

#[utoipa::path(
    get, path = "/v1/backends/{id}/status/stream", tag = "status", operation_id = "status_stream",
    description = "Server-Sent Events: every past event, then new ones; `id:` is the event's sequence \
        number, `data:` an `Event`. Ends after a terminal state. Besides, `event: expiring` (no `id:`, \
        `data:` an `Expiring`) announces `lifetime_warning_seconds` ahead a lifetime limit or idle timeout \
        that is due.",
    params(
        ("id" = String, Path, description = "the backend's id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this event"),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_header`: a Last-Event-ID that is not a number", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn status_stream() {}

#[utoipa::path(
    get, path = "/v1/backends/{id}/ready", tag = "status", operation_id = "ready",
    params(("id" = String, Path, description = "the backend's id")),
    responses(
        (status = 302, description = "Ready: `Location` is its URL"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_ready`: still starting (`Retry-After: 1`)", body = ErrorBody),
        (status = 410, description = "`gone`: ended, or stopping", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn ready() {}

#[utoipa::path(
    post, path = "/spawn", tag = "seed", operation_id = "seed_spawn",
    request_body = SeedSpawn,
    responses(
        (status = 201, description = "A new backend", body = SeedResponse),
        (status = 400, description = "`invalid_body` or `invalid_field`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 413, description = "`body_too_large`: the body is over 256 KiB (docs/api.md, \"Limits\")", body = ErrorBody),
        (status = 422, description = "`runtime_unavailable`", body = ErrorBody),
        (status = 503, description = "`storage_full`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn seed_spawn() {}

#[utoipa::path(
    get, path = "/backend/{name}/status", tag = "seed", operation_id = "seed_status",
    params(("name" = String, Path, description = "the backend's id")),
    responses(
        (status = 200, description = "As /v1/backends/{id}/status", body = Event),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn seed_status() {}

#[utoipa::path(
    get, path = "/backend/{name}/status/stream", tag = "seed", operation_id = "seed_status_stream",
    params(
        ("name" = String, Path, description = "the backend's id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this event"),
    ),
    responses(
        (status = 200, description = "As /v1/backends/{id}/status/stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_header`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn seed_status_stream() {}

#[utoipa::path(
    get, path = "/backend/{name}/ready", tag = "seed", operation_id = "seed_ready",
    params(("name" = String, Path, description = "the backend's id")),
    responses(
        (status = 302, description = "Ready: `Location` is its URL"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_ready`", body = ErrorBody),
        (status = 410, description = "`gone`", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn seed_ready() {}

#[utoipa::path(
    get, path = "/p/{id}/{rest}", tag = "operations", operation_id = "proxy",
    description = "The backend itself (any method, WebSocket upgrades included), forwarded as `/{rest}` \
        (unchanged with `strip_prefix: false`); `/p/{id}` redirects (308) to `/p/{id}/`. Errors are one \
        line of plain text.",
    params(
        ("id" = String, Path, description = "the backend's id"),
        ("rest" = String, Path, description = "the path within the backend"),
    ),
    responses(
        (status = 200, description = "Whatever the backend answers"),
        (status = 404, description = "No such backend", content_type = "text/plain", body = String),
        (status = 410, description = "It has ended", content_type = "text/plain", body = String),
        (status = 502, description = "It does not answer", content_type = "text/plain", body = String),
        (status = 503, description = "Starting or stopping (`Retry-After: 1`)", content_type = "text/plain", body = String),
    )
)]
#[allow(dead_code)]
fn proxy() {}

#[utoipa::path(
    post, path = "/v1/login", tag = "operations", operation_id = "login",
    description = "Trades the code of a one-time login link (`{base}/#login={code}`, printed by `spawner serve` \
        and `spawner dashboard`) for the control token; the dashboard does this. A code works once, for 15 minutes.",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "The token", body = LoginResponse),
        (status = 400, description = "`invalid_body`", body = ErrorBody),
        (status = 401, description = "`invalid_login_code`: unknown, used or expired", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn login() {}

#[utoipa::path(
    post, path = "/v1/login-links", tag = "control", operation_id = "login_links",
    description = "A new one-time login link to the dashboard (`spawner dashboard`).",
    responses(
        (status = 200, description = "The link", body = LoginLink),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: the server has no token (`--no-token`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn login_links() {}

#[utoipa::path(
    get, path = "/healthz", tag = "operations", operation_id = "healthz",
    responses(
        (status = 200, description = "`ok`: the database answers", content_type = "text/plain", body = String),
        (status = 500, description = "`internal`", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn healthz() {}

#[utoipa::path(
    get, path = "/metrics", tag = "operations", operation_id = "metrics",
    description = "Needs the control token, as the control routes do (Prometheus: `authorization: {credentials_file: ...}`).",
    responses(
        (status = 200, description = "Prometheus text (docs/api.md lists the series)", content_type = "text/plain", body = String),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn metrics() {}

#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "operations", operation_id = "openapi",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object))
)]
#[allow(dead_code)]
fn openapi_json() {}

#[utoipa::path(
    get, path = "/", tag = "operations", operation_id = "dashboard",
    description = "The dashboard (HTML; its script and style are under /ui/).",
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
#[allow(dead_code)]
fn dashboard() {}

#[utoipa::path(
    post, path = "/v1/pools", tag = "pools", operation_id = "create_pool",
    description = "Create a warm pool: `min_ready` unclaimed backends of `template` are kept Ready, \
        never more than `max` backends of the pool in all (claimed ones included).",
    request_body = PoolSpec,
    responses(
        (status = 201, description = "The pool (its backends are starting)", body = PoolStatus),
        (status = 400, description = "`invalid_body` or `invalid_field`; the message names the field", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 413, description = "`body_too_large`: the body is over 256 KiB (docs/api.md, \"Limits\")", body = ErrorBody),
        (status = 409, description = "`pool_exists`", body = ErrorBody),
        (status = 422, description = "`runtime_unavailable`: the template needs a runtime this server lacks", body = ErrorBody),
        (status = 503, description = "`storage_full`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn create_pool() {}

#[utoipa::path(
    get, path = "/v1/pools", tag = "pools", operation_id = "list_pools",
    description = "The pools by name, a page at a time: `next` is the cursor of the next page (pass it as `after`).",
    params(
        ("limit" = Option<u32>, Query, description = "pools in the page, 1 to 1000; default 100", minimum = 1, maximum = 1000),
        ("after" = Option<String>, Query, description = "the `next` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of the pools, by name", body = PoolList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn list_pools() {}

#[utoipa::path(
    get, path = "/v1/pools/{name}", tag = "pools", operation_id = "get_pool",
    params(("name" = String, Path, description = "the pool's name")),
    responses(
        (status = 200, description = "The pool and its counts", body = PoolStatus),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn get_pool() {}

#[utoipa::path(
    put, path = "/v1/pools/{name}", tag = "pools", operation_id = "resize_pool",
    description = "New sizes. Over `max`, unclaimed backends are stopped (starting ones first); claimed ones never.",
    params(("name" = String, Path, description = "the pool's name")),
    request_body = PoolSize,
    responses(
        (status = 200, description = "The pool and its counts", body = PoolStatus),
        (status = 400, description = "`invalid_body` or `invalid_field`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 413, description = "`body_too_large`: the body is over 256 KiB (docs/api.md, \"Limits\")", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`storage_full`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn resize_pool() {}

#[utoipa::path(
    delete, path = "/v1/pools/{name}", tag = "pools", operation_id = "drain_pool",
    description = "Drain: the pool is removed and its unclaimed backends stopped; claimed ones run on.",
    params(("name" = String, Path, description = "the pool's name")),
    responses(
        (status = 202, description = "The pool is gone; its unclaimed backends are stopping", body = PoolDrained),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`storage_full`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn drain_pool() {}
