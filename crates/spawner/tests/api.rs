//! The HTTP contract of docs/api.md, through a real `spawner serve`.

mod common;

use common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use spawner_core::State;

async fn post(server: &TestServer, path: &str, body: &str) -> (StatusCode, Value) {
    let resp = server
        .authed(server.http().post(format!("{}{path}", server.url())))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A request without the token.
async fn status_without_token(req: reqwest::RequestBuilder) -> StatusCode {
    req.header("content-type", "application/json")
        .send()
        .await
        .unwrap()
        .status()
}

async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    let resp = server
        .authed(server.http().get(format!("{}{path}", server.url())))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_input_is_rejected_with_the_field_named_and_nothing_recorded() {
    let server = TestServer::start();
    let app = format!("[\"{SPAWNER}\", \"example-app\"]");
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "invalid_body"),
        ("{}".into(), "executable"),
        (r#"{"executable":{}}"#.into(), "executable"),
        (
            r#"{"executable":{"command":[]}}"#.into(),
            "executable.command",
        ),
        (
            format!(r#"{{"executable":{{"command":{app},"env":{{"BAD-NAME":"x"}}}}}}"#),
            "executable.env.BAD-NAME",
        ),
        (
            format!(r#"{{"executable":{{"command":{app},"env":{{"SPAWNER_X":"x"}}}}}}"#),
            "executable.env.SPAWNER_X",
        ),
        (
            format!(r#"{{"executable":{{"command":{app},"port":0}}}}"#),
            "executable.port",
        ),
        (
            format!(r#"{{"executable":{{"command":{app},"port":70000}}}}"#),
            "port",
        ),
        (
            format!(r#"{{"executable":{{"command":{app}}},"grace_period_seconds":0}}"#),
            "grace_period_seconds",
        ),
        (
            format!(r#"{{"executable":{{"command":{app}}},"grace_period_secs":5}}"#),
            "grace_period_secs",
        ),
        (
            format!(r#"{{"executable":{{"command":{app}}},"labels":{{"owner":"not ok"}}}}"#),
            "labels.owner",
        ),
        (
            format!(r#"{{"executable":{{"command":{app}}},"lifetime_limit_seconds":-1}}"#),
            "lifetime_limit_seconds",
        ),
        (
            format!(r#"{{"executable":{{"command":{app}}},"resources":{{"memory_mb":0}}}}"#),
            "resources.memory_mb",
        ),
    ];
    for (body, field) in &cases {
        let (status, err) = post(&server, "/v1/backends", body).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(err["error"].is_string(), "{err}");
        let msg = err["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(field) || err["error"] == *field,
            "{body}: {err} should name {field}"
        );
    }
    assert!(
        server.client().list(&[]).await.unwrap().is_empty(),
        "rejected requests left records"
    );
    // An image needs a runtime this server may not have: a clear 422.
    let (status, err) = post(
        &server,
        "/v1/backends",
        r#"{"executable":{"image":"app:1"}}"#,
    )
    .await;
    let accepted: Vec<String> = if status == 422 {
        assert_eq!(err["error"], "runtime_unavailable");
        assert!(err["message"].as_str().unwrap().contains("Docker"));
        Vec::new()
    } else {
        // With the Docker runtime enabled the request is accepted; take it back.
        assert_eq!(status, 201, "{err}");
        let id = err["id"].as_str().unwrap().to_string();
        server.client().terminate(&id, true).await.unwrap();
        vec![id]
    };

    // Bad ids, filters and headers.
    assert_eq!(get(&server, "/v1/backends/NOT-AN-ID").await.0, 404);
    assert_eq!(get(&server, "/v1/backends/abcdef").await.0, 404);
    assert_eq!(
        post(&server, "/v1/backends/abcdef/terminate", "").await.0,
        404
    );
    let (status, err) = get(&server, "/v1/backends?state=ready").await;
    assert_eq!(status, 400);
    assert!(err["message"].as_str().unwrap().contains("Ready"));
    // A bare label name selects any value; a name that is not one is refused.
    assert_eq!(get(&server, "/v1/backends?label=owner").await.0, 200);
    let (status, err) = get(&server, "/v1/backends?label=-owner").await;
    assert_eq!(status, 400);
    assert!(err["message"].as_str().unwrap().contains("label"), "{err}");
    assert_eq!(get(&server, "/v1/backends?colour=blue").await.0, 400);
    let seed = r#"{"image":"x","gracePeriod":3}"#;
    assert_eq!(post(&server, "/spawn", seed).await.0, 400);

    // Nothing was recorded but the one accepted request.
    let ids: Vec<String> = server
        .client()
        .list(&[])
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, accepted, "rejected requests left records");
}

/// Every error is JSON, a 405 too; a body that is not JSON says where it broke, not `?`.
#[tokio::test]
async fn a_wrong_method_is_a_json_405_and_a_syntax_error_names_where_it_broke() {
    let server = TestServer::start();
    let api = server.api();
    for (method, path) in [
        (reqwest::Method::DELETE, "/v1/backends"),
        (reqwest::Method::PUT, "/v1/backends/abcdef/terminate"),
        (reqwest::Method::POST, "/v1/openapi.json"),
    ] {
        let resp = api
            .request(method.clone(), format!("{}{path}", server.url()))
            .header("content-type", "application/json")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 405, "{method} {path}");
        let allow = resp.headers().get("allow").cloned();
        assert!(allow.is_some(), "{method} {path}: no Allow");
        let err: Value = resp.json().await.expect("a JSON body");
        assert_eq!(err["error"], "method_not_allowed", "{method} {path}");
        assert!(err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Allow"));
    }
    for body in [
        r#"{"executable": {"command": ["true"],}}"#,
        r#"{"executable": {"command": ["true"]"#,
        r#"{"executable": x}"#,
        r#"{"executable": {"command": ["true"]}, "labels": {"a": "b",}}"#,
    ] {
        let (status, err) = post(&server, "/v1/backends", body).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"], "invalid_body");
        let msg = err["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("the request body is not JSON") && msg.contains("line 1 column"),
            "{body}: {msg}"
        );
        assert!(!msg.contains('?'), "{body}: {msg}");
    }
    assert!(server.client().list(&[]).await.expect("list").is_empty());
}

#[tokio::test]
async fn terminate_body_is_validated() {
    let server = TestServer::start();
    let client = server.client();
    let id = ready_example(&client, 300).await;
    let (status, err) = post(
        &server,
        &format!("/v1/backends/{id}/terminate"),
        r#"{"hrad":true}"#,
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(
        client.status(&id).await.unwrap().state,
        State::Ready,
        "a rejected terminate changes nothing"
    );
    let (status, _) = post(
        &server,
        &format!("/v1/backends/{id}/terminate"),
        r#"{"hard":true}"#,
    )
    .await;
    assert_eq!(status, 202);
    wait_state(&client, &id, State::Terminated).await;
}

#[tokio::test]
async fn token_is_enforced_on_control_routes() {
    let token = "a-very-secret-token-123";
    let server = TestServer::start_with(&[], Some(token));
    let anonymous = spawner_client::Client::new(&server.url(), None).unwrap();
    match anonymous.spawn(&example_app()).await {
        Err(spawner_client::Error::Api { status, .. }) => assert_eq!(status, 401),
        other => panic!(
            "spawn without the token must be refused: {:?}",
            other.map(|r| r.0)
        ),
    }
    let wrong =
        spawner_client::Client::new(&server.url(), Some("wrong-token-wrong-token".into())).unwrap();
    assert!(
        matches!(wrong.list(&[]).await, Err(spawner_client::Error::Api { status, .. }) if status == 401)
    );
    let http = server.http();
    assert_eq!(
        status_without_token(http.get(format!("{}/v1/backends", server.url()))).await,
        401
    );
    assert_eq!(
        status_without_token(
            http.post(format!("{}/spawn", server.url()))
                .body(r#"{"command":["true"]}"#)
        )
        .await,
        401
    );

    let client = server.client();
    let id = ready_example(&client, 300).await;
    // Status routes: the id is the capability.
    assert_eq!(
        get(&server, &format!("/v1/backends/{id}/status")).await.0,
        200
    );
    for path in [format!("/v1/backends/{id}/logs"), "/metrics".into()] {
        let status = status_without_token(http.get(format!("{}{path}", server.url()))).await;
        assert_eq!(status, 401, "{path}");
    }
    assert!(anonymous.terminate(&id, true).await.is_err());
    assert_eq!(client.status(&id).await.unwrap().state, State::Ready);
    client.terminate(&id, true).await.unwrap();
    wait_state(&client, &id, State::Terminated).await;
}

#[tokio::test]
async fn serve_refuses_a_public_address_without_a_token_and_settings_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let err = serve_refusal(
        dir.path(),
        &[
            "--listen",
            "0.0.0.0:0",
            "--no-token",
            "--domain",
            "spawner.test",
        ],
    );
    assert!(err.contains("--no-token"), "{err}");
    // Backends' origins under localhost only work on this machine.
    let err = serve_refusal(dir.path(), &["--listen", "0.0.0.0:0"]);
    assert!(err.contains("--domain"), "{err}");
    let err = serve_refusal(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            "https://spawner.example.com",
        ],
    );
    assert!(err.contains("--domain"), "{err}");
    // A setting out of range is refused by name, with the range.
    for (flag, value, range) in [
        ("--client-idle-timeout", "9999999", "0..=604800"),
        ("--proxy-threads", "0", "1..=1024"),
        ("--busy-poll-us", "20000", "0..=10000"),
    ] {
        let err = serve_refusal(dir.path(), &["--listen", "127.0.0.1:0", flag, value]);
        assert!(err.contains(flag) && err.contains(range), "{err}");
    }
}

/// What `spawner serve` with `args` says on stderr when it refuses to start.
fn serve_refusal(data_dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(SPAWNER)
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("SPAWNER_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn key_is_get_or_create_under_concurrency() {
    let server = TestServer::start();
    let client = server.client();
    let mut spec = example_app();
    spec.key = Some("doc-42".into());
    let spawns = (0..20).map(|_| {
        let client = client.clone();
        let spec = spec.clone();
        tokio::spawn(async move { client.spawn(&spec).await.unwrap() })
    });
    let results = futures_util::future::join_all(spawns).await;
    let results: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    let id = &results[0].0.id;
    assert!(results
        .iter()
        .all(|(r, _)| &r.id == id && r.key.as_deref() == Some("doc-42")));
    let listed = client.list(&[("key", "doc-42")]).await.unwrap();
    assert_eq!(listed.len(), 1);
    // A 201 comes before the process exists (its start is queued): count processes once
    // the backend listens, when a second start would have had as long to show.
    wait_state(&client, id, State::Ready).await;
    assert_eq!(server.backend_pids().len(), 1);

    // Once it has ended, the key gets a new backend.
    client.terminate(id, true).await.unwrap();
    wait_state(&client, id, State::Terminated).await;
    let (again, created) = client.spawn(&spec).await.unwrap();
    assert!(created);
    assert_ne!(&again.id, id);
    client.terminate(&again.id, true).await.unwrap();
}

#[tokio::test]
async fn status_stream_replays_and_resumes() {
    let server = TestServer::start();
    let client = server.client();
    let id = ready_example(&client, 300).await;

    let mut stream = Box::pin(client.status_stream(&id, None).await.unwrap());
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(stream.next().await.unwrap().unwrap());
    }
    let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(seen[4].1.state, State::Ready);
    assert!(seen[0].1.time <= seen[4].1.time);
    drop(stream);

    // Resume after event 3: 4 and 5, then the live ones, then the end.
    let mut resumed = Box::pin(client.status_stream(&id, Some(3)).await.unwrap());
    let a = resumed.next().await.unwrap().unwrap();
    let b = resumed.next().await.unwrap().unwrap();
    assert_eq!((a.0, b.0), (4, 5));
    client.terminate(&id, false).await.unwrap();
    let c = resumed.next().await.unwrap().unwrap();
    let d = resumed.next().await.unwrap().unwrap();
    assert_eq!((c.0, c.1.state), (6, State::Terminating));
    assert_eq!((d.0, d.1.state), (7, State::Terminated));
    assert!(
        resumed.next().await.is_none(),
        "the stream ends after a terminal state"
    );

    // A stream of an ended backend replays and ends.
    let all: Vec<_> = client
        .status_stream(&id, None)
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(all.len(), 7);
    let (status, _) = get(&server, &format!("/v1/backends/{id}/status/stream")).await;
    assert_eq!(status, 200);
    let bad = server
        .http()
        .get(format!("{}/v1/backends/{id}/status/stream", server.url()))
        .header("last-event-id", "soon")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// `Ready` is shown the moment the backend listens, before the writer has committed it:
/// whoever asks right after the stream said so (the record, its events, the status, the
/// list) is told the same, and the committed event is the one that was shown.
#[tokio::test]
async fn ready_is_told_alike_by_every_route_from_the_moment_the_stream_sends_it() {
    let server = TestServer::start();
    let client = server.client();
    let (resp, _) = client.spawn(&example_app()).await.unwrap();
    let ready = wait_state(&client, &resp.id, State::Ready).await;

    let record = client.get(&resp.id).await.unwrap();
    assert_eq!(record.state, State::Ready);
    assert_eq!(record.events.len(), 5, "events: {:?}", record.events);
    let told = |e: &spawner_core::Event| (e.state, e.time);
    assert_eq!(record.events.last().map(told), Some(told(&ready)));
    assert_eq!(told(&client.status(&resp.id).await.unwrap()), told(&ready));
    let (status, list) = get(&server, "/v1/backends?state=Ready").await;
    assert_eq!(status, 200);
    assert_eq!(list["backends"][0]["id"], resp.id.as_str());

    // Once committed it is the same event: replayed by a new stream, the same five.
    let replay: Vec<_> = client
        .status_stream(&resp.id, None)
        .await
        .unwrap()
        .take(5)
        .collect()
        .await;
    let last = replay.last().unwrap().as_ref().unwrap();
    assert_eq!((last.0, told(&last.1)), (5, told(&ready)));
    client.terminate(&resp.id, true).await.unwrap();
}

#[tokio::test]
async fn ready_redirects_and_proxy_answers_by_state() {
    let server = TestServer::start();
    let client = server.client();
    let http = server.http();

    // Starting: 409 and 503.
    let mut spec = shell("exec sleep 600");
    spec.startup_timeout_seconds = 60;
    let (slow, _) = client.spawn(&spec).await.unwrap();
    wait_state(&client, &slow.id, State::Running).await;
    let r = http.get(&slow.ready_url).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let r = http
        .get(format!("{}/p/{}/x", server.url(), slow.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");

    // Ready: 302 to the URL.
    let id = ready_example(&client, 300).await;
    let r = http
        .get(format!("{}/v1/backends/{id}/ready", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], server.backend_url(&id));
    // /p/{id} redirects to /p/{id}/.
    let r = http
        .get(format!("{}/p/{id}?a=1", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("/p/{id}/?a=1"));

    // Ended: 410; unknown: 404.
    client.terminate(&slow.id, true).await.unwrap();
    wait_state(&client, &slow.id, State::Terminated).await;
    assert_eq!(
        http.get(&slow.ready_url).send().await.unwrap().status(),
        410
    );
    assert_eq!(
        http.get(format!("{}/p/{}/", server.url(), slow.id))
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
    assert_eq!(
        http.get(format!("{}/p/aaaaaaaaaaaaaaaaaaaaaaaaaa/", server.url()))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(format!(
            "{}/v1/backends/aaaaaaaaaaaaaaaaaaaaaaaaaa/ready",
            server.url()
        ))
        .send()
        .await
        .unwrap()
        .status(),
        404
    );
    assert_eq!(
        http.get(format!("{}/p/NOT_AN_ID/", server.url()))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    client.terminate(&id, true).await.unwrap();
}

#[tokio::test]
async fn list_filters_and_record() {
    let server = TestServer::start();
    let client = server.client();
    let mut a = example_app();
    a.labels.insert("owner".into(), "user-7".into());
    let (ra, _) = client.spawn(&a).await.unwrap();
    let (rb, _) = client.spawn(&example_app()).await.unwrap();
    wait_state(&client, &ra.id, State::Ready).await;
    wait_state(&client, &rb.id, State::Ready).await;

    let mine = client.list(&[("label", "owner=user-7")]).await.unwrap();
    assert_eq!(
        mine.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        [ra.id.as_str()]
    );
    // `label=owner`: any backend with the label, whatever its value.
    let owned = client.list(&[("label", "owner")]).await.unwrap();
    assert_eq!(
        owned.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        [ra.id.as_str()]
    );
    // Not a pool's: no pool, no claim.
    assert_eq!((owned[0].pool.as_ref(), owned[0].claimed_at), (None, None));
    assert_eq!(client.list(&[("state", "Ready")]).await.unwrap().len(), 2);
    assert_eq!(client.list(&[("state", "Swept")]).await.unwrap().len(), 0);

    let rec = client.get(&ra.id).await.unwrap();
    assert_eq!(rec.state, State::Ready);
    assert_eq!(rec.events.len(), 5);
    assert_eq!(rec.node.as_deref(), Some("local"));
    assert!(rec.address.unwrap().starts_with("127.0.0.1:"));
    assert_eq!(rec.spec.labels["owner"], "user-7");
    assert!(rec.last_activity.is_some());

    // Logs: the whole file, and a follow that ends when the backend does.
    let logs: Vec<_> = client.logs(&ra.id, false).await.unwrap().collect().await;
    let text: String = logs
        .into_iter()
        .map(|c| String::from_utf8_lossy(&c.unwrap()).to_string())
        .collect();
    assert!(text.contains("example-app listening"), "{text}");
    let follow = client.logs(&ra.id, true).await.unwrap();
    client.terminate(&ra.id, false).await.unwrap();
    let followed: Vec<_> = tokio::time::timeout(PATIENCE, follow.collect::<Vec<_>>())
        .await
        .expect("follow ends");
    let text: String = followed
        .into_iter()
        .map(|c| String::from_utf8_lossy(&c.unwrap()).to_string())
        .collect();
    assert!(text.contains("SIGTERM"), "{text}");
    client.terminate(&rb.id, true).await.unwrap();
}

#[tokio::test]
async fn seed_routes_keep_working() {
    let server = TestServer::start();
    let body =
        json!({"command": [SPAWNER, "example-app"], "gracePeriodSeconds": 60, "env": {"A": "b"}});
    let (status, resp) = post(&server, "/spawn", &body.to_string()).await;
    assert_eq!(status, 201, "{resp}");
    let name = resp["name"].as_str().unwrap().to_string();
    assert_eq!(resp["url"], server.backend_url(&name));
    assert_eq!(
        resp["statusUrl"],
        format!("{}/backend/{name}/status", server.url())
    );
    let client = server.client();
    wait_state(&client, &name, State::Ready).await;
    let (status, st) = get(&server, &format!("/backend/{name}/status")).await;
    assert_eq!(
        (status, st["state"].as_str()),
        (StatusCode::OK, Some("Ready"))
    );
    let r = server
        .http()
        .get(resp["readyUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let rec = client.get(&name).await.unwrap();
    assert_eq!(rec.spec.grace_period_seconds, 60);
    client.terminate(&name, true).await.unwrap();
}

#[tokio::test]
async fn host_routing_and_unstripped_prefix() {
    let server = TestServer::start_with(&["--domain", "spawner.test"], None);
    let client = server.client();
    let mut spec = example_app();
    spec.strip_prefix = true;
    let (resp, _) = client.spawn(&spec).await.unwrap();
    assert_eq!(
        resp.url,
        format!("http://{}.spawner.test:{}/", resp.id, server.port)
    );
    wait_state(&client, &resp.id, State::Ready).await;
    let host = format!("{}.spawner.test:{}", resp.id, server.port);
    let body: Value = server
        .http()
        .get(format!("{}/request?q=1", server.url()))
        .header("host", &host)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["uri"], "/request?q=1");
    assert_eq!(body["headers"]["host"], host);
    assert_eq!(body["env"]["SPAWNER_BASE_PATH"], "/");
    // The API is still served for other hosts.
    assert_eq!(get(&server, "/healthz").await.0, 200);
    client.terminate(&resp.id, true).await.unwrap();

    let plain = TestServer::start();
    let client = plain.client();
    let mut spec = example_app();
    spec.strip_prefix = false;
    let (resp, _) = client.spawn(&spec).await.unwrap();
    wait_state(&client, &resp.id, State::Ready).await;
    let r = plain
        .http()
        .get(format!("{}/p/{}/request", plain.url(), resp.id))
        .send()
        .await
        .unwrap();
    // The example app has no route for the unstripped path: it answers 404 itself.
    assert_eq!(r.status(), 404);
    client.terminate(&resp.id, true).await.unwrap();
}

#[tokio::test]
async fn health_and_metrics() {
    let server = TestServer::start();
    let client = server.client();
    let id = ready_example(&client, 1).await;
    let _ = server
        .http()
        .get(format!("{}/p/{id}/", server.url()))
        .send()
        .await
        .unwrap();
    wait_state(&client, &id, State::Swept).await;
    let text = server.text("/metrics").await;
    for needle in [
        "spawner_backends{state=\"Swept\"} 1",
        "spawner_state_transitions_total{state=\"Submitted\"} 1",
        "spawner_state_transitions_total{state=\"Ready\"} 1",
        "spawner_spawn_to_ready_seconds_count 1",
        "spawner_proxied_requests_total 1",
        "spawner_sweeps_total 1",
        "spawner_live_connections 0",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(get(&server, "/healthz").await.0, 200);
    assert_eq!(get(&server, "/nope").await.0, 404);
}

#[tokio::test]
async fn the_proxy_runs_on_its_own_threads_and_api_calls_share_its_connections() {
    let server = TestServer::start_with(&["--proxy-threads", "3"], None);
    let id = ready_example(&server.client(), 3600).await;
    // Concurrent clients, each on one keep-alive connection: proxied requests (the relay,
    // on a proxy thread), then an API call (handed to the full HTTP stack), then proxied
    // again on the same connection.
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (url, id) = (server.url(), id.clone());
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for path in [
                format!("/p/{id}/"),
                format!("/p/{id}/"),
                format!("/v1/backends/{id}/status"),
                format!("/p/{id}/"),
            ] {
                let resp = http.get(format!("{url}{path}")).send().await.unwrap();
                seen.push((path, resp.status().as_u16()));
            }
            seen
        }));
    }
    for client in clients {
        for (path, status) in client.await.unwrap() {
            assert_eq!(status, 200, "{path}");
        }
    }
    // The threads, by the names that `top -H` shows.
    let pid = server.pid().expect("running");
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| name.starts_with("proxy-"))
        .collect();
    names.sort();
    assert_eq!(names, ["proxy-0", "proxy-1", "proxy-2"]);
    // Each asked the kernel for a short slice (100 µs); the other threads keep the default.
    let slices = thread_slices(pid);
    let main = slices
        .iter()
        .find(|(name, _)| name == "spawner")
        .map(|s| s.1);
    if main.is_some_and(|slice| slice > 0) {
        for (name, slice) in &slices {
            let want = if name.starts_with("proxy-") {
                100_000
            } else {
                main.unwrap_or(0)
            };
            assert_eq!(*slice, want, "slice of {name}: {slices:?}");
        }
    } else {
        eprintln!("this kernel (before 6.12) has no custom slices: the proxy threads' slice is not checked");
    }
    // Busy polling (on by default) ends once the traffic has: all three threads sleep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let states = proxy_thread_states(pid);
        if states.len() == 3 && states.iter().all(|s| s == "S") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "proxy threads still running with no traffic: {states:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Every proxied request was counted, whichever thread relayed it.
    let metrics = server.text("/metrics").await;
    assert!(
        metrics.contains("spawner_proxied_requests_total 18"),
        "{metrics}"
    );
}

/// Each thread's name and scheduler slice in ns (`sched_getattr`; 0 where the kernel has no
/// custom slices).
fn thread_slices(pid: u32) -> Vec<(String, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let tid: libc::pid_t = path.file_name()?.to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            let size = std::mem::size_of::<libc::sched_attr>() as u32;
            // SAFETY: zeroes are a valid `sched_attr` (plain integers).
            let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
            // SAFETY: `attr` is writable for `size` bytes.
            let got = unsafe { libc::syscall(libc::SYS_sched_getattr, tid, &mut attr, size, 0) };
            (got == 0).then(|| (name.trim().to_string(), attr.sched_runtime))
        })
        .collect()
}

/// The scheduler state (`R`, `S`, …) of each of the process's proxy threads.
fn proxy_thread_states(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        // `pid (comm) state …`: the name is in parentheses.
        .filter_map(|stat| {
            let (name, rest) = stat.split_once(") ")?;
            name.contains("(proxy-")
                .then(|| rest.split_whitespace().next().map(str::to_string))?
        })
        .collect()
}

/// Sends `request` on a fresh connection, reads the answer, then waits (up to 30 s) for
/// the server to close the connection; true if it did.
async fn closed_after_quiet(port: u16, request: String) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok();
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    ended
}

#[tokio::test]
async fn client_connections_quiet_for_the_idle_timeout_are_closed() {
    let server = TestServer::start_with(&["--client-idle-timeout", "1"], None);
    let id = ready_example(&server.client(), 3600).await;
    // A proxied request (the relay's path) and an API call (the full HTTP stack).
    let proxied = format!("GET /p/{id}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(closed_after_quiet(server.port, proxied).await);
    let api = format!("GET /v1/backends/{id}/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(closed_after_quiet(server.port, api).await);
    // The backend itself is untouched: only the quiet connections went.
    let (status, record) = get(&server, &format!("/v1/backends/{id}/status")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["state"], "Ready");
}

#[tokio::test]
async fn a_stopping_backend_is_gone_for_ready_and_terminate_answers_terminating() {
    // A long stop grace, and a backend whose shell outlives SIGTERM: it stays Terminating.
    let server = TestServer::start_with(&["--stop-grace", "600"], None);
    let client = server.client();
    let script = format!("trap '' TERM; {SPAWNER} example-app & while :; do sleep 1; done");
    let (resp, _) = client.spawn(&shell(&script)).await.expect("spawn");
    wait_state(&client, &resp.id, State::Ready).await;
    let (status, answer) = post(&server, &format!("/v1/backends/{}/terminate", resp.id), "").await;
    assert_eq!(status, 202);
    assert_eq!(answer["state"], "Terminating", "{answer}");
    wait_state(&client, &resp.id, State::Terminating).await;
    let (status, body) = get(&server, &format!("/v1/backends/{}/ready", resp.id)).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"], "gone");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("stopping"),
        "{body}"
    );
    // A hard terminate escalates; a terminate of an ended backend reports its end.
    client.terminate(&resp.id, true).await.expect("terminate");
    wait_state(&client, &resp.id, State::Terminated).await;
    let (status, answer) = post(&server, &format!("/v1/backends/{}/terminate", resp.id), "").await;
    assert_eq!(status, 202);
    assert_eq!(answer["state"], "Terminated", "{answer}");
}

#[tokio::test]
async fn ended_backends_are_pruned_after_the_retention() {
    let server = TestServer::start_with(&["--retention", "1"], None);
    let client = server.client();
    let (ended, _) = client.spawn(&shell("echo bye")).await.expect("spawn");
    wait_state(&client, &ended.id, State::Terminated).await;
    let live = ready_example(&client, 300).await;
    let log = server
        .data_dir()
        .join("logs")
        .join(format!("{}.log", ended.id));
    assert!(file_contains(&log, "bye"));
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, _) = get(&server, &format!("/v1/backends/{}", ended.id)).await;
        if status == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never pruned");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!log.exists(), "its log was kept");
    // A live backend is never pruned.
    assert_eq!(client.get(&live).await.expect("live").state, State::Ready);
    client.terminate(&live, true).await.expect("terminate");
}

/// A small tmpfs mounted over a directory, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_spawns_with_503_and_a_terminate_is_still_carried_out() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs (a disk that fills up) needs root");
        return;
    }
    let mut server = TestServer::start();
    server.kill9();
    let data = server.data_dir();
    std::fs::create_dir_all(&data).expect("data dir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&data)
        .status()
        .expect("mount");
    assert!(mounted.success(), "mount -t tmpfs failed although root");
    let _tmpfs = Tmpfs(data.clone());
    server.launch();
    let client = server.client();
    let running = ready_example(&client, 300).await;

    // Fill the disk.
    let filler = data.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
    }
    let (status, err) = post(
        &server,
        "/v1/backends",
        &serde_json::to_string(&example_app()).unwrap(),
    )
    .await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"], "storage_full", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("free space"),
        "{err}"
    );

    // A terminate cannot be recorded, but is carried out.
    let (status, answer) = post(&server, &format!("/v1/backends/{running}/terminate"), "").await;
    assert_eq!(status, 202, "{answer}");
    wait_gone(&running).await;
    let log = server.log();
    assert!(log.contains("could not record a terminate"), "{log}");

    // Once there is room again, how it ended is recorded, and spawns work again.
    std::fs::remove_file(&filler).expect("remove filler");
    wait_state(&client, &running, State::Terminated).await;
    let (again, created) = client.spawn(&shell("exit 0")).await.expect("spawn");
    assert!(created);
    wait_state(&client, &again.id, State::Terminated).await;
    drop(server);
}

/// Reads Server-Sent Events from `body` until `done` accepts one; returns (event, data) pairs.
async fn sse_until<B: AsRef<[u8]>>(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<B>> + Unpin),
    buf: &mut String,
    done: impl Fn(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    let fut = async {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let event = block
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap_or("message")
                    .to_string();
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let data: Value = serde_json::from_str(data).expect("event data");
                let stop = done(&event, &data);
                seen.push((event, data));
                if stop {
                    return;
                }
            }
            let chunk = body
                .next()
                .await
                .expect("the stream goes on")
                .expect("bytes");
            buf.push_str(&String::from_utf8_lossy(chunk.as_ref()));
        }
    };
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("the awaited event never came; seen: {seen:?}"));
    seen
}

#[tokio::test]
async fn the_list_stream_sends_the_list_then_each_change_of_what_it_filters() {
    let server = TestServer::start();
    let client = server.client();
    let mut mine = example_app();
    mine.labels.insert("owner".into(), "a".into());
    let (first, _) = client.spawn(&mine).await.expect("spawn");
    wait_state(&client, &first.id, State::Ready).await;
    let resp = server
        .authed(
            server
                .http()
                .get(format!("{}/v1/backends/stream?label=owner", server.url())),
        )
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let seen = sse_until(&mut body, &mut buf, |e, _| e == "snapshot").await;
    let snapshot = &seen[0].1["backends"];
    assert_eq!(snapshot.as_array().map(Vec::len), Some(1), "{snapshot}");
    assert_eq!(snapshot[0]["id"], first.id.as_str());
    assert_eq!(snapshot[0]["state"], "Ready");

    // A backend without the label is not sent (`label=owner`: any owner); a new one of ours
    // is, up to Ready; then its end.
    let (other, _) = client.spawn(&example_app()).await.expect("spawn");
    let (second, _) = client.spawn(&mine).await.expect("spawn");
    let seen = sse_until(&mut body, &mut buf, |e, d| {
        e == "backend" && d["id"] == second.id.as_str() && d["state"] == "Ready"
    })
    .await;
    assert!(
        seen.iter()
            .all(|(e, d)| e == "backend" && d["id"] != other.id.as_str()),
        "{seen:?}"
    );
    client.terminate(&second.id, true).await.expect("terminate");
    let seen = sse_until(&mut body, &mut buf, |_, d| {
        d["id"] == second.id.as_str() && d["state"] == "Terminated"
    })
    .await;
    let last = &seen[seen.len() - 1].1;
    assert_eq!(last["reason"], "terminate requested", "{last}");
    // One that starts and ends between two looks of the stream is sent too.
    let mut brief = shell("exit 5");
    brief.labels.insert("owner".into(), "a".into());
    let (brief, _) = client.spawn(&brief).await.expect("spawn");
    let seen = sse_until(&mut body, &mut buf, |_, d| {
        d["id"] == brief.id.as_str() && d["state"] == "Failed"
    })
    .await;
    let last = &seen[seen.len() - 1].1;
    assert_eq!(
        last["reason"], "exited with code 5 before it became ready",
        "{last}"
    );
    for id in [&first.id, &other.id] {
        client.terminate(id, true).await.expect("terminate");
    }
    // An unknown filter is refused like the list's.
    let (status, err) = get(&server, "/v1/backends/stream?colour=red").await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "invalid_query");
}
