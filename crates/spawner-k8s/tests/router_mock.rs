//! The router (`spawner proxy --kubernetes`) against the mocked API server: its reflector
//! is fed by the fake's list and watch, and it forwards to a real sidecar
//! (spawner-proxy's) in front of a real application server, on real sockets.

mod support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use spawner_core::State;
use spawner_k8s::router::{self, RouterConfig};
use spawner_k8s::SessionLivedBackendStatus;
use spawner_proxy::sidecar::{self, Sidecar};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::Fake;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The application: `/ws` echoes WebSocket text; anything else describes the request.
async fn start_app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(app))
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

async fn app(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path().ends_with("/ws") {
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
            while let Some(Ok(Message::Text(t))) = ws.next().await {
                let reply = Message::Text(format!("echo: {}", t.as_str()).into());
                if ws.send(reply).await.is_err() {
                    return;
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
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let seen = json!({
        "uri": req.uri().to_string(),
        "host": h("host"),
        "prefix": h("x-forwarded-prefix"),
        "forwarded_for": h("x-forwarded-for"),
    });
    Ok(Response::new(Full::new(Bytes::from(seen.to_string()))))
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, http::HeaderMap, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, host)
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

fn object(name: &str, states: &[State], port: u16, strip: bool) -> Value {
    let mut status = SessionLivedBackendStatus::default();
    for s in states {
        status.enter(*s, 1_700_000_000_000, None, None);
    }
    status.ip = Some("127.0.0.1".into());
    status.port = Some(port);
    json!({
        "apiVersion": "spawner.dev/v1",
        "kind": "SessionLivedBackend",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": {"containers": [{"name": "app", "image": "app:1"}]}, "stripPrefix": strip},
        "status": status,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_ready_backends_through_their_sidecar_and_answers_for_the_others() {
    tokio::time::timeout(Duration::from_secs(60), scenario())
        .await
        .expect("the scenario finishes");
}

async fn scenario() {
    let app_port = start_app().await;
    let sc: Arc<Sidecar> = Sidecar::new(app_port);
    let sc_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sc_port = sc_listener.local_addr().expect("addr").port();
    tokio::spawn(sidecar::serve(
        sc.clone(),
        sc_listener,
        std::future::pending(),
    ));

    let (fake, client) = Fake::start();
    let ready = [State::Submitted, State::Running, State::Ready];
    fake.put(
        "sessionlivedbackends",
        object("ready1", &ready, sc_port, true),
    );
    fake.put(
        "sessionlivedbackends",
        object("keep1", &ready, sc_port, false),
    );
    fake.put(
        "sessionlivedbackends",
        object(
            "starting1",
            &[State::Submitted, State::Running],
            sc_port,
            true,
        ),
    );
    fake.put(
        "sessionlivedbackends",
        object(
            "ended1",
            &[State::Submitted, State::Ready, State::Swept],
            sc_port,
            true,
        ),
    );

    let config = RouterConfig {
        namespace: Some("default".into()),
        domain: Some("apps.test".into()),
    };
    let (router, watch_task) = router::start(client, config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(router::serve(
        router.clone(),
        listener,
        std::future::pending(),
    ));

    // Until the first list is in, the router says so rather than calling anything unknown.
    loop {
        let (code, headers, _) = get(addr, "spawner.test", "/healthz").await;
        if code == StatusCode::OK {
            break;
        }
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The sidecar may still be probing the application.
    while !sc.is_ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Path routing, prefix stripped, X-Forwarded-* set, Host unchanged.
    let (code, _, body) = get(addr, "spawner.test", "/p/ready1/hello?x=1").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let seen: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(seen["uri"], "/hello?x=1");
    assert_eq!(seen["prefix"], "/p/ready1");
    assert_eq!(seen["host"], "spawner.test");
    assert_eq!(
        seen["forwarded_for"], "127.0.0.1, 127.0.0.1",
        "client, then router"
    );

    // strip_prefix: false forwards the path unchanged.
    let (_, _, body) = get(addr, "spawner.test", "/p/keep1/hello").await;
    let seen: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(seen["uri"], "/p/keep1/hello");

    // Host routing.
    let (code, _, body) = get(addr, "ready1.apps.test", "/x").await;
    assert_eq!(code, StatusCode::OK);
    let seen: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (seen["uri"].as_str(), seen["host"].as_str()),
        (Some("/x"), Some("ready1.apps.test"))
    );

    // The other answers of api.md.
    let (code, headers, _) = get(addr, "spawner.test", "/p/ready1?a=1").await;
    assert_eq!(code, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers[header::LOCATION], "/p/ready1/?a=1");
    let (code, _, _) = get(addr, "spawner.test", "/p/nosuchbackend/").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, headers, _) = get(addr, "spawner.test", "/p/starting1/").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let (code, _, _) = get(addr, "spawner.test", "/p/ended1/").await;
    assert_eq!(code, StatusCode::GONE);

    // A WebSocket through router and sidecar: a live connection for the sidecar's monitor.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/p/ready1/ws"))
        .await
        .expect("WebSocket through the router");
    ws.send(Message::Text("hi".into())).await.expect("send");
    let echo = ws.next().await.expect("a message").expect("ok");
    assert_eq!(echo, Message::Text("echo: hi".into()));
    assert_eq!(sc.monitor().live(), 1);
    assert_eq!(router.live_connections(), 1);
    ws.close(None).await.expect("close");
    drop(ws);

    // The watch keeps the table current: once Swept, the backend is gone for browsers.
    fake.update("sessionlivedbackends", "ready1", |o| {
        let mut st: SessionLivedBackendStatus =
            serde_json::from_value(o["status"].take()).expect("status");
        st.enter(State::Swept, 1_700_000_100_000, Some("idle".into()), None);
        o["status"] = serde_json::to_value(st).expect("json");
    });
    loop {
        let (code, _, _) = get(addr, "spawner.test", "/p/ready1/").await;
        if code == StatusCode::GONE {
            break;
        }
        assert_eq!(code, StatusCode::OK, "Ready until the watch says otherwise");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch_task.abort();
}
