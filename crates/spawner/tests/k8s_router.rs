//! `spawner proxy --kubernetes` (the router) on a real API server, as the service account
//! `spawner-router` (read-only under deploy/kubernetes's Role), in front of a real sidecar
//! and application (local processes). The objects' status is written by the test, as the
//! controller and sweeper would.

mod k8s;

use futures_util::{SinkExt, StreamExt};
use k8s::TestNs;
use serde_json::{json, Value};
use spawner_core::State;
use spawner_k8s::kube::api::{Patch, PatchParams, PostParams};
use spawner_k8s::{SessionLivedBackend, SessionLivedBackendStatus};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

async fn put(ns: &TestNs, name: &str, states: &[State], port: u16, strip: bool) {
    let obj: SessionLivedBackend = serde_json::from_value(json!({
        "apiVersion": "spawner.dev/v1", "kind": "SessionLivedBackend",
        "metadata": {"name": name},
        "spec": {"template": {"containers": [{"name": "app", "image": "app:1"}]}, "stripPrefix": strip},
    }))
    .expect("object");
    ns.slabs()
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    enter(ns, name, states, Some(port)).await;
}

async fn enter(ns: &TestNs, name: &str, states: &[State], port: Option<u16>) {
    let mut st: SessionLivedBackendStatus = ns
        .slabs()
        .get(name)
        .await
        .expect("object")
        .status
        .unwrap_or_default();
    for s in states {
        st.enter(*s, spawner_core::time::now_millis(), None, None);
    }
    if let Some(p) = port {
        st.ip = Some("127.0.0.1".into());
        st.port = Some(p);
    }
    ns.slabs()
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": st })),
        )
        .await
        .expect("status");
}

async fn get(base: &str, host: &str, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = client
        .get(format!("{base}{path}"))
        .header("host", host)
        .send()
        .await
        .expect("GET through the router");
    let code = r.status().as_u16();
    let headers = r.headers().clone();
    (code, headers, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_ready_backends_through_their_sidecar_and_answers_for_the_others() {
    let ns = TestNs::new("router").await;
    // A real application and sidecar, on local ports.
    let app_port = k8s::free_port().to_string();
    let _app = ns.spawn(
        "app",
        None,
        &["example-app", "--port", &app_port, "--host", "127.0.0.1"],
        &[],
    );
    let sc_port = k8s::free_port();
    let sc_listen = format!("127.0.0.1:{sc_port}");
    let _sidecar = ns.spawn(
        "sidecar",
        None,
        &["sidecar", "--app-port", &app_port, "--listen", &sc_listen],
        &[],
    );
    let ready = [State::Submitted, State::Running, State::Ready];
    put(&ns, "ready1", &ready, sc_port, true).await;
    put(&ns, "keep1", &ready, sc_port, false).await;
    put(
        &ns,
        "starting1",
        &[State::Submitted, State::Running],
        sc_port,
        true,
    )
    .await;
    put(
        &ns,
        "ended1",
        &[State::Submitted, State::Ready, State::Swept],
        sc_port,
        true,
    )
    .await;

    let (mut router, base) = ns.router_with(&["--domain", "apps.test"]);
    // The sidecar answers 503 until the application listens.
    let deadline = Instant::now() + k8s::PATIENCE;
    while get(&base, "spawner.test", "/p/ready1/request").await.0 != 200 {
        assert!(Instant::now() < deadline, "ready1 never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Path routing, prefix stripped, X-Forwarded-* set, Host unchanged.
    let (code, _, body) = get(&base, "spawner.test", "/p/ready1/request?x=1").await;
    assert_eq!(code, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(seen["uri"], "/request?x=1");
    assert_eq!(seen["headers"]["x-forwarded-prefix"], "/p/ready1");
    assert_eq!(seen["headers"]["host"], "spawner.test");
    assert_eq!(
        seen["headers"]["x-forwarded-for"], "127.0.0.1, 127.0.0.1",
        "client, then router"
    );
    // stripPrefix: false forwards the path unchanged.
    // (example-app serves /request only: the unstripped path gets its own empty 404, not
    // the router's, which names the backend.)
    let (code, _, body) = get(&base, "spawner.test", "/p/keep1/request").await;
    assert_eq!((code, body.as_str()), (404, ""));
    let (code, _, body) = get(&base, "spawner.test", "/p/nosuchbackend/").await;
    assert_eq!(code, 404);
    assert_eq!(body.trim(), "no such backend");
    // Host routing.
    let (code, headers, body) = get(&base, "ready1.apps.test", "/request").await;
    assert_eq!(code, 200, "{headers:?} {body}");
    let seen: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {headers:?} {body:?}"));
    assert_eq!(
        (seen["uri"].as_str(), seen["headers"]["host"].as_str()),
        (Some("/request"), Some("ready1.apps.test"))
    );

    // The other answers of api.md.
    let (code, headers, _) = get(&base, "spawner.test", "/p/ready1?a=1").await;
    assert_eq!(code, 308);
    assert_eq!(headers["location"], "/p/ready1/?a=1");
    let (code, headers, _) = get(&base, "spawner.test", "/p/starting1/").await;
    assert_eq!(code, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(get(&base, "spawner.test", "/p/ended1/").await.0, 410);

    // A WebSocket through router and sidecar.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws{}/p/ready1/ws",
        base.trim_start_matches("http")
    ))
    .await
    .expect("WebSocket through the router");
    ws.send(Message::Text("hi".into())).await.expect("send");
    loop {
        let m = ws.next().await.expect("a message").expect("ok");
        if m == Message::Text("echo: hi".into()) {
            break;
        }
    }
    ws.close(None).await.expect("close");
    drop(ws);

    // The watch keeps the table current: once Swept, the backend is gone for browsers.
    enter(&ns, "ready1", &[State::Swept], None).await;
    let deadline = Instant::now() + k8s::PATIENCE;
    loop {
        let (code, _, _) = get(&base, "spawner.test", "/p/ready1/request").await;
        if code == 410 {
            break;
        }
        assert_eq!(code, 200, "Ready until the watch says otherwise");
        assert!(Instant::now() < deadline, "the router never saw the sweep");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(router.stop().success(), "{}", router.log_text());
    assert!(!router.log_text().contains("forbidden"));
}
