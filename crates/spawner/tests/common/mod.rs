//! A real `spawner serve` process for the integration tests, on its own port and data
//! directory, and helpers to drive it through its public surface.
#![allow(dead_code)]

use futures_util::StreamExt;
use spawner_client::Client;
use spawner_core::{BackendSpec, Event, State};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SPAWNER: &str = env!("CARGO_BIN_EXE_spawner");
/// Upper bound for anything a test waits for; reaching it is a failure, never a figure.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub token: Option<String>,
    pub extra_args: Vec<String>,
    /// Variables set in the server's environment besides the tests' own.
    pub extra_env: Vec<(String, String)>,
    child: Option<Child>,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(&[], None)
    }

    pub fn start_with(extra_args: &[&str], token: Option<&str>) -> Self {
        Self::start_at(0, extra_args, token, &[])
    }

    /// [`TestServer::start_with`], with `env` in the server's environment too.
    pub fn start_with_env(extra_args: &[&str], token: Option<&str>, env: &[(&str, &str)]) -> Self {
        Self::start_at(0, extra_args, token, env)
    }

    /// A server whose data directory `prepare` fills first (with a database of an older
    /// release, say).
    pub fn start_on(prepare: impl FnOnce(&std::path::Path)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        prepare(&data);
        let mut s = TestServer {
            dir,
            port: 0,
            token: None,
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            child: None,
        };
        s.launch();
        s
    }

    /// [`TestServer::start_with_env`] on `port` (0: any free one).
    pub fn start_at(
        port: u16,
        extra_args: &[&str],
        token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = TestServer {
            dir,
            port,
            token: token.map(str::to_string),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        s.launch();
        s
    }

    /// Starts `spawner serve` (again, on the same port and data after the first time) and
    /// waits until it answers.
    pub fn launch(&mut self) {
        let log = self
            .dir
            .path()
            .join(format!("serve-{}.log", Instant::now().elapsed().as_nanos()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let listen = format!("127.0.0.1:{}", self.port);
        let mut cmd = Command::new(SPAWNER);
        cmd.args(["serve", "--listen", &listen, "--data-dir"])
            .arg(self.dir.path().join("data"));
        if !self.extra_args.iter().any(|a| a == "--stop-grace") {
            cmd.args(["--stop-grace", "2"]);
        }
        cmd.args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .env("SPAWNER_LOG", "info,spawner_server=debug")
            .env_remove("SPAWNER_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        if let Some(t) = &self.token {
            cmd.args(["--token", t]);
        }
        self.child = Some(cmd.spawn().expect("spawn spawner serve"));
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.split("spawner serving on http://").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                self.port = addr
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port");
                // The token the server made at its first start, unless it was given one
                // (or told to have none).
                if self.token.is_none() && !self.extra_args.iter().any(|a| a == "--no-token") {
                    let path = self.data_dir().join("token");
                    let token = std::fs::read_to_string(&path).expect("the server's token file");
                    self.token = Some(token.trim().to_string());
                }
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("spawner serve exited with {status}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "spawner serve did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: a crash, as far as Spawner can tell.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as a service manager stops it, and waits for the server to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("a running server");
        // SAFETY: a signal to the server's own process, which this harness started.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().expect("the server exits")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A backend's URL: its own origin, `http://{id}.localhost:PORT/`.
    pub fn backend_url(&self, id: &str) -> String {
        format!("http://{id}.localhost:{}/", self.port)
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url(), self.token.clone()).expect("client")
    }

    /// A plain HTTP client (no token) that resolves `*.localhost`, as browsers do, to
    /// loopback: backends' own origins (`http://{id}.localhost:PORT/`).
    pub fn http(&self) -> reqwest::Client {
        http_client()
    }

    /// Like [`TestServer::http`], with the server's token on every request: the client of
    /// an application server.
    pub fn api(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            let value = format!("Bearer {t}").parse().expect("a header value");
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        http_builder()
            .default_headers(headers)
            .build()
            .expect("http client")
    }

    /// A one-time login link to the dashboard (`spawner dashboard`).
    pub async fn login_link(&self) -> String {
        self.client().login_link().await.expect("a login link").0
    }

    /// `req` with the server's token.
    pub fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The body of `GET {path}` on the server (with its token), as text.
    pub async fn text(&self, path: &str) -> String {
        let resp = self.api().get(format!("{}{path}", self.url())).send();
        resp.await.expect("GET").text().await.expect("body")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's own log so far (for failure messages).
    pub fn log(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("serve-") {
                    out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    /// Pids of the live processes of backends of this server (found by the keepalive URL
    /// Spawner puts in every backend's environment, which names the server's address).
    pub fn backend_pids(&self) -> Vec<(i32, String)> {
        // The installation's id marks every backend process of this data directory, whatever
        // URLs the server hands out (with --public-url its keepalive URL is not its address).
        if let Some(instance) = self.instance() {
            return processes_with_env(&format!("SPAWNER_INSTANCE={instance}"));
        }
        let marker = format!("SPAWNER_KEEPALIVE_URL=http://127.0.0.1:{}/", self.port);
        processes_with_env(&marker)
    }

    /// This data directory's installation id, from its database.
    fn instance(&self) -> Option<String> {
        let db = rusqlite::Connection::open_with_flags(
            self.data_dir().join("spawner.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        db.query_row("SELECT value FROM meta WHERE name = 'instance'", [], |r| {
            r.get(0)
        })
        .ok()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        // Whatever a failed test left running is stopped here, so no test leaks processes.
        for (pid, _) in self.backend_pids() {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// An HTTP client that follows no redirects and resolves `*.localhost` to loopback, as
/// browsers do (the system's resolver does not).
pub fn http_client() -> reqwest::Client {
    http_builder().build().expect("http client")
}

pub fn http_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(std::sync::Arc::new(Loopback))
}

/// `localhost` and `*.localhost` are loopback (RFC 6761); other names as the system says.
struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                if host == "localhost" || host.ends_with(".localhost") {
                    vec![([127, 0, 0, 1], 0).into()]
                } else {
                    tokio::net::lookup_host((host.as_str(), 0)).await?.collect()
                };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// `http://{id}.localhost:PORT/...` as `ws://127.0.0.1:PORT/...` with the URL's `Host`: a
/// WebSocket request to a backend's own origin, for clients that resolve names the
/// system's way.
pub fn ws_request(url: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws = url.replacen("http://", "ws://", 1);
    let mut req = ws.as_str().into_client_request().expect("a WebSocket URL");
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let loopback = authority
        .split_once(".localhost")
        .map(|(_, port)| format!("127.0.0.1{port}"));
    if let Some(addr) = loopback {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *req.uri_mut() = format!("ws://{addr}{path}").parse().expect("uri");
        req.headers_mut()
            .insert("host", authority.parse().expect("host header"));
    }
    req
}

/// Live (non-zombie) processes whose environment contains `needle` (a `NAME=VALUE` prefix),
/// with their backend id.
pub fn processes_with_env(needle: &str) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        if !vars.iter().any(|v| v.starts_with(needle.as_bytes())) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .is_some_and(|s| s == "Z" || s == "X");
        if zombie {
            continue;
        }
        let id = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"SPAWNER_BACKEND_ID="))
            .map(|v| String::from_utf8_lossy(v).to_string())
            .unwrap_or_default();
        out.push((pid, id));
    }
    out
}

/// The environment of the (first) live process of backend `id`, as the kernel has it.
pub fn backend_environ(id: &str) -> std::collections::BTreeMap<String, String> {
    let (pid, _) = processes_with_env(&format!("SPAWNER_BACKEND_ID={id}"))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no process of backend {id}"));
    let env = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    env.split(|b| *b == 0)
        .filter_map(|var| {
            let var = String::from_utf8_lossy(var);
            var.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Whether any process of backend `id` still runs.
pub fn backend_running(id: &str) -> bool {
    !processes_with_env(&format!("SPAWNER_BACKEND_ID={id}")).is_empty()
}

/// Waits (bounded) until no process of backend `id` runs.
pub async fn wait_gone(id: &str) {
    let deadline = Instant::now() + PATIENCE;
    while backend_running(id) {
        assert!(
            Instant::now() < deadline,
            "backend {id} still has processes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A spec running the bundled example app.
pub fn example_app() -> BackendSpec {
    BackendSpec::from_command(vec![SPAWNER.to_string(), "example-app".to_string()])
}

/// A spec running `sh -c script`.
pub fn shell(script: &str) -> BackendSpec {
    BackendSpec::from_command(vec!["sh".into(), "-c".into(), script.into()])
}

/// Follows the status stream until an event satisfies `done`; returns every event seen.
pub async fn wait_for(client: &Client, id: &str, done: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    let fut = async {
        let mut stream = Box::pin(client.status_stream(id, None).await.expect("status stream"));
        while let Some(item) = stream.next().await {
            let (_, e) = item.expect("event");
            let stop = done(&e);
            seen.push(e);
            if stop {
                return true;
            }
        }
        false
    };
    let reached = tokio::time::timeout(PATIENCE, fut).await;
    assert!(
        matches!(reached, Ok(true)),
        "backend {id} never reached the awaited state; events: {seen:?}"
    );
    seen
}

pub async fn wait_state(client: &Client, id: &str, state: State) -> Event {
    let events = wait_for(client, id, |e| e.state == state || e.state.is_terminal()).await;
    let last = events.last().cloned().expect("an event");
    assert_eq!(last.state, state, "events: {events:?}");
    last
}

/// Spawns the example app and waits until it is Ready.
pub async fn ready_example(client: &Client, grace: u64) -> String {
    let mut spec = example_app();
    spec.grace_period_seconds = grace;
    let (resp, created) = client.spawn(&spec).await.expect("spawn");
    assert!(created);
    wait_state(client, &resp.id, State::Ready).await;
    resp.id
}

pub fn file_contains(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle))
}

/// The repository's root (clients/, examples/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python of the virtualenv scripts/test.d/python-clients.sh makes (httpx, pytest,
/// FastAPI, uvicorn): `$SPAWNER_PY_VENV`, by default `~/.cache/spawner-clients/venv`. Its
/// absence fails the test, saying how to make it.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("SPAWNER_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                        .join(".cache")
                });
            cache.join("spawner-clients/venv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python virtualenv at {}: run scripts/test.d/python-clients.sh (scripts/test does), \
         or set SPAWNER_PY_VENV to one with httpx, pytest, anyio, fastapi and uvicorn",
        venv.display()
    );
    python
}

/// Runs `cmd` to its end (bounded by `limit`); fails the test with its output unless it
/// succeeded, and prints its output either way (shown by the test runner on failure, or
/// with --no-capture).
pub fn run_to_success(mut cmd: Command, what: &str, limit: Duration) {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "{}\n{}",
        out_reader.join().unwrap_or_default(),
        err_reader.join().unwrap_or_default()
    );
    println!("{output}");
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("{what} failed ({s}):\n{output}"),
        None => panic!("{what} did not end within {limit:?}:\n{output}"),
    }
}
