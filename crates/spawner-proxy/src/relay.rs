//! The proxy's own HTTP/1.1 relay, the path of nearly every proxied request.
//!
//! Why not hyper here: a proxy does not need requests and responses as objects. The relay
//! reads a head, copies it on with the hop-by-hop headers swapped for `X-Forwarded-*`, and
//! passes bodies through as they are, framed by `Content-Length` or chunked coding. The
//! backend connection is driven in the client connection's own task, so a request costs
//! two socket wake-ups and no hand-off between tasks. Measured against hyper's client and
//! server on the same path, this is about half the user-space instructions per request
//! (docs/benchmarks.md).
//!
//! What the relay does not take ([`parse_request`] says which) goes to the full HTTP stack
//! for the rest of the connection, with the bytes already read.
//!
//! # Security model
//!
//! The relay faces the internet: every byte a client sends is hostile. What it holds to,
//! and what `tests/adversarial.rs` (a corpus of crafted requests against a backend that
//! records every byte it receives) and the property tests of the parsers prove:
//!
//! 1. **One parse, one framing.** A request's end is decided once, by [`crate::framing`]:
//!    `Content-Length` (one, digits only), `Transfer-Encoding: chunked` alone, or no body.
//!    Anything ambiguous (both, duplicates, other codings, `chunked` in HTTP/1.0, a malformed
//!    head, a missing or doubled `Host`) is refused with 400 (431 for a head over 64 KiB or
//!    100 lines) and the connection closed; no backend sees any of it.
//! 2. **What the backend reads is what the relay read.** The head is written anew from the
//!    parsed one: one request line, the client's headers less the hop-by-hop ones, the
//!    framing in canonical form (`content-length: N` or `transfer-encoding: chunked`), and
//!    the `X-Forwarded-*` headers of the proxy's own. `Connection` can list hop-by-hop
//!    headers but never `Content-Length`, `Transfer-Encoding` or `Host`. A chunked body is
//!    passed through as it is, but only as far as [`Chunked`] (strict RFC 9112 §7.1: hex
//!    sizes, CRLF only, no control bytes) has checked it; a malformed one gets 400 and the
//!    backend connection is closed mid-request, so the backend never reads a whole request
//!    the client did not send.
//! 3. **A response belongs to one request.** A response head is parsed as strictly (502
//!    otherwise); its body is read by its own framing and only that far.
//! 4. **A pooled connection is clean.** A backend connection goes back to the pool only
//!    when its request was sent whole, its response was read whole by its framing, the
//!    backend sent nothing beyond it, and neither side asked to close; at reuse a pooled
//!    connection that has anything to read (bytes or its end) is closed instead. So a
//!    response can only ever reach the client whose request it answers.
//! 5. **After a switch of protocols (101) the bytes are not HTTP**: the two connections
//!    are joined as they are, and the backend connection is never pooled.
//! 6. **The forwarding headers are the edge's.** A client's `X-Forwarded-*`, `Forwarded` and
//!    `X-Real-IP` reach the backend only from a peer the route function trusts
//!    ([`crate::forwarded`]); from anyone else they are dropped and the proxy's own written.
//!    The Kubernetes router's proof header is never forwarded. A response gets its target's
//!    [`crate::target::ResponsePolicy`] (no `Service-Worker-Allowed` where backends share an
//!    origin; a sandbox where a browser must not have it) as its head is copied.
//!
//! A client that half-closes after its request still gets the response (as from HAProxy
//! and nginx); its connection is closed after the requests it sent are answered.

use crate::chunked::Chunked;
use crate::framing::{Refusal, RequestBody};
use crate::head::{parse_request, parse_response, Forward, Framing, RequestHead, RequestParse};
use crate::head::{ResponseHead, MAX_HEAD};
use crate::monitor::ActivityGuard;
use crate::pool::{Pool, Reusable};
use crate::splice::{self, Pipe};
use crate::target::{connect_tcp, Target};
use crate::tunnel::Tunnel;
use bytes::{Buf, BytesMut};
use http::uri::Authority;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Room made in a read buffer before each read.
const READ_SIZE: usize = 8 * 1024;
const BODY_CHUNK: usize = 16 * 1024;

const BAD_GATEWAY: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n\
content-length: 59\r\n\r\nthe backend did not answer; it may be starting or stopping\n";
const BAD_GATEWAY_CLOSE: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n\
connection: close\r\ncontent-length: 59\r\n\r\nthe backend did not answer; it may be starting or stopping\n";

/// An idle keep-alive connection to a backend, with what was read from it and not used.
#[derive(Debug)]
pub struct BackendConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Reusable for BackendConn {
    /// A read without waiting: an idle backend connection has nothing to say, so end of
    /// input or any bytes at all mean it cannot carry another request. Without a readiness
    /// event since the last read this costs no system call.
    fn is_closed(&self) -> bool {
        let mut byte = [0u8; 1];
        !matches!(self.stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// How a client connection left the relay.
pub enum Ended {
    Closed,
    /// The relay does not take this request: the full HTTP stack gets the connection, the
    /// bytes read so far first.
    Fallback(TcpStream, BytesMut),
    /// The backend switched protocols: the two connections are to be joined, best in a task
    /// of their own, so that a WebSocket open for hours does not hold the relay's state,
    /// which is sized for an exchange.
    Upgraded(Tunnel),
}

/// Relays requests on one client connection for as long as `route` gives them a target.
/// The connection is closed once it has waited `idle` for a request's head to be complete
/// since it opened or since the last exchange ended.
pub async fn run<R>(
    stream: TcpStream,
    peer: SocketAddr,
    route: &R,
    pool: &Pool<BackendConn>,
    idle: Option<Duration>,
) -> Ended
where
    R: Fn(&RequestHead, SocketAddr) -> Option<Target>,
{
    let mut client = Client {
        stream,
        buf: BytesMut::new(),
        done: false,
        pipe: None,
    };
    // The head being sent (to the backend, then to the client), reused for every request.
    let mut out = Vec::new();
    // One timer for the connection, re-armed only when it fires before the connection has
    // been idle long enough: a deadline per request would update the timer wheel per request.
    let mut idle_since = Instant::now();
    let timer = tokio::time::sleep(idle.unwrap_or(Duration::MAX));
    tokio::pin!(timer);
    loop {
        let forward = loop {
            if !client.buf.is_empty() {
                match parse_request(&client.buf, &mut out, |head| route(head, peer)) {
                    RequestParse::Partial => {}
                    RequestParse::Fallback => return Ended::Fallback(client.stream, client.buf),
                    RequestParse::Refuse(refusal) => {
                        tracing::debug!(%peer, %refusal, "refused a request");
                        refuse(&mut client.stream, refusal).await;
                        return Ended::Closed;
                    }
                    RequestParse::Forward(f) => break f,
                }
            }
            if client.done {
                return Ended::Closed;
            }
            let buf = &mut client.buf;
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_SIZE);
            }
            // Biased: the read first, and no random branch order drawn per poll.
            let read = tokio::select! {
                biased;
                read = client.stream.read_buf(buf) => Some(read),
                () = &mut timer, if idle.is_some() => None,
            };
            match read {
                Some(Ok(0) | Err(_)) => return Ended::Closed,
                Some(Ok(_)) => {}
                None => match idle.map(|limit| idle_since + limit) {
                    Some(deadline) if Instant::now() < deadline => timer.as_mut().reset(deadline),
                    _ => {
                        tracing::debug!(%peer, "closing a client connection idle too long");
                        return Ended::Closed;
                    }
                },
            }
        };
        match exchange(&mut client, &mut out, forward, pool).await {
            Next::Request => idle_since = Instant::now(),
            Next::Close => return Ended::Closed,
            Next::Upgrade(backend, guard, websocket, revoked) => {
                return Ended::Upgraded(Tunnel {
                    client: client.stream,
                    client_read: client.buf.freeze(),
                    backend: backend.stream,
                    backend_read: backend.buf.freeze(),
                    guard,
                    websocket,
                    revoked,
                })
            }
        }
    }
}

/// The client's side of a connection the relay serves.
struct Client {
    stream: TcpStream,
    /// What the client sent and the relay has not used yet: the next request's head, the
    /// start of a body, pipelined requests.
    buf: BytesMut,
    /// The client half-closed: it is sent the answers to the requests it sent, then closed.
    done: bool,
    /// Made at the first long body, and kept for the connection's next ones.
    pipe: Option<Pipe>,
}

/// What the client connection does after an exchange.
enum Next {
    Request,
    Close,
    /// Switched protocols: the two connections are joined, counted until they close; the
    /// flag says the protocol is WebSocket; the receiver is the revocation of the grant
    /// that admitted it (token-mode backends).
    Upgrade(
        BackendConn,
        ActivityGuard,
        bool,
        Option<tokio::sync::watch::Receiver<bool>>,
    ),
}

/// Why an exchange could not go on.
enum Fail {
    /// The client went away or its connection failed.
    Client,
    /// The client's request body is malformed: it is refused, and the connection closed.
    BadRequest(Refusal),
    /// The backend failed; `silent` if it sent nothing at all for this request.
    Backend { silent: bool },
}

/// What of a request's body is still to come from the client.
enum BodyLeft {
    Length(u64),
    Chunked(Chunked),
}

impl BodyLeft {
    fn done(&self) -> bool {
        match self {
            BodyLeft::Length(n) => *n == 0,
            BodyLeft::Chunked(c) => c.done(),
        }
    }

    /// How many of `bytes` (read from the client) belong to the body; the rest is the next
    /// request's.
    fn take(&mut self, bytes: &[u8]) -> Result<usize, Fail> {
        match self {
            BodyLeft::Length(left) => {
                let n = (bytes.len() as u64).min(*left);
                *left -= n;
                Ok(n as usize)
            }
            BodyLeft::Chunked(c) => c
                .scan(bytes)
                .map_err(|_| Fail::BadRequest(Refusal::BAD_CHUNKED)),
        }
    }
}

/// One request and its response. The client's head is at the start of `buf`; the head
/// for the backend is in `out`.
async fn exchange(
    client: &mut Client,
    out: &mut Vec<u8>,
    f: Forward,
    pool: &Pool<BackendConn>,
) -> Next {
    crate::busy_poll::note_activity();
    let guard = f.target.monitor.open();
    let authority = &f.target.authority;
    let key = authority.as_str();

    // The head and what the client already sent of the body, in one write. `out` holds
    // them until the backend's first byte, so that a retry can send them again. A body
    // found malformed here is refused before any backend sees the request.
    let buf = &mut client.buf;
    buf.advance(f.head_len);
    let mut body = match f.body {
        RequestBody::Length(n) => BodyLeft::Length(n),
        RequestBody::Chunked => BodyLeft::Chunked(Chunked::default()),
    };
    let in_buf = match body.take(buf) {
        Ok(n) => n,
        Err(Fail::BadRequest(refusal)) => {
            refuse(&mut client.stream, refusal).await;
            return Next::Close;
        }
        Err(_) => return Next::Close,
    };
    out.extend_from_slice(&buf[..in_buf]);
    buf.advance(in_buf);
    // A request that was sent whole in one write can go again on a fresh connection, if it
    // is idempotent and a reused connection closed without answering (RFC 9110 §9.2.2).
    let replayable = body.done() && f.idempotent;

    let (mut conn, head) = loop {
        let (mut conn, reused) = match pool.take(key) {
            Some(conn) => (conn, true),
            None => match connect(authority).await {
                Ok(conn) => (conn, false),
                Err(e) => {
                    tracing::debug!(error = %e, backend = %authority, "backend unreachable");
                    return bad_gateway(client, !body.done()).await;
                }
            },
        };
        let sent = send(&mut conn, out, client, &mut body).await;
        let result = match sent {
            Ok(()) => read_head(&mut conn, &f, client, out).await,
            Err(fail) => Err(fail),
        };
        match result {
            Ok(head) => break (conn, head),
            Err(Fail::Client) => return Next::Close,
            Err(Fail::BadRequest(refusal)) => {
                tracing::debug!(%refusal, backend = %authority, "refused a request body");
                refuse(&mut client.stream, refusal).await;
                return Next::Close;
            }
            Err(Fail::Backend { silent: true }) if reused && replayable => continue,
            Err(Fail::Backend { .. }) => {
                tracing::debug!(backend = %authority, "backend failed before answering");
                return bad_gateway(client, !body.done()).await;
            }
        }
    };

    if head.status == 101 {
        if !f.upgrade {
            return bad_gateway(client, true).await;
        }
        conn.buf.advance(head.head_len);
        if client.stream.write_all(out).await.is_err() {
            return Next::Close;
        }
        let revoked = f.target.access.as_ref().map(|g| g.revoked());
        return Next::Upgrade(conn, guard, f.websocket, revoked);
    }

    if relay_body(&mut conn, head.head_len, out, head.framing, client)
        .await
        .is_err()
    {
        return Next::Close;
    }
    if head.reusable && conn.buf.is_empty() {
        pool.put(key, conn);
    }
    // The response's end goes out only now that the backend connection is back: a slow
    // client's last bytes do not hold it, and a request that arrives on another connection
    // of this thread the moment this response is complete can have it.
    if client.stream.write_all(out).await.is_err() {
        return Next::Close;
    }
    drop(guard);
    if head.close || (client.done && client.buf.is_empty()) {
        Next::Close
    } else {
        Next::Request
    }
}

/// Sends the request's head and buffered body, then the rest of the body as the client
/// sends it, checked against its framing as it passes.
async fn send(
    conn: &mut BackendConn,
    request: &[u8],
    client: &mut Client,
    body: &mut BodyLeft,
) -> Result<(), Fail> {
    if conn.stream.write_all(request).await.is_err() {
        return Err(Fail::Backend { silent: true });
    }
    while !body.done() {
        if let BodyLeft::Length(left) = body {
            if *left >= splice::THRESHOLD && client.buf.is_empty() {
                if let Some(pipe) = pipe_for(&mut client.pipe) {
                    pipe.transfer(&client.stream, &conn.stream, *left)
                        .await
                        .map_err(|failed| match failed {
                            splice::Failed::Source => Fail::Client,
                            splice::Failed::Destination => Fail::Backend { silent: false },
                        })?;
                    *left = 0;
                    break;
                }
            }
        }
        let buf = &mut client.buf;
        buf.reserve(BODY_CHUNK);
        let read = match body {
            // Never past the body: what follows is the next request's.
            BodyLeft::Length(left) => (&mut client.stream).take(*left).read_buf(buf).await,
            BodyLeft::Chunked(_) => client.stream.read_buf(buf).await,
        };
        if !matches!(read, Ok(n) if n > 0) {
            return Err(Fail::Client);
        }
        let n = body.take(buf)?;
        if conn.stream.write_all(&buf[..n]).await.is_err() {
            return Err(Fail::Backend { silent: false });
        }
        buf.advance(n);
    }
    Ok(())
}

/// Reads the backend's final response head, and writes the head for the client into
/// `out`; informational ones (`100 Continue`, `103 Early Hints`) are passed on to the
/// client as they come. `out` is left as it was until a whole head has arrived.
async fn read_head(
    conn: &mut BackendConn,
    f: &Forward,
    client: &mut Client,
    out: &mut Vec<u8>,
) -> Result<ResponseHead, Fail> {
    let mut silent = true;
    loop {
        if !conn.buf.is_empty() {
            silent = false;
            match parse_response(&conn.buf, f, out) {
                Ok(Some(head)) if head.status < 200 && head.status != 101 => {
                    conn.buf.advance(head.head_len);
                    if client.stream.write_all(out).await.is_err() {
                        return Err(Fail::Client);
                    }
                    continue;
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "backend sent a bad response head");
                    return Err(Fail::Backend { silent: false });
                }
            }
        }
        if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf.reserve(READ_SIZE);
        }
        match read_backend(conn, client).await {
            Ok(0) | Err(Fail::Backend { .. }) => return Err(Fail::Backend { silent }),
            Ok(_) => {}
            Err(fail) => return Err(fail),
        }
    }
}

/// Sends the response head and its body to the client, all but the last write: that is
/// left in `out` for the caller, who gives the backend connection back first. The body's
/// first bytes (already read with the head) go in the same write as the head.
async fn relay_body(
    conn: &mut BackendConn,
    head_len: usize,
    out: &mut Vec<u8>,
    framing: Framing,
    client: &mut Client,
) -> Result<(), Fail> {
    conn.buf.advance(head_len);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    // What a long body still has to come after what was read with the head: spliced.
    let to_splice = left.saturating_sub(conn.buf.len() as u64);
    let mut chunked = Chunked::default();
    // How much of what was read belongs to the body, and whether the body is complete.
    let mut take = |bytes: &[u8]| -> Result<(usize, bool), Fail> {
        match framing {
            Framing::None => Ok((0, true)),
            Framing::Length(_) => {
                let n = (bytes.len() as u64).min(left);
                left -= n;
                Ok((n as usize, left == 0))
            }
            Framing::Chunked => {
                let n = chunked
                    .scan(bytes)
                    .map_err(|_| Fail::Backend { silent: false })?;
                Ok((n, chunked.done()))
            }
            Framing::UntilClose => Ok((bytes.len(), false)),
        }
    };
    let (n, done) = take(&conn.buf)?;
    out.extend_from_slice(&conn.buf[..n]);
    conn.buf.advance(n);
    if done {
        return Ok(());
    }
    if client.stream.write_all(out).await.is_err() {
        return Err(Fail::Client);
    }
    out.clear();
    if to_splice >= splice::THRESHOLD && conn.buf.is_empty() {
        if let Some(pipe) = pipe_for(&mut client.pipe) {
            return match pipe.transfer(&conn.stream, &client.stream, to_splice).await {
                Ok(()) => Ok(()),
                Err(splice::Failed::Source) => Err(Fail::Backend { silent: false }),
                Err(splice::Failed::Destination) => Err(Fail::Client),
            };
        }
    }
    loop {
        if !conn.buf.is_empty() {
            // Bytes past the end of a body that has not ended: impossible by construction.
            return Err(Fail::Backend { silent: false });
        }
        conn.buf.reserve(BODY_CHUNK);
        let read = read_backend(conn, client).await?;
        if read == 0 {
            if framing == Framing::UntilClose {
                return Ok(());
            }
            return Err(Fail::Backend { silent: false });
        }
        let (n, done) = take(&conn.buf)?;
        if done {
            out.extend_from_slice(&conn.buf[..n]);
            conn.buf.advance(n);
            return Ok(());
        }
        if client.stream.write_all(&conn.buf[..n]).await.is_err() {
            return Err(Fail::Client);
        }
        conn.buf.advance(n);
    }
}

/// Reads from the backend into its buffer. Meanwhile, it notices a client that went away
/// (so a request waiting on a slow backend stops being counted as live), keeping whatever
/// the client sent ahead (a pipelined request) for later. A client's end of input is a
/// half-close, not a departure: it still gets its answers (`Client::done` is set).
async fn read_backend(conn: &mut BackendConn, client: &mut Client) -> Result<usize, Fail> {
    loop {
        tokio::select! {
            biased;
            read = conn.stream.read_buf(&mut conn.buf) => {
                return read.map_err(|_| Fail::Backend { silent: true });
            }
            ready = client.stream.readable(), if !client.done && client.buf.len() < MAX_HEAD => {
                if ready.is_err() {
                    return Err(Fail::Client);
                }
                client.buf.reserve(READ_SIZE);
                match client.stream.try_read_buf(&mut client.buf) {
                    Ok(0) => client.done = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return Err(Fail::Client),
                }
            }
        }
    }
}

/// Answers a refused request and closes the connection the way nginx's lingering close
/// does: the answer first, then the end of output, then what the client still sends is
/// read and dropped for a moment (bounded in time and bytes), so that the kernel does not
/// reset the connection, and lose the answer, over unread input.
async fn refuse(client: &mut TcpStream, refusal: Refusal) {
    if client.write_all(&refusal.response()).await.is_err() || client.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        // On the heap: a buffer here would make every connection's state 4 KiB larger.
        let mut sink = vec![0u8; 4096];
        let mut left = 256 * 1024usize;
        while let Ok(n @ 1..) = client.read(&mut sink).await {
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// Answers 502 for a request the backend did not answer. If the client is still sending
/// the request's body, its connection is closed after.
async fn bad_gateway(client: &mut Client, close: bool) -> Next {
    let close = close || client.done;
    let response = if close {
        BAD_GATEWAY_CLOSE
    } else {
        BAD_GATEWAY
    };
    match client.stream.write_all(response).await {
        Ok(()) if !close => Next::Request,
        _ => Next::Close,
    }
}

/// The connection's pipe, made now if it has none; `None` (copy instead) if the system
/// cannot make one.
fn pipe_for(pipe: &mut Option<Pipe>) -> Option<&mut Pipe> {
    if pipe.is_none() {
        match Pipe::new() {
            Ok(made) => *pipe = Some(made),
            Err(e) => tracing::debug!(error = %e, "no pipe: copying the body instead"),
        }
    }
    pipe.as_mut()
}

async fn connect(authority: &Authority) -> std::io::Result<BackendConn> {
    Ok(BackendConn {
        stream: connect_tcp(authority).await?,
        buf: BytesMut::new(),
    })
}
