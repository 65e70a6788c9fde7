//! The controller's decisions, pure: [`plan`] takes a backend's object and what the
//! controller saw of its Pod and Service, and says what to do; `reconcile` (the folder's
//! `mod.rs`) carries the plan out. Unit-tested without an API server.

use super::ControllerConfig;
use crate::controller::pod::{build_pod, build_service, PodConfig, SIDECAR_CONTAINER};
use crate::model::crd::{SessionLivedBackend, ANNOTATION_STOP, ANNOTATION_STOP_HARD, LABEL_NODE};
use crate::model::status::SessionLivedBackendStatus;
use k8s_openapi::api::core::v1::{ContainerStatus, PersistentVolumeClaim, Pod, Service};
use kube::ResourceExt;
use spawner_core::lifecycle::{decide, outcome, Decision, Exit, Observed, StopReason};
use spawner_core::time::Millis;
use spawner_core::State;
use std::time::Duration;

/// What a reconcile saw of the world besides the object itself.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub pod: Option<&'a Pod>,
    pub service: Option<&'a Service>,
    pub now: Millis,
}

/// One step of a reconcile, in the order they are to be carried out.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A sleeping backend's volume (`--sleep-volume-size`), before its first Pod.
    CreateClaim(Box<PersistentVolumeClaim>),
    CreatePod(Box<Pod>),
    CreateService(Box<Service>),
    /// Replace the status with this one; its new history entries become Events.
    PatchStatus(Box<SessionLivedBackendStatus>),
    /// Label the object with its node, for the node's sweeper.
    LabelNode(String),
    DeletePod {
        grace_seconds: i64,
    },
    /// Delete an ended backend's Service: nothing reaches an ended backend, and deleting
    /// it here is one request, where the garbage collector's would be several.
    DeleteService,
    /// Delete the object; owner references make the garbage collector remove Pod and Service.
    DeleteObject,
}

/// The outcome of [`plan`]: the actions, and when to look again at the latest.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub requeue_after: Duration,
}

/// How long to wait for something only time will change (a Pod being deleted, a Pod of a
/// previous object of the same name being garbage-collected).
pub(super) const SHORT_WAIT: Duration = Duration::from_secs(2);

/// What the application container is doing, as the Pod's status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AppState {
    NotStarted,
    Running,
    /// With the container's termination message (its log's tail, with
    /// `terminationMessagePolicy: FallbackToLogsOnError`), if any.
    Exited(Exit, Option<String>),
    /// It can never start or be reached: the image cannot be pulled, the container cannot
    /// be created, or the sidecar in front of it is gone (restart policy Never).
    Unstartable(String),
}

/// Waiting reasons that mean the container will not start without someone changing the
/// spec or the registry: failing now beats waiting out the startup timeout.
pub(super) const UNSTARTABLE: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The application's state, or why the Pod cannot serve although the application runs.
pub(super) fn pod_state(pod: &Pod, app_name: &str) -> AppState {
    let app = app_state(pod, app_name);
    if matches!(app, AppState::Running | AppState::NotStarted) {
        let sidecar_exit = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|all| all.iter().find(|c| c.name == SIDECAR_CONTAINER))
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code);
        if let Some(code) = sidecar_exit {
            return AppState::Unstartable(format!(
                "the sidecar exited with code {code}: the backend cannot be reached"
            ));
        }
    }
    app
}

pub(super) fn app_state(pod: &Pod, app_name: &str) -> AppState {
    let status = pod.status.as_ref();
    let cs: Option<&ContainerStatus> = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == app_name));
    let Some(state) = cs.and_then(|c| c.state.as_ref()) else {
        // No container status: a Pod the kubelet rejected or evicted fails as a whole.
        if status.and_then(|s| s.phase.as_deref()) == Some("Failed") {
            let why = status
                .and_then(|s| s.reason.clone().or_else(|| s.message.clone()))
                .unwrap_or_else(|| "unknown".to_string());
            return AppState::Unstartable(format!("pod failed: {why}"));
        }
        return AppState::NotStarted;
    };
    if let Some(t) = &state.terminated {
        let exit = if t.reason.as_deref() == Some("OOMKilled") {
            Exit::OutOfMemory(Some(t.exit_code))
        } else {
            Exit::Code(t.exit_code)
        };
        let message = t
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(last_chars);
        return AppState::Exited(exit, message);
    }
    if state.running.is_some() {
        return AppState::Running;
    }
    if let Some(w) = &state.waiting {
        let reason = w.reason.as_deref().unwrap_or_default();
        if UNSTARTABLE.contains(&reason) {
            let what = if reason.starts_with("Create") {
                "container cannot be created"
            } else {
                "image cannot be pulled"
            };
            return AppState::Unstartable(match &w.message {
                Some(m) => format!("{what}: {reason}: {m}"),
                None => format!("{what}: {reason}"),
            });
        }
    }
    AppState::NotStarted
}

/// The end of a termination message, which is where a crash says why.
pub(super) fn last_chars(message: &str) -> String {
    const MAX: usize = 1_000;
    let skip = message.chars().count().saturating_sub(MAX);
    let tail: String = message.chars().skip(skip).collect();
    if skip > 0 {
        format!("...{tail}")
    } else {
        tail
    }
}

pub(super) fn millis_of(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Millis {
    t.0.as_millisecond()
}

pub(super) fn parse_rfc3339(s: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Whether `child` is controlled by `obj` (and not by an earlier object of the same name).
pub(super) fn owned_by(child: &kube::core::ObjectMeta, obj: &SessionLivedBackend) -> bool {
    child
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(&r.uid) == obj.metadata.uid.as_ref())
}

/// Decides what to do with `obj`, given its Pod and Service as just read. Pure.
/// Why the object cannot run, if it cannot: its own rules, and what this controller's Pods
/// need (the application and the sidecar share the Pod's network, so not one port).
pub(super) fn invalid(obj: &SessionLivedBackend, pod: &PodConfig) -> Option<String> {
    if let Err(e) = obj.validate() {
        return Some(e.to_string());
    }
    let port = obj.http_port();
    (port == pod.sidecar_port).then(|| {
        format!("spec.httpPort: {port} is the port of the sidecar beside the application; choose another")
    })
}

/// The children a start makes, a first one or a wake's: the volume claim when the backend
/// keeps files across sleeps, its Pod, and its Service when `with_service` (none stands).
fn start(
    obj: &SessionLivedBackend,
    cfg: &ControllerConfig,
    with_service: bool,
    actions: &mut Vec<Action>,
) {
    let volume = crate::controller::volume::wanted(obj, cfg.pod.sleep_volume.as_ref());
    if let Some(c) = volume.and_then(|v| crate::controller::volume::build_claim(obj, v)) {
        actions.push(Action::CreateClaim(Box::new(c)));
    }
    if let Some(p) = build_pod(obj, &cfg.pod) {
        actions.push(Action::CreatePod(Box::new(p)));
    }
    if with_service {
        if let Some(s) = build_service(obj, &cfg.pod) {
            actions.push(Action::CreateService(Box::new(s)));
        }
    }
}

pub fn plan(obj: &SessionLivedBackend, seen: &Seen<'_>, cfg: &ControllerConfig) -> Plan {
    let now = seen.now;
    let original = crate::model::read::status(obj);
    let mut status = original.clone();
    let mut actions = Vec::new();
    let mut requeue_after = cfg.resync;
    let created = obj
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, millis_of);
    if status.state.is_none() {
        // Recorded on its own, before anything is created: `kubectl get slab` shows a new
        // object as Submitted until its Pod exists. The patch's watch event brings the
        // next reconcile.
        status.enter(State::Submitted, created, None, None);
        return Plan {
            actions: vec![Action::PatchStatus(Box::new(status))],
            requeue_after: SHORT_WAIT,
        };
    }
    let state = status.state.unwrap_or(State::Submitted);

    // A Pod or Service of the same name owned by another object is a previous backend's,
    // about to be garbage-collected: wait for it rather than adopt it.
    let pod = seen.pod.filter(|p| owned_by(&p.metadata, obj));
    let foreign_pod = seen.pod.is_some() && pod.is_none();
    let service = seen.service.filter(|s| owned_by(&s.metadata, obj));
    let foreign_service = seen.service.is_some() && service.is_none();
    let pod_deleting = pod.is_some_and(|p| p.metadata.deletion_timestamp.is_some());
    let delete_pod = |grace_seconds| Action::DeletePod { grace_seconds };
    let app_name = obj
        .spec
        .template
        .containers
        .first()
        .map_or("", |c| c.name.as_str());
    let app = pod.map(|p| pod_state(p, app_name));

    if state.is_terminal() {
        let mut late = Vec::new();
        // An exited application's Pod is kept for its log; one still running is stopped.
        let exited = matches!(app, Some(AppState::Exited(..)));
        if pod.is_some() && !pod_deleting && !exited {
            late.push(delete_pod(cfg.pod.stop_grace_seconds));
        }
        if service.is_some() {
            late.push(Action::DeleteService);
        }
        let since = status.entered_at().unwrap_or(now);
        let retention_ms = Millis::try_from(cfg.retention.as_millis()).unwrap_or(Millis::MAX);
        let due = since.saturating_add(retention_ms);
        if now >= due {
            late.push(Action::DeleteObject);
        } else {
            requeue_after = ms_duration(due - now);
        }
        if status != original {
            actions.push(Action::PatchStatus(Box::new(status)));
        }
        actions.extend(late);
        return Plan {
            actions,
            requeue_after,
        };
    }

    let mut late = Vec::new();
    if let Some(e) = invalid(obj, &cfg.pod) {
        status.enter(State::Failed, now, Some(format!("invalid spec: {e}")), None);
        if pod.is_some() && !pod_deleting {
            late.push(delete_pod(0));
        }
    } else if state == State::Terminating {
        let reason = status
            .stop_reason
            .as_deref()
            .and_then(StopReason::parse)
            .unwrap_or(StopReason::Terminate);
        finish_stop(&mut status, reason, app.as_ref(), now);
        if status.state == Some(State::Terminating) {
            if pod.is_some() && !pod_deleting {
                late.push(delete_pod(stop_grace(obj, cfg)));
            }
            requeue_after = SHORT_WAIT;
        }
    } else if let Some(reason) =
        stop_requested(obj, &status, state, created, now, &mut requeue_after)
    {
        status.enter(
            State::Terminating,
            now,
            Some(reason.as_str().to_string()),
            None,
        );
        status.stop_reason = Some(reason.as_str().to_string());
        if pod.is_some() && !pod_deleting {
            late.push(delete_pod(stop_grace(obj, cfg)));
        }
        finish_stop(&mut status, reason, app.as_ref(), now);
        requeue_after = SHORT_WAIT;
    } else if state == State::Sleeping {
        // Asleep: the object and its Service stay, the Pod goes (gracefully, its clients
        // told "sleeping" first, as for a stop).
        if pod.is_some() {
            if pod_deleting {
                requeue_after = SHORT_WAIT;
            } else {
                late.push(delete_pod(cfg.pod.stop_grace_seconds));
            }
        }
    } else if state == State::Waking && (pod_deleting || foreign_pod) {
        // The sleeper's Pod (of the same name) is still going: its successor waits for it.
        requeue_after = SHORT_WAIT;
    } else if state == State::Waking && pod.is_none() {
        // Woken: its Pod again, from the spec, as for its first start. Its Service stayed;
        // its volume too, unless its first Pod had none (a pool member claimed to sleep, a
        // controller given the setting since): asked for again, already there is fine.
        start(
            obj,
            cfg,
            service.is_none() && !foreign_service,
            &mut actions,
        );
    } else {
        match pod {
            None if foreign_pod => requeue_after = SHORT_WAIT,
            None if state < State::Constructed => {
                start(
                    obj,
                    cfg,
                    service.is_none() && !foreign_service,
                    &mut actions,
                );
                status.enter(State::Constructed, now, None, None);
            }
            None => {
                let (to, why, code) = outcome(state, None, Exit::Unknown);
                status.enter(to, now, Some(why), code);
            }
            Some(p) => {
                if service.is_none() && !foreign_service {
                    if let Some(s) = build_service(obj, &cfg.pod) {
                        actions.push(Action::CreateService(Box::new(s)));
                    }
                }
                observe_pod(obj, p, app.as_ref(), &mut status, cfg, now, &mut late);
            }
        }
    }

    if status != original {
        actions.push(Action::PatchStatus(Box::new(status.clone())));
    }
    // The label follows the status patch: a metadata write changes the resourceVersion
    // the status patch is conditional on.
    if let Some(node) = &status.node_name {
        let labelled = obj.labels().get(LABEL_NODE);
        if labelled != Some(node) {
            actions.push(Action::LabelNode(node.clone()));
        }
    }
    actions.extend(late);
    Plan {
        actions,
        requeue_after,
    }
}

/// Moves the state forward from what the Pod shows.
pub(super) fn observe_pod(
    obj: &SessionLivedBackend,
    pod: &Pod,
    app: Option<&AppState>,
    status: &mut SessionLivedBackendStatus,
    cfg: &ControllerConfig,
    now: Millis,
    late: &mut Vec<Action>,
) {
    let name = obj.name_any();
    status.enter(State::Constructed, now, None, None);
    if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
        if status.enter(
            State::Scheduled,
            now,
            Some(format!("scheduled on {node}")),
            None,
        ) {
            status.url = Some(cfg.pod.urls.backend_url(&name));
            status.port = Some(cfg.pod.sidecar_port);
        }
        status.node_name = Some(node);
    }
    if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) {
        status.ip = Some(ip);
    }
    let deleting = pod.metadata.deletion_timestamp.is_some();
    if deleting {
        // Spawner deletes a live backend's Pod only after entering Terminating: this one was
        // deleted by someone else (by hand, an eviction, a drain). However its application
        // exits, even with 0, the backend was lost, not ended.
        let code = match app {
            Some(AppState::Exited(Exit::Code(c) | Exit::OutOfMemory(Some(c)), _)) => Some(*c),
            _ => None,
        };
        status.enter(
            State::Failed,
            now,
            Some("lost: its Pod was deleted, not by Spawner".to_string()),
            code,
        );
        return;
    }
    match app {
        Some(AppState::Running) => {
            status.enter(State::Running, now, None, None);
        }
        Some(AppState::Exited(exit, message)) => {
            // The Pod stays until the object is deleted (the garbage collector removes it
            // then): its log is what tells why a backend ended.
            let state = status.state.unwrap_or(State::Submitted);
            let (to, why, code) = outcome(state, None, *exit);
            let why = match message {
                Some(m) if to == State::Failed => format!("{why}: {m}"),
                _ => why,
            };
            status.enter(to, now, Some(why), code);
        }
        Some(AppState::Unstartable(why)) => {
            status.enter(State::Failed, now, Some(why.clone()), None);
            if !deleting {
                late.push(Action::DeletePod { grace_seconds: 0 });
            }
        }
        Some(AppState::NotStarted) | None => {}
    }
}

/// Ends a stop under way once the application is gone: the terminal state follows from
/// why it was stopped, with its exit code when the Pod still shows it.
pub(super) fn finish_stop(
    status: &mut SessionLivedBackendStatus,
    reason: StopReason,
    app: Option<&AppState>,
    now: Millis,
) {
    let exit = match app {
        None => Exit::Unknown,
        Some(AppState::Exited(exit, _)) => *exit,
        // Never started: nothing to wait for.
        Some(AppState::NotStarted | AppState::Unstartable(_)) => Exit::Unknown,
        Some(AppState::Running) => return,
    };
    let (to, why, code) = outcome(State::Terminating, Some(reason), exit);
    status.enter(to, now, Some(why), code);
}

/// A stop asked for by annotation (terminate call, sweeper), or due by the lifetime limit
/// or the startup timeout. Idleness is the sweeper's to judge: it sees the connections.
pub(super) fn stop_requested(
    obj: &SessionLivedBackend,
    status: &SessionLivedBackendStatus,
    state: State,
    created: Millis,
    now: Millis,
    requeue_after: &mut Duration,
) -> Option<StopReason> {
    if let Some(asked) = obj.annotations().get(ANNOTATION_STOP) {
        return Some(StopReason::parse(asked).unwrap_or(StopReason::Terminate));
    }
    // A pool member's clocks: none while unclaimed and Ready, from its claim once claimed.
    let (timing, created) = crate::model::pool_members::clock(obj, state, created)?;
    let observed = Observed {
        state,
        created_at: created,
        // The controller does not see connections; one keeps `decide` from judging idleness.
        live_connections: 1,
        last_activity: status
            .last_activity
            .as_deref()
            .and_then(parse_rfc3339)
            .unwrap_or(now),
        // Idleness is the sweeper's to judge, from the sidecar's reports.
        last_client_activity: now,
        busy_until: None,
        since: status.entered_at().unwrap_or(created),
    };
    match decide(&timing, &observed, now) {
        Decision::Stop(reason) => Some(reason),
        // Idleness is the sweeper's to judge.
        Decision::Sleep(_) => None,
        Decision::Keep {
            recheck_at: Some(at),
        } => {
            *requeue_after = (*requeue_after).min(ms_duration(at - now));
            None
        }
        Decision::Keep { recheck_at: None } => None,
    }
}

pub(super) fn stop_grace(obj: &SessionLivedBackend, cfg: &ControllerConfig) -> i64 {
    if obj
        .annotations()
        .get(ANNOTATION_STOP_HARD)
        .is_some_and(|v| v == "true")
    {
        0
    } else {
        cfg.pod.stop_grace_seconds
    }
}

pub(super) fn ms_duration(ms: Millis) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0).max(1_000))
}
