//! Joining two connections after a switch of protocols (WebSockets): bytes pass both ways as
//! they come, and an idle tunnel holds no buffer.

use crate::monitor::ActivityGuard;
use bytes::Bytes;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
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
}

impl Tunnel {
    /// Passes bytes both ways until both directions have ended.
    pub async fn run(self) {
        let result = join(
            self.client,
            self.client_read,
            self.backend,
            self.backend_read,
        )
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
        drop(self.guard);
    }
}

/// Copies both ways between two sockets, first what was already read from each.
pub(crate) async fn join(
    a: TcpStream,
    a_read: bytes::Bytes,
    b: TcpStream,
    b_read: bytes::Bytes,
) -> std::io::Result<()> {
    let (mut a_rx, mut a_tx) = a.into_split();
    let (mut b_rx, mut b_tx) = b.into_split();
    b_tx.write_all(&a_read).await?;
    a_tx.write_all(&b_read).await?;
    drop((a_read, b_read));
    tokio::try_join!(pipe(&mut a_rx, &mut b_tx), pipe(&mut b_rx, &mut a_tx))?;
    Ok(())
}

/// One direction: waits for data without a buffer, and passes the end of input on.
async fn pipe(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<()> {
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
            Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
            Poll::Ready(Ok(())) => {
                crate::busy_poll::note_activity();
                to.write_all(buf.filled()).await?
            }
        }
    }
    to.shutdown().await
}
