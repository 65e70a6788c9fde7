//! Where a request goes, and connecting there: the ground both proxy paths stand on.

use crate::access::Grant;
use crate::forwarded::PeerTrust;
use crate::monitor::Monitor;
use http::uri::Authority;
use http::HeaderValue;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one request goes.
#[derive(Debug)]
pub struct Target {
    /// The backend's `host:port`.
    pub authority: Authority,
    /// The monitor the request is counted in.
    pub monitor: Arc<Monitor>,
    /// Bytes of the request path to drop before forwarding (`/p/{id}` under path routing
    /// with prefix stripping); the dropped prefix is sent as `X-Forwarded-Prefix`.
    pub strip: usize,
    /// The address of the client that sent the request, for `X-Forwarded-For`.
    pub client_ip: IpAddr,
    /// Whether that client may speak through the forwarding headers
    /// ([`crate::forwarded`]): untrusted unless the route function knows it for a proxy.
    pub trust: PeerTrust,
    /// What is done to the response's headers, by how the request was routed.
    pub response: ResponsePolicy,
    /// The Kubernetes router's proof for this backend's sidecar, sent as
    /// [`crate::forwarded::ROUTER_PROOF`]; `None` everywhere else.
    pub router_proof: Option<HeaderValue>,
    /// The grant that admitted the request to a token-mode backend ([`crate::access`]):
    /// the backend gets its user as `X-Spawner-User` (and its data), and an upgraded
    /// connection closes (1008) when it is revoked. `None` for an open backend.
    pub access: Option<Arc<Grant>>,
}

/// What the proxy does to a backend's response headers. Browsers isolate what they run by
/// origin; a backend served on an origin it shares (with the dashboard, or with the other
/// backends under `/p/`) must not be able to act for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePolicy {
    /// Host routing (`{id}.{domain}`), or a sidecar behind the router: the headers pass.
    /// `Service-Worker-Allowed` cannot widen a scope beyond the backend's own origin.
    Pass,
    /// Path routing where every backend shares the proxy's origin (no domain):
    /// `Service-Worker-Allowed` is removed, so that a backend at `/p/x/` cannot register a
    /// service worker whose scope covers `/p/y/`.
    SharedOrigin,
    /// Path routing while backends have origins of their own, for a client that is not a
    /// browser (browsers are redirected or refused before this): `Service-Worker-Allowed`
    /// is removed and [`SANDBOX`] added, so that a browser that reached it anyway renders it
    /// in an opaque origin, which can read nothing of the proxy's origin and register no
    /// service worker.
    Sandbox,
}

/// The `Content-Security-Policy` of [`ResponsePolicy::Sandbox`]: scripts, forms, pop-ups,
/// dialogs and downloads work; `allow-same-origin` is left out on purpose.
pub const SANDBOX: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

/// Opens a TCP connection to a backend (both proxy paths), giving up after 10 s.
pub(crate) async fn connect_tcp(authority: &Authority) -> std::io::Result<TcpStream> {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
