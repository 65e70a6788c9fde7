//! The limits of docs/api.md ("Limits"), through a real `spawner serve`: oversized bodies
//! and specs are refused with the field and the limit named, and leave nothing behind.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A raw POST of `body` (already JSON) to a control route, with the token if there is one.
async fn post_raw(server: &TestServer, path: &str, body: reqwest::Body) -> (StatusCode, Value) {
    let mut req = server
        .http()
        .post(format!("{}{path}", server.url()))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = &server.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("POST");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(server: &TestServer, path: &str, body: &Value) -> (StatusCode, Value) {
    post_raw(server, path, body.to_string().into()).await
}

/// The bytes of the database and its write-ahead log.
fn database_bytes(server: &TestServer) -> u64 {
    ["spawner.db", "spawner.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(server.data_dir().join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// [`database_bytes`] once the last writes are checkpointed (copying the log into the
/// database may grow it once more): the same over three checkpoint periods.
async fn settled_database_bytes(server: &TestServer) -> u64 {
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut last = database_bytes(server);
    let mut same = 0;
    while same < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database kept changing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = database_bytes(server);
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

fn message(err: &Value) -> &str {
    err["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_spawn_with_a_mebibyte_of_env_is_refused_and_leaves_nothing() {
    let server = TestServer::start();
    let client = server.client();
    // One backend before: the list must not change, whatever is refused after it.
    let (ended, _) = client.spawn(&shell("exit 0")).await.expect("spawn");
    wait_for(&client, &ended.id, |e| e.state.is_terminal()).await;
    let before = client.list(&[]).await.expect("list");
    let bytes_before = settled_database_bytes(&server).await;

    let mebibyte = json!({"executable": {"command": ["sh", "-c", "exit 1"],
                                         "env": {"BIG": "x".repeat(1 << 20)}}});
    for _ in 0..20 {
        let (status, err) = post(&server, "/v1/backends", &mebibyte).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
        assert_eq!(err["error"], "body_too_large");
        assert!(message(&err).contains("262144"), "{err}");
    }
    // Sent in chunks, without a length: counted as it is read.
    let chunks = (0..64).map(|i| {
        let piece = if i == 0 {
            r#"{"executable":{"command":["true"],"env":{"BIG":""#.to_string()
        } else {
            "x".repeat(16 * 1024)
        };
        Ok::<_, std::io::Error>(piece)
    });
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (status, err) = post_raw(&server, "/v1/backends", streamed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");

    // Under the body's limit but over the environment's: 400 naming the field and the limit.
    let over_env = json!({"executable": {"command": ["true"],
        "env": {"A": "x".repeat(30_000), "B": "x".repeat(30_000), "C": "x".repeat(30_000)}}});
    let (status, err) = post(&server, "/v1/backends", &over_env).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"], "invalid_field");
    assert!(
        message(&err).starts_with("executable.env:") && message(&err).contains("65536"),
        "{err}"
    );
    let one_value = json!({"executable": {"command": ["true"], "env": {"V": "x".repeat(40_000)}}});
    let (status, err) = post(&server, "/v1/backends", &one_value).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(message(&err).starts_with("executable.env.V:"), "{err}");
    let long_command = json!({"executable": {"command": ["echo", "$(X)", "$(X)", "$(X)"], "env": {"X": "x".repeat(30_000)}}});
    let (status, err) = post(&server, "/v1/backends", &long_command).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(message(&err).starts_with("executable.command:"), "{err}");

    let after = client.list(&[]).await.expect("list");
    let ids =
        |l: &[spawner_core::BackendRecord]| l.iter().map(|b| b.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before));
    assert_eq!(
        settled_database_bytes(&server).await,
        bytes_before,
        "refusals wrote to the database"
    );
}

#[tokio::test]
async fn pool_templates_and_claims_have_the_limits_of_a_spec() {
    let server = TestServer::start();
    let labels: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("l{i}"), json!("v"))).collect();
    let template = json!({"name": "big", "min_ready": 0, "max": 1,
        "template": {"executable": {"command": ["true"], "env": {"V": "x".repeat(40_000)}}}});
    let (status, err) = post(&server, "/v1/pools", &template).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        message(&err).starts_with("template.executable.env.V:"),
        "{err}"
    );
    let template = json!({"name": "many", "min_ready": 0, "max": 1,
        "template": {"executable": {"command": ["true"]}, "labels": labels}});
    let (status, err) = post(&server, "/v1/pools", &template).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(message(&err).starts_with("template.labels:"), "{err}");

    // A claim whose labels, with its template's, would be over the limit.
    let half: serde_json::Map<String, Value> =
        (0..40).map(|i| (format!("t{i}"), json!("v"))).collect();
    let pool = json!({"name": "labelled", "min_ready": 0, "max": 1,
        "template": {"executable": {"command": ["true"]}, "labels": half}});
    let (status, err) = post(&server, "/v1/pools", &pool).await;
    assert_eq!(status, StatusCode::CREATED, "{err}");
    let more: serde_json::Map<String, Value> =
        (0..40).map(|i| (format!("c{i}"), json!("v"))).collect();
    let claim = json!({"pool": "labelled", "labels": more, "wait_seconds": 1});
    let (status, err) = post(&server, "/v1/backends", &claim).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        message(&err).starts_with("labels:") && message(&err).contains("64"),
        "{err}"
    );
    // A resize body over the limit: 413, the pool unchanged.
    let huge = format!(
        r#"{{"min_ready": 0, "max": 1, "x": "{}"}}"#,
        "x".repeat(300_000)
    );
    let mut req = server
        .http()
        .put(format!("{}/v1/pools/labelled", server.url()))
        .header("content-type", "application/json")
        .body(huge);
    if let Some(t) = &server.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("PUT");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(server.client().list(&[]).await.expect("list").is_empty());
}
