//! Per-user access in the embedded server: minting connect URLs (spawn, claim, connect),
//! grants kept in the store and in memory, and the proxy's side: the exchange of a connect
//! token for a cookie, and who a request is admitted as. The rules are
//! `spawner_proxy::access`'s; both of the proxy's paths apply them through here:
//! the relay takes a request only when it can admit it by its one `Cookie` header (or the
//! backend is open) and it carries no connect token; everything else (an exchange, a bearer
//! token, several `Cookie` headers, a refusal) is hyper's path's, with the same rules.

use crate::app::App;
use crate::live::{Live, LiveAccess};
use crate::store::grants::StoredGrant;
use http::{header, HeaderValue, Request, Response, StatusCode};
use spawner_api::ApiError;
use spawner_core::access::{ConnectAsk, ConnectResponse};
use spawner_core::time::now_millis;
use spawner_proxy::access::{self, Grant, Refused};
use spawner_proxy::{ProxyBody, RequestHead};
use std::sync::Arc;

/// Loads an adopted backend's grants from the store.
pub fn restore(app: &App, live: &Live) -> anyhow::Result<()> {
    let Some(state) = live.access(&app.access_key) else {
        return Ok(());
    };
    for g in app.store.grants(&live.id)? {
        match Grant::new(&g.user, g.generation, g.user_data, g.granted_at) {
            Some(grant) => {
                state.grants.insert(grant);
            }
            None => {
                tracing::warn!(backend = %live.id, user = %g.user, "a stored grant's user is not a header value; skipped")
            }
        }
    }
    Ok(())
}

/// A connect URL for `ask.user` of a token-mode backend: their standing grant, or a new one
/// recorded durably first.
pub async fn mint(app: &App, live: &Live, ask: &ConnectAsk) -> Result<ConnectResponse, ApiError> {
    let Some(state) = live.access(&app.access_key) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "open_access",
            format!(
                "backend {} is open: its URL admits whoever has it, no connect URL is needed; \
                 spawn with \"access\": {{\"mode\": \"token\", \"user\": ...}} for per-user access",
                live.id
            ),
        ));
    };
    let grant = match state.grants.of(&ask.user) {
        Some(g) => g,
        None => {
            let generation = access::new_generation().map_err(|_| {
                ApiError::internal("the system's random source failed; no grant made")
            })?;
            let stored = app
                .store
                .grant(
                    &live.id,
                    StoredGrant {
                        user: ask.user.clone(),
                        generation,
                        user_data: ask.user_data.clone(),
                        granted_at: now_millis(),
                    },
                )
                .await
                .map_err(crate::api::store_error)?;
            let grant = Grant::new(
                &stored.user,
                stored.generation,
                stored.user_data,
                stored.granted_at,
            )
            .ok_or_else(|| ApiError::internal("a validated user is not a header value"))?;
            let grant = state.grants.insert(grant);
            tracing::info!(backend = %live.id, user = %ask.user, "access granted");
            grant
        }
    };
    let now = now_millis();
    let expires_ms = now.saturating_add((ask.ttl_seconds * 1000) as i64);
    let token = state
        .key
        .mint_token(&ask.user, grant.generation, expires_ms / 1000, ask.reusable)
        .map_err(|_| ApiError::internal("the system's random source failed; no token made"))?;
    Ok(ConnectResponse {
        connect_url: format!(
            "{}?{}={token}",
            app.urls.backend(&live.id),
            access::TOKEN_PARAM
        ),
        // Whole seconds, as the token counts them.
        expires_at: expires_ms / 1000 * 1000,
    })
}

/// Revokes `user`'s access: durably, then in memory (their WebSockets close with 1008).
pub async fn revoke(app: &App, id: &str, user: &str) -> Result<bool, ApiError> {
    let stored = app
        .store
        .revoke(id, user)
        .await
        .map_err(crate::api::store_error)?;
    let live = app
        .registry
        .get(id)
        .and_then(|l| l.access(&app.access_key).map(|a| a.grants.revoke(user)))
        .unwrap_or(false);
    if stored || live {
        tracing::info!(backend = %id, %user, "access revoked");
    }
    Ok(stored || live)
}

/// Who the relay may forward a request as: `Some(None)` for an open backend,
/// `Some(Some(grant))` when its one `Cookie` header admits it; `None` leaves the request
/// to hyper's path ([`gate`]), which exchanges, admits by bearer token or refuses.
pub fn relay_admits(app: &App, live: &Live, head: &RequestHead) -> Option<Option<Arc<Grant>>> {
    if head.query.is_some_and(carries_token) {
        return None;
    }
    let Some(state) = live.access(&app.access_key) else {
        return Some(None);
    };
    if head.connect_bearer || head.cookies != 1 {
        return None;
    }
    access::admit_by_cookies(&state.key, &state.grants, head.cookie)
        .ok()
        .map(Some)
}

fn carries_token(query: &str) -> bool {
    access::query_mentions_token(query) && access::split_token(query).is_some()
}

/// Hyper's path: the grant a request is admitted as (`None` for an open backend), or the
/// answer it gets instead: the exchange of a connect token, or a refusal.
pub fn gate<B>(
    app: &App,
    live: &Live,
    req: &Request<B>,
    path_prefix: usize,
) -> Result<Option<Arc<Grant>>, Box<Response<ProxyBody>>> {
    if let Some((tokens, rest)) = req.uri().query().and_then(access::split_token) {
        return Err(Box::new(exchange(
            app,
            live,
            req,
            path_prefix,
            &tokens,
            &rest,
        )));
    }
    let Some(state) = live.access(&app.access_key) else {
        return Ok(None);
    };
    let cookies = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes);
    match access::admit_by_cookies(&state.key, &state.grants, cookies) {
        Ok(grant) => return Ok(Some(grant)),
        Err(Refused::Conflict) => return Err(Box::new(refused(req, Refused::Conflict))),
        Err(Refused::Missing) => {}
    }
    let bearer = req
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .find_map(|v| access::bearer_token(v.as_bytes()));
    match bearer.map(|t| by_token(app, state, t)) {
        Some(Ok(grant)) => Ok(Some(grant)),
        _ => Err(Box::new(refused(req, Refused::Missing))),
    }
}

/// The grant a connect token admits as, using it up if it is single-use.
fn by_token(app: &App, state: &LiveAccess, token: &[u8]) -> Result<Arc<Grant>, access::TokenError> {
    let now = now_millis() / 1000;
    let claims = state.key.verify_token(token, now)?;
    let grant = state
        .grants
        .get(&claims.user, claims.generation)
        .ok_or(access::TokenError::Revoked)?;
    if !app.nonces.consume(&claims, now) {
        return Err(access::TokenError::Used);
    }
    Ok(grant)
}

/// Rule 2: a request with `spawner_token` is answered here, never forwarded: `303` to the
/// same URL without it, with the access cookie when the token admits; `401` otherwise. An
/// open backend needs no token: it is dropped from the URL all the same.
fn exchange<B>(
    app: &App,
    live: &Live,
    req: &Request<B>,
    path_prefix: usize,
    tokens: &[String],
    rest: &str,
) -> Response<ProxyBody> {
    let path = req.uri().path();
    let location = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{rest}")
    };
    let Some(state) = live.access(&app.access_key) else {
        return see_other(&location, None);
    };
    let grant = match tokens {
        [token] => by_token(app, state, token.as_bytes()),
        _ => Err(access::TokenError::Malformed),
    };
    match grant {
        Ok(grant) => {
            let cookie_path = if path_prefix > 0 {
                path.get(..path_prefix + 1).unwrap_or("/")
            } else {
                "/"
            };
            let value = state.key.mint_cookie(&grant.user, grant.generation);
            let cookie = access::set_cookie(&value, app.urls.secure(), cookie_path);
            see_other(&location, Some(&cookie))
        }
        Err(why) => {
            tracing::debug!(backend = %live.id, %why, "refused a connect token");
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
fn refused<B>(req: &Request<B>, why: Refused) -> Response<ProxyBody> {
    let browser = spawner_proxy::route::fetch_mode(req).is_some();
    let (content_type, body) = access::refusal_body(browser, why);
    let mut resp = Response::new(ProxyBody::message(body));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
