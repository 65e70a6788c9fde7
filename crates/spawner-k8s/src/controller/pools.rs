//! The controller's side of warm pools: keeps every `SessionLivedBackendPool` at its plan
//! (spawner-core's [`pool::plan`]) by creating members and asking surplus unclaimed ones to
//! stop, and stops the unclaimed members of pools that no longer exist.

use crate::model::crd::SessionLivedBackend;
use crate::model::pool_crd::{SessionLivedBackendPool, LABEL_POOL};
use crate::model::pool_members::{self as members, backoff_after, counts, surplus};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use spawner_core::lifecycle::StopReason;
use spawner_core::pool::{self, PoolSize};
use spawner_core::BackendId;
use spawner_core::State;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The controller's pool reconciler, until `stop` turns true: every `every`, brings each
/// pool to [`pool::plan`] (refill unclaimed members to `min_ready` within `max`, stop
/// unclaimed ones over `max`), and stops the unclaimed members of pools that no longer
/// exist. Level-triggered: it reads everything afresh each round, so a restarted
/// controller picks up where the last one stopped.
pub async fn reconcile_pools(
    client: Client,
    namespace: Option<String>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoffs = HashMap::new();
    loop {
        if let Err(e) = reconcile_once(&client, namespace.as_deref(), &mut backoffs).await {
            warn!(error = %e, "reconciling pools failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// A pool whose members fail before their claim: how many in a row, which were counted,
/// and when it may start members again. A template that cannot start (an image that does
/// not exist, a crashing application) is retried with back-off instead of once a round.
/// Claims refused by the members' hook hold starts back alike, until a claim goes through
/// (a Ready member does not end them: a refusing hook is offered Ready ones).
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    counted: HashSet<String>,
    resume_at: Option<Instant>,
    refusals: u32,
    refused_until: Option<Instant>,
}

impl Backoff {
    /// Counts the members that failed unclaimed since the last round (a Ready one resets
    /// the count); returns whether the pool may start members now.
    fn may_start(&mut self, members: &[SessionLivedBackend], now: Instant) -> bool {
        if members
            .iter()
            .any(|m| members::role(m) == members::Role::Ready)
        {
            self.failures = 0;
            self.resume_at = None;
        }
        for m in members {
            let failed = m.status.as_ref().and_then(|s| s.state) == Some(State::Failed);
            if failed && members::claimed_at(m).is_none() && self.counted.insert(m.name_any()) {
                self.failures += 1;
                self.resume_at = Some(now + backoff_after(self.failures));
            } else if members::refused(m) && self.counted.insert(m.name_any()) {
                self.refusals += 1;
                self.refused_until = Some(now + backoff_after(self.refusals));
            } else if members::took_claim(m) && self.counted.insert(m.name_any()) {
                self.refusals = 0;
                self.refused_until = None;
            }
        }
        // Forget members that are gone (deleted after their retention).
        self.counted
            .retain(|name| members.iter().any(|m| &m.name_any() == name));
        self.resume_at.is_none_or(|at| now >= at) && self.refused_until.is_none_or(|at| now >= at)
    }
}

async fn reconcile_once(
    client: &Client,
    namespace: Option<&str>,
    backoffs: &mut HashMap<(String, String), Backoff>,
) -> Result<(), kube::Error> {
    let (pools, slabs): (Api<SessionLivedBackendPool>, Api<SessionLivedBackend>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let pools = pools.list(&ListParams::default()).await?.items;
    let members = slabs
        .list(&ListParams::default().labels(LABEL_POOL))
        .await?
        .items;
    let mut by_pool: HashMap<(String, String), Vec<SessionLivedBackend>> = HashMap::new();
    for m in members {
        if let Some(p) = members::pool_of(&m) {
            by_pool
                .entry((m.namespace().unwrap_or_default(), p.to_string()))
                .or_default()
                .push(m);
        }
    }
    for pool in &pools {
        let ns = pool.namespace().unwrap_or_default();
        let api: Api<SessionLivedBackend> = Api::namespaced(client.clone(), &ns);
        let mine = by_pool
            .remove(&(ns.clone(), pool.pool_name()))
            .unwrap_or_default();
        let size = PoolSize {
            min_ready: pool.spec.min_ready,
            max: pool.spec.max,
        };
        let plan = pool::plan(size, counts(&mine), 0);
        let backoff = backoffs.entry((ns.clone(), pool.pool_name())).or_default();
        let starts = if backoff.may_start(&mine, Instant::now()) {
            plan.start
        } else {
            0
        };
        for _ in 0..starts {
            let id = match BackendId::generate() {
                Ok(id) => id,
                Err(e) => {
                    warn!(error = %e, "no randomness for an id");
                    break;
                }
            };
            let created = api
                .create(&PostParams::default(), &pool.member(id.as_str()))
                .await?;
            info!(pool = %pool.pool_name(), backend = %created.name_any(), "starting a backend for the pool");
        }
        for m in surplus(&mine, plan.stop as usize) {
            info!(pool = %pool.pool_name(), backend = %m.name_any(), "stopping a backend over the pool's max");
            crate::model::write::request_stop(&api, &m.name_any(), StopReason::Terminate, false)
                .await?;
        }
    }
    backoffs.retain(|(ns, name), _| {
        pools
            .iter()
            .any(|p| &p.pool_name() == name && p.namespace().as_ref() == Some(ns))
    });
    // Members whose pool is gone: a drain the API did not finish.
    for ((ns, pool), mine) in by_pool {
        let api: Api<SessionLivedBackend> = Api::namespaced(client.clone(), &ns);
        for m in surplus(&mine, mine.len()) {
            info!(%pool, backend = %m.name_any(), "stopping an unclaimed backend of a drained pool");
            crate::model::write::request_stop(&api, &m.name_any(), StopReason::Terminate, false)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_tenth_of_a_second_to_half_a_minute() {
        assert_eq!(backoff_after(1), Duration::from_millis(100));
        assert_eq!(backoff_after(2), Duration::from_millis(200));
        assert_eq!(backoff_after(9), Duration::from_millis(25_600));
        assert_eq!(backoff_after(10), Duration::from_secs(30));
        assert_eq!(backoff_after(1000), Duration::from_secs(30));
    }

    fn member(name: &str, states: &[State]) -> SessionLivedBackend {
        crate::model::pool_members::tests::member_named(name, states, false)
    }

    #[test]
    fn members_failing_unclaimed_pause_the_refill_until_one_is_ready() {
        let now = Instant::now();
        let mut b = Backoff::default();
        let failed = [member("a", &[State::Submitted, State::Failed])];
        assert!(!b.may_start(&failed, now), "paused after a failure");
        assert!(b.may_start(&failed, now + Duration::from_millis(100)));
        let two = [
            member("a", &[State::Submitted, State::Failed]),
            member("b", &[State::Submitted, State::Failed]),
        ];
        assert!(!b.may_start(&two, now + Duration::from_millis(150)));
        assert!(
            !b.may_start(&two, now + Duration::from_millis(300)),
            "0.2 s now"
        );
        assert!(b.may_start(&two, now + Duration::from_millis(400)));
        let ready = [
            member("b", &[State::Submitted, State::Failed]),
            member("c", &[State::Submitted, State::Ready]),
        ];
        assert!(b.may_start(&ready, now + Duration::from_millis(400)));
        assert_eq!(b.failures, 0);
    }

    #[test]
    fn refused_claims_pause_the_refill_until_a_claim_goes_through() {
        use crate::model::crd::ANNOTATION_STOP;
        let now = Instant::now();
        let mut b = Backoff::default();
        let mut refused = crate::model::pool_members::tests::member_named(
            "a",
            &[State::Submitted, State::Ready],
            true,
        );
        refused
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANNOTATION_STOP.into(), "claim refused".into());
        let ready = member("b", &[State::Submitted, State::Ready]);
        let both = [refused.clone(), ready.clone()];
        assert!(
            !b.may_start(&both, now),
            "paused after a refusal, Ready members or not"
        );
        assert!(b.may_start(&both, now + Duration::from_millis(100)));
        let mut took = crate::model::pool_members::tests::member_named(
            "c",
            &[State::Submitted, State::Ready],
            true,
        );
        if let Some(st) = took.status.as_mut() {
            st.note(2_000, "claimed with key k".into());
        }
        assert!(b.may_start(&[refused, ready, took], now + Duration::from_millis(100)));
        assert_eq!(b.refusals, 0, "a claim that went through ends the refusals");
    }
}
