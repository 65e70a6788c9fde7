//! Joining two connections after a switch of protocols (WebSockets): bytes pass both ways as
//! they come, and an idle tunnel holds no buffer.
//!
//! Two things beyond the copy, neither touching a payload: what the client sends is counted
//! as client activity (for a WebSocket, by the headers of its data frames, followed with
//! [`Frames`]; pings and pongs are not activity), and when the backend goes away
//! ([`Monitor::go_away`]) the client is sent a close frame (1001) of the proxy's own, at
//! the next frame boundary of the backend's stream, after which the backend's bytes are
//! dropped (a WebSocket endpoint sends nothing after its close).
//!
//! A tunnel admitted by a user's grant (a token-mode backend) also follows that grant's
//! revocation: from the moment it is revoked nothing more of the client's reaches the
//! backend, the client gets a close frame with code 1008 (policy violation) at the next
//! frame boundary (within 2 s, or the connection is cut without one), and the tunnel ends:
//! its backend connection is closed, and the client's once it has answered (or after 2 s).

use crate::monitor::{now_ms, ActivityGuard, GoingAway, Monitor};
use crate::ws_frames::{close_frame, Frames};
use bytes::Bytes;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How long a revoked tunnel waits for a frame boundary, and then for its client's answer.
const REVOKED_GRACE: Duration = Duration::from_secs(2);

/// The close frame a tunnel sends of its own accord.
#[derive(Debug, Clone, Copy)]
struct Close {
    code: u16,
    reason: &'static str,
    /// After it, the tunnel ends (a revocation); otherwise the backend is going away and
    /// the tunnel lasts until it has.
    ends: bool,
}

/// Read size of an upgraded connection; the buffer exists only while data moves.
const CHUNK: usize = 16 * 1024;

/// Two connections whose HTTP ended in a switch of protocols, and what was read from each
/// beyond it; counted as live until joined and closed.
pub struct Tunnel {
    pub(crate) client: TcpStream,
    pub(crate) client_read: Bytes,
    pub(crate) backend: TcpStream,
    pub(crate) backend_read: Bytes,
    pub(crate) guard: ActivityGuard,
    /// The protocol is WebSocket (`Upgrade: websocket`): its frames are followed.
    pub(crate) websocket: bool,
    /// The revocation of the grant that admitted it, if any.
    pub(crate) revoked: Option<watch::Receiver<bool>>,
}

impl Tunnel {
    /// Passes bytes both ways until both directions have ended.
    pub async fn run(self) {
        let link = Link::new(self.guard.monitor(), self.websocket, self.revoked);
        let result = join(
            self.client,
            self.client_read,
            self.backend,
            self.backend_read,
            link,
        )
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
        drop(self.guard);
    }
}

/// A tunnel's tie to its backend's monitor.
pub(crate) struct Link {
    going_away: GoingAway,
    websocket: bool,
    revoked: Option<watch::Receiver<bool>>,
}

impl Link {
    pub(crate) fn new(
        monitor: &std::sync::Arc<Monitor>,
        websocket: bool,
        revoked: Option<watch::Receiver<bool>>,
    ) -> Self {
        Link {
            going_away: monitor.tunnel(),
            websocket,
            revoked,
        }
    }
}

/// Resolves once the grant is revoked; never without one.
async fn revocation(revoked: &mut Option<watch::Receiver<bool>>) {
    match revoked {
        Some(rx) => {
            if rx.wait_for(|r| *r).await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

/// Reads and drops what the client still sends (its answer to the close frame) until it
/// closes, for at most [`REVOKED_GRACE`]: closing a socket with unread input resets it,
/// which could lose the close frame on its way.
async fn drain(from: &mut OwnedReadHalf) {
    let drain = async { while let Ok(Some(_)) = read_chunk(from).await {} };
    let _ = tokio::time::timeout(REVOKED_GRACE, drain).await;
}

/// Copies both ways between a client and a backend socket, first what was already read
/// from each.
pub(crate) async fn join(
    client: TcpStream,
    client_read: Bytes,
    backend: TcpStream,
    backend_read: Bytes,
    mut link: Link,
) -> std::io::Result<()> {
    let (mut c_rx, mut c_tx) = client.into_split();
    let (mut b_rx, mut b_tx) = backend.into_split();
    let websocket = link.websocket;
    let monitor = link.going_away.monitor_arc();
    let mut revoked_up = link.revoked.clone();
    let up = async {
        let mut client = ClientSide {
            monitor: &monitor,
            frames: websocket.then(Frames::default),
        };
        let forward = async {
            client.saw(&client_read);
            b_tx.write_all(&client_read).await?;
            drop(client_read);
            pipe(&mut c_rx, &mut b_tx, |bytes| client.saw(bytes)).await
        };
        tokio::select! {
            result = forward => result,
            () = revocation(&mut revoked_up) => {
                // Nothing more of a revoked user's reaches the backend; the backend
                // connection closes when the tunnel ends, after the close frame went out.
                drain(&mut c_rx).await;
                Ok(())
            }
        }
    };
    let down = async {
        let mut to_client = ToClient {
            to: &mut c_tx,
            frames: websocket.then(Frames::default),
            told: false,
        };
        to_client.send(&backend_read, None).await?;
        drop(backend_read);
        downstream(
            &mut b_rx,
            &mut to_client,
            &mut link.going_away,
            &mut link.revoked,
        )
        .await
    };
    tokio::try_join!(up, down)?;
    Ok(())
}

/// What the client sends, as activity of its backend.
struct ClientSide<'a> {
    monitor: &'a Monitor,
    frames: Option<Frames>,
}

impl ClientSide<'_> {
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let data = match &mut self.frames {
            Some(f) => f.scan(bytes),
            None => true,
        };
        if data {
            self.monitor.client_sent(now_ms());
        }
    }
}

/// The client's side of the backend→client direction.
struct ToClient<'a> {
    to: &'a mut OwnedWriteHalf,
    frames: Option<Frames>,
    /// The close frame went out: the backend's bytes are dropped from now on.
    told: bool,
}

impl ToClient<'_> {
    /// Passes the backend's `bytes` on; with the backend going away, only up to the next
    /// frame boundary, where the close frame goes out instead of the rest.
    async fn send(
        &mut self,
        bytes: &[u8],
        going: Option<(Close, &mut GoingAway)>,
    ) -> std::io::Result<()> {
        if self.told {
            return Ok(());
        }
        let Some((close, going_away)) = going else {
            if let Some(f) = &mut self.frames {
                f.scan(bytes);
            }
            return self.to.write_all(bytes).await;
        };
        let Some(frames) = &mut self.frames else {
            // Not a WebSocket: nothing to say in its protocol; the bytes go on.
            going_away.told();
            return self.to.write_all(bytes).await;
        };
        let n = frames.scan_to_boundary(bytes);
        self.to.write_all(&bytes[..n]).await?;
        if frames.at_boundary() {
            self.told = true;
            let result = self
                .to
                .write_all(&close_frame(close.code, close.reason))
                .await;
            going_away.told();
            result?;
        }
        Ok(())
    }
}

/// The backend→client direction: as [`pipe`], and tells the client when the backend goes
/// away (1001) or its grant is revoked (1008, after which the tunnel ends).
async fn downstream(
    from: &mut OwnedReadHalf,
    to: &mut ToClient<'_>,
    going_away: &mut GoingAway,
    revoked: &mut Option<watch::Receiver<bool>>,
) -> std::io::Result<()> {
    let mut close: Option<Close> = None;
    let mut cut_at: Option<tokio::time::Instant> = None;
    let cut = |at: Option<tokio::time::Instant>| async move {
        match at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    loop {
        let chunk = tokio::select! {
            biased;
            chunk = read_chunk(from) => chunk?,
            r = going_away.signalled(), if close.is_none() => {
                let c = Close { code: 1001, reason: r, ends: false };
                close = Some(c);
                to.send(&[], Some((c, &mut *going_away))).await?;
                continue;
            }
            () = revocation(revoked), if close.is_none() => {
                if to.frames.is_none() {
                    // Not a WebSocket: nothing to say in its protocol; it ends.
                    break;
                }
                let c = Close { code: 1008, reason: "access revoked", ends: true };
                close = Some(c);
                cut_at = Some(tokio::time::Instant::now() + REVOKED_GRACE);
                to.send(&[], Some((c, &mut *going_away))).await?;
                if to.told {
                    break;
                }
                continue;
            }
            () = cut(cut_at) => break,
        };
        let Some(chunk) = chunk else {
            // The backend ended first, with a revocation due: the client is still told.
            let due = revoked.as_ref().is_some_and(|rx| *rx.borrow());
            if due && close.is_none() && to.frames.as_ref().is_some_and(Frames::at_boundary) {
                let c = Close {
                    code: 1008,
                    reason: "access revoked",
                    ends: true,
                };
                to.send(&[], Some((c, &mut *going_away))).await?;
            }
            break;
        };
        to.send(&chunk, close.map(|c| (c, &mut *going_away)))
            .await?;
        if to.told && close.is_some_and(|c| c.ends) {
            break;
        }
    }
    to.to.shutdown().await
}

/// One direction: waits for data without a buffer, and passes the end of input on; `saw`
/// sees each chunk before it goes.
async fn pipe(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    mut saw: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    while let Some(chunk) = read_chunk(from).await? {
        saw(&chunk);
        to.write_all(&chunk).await?;
    }
    to.shutdown().await
}

/// The next bytes read, `None` at the end of input. Waits for data without a buffer.
async fn read_chunk(from: &mut OwnedReadHalf) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        from.readable().await?;
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut buf = ReadBuf::uninit(chunk.spare_capacity_mut());
        // One read attempt, through `poll_read` rather than `try_read`: a read shorter than
        // the buffer drained the socket, and tokio then forgets the readiness, so the next
        // wait costs no read that finds nothing. Nothing there after all: wait again,
        // without the buffer.
        let read = poll_fn(|cx| Poll::Ready(Pin::new(&mut *from).poll_read(cx, &mut buf))).await;
        match read {
            Poll::Pending => continue,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                if n == 0 {
                    return Ok(None);
                }
                crate::busy_poll::note_activity();
                // SAFETY: `poll_read` initialised the first `n` bytes of the buffer.
                unsafe { chunk.set_len(n) };
                return Ok(Some(chunk));
            }
        }
    }
}
