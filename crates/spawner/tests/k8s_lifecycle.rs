//! Kubernetes mode end to end on a real API server (see tests/k8s/mod.rs): the API, the
//! controller, the sweeper and the router as processes of the real binary, each with its
//! own service account's token under deploy/kubernetes's RBAC.

mod k8s;

use futures_util::{SinkExt, StreamExt};
use k8s::TestNs;
use serde_json::json;
use spawner_core::State;
use spawner_k8s::kube::api::{ListParams, WatchEvent, WatchParams};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Waits until GET /v1/backends/{id} shows `live` connections, and returns the record.
async fn wait_live(api: &k8s::ApiProc, id: &str, live: u64) -> serde_json::Value {
    let deadline = Instant::now() + k8s::PATIENCE;
    loop {
        let rec = api.get_json(&format!("/v1/backends/{id}")).await;
        if rec["live_connections"] == json!(live) {
            return rec;
        }
        assert!(
            Instant::now() < deadline,
            "live_connections never became {live}: {rec}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_spawned_through_the_api_runs_routes_counts_connections_and_ends() {
    let ns = TestNs::new("life").await;
    let mut controller = ns.controller(&["--retention", "1"], &[]);
    controller.wait_for_log("controller started");
    let mut sweeper = ns.sweeper();
    let (mut router, router_url) = ns.router();
    let mut api = ns.api("t0ken");

    // The token is required.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/backends", api.url))
        .json(&json!({"executable": {"image": "spawner:test"}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 401);

    // Every state the object's STATE column shows, in order, as a watch sees each write.
    let slabs = ns.slabs();
    let from = slabs
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("resourceVersion");
    let mut writes = slabs
        .watch(&WatchParams::default(), &from)
        .await
        .expect("watch")
        .boxed();
    let shown = tokio::spawn(async move {
        let mut shown: Vec<State> = Vec::new();
        while let Some(Ok(event)) = writes.next().await {
            let o = match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => o,
                WatchEvent::Bookmark(_) => continue,
                WatchEvent::Deleted(_) | WatchEvent::Error(_) => break,
            };
            let state = o.status.and_then(|s| s.state);
            if let Some(s) = state.filter(|s| shown.last() != Some(s)) {
                shown.push(s);
            }
            if state == Some(State::Ready) {
                break;
            }
        }
        shown
    });
    let (code, spawned) = api
        .post(
            "/v1/backends",
            json!({"executable": {"image": "spawner:test", "command": ["spawner", "example-app"]},
                   "grace_period_seconds": 300}),
        )
        .await;
    assert_eq!(code, 201, "{spawned}");
    let id = spawned["id"].as_str().expect("id").to_string();

    // The controller creates the Pod (with the sidecar) and the Service under its Role.
    let obj = ns.wait_state(&id, State::Constructed).await;
    let history: Vec<State> = obj
        .status
        .as_ref()
        .map(|s| s.history.iter().map(|h| h.state).collect())
        .unwrap_or_default();
    assert_eq!(history, [State::Submitted, State::Constructed]);
    let pod = ns.pod(&id).await;
    let containers: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    assert_eq!(containers, ["app", k8s::SIDECAR_CONTAINER]);
    // A headless Service: its name resolves to the Pod, it takes no ClusterIP.
    let services: spawner_k8s::kube::Api<k8s_openapi::api::core::v1::Service> =
        spawner_k8s::kube::Api::namespaced(ns.admin.clone(), &ns.name);
    let svc = services.get(&id).await.expect("the Service");
    assert_eq!(svc.spec.and_then(|s| s.cluster_ip).as_deref(), Some("None"));

    // The Pod "runs": Scheduled and Running from the controller, Ready from the sweeper.
    let ip = ns.run_pod(&id).await;
    let obj = ns.wait_state(&id, State::Ready).await;
    let st = obj.status.expect("status");
    assert_eq!(st.ip.as_deref(), Some(ip.as_str()));
    assert_eq!(st.node_name.as_deref(), Some(k8s::NODE));
    assert_eq!(
        st.url.as_deref(),
        Some(format!("http://router.test/p/{id}/").as_str())
    );
    // Submitted is a state of its own (issue 15, fault 6: Constructed came in the same write).
    // (Scheduled and Running may share a write: the stand-in kubelet binds, then reports.)
    let shown = shown.await.expect("watch task");
    assert_eq!(
        shown[..2],
        [State::Submitted, State::Constructed],
        "{shown:?}"
    );
    assert_eq!(shown.last(), Some(&State::Ready), "{shown:?}");
    // The states on the way are in the status history, not Events (a write each, issue 27).
    let reasons = ns.events_of(&id);
    assert!(reasons.is_empty(), "Events before any end: {reasons:?}");

    // Through the router and the sidecar to the application.
    let r = reqwest::get(format!("{router_url}/p/{id}/request"))
        .await
        .expect("GET through the router");
    assert_eq!(r.status().as_u16(), 200);
    let seen: serde_json::Value = r.json().await.expect("json");
    assert_eq!(seen["uri"], "/request", "{seen}");

    // A WebSocket through router and sidecar is counted in the API (fault 1 of issue 15:
    // the count stayed 0 until the next state change), and its end too.
    let ws_url = format!("{}/p/{id}/ws", router_url.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("WebSocket through the router");
    let first = ws.next().await.expect("message").expect("ok");
    assert_eq!(first, Message::Text("count 0".into()));
    let rec = wait_live(&api, &id, 1).await;
    let active_while_open = rec["last_activity"]
        .as_str()
        .expect("last_activity")
        .to_string();
    let metrics = api.get("/metrics").await.1;
    assert!(metrics.contains("spawner_live_connections 1"), "{metrics}");
    ws.send(Message::Text("hi".into())).await.expect("send");
    assert_eq!(
        ws.next().await.expect("echo").expect("ok"),
        Message::Text("echo: hi".into())
    );
    ws.close(None).await.expect("close");
    drop(ws);
    let rec = wait_live(&api, &id, 0).await;
    let active_after = rec["last_activity"].as_str().expect("last_activity");
    assert!(
        active_after > active_while_open.as_str(),
        "last_activity did not move at the connection's end: {active_while_open} then {active_after}"
    );

    // Terminate: Terminating, the Pod deleted (the test's kubelet stops it), Terminated,
    // then the object deleted after its retention.
    let (code, _) = api
        .post(&format!("/v1/backends/{id}/terminate"), json!({}))
        .await;
    assert_eq!(code, 202);
    let obj = ns.wait_state(&id, State::Terminated).await;
    assert_eq!(
        obj.status.and_then(|s| s.reason).as_deref(),
        Some("terminate requested")
    );
    // How it ended is an Event, for `kubectl get events`.
    let reasons = ns.events_of(&id);
    assert_eq!(
        reasons,
        ["Normal Terminated: terminate requested"],
        "{reasons:?}"
    );
    let deadline = Instant::now() + k8s::PATIENCE;
    while ns.slabs().get_opt(&id).await.expect("read").is_some() {
        assert!(Instant::now() < deadline, "{id} was never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _) = api.get(&format!("/v1/backends/{id}")).await;
    assert_eq!(code, 404);

    // Logs are plain text, without terminal colour codes, when not written to a terminal.
    for p in [&mut controller, &mut sweeper, &mut router, &mut api.proc] {
        assert!(p.stop().success(), "{} failed:\n{}", p.name, p.log_text());
        let log = p.log_text();
        assert!(
            !log.contains('\u{1b}'),
            "{} logged ANSI codes:\n{log}",
            p.name
        );
        assert!(!log.contains("forbidden"), "{} hit RBAC:\n{log}", p.name);
    }
}
