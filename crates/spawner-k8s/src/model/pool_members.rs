//! A pool's members as SessionLivedBackends: what each one is to its pool (Ready,
//! starting, claimed, on its way out), the patch that claims one, and the clocks the
//! sweeper and the controller judge a member by. Pure; the API (`api/pools.rs`) and the
//! controller (`controller/pools.rs`) do the I/O.

use crate::model::crd::{SessionLivedBackend, ANNOTATION_STOP};
use crate::model::pool_crd::{
    ANNOTATION_CLAIMED_AT, ANNOTATION_CLAIM_EVENT, LABEL_KEY_ID, LABEL_POOL,
};
use kube::ResourceExt;
use serde_json::{json, Value};
use spawner_core::lifecycle::{StopReason, Timing};
use spawner_core::pool::{self, Claimed, PoolCounts};
use spawner_core::time::{rfc3339, Millis};
use spawner_core::{BackendSpec, State};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a member is to its pool now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Unclaimed and Ready: a claim takes it at once.
    Ready,
    /// Unclaimed, not Ready yet.
    Starting,
    Claimed,
    /// Stopping or ended: counts nowhere.
    Leaving,
}

fn state(obj: &SessionLivedBackend) -> State {
    obj.status
        .as_ref()
        .and_then(|s| s.state)
        .unwrap_or(State::Submitted)
}

/// The pool `obj` belongs to, if it is a pool member.
pub fn pool_of(obj: &SessionLivedBackend) -> Option<&str> {
    obj.labels().get(LABEL_POOL).map(String::as_str)
}

/// When `obj` was claimed, if it was (a time that does not parse counts as the epoch: the
/// member stays claimed, which is what matters).
pub fn claimed_at(obj: &SessionLivedBackend) -> Option<Millis> {
    obj.annotations().get(ANNOTATION_CLAIMED_AT).map(|t| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.timestamp_millis())
            .unwrap_or(0)
    })
}

/// Whether `obj` was stopped because its claim hook refused its claim.
pub fn refused(obj: &SessionLivedBackend) -> bool {
    let refused = StopReason::ClaimRefused.as_str();
    obj.annotations().get(ANNOTATION_STOP).map(String::as_str) == Some(refused)
        || obj.status.as_ref().and_then(|s| s.stop_reason.as_deref()) == Some(refused)
}

/// Whether `obj` was claimed and its claim went through (the hook, if any, took it): its
/// timeline has the claim's event.
pub fn took_claim(obj: &SessionLivedBackend) -> bool {
    claimed_at(obj).is_some()
        && !refused(obj)
        && crate::model::read::status(obj).history.iter().any(|h| {
            h.reason.as_deref().is_some_and(|r| {
                r == pool::claimed_reason(None) || r.starts_with("claimed with key ")
            })
        })
}

/// The pause after `n` members in a row failed unclaimed, or had their claim refused: 0.1 s
/// doubling to 30 s, as the embedded server's.
pub fn backoff_after(n: u32) -> Duration {
    Duration::from_millis(100u64 << n.saturating_sub(1).min(9)).min(Duration::from_secs(30))
}

pub fn role(obj: &SessionLivedBackend) -> Role {
    let s = state(obj);
    if s >= State::Terminating
        || obj.annotations().contains_key(ANNOTATION_STOP)
        || obj.metadata.deletion_timestamp.is_some()
    {
        Role::Leaving
    } else if claimed_at(obj).is_some() {
        Role::Claimed
    } else if s == State::Ready {
        Role::Ready
    } else {
        Role::Starting
    }
}

pub fn counts<'a>(members: impl IntoIterator<Item = &'a SessionLivedBackend>) -> PoolCounts {
    let mut c = PoolCounts::default();
    for m in members {
        match role(m) {
            Role::Ready => c.ready += 1,
            Role::Starting => c.starting += 1,
            Role::Claimed => c.claimed += 1,
            Role::Leaving => {}
        }
    }
    c
}

/// The unclaimed members a shrink or a drain stops, `n` at most: starting ones first
/// (nobody waits on them yet), then the newest Ready.
pub fn surplus(members: &[SessionLivedBackend], n: usize) -> Vec<&SessionLivedBackend> {
    let mut unclaimed: Vec<&SessionLivedBackend> = members
        .iter()
        .filter(|m| matches!(role(m), Role::Ready | Role::Starting))
        .collect();
    unclaimed.sort_by_key(|m| {
        (
            role(m) == Role::Ready,
            std::cmp::Reverse(m.metadata.creation_timestamp.clone()),
        )
    });
    unclaimed.into_iter().take(n).collect()
}

/// The unclaimed Ready members, oldest first: the order claims take them in.
pub fn claimable(members: &[SessionLivedBackend]) -> Vec<&SessionLivedBackend> {
    let mut ready: Vec<&SessionLivedBackend> =
        members.iter().filter(|m| role(m) == Role::Ready).collect();
    ready.sort_by_key(|m| m.metadata.creation_timestamp.clone());
    ready
}

/// The merge patch that claims `obj` for `spec` (the claimed spec: key, labels, timings)
/// at `now`. It carries the `resourceVersion` read: of two claims of one member, the API
/// server accepts the first and answers the other 409 Conflict, so a member is never
/// handed out twice. With `event`, the claim's event too ([`ANNOTATION_CLAIM_EVENT`]): a
/// claim taken at once is one write; one that waits for its claim hook has its event
/// noted once the hook took it.
pub fn claim_patch(
    obj: &SessionLivedBackend,
    spec: &BackendSpec,
    key_id: Option<&str>,
    now: Millis,
    event: bool,
) -> Value {
    let mut labels: BTreeMap<String, Value> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if let Some(id) = key_id {
        labels.insert(LABEL_KEY_ID.to_string(), json!(id));
    }
    let mut annotations = serde_json::Map::new();
    annotations.insert(ANNOTATION_CLAIMED_AT.into(), json!(rfc3339(now)));
    if event {
        // The event as a status note would add it to the status this patch is conditional on.
        let mut status = crate::model::read::status(obj);
        if status.note(now, pool::claimed_reason(spec.key.as_deref())) {
            let entry = status.history.pop().map(|e| serde_json::to_string(&e));
            if let Some(Ok(entry)) = entry {
                annotations.insert(ANNOTATION_CLAIM_EVENT.into(), json!(entry));
            }
        }
    }
    json!({
        "metadata": {
            "resourceVersion": obj.resource_version(),
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "key": spec.key,
            "gracePeriodSeconds": spec.grace_period_seconds,
            "lifetimeLimitSeconds": spec.lifetime_limit_seconds,
            "idleAction": (!spec.idle_action.is_sweep()).then(|| spec.idle_action.as_str()),
            "maxSleepSeconds": (spec.idle_action == spawner_core::IdleAction::Sleep)
                .then_some(spec.max_sleep_seconds),
        }
    })
}

/// The timing and the start of the clocks a backend is judged by (the controller's
/// lifetime limit and startup timeout, the sweeper's grace period): a pool member's come
/// from spawner-core's rule (none for an unclaimed Ready one; from the claim once
/// claimed); any other backend's from its creation.
pub fn clock(
    obj: &SessionLivedBackend,
    state: State,
    created_at: Millis,
) -> Option<(Timing, Millis)> {
    let timing = Timing::of(&obj.backend_spec());
    let claimed = claimed_at(obj).map(|at| Claimed { at, timing });
    pool::sweep_clock(pool_of(obj).is_some(), claimed, state, timing, created_at)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A member of pool `p` named `name` that went through `states` (claimed, or not).
    pub(crate) fn member_named(name: &str, states: &[State], claimed: bool) -> SessionLivedBackend {
        let mut obj: SessionLivedBackend = serde_json::from_value(json!({
            "apiVersion": "spawner.dev/v1", "kind": "SessionLivedBackend",
            "metadata": {"name": name, "labels": {LABEL_POOL: "p"}},
            "spec": {"template": {"containers": [{"name": "app", "image": "app:1"}]}}
        }))
        .expect("object");
        if claimed {
            obj.metadata.annotations =
                Some([(ANNOTATION_CLAIMED_AT.to_string(), rfc3339(5_000))].into());
        }
        let mut st = crate::model::status::SessionLivedBackendStatus::default();
        for s in states {
            st.enter(*s, 1_000, None, None);
        }
        obj.status = Some(st);
        obj
    }

    fn member(states: &[State], claimed: bool) -> SessionLivedBackend {
        member_named("m", states, claimed)
    }

    #[test]
    fn members_count_by_role() {
        let ms = [
            member(&[State::Submitted, State::Ready], false),
            member(&[State::Submitted], false),
            member(&[State::Submitted, State::Ready], true),
            member(&[State::Submitted, State::Ready, State::Terminating], false),
        ];
        assert_eq!(
            counts(&ms),
            PoolCounts {
                ready: 1,
                starting: 1,
                claimed: 1
            }
        );
        assert_eq!(surplus(&ms, 5).len(), 2);
        assert_eq!(
            role(surplus(&ms, 1)[0]),
            Role::Starting,
            "starting ones go first"
        );
        assert_eq!(claimable(&ms).len(), 1);
    }

    #[test]
    fn an_unclaimed_ready_member_is_never_swept_and_a_claimed_one_from_its_claim() {
        let ready = member(&[State::Submitted, State::Ready], false);
        assert_eq!(clock(&ready, State::Ready, 1_000), None);
        let claimed = member(&[State::Submitted, State::Ready], true);
        assert_eq!(
            clock(&claimed, State::Ready, 1_000).map(|c| c.1),
            Some(5_000)
        );
        let mut plain = ready.clone();
        plain.metadata.labels = None;
        assert_eq!(clock(&plain, State::Ready, 1_000).map(|c| c.1), Some(1_000));
    }

    #[test]
    fn the_claim_patch_is_conditional_on_the_version_read() {
        let mut obj = member(&[State::Submitted, State::Ready], false);
        obj.metadata.resource_version = Some("42".into());
        let mut spec = obj.backend_spec();
        spec.key = Some("doc-1".into());
        spec.labels.insert("owner".into(), "u".into());
        let p = claim_patch(&obj, &spec, Some("kid"), 9_000, false);
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert_eq!(p["metadata"]["labels"]["owner"], "u");
        assert_eq!(p["metadata"]["labels"][LABEL_KEY_ID], "kid");
        assert_eq!(p["spec"]["key"], "doc-1");
        assert!(
            p["metadata"]["annotations"][ANNOTATION_CLAIM_EVENT].is_null(),
            "a claim that waits for its hook has its event written after it: {p}"
        );
    }

    /// `obj` with the annotations of `patch` applied, as the API server's merge would.
    fn annotated(obj: &SessionLivedBackend, patch: &Value) -> SessionLivedBackend {
        let mut obj = obj.clone();
        let added = patch["metadata"]["annotations"]
            .as_object()
            .expect("annotations");
        let annotations = obj.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in added {
            annotations.insert(k.clone(), v.as_str().expect("a string").to_string());
        }
        obj
    }

    #[test]
    fn a_claims_event_written_with_it_is_in_the_history_from_then_on() {
        let ready = member(&[State::Submitted, State::Ready], false);
        let mut spec = ready.backend_spec();
        spec.key = Some("doc-1".into());
        let claimed = annotated(&ready, &claim_patch(&ready, &spec, None, 9_000, true));
        assert!(took_claim(&claimed));
        let st = crate::model::read::status(&claimed);
        let last = st.history.last().expect("an event");
        assert_eq!((last.seq, last.state), (3, State::Ready));
        assert_eq!(last.reason.as_deref(), Some("claimed with key doc-1"));
        assert_eq!(st.reason.as_deref(), Some("claimed with key doc-1"));
        assert_eq!(st.entered_at(), Some(9_000));
        // The next status write carries it: its own event comes after, and is not
        // taken for the claim's again.
        let mut next = st.clone();
        next.enter(State::Terminating, 10_000, Some("terminate".into()), None);
        let mut written = claimed.clone();
        written.status = Some(next);
        let seqs: Vec<(u64, State)> = crate::model::read::status(&written)
            .history
            .iter()
            .map(|h| (h.seq, h.state))
            .collect();
        assert_eq!(
            seqs,
            [
                (1, State::Submitted),
                (2, State::Ready),
                (3, State::Ready),
                (4, State::Terminating)
            ]
        );
        assert!(took_claim(&written));
    }
}
