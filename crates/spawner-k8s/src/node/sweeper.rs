//! `spawner sweeper --node-name NODE`: one per node (a DaemonSet). It follows the
//! `/_events` stream of the sidecar of every backend on its node, marks a backend Ready
//! when its sidecar says the application listens, and marks it Swept once
//! [`spawner_core::lifecycle::decide`] says it has been idle for its grace period; the
//! controller then stops its Pod and deletes the object.
//!
//! The sweeper keeps no state of its own: what it needs is in the objects (their status
//! says where the sidecar is and what was already marked) and in the sidecars (their
//! monitors survive a sweeper restart). So a restarted sweeper lists the objects of its
//! node and carries on. Status patches carry the object's `resourceVersion`, as the
//! controller's do: a lost race is a conflict, answered by reading the object again.

use crate::model::crd::{SessionLivedBackend, LABEL_NODE};
use crate::model::read::{events_addr, millis_of};
use crate::model::status::SessionLivedBackendStatus;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::Value;
use spawner_core::lifecycle::{decide, Decision, Observed, StopReason};
use spawner_core::time::{now_millis, rfc3339, Millis};
use spawner_core::State;
use spawner_proxy::sidecar::{parse_report, Report, EVENTS_PATH};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The field manager of the sweeper's status patches.
pub const FIELD_MANAGER: &str = "spawner-sweeper";

/// A sidecar sends an event at least every second; this long without one means the
/// connection is dead even if TCP has not noticed.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The least time between two activity patches of one backend. The sidecar reports every
/// change at once and every second besides, so a change held back by this limit is written
/// with the next report: the API is at most about a second behind the sidecar.
const ACTIVITY_INTERVAL: Duration = Duration::from_millis(500);
/// A last activity moved by less than this is not worth a write on its own.
const ACTIVITY_RESOLUTION_MS: Millis = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("watching SessionLivedBackends: {0}")]
    Watch(#[from] watcher::Error),
    #[error("the SessionLivedBackend resource is not installed or not readable ({0}); apply deploy/kubernetes/crd.yaml first")]
    CrdMissing(#[source] kube::Error),
}

/// What the sweeper does about one report of a backend's sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The application listens: enter Ready.
    MarkReady,
    /// Idle for the whole grace period: enter Swept.
    MarkSwept,
    /// Nothing from its clients for `idleTimeoutSeconds`, connections or not: enter Swept
    /// (reason `idle timeout`).
    MarkIdleTimeout,
    /// Idle (for the reason given) with `idleAction: sleep`: enter Sleeping, where it would
    /// have been swept; the controller deletes its Pod and keeps the object.
    MarkSleeping(StopReason),
    /// Nothing to do.
    Keep,
}

/// Decides what one report means for `obj` at `now`. Pure.
///
/// Only idleness is the sweeper's to judge (it alone sees the connections); the lifetime
/// limit and the startup timeout are the controller's, so `decide`'s other verdicts are
/// left to it.
pub fn judge(obj: &SessionLivedBackend, report: &Report, now: Millis) -> Verdict {
    let status = crate::model::read::status(obj);
    let state = status.state.unwrap_or(State::Submitted);
    if state.is_terminal() || state == State::Terminating || !report.ready {
        return Verdict::Keep;
    }
    if state.is_starting() {
        // A first start, or a wake: the sidecar of the Pod the controller made for it.
        return Verdict::MarkReady;
    }
    if state == State::Sleeping {
        // No Pod to judge (a report can only be its old sidecar's, going away); its
        // max sleep and lifetime limit are the controller's.
        return Verdict::Keep;
    }
    let created_at = obj
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0.as_millisecond());
    // A pool member: never swept while unclaimed, its grace counted from its claim.
    let Some((timing, created_at)) = crate::model::pool_members::clock(obj, state, created_at)
    else {
        return Verdict::Keep;
    };
    let observed = Observed {
        state,
        created_at,
        live_connections: report.live_connections,
        last_activity: last_activity(&status, report, now).max(created_at),
        last_client_activity: last_client_activity(&status, report, now).max(created_at),
        busy_until: status.busy_until.as_deref().and_then(millis_of),
        since: status.entered_at().unwrap_or(created_at),
    };
    match decide(&timing, &observed, now) {
        Decision::Stop(StopReason::Idle) => Verdict::MarkSwept,
        Decision::Stop(StopReason::IdleTimeout) => Verdict::MarkIdleTimeout,
        Decision::Sleep(reason) => Verdict::MarkSleeping(reason),
        Decision::Stop(_) | Decision::Keep { .. } => Verdict::Keep,
    }
}

/// When the backend was last marked Ready, if it was: the first event of its latest spell
/// in Ready (a claim adds another, later, in the same state; a wake starts a new spell).
fn ready_at(status: &SessionLivedBackendStatus) -> Option<Millis> {
    let h = &status.history;
    (0..h.len())
        .rev()
        .find(|&i| h[i].state == State::Ready && (i == 0 || h[i - 1].state != State::Ready))
        .map(|i| h[i].to_event().time)
}

/// The last thing its clients sent, as the sidecar reports it, never before the backend
/// was marked Ready (as [`last_activity`]).
fn last_client_activity(
    status: &SessionLivedBackendStatus,
    report: &Report,
    now: Millis,
) -> Millis {
    // A sidecar older than the field: its activity clock is the closest it has.
    let seconds = report
        .seconds_since_client
        .unwrap_or(report.seconds_since_active);
    let ms = (seconds.max(0.0) * 1000.0) as Millis;
    let reported = now.saturating_sub(ms);
    ready_at(status).map_or(reported, |at| reported.max(at))
}

/// The backend's last activity: what the sidecar reports, but never before the backend
/// was marked Ready, so that a backend Ready only now (say, after a sweeper outage) gets
/// its whole grace period from the moment clients could be told to use it.
fn last_activity(status: &SessionLivedBackendStatus, report: &Report, now: Millis) -> Millis {
    // Milliseconds from a sidecar's float; saturating, as `as` casts are.
    let idle_ms = (report.seconds_since_active.max(0.0) * 1000.0) as Millis;
    let reported = now.saturating_sub(idle_ms);
    ready_at(status).map_or(reported, |at| reported.max(at))
}

/// The status patch that moves `obj` to `to` for `report`, or `None` if the lifecycle
/// does not allow it (the object moved on). Pure: its body is what the API server gets.
pub fn status_patch(
    obj: &SessionLivedBackend,
    to: State,
    report: &Report,
    now: Millis,
) -> Option<Value> {
    let why = (to == State::Swept).then_some(StopReason::Idle);
    entering(obj, to, why, report, now)
}

/// [`status_patch`] with the stop reason of a Swept backend (`idle`, `idle timeout`).
fn entering(
    obj: &SessionLivedBackend,
    to: State,
    why: Option<StopReason>,
    report: &Report,
    now: Millis,
) -> Option<Value> {
    let mut status = crate::model::read::status(obj);
    let activity = last_activity(&status, report, now);
    let client = last_client_activity(&status, report, now);
    let reason = why.map(|r| r.as_str().to_string());
    if !status.enter(to, now, reason.clone(), None) {
        return None;
    }
    if to == State::Sleeping {
        // Its Pod goes: nothing may reach (or follow) the old address; the controller
        // records the new Pod's when it wakes.
        status.ip = None;
        status.live_connections = Some(0);
    } else {
        if why.is_some() {
            status.stop_reason = reason;
        }
        status.live_connections = Some(report.live_connections);
    }
    status.last_activity = Some(rfc3339(activity.max(0)));
    status.last_client_activity = Some(rfc3339(client.max(0)));
    Some(crate::model::write::status_patch(obj, &status))
}

/// The status patch that brings a Ready backend's `liveConnections` and `lastActivity` up
/// to `report`, or `None` when they are current (the connection count as reported, the last
/// activity within [`ACTIVITY_RESOLUTION_MS`]). Pure. Only those two fields, and no
/// `resourceVersion`: they are the sweeper's alone, so it never conflicts with a state change.
pub fn activity_patch(obj: &SessionLivedBackend, report: &Report, now: Millis) -> Option<Value> {
    let status = obj.status.as_ref()?;
    if status.state != Some(State::Ready) || !report.ready {
        return None;
    }
    let activity = last_activity(status, report, now).max(0);
    let client = last_client_activity(status, report, now).max(0);
    let moved = |stored: Option<&String>, at: Millis| {
        stored
            .and_then(|t| millis_of(t))
            .is_none_or(|was| (at - was).abs() >= ACTIVITY_RESOLUTION_MS)
    };
    let activity_moved = moved(status.last_activity.as_ref(), activity);
    let client_moved = moved(status.last_client_activity.as_ref(), client);
    let live_changed = status.live_connections != Some(report.live_connections);
    if !live_changed && !activity_moved && !client_moved {
        return None;
    }
    Some(serde_json::json!({"status": {
        "liveConnections": report.live_connections,
        "lastActivity": rfc3339(activity),
        "lastClientActivity": rfc3339(client),
    }}))
}

/// The status patch that records the application's own keepalive (its sidecar's
/// `busy_until`) as `busyUntil`, or `None` when there is nothing new. `applied` is the
/// sidecar's value this follower last recorded: a new value from the sidecar is a new call,
/// which replaces the time whatever it was (as a keepalive through the API does). A follower
/// that starts (a restarted sweeper) records the sidecar's value only if it is later than
/// the object's, so that it does not undo a later call through the API. Pure.
pub fn busy_patch(
    obj: &SessionLivedBackend,
    report: &Report,
    applied: Option<Millis>,
) -> Option<Value> {
    let status = obj.status.as_ref()?;
    let sidecar = report.busy_until?;
    let stored = status.busy_until.as_deref().and_then(millis_of);
    let new = match applied {
        Some(a) => a != sidecar && stored != Some(sidecar),
        None => stored.is_none_or(|s| sidecar > s),
    };
    new.then(|| serde_json::json!({"status": {"busyUntil": rfc3339(sidecar)}}))
}

/// Whether there is nothing left to follow: the backend ended or is being stopped.
fn finished(obj: &SessionLivedBackend) -> bool {
    obj.metadata.deletion_timestamp.is_some()
        || obj
            .status
            .as_ref()
            .and_then(|s| s.state)
            .is_some_and(|s| s.is_terminal() || s == State::Terminating)
}

/// Reported for every judged event once its verdict was carried out (a failed write is
/// not reported: the next event is judged again), for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub name: String,
    pub report: Report,
    pub verdict: Verdict,
}

/// Follows one backend until it ends (or its object is gone: `updates` closed). `updates`
/// carries the object as the watch sees it; `judged`, if given, hears every verdict.
pub async fn follow(
    api: Api<SessionLivedBackend>,
    recorder: Recorder,
    mut updates: watch::Receiver<Arc<SessionLivedBackend>>,
    judged: Option<mpsc::UnboundedSender<Judged>>,
) {
    let mut current: Arc<SessionLivedBackend> = updates.borrow_and_update().clone();
    let name = current.name_any();
    let mut backoff = BACKOFF_START;
    let mut last_activity_write: Option<tokio::time::Instant> = None;
    // The sidecar's keepalive last recorded (see `busy_patch`).
    let mut busy_applied: Option<Millis> = None;
    loop {
        if finished(&current) {
            debug!(%name, "backend ended: no longer followed");
            return;
        }
        let Some(addr) = events_addr(&current) else {
            // Not scheduled with an IP yet: wait for the controller to record it.
            if updates.changed().await.is_err() {
                return;
            }
            current = updates.borrow_and_update().clone();
            continue;
        };
        let mut stream = match open_events(addr).await {
            Ok(s) => s,
            Err(e) => {
                // At warn: a sidecar the sweeper cannot reach is a backend it cannot sweep
                // (a NetworkPolicy or firewall between nodes and Pods, say).
                warn!(%name, %addr, error = %e, retry_in = ?backoff, "sidecar not reachable");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    changed = updates.changed() => {
                        if changed.is_err() { return; }
                        current = updates.borrow_and_update().clone();
                    }
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        debug!(%name, %addr, "following the sidecar");
        // Reset by events only: object updates must not keep a silent stream alive.
        let mut deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            tokio::select! {
                next = tokio::time::timeout_at(deadline, stream.next()) => {
                    let report = match next {
                        Ok(Ok(report)) => report,
                        Ok(Err(e)) => { debug!(%name, error = %e, "event stream ended"); break; }
                        Err(_) => { debug!(%name, "no event for {EVENT_TIMEOUT:?}: reconnecting"); break; }
                    };
                    backoff = BACKOFF_START;
                    deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
                    current = write_busy(&api, current, &report, &mut busy_applied).await;
                    current = act(&api, &recorder, current, &report, judged.as_ref()).await;
                    current = write_activity(&api, current, &report, &mut last_activity_write).await;
                    if finished(&current) {
                        break;
                    }
                }
                changed = updates.changed() => {
                    if changed.is_err() { return; }
                    let next = updates.borrow_and_update().clone();
                    let moved = events_addr(&next) != Some(addr);
                    current = next;
                    if moved || finished(&current) {
                        break;
                    }
                }
            }
        }
    }
}

/// Keeps the object's connection count and last activity current (what the API, `spawner
/// ls` and `/metrics` show), at most one write per [`ACTIVITY_INTERVAL`] and only on change.
async fn write_activity(
    api: &Api<SessionLivedBackend>,
    obj: Arc<SessionLivedBackend>,
    report: &Report,
    last_write: &mut Option<tokio::time::Instant>,
) -> Arc<SessionLivedBackend> {
    if last_write.is_some_and(|at| at.elapsed() < ACTIVITY_INTERVAL) {
        return obj;
    }
    let Some(patch) = activity_patch(&obj, report, now_millis()) else {
        return obj;
    };
    *last_write = Some(tokio::time::Instant::now());
    match merge_status(api, &obj.name_any(), &patch).await {
        Ok(updated) => {
            debug!(name = %obj.name_any(), live = report.live_connections, "activity written");
            Arc::new(updated)
        }
        Err(e) => {
            // The next report tries again.
            warn!(name = %obj.name_any(), error = %e, "writing the activity failed");
            obj
        }
    }
}

/// Merge-patches the status of the object `name` as the sweeper (its field manager).
async fn merge_status(
    api: &Api<SessionLivedBackend>,
    name: &str,
    patch: &serde_json::Value,
) -> kube::Result<SessionLivedBackend> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch_status(name, &params, &Patch::Merge(patch)).await
}

/// Records the application's own keepalive as the object's `busyUntil` before the report
/// is judged (see [`busy_patch`]); on failure the next report tries again.
async fn write_busy(
    api: &Api<SessionLivedBackend>,
    obj: Arc<SessionLivedBackend>,
    report: &Report,
    applied: &mut Option<Millis>,
) -> Arc<SessionLivedBackend> {
    let Some(patch) = busy_patch(&obj, report, *applied) else {
        if report.busy_until.is_some() {
            *applied = report.busy_until;
        }
        return obj;
    };
    match merge_status(api, &obj.name_any(), &patch).await {
        Ok(updated) => {
            info!(name = %obj.name_any(), busy_until = ?report.busy_until, "keepalive of the application recorded");
            *applied = report.busy_until;
            Arc::new(updated)
        }
        Err(e) => {
            warn!(name = %obj.name_any(), error = %e, "recording the keepalive failed");
            obj
        }
    }
}

/// Judges one report and carries the verdict out; returns the object as now known.
async fn act(
    api: &Api<SessionLivedBackend>,
    recorder: &Recorder,
    mut obj: Arc<SessionLivedBackend>,
    report: &Report,
    judged: Option<&mpsc::UnboundedSender<Judged>>,
) -> Arc<SessionLivedBackend> {
    let name = obj.name_any();
    // Twice at most: once more after a conflict, on the object read again.
    for _ in 0..2 {
        let now = now_millis();
        let verdict = judge(&obj, report, now);
        // Heard once carried out, so that a listener sees the write it announces.
        let heard = |obj: Arc<SessionLivedBackend>| {
            if let Some(tx) = judged {
                let _ = tx.send(Judged {
                    name: name.clone(),
                    report: report.clone(),
                    verdict,
                });
            }
            obj
        };
        let (to, why) = match verdict {
            Verdict::Keep => return heard(obj),
            Verdict::MarkReady => (State::Ready, None),
            Verdict::MarkSwept => (State::Swept, Some(StopReason::Idle)),
            Verdict::MarkIdleTimeout => (State::Swept, Some(StopReason::IdleTimeout)),
            Verdict::MarkSleeping(reason) => (State::Sleeping, Some(reason)),
        };
        let Some(patch) = entering(&obj, to, why, report, now) else {
            return heard(obj);
        };
        match merge_status(api, &name, &patch).await {
            Ok(updated) => {
                info!(%name, state = %to, live = report.live_connections, idle_s = report.seconds_since_active, "marked");
                let entered = updated.status.as_ref().and_then(|s| s.history.last());
                if let Some(entry) = entered.filter(|e| e.state == to) {
                    // Best effort, as Events are: the status already says it.
                    if let Err(e) =
                        crate::model::write::publish_state(recorder, &updated, entry).await
                    {
                        warn!(%name, error = %e, "publishing the Event failed");
                    }
                }
                return heard(Arc::new(updated));
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                debug!(%name, "conflict: reading the object again");
                match api.get_opt(&name).await {
                    Ok(Some(fresh)) => obj = Arc::new(fresh),
                    Ok(None) => return obj,
                    Err(e) => {
                        warn!(%name, error = %e, "reading the object failed");
                        return obj;
                    }
                }
            }
            Err(e) => {
                // The next event (within a second) tries again.
                warn!(%name, error = %e, "status patch failed");
                return obj;
            }
        }
    }
    obj
}

/// A sidecar's `/_events` response body, read event by event.
pub struct EventStream {
    body: Incoming,
    buf: Vec<u8>,
}

/// Why an event stream could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("connecting: {0}")]
    Connect(#[from] std::io::Error),
    #[error("connecting: timed out")]
    ConnectTimeout,
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("the sidecar answered {0}")]
    Status(StatusCode),
    #[error("the stream ended")]
    Ended,
    #[error("a malformed event: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Opens `http://{addr}/_events`: an IP and port, so no DNS lookup.
pub async fn open_events(addr: SocketAddr) -> Result<EventStream, StreamError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| StreamError::ConnectTimeout)??;
    let _ = tcp.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "event stream connection ended");
        }
    });
    let req = Request::get(EVENTS_PATH)
        .header(header::HOST, addr.to_string())
        .header(header::ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    if resp.status() != StatusCode::OK {
        return Err(StreamError::Status(resp.status()));
    }
    Ok(EventStream {
        body: resp.into_body(),
        buf: Vec::new(),
    })
}

impl EventStream {
    /// The next report. SSE: events end with a blank line; the report is the `data:` line.
    pub async fn next(&mut self) -> Result<Report, StreamError> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event);
                if let Some(data) = text.lines().find_map(|l| l.strip_prefix("data:")) {
                    return Ok(parse_report(data.trim_start())?);
                }
                continue;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(StreamError::Ended),
            }
        }
    }
}

/// The sweeper's settings.
#[derive(Debug, Clone)]
pub struct SweeperConfig {
    /// Follow the backends whose object has `spawner.dev/node={node_name}`.
    pub node_name: String,
    /// One namespace, or all of them.
    pub namespace: Option<String>,
}

struct Followed {
    updates: watch::Sender<Arc<SessionLivedBackend>>,
    task: JoinHandle<()>,
}

/// Runs the sweeper until `shutdown` resolves: watches the objects of its node and keeps
/// one follower per live backend.
pub async fn run(
    client: Client,
    config: SweeperConfig,
    judged: Option<mpsc::UnboundedSender<Judged>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let api: Api<SessionLivedBackend> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    api.list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(Error::CrdMissing)?;
    let selector = format!("{LABEL_NODE}={}", config.node_name);
    let stream =
        watcher::watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
    tokio::pin!(stream);
    tokio::pin!(shutdown);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: Some(config.node_name.clone()),
        },
    );
    let mut followed: HashMap<(String, String), Followed> = HashMap::new();
    // Objects seen since the watch (re)started its initial list.
    let mut listing: Option<HashSet<(String, String)>> = None;
    info!(node = %config.node_name, "sweeper started");
    loop {
        let event = tokio::select! {
            () = &mut shutdown => break,
            event = stream.next() => match event {
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    warn!(error = %e, "watch failed; retrying with backoff");
                    continue;
                }
                None => break,
            },
        };
        followed.retain(|_, f| !f.task.is_finished());
        match event {
            Event::Init => listing = Some(HashSet::new()),
            Event::InitApply(obj) | Event::Apply(obj) => {
                if let Some(seen) = listing.as_mut() {
                    seen.insert(key_of(&obj));
                }
                apply(
                    &client,
                    &recorder,
                    &config,
                    &mut followed,
                    obj,
                    judged.clone(),
                );
            }
            Event::InitDone => {
                // Objects deleted while the watch was down never get a Delete event.
                if let Some(seen) = listing.take() {
                    followed.retain(|k, f| {
                        let keep = seen.contains(k);
                        if !keep {
                            f.task.abort();
                        }
                        keep
                    });
                }
            }
            Event::Delete(obj) => {
                if let Some(f) = followed.remove(&key_of(&obj)) {
                    f.task.abort();
                }
            }
        }
    }
    for (_, f) in followed {
        f.task.abort();
    }
    info!("sweeper stopped");
    Ok(())
}

fn key_of(obj: &SessionLivedBackend) -> (String, String) {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Hands a changed object to its follower, starting one for a backend new to this node.
fn apply(
    client: &Client,
    recorder: &Recorder,
    config: &SweeperConfig,
    followed: &mut HashMap<(String, String), Followed>,
    obj: SessionLivedBackend,
    judged: Option<mpsc::UnboundedSender<Judged>>,
) {
    let key = key_of(&obj);
    // The label selector already says so; a relabelled object must not linger.
    if obj.labels().get(LABEL_NODE) != Some(&config.node_name) {
        if let Some(f) = followed.remove(&key) {
            f.task.abort();
        }
        return;
    }
    let obj = Arc::new(obj);
    if let Some(f) = followed.get(&key) {
        // An ended backend's follower stops by itself on this update, after finishing
        // what it is doing (aborting it could cut it off between its write and its report).
        f.updates.send_replace(obj);
        return;
    }
    if finished(&obj) {
        return;
    }
    info!(namespace = %key.0, name = %key.1, "following");
    let api = Api::namespaced(client.clone(), &key.0);
    let (updates, rx) = watch::channel(obj);
    let task = tokio::spawn(follow(api, recorder.clone(), rx, judged));
    followed.insert(key, Followed { updates, task });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::crd::tests::object;
    use serde_json::json;

    const T0: Millis = 1_700_000_000_000;

    fn report(ready: bool, live: u64, idle_s: f64) -> Report {
        Report {
            ready,
            live_connections: live,
            seconds_since_active: idle_s,
            requests: 0,
            seconds_since_client: Some(idle_s),
            busy_until: None,
        }
    }

    /// An object created at T0 with grace 300 s, in `states` (entered one second apart).
    fn with(states: &[State]) -> SessionLivedBackend {
        let mut obj = object("b1");
        obj.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_millisecond(T0).expect("time"),
            ));
        obj.metadata.resource_version = Some("7".into());
        let mut st = SessionLivedBackendStatus::default();
        for (i, s) in states.iter().enumerate() {
            st.enter(*s, T0 + 1_000 * i as Millis, None, None);
        }
        st.ip = Some("10.0.0.9".into());
        st.port = Some(9090);
        obj.status = Some(st);
        obj
    }

    #[test]
    fn ready_once_the_sidecar_says_so() {
        let obj = with(&[State::Submitted, State::Scheduled, State::Running]);
        assert_eq!(judge(&obj, &report(false, 0, 0.0), T0), Verdict::Keep);
        assert_eq!(judge(&obj, &report(true, 0, 0.0), T0), Verdict::MarkReady);
    }

    #[test]
    fn a_sleeper_is_marked_sleeping_where_it_would_be_swept_and_ready_again_when_woken() {
        let mut obj = with(&[State::Submitted, State::Ready]);
        obj.spec.idle_action = Some("sleep".into());
        let now = T0 + 400_000;
        assert_eq!(judge(&obj, &report(true, 0, 299.9), now), Verdict::Keep);
        let verdict = judge(&obj, &report(true, 0, 300.0), now);
        assert_eq!(verdict, Verdict::MarkSleeping(StopReason::Idle));
        let patch = entering(
            &obj,
            State::Sleeping,
            Some(StopReason::Idle),
            &report(true, 0, 300.0),
            now,
        )
        .expect("a patch");
        assert_eq!(patch["status"]["state"], "Sleeping");
        assert_eq!(patch["status"]["reason"], "idle");
        assert_eq!(patch["status"]["ip"], Value::Null, "the old address goes");
        assert!(
            patch["status"].get("stopReason").is_none(),
            "a sleep is no stop: {patch}"
        );
        // Asleep: reports (of the old sidecar) judge nothing.
        let asleep = with(&[State::Submitted, State::Ready, State::Sleeping]);
        assert_eq!(judge(&asleep, &report(true, 0, 1e6), now), Verdict::Keep);
        // Waking: its new sidecar's first ready report makes it Ready, and its grace runs
        // from then, not from its first Ready.
        let mut waking = with(&[
            State::Submitted,
            State::Ready,
            State::Sleeping,
            State::Waking,
        ]);
        waking.spec.idle_action = Some("sleep".into());
        assert_eq!(
            judge(&waking, &report(true, 0, 0.0), now),
            Verdict::MarkReady
        );
        let mut st = waking.status.clone().expect("status");
        st.enter(State::Ready, now, None, None);
        waking.status = Some(st);
        assert_eq!(
            judge(&waking, &report(true, 0, 1e6), now + 299_000),
            Verdict::Keep
        );
    }

    #[test]
    fn swept_after_the_grace_period_never_with_a_connection() {
        // Ready at T0 + 1 s; grace 300 s.
        let obj = with(&[State::Submitted, State::Ready]);
        let now = T0 + 400_000;
        assert_eq!(judge(&obj, &report(true, 0, 299.9), now), Verdict::Keep);
        assert_eq!(
            judge(&obj, &report(true, 0, 300.0), now),
            Verdict::MarkSwept
        );
        assert_eq!(judge(&obj, &report(true, 1, 10_000.0), now), Verdict::Keep);
    }

    #[test]
    fn the_grace_period_counts_from_ready_at_the_earliest() {
        // The sidecar has been idle for an hour, but the backend was marked Ready only
        // 10 s ago (the sweeper was down): it keeps its grace period.
        let obj = with(&[State::Submitted, State::Ready]);
        let now = T0 + 1_000 + 10_000;
        assert_eq!(judge(&obj, &report(true, 0, 3_600.0), now), Verdict::Keep);
        assert_eq!(
            judge(&obj, &report(true, 0, 3_600.0), T0 + 1_000 + 300_000),
            Verdict::MarkSwept
        );
    }

    #[test]
    fn stopping_and_ended_backends_are_left_alone() {
        for end in [State::Terminating, State::Swept, State::Failed] {
            let obj = with(&[State::Submitted, State::Ready, end]);
            assert_eq!(
                judge(&obj, &report(true, 0, 1e9), T0 + 1_000_000_000),
                Verdict::Keep
            );
            assert!(finished(&obj));
        }
    }

    #[test]
    fn patches_carry_the_whole_status_and_the_resource_version() {
        let obj = with(&[State::Submitted, State::Running]);
        let patch = status_patch(&obj, State::Ready, &report(true, 0, 0.25), T0 + 5_000)
            .expect("Ready is allowed");
        assert_eq!(patch["metadata"], json!({"resourceVersion": "7"}));
        let st = &patch["status"];
        assert_eq!(st["state"], "Ready");
        assert_eq!(st["ready"], true);
        assert_eq!(st["running"], true);
        assert_eq!(st["liveConnections"], 0);
        assert_eq!(st["lastActivity"], "2023-11-14T22:13:24.750Z");
        assert_eq!(
            st["history"][2],
            json!({"seq": 3, "state": "Ready", "time": "2023-11-14T22:13:25.000Z"})
        );
        assert_eq!(st["ip"], "10.0.0.9");

        let swept = with(&[State::Submitted, State::Ready]);
        let patch = status_patch(&swept, State::Swept, &report(true, 0, 400.0), T0 + 500_000)
            .expect("Swept is allowed");
        let st = &patch["status"];
        assert_eq!(
            (st["state"].as_str(), st["swept"].as_bool()),
            (Some("Swept"), Some(true))
        );
        assert_eq!(st["reason"], "idle");
        assert_eq!(st["stopReason"], "idle");
        assert_eq!(st["history"][2]["reason"], "idle");

        let ended = with(&[State::Submitted, State::Failed]);
        assert!(status_patch(&ended, State::Ready, &report(true, 0, 0.0), T0).is_none());
    }

    #[test]
    fn activity_is_written_on_change_only() {
        // Ready at T0 + 1 s, recorded with no connection and activity at T0 + 1 s.
        let mut obj = with(&[State::Submitted, State::Ready]);
        if let Some(st) = obj.status.as_mut() {
            st.live_connections = Some(0);
            st.last_activity = Some(rfc3339(T0 + 1_000));
            st.last_client_activity = Some(rfc3339(T0 + 1_000));
        }
        let now = T0 + 5_000;
        // Idle since then: nothing to write.
        assert_eq!(activity_patch(&obj, &report(true, 0, 4.0), now), None);
        // A connection opened half a second ago.
        assert_eq!(
            activity_patch(&obj, &report(true, 1, 0.5), now),
            Some(
                json!({"status": {"liveConnections": 1, "lastActivity": rfc3339(T0 + 4_500), "lastClientActivity": rfc3339(T0 + 4_500)}})
            )
        );
        // A request a moment ago, no connection left open: the activity alone moved.
        assert!(activity_patch(&obj, &report(true, 0, 0.1), now).is_some());
        // Not Ready yet, or stopping: the state patches carry it.
        let running = with(&[State::Submitted, State::Running]);
        assert_eq!(activity_patch(&running, &report(true, 3, 0.0), now), None);
    }

    #[test]
    fn busy_outlives_the_grace_period_until_busy_until() {
        // Ready at T0 + 1 s; grace 300 s; busy until T0 + 1000 s.
        let mut obj = with(&[State::Submitted, State::Ready]);
        if let Some(st) = obj.status.as_mut() {
            st.busy_until = Some(rfc3339(T0 + 1_000_000));
        }
        let idle = |now: Millis| report(true, 0, ((now - T0 - 1_000) / 1000) as f64);
        assert_eq!(
            judge(&obj, &idle(T0 + 400_000), T0 + 400_000),
            Verdict::Keep
        );
        assert_eq!(
            judge(&obj, &idle(T0 + 1_000_000), T0 + 1_000_000),
            Verdict::MarkSwept
        );
    }

    #[test]
    fn a_silent_connection_is_swept_after_the_idle_timeout() {
        let mut obj = with(&[State::Submitted, State::Ready]);
        obj.spec.idle_timeout_seconds = Some(60);
        // One WebSocket open, traffic from the backend (activity 1 s ago) but nothing from
        // the client for 59 s, then 60 s.
        let silent = |client_s: f64| Report {
            seconds_since_client: Some(client_s),
            ..report(true, 1, 1.0)
        };
        let now = T0 + 100_000;
        assert_eq!(judge(&obj, &silent(59.0), now), Verdict::Keep);
        assert_eq!(judge(&obj, &silent(60.0), now), Verdict::MarkIdleTimeout);
        let patch = entering(
            &obj,
            State::Swept,
            Some(StopReason::IdleTimeout),
            &silent(60.0),
            now,
        )
        .expect("Swept is allowed");
        assert_eq!(patch["status"]["stopReason"], "idle timeout");
        assert_eq!(patch["status"]["lastClientActivity"], rfc3339(now - 60_000));
        // Without the field, the open connection keeps it.
        obj.spec.idle_timeout_seconds = None;
        assert_eq!(judge(&obj, &silent(1e6), now), Verdict::Keep);
    }

    #[test]
    fn the_applications_keepalive_is_recorded_once_per_call() {
        let mut obj = with(&[State::Submitted, State::Ready]);
        let busy = |at: Millis| Report {
            busy_until: Some(at),
            ..report(true, 0, 1.0)
        };
        assert_eq!(busy_patch(&obj, &report(true, 0, 1.0), None), None);
        assert_eq!(
            busy_patch(&obj, &busy(T0 + 50_000), None),
            Some(json!({"status": {"busyUntil": rfc3339(T0 + 50_000)}}))
        );
        if let Some(st) = obj.status.as_mut() {
            st.busy_until = Some(rfc3339(T0 + 50_000));
        }
        // Recorded: nothing more until the sidecar has a new one, which replaces it even
        // when sooner.
        assert_eq!(
            busy_patch(&obj, &busy(T0 + 50_000), Some(T0 + 50_000)),
            None
        );
        assert!(busy_patch(&obj, &busy(T0 + 20_000), Some(T0 + 50_000)).is_some());
        // A later call through the API is not undone by the sidecar's older value.
        if let Some(st) = obj.status.as_mut() {
            st.busy_until = Some(rfc3339(T0 + 90_000));
        }
        assert_eq!(
            busy_patch(&obj, &busy(T0 + 50_000), Some(T0 + 50_000)),
            None
        );
        assert_eq!(busy_patch(&obj, &busy(T0 + 50_000), None), None);
    }

    #[test]
    fn events_address_needs_ip_and_port() {
        let mut obj = with(&[State::Submitted, State::Scheduled]);
        assert_eq!(
            events_addr(&obj),
            Some("10.0.0.9:9090".parse().expect("addr"))
        );
        if let Some(st) = obj.status.as_mut() {
            st.ip = Some("fd00::5".into());
        }
        assert_eq!(
            events_addr(&obj),
            Some("[fd00::5]:9090".parse().expect("addr"))
        );
        if let Some(st) = obj.status.as_mut() {
            st.ip = None;
        }
        assert_eq!(events_addr(&obj), None);
    }
}
