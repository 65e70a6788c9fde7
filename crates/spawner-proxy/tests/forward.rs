//! The forwarder through real sockets: a client connection to the proxy, the proxy's
//! connections to two real HTTP backends that count the connections they accept.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use spawner_proxy::{Forwarder, Monitor, Target};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A backend: answers `{connection number} {method} {path} {request body length}`;
/// `/close` answers with `Connection: close`; `/stream` sends 64 chunks of 16 KiB; `/ws` is
/// a WebSocket that echoes text.
struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn backend() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| answer(n, req));
                let _ = server::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Backend { addr, connections }
}

type AnswerBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    conn: usize,
    mut req: Request<Incoming>,
) -> Result<Response<AnswerBody>, Infallible> {
    if req.uri().path() == "/ws" {
        return Ok(echo_websocket(&mut req));
    }
    let (parts, body) = req.into_parts();
    let len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    if parts.uri.path() == "/stream" {
        let chunks =
            (0..64).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 16 * 1024]))));
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        return Ok(Response::new(BodyExt::boxed(body)));
    }
    let text = format!("{conn} {} {} {len}", parts.method, parts.uri.path());
    let mut resp = Response::new(Full::new(Bytes::from(text)).boxed());
    if parts.uri.path() == "/close" {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    Ok(resp)
}

fn echo_websocket(req: &mut Request<Incoming>) -> Response<AnswerBody> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", key)
        .body(Full::new(Bytes::new()).boxed())
        .expect("response")
}

/// A proxy that sends `/a/…` to one backend and `/b/…` to the other, prefix stripped.
async fn proxy(a: SocketAddr, b: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let monitor = Arc::new(Monitor::new(0));
    tokio::spawn(async move {
        let forwarder = Forwarder::new();
        spawner_proxy::listen::serve(listener, std::future::pending(), move |req, peer| {
            let forwarder = forwarder.clone();
            let backend = if req.uri().path().starts_with("/b/") {
                b
            } else {
                a
            };
            let target = Target {
                authority: backend.to_string().parse().expect("authority"),
                monitor: monitor.clone(),
                strip: 2,
                client_ip: peer.ip(),
            };
            async move { forwarder.forward(req, target).await }
        })
        .await
    });
    addr
}

/// One keep-alive client connection to the proxy.
async fn connect(proxy: SocketAddr) -> client::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(proxy).await.expect("connect");
    let (sender, conn) = client::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn call(
    sender: &mut client::SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: Bytes,
) -> (StatusCode, String) {
    sender.ready().await.expect("ready");
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "proxy.test")
        .body(Full::new(body))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn sequential_requests_reuse_one_backend_connection() {
    let (a, b) = (backend().await, backend().await);
    let proxy = proxy(a.addr, b.addr).await;
    let mut client = connect(proxy).await;
    for i in 0..50 {
        let (status, text) = call(&mut client, "GET", &format!("/a/n{i}"), Bytes::new()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, format!("1 GET /n{i} 0"));
    }
    // Bodies both ways, whole, on the same connection.
    let (_, text) = call(
        &mut client,
        "POST",
        "/a/up",
        Bytes::from(vec![7u8; 1 << 20]),
    )
    .await;
    assert_eq!(text, "1 POST /up 1048576");
    let (status, text) = call(&mut client, "GET", "/a/stream", Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text.len(), 64 * 16 * 1024);
    let (_, text) = call(&mut client, "GET", "/a/after", Bytes::new()).await;
    assert_eq!(text, "1 GET /after 0");
    assert_eq!(a.connections.load(Ordering::SeqCst), 1);
    assert_eq!(b.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_backend_closing_its_connection_between_requests_is_not_an_error() {
    let (a, b) = (backend().await, backend().await);
    let proxy = proxy(a.addr, b.addr).await;
    let mut client = connect(proxy).await;
    let (_, text) = call(&mut client, "GET", "/a/close", Bytes::new()).await;
    assert_eq!(text, "1 GET /close 0");
    // Give the backend's close time to arrive, so that the next request finds it closed.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for _ in 0..3 {
        let (status, text) = call(&mut client, "GET", "/a/next", Bytes::new()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, "2 GET /next 0");
    }
    assert_eq!(a.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn requests_to_two_backends_on_one_client_connection_each_reuse_a_connection() {
    let (a, b) = (backend().await, backend().await);
    let proxy = proxy(a.addr, b.addr).await;
    let mut client = connect(proxy).await;
    for i in 0..20 {
        let (which, path) = if i % 2 == 0 {
            ("a", "/a/x")
        } else {
            ("b", "/b/y")
        };
        let (status, text) = call(&mut client, "GET", path, Bytes::new()).await;
        assert_eq!(status, StatusCode::OK, "{which}");
        assert_eq!(text, format!("1 GET {} 0", &path[2..]), "{which}");
    }
    assert_eq!(a.connections.load(Ordering::SeqCst), 1);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn clients_with_a_connection_per_request_share_pooled_backend_connections() {
    let (a, b) = (backend().await, backend().await);
    let proxy = proxy(a.addr, b.addr).await;
    for i in 0..20 {
        let mut client = connect(proxy).await;
        let (status, text) = call(&mut client, "GET", &format!("/a/c{i}"), Bytes::new()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.ends_with(&format!(" GET /c{i} 0")), "{text}");
    }
    // Without the pool, every client connection would have opened one of its own (20).
    let opened = a.connections.load(Ordering::SeqCst);
    assert!(opened <= 2, "{opened} backend connections for 20 clients");
}

#[tokio::test]
async fn a_websocket_can_take_a_pooled_connection() {
    let (a, b) = (backend().await, backend().await);
    let proxy = proxy(a.addr, b.addr).await;
    let mut client = connect(proxy).await;
    let (_, text) = call(&mut client, "GET", "/a/first", Bytes::new()).await;
    assert_eq!(text, "1 GET /first 0");
    // The client goes; the backend connection its request used stays in the pool.
    drop(client);

    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{proxy}/a/ws"))
        .await
        .expect("upgrade through the proxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..3 {
        ws.send(Message::text(format!("m{i}"))).await.expect("send");
        let echo = ws.next().await.expect("open").expect("message");
        assert_eq!(echo.into_text().expect("text").as_str(), format!("m{i}"));
    }
    // The upgrade went over the pooled connection, not a new one.
    assert_eq!(a.connections.load(Ordering::SeqCst), 1);
}
