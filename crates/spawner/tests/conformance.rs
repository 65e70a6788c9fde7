//! The contract of docs/api.md, one table of cases run against both control planes: the
//! embedded server (`spawner serve`) and `spawner api` on the tests' real Kubernetes API
//! server (its controller and sweeper as processes; the test plays the kubelet). Each case is
//! a call (every route, successes and errors), its status code, its error code, and the
//! backend's state right after it. A case whose answer differs between the modes names the
//! row of docs/api.md's "Differences between the modes" that says so: a difference not
//! named there fails.

mod common;
mod k8s;

use serde_json::{json, Value};
use spawner_core::State;
use std::time::{Duration, Instant};

const TOKEN: &str = "conformance-token";
const ACCESS_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The ids a case's path and body refer to.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The keyed backend the cases bring to Ready and terminate.
    A,
    /// A backend that never becomes Ready (its process does not listen; its Pod never runs).
    B,
    /// A token-mode backend (per-user access).
    C,
    /// The backend a claim took.
    Claimed,
    /// An id no backend has.
    Unknown,
}

/// What a case sends.
#[derive(Clone, Copy, Debug)]
enum Body {
    None,
    Json(&'static str),
    /// The mode's spawn body for a backend that becomes Ready, with key `conf-a`.
    SpawnA,
    /// The mode's spawn body for a backend that never becomes Ready.
    SpawnB,
    /// As [`Body::SpawnB`], in token mode for user `alice`.
    SpawnC,
    /// The mode's body for the seed's `/spawn`.
    Seed,
    /// The mode's pool body (`conf-pool`, min_ready 0, max 1).
    Pool,
    /// A spawn of a local command alone (no image).
    CommandOnly,
    /// A JSON body over 256 KiB.
    Huge,
    /// A JSON body sent as `text/plain`.
    TextPlain,
}

/// What a case expects: the status, the error code (for an error), and the states the
/// target may be in right after (none: not looked at).
#[derive(Clone, Copy, Debug)]
struct Expect {
    status: u16,
    error: Option<&'static str>,
    state_after: &'static [State],
}

/// One call of the contract and what it answers.
#[derive(Clone, Copy, Debug)]
struct Case {
    what: &'static str,
    method: &'static str,
    /// `{id}` is the target's id, `{name}` the seed backend's.
    path: &'static str,
    target: Target,
    body: Body,
    /// Without the token.
    anonymous: bool,
    /// Before the call, bring the target to Ready (the mode's way).
    make_ready: bool,
    /// Before the call, bring a member of `conf-pool` to Ready.
    make_pool_ready: bool,
    expect: Expect,
    /// On Kubernetes, what differs, and the row of docs/api.md's differences that says so.
    kubernetes: Option<(Expect, &'static str)>,
}

const STARTING: &[State] = &[
    State::Submitted,
    State::Constructed,
    State::Scheduled,
    State::Running,
];
/// A live backend that may have become Ready by itself (the embedded server's example app).
const LIVE: &[State] = &[
    State::Submitted,
    State::Constructed,
    State::Scheduled,
    State::Running,
    State::Ready,
];
const STOPPING: &[State] = &[State::Terminating, State::Terminated];
const NONE: &[State] = &[];

const fn ok(status: u16, state_after: &'static [State]) -> Expect {
    Expect {
        status,
        error: None,
        state_after,
    }
}

const fn err(status: u16, error: &'static str) -> Expect {
    Expect {
        status,
        error: Some(error),
        state_after: NONE,
    }
}

const fn case(
    what: &'static str,
    method: &'static str,
    path: &'static str,
    expect: Expect,
) -> Case {
    Case {
        what,
        method,
        path,
        target: Target::A,
        body: Body::None,
        anonymous: false,
        make_ready: false,
        make_pool_ready: false,
        expect,
        kubernetes: None,
    }
}

impl Case {
    const fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }
    const fn on(mut self, target: Target) -> Self {
        self.target = target;
        self
    }
    const fn anonymous(mut self) -> Self {
        self.anonymous = true;
        self
    }
    const fn ready_first(mut self) -> Self {
        self.make_ready = true;
        self
    }
    const fn pool_ready_first(mut self) -> Self {
        self.make_pool_ready = true;
        self
    }
    const fn kubernetes(mut self, expect: Expect, row: &'static str) -> Self {
        self.kubernetes = Some((expect, row));
        self
    }
}

/// The contract, in the order it is played. The same list for both modes.
const CASES: &[Case] = &[
    // Spawn: bodies refused, then a backend, then get-or-create by key.
    case(
        "spawn: not JSON",
        "POST",
        "/v1/backends",
        err(400, "invalid_body"),
    )
    .body(Body::Json("{")),
    case(
        "spawn: unknown field",
        "POST",
        "/v1/backends",
        err(400, "invalid_body"),
    )
    .body(Body::Json(r#"{"executable": {"image": "a"}, "colour": 1}"#)),
    case(
        "spawn: PORT is Spawner's",
        "POST",
        "/v1/backends",
        err(400, "invalid_field"),
    )
    .body(Body::Json(
        r#"{"executable": {"image": "a", "env": {"PORT": "1"}}}"#,
    )),
    case(
        "spawn: over 256 KiB",
        "POST",
        "/v1/backends",
        err(413, "body_too_large"),
    )
    .body(Body::Huge),
    case(
        "spawn: not declared JSON",
        "POST",
        "/v1/backends",
        err(415, "unsupported_media_type"),
    )
    .body(Body::TextPlain),
    case(
        "spawn: no token",
        "POST",
        "/v1/backends",
        err(401, "unauthorized"),
    )
    .body(Body::SpawnA)
    .anonymous(),
    case(
        "spawn: a command alone",
        "POST",
        "/v1/backends",
        ok(201, NONE),
    )
    .body(Body::CommandOnly)
    .kubernetes(err(400, "invalid_field"), "executable"),
    case("spawn: new", "POST", "/v1/backends", ok(201, LIVE)).body(Body::SpawnA),
    case(
        "spawn: the key's live backend",
        "POST",
        "/v1/backends",
        ok(200, LIVE),
    )
    .body(Body::SpawnA),
    case(
        "spawn: one that never listens",
        "POST",
        "/v1/backends",
        ok(201, STARTING),
    )
    .body(Body::SpawnB)
    .on(Target::B),
    // List and get.
    case("get", "GET", "/v1/backends/{id}", ok(200, LIVE)),
    case(
        "get: unknown",
        "GET",
        "/v1/backends/{id}",
        err(404, "not_found"),
    )
    .on(Target::Unknown),
    case(
        "get: malformed id",
        "GET",
        "/v1/backends/NOT-AN-ID",
        err(404, "not_found"),
    ),
    case("list", "GET", "/v1/backends", ok(200, LIVE)),
    case(
        "list: by key",
        "GET",
        "/v1/backends?key=conf-a&label=x=y",
        ok(200, NONE),
    ),
    case(
        "list: a state in lower case",
        "GET",
        "/v1/backends?state=ready",
        err(400, "invalid_query"),
    ),
    case(
        "list: unknown filter",
        "GET",
        "/v1/backends?colour=red",
        err(400, "invalid_query"),
    ),
    case(
        "list: limit 0",
        "GET",
        "/v1/backends?limit=0",
        err(400, "invalid_query"),
    ),
    case(
        "list: a cursor of nothing",
        "GET",
        "/v1/backends?after=nonsense",
        err(400, "invalid_query"),
    ),
    case(
        "list: no token",
        "GET",
        "/v1/backends",
        err(401, "unauthorized"),
    )
    .anonymous(),
    case(
        "list: method",
        "DELETE",
        "/v1/backends",
        err(405, "method_not_allowed"),
    ),
    // Status, while starting.
    case(
        "status",
        "GET",
        "/v1/backends/{id}/status",
        ok(200, STARTING),
    )
    .on(Target::B),
    case(
        "status: unknown",
        "GET",
        "/v1/backends/{id}/status",
        err(404, "not_found"),
    )
    .on(Target::Unknown),
    case(
        "ready: starting",
        "GET",
        "/v1/backends/{id}/ready",
        err(409, "not_ready"),
    )
    .on(Target::B),
    case(
        "ready: unknown",
        "GET",
        "/v1/backends/{id}/ready",
        err(404, "not_found"),
    )
    .on(Target::Unknown),
    case(
        "status stream: unknown",
        "GET",
        "/v1/backends/{id}/status/stream",
        err(404, "not_found"),
    )
    .on(Target::Unknown),
    case(
        "seed status",
        "GET",
        "/backend/{id}/status",
        ok(200, STARTING),
    )
    .on(Target::B),
    case(
        "status stream",
        "GET",
        "/v1/backends/{id}/status/stream",
        ok(200, STARTING),
    )
    .on(Target::B),
    case(
        "status stream: a bad Last-Event-ID",
        "GET",
        "/v1/backends/{id}/status/stream",
        err(400, "invalid_header"),
    )
    .on(Target::B),
    // Logs.
    case(
        "logs: unknown parameter",
        "GET",
        "/v1/backends/{id}/logs?colour=1",
        err(400, "invalid_query"),
    ),
    case(
        "logs: unknown",
        "GET",
        "/v1/backends/{id}/logs",
        err(404, "not_found"),
    )
    .on(Target::Unknown),
    // Keepalive.
    case(
        "keepalive: seconds 0",
        "POST",
        "/v1/backends/{id}/keepalive",
        err(400, "invalid_field"),
    )
    .body(Body::Json(r#"{"seconds": 0}"#)),
    case(
        "keepalive: not the body",
        "POST",
        "/v1/backends/{id}/keepalive",
        err(400, "invalid_body"),
    )
    .body(Body::Json(r#"{"secs": 5}"#)),
    case(
        "keepalive: no token",
        "POST",
        "/v1/backends/{id}/keepalive",
        err(401, "unauthorized"),
    )
    .body(Body::Json(r#"{"seconds": 5}"#))
    .anonymous(),
    case(
        "keepalive: unknown",
        "POST",
        "/v1/backends/{id}/keepalive",
        err(404, "not_found"),
    )
    .body(Body::Json(r#"{"seconds": 5}"#))
    .on(Target::Unknown),
    case(
        "keepalive",
        "POST",
        "/v1/backends/{id}/keepalive",
        ok(200, LIVE),
    )
    .body(Body::Json(r#"{"seconds": 60}"#)),
    // Access of an open backend.
    case(
        "connect: an open backend",
        "POST",
        "/v1/backends/{id}/connect",
        err(409, "open_access"),
    )
    .body(Body::Json(r#"{"user": "alice"}"#)),
    case(
        "connect: no user",
        "POST",
        "/v1/backends/{id}/connect",
        err(400, "invalid_body"),
    )
    .body(Body::Json(r#"{}"#)),
    case(
        "access list",
        "GET",
        "/v1/backends/{id}/access",
        ok(200, NONE),
    ),
    case(
        "revoke: nobody",
        "DELETE",
        "/v1/backends/{id}/access/nobody",
        err(404, "not_found"),
    ),
    // Per-user access of a token-mode backend.
    case(
        "spawn: token mode without a user",
        "POST",
        "/v1/backends",
        err(400, "invalid_field"),
    )
    .body(Body::Json(
        r#"{"executable": {"image": "a"}, "access": {"mode": "token"}}"#,
    )),
    case(
        "spawn: token mode",
        "POST",
        "/v1/backends",
        ok(201, STARTING),
    )
    .body(Body::SpawnC)
    .on(Target::C),
    case(
        "connect",
        "POST",
        "/v1/backends/{id}/connect",
        ok(200, STARTING),
    )
    .body(Body::Json(r#"{"user": "bob", "ttl_seconds": 30}"#))
    .on(Target::C),
    case(
        "connect: ttl over an hour",
        "POST",
        "/v1/backends/{id}/connect",
        err(400, "invalid_field"),
    )
    .body(Body::Json(r#"{"user": "bob", "ttl_seconds": 7200}"#))
    .on(Target::C),
    case(
        "connect: unknown",
        "POST",
        "/v1/backends/{id}/connect",
        err(404, "not_found"),
    )
    .body(Body::Json(r#"{"user": "bob"}"#))
    .on(Target::Unknown),
    case(
        "access list: two users",
        "GET",
        "/v1/backends/{id}/access",
        ok(200, STARTING),
    )
    .on(Target::C),
    case(
        "revoke",
        "DELETE",
        "/v1/backends/{id}/access/bob",
        ok(204, STARTING),
    )
    .on(Target::C),
    case(
        "revoke: again",
        "DELETE",
        "/v1/backends/{id}/access/bob",
        err(404, "not_found"),
    )
    .on(Target::C),
    case(
        "terminate: token mode",
        "POST",
        "/v1/backends/{id}/terminate",
        ok(202, STOPPING),
    )
    .body(Body::Json(r#"{"hard": true}"#))
    .on(Target::C),
    // Ready, then terminate: from the answer on, every reader says Terminating.
    case(
        "ready",
        "GET",
        "/v1/backends/{id}/ready",
        ok(302, &[State::Ready]),
    )
    .ready_first(),
    // A wake of a backend that is awake changes nothing, and says so.
    case(
        "wake: awake",
        "POST",
        "/v1/backends/{id}/wake",
        ok(202, &[State::Ready]),
    ),
    case(
        "wake: unknown",
        "POST",
        "/v1/backends/{id}/wake",
        err(404, "not_found"),
    )
    .on(Target::Unknown),
    case(
        "terminate: not the body",
        "POST",
        "/v1/backends/{id}/terminate",
        err(400, "invalid_body"),
    )
    .body(Body::Json(r#"{"hard": 5}"#)),
    case(
        "terminate: unknown",
        "POST",
        "/v1/backends/{id}/terminate",
        err(404, "not_found"),
    )
    .body(Body::Json("{}"))
    .on(Target::Unknown),
    case(
        "terminate",
        "POST",
        "/v1/backends/{id}/terminate",
        ok(202, STOPPING),
    )
    .body(Body::Json("{}")),
    case(
        "ready: stopping",
        "GET",
        "/v1/backends/{id}/ready",
        err(410, "gone"),
    ),
    case(
        "keepalive: stopping",
        "POST",
        "/v1/backends/{id}/keepalive",
        err(410, "gone"),
    )
    .body(Body::Json(r#"{"seconds": 60}"#)),
    case(
        "connect: stopping",
        "POST",
        "/v1/backends/{id}/connect",
        err(410, "gone"),
    )
    .body(Body::Json(r#"{"user": "alice"}"#)),
    case(
        "wake: stopping",
        "POST",
        "/v1/backends/{id}/wake",
        err(410, "gone"),
    ),
    // Starting: a wake waits for nothing and changes nothing.
    case(
        "wake: starting",
        "POST",
        "/v1/backends/{id}/wake",
        ok(202, STARTING),
    )
    .on(Target::B),
    case(
        "terminate: hard, one that never listened",
        "POST",
        "/v1/backends/{id}/terminate",
        ok(202, STOPPING),
    )
    .body(Body::Json(r#"{"hard": true}"#))
    .on(Target::B),
    // Pools.
    case(
        "pool: not JSON",
        "POST",
        "/v1/pools",
        err(400, "invalid_body"),
    )
    .body(Body::Json("[")),
    case("pool: create", "POST", "/v1/pools", ok(201, NONE)).body(Body::Pool),
    case("pool: exists", "POST", "/v1/pools", err(409, "pool_exists")).body(Body::Pool),
    case("pools", "GET", "/v1/pools", ok(200, NONE)),
    case(
        "pools: unknown parameter",
        "GET",
        "/v1/pools?colour=1",
        err(400, "invalid_query"),
    ),
    case("pool", "GET", "/v1/pools/conf-pool", ok(200, NONE)),
    case(
        "pool: unknown",
        "GET",
        "/v1/pools/nope",
        err(404, "not_found"),
    ),
    case(
        "claim: unknown pool",
        "POST",
        "/v1/backends",
        err(404, "not_found"),
    )
    .body(Body::Json(r#"{"pool": "nope"}"#)),
    case(
        "claim: none Ready",
        "POST",
        "/v1/backends",
        err(503, "pool_exhausted"),
    )
    .body(Body::Json(
        r#"{"pool": "conf-pool", "wait_seconds": 1, "if_none_ready": "wait"}"#,
    )),
    case(
        "pool: resize below min",
        "PUT",
        "/v1/pools/conf-pool",
        err(400, "invalid_field"),
    )
    .body(Body::Json(r#"{"min_ready": 3, "max": 1}"#)),
    case("pool: resize", "PUT", "/v1/pools/conf-pool", ok(200, NONE))
        .body(Body::Json(r#"{"min_ready": 1, "max": 2}"#)),
    case("claim", "POST", "/v1/backends", ok(201, &[State::Ready]))
        .body(Body::Json(
            r#"{"pool": "conf-pool", "key": "conf-claim", "wait_seconds": 30}"#,
        ))
        .on(Target::Claimed)
        .pool_ready_first(),
    case(
        "claim: the key's backend",
        "POST",
        "/v1/backends",
        ok(200, &[State::Ready]),
    )
    .body(Body::Json(r#"{"pool": "conf-pool", "key": "conf-claim"}"#))
    .on(Target::Claimed),
    case(
        "pool: drain",
        "DELETE",
        "/v1/pools/conf-pool",
        ok(202, NONE),
    ),
    case(
        "pool: drained",
        "DELETE",
        "/v1/pools/conf-pool",
        err(404, "not_found"),
    ),
    // The seed's routes, operations, login.
    case("seed spawn", "POST", "/spawn", ok(201, NONE)).body(Body::Seed),
    case(
        "seed spawn: unknown field",
        "POST",
        "/spawn",
        err(400, "invalid_body"),
    )
    .body(Body::Json(r#"{"colour": 1}"#)),
    case("list stream", "GET", "/v1/backends/stream", ok(200, NONE)),
    case(
        "list stream: bad filter",
        "GET",
        "/v1/backends/stream?state=x",
        err(400, "invalid_query"),
    ),
    case("healthz", "GET", "/healthz", ok(200, NONE)).anonymous(),
    case("openapi", "GET", "/v1/openapi.json", ok(200, NONE)).anonymous(),
    case("metrics", "GET", "/metrics", ok(200, NONE)),
    case(
        "metrics: no token",
        "GET",
        "/metrics",
        err(401, "unauthorized"),
    )
    .anonymous(),
    case(
        "login: unknown code",
        "POST",
        "/v1/login",
        err(401, "invalid_login_code"),
    )
    .body(Body::Json(r#"{"code": "nope"}"#))
    .anonymous(),
    case("no such route", "GET", "/v2/nothing", err(404, "not_found")),
];

/// A control plane under test: where it answers, and the mode's own ways.
trait Mode {
    fn base(&self) -> String;
    fn spawn_body(&self, key: Option<&str>, listens: bool) -> Value;
    fn seed_body(&self) -> Value;
    /// Brings backend `id` to Ready.
    async fn make_ready(&self, id: &str);
    /// Brings the members of pool `name` to Ready (at least one).
    async fn make_pool_ready(&self, name: &str);
}

/// Waits until pool `name` of the server at `base` has a Ready member, doing `tick` between
/// looks.
async fn wait_pool_ready(base: &str, name: &str, mut tick: impl AsyncFnMut()) {
    let deadline = Instant::now() + k8s::PATIENCE;
    loop {
        tick().await;
        let status: Value = reqwest::Client::new()
            .get(format!("{base}/v1/pools/{name}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET pool")
            .json()
            .await
            .unwrap_or(Value::Null);
        if status["ready"].as_u64().unwrap_or(0) >= 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pool {name} never had a Ready member: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Embedded(common::TestServer);

impl Mode for Embedded {
    fn base(&self) -> String {
        self.0.url()
    }
    fn spawn_body(&self, key: Option<&str>, listens: bool) -> Value {
        let command = if listens {
            json!(["spawner", "example-app"])
        } else {
            json!(["sleep", "600"])
        };
        json!({"key": key, "executable": {"command": command}})
    }
    fn seed_body(&self) -> Value {
        json!({"command": ["spawner", "example-app"]})
    }
    async fn make_ready(&self, id: &str) {
        common::wait_state(&self.0.client(), id, State::Ready).await;
    }
    async fn make_pool_ready(&self, name: &str) {
        wait_pool_ready(&self.base(), name, async || {}).await;
    }
}

struct Kube {
    ns: k8s::TestNs,
    /// The Pods this test has run (played the kubelet for).
    ran: std::sync::Mutex<std::collections::HashSet<String>>,
    api: k8s::ApiProc,
    _controller: k8s::Proc,
    _sweeper: k8s::Proc,
}

impl Mode for Kube {
    fn base(&self) -> String {
        self.api.url.clone()
    }
    fn spawn_body(&self, key: Option<&str>, _listens: bool) -> Value {
        // Whether it listens is the kubelet's (this test's) to play: B's Pod never runs.
        json!({"key": key, "executable": {"image": "registry.example/app:1"}})
    }
    fn seed_body(&self) -> Value {
        json!({"image": "registry.example/app:1"})
    }
    async fn make_pool_ready(&self, name: &str) {
        let label = format!("{}={name}", spawner_k8s::model::pool_crd::LABEL_POOL);
        wait_pool_ready(&self.base(), name, async || {
            let lp = spawner_k8s::kube::api::ListParams::default().labels(&label);
            let members = self.ns.slabs().list(&lp).await.expect("members");
            for m in members.items {
                let member = spawner_k8s::kube::ResourceExt::name_any(&m);
                if self.ran.lock().expect("ran").insert(member.clone()) {
                    self.ns.run_pod(&member).await;
                }
            }
        })
        .await;
    }
    async fn make_ready(&self, id: &str) {
        self.ran.lock().expect("ran").insert(id.to_string());
        self.ns.run_pod(id).await;
        let deadline = Instant::now() + k8s::PATIENCE;
        loop {
            let st = self
                .api
                .get_json(&format!("/v1/backends/{id}/status"))
                .await;
            if st["state"] == "Ready" {
                return;
            }
            assert!(Instant::now() < deadline, "{id} never became Ready: {st}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The rows of docs/api.md's "Differences between the modes" (their first cells).
fn documented_differences() -> Vec<String> {
    let page =
        std::fs::read_to_string(common::repo_root().join("docs/api.md")).expect("docs/api.md");
    let section = page
        .split("## Differences between the modes")
        .nth(1)
        .expect("docs/api.md has a section \"Differences between the modes\"");
    section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| ") && !l.starts_with("| what |") && !l.starts_with("| ---"))
        .filter_map(|l| l.split(" | ").next())
        .map(|cell| cell.trim_start_matches("| ").to_string())
        .collect()
}

/// The first event of a stream, as text (within a few seconds), and the stream.
async fn first_event(mut resp: reqwest::Response) -> (String, Option<reqwest::Response>) {
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !text.contains("\n\n") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    (text, Some(resp))
}

/// Whether the list stream sends a `backend` event of `id` within a few seconds.
async fn sent_backend(mut resp: reqwest::Response, id: &str) -> bool {
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if text
            .split("\n\n")
            .any(|e| e.starts_with("event: backend") && e.contains(id))
        {
            return true;
        }
        match tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => return false,
        }
    }
    false
}

/// The shape of an answer: the paths of its fields (`backends[].state`), not into what a
/// spec or a label holds (what the spawn sent).
fn shape(v: &Value, at: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                let path = format!("{at}.{k}");
                if !v.is_null() {
                    out.insert(path.clone());
                }
                if !matches!(k.as_str(), "spec" | "template" | "labels" | "user_data") {
                    shape(v, &path, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                shape(item, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

/// What each case answered, by shape.
type Shapes = Vec<(&'static str, std::collections::BTreeSet<String>)>;

async fn play(mode: &impl Mode, kubernetes: bool) -> Shapes {
    let mut shapes = Shapes::new();
    let differences = documented_differences();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = mode.base();
    let (mut a, mut b, mut c_id) = (String::new(), String::new(), String::new());
    let mut claimed = String::new();
    let unknown = "aaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut failures = Vec::new();
    for c in CASES {
        let expect = match c.kubernetes {
            Some((k, row)) if kubernetes => {
                assert!(
                    differences.iter().any(|d| d == row),
                    "{}: the difference {row} is not a row of docs/api.md's \"Differences between the modes\" ({differences:?})",
                    c.what
                );
                k
            }
            _ => c.expect,
        };
        let id = match c.target {
            Target::A => a.clone(),
            Target::B => b.clone(),
            Target::C => c_id.clone(),
            Target::Claimed => claimed.clone(),
            Target::Unknown => unknown.to_string(),
        };
        if c.make_ready {
            mode.make_ready(&id).await;
        }
        if c.make_pool_ready {
            mode.make_pool_ready("conf-pool").await;
        }
        let url = format!("{base}{}", c.path.replace("{id}", &id));
        let method: reqwest::Method = c.method.parse().expect("method");
        let mut req = http.request(method, &url);
        if !c.anonymous {
            req = req.bearer_auth(TOKEN);
        }
        if c.what.ends_with("a bad Last-Event-ID") {
            req = req.header("last-event-id", "three");
        }
        req = match c.body {
            Body::None => req,
            Body::Json(text) => req.header("content-type", "application/json").body(text),
            Body::SpawnA => req.json(&mode.spawn_body(Some("conf-a"), true)),
            Body::SpawnB => req.json(&mode.spawn_body(None, false)),
            Body::SpawnC => {
                let mut body = mode.spawn_body(None, false);
                body["access"] = json!({"mode": "token", "user": "alice"});
                req.json(&body)
            }
            Body::Seed => req.json(&mode.seed_body()),
            Body::Pool => req.json(&json!({
                "name": "conf-pool",
                "template": mode.spawn_body(None, true).as_object().map(|o| {
                    let mut o = o.clone();
                    o.remove("key");
                    o
                }),
                "min_ready": 0, "max": 1,
            })),
            Body::CommandOnly => {
                req.json(&json!({"executable": {"command": ["spawner", "example-app"]}}))
            }
            Body::Huge => req.json(
                &json!({"executable": {"image": "a", "env": {"BIG": "x".repeat(300 << 10)}}}),
            ),
            Body::TextPlain => req
                .header("content-type", "text/plain")
                .body(r#"{"executable": {"image": "a"}}"#),
        };
        let resp = req.send();
        // A stream answers its head, then stays open: the head is what is checked.
        let resp = tokio::time::timeout(Duration::from_secs(30), resp)
            .await
            .unwrap_or_else(|_| panic!("{}: no answer", c.what))
            .unwrap_or_else(|e| panic!("{}: {e}", c.what));
        let status = resp.status().as_u16();
        let streaming = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let list_stream = streaming && c.path.starts_with("/v1/backends/stream");
        let (text, resp) = if streaming {
            first_event(resp).await
        } else {
            (resp.text().await.unwrap_or_default(), None)
        };
        // The list stream follows: a backend spawned now is sent as an `event: backend`.
        if let (true, Some(resp)) = (list_stream, resp) {
            let spawned: Value = http
                .post(format!("{base}/v1/backends"))
                .bearer_auth(TOKEN)
                .json(&mode.spawn_body(None, false))
                .send()
                .await
                .expect("spawn")
                .json()
                .await
                .expect("spawn JSON");
            let new = spawned["id"].as_str().expect("id").to_string();
            if !sent_backend(resp, &new).await {
                failures.push(format!(
                    "{}: {new}, spawned while it was open, was not sent",
                    c.what
                ));
            }
            let _ = http
                .post(format!("{base}/v1/backends/{new}/terminate"))
                .bearer_auth(TOKEN)
                .json(&json!({"hard": true}))
                .send()
                .await;
        }
        if streaming
            && c.path.starts_with("/v1/backends/stream")
            && !text.starts_with("event: snapshot")
        {
            failures.push(format!(
                "{}: the stream did not begin with its snapshot: {text:?}",
                c.what
            ));
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let mut fields = std::collections::BTreeSet::new();
        shape(&body, "", &mut fields);
        shapes.push((c.what, fields));
        if status != expect.status {
            failures.push(format!(
                "{}: {} {url}: status {status}, expected {} ({text})",
                c.what, c.method, expect.status
            ));
            continue;
        }
        if let Some(code) = expect.error {
            if body["error"] != code || !body["message"].is_string() {
                failures.push(format!(
                    "{}: error {}, expected {code} ({text})",
                    c.what, body["error"]
                ));
            }
        }
        // The ids the later cases use.
        match (c.what, c.body) {
            ("spawn: new", _) => a = body["id"].as_str().expect("id").to_string(),
            ("spawn: the key's live backend", _) if body["id"] != a.as_str() => {
                failures.push(format!("{}: id {} is not {a}", c.what, body["id"]));
            }
            (_, Body::SpawnB) => b = body["id"].as_str().expect("id").to_string(),
            ("claim", _) => claimed = body["id"].as_str().expect("id").to_string(),
            ("claim: the key's backend", _) if body["id"] != claimed.as_str() => {
                failures.push(format!("{}: id {} is not {claimed}", c.what, body["id"]));
            }
            (_, Body::SpawnC) => {
                c_id = body["id"].as_str().expect("id").to_string();
                if !body["connect_url"].is_string() {
                    failures.push(format!("{}: no connect_url in {text}", c.what));
                }
            }
            _ => {}
        }
        if c.what == "access list: two users" && body["users"].as_array().map(Vec::len) != Some(2) {
            failures.push(format!("{}: {text}", c.what));
        }
        if c.what == "terminate" && body["state"] != "Terminating" {
            failures.push(format!("{}: answered {text}", c.what));
        }
        let id = match c.target {
            Target::A => a.clone(),
            Target::B => b.clone(),
            Target::C => c_id.clone(),
            Target::Claimed => claimed.clone(),
            Target::Unknown => unknown.to_string(),
        };
        if !expect.state_after.is_empty() {
            let st = http
                .get(format!("{base}/v1/backends/{id}/status"))
                .send()
                .await
                .expect("status")
                .json::<Value>()
                .await
                .expect("status JSON");
            let state: Option<State> = serde_json::from_value(st["state"].clone()).ok();
            if !state.is_some_and(|s| expect.state_after.contains(&s)) {
                failures.push(format!(
                    "{}: right after, the state is {}, expected one of {:?}",
                    c.what, st["state"], expect.state_after
                ));
            }
            // A claim is in the backend's timeline from its answer on.
            if c.what == "claim" && st["reason"] != "claimed with key conf-claim" {
                failures.push(format!(
                    "{}: right after, the last event is {st}, not the claim's",
                    c.what
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from the contract ({}):\n{}",
        failures.len(),
        CASES.len(),
        if kubernetes {
            "spawner api"
        } else {
            "spawner serve"
        },
        failures.join("\n")
    );
    shapes
}

async fn embedded() -> Shapes {
    let server = common::TestServer::start_with(&[], Some(TOKEN));
    play(&Embedded(server), false).await
}

async fn kubernetes() -> Shapes {
    let ns = k8s::TestNs::new("conformance").await;
    let mut controller = ns.controller(&[], &[]);
    controller.wait_for_log("controller started");
    let sweeper = ns.sweeper();
    // Per-user access needs the access key (docs/kubernetes.md, "Per-user access").
    let api = ns.api_env(TOKEN, &[], &[("SPAWNER_ACCESS_KEY", ACCESS_KEY)]);
    let kube = Kube {
        ns,
        ran: Default::default(),
        api,
        _controller: controller,
        _sweeper: sweeper,
    };
    play(&kube, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_keeps_the_contract() {
    embedded().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawner_api_keeps_the_contract() {
    kubernetes().await;
}

/// Fields one mode may give where the other has none yet, and the row of docs/api.md's
/// differences that says so.
const FIELD_DIFFERENCES: &[(&str, &str)] = &[
    (".node", "where it runs (`node`, `address`, `runtime`)"),
    (".address", "where it runs (`node`, `address`, `runtime`)"),
    (
        ".last_activity",
        "activity (`last_activity`, `last_client_activity`)",
    ),
    (
        ".last_client_activity",
        "activity (`last_activity`, `last_client_activity`)",
    ),
    (".events[].reason", "event reasons"),
];

/// The answers of both modes have the same fields, case by case (but the cases and fields
/// whose difference docs/api.md names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_answer_with_the_same_fields() {
    let rows = documented_differences();
    for (_, row) in FIELD_DIFFERENCES {
        assert!(
            rows.iter().any(|r| r == row),
            "{row} is not a row of docs/api.md's differences"
        );
    }
    let allowed = |f: &&String| !FIELD_DIFFERENCES.iter().any(|(d, _)| f.ends_with(d));
    let (ours, theirs) = (embedded().await, kubernetes().await);
    let mut differ = Vec::new();
    for (((what, e), (_, k)), c) in ours.iter().zip(&theirs).zip(CASES) {
        if c.kubernetes.is_some() {
            continue;
        }
        let only_e: Vec<_> = e.difference(k).filter(allowed).collect();
        let only_k: Vec<_> = k.difference(e).filter(allowed).collect();
        if !only_e.is_empty() || !only_k.is_empty() {
            differ.push(format!(
                "{what}: only embedded {only_e:?}, only Kubernetes {only_k:?}"
            ));
        }
    }
    assert!(differ.is_empty(), "answers differ:\n{}", differ.join("\n"));
}
