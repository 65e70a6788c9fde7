//! The writes other components make to a SessionLivedBackend, in one place so that they
//! all follow the same protocol with the controller:
//!
//! - a state change is a status patch conditional on the object's `resourceVersion` (a
//!   concurrent writer makes it fail with 409 Conflict: re-read and decide again);
//! - a stop is asked for with the [`ANNOTATION_STOP`] annotation, which the controller
//!   acts on (Terminating, Pod deleted, then the terminal state of the [`StopReason`]).
//!
//! The sweeper marks Ready with [`record_state`], and marks idle backends either Swept
//! directly (the controller then stops the Pod) or with [`request_stop`] and
//! [`StopReason::Idle`] (Terminating first, then Swept).

use crate::crd::{SessionLivedBackend, ANNOTATION_STOP, ANNOTATION_STOP_HARD};
use crate::status::{HistoryEntry, SessionLivedBackendStatus};
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
pub fn status_patch(obj: &SessionLivedBackend, status: &SessionLivedBackendStatus) -> Value {
    json!({
        "metadata": {"resourceVersion": obj.resource_version()},
        "status": status,
    })
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
    let mut status = obj.status.clone().unwrap_or_default();
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
    let mut tries = 0;
    loop {
        let Some(obj) = api.get_opt(name).await? else {
            return Ok(None);
        };
        let mut status = obj.status.clone().unwrap_or_default();
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
