//! Sleep and wake (`idle_action: "sleep"`) in the embedded mode, end to end: a real
//! `spawner serve`, real processes, real HTTP and WebSocket clients through the proxy.

mod common;

use common::*;
use futures_util::StreamExt;
use spawner_core::access::{Access, AccessMode};
use spawner_core::spec::IdleAction;
use spawner_core::{BackendSpec, Event, State};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The example app behind a shell that first appends a line to `runs` in its working
/// directory (its kept files), so that each run leaves a trace the next one finds.
fn sleeper(grace: u64) -> BackendSpec {
    let mut spec = shell(&format!(
        r#"echo run >> "$SPAWNER_DATA_DIR/runs" && exec {SPAWNER} example-app"#
    ));
    spec.idle_action = IdleAction::Sleep;
    spec.grace_period_seconds = grace;
    spec
}

/// Spawns `spec` and waits until it is Ready; its id.
async fn ready(server: &TestServer, spec: &BackendSpec) -> String {
    let client = server.client();
    let (resp, created) = client.spawn(spec).await.expect("spawn");
    assert!(created);
    wait_state(&client, &resp.id, State::Ready).await;
    resp.id
}

/// Waits until the backend has entered `state` `n` times (or ended); every event seen.
async fn wait_nth(server: &TestServer, id: &str, state: State, n: usize) -> Vec<Event> {
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let events = wait_for(&server.client(), id, |e| {
        let count = seen.fetch_add(
            usize::from(e.state == state),
            std::sync::atomic::Ordering::Relaxed,
        ) + usize::from(e.state == state);
        count >= n || e.state.is_terminal()
    })
    .await;
    let count = events.iter().filter(|e| e.state == state).count();
    assert!(
        count >= n,
        "{state} entered {count} times, not {n}: {events:?}"
    );
    events
}

/// The backend's kept directory as its process was told (`SPAWNER_DATA_DIR`), asked
/// through the proxy (which wakes it if it sleeps).
async fn data_dir_of(server: &TestServer, id: &str) -> PathBuf {
    let body = echo(server, id).await;
    PathBuf::from(
        body["env"]["SPAWNER_DATA_DIR"]
            .as_str()
            .expect("SPAWNER_DATA_DIR is set"),
    )
}

/// `GET /request` on the backend's own origin: what the example app saw.
async fn echo(server: &TestServer, id: &str) -> serde_json::Value {
    let resp = server
        .http()
        .get(format!("{}request", server.backend_url(id)))
        .send()
        .await
        .expect("GET /request");
    assert_eq!(resp.status(), 200, "{resp:?}");
    resp.json().await.expect("json")
}

fn runs(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

async fn post(server: &TestServer, path: &str) -> reqwest::Response {
    server
        .api()
        .post(format!("{}{path}", server.url()))
        .send()
        .await
        .expect("POST")
}

async fn state_of(server: &TestServer, id: &str) -> State {
    server.client().get(id).await.expect("record").state
}

#[tokio::test]
async fn an_idle_backend_sleeps_without_a_process_and_a_request_wakes_it_with_its_files() {
    let server = TestServer::start();
    let mut spec = sleeper(3);
    // Swept (here: put to sleep) with its WebSocket open, after 2 s without client data.
    spec.idle_timeout_seconds = Some(2);
    let id = ready(&server, &spec).await;
    let dir = data_dir_of(&server, &id).await;
    assert!(dir.is_absolute(), "{dir:?}");
    assert_eq!(runs(&dir), 1);

    let url = format!("ws://127.0.0.1:{}/p/{id}/ws", server.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    let close = tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame in time")
    .expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason.as_str(), "sleeping");

    let slept = wait_state(&server.client(), &id, State::Sleeping).await;
    assert_eq!(slept.reason.as_deref(), Some("idle timeout"));
    // No process while it sleeps, and no address.
    wait_gone(&id).await;
    let record = server.client().get(&id).await.expect("record");
    assert_eq!(record.state, State::Sleeping);
    assert_eq!(record.address, None);
    let metrics = server.client().metrics().await.expect("metrics");
    assert!(
        metrics.contains("spawner_backends{state=\"Sleeping\"} 1"),
        "{metrics}"
    );
    let listed = server
        .client()
        .list(&[("state", "Sleeping")])
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);

    // A plain request is held while it wakes, and answered by it.
    let t0 = Instant::now();
    let body = echo(&server, &id).await;
    assert_eq!(body["env"]["SPAWNER_BACKEND_ID"], id.as_str());
    assert!(t0.elapsed() < PATIENCE);
    // Its files were kept: the second run found the first's.
    assert_eq!(runs(&dir), 2);
    let events = server.client().get(&id).await.expect("record").events;
    let states: Vec<State> = events.iter().map(|e| e.state).collect();
    let sleeping = states
        .iter()
        .position(|s| *s == State::Sleeping)
        .expect("Sleeping");
    assert_eq!(
        states[sleeping..]
            .iter()
            .filter(|s| **s != State::Sleeping)
            .copied()
            .collect::<Vec<_>>()
            .first(),
        Some(&State::Waking),
        "{events:?}"
    );
    assert_eq!(states.last(), Some(&State::Ready), "{events:?}");
    assert!(
        !states[sleeping..].contains(&State::Constructed),
        "a wake is no new start: {events:?}"
    );
    let metrics = server.client().metrics().await.expect("metrics");
    assert!(metrics.contains("spawner_wakes_total 1"), "{metrics}");
    assert!(
        metrics.contains("spawner_wake_to_ready_seconds_count 1"),
        "{metrics}"
    );

    // Ended for good, the directory made for it goes.
    server
        .client()
        .terminate(&id, false)
        .await
        .expect("terminate");
    wait_state(&server.client(), &id, State::Terminated).await;
    let t0 = Instant::now();
    while dir.exists() {
        assert!(t0.elapsed() < PATIENCE, "{dir:?} is still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_wake_route_wakes_it_ahead_of_its_user_and_refuses_ended_and_unknown_ones() {
    let server = TestServer::start();
    let id = ready(&server, &sleeper(1)).await;
    wait_state(&server.client(), &id, State::Sleeping).await;

    let resp = post(&server, &format!("/v1/backends/{id}/wake")).await;
    assert_eq!(resp.status(), 202);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["state"], "Waking");
    wait_nth(&server, &id, State::Ready, 2).await;
    // Awake: a no-op that says so.
    let resp = post(&server, &format!("/v1/backends/{id}/wake")).await;
    assert_eq!(resp.status(), 202);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["state"], "Ready");

    server
        .client()
        .terminate(&id, false)
        .await
        .expect("terminate");
    wait_state(&server.client(), &id, State::Terminated).await;
    let resp = post(&server, &format!("/v1/backends/{id}/wake")).await;
    assert_eq!(resp.status(), 410);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "gone", "{body}");

    let resp = post(
        &server,
        "/v1/backends/abcdefghijklmnopqrstuvwxyz234567/wake",
    )
    .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn a_keyed_spawn_of_a_sleeping_backend_answers_it_and_wakes_it() {
    let server = TestServer::start();
    let mut spec = sleeper(1);
    spec.key = Some("doc-7".into());
    let id = ready(&server, &spec).await;
    wait_state(&server.client(), &id, State::Sleeping).await;

    let (resp, created) = server.client().spawn(&spec).await.expect("spawn");
    assert!(!created);
    assert_eq!(resp.id, id);
    assert_eq!(resp.state, State::Waking);
    wait_nth(&server, &id, State::Ready, 2).await;
}

/// Waits for the backend's end, which comes after it slept: in `state`, for `reason`.
async fn ends_asleep(client: &spawner_client::Client, id: &str, state: State, reason: &str) {
    let end = wait_for(client, id, |e| e.state.is_terminal()).await;
    let states: Vec<State> = end.iter().map(|e| e.state).collect();
    assert!(states.contains(&State::Sleeping), "{end:?}");
    let last = end.last().expect("an event");
    assert_eq!(last.state, state, "{end:?}");
    assert_eq!(last.reason.as_deref(), Some(reason));
}

#[tokio::test]
async fn terminate_lifetime_limit_and_max_sleep_end_a_sleeping_backend() {
    let server = TestServer::start();
    let client = server.client();

    // Terminate: straight to Terminated, nothing to stop.
    let a = ready(&server, &sleeper(1)).await;
    // Asleep for good after max_sleep_seconds: Swept.
    let mut spec = sleeper(1);
    spec.max_sleep_seconds = 1;
    let b = ready(&server, &spec).await;
    // The lifetime limit applies asleep too.
    let mut spec = sleeper(1);
    spec.lifetime_limit_seconds = Some(4);
    let c = ready(&server, &spec).await;

    wait_state(&client, &a, State::Sleeping).await;
    // Nothing to stop: it has ended by the time the terminate is answered.
    assert_eq!(
        client.terminate(&a, false).await.expect("terminate"),
        State::Terminated
    );
    let end = wait_state(&client, &a, State::Terminated).await;
    assert_eq!(end.reason.as_deref(), Some("terminate requested"));

    ends_asleep(&client, &b, State::Swept, "slept for max_sleep_seconds").await;
    ends_asleep(&client, &c, State::Terminated, "lifetime limit").await;
    for id in [&a, &b, &c] {
        assert!(!backend_running(id));
    }
}

#[tokio::test]
async fn a_keepalive_on_a_sleeping_backend_is_kept_and_does_not_wake_it() {
    let server = TestServer::start();
    let client = server.client();
    let id = ready(&server, &sleeper(1)).await;
    wait_state(&client, &id, State::Sleeping).await;
    let kept = client.keepalive(&id, 60).await.expect("keepalive");
    let record = client.get(&id).await.expect("record");
    assert_eq!(record.busy_until, Some(kept.busy_until));
    assert_eq!(record.state, State::Sleeping);
    assert!(!backend_running(&id));
}

#[tokio::test]
async fn a_wake_that_fails_answers_503_with_retry_after_and_the_backend_fails() {
    let server = TestServer::start();
    // Its second run exits at once.
    let mut spec = shell(&format!(
        r#"[ -e runs ] && exit 3; echo run >> runs && exec {SPAWNER} example-app"#
    ));
    spec.idle_action = IdleAction::Sleep;
    spec.grace_period_seconds = 1;
    let id = ready(&server, &spec).await;
    wait_state(&server.client(), &id, State::Sleeping).await;

    let resp = server
        .http()
        .get(format!("{}request", server.backend_url(&id)))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some(), "{resp:?}");
    let end = wait_state(&server.client(), &id, State::Failed).await;
    assert_eq!(
        end.reason.as_deref(),
        Some("exited with code 3 while waking"),
        "{end:?}"
    );
    assert_eq!(end.exit_code, Some(3));
}

#[tokio::test]
async fn a_sleeping_backend_stays_asleep_across_a_restart_and_wakes_after_it() {
    let mut server = TestServer::start();
    let id = ready(&server, &sleeper(1)).await;
    let ended = ready(&server, &sleeper(1)).await;
    let dir = data_dir_of(&server, &id).await;
    wait_state(&server.client(), &id, State::Sleeping).await;
    wait_state(&server.client(), &ended, State::Sleeping).await;
    let asleep = server.client().get(&id).await.expect("record").events.len();

    server.kill9();
    server.launch();
    let record = server.client().get(&id).await.expect("record");
    assert_eq!(record.state, State::Sleeping);
    assert!(!backend_running(&id));
    // Still asleep a while later: nothing started it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = server.client().get(&id).await.expect("record").events;
    assert_eq!(events.len(), asleep, "{events:?}");
    assert!(!backend_running(&id));

    let body = echo(&server, &id).await;
    assert_eq!(body["env"]["SPAWNER_BACKEND_ID"], id.as_str());
    assert_eq!(runs(&dir), 2);
    // One adopted asleep ends at a terminate too.
    assert_eq!(
        server
            .client()
            .terminate(&ended, false)
            .await
            .expect("terminate"),
        State::Terminated
    );
}

/// `spawner_control_tasks` from `/metrics`.
async fn control_tasks(server: &TestServer) -> i64 {
    let text = server.text("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("spawner_control_tasks "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no spawner_control_tasks in {text}"))
}

/// A sleeping backend costs no task (nothing waits for it; a request or a stop rouses it):
/// the control plane's tasks do not grow with its sleepers, and every one still wakes.
#[tokio::test]
async fn sleeping_backends_add_no_task_and_each_still_wakes() {
    const SLEEPERS: usize = 40;
    let server = TestServer::start();
    let client = server.client();
    let mut spec = shell(&format!("exec {SPAWNER} example-app"));
    spec.idle_action = IdleAction::Sleep;
    spec.grace_period_seconds = 1;
    let first = ready(&server, &spec).await;
    wait_state(&client, &first, State::Sleeping).await;
    let before = control_tasks(&server).await;
    let mut ids = vec![first];
    for _ in 1..SLEEPERS {
        ids.push(client.spawn(&spec).await.expect("spawn").0.id);
    }
    for id in &ids {
        wait_state(&client, id, State::Sleeping).await;
    }
    let asleep = control_tasks(&server).await;
    println!("control tasks: {before} with one sleeper, {asleep} with {SLEEPERS}");
    // Before, each sleeper had a task of its own: 39 more. Some slack for the server's
    // own comings and goings (a connection, a stream ending).
    assert!(
        asleep - before < 8,
        "{before} tasks with one sleeper, {asleep} with {SLEEPERS}"
    );
    for id in &ids {
        assert!(!backend_running(id));
    }
    for id in &ids {
        assert_eq!(
            echo(&server, id).await["env"]["SPAWNER_BACKEND_ID"],
            id.as_str()
        );
    }
}

#[tokio::test]
async fn a_token_mode_sleeping_backend_refuses_a_request_without_access_and_stays_asleep() {
    let server = TestServer::start();
    let mut spec = sleeper(1);
    spec.access = Some(Access {
        mode: AccessMode::Token,
        user: Some("ada".into()),
        ..Access::default()
    });
    let id = ready(&server, &spec).await;
    wait_state(&server.client(), &id, State::Sleeping).await;
    let asleep = server.client().get(&id).await.expect("record").events.len();

    let resp = server
        .http()
        .get(format!("{}request", server.backend_url(&id)))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 401);
    let events = server.client().get(&id).await.expect("record").events;
    assert_eq!(events.len(), asleep, "{events:?}");
    assert_eq!(state_of(&server, &id).await, State::Sleeping);
}

#[tokio::test]
async fn idle_action_and_max_sleep_seconds_are_checked() {
    let server = TestServer::start();
    let spawn = |body: serde_json::Value| {
        let server = &server;
        async move {
            let resp = server
                .api()
                .post(format!("{}/v1/backends", server.url()))
                .json(&body)
                .send()
                .await
                .expect("POST");
            let status = resp.status().as_u16();
            (status, resp.text().await.expect("body"))
        }
    };
    let (status, body) = spawn(serde_json::json!({
        "executable": {"command": ["true"]},
        "idle_action": "nap",
    }))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("idle_action"), "{body}");
    assert!(body.contains("sleep"), "the values it takes: {body}");

    let (status, body) = spawn(serde_json::json!({
        "executable": {"command": ["true"]},
        "max_sleep_seconds": 60,
    }))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_field"), "{body}");
    assert!(body.contains("max_sleep_seconds"), "{body}");
    assert!(server.client().list(&[]).await.expect("list").is_empty());
}

#[tokio::test]
async fn many_requests_at_once_wake_it_once_and_all_are_answered() {
    let server = TestServer::start();
    let id = ready(&server, &sleeper(1)).await;
    let dir = data_dir_of(&server, &id).await;
    wait_state(&server.client(), &id, State::Sleeping).await;

    let requests = (0..100).map(|_| {
        let (http, url) = (server.http(), format!("{}request", server.backend_url(&id)));
        async move {
            let resp = http.get(url).send().await.expect("GET");
            resp.status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // One start for all of them: its second run.
    assert_eq!(runs(&dir), 2);
    let events = server.client().get(&id).await.expect("record").events;
    let wakes = events
        .iter()
        .filter(|e| e.state == State::Waking && e.reason.is_none());
    assert_eq!(wakes.count(), 1, "{events:?}");

    // Asleep again, a WebSocket upgrade wakes it too, and is joined to it.
    wait_nth(&server, &id, State::Sleeping, 2).await;
    let url = format!("ws://127.0.0.1:{}/p/{id}/ws", server.port);
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket to a sleeping backend");
    assert_eq!(resp.status(), 101);
    let first = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("a message in time")
        .expect("a message")
        .expect("ok");
    assert_eq!(first, Message::Text("count 0".into()));
    assert_eq!(runs(&dir), 3);
}

#[tokio::test]
async fn a_backend_waking_across_a_restart_is_watched_again_and_becomes_ready() {
    let mut server = TestServer::start();
    // Its second run takes a while before it listens.
    let mut spec = shell(&format!(
        r#"[ -e runs ] && sleep 3; echo run >> runs && exec {SPAWNER} example-app"#
    ));
    spec.idle_action = IdleAction::Sleep;
    spec.grace_period_seconds = 1;
    let id = ready(&server, &spec).await;
    wait_state(&server.client(), &id, State::Sleeping).await;
    let resp = post(&server, &format!("/v1/backends/{id}/wake")).await;
    assert_eq!(resp.status(), 202);
    // Started again (its note recorded), not listening yet: a crash now.
    wait_for(&server.client(), &id, |e| {
        e.state == State::Waking
            && e.reason
                .as_deref()
                .is_some_and(|r| r.starts_with("started again"))
    })
    .await;
    server.kill9();
    server.launch();
    assert_eq!(state_of(&server, &id).await, State::Waking);
    wait_nth(&server, &id, State::Ready, 2).await;
    let body = echo(&server, &id).await;
    assert_eq!(body["env"]["SPAWNER_BACKEND_ID"], id.as_str());
    // One process: the one started before the crash, adopted.
    assert_eq!(
        processes_with_env(&format!("SPAWNER_BACKEND_ID={id}")).len(),
        1
    );
}

/// Waits (bounded) until `path` exists.
async fn wait_file(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A crash of Spawner while backends go to sleep (their processes signalled, `Sleeping` not
/// recorded yet) loses neither: the restart records the one whose process exited meanwhile
/// asleep, and puts the one still stopping to sleep; both wake with their files.
#[tokio::test]
async fn a_crash_while_backends_go_to_sleep_leaves_them_asleep_with_their_files() {
    // A stop grace longer than the first one's linger: Spawner never kills it.
    let mut server = TestServer::start_with(&["--stop-grace", "10"], None);
    // Each run marks when it is told to stop, then takes `linger` seconds to exit.
    let lingering = |linger: u64| {
        let mut spec = shell(&format!(
            r#"echo run >> "$SPAWNER_DATA_DIR/runs"; trap 'echo > "$SPAWNER_DATA_DIR/termed"; sleep {linger}; exit 0' TERM; {SPAWNER} example-app & wait"#
        ));
        spec.idle_action = IdleAction::Sleep;
        spec.grace_period_seconds = 1;
        spec
    };
    let exits = ready(&server, &lingering(5)).await;
    let stays = ready(&server, &lingering(120)).await;
    let dirs = [
        data_dir_of(&server, &exits).await,
        data_dir_of(&server, &stays).await,
    ];
    for dir in &dirs {
        wait_file(&dir.join("termed")).await;
    }
    server.kill9();
    // Both still stopping when Spawner died: neither was recorded asleep.
    for id in [&exits, &stays] {
        assert!(backend_running(id), "{id} had exited before the crash");
    }
    wait_gone(&exits).await;
    assert!(backend_running(&stays));
    let restarted = spawner_core::time::now_millis();
    server.launch();

    for id in [&exits, &stays] {
        let asleep = wait_state(&server.client(), id, State::Sleeping).await;
        assert!(
            asleep.time >= restarted,
            "{id} slept before the crash: {asleep:?}"
        );
        assert!(!backend_running(id));
    }
    for (id, dir) in [&exits, &stays].into_iter().zip(&dirs) {
        assert_eq!(
            echo(&server, id).await["env"]["SPAWNER_BACKEND_ID"],
            id.as_str()
        );
        assert_eq!(runs(dir), 2, "{id}");
    }
}
