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
use spawner_proxy::forward::message;
use spawner_proxy::{Forwarder, Monitor, PeerTrust, RequestHead, ResponsePolicy, Target};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A backend: answers `{connection number} {method} {path} {request body length}`;
/// `/close` answers with `Connection: close`; `/stream` sends 64 chunks of 16 KiB; `/slow`
/// answers after 30 s; `/ws` is a WebSocket that echoes text; `/headers` answers the
/// request's header lines, lower-cased, one a line; `/sw` answers with
/// `Service-Worker-Allowed: /`.
struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// `{method} {path}` of every request whose body it read whole.
    whole: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn backend() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let whole = Arc::new(std::sync::Mutex::new(Vec::new()));
    let logged = whole.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let logged = logged.clone();
            tokio::spawn(async move {
                let service =
                    service_fn(move |req: Request<Incoming>| answer(n, req, logged.clone()));
                let _ = server::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Backend {
        addr,
        connections,
        whole,
    }
}

type AnswerBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    conn: usize,
    mut req: Request<Incoming>,
    whole: Arc<std::sync::Mutex<Vec<String>>>,
) -> Result<Response<AnswerBody>, Infallible> {
    if req.uri().path() == "/ws" {
        return Ok(echo_websocket(&mut req));
    }
    let (parts, body) = req.into_parts();
    let len = match body.collect().await {
        Ok(b) => {
            let line = format!("{} {}", parts.method, parts.uri.path());
            whole.lock().expect("log").push(line);
            b.to_bytes().len()
        }
        Err(_) => 0,
    };
    if parts.uri.path() == "/headers" {
        let lines: String = parts
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        return Ok(Response::new(Full::new(Bytes::from(lines)).boxed()));
    }
    if parts.uri.path() == "/sw" {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"sw")).boxed());
        resp.headers_mut().insert(
            "service-worker-allowed",
            http::HeaderValue::from_static("/"),
        );
        return Ok(resp);
    }
    if parts.uri.path() == "/slow" {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
    if parts.uri.path() == "/big" {
        // 1 MiB and a bit, with a Content-Length: long enough for the relay to splice.
        let body: Vec<u8> = (0..(1 << 20) + 3).map(|i| (i % 251) as u8).collect();
        return Ok(Response::new(Full::new(Bytes::from(body)).boxed()));
    }
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

/// Which of the proxy's two paths a test goes through: the relay, or hyper's full stack
/// (which the relay hands a connection to at a request it does not take).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    Relay,
    Full,
}

const STACKS: [Stack; 2] = [Stack::Relay, Stack::Full];

/// A proxy that sends `/a/…` to one backend and `/b/…` to the other, prefix stripped;
/// `/x/…` is its own (404), as an API path would be.
async fn proxy(a: SocketAddr, b: SocketAddr, stack: Stack) -> SocketAddr {
    proxy_counted(a, b, stack).await.0
}

/// [`proxy`], with the monitor its requests are counted in.
async fn proxy_counted(a: SocketAddr, b: SocketAddr, stack: Stack) -> (SocketAddr, Arc<Monitor>) {
    proxy_with(a, b, stack, Forwarder::new()).await
}

/// [`proxy_counted`], with a forwarder of the test's own.
async fn proxy_with(
    a: SocketAddr,
    b: SocketAddr,
    stack: Stack,
    forwarder: Forwarder,
) -> (SocketAddr, Arc<Monitor>) {
    proxy_shaped(a, b, stack, forwarder, Shape::default()).await
}

/// What the proxy's route function puts in every target besides where it goes.
#[derive(Clone, Default)]
struct Shape {
    /// Trust the peer's forwarding headers.
    trusted: bool,
    response: Option<ResponsePolicy>,
    router_proof: Option<&'static str>,
    /// The grant that admits every request (a token-mode backend).
    access: Option<Arc<spawner_proxy::access::Grant>>,
}

/// [`proxy_with`], with targets shaped by `shape`.
async fn proxy_shaped(
    a: SocketAddr,
    b: SocketAddr,
    stack: Stack,
    forwarder: Forwarder,
    shape: Shape,
) -> (SocketAddr, Arc<Monitor>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let monitor = Arc::new(Monitor::new(0));
    let counted = monitor.clone();
    let target = move |path: &str, peer: SocketAddr| Target {
        authority: if path.starts_with("/b/") { b } else { a }
            .to_string()
            .parse()
            .expect("authority"),
        monitor: monitor.clone(),
        strip: 2,
        client_ip: peer.ip(),
        trust: if shape.trusted {
            PeerTrust::Trusted
        } else {
            PeerTrust::Untrusted
        },
        response: shape.response.unwrap_or(ResponsePolicy::Pass),
        router_proof: shape.router_proof.map(http::HeaderValue::from_static),
        access: shape.access.clone(),
    };
    let relayed = target.clone();
    tokio::spawn(async move {
        let full = forwarder.clone();
        spawner_proxy::listen::serve(
            listener,
            std::future::pending(),
            forwarder,
            move |head: &RequestHead, peer| {
                (stack == Stack::Relay && !head.path.starts_with("/x/"))
                    .then(|| relayed(head.path, peer))
            },
            move |req: Request<Incoming>, peer| {
                let forwarder = full.clone();
                let target = target(req.uri().path(), peer);
                async move {
                    if req.uri().path().starts_with("/x/") {
                        return message(StatusCode::NOT_FOUND, "not a backend\n");
                    }
                    forwarder.forward(req, target).await
                }
            },
        )
        .await
    });
    (addr, counted)
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
    for stack in STACKS {
        let (a, b) = (backend().await, backend().await);
        let proxy = proxy(a.addr, b.addr, stack).await;
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
}

/// Long bodies with a length (spliced through a pipe on the relay's path) arrive whole and in
/// order both ways, and the connections carry the next requests.
#[tokio::test]
async fn long_bodies_pass_whole_and_the_connections_go_on() {
    let want: Vec<u8> = (0..(1 << 20) + 3).map(|i| (i % 251) as u8).collect();
    for stack in STACKS {
        let (a, b) = (backend().await, backend().await);
        let proxy = proxy(a.addr, b.addr, stack).await;
        let mut client = connect(proxy).await;
        for round in 0..3 {
            sender_ready(&mut client).await;
            let req = Request::builder()
                .uri("/a/big")
                .header("host", "proxy.test")
                .body(Full::new(Bytes::new()))
                .expect("request");
            let resp = client.send_request(req).await.expect("response");
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert!(
                body == want,
                "{stack:?} round {round}: {} bytes",
                body.len()
            );
            let upload = Bytes::from(vec![b'u'; (512 << 10) + round]);
            let (_, text) = call(&mut client, "POST", "/a/up", upload).await;
            assert_eq!(
                text,
                format!("1 POST /up {}", (512 << 10) + round),
                "{stack:?}"
            );
        }
        assert_eq!(a.connections.load(Ordering::SeqCst), 1, "{stack:?}");
    }
}

async fn sender_ready(sender: &mut client::SendRequest<Full<Bytes>>) {
    sender.ready().await.expect("ready");
}

#[tokio::test]
async fn a_backend_closing_its_connection_between_requests_is_not_an_error() {
    for stack in STACKS {
        let (a, b) = (backend().await, backend().await);
        let proxy = proxy(a.addr, b.addr, stack).await;
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
}

#[tokio::test]
async fn requests_to_two_backends_on_one_client_connection_each_reuse_a_connection() {
    for stack in STACKS {
        let (a, b) = (backend().await, backend().await);
        let proxy = proxy(a.addr, b.addr, stack).await;
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
}

#[tokio::test]
async fn clients_with_a_connection_per_request_share_pooled_backend_connections() {
    for stack in STACKS {
        let (a, b) = (backend().await, backend().await);
        // Each of the two threads keeps its own idle connections, and a new client goes to
        // the thread with fewer clients, which is either while the last one is closing.
        let forwarder = Forwarder::new().with_threads(2);
        let (proxy, _) = proxy_with(a.addr, b.addr, stack, forwarder).await;
        for i in 0..20 {
            let mut client = connect(proxy).await;
            let (status, text) = call(&mut client, "GET", &format!("/a/c{i}"), Bytes::new()).await;
            assert_eq!(status, StatusCode::OK);
            assert!(text.ends_with(&format!(" GET /c{i} 0")), "{text}");
        }
        // Without the pool, every client connection would have opened one of its own (20);
        // with it, at most one per thread.
        let opened = a.connections.load(Ordering::SeqCst);
        assert!(
            opened <= 2,
            "{stack:?}: {opened} backend connections for 20 clients"
        );
    }
}

#[tokio::test]
async fn a_websocket_can_take_a_pooled_connection() {
    for stack in STACKS {
        let (a, b) = (backend().await, backend().await);
        // One proxy thread: idle backend connections are kept per thread, and the next
        // client may go to another thread while the proxy has yet to see the last one close.
        let forwarder = Forwarder::new().with_threads(1);
        let (proxy, _) = proxy_with(a.addr, b.addr, stack, forwarder).await;
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
        assert_eq!(a.connections.load(Ordering::SeqCst), 1, "{stack:?}");
    }
}

/// A raw client connection: what it sends is exactly what the test writes.
struct Raw {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Raw {
            stream,
            read: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.stream
            .write_all(bytes.as_bytes())
            .await
            .expect("write");
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 64 * 1024];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.stream.read(&mut chunk),
        )
        .await
        .expect("an answer within 10 s")
        .expect("read");
        self.read.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next response: its status, lower-cased header lines and body (none for 1xx,
    /// 204 and 304; by `Content-Length`; or to the end of the connection).
    async fn response(&mut self) -> (u16, Vec<String>, Vec<u8>) {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = resp.parse(&self.read).expect("a response") {
                let status = resp.code.expect("status");
                let lines: Vec<String> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        format!("{}: {}", h.name, String::from_utf8_lossy(h.value))
                            .to_ascii_lowercase()
                    })
                    .collect();
                let length = lines
                    .iter()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map(|v| v.parse::<usize>().expect("length"));
                self.read.drain(..n);
                let bodiless = status < 200 || status == 204 || status == 304;
                let body = match length {
                    _ if bodiless => Vec::new(),
                    Some(len) => {
                        while self.read.len() < len {
                            assert!(self.fill().await > 0, "closed inside a body");
                        }
                        self.read.drain(..len).collect()
                    }
                    None => {
                        while self.fill().await > 0 {}
                        std::mem::take(&mut self.read)
                    }
                };
                return (status, lines, body);
            }
            assert!(self.fill().await > 0, "closed before a response");
        }
    }

    /// Whether the proxy closed the connection (after what was read).
    async fn closed(&mut self) -> bool {
        self.read.is_empty() && self.fill().await == 0
    }
}

fn text(body: &[u8]) -> &str {
    std::str::from_utf8(body).expect("text")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    for stack in STACKS {
        let (a, b) = (backend().await, backend().await);
        let proxy = proxy(a.addr, b.addr, stack).await;
        let mut raw = Raw::connect(proxy).await;
        raw.send("GET /a/one HTTP/1.1\r\nHost: p\r\n\r\nPOST /b/two HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\nxyzGET /a/three HTTP/1.1\r\nHost: p\r\n\r\n").await;
        for want in ["1 GET /one 0", "1 POST /two 3", "1 GET /three 0"] {
            let (status, _, body) = raw.response().await;
            assert_eq!((status, text(&body)), (200, want), "{stack:?}");
        }
    }
}

#[tokio::test]
async fn a_request_the_relay_does_not_take_hands_the_connection_to_the_full_stack() {
    let (a, b) = (backend().await, backend().await);
    let proxy = proxy(a.addr, b.addr, Stack::Relay).await;
    let mut raw = Raw::connect(proxy).await;
    // Relayed; then the proxy's own path; then a chunked upload and an `Expect`, which only
    // the full stack takes; then relayed requests again, by the full stack now.
    raw.send("GET /a/first HTTP/1.1\r\nHost: p\r\n\r\n").await;
    assert_eq!(text(&raw.response().await.2), "1 GET /first 0");
    raw.send("GET /x/own HTTP/1.1\r\nHost: p\r\n\r\n").await;
    let (status, _, body) = raw.response().await;
    assert_eq!((status, text(&body)), (404, "not a backend\n"));
    raw.send("POST /a/chunks HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").await;
    assert_eq!(text(&raw.response().await.2), "2 POST /chunks 5");
    raw.send(
        "PUT /a/expect HTTP/1.1\r\nHost: p\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .await;
    let (status, _, _) = raw.response().await;
    assert_eq!(status, 100);
    raw.send("abcd").await;
    assert_eq!(text(&raw.response().await.2), "2 PUT /expect 4");
    raw.send("GET /a/last HTTP/1.1\r\nHost: p\r\n\r\n").await;
    assert_eq!(text(&raw.response().await.2), "2 GET /last 0");
    // The relay's backend connection went back to its pool; the full stack opened its own.
    assert_eq!(a.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn head_requests_get_no_body_and_the_connection_goes_on() {
    for stack in STACKS {
        let (a, b) = (backend().await, backend().await);
        let proxy = proxy(a.addr, b.addr, stack).await;
        let mut raw = Raw::connect(proxy).await;
        raw.send("HEAD /a/h HTTP/1.1\r\nHost: p\r\n\r\nGET /a/g HTTP/1.1\r\nHost: p\r\n\r\n")
            .await;
        // The HEAD response announces the length a GET would have, and has no body: the
        // next bytes are the next response.
        while !raw.read.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(raw.fill().await > 0, "closed early");
        }
        let end = raw
            .read
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head end")
            + 4;
        let head = String::from_utf8_lossy(&raw.read[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{stack:?}: {head}");
        assert!(head.contains("content-length: 11\r\n"), "{stack:?}: {head}");
        raw.read.drain(..end);
        let (status, _, body) = raw.response().await;
        assert_eq!((status, text(&body)), (200, "1 GET /g 0"), "{stack:?}");
    }
}

#[tokio::test]
async fn an_unreachable_backend_is_a_502_and_the_connection_goes_on() {
    for stack in STACKS {
        let a = backend().await;
        let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let gone_addr = gone.local_addr().expect("addr");
        drop(gone);
        let proxy = proxy(a.addr, gone_addr, stack).await;
        let mut raw = Raw::connect(proxy).await;
        raw.send("GET /b/x HTTP/1.1\r\nHost: p\r\n\r\n").await;
        let (status, _, body) = raw.response().await;
        assert_eq!(status, 502, "{stack:?}");
        assert!(text(&body).contains("did not answer"), "{stack:?}");
        raw.send("GET /a/y HTTP/1.1\r\nHost: p\r\n\r\n").await;
        assert_eq!(text(&raw.response().await.2), "1 GET /y 0", "{stack:?}");
    }
}

#[tokio::test]
async fn connection_close_from_the_client_is_honoured() {
    for stack in STACKS {
        let (a, b) = (backend().await, backend().await);
        let proxy = proxy(a.addr, b.addr, stack).await;
        let mut raw = Raw::connect(proxy).await;
        raw.send("GET /a/bye HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
            .await;
        let (status, headers, body) = raw.response().await;
        assert_eq!((status, text(&body)), (200, "1 GET /bye 0"), "{stack:?}");
        assert!(
            headers.contains(&"connection: close".to_string()),
            "{stack:?}: {headers:?}"
        );
        assert!(raw.closed().await, "{stack:?}");
    }
}

/// A backend that answers every request on a connection with `response`, as it is, and
/// then closes the connection if `close`.
async fn raw_backend(response: &'static str, close: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut read = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                        read.drain(..end + 4);
                        if stream.write_all(response.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_response_ended_by_close_ends_the_client_connection_too() {
    for stack in STACKS {
        let old = raw_backend("HTTP/1.0 200 OK\r\nX-Old: 1\r\n\r\nuntil the end", true).await;
        let proxy = proxy(old, old, stack).await;
        let mut raw = Raw::connect(proxy).await;
        raw.send("GET /a/ HTTP/1.1\r\nHost: p\r\n\r\n").await;
        let (status, headers, body) = raw.response().await;
        assert_eq!((status, text(&body)), (200, "until the end"), "{stack:?}");
        assert!(
            headers.contains(&"x-old: 1".to_string()),
            "{stack:?}: {headers:?}"
        );
    }
}

#[tokio::test]
async fn chunked_responses_pass_with_their_trailers() {
    let chunked = raw_backend(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n\
         5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n",
        false,
    )
    .await;
    let relay = proxy(chunked, chunked, Stack::Relay).await;
    let mut raw = Raw::connect(relay).await;
    raw.send("GET /a/1 HTTP/1.1\r\nHost: p\r\n\r\nGET /a/2 HTTP/1.1\r\nHost: p\r\n\r\n")
        .await;
    // The relay passes the body as the backend framed it, trailers and all, and finds its
    // end: the second response follows on the same connection. The framing header is
    // written anew, in canonical form.
    let want = "HTTP/1.1 200 OK\r\nTrailer: x-sum\r\ntransfer-encoding: chunked\r\n\r\n\
                5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n";
    while raw.read.len() < 2 * want.len() {
        assert!(raw.fill().await > 0, "closed early");
    }
    assert_eq!(text(&raw.read), want.repeat(2));
    // And a client that decodes chunks gets the body.
    for stack in STACKS {
        let proxy = proxy(chunked, chunked, stack).await;
        let mut client = connect(proxy).await;
        for _ in 0..2 {
            let (status, body) = call(&mut client, "GET", "/a/c", Bytes::new()).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::OK, "hello, world"),
                "{stack:?}"
            );
        }
    }
}

/// A client that resets its connection has gone; one that only closes its sending side
/// (below) is still waiting for its answer, as HAProxy and nginx take it too.
#[tokio::test]
async fn a_client_that_leaves_a_slow_request_is_no_longer_counted() {
    for stack in STACKS {
        let (a, b) = (backend().await, backend().await);
        let (proxy, monitor) = proxy_counted(a.addr, b.addr, stack).await;
        let mut raw = Raw::connect(proxy).await;
        raw.stream.set_zero_linger().expect("linger");
        raw.send("GET /a/slow HTTP/1.1\r\nHost: p\r\n\r\n").await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while monitor.live() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{stack:?}: never counted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        drop(raw);
        while monitor.live() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{stack:?}: still counted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// On the relay's path; hyper's ends the requests of a client that half-closes.
#[tokio::test]
async fn a_client_that_half_closes_after_its_requests_gets_the_answers() {
    for stack in [Stack::Relay] {
        let (a, b) = (backend().await, backend().await);
        let proxy = proxy(a.addr, b.addr, stack).await;
        let mut raw = Raw::connect(proxy).await;
        raw.send("GET /a/one HTTP/1.1\r\nHost: p\r\n\r\nGET /a/two HTTP/1.1\r\nHost: p\r\n\r\n")
            .await;
        raw.stream.shutdown().await.expect("half-close");
        let (status, _, body) = raw.response().await;
        assert_eq!((status, text(&body)), (200, "1 GET /one 0"), "{stack:?}");
        let (status, _, body) = raw.response().await;
        assert_eq!((status, text(&body)), (200, "1 GET /two 0"), "{stack:?}");
        assert!(raw.closed().await, "{stack:?}: closed after the answers");
    }
}

/// Reads until the proxy closes the connection; true if it closed without a response or
/// with `408 Request Timeout`.
async fn closed_for_idleness(raw: &mut Raw) -> bool {
    while raw.fill().await > 0 {}
    raw.read.is_empty() || raw.read.starts_with(b"HTTP/1.1 408")
}

#[tokio::test]
async fn a_client_connection_quiet_for_the_idle_timeout_is_closed_and_a_busy_one_is_not() {
    let idle = std::time::Duration::from_secs(2);
    for stack in STACKS {
        let (a, b) = (backend().await, backend().await);
        let forwarder = Forwarder::new().with_client_idle_timeout(Some(idle));
        let (proxy, _) = proxy_with(a.addr, b.addr, stack, forwarder).await;

        // Requests spaced well inside the timeout keep one connection going past it.
        let mut raw = Raw::connect(proxy).await;
        for i in 0..12 {
            raw.send(&format!("GET /a/{i} HTTP/1.1\r\nHost: p\r\n\r\n"))
                .await;
            let (status, _, body) = raw.response().await;
            assert_eq!(
                (status, text(&body)),
                (200, format!("1 GET /{i} 0").as_str())
            );
            tokio::time::sleep(idle / 8).await;
        }
        // Then it goes quiet, and the proxy closes it.
        assert!(closed_for_idleness(&mut raw).await, "{stack:?}");

        // A connection that never completes a request head is closed too.
        let mut raw = Raw::connect(proxy).await;
        raw.send("GET /a/slow HTTP/1.1\r\nHost: p\r\n").await;
        assert!(closed_for_idleness(&mut raw).await, "{stack:?}");

        // And so is one that the full stack took over (an API-like path), quiet after its
        // answer or slow with its next head.
        for next in ["", "GET /x/two HTTP/1.1\r\n"] {
            let mut raw = Raw::connect(proxy).await;
            raw.send("GET /x/one HTTP/1.1\r\nHost: p\r\n\r\n").await;
            assert_eq!(raw.response().await.0, 404);
            raw.send(next).await;
            assert!(closed_for_idleness(&mut raw).await, "{stack:?} {next:?}");
        }
    }
}

#[tokio::test]
async fn a_quiet_websocket_outlives_the_idle_timeout() {
    // Long enough that a busy machine still sends the upgrade request in time.
    let idle = std::time::Duration::from_secs(1);
    for stack in STACKS {
        let (a, b) = (backend().await, backend().await);
        let forwarder = Forwarder::new().with_client_idle_timeout(Some(idle));
        let (proxy, _) = proxy_with(a.addr, b.addr, stack, forwarder).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{proxy}/a/ws"))
            .await
            .expect("upgrade through the proxy");
        tokio::time::sleep(idle * 3).await;
        ws.send(Message::text("still here")).await.expect("send");
        let echo = ws.next().await.expect("open").expect("message");
        assert_eq!(
            echo.into_text().expect("text").as_str(),
            "still here",
            "{stack:?}"
        );
    }
}

/// Every forwarding header a client can send, and a guessed router proof.
const SPOOFED: &str = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
    X-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /evil\r\n\
    Forwarded: for=6.6.6.6;proto=https;host=evil.example\r\nX-Real-IP: 6.6.6.6\r\n\
    X-Spawner-Router-Proof: guess\r\n";

/// The header lines the backend saw for `GET /a/headers` sent with `extra` lines, sorted,
/// without `host` and `content-length`.
async fn headers_seen(proxy: SocketAddr, request: &str) -> Vec<String> {
    let mut raw = Raw::connect(proxy).await;
    raw.send(request).await;
    let (status, _, body) = raw.response().await;
    assert_eq!(status, 200, "{}", text(&body));
    let mut lines: Vec<String> = text(&body)
        .lines()
        .filter(|l| !l.starts_with("host: "))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn an_untrusted_peers_forwarding_headers_are_dropped_and_replaced() {
    let (a, b) = (backend().await, backend().await);
    for stack in STACKS {
        let proxy = proxy(a.addr, b.addr, stack).await;
        // On the relay; and on hyper's path, by the fallback an `Expect` makes.
        for expect in ["", "Expect: 100-continue\r\nContent-Length: 0\r\n"] {
            let seen = headers_seen(
                proxy,
                &format!("GET /a/headers HTTP/1.1\r\nHost: p.test\r\n{SPOOFED}{expect}\r\n"),
            )
            .await;
            let seen: Vec<&str> = seen
                .iter()
                .map(String::as_str)
                .filter(|l| !l.starts_with("expect") && !l.starts_with("content-length"))
                .collect();
            assert_eq!(
                seen,
                [
                    "x-forwarded-for: 127.0.0.1",
                    "x-forwarded-host: p.test",
                    "x-forwarded-prefix: /a",
                    "x-forwarded-proto: http",
                ],
                "{stack:?} {expect:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_trusted_peers_forwarding_headers_are_kept_and_extended() {
    let (a, b) = (backend().await, backend().await);
    for stack in STACKS {
        let shape = Shape {
            trusted: true,
            ..Shape::default()
        };
        let (proxy, _) = proxy_shaped(a.addr, b.addr, stack, Forwarder::new(), shape).await;
        let seen = headers_seen(
            proxy,
            &format!("GET /a/headers HTTP/1.1\r\nHost: p.test\r\n{SPOOFED}\r\n"),
        )
        .await;
        assert_eq!(
            seen,
            [
                "forwarded: for=6.6.6.6;proto=https;host=evil.example",
                "x-forwarded-for: 6.6.6.6, 127.0.0.1",
                "x-forwarded-host: evil.example",
                "x-forwarded-port: 443",
                "x-forwarded-prefix: /a",
                "x-forwarded-proto: https",
                "x-real-ip: 6.6.6.6",
            ],
            "{stack:?}: kept, the peer appended, the guessed proof dropped"
        );
    }
}

#[tokio::test]
async fn the_router_proof_of_the_target_replaces_the_clients() {
    let (a, b) = (backend().await, backend().await);
    for stack in STACKS {
        let shape = Shape {
            router_proof: Some("c0ffee"),
            ..Shape::default()
        };
        let (proxy, _) = proxy_shaped(a.addr, b.addr, stack, Forwarder::new(), shape).await;
        let seen = headers_seen(
            proxy,
            &format!("GET /a/headers HTTP/1.1\r\nHost: p.test\r\n{SPOOFED}\r\n"),
        )
        .await;
        let proofs: Vec<&String> = seen
            .iter()
            .filter(|l| l.starts_with("x-spawner-router-proof"))
            .collect();
        assert_eq!(proofs, ["x-spawner-router-proof: c0ffee"], "{stack:?}");
    }
}

#[tokio::test]
async fn the_response_policy_applies_on_both_paths() {
    let (a, b) = (backend().await, backend().await);
    for stack in STACKS {
        for (policy, swa, csp) in [
            (ResponsePolicy::Pass, true, false),
            (ResponsePolicy::SharedOrigin, false, false),
            (ResponsePolicy::Sandbox, false, true),
        ] {
            let shape = Shape {
                response: Some(policy),
                ..Shape::default()
            };
            let (proxy, _) = proxy_shaped(a.addr, b.addr, stack, Forwarder::new(), shape).await;
            let mut raw = Raw::connect(proxy).await;
            raw.send("GET /a/sw HTTP/1.1\r\nHost: p\r\n\r\n").await;
            let (status, headers, body) = raw.response().await;
            assert_eq!((status, text(&body)), (200, "sw"));
            let has = |line: &str| headers.iter().any(|h| h == line);
            assert_eq!(
                has("service-worker-allowed: /"),
                swa,
                "{stack:?} {policy:?}: {headers:?}"
            );
            assert_eq!(
                has("content-security-policy: sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"),
                csp,
                "{stack:?} {policy:?}: {headers:?}"
            );
        }
    }
}

/// A chunked body whose second chunk size is not hex: the client gets 400 and its connection
/// closed, on the relay, on hyper's path, and on hyper's path after the relay handed the
/// connection over (`Expect`); the backend never reads a whole request.
#[tokio::test]
async fn a_malformed_chunked_body_is_a_400_on_every_path() {
    let (a, b) = (backend().await, backend().await);
    for (stack, expect) in [
        (Stack::Relay, ""),
        (Stack::Full, ""),
        (Stack::Relay, "Expect: 100-continue\r\n"),
    ] {
        let proxy = proxy(a.addr, b.addr, stack).await;
        let mut raw = Raw::connect(proxy).await;
        raw.send(&format!(
            "POST /a/chunky HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n{expect}\r\n"
        ))
        .await;
        if !expect.is_empty() {
            assert_eq!(raw.response().await.0, 100, "{stack:?} {expect:?}");
        }
        raw.send("3\r\nabc\r\nzz\r\nGET /a/smuggled HTTP/1.1\r\nHost: p\r\n\r\n")
            .await;
        let (status, headers, body) = raw.response().await;
        assert_eq!(status, 400, "{stack:?} {expect:?}: {}", text(&body));
        assert!(
            text(&body).contains("chunked"),
            "{stack:?} {expect:?}: {}",
            text(&body)
        );
        assert!(
            headers.contains(&"connection: close".to_string()),
            "{stack:?} {expect:?}: {headers:?}"
        );
        assert!(raw.closed().await, "{stack:?} {expect:?}");
    }
    let whole = a.whole.lock().expect("log").clone();
    assert!(
        whole
            .iter()
            .all(|r| r != "POST /chunky" && r != "GET /smuggled"),
        "{whole:?}"
    );
}

#[tokio::test]
async fn identity_comes_from_the_grant_and_access_secrets_never_reach_the_backend() {
    use spawner_proxy::access::Grant;
    let (a, b) = (backend().await, backend().await);
    let spoofed = "X-Spawner-User: root\r\nx-spawner-user-data: {\"admin\":true}\r\n\
        Cookie: app=1; spawner_access=sac1.x.y; __Host-spawner_access=z\r\n\
        Authorization: Bearer sat1.a.b\r\n";
    for stack in STACKS {
        for grant in [
            None,
            Some(Arc::new(
                Grant::new("alice", 1, Some(serde_json::json!({"name": "Zoë"})), 0).expect("grant"),
            )),
        ] {
            let shape = Shape {
                access: grant.clone(),
                ..Shape::default()
            };
            let (proxy, _) = proxy_shaped(a.addr, b.addr, stack, Forwarder::new(), shape).await;
            for expect in ["", "Expect: 100-continue\r\nContent-Length: 0\r\n"] {
                let seen = headers_seen(
                    proxy,
                    &format!("GET /a/headers HTTP/1.1\r\nHost: p.test\r\n{spoofed}{expect}\r\n"),
                )
                .await;
                let mine: Vec<&String> = seen
                    .iter()
                    .filter(|l| {
                        l.starts_with("x-spawner-user")
                            || l.starts_with("cookie")
                            || l.starts_with("authorization")
                    })
                    .collect();
                let want: Vec<&str> = match grant {
                    None => vec!["cookie: app=1"],
                    Some(_) => vec![
                        "cookie: app=1",
                        "x-spawner-user-data: {\"name\":\"Zo\\u00eb\"}",
                        "x-spawner-user: alice",
                    ],
                };
                assert_eq!(mine, want, "{stack:?} {expect:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_revoked_grant_closes_its_websockets_with_1008() {
    use spawner_proxy::access::Grants;
    let (a, b) = (backend().await, backend().await);
    for stack in STACKS {
        let grants = Grants::default();
        let grant =
            grants.insert(spawner_proxy::access::Grant::new("alice", 1, None, 0).expect("grant"));
        let shape = Shape {
            access: Some(grant),
            ..Shape::default()
        };
        let (proxy, _) = proxy_shaped(a.addr, b.addr, stack, Forwarder::new(), shape).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{proxy}/a/ws"))
            .await
            .expect("connect");
        ws.send(Message::Text("hi".into())).await.expect("send");
        assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
        let revoked_at = std::time::Instant::now();
        assert!(grants.revoke("alice"));
        let close = loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => break frame,
                Ok(Some(Ok(_))) => continue,
                other => panic!("{stack:?}: no close frame: {other:?}"),
            }
        };
        let frame = close.expect("a close frame with a code");
        assert_eq!(u16::from(frame.code), 1008, "{stack:?}");
        assert_eq!(frame.reason.as_str(), "access revoked");
        eprintln!(
            "{stack:?}: closed {:?} after the revocation",
            revoked_at.elapsed()
        );
        // The connection ends: nothing more comes.
        let end = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await;
        assert!(matches!(end, Ok(None | Some(Err(_)))), "{stack:?}: {end:?}");
    }
}
