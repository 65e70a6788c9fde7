//! The bodies on hyper's path: a proxied response's (the backend's body, counted until it
//! ends, or a short message of the proxy's own), and a proxied request's, which remembers
//! whether the client's bytes failed to read as a body.

use crate::monitor::ActivityGuard;
use crate::pool::{Pool, Reusable};
use bytes::Bytes;
use http::uri::Authority;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// A response body of the proxy. The guard keeps the request counted as live until the
/// backend's body has been sent in full (or the client went away and it was dropped); the
/// backend connection goes back to the pool only once the body was read in full.
#[derive(Debug)]
pub enum ProxyBody {
    Backend {
        body: Incoming,
        guard: Option<ActivityGuard>,
        conn: Option<Pooled>,
    },
    Message(Option<Bytes>),
}

impl ProxyBody {
    pub fn message(text: impl Into<Bytes>) -> Self {
        ProxyBody::Message(Some(text.into()))
    }
    pub fn empty() -> Self {
        ProxyBody::Message(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Backend { body, guard, conn } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => {
                        guard.take();
                        if let Some(c) = conn {
                            c.reusable = true;
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        guard.take();
                        conn.take();
                    }
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => {
                        if let Some(c) = conn {
                            c.reusable = true;
                        }
                    }
                    _ => {}
                }
                polled
            }
            ProxyBody::Message(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Backend { body, .. } => body.is_end_stream(),
            ProxyBody::Message(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Backend { body, .. } => body.size_hint(),
            ProxyBody::Message(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Message(None) => SizeHint::with_exact(0),
        }
    }
}

/// A backend connection lent to one response: back to the pool when dropped, if the
/// response body it carried was read in full; closed otherwise.
#[derive(Debug)]
pub struct Pooled {
    pub(crate) pool: Arc<Pool<SendRequest<ClientBody>>>,
    pub(crate) authority: Authority,
    pub(crate) sender: Option<SendRequest<ClientBody>>,
    pub(crate) reusable: bool,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let (true, Some(sender)) = (self.reusable, self.sender.take()) {
            self.pool.put(self.authority.as_str(), sender);
        }
    }
}

impl Reusable for SendRequest<ClientBody> {
    fn is_closed(&self) -> bool {
        SendRequest::is_closed(self)
    }
}

/// A client's request body on its way to a backend. hyper decodes the client's framing
/// (chunked coding, a length); when that fails (a malformed chunk, the client gone
/// mid-body), sending the request fails too, and this tells whose fault it was: the
/// client gets `400`, not the `502` of a backend that failed.
#[derive(Debug)]
pub struct ClientBody {
    body: Incoming,
    failed: Arc<AtomicBool>,
}

impl ClientBody {
    /// The body, and the flag it raises if reading it fails.
    pub(crate) fn new(body: Incoming) -> (Self, Arc<AtomicBool>) {
        let failed = Arc::new(AtomicBool::new(false));
        (
            ClientBody {
                body,
                failed: failed.clone(),
            },
            failed,
        )
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            this.failed.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
