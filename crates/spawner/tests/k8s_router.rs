//! `spawner proxy --kubernetes` (the router) on a real API server, as the service account
//! `spawner-router` (read-only under deploy/kubernetes's Role), in front of a real sidecar
//! and application (local processes). The objects' status is written by the test, as the
//! controller and sweeper would.

mod k8s;

use futures_util::{SinkExt, StreamExt};
use k8s::TestNs;
use serde_json::{json, Value};
use spawner_core::State;
use spawner_k8s::controller::pod::SIDECAR_CONTAINER;
use spawner_k8s::kube::api::{Patch, PatchParams, PostParams};
use spawner_k8s::model::router_key::RouterKey;
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
    get_with(base, host, path, &[]).await
}

/// [`get`] with more headers.
async fn get_with(
    base: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut req = client.get(format!("{base}{path}")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("GET through the router");
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
    assert_eq!(seen["headers"]["host"], "spawner.test");
    // This sidecar was given no proof (no router key): it trusts no one, so the
    // application sees the router's address alone, and none of the router's other
    // forwarding headers (the prefix is in SPAWNER_BASE_PATH). With a key: the test below.
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(seen["headers"].get("x-forwarded-prefix").is_none());
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

/// The whole chain with a router key: the controller gives the new Pod's sidecar the
/// router's proof for its backend; the router sends it; the sidecar keeps the router's
/// forwarding headers, and takes anyone else's (a wrong proof included) for a client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_proves_itself_to_the_sidecar_with_the_proof_the_controller_gave_it() {
    let ns = TestNs::new("routerkey").await;
    let key = "the-router-key-of-this-test-0123";
    let env = [("SPAWNER_ROUTER_KEY", key)];
    let mut controller = ns.controller(&[], &env);
    let _sweeper = ns.sweeper();
    ns.create_slab("proven1", json!({})).await;
    let pod = ns.pod("proven1").await;
    let proof = RouterKey::new(key).expect("key").proof("proven1");
    let proof_var = ("SPAWNER_ROUTER_PROOF".to_string(), proof.clone());
    assert!(
        k8s::container_env(&pod, SIDECAR_CONTAINER).contains(&proof_var),
        "the sidecar has its proof"
    );
    assert!(
        !k8s::container_env(&pod, "app")
            .iter()
            .any(|(k, _)| k == &proof_var.0),
        "the application has none"
    );
    let ip = ns.run_pod("proven1").await;
    ns.wait_state("proven1", State::Ready).await;
    let (mut router, base) = ns.router_env(&["--domain", "apps.test"], &env);

    // Through the router: the client's forwarding headers and its guess at a proof are
    // dropped; the router's own reach the application, the proof does not.
    let spoofed = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-spawner-router-proof", proof.as_str()),
    ];
    let deadline = Instant::now() + k8s::PATIENCE;
    let (code, headers, body) = loop {
        let answer = get_with(&base, "spawner.test", "/p/proven1/request", &spoofed).await;
        if answer.0 == 200 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).expect("json");
    let h = &seen["headers"];
    let forwarded_for: Vec<&str> = h["x-forwarded-for"]
        .as_str()
        .expect("x-forwarded-for")
        .split(", ")
        .collect();
    assert_eq!(
        forwarded_for.len(),
        2,
        "the client, then the router: {forwarded_for:?}"
    );
    assert_eq!(forwarded_for[0], "127.0.0.1", "the test's address");
    assert_eq!(h["x-forwarded-proto"], "http", "the router's");
    assert_eq!(h["x-forwarded-host"], "spawner.test", "the router's");
    assert_eq!(h["x-forwarded-prefix"], "/p/proven1", "the router's, kept");
    assert!(h.get("x-spawner-router-proof").is_none(), "{h}");
    // By path to a client that is no browser: sandboxed, since backends have own origins.
    assert!(headers["content-security-policy"]
        .to_str()
        .expect("text")
        .starts_with("sandbox "));
    // A browser's navigation by path goes to the backend's own origin.
    let (code, headers, _) = get_with(
        &base,
        "spawner.test",
        "/p/proven1/request?x=1",
        &[("sec-fetch-mode", "navigate")],
    )
    .await;
    assert_eq!(code, 307);
    assert_eq!(headers["location"], "http://proven1.apps.test/request?x=1");
    let (code, _, body) = get_with(
        &base,
        "spawner.test",
        "/p/proven1/request",
        &[("sec-fetch-mode", "cors")],
    )
    .await;
    assert_eq!(code, 403);
    assert!(body.contains("http://proven1.apps.test/"), "{body}");

    // Straight to the sidecar (another Pod of the cluster could): a wrong proof is no
    // proof; the right one is the router's word.
    let sidecar = format!("http://{ip}:{}", ns.sidecar_port);
    let wrong = format!("{}0", &proof[..63]);
    for (given, trusted) in [(wrong.as_str(), false), (proof.as_str(), true)] {
        let mut sent = spoofed;
        sent[3].1 = given;
        let (code, _, body) = get_with(&sidecar, "spawner.test", "/request", &sent).await;
        assert_eq!(code, 200, "{body}");
        let seen: Value = serde_json::from_str(&body).expect("json");
        let h = &seen["headers"];
        assert!(h.get("x-spawner-router-proof").is_none(), "{h}");
        if trusted {
            assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
            assert_eq!(h["x-forwarded-proto"], "https");
        } else {
            assert_eq!(h["x-forwarded-for"], "127.0.0.1");
            assert_eq!(h["x-forwarded-proto"], "http");
        }
    }
    assert!(router.stop().success(), "{}", router.log_text());
    assert!(controller.stop().success(), "{}", controller.log_text());
}
