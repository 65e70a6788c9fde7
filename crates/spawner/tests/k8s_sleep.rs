//! Sleep and wake on Kubernetes, end to end on a real API server (see tests/k8s/mod.rs):
//! `spawner api`, the controller, the sweeper and the router as processes with their own
//! service accounts' tokens, the stand-in kubelet running each Pod (the first and the one
//! re-created by a wake) as a real sidecar and application.

mod k8s;

use futures_util::StreamExt;
use k8s::TestNs;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use serde_json::{json, Value};
use spawner_core::State;
use spawner_k8s::kube::api::Api;
use spawner_k8s::SessionLivedBackend;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Spawns the example application with `extra` spec fields, plays the kubelet for its Pod
/// and waits for Ready. Returns the id.
async fn ready_backend(ns: &TestNs, api: &k8s::ApiProc, extra: Value) -> String {
    let mut body =
        json!({"executable": {"image": "spawner:test", "command": ["spawner", "example-app"]}});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (code, spawned) = api.post("/v1/backends", body).await;
    assert_eq!(code, 201, "{spawned}");
    let id = spawned["id"].as_str().expect("id").to_string();
    ns.run_pod(&id).await;
    ns.wait_state(&id, State::Ready).await;
    id
}

/// The uid of the backend's Pod now.
async fn pod_uid(ns: &TestNs, id: &str) -> String {
    ns.pod(id).await.metadata.uid.expect("uid")
}

/// Waits until the backend is Sleeping and its Pod (uid `old`) is gone; returns the object.
async fn asleep(ns: &TestNs, id: &str) -> SessionLivedBackend {
    let obj = ns.wait_state(id, State::Sleeping).await;
    let deadline = Instant::now() + k8s::PATIENCE;
    while ns.pods().get_opt(id).await.expect("read pod").is_some() {
        assert!(
            Instant::now() < deadline,
            "{id}: its Pod stayed while asleep"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    obj
}

/// Plays the kubelet for the Pod the controller creates again on a wake: waits for a Pod
/// other than `old` (the sleeper's), then runs it.
async fn run_new_pod(ns: &TestNs, id: &str, old: &str) {
    let deadline = Instant::now() + k8s::PATIENCE;
    loop {
        let pod = ns.pods().get_opt(id).await.expect("read pod");
        if pod.is_some_and(|p| {
            p.metadata.uid.as_deref() != Some(old) && p.metadata.deletion_timestamp.is_none()
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "{id}: no new Pod after the wake");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ns.run_pod(id).await;
}

/// The states of the backend's history, in order, with their reasons.
fn history(obj: &SessionLivedBackend) -> Vec<(State, String)> {
    obj.status
        .iter()
        .flat_map(|s| &s.history)
        .map(|h| (h.state, h.reason.clone().unwrap_or_default()))
        .collect()
}

fn states(obj: &SessionLivedBackend) -> Vec<State> {
    history(obj).into_iter().map(|(s, _)| s).collect()
}

/// Waits until the router routes to the backend (its watch has seen it Ready).
async fn routed(router_url: &str, id: &str) {
    let deadline = Instant::now() + k8s::PATIENCE;
    loop {
        let r = reqwest::get(format!("{router_url}/p/{id}/request"))
            .await
            .expect("GET through the router");
        if r.status().as_u16() == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "the router never routed to {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The logs of the backends' sidecars (the stand-in kubelet's processes), for a failure.
fn sidecar_logs(ns: &TestNs) -> String {
    std::fs::read_dir(ns.dir.path())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("sidecar"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

async fn post_status(api: &k8s::ApiProc, path: &str) -> (u16, Value) {
    api.post(path, json!({})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sleeper_sleeps_and_a_request_through_the_router_wakes_it() {
    let ns = TestNs::new("sleep").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let sweeper = ns.sweeper();
    let (router, router_url) = ns.router();
    let api = ns.api("t0ken");

    // An idle timeout puts it to sleep with its WebSocket open (nothing sent on it).
    let id = ready_backend(
        &ns,
        &api,
        json!({"idle_action": "sleep", "grace_period_seconds": 2, "idle_timeout_seconds": 3}),
    )
    .await;
    let first_pod = pod_uid(&ns, &id).await;
    routed(&router_url, &id).await;
    let ws_url = format!("{}/p/{id}/ws", router_url.replacen("http", "ws", 1));
    let (mut ws, resp) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("WebSocket through the router");
    assert_eq!(resp.status(), 101);

    // Its client hears why: 1001 "sleeping", as for a sweep but with the sleep's reason.
    let frame = loop {
        match tokio::time::timeout(k8s::PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => break f,
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "no close frame: {other:?}\nsidecars:\n{}",
                sidecar_logs(&ns)
            ),
        }
    };
    assert_eq!(frame.code, CloseCode::Away);
    assert_eq!(frame.reason.as_str(), "sleeping");

    // Pod deleted, object and Service kept, the sleep in the history.
    let obj = asleep(&ns, &id).await;
    let h = history(&obj);
    assert_eq!(
        h.last(),
        Some(&(State::Sleeping, "idle timeout".to_string())),
        "{h:?}"
    );
    let st = obj.status.as_ref().expect("status");
    assert!(st.sleeping && !st.waking && st.ip.is_none(), "{st:?}");
    assert!(st.stop_reason.is_none(), "a sleep is no stop: {st:?}");
    let services: Api<Service> = Api::namespaced(ns.admin.clone(), &ns.name);
    assert!(services.get_opt(&id).await.expect("read").is_some());
    // The API shows it asleep: record, list, metrics.
    let rec = api.get_json(&format!("/v1/backends/{id}")).await;
    assert_eq!(rec["state"], "Sleeping", "{rec}");
    assert_eq!(rec["spec"]["idle_action"], "sleep", "{rec}");
    let list = api.get_json("/v1/backends?state=Sleeping").await;
    assert!(
        list["backends"]
            .as_array()
            .is_some_and(|b| b.iter().any(|r| r["id"] == json!(id))),
        "{list}"
    );
    let (_, metrics) = api.get("/metrics").await;
    assert!(
        metrics.contains("spawner_backends{state=\"Sleeping\"} 1"),
        "{metrics}"
    );

    // Requests through the router wake it (once) and are held until the new Pod answers.
    let held: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("{router_url}/p/{id}/request");
            tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .get(url)
                    .timeout(k8s::PATIENCE)
                    .send()
                    .await
                    .expect("GET through the router");
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            })
        })
        .collect();
    ns.wait_state(&id, State::Waking).await;
    run_new_pod(&ns, &id, &first_pod).await;
    for request in held {
        let (code, body) = request.await.expect("a held request");
        assert_eq!(code, 200, "{body}");
    }
    let obj = ns.wait_state(&id, State::Ready).await;
    let tail: Vec<(State, String)> = history(&obj).into_iter().rev().take(3).collect();
    assert_eq!(
        tail,
        [
            (State::Ready, String::new()),
            (State::Waking, "woken by a request".to_string()),
            (State::Sleeping, "idle timeout".to_string()),
        ]
    );
    assert_ne!(pod_uid(&ns, &id).await, first_pod, "a new Pod");
    let (_, metrics) = api.get("/metrics").await;
    assert!(metrics.contains("spawner_wakes_total 1\n"), "{metrics}");
    assert!(
        metrics.contains("spawner_wake_to_ready_seconds_count 1\n"),
        "{metrics}"
    );
    k8s::assert_no_forbidden(&[&controller, &sweeper, &router, &api.proc]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wake_route_a_keyed_spawn_terminate_and_max_sleep() {
    let ns = TestNs::new("wake").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let sweeper = ns.sweeper();
    let api = ns.api("t0ken");

    // Unknown: 404.
    let (code, body) = post_status(&api, "/v1/backends/nosuchbackend/wake").await;
    assert_eq!(code, 404, "{body}");

    // A keyed sleeper: a spawn of its key wakes it (the same backend, 200).
    let spec = json!({"executable": {"image": "spawner:test", "command": ["spawner", "example-app"]},
                      "key": "doc-1", "idle_action": "sleep", "grace_period_seconds": 2});
    let (code, spawned) = api.post("/v1/backends", spec.clone()).await;
    assert_eq!(code, 201, "{spawned}");
    let id = spawned["id"].as_str().expect("id").to_string();
    ns.run_pod(&id).await;
    ns.wait_state(&id, State::Ready).await;
    // Awake: a wake keeps it as it is.
    let (code, body) = post_status(&api, &format!("/v1/backends/{id}/wake")).await;
    assert_eq!((code, &body["state"]), (202, &json!("Ready")), "{body}");
    let pod = pod_uid(&ns, &id).await;
    asleep(&ns, &id).await;
    let (code, again) = api.post("/v1/backends", spec.clone()).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["id"], json!(id));
    let obj = ns.wait_state(&id, State::Waking).await;
    assert_eq!(
        history(&obj).last().map(|(_, r)| r.as_str()),
        Some("woken by a spawn or claim of its key")
    );
    run_new_pod(&ns, &id, &pod).await;
    ns.wait_state(&id, State::Ready).await;

    // Asleep again: POST wake answers Waking within the request, and again while waking.
    let pod = pod_uid(&ns, &id).await;
    asleep(&ns, &id).await;
    let (code, body) = post_status(&api, &format!("/v1/backends/{id}/wake")).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body, json!({"id": id, "state": "Waking"}));
    let (code, body) = post_status(&api, &format!("/v1/backends/{id}/wake")).await;
    assert_eq!((code, &body["state"]), (202, &json!("Waking")), "{body}");
    run_new_pod(&ns, &id, &pod).await;
    let obj = ns.wait_state(&id, State::Ready).await;
    let loops = states(&obj)
        .iter()
        .filter(|s| **s == State::Sleeping)
        .count();
    assert_eq!(loops, 2, "{:?}", states(&obj));

    // Terminated while asleep: no Pod to stop, Terminated at once.
    asleep(&ns, &id).await;
    let (code, body) = api
        .post(&format!("/v1/backends/{id}/terminate"), json!({}))
        .await;
    assert!(code == 200 || code == 202, "{code} {body}");
    ns.wait_state(&id, State::Terminated).await;
    let (code, body) = post_status(&api, &format!("/v1/backends/{id}/wake")).await;
    assert_eq!(code, 410, "{body}");
    assert_eq!(body["error"], "gone", "{body}");

    // Asleep for max_sleep_seconds: swept for good.
    let short = ready_backend(
        &ns,
        &api,
        json!({"idle_action": "sleep", "grace_period_seconds": 2, "max_sleep_seconds": 2}),
    )
    .await;
    asleep(&ns, &short).await;
    let obj = ns.wait_state(&short, State::Swept).await;
    assert_eq!(
        history(&obj).last(),
        Some(&(State::Swept, "slept for max_sleep_seconds".to_string()))
    );
    assert!(ns
        .events_of(&short)
        .iter()
        .any(|e| e.starts_with("Normal Swept")));
    k8s::assert_no_forbidden(&[&controller, &sweeper, &api.proc]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_controller_gives_each_sleeper_a_volume_owned_by_it() {
    let ns = TestNs::new("sleepvol").await;
    let mut controller = ns.controller(&["--sleep-volume-size", "1Gi"], &[]);
    controller.wait_for_log("controller started");
    let api = ns.api("t0ken");

    let (code, spawned) = api
        .post(
            "/v1/backends",
            json!({"executable": {"image": "spawner:test", "working_dir": "/srv"},
                   "idle_action": "sleep"}),
        )
        .await;
    assert_eq!(code, 201, "{spawned}");
    let id = spawned["id"].as_str().expect("id").to_string();
    let pod = ns.pod(&id).await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.admin.clone(), &ns.name);
    let claim = claims.get(&id).await.expect("the backend's claim");
    let obj = ns.slabs().get(&id).await.expect("object");
    let owner = &claim.metadata.owner_references.expect("owned")[0];
    assert_eq!(Some(&owner.uid), obj.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));
    let storage = claim
        .spec
        .and_then(|s| s.resources)
        .and_then(|r| r.requests)
        .map(|r| r["storage"].0.clone());
    assert_eq!(storage.as_deref(), Some("1Gi"));
    let spec = pod.spec.expect("pod spec");
    let app = &spec.containers[0];
    let mount = &app.volume_mounts.as_ref().expect("mounts")[0];
    assert_eq!(mount.mount_path, "/srv");
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("the volume");
    assert_eq!(
        volume
            .persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str()),
        Some(id.as_str())
    );
    assert!(k8s::container_env(&ns.pod(&id).await, "app")
        .contains(&("SPAWNER_DATA_DIR".to_string(), "/srv".to_string())));

    // A backend swept when idle gets none.
    let (code, swept) = api
        .post(
            "/v1/backends",
            json!({"executable": {"image": "spawner:test"}}),
        )
        .await;
    assert_eq!(code, 201, "{swept}");
    let other = swept["id"].as_str().expect("id").to_string();
    let pod = ns.pod(&other).await;
    assert!(pod.spec.and_then(|s| s.volumes).is_none());
    assert!(claims.get_opt(&other).await.expect("read").is_none());
    k8s::assert_no_forbidden(&[&controller, &api.proc]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_holds_an_upgrade_until_awake_and_answers_503_when_a_wake_fails() {
    let ns = TestNs::new("wakews").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let sweeper = ns.sweeper();
    let (router, router_url) = ns.router();
    let api = ns.api("t0ken");
    let ws_base = router_url.replacen("http", "ws", 1);

    // A WebSocket upgrade to a sleeper wakes it, is held, and is answered by the new Pod.
    let id = ready_backend(
        &ns,
        &api,
        json!({"idle_action": "sleep", "grace_period_seconds": 2}),
    )
    .await;
    let pod = pod_uid(&ns, &id).await;
    asleep(&ns, &id).await;
    let upgrade = tokio::spawn({
        let url = format!("{ws_base}/p/{id}/ws");
        async move {
            let (mut ws, resp) = tokio_tungstenite::connect_async(&url)
                .await
                .expect("WebSocket through the router");
            let first = tokio::time::timeout(k8s::PATIENCE, ws.next()).await;
            (resp.status().as_u16(), format!("{first:?}"))
        }
    });
    ns.wait_state(&id, State::Waking).await;
    run_new_pod(&ns, &id, &pod).await;
    let (code, greeting) = upgrade.await.expect("the held upgrade");
    assert_eq!(code, 101);
    assert!(greeting.contains("count "), "{greeting}");

    // A wake whose Pod never runs (nothing plays its kubelet): the held request gets 503
    // with Retry-After once the startup timeout, counted from the wake, fails it.
    let doomed = ready_backend(
        &ns,
        &api,
        json!({"idle_action": "sleep", "grace_period_seconds": 2}),
    )
    .await;
    asleep(&ns, &doomed).await;
    // Shortened once asleep, as an administrator could with kubectl: its first start had
    // the default's time, however slow this machine is.
    ns.slabs()
        .patch(
            &doomed,
            &spawner_k8s::kube::api::PatchParams::default(),
            &spawner_k8s::kube::api::Patch::Merge(json!({"spec": {"startupTimeoutSeconds": 2}})),
        )
        .await
        .expect("shorten the startup timeout");
    let r = reqwest::Client::new()
        .get(format!("{router_url}/p/{doomed}/request"))
        .timeout(k8s::PATIENCE)
        .send()
        .await
        .expect("GET through the router");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let obj = ns.wait_state(&doomed, State::Failed).await;
    let tail: Vec<State> = states(&obj).into_iter().rev().take(3).collect();
    assert_eq!(tail, [State::Failed, State::Terminating, State::Waking]);
    assert_eq!(
        obj.status.and_then(|s| s.stop_reason).as_deref(),
        Some("startup timeout")
    );
    k8s::assert_no_forbidden(&[&controller, &sweeper, &router, &api.proc]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_its_users_wake_a_token_mode_sleeper() {
    const ACCESS_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let ns = TestNs::new("wakeacc").await;
    let env = [
        ("SPAWNER_ACCESS_KEY", ACCESS_KEY),
        ("SPAWNER_ROUTER_KEY", "the-router-key-of-this-test-0123"),
    ];
    let mut controller = ns.controller(&[], &env);
    controller.wait_for_log("controller started");
    let sweeper = ns.sweeper();
    let api = ns.api_env("t0ken", &[], &env[..1]);
    let (router, router_url) = ns.router_env(&[], &env);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    let (code, body) = api
        .post(
            "/v1/backends",
            json!({"executable": {"image": "spawner:test"}, "access": {"user": "alice"},
                   "idle_action": "sleep", "grace_period_seconds": 2}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let connect = body["connect_url"]
        .as_str()
        .expect("connect_url")
        .to_string();
    ns.run_pod(&id).await;
    ns.wait_state(&id, State::Ready).await;
    // Alice's cookie, from her connect URL.
    let path = connect
        .strip_prefix("http://router.test")
        .expect("a router URL");
    let deadline = Instant::now() + k8s::PATIENCE;
    let cookie = loop {
        let r = client
            .get(format!("{router_url}{path}"))
            .send()
            .await
            .expect("GET the connect URL");
        if let Some(set) = r.headers().get("set-cookie") {
            let set = set.to_str().expect("text");
            break set.split(';').next().expect("a pair").to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no cookie for the connect URL: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pod = pod_uid(&ns, &id).await;
    asleep(&ns, &id).await;

    // Someone without access is refused, and wakes nothing.
    let r = client
        .get(format!("{router_url}/p/{id}/request"))
        .send()
        .await
        .expect("GET");
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());
    let obj = ns.slabs().get(&id).await.expect("object");
    assert_eq!(obj.status.and_then(|s| s.state), Some(State::Sleeping));

    // Alice's request wakes it and is answered by the new Pod.
    let held = tokio::spawn({
        let url = format!("{router_url}/p/{id}/request");
        let client = client.clone();
        async move {
            let r = client
                .get(url)
                .header("cookie", cookie)
                .timeout(k8s::PATIENCE)
                .send()
                .await
                .expect("GET with the cookie");
            r.status().as_u16()
        }
    });
    ns.wait_state(&id, State::Waking).await;
    run_new_pod(&ns, &id, &pod).await;
    assert_eq!(held.await.expect("the held request"), 200);
    k8s::assert_no_forbidden(&[&controller, &sweeper, &router, &api.proc]);
}

/// POSTs a claim, playing the kubelet for the pool's new Pods while it waits.
async fn claim(ns: &TestNs, api: &k8s::ApiProc, body: Value) -> (u16, Value) {
    let req = api
        .http()
        .post(format!("{}/v1/backends", api.url))
        .bearer_auth(&api.token)
        .json(&body)
        .send();
    tokio::pin!(req);
    let mut run = std::collections::HashSet::new();
    loop {
        tokio::select! {
            r = &mut req => {
                let r = r.expect("POST");
                let code = r.status().as_u16();
                return (code, r.json().await.unwrap_or(Value::Null));
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let pods = ns.pods().list(&Default::default()).await.expect("pods");
                for p in pods.items {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let unbound = p.spec.as_ref().is_none_or(|s| s.node_name.is_none());
                    if p.metadata.deletion_timestamp.is_none() && unbound && run.insert(name.clone()) {
                        ns.run_pod(&name).await;
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_member_claimed_to_sleep_is_woken_by_a_claim_of_its_key_with_its_volume() {
    let ns = TestNs::new("poolnap").await;
    let mut controller = ns.controller(&["--sleep-volume-size", "1Gi"], &[]);
    controller.wait_for_log("controller started");
    let sweeper = ns.sweeper();
    let api = ns.api("t0ken");
    let (code, body) = api
        .post(
            "/v1/pools",
            json!({"name": "naps", "min_ready": 1, "max": 3,
                   "template": {"executable": {"image": "spawner:test"}, "grace_period_seconds": 300}}),
        )
        .await;
    assert_eq!(code, 201, "{body}");

    // The template sweeps; the claim asks for sleep.
    let ask = json!({"pool": "naps", "key": "doc-9", "idle_action": "sleep",
                     "grace_period_seconds": 2});
    let (code, claimed) = claim(&ns, &api, ask.clone()).await;
    assert_eq!(code, 201, "{claimed}");
    let id = claimed["id"].as_str().expect("id").to_string();
    let obj = ns.slabs().get(&id).await.expect("object");
    assert_eq!(obj.spec.idle_action.as_deref(), Some("sleep"));
    let pod = pod_uid(&ns, &id).await;
    asleep(&ns, &id).await;

    // A claim of its key answers it, waking.
    let (code, again) = claim(&ns, &api, ask).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["id"], json!(id));
    ns.wait_state(&id, State::Waking).await;
    // Its first Pod (a member's, started to sweep) had no volume; the woken one has it.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.admin.clone(), &ns.name);
    let deadline = Instant::now() + k8s::PATIENCE;
    while claims.get_opt(&id).await.expect("read").is_none() {
        assert!(Instant::now() < deadline, "no claim for the woken member");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run_new_pod(&ns, &id, &pod).await;
    let woken = ns.pod(&id).await;
    assert!(k8s::container_env(&woken, "app")
        .contains(&("SPAWNER_DATA_DIR".to_string(), "/data".to_string())));
    ns.wait_state(&id, State::Ready).await;
    k8s::assert_no_forbidden(&[&controller, &sweeper, &api.proc]);
}
