//! Joining two connections after a switch of protocols (WebSockets): bytes pass both ways as
//! they come, and an idle tunnel holds no buffer.
//!
//! Two things beyond the copy, neither touching a payload: what the client sends is counted
//! as client activity (for a WebSocket, by the headers of its data frames, followed with
//! [`Frames`]; pings and pongs are not activity), and when the backend goes away
//! ([`Monitor::go_away`]) the client is sent a close frame (1001) of the proxy's own, at
//! the next frame boundary of the backend's stream, after which the backend's bytes are
//! dropped (a WebSocket endpoint sends nothing after its close).

use crate::monitor::{now_ms, ActivityGuard, GoingAway, Monitor};
use crate::ws_frames::{going_away_frame, Frames};
use bytes::Bytes;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

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
}

impl Tunnel {
    /// Passes bytes both ways until both directions have ended.
    pub async fn run(self) {
        let link = Link::new(self.guard.monitor(), self.websocket);
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
}

impl Link {
    pub(crate) fn new(monitor: &std::sync::Arc<Monitor>, websocket: bool) -> Self {
        Link {
            going_away: monitor.tunnel(),
            websocket,
        }
    }
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
    let up = async {
        let mut client = ClientSide {
            monitor: &monitor,
            frames: websocket.then(Frames::default),
        };
        client.saw(&client_read);
        b_tx.write_all(&client_read).await?;
        drop(client_read);
        pipe(&mut c_rx, &mut b_tx, |bytes| client.saw(bytes)).await
    };
    let down = async {
        let mut to_client = ToClient {
            to: &mut c_tx,
            frames: websocket.then(Frames::default),
            told: false,
        };
        to_client.send(&backend_read, None).await?;
        drop(backend_read);
        downstream(&mut b_rx, &mut to_client, &mut link.going_away).await
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
        going: Option<(&'static str, &mut GoingAway)>,
    ) -> std::io::Result<()> {
        if self.told {
            return Ok(());
        }
        let Some((reason, going_away)) = going else {
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
            let result = self.to.write_all(&going_away_frame(reason)).await;
            going_away.told();
            result?;
        }
        Ok(())
    }
}

/// The backend→client direction: as [`pipe`], and tells the client when the backend goes
/// away.
async fn downstream(
    from: &mut OwnedReadHalf,
    to: &mut ToClient<'_>,
    going_away: &mut GoingAway,
) -> std::io::Result<()> {
    let mut reason: Option<&'static str> = None;
    loop {
        let chunk = tokio::select! {
            biased;
            chunk = read_chunk(from) => chunk?,
            r = going_away.signalled(), if reason.is_none() => {
                reason = Some(r);
                to.send(&[], Some((r, &mut *going_away))).await?;
                continue;
            }
        };
        let Some(chunk) = chunk else { break };
        to.send(&chunk, reason.map(|r| (r, &mut *going_away)))
            .await?;
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
