//! How Kubernetes-mode backends fail, on a real API server: crashes (the Pod and its
//! message kept), Pods the API server refuses (Pod Security admission), Pods deleted by
//! someone else, and sidecars the sweeper cannot reach.

mod k8s;

use k8s::TestNs;
use serde_json::json;
use spawner_core::State;
use spawner_k8s::kube::api::{DeleteParams, PostParams};
use spawner_k8s::SessionLivedBackend;

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
    let (code, text) = api.get(&format!("/v1/backends/{id}/logs")).await;
    assert!(
        !text.contains("not found"),
        "the logs route did not find the Pod: {code} {text}"
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
    let obj: SessionLivedBackend = serde_json::from_value(json!({
        "apiVersion": "spawner.dev/v1", "kind": "SessionLivedBackend",
        "metadata": {"name": "b1"},
        "spec": {"template": {"containers": [{"name": "app", "image": "spawner:test"}]}}
    }))
    .expect("object");
    ns.slabs()
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
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
    let obj: SessionLivedBackend = serde_json::from_value(json!({
        "apiVersion": "spawner.dev/v1", "kind": "SessionLivedBackend",
        "metadata": {"name": "b1"},
        "spec": {"template": {"containers": [{"name": "app", "image": "spawner:test"}]}}
    }))
    .expect("object");
    ns.slabs()
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
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
