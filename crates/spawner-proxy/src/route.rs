//! Routing pieces shared by the embedded server and the Kubernetes router, so that both
//! read a request's host and name a backend the same way.

use crate::body::ProxyBody;
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

#[cfg(test)]
mod tests {
    use super::*;

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
