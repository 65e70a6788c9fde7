//! The API, the controller and a sweeper's writes on one mocked API server: a backend's
//! whole life as a client sees it, through the same objects each component reads.

mod support;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use kube::api::Api;
use kube::runtime::events::Reporter;
use serde_json::{json, Value};
use spawner_core::State;
use spawner_k8s::api::{router, ApiConfig, ApiState};
use spawner_k8s::controller::{reconcile, Context, ControllerConfig};
use spawner_k8s::naming::Urls;
use spawner_k8s::pod::PodConfig;
use spawner_k8s::write::record_state;
use spawner_k8s::SessionLivedBackend;
use std::sync::Arc;
use std::time::Duration;
use support::Fake;
use tower::ServiceExt;

const T0: i64 = 1_700_000_000_000;

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn spawn_run_ready_terminate_and_clean_up() {
    let (fake, client) = Fake::start();
    let urls = Urls::new("http://router.test", None);
    let api = router(Arc::new(ApiState {
        client: client.clone(),
        config: ApiConfig {
            namespace: "default".into(),
            urls: urls.clone(),
            api_base: "http://api.test".into(),
            token: None,
            key_secret: b"k".to_vec(),
        },
    }));
    let clock = Arc::new(std::sync::atomic::AtomicI64::new(T0));
    let c = clock.clone();
    let ctx = Arc::new(Context::new(
        client.clone(),
        Reporter {
            controller: "spawner-controller".into(),
            instance: None,
        },
        ControllerConfig {
            pod: PodConfig {
                sidecar_image: "spawner:test".into(),
                sidecar_port: 9090,
                stop_grace_seconds: 10,
                urls,
            },
            retention: Duration::from_secs(60),
            resync: Duration::from_secs(300),
        },
        Box::new(move || c.load(std::sync::atomic::Ordering::SeqCst)),
    ));
    let slabs: Api<SessionLivedBackend> = Api::namespaced(client, "default");
    let get = |id: &str| -> SessionLivedBackend {
        serde_json::from_value(fake.get("sessionlivedbackends", id).expect("exists"))
            .expect("parses")
    };

    let (code, spawned) = call(
        &api,
        "POST",
        "/v1/backends",
        Some(json!({"key": "doc-1", "executable": {"image": "app:1"}})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let id = spawned["id"].as_str().expect("id").to_string();

    reconcile(Arc::new(get(&id)), ctx.clone())
        .await
        .expect("constructs");
    assert!(fake.get("pods", &id).is_some() && fake.get("services", &id).is_some());
    fake.update("pods", &id, |p| {
        p["spec"]["nodeName"] = json!("node-a");
        p["status"] = json!({"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
            {"name": "app", "image": "app:1", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]});
    });
    reconcile(Arc::new(get(&id)), ctx.clone())
        .await
        .expect("runs");
    let (code, _) = call(&api, "GET", &format!("/v1/backends/{id}/ready"), None).await;
    assert_eq!(code, StatusCode::CONFLICT, "Running is not Ready");
    assert_eq!(
        get(&id)
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("spawner.dev/node"))
            .map(String::as_str),
        Some("node-a")
    );

    // The node's sweeper hears from the sidecar that the app listens.
    record_state(&slabs, &get(&id), State::Ready, None, T0 + 3_000, |s| {
        s.live_connections = Some(0)
    })
    .await
    .expect("patch")
    .expect("allowed");
    let (code, _) = call(&api, "GET", &format!("/v1/backends/{id}/ready"), None).await;
    assert_eq!(code, StatusCode::FOUND);
    assert!(
        record_state(&slabs, &get(&id), State::Running, None, T0, |_| {})
            .await
            .expect("no request")
            .is_none(),
        "no going back, and nothing written"
    );

    // The same key while it lives: the same backend.
    let (code, again) = call(
        &api,
        "POST",
        "/v1/backends",
        Some(json!({"key": "doc-1", "executable": {"image": "app:1"}})),
    )
    .await;
    assert_eq!(
        (code, &again["id"], &again["state"]),
        (StatusCode::OK, &json!(id), &json!("Ready"))
    );

    let (code, _) = call(&api, "POST", &format!("/v1/backends/{id}/terminate"), None).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    reconcile(Arc::new(get(&id)), ctx.clone())
        .await
        .expect("stops");
    assert!(fake.get("pods", &id).is_none(), "the Pod was deleted");
    reconcile(Arc::new(get(&id)), ctx.clone())
        .await
        .expect("records the end");
    let (code, _) = call(&api, "GET", &format!("/v1/backends/{id}/ready"), None).await;
    assert_eq!(code, StatusCode::GONE);
    let (_, record) = call(&api, "GET", &format!("/v1/backends/{id}"), None).await;
    let states: Vec<&str> = record["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["state"].as_str())
        .collect();
    assert_eq!(
        states,
        [
            "Submitted",
            "Constructed",
            "Scheduled",
            "Running",
            "Ready",
            "Terminating",
            "Terminated"
        ]
    );
    assert_eq!(record["events"][6]["reason"], "terminate requested");

    clock.store(T0 + 120_000, std::sync::atomic::Ordering::SeqCst);
    reconcile(Arc::new(get(&id)), ctx.clone())
        .await
        .expect("deletes");
    let (code, _) = call(&api, "GET", &format!("/v1/backends/{id}/status"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}
