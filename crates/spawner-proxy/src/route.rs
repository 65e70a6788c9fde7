//! Routing pieces shared by the embedded server and the Kubernetes router, so that both
//! read a request's host, name a backend and keep browsers to the backends' own origins
//! the same way.
//!
//! # Origins
//!
//! A browser isolates pages by origin (scheme, host, port). Under path routing
//! (`/p/{id}/…`) a backend shares the proxy's origin: with the dashboard (the embedded
//! server), with every other backend (both). A page it serves could then read what the
//! dashboard keeps in the browser, or register a service worker that answers for other
//! backends. So where backends have origins of their own (a domain is configured:
//! `{id}.{domain}`), path routing is for clients that are not browsers, and
//! [`disposition`] sends browsers to the backend's own origin; where they have none (the
//! Kubernetes router without a domain), at least no service worker may reach past its
//! backend's path.

use crate::body::ProxyBody;
use crate::target::ResponsePolicy;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

/// The host a request is for: its `Host` header, or the authority of an absolute-form
/// target.
pub fn host_of<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
}

/// The backend id that `host` names under `domain` (`{id}.{domain}`, any port), if any.
pub fn id_from_host<'a>(domain: &str, host: &'a str) -> Option<&'a str> {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name.strip_suffix(domain)
        .and_then(|s| s.strip_suffix('.'))
        .filter(|id| !id.is_empty() && !id.contains('.'))
}

/// Whether `id` can be the first label of a host name (letters, digits, `-`; at most 63):
/// only such a backend can have an origin of its own, and only such an id is put into a
/// redirect's `Location`.
pub fn is_host_label(id: &str) -> bool {
    (1..=63).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `308` to the request's path with a slash added (`/p/{id}` → `/p/{id}/`), query kept.
pub fn add_slash<B>(req: &Request<B>) -> Response<ProxyBody> {
    let location = match req.uri().query() {
        Some(q) => format!("{}/?{q}", req.uri().path()),
        None => format!("{}/", req.uri().path()),
    };
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::try_from(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// What becomes of a request for a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Forwarded, with this policy on the response.
    Forward(ResponsePolicy),
    /// A browser's navigation by path while the backend has an origin of its own: `307` to
    /// the same resource there ([`to_own_origin`]).
    Redirect,
    /// Any other browser request by path (fetch, XHR, WebSocket, a subresource) while the
    /// backend has an origin of its own: `403` naming that origin ([`own_origin_only`]);
    /// nothing reaches the backend.
    Refuse,
}

/// The rule of docs/api.md's "Proxy", for the embedded server and the Kubernetes router.
/// `by_path`: routed by `/p/{id}/` (not by host); `own_origins`: backends are served at
/// `{id}.{domain}` (a domain is configured); `fetch_mode`: the request's `Sec-Fetch-Mode`,
/// which every browser sends and no page can forge (its absence: no browser).
pub fn disposition(
    by_path: bool,
    own_origins: bool,
    method: &str,
    fetch_mode: Option<&[u8]>,
) -> Disposition {
    match (by_path, own_origins, fetch_mode) {
        (false, _, _) => Disposition::Forward(ResponsePolicy::Pass),
        (true, false, _) => Disposition::Forward(ResponsePolicy::SharedOrigin),
        (true, true, None) => Disposition::Forward(ResponsePolicy::Sandbox),
        (true, true, Some(mode))
            if mode.eq_ignore_ascii_case(b"navigate") && matches!(method, "GET" | "HEAD") =>
        {
            Disposition::Redirect
        }
        (true, true, Some(_)) => Disposition::Refuse,
    }
}

/// The `Sec-Fetch-Mode` of a request on hyper's path (as [`crate::RequestHead::fetch_mode`]).
pub fn fetch_mode<B>(req: &Request<B>) -> Option<&[u8]> {
    req.headers()
        .get("sec-fetch-mode")
        .map(HeaderValue::as_bytes)
}

/// `307` to the same resource at the backend's own origin: `origin` is the backend's URL
/// (`http://{id}.{domain}:8080/`), `rest` the path after `/p/{id}`, the query kept.
pub fn to_own_origin(origin: &str, rest: &str, query: Option<&str>) -> Response<ProxyBody> {
    let mut location = origin.trim_end_matches('/').to_string();
    location.push_str(if rest.is_empty() { "/" } else { rest });
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    if let Ok(v) = HeaderValue::try_from(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `403` for a browser's request by path to a backend that has an origin of its own.
pub fn own_origin_only(origin: &str) -> Response<ProxyBody> {
    let text = format!(
        "this backend is served at its own origin, {origin}: browsers reach it there, not under /p/\n"
    );
    let mut resp = Response::new(ProxyBody::message(text));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_kept_to_the_backends_own_origins() {
        use Disposition::*;
        use ResponsePolicy::*;
        let nav = Some(&b"navigate"[..]);
        // Host routing: the backend's own origin; nothing changes.
        assert_eq!(disposition(false, true, "GET", nav), Forward(Pass));
        assert_eq!(disposition(false, false, "POST", None), Forward(Pass));
        // Path routing without own origins: shared, so no service worker may widen its scope.
        assert_eq!(disposition(true, false, "GET", nav), Forward(SharedOrigin));
        assert_eq!(disposition(true, false, "GET", None), Forward(SharedOrigin));
        // Path routing with own origins: browsers go there; other clients get a sandbox.
        assert_eq!(disposition(true, true, "GET", nav), Redirect);
        assert_eq!(disposition(true, true, "HEAD", Some(b"Navigate")), Redirect);
        assert_eq!(disposition(true, true, "POST", nav), Refuse);
        for mode in ["cors", "no-cors", "same-origin", "websocket", ""] {
            assert_eq!(
                disposition(true, true, "GET", Some(mode.as_bytes())),
                Refuse,
                "{mode}"
            );
        }
        assert_eq!(disposition(true, true, "GET", None), Forward(Sandbox));
        assert_eq!(disposition(true, true, "DELETE", None), Forward(Sandbox));
    }

    #[test]
    fn redirects_to_the_same_resource_at_the_own_origin() {
        let origin = "http://abc.localhost:8080/";
        for (rest, query, want) in [
            ("/x/y", Some("q=1&r"), "http://abc.localhost:8080/x/y?q=1&r"),
            ("/", None, "http://abc.localhost:8080/"),
            ("", Some("a"), "http://abc.localhost:8080/?a"),
        ] {
            let resp = to_own_origin(origin, rest, query);
            assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
            assert_eq!(resp.headers()[header::LOCATION], want);
        }
        let refused = own_origin_only(origin);
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        match refused.into_body() {
            ProxyBody::Message(Some(text)) => {
                assert!(String::from_utf8_lossy(&text).contains(origin))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_host_labels_get_an_origin() {
        assert!(is_host_label("abc-123"));
        assert!(is_host_label(&"a".repeat(63)));
        for id in [
            "",
            "a.b",
            "x@evil.example",
            "a/b",
            "a:1",
            "é",
            &"a".repeat(64),
        ] {
            assert!(!is_host_label(id), "{id:?}");
        }
    }

    #[test]
    fn names_backends_by_host() {
        assert_eq!(id_from_host("example.com", "abc.example.com"), Some("abc"));
        assert_eq!(
            id_from_host("example.com", "abc.example.com:8080"),
            Some("abc")
        );
        assert_eq!(id_from_host("example.com", "example.com"), None);
        assert_eq!(id_from_host("example.com", "a.b.example.com"), None);
        assert_eq!(id_from_host("example.com", "abcexample.com"), None);
    }
}
