//! The accept loop every Spawner proxy runs (the embedded server, the sidecar, the
//! Kubernetes router): HTTP/1.1 with keep-alive and upgrades, one task per connection.
//!
//! Each connection starts in the relay (`crate::relay`), on one of the proxy's threads
//! (`crate::workers`), which forwards the requests that `route` gives a target. At the
//! first request it does not take (an API call, a request for a backend that is not ready,
//! anything unusual), the connection goes to hyper with `handle` for the rest of its life,
//! the bytes already read first, back on the runtime that called [`serve`]: the API's work
//! does not hold up a proxy thread.
//!
//! On either path a client connection that stays quiet between requests for the
//! forwarder's idle timeout, or sends a request head more slowly than that, is closed.

use crate::forward::Forwarder;
use crate::head::RequestHead;
use crate::prefixed::Prefixed;
use crate::relay::{self, Ended};
use crate::target::Target;
use crate::workers::Workers;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections until `shutdown` resolves. Requests that `route` gives a target are
/// relayed on `forwarder`'s threads; the others are answered by `handle`, which gets the
/// client's address. Open connections (WebSockets above all) are left to finish on their
/// own; the threads end after the last.
pub async fn serve<R, H, F, B>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    forwarder: Forwarder,
    route: R,
    handle: H,
) where
    R: Fn(&RequestHead, SocketAddr) -> Option<Target> + Clone + Send + Sync + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(shutdown);
    let runtime = tokio::runtime::Handle::current();
    let workers = Workers::start(forwarder.threads, forwarder.busy_poll).await;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let Some(stream) = detach(stream) else {
            continue;
        };
        let placed = workers.place();
        let (forwarder, route, handle) = (forwarder.clone(), route.clone(), handle.clone());
        let runtime = runtime.clone();
        placed.spawn(move |placed| async move {
            let idle = forwarder.client_idle;
            let Some(stream) = attach(stream) else {
                return;
            };
            let (stream, read) = match relay::run(stream, peer, &route, placed.pool(), idle).await {
                Ended::Closed => return,
                // A task of its own, holding the connection's place on this thread: an idle
                // WebSocket then costs the tunnel's few words, not the relay's state.
                Ended::Upgraded(tunnel) => {
                    tokio::spawn(async move {
                        let _placed = placed;
                        tunnel.run().await;
                    });
                    return;
                }
                Ended::Fallback(stream, read) => (stream, read.freeze()),
            };
            drop(placed);
            let Some(stream) = detach(stream) else {
                return;
            };
            runtime.spawn(async move {
                let Some(stream) = attach(stream) else {
                    return;
                };
                let service = service_fn(move |req| {
                    let response = handle(req, peer);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    // A client's end of input ends its requests here (hyper cannot tell a
                    // reset while it waits on a half-closed connection); the relay, which
                    // takes nearly every proxied request, answers a half-closed client.
                    .timer(TokioTimer::new())
                    // From the end of a response until the next request's head is in.
                    .header_read_timeout(idle)
                    .serve_connection(TokioIo::new(Prefixed { read, stream }), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        });
    }
}

/// Takes a socket off the event loop of the runtime it is registered with, so that it can
/// move to another thread's (`attach` there).
fn detach(stream: TcpStream) -> Option<std::net::TcpStream> {
    stream
        .into_std()
        .map_err(|e| tracing::debug!(error = %e, "cannot hand over a connection"))
        .ok()
}

/// Registers a socket with the event loop of the runtime this runs on.
fn attach(stream: std::net::TcpStream) -> Option<TcpStream> {
    TcpStream::from_std(stream)
        .map_err(|e| tracing::debug!(error = %e, "cannot take over a connection"))
        .ok()
}
