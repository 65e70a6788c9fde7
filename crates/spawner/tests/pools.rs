//! Warm pools through a real `spawner serve`: refill to `min_ready`, claims answered Ready,
//! concurrent claims of one key, the claim hook, resize, drain, and a restart with a pool.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use spawner_core::State;
use std::time::{Duration, Instant};

async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("{}{path}", server.url());
    let http = server.api();
    let req = match method {
        "POST" => http.post(url),
        "PUT" => http.put(url),
        "DELETE" => http.delete(url),
        _ => http.get(url),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The example app as a pool's template.
fn template() -> Value {
    json!({"executable": {"command": [SPAWNER, "example-app"]}})
}

async fn create_pool(server: &TestServer, name: &str, template: Value, min_ready: u32, max: u32) {
    let (status, body) = call(
        server,
        "POST",
        "/v1/pools",
        Some(json!({"name": name, "template": template, "min_ready": min_ready, "max": max})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], name);
}

/// Waits (bounded) until the pool's counts satisfy `done`; returns its status.
async fn wait_pool(server: &TestServer, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = call(server, "GET", &format!("/v1/pools/{name}"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "pool {name} never got there: {body}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn claim(server: &TestServer, body: Value) -> (StatusCode, Value) {
    call(server, "POST", "/v1/backends", Some(body)).await
}

/// The ids of the pool's live backends, claimed or not.
async fn pool_backends(server: &TestServer) -> Vec<String> {
    let (_, list) = call(server, "GET", "/v1/backends", None).await;
    let mut ids: Vec<String> = list["backends"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|b| {
            !b["state"]
                .as_str()
                .is_some_and(|s| s.parse::<State>().is_ok_and(|s| s.is_terminal()))
        })
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_pool_refills_to_min_ready_and_a_claim_answers_ready_while_a_replacement_starts() {
    let server = TestServer::start();
    create_pool(&server, "web", template(), 2, 5).await;
    wait_pool(&server, "web", |p| p["ready"] == 2 && p["starting"] == 0).await;

    let (status, resp) = claim(
        &server,
        json!({"pool": "web", "key": "user-1", "labels": {"owner": "u1"}, "grace_period_seconds": 60}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{resp}");
    assert_eq!(resp["state"], "Ready");
    assert_eq!(resp["key"], "user-1");
    let id = resp["id"].as_str().expect("id").to_string();

    // Routing needed nothing at claim time: the proxy answers at once.
    let page = server
        .http()
        .get(format!("{}/p/{id}/", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let (_, record) = call(&server, "GET", &format!("/v1/backends/{id}"), None).await;
    assert_eq!(record["key"], "user-1");
    assert_eq!(record["spec"]["labels"]["owner"], "u1");
    assert_eq!(record["spec"]["grace_period_seconds"], 60);
    let (_, by_key) = call(&server, "GET", "/v1/backends?key=user-1", None).await;
    assert_eq!(by_key["backends"].as_array().map(Vec::len), Some(1));

    // A replacement restores min_ready.
    let status = wait_pool(&server, "web", |p| p["ready"] == 2 && p["claimed"] == 1).await;
    assert_eq!(status["claims"], 1);
    assert_eq!(status["cold_claims"], 0);
    let (_, pools) = call(&server, "GET", "/v1/pools", None).await;
    assert_eq!(pools["pools"][0]["name"], "web");

    let metrics = server.text("/metrics").await;
    assert!(
        metrics.contains("spawner_pool_claims_total{pool=\"web\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("spawner_pool_ready{pool=\"web\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_pooled_backend_is_not_swept_before_its_claim_and_its_grace_counts_from_the_claim() {
    let server = TestServer::start();
    let mut t = template();
    t["grace_period_seconds"] = json!(1);
    create_pool(&server, "short", t, 1, 2).await;
    let status = wait_pool(&server, "short", |p| p["ready"] == 1).await;
    assert_eq!(status["template"]["grace_period_seconds"], 1);
    let before = pool_backends(&server).await;
    // Three grace periods unclaimed and untouched: still there, still Ready.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pool_backends(&server).await, before);
    wait_pool(&server, "short", |p| p["ready"] == 1).await;

    let (status, resp) = claim(&server, json!({"pool": "short"})).await;
    assert_eq!(status, StatusCode::CREATED, "{resp}");
    let id = resp["id"].as_str().unwrap().to_string();
    assert_eq!(&before[0], &id);
    // Idle for its grace from the claim: swept.
    wait_state(&server.client(), &id, State::Swept).await;
}

#[tokio::test]
async fn concurrent_claims_of_one_key_give_one_backend() {
    let server = TestServer::start();
    create_pool(&server, "nb", template(), 3, 10).await;
    wait_pool(&server, "nb", |p| p["ready"] == 3).await;
    let claims = (0..20).map(|_| {
        let url = format!("{}/v1/backends", server.url());
        let http = server.api();
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .json(&json!({"pool": "nb", "key": "doc-7"}))
                .send()
                .await
                .expect("claim");
            (resp.status(), resp.json::<Value>().await.expect("json"))
        })
    });
    let results: Vec<(StatusCode, Value)> = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    assert_eq!(
        results
            .iter()
            .filter(|(s, _)| *s == StatusCode::CREATED)
            .count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|(s, _)| *s == StatusCode::OK || *s == StatusCode::CREATED));
    let id = &results[0].1["id"];
    assert!(results
        .iter()
        .all(|(_, r)| &r["id"] == id && r["key"] == "doc-7"));
    let (_, by_key) = call(&server, "GET", "/v1/backends?key=doc-7", None).await;
    assert_eq!(by_key["backends"].as_array().map(Vec::len), Some(1));
    let status = wait_pool(&server, "nb", |p| p["ready"] == 3).await;
    assert_eq!(status["claimed"], 1);
    // A plain spawn with the key gets the claimed backend too.
    let mut spec = example_app();
    spec.key = Some("doc-7".into());
    let (again, created) = server.client().spawn(&spec).await.unwrap();
    assert!(!created);
    assert_eq!(json!(again.id), *id);
}

#[tokio::test]
async fn the_claim_hook_hears_the_key_and_labels_and_a_refusing_backend_is_replaced() {
    let server = TestServer::start();
    let mut t = template();
    t["claim_path"] = json!("/claim");
    create_pool(&server, "hooked", t, 1, 3).await;
    wait_pool(&server, "hooked", |p| p["ready"] == 1).await;
    let (status, resp) = claim(
        &server,
        json!({"pool": "hooked", "key": "k1", "labels": {"team": "a"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{resp}");
    let id = resp["id"].as_str().unwrap();
    let heard: Value = server
        .http()
        .get(format!("{}/p/{id}/claim", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(heard, json!({"key": "k1", "labels": {"team": "a"}}));

    // A backend that refuses its claim (404 here) is stopped, never handed out, and its key
    // stays free.
    let mut t = template();
    t["claim_path"] = json!("/no-such-hook");
    create_pool(&server, "refusing", t, 1, 1).await;
    let ready = wait_pool(&server, "refusing", |p| p["ready"] == 1).await;
    assert_eq!(ready["claimed"], 0);
    let first = pool_backends(&server).await;
    let (status, resp) = claim(
        &server,
        json!({"pool": "refusing", "key": "k2", "if_none_ready": "wait", "wait_seconds": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{resp}");
    assert_eq!(resp["error"], "pool_exhausted");
    let refused: Vec<&String> = first.iter().filter(|id| !id.is_empty()).collect();
    let client = server.client();
    let mut ended = 0;
    for id in refused {
        let rec = client.get(id).await.unwrap();
        if rec.state == State::Terminated || rec.state == State::Terminating {
            ended += 1;
            assert_eq!(rec.key, None);
            assert!(
                rec.events.iter().any(|e| e
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("claim refused"))),
                "{:?}",
                rec.events
            );
        }
    }
    assert!(ended >= 1, "no refused backend was stopped");
    let (_, by_key) = call(&server, "GET", "/v1/backends?key=k2", None).await;
    assert_eq!(by_key["backends"].as_array().map(Vec::len), Some(0));
    let metrics = server.text("/metrics").await;
    let refusals: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spawner_pool_claims_refused_total{pool=\"refusing\"} "))
        .and_then(|n| n.parse().ok())
        .expect("the refusals series");
    assert!(refusals >= 1, "{metrics}");
}

/// A backend that takes no claim: its hook answers 501 with a reason, as a server without
/// the route might.
const NO_CLAIMS: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = b"claims are not supported here"
        self.send_response(501)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A hook that refuses every claim: each refused member ends with the refusal as its reason,
/// the pool holds its starts back as after failures (it does not cycle backends), and the
/// claim's error says the hook refused, quoting its last answer.
#[tokio::test]
async fn a_hook_that_refuses_every_claim_is_named_and_does_not_cycle_backends() {
    let server = TestServer::start();
    let t =
        json!({"executable": {"command": ["python3", "-c", NO_CLAIMS]}, "claim_path": "/claim"});
    create_pool(&server, "no-claims", t, 1, 2).await;
    wait_pool(&server, "no-claims", |p| p["ready"] == 1).await;
    let (status, err) = claim(
        &server,
        json!({"pool": "no-claims", "key": "k", "if_none_ready": "wait", "wait_seconds": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"], "pool_exhausted");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("claim hook (/claim)")
            && message.contains("501 Not Implemented")
            && message.contains("claims are not supported here")
            && !message.contains("raise its max"),
        "{message}"
    );

    let all = server.client().list(&[]).await.expect("list");
    let refused: Vec<_> = all.iter().filter(|b| b.state.is_terminal()).collect();
    assert!(!refused.is_empty(), "{all:?}");
    // Held back: 0.1, 0.2, 0.4, 0.8, 1.6 s between starts after refusals, so a handful in
    // 3 s (28 in 3 s cycled before).
    assert!(
        refused.len() <= 8,
        "{} backends refused in 3 s",
        refused.len()
    );
    for b in refused {
        let rec = server.client().get(&b.id).await.expect("record");
        assert_eq!(rec.state, State::Terminated);
        assert_eq!(
            rec.reason.as_deref(),
            Some("claim refused"),
            "{:?}",
            rec.events
        );
        assert!(
            rec.events
                .iter()
                .any(|e| e.reason.as_deref().is_some_and(|r| {
                    r.contains(
                r#"claim refused: it answered 501 Not Implemented: "claims are not supported here""#
            )
                })),
            "{:?}",
            rec.events
        );
    }
}

#[tokio::test]
async fn with_none_ready_a_claim_starts_one_or_waits_as_it_says() {
    let server = TestServer::start();
    create_pool(&server, "empty", template(), 0, 2).await;
    let (status, resp) = claim(
        &server,
        json!({"pool": "empty", "if_none_ready": "wait", "wait_seconds": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{resp}");
    assert!(
        resp["message"].as_str().unwrap().contains("wait_seconds"),
        "{resp}"
    );
    wait_pool(&server, "empty", |p| p["starting"] == 0 && p["ready"] == 0).await;

    let (status, resp) = claim(&server, json!({"pool": "empty", "key": "cold"})).await;
    assert_eq!(status, StatusCode::CREATED, "{resp}");
    assert_eq!(resp["state"], "Ready");
    let status = wait_pool(&server, "empty", |p| p["claimed"] == 1).await;
    assert_eq!(status["cold_claims"], 1);
    assert_eq!(status["ready"], 0);
}

#[tokio::test]
async fn resize_stops_unclaimed_backends_over_max_and_drain_leaves_claimed_ones() {
    let server = TestServer::start();
    create_pool(&server, "r", template(), 3, 5).await;
    wait_pool(&server, "r", |p| p["ready"] == 3).await;
    let (status, claimed) = claim(&server, json!({"pool": "r", "key": "keep"})).await;
    assert_eq!(status, StatusCode::CREATED);
    wait_pool(&server, "r", |p| p["ready"] == 3 && p["claimed"] == 1).await;

    let (status, body) = call(
        &server,
        "PUT",
        "/v1/pools/r",
        Some(json!({"min_ready": 1, "max": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["max"], 2);
    wait_pool(&server, "r", |p| {
        p["ready"] == 1 && p["claimed"] == 1 && p["starting"] == 0
    })
    .await;
    let (status, body) = call(
        &server,
        "PUT",
        "/v1/pools/r",
        Some(json!({"min_ready": 3, "max": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().starts_with("min_ready"),
        "{body}"
    );

    let (status, body) = call(&server, "DELETE", "/v1/pools/r", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["stopping"], 1);
    let (status, _) = call(&server, "GET", "/v1/pools/r", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = claim(&server, json!({"pool": "r"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // The claimed one is its user's: it runs on.
    let id = claimed["id"].as_str().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while pool_backends(&server).await.len() > 1 {
        assert!(Instant::now() < deadline, "unclaimed backends still run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pool_backends(&server).await, vec![id.to_string()]);
    assert_eq!(server.client().get(id).await.unwrap().state, State::Ready);
}

#[tokio::test]
async fn a_restart_keeps_the_pool_its_backends_and_their_claims() {
    let mut server = TestServer::start();
    create_pool(&server, "p", template(), 2, 4).await;
    wait_pool(&server, "p", |p| p["ready"] == 2).await;
    let (status, claimed) = claim(&server, json!({"pool": "p", "key": "alice"})).await;
    assert_eq!(status, StatusCode::CREATED);
    wait_pool(&server, "p", |p| p["ready"] == 2 && p["claimed"] == 1).await;
    let before = pool_backends(&server).await;
    assert_eq!(before.len(), 3);

    server.kill9();
    server.launch();
    let status = wait_pool(&server, "p", |p| p["ready"] == 2 && p["claimed"] == 1).await;
    assert_eq!(status["min_ready"], 2);
    // Adopted, not restarted.
    assert_eq!(pool_backends(&server).await, before);
    let (status, again) = claim(&server, json!({"pool": "p", "key": "alice"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], claimed["id"]);
    let (status, other) = claim(&server, json!({"pool": "p", "key": "bob"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(before.contains(&other["id"].as_str().unwrap().to_string()));
}

#[tokio::test]
async fn bad_pool_input_is_refused_with_the_field_named_and_nothing_recorded() {
    let server = TestServer::start();
    let cases = [
        (
            json!({"name": "Bad", "template": template(), "min_ready": 1, "max": 2}),
            "name",
        ),
        (
            json!({"name": "a", "template": template(), "min_ready": 3, "max": 2}),
            "min_ready",
        ),
        (
            json!({"name": "a", "template": {"executable": {}}, "min_ready": 0, "max": 2}),
            "template.executable",
        ),
        (
            json!({"name": "a", "template": {"key": "k", "executable": {"command": ["x"]}}, "min_ready": 0, "max": 2}),
            "template.key",
        ),
        (
            json!({"name": "a", "template": template(), "min_ready": 0, "max": 2, "size": 3}),
            "unknown field",
        ),
    ];
    for (body, field) in cases {
        let (status, resp) = call(&server, "POST", "/v1/pools", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {resp}");
        assert!(
            resp["message"].as_str().unwrap().contains(field),
            "{body}: {resp}"
        );
    }
    let (_, pools) = call(&server, "GET", "/v1/pools", None).await;
    assert_eq!(pools, json!({"pools": []}));

    create_pool(&server, "dup", template(), 0, 1).await;
    let (status, resp) = call(
        &server,
        "POST",
        "/v1/pools",
        Some(json!({"name": "dup", "template": template(), "min_ready": 0, "max": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(resp["error"], "pool_exists");
    let (status, resp) = claim(&server, json!({"pool": "nope"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(resp["message"].as_str().unwrap().contains("nope"));
    let (status, resp) = claim(&server, json!({"pool": "dup", "key": ""})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        resp["message"].as_str().unwrap().starts_with("key"),
        "{resp}"
    );
    let (status, resp) = claim(
        &server,
        json!({"pool": "dup", "executable": {"command": ["x"]}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        resp["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `executable`"),
        "{resp}"
    );
    assert!(pool_backends(&server).await.is_empty());
}

#[tokio::test]
async fn the_list_stream_sends_a_claimed_backend_with_its_key_and_labels() {
    use futures_util::StreamExt;
    let server = TestServer::start();
    create_pool(&server, "s", template(), 1, 2).await;
    wait_pool(&server, "s", |p| p["ready"] == 1).await;
    let resp = server
        .api()
        .get(format!(
            "{}/v1/backends/stream?label=owner=ann",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    let mut chunks = resp.bytes_stream();
    let mut text = String::new();
    // The snapshot: nobody's backend yet.
    while !text.contains("\n\n") {
        text.push_str(&String::from_utf8_lossy(
            &chunks.next().await.unwrap().unwrap(),
        ));
    }
    assert!(
        text.starts_with("event: snapshot\ndata: {\"backends\":[]}"),
        "{text}"
    );
    let (status, claimed) = claim(
        &server,
        json!({"pool": "s", "key": "ann-1", "labels": {"owner": "ann"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let record = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(data) = text
                .split("\n\n")
                .filter(|m| m.starts_with("event: backend"))
                .find_map(|m| m.lines().find_map(|l| l.strip_prefix("data: ")))
            {
                return serde_json::from_str::<Value>(data).unwrap();
            }
            text.push_str(&String::from_utf8_lossy(
                &chunks.next().await.unwrap().unwrap(),
            ));
        }
    })
    .await
    .expect("the claimed backend on the stream");
    assert_eq!(record["id"], claimed["id"]);
    assert_eq!(record["key"], "ann-1");
    assert_eq!(record["spec"]["labels"]["owner"], "ann");
    assert_eq!(record["state"], "Ready");
}
