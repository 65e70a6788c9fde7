//! Leader election for the controller, with a `coordination.k8s.io/v1` Lease: of several
//! controller replicas one reconciles, and another takes over within the lease duration
//! when it stops renewing. kube-rs has no lease helper, so this is a small one: the
//! decision is a pure function, and every write is conditional on the Lease's
//! `resourceVersion`, so two candidates cannot both win.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use serde_json::json;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's name, in the controller's namespace.
    pub name: String,
    /// Who is asking: the Pod's name.
    pub identity: String,
    /// How long a lease lasts without renewal before another candidate may take it.
    pub duration: Duration,
    /// How often the holder renews (well within `duration`).
    pub renew_every: Duration,
    /// How often a candidate looks at the Lease: how soon it takes over a released one.
    pub retry_every: Duration,
}

/// What to do about the Lease as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// There is none: create it, held by us.
    Create,
    /// Ours: renew it.
    Renew,
    /// Someone else's, expired (or released): take it over.
    TakeOver,
    /// Someone else's, still valid: wait.
    Wait { holder: String },
}

/// Decides from the Lease as read at `now`. Pure.
pub fn step(lease: Option<&Lease>, identity: &str, now: Timestamp) -> LeaseStep {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return if lease.is_some() {
            LeaseStep::TakeOver
        } else {
            LeaseStep::Create
        };
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return LeaseStep::Renew;
    }
    if holder.is_empty() {
        return LeaseStep::TakeOver;
    }
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match last.and_then(|t| t.checked_add(duration).ok()) {
        Some(expiry) if expiry > now => LeaseStep::Wait {
            holder: holder.to_string(),
        },
        _ => LeaseStep::TakeOver,
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX).max(1)
}

/// One attempt: returns whether we hold the Lease afterwards. A lost race (409) is
/// "not held", not an error.
pub async fn try_acquire(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    now: Timestamp,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&cfg.name).await?;
    let result = match step(current.as_ref(), &cfg.identity, now) {
        LeaseStep::Wait { .. } => return Ok(false),
        LeaseStep::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(secs(cfg.duration)),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        s @ (LeaseStep::Renew | LeaseStep::TakeOver) => {
            let lease = current.as_ref();
            let mut spec = json!({
                "holderIdentity": cfg.identity,
                "leaseDurationSeconds": secs(cfg.duration),
                "renewTime": MicroTime(now),
            });
            if s == LeaseStep::TakeOver {
                let transitions = lease
                    .and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0);
                spec["acquireTime"] = json!(MicroTime(now));
                spec["leaseTransitions"] = json!(transitions.saturating_add(1));
            }
            let patch = json!({
                "metadata": {"resourceVersion": lease.and_then(|l| l.metadata.resource_version.clone())},
                "spec": spec,
            });
            api.patch(&cfg.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this candidate holds the Lease.
pub async fn acquire(api: &Api<Lease>, cfg: &LeaseConfig) {
    loop {
        match try_acquire(api, cfg, Timestamp::now()).await {
            Ok(true) => {
                info!(lease = %cfg.name, identity = %cfg.identity, "leading");
                return;
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "cannot read or write the leader Lease"),
        }
        tokio::time::sleep(cfg.retry_every).await;
    }
}

/// Gives the Lease up, if still ours, on a graceful stop: empties its holder (as client-go
/// does), so that a candidate takes it at its next look rather than after the lease
/// duration. Conditional on the Lease's `resourceVersion`: a Lease someone else took
/// meanwhile is left alone. Best effort: failing, the Lease just expires.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    let lease = match api.get_opt(&cfg.name).await {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(e) => {
            warn!(error = %e, "cannot read the leader Lease to release it");
            return;
        }
    };
    let ours = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        == Some(cfg.identity.as_str());
    if !ours {
        return;
    }
    let patch = json!({
        "metadata": {"resourceVersion": lease.metadata.resource_version},
        "spec": {"holderIdentity": null, "leaseDurationSeconds": 1, "renewTime": MicroTime(Timestamp::now())},
    });
    match api
        .patch(&cfg.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => info!(lease = %cfg.name, "leadership released"),
        Err(e) => warn!(error = %e, "cannot release the leader Lease; it expires instead"),
    }
}

/// Renews the Lease until it is lost (someone else took it, or it could not be renewed
/// for a whole lease duration); then returns, and the caller must stop leading.
pub async fn hold(api: &Api<Lease>, cfg: &LeaseConfig) {
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.renew_every).await;
        match try_acquire(api, cfg, Timestamp::now()).await {
            Ok(true) => last_renewal = tokio::time::Instant::now(),
            Ok(false) => {
                warn!(lease = %cfg.name, "leadership lost to another replica");
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot renew the leader Lease");
                if last_renewal.elapsed() >= cfg.duration {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: Timestamp, secs: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(secs),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn steps() {
        let t = Timestamp::from_second(1_700_000_000).expect("time");
        let later = |s| t.checked_add(SignedDuration::from_secs(s)).expect("time");
        assert_eq!(step(None, "a", t), LeaseStep::Create);
        assert_eq!(
            step(Some(&lease("a", t, 15)), "a", later(100)),
            LeaseStep::Renew
        );
        assert_eq!(
            step(Some(&lease("b", t, 15)), "a", later(14)),
            LeaseStep::Wait { holder: "b".into() }
        );
        assert_eq!(
            step(Some(&lease("b", t, 15)), "a", later(15)),
            LeaseStep::TakeOver
        );
        assert_eq!(step(Some(&lease("", t, 15)), "a", t), LeaseStep::TakeOver);
    }
}
