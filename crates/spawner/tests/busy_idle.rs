//! Busy, idle traffic, going away and the expiring warning, end to end on a real
//! `spawner serve`: real processes, a real WebSocket client through the proxy, the status
//! stream read as Server-Sent Events.

mod common;
mod status_stream;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use spawner_core::time::now_millis;
use spawner_core::State;
use status_stream::{expiring_events, ms};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "keepalive-test-token-0123";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(server: &TestServer, id: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}/p/{id}/ws", server.port);
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket through the proxy");
    assert_eq!(resp.status(), 101);
    match tokio::time::timeout(PATIENCE, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => assert!(t.starts_with("count "), "{t}"),
        other => panic!("no greeting: {other:?}"),
    }
    ws
}

/// Reads the WebSocket until its close frame; returns it and the text messages before it.
async fn until_close(ws: &mut Ws) -> (CloseCode, String, Vec<String>) {
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => texts.push(t.to_string()),
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return (f.code, f.reason.to_string(), texts);
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no close frame (after {texts:?}): {other:?}"),
        }
    }
}

/// The backend's keepalive URL, from its environment (the example app shows it redacted).
fn keepalive_url(id: &str) -> String {
    backend_environ(id)
        .remove("SPAWNER_KEEPALIVE_URL")
        .expect("SPAWNER_KEEPALIVE_URL")
}

#[tokio::test]
async fn a_busy_backend_without_connections_outlives_its_grace_until_busy_until() {
    // With a control token: the backend's own URL needs none.
    let server = TestServer::start_with(&[], Some(TOKEN));
    let client = server.client();
    let id = ready_example(&client, 1).await;
    let url = keepalive_url(&id);
    assert!(url.starts_with(&format!(
        "{}/v1/backends/{id}/keepalive?token=",
        server.url()
    )));
    let http = server.http();

    // Refusals change nothing: a wrong token, no token, bad seconds.
    let wrong = url
        .rsplit_once('=')
        .map(|(a, _)| format!("{a}=wrong"))
        .unwrap();
    for (target, body, status, needle) in [
        (wrong.as_str(), json!({"seconds": 5}), 401, "keepalive"),
        (
            &*format!("{}/v1/backends/{id}/keepalive", server.url()),
            json!({"seconds": 5}),
            401,
            "token",
        ),
        (url.as_str(), json!({"seconds": 0}), 400, "seconds"),
        (url.as_str(), json!({"seconds": 86401}), 400, "seconds"),
        (url.as_str(), json!({"secs": 5}), 400, "secs"),
    ] {
        let resp = http.post(target).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), status, "{target} {body}");
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["message"].as_str().unwrap_or_default().contains(needle),
            "{err}"
        );
    }
    assert!(client.get(&id).await.unwrap().busy_until.is_none());

    // The backend's own URL: busy for 4 s, connections or not.
    let asked = now_millis();
    let resp = http
        .post(&url)
        .json(&json!({"seconds": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let busy_until = ms(&answer["busy_until"]);
    assert!(busy_until >= asked + 4_000 && busy_until <= now_millis() + 4_000);
    assert_eq!(client.get(&id).await.unwrap().busy_until, Some(busy_until));

    // Two grace periods without a connection: still Ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(client.status(&id).await.unwrap().state, State::Ready);

    // Swept once busy_until has passed.
    let swept = wait_state(&client, &id, State::Swept).await;
    assert!(
        swept.time >= busy_until,
        "swept at {} before {busy_until}",
        swept.time
    );
    assert_eq!(swept.reason.as_deref(), Some("idle"));
    wait_gone(&id).await;

    // An ended backend cannot be kept alive.
    let resp = http
        .post(&url)
        .json(&json!({"seconds": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 410);
}

#[tokio::test]
async fn the_control_route_keeps_alive_but_the_lifetime_limit_wins() {
    let server = TestServer::start_with(&[], Some(TOKEN));
    let client = server.client();
    let mut spec = example_app();
    spec.grace_period_seconds = 1;
    spec.lifetime_limit_seconds = Some(3);
    let (resp, _) = client.spawn(&spec).await.unwrap();
    wait_state(&client, &resp.id, State::Ready).await;
    let keep = server
        .http()
        .post(format!(
            "{}/v1/backends/{}/keepalive",
            server.url(),
            resp.id
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"seconds": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(keep.status(), 200);
    let last = wait_for(&client, &resp.id, |e| e.state.is_terminal()).await;
    let last = last.last().unwrap();
    assert_eq!(last.state, State::Terminated);
    assert_eq!(last.reason.as_deref(), Some("lifetime limit"));
    let record = client.get(&resp.id).await.unwrap();
    assert!(last.time >= record.created_at + 3_000);
    assert!(last.time < record.created_at + 600_000);
}

#[tokio::test]
async fn a_websocket_open_but_silent_is_swept_after_the_idle_timeout() {
    let server = TestServer::start();
    let client = server.client();
    let mut spec = example_app();
    // The grace period alone would keep it for as long as the WebSocket stays open.
    spec.grace_period_seconds = 300;
    spec.idle_timeout_seconds = Some(3);
    spec.lifetime_warning_seconds = 2;
    let (resp, _) = client.spawn(&spec).await.unwrap();
    let id = resp.id;
    wait_state(&client, &id, State::Ready).await;
    let announcements = tokio::spawn(expiring_events(server.url(), id.clone(), PATIENCE));
    let mut ws = ws_connect(&server, &id).await;

    // Data frames are activity: 5 s of a message every 500 ms outlive the 3 s timeout.
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ws.send(Message::Text(format!("m{i}").into()))
            .await
            .unwrap();
    }
    // The proxy stamps a frame's activity when it reads it, after `send` returns here: only once
    // the app's echo of the last frame is back is that stamp surely in the past.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "echo: m9" => break,
            Ok(Some(Ok(_))) => {}
            other => panic!("no echo of the last message: {other:?}"),
        }
    }
    let last_data = now_millis();
    assert_eq!(client.status(&id).await.unwrap().state, State::Ready);

    // Then only pings (as a browser answers a server's pings with pongs): not activity.
    let pinging = async {
        loop {
            if ws.send(Message::Ping(b"p".to_vec().into())).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let record = client.get(&id).await.unwrap();
            if record.state != State::Ready {
                break;
            }
            let seen = record.last_client_activity.expect("last_client_activity");
            assert!(
                seen <= last_data,
                "a ping counted as activity: {seen} > {last_data}"
            );
            assert_eq!(record.live_connections, 1);
        }
    };
    tokio::time::timeout(PATIENCE, pinging)
        .await
        .expect("stopped");
    let (code, reason, _) = until_close(&mut ws).await;
    assert_eq!(code, CloseCode::Away);
    assert_eq!(reason, "idle timeout");
    let events = wait_for(&client, &id, |e| e.state.is_terminal()).await;
    let end = events.last().unwrap();
    assert_eq!(end.state, State::Swept);
    assert_eq!(end.reason.as_deref(), Some("idle timeout"));
    assert!(
        end.time >= last_data + 3_000 - 200,
        "{} vs {last_data}",
        end.time
    );

    // The warning came once the timeout was 2 s away, for the time it then fell due.
    let seen = announcements.await.unwrap();
    let (arrived, last) = seen.last().expect("an expiring announcement");
    assert_eq!(last["event"], "expiring");
    assert_eq!(last["reason"], "idle timeout");
    let at = ms(&last["at"]);
    assert!(
        *arrived >= at - 2_000 - 50,
        "announced {} ms early",
        at - 2_000 - arrived
    );
    assert!(*arrived <= end.time, "announced after the stop");
    assert!(
        (at - end.time).abs() < 1_500,
        "due {at}, swept {}",
        end.time
    );
    wait_gone(&id).await;
}

#[tokio::test]
async fn clients_get_close_1001_with_the_reason_before_the_backend_gets_sigterm() {
    let server = TestServer::start();
    let client = server.client();

    // Terminate: two browser-style clients, each gets the close before the app's `sigterm`
    // (the app tells its sockets when it gets SIGTERM; the proxy drops what the backend sends
    // after the close, so a signal first would show as `sigterm` before the close frame).
    let id = ready_example(&client, 300).await;
    let mut a = ws_connect(&server, &id).await;
    let mut b = ws_connect(&server, &id).await;
    client.terminate(&id, false).await.unwrap();
    for ws in [&mut a, &mut b] {
        let (code, reason, texts) = until_close(ws).await;
        assert_eq!(code, CloseCode::Away);
        assert_eq!(reason, "terminated");
        assert!(!texts.iter().any(|t| t == "sigterm"), "{texts:?}");
    }
    let end = wait_state(&client, &id, State::Terminated).await;
    assert_eq!(end.exit_code, Some(0), "the app shut down on SIGTERM");
    let mut logs = client.logs(&id, false).await.unwrap();
    let mut text = Vec::new();
    while let Some(chunk) = logs.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    assert!(
        String::from_utf8_lossy(&text).contains("SIGTERM"),
        "it was signalled"
    );

    // The lifetime limit: announced `lifetime_warning_seconds` ahead, then the close.
    let mut spec = example_app();
    spec.lifetime_limit_seconds = Some(3);
    spec.lifetime_warning_seconds = 2;
    let (resp, _) = client.spawn(&spec).await.unwrap();
    let announcements = tokio::spawn(expiring_events(server.url(), resp.id.clone(), PATIENCE));
    wait_state(&client, &resp.id, State::Ready).await;
    let mut ws = ws_connect(&server, &resp.id).await;
    let (code, reason, texts) = until_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Away, "lifetime limit"));
    assert!(!texts.iter().any(|t| t == "sigterm"), "{texts:?}");
    let record = client.get(&resp.id).await.unwrap();
    let seen = announcements.await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (arrived, e) = &seen[0];
    assert_eq!(e["reason"], "lifetime limit");
    let at = ms(&e["at"]);
    assert_eq!(at, record.created_at + 3_000);
    assert!(
        *arrived >= at - 2_000 - 50 && *arrived < at,
        "arrived {arrived}, due {at}"
    );
    wait_gone(&resp.id).await;
}

#[tokio::test]
async fn busy_until_and_the_keepalive_url_survive_a_restart() {
    let mut server = TestServer::start();
    let client = server.client();
    let id = ready_example(&client, 1).await;
    let url = keepalive_url(&id);
    let resp = server
        .http()
        .post(&url)
        .json(&json!({"seconds": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let busy_until = client
        .get(&id)
        .await
        .unwrap()
        .busy_until
        .expect("busy_until");

    // A crash and a restart: the adopted backend is still busy, and its own URL still works.
    server.kill9();
    server.launch();
    let client = server.client();
    assert_eq!(client.get(&id).await.unwrap().busy_until, Some(busy_until));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(client.status(&id).await.unwrap().state, State::Ready);
    let resp = server
        .http()
        .post(&url)
        .json(&json!({"seconds": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the backend's token is known after the restart"
    );
    let swept = wait_state(&client, &id, State::Swept).await;
    assert!(
        swept.time < busy_until,
        "a later keepalive replaces the time, also by a sooner one"
    );
    wait_gone(&id).await;
}

/// A backend that dies at once on SIGTERM, with a request that takes 1.5 s to answer.
const SLOW_PY: &str = r#"
import http.server, os, signal, time
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(1.5)
        body = b"answered"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

#[tokio::test]
async fn requests_in_flight_are_answered_before_the_backend_is_signalled() {
    assert!(
        std::process::Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test's backend needs python3 on PATH"
    );
    let server = TestServer::start();
    let client = server.client();
    let mut spec = spawner_core::BackendSpec::from_command(vec![
        "python3".into(),
        "-c".into(),
        SLOW_PY.into(),
    ]);
    spec.grace_period_seconds = 300;
    let (resp, _) = client.spawn(&spec).await.unwrap();
    let id = resp.id;
    wait_state(&client, &id, State::Ready).await;
    let slow = tokio::spawn({
        let url = format!("{}/p/{id}/slow", server.url());
        async move {
            let resp = reqwest::get(url).await.expect("an answer");
            (resp.status(), resp.text().await.expect("body"))
        }
    });
    // The request is in flight when the stop is asked for (the stop grace is 2 s here).
    let deadline = std::time::Instant::now() + PATIENCE;
    while client.get(&id).await.unwrap().live_connections == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.terminate(&id, false).await.unwrap();
    let (status, body) = slow.await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "answered"));
    let end = wait_state(&client, &id, State::Terminated).await;
    assert_eq!(end.exit_code, Some(0), "then SIGTERM ended it");
    wait_gone(&id).await;
}
