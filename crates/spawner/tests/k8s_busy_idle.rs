//! Busy, idle traffic, going away and the expiring warning on Kubernetes, end to end on a
//! real API server (see tests/k8s/mod.rs): `spawner api`, the controller and the sweeper as
//! processes with their own service accounts' tokens, the sidecar and the application as
//! local processes, a WebSocket client on the sidecar, the status stream read as SSE.

mod k8s;
mod status_stream;

use futures_util::{SinkExt, StreamExt};
use k8s::TestNs;
use serde_json::{json, Value};
use spawner_core::time::now_millis;
use spawner_core::State;
use status_stream::{expiring_events, ms};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Spawns the example application through the API with `extra` spec fields, plays the
/// kubelet for its Pod, and waits for Ready. Returns the id and the sidecar's address.
async fn ready_backend(ns: &TestNs, api: &k8s::ApiProc, extra: Value) -> (String, String) {
    let mut body =
        json!({"executable": {"image": "spawner:test", "command": ["spawner", "example-app"]}});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (code, spawned) = api.post("/v1/backends", body).await;
    assert_eq!(code, 201, "{spawned}");
    let id = spawned["id"].as_str().expect("id").to_string();
    let ip = ns.run_pod(&id).await;
    ns.wait_state(&id, State::Ready).await;
    (id, format!("{ip}:{}", ns.sidecar_port))
}

/// A WebSocket to the example application through its sidecar, past its greeting.
async fn ws_connect(sidecar: &str) -> Ws {
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{sidecar}/ws"))
        .await
        .expect("WebSocket through the sidecar");
    assert_eq!(resp.status(), 101);
    match tokio::time::timeout(k8s::PATIENCE, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => assert!(t.starts_with("count "), "{t}"),
        other => panic!("no greeting: {other:?}"),
    }
    ws
}

/// Reads the WebSocket until its close frame; returns it and the text messages before it.
async fn until_close(ws: &mut Ws) -> (CloseCode, String, Vec<String>) {
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout(k8s::PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => texts.push(t.to_string()),
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return (f.code, f.reason.to_string(), texts);
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no close frame (after {texts:?}): {other:?}"),
        }
    }
}

/// The last event of the backend's record once it has ended.
async fn ended(ns: &TestNs, api: &k8s::ApiProc, id: &str, state: State) -> Value {
    ns.wait_state(id, state).await;
    let rec = api.get_json(&format!("/v1/backends/{id}")).await;
    rec["events"]
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .expect("events")
}

/// POSTs `body` to `url` without a token; the status and the JSON answer.
async fn post_plain(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// Waits until the record of `id` satisfies `ok`, and returns it.
async fn wait_record(api: &k8s::ApiProc, id: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + k8s::PATIENCE;
    loop {
        let rec = api.get_json(&format!("/v1/backends/{id}")).await;
        if ok(&rec) {
            return rec;
        }
        assert!(Instant::now() < deadline, "the record never matched: {rec}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_backend_without_connections_outlives_its_grace_until_busy_until() {
    let ns = TestNs::new("busy").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let sweeper = ns.sweeper();
    let api = ns.api("t0ken");
    let (id, sidecar) = ready_backend(&ns, &api, json!({"grace_period_seconds": 1})).await;

    // The application's own URL: its sidecar's, with its secret.
    let pod = ns.pod(&id).await;
    let url = k8s::container_env(&pod, "app")
        .into_iter()
        .find(|(k, _)| k == "SPAWNER_KEEPALIVE_URL")
        .map(|(_, v)| v)
        .expect("SPAWNER_KEEPALIVE_URL in the application's environment");
    let (host_port, token) = url
        .strip_prefix("http://")
        .and_then(|u| u.split_once("/_keepalive?token="))
        .expect("http://127.0.0.1:PORT/_keepalive?token=SECRET");
    assert_eq!(host_port, format!("127.0.0.1:{}", ns.sidecar_port));
    assert!(token.len() >= 26, "{token}");
    let own = format!("http://{sidecar}/_keepalive?token={token}");

    // Bad input is refused and changes nothing.
    let wrong = format!("http://{sidecar}/_keepalive?token=nope");
    assert_eq!(post_plain(&wrong, json!({"seconds": 5})).await.0, 401);
    let (code, body) = post_plain(&own, json!({"seconds": 0})).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("seconds"),
        "{body}"
    );
    let api_route = format!("{}/v1/backends/{id}/keepalive", api.url);
    assert_eq!(post_plain(&api_route, json!({"seconds": 5})).await.0, 401);
    let (code, body) = api
        .post(
            &format!("/v1/backends/{id}/keepalive"),
            json!({"seconds": 86_401}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    let rec = api.get_json(&format!("/v1/backends/{id}")).await;
    assert!(rec.get("busy_until").is_none_or(Value::is_null), "{rec}");

    // The application keeps itself busy through its sidecar; the sweeper records it.
    let (code, body) = post_plain(&own, json!({"seconds": 3})).await;
    assert_eq!(code, 200, "{body}");
    let from_app = ms(&body["busy_until"]);
    let rec = wait_record(&api, &id, |r| !r["busy_until"].is_null()).await;
    assert_eq!(ms(&rec["busy_until"]), from_app, "{rec}");
    assert_eq!(
        rec["state"], "Ready",
        "its grace period of 1 s is long over: {rec}"
    );

    // Then through the API, with the control token: replaces the time.
    let (code, body) = api
        .post(
            &format!("/v1/backends/{id}/keepalive"),
            json!({"seconds": 4}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    let until = ms(&body["busy_until"]);
    // The backend's own secret works on the API's route too.
    let (code, body) =
        post_plain(&format!("{api_route}?token={token}"), json!({"seconds": 4})).await;
    assert_eq!(code, 200, "{body}");
    let until = until.max(ms(&body["busy_until"]));

    // Swept once busy_until has passed, not before; with no connection ever opened.
    let end = ended(&ns, &api, &id, State::Swept).await;
    assert_eq!(end["reason"], "idle", "{end}");
    assert!(
        ms(&end["time"]) >= until,
        "swept at {end}, busy until {until}"
    );

    // Stopped: the keepalive is refused.
    let (code, body) = api
        .post(
            &format!("/v1/backends/{id}/keepalive"),
            json!({"seconds": 4}),
        )
        .await;
    assert_eq!(code, 410, "{body}");
    k8s::assert_no_forbidden(&[&controller, &sweeper, &api.proc]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_open_but_silent_is_swept_after_the_idle_timeout() {
    let ns = TestNs::new("idle").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let sweeper = ns.sweeper();
    let api = ns.api("t0ken");
    let (id, sidecar) = ready_backend(
        &ns,
        &api,
        json!({"grace_period_seconds": 300, "idle_timeout_seconds": 3, "lifetime_warning_seconds": 2}),
    )
    .await;
    let rec = api.get_json(&format!("/v1/backends/{id}")).await;
    assert_eq!(rec["spec"]["idle_timeout_seconds"], 3, "{rec}");
    assert_eq!(rec["spec"]["lifetime_warning_seconds"], 2, "{rec}");
    let announcements = tokio::spawn(expiring_events(api.url.clone(), id.clone(), k8s::PATIENCE));
    let mut ws = ws_connect(&sidecar).await;

    // Data frames are activity: 5 s of a message every 500 ms outlive the 3 s timeout.
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ws.send(Message::Text(format!("m{i}").into()))
            .await
            .expect("send");
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
    let rec = api.get_json(&format!("/v1/backends/{id}")).await;
    assert_eq!(rec["state"], "Ready", "{rec}");

    // Then only pings, the first 300 ms after the last data frame: not client activity, so
    // it is swept with the WebSocket open. The record's `last_client_activity` is the
    // sweeper's clock less the age the sidecar reported (nodes' clocks may differ), so it
    // is that poll's round trip late at most: well under the 300 ms a ping would move it.
    let pinging = async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if ws.send(Message::Ping(b"p".to_vec().into())).await.is_err() {
                break;
            }
            let rec = api.get_json(&format!("/v1/backends/{id}")).await;
            if rec["state"] != "Ready" {
                break;
            }
            assert_eq!(rec["live_connections"], 1, "{rec}");
            if let Some(t) = rec.get("last_client_activity").filter(|t| !t.is_null()) {
                assert!(
                    ms(t) <= last_data + 200,
                    "a ping counted as activity: {rec} vs {last_data}"
                );
            }
        }
    };
    tokio::time::timeout(k8s::PATIENCE, pinging)
        .await
        .expect("stopped");
    let (code, reason, _) = until_close(&mut ws).await;
    assert_eq!(code, CloseCode::Away);
    assert_eq!(reason, "idle timeout");
    let end = ended(&ns, &api, &id, State::Swept).await;
    assert_eq!(end["reason"], "idle timeout", "{end}");
    let swept_at = ms(&end["time"]);
    assert!(swept_at >= last_data + 3_000 - 200, "{end} vs {last_data}");

    // The warning came before the stop, for the time it fell due.
    let seen = announcements.await.expect("stream task");
    let (arrived, last) = seen.last().expect("an expiring announcement");
    assert_eq!(last["event"], "expiring");
    assert_eq!(last["reason"], "idle timeout");
    assert!(
        *arrived <= swept_at + 50,
        "announced after the stop: {seen:?}"
    );
    let at = ms(&last["at"]);
    assert!((at - swept_at).abs() < 2_000, "due {at}, swept {swept_at}");
    k8s::assert_no_forbidden(&[&controller, &sweeper, &api.proc]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_close_1001_with_the_reason_before_the_app_gets_sigterm() {
    let ns = TestNs::new("away").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let sweeper = ns.sweeper();
    let api = ns.api("t0ken");

    // Terminate: two clients, each gets the close before the app's `sigterm` (the example
    // app tells its sockets when it gets SIGTERM, which the stand-in kubelet sends once the
    // Pod is deleted; the sidecar drops what the app sends after the close, so a signal
    // first would show as `sigterm` before the close frame).
    let (id, sidecar) = ready_backend(&ns, &api, json!({"grace_period_seconds": 300})).await;
    let mut a = ws_connect(&sidecar).await;
    let mut b = ws_connect(&sidecar).await;
    let (code, _) = api
        .post(&format!("/v1/backends/{id}/terminate"), json!({}))
        .await;
    assert_eq!(code, 202);
    for ws in [&mut a, &mut b] {
        let (code, reason, texts) = until_close(ws).await;
        assert_eq!(code, CloseCode::Away);
        assert_eq!(reason, "terminated");
        assert!(!texts.iter().any(|t| t == "sigterm"), "{texts:?}");
    }
    ns.wait_state(&id, State::Terminated).await;
    controller.wait_for_log("sidecar told its clients");

    // The sidecar's go-away is its own: clients cannot trigger it without the secret.
    let (id2, sidecar2) = ready_backend(&ns, &api, json!({"grace_period_seconds": 300})).await;
    let r = reqwest::Client::new()
        .post(format!("http://{sidecar2}/_goaway"))
        .bearer_auth("guess")
        .body("terminate requested")
        .send()
        .await
        .expect("POST /_goaway");
    assert_eq!(r.status().as_u16(), 401);

    // The lifetime limit: announced `lifetime_warning_seconds` ahead, then the close.
    let (code, _) = api
        .post(&format!("/v1/backends/{id2}/terminate"), json!({}))
        .await;
    assert_eq!(code, 202);
    let (id3, sidecar3) = ready_backend(
        &ns,
        &api,
        json!({"lifetime_limit_seconds": 8, "lifetime_warning_seconds": 3}),
    )
    .await;
    let announcements = tokio::spawn(expiring_events(api.url.clone(), id3.clone(), k8s::PATIENCE));
    let mut ws = ws_connect(&sidecar3).await;
    let (code, reason, texts) = until_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Away, "lifetime limit"));
    assert!(!texts.iter().any(|t| t == "sigterm"), "{texts:?}");
    let record = api.get_json(&format!("/v1/backends/{id3}")).await;
    let end = ended(&ns, &api, &id3, State::Terminated).await;
    assert_eq!(end["reason"], "lifetime limit", "{end}");
    let seen = announcements.await.expect("stream task");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (arrived, e) = &seen[0];
    assert_eq!(e["reason"], "lifetime limit");
    let at = ms(&e["at"]);
    assert_eq!(at, ms(&record["created_at"]) + 8_000);
    assert!(
        *arrived >= at - 3_000 - 50 && *arrived < at,
        "arrived {arrived}, due {at}"
    );
    k8s::assert_no_forbidden(&[&controller, &sweeper, &api.proc]);
}
