//! The one listening socket: requests for a backend (`/p/{id}/…`, or `{id}.{domain}`) take
//! the proxy's path, which does no more than a map lookup before forwarding; everything
//! else goes to the API router.

use crate::app::App;
use axum::body::Body;
use axum::Router;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use spawner_core::{BackendId, State};
use spawner_proxy::forward::message;
use spawner_proxy::{ProxyBody, Target};
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
    spawner_proxy::listen::serve(listener, shutdown, move |req, peer| {
        handle(app.clone(), router.clone(), req, peer)
    })
    .await
}

async fn handle(
    app: Arc<App>,
    router: Router,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    match backend_of(&app, &req) {
        Some(Route::Backend { id, path_prefix }) => proxy(&app, req, &id, path_prefix, peer)
            .await
            .map(Body::new),
        Some(Route::AddSlash) => add_slash(&req),
        None => match router.oneshot(req.map(Body::new)).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        },
    }
}

enum Route {
    /// For backend `id`; `path_prefix` is the length of `/p/{id}` under path routing.
    Backend { id: String, path_prefix: usize },
    /// `/p/{id}` without the slash.
    AddSlash,
}

fn backend_of(app: &App, req: &Request<Incoming>) -> Option<Route> {
    if let Some(domain) = &app.config.domain {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host());
        if let Some(host) = host {
            let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
            if let Some(id) = name
                .strip_suffix(domain.as_str())
                .and_then(|s| s.strip_suffix('.'))
                .filter(|id| !id.is_empty() && !id.contains('.'))
            {
                return Some(Route::Backend {
                    id: id.to_string(),
                    path_prefix: 0,
                });
            }
        }
    }
    let rest = req.uri().path().strip_prefix("/p/")?;
    match rest.split_once('/') {
        Some((id, _)) => Some(Route::Backend {
            id: id.to_string(),
            path_prefix: 3 + id.len(),
        }),
        None => Some(Route::AddSlash),
    }
}

fn add_slash(req: &Request<Incoming>) -> Response<Body> {
    let location = match req.uri().query() {
        Some(q) => format!("{}/?{q}", req.uri().path()),
        None => format!("{}/", req.uri().path()),
    };
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::try_from(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

async fn proxy(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: &str,
    path_prefix: usize,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let live = match app.registry.get(id) {
        Some(live) => live,
        None => return not_live(app, id),
    };
    let state = live.state();
    let authority = match (state, live.authority()) {
        (State::Ready, Some(a)) => a.clone(),
        _ => return unavailable(state),
    };
    app.metrics.proxied.inc();
    let target = Target {
        authority,
        monitor: live.monitor.clone(),
        strip: if live.spec.strip_prefix {
            path_prefix
        } else {
            0
        },
        client_ip: peer.ip(),
    };
    app.forwarder.forward(req, target).await
}

/// A backend that is not live: ended (410), unknown (404), or live but unsupervised (503).
fn not_live(app: &App, id: &str) -> Response<ProxyBody> {
    if BackendId::parse(id).is_err() {
        return message(StatusCode::NOT_FOUND, "no such backend\n");
    }
    match app.store.get(id) {
        Ok(None) => message(StatusCode::NOT_FOUND, "no such backend\n"),
        Ok(Some(row)) if row.state.is_terminal() => message(
            StatusCode::GONE,
            "this backend has ended; ask the application for a new one\n",
        ),
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
