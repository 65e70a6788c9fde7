//! Forwarding one request (or one upgraded connection) to a backend.

use crate::access;
use crate::body::{ClientBody, Pooled, ProxyBody};
use crate::forwarded::{PeerTrust, ROUTER_PROOF};
use crate::framing::{Refusal, RequestFraming};
use crate::head::ip_text;
use crate::pool::Pool;
use crate::prefixed::Prefixed;
use crate::target::{ResponsePolicy, Target, SANDBOX};
use crate::tunnel;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_SPAWNER_ROUTER_PROOF: HeaderName = HeaderName::from_static(ROUTER_PROOF);
static SERVICE_WORKER_ALLOWED: HeaderName = HeaderName::from_static("service-worker-allowed");
static X_SPAWNER_USER: HeaderName = HeaderName::from_static(access::USER_HEADER);
static X_SPAWNER_USER_DATA: HeaderName = HeaderName::from_static(access::USER_DATA_HEADER);
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Forwards requests to backends over pooled keep-alive connections. Cheap to clone.
///
/// Two paths share it: the relay (`crate::relay`), which takes nearly every proxied
/// request on the proxy's own threads, each with its own idle connections; and
/// [`Forwarder::forward`] on hyper's objects, for the requests the relay leaves to the
/// full HTTP stack, with the idle connections kept here.
#[derive(Clone)]
pub struct Forwarder {
    pool: Arc<Pool<SendRequest<ClientBody>>>,
    pub(crate) client_idle: Option<Duration>,
    pub(crate) threads: usize,
    pub(crate) busy_poll: Option<Duration>,
}

/// How long a client connection may sit between requests, or take to send a request's
/// head, unless set otherwise: nginx's `keepalive_timeout` is 75 s, hyper's header timeout 30 s.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
// Pooled backend connections are given up before a Spawner proxy in front of the backend
// (the Kubernetes sidecar) closes them for being quiet.
const _: () = assert!(crate::pool::IDLE_TIMEOUT.as_secs() < CLIENT_IDLE_TIMEOUT.as_secs());

/// How long a proxy thread keeps polling after it relayed something, unless set otherwise:
/// longer than the backend's answer to a small message takes on a quiet machine, so that the
/// answer finds the thread awake.
pub const BUSY_POLL: Duration = Duration::from_micros(50);

/// One proxy thread per CPU the process may use (which counts a container's CPU limit).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for Forwarder {
    fn default() -> Self {
        Self {
            pool: Arc::default(),
            client_idle: Some(CLIENT_IDLE_TIMEOUT),
            threads: default_threads(),
            busy_poll: Some(BUSY_POLL),
        }
    }
}

impl Forwarder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes client connections that send nothing for `idle` while no request is under
    /// way, or that take longer to send a request's head: each one holds a task and a
    /// descriptor, and a browser opens a new connection when it needs one. `None` keeps
    /// them open for as long as the client does. Upgraded connections (WebSockets) are
    /// never closed for being quiet: the sweeper counts them as activity. Zero means `None`;
    /// more than a year is taken as a year (deadlines must stay representable).
    pub fn with_client_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        self.client_idle = idle.filter(|d| !d.is_zero()).map(|d| d.min(YEAR));
        self
    }

    /// The number of threads that relay client connections (`listen::serve`); at
    /// least one.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Keeps each proxy thread polling for `window` after it relayed something, before it
    /// sleeps (`None`: never): lower latency for a conversation's next message, paid in CPU
    /// time while the window lasts. While other programs want the CPUs, the threads hand
    /// theirs over at every turn of the poll. More than 10 ms is taken as 10 ms.
    pub fn with_busy_poll(mut self, window: Option<Duration>) -> Self {
        const MAX: Duration = Duration::from_millis(10);
        self.busy_poll = window.filter(|d| !d.is_zero()).map(|d| d.min(MAX));
        self
    }

    /// Forwards `req` to `target` and returns the backend's response (or a 502 saying why
    /// not). An upgrade (WebSocket) is joined end to end and counted until it closes.
    pub async fn forward(&self, mut req: Request<Incoming>, target: Target) -> Response<ProxyBody> {
        if let Err(refusal) = check_framing(&req) {
            tracing::debug!(%refusal, "refused a request");
            return refused(refusal);
        }
        let upgrade = is_upgrade(req.headers());
        let websocket = upgrade
            && req
                .headers()
                .get(header::UPGRADE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let path_and_query = match rewrite_path(req.uri(), target.strip) {
            Some(pq) => pq,
            None => return message(StatusCode::BAD_REQUEST, "malformed request path\n"),
        };
        let prefix = (target.strip > 0).then(|| req.uri().path()[..target.strip].to_string());
        // Origin form: the backend gets the path, and the host in `Host`.
        *req.uri_mut() = Uri::from(path_and_query);
        *req.version_mut() = http::Version::HTTP_11;
        prepare_headers(req.headers_mut(), upgrade, &target, prefix.as_deref());
        if !req.headers().contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(target.authority.as_str()) {
                req.headers_mut().insert(header::HOST, host);
            }
        }

        let revoked = target.access.as_ref().map(|g| g.revoked());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
        let (req, body_failed) = {
            let (parts, body) = req.into_parts();
            let (body, failed) = ClientBody::new(body);
            (Request::from_parts(parts, body), failed)
        };
        let guard = target.monitor.open();
        let (mut resp, conn) = match self.send(req, &target.authority).await {
            Ok(pair) => pair,
            // The client's bytes did not read as the body they announced: its fault, and
            // the backend never got a whole request (hyper cut that connection mid-body).
            Err(e) if body_failed.load(Ordering::Relaxed) => {
                tracing::debug!(error = %e, "refused a request body");
                return refused(if chunked {
                    Refusal::BAD_CHUNKED
                } else {
                    Refusal::CUT_SHORT
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, backend = %target.authority, "backend unreachable");
                return message(
                    StatusCode::BAD_GATEWAY,
                    "the backend did not answer; it may be starting or stopping\n",
                );
            }
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                // The connection now belongs to the upgrade: it never goes back to the pool.
                drop(conn);
                let backend_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    let (client, backend) = match tokio::try_join!(client_upgrade, backend_upgrade)
                    {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::debug!(error = %e, "upgrade failed");
                            return;
                        }
                    };
                    let link = tunnel::Link::new(guard.monitor(), websocket, revoked);
                    join_upgraded(client, backend, link).await;
                    drop(guard);
                });
                let (parts, _) = resp.into_parts();
                return Response::from_parts(parts, ProxyBody::empty());
            }
        }

        strip_hop_by_hop(resp.headers_mut());
        apply_policy(resp.headers_mut(), target.response);
        resp.map(|body| {
            let mut conn = conn;
            // A response without a body frees its connection at once.
            conn.reusable = http_body::Body::is_end_stream(&body);
            ProxyBody::Backend {
                body,
                guard: Some(guard),
                conn: Some(conn),
            }
        })
    }

    /// Sends the request on an idle pooled connection to `authority`, or on a new one. A
    /// request that a pooled connection could not take (it closed meanwhile) goes on the
    /// next one; a request that was sent is never sent twice.
    async fn send(
        &self,
        mut req: Request<ClientBody>,
        authority: &Authority,
    ) -> Result<(Response<Incoming>, Pooled), BoxError> {
        let key = authority.as_str();
        while let Some(mut sender) = self.pool.take(key) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.lend(authority, sender))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = connect(authority).await?;
        let resp = sender.send_request(req).await?;
        Ok((resp, self.lend(authority, sender)))
    }

    fn lend(&self, authority: &Authority, sender: SendRequest<ClientBody>) -> Pooled {
        Pooled {
            pool: self.pool.clone(),
            authority: authority.clone(),
            sender: Some(sender),
            reusable: false,
        }
    }
}

/// Opens a keep-alive HTTP/1.1 connection to a backend; its I/O runs in a task of its own.
async fn connect(authority: &Authority) -> Result<SendRequest<ClientBody>, BoxError> {
    let stream = crate::target::connect_tcp(authority).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

/// Joins two upgraded connections until both directions have ended. Plain TCP on both
/// sides (the usual case) is spliced without buffers of its own while idle, so an open,
/// quiet WebSocket costs little memory, and joined as the relay's tunnels are (client
/// activity, going away); anything else is copied with tokio's buffers, its client counted
/// as active when it opened.
async fn join_upgraded(
    client: hyper::upgrade::Upgraded,
    backend: hyper::upgrade::Upgraded,
    link: tunnel::Link,
) {
    type Tcp = TokioIo<TcpStream>;
    let result = match backend.downcast::<Tcp>() {
        Ok(b) => match client.downcast::<TokioIo<Prefixed>>() {
            Ok(c) => {
                let (stream, unread) = c.io.into_inner().into_parts();
                let read = [c.read_buf, unread].concat();
                tunnel::join(stream, read.into(), b.io.into_inner(), b.read_buf, link).await
            }
            Err(client) => {
                let mut client = TokioIo::new(client);
                let mut backend = b.io.into_inner();
                match client.write_all(&b.read_buf).await {
                    Ok(()) => tokio::io::copy_bidirectional(&mut client, &mut backend)
                        .await
                        .map(drop),
                    Err(e) => Err(e),
                }
            }
        },
        Err(backend) => {
            let mut client = TokioIo::new(client);
            let mut backend = TokioIo::new(backend);
            tokio::io::copy_bidirectional(&mut client, &mut backend)
                .await
                .map(drop)
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}

/// A short plain-text response of the proxy's own.
pub fn message(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::message(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The relay's framing rules ([`crate::framing`]), and its refusal of `CONNECT`, on a
/// request hyper parsed: hyper frames
/// a body by `Transfer-Encoding` when it also has `Content-Length`, and keeps both headers,
/// which a backend might read the other way.
fn check_framing(req: &Request<Incoming>) -> Result<(), Refusal> {
    if req.method() == http::Method::CONNECT {
        return Err(Refusal::CONNECT);
    }
    let mut framing = RequestFraming::default();
    for (name, value) in req.headers() {
        framing.take(name.as_str(), value.as_bytes());
    }
    framing
        .finish(req.version() >= http::Version::HTTP_11)
        .map(drop)
}

/// The answer to a refused request; the connection closes after it.
fn refused(refusal: Refusal) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::message(format!("{}\n", refusal.reason)));
    *resp.status_mut() = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Whether the request asks to switch protocols (WebSocket and other upgrades).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The path and query sent to the backend: the request's, less the first `strip` bytes of
/// the path (always leaving at least `/`).
fn rewrite_path(uri: &Uri, strip: usize) -> Option<PathAndQuery> {
    if strip == 0 {
        return uri
            .path_and_query()
            .cloned()
            .or(Some(PathAndQuery::from_static("/")));
    }
    let path = uri.path().get(strip..)?;
    let path = if path.is_empty() { "/" } else { path };
    let text = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    PathAndQuery::try_from(text).ok()
}

/// Drops hop-by-hop headers (RFC 9110 §7.6.1), keeping `Connection: upgrade` and `Upgrade`
/// for an upgrade, and the client's forwarding headers unless its peer is trusted
/// ([`crate::forwarded`]); adds the `X-Forwarded-*` headers, and the router's proof when
/// the target has one (any other is dropped).
fn prepare_headers(headers: &mut HeaderMap, upgrade: bool, target: &Target, prefix: Option<&str>) {
    strip_connection_listed(headers);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    for name in [&KEEP_ALIVE, &PROXY_CONNECTION] {
        headers.remove(name);
    }
    headers.remove(header::TE);
    headers.remove(header::TRAILER);
    headers.remove(header::PROXY_AUTHORIZATION);

    headers.remove(&X_SPAWNER_ROUTER_PROOF);
    access_headers(headers, target);
    let mut xff = String::new();
    if target.trust == PeerTrust::Trusted {
        for prev in headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            xff.push_str(prev);
            xff.push_str(", ");
        }
    } else {
        for name in [
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &X_FORWARDED_PORT,
            &X_FORWARDED_PREFIX,
            &X_REAL_IP,
        ] {
            headers.remove(name);
        }
        headers.remove(header::FORWARDED);
    }
    xff.push_str(&ip_text(target.client_ip));
    if let Ok(v) = HeaderValue::try_from(xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
    }
    if let Some(prefix) = prefix.and_then(|p| HeaderValue::try_from(p).ok()) {
        headers.insert(X_FORWARDED_PREFIX.clone(), prefix);
    }
    if let Some(proof) = &target.router_proof {
        headers.insert(X_SPAWNER_ROUTER_PROOF.clone(), proof.clone());
    }
}

/// Rules 3 and 4 of [`crate::access`]: no access cookie, connect token or client-sent
/// identity reaches the backend; the grant that admitted the request gives its identity.
fn access_headers(headers: &mut HeaderMap, target: &Target) {
    headers.remove(&X_SPAWNER_USER);
    headers.remove(&X_SPAWNER_USER_DATA);
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .any(|v| access::bearer_token(v.as_bytes()).is_some())
    {
        headers.remove(header::AUTHORIZATION);
    }
    if headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| access::mentions_access_cookie(v.as_bytes()))
    {
        let kept: Vec<HeaderValue> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| {
                let mut out = Vec::new();
                access::strip_access_cookies(v.as_bytes(), &mut out)
                    .then(|| HeaderValue::from_bytes(&out).ok())
                    .flatten()
            })
            .collect();
        headers.remove(header::COOKIE);
        for v in kept {
            headers.append(header::COOKIE, v);
        }
    }
    if let Some(grant) = &target.access {
        headers.insert(X_SPAWNER_USER.clone(), grant.user_header.clone());
        if let Some(data) = &grant.data_header {
            headers.insert(X_SPAWNER_USER_DATA.clone(), data.clone());
        }
    }
}

/// The target's [`ResponsePolicy`] on a response's headers.
fn apply_policy(headers: &mut HeaderMap, policy: ResponsePolicy) {
    if policy != ResponsePolicy::Pass {
        headers.remove(&SERVICE_WORKER_ALLOWED);
    }
    if policy == ResponsePolicy::Sandbox {
        headers.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SANDBOX),
        );
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_connection_listed(headers);
    headers.remove(header::CONNECTION);
    headers.remove(&KEEP_ALIVE);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::TRAILER);
    headers.remove(header::UPGRADE);
}

/// Removes the headers that `Connection` names (other than `upgrade`/`close`/`keep-alive`,
/// and never the framing headers or `Host`).
fn strip_connection_listed(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case("upgrade")
                && !t.eq_ignore_ascii_case("close")
                && !t.eq_ignore_ascii_case("keep-alive")
                && !crate::framing::never_hop_by_hop(t)
        })
        .filter_map(|t| HeaderName::try_from(t.to_ascii_lowercase()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_paths() {
        let uri: Uri = "/p/abc/x/y?q=1".parse().unwrap();
        assert_eq!(rewrite_path(&uri, 6).unwrap().as_str(), "/x/y?q=1");
        let uri: Uri = "/p/abc/".parse().unwrap();
        assert_eq!(rewrite_path(&uri, 6).unwrap().as_str(), "/");
        let uri: Uri = "/p/abc/?a".parse().unwrap();
        assert_eq!(rewrite_path(&uri, 6).unwrap().as_str(), "/?a");
        let uri: Uri = "/x?y".parse().unwrap();
        assert_eq!(rewrite_path(&uri, 0).unwrap().as_str(), "/x?y");
    }

    fn target(trust: PeerTrust) -> Target {
        Target {
            authority: "127.0.0.1:9000".parse().unwrap(),
            monitor: Arc::new(crate::monitor::Monitor::new(0)),
            strip: 0,
            client_ip: "127.0.0.1".parse().unwrap(),
            trust,
            response: ResponsePolicy::Pass,
            router_proof: None,
            access: None,
        }
    }

    #[test]
    fn headers_for_the_backend() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.insert(header::COOKIE, HeaderValue::from_static("a=b"));
        let untrusted = target(PeerTrust::Untrusted);
        prepare_headers(&mut h, false, &untrusted, Some("/p/abc"));
        assert!(!h.contains_key("x-secret"));
        assert!(!h.contains_key(header::CONNECTION));
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[&X_FORWARDED_HOST], "example.com");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_PREFIX], "/p/abc");
        assert_eq!(h[header::HOST], "example.com");
        assert_eq!(h[header::COOKIE], "a=b");
    }

    /// Every forwarding header a client can send (X-Forwarded-For twice), and a guessed proof.
    fn spoofed() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("7.7.7.7"));
        for (name, value) in [
            (&X_FORWARDED_PROTO, "https"),
            (&X_FORWARDED_HOST, "evil.example"),
            (&X_FORWARDED_PORT, "443"),
            (&X_FORWARDED_PREFIX, "/evil"),
            (&X_REAL_IP, "6.6.6.6"),
            (&X_SPAWNER_ROUTER_PROOF, "guess"),
        ] {
            h.insert(name, HeaderValue::from_static(value));
        }
        h.insert(header::FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        h
    }

    #[test]
    fn an_untrusted_peer_cannot_speak_through_the_forwarding_headers() {
        let mut h = spoofed();
        prepare_headers(&mut h, false, &target(PeerTrust::Untrusted), None);
        let mut seen: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                "host: example.com",
                "x-forwarded-for: 127.0.0.1",
                "x-forwarded-host: example.com",
                "x-forwarded-proto: http",
            ]
        );
    }

    #[test]
    fn a_trusted_peer_speaks_for_its_client_and_a_proof_is_replaced() {
        let mut h = spoofed();
        let trusted = Target {
            router_proof: Some(HeaderValue::from_static("c0ffee")),
            access: None,
            ..target(PeerTrust::Trusted)
        };
        prepare_headers(&mut h, false, &trusted, Some("/p/abc"));
        assert_eq!(h[&X_FORWARDED_FOR], "6.6.6.6, 7.7.7.7, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "evil.example");
        assert_eq!(h[&X_FORWARDED_PORT], "443");
        assert_eq!(h[&X_FORWARDED_PREFIX], "/p/abc");
        assert_eq!(h[&X_REAL_IP], "6.6.6.6");
        assert_eq!(h[header::FORWARDED], "for=6.6.6.6");
        let proofs: Vec<_> = h.get_all(&X_SPAWNER_ROUTER_PROOF).iter().collect();
        assert_eq!(proofs, ["c0ffee"]);
    }

    #[test]
    fn applies_the_response_policy() {
        let backend = || {
            let mut h = HeaderMap::new();
            h.insert(&SERVICE_WORKER_ALLOWED, HeaderValue::from_static("/"));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'"),
            );
            h
        };
        let mut pass = backend();
        apply_policy(&mut pass, ResponsePolicy::Pass);
        assert_eq!(pass, backend());
        let mut shared = backend();
        apply_policy(&mut shared, ResponsePolicy::SharedOrigin);
        assert!(!shared.contains_key(&SERVICE_WORKER_ALLOWED));
        assert_eq!(
            shared[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'"
        );
        let mut sandbox = backend();
        apply_policy(&mut sandbox, ResponsePolicy::Sandbox);
        assert!(!sandbox.contains_key(&SERVICE_WORKER_ALLOWED));
        let policies: Vec<_> = sandbox
            .get_all(header::CONTENT_SECURITY_POLICY)
            .iter()
            .collect();
        assert_eq!(policies, ["default-src 'self'", SANDBOX]);
    }

    #[test]
    fn detects_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(!is_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
    }
}
