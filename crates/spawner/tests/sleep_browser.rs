//! Sleep and wake seen from a real browser (headless Chromium) against a real
//! `spawner serve`: a page's WebSocket is closed 1001 `sleeping` when its backend goes to
//! sleep, and a new WebSocket upgrade to the sleeping backend is held by the proxy while the
//! backend wakes, then opens and talks to the woken backend.

mod browser;
mod common;

use browser::Browser;
use common::*;
use serde_json::json;
use spawner_core::{IdleAction, State};
use std::time::{Duration, Instant};

/// Polls the backend's state until it is `want` (the status stream replays old events, and
/// this backend enters Ready more than once).
async fn until_state(client: &spawner_client::Client, id: &str, want: State) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = client.status(id).await.expect("status").state;
        if now == want {
            return;
        }
        assert!(
            !now.is_terminal() && Instant::now() < deadline,
            "backend {id} is {now}, waiting for {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_websocket_upgrade_held_at_the_proxy_wakes_a_sleeping_backend() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let client = server.client();
    let mut spec = example_app();
    spec.idle_action = IdleAction::Sleep;
    // Asleep three seconds after its clients last sent anything, WebSockets open or not.
    spec.idle_timeout_seconds = Some(3);
    spec.grace_period_seconds = 1;
    let (resp, _) = client.spawn(&spec).await.expect("spawn");
    let id = resp.id;
    wait_state(&client, &id, State::Ready).await;
    let pid_before = backend_pids_of(&server, &id);
    assert_eq!(pid_before.len(), 1, "one process while awake");

    let b = Browser::start().await;
    b.goto(&server.backend_url(&id)).await;
    // A WebSocket of the page, open until the backend goes to sleep.
    let opened = b
        .js_async(
            "window.__closed = null;
             const ws = new WebSocket(location.origin.replace('http', 'ws') + '/ws');
             ws.onclose = (e) => { window.__closed = { code: e.code, reason: e.reason }; };
             return await new Promise((done) => {
               ws.onmessage = (e) => done(e.data);
               ws.onerror = () => done('error');
             });",
            json!([]),
        )
        .await;
    assert!(
        opened.as_str().expect("text").starts_with("count"),
        "{opened}"
    );
    let closed = b
        .wait_for(
            "the page's WebSocket closed by the sleep",
            "return window.__closed",
            json!([]),
        )
        .await;
    assert_eq!(closed["code"], 1001, "{closed}");
    assert_eq!(closed["reason"], "sleeping", "{closed}");
    until_state(&client, &id, State::Sleeping).await;
    assert!(
        backend_pids_of(&server, &id).is_empty(),
        "a sleeping backend has no process"
    );

    // A new upgrade to the sleeping backend: held while it wakes, then answered by it.
    let woken = b
        .js_async(
            "const t0 = performance.now();
             return await new Promise((done) => {
               const ws = new WebSocket(location.origin.replace('http', 'ws') + '/ws');
               ws.onmessage = (e) => { done({ data: e.data, ms: performance.now() - t0 }); ws.close(); };
               ws.onerror = () => done({ data: 'error' });
               ws.onclose = (e) => done({ data: 'closed ' + e.code + ' ' + e.reason });
             });",
            json!([]),
        )
        .await;
    assert!(
        woken["data"].as_str().expect("data").starts_with("count"),
        "the held upgrade was answered by the woken backend: {woken}"
    );
    // Kept awake from here (its idle timeout would put it to sleep again) for the checks.
    client.keepalive(&id, 60).await.expect("keepalive");
    let record = client.get(&id).await.expect("record");
    // After the sleep: Waking (the runtime's notes are more Waking events), then Ready.
    let states: Vec<State> = record.events.iter().map(|e| e.state).collect();
    // The last wake (it may be asleep again by now: then the one before its last sleep).
    let woken = states
        .split(|s| *s == State::Sleeping)
        .skip(1)
        .filter(|w| !w.is_empty())
        .last()
        .expect("a wake after a Sleeping event");
    assert_eq!(woken.first(), Some(&State::Waking), "events: {states:?}");
    assert_eq!(woken.last(), Some(&State::Ready), "events: {states:?}");
    assert!(
        woken[..woken.len() - 1].iter().all(|s| *s == State::Waking),
        "events: {states:?}"
    );
    let pid_after = backend_pids_of(&server, &id);
    assert_eq!(pid_after.len(), 1, "one process again once woken");
    assert_ne!(pid_after, pid_before, "started again, not resumed");
}

/// The pids of the backend's processes that `server` runs.
fn backend_pids_of(server: &TestServer, id: &str) -> Vec<i32> {
    server
        .backend_pids()
        .into_iter()
        .filter(|(_, backend)| backend == id)
        .map(|(pid, _)| pid)
        .collect()
}
