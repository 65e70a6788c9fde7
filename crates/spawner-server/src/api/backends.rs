//! The control routes: spawn (or get-or-create by key), list, get, terminate.

use super::ApiError;
use crate::app::App;
use crate::live::{Live, StopRequest};
use crate::store::{Inserted, Position, Row};
use axum::http::StatusCode;
use spawner_api::bodies::BackendList;
use spawner_api::page::{ListPosition, Page};
use spawner_api::parse::ListFilter;
use spawner_api::ErrorCode;
use spawner_api::{SpawnRoute, Spawned};
use spawner_core::access::{Access, AccessMode, ConnectAsk};
use spawner_core::lifecycle::StopReason;
use spawner_core::time::Millis;
use spawner_core::BackendId;
use spawner_core::{BackendRecord, BackendSpec, SpawnResponse};
use std::sync::Arc;

/// `POST /v1/backends` (or the seed's `/spawn`, whose backends are open).
pub(super) async fn spawn(
    app: &Arc<App>,
    mut spec: BackendSpec,
    route: SpawnRoute,
) -> Result<Spawned, ApiError> {
    let ask = match route {
        SpawnRoute::V1 => resolve_access(app, &mut spec)?,
        SpawnRoute::Seed => None,
    };
    let (status, resp) = create(app, spec).await?;
    let response = with_connect(app, resp, ask.as_ref()).await?;
    Ok(Spawned {
        created: status == StatusCode::CREATED,
        response,
    })
}

/// The spec's access with the server's default applied, and the connect URL it asks for:
/// the spec keeps the mode alone (a token-mode one, or an open one asked for by name).
pub(super) fn resolve_access(
    app: &App,
    spec: &mut BackendSpec,
) -> Result<Option<ConnectAsk>, ApiError> {
    let (mode, ask) = Access::resolve(spec.access.as_ref(), app.config.access)?;
    spec.access =
        (spec.access.is_some() || mode == AccessMode::Token).then(|| Access::stored(mode));
    Ok(ask)
}

/// Validates, records and launches a backend; with a key, returns the live one if any.
/// Recording and launching run in a task of their own, so that a client that goes away
/// meanwhile cannot leave a backend recorded and not launched.
pub(super) async fn create(
    app: &Arc<App>,
    spec: BackendSpec,
) -> Result<(StatusCode, SpawnResponse), ApiError> {
    spec.validate()?;
    let runtime = app.runtimes.for_spec(&spec).map_err(|why| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RuntimeUnavailable,
            why,
        )
    })?;
    let id = spawner_core::BackendId::generate().map_err(ApiError::internal)?;
    let runtime_name = runtime.name();
    let app = app.clone();
    tokio::spawn(async move { record_and_launch(&app, id, spec, runtime_name).await })
        .await
        .map_err(ApiError::internal)?
}

async fn record_and_launch(
    app: &Arc<App>,
    id: spawner_core::BackendId,
    spec: BackendSpec,
    runtime_name: &'static str,
) -> Result<(StatusCode, SpawnResponse), ApiError> {
    match app
        .store
        .insert(id.as_str(), &spec, runtime_name)
        .await
        .map_err(super::store_error)?
    {
        Inserted::Existing(row) => {
            // A sleeping one is woken for its key's user.
            let state = match app.registry.get(&row.id) {
                Some(live) => wake_live(app, &live).await,
                None => row.state,
            };
            Ok((
                StatusCode::OK,
                spawn_response(app, &row.id, row.key.clone(), state),
            ))
        }
        Inserted::New(row) => {
            let live = Arc::new(Live::new(
                row.id.clone(),
                row.spec,
                row.created_at,
                runtime_name,
                row.state,
                1,
            ));
            app.registry.insert(live.clone());
            crate::reconciler::launch(app, live);
            Ok((
                StatusCode::CREATED,
                spawn_response(app, &row.id, row.key, row.state),
            ))
        }
    }
}

pub(super) fn spawn_response(
    app: &App,
    id: &str,
    key: Option<String>,
    state: spawner_core::State,
) -> SpawnResponse {
    SpawnResponse {
        id: id.to_string(),
        key,
        state,
        url: app.urls.backend(id),
        ready_url: app.urls.api(id, "ready"),
        status_url: app.urls.api(id, "status"),
        status_stream_url: app.urls.api(id, "status/stream"),
        connect_url: None,
        connect_expires_at: None,
    }
}

/// `resp` with a connect URL for `ask` when the backend is token-mode (a get-or-create that
/// found an open backend answers without one: its URL admits).
pub(super) async fn with_connect(
    app: &App,
    mut resp: SpawnResponse,
    ask: Option<&ConnectAsk>,
) -> Result<SpawnResponse, ApiError> {
    let (Some(ask), Some(live)) = (ask, app.registry.get(&resp.id)) else {
        return Ok(resp);
    };
    if live.access(&app.access_key).is_none() {
        return Ok(resp);
    }
    let connect = crate::access::mint(app, &live, ask).await?;
    resp.connect_url = Some(connect.connect_url);
    resp.connect_expires_at = Some(connect.expires_at);
    Ok(resp)
}

pub(super) fn record(app: &App, row: Row, with_events: bool) -> Result<BackendRecord, ApiError> {
    let live = app.registry.get(&row.id);
    let events = if with_events {
        // A `Ready` shown and not committed yet, read before the store (it is in one or the
        // other).
        let shown = live
            .as_ref()
            .map(|l| l.unstored_after(0))
            .unwrap_or_default();
        let mut events = app.store.events(&row.id, 0).map_err(ApiError::internal)?;
        let stored = events.last().map_or(0, |e| e.seq);
        events.extend(shown.into_iter().filter(|e| e.seq > stored));
        events
    } else {
        Vec::new()
    };
    Ok(BackendRecord {
        url: app.urls.backend(&row.id),
        state: live.as_ref().map_or(row.state, |l| l.state()),
        reason: live.as_ref().map_or(row.reason, |l| l.reason()),
        live_connections: live.as_ref().map_or(0, |l| l.monitor.live()),
        last_activity: live.as_ref().map(|l| l.monitor.last_activity()),
        busy_until: live.as_ref().and_then(|l| l.busy_until()),
        last_client_activity: live.as_ref().map(|l| l.monitor.last_client_activity()),
        node: Some("local".to_string()),
        address: row.address,
        runtime: Some(row.runtime),
        exit_code: row.exit_code,
        created_at: row.created_at,
        pool: row.pool,
        claimed_at: row.claimed_at,
        events,
        id: row.id,
        key: row.key,
        spec: row.spec,
    })
}

/// One page of the list: the backends the filter selects after its cursor, newest first,
/// records without events. A live backend is selected by its state in memory: `Ready` is
/// shown before it is committed (`App::ready`), so the stored state may be the one before.
pub(super) fn page(app: &App, filter: &ListFilter) -> Result<BackendList, ApiError> {
    let mut after = filter
        .page
        .after
        .as_deref()
        .map(cursor_position)
        .transpose()?;
    let mut page = Page::new(&filter.page);
    let mut last = None;
    // A backend shown Ready may still be stored Running: those are read too, and told
    // apart by their state in memory.
    use spawner_core::State::{Ready, Running};
    let states = filter.state.map(|s| (s, (s == Ready).then_some(Running)));
    loop {
        // One more than the page takes: a full page then knows whether another follows.
        let batch = page.room().clamp(16, spawner_api::page::MAX_LIMIT) + 1;
        let rows = app
            .store
            .list_page(states, filter.key.as_deref(), after.as_ref(), batch)
            .map_err(super::store_error)?;
        let exhausted = rows.len() < batch;
        for row in rows {
            let position = row.position();
            after = Some(position.clone());
            let state = app.registry.get(&row.id).map_or(row.state, |l| l.state());
            if filter.state.is_some_and(|s| s != state) || !filter.labels_match(&row.spec.labels) {
                continue;
            }
            if page.is_full() {
                return Ok(BackendList {
                    backends: page.items,
                    next: last.as_ref().map(cursor_of),
                });
            }
            let bytes = spawner_core::limits::spec_bytes(&row.spec);
            page.push(record(app, row, false)?, bytes);
            last = Some(position);
        }
        if exhausted {
            return Ok(BackendList {
                backends: page.items,
                next: None,
            });
        }
    }
}

/// The cursor of a page that ends at `position` (the same in both modes).
fn cursor_of(position: &Position) -> String {
    ListPosition {
        created_at: position.created_at,
        id: position.id.clone(),
    }
    .cursor()
}

fn cursor_position(cursor: &str) -> Result<Position, ApiError> {
    let p = ListPosition::from_cursor(cursor)?;
    Ok(Position {
        created_at: p.created_at,
        id: p.id,
    })
}

pub(super) fn get(app: &App, id: &BackendId) -> Result<BackendRecord, ApiError> {
    let row = app
        .store
        .get(id.as_str())
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(id.as_str()))?;
    record(app, row, true)
}

/// The record of a live backend, from memory alone (what list streams send on every change).
pub(super) fn live_record(app: &App, live: &Live) -> BackendRecord {
    // A pooled backend claimed since it started has its claim's spec.
    let spec = app
        .pools
        .claimed_spec(&live.id)
        .map_or_else(|| live.spec.clone(), |s| (*s).clone());
    let (pool, claimed_at) = app.pools.membership(&live.id).unzip();
    BackendRecord {
        id: live.id.clone(),
        key: spec.key.clone(),
        state: live.state(),
        reason: live.reason(),
        url: app.urls.backend(&live.id),
        spec,
        created_at: live.created_at,
        events: Vec::new(),
        exit_code: None,
        live_connections: live.monitor.live(),
        last_activity: Some(live.monitor.last_activity()),
        busy_until: live.busy_until(),
        last_client_activity: Some(live.monitor.last_client_activity()),
        node: Some("local".to_string()),
        address: live.authority().map(|a| a.to_string()),
        runtime: Some(live.runtime.to_string()),
        pool,
        claimed_at: claimed_at.flatten(),
    }
}

/// How long a terminate's answer waits for the supervisor to enter Terminating (it does at
/// once unless the store cannot take the write).
const STOP_ENTERED_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Wakes a Sleeping backend ahead of its user: the state it is in from now on (`Waking`;
/// one awake or starting keeps its state); `410` once it stops or has ended.
pub(super) async fn wake(app: &Arc<App>, id: &BackendId) -> Result<spawner_core::State, ApiError> {
    let row = app
        .store
        .get(id.as_str())
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(id.as_str()))?;
    let state = match app.registry.get(id.as_str()) {
        Some(live) if live.stop_asked().is_some() => spawner_core::State::Terminating,
        Some(live) => wake_live(app, &live).await,
        None => row.state,
    };
    if state.is_terminal() || state == spawner_core::State::Terminating {
        return Err(ApiError::new(
            StatusCode::GONE,
            ErrorCode::Gone,
            format!("backend {id} is {state}: it will not wake again; spawn a new one"),
        ));
    }
    Ok(state)
}

/// Wakes `live` if it sleeps (and no stop is asked for); the state it is in once its
/// supervisor has taken the wake (at once), or its state if it does not sleep.
pub(super) async fn wake_live(app: &Arc<App>, live: &Arc<Live>) -> spawner_core::State {
    use spawner_core::State::Sleeping;
    if live.state() != Sleeping || live.stop_asked().is_some() {
        return live.state();
    }
    // Followed before asking, so that the Waking recorded is not missed.
    let mut events = live.events();
    crate::reconciler::wake(app, live);
    let entered = async {
        while live.state() == Sleeping {
            events.changed().await;
        }
    };
    if tokio::time::timeout(STOP_ENTERED_WAIT, entered)
        .await
        .is_err()
    {
        tracing::warn!(backend = %live.id, "Waking not entered yet; answering anyway");
    }
    live.state()
}

/// Stops the backend; the state it is in from now on.
pub(super) async fn terminate(
    app: &Arc<App>,
    id: &BackendId,
    hard: bool,
) -> Result<spawner_core::State, ApiError> {
    let row = app
        .store
        .get(id.as_str())
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(id.as_str()))?;
    // In a task of its own: a client that goes away cannot leave a stop recorded and not
    // carried out.
    let stopping = app.clone();
    let key = id.as_str().to_string();
    let before = tokio::spawn(async move {
        let app = stopping;
        if !row.state.is_terminal() {
            // Durably first: a backend whose runtime is unavailable now is stopped when
            // Spawner next supervises it. A store that cannot take the write (a full disk)
            // does not keep a running backend from being stopped: its end is recorded once
            // it can be.
            if let Err(e) = app
                .store
                .set_stop(&key, StopReason::Terminate.as_str(), hard)
                .await
            {
                tracing::warn!(backend = %key, error = %e, "could not record a terminate; carrying it out");
            }
        }
        match app.registry.get(&key) {
            Some(live) => {
                // Followed before asking, so that the supervisor's Terminating is not missed.
                let mut events = live.events();
                crate::reconciler::stop(
                    &app,
                    &live,
                    StopRequest {
                        reason: StopReason::Terminate,
                        hard,
                    },
                );
                // The answer waits for the supervisor to enter Terminating (it does at once),
                // so that from it on, status, `/ready`, keepalive and the proxy say so.
                let entered = async {
                    while live.state() < spawner_core::State::Terminating {
                        events.changed().await;
                    }
                };
                if tokio::time::timeout(STOP_ENTERED_WAIT, entered).await.is_err() {
                    tracing::warn!(backend = %live.id, "Terminating not entered yet; answering anyway");
                }
                live.state()
            }
            None => row.state,
        }
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(spawner_api::bodies::TerminateResponse::new(id.as_str(), before, hard).state)
}

/// Whether `given` is the backend's own keepalive secret (from its `SPAWNER_KEEPALIVE_URL`).
pub(super) fn keepalive_token_matches(
    app: &App,
    id: &BackendId,
    given: &str,
) -> Result<bool, ApiError> {
    // An ended backend's token is in the store: it is told it has ended (410).
    let token = match app
        .registry
        .get(id.as_str())
        .as_ref()
        .and_then(|l| l.keepalive_token().map(str::to_string))
    {
        Some(t) => Some(t),
        None => app
            .store
            .keepalive(id.as_str())
            .map_err(ApiError::internal)?
            .map(|k| k.token),
    };
    Ok(token.is_some_and(|t| spawner_api::auth::constant_time_eq(given.as_bytes(), t.as_bytes())))
}

/// Keeps a live backend from being swept until `until`. Recorded durably first, so that a
/// restart keeps it.
pub(super) async fn keepalive(app: &App, id: &BackendId, until: Millis) -> Result<(), ApiError> {
    let live = app.registry.get(id.as_str());
    let Some(live) = live.filter(|l| l.state() < spawner_core::State::Terminating) else {
        return match app.store.get(id.as_str()).map_err(ApiError::internal)? {
            None => Err(ApiError::not_found(id.as_str())),
            Some(row) => Err(spawner_api::respond::not_kept_alive(
                id.as_str(),
                app.registry
                    .get(id.as_str())
                    .map_or(row.state, |l| l.state()),
            )),
        };
    };
    // A backend not started yet has no keepalive row: made now, with its token.
    let fresh = spawner_core::BackendId::generate()
        .map_or_else(|_| String::new(), |t| t.as_str().to_string());
    app.store
        .keepalive_token(&live.id, fresh)
        .await
        .map_err(super::store_error)?;
    app.store
        .set_busy_until(&live.id, until)
        .await
        .map_err(super::store_error)?;
    live.set_busy_until(until);
    app.registry.changed();
    Ok(())
}
