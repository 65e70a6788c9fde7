//! The controller's call to a backend's sidecar before it deletes the Pod: `POST /_goaway`
//! makes the sidecar send every WebSocket client its close frame 1001 with the reason, and
//! wait for requests in flight, so that clients hear why before the application is
//! signalled (the kubelet signals every container of a deleted Pod at once; a preStop hook
//! would delay the sidecar's signal only, not the application's).

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use spawner_core::lifecycle::StopReason;
use spawner_proxy::sidecar::{GOAWAY_FRAMES_WAIT, GOAWAY_PATH};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a backend's Pod goes: a stop (its reason), or a sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoingAway {
    Stop(StopReason),
    /// `idleAction: sleep`: the clients' close reason is
    /// [`spawner_core::lifecycle::GOING_TO_SLEEP`].
    Sleep,
}

impl GoingAway {
    /// What the sidecar is sent: a stop reason's name, or `sleeping`.
    fn body(self) -> &'static str {
        match self {
            GoingAway::Stop(r) => r.as_str(),
            GoingAway::Sleep => spawner_core::lifecycle::GOING_TO_SLEEP,
        }
    }

    /// The reason of the clients' close frame.
    pub fn close_reason(self) -> &'static str {
        match self {
            GoingAway::Stop(r) => r.going_away(),
            GoingAway::Sleep => spawner_core::lifecycle::GOING_TO_SLEEP,
        }
    }
}

/// Why the sidecar could not be told.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting: {0}")]
    Connect(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("the sidecar answered {0}")]
    Status(StatusCode),
}

/// Tells the sidecar at `addr` that its backend goes away for `reason` (a stop or a sleep), and waits (at most
/// the frames' wait plus `grace_seconds` for requests in flight, and a second more) for it
/// to have told its clients.
pub async fn tell(
    addr: SocketAddr,
    secret: &str,
    reason: GoingAway,
    grace_seconds: u64,
) -> Result<(), Error> {
    let bound = CONNECT_TIMEOUT + GOAWAY_FRAMES_WAIT + Duration::from_secs(grace_seconds + 1);
    tokio::time::timeout(bound, call(addr, secret, reason, grace_seconds))
        .await
        .map_err(|_| Error::Timeout)?
}

async fn call(
    addr: SocketAddr,
    secret: &str,
    reason: GoingAway,
    grace_seconds: u64,
) -> Result<(), Error> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Timeout)??;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::post(format!("{GOAWAY_PATH}?grace={grace_seconds}"))
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {secret}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(reason.body())))?;
    let resp = send.send_request(req).await?;
    if resp.status() != StatusCode::OK {
        return Err(Error::Status(resp.status()));
    }
    Ok(())
}
