//! The backend behind the proxy under test: it records every byte it receives, splits them
//! into requests with the strict parser, and answers each with a response naming it. What
//! it cannot split with certainty is recorded as such: a proxy must never send it that.

use crate::corpus::crafted_response;
use crate::wire::{self, Parsed, Request};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What arrived, in order, over all connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// A whole request, on connection `conn`.
    Request { conn: usize, request: Request },
    /// Bytes that are not a request framed with certainty; the connection was closed.
    Invalid {
        conn: usize,
        why: String,
        bytes: Vec<u8>,
    },
}

#[derive(Clone, Default)]
pub struct Log {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

impl Log {
    fn push(&self, arrival: Arrival) {
        if let Ok(mut a) = self.arrivals.lock() {
            a.push(arrival);
        }
    }

    pub fn len(&self) -> usize {
        self.arrivals.lock().map(|a| a.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Arrivals from the `from`th on.
    pub fn since(&self, from: usize) -> Vec<Arrival> {
        self.arrivals
            .lock()
            .map(|a| a.get(from..).unwrap_or_default().to_vec())
            .unwrap_or_default()
    }
}

/// A running recording backend.
pub struct Backend {
    pub addr: SocketAddr,
    pub log: Log,
}

impl Backend {
    pub async fn start() -> std::io::Result<Backend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let log = Log::default();
        let recorded = log.clone();
        tokio::spawn(async move {
            let mut conn = 0;
            while let Ok((stream, _)) = listener.accept().await {
                conn += 1;
                tokio::spawn(serve(stream, conn, recorded.clone()));
            }
        });
        Ok(Backend { addr, log })
    }
}

/// The answer to a request: its method, target and body length, so that the client can
/// tell whose answer it got. A target containing `slow` is answered after 300 ms;
/// `/resp/N` gets crafted response N of the corpus.
async fn serve(mut stream: TcpStream, conn: usize, log: Log) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        loop {
            match wire::request(&buf) {
                Parsed::Partial => break,
                Parsed::Invalid(why) => {
                    log.push(Arrival::Invalid {
                        conn,
                        why,
                        bytes: std::mem::take(&mut buf),
                    });
                    return;
                }
                Parsed::Complete(request, used) => {
                    buf.drain(..used);
                    log.push(Arrival::Request {
                        conn,
                        request: request.clone(),
                    });
                    let answer = answer(&request).await;
                    let Some((bytes, close)) = answer else {
                        return;
                    };
                    if stream.write_all(&bytes).await.is_err() || close {
                        return;
                    }
                }
            }
        }
        match stream.read(&mut chunk).await {
            // An unfinished request at the end is fine: the proxy gave up on it, and it
            // never became a request.
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn answer(request: &Request) -> Option<(Vec<u8>, bool)> {
    if let Some(n) = request.target.strip_prefix("/resp/") {
        let n: usize = n.parse().ok()?;
        let crafted = crafted_response(n)?;
        return Some((crafted.bytes.clone(), crafted.close_after));
    }
    if request.target.contains("slow") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let text = format!(
        "{} {} {}",
        request.method,
        request.target,
        request.body.len()
    );
    let head_request = request.method == "HEAD";
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
        text.len()
    )
    .into_bytes();
    if !head_request {
        out.extend_from_slice(text.as_bytes());
    }
    Some((out, false))
}
