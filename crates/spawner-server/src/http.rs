//! The one listening socket: requests for a backend (`/p/{id}/…`, or `{id}.{domain}`) take
//! the proxy's path, which does no more than a map lookup before forwarding; everything
//! else goes to the API router.
//!
//! Backends have origins of their own (`{id}.localhost` by default) and the dashboard keeps
//! the server's:
//! a browser asking for a backend by path is sent to (or told of) the backend's own origin
//! ([`spawner_proxy::route::disposition`]); only other clients are proxied by path.

use crate::app::App;
use crate::hold::Refused;
use crate::live::Live;
use axum::body::Body;
use axum::Router;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use spawner_core::{BackendId, State};
use spawner_proxy::forward::message;
use spawner_proxy::route::{
    add_slash, disposition, fetch_mode, host_of, id_from_host, is_host_label, own_origin_only,
    to_own_origin, Disposition,
};
use spawner_proxy::{ProxyBody, RequestHead, ResponsePolicy, Target};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Accepts connections until `shutdown` resolves. Open connections (WebSockets above all)
/// are left to finish on their own; backends keep running either way.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let router = crate::api::router(app.clone());
    let relayed = app.clone();
    spawner_proxy::listen::serve(
        listener,
        shutdown,
        app.forwarder.clone(),
        move |head: &RequestHead, peer| match backend_of(&relayed, head.host, head.path)? {
            Route::Backend { id, path_prefix } => {
                // A redirect or a refusal is hyper's path's to answer (`handle`).
                let Disposition::Forward(response) =
                    disposition_of(path_prefix, head.method, head.fetch_mode)
                else {
                    return None;
                };
                let live = relayed.registry.get(id)?;
                // An exchange, a bearer token or a refusal is hyper's path's too.
                let grant = crate::access::relay_admits(&relayed, &live, head)?;
                let mut target = target_of(&relayed, &live, path_prefix, peer, response).ok()?;
                target.access = grant;
                Some(target)
            }
            Route::AddSlash => None,
        },
        move |req, peer| handle(app.clone(), router.clone(), req, peer),
    )
    .await
}

async fn handle(
    app: Arc<App>,
    router: Router,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    match backend_of(&app, host_of(&req), req.uri().path()) {
        Some(Route::Backend { id, path_prefix }) => {
            let how = disposition_of(path_prefix, req.method().as_str(), fetch_mode(&req));
            let response = match how {
                Disposition::Forward(response) => response,
                // No backend has an id that cannot be a host name: do not put one in a URL.
                _ if !is_host_label(id) => {
                    return message(StatusCode::NOT_FOUND, "no such backend\n").map(Body::new)
                }
                Disposition::Redirect => {
                    let rest = req.uri().path().get(path_prefix..).unwrap_or_default();
                    return to_own_origin(&app.urls.backend(id), rest, req.uri().query())
                        .map(Body::new);
                }
                Disposition::Refuse => {
                    return own_origin_only(&app.urls.backend(id)).map(Body::new)
                }
            };
            let Some(live) = app.registry.get(id) else {
                return not_live(&app, id).map(Body::new);
            };
            // Per-user access: an exchange of a connect token, or who the request is from.
            let grant = match crate::access::gate(&app, &live, &req, path_prefix) {
                Ok(grant) => grant,
                Err(answer) => return answer.map(Body::new),
            };
            let target = match target_of(&app, &live, path_prefix, peer, response) {
                // Asleep (or on the way, or waking): held until it is Ready, woken if need be.
                Err(state) if crate::hold::holds(&live, state) => {
                    match crate::hold::until_awake(&app, &live).await {
                        Ok(()) => target_of(&app, &live, path_prefix, peer, response),
                        Err(Refused::WakeFailed(why)) => return wake_failed(&why).map(Body::new),
                        Err(Refused::State(state)) if state.is_terminal() => {
                            return gone().map(Body::new)
                        }
                        Err(Refused::State(state)) => Err(state),
                    }
                }
                other => other,
            };
            match target {
                Ok(mut target) => {
                    target.access = grant;
                    app.forwarder.forward(req, target).await.map(Body::new)
                }
                Err(state) => unavailable(state).map(Body::new),
            }
        }
        Some(Route::AddSlash) => add_slash(&req).map(Body::new),
        None => match router.oneshot(req.map(Body::new)).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        },
    }
}

enum Route<'a> {
    /// For backend `id`; `path_prefix` is the length of `/p/{id}` under path routing, 0
    /// under host routing.
    Backend { id: &'a str, path_prefix: usize },
    /// `/p/{id}` without the slash.
    AddSlash,
}

fn backend_of<'a>(app: &App, host: Option<&'a str>, path: &'a str) -> Option<Route<'a>> {
    if let Some(id) = host.and_then(|host| id_from_host(&app.config.domain, host)) {
        return Some(Route::Backend { id, path_prefix: 0 });
    }
    let rest = path.strip_prefix("/p/")?;
    match rest.split_once('/') {
        Some((id, _)) => Some(Route::Backend {
            id,
            path_prefix: 3 + id.len(),
        }),
        None => Some(Route::AddSlash),
    }
}

/// What becomes of a request for a backend routed as `path_prefix` says: backends always
/// have origins of their own here, which browsers are kept to.
fn disposition_of(path_prefix: usize, method: &str, fetch_mode: Option<&[u8]>) -> Disposition {
    disposition(path_prefix > 0, true, method, fetch_mode)
}

/// Where a request for the live backend `live` goes, if it is Ready (its state
/// otherwise). No lookup: the relay asks this on every request.
fn target_of(
    app: &App,
    live: &Live,
    path_prefix: usize,
    peer: SocketAddr,
    response: ResponsePolicy,
) -> Result<Target, State> {
    let state = live.state();
    let authority = match (state, live.authority()) {
        (State::Ready, Some(a)) => a,
        _ => return Err(state),
    };
    app.metrics.proxied.inc();
    Ok(Target {
        authority,
        monitor: live.monitor.clone(),
        strip: if live.spec.strip_prefix {
            path_prefix
        } else {
            0
        },
        client_ip: peer.ip(),
        trust: app.config.trusted_proxies.trust(peer.ip()),
        response,
        router_proof: None,
        access: None,
    })
}

/// A backend that is not live: ended (410), unknown (404), or live but unsupervised (503).
fn not_live(app: &App, id: &str) -> Response<ProxyBody> {
    if BackendId::parse(id).is_err() {
        return message(StatusCode::NOT_FOUND, "no such backend\n");
    }
    match app.store.get(id) {
        Ok(None) => message(StatusCode::NOT_FOUND, "no such backend\n"),
        Ok(Some(row)) if row.state.is_terminal() => gone(),
        Ok(Some(row)) => unavailable(row.state),
        Err(e) => {
            tracing::error!(error = %e, "store lookup failed");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Spawner cannot read its store\n",
            )
        }
    }
}

fn gone() -> Response<ProxyBody> {
    message(
        StatusCode::GONE,
        "this backend has ended; ask the application for a new one\n",
    )
}

/// A held request whose backend's wake failed or overran its startup timeout.
fn wake_failed(why: &str) -> Response<ProxyBody> {
    let mut resp = message(StatusCode::SERVICE_UNAVAILABLE, "");
    *resp.body_mut() = ProxyBody::message(format!(
        "this backend could not be woken ({why}); retry, or ask the application for a new one\n"
    ));
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

fn unavailable(state: State) -> Response<ProxyBody> {
    let mut resp = match state {
        State::Terminating => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "this backend is stopping\n",
        ),
        _ => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "this backend is starting; retry in a moment\n",
        ),
    };
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}
