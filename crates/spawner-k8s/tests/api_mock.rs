//! `spawner api` against a mocked Kubernetes API: the HTTP contract, and the exact
//! Kubernetes requests behind each route.

mod support;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use spawner_core::State;
use spawner_k8s::api::{router, ApiConfig, ApiState};
use spawner_k8s::naming::{name_for_key, Urls};
use spawner_k8s::SessionLivedBackendStatus;
use std::sync::Arc;
use support::{query_param, Fake};
use tower::ServiceExt;

const SLABS: &str = "sessionlivedbackends";

fn app_with(token: Option<&str>) -> (Fake, Router) {
    let (fake, client) = Fake::start();
    let config = ApiConfig {
        namespace: "default".into(),
        urls: Urls::new("http://router.test", None),
        api_base: "http://api.test".into(),
        token: token.map(str::to_string),
        key_secret: b"test-secret".to_vec(),
    };
    (fake, router(Arc::new(ApiState { client, config })))
}

fn app() -> (Fake, Router) {
    app_with(None)
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, http::HeaderMap, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, json)
}

fn spawn_body() -> Value {
    json!({
        "executable": {"image": "registry.example/app:1", "env": {"MODE": "collab"}, "port": 8000},
        "labels": {"owner": "user-7"},
        "grace_period_seconds": 60
    })
}

/// Sets an object's status as the controller would have.
fn set_states(fake: &Fake, id: &str, states: &[State]) {
    fake.update(SLABS, id, |o| {
        let mut st: SessionLivedBackendStatus =
            serde_json::from_value(o["status"].clone()).unwrap_or_default();
        for (i, s) in states.iter().enumerate() {
            st.enter(*s, 1_700_000_000_000 + i as i64, None, None);
        }
        o["status"] = serde_json::to_value(st).expect("json");
    });
}

#[tokio::test]
async fn spawn_creates_the_object_and_answers_the_contract() {
    let (fake, app) = app();
    let (code, _, resp) = call(&app, "POST", "/v1/backends", Some(spawn_body())).await;
    assert_eq!(code, StatusCode::CREATED, "{resp}");
    let id = resp["id"].as_str().expect("id").to_string();
    assert!(spawner_core::BackendId::parse(&id).is_ok());
    assert_eq!(resp["state"], "Submitted");
    assert_eq!(resp["url"], format!("http://router.test/p/{id}/"));
    assert_eq!(
        resp["ready_url"],
        format!("http://api.test/v1/backends/{id}/ready")
    );
    assert_eq!(
        resp["status_stream_url"],
        format!("http://api.test/v1/backends/{id}/status/stream")
    );
    let log = fake.take_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].short(), "POST slabs");
    assert_eq!(
        log[0].path,
        "/apis/spawner.dev/v1/namespaces/default/sessionlivedbackends"
    );
    assert_eq!(
        log[0].body.clone().expect("body"),
        json!({
            "apiVersion": "spawner.dev/v1",
            "kind": "SessionLivedBackend",
            "metadata": {"name": id, "labels": {"owner": "user-7"}},
            "spec": {
                "template": {"containers": [{
                    "name": "app", "image": "registry.example/app:1",
                    "env": [{"name": "MODE", "value": "collab"}]
                }]},
                "gracePeriodSeconds": 60, "httpPort": 8000, "startupTimeoutSeconds": 300, "stripPrefix": true
            }
        })
    );
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_recorded() {
    let (fake, app) = app();
    let cases = [
        (
            json!({"executable": {"command": ["app"]}}),
            "invalid_field",
            "executable.image",
        ),
        (
            json!({"executable": {"image": "a b"}}),
            "invalid_field",
            "executable.image",
        ),
        (
            json!({"executable": {"image": "a"}, "grace": 3}),
            "invalid_body",
            "unknown field `grace`",
        ),
        (
            json!({"executable": {"image": "a", "env": {"PORT": "1"}}}),
            "invalid_field",
            "executable.env.PORT",
        ),
    ];
    for (body, code, needle) in cases {
        let (status, _, resp) = call(&app, "POST", "/v1/backends", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp["error"], code, "{body}: {resp}");
        assert!(
            resp["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{body}: {resp}"
        );
    }
    assert!(fake.take_log().is_empty(), "nothing reached Kubernetes");
}

#[tokio::test]
async fn get_or_create_by_key_returns_the_live_one_and_replaces_an_ended_one() {
    let (fake, app) = app();
    let mut body = spawn_body();
    body["key"] = json!("doc-42");
    let expected_id = name_for_key(b"test-secret", "default", "doc-42");

    let (code, _, first) = call(&app, "POST", "/v1/backends", Some(body.clone())).await;
    assert_eq!(
        (code, first["id"].as_str()),
        (StatusCode::CREATED, Some(expected_id.as_str()))
    );
    assert_eq!(first["key"], "doc-42");
    fake.take_log();

    let (code, _, second) = call(&app, "POST", "/v1/backends", Some(body.clone())).await;
    assert_eq!((code, &second["id"]), (StatusCode::OK, &first["id"]));
    assert_eq!(
        fake.take_short_log(),
        ["POST slabs", format!("GET slabs/{expected_id}").as_str()]
    );

    // Once it has ended, the same key gets a new backend (a new object of the same name).
    set_states(
        &fake,
        expected_id.as_str(),
        &[State::Submitted, State::Swept],
    );
    let old_uid = fake.get(SLABS, expected_id.as_str()).expect("obj")["metadata"]["uid"].clone();
    let (code, _, third) = call(&app, "POST", "/v1/backends", Some(body)).await;
    assert_eq!(
        (code, &third["id"], &third["state"]),
        (StatusCode::CREATED, &first["id"], &json!("Submitted"))
    );
    let log = fake.take_log();
    let short: Vec<String> = log.iter().map(|l| l.short()).collect();
    assert_eq!(
        short,
        [
            "POST slabs",
            &format!("GET slabs/{expected_id}"),
            &format!("DELETE slabs/{expected_id}"),
            "POST slabs"
        ]
    );
    assert_eq!(
        log[2]
            .body
            .as_ref()
            .map(|b| b["preconditions"]["uid"].clone()),
        Some(old_uid.clone())
    );
    assert_ne!(
        fake.get(SLABS, expected_id.as_str()).expect("obj")["metadata"]["uid"],
        old_uid
    );
}

#[tokio::test]
async fn concurrent_spawns_with_one_key_make_one_backend() {
    let (fake, app) = app();
    let mut body = spawn_body();
    body["key"] = json!("doc-7");
    let calls = (0..8).map(|_| call(&app, "POST", "/v1/backends", Some(body.clone())));
    let results = futures_util::future::join_all(calls).await;
    let created = results
        .iter()
        .filter(|r| r.0 == StatusCode::CREATED)
        .count();
    let existing = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    assert_eq!((created, existing), (1, 7));
    let ids: std::collections::BTreeSet<_> =
        results.iter().map(|r| r.2["id"].to_string()).collect();
    assert_eq!(ids.len(), 1);
    let (_, _, list) = call(&app, "GET", "/v1/backends", None).await;
    assert_eq!(list["backends"].as_array().map(Vec::len), Some(1));
    drop(fake);
}

#[tokio::test]
async fn list_filters_by_label_state_and_key() {
    let (fake, app) = app();
    let (_, _, a) = call(&app, "POST", "/v1/backends", Some(spawn_body())).await;
    let mut other = spawn_body();
    other["labels"] = json!({"owner": "user-8"});
    other["key"] = json!("k2");
    let (_, _, b) = call(&app, "POST", "/v1/backends", Some(other)).await;
    let a_id = a["id"].as_str().expect("id");
    set_states(&fake, a_id, &[State::Submitted, State::Running]);
    fake.take_log();

    let (code, _, list) = call(&app, "GET", "/v1/backends?label=owner=user-7", None).await;
    assert_eq!(code, StatusCode::OK);
    let log = fake.take_log();
    assert_eq!(
        query_param(&log[0].query, "labelSelector").as_deref(),
        Some("owner=user-7")
    );
    let ids: Vec<&Value> = list["backends"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&a["id"]]);

    let (_, _, list) = call(&app, "GET", "/v1/backends?state=Running", None).await;
    assert_eq!(list["backends"][0]["id"], a["id"]);
    assert_eq!(list["backends"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["backends"][0]["runtime"], "kubernetes");

    let (_, _, list) = call(&app, "GET", "/v1/backends?key=k2", None).await;
    assert_eq!(list["backends"][0]["id"], b["id"]);
    assert_eq!(
        fake.take_short_log().last().map(String::as_str),
        Some(format!("GET slabs/{}", b["id"].as_str().unwrap_or_default()).as_str())
    );

    let (code, _, err) = call(&app, "GET", "/v1/backends?state=ready", None).await;
    assert_eq!(
        (code, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
}

#[tokio::test]
async fn record_status_and_ready_follow_the_object() {
    let (fake, app) = app();
    let (_, _, s) = call(&app, "POST", "/v1/backends", Some(spawn_body())).await;
    let id = s["id"].as_str().expect("id").to_string();

    // Not yet seen by the controller: Submitted, at the creation time.
    let (code, _, st) = call(&app, "GET", &format!("/v1/backends/{id}/status"), None).await;
    assert_eq!(
        (code, &st),
        (
            StatusCode::OK,
            &json!({"state": "Submitted", "time": "2023-11-14T22:13:20.000Z"})
        )
    );
    let (code, headers, err) = call(&app, "GET", &format!("/v1/backends/{id}/ready"), None).await;
    assert_eq!(
        (code, err["error"].as_str()),
        (StatusCode::CONFLICT, Some("not_ready"))
    );
    assert_eq!(
        headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );

    set_states(
        &fake,
        &id,
        &[State::Submitted, State::Constructed, State::Ready],
    );
    fake.update(SLABS, &id, |o| {
        o["status"]["nodeName"] = json!("node-a");
        o["status"]["port"] = json!(9090);
        o["status"]["liveConnections"] = json!(2);
    });
    let (code, headers, _) = call(&app, "GET", &format!("/v1/backends/{id}/ready"), None).await;
    assert_eq!(code, StatusCode::FOUND);
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("http://router.test/p/{id}/").as_str())
    );
    let (_, _, rec) = call(&app, "GET", &format!("/v1/backends/{id}"), None).await;
    assert_eq!(rec["state"], "Ready");
    assert_eq!(rec["node"], "node-a");
    assert_eq!(rec["live_connections"], 2);
    assert_eq!(rec["address"], format!("{id}.default.svc:9090"));
    assert_eq!(rec["spec"]["executable"]["image"], "registry.example/app:1");
    assert_eq!(rec["events"].as_array().map(Vec::len), Some(3));

    set_states(&fake, &id, &[State::Failed]);
    let (code, _, err) = call(&app, "GET", &format!("/backend/{id}/ready"), None).await;
    assert_eq!(
        (code, err["error"].as_str()),
        (StatusCode::GONE, Some("gone"))
    );
    let (_, _, st) = call(&app, "GET", &format!("/backend/{id}/status"), None).await;
    assert_eq!(st["state"], "Failed");

    for unknown in [
        "/v1/backends/nosuchbackend/ready",
        "/v1/backends/NOT-AN-ID/status",
        "/v1/backends/abc",
    ] {
        let (code, _, err) = call(&app, "GET", unknown, None).await;
        assert_eq!(
            (code, err["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{unknown}"
        );
    }
}

#[tokio::test]
async fn terminate_annotates_live_backends_only() {
    let (fake, app) = app();
    let (_, _, s) = call(&app, "POST", "/v1/backends", Some(spawn_body())).await;
    let id = s["id"].as_str().expect("id").to_string();
    fake.take_log();
    let (code, _, resp) = call(
        &app,
        "POST",
        &format!("/v1/backends/{id}/terminate"),
        Some(json!({"hard": true})),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(resp, json!({"id": id, "state": "Submitted", "hard": true}));
    let log = fake.take_log();
    assert_eq!(
        log.iter().map(|l| l.short()).collect::<Vec<_>>(),
        [format!("GET slabs/{id}"), format!("PATCH slabs/{id}")]
    );
    assert_eq!(
        log[1].body.clone(),
        Some(
            json!({"metadata": {"annotations": {"spawner.dev/stop": "terminate requested", "spawner.dev/stop-hard": "true"}}})
        )
    );
    set_states(&fake, &id, &[State::Submitted, State::Terminated]);
    let (code, _, resp) = call(&app, "POST", &format!("/v1/backends/{id}/terminate"), None).await;
    assert_eq!(
        (code, &resp["state"]),
        (StatusCode::ACCEPTED, &json!("Terminated"))
    );
    assert_eq!(
        fake.take_short_log(),
        [format!("GET slabs/{id}")],
        "no patch on a terminal backend"
    );
    let (code, _, err) = call(
        &app,
        "POST",
        &format!("/v1/backends/{id}/terminate"),
        Some(json!({"soft": 1})),
    )
    .await;
    assert_eq!(
        (code, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_body"))
    );
}

#[tokio::test]
async fn control_routes_need_the_token_status_routes_do_not() {
    let (_fake, app) = app_with(Some("s3cret"));
    let (code, _, err) = call(&app, "POST", "/v1/backends", Some(spawn_body())).await;
    assert_eq!(
        (code, err["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (code, _, _) = call(&app, "GET", "/v1/backends", None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let req = Request::builder()
        .method("POST")
        .uri("/v1/backends")
        .header("authorization", "Bearer s3cret")
        .body(Body::from(spawn_body().to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let id = serde_json::from_slice::<Value>(&bytes).expect("json")["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (code, _, _) = call(&app, "GET", &format!("/v1/backends/{id}/status"), None).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _, _) = call(&app, "GET", "/healthz", None).await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test]
async fn seed_routes_keep_their_shapes() {
    let (fake, app) = app();
    let (code, _, resp) = call(
        &app,
        "POST",
        "/spawn",
        Some(json!({"image": "app:1", "port": 9000, "gracePeriodSeconds": 30})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{resp}");
    let name = resp["name"].as_str().expect("name").to_string();
    assert_eq!(resp["url"], format!("http://router.test/p/{name}/"));
    assert_eq!(
        resp["readyUrl"],
        format!("http://api.test/backend/{name}/ready")
    );
    assert_eq!(
        resp["statusUrl"],
        format!("http://api.test/backend/{name}/status")
    );
    let obj = fake.get(SLABS, &name).expect("object");
    assert_eq!(
        (
            obj["spec"]["httpPort"].clone(),
            obj["spec"]["gracePeriodSeconds"].clone()
        ),
        (json!(9000), json!(30))
    );
    let (code, _, st) = call(&app, "GET", &format!("/backend/{name}/status"), None).await;
    assert_eq!((code, &st["state"]), (StatusCode::OK, &json!("Submitted")));
}

/// Reads an SSE body to its end: (id, data) pairs.
async fn read_sse(resp: http::Response<Body>) -> Vec<(u64, Value)> {
    let bytes = resp.into_body().collect().await.expect("stream").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    text.split("\n\n")
        .filter_map(|msg| {
            let mut id = None;
            let mut data = None;
            for line in msg.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            Some((id?, data?))
        })
        .collect()
}

#[tokio::test]
async fn status_stream_replays_then_follows_and_resumes_without_duplicates() {
    let (fake, app) = app();
    let (_, _, s) = call(&app, "POST", "/v1/backends", Some(spawn_body())).await;
    let id = s["id"].as_str().expect("id").to_string();
    set_states(&fake, &id, &[State::Submitted, State::Constructed]);

    // The state moves on while the client listens.
    let writer = fake.clone();
    let wid = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        set_states(&writer, &wid, &[State::Running]);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        set_states(
            &writer,
            &wid,
            &[State::Ready, State::Terminating, State::Swept],
        );
    });
    let req = Request::builder()
        .uri(format!("/v1/backends/{id}/status/stream"))
        .header("last-event-id", "1")
        .body(Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    let events = tokio::time::timeout(std::time::Duration::from_secs(10), read_sse(resp))
        .await
        .expect("the stream ends after the terminal state");
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(ids, [2, 3, 4, 5, 6]);
    let states: Vec<&str> = events
        .iter()
        .filter_map(|e| e.1["state"].as_str())
        .collect();
    assert_eq!(
        states,
        ["Constructed", "Running", "Ready", "Terminating", "Swept"]
    );

    // A reconnect after the end replays only what was missed, and ends at once.
    let req = Request::builder()
        .uri(format!("/backend/{id}/status/stream"))
        .header("last-event-id", "5")
        .body(Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let events = read_sse(resp).await;
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), [6]);

    let req = Request::builder()
        .uri(format!("/v1/backends/{id}/status/stream"))
        .header("last-event-id", "x")
        .body(Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn status_stream_ends_when_the_object_is_deleted() {
    let (fake, app) = app();
    let (_, _, s) = call(&app, "POST", "/v1/backends", Some(spawn_body())).await;
    let id = s["id"].as_str().expect("id").to_string();
    let writer = fake.clone();
    let wid = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        writer.remove(SLABS, &wid);
    });
    let req = Request::builder()
        .uri(format!("/v1/backends/{id}/status/stream"))
        .body(Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let events = tokio::time::timeout(std::time::Duration::from_secs(10), read_sse(resp))
        .await
        .expect("ends");
    assert_eq!(
        events.iter().map(|e| e.0).collect::<Vec<_>>(),
        [1],
        "the synthesized Submitted, then the end"
    );
}

#[tokio::test]
async fn logs_come_from_the_application_container() {
    let (fake, app) = app();
    let (_, _, s) = call(&app, "POST", "/v1/backends", Some(spawn_body())).await;
    let id = s["id"].as_str().expect("id").to_string();
    fake.put("pods", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": id, "annotations": {"test/log": "hello\nworld\n"}}}));
    fake.take_log();
    let req = Request::builder()
        .uri(format!("/v1/backends/{id}/logs"))
        .body(Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&bytes[..], b"hello\nworld\n");
    let log = fake.take_log();
    assert_eq!(log[1].short(), format!("GET pods/{id}/log"));
    assert_eq!(
        query_param(&log[1].query, "container").as_deref(),
        Some("app")
    );
}

#[tokio::test]
async fn metrics_count_backends_by_state() {
    let (fake, app) = app();
    for _ in 0..3 {
        call(&app, "POST", "/v1/backends", Some(spawn_body())).await;
    }
    let (_, _, s) = call(&app, "POST", "/v1/backends", Some(spawn_body())).await;
    let id = s["id"].as_str().expect("id").to_string();
    set_states(&fake, &id, &[State::Submitted, State::Ready]);
    fake.update(SLABS, &id, |o| o["status"]["liveConnections"] = json!(4));
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    for line in [
        "spawner_backends{state=\"Submitted\"} 3",
        "spawner_backends{state=\"Ready\"} 1",
        "spawner_backends{state=\"Swept\"} 0",
        "spawner_live_connections 4",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
}
