//! The JavaScript and Python clients' own tests (clients/js/test, clients/python/tests),
//! run here against a real `spawner serve` so that the test command runs them: each test
//! starts a server and passes its address and token as SPAWNER_URL and SPAWNER_TOKEN.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// The clients' suites each take about ten seconds; this bounds a hung one.
const LIMIT: Duration = Duration::from_secs(240);

#[test]
fn js_client_suite_passes_against_a_real_server() {
    let server = TestServer::start();
    let dir = repo_root().join("clients/js");
    let mut files: Vec<String> = std::fs::read_dir(dir.join("test"))
        .expect("clients/js/test")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".test.js"))
        .map(|n| format!("test/{n}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no clients/js/test/*.test.js");
    let mut cmd = Command::new("node");
    cmd.arg("--test")
        .args(&files)
        .current_dir(&dir)
        .env("SPAWNER_URL", server.url())
        .env("SPAWNER_TOKEN", server.token.clone().expect("a token"));
    run_to_success(cmd, "node --test (clients/js)", LIMIT);
}

#[test]
fn python_client_suite_passes_against_a_real_server() {
    let python = venv_python();
    let server = TestServer::start();
    let dir = repo_root().join("clients/python");
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(&dir)
        .env("PYTHONPATH", &dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SPAWNER_URL", server.url())
        .env("SPAWNER_TOKEN", server.token.clone().expect("a token"));
    run_to_success(cmd, "pytest (clients/python)", LIMIT);
}

// ---- the Rust client (spawner-client) --------------------------------------------------

use futures_util::StreamExt;
use spawner_client::{ListChange, StatusUpdate};
use spawner_core::pool::{ClaimRequest, IfNoneReady, PoolSize, PoolSpec, PoolTemplate};
use spawner_core::State;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A TCP relay to the server whose connections can be cut, as a network failure would;
/// `break_after_event(n)` has the next connection carry the server's bytes up to the end of
/// the SSE message with `id: n` and no further, then die (mid-stream, whatever the chunks).
struct Relay {
    url: String,
    cut: tokio::sync::watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
    armed: Arc<std::sync::Mutex<Option<u64>>>,
}

/// Where the SSE message with `id: n` ends in `seen`, if it is all there.
fn end_of_event(seen: &[u8], n: u64) -> Option<usize> {
    let text = String::from_utf8_lossy(seen);
    let needle = format!("id: {n}\n");
    let start = text
        .match_indices(&needle)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || text.as_bytes()[i - 1] == b'\n')?;
    text[start..].find("\n\n").map(|end| start + end + 2)
}

/// Copies `up` to `down` until the message with `id: n` has passed, then stops.
async fn relay_until_event(
    up: &mut tokio::net::tcp::ReadHalf<'_>,
    down: &mut tokio::net::tcp::WriteHalf<'_>,
    n: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut seen = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let Ok(got) = up.read(&mut buf).await else {
            return;
        };
        if got == 0 {
            return;
        }
        let before = seen.len();
        seen.extend_from_slice(&buf[..got]);
        if let Some(end) = end_of_event(&seen, n) {
            let _ = down.write_all(&buf[..end - before]).await;
            return;
        }
        if down.write_all(&buf[..got]).await.is_err() {
            return;
        }
    }
}

impl Relay {
    async fn start(target: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(std::sync::Mutex::new(None));
        let count = accepted.clone();
        let arm = armed.clone();
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let break_at = arm.lock().expect("lock").take();
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    match break_at {
                        None => tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                            _ = cuts.changed() => {} // both ends dropped here
                        },
                        Some(n) => {
                            let (mut down_r, mut down_w) = down.split();
                            let (mut up_r, mut up_w) = up.split();
                            tokio::select! {
                                _ = tokio::io::copy(&mut down_r, &mut up_w) => {}
                                _ = relay_until_event(&mut up_r, &mut down_w, n) => {}
                            }
                        }
                    }
                });
            }
        });
        Relay {
            url,
            cut,
            accepted,
            armed,
        }
    }

    fn break_after_event(&self, n: u64) {
        *self.armed.lock().expect("lock") = Some(n);
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test]
async fn rust_client_status_stream_resumes_after_a_dropped_connection() {
    let server = TestServer::start();
    let relay = Relay::start(server.port).await;
    let through = spawner_client::Client::new(&relay.url, server.token.clone()).expect("client");
    let direct = server.client();
    let (resp, _) = direct.spawn(&example_app()).await.expect("spawn");
    direct
        .wait_ready(&resp.id, Some(PATIENCE))
        .await
        .expect("Ready");
    // The first connection dies right after event 2 of the replay (3 to 5 never arrive on
    // it); the second is cut while live, after Ready, before the events of the terminate.
    relay.break_after_event(2);
    let mut seen = Vec::new();
    let mut updates = Box::pin(
        through
            .status_updates(&resp.id, None)
            .await
            .expect("stream"),
    );
    let follow = async {
        while let Some(u) = updates.next().await {
            let StatusUpdate::Event(e) = u.expect("an update") else {
                continue;
            };
            if e.state == State::Ready {
                relay.cut();
                direct.terminate(&resp.id, false).await.expect("terminate");
            }
            seen.push(e);
        }
    };
    tokio::time::timeout(PATIENCE, follow)
        .await
        .expect("the stream ends after a terminal state");
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let record = direct.get(&resp.id).await.expect("record");
    let strip = |e: &spawner_core::Event| (e.state, e.time, e.reason.clone());
    assert_eq!(
        seen.iter().map(strip).collect::<Vec<_>>(),
        record.events.iter().map(strip).collect::<Vec<_>>()
    );
    assert_eq!(seen.last().map(|e| e.state), Some(State::Terminated));
    assert_eq!(
        relay.accepted.load(Ordering::SeqCst),
        3,
        "it reconnected twice"
    );
}

#[tokio::test]
async fn rust_client_expiring_wait_ready_keepalive_and_errors() {
    let server = TestServer::start();
    let c = server.client();

    let mut spec = example_app();
    spec.lifetime_limit_seconds = Some(3);
    spec.lifetime_warning_seconds = 3;
    let (resp, _) = c.spawn(&spec).await.expect("spawn");
    let ready = c.wait_ready(&resp.id, Some(PATIENCE)).await.expect("Ready");
    assert_eq!(ready.state, State::Ready);
    assert!(c.is_ready(&resp.id).await.expect("ready"));
    let kept = c.keepalive(&resp.id, 600).await.expect("keepalive");
    assert_eq!(
        c.get(&resp.id).await.expect("record").busy_until,
        Some(kept.busy_until)
    );
    let updates: Vec<StatusUpdate> = c
        .status_updates(&resp.id, None)
        .await
        .expect("stream")
        .map(|u| u.expect("an update"))
        .collect()
        .await;
    let expiring = updates.iter().find_map(|u| match u {
        StatusUpdate::Expiring(x) => Some(x.clone()),
        _ => None,
    });
    assert_eq!(expiring.expect("an announcement").reason, "lifetime limit");
    // Resumed from event 5: only what came after it.
    let after: Vec<u64> = c
        .status_stream(&resp.id, Some(5))
        .await
        .expect("stream")
        .map(|e| e.expect("event").0)
        .collect()
        .await;
    assert_eq!(after.first(), Some(&6));

    // Ended before Ready: gone, with its reason; never Ready in time: timeout.
    let (failing, _) = c.spawn(&shell("exit 3")).await.expect("spawn");
    let err = c.wait_ready(&failing.id, Some(PATIENCE)).await.unwrap_err();
    assert_eq!(
        (err.code(), err.status().map(|s| s.as_u16())),
        ("gone", Some(410))
    );
    assert!(err.to_string().contains("exited with code 3"), "{err}");
    let (silent, _) = c.spawn(&shell("sleep 60")).await.expect("spawn");
    let err = c
        .wait_ready(&silent.id, Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "timeout");
    assert!(!c.is_ready(&silent.id).await.expect("is_ready"));
    c.terminate(&silent.id, true).await.expect("terminate");

    let err = c.get("nosuchbackend").await.unwrap_err();
    assert_eq!(
        (err.code(), err.status().map(|s| s.as_u16())),
        ("not_found", Some(404))
    );
    let err = c.keepalive(&resp.id, 0).await.unwrap_err();
    assert_eq!(err.code(), "invalid_field");
    let nowhere = spawner_client::Client::new("http://127.0.0.1:9", None).expect("client");
    assert_eq!(nowhere.get("a").await.unwrap_err().code(), "unreachable");
    c.health().await.expect("healthz");
    assert!(c
        .metrics()
        .await
        .expect("metrics")
        .contains("spawner_backends"));
    let (link, _) = c.login_link().await.expect("login link");
    let code = link.split("#login=").nth(1).expect("a code");
    let anonymous = spawner_client::Client::new(&server.url(), None).expect("client");
    assert_eq!(
        Some(anonymous.login(code).await.expect("login")),
        server.token
    );
}

#[tokio::test]
async fn rust_client_pools_claims_pages_and_the_list_stream() {
    let server = TestServer::start();
    let c = server.client();
    let mut template = example_app();
    template.labels.insert("pool".into(), "notebooks".into());
    let pool = PoolSpec {
        name: "notebooks".into(),
        template: PoolTemplate {
            spec: template,
            claim_path: None,
        },
        min_ready: 1,
        max: 3,
    };
    let mut changes = Box::pin(
        c.watch_list(&[("label", "pool=notebooks")])
            .await
            .expect("watch"),
    );
    let first = changes.next().await.expect("a snapshot").expect("ok");
    assert!(
        matches!(first, ListChange::Snapshot(ref p) if p.backends.is_empty()),
        "{first:?}"
    );

    assert_eq!(
        c.create_pool(&pool).await.expect("create").name,
        "notebooks"
    );
    let err = c.create_pool(&pool).await.unwrap_err();
    assert_eq!(
        (err.code(), err.status().map(|s| s.as_u16())),
        ("pool_exists", Some(409))
    );
    assert_eq!(c.list_pools().await.expect("pools").len(), 1);
    assert_eq!(
        c.list_pools_page(Some(1), None)
            .await
            .expect("page")
            .pools
            .len(),
        1
    );

    let claim = ClaimRequest {
        pool: "notebooks".into(),
        key: Some("user-7".into()),
        labels: [("owner".to_string(), "user-7".to_string())].into(),
        grace_period_seconds: Some(120),
        lifetime_limit_seconds: None,
        if_none_ready: IfNoneReady::Start,
        wait_seconds: 30,
        access: None,
        idle_action: None,
        max_sleep_seconds: None,
    };
    let (claimed, created) = c.claim(&claim).await.expect("claim");
    assert!(created);
    assert_eq!(claimed.state, State::Ready);
    let (again, created) = c.claim(&claim).await.expect("claim again");
    assert!(!created);
    assert_eq!(again.id, claimed.id);

    // The list stream saw the pool's backend.
    let saw = async {
        while let Some(change) = changes.next().await {
            if let ListChange::Backend(b) = change.expect("a change") {
                if b.id == claimed.id {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, saw)
        .await
        .expect("the claimed backend on the list stream");

    // Pages of the list: limit 1 over the pool's two backends (claimed, and its refill).
    let refilled = async {
        while c
            .list(&[("label", "pool=notebooks")])
            .await
            .expect("list")
            .len()
            < 2
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, refilled)
        .await
        .expect("a refill");
    let page = c
        .list_page(&[("label", "pool=notebooks")], Some(1), None)
        .await
        .expect("page");
    assert_eq!(page.backends.len(), 1);
    let next = page.next.expect("a next page");
    let rest = c
        .list_page(&[("label", "pool=notebooks")], Some(1), Some(&next))
        .await
        .expect("page 2");
    assert_eq!(rest.backends.len(), 1);

    let resized = c
        .resize_pool(
            "notebooks",
            PoolSize {
                min_ready: 0,
                max: 2,
            },
        )
        .await
        .expect("resize");
    assert_eq!((resized.min_ready, resized.max), (0, 2));
    assert_eq!(c.get_pool("notebooks").await.expect("pool").claimed, 1);
    assert_eq!(
        c.delete_pool("notebooks").await.expect("drain").name,
        "notebooks"
    );
    let other = ClaimRequest {
        key: Some("user-8".into()),
        ..claim
    };
    assert_eq!(c.claim(&other).await.unwrap_err().code(), "not_found");
    let err = c.get_pool("notebooks").await.unwrap_err();
    assert_eq!(err.code(), "not_found");
}

/// Every operation of the OpenAPI document is a method of the Rust client: its route in
/// spawner_client::ROUTES (which the methods call) and a method named below, checked by
/// the compiler.
#[test]
fn rust_client_covers_every_operation_of_the_openapi_document() {
    // Operations that are not API calls of a client, and why.
    const NOT_CALLS: &[(&str, &str)] = &[
        (
            "proxy",
            "the backend's own traffic: the browser goes to the backend's `url`",
        ),
        (
            "dashboard",
            "an HTML page: login_link() gives its login link",
        ),
        (
            "seed_spawn",
            "the seed's routes, kept for the seed's clients: spawn() is their /v1 twin",
        ),
        ("seed_status", "the seed's: status()"),
        ("seed_status_stream", "the seed's: status_stream()"),
        ("seed_ready", "the seed's: is_ready()"),
    ];
    type C = spawner_client::Client;
    // The method of each operation (a compile error when one is renamed or removed).
    fn method_of(op: &str) -> Option<&'static str> {
        Some(match op {
            "spawn" => {
                let _ = C::spawn;
                let _ = C::claim;
                "spawn, claim"
            }
            "list" => {
                let _ = C::list;
                let _ = C::list_page;
                "list, list_page"
            }
            "list_stream" => {
                let _ = C::watch_list;
                "watch_list"
            }
            "get" => {
                let _ = C::get;
                "get"
            }
            "terminate" => {
                let _ = C::terminate;
                "terminate"
            }
            "wake" => {
                let _ = C::wake;
                "wake"
            }
            "keepalive" => {
                let _ = C::keepalive;
                "keepalive"
            }
            "connect" => {
                let _ = C::connect;
                "connect"
            }
            "access" => {
                let _ = C::access;
                "access"
            }
            "revoke" => {
                let _ = C::revoke;
                "revoke"
            }
            "logs" => {
                let _ = C::logs;
                "logs"
            }
            "status" => {
                let _ = C::status;
                "status"
            }
            "status_stream" => {
                let _ = C::status_stream;
                let _ = C::status_updates;
                let _ = C::wait_ready;
                "status_stream, status_updates, wait_ready"
            }
            "ready" => {
                let _ = C::is_ready;
                "is_ready"
            }
            "create_pool" => {
                let _ = C::create_pool;
                "create_pool"
            }
            "list_pools" => {
                let _ = C::list_pools;
                let _ = C::list_pools_page;
                "list_pools"
            }
            "get_pool" => {
                let _ = C::get_pool;
                "get_pool"
            }
            "resize_pool" => {
                let _ = C::resize_pool;
                "resize_pool"
            }
            "drain_pool" => {
                let _ = C::delete_pool;
                "delete_pool"
            }
            "login" => {
                let _ = C::login;
                "login"
            }
            "login_links" => {
                let _ = C::login_link;
                "login_link"
            }
            "healthz" => {
                let _ = C::health;
                "health"
            }
            "metrics" => {
                let _ = C::metrics;
                "metrics"
            }
            "openapi" => {
                let _ = C::openapi;
                "openapi"
            }
            _ => return None,
        })
    }
    let doc = spawner_api::openapi::document();
    let mut problems = Vec::new();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if let Some(id) = op["operationId"].as_str() {
                ops.push((id.to_string(), method.to_uppercase(), path.clone()));
            }
        }
    }
    for (id, method, path) in &ops {
        if NOT_CALLS.iter().any(|(n, _)| n == id) {
            continue;
        }
        let route = format!("{method} {path}");
        match spawner_client::ROUTES.iter().find(|(op, _, _)| op == id) {
            None => problems.push(format!("missing: {id} ({route})")),
            Some((_, m, p)) if (*m, *p) != (method.as_str(), path.as_str()) => problems.push(
                format!("{id}: the client calls {m} {p}, the document says {route}"),
            ),
            Some(_) if method_of(id).is_none() => problems.push(format!("{id}: no method named")),
            Some(_) => {}
        }
    }
    for (op, _, _) in spawner_client::ROUTES {
        if !ops.iter().any(|(id, _, _)| id == op) {
            problems.push(format!(
                "the client calls {op}, which the document does not have"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// index.d.ts describes the calls as an application writes them: clients/js/types-test is
/// type-checked by `tsc --strict` (Debian's node-typescript, which scripts/test installs).
#[test]
fn js_client_declarations_type_check() {
    let mut cmd = Command::new("tsc");
    cmd.args(["-p", "types-test/tsconfig.json"])
        .current_dir(repo_root().join("clients/js"));
    run_to_success(
        cmd,
        "tsc (clients/js/index.d.ts; apt-get install node-typescript)",
        LIMIT,
    );
}

/// The Python package is typed (`py.typed`): `mypy --strict` passes on it.
#[test]
fn python_client_type_checks() {
    let mut cmd = Command::new(venv_python());
    cmd.args([
        "-m",
        "mypy",
        "--strict",
        "--cache-dir=/dev/null",
        "spawner_client",
    ])
    .current_dir(repo_root().join("clients/python"));
    run_to_success(cmd, "mypy --strict (clients/python)", LIMIT);
}
