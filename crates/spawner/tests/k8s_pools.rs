//! Warm pools on Kubernetes, through `spawner api` on a real API server with the
//! controller and the sweeper running, each as its own service account: claims, refill
//! to `min_ready`, resize, drain, concurrent claims of one key (from two API replicas),
//! the claim hook, and a restart of the controller and the API with a pool.
//! The test plays the kubelet for every Pod the controller creates ([`TestNs::run_pod`]).

mod k8s;

use k8s::{ApiProc, TestNs, PATIENCE};
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{json, Value};
use spawner_core::State;
use spawner_k8s::kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use spawner_k8s::kube::ResourceExt;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const TOKEN: &str = "t0ken";

fn pool_body(name: &str, min_ready: u32, max: u32, claim_path: Option<&str>) -> Value {
    let mut template = json!({
        "executable": {"image": "spawner:test", "port": 8000},
        "labels": {"app": "nb"},
        "grace_period_seconds": 300
    });
    if let Some(p) = claim_path {
        template["claim_path"] = json!(p);
    }
    json!({"name": name, "template": template, "min_ready": min_ready, "max": max})
}

/// Plays the kubelet for every Pod of the namespace not yet run.
async fn run_new_pods(ns: &TestNs, seen: &mut HashSet<String>) {
    let pods = ns.pods().list(&ListParams::default()).await.expect("pods");
    for p in pods.items {
        let name = p.name_any();
        let unbound = p.spec.as_ref().is_none_or(|s| s.node_name.is_none());
        if p.metadata.deletion_timestamp.is_none() && unbound && seen.insert(name.clone()) {
            ns.run_pod(&name).await;
        }
    }
}

/// Runs new Pods until the pool's status satisfies `ok`; returns that status.
async fn wait_pool(
    ns: &TestNs,
    api: &ApiProc,
    seen: &mut HashSet<String>,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        run_new_pods(ns, seen).await;
        let (code, text) = api.get(&format!("/v1/pools/{name}")).await;
        let status: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if code == 200 && ok(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "pool {name}: never {what}; last: {code} {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn counts(s: &Value) -> (u64, u64, u64) {
    (
        s["ready"].as_u64().unwrap_or(99),
        s["starting"].as_u64().unwrap_or(99),
        s["claimed"].as_u64().unwrap_or(99),
    )
}

/// Claims (POST /v1/backends with "pool") while playing the kubelet, so that a claim
/// waiting for a new member gets it.
async fn claim(
    ns: &TestNs,
    api: &ApiProc,
    seen: &mut HashSet<String>,
    body: Value,
) -> (u16, Value) {
    let req = api
        .http()
        .post(format!("{}/v1/backends", api.url))
        .bearer_auth(&api.token)
        .json(&body)
        .send();
    tokio::pin!(req);
    loop {
        tokio::select! {
            r = &mut req => {
                let r = r.expect("POST");
                let code = r.status().as_u16();
                return (code, r.json().await.unwrap_or(Value::Null));
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => run_new_pods(ns, seen).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_refill_claim_resize_and_drain() {
    let ns = TestNs::new("pools").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let _sweeper = ns.sweeper();
    let api = ns.api(TOKEN);
    let mut seen = HashSet::new();

    // Bad input: 4xx naming the field, nothing created.
    let cases = [
        (pool_body("Bad_Name", 1, 2, None), 400, "name"),
        (pool_body("p", 3, 2, None), 400, "min_ready"),
        (
            json!({"name": "p", "template": {"executable": {"command": ["app"]}}, "min_ready": 1, "max": 2}),
            400,
            "template.executable.image",
        ),
        (
            json!({"name": "p", "template": {"executable": {"image": "a"}, "idle_timeout_seconds": 0}, "min_ready": 1, "max": 2}),
            400,
            "idle_timeout_seconds",
        ),
    ];
    for (body, code, needle) in cases {
        let (got, resp) = api.post("/v1/pools", body.clone()).await;
        assert_eq!(got, code, "{body}: {resp}");
        assert!(
            resp["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{body}: {resp}"
        );
    }
    assert_eq!(api.get_json("/v1/pools").await["pools"], json!([]));

    let (code, created) = api.post("/v1/pools", pool_body("nb", 2, 4, None)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["min_ready"], 2);
    assert_eq!(created["template"]["executable"]["image"], "spawner:test");
    let (code, again) = api.post("/v1/pools", pool_body("nb", 2, 4, None)).await;
    assert_eq!((code, again["error"].as_str()), (409, Some("pool_exists")));

    // Refill to min_ready: two members, run, marked Ready by the sweeper.
    wait_pool(&ns, &api, &mut seen, "nb", "2 Ready", |s| {
        counts(s) == (2, 0, 0)
    })
    .await;

    // A claim answers with a Ready backend and its claim's key, labels and grace.
    let (code, resp) = claim(
        &ns,
        &api,
        &mut seen,
        json!({"pool": "nb", "key": "doc-1", "labels": {"owner": "u-7"}, "grace_period_seconds": 60}),
    )
    .await;
    assert_eq!(code, 201, "{resp}");
    assert_eq!(resp["state"], "Ready");
    assert_eq!(resp["key"], "doc-1");
    let claimed = resp["id"].as_str().expect("id").to_string();
    let record = api.get_json(&format!("/v1/backends/{claimed}")).await;
    assert_eq!(
        record["spec"]["labels"],
        json!({"app": "nb", "owner": "u-7"})
    );
    assert_eq!(record["spec"]["grace_period_seconds"], 60);
    assert_eq!(record["key"], "doc-1");
    // Get-or-create by key finds the claimed member, by claim and by plain spawn.
    let (code, same) = claim(&ns, &api, &mut seen, json!({"pool": "nb", "key": "doc-1"})).await;
    assert_eq!(
        (code, same["id"].as_str()),
        (200, Some(claimed.as_str())),
        "{same}"
    );
    let (code, same) = api
        .post(
            "/v1/backends",
            json!({"key": "doc-1", "executable": {"image": "spawner:test"}}),
        )
        .await;
    assert_eq!(
        (code, same["id"].as_str()),
        (200, Some(claimed.as_str())),
        "{same}"
    );
    let by_key = api.get_json("/v1/backends?key=doc-1").await;
    assert_eq!(
        by_key["backends"].as_array().map(Vec::len),
        Some(1),
        "{by_key}"
    );

    // The replacement: back to two unclaimed Ready, one claimed.
    wait_pool(&ns, &api, &mut seen, "nb", "refilled", |s| {
        counts(s) == (2, 0, 1)
    })
    .await;
    let list = api.get_json("/v1/pools").await;
    assert_eq!(list["pools"][0]["name"], "nb");
    assert!(list["pools"][0]["claims"].as_u64() >= Some(1), "{list}");

    // Resize: max 2 with one claimed leaves room for one unclaimed; the surplus stops.
    let r = api
        .http()
        .put(format!("{}/v1/pools/nb", api.url))
        .bearer_auth(TOKEN)
        .json(&json!({"min_ready": 1, "max": 2}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status().as_u16(), 200);
    wait_pool(&ns, &api, &mut seen, "nb", "shrunk", |s| {
        counts(s) == (1, 0, 1) && s["max"] == 2
    })
    .await;
    let r = api
        .http()
        .put(format!("{}/v1/pools/nb", api.url))
        .bearer_auth(TOKEN)
        .json(&json!({"min_ready": 3, "max": 2}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status().as_u16(), 400);

    // Drain: the unclaimed member stops, the claimed one runs on.
    let r = api
        .http()
        .delete(format!("{}/v1/pools/nb", api.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 202);
    let drained: Value = r.json().await.expect("json");
    assert_eq!(drained, json!({"name": "nb", "stopping": 1}));
    let (code, _) = api.get("/v1/pools/nb").await;
    assert_eq!(code, 404);
    let members = ns
        .slabs()
        .list(&ListParams::default().labels("spawner.dev/pool=nb"))
        .await
        .expect("members");
    for m in members.items.iter().filter(|m| m.name_any() != claimed) {
        ns.wait_slab(&m.name_any(), "ended", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.state)
                .is_some_and(|s| s >= State::Terminating)
        })
        .await;
    }
    let (code, resp) = claim(&ns, &api, &mut seen, json!({"pool": "nb"})).await;
    assert_eq!((code, resp["error"].as_str()), (404, Some("not_found")));
    let obj = ns.slabs().get(&claimed).await.expect("claimed backend");
    assert_eq!(obj.status.and_then(|s| s.state), Some(State::Ready));
    // Each component's Role grants what it did.
    for log in [controller.log_text(), api.proc.log_text()] {
        assert!(!log.contains("forbidden"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_of_one_key_from_two_api_replicas_get_one_backend() {
    let ns = TestNs::new("poolkey").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let _sweeper = ns.sweeper();
    let a = ns.api(TOKEN);
    let b = ns.api(TOKEN);
    let mut seen = HashSet::new();
    let (code, resp) = a.post("/v1/pools", pool_body("ed", 3, 8, None)).await;
    assert_eq!(code, 201, "{resp}");
    wait_pool(&ns, &a, &mut seen, "ed", "3 Ready", |s| counts(s).0 == 3).await;

    // Six claims of one key at once, three through each replica.
    let mut calls = Vec::new();
    for i in 0..6 {
        let url = if i % 2 == 0 { &a.url } else { &b.url };
        let req = reqwest::Client::new()
            .post(format!("{url}/v1/backends"))
            .bearer_auth(TOKEN)
            .json(&json!({"pool": "ed", "key": "shared-doc"}))
            .send();
        calls.push(tokio::spawn(async move {
            let r = req.await.expect("POST");
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.expect("json"))
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for c in calls {
        let (code, resp) = c.await.expect("claim");
        assert!(code == 201 || code == 200, "{code} {resp}");
        created += usize::from(code == 201);
        ids.insert(resp["id"].as_str().expect("id").to_string());
    }
    assert_eq!(ids.len(), 1, "one backend per key: {ids:?}");
    assert_eq!(created, 1, "one claim took a member, the others found it");
    // Claims and plain spawns of a new key at once, through both replicas: one backend.
    // (The calls below do not play the kubelet: the refill is Ready first.)
    wait_pool(&ns, &a, &mut seen, "ed", "refilled", |s| counts(s).0 == 3).await;
    let mut calls = Vec::new();
    for i in 0..6 {
        let url = if i % 2 == 0 { &a.url } else { &b.url };
        let body = if i < 3 {
            json!({"pool": "ed", "key": "mixed-doc"})
        } else {
            json!({"key": "mixed-doc", "executable": {"image": "spawner:test"}})
        };
        let req = reqwest::Client::new()
            .post(format!("{url}/v1/backends"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send();
        calls.push(tokio::spawn(async move {
            let r = req.await.expect("POST");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }));
    }
    let mut mixed = HashSet::new();
    for c in calls {
        let (code, resp) = c.await.expect("call");
        assert!(code == 201 || code == 200, "{code} {resp}");
        mixed.insert(resp["id"].as_str().expect("id").to_string());
    }
    assert_eq!(mixed.len(), 1, "one backend per key: {mixed:?}");
    let mixed_id = mixed.into_iter().next().expect("id");
    let by_key = a.get_json("/v1/backends?key=mixed-doc").await;
    assert_eq!(
        by_key["backends"].as_array().map(Vec::len),
        Some(1),
        "{by_key}"
    );
    // If a claim won, that member is claimed; if a spawn won, no member was.
    let claimed_now = a.get_json("/v1/pools/ed").await["claimed"].as_u64();
    let is_member = ns
        .slabs()
        .get(&mixed_id)
        .await
        .expect("object")
        .labels()
        .contains_key("spawner.dev/pool");
    assert_eq!(claimed_now, Some(if is_member { 2 } else { 1 }));
    // Two replicas, claims without a key at once: distinct members, never one twice.
    wait_pool(&ns, &a, &mut seen, "ed", "refilled", |s| counts(s).0 == 3).await;
    let mut calls = Vec::new();
    for i in 0..2 {
        let url = if i == 0 { &a.url } else { &b.url };
        let req = reqwest::Client::new()
            .post(format!("{url}/v1/backends"))
            .bearer_auth(TOKEN)
            .json(&json!({"pool": "ed"}))
            .send();
        calls.push(tokio::spawn(async move {
            let r = req.await.expect("POST");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }));
    }
    for c in calls {
        let (code, resp) = c.await.expect("claim");
        assert_eq!(code, 201, "{resp}");
        assert!(
            ids.insert(resp["id"].as_str().expect("id").to_string()),
            "a member handed out twice"
        );
    }
    let status = a.get_json("/v1/pools/ed").await;
    assert_eq!(
        status["claimed"].as_u64(),
        claimed_now.map(|n| n + 2),
        "{status}"
    );
    // A key's Lease left by an API that stopped mid-claim is taken over once expired.
    let id = spawner_k8s::model::naming::name_for_key(TOKEN.as_bytes(), &ns.name, "orphan-doc");
    let leases: Api<Lease> = Api::namespaced(ns.admin.clone(), &ns.name);
    let stale: Lease = serde_json::from_value(json!({
        "metadata": {"name": format!("spawner-key-{id}")},
        "spec": {"acquireTime": "2020-01-01T00:00:00.000000Z", "leaseDurationSeconds": 30}
    }))
    .expect("lease");
    leases
        .create(&PostParams::default(), &stale)
        .await
        .expect("a stale Lease");
    let (code, resp) = a
        .post("/v1/backends", json!({"pool": "ed", "key": "orphan-doc"}))
        .await;
    assert_eq!(code, 201, "{resp}");
    // Then it names the member claimed for the key, and is owned by it.
    let member = resp["id"].as_str().expect("id").to_string();
    ns.wait_key_lease_names(id.as_str(), &member).await;
    // The key's claims find it through the Lease, on either replica.
    for api in [&a, &b] {
        let (code, again) = api
            .post("/v1/backends", json!({"pool": "ed", "key": "orphan-doc"}))
            .await;
        assert_eq!((code, &again["id"]), (200, &json!(member)), "{again}");
    }
    // A member claimed with the key that no Lease names (by an earlier Spawner) is found
    // all the same, and named.
    leases
        .delete(&format!("spawner-key-{id}"), &Default::default())
        .await
        .expect("delete the Lease");
    let (code, again) = b
        .post("/v1/backends", json!({"pool": "ed", "key": "orphan-doc"}))
        .await;
    assert_eq!((code, &again["id"]), (200, &json!(member)), "{again}");
    ns.wait_key_lease_names(id.as_str(), &member).await;
    // It goes with the member's object (the garbage collector).
    ns.slabs()
        .delete(&member, &Default::default())
        .await
        .expect("delete the member");
    let deadline = Instant::now() + PATIENCE;
    while leases
        .get_opt(&format!("spawner-key-{id}"))
        .await
        .expect("read")
        .is_some()
    {
        assert!(Instant::now() < deadline, "the Lease outlived its backend");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for log in [a.proc.log_text(), b.proc.log_text()] {
        assert!(!log.contains("forbidden"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_hook_and_a_restart_with_a_pool() {
    let ns = TestNs::new("poolhook").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let _sweeper = ns.sweeper();
    let mut api = ns.api(TOKEN);
    let mut seen = HashSet::new();
    let (code, resp) = api
        .post("/v1/pools", pool_body("hooked", 1, 3, Some("/claim")))
        .await;
    assert_eq!(code, 201, "{resp}");
    let status = wait_pool(&ns, &api, &mut seen, "hooked", "1 Ready", |s| {
        counts(s) == (1, 0, 0)
    })
    .await;
    assert_eq!(status["template"]["claim_path"], "/claim");

    // A member whose address answers nothing refuses its claim: it is stopped, not handed
    // out, and the claim gets another one.
    let members = ns
        .slabs()
        .list(&ListParams::default().labels("spawner.dev/pool=hooked"))
        .await
        .expect("members");
    let refusing = members.items[0].name_any();
    let dead_port = k8s::free_port();
    ns.slabs()
        .patch_status(
            &refusing,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"port": dead_port}})),
        )
        .await
        .expect("status patch");
    let (code, resp) = claim(
        &ns,
        &api,
        &mut seen,
        json!({"pool": "hooked", "key": "doc-9", "labels": {"owner": "u-1"}, "wait_seconds": 60}),
    )
    .await;
    assert_eq!(code, 201, "{resp}");
    let id = resp["id"].as_str().expect("id").to_string();
    assert_ne!(id, refusing, "the refusing member was handed out");
    let refused = ns
        .wait_slab(&refusing, "stopped", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.state)
                .is_some_and(|s| s >= State::Terminating)
        })
        .await;
    assert_eq!(refused.spec.key, None, "the refusing member keeps no key");
    // It ends for the refusal, as on the embedded server, with what it answered.
    let history = refused.status.clone().unwrap_or_default().history;
    assert!(
        history
            .iter()
            .any(|h| h.state == State::Terminating && h.reason.as_deref() == Some("claim refused")),
        "{history:?}"
    );
    assert!(
        history.iter().any(|h| h
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("claim refused: "))),
        "{history:?}"
    );
    // The claimed one says where it came from: its pool, the claim's time and event.
    let record = api.get_json(&format!("/v1/backends/{id}")).await;
    assert_eq!(record["pool"], "hooked", "{record}");
    assert!(record["claimed_at"].is_string(), "{record}");
    let claim_event = record["events"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["reason"] == "claimed with key doc-9"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(claim_event["state"], "Ready", "{record}");
    let spare = api.get_json("/v1/backends?label=spawner.dev/pool").await;
    assert!(
        spare["backends"]
            .as_array()
            .is_some_and(|bs| bs.iter().all(|b| b["pool"] == "hooked")),
        "{spare}"
    );
    let by_key = api.get_json("/v1/backends?key=doc-9").await;
    assert_eq!(
        by_key["backends"].as_array().map(Vec::len),
        Some(1),
        "{by_key}"
    );
    // The hook reached the application with the claim's key and labels.
    let ip = ns.pod_ip(&id).expect("a local Pod");
    let seen_claim: Value = reqwest::get(format!("http://{ip}:{}/claim", ns.sidecar_port))
        .await
        .expect("GET /claim")
        .json()
        .await
        .expect("json");
    assert_eq!(seen_claim["key"], "doc-9");
    assert_eq!(seen_claim["labels"]["owner"], "u-1");

    // Restart: the controller and the API stop; the pool, its members and the claim remain.
    wait_pool(&ns, &api, &mut seen, "hooked", "refilled", |s| {
        counts(s) == (1, 0, 1)
    })
    .await;
    controller.stop();
    api.proc.stop();
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let api = ns.api(TOKEN);
    let status = wait_pool(&ns, &api, &mut seen, "hooked", "kept", |s| {
        counts(s) == (1, 0, 1)
    })
    .await;
    assert_eq!(status["min_ready"], 1);
    let (code, again) = claim(
        &ns,
        &api,
        &mut seen,
        json!({"pool": "hooked", "key": "doc-9"}),
    )
    .await;
    assert_eq!((code, again["id"].as_str()), (200, Some(id.as_str())));
    let (code, other) = claim(
        &ns,
        &api,
        &mut seen,
        json!({"pool": "hooked", "key": "doc-10"}),
    )
    .await;
    assert_eq!(code, 201, "{other}");
    wait_pool(
        &ns,
        &api,
        &mut seen,
        "hooked",
        "refilled after the restart",
        |s| counts(s) == (1, 0, 2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_member_is_not_swept_and_a_claimed_one_from_its_claim() {
    let ns = TestNs::new("poolsweep").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let _sweeper = ns.sweeper();
    let api = ns.api(TOKEN);
    let mut seen = HashSet::new();
    let mut body = pool_body("short", 1, 2, None);
    body["template"]["grace_period_seconds"] = json!(1);
    let (code, resp) = api.post("/v1/pools", body).await;
    assert_eq!(code, 201, "{resp}");
    wait_pool(&ns, &api, &mut seen, "short", "1 Ready", |s| {
        counts(s) == (1, 0, 0)
    })
    .await;
    // Several grace periods unclaimed and idle: still Ready.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = api.get_json("/v1/pools/short").await;
    assert_eq!(counts(&status), (1, 0, 0), "{status}");
    // Claimed with no connection: swept after its grace, counted from the claim.
    let (code, resp) = claim(&ns, &api, &mut seen, json!({"pool": "short"})).await;
    assert_eq!(code, 201, "{resp}");
    let id = resp["id"].as_str().expect("id").to_string();
    ns.wait_state(&id, State::Swept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_with_none_ready_starts_one_or_waits_and_metrics_count_it() {
    let ns = TestNs::new("poolcold").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let _sweeper = ns.sweeper();
    let api = ns.api(TOKEN);
    let mut seen = HashSet::new();
    let (code, resp) = api.post("/v1/pools", pool_body("cold", 0, 1, None)).await;
    assert_eq!(code, 201, "{resp}");
    assert_eq!(counts(&resp), (0, 0, 0));
    // None Ready, min_ready 0: the claim starts one and answers it once Ready.
    let (code, resp) = claim(&ns, &api, &mut seen, json!({"pool": "cold"})).await;
    assert_eq!(code, 201, "{resp}");
    assert_eq!(resp["state"], "Ready");
    let status = api.get_json("/v1/pools/cold").await;
    assert_eq!(counts(&status), (0, 0, 1), "{status}");
    assert_eq!(
        (status["claims"].as_u64(), status["cold_claims"].as_u64()),
        (Some(1), Some(1))
    );
    // The pool is at its max: a claim that waits gets 503 pool_exhausted.
    let (code, resp) = claim(
        &ns,
        &api,
        &mut seen,
        json!({"pool": "cold", "if_none_ready": "wait", "wait_seconds": 1}),
    )
    .await;
    assert_eq!(
        (code, resp["error"].as_str()),
        (503, Some("pool_exhausted")),
        "{resp}"
    );
    let (code, resp) = claim(
        &ns,
        &api,
        &mut seen,
        json!({"pool": "cold", "wait_seconds": 0}),
    )
    .await;
    assert_eq!(code, 400, "{resp}");
    assert!(
        resp["message"]
            .as_str()
            .is_some_and(|m| m.contains("wait_seconds")),
        "{resp}"
    );
    let (_, metrics) = api.get("/metrics").await;
    assert!(
        metrics.contains("spawner_pool_claimed{pool=\"cold\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("spawner_pool_cold_claims_total{pool=\"cold\"} 1"),
        "{metrics}"
    );
}

/// A hook that refuses every claim (the application has no such route: 404): each refused
/// member ends with the reason `claim refused`, refusals hold starts back as failures do
/// (a handful of members in 3 s, not one per Ready), and the claim's 503 says that the hook
/// refused, quoting its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_refuses_every_claim_is_named_and_does_not_cycle_members() {
    let ns = TestNs::new("poolnohook").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let _sweeper = ns.sweeper();
    let api = ns.api(TOKEN);
    let mut seen = HashSet::new();
    let (code, resp) = api
        .post(
            "/v1/pools",
            pool_body("refusing", 1, 2, Some("/no-such-route")),
        )
        .await;
    assert_eq!(code, 201, "{resp}");
    wait_pool(&ns, &api, &mut seen, "refusing", "1 Ready", |s| {
        counts(s) == (1, 0, 0)
    })
    .await;
    let (code, err) = claim(
        &ns,
        &api,
        &mut seen,
        json!({"pool": "refusing", "key": "k", "wait_seconds": 3}),
    )
    .await;
    assert_eq!(code, 503, "{err}");
    assert_eq!(err["error"], "pool_exhausted");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("claim hook (/no-such-route)")
            && message.contains("the hook refused")
            && message.contains("404")
            && !message.contains("raise its max"),
        "{message}"
    );
    let members = ns
        .slabs()
        .list(&ListParams::default().labels("spawner.dev/pool=refusing"))
        .await
        .expect("members")
        .items;
    let refused: Vec<_> = members
        .iter()
        .filter(|m| {
            m.annotations().get("spawner.dev/stop").map(String::as_str) == Some("claim refused")
        })
        .collect();
    assert!(!refused.is_empty(), "{members:?}");
    assert!(
        refused.len() <= 8,
        "{} members refused in 3 s",
        refused.len()
    );
    let first = refused[0].name_any();
    let ended = ns
        .wait_slab(&first, "stopped for the refusal", |o| {
            o.status.as_ref().is_some_and(|s| {
                s.history.iter().any(|h| {
                    h.state == State::Terminating && h.reason.as_deref() == Some("claim refused")
                })
            })
        })
        .await;
    assert_eq!(ended.spec.key, None);
}
