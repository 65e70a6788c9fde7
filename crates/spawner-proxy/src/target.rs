//! Where a request goes, and connecting there: the ground both proxy paths stand on.

use crate::monitor::Monitor;
use http::uri::Authority;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one request goes.
#[derive(Debug)]
pub struct Target {
    /// The backend's `host:port`.
    pub authority: Authority,
    /// The monitor the request is counted in.
    pub monitor: Arc<Monitor>,
    /// Bytes of the request path to drop before forwarding (`/p/{id}` under path routing
    /// with prefix stripping); the dropped prefix is sent as `X-Forwarded-Prefix`.
    pub strip: usize,
    /// The address of the client that sent the request, for `X-Forwarded-For`.
    pub client_ip: IpAddr,
}

/// Opens a TCP connection to a backend (both proxy paths), giving up after 10 s.
pub(crate) async fn connect_tcp(authority: &Authority) -> std::io::Result<TcpStream> {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
