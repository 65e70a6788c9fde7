//! `spawner controller`: reconciles SessionLivedBackends with the Pods and Services that
//! run them.
//!
//! Level-triggered: every reconcile takes the object and its Pod and Service, and [`plan`]
//! (pure) decides what to do; [`reconcile`] only carries the plan out. So a controller
//! restarted at any point picks up where the last one stopped. The Pod and Service come
//! from the controller's watch caches ([`Children`]), not from a GET per reconcile: a
//! backend costs the API server its writes, not reads (issue 27's budget). A cache can lag
//! its own writes by a few milliseconds, so a child missing from it is trusted only when
//! the object never had one or it has been missing a while ([`Children::seen`]).
//! Status patches carry the object's `resourceVersion`, so a concurrent writer (the
//! sweeper marking Ready or Swept) makes a patch fail with a conflict and the next
//! reconcile sees both writes, instead of one silently undoing the other.

pub mod goaway;
pub mod leader;
mod plan;
pub mod pod;
pub mod pools;
pub mod volume;

use goaway::GoingAway;
use plan::*;
pub use plan::{plan, Action, Plan, Seen};

use crate::controller::leader::LeaseConfig;
use crate::controller::pod::{PodConfig, SIDECAR_CONTAINER};
use crate::model::crd::{SessionLivedBackend, LABEL_MANAGED_BY, LABEL_NODE, MANAGED_BY};
use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use spawner_core::lifecycle::StopReason;
use spawner_core::time::Millis;
use spawner_core::{BackendId, State};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, instrument, warn};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("publishing an Event: {0}")]
    Event(#[source] kube::Error),
    #[error("the object has no {0}")]
    MissingField(&'static str),
    #[error("the SessionLivedBackend resource is not installed or not readable ({0}); apply deploy/kubernetes/crd.yaml first")]
    CrdMissing(#[source] kube::Error),
    #[error("leader election needs a namespace for its Lease: set --namespace")]
    LeaseNeedsNamespace,
    #[error("leadership lost: stopping, so that only the new leader reconciles")]
    LeadershipLost,
    #[error("no randomness for a backend's secret: {0}")]
    Secret(String),
}

impl Error {
    /// A write lost a race with another writer: retry soon, it is not a failure.
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.is_conflict())
    }
}

/// The controller's settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub pod: PodConfig,
    /// How long a terminal object stays (so that clients see how it ended) before it is deleted.
    pub retention: Duration,
    /// The longest a live object goes without a reconcile, whatever happens.
    pub resync: Duration,
    /// The router's key: each new Pod's sidecar gets the router's proof for its backend
    /// (`pod::add_router_proof`). Without it, sidecars trust no one's forwarding headers.
    pub router_key: Option<crate::model::router_key::RouterKey>,
    /// The access key: a token-mode backend's sidecar gets that backend's own key derived
    /// from it (`pod::add_access_key`). Without it, sidecars check no access of their own.
    pub access_key: Option<spawner_proxy::access::MasterKey>,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub config: ControllerConfig,
    /// The clock; tests fix it.
    pub now: Box<dyn Fn() -> Millis + Send + Sync>,
    /// Consecutive failures per object, for the error policy's backoff.
    failures: Mutex<HashMap<ObjectRef<SessionLivedBackend>, u32>>,
    /// The watch caches of Pods and Services; `None` reads them fresh (one GET each).
    pub children: Option<Children>,
    /// What this controller's own writes did that its caches may not show yet.
    written: Mutex<HashMap<ObjectRef<SessionLivedBackend>, Written>>,
}

/// One object's writes by this controller that its watch cache may lag behind: a
/// reconcile handed a version its own writes replaced would plan from the past and
/// write again (a conflict, or a label set twice), so it waits for the cache instead.
#[derive(Debug, Default)]
struct Written {
    /// `resourceVersion`s this controller's writes replaced.
    superseded: Vec<String>,
    /// The uid of the Pod this controller deleted: its absence is the stop's end, not a
    /// cache's lag.
    deleted_pod: Option<String>,
    /// This controller deleted the object's Service.
    deleted_service: bool,
}

/// The controller's caches of the Pods and Services it made (its own watches, the ones
/// that also trigger reconciles).
#[derive(Clone)]
pub struct Children {
    pub pods: Store<Pod>,
    pub services: Store<Service>,
}

/// How long after entering Constructed (or any later live state) a child missing from the
/// cache is taken for the cache's lag rather than a loss: the child's own watch event
/// brings the next reconcile well within it.
const CACHE_LAG: Millis = 5_000;
/// The longest a reconcile waits for the caches' first list at start-up.
const CACHE_FILL: Duration = Duration::from_secs(30);
/// How soon to look again while a child may only be missing from the cache.
const CACHE_RECHECK: Duration = Duration::from_millis(250);

impl Children {
    /// The caches once they hold their first full list (at most [`CACHE_FILL`]: after
    /// that a missing child is read fresh, see [`Self::seen`]).
    async fn ready(&self) -> &Self {
        let _ = tokio::time::timeout(CACHE_FILL, async {
            let _ = self.pods.wait_until_ready().await;
            let _ = self.services.wait_until_ready().await;
        })
        .await;
        self
    }

    /// The Pod and Service of `name`, and whether to believe their absence. A live object
    /// past Submitted has a Pod and a Service (the controller made both before recording
    /// Constructed): missing from a cache that may lag, they are looked for again soon,
    /// then read fresh once [`CACHE_LAG`] has passed.
    fn seen(
        &self,
        obj: &SessionLivedBackend,
        ns: &str,
        name: &str,
        now: Millis,
        pod_deleted: bool,
    ) -> (Option<Pod>, Option<Service>, Lookup) {
        let pod = self
            .pods
            .get(&ObjectRef::new(name).within(ns))
            .map(|p| (*p).clone());
        let service = self
            .services
            .get(&ObjectRef::new(name).within(ns))
            .map(|s| (*s).clone());
        let status = obj.status.as_ref();
        let state = status.and_then(|s| s.state);
        // A sleeper has no Pod: its absence is no cache's lag.
        let made = state
            .is_some_and(|s| s >= State::Constructed && !s.is_terminal() && s != State::Sleeping);
        if !made || ((pod.is_some() || pod_deleted) && service.is_some()) {
            return (pod, service, Lookup::Cached);
        }
        let since = status.and_then(|s| s.entered_at()).unwrap_or(0);
        if now.saturating_sub(since) < CACHE_LAG {
            (pod, service, Lookup::Wait)
        } else {
            (pod, service, Lookup::Fresh)
        }
    }
}

/// What to do about a child the cache does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// The cache is believed.
    Cached,
    /// Probably the cache's lag: look again soon.
    Wait,
    /// Missing for a while: read the API server.
    Fresh,
}

impl Context {
    pub fn new(
        client: Client,
        reporter: Reporter,
        config: ControllerConfig,
        now: Box<dyn Fn() -> Millis + Send + Sync>,
    ) -> Self {
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            now,
            failures: Mutex::new(HashMap::new()),
            children: None,
            written: Mutex::new(HashMap::new()),
        }
    }

    fn written(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<SessionLivedBackend>, Written>> {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `obj` is a version this controller's own writes already replaced.
    fn is_superseded(&self, obj: &SessionLivedBackend) -> bool {
        let key = ObjectRef::from_obj(obj);
        let mut written = self.written();
        let Some(w) = written.get_mut(&key) else {
            return false;
        };
        let rv = obj.resource_version();
        if rv.as_ref().is_some_and(|rv| w.superseded.contains(rv)) {
            return true;
        }
        // The cache has caught up with (or gone past) the writes.
        w.superseded.clear();
        false
    }

    /// Whether this controller deleted `obj`'s Pod (by uid, or any if `uid` is `None`).
    fn deleted_pod(&self, obj: &SessionLivedBackend, uid: Option<&str>) -> bool {
        self.written()
            .get(&ObjectRef::from_obj(obj))
            .and_then(|w| w.deleted_pod.as_deref())
            .is_some_and(|d| uid.is_none_or(|u| u == d))
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<SessionLivedBackend>, u32>> {
        // A panic elsewhere while holding the lock leaves only counters behind: keep going.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Tolerates the answers that mean "already as wanted": AlreadyExists on create, NotFound
/// on delete.
fn tolerate<T>(
    res: Result<T, kube::Error>,
    ok: fn(&kube::core::Status) -> bool,
) -> Result<(), Error> {
    match res {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if ok(&s) => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Reads the Pod and Service, plans, and carries the plan out.
#[instrument(skip(obj, ctx), fields(name = %obj.name_any(), namespace = obj.namespace().unwrap_or_default()))]
pub async fn reconcile(obj: Arc<SessionLivedBackend>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let ns = obj.namespace().ok_or(Error::MissingField("namespace"))?;
    let name = obj
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingField("name"))?;
    if obj.metadata.deletion_timestamp.is_some() {
        // Being deleted: the garbage collector removes what it owns.
        ctx.written().remove(&ObjectRef::from_obj(&*obj));
        return Ok(Requeue::await_change());
    }
    if ctx.is_superseded(&obj) {
        // The watch event of this controller's own write is on its way, and brings the
        // next reconcile; this is a look back.
        return Ok(Requeue::requeue(CACHE_RECHECK));
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let slabs: Api<SessionLivedBackend> = Api::namespaced(ctx.client.clone(), &ns);
    let now = (ctx.now)();
    let (pod, service) = match &ctx.children {
        Some(children) => {
            match children
                .ready()
                .await
                .seen(&obj, &ns, &name, now, ctx.deleted_pod(&obj, None))
            {
                (pod, service, Lookup::Cached) => (pod, service),
                (_, _, Lookup::Wait) => return Ok(Requeue::requeue(CACHE_RECHECK)),
                (pod, service, Lookup::Fresh) => {
                    let pod = match pod {
                        Some(p) => Some(p),
                        None => pods.get_opt(&name).await?,
                    };
                    let service = match service {
                        Some(s) => Some(s),
                        None => services.get_opt(&name).await?,
                    };
                    (pod, service)
                }
            }
        }
        None => (pods.get_opt(&name).await?, services.get_opt(&name).await?),
    };
    let seen = Seen {
        pod: pod.as_ref(),
        service: service.as_ref(),
        now,
    };
    let plan = plan(&obj, &seen, &ctx.config);
    let known = crate::model::read::status(&obj).history.len();
    // The versions this reconcile's writes replace: all but the last one written.
    let mut versions: Vec<String> = obj.resource_version().into_iter().collect();
    // Why a Pod deleted now is stopped: the status as this plan leaves it says.
    let mut stop_reason = obj.status.as_ref().and_then(|s| s.stop_reason.clone());
    for action in plan.actions {
        debug!(?action, "carrying out");
        match action {
            Action::CreatePod(mut p) => {
                // The backend's own secret, made now: see `pod::add_secret`.
                let secret = BackendId::generate().map_err(|e| Error::Secret(e.to_string()))?;
                crate::controller::pod::add_secret(
                    &mut p,
                    secret.as_str(),
                    ctx.config.pod.sidecar_port,
                );
                if let Some(key) = &ctx.config.router_key {
                    crate::controller::pod::add_router_proof(&mut p, &key.proof(&name));
                }
                if crate::model::access::mode_of(&obj) == spawner_core::access::AccessMode::Token {
                    match &ctx.config.access_key {
                        Some(master) => crate::controller::pod::add_access_key(
                            &mut p,
                            &name,
                            &crate::model::access::backend_key_text(master, &name),
                        ),
                        None => {
                            warn!(backend = %name, "a token-mode backend, and no SPAWNER_ACCESS_KEY: its sidecar checks no access (the router still does)")
                        }
                    }
                }
                match pods.create(&PostParams::default(), &p).await {
                    Err(kube::Error::Api(s)) if refused(&s) => {
                        return fail_refused(&obj, &slabs, &ctx, "Pod", &s).await;
                    }
                    res => tolerate(res, |s| s.is_already_exists())?,
                }
            }
            Action::CreateClaim(claim) => {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
                match claims.create(&PostParams::default(), &claim).await {
                    Err(kube::Error::Api(s)) if refused(&s) => {
                        return fail_refused(&obj, &slabs, &ctx, "PersistentVolumeClaim", &s).await;
                    }
                    res => tolerate(res, |s| s.is_already_exists())?,
                }
            }
            Action::CreateService(svc) => {
                match services.create(&PostParams::default(), &svc).await {
                    Err(kube::Error::Api(s)) if refused(&s) => {
                        return fail_refused(&obj, &slabs, &ctx, "Service", &s).await;
                    }
                    res => tolerate(res, |s| s.is_already_exists())?,
                }
            }
            Action::PatchStatus(status) => {
                stop_reason.clone_from(&status.stop_reason);
                let patch = crate::model::write::status_patch(&obj, &status);
                let updated = slabs
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                versions.extend(updated.resource_version());
                remember(&ctx, &obj, &versions);
                for entry in status.history.iter().skip(known) {
                    info!(state = %entry.state, reason = entry.reason.as_deref().unwrap_or(""), "state");
                    crate::model::write::publish_state(&ctx.recorder, &obj, entry)
                        .await
                        .map_err(Error::Event)?;
                }
            }
            Action::LabelNode(node) => {
                let patch = json!({"metadata": {"labels": {LABEL_NODE: node}}});
                let updated = slabs
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                versions.extend(updated.resource_version());
                remember(&ctx, &obj, &versions);
            }
            Action::DeletePod { grace_seconds } => {
                let uid = pod.as_ref().and_then(|p| p.metadata.uid.clone());
                if ctx.deleted_pod(&obj, uid.as_deref()) {
                    // Deleted already; the cache has not shown it yet.
                    continue;
                }
                if let Some(p) = pod.as_ref() {
                    // A sleeper's clients hear "sleeping"; a stop's, why it stops.
                    let asleep = obj.status.as_ref().and_then(|s| s.state) == Some(State::Sleeping);
                    let why = if asleep {
                        Some(GoingAway::Sleep)
                    } else {
                        stop_reason
                            .as_deref()
                            .and_then(StopReason::parse)
                            .map(GoingAway::Stop)
                    };
                    go_away(&obj, p, why, grace_seconds).await;
                }
                let dp = DeleteParams {
                    grace_period_seconds: Some(u32::try_from(grace_seconds).unwrap_or(0)),
                    preconditions: pod
                        .as_ref()
                        .and_then(|p| p.metadata.uid.clone())
                        .map(|uid| Preconditions {
                            uid: Some(uid),
                            resource_version: None,
                        }),
                    ..DeleteParams::default()
                };
                tolerate(pods.delete(&name, &dp).await, |s| s.is_not_found())?;
                if let Some(uid) = uid {
                    ctx.written()
                        .entry(ObjectRef::from_obj(&*obj))
                        .or_default()
                        .deleted_pod = Some(uid);
                }
            }
            Action::DeleteService => {
                let key = ObjectRef::from_obj(&*obj);
                if ctx.written().get(&key).is_some_and(|w| w.deleted_service) {
                    continue;
                }
                let dp = DeleteParams {
                    preconditions: service.as_ref().and_then(|s| s.metadata.uid.clone()).map(
                        |uid| Preconditions {
                            uid: Some(uid),
                            resource_version: None,
                        },
                    ),
                    ..DeleteParams::default()
                };
                tolerate(services.delete(&name, &dp).await, |s| {
                    s.is_not_found() || s.is_conflict()
                })?;
                ctx.written().entry(key).or_default().deleted_service = true;
            }
            Action::DeleteObject => {
                let dp = DeleteParams {
                    preconditions: obj.metadata.uid.clone().map(|uid| Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                tolerate(slabs.delete(&name, &dp).await, |s| s.is_not_found())?;
                ctx.failures().remove(&ObjectRef::from_obj(&*obj));
                ctx.written().remove(&ObjectRef::from_obj(&*obj));
                return Ok(Requeue::await_change());
            }
        }
    }
    ctx.failures().remove(&ObjectRef::from_obj(&*obj));
    Ok(Requeue::requeue(plan.requeue_after))
}

/// Records that `versions` but the last (the one just written) are superseded for `obj`.
fn remember(ctx: &Context, obj: &SessionLivedBackend, versions: &[String]) {
    let (_, older) = versions.split_last().unwrap_or((&String::new(), &[]));
    ctx.written()
        .entry(ObjectRef::from_obj(obj))
        .or_default()
        .superseded = older.to_vec();
}

/// Tells the backend's sidecar that it goes away for `reason` before its Pod is deleted
/// (`crate::controller::goaway`), so that WebSocket clients get the close frame 1001 first. Best effort
/// and bounded: a sidecar that cannot be reached does not hold the stop back (its clients
/// then see their connections end with the Pod).
async fn go_away(
    obj: &SessionLivedBackend,
    pod: &Pod,
    reason: Option<GoingAway>,
    grace_seconds: i64,
) {
    // The Pod's own address first: a sleeper's status no longer holds it.
    let pod_addr = || {
        let ip = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, obj.status.as_ref()?.port?))
    };
    let (Some(reason), Some(addr), Some(secret)) = (
        reason,
        pod_addr().or_else(|| crate::model::read::events_addr(obj)),
        crate::model::read::secret_of(pod),
    ) else {
        return;
    };
    let running = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.name == SIDECAR_CONTAINER && c.state.as_ref().is_some_and(|s| s.running.is_some())
            })
        });
    if !running {
        return;
    }
    let grace = u64::try_from(grace_seconds).unwrap_or(0);
    match crate::controller::goaway::tell(addr, &secret, reason, grace).await {
        Ok(()) => info!(%addr, reason = reason.close_reason(), "sidecar told its clients"),
        Err(e) => {
            warn!(%addr, error = %e, "telling the sidecar to go away failed; deleting the Pod anyway")
        }
    }
}

/// Whether the API server refused a child for what it is (admission: Pod Security,
/// ResourceQuota, LimitRange, a webhook; or validation), which retrying cannot change.
fn refused(s: &kube::core::Status) -> bool {
    matches!(s.code, 400 | 403 | 422)
}

/// Fails the backend at once with the API server's own words, as status and Event, instead
/// of retrying a create that cannot succeed until its startup timeout.
async fn fail_refused(
    obj: &SessionLivedBackend,
    slabs: &Api<SessionLivedBackend>,
    ctx: &Context,
    what: &str,
    refusal: &kube::core::Status,
) -> Result<Requeue, Error> {
    let now = (ctx.now)();
    let mut status = crate::model::read::status(obj);
    let known = status.history.len();
    if status.state.is_none() {
        let created = obj
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(now, millis_of);
        status.enter(State::Submitted, created, None, None);
    }
    let reason = format!("the API server refused its {what}: {}", refusal.message);
    warn!(name = %obj.name_any(), %reason, "failed");
    status.enter(State::Failed, now, Some(reason), None);
    let patch = crate::model::write::status_patch(obj, &status);
    slabs
        .patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    for entry in status.history.iter().skip(known) {
        info!(state = %entry.state, reason = entry.reason.as_deref().unwrap_or(""), "state");
        crate::model::write::publish_state(&ctx.recorder, obj, entry)
            .await
            .map_err(Error::Event)?;
    }
    ctx.failures().remove(&ObjectRef::from_obj(obj));
    Ok(Requeue::requeue(ctx.config.retention))
}

/// Retries soon after a lost race, and with exponential backoff (1 s doubling to 5 min)
/// after anything else.
pub fn error_policy(obj: Arc<SessionLivedBackend>, error: &Error, ctx: Arc<Context>) -> Requeue {
    if error.is_conflict() {
        debug!(name = %obj.name_any(), "conflict; retrying");
        return Requeue::requeue(Duration::from_millis(500));
    }
    let mut failures = ctx.failures();
    let n = failures.entry(ObjectRef::from_obj(&*obj)).or_insert(0);
    *n = n.saturating_add(1);
    let delay = Duration::from_secs(1u64 << (*n - 1).min(8)).min(Duration::from_secs(300));
    warn!(name = %obj.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Runs the controller until `shutdown` resolves (the binary: SIGTERM or Ctrl-C), over one
/// namespace or all of them.
///
/// With `lease`, it first waits to hold the leader Lease (in `namespace`), and returns
/// [`Error::LeadershipLost`] if it stops holding it. A standby stops at once on `shutdown`
/// (it has nothing to finish); a leader finishes its reconciles and then releases the
/// Lease, so that a standby takes over within its retry interval instead of waiting out
/// the lease duration.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    config: ControllerConfig,
    reporter: Reporter,
    lease: Option<LeaseConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // Listened to from the start: a standby waiting for the Lease must hear it too.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let (slabs, pods, services): (Api<SessionLivedBackend>, Api<Pod>, Api<Service>) =
        match namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    slabs
        .list(&ListParams::default().limit(1))
        .await
        .map_err(Error::CrdMissing)?;
    let children = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    // The children's watches: the Controller's triggers and the reconciles' caches at once.
    let (pod_store, pod_writer) = reflector::store();
    let (service_store, service_writer) = reflector::store();
    let pod_events = watcher::watcher(pods, children.clone())
        .default_backoff()
        .reflect(pod_writer)
        .touched_objects();
    let service_events = watcher::watcher(services, children)
        .default_backoff()
        .reflect(service_writer)
        .touched_objects();
    let mut context = Context::new(
        client,
        reporter,
        config,
        Box::new(spawner_core::time::now_millis),
    );
    context.children = Some(Children {
        pods: pod_store.clone(),
        services: service_store.clone(),
    });
    let ctx = Arc::new(context);
    let leases = match (&lease, namespace) {
        (Some(_), Some(ns)) => Some(Api::<Lease>::namespaced(ctx.client.clone(), ns)),
        (Some(_), None) => return Err(Error::LeaseNeedsNamespace),
        (None, _) => None,
    };
    if let (Some(api), Some(cfg)) = (&leases, &lease) {
        info!(lease = %cfg.name, identity = %cfg.identity, "waiting to lead");
        tokio::select! {
            () = leader::acquire(api, cfg) => {}
            () = stopped(stop_rx.clone()) => {
                info!("stopped before leading");
                return Ok(());
            }
        }
    }
    info!(
        namespace = namespace.unwrap_or("(all)"),
        "controller started"
    );
    let pools = crate::controller::pools::reconcile_pools(
        ctx.client.clone(),
        namespace.map(str::to_string),
        Duration::from_secs(1),
        stop_rx.clone(),
    );
    let controller = Controller::new(slabs, watcher::Config::default().any_semantic())
        .owns_stream(pod_events)
        .owns_stream(service_events)
        .graceful_shutdown_on(stopped(stop_rx))
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(name = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        });
    let controller = async move {
        tokio::join!(controller, pools);
    };
    match (&leases, &lease) {
        (Some(api), Some(cfg)) => {
            tokio::select! {
                () = controller => {}
                () = leader::hold(api, cfg) => return Err(Error::LeadershipLost),
            }
            leader::release(api, cfg).await;
        }
        _ => controller.await,
    }
    info!("controller stopped");
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::controller::pod::tests::{config as pod_config, object};
    use crate::controller::pod::{build_pod, build_service};
    use crate::model::crd::{ANNOTATION_STOP, ANNOTATION_STOP_HARD};
    use crate::model::status::SessionLivedBackendStatus;
    use serde_json::Value;

    pub(crate) const T0: Millis = 1_700_000_000_000;

    pub(crate) fn config() -> ControllerConfig {
        ControllerConfig {
            pod: pod_config(),
            retention: Duration::from_secs(60),
            resync: Duration::from_secs(300),
            router_key: None,
            access_key: None,
        }
    }

    /// An object as the API server returns it: namespaced, with a uid and creation time.
    pub(crate) fn stored(name: &str) -> SessionLivedBackend {
        let mut obj = object(name);
        obj.metadata.resource_version = Some("7".into());
        obj.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_millisecond(T0).expect("valid time"),
            ));
        obj
    }

    /// The Pod the controller creates for `obj`, as the API server would show it, with a
    /// node, an IP and the application container in `app` (a ContainerState as JSON).
    pub(crate) fn pod_of(obj: &SessionLivedBackend, node: Option<&str>, app: Option<Value>) -> Pod {
        let mut pod = build_pod(obj, &config().pod).expect("pod");
        pod.metadata.uid = Some("pod-uid".into());
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = node.map(str::to_string);
        }
        let mut status = json!({"phase": "Pending"});
        if node.is_some() {
            status["podIP"] = json!("10.0.0.9");
        }
        if let Some(state) = app {
            status["containerStatuses"] = json!([{
                "name": "app", "image": "registry.example/app:1", "imageID": "",
                "ready": false, "restartCount": 0, "state": state
            }]);
        }
        pod.status = Some(serde_json::from_value(status).expect("pod status"));
        pod
    }

    fn with_state(mut obj: SessionLivedBackend, states: &[State]) -> SessionLivedBackend {
        let mut s = SessionLivedBackendStatus::default();
        for (i, st) in states.iter().enumerate() {
            s.enter(*st, T0 + i as Millis, None, None);
        }
        obj.status = Some(s);
        obj
    }

    fn status_of(plan: &Plan) -> &SessionLivedBackendStatus {
        plan.actions
            .iter()
            .find_map(|a| match a {
                Action::PatchStatus(s) => Some(&**s),
                _ => None,
            })
            .expect("a status patch")
    }

    fn states(plan: &Plan) -> Vec<State> {
        status_of(plan).history.iter().map(|h| h.state).collect()
    }

    fn seen<'a>(pod: Option<&'a Pod>, service: Option<&'a Service>, now: Millis) -> Seen<'a> {
        Seen { pod, service, now }
    }

    #[test]
    fn a_new_object_gets_its_pod_and_service_and_is_constructed() {
        // First Submitted alone, at the object's creation time.
        let new = stored("b1");
        let first = plan(&new, &seen(None, None, T0 + 50), &config());
        assert_eq!(first.actions.len(), 1);
        assert_eq!(states(&first), [State::Submitted]);
        let mut obj = new.clone();
        obj.status = Some(status_of(&first).clone());
        let plan = plan(&obj, &seen(None, None, T0 + 100), &config());
        assert!(
            matches!(&plan.actions[0], Action::CreatePod(p) if **p == build_pod(&obj, &config().pod).expect("pod"))
        );
        assert!(matches!(&plan.actions[1], Action::CreateService(_)));
        assert_eq!(states(&plan), [State::Submitted, State::Constructed]);
        assert_eq!(
            status_of(&plan).history[0].time,
            spawner_core::time::rfc3339(T0)
        );
        assert_eq!(plan.actions.len(), 3);
        // The startup timeout (300 s) is the next deadline.
        assert_eq!(plan.requeue_after, Duration::from_millis(300_000 - 100));
    }

    fn sleeper(states: &[State]) -> SessionLivedBackend {
        let mut obj = stored("b1");
        obj.spec.idle_action = Some("sleep".into());
        obj.spec.max_sleep_seconds = Some(60);
        with_state(obj, states)
    }

    #[test]
    fn a_sleeper_loses_its_pod_and_keeps_object_and_service() {
        let obj = sleeper(&[State::Submitted, State::Ready, State::Sleeping]);
        let svc = build_service(&obj, &config().pod);
        let pod = pod_of(&obj, Some("n"), Some(json!({"running": {}})));
        let p = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 1_000), &config());
        // Deleted gracefully, nothing else: no status change, no Service deleted.
        assert_eq!(p.actions, [Action::DeletePod { grace_seconds: 10 }]);
        // Going (deleting), then gone: nothing to do until a wake or its max sleep.
        let mut deleting = pod.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_millisecond(T0 + 1_000).expect("time"),
            ));
        let p = plan(
            &obj,
            &seen(Some(&deleting), svc.as_ref(), T0 + 2_000),
            &config(),
        );
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        let p = plan(&obj, &seen(None, svc.as_ref(), T0 + 3_000), &config());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        // Max sleep (60 s from entering Sleeping) sweeps it for good; no Pod to wait for.
        assert!(p.requeue_after <= Duration::from_secs(60));
        let p = plan(&obj, &seen(None, svc.as_ref(), T0 + 61_000), &config());
        let st = status_of(&p);
        assert_eq!(st.state, Some(State::Swept));
        assert_eq!(st.reason.as_deref(), Some("slept for max_sleep_seconds"));
        assert!(!p
            .actions
            .iter()
            .any(|a| matches!(a, Action::DeletePod { .. })));
    }

    #[test]
    fn a_waking_backend_gets_its_pod_again_once_the_old_one_is_gone() {
        let obj = sleeper(&[
            State::Submitted,
            State::Ready,
            State::Sleeping,
            State::Waking,
        ]);
        let svc = build_service(&obj, &config().pod);
        let mut old = pod_of(&obj, Some("n"), Some(json!({"running": {}})));
        old.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_millisecond(T0).expect("time"),
            ));
        let p = plan(&obj, &seen(Some(&old), svc.as_ref(), T0 + 1_000), &config());
        assert!(
            p.actions.is_empty(),
            "waits for the old Pod: {:?}",
            p.actions
        );
        assert_eq!(p.requeue_after, SHORT_WAIT);
        let p = plan(&obj, &seen(None, svc.as_ref(), T0 + 2_000), &config());
        assert!(
            matches!(&p.actions[..], [Action::CreatePod(pod)] if **pod == build_pod(&obj, &config().pod).expect("pod")),
            "{:?}",
            p.actions
        );
        // Its new Pod runs: the address is recorded, the state stays Waking (the sweeper
        // marks it Ready when its sidecar says so).
        let mut new = pod_of(&obj, Some("n2"), Some(json!({"running": {}})));
        new.metadata.uid = Some("pod-uid-2".into());
        let p = plan(&obj, &seen(Some(&new), svc.as_ref(), T0 + 3_000), &config());
        let st = status_of(&p);
        assert_eq!(st.state, Some(State::Waking));
        assert_eq!(st.ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(st.node_name.as_deref(), Some("n2"));
        // Not Ready within its startup timeout (300 s), counted from the wake: Failed.
        let late = T0 + 3 + 300_000;
        let p = plan(&obj, &seen(Some(&new), svc.as_ref(), late), &config());
        let st = status_of(&p);
        assert_eq!(st.stop_reason.as_deref(), Some("startup timeout"));
        assert!(p.actions.contains(&Action::DeletePod { grace_seconds: 10 }));
    }

    #[test]
    fn a_sleeper_gets_its_volume_before_its_first_pod() {
        let mut cfg = config();
        cfg.pod.sleep_volume = Some(crate::controller::volume::SleepVolume {
            size: "1Gi".into(),
            class: None,
        });
        let obj = sleeper(&[State::Submitted]);
        let p = plan(&obj, &seen(None, None, T0 + 100), &cfg);
        assert!(
            matches!(&p.actions[0], Action::CreateClaim(c) if c.metadata.name.as_deref() == Some("b1"))
        );
        assert!(matches!(&p.actions[1], Action::CreatePod(_)));
        // Woken, it asks for it again: a member claimed to sleep had none at its first
        // start (the API server's AlreadyExists is the usual answer).
        let woken = sleeper(&[
            State::Submitted,
            State::Ready,
            State::Sleeping,
            State::Waking,
        ]);
        let svc = build_service(&woken, &cfg.pod);
        let p = plan(&woken, &seen(None, svc.as_ref(), T0 + 100), &cfg);
        assert!(matches!(
            &p.actions[..],
            [Action::CreateClaim(_), Action::CreatePod(_)]
        ));
        // A backend swept when idle keeps nothing: no claim.
        let obj = with_state(stored("b2"), &[State::Submitted]);
        let p = plan(&obj, &seen(None, None, T0 + 100), &cfg);
        assert!(!p
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreateClaim(_))));
    }

    #[test]
    fn scheduling_and_running_are_recorded_with_node_url_and_label() {
        let obj = with_state(stored("b1"), &[State::Submitted, State::Constructed]);
        let svc = build_service(&obj, &config().pod);
        let pod = pod_of(&obj, Some("node-a"), Some(json!({"running": {}})));
        let plan = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 5_000), &config());
        let st = status_of(&plan);
        assert_eq!(
            states(&plan),
            [
                State::Submitted,
                State::Constructed,
                State::Scheduled,
                State::Running
            ]
        );
        assert_eq!(st.node_name.as_deref(), Some("node-a"));
        assert_eq!(st.url.as_deref(), Some("http://spawner.test/p/b1/"));
        assert_eq!(st.ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(st.port, Some(9090));
        assert!(st.scheduled && st.running && !st.ready);
        assert_eq!(
            plan.actions.last(),
            Some(&Action::LabelNode("node-a".into()))
        );
    }

    #[test]
    fn exits_end_the_backend_by_spawner_core_rules() {
        let obj = with_state(stored("b1"), &[State::Submitted, State::Running]);
        let svc = build_service(&obj, &config().pod);
        let cases = [
            (
                json!({"terminated": {"exitCode": 3}}),
                State::Failed,
                "exited with code 3 before it became ready",
                Some(3),
            ),
            (
                json!({"terminated": {"exitCode": 0}}),
                State::Terminated,
                "exited with code 0 before it became ready",
                Some(0),
            ),
            (
                json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
                State::Failed,
                "out of memory: killed at its memory limit before it became ready",
                Some(137),
            ),
        ];
        for (app, to, why, code) in cases {
            let pod = pod_of(&obj, Some("n"), Some(app));
            let plan = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 1_000), &config());
            let st = status_of(&plan);
            assert_eq!(st.state, Some(to));
            assert_eq!(st.reason.as_deref(), Some(why));
            assert_eq!(st.exit_code, code);
            // The exited Pod is kept for its log until the object is deleted.
            assert!(!plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::DeletePod { .. })));
        }
    }

    #[test]
    fn a_crash_s_termination_message_is_in_the_reason() {
        let obj = with_state(stored("b1"), &[State::Submitted, State::Ready]);
        let svc = build_service(&obj, &config().pod);
        let app = json!({"terminated": {"exitCode": 2, "message": "panic: no config\n"}});
        let pod = pod_of(&obj, Some("n"), Some(app));
        let p = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 1_000), &config());
        assert_eq!(
            status_of(&p).reason.as_deref(),
            Some("exited with code 2: panic: no config")
        );
        // Once Failed, the exited Pod still stays.
        let mut ended = obj.clone();
        ended.status = Some(status_of(&p).clone());
        let p = plan(
            &ended,
            &seen(Some(&pod), svc.as_ref(), T0 + 2_000),
            &config(),
        );
        assert!(!p
            .actions
            .iter()
            .any(|a| matches!(a, Action::DeletePod { .. })));
    }

    #[test]
    fn a_pod_deleted_by_someone_else_is_lost_even_if_its_app_exits_0() {
        let obj = with_state(stored("b1"), &[State::Submitted, State::Ready]);
        let svc = build_service(&obj, &config().pod);
        for app in [
            json!({"running": {}}),
            json!({"terminated": {"exitCode": 0}}),
        ] {
            let mut pod = pod_of(&obj, Some("n"), Some(app));
            pod.metadata.deletion_timestamp = obj.metadata.creation_timestamp.clone();
            let p = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 1_000), &config());
            let st = status_of(&p);
            assert_eq!(st.state, Some(State::Failed));
            assert_eq!(
                st.reason.as_deref(),
                Some("lost: its Pod was deleted, not by Spawner")
            );
        }
    }

    #[test]
    fn an_image_that_cannot_be_pulled_fails_at_once() {
        let obj = with_state(stored("b1"), &[State::Submitted, State::Constructed]);
        let svc = build_service(&obj, &config().pod);
        let app = json!({"waiting": {"reason": "ImagePullBackOff", "message": "not found"}});
        let pod = pod_of(&obj, Some("n"), Some(app));
        let plan = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 1_000), &config());
        let st = status_of(&plan);
        assert_eq!(st.state, Some(State::Failed));
        assert_eq!(
            st.reason.as_deref(),
            Some("image cannot be pulled: ImagePullBackOff: not found")
        );
        assert!(plan
            .actions
            .contains(&Action::DeletePod { grace_seconds: 0 }));
    }

    #[test]
    fn a_dead_sidecar_fails_the_backend() {
        let obj = with_state(stored("b1"), &[State::Submitted, State::Ready]);
        let svc = build_service(&obj, &config().pod);
        let mut pod = pod_of(&obj, Some("n"), Some(json!({"running": {}})));
        if let Some(st) = pod.status.as_mut() {
            let mut sidecar = st.container_statuses.as_ref().expect("statuses")[0].clone();
            sidecar.name = SIDECAR_CONTAINER.into();
            sidecar.state =
                serde_json::from_value(json!({"terminated": {"exitCode": 101}})).expect("state");
            st.container_statuses
                .get_or_insert_with(Vec::new)
                .push(sidecar);
        }
        let plan = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 1_000), &config());
        let st = status_of(&plan);
        assert_eq!(st.state, Some(State::Failed));
        assert_eq!(
            st.reason.as_deref(),
            Some("the sidecar exited with code 101: the backend cannot be reached")
        );
        assert!(plan
            .actions
            .contains(&Action::DeletePod { grace_seconds: 0 }));
    }

    #[test]
    fn a_lost_pod_fails_the_backend() {
        let obj = with_state(stored("b1"), &[State::Submitted, State::Running]);
        let plan = plan(&obj, &seen(None, None, T0 + 1_000), &config());
        assert_eq!(status_of(&plan).state, Some(State::Failed));
        assert!(!plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreatePod(_))));
    }

    #[test]
    fn terminate_annotation_stops_gracefully_or_hard() {
        let mut obj = with_state(stored("b1"), &[State::Submitted, State::Ready]);
        obj.metadata.annotations = Some(
            [(
                ANNOTATION_STOP.to_string(),
                "terminate requested".to_string(),
            )]
            .into_iter()
            .collect(),
        );
        let svc = build_service(&obj, &config().pod);
        let pod = pod_of(&obj, Some("n"), Some(json!({"running": {}})));
        let p = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 1_000), &config());
        let st = status_of(&p);
        assert_eq!(st.state, Some(State::Terminating));
        assert_eq!(st.stop_reason.as_deref(), Some("terminate requested"));
        assert!(p.actions.contains(&Action::DeletePod { grace_seconds: 10 }));
        obj.metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert(ANNOTATION_STOP_HARD.into(), "true".into());
        let p = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 1_000), &config());
        assert!(p.actions.contains(&Action::DeletePod { grace_seconds: 0 }));
    }

    /// A terminate of `spawner api` writes Terminating itself (`write::stop_now`): the
    /// controller carries the stop out from there, hard when the annotation says so.
    #[test]
    fn a_stop_the_api_entered_is_carried_out() {
        let mut obj = with_state(stored("b1"), &[State::Submitted, State::Ready]);
        let st = obj.status.as_mut().expect("status");
        st.enter(
            State::Terminating,
            T0 + 10,
            Some("terminate requested".into()),
            None,
        );
        st.stop_reason = Some("terminate requested".into());
        obj.metadata.annotations = Some(
            [
                (
                    ANNOTATION_STOP.to_string(),
                    "terminate requested".to_string(),
                ),
                (ANNOTATION_STOP_HARD.to_string(), "true".to_string()),
            ]
            .into_iter()
            .collect(),
        );
        let svc = build_service(&obj, &config().pod);
        let pod = pod_of(&obj, Some("n"), Some(json!({"running": {}})));
        let p = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 1_000), &config());
        assert!(p.actions.contains(&Action::DeletePod { grace_seconds: 0 }));
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::PatchStatus(_))),
            "Terminating is not entered twice: {:?}",
            p.actions
        );
    }

    #[test]
    fn a_terminate_before_the_pod_exists_never_creates_it() {
        let mut obj = with_state(stored("b1"), &[State::Submitted]);
        obj.metadata.annotations = Some(
            [(
                ANNOTATION_STOP.to_string(),
                "terminate requested".to_string(),
            )]
            .into_iter()
            .collect(),
        );
        let p = plan(&obj, &seen(None, None, T0 + 1_000), &config());
        assert_eq!(
            states(&p),
            [State::Submitted, State::Terminating, State::Terminated]
        );
        assert_eq!(p.actions.len(), 1, "only the status patch: {:?}", p.actions);
    }

    #[test]
    fn a_stop_ends_when_the_app_exits_or_the_pod_is_gone() {
        let mut obj = with_state(stored("b1"), &[State::Submitted, State::Ready]);
        let st = obj.status.as_mut().expect("status");
        st.enter(State::Terminating, T0 + 10, Some("idle".into()), None);
        st.stop_reason = Some("idle".into());
        let svc = build_service(&obj, &config().pod);
        let mut pod = pod_of(
            &obj,
            Some("n"),
            Some(json!({"terminated": {"exitCode": 143}})),
        );
        pod.metadata.deletion_timestamp = obj.metadata.creation_timestamp.clone();
        let p = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 2_000), &config());
        let st = status_of(&p);
        assert_eq!((st.state, st.exit_code), (Some(State::Swept), Some(143)));
        assert_eq!(st.reason.as_deref(), Some("idle"));
        assert!(!p
            .actions
            .iter()
            .any(|a| matches!(a, Action::DeletePod { .. })));
        let p = plan(&obj, &seen(None, None, T0 + 2_000), &config());
        assert_eq!(status_of(&p).state, Some(State::Swept));
    }

    #[test]
    fn a_terminating_backend_whose_delete_was_lost_is_deleted_again() {
        let mut obj = with_state(stored("b1"), &[State::Submitted, State::Ready]);
        let st = obj.status.as_mut().expect("status");
        st.enter(State::Terminating, T0 + 10, None, None);
        st.stop_reason = Some("terminate requested".into());
        let svc = build_service(&obj, &config().pod);
        let pod = pod_of(&obj, Some("n"), Some(json!({"running": {}})));
        let p = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 2_000), &config());
        assert_eq!(p.actions, [Action::DeletePod { grace_seconds: 10 }]);
        assert_eq!(p.requeue_after, SHORT_WAIT);
    }

    #[test]
    fn lifetime_limit_and_startup_timeout_stop_the_backend() {
        let mut obj = with_state(stored("b1"), &[State::Submitted, State::Ready]);
        obj.spec.lifetime_limit_seconds = Some(60);
        let svc = build_service(&obj, &config().pod);
        let pod = pod_of(&obj, Some("n"), Some(json!({"running": {}})));
        let p = plan(
            &obj,
            &seen(Some(&pod), svc.as_ref(), T0 + 59_000),
            &config(),
        );
        assert!(p
            .actions
            .iter()
            .all(|a| !matches!(a, Action::DeletePod { .. })));
        assert_eq!(p.requeue_after, Duration::from_secs(1));
        let p = plan(
            &obj,
            &seen(Some(&pod), svc.as_ref(), T0 + 60_000),
            &config(),
        );
        assert_eq!(status_of(&p).stop_reason.as_deref(), Some("lifetime limit"));

        let obj = with_state(stored("b2"), &[State::Submitted, State::Constructed]);
        let pod = pod_of(&obj, None, None);
        let p = plan(
            &obj,
            &seen(Some(&pod), svc.as_ref(), T0 + 300_000),
            &config(),
        );
        let st = status_of(&p);
        assert_eq!(st.stop_reason.as_deref(), Some("startup timeout"));
        assert!(p.actions.contains(&Action::DeletePod { grace_seconds: 10 }));
    }

    #[test]
    fn terminal_objects_stop_their_pod_and_are_deleted_after_retention() {
        // Marked Swept by the sweeper while its Pod still runs.
        let obj = with_state(
            stored("b1"),
            &[State::Submitted, State::Ready, State::Swept],
        );
        let svc = build_service(&obj, &config().pod);
        let pod = pod_of(&obj, Some("n"), Some(json!({"running": {}})));
        let p = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 1_000), &config());
        // Its Service goes at once: nothing reaches an ended backend.
        assert_eq!(
            p.actions,
            [
                Action::DeletePod { grace_seconds: 10 },
                Action::DeleteService
            ]
        );
        assert_eq!(p.requeue_after, Duration::from_millis(60_000 + 2 - 1_000));
        let p = plan(&obj, &seen(None, None, T0 + 60_002), &config());
        assert_eq!(p.actions, [Action::DeleteObject]);
    }

    #[test]
    fn a_pod_of_a_previous_object_with_the_same_name_is_not_adopted() {
        let obj = stored("b1");
        let mut old = pod_of(&obj, Some("n"), Some(json!({"running": {}})));
        if let Some(refs) = old.metadata.owner_references.as_mut() {
            refs[0].uid = "an-older-uid".into();
        }
        let p = plan(&obj, &seen(Some(&old), None, T0 + 1_000), &config());
        assert_eq!(states(&p), [State::Submitted]);
        assert!(p
            .actions
            .iter()
            .all(|a| matches!(a, Action::PatchStatus(_))));
        assert_eq!(p.requeue_after, SHORT_WAIT);
    }

    #[test]
    fn an_invalid_object_fails_without_a_pod() {
        let mut obj = with_state(stored("b1"), &[State::Submitted]);
        obj.spec.template.containers[0].image = None;
        let p = plan(&obj, &seen(None, None, T0), &config());
        let st = status_of(&p);
        assert_eq!(st.state, Some(State::Failed));
        assert!(st
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("invalid spec: spec.template.containers[0].image")));
        assert_eq!(p.actions.len(), 1);
    }

    #[test]
    fn the_sidecar_s_port_is_refused_as_the_application_s() {
        let mut obj = with_state(stored("b1"), &[State::Submitted]);
        obj.spec.http_port = Some(config().pod.sidecar_port);
        let p = plan(&obj, &seen(None, None, T0), &config());
        let st = status_of(&p);
        assert_eq!(st.state, Some(State::Failed));
        assert!(
            st.reason
                .as_deref()
                .is_some_and(|r| r
                    .starts_with("invalid spec: spec.httpPort: 9090 is the port of the sidecar")),
            "{:?}",
            st.reason
        );
        assert!(!p.actions.iter().any(|a| matches!(a, Action::CreatePod(_))));
    }

    #[test]
    fn nothing_to_do_means_no_request() {
        let mut obj = with_state(
            stored("b1"),
            &[
                State::Submitted,
                State::Constructed,
                State::Scheduled,
                State::Running,
            ],
        );
        let st = obj.status.as_mut().expect("status");
        st.node_name = Some("n".into());
        st.ip = Some("10.0.0.9".into());
        obj.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(LABEL_NODE.into(), "n".into());
        let svc = build_service(&obj, &config().pod);
        let pod = pod_of(&obj, Some("n"), Some(json!({"running": {}})));
        let p = plan(&obj, &seen(Some(&pod), svc.as_ref(), T0 + 1_000), &config());
        assert_eq!(p.actions, []);
    }
}
