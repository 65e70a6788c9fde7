//! What a browser may do with the API: the guard in front of every API route of both
//! servers, before routing and before the token.
//!
//! A web page the user merely visits can send requests to any address the browser reaches,
//! `127.0.0.1` included, and a DNS-rebinding page can even read the answers under a name of
//! its own. The guard's rules, in order:
//!
//! 1. **Host**: the request's `Host` must be one of the server's own names ([`OwnHosts`]):
//!    `localhost`, loopback literals, the listen address (any address literal when it
//!    listens on all of them), the host of its public URL or domain, or an allowed host.
//!    A rebinding page's requests carry its own name, so they are refused here (`403
//!    host_not_allowed`). An address literal cannot be rebound, which is why literals pass.
//! 2. **Origin**: a request that carries `Origin` must come from the server's own origin
//!    (the `Host` it was sent to, or its public URL) or from a configured CORS origin;
//!    `Origin: null` (sandboxed frames, files) is foreign. A request without `Origin` that
//!    a browser marks `Sec-Fetch-Site: cross-site` or `same-site` (an image, a script, a
//!    no-cors GET) is refused too, except a top-level navigation (a link to the dashboard
//!    or to a `ready_url`). Browsers set both headers themselves; no page can forge them.
//! 3. **Body**: a request with a body must say `Content-Type: application/json` (`415`
//!    otherwise): a cross-site form or a no-cors `fetch` can only send `text/plain`, form
//!    and multipart bodies without asking the server first.
//!
//! Every answer also says it may not be framed or sniffed. No CORS headers are sent unless
//! origins are configured ([`Guard::with_cors_origins`]).

use crate::error::ErrorCode;
use crate::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The names under which a server is reached: anything else in `Host` is refused.
#[derive(Debug, Clone, Default)]
pub struct OwnHosts {
    /// Lowercase host names and address literals, without port or trailing dot.
    names: Vec<String>,
    /// The server listens on every address: any address literal is one of its own.
    any_address: bool,
}

impl OwnHosts {
    /// `localhost`, the loopback literals, and the listen address.
    pub fn new(listen: SocketAddr) -> Self {
        let mut hosts = OwnHosts {
            names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            any_address: listen.ip().is_unspecified(),
        };
        hosts.add(&listen.ip().to_string());
        hosts
    }

    /// Adds a name (`example.com`, `10.0.0.5`, `[::1]`; a port is ignored).
    pub fn add(&mut self, name: &str) {
        let name = normal_host(name);
        if !name.is_empty() && !self.names.contains(&name) {
            self.names.push(name);
        }
    }

    /// Adds the host of `url` (`https://spawner.example.com/`).
    pub fn add_url(&mut self, url: &str) {
        if let Some(authority) = authority_of(url) {
            self.add(authority);
        }
    }

    /// Whether `host` (a `Host` header's value) names this server.
    pub fn allows(&self, host: &str) -> bool {
        let name = normal_host(host);
        if self.names.contains(&name) {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => self.any_address || ip.is_loopback(),
            Err(_) => false,
        }
    }

    /// The names, for an error message.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// The guard's settings, shared by every request.
#[derive(Debug, Clone)]
pub struct Guard {
    hosts: OwnHosts,
    /// `scheme://host[:port]` of the server's public URL: its own origin whatever `Host` a
    /// proxy in front of it sends.
    public_origin: Option<String>,
    /// Origins of other sites allowed to call the API from a browser (CORS).
    cors_origins: Vec<String>,
}

impl Guard {
    pub fn new(hosts: OwnHosts) -> Self {
        Guard {
            hosts,
            public_origin: None,
            cors_origins: Vec::new(),
        }
    }

    /// The guard of a server listening on `listen`, reached at `public_url` (if set) and
    /// under the `names` of its configuration, whose pages `cors_origins` may call it.
    pub fn for_server(
        listen: SocketAddr,
        public_url: Option<&str>,
        names: &[String],
        cors_origins: &[String],
    ) -> Self {
        let mut hosts = OwnHosts::new(listen);
        for name in names {
            hosts.add(name);
        }
        let guard = Guard::new(hosts).with_cors_origins(cors_origins);
        match public_url {
            Some(url) => guard.with_public_url(url),
            None => guard,
        }
    }

    /// The server's public URL: its host is one of its own, its origin is its own.
    pub fn with_public_url(mut self, url: &str) -> Self {
        self.hosts.add_url(url);
        self.public_origin = origin_of(url);
        self
    }

    /// Origins (`https://app.example.com`) whose pages may call the API (CORS).
    pub fn with_cors_origins(mut self, origins: &[String]) -> Self {
        self.cors_origins = origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        self
    }

    pub fn cors_origins(&self) -> &[String] {
        &self.cors_origins
    }

    /// Wraps `router` in the guard (and in CORS for the configured origins, if any).
    pub fn layer<S: Clone + Send + Sync + 'static>(
        self,
        router: axum::Router<S>,
    ) -> axum::Router<S> {
        let cors = cors_layer(&self.cors_origins);
        let router = router.layer(axum::middleware::from_fn_with_state(Arc::new(self), guard));
        match cors {
            // Outside the guard: a preflight is answered before it, and the guard sees only
            // the request itself, whose origin it allows.
            Some(cors) => router.layer(cors),
            None => router,
        }
    }

    /// Why a request must be refused, if it must.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidHeader,
                    "the request has no Host header (HTTP/1.1 requires one)",
                )
            })?;
        if !self.hosts.allows(host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::HostNotAllowed,
                format!(
                    "Host {host:?} is not one of this server's names ({}): a page under \
                     another name may not use it. If you reach it under that name, start it \
                     with --allowed-host {}",
                    self.hosts.names().join(", "),
                    normal_host(host)
                ),
            ));
        }
        match headers
            .get(header::ORIGIN)
            .map(|o| o.to_str().unwrap_or(""))
        {
            Some(origin) => {
                if !self.origin_allowed(origin, host) {
                    return Err(cross_origin(&format!(
                        "Origin {origin:?} is another site's"
                    )));
                }
            }
            None => {
                let site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
                let foreign = matches!(site, Some(b"cross-site" | b"same-site"));
                let navigation = (method == Method::GET || method == Method::HEAD)
                    && headers
                        .get("sec-fetch-mode")
                        .is_some_and(|m| m.as_bytes() == b"navigate");
                if foreign && !navigation {
                    return Err(cross_origin("it was sent by another site's page"));
                }
            }
        }
        if has_body(headers) && !is_json(headers) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "request bodies must be JSON sent with \"Content-Type: application/json\" \
                 (curl: --json '{...}', or -H 'Content-Type: application/json')",
            ));
        }
        Ok(())
    }

    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.cors_origins.contains(&origin) || self.public_origin.as_deref() == Some(&origin) {
            return true;
        }
        // Same origin: the authority the page was loaded from is the one it sent this to.
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        let default_port = match scheme {
            "http" => ":80",
            "https" => ":443",
            _ => return false,
        };
        let host = host.to_ascii_lowercase();
        let strip = |a: &str| a.strip_suffix(default_port).unwrap_or(a).to_string();
        strip(authority) == strip(host.trim_end_matches('.'))
    }
}

fn cross_origin(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::CrossOrigin,
        format!(
            "cross-origin request refused: {why}. Only the dashboard's own pages and non-browser \
             clients may use this API; to let a site's pages call it, start the server with \
             --cors-origin https://that.site"
        ),
    )
}

/// Middleware (`axum::middleware::from_fn_with_state`): refuses what [`Guard::check`]
/// refuses, and marks every answer as not to be framed or sniffed.
pub async fn guard(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let mut resp = match guard.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::info!(code = e.code.as_str(), message = %e.message, "refused by the guard");
            e.into_response()
        }
    };
    let headers = resp.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // No other site may load an answer into its page, not even as an image or script.
    headers
        .entry("cross-origin-resource-policy")
        .or_insert(HeaderValue::from_static("same-origin"));
    resp
}

fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let values: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(values))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("last-event-id"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Whether a request carries a body (a length above zero, or any transfer coding).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// `application/json`, with parameters (`; charset=utf-8`) or not.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// A host without port, brackets or trailing dot, in lowercase.
fn normal_host(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() > 1 {
        host // a bare IPv6 literal
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `host[:port]` of a URL.
fn authority_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    rest.split(['/', '?', '#']).next().filter(|a| !a.is_empty())
}

/// `scheme://host[:port]` of a URL, in lowercase.
fn origin_of(url: &str) -> Option<String> {
    let scheme = url.split_once("://")?.0;
    let authority = authority_of(url)?;
    Some(format!("{scheme}://{authority}").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        let mut hosts = OwnHosts::new("127.0.0.1:8080".parse().unwrap());
        hosts.add("spawner.internal");
        Guard::new(hosts).with_public_url("https://spawner.example.com/")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn code(method: Method, pairs: &[(&str, &str)]) -> Option<&'static str> {
        guard()
            .check(&method, &headers(pairs))
            .err()
            .map(|e| e.code.as_str())
    }

    #[test]
    fn own_names_and_address_literals_pass_other_names_do_not() {
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST.",
            "[::1]:8080",
            "127.0.0.5",
            "spawner.internal",
            "spawner.example.com",
        ] {
            assert_eq!(code(Method::GET, &[("host", host)]), None, "{host}");
        }
        for host in [
            "evil.example:8080",
            "a.localhost:8080",
            "10.0.0.1",
            "localhost.evil",
        ] {
            assert_eq!(
                code(Method::GET, &[("host", host)]),
                Some("host_not_allowed"),
                "{host}"
            );
        }
        assert_eq!(code(Method::GET, &[]), Some("invalid_header"));
        let everywhere = OwnHosts::new("0.0.0.0:8080".parse().unwrap());
        assert!(everywhere.allows("10.1.2.3:8080") && !everywhere.allows("evil.example"));
    }

    #[test]
    fn only_the_server_s_own_origin_may_send_requests() {
        let host = ("host", "127.0.0.1:8080");
        assert_eq!(
            code(Method::POST, &[host, ("origin", "http://127.0.0.1:8080")]),
            None
        );
        assert_eq!(
            code(
                Method::POST,
                &[host, ("origin", "https://spawner.example.com")]
            ),
            None
        );
        for origin in [
            "http://evil.example",
            "http://localhost:8080",
            "http://127.0.0.1:8081",
            "null",
        ] {
            assert_eq!(
                code(Method::POST, &[host, ("origin", origin)]),
                Some("cross_origin"),
                "{origin}"
            );
        }
        assert_eq!(
            code(
                Method::GET,
                &[("host", "localhost"), ("origin", "http://localhost:80")]
            ),
            None
        );
    }

    #[test]
    fn another_site_s_subresources_are_refused_its_links_followed() {
        let host = ("host", "127.0.0.1:8080");
        for site in ["cross-site", "same-site"] {
            let fetch = [
                host,
                ("sec-fetch-site", site),
                ("sec-fetch-mode", "no-cors"),
            ];
            assert_eq!(code(Method::GET, &fetch), Some("cross_origin"));
            let link = [
                host,
                ("sec-fetch-site", site),
                ("sec-fetch-mode", "navigate"),
            ];
            assert_eq!(code(Method::GET, &link), None);
            assert_eq!(code(Method::POST, &link), Some("cross_origin"));
        }
        let own = [
            host,
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
        ];
        assert_eq!(code(Method::GET, &own), None);
    }

    #[test]
    fn bodies_must_be_declared_json() {
        let host = ("host", "127.0.0.1:8080");
        for ctype in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let h = [host, ("content-length", "2"), ("content-type", ctype)];
            assert_eq!(code(Method::POST, &h), Some("unsupported_media_type"));
        }
        assert_eq!(
            code(Method::POST, &[host, ("transfer-encoding", "chunked")]),
            Some("unsupported_media_type")
        );
        let json = [
            host,
            ("content-length", "2"),
            ("content-type", "Application/JSON; charset=utf-8"),
        ];
        assert_eq!(code(Method::POST, &json), None);
        assert_eq!(
            code(Method::POST, &[host, ("content-length", "0")]),
            None,
            "a bodiless POST (terminate) needs no type"
        );
    }

    #[test]
    fn configured_cors_origins_pass() {
        let g = guard().with_cors_origins(&["https://App.example.com/".to_string()]);
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://app.example.com"),
        ]);
        assert!(g.check(&Method::POST, &h).is_ok());
    }
}
