//! `spawner proxy --kubernetes`: the router in front of every backend of a cluster.
//!
//! It watches the SessionLivedBackends into a reflector store and routes `/p/{id}/...`
//! (or `Host: {id}.{domain}`) to the backend's sidecar at the Pod IP and sidecar port the
//! controller recorded in the status: one map lookup per request, no DNS. Forwarding is
//! spawner-proxy's [`Forwarder`], the embedded server's own; the sidecar behind it does
//! the per-backend counting, so the router's [`Monitor`] only counts the router's traffic.
//!
//! The router is the edge (unless `--trusted-proxy` names the proxies in front of it): it
//! sets the forwarding headers, and proves itself to each sidecar with the backend's proof
//! ([`crate::model::router_key`]), so that the sidecar keeps them. With a domain, browsers asking
//! for a backend by path are sent to its own origin, as by the embedded server
//! ([`spawner_proxy::route::disposition`]).
//!
//! Token-mode backends (per-user access, [`crate::model::access`]) are checked here as the
//! embedded server checks them ([`spawner_proxy::gate`]): a connect token is exchanged for
//! the backend's cookie, requests and WebSocket upgrades need that cookie (or a bearer
//! connect token) of a standing grant, and the grants follow the objects by the watch, a
//! revocation closing its user's tunnels with 1008.

use crate::model::access::{BackendAccess, RouterGrants};
use crate::model::crd::SessionLivedBackend;
use crate::model::naming::Urls;
use crate::model::read::{target_of, Unavailable};
use crate::model::router_key::RouterKey;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use spawner_core::access::AccessMode;
use spawner_proxy::access::{self, MasterKey, Nonces};
use spawner_proxy::forward::message;
use spawner_proxy::gate::{self, Gate};
use spawner_proxy::route::{
    add_slash, disposition, fetch_mode, host_of, id_from_host, is_host_label, own_origin_only,
    to_own_origin, Disposition,
};
use spawner_proxy::{
    Forwarder, Monitor, ProxyBody, RequestHead, ResponsePolicy, Target, TrustedProxies,
};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

/// The router's settings.
#[derive(Debug, Clone, Default)]
pub struct RouterConfig {
    /// The namespace of the backends; all namespaces if `None` (then a lookup scans the
    /// store, as names are unique per namespace only).
    pub namespace: Option<String>,
    /// With a domain, `Host: {id}.{domain}` routes to backend `id`, and browsers asking
    /// for a backend by path are sent there.
    pub domain: Option<String>,
    /// Where browsers reach the router (`SPAWNER_PUBLIC_URL`): its scheme is that of the
    /// backends' own origins (`{scheme}://{id}.{domain}/`); `http` without it.
    pub public_url: Option<String>,
    /// The proxies in front of the router, whose forwarding headers it keeps.
    pub trusted_proxies: TrustedProxies,
    /// The key of the proofs sent to the sidecars; without it, none is sent (and the
    /// sidecars, which have none either, trust no one).
    pub key: Option<RouterKey>,
    /// The access key (`SPAWNER_ACCESS_KEY`): token-mode backends' cookies and connect tokens
    /// are verified with it. Without it, those backends are refused (never served open).
    pub access_key: Option<MasterKey>,
}

/// The routing table (a reflector store kept current by the watch) and the forwarder.
pub struct Router {
    store: Store<SessionLivedBackend>,
    synced: AtomicBool,
    config: RouterConfig,
    forwarder: Forwarder,
    monitor: Arc<Monitor>,
    /// Where browsers reach each backend, for redirects to its own origin.
    urls: Urls,
    /// Each backend's proof, made once ([`Router::proof`]), dropped when the backend's object
    /// is deleted: an HMAC per request would cost more than the rest of the routing.
    proofs: RwLock<HashMap<String, HeaderValue>>,
    /// Token-mode backends' keys and grants, kept in step with their objects by the watch.
    grants: RouterGrants,
    /// Single-use connect tokens used through this router (per replica: with N replicas a
    /// single-use token can be exchanged at most N times before it expires).
    nonces: Nonces,
    /// Browsers reach the router over HTTPS: cookies get `Secure` and a `__Host-` name.
    secure: bool,
    /// Writes `Waking` for a request to a sleeping backend; without it (a router over a
    /// store alone) such requests are answered 503.
    client: Option<Client>,
    /// Bumped on every change the watch brings: held requests wait on it.
    changes: tokio::sync::watch::Sender<u64>,
}

/// Where a request goes, from its path or host alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// For backend `id`; `path_prefix` is the length of `/p/{id}` under path routing.
    Backend {
        id: String,
        path_prefix: usize,
    },
    /// `/p/{id}` without the slash.
    AddSlash,
    /// The router's own `/healthz`.
    Health,
    NotFound,
}

/// Routes by `Host` first (with a domain), then by path. Pure.
pub fn route_of(domain: Option<&str>, host: Option<&str>, path: &str) -> Route {
    if let Some(id) = domain.zip(host).and_then(|(d, h)| id_from_host(d, h)) {
        return Route::Backend {
            id: id.to_string(),
            path_prefix: 0,
        };
    }
    if path == "/healthz" {
        return Route::Health;
    }
    let Some(rest) = path.strip_prefix("/p/") else {
        return Route::NotFound;
    };
    match rest.split_once('/') {
        Some((id, _)) if !id.is_empty() => Route::Backend {
            id: id.to_string(),
            path_prefix: 3 + id.len(),
        },
        None if !rest.is_empty() => Route::AddSlash,
        _ => Route::NotFound,
    }
}

impl Unavailable {
    /// `503` with `Retry-After` while it starts or stops, `410` once it ended.
    pub fn response(self) -> Response<ProxyBody> {
        match self {
            Unavailable::Starting => retry_later("this backend is starting; retry in a moment\n"),
            Unavailable::Asleep => retry_later("this backend is waking; retry in a moment\n"),
            Unavailable::Stopping => retry_later("this backend is stopping\n"),
            Unavailable::Ended => message(
                StatusCode::GONE,
                "this backend has ended; ask the application for a new one\n",
            ),
            Unavailable::BadAddress => message(
                StatusCode::BAD_GATEWAY,
                "the backend's address is malformed\n",
            ),
        }
    }
}

/// The reason of the `Waking` event a request writes.
const WOKEN_BY_REQUEST: &str = "woken by a request";

/// A wake that did not bring the backend up: `503`, to be retried (a retry wakes it again
/// if it went back to sleep, or finds it ended).
fn not_woken(text: &'static str) -> Response<ProxyBody> {
    retry_later(text)
}

fn retry_later(text: &'static str) -> Response<ProxyBody> {
    let mut resp = message(StatusCode::SERVICE_UNAVAILABLE, text);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

impl Router {
    /// A router over `store`; it answers `503` until [`Router::mark_synced`] (the first
    /// complete list), so that a fresh router never calls a live backend unknown.
    pub fn new(
        store: Store<SessionLivedBackend>,
        config: RouterConfig,
        client: Option<Client>,
    ) -> Arc<Self> {
        let urls = Urls::new(
            config.public_url.as_deref().unwrap_or("http://localhost"),
            config.domain.clone(),
        );
        Arc::new(Router {
            store,
            synced: AtomicBool::new(false),
            forwarder: Forwarder::new(),
            monitor: Arc::new(Monitor::new(0)),
            urls,
            proofs: RwLock::default(),
            grants: RouterGrants::default(),
            nonces: Nonces::default(),
            secure: config
                .public_url
                .as_deref()
                .is_some_and(|u| u.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("https:"))),
            config,
            client,
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Connections open through the router now.
    pub fn live_connections(&self) -> u64 {
        self.monitor.live()
    }

    fn lookup(&self, id: &str) -> Option<Arc<SessionLivedBackend>> {
        match &self.config.namespace {
            Some(ns) => self.store.get(&ObjectRef::new(id).within(ns)),
            None => self.store.find(|o| o.metadata.name.as_deref() == Some(id)),
        }
    }

    /// Answers one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let route = route_of(
            self.config.domain.as_deref(),
            host_of(&req),
            req.uri().path(),
        );
        match route {
            Route::Health if self.is_synced() => message(StatusCode::OK, "ok\n"),
            Route::Health => retry_later("the router is reading the backends\n"),
            Route::NotFound => message(StatusCode::NOT_FOUND, "not found\n"),
            Route::AddSlash => add_slash(&req),
            Route::Backend { id, path_prefix } => {
                let how = self.disposition(path_prefix, req.method().as_str(), fetch_mode(&req));
                let response = match how {
                    Disposition::Forward(response) => response,
                    // Only a host label can have an origin, or go into a `Location`.
                    _ if !is_host_label(&id) => return Refusal::Unknown.response(),
                    Disposition::Redirect => {
                        let rest = req.uri().path().get(path_prefix..).unwrap_or_default();
                        return to_own_origin(&self.urls.backend_url(&id), rest, req.uri().query());
                    }
                    Disposition::Refuse => return own_origin_only(&self.urls.backend_url(&id)),
                };
                let obj = match self.find(&id) {
                    Ok(obj) => obj,
                    Err(refusal) => return refusal.response(),
                };
                // Per-user access, before readiness (as the embedded server's): a connect
                // URL opened while the backend starts still leaves its cookie.
                let access = match self.access_of(&obj) {
                    Ok(a) => a,
                    Err(refusal) => return refusal.response(),
                };
                if let Some(a) = &access {
                    await_grant(a, &req).await;
                }
                let gate = access.as_deref().map(|a| Gate {
                    key: &a.key,
                    grants: &a.grants,
                    nonces: &self.nonces,
                });
                let now = spawner_core::time::now_millis() / 1000;
                let grant = match gate::admit(gate, &req, path_prefix, self.secure, now) {
                    Ok(grant) => grant,
                    Err(answer) => return *answer,
                };
                // A sleeper is woken, and the request held until it is Ready (after the
                // access check: only its users wake it).
                let obj = match target_of(&obj) {
                    Err(Unavailable::Asleep) => match self.wake(obj, &id).await {
                        Ok(obj) => obj,
                        Err(answer) => return answer,
                    },
                    _ => obj,
                };
                match self.target(&obj, &id, path_prefix, peer, response) {
                    Ok(mut target) => {
                        target.access = grant;
                        self.forwarder.forward(req, target).await
                    }
                    Err(refusal) => refusal.response(),
                }
            }
        }
    }

    /// Wakes the sleeping backend `obj` (writes `Waking` if it sleeps; the controller
    /// creates its Pod) and waits, by the watch, until it is Ready, at most its startup
    /// timeout. `503` with `Retry-After` if it does not wake: its start failed, it was
    /// stopped meanwhile, or it took too long.
    async fn wake(
        &self,
        obj: Arc<SessionLivedBackend>,
        id: &str,
    ) -> Result<Arc<SessionLivedBackend>, Response<ProxyBody>> {
        let Some(client) = &self.client else {
            return Err(Unavailable::Asleep.response());
        };
        let mut changes = self.changes.subscribe();
        let timeout = obj
            .spec
            .startup_timeout_seconds
            .unwrap_or(spawner_core::spec::DEFAULT_STARTUP_TIMEOUT_SECONDS);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
        if crate::model::read::state_of(&obj) == spawner_core::State::Sleeping {
            let ns = obj.namespace().unwrap_or_default();
            let api: Api<SessionLivedBackend> = Api::namespaced(client.clone(), &ns);
            let now = spawner_core::time::now_millis();
            let written =
                crate::model::write::wake(&api, id, Some((*obj).clone()), WOKEN_BY_REQUEST, now)
                    .await;
            match written {
                Ok(state) => info!(backend = %id, ?state, "woken by a request"),
                Err(e) => {
                    warn!(backend = %id, error = %e, "could not wake the backend");
                    return Err(not_woken(
                        "this backend could not be woken; retry in a moment\n",
                    ));
                }
            }
        }
        loop {
            changes.borrow_and_update();
            let Some(current) = self.lookup(id) else {
                return Err(Unavailable::Ended.response());
            };
            match target_of(&current) {
                Ok(_) => return Ok(current),
                Err(Unavailable::Asleep | Unavailable::Starting) => {}
                Err(_) => {
                    return Err(not_woken(
                        "this backend did not wake: its start failed or it was stopped\n",
                    ))
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(not_woken(
                    "this backend did not wake within its startup timeout\n",
                ));
            }
        }
    }

    /// What becomes of a request for a backend routed as `path_prefix` says (0: by host).
    fn disposition(&self, path_prefix: usize, method: &str, mode: Option<&[u8]>) -> Disposition {
        disposition(path_prefix > 0, self.config.domain.is_some(), method, mode)
    }

    /// The relay's route: requests for backends that can take them now; redirects and
    /// refusals are hyper's path's ([`Router::handle`]).
    fn relay_route(&self, head: &RequestHead, peer: SocketAddr) -> Option<Target> {
        match route_of(self.config.domain.as_deref(), head.host, head.path) {
            Route::Backend { id, path_prefix } => {
                match self.disposition(path_prefix, head.method, head.fetch_mode) {
                    Disposition::Forward(response) => {
                        let obj = self.find(&id).ok()?;
                        let access = self.access_of(&obj).ok()?;
                        let gate = access.as_deref().map(|a| Gate {
                            key: &a.key,
                            grants: &a.grants,
                            nonces: &self.nonces,
                        });
                        // An exchange, a bearer token or a refusal is hyper's path's.
                        let grant = gate::relay_admits(gate, head)?;
                        let mut target =
                            self.target(&obj, &id, path_prefix, peer, response).ok()?;
                        target.access = grant;
                        Some(target)
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The proof for backend `name`'s sidecar, if the router has a key: made at the first
    /// request, then read from the map.
    fn proof(&self, name: &str) -> Option<HeaderValue> {
        let key = self.config.key.as_ref()?;
        // A poisoned lock holds only proofs, each complete: go on with it.
        let cached = self
            .proofs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned();
        if cached.is_some() {
            return cached;
        }
        let made = HeaderValue::try_from(key.proof(name)).ok()?;
        self.proofs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string(), made.clone());
        Some(made)
    }

    /// Drops the proofs of backends that are gone: `name`'s, or (without one) those of
    /// every backend the store no longer holds.
    fn forget_proofs(&self, name: Option<&str>) {
        let mut proofs = self
            .proofs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match name {
            Some(name) => {
                proofs.remove(name);
            }
            None => {
                let live: HashSet<String> = self
                    .store
                    .state()
                    .iter()
                    .filter_map(|o| o.metadata.name.clone())
                    .collect();
                proofs.retain(|name, _| live.contains(name));
            }
        }
    }

    /// Backend `id`'s object, or why there is none to route to.
    fn find(&self, id: &str) -> Result<Arc<SessionLivedBackend>, Refusal> {
        self.lookup(id).ok_or(if self.is_synced() {
            Refusal::Unknown
        } else {
            Refusal::Syncing
        })
    }

    /// A token-mode backend's key and grants (`None` for an open one); refused if this
    /// router has no access key to check them with.
    fn access_of(&self, obj: &SessionLivedBackend) -> Result<Option<Arc<BackendAccess>>, Refusal> {
        if crate::model::access::mode_of(obj) != AccessMode::Token {
            return Ok(None);
        }
        let key = self
            .config
            .access_key
            .as_ref()
            .ok_or(Refusal::NoAccessKey)?;
        Ok(Some(self.grants.of(key, obj)))
    }

    /// Keeps token-mode backends' grants in step with a changed object.
    fn sync_access(&self, obj: &SessionLivedBackend) {
        if let Some(key) = &self.config.access_key {
            self.grants.sync(key, obj);
        }
    }

    /// Where a request for backend `obj` goes, or why it cannot go there now.
    fn target(
        &self,
        obj: &SessionLivedBackend,
        id: &str,
        path_prefix: usize,
        peer: SocketAddr,
        response: ResponsePolicy,
    ) -> Result<Target, Refusal> {
        let authority = target_of(obj).map_err(Refusal::Unavailable)?;
        let strip = if obj.spec.strip_prefix.unwrap_or(true) {
            path_prefix
        } else {
            0
        };
        Ok(Target {
            authority,
            monitor: self.monitor.clone(),
            strip,
            client_ip: peer.ip(),
            trust: self.config.trusted_proxies.trust(peer.ip()),
            response,
            router_proof: self.proof(id),
            access: None,
        })
    }
}

/// Why a request for a backend is answered by the router itself.
enum Refusal {
    /// The first list of backends has not arrived yet.
    Syncing,
    Unknown,
    Unavailable(Unavailable),
    /// A token-mode backend, and no access key to check its users' cookies with.
    NoAccessKey,
}

impl Refusal {
    fn response(self) -> Response<ProxyBody> {
        match self {
            Refusal::Syncing => retry_later("the router is reading the backends\n"),
            Refusal::Unknown => message(StatusCode::NOT_FOUND, "no such backend\n"),
            Refusal::Unavailable(why) => why.response(),
            Refusal::NoAccessKey => message(
                StatusCode::SERVICE_UNAVAILABLE,
                "this backend admits its users only, and this router has no access key to \
                 check them with: set SPAWNER_ACCESS_KEY (docs/kubernetes.md)\n",
            ),
        }
    }
}

/// The longest a request with a connect token waits for the grant it names to arrive by
/// the watch (the API wrote it a moment ago); a grant this router saw revoked is not waited on.
const GRANT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits (at most [`GRANT_WAIT`]) while the request's connect token names a grant the
/// router has not seen yet: the API answers a spawn or a connect as soon as it has written
/// the grant, and the browser may come before the watch brings it.
async fn await_grant<B>(access: &BackendAccess, req: &Request<B>) {
    let token: Option<Vec<u8>> = match req.uri().query().and_then(access::split_token) {
        Some((tokens, _)) => tokens.first().map(|t| t.as_bytes().to_vec()),
        None => gate::bearer(req).map(<[u8]>::to_vec),
    };
    let Some(token) = token else {
        return;
    };
    let deadline = tokio::time::Instant::now() + GRANT_WAIT;
    while access.awaits_grant(&token, spawner_core::time::now_millis() / 1000) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        access.next_sync(left).await;
    }
}

/// Watches SessionLivedBackends into a store, and returns the router over it with the
/// task that keeps it current (the router says it is synced after the first full list).
pub fn start(client: Client, config: RouterConfig) -> (Arc<Router>, tokio::task::JoinHandle<()>) {
    let api: Api<SessionLivedBackend> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store();
    let router = Router::new(store.clone(), config, Some(client));
    let synced = router.clone();
    let watching = router.clone();
    let task = tokio::spawn(async move {
        let waiting = tokio::spawn(async move {
            if store.wait_until_ready().await.is_ok() {
                info!("router: backends listed; routing");
                synced.mark_synced();
            }
        });
        let stream = reflector::reflector(
            writer,
            watcher::watcher(api, watcher::Config::default()).default_backoff(),
        );
        let watching = &watching;
        futures_util::StreamExt::for_each(stream, |event| async move {
            // After the store took the change: a held request sees it when it looks.
            watching.changes.send_modify(|n| *n = n.wrapping_add(1));
            match event {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    debug!(name = %obj.name_any(), "backend changed");
                    watching.sync_access(&obj);
                }
                Ok(watcher::Event::Delete(obj)) => {
                    watching.forget_proofs(Some(&obj.name_any()));
                    watching.grants.forget(&obj.name_any());
                }
                // A new list after a gap: deletions in the gap came as no event.
                Ok(watcher::Event::InitDone) => {
                    watching.forget_proofs(None);
                    let live: HashSet<String> = watching
                        .store
                        .state()
                        .iter()
                        .filter_map(|o| o.metadata.name.clone())
                        .collect();
                    watching.grants.retain(&live);
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "watch failed; retrying with backoff"),
            }
        })
        .await;
        waiting.abort();
    });
    (router, task)
}

/// Serves the router on `listener` until `shutdown` resolves (HTTP/1.1 with upgrades).
pub async fn serve(router: Arc<Router>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let relayed = router.clone();
    spawner_proxy::listen::serve(
        listener,
        shutdown,
        router.forwarder.clone(),
        move |head: &RequestHead, peer| relayed.relay_route(head, peer),
        move |req, peer| router.clone().handle(req, peer),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::crd::tests::object;
    use crate::model::status::SessionLivedBackendStatus;
    use spawner_core::State;

    #[test]
    fn routes_by_path_and_by_host() {
        assert_eq!(
            route_of(None, Some("x"), "/p/abc/x/y"),
            Route::Backend {
                id: "abc".into(),
                path_prefix: 6
            }
        );
        assert_eq!(route_of(None, None, "/p/abc"), Route::AddSlash);
        assert_eq!(route_of(None, None, "/p/"), Route::NotFound);
        assert_eq!(route_of(None, None, "/p//x"), Route::NotFound);
        assert_eq!(route_of(None, None, "/other"), Route::NotFound);
        assert_eq!(route_of(None, None, "/healthz"), Route::Health);
        let d = Some("apps.example");
        assert_eq!(
            route_of(d, Some("abc.apps.example:8080"), "/healthz"),
            Route::Backend {
                id: "abc".into(),
                path_prefix: 0
            }
        );
        assert_eq!(route_of(d, Some("a.b.apps.example"), "/"), Route::NotFound);
        assert_eq!(
            route_of(d, Some("spawner.example"), "/p/abc/"),
            Route::Backend {
                id: "abc".into(),
                path_prefix: 6
            }
        );
    }

    fn in_state(states: &[State], ip: Option<&str>) -> SessionLivedBackend {
        let mut obj = object("b1");
        let mut st = SessionLivedBackendStatus::default();
        for s in states {
            st.enter(*s, 0, None, None);
        }
        st.ip = ip.map(str::to_string);
        st.port = Some(9090);
        obj.status = Some(st);
        obj
    }

    #[test]
    fn only_ready_backends_are_targets() {
        let ready = in_state(&[State::Submitted, State::Ready], Some("10.1.2.3"));
        assert_eq!(
            target_of(&ready).expect("a target").as_str(),
            "10.1.2.3:9090"
        );
        let v6 = in_state(&[State::Submitted, State::Ready], Some("fd00::1"));
        assert_eq!(target_of(&v6).expect("a target").as_str(), "[fd00::1]:9090");
        let starting = in_state(&[State::Submitted, State::Running], Some("10.1.2.3"));
        assert_eq!(target_of(&starting), Err(Unavailable::Starting));
        let resp = Unavailable::Starting.response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let stopping = in_state(
            &[State::Submitted, State::Ready, State::Terminating],
            Some("10.1.2.3"),
        );
        assert_eq!(target_of(&stopping), Err(Unavailable::Stopping));
        assert_eq!(
            Unavailable::Stopping.response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let ended = in_state(
            &[State::Submitted, State::Ready, State::Swept],
            Some("10.1.2.3"),
        );
        assert_eq!(target_of(&ended), Err(Unavailable::Ended));
        assert_eq!(Unavailable::Ended.response().status(), StatusCode::GONE);
        let no_ip = in_state(&[State::Submitted, State::Ready], None);
        assert_eq!(target_of(&no_ip), Err(Unavailable::Starting));
    }
}
