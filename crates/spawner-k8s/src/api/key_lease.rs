//! A key's Lease (`spawner-key-{id}`, the id [`name_for_key`] derives): what makes a keyed
//! spawn or claim a get-or-create, whatever mix of them runs on however many API replicas,
//! and what finds a key's backend in two reads of one object each.
//!
//! - **Pending** (no holder): one spawn or claim of the key holds it while it looks for the
//!   key's backend and creates or claims one. Others wait; one left by an API that stopped
//!   is taken over once its duration has passed.
//! - **Naming** the key's backend (`holderIdentity`), once it has one, and owned by its
//!   object, so that it lives as long as that object (the garbage collector deletes it
//!   with it). The next spawn or claim of the key reads the Lease and the object it names,
//!   instead of listing every backend of the namespace for a pool member claimed with the
//!   key (a quorum read that grows with the namespace). A Lease naming a backend that has
//!   ended, is gone or is not the key's is deleted (conditional on its version) and made
//!   pending anew.
//!
//! A key whose backend has no Lease naming it (made by a Spawner before this one, or its
//! naming lost with the API that made it) is still found: whoever makes a Lease pending also
//! reads the key's own object (at once with the Lease's create) and the members claimed
//! with the key (the pool watch's, or a list without one), and names what it finds.

use crate::api::{ApiState, Error};
use crate::model::crd::SessionLivedBackend;
use crate::model::naming::name_for_key;
use crate::model::pool_crd::LABEL_KEY_ID;
use crate::model::pool_members::{self as members};
use crate::model::read::state_of;
use axum::http::StatusCode;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::core::ObjectMeta;
use kube::{Resource, ResourceExt};
use spawner_api::{ApiError, ErrorCode};
use spawner_core::BackendId;
use std::time::Duration;
use tracing::{info, warn};

/// How often a spawn or claim waiting for a key's pending Lease looks again.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// A key's Lease made pending by this spawn or claim: it names the backend the spawn or
/// claim ends with ([`KeyLock::name_later`]), or is released if there is none.
pub(crate) struct KeyLock {
    leases: Api<Lease>,
    /// The Lease as written: naming or releasing it is conditional on this version, so
    /// that one taken over meanwhile is left alone.
    lease: Lease,
}

/// What a get-or-create of a key found: the key's live backend, or the key's Lease, pending
/// and held (with the id the key derives), to create or claim one under.
pub(crate) enum KeyState {
    Found(Box<SessionLivedBackend>),
    Locked(Box<KeyLock>, BackendId),
}

fn lease_name(id: &BackendId) -> String {
    format!("spawner-key-{}", id.as_str())
}

/// A pending Lease of `name`, taken over from another after `hold`.
fn pending(name: &str, hold: Duration) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(pending_spec(hold)),
    }
}

fn pending_spec(hold: Duration) -> LeaseSpec {
    LeaseSpec {
        acquire_time: Some(MicroTime(Timestamp::now())),
        lease_duration_seconds: Some(i32::try_from(hold.as_secs()).unwrap_or(i32::MAX)),
        ..LeaseSpec::default()
    }
}

/// The backend a Lease names, if it names one.
fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// Whether a pending Lease has outlived its duration (its API stopped).
fn expired(lease: &Lease) -> bool {
    lease.spec.as_ref().is_some_and(|s| {
        let since = s.acquire_time.as_ref().map(|t| t.0);
        let dur = i64::from(s.lease_duration_seconds.unwrap_or(0));
        since.is_some_and(|t| Timestamp::now().as_second() > t.as_second() + dur)
    })
}

/// Whether `obj` is the live backend of `key`.
fn is_live_of(obj: &SessionLivedBackend, key: &str) -> bool {
    obj.spec.key.as_deref() == Some(key) && !state_of(obj).is_terminal()
}

/// Finds the key's live backend, or makes its Lease pending and holds it: a keyed spawn and
/// a keyed claim both do, so that whatever mix of them runs at once, one backend per key
/// results. A pending Lease held for longer than `hold` (by an API that stopped) is taken
/// over; one held by a live spawn or claim is waited for until `deadline`.
pub(crate) async fn lock_key(
    state: &ApiState,
    key: &str,
    hold: Duration,
    deadline: tokio::time::Instant,
) -> Result<KeyState, Error> {
    let slabs = state.slabs();
    let id = name_for_key(&state.config.key_secret, &state.config.namespace, key);
    let leases: Api<Lease> = Api::namespaced(state.client.clone(), &state.config.namespace);
    let name = lease_name(&id);
    loop {
        // A new key (the usual case) costs this one round trip: the Lease, and at once the
        // read of the key's own object that a Lease-less backend would be found by.
        let (pp, lease) = (PostParams::default(), pending(&name, hold));
        let (created, own) = tokio::join!(leases.create(&pp, &lease), slabs.get_opt(id.as_str()));
        match created {
            Ok(lease) => {
                let lock = KeyLock {
                    leases: leases.clone(),
                    lease,
                };
                return lock.look_under(state, id, key, own).await;
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
        let Some(held) = leases.get_opt(&name).await? else {
            // Deleted meanwhile (its backend's object is gone, or it was released).
            continue;
        };
        match holder(&held) {
            Some(backend) => {
                if let Some(obj) = slabs.get_opt(backend).await? {
                    if is_live_of(&obj, key) {
                        return Ok(KeyState::Found(Box::new(obj)));
                    }
                }
                // Its backend has ended (or is gone, or is not the key's): taken over,
                // deleted (exactly this version) and made anew rather than rewritten, so
                // that the garbage collector deleting it with a backend gone races with
                // nothing of ours.
                delete_exactly(&leases, &held).await?;
                continue;
            }
            None if expired(&held) => {
                warn!(lease = %name, "taking over the expired Lease of a key");
                delete_exactly(&leases, &held).await?;
                continue;
            }
            None => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Busy,
                "another spawn or claim of this key is under way; retry",
            )
            .into());
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

impl KeyLock {
    /// Holding the pending Lease: the key's backend that no Lease named (its own object,
    /// `own` as read, or a member claimed with the key), named now; or the Lease to create
    /// or claim one under.
    async fn look_under(
        self,
        state: &ApiState,
        id: BackendId,
        key: &str,
        own: Result<Option<SessionLivedBackend>, kube::Error>,
    ) -> Result<KeyState, Error> {
        let found = match own {
            Ok(Some(obj)) if is_live_of(&obj, key) => Ok(Some(obj)),
            Ok(_) => claimed_with(state, &id, key).await,
            Err(e) => Err(e),
        };
        match found {
            Ok(Some(obj)) => {
                info!(backend = %obj.name_any(), "a key's backend without a Lease naming it: named");
                self.name_later(&obj);
                Ok(KeyState::Found(Box::new(obj)))
            }
            Ok(None) => Ok(KeyState::Locked(Box::new(self), id)),
            Err(e) => {
                self.release().await;
                Err(e.into())
            }
        }
    }

    /// Names `obj` as the key's backend, after the answer (what it names is written by
    /// now): the Lease then lives as long as `obj`. Should the naming never happen (the
    /// process stopped), the Lease stays pending until it expires, and whoever takes it
    /// over finds `obj` as a backend no Lease named.
    pub(crate) fn name_later(self, obj: &SessionLivedBackend) {
        let owner = OwnerReference {
            api_version: SessionLivedBackend::api_version(&()).into_owned(),
            kind: SessionLivedBackend::kind(&()).into_owned(),
            name: obj.name_any(),
            uid: obj.uid().unwrap_or_default(),
            ..OwnerReference::default()
        };
        let mut lease = self.lease.clone();
        lease.metadata.owner_references = Some(vec![owner]);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(obj.name_any()),
            acquire_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        });
        tokio::spawn(async move {
            let name = lease.name_any();
            if let Err(e) = self
                .leases
                .replace(&name, &PostParams::default(), &lease)
                .await
            {
                warn!(lease = %name, error = %e, "could not name a key's backend in its Lease; it expires, and is taken over");
            }
        });
    }

    /// Lets the pending Lease go: the spawn or claim it guarded ended without a backend.
    pub(crate) async fn release(self) {
        if let Err(e) = delete_exactly(&self.leases, &self.lease).await {
            warn!(lease = %self.lease.name_any(), error = %e, "could not release a key's Lease; it expires");
        }
    }

    /// [`KeyLock::release`] after the answer, not before it.
    pub(crate) fn release_later(self) {
        tokio::spawn(self.release());
    }
}

async fn delete_exactly(leases: &Api<Lease>, lease: &Lease) -> Result<(), kube::Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: lease.metadata.uid.clone(),
            resource_version: lease.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match leases.delete(&lease.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
        Err(e) => Err(e),
    }
}

/// A live pool member claimed with `key` (labelled with its id `id`): from the pool
/// watch, or listed when the API has none yet.
async fn claimed_with(
    state: &ApiState,
    id: &BackendId,
    key: &str,
) -> Result<Option<SessionLivedBackend>, kube::Error> {
    let cached = state
        .pool_cache
        .as_ref()
        .and_then(|c| c.with_key_id(id.as_str()));
    let labelled = match cached {
        Some(members) => members,
        None => {
            let lp = ListParams::default().labels(&format!("{LABEL_KEY_ID}={}", id.as_str()));
            state.slabs().list(&lp).await?.items
        }
    };
    Ok(labelled
        .into_iter()
        .filter(|o| members::role(o) == members::Role::Claimed)
        .find(|o| is_live_of(o, key)))
}
