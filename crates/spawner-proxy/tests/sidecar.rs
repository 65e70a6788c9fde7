//! The sidecar on real sockets: an application server that starts listening after the
//! sidecar (as in a Pod), plain requests and a real WebSocket client through the sidecar,
//! and the `/_events` stream read as the sweeper reads it.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use spawner_proxy::sidecar::{self, parse_report, Report, Sidecar};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A port nothing listens on yet (bound, read, released).
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

/// The application: `/ws` echoes WebSocket text; anything else answers its own path.
async fn start_app(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the application binds its port");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(app);
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

async fn app(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/ws" {
        let key = req
            .headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .map(|k| derive_accept_key(k.as_bytes()))
            .unwrap_or_default();
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    if ws
                        .send(Message::Text(format!("echo: {}", t.as_str()).into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, key)
            .body(Full::default())
            .expect("response");
        return Ok(resp);
    }
    if req.uri().path() == "/headers" {
        let mut lines: Vec<String> = req
            .headers()
            .iter()
            .filter(|(k, _)| *k != header::HOST && *k != header::CONNECTION)
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        lines.sort();
        return Ok(Response::new(Full::new(Bytes::from(lines.join("\n")))));
    }
    let text = format!("app saw {}", req.uri());
    Ok(Response::new(Full::new(Bytes::from(text))))
}

async fn start_sidecar(app_port: u16) -> (Arc<Sidecar>, SocketAddr) {
    let sc = Sidecar::new(app_port);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(sidecar::serve(sc.clone(), listener, std::future::pending()));
    (sc, addr)
}

/// One HTTP/1.1 request on a fresh connection: status, headers and the whole body.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, http::HeaderMap, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, "backend.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// The `/_events` stream, read event by event.
struct Events {
    body: Incoming,
    buf: String,
}

impl Events {
    async fn open(addr: SocketAddr) -> Events {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::get("/_events")
            .header(header::HOST, "sidecar")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        Events {
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    async fn next(&mut self) -> Report {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .expect("a data line");
                return parse_report(data).expect("a report");
            }
            let frame = self
                .body
                .frame()
                .await
                .expect("the stream stays open")
                .expect("a frame");
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    async fn until(&mut self, want: impl Fn(&Report) -> bool) -> Report {
        loop {
            let r = self.next().await;
            if want(&r) {
                return r;
            }
        }
    }
}

#[tokio::test]
async fn not_ready_until_the_application_listens_then_forwards() {
    let app_port = free_port().await;
    let (_sc, addr) = start_sidecar(app_port).await;

    let (status, headers, _) = get(addr, "/anything").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "1");

    let mut events = Events::open(addr).await;
    let first = events.next().await;
    assert!(
        !first.ready,
        "first event before the app listens: {first:?}"
    );
    assert_eq!((first.live_connections, first.requests), (0, 0));

    start_app(app_port).await;
    let ready = events.until(|r| r.ready).await;
    assert_eq!(ready.requests, 0, "the 503 was not forwarded");

    let (status, _, body) = get(addr, "/some/path?q=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "app saw /some/path?q=1");
    // The request is live until its response is sent, then the count falls back to 0.
    let after = events
        .until(|r| r.requests == 1 && r.live_connections == 0)
        .await;
    assert!(after.ready);
}

#[tokio::test]
async fn a_websocket_is_a_live_connection_until_it_closes() {
    let app_port = free_port().await;
    start_app(app_port).await;
    let (sc, addr) = start_sidecar(app_port).await;
    let mut events = Events::open(addr).await;
    events.until(|r| r.ready).await;

    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("WebSocket through the sidecar");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::Text("hello".into())).await.expect("send");
    let echoed = ws.next().await.expect("a reply").expect("a message");
    assert_eq!(echoed, Message::Text("echo: hello".into()));

    let open = events.until(|r| r.live_connections == 1).await;
    assert_eq!(open.requests, 1);
    assert_eq!(sc.monitor().live(), 1);

    ws.close(None).await.expect("close");
    drop(ws);
    let closed = events.until(|r| r.live_connections == 0).await;
    assert_eq!(closed.requests, 1);
}

#[tokio::test]
async fn own_paths_are_not_activity_and_are_not_forwarded() {
    let app_port = free_port().await;
    start_app(app_port).await;
    let (sc, addr) = start_sidecar(app_port).await;
    let mut events = Events::open(addr).await;
    events.until(|r| r.ready).await;

    let (status, _, body) = get(addr, "/_healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    // Another subscriber: its first event comes at once.
    let mut second = Events::open(addr).await;
    let r = second.next().await;
    assert!(r.ready);
    assert_eq!((r.requests, r.live_connections), (0, 0));
    assert_eq!(sc.monitor().requests(), 0);

    // Only the exact paths are reserved: the application's own `/_events/x` is forwarded.
    let (status, _, body) = get(addr, "/_events/x").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "app saw /_events/x")
    );
    events
        .until(|r| r.requests == 1 && r.live_connections == 0)
        .await;
    assert_eq!(sc.monitor().requests(), 1);
}

#[tokio::test]
async fn events_repeat_at_least_every_second_while_nothing_changes() {
    let app_port = free_port().await;
    start_app(app_port).await;
    let (_sc, addr) = start_sidecar(app_port).await;
    let mut events = Events::open(addr).await;
    let ready = events.until(|r| r.ready).await;
    // Nothing happens: the next events are heartbeats, with a growing idle time.
    let a = events.next().await;
    let b = events.next().await;
    assert_eq!((a.requests, b.requests), (0, 0));
    assert!(a.seconds_since_active >= ready.seconds_since_active);
    assert!(b.seconds_since_active > a.seconds_since_active);
}

/// A POST on a fresh connection, with optional bearer token; status and body.
async fn post(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::post(path).header(header::HOST, "sidecar");
    if let Some(t) = bearer {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn keepalive_and_go_away_are_the_sidecars_own_and_need_the_secret() {
    let app_port = free_port().await;
    start_app(app_port).await;
    let sc = Sidecar::with_token(app_port, Some("s3cret".into()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(sidecar::serve(sc.clone(), listener, std::future::pending()));
    let mut events = Events::open(addr).await;
    events.until(|r| r.ready).await;

    // Keepalive: the secret, a valid body; reported on /_events, not forwarded or counted.
    // Its errors are the API's: JSON with the same codes.
    let ask = r#"{"seconds": 60}"#;
    let code = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body).expect("a JSON error");
        v["error"].as_str().unwrap_or_default().to_string()
    };
    let (status, body) = post(addr, "/_keepalive?token=nope", None, ask).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "unauthorized", "{body}");
    let (status, body) = post(addr, "/_keepalive?token=s3cret", None, r#"{"seconds": 0}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "invalid_field", "{body}");
    assert!(
        body.contains("seconds: must be between 1 and 86400"),
        "{body}"
    );
    let (status, body) = post(addr, "/_keepalive?token=s3cret", None, r#"{"secs": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "invalid_body", "{body}");
    let (status, body) = post(addr, "/_keepalive?token=s3cret", None, ask).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let busy = events.until(|r| r.busy_until.is_some()).await;
    assert_eq!(
        busy.requests, 0,
        "the sidecar's own routes are not forwarded"
    );

    // A client sending data is client activity; its WebSocket gets the close frame 1001 with
    // the reason when the controller's go-away comes with the secret.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("WebSocket through the sidecar");
    ws.send(Message::Text("hi".into())).await.expect("send");
    assert_eq!(
        ws.next().await.expect("echo").expect("ok"),
        Message::Text("echo: hi".into())
    );
    let active = events.until(|r| r.live_connections == 1).await;
    assert!(
        active.seconds_since_client.is_some_and(|s| s < 5.0),
        "{active:?}"
    );
    assert_eq!(
        post(addr, "/_goaway", Some("guess"), "terminate requested")
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = post(addr, "/_goaway", Some("s3cret"), "no such reason").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = post(
        addr,
        "/_goaway?grace=1",
        Some("s3cret"),
        "terminate requested",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""told":true"#), "{body}");
    match ws.next().await {
        Some(Ok(Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1001);
            assert_eq!(f.reason.as_str(), "terminated");
        }
        other => panic!("no close frame: {other:?}"),
    }
    // Going away: no more keepalives.
    assert_eq!(
        post(addr, "/_keepalive?token=s3cret", None, ask).await.0,
        StatusCode::GONE
    );
}

/// The header lines the application saw for `GET /headers` sent to the sidecar with
/// `extra` header lines, as HTTP/1.1 (the relay's path) or HTTP/1.0 (hyper's).
async fn app_saw(sidecar: SocketAddr, version: &str, extra: &str) -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(sidecar).await.expect("connect");
    let request = format!(
        "GET /headers HTTP/{version}\r\nHost: backend.test\r\nConnection: close\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with(&format!("HTTP/{version} 200")), "{head}");
    body.lines().map(str::to_string).collect()
}

const SPOOFED: &str =
    "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Prefix: /p/b1\r\n";

/// Waits until the sidecar forwards to its application.
async fn until_ready(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(addr, "/x").await.0 != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn only_the_proven_router_speaks_through_the_forwarding_headers() {
    let app_port = free_port().await;
    start_app(app_port).await;
    let proof = "5f1d9a0c";
    let sc = Sidecar::with_secrets(
        app_port,
        sidecar::Secrets {
            token: None,
            router_proof: Some(proof.to_string()),
            access: None,
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(sidecar::serve(sc, listener, std::future::pending()));
    until_ready(addr).await;
    let untrusted = [
        "x-forwarded-for: 127.0.0.1",
        "x-forwarded-host: backend.test",
        "x-forwarded-proto: http",
    ];
    for version in ["1.1", "1.0"] {
        // No proof, a wrong one, a right one twice: anyone's word, dropped.
        for given in [
            String::new(),
            "X-Spawner-Router-Proof: 5f1d9a0d\r\n".to_string(),
            "X-Spawner-Router-Proof: 5f1d9a0\r\n".to_string(),
            format!("X-Spawner-Router-Proof: {proof}\r\nX-Spawner-Router-Proof: {proof}\r\n"),
        ] {
            let seen = app_saw(addr, version, &format!("{SPOOFED}{given}")).await;
            assert_eq!(seen, untrusted, "HTTP/{version} {given:?}");
        }
        // The router's proof: its headers are kept, its address appended, and the proof
        // itself goes no further.
        let given = format!("X-Spawner-Router-Proof: {proof}\r\n");
        let seen = app_saw(addr, version, &format!("{SPOOFED}{given}")).await;
        assert_eq!(
            seen,
            [
                "x-forwarded-for: 6.6.6.6, 127.0.0.1",
                "x-forwarded-host: backend.test",
                "x-forwarded-prefix: /p/b1",
                "x-forwarded-proto: https",
            ],
            "HTTP/{version}"
        );
    }
}

#[tokio::test]
async fn a_sidecar_without_a_proof_trusts_no_one() {
    let app_port = free_port().await;
    start_app(app_port).await;
    let (_sc, addr) = start_sidecar(app_port).await;
    until_ready(addr).await;
    for version in ["1.1", "1.0"] {
        let seen = app_saw(
            addr,
            version,
            &format!("{SPOOFED}X-Spawner-Router-Proof: anything\r\n"),
        )
        .await;
        assert_eq!(
            seen,
            [
                "x-forwarded-for: 127.0.0.1",
                "x-forwarded-host: backend.test",
                "x-forwarded-proto: http",
            ],
            "HTTP/{version}"
        );
    }
}
