//! The Kubernetes sidecar: a proxy beside the application container in its Pod.
//!
//! It forwards every request and upgraded connection to the application on
//! `127.0.0.1:{app_port}` with the same [`Forwarder`] and [`Monitor`] as the embedded
//! server, so both modes count activity the same way, and tells the node's sweeper what it
//! sees on `/_events` (Server-Sent Events of [`Report`]s). The sweeper, not the sidecar,
//! decides: the sidecar knows nothing of grace periods or the Kubernetes API.
//!
//! Four paths are the sidecar's own and never forwarded: [`EVENTS_PATH`],
//! [`HEALTH_PATH`], [`KEEPALIVE_PATH`] (the application's `SPAWNER_KEEPALIVE_URL`) and
//! [`GOAWAY_PATH`] (the controller's call before it deletes the Pod). None counts as
//! activity, or the sweeper's own stream would keep every backend alive. The last two need
//! the backend's own secret (`SPAWNER_SIDECAR_TOKEN`, made by the controller for this Pod):
//! the router forwards any path to the sidecar, so the secret is what keeps clients out.
//!
//! The sidecar trusts the forwarding headers (`X-Forwarded-*`, [`crate::forwarded`]) of the
//! router alone, and knows it by its proof: [`ROUTER_PROOF`] carrying this backend's value
//! (`SPAWNER_ROUTER_PROOF`, which the controller derives from the router's key). Anyone else
//! who reaches the Pod (another Pod of the cluster) is a client like any other, and the
//! proof is never passed to the application. Without a proof configured, no one is trusted:
//! the application sees the router's address in `X-Forwarded-For`.
//!
//! A token-mode backend's sidecar holds that backend's access key (never the master key):
//! the router's requests, proven, pass with the identity the router admitted them as; any
//! other needs an access cookie or a bearer connect token genuine for this backend
//! ([`crate::gate::admit_signed`]), so that a Pod that bypasses the router gains nothing
//! from another backend's credentials. Revocations are the router's to enforce.

use crate::access::{self, BackendKey, Grant, Nonces};
use crate::body::ProxyBody;
use crate::forward::{message, Forwarder};
use crate::forwarded::{proof_matches, PeerTrust, ROUTER_PROOF};
use crate::head::RequestHead;
use crate::monitor::Monitor;
use crate::readiness::ListenWatch;
use crate::target::{ResponsePolicy, Target};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The event stream the sweeper follows.
pub const EVENTS_PATH: &str = "/_events";
/// Liveness of the sidecar itself (200 whether or not the application is ready).
pub const HEALTH_PATH: &str = "/_healthz";
/// `POST {"seconds": N}` with `?token=`: the application keeps itself from being swept.
pub const KEEPALIVE_PATH: &str = "/_keepalive";
/// `POST` with `Authorization: Bearer <token>` and a stop reason as body: every WebSocket
/// gets its close frame 1001, then requests in flight are waited for (`?grace=` seconds).
pub const GOAWAY_PATH: &str = "/_goaway";
/// The longest a go-away waits for the close frames to be sent, as the embedded server's.
pub const GOAWAY_FRAMES_WAIT: Duration = Duration::from_secs(2);
/// The largest body the sidecar's own routes read.
const OWN_BODY_LIMIT: usize = 4096;

/// The longest time between two events of a stream: the sweeper judges idleness on
/// each event, so this bounds how late a sweep can be.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often a stream looks at the monitor for changes. The monitor is a few atomics
/// with no notification (it sits on every request's path); a request that starts and ends
/// between two looks still shows as a change of `requests`.
const POLL: Duration = Duration::from_millis(25);

/// What the sidecar reports on each event of `/_events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The application accepts connections on its port.
    pub ready: bool,
    /// Connections open through the sidecar now (upgraded ones and requests in flight).
    pub live_connections: u64,
    /// Seconds since the last request started or connection ended (or since the
    /// application became ready, if nothing came since), with millisecond precision.
    pub seconds_since_active: f64,
    /// Requests forwarded since the sidecar started.
    pub requests: u64,
    /// Seconds since a client last sent something: a request start or a WebSocket data
    /// frame (or since the application became ready). What an idle timeout counts from.
    /// Absent from a sidecar older than this field: its readers use `seconds_since_active`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_since_client: Option<f64>,
    /// Until when the application asked to be kept (milliseconds since the epoch), if it
    /// called its keepalive URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_until: Option<i64>,
}

impl Report {
    /// What makes two reports different events; the idle clocks alone are not a change.
    fn key(&self) -> (bool, u64, u64, Option<i64>) {
        (
            self.ready,
            self.live_connections,
            self.requests,
            self.busy_until,
        )
    }
}

/// The secrets the controller gives a sidecar (in its container's environment).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// The backend's own secret (`SPAWNER_SIDECAR_TOKEN`), for its keepalive URL and the
    /// controller's go-away call.
    pub token: Option<String>,
    /// The router's proof for this backend (`SPAWNER_ROUTER_PROOF`): requests carrying it as
    /// [`ROUTER_PROOF`] come from the router, whose forwarding headers are kept.
    pub router_proof: Option<String>,
    /// A token-mode backend's own access key (`SPAWNER_BACKEND_ACCESS_KEY`): a request not
    /// proven to come from the router needs an access cookie or a bearer connect token of
    /// this backend ([`crate::gate::admit_signed`]).
    pub access: Option<BackendKey>,
}

/// The sidecar of one application. Cheap to share: every connection holds an `Arc`.
pub struct Sidecar {
    forwarder: Forwarder,
    monitor: Arc<Monitor>,
    app: Authority,
    ready: watch::Receiver<bool>,
    /// Kept for as long as the sidecar lives, so that `ready.changed()` waits for a change
    /// instead of failing at once when the probe task has ended.
    _ready_tx: Arc<watch::Sender<bool>>,
    /// The backend's own secret for [`KEEPALIVE_PATH`] and [`GOAWAY_PATH`]; without one,
    /// both answer 404.
    token: Option<String>,
    /// The router's proof for this backend; without one, no peer is trusted.
    router_proof: Option<String>,
    /// A token-mode backend's key; `None` for an open one.
    access: Option<BackendKey>,
    /// Single-use connect tokens sent straight to this sidecar as bearer tokens.
    nonces: Nonces,
    /// The application's keepalive, milliseconds since the epoch; 0 if never asked.
    busy_until: AtomicI64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Sidecar {
    /// A sidecar for the application on `127.0.0.1:{app_port}`. Starts watching for the port
    /// to be listened on at once (call it inside a Tokio runtime), with the same watch as
    /// the embedded server's ([`ListenWatch`]).
    pub fn new(app_port: u16) -> Arc<Self> {
        Self::with_token(app_port, None)
    }

    /// [`Sidecar::new`], with the backend's own secret that its keepalive URL and the
    /// controller's go-away call carry.
    pub fn with_token(app_port: u16, token: Option<String>) -> Arc<Self> {
        Self::with_secrets(
            app_port,
            Secrets {
                token,
                router_proof: None,
                access: None,
            },
        )
    }

    /// [`Sidecar::new`], with the secrets the controller gives the sidecar.
    pub fn with_secrets(app_port: u16, secrets: Secrets) -> Arc<Self> {
        let app_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), app_port);
        let app = Authority::try_from(app_addr.to_string())
            .unwrap_or_else(|_| unreachable!("a socket address is a valid authority"));
        let monitor = Arc::new(Monitor::new(now_ms()));
        let (ready_tx, ready) = watch::channel(false);
        let ready_tx = Arc::new(ready_tx);
        let probe_tx = ready_tx.clone();
        let probe_monitor = monitor.clone();
        tokio::spawn(async move {
            // The Pod's network namespace is the sidecar's own.
            ListenWatch::own().listening(app_addr).await;
            // The idle clock starts when the application can first be used.
            probe_monitor.touch();
            tracing::info!(%app_addr, "application is listening: ready");
            let _ = probe_tx.send(true);
        });
        Arc::new(Sidecar {
            forwarder: Forwarder::new(),
            monitor,
            app,
            ready,
            _ready_tx: ready_tx,
            token: secrets.token.filter(|t| !t.is_empty()),
            router_proof: secrets.router_proof.filter(|p| !p.is_empty()),
            access: secrets.access,
            nonces: Nonces::default(),
            busy_until: AtomicI64::new(0),
        })
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// The monitor every forwarded request is counted in.
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.monitor
    }

    /// What `/_events` says now.
    pub fn report(&self) -> Report {
        let now = now_ms();
        let idle_ms = now.saturating_sub(self.monitor.last_activity()).max(0);
        let client_ms = now
            .saturating_sub(self.monitor.last_client_activity())
            .max(0);
        let busy = self.busy_until.load(Ordering::Relaxed);
        Report {
            ready: self.is_ready(),
            live_connections: self.monitor.live(),
            // Milliseconds as f64: exact well beyond any uptime.
            seconds_since_active: idle_ms as f64 / 1000.0,
            requests: self.monitor.requests(),
            seconds_since_client: Some(client_ms as f64 / 1000.0),
            busy_until: (busy > 0).then_some(busy),
        }
    }

    /// Where a request for the application goes, `proof` being what the request carried
    /// as [`ROUTER_PROOF`].
    fn target(&self, peer: SocketAddr, proof: Option<&[u8]>) -> Target {
        Target {
            authority: self.app.clone(),
            monitor: self.monitor.clone(),
            // The router already stripped whatever prefix the application must not see.
            strip: 0,
            client_ip: peer.ip(),
            trust: self.trust(proof),
            // The router applies the response policy of its own routing.
            response: ResponsePolicy::Pass,
            router_proof: None,
            access: None,
        }
    }

    /// The router, proven, is trusted; anyone else is not.
    fn trust(&self, proof: Option<&[u8]>) -> PeerTrust {
        match (self.router_proof.as_deref(), proof) {
            (Some(want), Some(given)) if proof_matches(want.as_bytes(), given) => {
                PeerTrust::Trusted
            }
            _ => PeerTrust::Untrusted,
        }
    }

    /// The relay's route: every request for a ready application but the sidecar's own. A
    /// token-mode backend's requests are hyper's path's ([`Sidecar::handle`]), which
    /// checks who they are from.
    fn route(&self, head: &RequestHead, peer: SocketAddr) -> Option<Target> {
        let own = is_own(head.path);
        (!own && self.is_ready() && self.access.is_none())
            .then(|| self.target(peer, head.router_proof))
    }

    /// Who a request to a token-mode backend is from: the user the router admitted it as
    /// (its identity headers, believed from the router alone), or the user of an access
    /// cookie or bearer token of this backend that a request from anyone else must carry.
    fn admit<B>(
        &self,
        key: &BackendKey,
        req: &Request<B>,
        trusted: bool,
    ) -> Result<Option<Arc<Grant>>, Box<Response<ProxyBody>>> {
        if trusted {
            let user = req.headers().get(access::USER_HEADER);
            let data = req
                .headers()
                .get(access::USER_DATA_HEADER)
                .and_then(|d| serde_json::from_slice(d.as_bytes()).ok());
            return Ok(user
                .and_then(|u| u.to_str().ok())
                .and_then(|u| Grant::new(u, 0, data, 0))
                .map(Arc::new));
        }
        let now = now_ms() / 1000;
        crate::gate::admit_signed(key, &self.nonces, req, now).map(Some)
    }

    /// Answers one request: the sidecar's own paths, or the application's.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<SidecarBody> {
        match req.uri().path() {
            EVENTS_PATH => return self.events(req.method()),
            KEEPALIVE_PATH => return self.keepalive(req).await.map(SidecarBody::Proxy),
            GOAWAY_PATH => return self.goaway(req).await.map(SidecarBody::Proxy),
            HEALTH_PATH => {
                let mut resp = message(StatusCode::OK, "ok\n");
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return resp.map(SidecarBody::Proxy);
            }
            _ => {}
        }
        if !self.is_ready() {
            let mut resp = message(
                StatusCode::SERVICE_UNAVAILABLE,
                "the application is starting; retry in a moment\n",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp.map(SidecarBody::Proxy);
        }
        // Exactly one proof, as on the relay's path.
        let mut proofs = req.headers().get_all(ROUTER_PROOF).iter();
        let proof = match (proofs.next(), proofs.next()) {
            (Some(p), None) => Some(p.as_bytes()),
            _ => None,
        };
        let mut target = self.target(peer, proof);
        if let Some(key) = &self.access {
            let trusted = target.trust == PeerTrust::Trusted;
            match self.admit(key, &req, trusted) {
                Ok(grant) => target.access = grant,
                Err(refused) => return refused.map(SidecarBody::Proxy),
            }
        }
        self.forwarder
            .forward(req, target)
            .await
            .map(SidecarBody::Proxy)
    }

    /// Whether `given` is this backend's secret (constant time).
    fn allows(&self, given: Option<&str>) -> bool {
        match (self.token.as_deref(), given) {
            (Some(t), Some(g)) => proof_matches(t.as_bytes(), g.as_bytes()),
            _ => false,
        }
    }

    /// `POST /_keepalive?token=` with `{"seconds": N}`: the application keeps itself from
    /// being swept until N seconds from now (a later call replaces the time). The sweeper
    /// reads it from `/_events` and records it as the object's `busyUntil`.
    async fn keepalive(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        if self.token.is_none() {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "this sidecar has no keepalive secret (SPAWNER_SIDECAR_TOKEN)",
            );
        }
        let given = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(str::to_string)
        });
        if !self.allows(given.as_deref()) {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "keepalive needs the backend's own URL from SPAWNER_KEEPALIVE_URL (its ?token=)",
            );
        }
        if req.method() != Method::POST {
            let mut resp = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the keepalive URL takes POST with {\"seconds\": N}",
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return resp;
        }
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Ask {
            seconds: u64,
        }
        let max = spawner_core::lifecycle::MAX_KEEPALIVE_SECONDS;
        let seconds = match serde_json::from_slice::<Ask>(&body) {
            Ok(a) if (1..=max).contains(&a.seconds) => a.seconds,
            Ok(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_field",
                    &format!(
                        "seconds: must be between 1 and {max}; call again to stay busy longer"
                    ),
                )
            }
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    &format!("the request body is not valid: {e}; it must be {{\"seconds\": N}}"),
                )
            }
        };
        if self.monitor.is_going_away() {
            return json_error(
                StatusCode::GONE,
                "gone",
                "the backend is being stopped: it cannot be kept alive",
            );
        }
        let until = now_ms().saturating_add(i64::try_from(seconds * 1000).unwrap_or(i64::MAX));
        self.busy_until.store(until, Ordering::Relaxed);
        tracing::info!(seconds, "keepalive");
        let body = serde_json::json!({"busy_until": spawner_core::time::rfc3339(until)});
        json_response(StatusCode::OK, &body)
    }

    /// `POST /_goaway?grace=S` with `Authorization: Bearer <token>` and a stop reason as body
    /// (`spawner_core::lifecycle::StopReason` name): sends every WebSocket its close frame
    /// 1001 with the reason (waiting at most [`GOAWAY_FRAMES_WAIT`]), then waits up to S
    /// seconds for requests in flight to be answered, then answers. The controller calls it
    /// before it deletes the Pod, so that clients hear why before the application is
    /// signalled.
    async fn goaway(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        if self.token.is_none() {
            return message(
                StatusCode::NOT_FOUND,
                "this sidecar has no secret (SPAWNER_SIDECAR_TOKEN)\n",
            );
        }
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        if !self.allows(given.as_deref()) {
            return message(
                StatusCode::UNAUTHORIZED,
                "go-away needs the backend's secret\n",
            );
        }
        if req.method() != Method::POST {
            return method_not_allowed();
        }
        let grace = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("grace=")))
            .and_then(|g| g.parse::<u64>().ok())
            .unwrap_or(0);
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let text = String::from_utf8_lossy(&body);
        // A stop reason, or a sleep (`idle_action: "sleep"` on Kubernetes).
        let sleeping = spawner_core::lifecycle::GOING_TO_SLEEP;
        let why = match spawner_core::lifecycle::StopReason::parse(text.trim()) {
            Some(reason) => reason.going_away(),
            None if text.trim() == sleeping => sleeping,
            None => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    &format!("the body must be a stop reason (\"terminate requested\", \"idle\", ...) or \"{sleeping}\", not {text:?}"),
                );
            }
        };
        tracing::info!(reason = why, grace, "going away");
        let frames_wait = GOAWAY_FRAMES_WAIT.min(Duration::from_secs(grace.max(1)));
        let told = tokio::time::timeout(frames_wait, self.monitor.go_away(why))
            .await
            .is_ok();
        let deadline = Instant::now() + Duration::from_secs(grace);
        while self.monitor.requests_in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let body = serde_json::json!({
            "reason": why,
            "told": told,
            "requests_in_flight": self.monitor.requests_in_flight(),
        });
        json_response(StatusCode::OK, &body)
    }

    fn events(self: Arc<Self>, method: &Method) -> Response<SidecarBody> {
        if method != Method::GET {
            let mut resp = message(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return resp.map(SidecarBody::Proxy);
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.stream_reports(tx));
        let mut resp = Response::new(SidecarBody::Events(rx));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// Sends a report at once, on every change, and at least every [`HEARTBEAT`], until
    /// the client goes away.
    async fn stream_reports(self: Arc<Self>, tx: mpsc::Sender<Bytes>) {
        let mut ready = self.ready.clone();
        let mut ready_open = true;
        let mut last: Option<(bool, u64, u64, Option<i64>)> = None;
        let mut last_sent = Instant::now();
        loop {
            let report = self.report();
            if last != Some(report.key()) || last_sent.elapsed() >= HEARTBEAT {
                let Ok(json) = serde_json::to_string(&report) else {
                    return;
                };
                if tx
                    .send(Bytes::from(format!("data: {json}\n\n")))
                    .await
                    .is_err()
                {
                    return;
                }
                last = Some(report.key());
                last_sent = Instant::now();
            }
            let wake = (last_sent + HEARTBEAT).min(Instant::now() + POLL);
            tokio::select! {
                // Readiness is announced the moment the probe sees it.
                // While the sidecar lives its sender does too; should it not, stop
                // listening rather than spin on an error.
                changed = ready.changed(), if ready_open => ready_open = changed.is_ok(),
                () = tokio::time::sleep_until(wake) => {}
                () = tx.closed() => return,
            }
        }
    }
}

/// The sidecar's own paths, never forwarded to the application.
fn is_own(path: &str) -> bool {
    matches!(
        path,
        EVENTS_PATH | HEALTH_PATH | KEEPALIVE_PATH | GOAWAY_PATH
    )
}

fn method_not_allowed() -> Response<ProxyBody> {
    let mut resp = message(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}

fn json_response(code: StatusCode, body: &serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::message(format!("{body}\n")));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An error in the API's shape (`{"error", "message"}`) with the API's code for the same
/// case (spawner-api's `ErrorCode` spellings: this crate is below it), so that a backend's
/// keepalive call reads the same answers in both modes.
fn json_error(code: StatusCode, error: &str, why: &str) -> Response<ProxyBody> {
    json_response(code, &serde_json::json!({"error": error, "message": why}))
}

/// The body of a request to one of the sidecar's own routes, at most [`OWN_BODY_LIMIT`].
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<ProxyBody>> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(req.into_body(), OWN_BODY_LIMIT)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(json_error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body could not be read (at most 4096 bytes)",
        )),
    }
}

/// A response body of the sidecar: the proxy's, or an event stream.
#[derive(Debug)]
pub enum SidecarBody {
    Proxy(ProxyBody),
    Events(mpsc::Receiver<Bytes>),
}

impl Body for SidecarBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            SidecarBody::Proxy(body) => Pin::new(body).poll_frame(cx),
            SidecarBody::Events(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SidecarBody::Proxy(body) => body.is_end_stream(),
            SidecarBody::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SidecarBody::Proxy(body) => body.size_hint(),
            SidecarBody::Events(_) => SizeHint::default(),
        }
    }
}

/// Serves the sidecar on `listener` until `shutdown` resolves (HTTP/1.1 with upgrades,
/// as the embedded server's proxy).
pub async fn serve(
    sidecar: Arc<Sidecar>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let forwarder = sidecar.forwarder.clone();
    let router = sidecar.clone();
    crate::listen::serve(
        listener,
        shutdown,
        forwarder,
        move |head: &RequestHead, peer| router.route(head, peer),
        move |req, peer| sidecar.clone().handle(req, peer),
    )
    .await
}

/// Parses one event of a `/_events` stream (the text after `data: `).
pub fn parse_report(data: &str) -> Result<Report, serde_json::Error> {
    serde_json::from_str(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_json_has_the_documented_fields() {
        let r = Report {
            ready: true,
            live_connections: 2,
            seconds_since_active: 1.5,
            requests: 7,
            seconds_since_client: Some(2.5),
            busy_until: Some(1_700_000_000_000),
        };
        let json = serde_json::to_value(&r).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"ready": true, "live_connections": 2, "seconds_since_active": 1.5, "requests": 7,
                               "seconds_since_client": 2.5, "busy_until": 1_700_000_000_000_i64})
        );
        assert_eq!(parse_report(&json.to_string()).expect("parses"), r);
        // A sidecar of before issue 17 (no client clock, no keepalive) still parses.
        let old = parse_report(
            r#"{"ready": true, "live_connections": 0, "seconds_since_active": 1.0, "requests": 1}"#,
        )
        .expect("parses");
        assert_eq!((old.seconds_since_client, old.busy_until), (None, None));
    }

    #[test]
    fn idle_time_alone_is_not_a_change() {
        let a = Report {
            ready: true,
            live_connections: 0,
            seconds_since_active: 1.0,
            requests: 3,
            seconds_since_client: Some(1.0),
            busy_until: None,
        };
        let b = Report {
            seconds_since_active: 9.0,
            seconds_since_client: Some(9.0),
            ..a.clone()
        };
        assert_eq!(a.key(), b.key());
        let busy = Report {
            busy_until: Some(5),
            ..a.clone()
        };
        assert_ne!(a.key(), busy.key());
        let c = Report {
            requests: 4,
            ..a.clone()
        };
        assert_ne!(a.key(), c.key());
    }
}
