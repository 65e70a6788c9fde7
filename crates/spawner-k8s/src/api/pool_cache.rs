//! `spawner api`'s watch of the warm pools and their members, for claims: a claim takes a
//! Ready member from this cache and claims it with one write conditional on the version it
//! read (a stale read is a 409, and the next member is tried), instead of reading the pool
//! and listing its members from the API server first; and a claim that finds none Ready
//! waits for the watch to show one, instead of polling (issue 27).

use crate::model::crd::SessionLivedBackend;
use crate::model::pool_crd::{SessionLivedBackendPool, LABEL_KEY_ID, LABEL_POOL};
use futures_util::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

/// The pools and the pool members of one namespace, kept current by two watches.
#[derive(Clone)]
pub struct PoolCache {
    namespace: String,
    members: Store<SessionLivedBackend>,
    pools: Store<SessionLivedBackendPool>,
    /// Bumped on every change the members' watch sees.
    changes: watch::Receiver<u64>,
}

impl PoolCache {
    /// Starts the watches of `namespace` (they run as long as the process).
    pub fn start(client: Client, namespace: &str) -> PoolCache {
        let (members, member_writer) = reflector::store();
        let (pools, pool_writer) = reflector::store();
        let (tx, changes) = watch::channel(0u64);
        let slabs: Api<SessionLivedBackend> = Api::namespaced(client.clone(), namespace);
        let member_events = watcher::watcher(slabs, watcher::Config::default().labels(LABEL_POOL))
            .default_backoff()
            .reflect(member_writer)
            .touched_objects();
        tokio::spawn(async move {
            let mut events = member_events.boxed();
            while events.next().await.is_some() {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        });
        let pool_api: Api<SessionLivedBackendPool> = Api::namespaced(client, namespace);
        let pool_events = watcher::watcher(pool_api, watcher::Config::default())
            .default_backoff()
            .reflect(pool_writer)
            .touched_objects();
        tokio::spawn(async move {
            let mut events = pool_events.boxed();
            while events.next().await.is_some() {}
        });
        PoolCache {
            namespace: namespace.to_string(),
            members,
            pools,
            changes,
        }
    }

    /// The members of pool `name` as the watch has them, or `None` before both watches'
    /// first lists.
    pub fn members(&self, name: &str) -> Option<Vec<SessionLivedBackend>> {
        if !listed(&self.pools) {
            return None;
        }
        self.labelled(LABEL_POOL, name)
    }

    /// The members labelled with the key id `key_id` (claimed with that key) as the watch
    /// has them, or `None` before its first list.
    pub fn with_key_id(&self, key_id: &str) -> Option<Vec<SessionLivedBackend>> {
        self.labelled(LABEL_KEY_ID, key_id)
    }

    /// The members whose label `label` is `value`, or `None` before the members' first list.
    fn labelled(&self, label: &str, value: &str) -> Option<Vec<SessionLivedBackend>> {
        if !listed(&self.members) {
            return None;
        }
        Some(
            self.members
                .state()
                .into_iter()
                .filter(|m| m.labels().get(label).map(String::as_str) == Some(value))
                .map(|m| (*m).clone())
                .collect(),
        )
    }

    /// The pool `name` as the watch has it (`None`: not seen, or not listed yet).
    pub fn pool(&self, name: &str) -> Option<SessionLivedBackendPool> {
        self.pools
            .get(&ObjectRef::new(name).within(&self.namespace))
            .map(|p| (*p).clone())
    }

    /// A handle that resolves on the members' next change after it was made.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.changes.clone();
        rx.borrow_and_update();
        rx
    }
}

/// Whether `store` holds its watch's first full list (its readiness, asked without waiting).
fn listed<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    futures_util::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
}
