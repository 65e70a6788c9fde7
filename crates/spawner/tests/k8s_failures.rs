//! How Kubernetes-mode backends fail, on a real API server: crashes (the Pod and its
//! message kept), Pods the API server refuses (Pod Security admission), Pods deleted by
//! someone else, and sidecars the sweeper cannot reach.

mod k8s;

use k8s::TestNs;
use serde_json::json;
use spawner_core::State;
use spawner_k8s::kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use spawner_k8s::SessionLivedBackend;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn reason(obj: &SessionLivedBackend) -> String {
    obj.status
        .as_ref()
        .and_then(|s| s.reason.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_backend_keeps_its_pod_and_says_why() {
    let ns = TestNs::new("crash").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let api = ns.api("t0ken");
    let (code, spawned) = api
        .post(
            "/v1/backends",
            json!({"executable": {"image": "spawner:test"}}),
        )
        .await;
    assert_eq!(code, 201, "{spawned}");
    let id = spawned["id"].as_str().expect("id").to_string();
    let pod = ns.pod(&id).await;
    let app = &pod.spec.as_ref().expect("spec").containers[0];
    assert_eq!(
        app.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    ns.run_pod(&id).await;
    ns.wait_state(&id, State::Running).await;

    // The kubelet reports the crash with the log's tail as termination message.
    ns.exit_app(&id, 3, Some("panic: no config file\n")).await;
    let obj = ns.wait_state(&id, State::Failed).await;
    assert_eq!(
        reason(&obj),
        "exited with code 3 before it became ready: panic: no config file"
    );
    let events = ns.events_of(&id);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Warning Failed: exited with code 3")),
        "{events:?}"
    );
    // Until the object is deleted, the exited Pod stays, so that its log can be read
    // (issue 15, fault 2: it was deleted at once and the logs route answered 502).
    // The test server has no kubelet to serve the log, so the API server's answer is that
    // it cannot reach the node's; before the fix it was "pods ... not found".
    let (code, text) = api.get(&format!("/v1/backends/{id}/logs")).await;
    assert!(
        text.contains("no preferred addresses found") && !text.contains("not found"),
        "the logs route did not reach the Pod's node: {code} {text}"
    );
    let kept = ns.pods().get_opt(&id).await.expect("read pod");
    let kept = kept.expect("the exited Pod is kept");
    assert!(kept.metadata.deletion_timestamp.is_none());
    // Deleting the object removes it (the garbage collector follows the owner reference).
    ns.slabs()
        .delete(&id, &DeleteParams::default())
        .await
        .expect("delete");
    let deadline = std::time::Instant::now() + k8s::PATIENCE;
    while ns.pods().get_opt(&id).await.expect("read pod").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the Pod outlived its object"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_refused_by_pod_security_fails_at_once_and_a_restricted_app_runs() {
    let ns = TestNs::with_labels(
        "restricted",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let api = ns.api("t0ken");

    // An application container without a securityContext: admission refuses the Pod, and
    // the backend fails at once with the API server's words (issue 15, fault 3: it stayed
    // without status until its startup timeout).
    let (code, spawned) = api
        .post(
            "/v1/backends",
            json!({"executable": {"image": "spawner:test"}}),
        )
        .await;
    assert_eq!(code, 201, "{spawned}");
    let id = spawned["id"].as_str().expect("id").to_string();
    let obj = ns.wait_state(&id, State::Failed).await;
    let why = reason(&obj);
    assert!(
        why.starts_with("the API server refused its Pod: ")
            && why.contains("violates PodSecurity \"restricted:latest\""),
        "{why}"
    );
    // Only the application container is named: the sidecar complies.
    assert!(why.contains("\"app\""), "{why}");
    assert!(!why.contains("spawner-sidecar"), "{why}");
    let events = ns.events_of(&id);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Warning Failed: the API server refused its Pod")),
        "{events:?}"
    );
    let rec = api.get_json(&format!("/v1/backends/{id}")).await;
    assert_eq!(rec["state"], "Failed");

    // The application container's securityContext comes from the spec: a compliant one
    // makes a Pod the restricted namespace admits.
    let obj: SessionLivedBackend = serde_json::from_value(json!({
        "apiVersion": "spawner.dev/v1", "kind": "SessionLivedBackend",
        "metadata": {"name": "nonroot"},
        "spec": {"template": {"containers": [{
            "name": "app", "image": "spawner:test",
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 1000, "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}
            }
        }]}}
    }))
    .expect("object");
    ns.slabs()
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    ns.wait_state("nonroot", State::Constructed).await;
    ns.pod("nonroot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_by_hand_is_lost_even_if_its_app_exits_0() {
    let ns = TestNs::new("lost").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let mut sweeper = ns.sweeper();
    ns.create_slab("b1", json!({})).await;
    ns.run_pod("b1").await;
    ns.wait_state("b1", State::Ready).await;
    // Someone deletes the Pod; its application exits 0 on SIGTERM (issue 15, fault 6:
    // the backend ended Terminated, as if it had finished).
    ns.exit_on_delete("b1", 0);
    ns.pods()
        .delete("b1", &DeleteParams::default())
        .await
        .expect("delete the Pod");
    let obj = ns.wait_state("b1", State::Failed).await;
    assert_eq!(reason(&obj), "lost: its Pod was deleted, not by Spawner");
    assert!(sweeper.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_warns_when_it_cannot_reach_a_sidecar() {
    let ns = TestNs::new("unreach").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let mut sweeper = ns.sweeper();
    ns.create_slab("b1", json!({})).await;
    // The Pod runs, but nothing answers on its address (as behind a firewall).
    ns.run_pod_with("b1", false).await;
    ns.wait_state("b1", State::Running).await;
    // At warn, not debug (issue 15, fault 6: 24 s of silence).
    sweeper.wait_for_log("WARN");
    let log = sweeper.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("sidecar not reachable") && l.contains("b1")),
        "{log}"
    );
    assert!(sweeper.stop().success());
}

/// A stand-in sidecar: its first event stream says "not ready" once and breaks (as when a
/// sidecar restarts); later ones say "ready" every 100 ms. Returns its port.
async fn breaking_sidecar() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                let ok = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                if stream.write_all(ok.as_bytes()).await.is_err() {
                    return;
                }
                let report = json!({"ready": n > 1, "live_connections": 0,
                                    "seconds_since_active": 0.5, "requests": n});
                let event = format!("data: {report}\n\n");
                while stream.write_all(event.as_bytes()).await.is_ok() && n > 1 {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            });
        }
    });
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_event_stream_is_followed_again() {
    let ns = TestNs::new("reconn").await;
    let (port, accepted) = breaking_sidecar().await;
    ns.create_slab("b1", json!({"spawner.dev/node": k8s::NODE}))
        .await;
    // Running on the node, as the controller records it.
    let mut st = spawner_k8s::SessionLivedBackendStatus::default();
    for s in [
        State::Submitted,
        State::Constructed,
        State::Scheduled,
        State::Running,
    ] {
        st.enter(s, spawner_core::time::now_millis(), None, None);
    }
    st.node_name = Some(k8s::NODE.into());
    st.ip = Some("127.0.0.1".into());
    st.port = Some(port);
    ns.slabs()
        .patch_status(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": st })),
        )
        .await
        .expect("status");
    let mut sweeper = ns.sweeper();
    // Only the second stream says ready: Ready means the sweeper connected again.
    ns.wait_state("b1", State::Ready).await;
    assert!(accepted.load(Ordering::SeqCst) >= 2);
    assert!(sweeper.stop().success());
}
