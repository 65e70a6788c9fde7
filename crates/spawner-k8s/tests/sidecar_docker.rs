//! The sidecar and the sweeper for real, on the Docker engine: the application
//! (`spawner example-app`) and the sidecar (`spawner sidecar`) run as two containers of the
//! FROM scratch image of scripts/build-spawner-image.sh sharing one network namespace, as
//! the containers of a Pod do. The sweeper (`sweeper::run`, watch and followers) follows
//! the sidecar's `/_events` at the container's IP, as it follows a Pod's IP; its status
//! patches go to the mocked API server (tower_test's mock service, tests/support), and the
//! test asserts their exact bodies.
//!
//! Needs a Docker engine: without one the test fails, unless SPAWNER_SKIP_DOCKER=1.

mod support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use spawner_core::time::{now_millis, Millis};
use spawner_core::State;
use spawner_k8s::node::sweeper::{self, Judged, Verdict};
use spawner_k8s::SessionLivedBackendStatus;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use support::Fake;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

const IMAGE_ENV: &str = "SPAWNER_NODE_IMAGE";
const DEFAULT_IMAGE: &str = "spawner-node-test:latest";
const NODE: &str = "node-docker";
const GRACE_SECONDS: u64 = 2;
const SIDECAR_PORT: u16 = 9090;

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The image to run, or `None` when the test is to be skipped. Panics (fails the test)
/// with what to do when Docker or the image is missing.
fn image_or_skip() -> Option<String> {
    if let Err(e) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        if std::env::var("SPAWNER_SKIP_DOCKER").as_deref() == Ok("1") {
            eprintln!("SKIPPED: no Docker engine ({e}) and SPAWNER_SKIP_DOCKER=1");
            return None;
        }
        panic!(
            "this test needs a Docker engine and none answers ({e}). Start dockerd, or set \
             SPAWNER_SKIP_DOCKER=1 to skip the Docker tests"
        );
    }
    let image = std::env::var(IMAGE_ENV).unwrap_or_else(|_| DEFAULT_IMAGE.to_string());
    if let Err(e) = docker(&["image", "inspect", "--format", "{{.Id}}", &image]) {
        panic!("the image {image} is missing ({e}): build it with scripts/build-spawner-image.sh");
    }
    Some(image)
}

/// Containers removed when the test ends, however it ends.
struct Containers(Vec<String>);

impl Containers {
    fn run(&mut self, args: &[&str]) -> String {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        let id = docker(&all).expect("docker run");
        self.0.push(id.clone());
        id
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for id in self.0.iter().rev() {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, http::HeaderMap, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, "backend.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

async fn until(rx: &mut mpsc::UnboundedReceiver<Judged>, want: impl Fn(&Judged) -> bool) -> Judged {
    loop {
        let j = rx.recv().await.expect("the sweeper keeps judging");
        // Shown if the test fails: what the sweeper saw and decided, in order.
        eprintln!("{} judged {:?}: {:?}", now_millis(), j.verdict, j.report);
        if want(&j) {
            return j;
        }
    }
}

/// Starts a sweeper for NODE; returns its verdicts, its stop switch and its task.
fn start_sweeper(
    client: kube::Client,
) -> (
    mpsc::UnboundedReceiver<Judged>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), sweeper::Error>>,
) {
    support::start_sweeper(client, NODE)
}

/// The writes the fake received: patches as ("PATCH slabs/{name}/status by {field manager}",
/// body), Events as ("POST events", body).
fn patches(fake: &Fake) -> Vec<(String, Value)> {
    all_patches(fake)
        .into_iter()
        .filter(|(_, body)| !is_activity(body))
        .collect()
}

/// The sweeper's activity patches: `liveConnections`, `lastActivity` and
/// `lastClientActivity` only, no version.
fn is_activity(body: &Value) -> bool {
    body.get("metadata").is_none()
        && body["status"].as_object().is_some_and(|s| {
            s.keys()
                .all(|k| k == "liveConnections" || k == "lastActivity" || k == "lastClientActivity")
        })
}

/// Every write since the last call, activity patches included.
fn all_patches(fake: &Fake) -> Vec<(String, Value)> {
    fake.take_log()
        .into_iter()
        .filter(|l| l.method == http::Method::PATCH || l.method == http::Method::POST)
        .map(|l| {
            let what = match support::query_param(&l.query, "fieldManager") {
                Some(manager) => format!("{} by {manager}", l.short()),
                None => l.short(),
            };
            (what, l.body.unwrap_or(Value::Null))
        })
        .collect()
}

/// Checks that an Event the sweeper published says that `name` entered `state`.
fn assert_state_event(written: &(String, Value), name: &str, state: &str) {
    let (what, event) = written;
    assert_eq!(what, "POST events");
    assert_eq!(event["reason"], state, "{event}");
    assert_eq!(event["type"], "Normal", "{event}");
    assert_eq!(event["regarding"]["kind"], "SessionLivedBackend", "{event}");
    assert_eq!(event["regarding"]["name"], name, "{event}");
    assert_eq!(event["reportingController"], "spawner-sweeper", "{event}");
}

/// Checks that `body[path]` is an RFC 3339 time within [from, to], and replaces it by a
/// placeholder so that the rest of the body can be compared exactly.
fn take_time(body: &mut Value, pointer: &str, from: Millis, to: Millis) -> Millis {
    let slot = body.pointer_mut(pointer).expect("the time field");
    let text = slot.as_str().expect("a string time").to_string();
    let ms = chrono::DateTime::parse_from_rfc3339(&text)
        .expect("RFC 3339")
        .timestamp_millis();
    assert!(
        (from..=to).contains(&ms),
        "{pointer} = {text} outside the test's window"
    );
    *slot = json!("<time>");
    ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_and_sweeper_on_docker_ready_kept_while_connected_swept_when_idle() {
    let Some(image) = image_or_skip() else {
        return;
    };
    let (fake, client) = Fake::start();
    let run = scenario(image, fake.clone(), client);
    if tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .is_err()
    {
        for l in fake.take_log().iter().rev().take(20).rev() {
            eprintln!("API request: {} ?{} {:?}", l.short(), l.query, l.body);
        }
        panic!("the scenario did not finish (it waits on events, not on clocks)");
    }
}

async fn scenario(image: String, fake: Fake, client: kube::Client) {
    let step = |what: &str| eprintln!("{} step: {what}", now_millis());
    let suffix = format!("{}-{}", std::process::id(), now_millis());
    let mut containers = Containers(Vec::new());

    // The sidecar first: it owns the network namespace (a Pod's infrastructure container
    // does in Kubernetes), and it must cope with an application that is not listening yet.
    let sidecar_name = format!("spawner-test-sidecar-{suffix}");
    containers.run(&[
        "--name",
        &sidecar_name,
        "-e",
        "SPAWNER_LOG=info",
        &image,
        "spawner",
        "sidecar",
        "--app-port",
        "8080",
        "--listen",
        "0.0.0.0:9090",
    ]);
    let ip = docker(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.IPAddress}}",
        &sidecar_name,
    ])
    .expect("inspect");
    assert!(!ip.is_empty(), "the sidecar container has an IP");
    let addr: SocketAddr = format!("{ip}:{SIDECAR_PORT}").parse().expect("addr");

    // The object as the controller leaves it once the Pod runs: Running, with the Pod's IP
    // and the sidecar's port, labelled with its node.
    let name = format!("b{}", suffix.replace('-', ""));
    let mut status = support::running_status(NODE, &ip, SIDECAR_PORT);
    status.url = Some(format!("http://spawner.test/p/{name}/"));
    let stored = fake.put(
        "sessionlivedbackends",
        support::slab_json(&name, NODE, &image, GRACE_SECONDS, &status),
    );
    let rv_running = stored["metadata"]["resourceVersion"].clone();

    step("sweeper started");
    // Before the application listens: the sidecar answers 503, the sweeper hears "not ready".
    let (mut judged, stop, sweeper_task) = start_sweeper(client.clone());
    let first = until(&mut judged, |j| j.name == name).await;
    assert!(!first.report.ready, "the app is not started yet: {first:?}");
    assert_eq!(first.verdict, Verdict::Keep);
    let (code, headers, _) = get(addr, "/").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert!(patches(&fake).is_empty(), "nothing written before Ready");

    step("starting the app");
    // The application starts in the sidecar's network namespace, as a Pod's app container.
    let before_ready = now_millis();
    containers.run(&[
        "--name",
        &format!("spawner-test-app-{suffix}"),
        "--network",
        &format!("container:{sidecar_name}"),
        "-e",
        "PORT=8080",
        "-e",
        "HOST=0.0.0.0",
        &image,
        "spawner",
        "example-app",
    ]);
    until(&mut judged, |j| {
        j.name == name && j.verdict == Verdict::MarkReady
    })
    .await;
    let after_ready = now_millis();

    // Exactly one status write: Ready, with the whole status, conditional on the version
    // read; no Event (the states on the way are the status history's, issue 27).
    let mut written = patches(&fake);
    assert_eq!(written.len(), 1, "{written:?}");
    let (path, mut body) = written.remove(0);
    assert_eq!(
        path,
        format!("PATCH slabs/{name}/status by spawner-sweeper"),
    );
    let ready_at = take_time(
        &mut body,
        "/status/history/4/time",
        before_ready,
        after_ready,
    );
    let activity = take_time(
        &mut body,
        "/status/lastActivity",
        before_ready - 60_000,
        ready_at,
    );
    assert!(activity <= ready_at);
    let client_at = take_time(
        &mut body,
        "/status/lastClientActivity",
        before_ready - 60_000,
        ready_at,
    );
    assert!(client_at <= ready_at);
    let mut want = status.clone();
    want.enter(State::Ready, 0, None, None);
    want.live_connections = Some(0);
    want.last_activity = Some("<time>".into());
    want.last_client_activity = Some("<time>".into());
    let mut want = json!({"metadata": {"resourceVersion": rv_running}, "status": want});
    want["status"]["history"][4]["time"] = json!("<time>");
    assert_eq!(body, want);
    let now_ready = fake.get("sessionlivedbackends", &name).expect("stored");
    assert_eq!(now_ready["status"]["state"], "Ready");
    assert_eq!(now_ready["status"]["ready"], true);

    step("ready patch checked");
    // The application answers through the sidecar.
    let (code, _, text) = get(addr, "/request?x=1").await;
    assert_eq!(code, StatusCode::OK, "{text}");
    let seen: Value = serde_json::from_str(&text).expect("the app's JSON");
    assert_eq!(seen["uri"], "/request?x=1");
    assert_eq!(seen["env"]["PORT"], "8080");

    step("request checked");
    // The sweeper restarts: it lists its node's objects again, follows the same sidecar,
    // and writes nothing new for a backend already Ready.
    let _ = stop.send(());
    sweeper_task.await.expect("joins").expect("stops cleanly");
    let (mut judged, stop, sweeper_task) = start_sweeper(client.clone());
    let again = until(&mut judged, |j| j.name == name).await;
    assert!(again.report.ready);
    assert_eq!(again.verdict, Verdict::Keep);

    step("sweeper restarted");
    // A WebSocket through the sidecar keeps the backend, well past its grace period.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("WebSocket through the sidecar");
    let hello = ws.next().await.expect("a message").expect("ok");
    assert!(
        matches!(&hello, Message::Text(t) if t.as_str().starts_with("count ")),
        "{hello:?}"
    );
    ws.send(Message::Text("hi".into())).await.expect("send");
    let echo = ws.next().await.expect("a message").expect("ok");
    assert_eq!(echo, Message::Text("echo: hi".into()));
    let kept = until(&mut judged, |j| {
        j.name == name
            && j.report.live_connections == 1
            && j.report.seconds_since_active > GRACE_SECONDS as f64 + 0.5
    })
    .await;
    assert_eq!(
        kept.verdict,
        Verdict::Keep,
        "never swept with a connection open"
    );
    // While connected, only the activity is written: the connection count, once.
    let written = all_patches(&fake);
    assert!(written.iter().all(|(_, b)| is_activity(b)), "{written:?}");
    assert_eq!(
        written
            .last()
            .map(|(_, b)| b["status"]["liveConnections"].clone()),
        Some(json!(1)),
        "{written:?}"
    );

    step("kept while connected");
    // Closed: swept once idle for the grace period.
    let before_close = now_millis();
    ws.close(None).await.expect("close");
    drop(ws);
    let swept = until(&mut judged, |j| {
        j.name == name && j.verdict == Verdict::MarkSwept
    })
    .await;
    let after_sweep = now_millis();
    assert_eq!(swept.report.live_connections, 0);
    assert!(swept.report.seconds_since_active >= GRACE_SECONDS as f64);
    let mut written = patches(&fake);
    assert_eq!(written.len(), 2, "{written:?}");
    assert_state_event(&written[1], &name, "Swept");
    let (_, mut body) = written.remove(0);
    let swept_at = take_time(
        &mut body,
        "/status/history/5/time",
        before_close,
        after_sweep,
    );
    let idle_since = take_time(
        &mut body,
        "/status/lastActivity",
        before_close - 1_000,
        swept_at,
    );
    assert!(
        swept_at - idle_since >= GRACE_SECONDS as Millis * 1000,
        "swept only after the grace period: idle since {idle_since}, swept at {swept_at}"
    );
    let client_since = take_time(
        &mut body,
        "/status/lastClientActivity",
        before_ready - 60_000,
        swept_at,
    );
    assert!(
        client_since <= idle_since,
        "client activity {client_since} after the last activity {idle_since}"
    );
    let mut want: Value = now_ready["status"].clone();
    let mut want_status: SessionLivedBackendStatus =
        serde_json::from_value(want.take()).expect("status");
    want_status.enter(State::Swept, 0, Some("idle".into()), None);
    want_status.stop_reason = Some("idle".into());
    want_status.live_connections = Some(0);
    want_status.last_activity = Some("<time>".into());
    want_status.last_client_activity = Some("<time>".into());
    // Conditional on the version the sweeper last wrote (its activity patch at the close).
    let rv = body["metadata"]["resourceVersion"].clone();
    assert!(rv.is_string(), "{body}");
    let mut want = json!({"metadata": {"resourceVersion": rv}, "status": want_status});
    want["status"]["history"][5]["time"] = json!("<time>");
    assert_eq!(body, want);
    let end = fake.get("sessionlivedbackends", &name).expect("stored");
    assert_eq!(
        (
            end["status"]["state"].as_str(),
            end["status"]["swept"].as_bool()
        ),
        (Some("Swept"), Some(true))
    );

    let _ = stop.send(());
    sweeper_task.await.expect("joins").expect("stops cleanly");
}
