//! The writes other components make to a SessionLivedBackend, in one place so that they
//! all follow the same protocol with the controller:
//!
//! - a state change is a status patch conditional on the object's `resourceVersion` (a
//!   concurrent writer makes it fail with 409 Conflict: re-read and decide again);
//! - a stop is asked for with the [`ANNOTATION_STOP`] annotation, which the controller
//!   acts on (Terminating, Pod deleted, then the terminal state of the [`StopReason`]).
//!
//! A terminate ([`stop_now`]) writes both: the annotation, then `Terminating` in the status
//! within the API's own request, so that from its answer on every reader (status, `/ready`,
//! keepalive, the routers' watch) sees the stop, not only the controller's next reconcile.
//!
//! The sweeper marks Ready with [`record_state`], and marks idle backends either Swept
//! directly (the controller then stops the Pod) or with [`request_stop`] and
//! [`StopReason::Idle`] (Terminating first, then Swept).

use crate::model::crd::{SessionLivedBackend, ANNOTATION_STOP, ANNOTATION_STOP_HARD};
use crate::model::status::{HistoryEntry, SessionLivedBackendStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use spawner_core::lifecycle::StopReason;
use spawner_core::time::Millis;
use spawner_core::State;

/// Publishes how a backend ended as a Kubernetes Event of the object (`kubectl get events`,
/// `kubectl describe slab`): reason = the terminal state, Warning for Failed. The states on
/// the way (Submitted … Ready, Terminating) are in the object's `status.history`, not
/// Events: an Event per transition cost the API server a write each (six per backend), for
/// what the status already says. So an operator's Events are the ends worth a look: the
/// failures, the sweeps, the stops.
pub async fn publish_state(
    recorder: &Recorder,
    obj: &SessionLivedBackend,
    entry: &HistoryEntry,
) -> Result<(), kube::Error> {
    if !entry.state.is_terminal() {
        return Ok(());
    }
    let event = Event {
        type_: if entry.state == State::Failed {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: entry.state.as_str().to_string(),
        note: Some(
            entry
                .reason
                .clone()
                .unwrap_or_else(|| format!("entered {}", entry.state)),
        ),
        action: "Lifecycle".to_string(),
        secondary: None,
    };
    recorder.publish(&event, &obj.object_ref(&())).await
}

/// The JSON merge patch that replaces `obj`'s status with `status`, only if nobody wrote
/// the object since `obj` was read.
/// An address the status no longer holds (a sleeper's Pod IP) is written as `null`: a
/// merge patch leaves out what it does not name.
pub fn status_patch(obj: &SessionLivedBackend, status: &SessionLivedBackendStatus) -> Value {
    let mut patch = json!({
        "metadata": {"resourceVersion": obj.resource_version()},
        "status": status,
    });
    if status.ip.is_none() {
        patch["status"]["ip"] = Value::Null;
    }
    patch
}

/// `read` when given (an object just read or written: one request fewer), else `name`
/// read fresh; `None` when there is no such object.
async fn given_or_read(
    api: &Api<SessionLivedBackend>,
    name: &str,
    read: &mut Option<SessionLivedBackend>,
) -> Result<Option<SessionLivedBackend>, kube::Error> {
    match read.take() {
        Some(o) => Ok(Some(o)),
        None => api.get_opt(name).await,
    }
}

/// Wakes the backend `name` if it sleeps: `Waking` entered in its status (with `reason`),
/// conditional on the version read and retried on a conflict, starting from `read` when
/// given (an object just read: one request instead of two). The state it is in from now
/// on: `Waking` for a sleeper, the state as it is for any other (awake, starting, ended);
/// `None` when there is no such object.
pub async fn wake(
    api: &Api<SessionLivedBackend>,
    name: &str,
    mut read: Option<SessionLivedBackend>,
    reason: &str,
    now: Millis,
) -> Result<Option<State>, kube::Error> {
    for _ in 0..10 {
        let Some(obj) = given_or_read(api, name, &mut read).await? else {
            return Ok(None);
        };
        let mut status = crate::model::read::status(&obj);
        let current = status.state.unwrap_or(State::Submitted);
        if current != State::Sleeping {
            return Ok(Some(current));
        }
        status.enter(State::Waking, now, Some(reason.to_string()), None);
        let patch = status_patch(&obj, &status);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(Some(State::Waking)),
            Err(kube::Error::Api(s)) if s.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    // The object kept changing (activity writes of a sidecar going away): say what it is.
    Ok(api
        .get_opt(name)
        .await?
        .map(|o| crate::model::read::state_of(&o)))
}

/// Enters `to` (with `reason`) if the lifecycle allows it from `obj`'s current state, after
/// `update` has adjusted the rest of the status (e.g. live connections). Returns the
/// updated object, or `None` when the transition is not allowed and nothing was written.
pub async fn record_state(
    api: &Api<SessionLivedBackend>,
    obj: &SessionLivedBackend,
    to: State,
    reason: Option<String>,
    now: Millis,
    update: impl FnOnce(&mut SessionLivedBackendStatus),
) -> Result<Option<SessionLivedBackend>, kube::Error> {
    let mut status = crate::model::read::status(obj);
    if !status.enter(to, now, reason, None) {
        return Ok(None);
    }
    update(&mut status);
    let patch = status_patch(obj, &status);
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(Some)
}

/// Adds an event in the backend's current state (see [`SessionLivedBackendStatus::note`]):
/// a status patch conditional on the version read, read again and retried on a conflict
/// (the controller and the sweeper write the status too). `None` when the backend has
/// ended or is gone.
pub async fn note(
    api: &Api<SessionLivedBackend>,
    name: &str,
    reason: &str,
    now: Millis,
) -> Result<Option<SessionLivedBackend>, kube::Error> {
    note_on(api, name, None, reason, now).await
}

/// [`note`], starting from `read` (an object just written, so most likely current) when
/// given: one request instead of two.
pub async fn note_on(
    api: &Api<SessionLivedBackend>,
    name: &str,
    mut read: Option<SessionLivedBackend>,
    reason: &str,
    now: Millis,
) -> Result<Option<SessionLivedBackend>, kube::Error> {
    let mut tries = 0;
    loop {
        let Some(obj) = given_or_read(api, name, &mut read).await? else {
            return Ok(None);
        };
        let mut status = crate::model::read::status(&obj);
        if !status.note(now, reason.to_string()) {
            return Ok(None);
        }
        let patch = status_patch(&obj, &status);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(o) => return Ok(Some(o)),
            Err(kube::Error::Api(s)) if s.is_conflict() && tries < 10 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Asks the controller to stop the backend `name` for `reason`; `hard` skips the graceful
/// stop.
pub async fn request_stop(
    api: &Api<SessionLivedBackend>,
    name: &str,
    reason: StopReason,
    hard: bool,
) -> Result<SessionLivedBackend, kube::Error> {
    let mut annotations = serde_json::Map::new();
    annotations.insert(ANNOTATION_STOP.into(), json!(reason.as_str()));
    if hard {
        annotations.insert(ANNOTATION_STOP_HARD.into(), json!("true"));
    }
    let patch = json!({"metadata": {"annotations": annotations}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// Stops the backend `name` at once: the stop annotation (so that the controller carries it
/// out whatever happens next), then `Terminating` entered in its status (conditional on the
/// version read, retried on a conflict), as the controller would have entered it. Returns
/// the state the backend is in from now on: `Terminating`, or the terminal state of one
/// that had ended.
pub async fn stop_now(
    api: &Api<SessionLivedBackend>,
    name: &str,
    reason: StopReason,
    hard: bool,
    now: impl Fn() -> Millis,
) -> Result<State, kube::Error> {
    let mut obj = request_stop(api, name, reason, hard).await?;
    for _ in 0..5 {
        let mut status = crate::model::read::status(&obj);
        let current = status.state.unwrap_or(State::Submitted);
        if current >= State::Terminating {
            return Ok(current);
        }
        if status.state.is_none() {
            // Not seen by the controller yet: its Submitted first, as it would record it.
            let created = obj
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or_else(&now, |t| t.0.as_millisecond());
            status.enter(State::Submitted, created, None, None);
        }
        status.enter(
            State::Terminating,
            now(),
            Some(reason.as_str().to_string()),
            None,
        );
        status.stop_reason = Some(reason.as_str().to_string());
        let patch = status_patch(&obj, &status);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(State::Terminating),
            Err(kube::Error::Api(s)) if s.is_conflict() => obj = api.get(name).await?,
            Err(e) => return Err(e),
        }
    }
    // The object kept changing: the annotation stands, and the controller enters
    // Terminating at its next reconcile.
    tracing::warn!(backend = %name, "the stop could not be written to the status; the controller carries it out");
    Ok(State::Terminating)
}
