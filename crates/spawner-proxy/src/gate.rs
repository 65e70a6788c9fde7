//! The per-user access check on a request ([`crate::access`]'s rules), one implementation
//! for every proxy that applies it: the embedded server's, the Kubernetes router's and the
//! sidecar's. The caller gives the backend's key and grants ([`Gate`], `None` for an open
//! backend); the answer is the grant the request is admitted as, or the response it gets
//! instead (the exchange of a connect token, or a refusal).
//!
//! The relay takes a request only when [`relay_admits`] can admit it by its one `Cookie`
//! header (or the backend is open) and it carries no connect token; everything else (an
//! exchange, a bearer token, several `Cookie` headers, a refusal) is hyper's path's
//! ([`admit`]), with the same rules.

use crate::access::{self, BackendKey, Grant, Grants, Nonces, Refused, TokenError};
use crate::body::ProxyBody;
use crate::head::RequestHead;
use crate::route::fetch_mode;
use http::{header, HeaderValue, Request, Response, StatusCode};
use std::sync::Arc;

/// A token-mode backend's key and grants, and the single-use tokens this proxy saw used.
#[derive(Clone, Copy)]
pub struct Gate<'a> {
    pub key: &'a BackendKey,
    pub grants: &'a Grants,
    pub nonces: &'a Nonces,
}

/// Who the relay may forward a request as: `Some(None)` for an open backend,
/// `Some(Some(grant))` when its one `Cookie` header admits it; `None` leaves the request
/// to hyper's path ([`admit`]), which exchanges, admits by bearer token or refuses.
pub fn relay_admits(gate: Option<Gate<'_>>, head: &RequestHead) -> Option<Option<Arc<Grant>>> {
    if head.query.is_some_and(carries_token) {
        return None;
    }
    let Some(gate) = gate else {
        return Some(None);
    };
    if head.connect_bearer || head.cookies != 1 {
        return None;
    }
    access::admit_by_cookies(gate.key, gate.grants, head.cookie)
        .ok()
        .map(Some)
}

/// Whether a query carries a connect token (a cheap look first).
pub fn carries_token(query: &str) -> bool {
    access::query_mentions_token(query) && access::split_token(query).is_some()
}

/// Hyper's path: the grant a request is admitted as (`None` for an open backend), or the
/// answer it gets instead. `path_prefix` is the length of `/p/{id}` under path routing (0
/// on the backend's own origin); `secure`: browsers reach the proxy over HTTPS; `now`:
/// Unix seconds.
pub fn admit<B>(
    gate: Option<Gate<'_>>,
    req: &Request<B>,
    path_prefix: usize,
    secure: bool,
    now: i64,
) -> Result<Option<Arc<Grant>>, Box<Response<ProxyBody>>> {
    if let Some((tokens, rest)) = req.uri().query().and_then(access::split_token) {
        return Err(Box::new(exchange(
            gate,
            req,
            path_prefix,
            secure,
            now,
            &tokens,
            &rest,
        )));
    }
    let Some(gate) = gate else {
        return Ok(None);
    };
    let cookies = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes);
    match access::admit_by_cookies(gate.key, gate.grants, cookies) {
        Ok(grant) => return Ok(Some(grant)),
        Err(Refused::Conflict) => return Err(Box::new(refused(req, Refused::Conflict))),
        Err(Refused::Missing) => {}
    }
    match bearer(req).map(|t| by_token(gate, t, now)) {
        Some(Ok(grant)) => Ok(Some(grant)),
        _ => Err(Box::new(refused(req, Refused::Missing))),
    }
}

/// The connect token of a request's `Authorization: Bearer` header, if any.
pub fn bearer<B>(req: &Request<B>) -> Option<&[u8]> {
    req.headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .find_map(|v| access::bearer_token(v.as_bytes()))
}

/// The grant a connect token admits as, using it up if it is single-use.
pub fn by_token(gate: Gate<'_>, token: &[u8], now: i64) -> Result<Arc<Grant>, TokenError> {
    let claims = gate.key.verify_token(token, now)?;
    let grant = gate
        .grants
        .get(&claims.user, claims.generation)
        .ok_or(TokenError::Revoked)?;
    if !gate.nonces.consume(&claims, now) {
        return Err(TokenError::Used);
    }
    Ok(grant)
}

/// Rule 2: a request with `spawner_token` is answered here, never forwarded: `303` to the
/// same URL without it, with the access cookie when the token admits; `401` otherwise. An
/// open backend needs no token: it is dropped from the URL all the same.
fn exchange<B>(
    gate: Option<Gate<'_>>,
    req: &Request<B>,
    path_prefix: usize,
    secure: bool,
    now: i64,
    tokens: &[String],
    rest: &str,
) -> Response<ProxyBody> {
    let path = req.uri().path();
    let location = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{rest}")
    };
    let Some(gate) = gate else {
        return see_other(&location, None);
    };
    let grant = match tokens {
        [token] => by_token(gate, token.as_bytes(), now),
        _ => Err(TokenError::Malformed),
    };
    match grant {
        Ok(grant) => {
            let cookie_path = if path_prefix > 0 {
                path.get(..path_prefix + 1).unwrap_or("/")
            } else {
                "/"
            };
            let value = gate.key.mint_cookie(&grant.user, grant.generation);
            let cookie = access::set_cookie(&value, secure, cookie_path);
            see_other(&location, Some(&cookie))
        }
        Err(why) => {
            tracing::debug!(backend = %gate.key.backend(), %why, "refused a connect token");
            refused(req, Refused::Missing)
        }
    }
}

fn see_other(location: &str, cookie: Option<&str>) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::try_from(location) {
        headers.insert(header::LOCATION, v);
    }
    if let Some(v) = cookie.and_then(|c| HeaderValue::try_from(c).ok()) {
        headers.insert(header::SET_COOKIE, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// `401`: a short page for a browser, JSON for other clients.
pub fn refused<B>(req: &Request<B>, why: Refused) -> Response<ProxyBody> {
    let browser = fetch_mode(req).is_some();
    let (content_type, body) = access::refusal_body(browser, why);
    let mut resp = Response::new(ProxyBody::message(body));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// What a component that holds a backend's key but not its grants (the Kubernetes sidecar,
/// behind the router) can check of a request: an access cookie or a bearer connect token
/// genuine for this backend (a token also unexpired and, if single-use, unused here). A
/// revocation is the router's to enforce: this is defence in depth against a client that
/// reaches the backend without the router, which then needs a credential for this very
/// backend. A connect token in the query is never forwarded (rule 2): refused.
pub fn admit_signed<B>(
    key: &BackendKey,
    nonces: &Nonces,
    req: &Request<B>,
    now: i64,
) -> Result<Arc<Grant>, Box<Response<ProxyBody>>> {
    let refuse = |why| Box::new(refused(req, why));
    if req.uri().query().is_some_and(carries_token) {
        return Err(refuse(Refused::Missing));
    }
    let mut admitted: Option<(String, u64)> = None;
    for header in req.headers().get_all(header::COOKIE) {
        for claims in access::access_cookies(header.as_bytes()).filter_map(|v| key.verify_cookie(v))
        {
            match &admitted {
                Some((user, _)) if *user != claims.user => return Err(refuse(Refused::Conflict)),
                Some(_) => {}
                None => admitted = Some((claims.user, claims.generation)),
            }
        }
    }
    if admitted.is_none() {
        if let Some(token) = bearer(req) {
            admitted = key
                .verify_token(token, now)
                .ok()
                .filter(|c| nonces.consume(c, now))
                .map(|c| (c.user, c.generation));
        }
    }
    let (user, generation) = admitted.ok_or_else(|| refuse(Refused::Missing))?;
    Grant::new(&user, generation, None, 0)
        .map(Arc::new)
        .ok_or_else(|| refuse(Refused::Missing))
}
