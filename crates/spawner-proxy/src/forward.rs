//! Forwarding one request (or one upgraded connection) to a backend.

use crate::body::ProxyBody;
use crate::monitor::Monitor;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Where one request goes.
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
}

/// Forwards requests to backends over pooled keep-alive connections. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Incoming>,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new()
    }
}

impl Forwarder {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Forwarder { client }
    }

    /// Forwards `req` to `target` and returns the backend's response (or a 502 saying why
    /// not). An upgrade (WebSocket) is joined end to end and counted until it closes.
    pub async fn forward(&self, mut req: Request<Incoming>, target: Target) -> Response<ProxyBody> {
        let upgrade = is_upgrade(req.headers());
        let path_and_query = match rewrite_path(req.uri(), target.strip) {
            Some(pq) => pq,
            None => return message(StatusCode::BAD_REQUEST, "malformed request path\n"),
        };
        let prefix = (target.strip > 0).then(|| req.uri().path()[..target.strip].to_string());
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(target.authority.clone())
            .path_and_query(path_and_query)
            .build();
        let Ok(uri) = uri else {
            return message(StatusCode::BAD_REQUEST, "malformed request path\n");
        };
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        prepare_headers(
            req.headers_mut(),
            upgrade,
            target.client_ip,
            prefix.as_deref(),
        );

        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let guard = target.monitor.open();
        let mut resp = match self.client.request(req).await {
            Ok(resp) => resp,
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
                    let mut client = TokioIo::new(client);
                    let mut backend = TokioIo::new(backend);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                    drop(guard);
                });
                let (parts, _) = resp.into_parts();
                return Response::from_parts(parts, ProxyBody::empty());
            }
        }

        strip_hop_by_hop(resp.headers_mut());
        resp.map(|body| ProxyBody::Backend {
            body,
            guard: Some(guard),
        })
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
/// for an upgrade, and adds the `X-Forwarded-*` headers.
fn prepare_headers(
    headers: &mut HeaderMap,
    upgrade: bool,
    client_ip: IpAddr,
    prefix: Option<&str>,
) {
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

    let ip = client_ip.to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
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
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_connection_listed(headers);
    headers.remove(header::CONNECTION);
    headers.remove(&KEEP_ALIVE);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::TRAILER);
    headers.remove(header::UPGRADE);
}

/// Removes the headers that `Connection` names (other than `upgrade`/`close`/`keep-alive`).
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
        prepare_headers(&mut h, false, "127.0.0.1".parse().unwrap(), Some("/p/abc"));
        assert!(!h.contains_key("x-secret"));
        assert!(!h.contains_key(header::CONNECTION));
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_HOST], "example.com");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_PREFIX], "/p/abc");
        assert_eq!(h[header::HOST], "example.com");
        assert_eq!(h[header::COOKIE], "a=b");
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
