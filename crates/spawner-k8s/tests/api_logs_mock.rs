//! `GET /v1/backends/{id}/logs` of `spawner api` against a mocked Kubernetes API, kept
//! because the real API server of the other Kubernetes tests has no kubelet: it cannot serve
//! a container's log (it proxies `pods/log` to the node's kubelet). This checks that the
//! route reads the application container's log of the backend's Pod and returns it as is.
//! Everything else of the API is tested on the real server (crates/spawner/tests/k8s_api.rs).

mod support;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use spawner_k8s::api::{router, ApiConfig, ApiState};
use spawner_k8s::model::naming::Urls;
use std::sync::Arc;
use support::{query_param, Fake};
use tower::ServiceExt;

fn app_with(token: Option<&str>) -> (Fake, Router) {
    let (fake, client) = Fake::start();
    let config = ApiConfig {
        namespace: "default".into(),
        urls: Urls::new("http://router.test", None),
        api_base: "http://api.test".into(),
        token: token.map(str::to_string),
        guard: spawner_api::Guard::new(spawner_api::OwnHosts::new(([127, 0, 0, 1], 8080).into())),
        key_secret: b"test-secret".to_vec(),
        access_key: None,
    };
    (
        fake,
        router(Arc::new(ApiState {
            client,
            config,
            login: None,
            pool_stats: Default::default(),
            lifecycle_stats: Default::default(),
            pool_cache: None,
        })),
    )
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
        .header("host", "127.0.0.1:8080")
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

#[tokio::test]
async fn logs_come_from_the_application_container() {
    let (fake, app) = app();
    let (_, _, s) = call(&app, "POST", "/v1/backends", Some(spawn_body())).await;
    let id = s["id"].as_str().expect("id").to_string();
    fake.put("pods", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": id, "annotations": {"test/log": "hello\nworld\n"}}}));
    fake.take_log();
    let req = Request::builder()
        .uri(format!("/v1/backends/{id}/logs"))
        .header("host", "127.0.0.1:8080")
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
