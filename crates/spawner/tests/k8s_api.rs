//! `spawner api` on a real API server, as the service account `spawner-api` under
//! deploy/kubernetes's Role: the contract of docs/api.md backed by SessionLivedBackends.
//! No controller runs here: the test writes the status as the controller would (as admin),
//! so each answer is checked against a known object.

mod k8s;

use k8s::{ApiProc, TestNs};
use serde_json::{json, Value};
use spawner_core::State;
use spawner_k8s::kube::api::{DeleteParams, Patch, PatchParams};
use spawner_k8s::model::naming::name_for_key;
use spawner_k8s::SessionLivedBackendStatus;

const TOKEN: &str = "t0ken";

fn spawn_body() -> Value {
    json!({
        "executable": {"image": "registry.example/app:1", "env": {"MODE": "collab"}, "port": 8000},
        "labels": {"owner": "user-7"},
        "grace_period_seconds": 60
    })
}

/// Enters `states` in the object's status, as the controller would, plus `extra` fields.
async fn set_states(ns: &TestNs, id: &str, states: &[State], extra: Value) {
    let obj = ns.slabs().get(id).await.expect("object");
    let mut st: SessionLivedBackendStatus = obj.status.unwrap_or_default();
    for s in states {
        st.enter(*s, spawner_core::time::now_millis(), None, None);
    }
    let mut status = serde_json::to_value(st).expect("json");
    if let (Some(s), Some(e)) = (status.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    ns.slabs()
        .patch_status(
            id,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .expect("status patch");
}

async fn spawn(api: &ApiProc, body: Value) -> (u16, Value) {
    api.post("/v1/backends", body).await
}

async fn ids(api: &ApiProc, query: &str) -> Vec<String> {
    let list = api.get_json(&format!("/v1/backends{query}")).await;
    list["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_validate_get_or_create_list_and_terminate() {
    let ns = TestNs::new("api").await;
    let api = ns.api(TOKEN);

    // The contract's answer, and the object it creates.
    let (code, resp) = spawn(&api, spawn_body()).await;
    assert_eq!(code, 201, "{resp}");
    let id = resp["id"].as_str().expect("id").to_string();
    assert!(spawner_core::BackendId::parse(&id).is_ok());
    assert_eq!(resp["state"], "Submitted");
    assert_eq!(resp["url"], format!("http://router.test/p/{id}/"));
    assert_eq!(
        resp["status_stream_url"],
        format!("http://router.test/v1/backends/{id}/status/stream")
    );
    let obj = ns.slabs().get(&id).await.expect("the object");
    assert_eq!(
        serde_json::to_value(&obj.spec).expect("json"),
        json!({
            "template": {"containers": [{
                "name": "app", "image": "registry.example/app:1",
                "env": [{"name": "MODE", "value": "collab"}]
            }]},
            "gracePeriodSeconds": 60, "httpPort": 8000, "startupTimeoutSeconds": 300, "stripPrefix": true,
            "lifetimeWarningSeconds": 60
        })
    );
    assert_eq!(
        obj.metadata.labels.and_then(|l| l.get("owner").cloned()),
        Some("user-7".to_string())
    );

    // Bad requests: 400 naming the field, and nothing created.
    let cases = [
        (
            json!({"executable": {"command": ["app"]}}),
            "invalid_field",
            "executable.image",
        ),
        (
            json!({"executable": {"image": "a b"}}),
            "invalid_field",
            "executable.image",
        ),
        (
            json!({"executable": {"image": "a"}, "grace": 3}),
            "invalid_body",
            "unknown field `grace`",
        ),
        (
            json!({"executable": {"image": "a", "env": {"PORT": "1"}}}),
            "invalid_field",
            "executable.env.PORT",
        ),
        (
            json!({"executable": {"image": "a"}, "idle_timeout_seconds": 0}),
            "invalid_field",
            "idle_timeout_seconds",
        ),
    ];
    for (body, error, needle) in cases {
        let (code, resp) = spawn(&api, body.clone()).await;
        assert_eq!(code, 400, "{body}: {resp}");
        assert_eq!(resp["error"], error, "{body}: {resp}");
        assert!(
            resp["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{body}: {resp}"
        );
    }
    let all = ns.slabs().list(&Default::default()).await.expect("list");
    assert_eq!(all.items.len(), 1, "only the valid spawn made an object");

    // Get-or-create: eight concurrent spawns with one key race on the name; one object.
    let mut keyed = spawn_body();
    keyed["key"] = json!("doc-42");
    let want = name_for_key(TOKEN.as_bytes(), &ns.name, "doc-42").to_string();
    let results = futures_util::future::join_all((0..8).map(|_| spawn(&api, keyed.clone()))).await;
    let mut codes: Vec<u16> = results.iter().map(|r| r.0).collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [200, 200, 200, 200, 200, 200, 200, 201],
        "{results:?}"
    );
    assert!(results.iter().all(|r| r.1["id"] == json!(want)));
    assert_eq!(results[0].1["key"], "doc-42");
    // The key's Lease names its backend and lives as long as it (owned by its object).
    ns.wait_key_lease_names(&want, &want).await;
    // A key's backend that no Lease names (made by an earlier Spawner) is found all the
    // same, and named.
    ns.leases()
        .delete(&format!("spawner-key-{want}"), &DeleteParams::default())
        .await
        .expect("delete the Lease");
    let (code, again) = spawn(&api, keyed.clone()).await;
    assert_eq!((code, &again["id"]), (200, &json!(want)), "{again}");
    ns.wait_key_lease_names(&want, &want).await;
    // Once it has ended, the key gets a new backend: a new object of the same name.
    let old_uid = ns.slabs().get(&want).await.expect("keyed").metadata.uid;
    set_states(&ns, &want, &[State::Submitted, State::Swept], json!({})).await;
    let (code, again) = spawn(&api, keyed.clone()).await;
    assert_eq!(
        (code, &again["id"], &again["state"]),
        (201, &json!(want), &json!("Submitted"))
    );
    let new_uid = ns.slabs().get(&want).await.expect("keyed").metadata.uid;
    assert_ne!(new_uid, old_uid);
    ns.wait_key_lease_names(&want, &want).await;
    let (code, again) = spawn(&api, keyed.clone()).await;
    assert_eq!((code, &again["id"]), (200, &json!(want)), "{again}");

    // List filters: label (a label selector), state, key.
    set_states(&ns, &id, &[State::Submitted, State::Running], json!({})).await;
    let mut other = spawn_body();
    other["labels"] = json!({"owner": "user-8"});
    let (_, b) = spawn(&api, other).await;
    let b_id = b["id"].as_str().expect("id").to_string();
    let mut owned7 = ids(&api, "?label=owner=user-7").await;
    owned7.sort();
    let mut want7 = vec![id.clone(), want.clone()];
    want7.sort();
    assert_eq!(owned7, want7);
    assert_eq!(ids(&api, "?label=owner=user-8").await, [b_id.as_str()]);
    // A bare name: every backend with the label, whatever its value (a label selector's
    // existence test); with a key too.
    let mut owned = ids(&api, "?label=owner").await;
    owned.sort();
    let mut want_all = vec![id.clone(), want.clone(), b_id.clone()];
    want_all.sort();
    assert_eq!(owned, want_all);
    assert_eq!(ids(&api, "?label=owner&key=doc-42").await, [want.as_str()]);
    assert!(ids(&api, "?label=team").await.is_empty());
    assert_eq!(ids(&api, "?state=Running").await, [id.as_str()]);
    assert_eq!(ids(&api, "?key=doc-42").await, [want.as_str()]);
    let (code, err) = api.get("/v1/backends?state=ready").await;
    assert_eq!(code, 400, "{err}");
    assert!(err.contains("invalid_query"), "{err}");

    // Terminate sets the stop annotation (the controller does the rest), hard on request;
    // an ended backend is left alone.
    let (code, resp) = api
        .post(
            &format!("/v1/backends/{b_id}/terminate"),
            json!({"hard": true}),
        )
        .await;
    assert_eq!(code, 202);
    assert_eq!(
        resp,
        json!({"id": b_id, "state": "Terminating", "hard": true})
    );
    let annotations = ns
        .slabs()
        .get(&b_id)
        .await
        .expect("object")
        .metadata
        .annotations
        .unwrap_or_default();
    assert_eq!(
        annotations.get("spawner.dev/stop").map(String::as_str),
        Some("terminate requested")
    );
    assert_eq!(
        annotations.get("spawner.dev/stop-hard").map(String::as_str),
        Some("true")
    );
    // From the answer on, every reader says so (no controller runs in this test): the
    // status, `/ready` and a keepalive.
    let last = api.get_json(&format!("/v1/backends/{b_id}/status")).await;
    assert_eq!(last["state"], "Terminating", "{last}");
    assert_eq!(last["reason"], "terminate requested", "{last}");
    let (code, err) = api.get(&format!("/v1/backends/{b_id}/ready")).await;
    assert_eq!(code, 410, "{err}");
    let (code, err) = api
        .post(
            &format!("/v1/backends/{b_id}/keepalive"),
            json!({"seconds": 60}),
        )
        .await;
    assert_eq!(code, 410, "{err}");
    set_states(&ns, &b_id, &[State::Terminated], json!({})).await;
    let version = ns
        .slabs()
        .get(&b_id)
        .await
        .expect("object")
        .metadata
        .resource_version;
    let (code, resp) = api
        .post(&format!("/v1/backends/{b_id}/terminate"), json!({}))
        .await;
    assert_eq!((code, &resp["state"]), (202, &json!("Terminated")));
    assert_eq!(
        ns.slabs()
            .get(&b_id)
            .await
            .expect("object")
            .metadata
            .resource_version,
        version,
        "no write to an ended backend"
    );
    let (code, _) = api
        .post(
            &format!("/v1/backends/{b_id}/terminate"),
            json!({"soft": 1}),
        )
        .await;
    assert_eq!(code, 400);
}

/// Reads an SSE body to its end: (id, data) pairs. `first`, if given, hears when the first
/// event arrived (the stream is open and following).
async fn read_sse(
    url: &str,
    last_event_id: Option<&str>,
    first: Option<tokio::sync::oneshot::Sender<()>>,
) -> (u16, Vec<(u64, Value)>) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let mut resp = req.send().await.expect("GET stream");
    let code = resp.status().as_u16();
    let mut first = first;
    let mut text = String::new();
    let read = async {
        while let Ok(Some(chunk)) = resp.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("\n\n") {
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
        }
    };
    tokio::time::timeout(k8s::PATIENCE, read)
        .await
        .expect("the stream ends");
    let events = text
        .split("\n\n")
        .filter_map(|msg| {
            let mut id = None;
            let mut data = None;
            for line in msg.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            Some((id?, data?))
        })
        .collect();
    (code, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_ready_stream_metrics_seed_routes_and_token() {
    let ns = TestNs::new("apist").await;
    let api = ns.api(TOKEN);
    let (_, s) = spawn(&api, spawn_body()).await;
    let id = s["id"].as_str().expect("id").to_string();

    // Control routes need the token; status routes and health do not.
    let anon = reqwest::Client::new();
    let r = anon
        .get(format!("{}/v1/backends", api.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    for path in [format!("/v1/backends/{id}/status"), "/healthz".to_string()] {
        let r = anon
            .get(format!("{}{path}", api.url))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }

    // Not seen by a controller yet: Submitted; ready answers 409 with Retry-After.
    let st = api.get_json(&format!("/v1/backends/{id}/status")).await;
    assert_eq!(st["state"], "Submitted");
    let noredirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = noredirect
        .get(format!("{}/v1/backends/{id}/ready", api.url))
        .send()
        .await
        .expect("GET ready");
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );

    // The status stream replays after Last-Event-ID, follows the object, and ends after
    // its terminal state.
    set_states(&ns, &id, &[State::Submitted, State::Constructed], json!({})).await;
    let url = format!("{}/v1/backends/{id}/status/stream", api.url);
    let (open, opened) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move { read_sse(&url, Some("1"), Some(open)).await });
    opened.await.expect("the stream replays");
    set_states(
        &ns,
        &id,
        &[State::Ready],
        json!({"nodeName": "node-a", "port": 9090, "liveConnections": 2}),
    )
    .await;
    // Ready: 302 to the backend's URL; the record shows where it runs.
    let r = noredirect
        .get(format!("{}/v1/backends/{id}/ready", api.url))
        .send()
        .await
        .expect("GET ready");
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("http://router.test/p/{id}/").as_str())
    );
    let rec = api.get_json(&format!("/v1/backends/{id}")).await;
    assert_eq!(rec["state"], "Ready");
    assert_eq!(rec["node"], "node-a");
    assert_eq!(rec["live_connections"], 2);
    assert_eq!(rec["address"], format!("{id}.{}.svc:9090", ns.name));
    assert_eq!(rec["events"].as_array().map(Vec::len), Some(3));
    let metrics = api.get("/metrics").await.1;
    for line in [
        "spawner_backends{state=\"Ready\"} 1",
        "spawner_backends{state=\"Swept\"} 0",
        "spawner_live_connections 2",
        // The embedded server's lifecycle series, from the objects this API saw.
        "spawner_spawn_to_ready_seconds_count 1",
        "spawner_sweeps_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing in:\n{metrics}"
        );
    }
    set_states(&ns, &id, &[State::Terminating, State::Swept], json!({})).await;
    let metrics = api.get("/metrics").await.1;
    assert!(
        metrics.lines().any(|l| l == "spawner_sweeps_total 1"),
        "{metrics}"
    );
    // An ended record drops what kept the backend alive, as on the embedded server.
    let rec = api.get_json(&format!("/v1/backends/{id}")).await;
    assert!(
        rec["busy_until"].is_null() && rec["last_client_activity"].is_null(),
        "{rec}"
    );
    let (code, events) = reader.await.expect("reader");
    assert_eq!(code, 200);
    let states: Vec<(u64, &str)> = events
        .iter()
        .map(|e| (e.0, e.1["state"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        states,
        [
            (2, "Constructed"),
            (3, "Ready"),
            (4, "Terminating"),
            (5, "Swept")
        ]
    );
    // A reconnect after the end replays only what it missed, and ends at once.
    let (_, events) = read_sse(
        &format!("{}/backend/{id}/status/stream", api.url),
        Some("4"),
        None,
    )
    .await;
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), [5]);
    let (code, _) = read_sse(
        &format!("{}/v1/backends/{id}/status/stream", api.url),
        Some("x"),
        None,
    )
    .await;
    assert_eq!(code, 400);
    // Ended: 410 from ready.
    let r = noredirect
        .get(format!("{}/backend/{id}/ready", api.url))
        .send()
        .await
        .expect("GET ready");
    assert_eq!(r.status().as_u16(), 410);
    for unknown in [
        "/v1/backends/nosuchbackend/ready",
        "/v1/backends/NOT-AN-ID/status",
    ] {
        let (code, body) = api.get(unknown).await;
        assert_eq!(code, 404, "{unknown}: {body}");
    }

    // A stream ends when its object is deleted.
    let (_, s2) = spawn(&api, spawn_body()).await;
    let id2 = s2["id"].as_str().expect("id").to_string();
    let url = format!("{}/v1/backends/{id2}/status/stream", api.url);
    let (open, opened) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move { read_sse(&url, None, Some(open)).await });
    opened.await.expect("the stream starts");
    ns.slabs()
        .delete(&id2, &DeleteParams::default())
        .await
        .expect("delete");
    let (_, events) = reader.await.expect("reader");
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), [1]);

    // The seed's routes keep their shapes.
    let (code, resp) = api
        .post(
            "/spawn",
            json!({"image": "app:1", "port": 9000, "gracePeriodSeconds": 30}),
        )
        .await;
    assert_eq!(code, 201, "{resp}");
    let name = resp["name"].as_str().expect("name").to_string();
    assert_eq!(resp["url"], format!("http://router.test/p/{name}/"));
    let obj = ns.slabs().get(&name).await.expect("object");
    assert_eq!(
        (obj.spec.http_port, obj.spec.grace_period_seconds),
        (Some(9000), Some(30))
    );
    let st = api.get_json(&format!("/backend/{name}/status")).await;
    assert_eq!(st["state"], "Submitted");
}

/// The same browser rules as the embedded server: a foreign `Host` (DNS rebinding), another
/// site's `Origin` or `Sec-Fetch-Site`, and a body not declared JSON are refused before
/// anything is read or created; `--allowed-host` adds a name; a login link opens the token
/// once. Without `--token` the API does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_foreign_hosts_and_untyped_bodies_are_refused_and_a_token_is_required() {
    let ns = TestNs::new("apiguard").await;
    let api = ns.api_with(TOKEN, &["--allowed-host", "spawner-api.apiguard.svc"]);
    let http = reqwest::Client::new();
    let post = |headers: &[(&str, &str)]| {
        let mut req = http
            .post(format!("{}/v1/backends", api.url))
            .bearer_auth(TOKEN)
            .body(spawn_body().to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let json = ("content-type", "application/json");
    for (headers, status, code) in [
        (
            vec![json, ("host", "rebound.example")],
            403,
            "host_not_allowed",
        ),
        (
            vec![json, ("origin", "http://evil.example")],
            403,
            "cross_origin",
        ),
        (
            vec![json, ("sec-fetch-site", "cross-site")],
            403,
            "cross_origin",
        ),
        (
            vec![("content-type", "text/plain")],
            415,
            "unsupported_media_type",
        ),
        (vec![], 415, "unsupported_media_type"),
    ] {
        let r = post(&headers).await.expect("POST");
        assert_eq!(r.status().as_u16(), status, "{headers:?}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"], code, "{headers:?}: {body}");
    }
    assert!(ids(&api, "").await.is_empty(), "nothing was created");
    let r = http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status().as_u16(), 401, "metrics need the token");
    let r = post(&[json, ("host", "spawner-api.apiguard.svc")])
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 201, "an allowed host");

    // A one-time login link (for the dashboard) opens the token once.
    let (status, link) = api.post("/v1/login-links", json!(null)).await;
    assert_eq!(status, 200, "{link}");
    let code = link["url"]
        .as_str()
        .and_then(|u| u.split("#login=").nth(1))
        .expect("a code")
        .to_string();
    for want in [200, 401] {
        let r = http
            .post(format!("{}/v1/login", api.url))
            .json(&json!({ "code": code }))
            .send()
            .await
            .expect("POST /v1/login");
        assert_eq!(r.status().as_u16(), want);
        if want == 200 {
            let body: Value = r.json().await.expect("json");
            assert_eq!(body["token"], TOKEN);
        }
    }

    // No token, no API (but an explicit --no-token on loopback).
    let out = std::process::Command::new(k8s::SPAWNER)
        .args(["api", "--listen", "127.0.0.1:0"])
        .env_remove("SPAWNER_TOKEN")
        .output()
        .expect("spawner api");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token") && err.contains("--no-token"),
        "{err}"
    );
    let out = std::process::Command::new(k8s::SPAWNER)
        .args(["api", "--listen", "0.0.0.0:0", "--no-token"])
        .env_remove("SPAWNER_TOKEN")
        .output()
        .expect("spawner api");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
}

/// The limits of docs/api.md and lists a page at a time, as on the embedded server: an
/// oversized body or spec creates nothing, and `next` leads through every backend once,
/// newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_pages() {
    let ns = TestNs::new("limits").await;
    let api = ns.api(TOKEN);
    let big = json!({"executable": {"image": "a", "env": {"BIG": "x".repeat(1 << 20)}}});
    let (code, err) = spawn(&api, big).await;
    assert_eq!(code, 413, "{err}");
    assert_eq!(err["error"], "body_too_large");
    let over = json!({"executable": {"image": "a",
        "env": {"A": "x".repeat(30_000), "B": "x".repeat(30_000), "C": "x".repeat(30_000)}}});
    let (code, err) = spawn(&api, over).await;
    assert_eq!(code, 400, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("executable.env:"),
        "{err}"
    );
    assert!(ids(&api, "").await.is_empty(), "refusals created objects");

    let mut created = Vec::new();
    for n in 0..7 {
        let body = json!({"executable": {"image": "registry.example/app:1"},
                          "labels": {"half": (n % 2).to_string()}});
        let (code, resp) = spawn(&api, body).await;
        assert_eq!(code, 201, "{resp}");
        created.push(resp["id"].as_str().expect("id").to_string());
    }
    let every_page = |query: &'static str| {
        let api = &api;
        async move {
            let (mut all, mut pages) = (Vec::new(), 0);
            let mut path = format!("/v1/backends?{query}");
            loop {
                let page = api.get_json(&path).await;
                pages += 1;
                all.extend(
                    page["backends"]
                        .as_array()
                        .expect("backends")
                        .iter()
                        .map(|b| b["id"].as_str().expect("id").to_string()),
                );
                match page["next"].as_str() {
                    Some(next) => path = format!("/v1/backends?{query}&after={next}"),
                    None => return (all, pages),
                }
            }
        }
    };
    let (all, pages) = every_page("limit=3").await;
    // Newest first: by creation time (the API server's, to the second), then by id.
    let mut sorted = Vec::new();
    for id in &created {
        let rec = api.get_json(&format!("/v1/backends/{id}")).await;
        // RFC 3339 in UTC with milliseconds: ordered as text.
        let at = rec["created_at"].as_str().expect("time").to_string();
        sorted.push((std::cmp::Reverse(at), id.clone()));
    }
    sorted.sort();
    let sorted: Vec<String> = sorted.into_iter().map(|(_, id)| id).collect();
    assert_eq!(all, sorted, "newest first, each once");
    assert!(pages >= 3, "{pages} pages");
    let (half, _) = every_page("limit=2&label=half=0").await;
    assert_eq!(half.len(), 4);
    // An object made by hand under a name of its own is listed, and a page may end on it:
    // its cursor is taken back (it was refused, and no listing went past it).
    ns.create_slab("made-by-hand", json!({})).await;
    let (one_by_one, pages) = every_page("limit=1").await;
    assert_eq!(one_by_one.len(), created.len() + 1, "{one_by_one:?}");
    assert!(
        one_by_one.iter().any(|id| id == "made-by-hand"),
        "{one_by_one:?}"
    );
    assert_eq!(pages, created.len() + 1);
    let (status, err) = api.get("/v1/backends?after=not-a-token").await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = api.get("/v1/backends?limit=5000").await;
    assert_eq!(status, 400, "{err}");
}
