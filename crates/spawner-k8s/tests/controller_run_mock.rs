//! The controller as `spawner controller` runs it (kube-rs's Controller: list, watch, the
//! owned Pods' watch, the scheduler), against the mocked API server: a new object gets its
//! Pod and Service, and a change of its Pod (seen through the Pods' watch) moves it on.

mod support;

use kube::runtime::events::Reporter;
use serde_json::json;
use spawner_core::BackendSpec;
use spawner_k8s::controller::{run, ControllerConfig};
use spawner_k8s::naming::Urls;
use spawner_k8s::pod::PodConfig;
use spawner_k8s::SessionLivedBackend;
use std::time::Duration;
use support::Fake;

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn the_running_controller_reacts_to_objects_and_their_pods() {
    let (fake, client) = Fake::start();
    let config = ControllerConfig {
        pod: PodConfig {
            sidecar_image: "spawner:test".into(),
            sidecar_port: 9090,
            stop_grace_seconds: 10,
            urls: Urls::new("http://router.test", None),
        },
        retention: Duration::from_secs(60),
        resync: Duration::from_secs(300),
    };
    let reporter = Reporter {
        controller: "spawner-controller".into(),
        instance: None,
    };
    let controller =
        tokio::spawn(async move { run(client, Some("default"), config, reporter, None).await });

    let spec: BackendSpec =
        serde_json::from_value(json!({"executable": {"image": "app:1"}})).expect("spec");
    let obj = SessionLivedBackend::from_backend_spec("b1", &spec).expect("converts");
    let mut json = serde_json::to_value(&obj).expect("json");
    // Created now: the controller runs on the real clock (an old object would time out).
    json["metadata"]["creationTimestamp"] =
        json!(spawner_core::time::rfc3339(spawner_core::time::now_millis()));
    fake.put("sessionlivedbackends", json);
    eventually("the Pod and Service", || {
        fake.get("pods", "b1").is_some() && fake.get("services", "b1").is_some()
    })
    .await;
    eventually("Constructed", || {
        fake.get("sessionlivedbackends", "b1")
            .is_some_and(|o| o["status"]["state"] == "Constructed")
    })
    .await;

    // The kubelet runs it: only the Pod changes; the owned-Pods watch must bring it back.
    fake.update("pods", "b1", |p| {
        p["spec"]["nodeName"] = json!("node-a");
        p["status"] = json!({"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
            {"name": "app", "image": "app:1", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]});
    });
    eventually("Running with its node label", || {
        fake.get("sessionlivedbackends", "b1").is_some_and(|o| {
            o["status"]["state"] == "Running"
                && o["metadata"]["labels"]["spawner.dev/node"] == "node-a"
        })
    })
    .await;
    let log = fake.take_log();
    assert!(
        log.iter().any(|l| l.path.ends_with("/pods")
            && l.query.contains("watch=true")
            && l.query
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dspawner")),
        "the owned Pods are watched by Spawner's label: {:?}",
        log.iter()
            .map(|l| format!("{} {}?{}", l.method, l.path, l.query))
            .collect::<Vec<_>>()
    );
    controller.abort();
}
