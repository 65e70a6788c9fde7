//! The Kubernetes sidecar: a proxy beside the application container in its Pod.
//!
//! It forwards every request and upgraded connection to the application on
//! `127.0.0.1:{app_port}` with the same [`Forwarder`] and [`Monitor`] as the embedded
//! server, so both modes count activity the same way, and tells the node's sweeper what it
//! sees on `/_events` (Server-Sent Events of [`Report`]s). The sweeper, not the sidecar,
//! decides: the sidecar knows nothing of grace periods or the Kubernetes API.
//!
//! Two paths are the sidecar's own and never forwarded: [`EVENTS_PATH`] and
//! [`HEALTH_PATH`]. Neither counts as activity, or the sweeper's own stream would keep
//! every backend alive.

use crate::body::ProxyBody;
use crate::forward::{message, Forwarder};
use crate::head::RequestHead;
use crate::monitor::Monitor;
use crate::readiness::ListenWatch;
use crate::target::Target;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The event stream the sweeper follows.
pub const EVENTS_PATH: &str = "/_events";
/// Liveness of the sidecar itself (200 whether or not the application is ready).
pub const HEALTH_PATH: &str = "/_healthz";

/// The longest time between two events of a stream: the sweeper judges idleness on
/// each event, so this bounds how late a sweep can be.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often a stream looks at the monitor for changes. The monitor is a few atomics
/// with no notification (it sits on every request's path); a request that starts and ends
/// between two looks still shows as a change of `requests`.
const POLL: Duration = Duration::from_millis(25);

/// What the sidecar reports on each event of `/_events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The application accepts connections on its port.
    pub ready: bool,
    /// Connections open through the sidecar now (upgraded ones and requests in flight).
    pub live_connections: u64,
    /// Seconds since the last request started or connection ended (or since the
    /// application became ready, if nothing came since), with millisecond precision.
    pub seconds_since_active: f64,
    /// Requests forwarded since the sidecar started.
    pub requests: u64,
}

impl Report {
    /// What makes two reports different events; the idle clock alone is not a change.
    fn key(&self) -> (bool, u64, u64) {
        (self.ready, self.live_connections, self.requests)
    }
}

/// The sidecar of one application. Cheap to share: every connection holds an `Arc`.
pub struct Sidecar {
    forwarder: Forwarder,
    monitor: Arc<Monitor>,
    app: Authority,
    ready: watch::Receiver<bool>,
    /// Kept for as long as the sidecar lives, so that `ready.changed()` waits for a change
    /// instead of failing at once when the probe task has ended.
    _ready_tx: Arc<watch::Sender<bool>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Sidecar {
    /// A sidecar for the application on `127.0.0.1:{app_port}`. Starts watching for the port
    /// to be listened on at once (call it inside a Tokio runtime), with the same watch as
    /// the embedded server's ([`ListenWatch`]).
    pub fn new(app_port: u16) -> Arc<Self> {
        let app_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), app_port);
        let app = Authority::try_from(app_addr.to_string())
            .unwrap_or_else(|_| unreachable!("a socket address is a valid authority"));
        let monitor = Arc::new(Monitor::new(now_ms()));
        let (ready_tx, ready) = watch::channel(false);
        let ready_tx = Arc::new(ready_tx);
        let probe_tx = ready_tx.clone();
        let probe_monitor = monitor.clone();
        tokio::spawn(async move {
            // The Pod's network namespace is the sidecar's own.
            ListenWatch::own().listening(app_addr).await;
            // The idle clock starts when the application can first be used.
            probe_monitor.touch();
            tracing::info!(%app_addr, "application is listening: ready");
            let _ = probe_tx.send(true);
        });
        Arc::new(Sidecar {
            forwarder: Forwarder::new(),
            monitor,
            app,
            ready,
            _ready_tx: ready_tx,
        })
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// The monitor every forwarded request is counted in.
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.monitor
    }

    /// What `/_events` says now.
    pub fn report(&self) -> Report {
        let idle_ms = now_ms().saturating_sub(self.monitor.last_activity()).max(0);
        Report {
            ready: self.is_ready(),
            live_connections: self.monitor.live(),
            // Milliseconds as f64: exact well beyond any uptime.
            seconds_since_active: idle_ms as f64 / 1000.0,
            requests: self.monitor.requests(),
        }
    }

    /// Where a request for the application goes.
    fn target(&self, peer: SocketAddr) -> Target {
        Target {
            authority: self.app.clone(),
            monitor: self.monitor.clone(),
            // The router already stripped whatever prefix the application must not see.
            strip: 0,
            client_ip: peer.ip(),
        }
    }

    /// The relay's route: every request for a ready application but the sidecar's own.
    fn route(&self, head: &RequestHead, peer: SocketAddr) -> Option<Target> {
        let own = head.path == EVENTS_PATH || head.path == HEALTH_PATH;
        (!own && self.is_ready()).then(|| self.target(peer))
    }

    /// Answers one request: the sidecar's own paths, or the application's.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<SidecarBody> {
        match req.uri().path() {
            EVENTS_PATH => return self.events(req.method()),
            HEALTH_PATH => {
                let mut resp = message(StatusCode::OK, "ok\n");
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return resp.map(SidecarBody::Proxy);
            }
            _ => {}
        }
        if !self.is_ready() {
            let mut resp = message(
                StatusCode::SERVICE_UNAVAILABLE,
                "the application is starting; retry in a moment\n",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp.map(SidecarBody::Proxy);
        }
        let target = self.target(peer);
        self.forwarder
            .forward(req, target)
            .await
            .map(SidecarBody::Proxy)
    }

    fn events(self: Arc<Self>, method: &Method) -> Response<SidecarBody> {
        if method != Method::GET {
            let mut resp = message(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return resp.map(SidecarBody::Proxy);
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.stream_reports(tx));
        let mut resp = Response::new(SidecarBody::Events(rx));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// Sends a report at once, on every change, and at least every [`HEARTBEAT`], until
    /// the client goes away.
    async fn stream_reports(self: Arc<Self>, tx: mpsc::Sender<Bytes>) {
        let mut ready = self.ready.clone();
        let mut ready_open = true;
        let mut last: Option<(bool, u64, u64)> = None;
        let mut last_sent = Instant::now();
        loop {
            let report = self.report();
            if last != Some(report.key()) || last_sent.elapsed() >= HEARTBEAT {
                let Ok(json) = serde_json::to_string(&report) else {
                    return;
                };
                if tx
                    .send(Bytes::from(format!("data: {json}\n\n")))
                    .await
                    .is_err()
                {
                    return;
                }
                last = Some(report.key());
                last_sent = Instant::now();
            }
            let wake = (last_sent + HEARTBEAT).min(Instant::now() + POLL);
            tokio::select! {
                // Readiness is announced the moment the probe sees it.
                // While the sidecar lives its sender does too; should it not, stop
                // listening rather than spin on an error.
                changed = ready.changed(), if ready_open => ready_open = changed.is_ok(),
                () = tokio::time::sleep_until(wake) => {}
                () = tx.closed() => return,
            }
        }
    }
}

/// A response body of the sidecar: the proxy's, or an event stream.
#[derive(Debug)]
pub enum SidecarBody {
    Proxy(ProxyBody),
    Events(mpsc::Receiver<Bytes>),
}

impl Body for SidecarBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            SidecarBody::Proxy(body) => Pin::new(body).poll_frame(cx),
            SidecarBody::Events(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SidecarBody::Proxy(body) => body.is_end_stream(),
            SidecarBody::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SidecarBody::Proxy(body) => body.size_hint(),
            SidecarBody::Events(_) => SizeHint::default(),
        }
    }
}

/// Serves the sidecar on `listener` until `shutdown` resolves (HTTP/1.1 with upgrades,
/// as the embedded server's proxy).
pub async fn serve(
    sidecar: Arc<Sidecar>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let forwarder = sidecar.forwarder.clone();
    let router = sidecar.clone();
    crate::listen::serve(
        listener,
        shutdown,
        forwarder,
        move |head: &RequestHead, peer| router.route(head, peer),
        move |req, peer| sidecar.clone().handle(req, peer),
    )
    .await
}

/// Parses one event of a `/_events` stream (the text after `data: `).
pub fn parse_report(data: &str) -> Result<Report, serde_json::Error> {
    serde_json::from_str(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_json_has_the_documented_fields() {
        let r = Report {
            ready: true,
            live_connections: 2,
            seconds_since_active: 1.5,
            requests: 7,
        };
        let json = serde_json::to_value(&r).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"ready": true, "live_connections": 2, "seconds_since_active": 1.5, "requests": 7})
        );
        assert_eq!(parse_report(&json.to_string()).expect("parses"), r);
    }

    #[test]
    fn idle_time_alone_is_not_a_change() {
        let a = Report {
            ready: true,
            live_connections: 0,
            seconds_since_active: 1.0,
            requests: 3,
        };
        let b = Report {
            seconds_since_active: 9.0,
            ..a.clone()
        };
        assert_eq!(a.key(), b.key());
        let c = Report {
            requests: 4,
            ..a.clone()
        };
        assert_ne!(a.key(), c.key());
    }
}
