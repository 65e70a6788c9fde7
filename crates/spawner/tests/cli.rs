//! The command-line client against a real server.

mod common;

use common::*;
use spawner_core::State;
use std::process::Command;

fn cli(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    cli_with(server, None, args)
}

/// The CLI with `SPAWNER_TOKEN` set to `token`, or unset: then it reads the token the
/// server made in its data directory, as on the server's machine.
fn cli_with(server: &TestServer, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(SPAWNER);
    cmd.args(args)
        .env("SPAWNER_URL", server.url())
        .env("SPAWNER_DATA_DIR", server.data_dir());
    match token {
        Some(t) => cmd.env("SPAWNER_TOKEN", t),
        None => cmd.env_remove("SPAWNER_TOKEN"),
    };
    let out = cmd.output().expect("run spawner");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The backend id of a backend URL (`http://{id}.localhost:PORT/`).
fn id_of(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split('.').next())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn spawn_wait_ls_status_logs_terminate() {
    let server = TestServer::start();
    let (ok, out, err) = cli(
        &server,
        &[
            "spawn",
            "--wait",
            "--key",
            "cli-doc",
            "--label",
            "owner=me",
            "--grace",
            "60",
            "--",
            SPAWNER,
            "example-app",
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("Ready"), "progress is shown: {err}");
    let url = out.trim();
    let id = id_of(url);
    assert_eq!(url, server.backend_url(&id));
    let page = server
        .http()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&id), "the example page names its backend");

    // The same key again: the same backend.
    let (ok, out, _) = cli(
        &server,
        &[
            "spawn",
            "--key",
            "cli-doc",
            "--command",
            &format!("{SPAWNER} example-app"),
        ],
    );
    assert!(ok);
    assert!(out.starts_with(&id));

    let (ok, out, _) = cli(&server, &["ls", "--label", "owner=me"]);
    assert!(ok);
    assert!(
        out.lines()
            .next()
            .is_some_and(|h| h.contains("AGE") && h.contains("LABELS")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with(&id)
            && l.contains("Ready")
            && l.contains("cli-doc")
            && l.contains("owner=me")),
        "{out}"
    );
    // Readable by default, JSON when asked.
    let (ok, out, _) = cli(&server, &["status", &id]);
    assert!(
        ok && out.starts_with("Ready") && out.contains("since"),
        "{out}"
    );
    let (ok, out, _) = cli(&server, &["status", "--json", &id]);
    assert!(ok, "{out}");
    let last: serde_json::Value = serde_json::from_str(out.trim()).expect("status --json");
    assert_eq!(last["state"], "Ready");
    let (ok, out, _) = cli(&server, &["logs", &id]);
    assert!(ok && out.contains("example-app listening"), "{out}");

    let (ok, _, err) = cli(&server, &["terminate", &id]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&server, &["status", "--follow", &id]);
    assert!(ok);
    assert!(
        out.lines()
            .last()
            .unwrap_or_default()
            .contains("Terminated"),
        "{out}"
    );
    // Times count from Submitted, in units people read (`0.4 s`, `3 min 12 s`): never
    // negative, never a count of milliseconds.
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let amount = words.get(1).copied().unwrap_or_default();
        assert!(amount.parse::<f64>().is_ok_and(|a| a >= 0.0), "{out}");
        assert!(
            ["s", "min", "h", "d"].contains(&words.get(2).copied().unwrap_or_default()),
            "{out}"
        );
    }
    assert!(!out.contains(" ms "), "{out}");
    assert_eq!(
        server.client().status(&id).await.unwrap().state,
        State::Terminated
    );
    let (ok, _, err) = cli(&server, &["terminate", &id]);
    assert!(
        ok && err.contains("had already ended (Terminated)"),
        "{err}"
    );

    // Ended backends are listed with --all only; --json has the API's shape.
    let (ok, out, err) = cli(&server, &["ls"]);
    assert!(ok && !out.contains(&id), "{out}");
    assert!(err.contains("--all"), "{err}");
    let (ok, out, _) = cli(&server, &["ls", "--all"]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("Terminated")),
        "{out}"
    );
    let (ok, out, _) = cli(&server, &["ls", "--all", "--json"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).expect("ls --json");
    assert_eq!(list["backends"][0]["id"], id.as_str(), "{out}");
}

#[tokio::test]
async fn cli_errors_say_what_to_do() {
    let server = TestServer::start();
    let (ok, _, err) = cli(&server, &["spawn"]);
    assert!(!ok);
    assert!(err.contains("--command"), "{err}");
    let (ok, _, err) = cli(&server, &["spawn", "--env", "NOEQUALS", "--", "true"]);
    assert!(!ok && err.contains("NAME=VALUE"), "{err}");
    let (ok, _, err) = cli(&server, &["spawn", "--wait", "--", "sh", "-c", "exit 3"]);
    assert!(!ok);
    assert!(
        err.contains("Failed")
            && err.contains("exited with code 3")
            && err.contains("spawner logs"),
        "{err}"
    );
    let (ok, _, err) = cli(&server, &["status", "aaaaaaaaaaaaaaaaaaaaaaaaaa"]);
    assert!(!ok && err.contains("404"), "{err}");
    // Nothing listening: what to check, said once.
    let out = Command::new(SPAWNER)
        .args(["ls"])
        .env("SPAWNER_URL", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "error: cannot reach Spawner at http://127.0.0.1:1: connection refused; is `spawner serve` running there? (--url / SPAWNER_URL)"
    );
}

/// A server that answers every request with a web page: not Spawner.
fn not_spawner() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut conn = conn;
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let body = "<html><body>Welcome to nginx!</body></html>";
            let _ = write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_cli_pointed_at_something_else_says_so() {
    let url = not_spawner();
    for args in [
        &["ls"][..],
        &["status", "aaaaaaaaaaaaaaaaaaaaaaaaaa"],
        &["spawn", "--", "true"],
    ] {
        let out = Command::new(SPAWNER)
            .args(args)
            .env("SPAWNER_URL", &url)
            .env_remove("SPAWNER_TOKEN")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("not Spawner's API") && err.contains("404") && err.contains("SPAWNER_URL"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn help_quotes_port_singly_and_describes_ids() {
    let help = |args: &[&str]| {
        let out = Command::new(SPAWNER).args(args).output().expect("help");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let spawn = help(&["spawn", "--help"]);
    assert!(
        spawn.contains("'python3 -m http.server $(PORT)'"),
        "{spawn}"
    );
    assert!(!spawn.contains("\"$(PORT)\""), "{spawn}");
    // Every field of the spawn body has a flag, and the server's defaults are shown.
    for flag in [
        "--startup-timeout",
        "--lifetime ",
        "--lifetime-warning",
        "--idle-timeout",
        "--keep-prefix",
        "--working-dir",
        "--pull-policy",
        "--image-pull-secret",
        "--memory-mb",
        "--cpu-millis",
        "--pool",
        "--rm",
        "[default: 300]",
        "[default: 60]",
    ] {
        assert!(spawn.contains(flag), "{flag}: {spawn}");
    }
    let create = help(&["pool", "create", "--help"]);
    for flag in ["--min-ready", "--max", "--claim-path", "--grace", "--image"] {
        assert!(create.contains(flag), "{flag}: {create}");
    }
    for cmd in ["status", "terminate", "logs"] {
        let text = help(&[cmd, "--help"]);
        assert!(
            text.contains("<ID>") && text.contains("The backend's id"),
            "{cmd}: {text}"
        );
    }
    assert!(help(&["ls", "--help"]).contains("--all"));
}

#[test]
fn serve_on_a_port_in_use_suggests_listen_and_creates_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let out = Command::new(SPAWNER)
        .args(["serve", "--listen", &addr, "--docker", "off", "--data-dir"])
        .arg(&data)
        .env_remove("SPAWNER_TOKEN")
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already in use") && err.contains("--listen"),
        "{err}"
    );
    assert!(
        !data.exists(),
        "the data directory was created before the bind"
    );
}

#[tokio::test]
async fn spawn_wait_says_what_it_waits_for_and_gives_up_at_the_startup_timeout() {
    let server = TestServer::start();
    // Never opens its port: as a program listening on a wrong port, or on 127.0.0.1 in a container.
    let (ok, _, err) = cli(
        &server,
        &[
            "spawn",
            "--wait",
            "--startup-timeout",
            "1",
            "--",
            "sh",
            "-c",
            "exec sleep 600",
        ],
    );
    assert!(!ok);
    assert!(err.contains("waiting for 127.0.0.1:"), "{err}");
    assert!(err.contains("(startup timeout 1 s)"), "{err}");
    assert!(err.contains("startup timeout"), "{err}");
    assert!(
        err.contains("0.0.0.0") && err.contains("--startup-timeout"),
        "{err}"
    );
    assert!(!err.contains(" ms "), "durations are humanised: {err}");
    for line in err.lines().filter(|l| l.contains(" s ")) {
        assert!(
            !line.trim_start().starts_with('-'),
            "a negative time: {err}"
        );
    }
}

#[tokio::test]
async fn a_token_from_the_environment_public_urls_env_logs_follow_and_a_hard_terminate() {
    const TOKEN: &str = "s3cret-token-of-the-test";
    let server = TestServer::start_with(
        &[
            "--public-url",
            "https://apps.example.com/spawner",
            "--domain",
            "apps.example.com",
        ],
        Some(TOKEN),
    );
    let with_token = |args: &[&str]| cli_with(&server, Some(TOKEN), args);

    // Without the token the server refuses, and the CLI says how to give it.
    let (ok, _, err) = cli(&server, &["ls"]);
    assert!(!ok);
    assert!(
        err.contains("SPAWNER_TOKEN") || err.contains("--token"),
        "{err}"
    );

    let script = format!("echo greeting=$GREETING; exec {SPAWNER} example-app");
    let (ok, out, err) = with_token(&[
        "spawn",
        "--wait",
        "--env",
        "GREETING=hello",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(ok, "{err}");
    // URLs are built on the public URL: the backend on its own origin under the domain.
    let url = out.trim();
    let id = id_of(url);
    assert_eq!(url, format!("https://{id}.apps.example.com/"));

    // logs -f streams until the backend ends.
    let follow = Command::new(SPAWNER)
        .args(["logs", "-f", &id])
        .env("SPAWNER_URL", server.url())
        .env("SPAWNER_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs -f");
    let (ok, _, err) = with_token(&["terminate", "--hard", &id]);
    assert!(ok, "{err}");
    let out = follow.wait_with_output().expect("logs -f ends");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("greeting=hello"), "{text}");
    assert!(text.contains("example-app listening"), "{text}");
    let ended = server.client().status(&id).await.unwrap();
    assert_eq!(ended.state, State::Terminated);
    assert_eq!(ended.reason.as_deref(), Some("terminate requested"));
}

#[tokio::test]
async fn spawn_with_access_connect_access_and_revoke() {
    let server = TestServer::start();
    let (ok, out, err) = cli(
        &server,
        &[
            "spawn",
            "--access",
            "token",
            "--user",
            "alice",
            "--user-data",
            "{\"n\":1}",
            "--",
            SPAWNER,
            "example-app",
        ],
    );
    assert!(ok, "{err}");
    let fields: Vec<&str> = out.trim().split('\t').collect();
    let id = fields[0].to_string();
    assert!(fields[2].contains("?spawner_token=sat1."), "{out}");
    let (ok, _, err) = cli(&server, &["spawn", "--access", "token", "--", "true"]);
    assert!(!ok && err.contains("--user"), "{err}");

    let (ok, url, err) = cli(
        &server,
        &["connect", &id, "--user", "bob", "--ttl", "30", "--reusable"],
    );
    assert!(ok, "{err}");
    assert!(url.trim().starts_with(&server.backend_url(&id)), "{url}");
    let (ok, list, err) = cli(&server, &["access", &id]);
    assert!(ok, "{err}");
    assert!(list.starts_with("mode token"), "{list}");
    assert!(
        list.contains("alice\t") && list.contains("{\"n\":1}") && list.contains("bob\t"),
        "{list}"
    );
    let (ok, _, err) = cli(&server, &["revoke", &id, "bob"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&server, &["revoke", &id, "bob"]);
    assert!(!ok && err.contains("holds no access"), "{err}");
    let (_, list, _) = cli(&server, &["access", &id]);
    assert!(!list.contains("bob"), "{list}");
}

/// Spawn flags for the timing fields, `keepalive`, and inputs as people type them: errors
/// name the flag, a state in any case, a URL without its scheme.
#[tokio::test]
async fn timing_flags_keepalive_and_inputs_as_typed() {
    let server = TestServer::start();
    let (ok, out, err) = cli(
        &server,
        &[
            "spawn",
            "--wait",
            "--idle-timeout",
            "30",
            "--lifetime",
            "600",
            "--lifetime-warning",
            "20",
            "--",
            SPAWNER,
            "example-app",
        ],
    );
    assert!(ok, "{err}");
    let id = id_of(out.lines().last().unwrap_or_default());
    let rec = server.client().get(&id).await.expect("record");
    assert_eq!(rec.spec.idle_timeout_seconds, Some(30));
    assert_eq!(rec.spec.lifetime_limit_seconds, Some(600));
    assert_eq!(rec.spec.lifetime_warning_seconds, 20);

    let (ok, out, err) = cli(&server, &["keepalive", &id, "600"]);
    assert!(ok && out.contains("busy until"), "{out}{err}");
    assert!(server
        .client()
        .get(&id)
        .await
        .expect("record")
        .busy_until
        .is_some());

    for (flags, named) in [
        (&["--grace", "0"][..], "--grace:"),
        (&["--env", "SPAWNER_X=1"], "--env SPAWNER_X:"),
        (&["--idle-timeout", "0"], "--idle-timeout:"),
    ] {
        let mut args = vec!["spawn"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "true"]);
        let (ok, _, err) = cli(&server, &args);
        assert!(!ok && err.contains(named), "{flags:?}: {err}");
        assert!(
            !err.contains("_seconds") && !err.contains("executable."),
            "{err}"
        );
    }

    let (ok, out, err) = cli(&server, &["ls", "--state", "ready"]);
    assert!(ok && out.contains(&id), "{out}{err}");
    let bare = format!("127.0.0.1:{}", server.port);
    let (ok, out, err) = cli(&server, &["ls", "--url", &bare]);
    assert!(ok && out.contains(&id), "{out}{err}");
    server
        .client()
        .terminate(&id, true)
        .await
        .expect("terminate");
}

/// `status --follow` shows every event of the stream, the `expiring` warning included.
#[tokio::test]
async fn status_follow_shows_the_expiring_warning() {
    let server = TestServer::start();
    let (ok, out, err) = cli(
        &server,
        &[
            "spawn",
            "--wait",
            "--lifetime",
            "3",
            "--lifetime-warning",
            "2",
            "--",
            SPAWNER,
            "example-app",
        ],
    );
    assert!(ok, "{err}");
    let id = id_of(out.lines().last().unwrap_or_default());
    let (ok, out, err) = cli(&server, &["status", "--follow", &id]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let warned = lines
        .iter()
        .position(|l| l.contains("expiring: lifetime limit at "))
        .unwrap_or_else(|| panic!("no expiring line: {out}"));
    let ended = lines
        .iter()
        .position(|l| l.contains("Terminated (lifetime limit)"))
        .unwrap_or_else(|| panic!("no end: {out}"));
    assert!(warned < ended, "{out}");
}

/// The text of a record's events' reasons.
fn reasons(record: &serde_json::Value) -> Vec<String> {
    record["events"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| e["reason"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn pools_through_the_cli_and_a_claim_with_spawn_pool() {
    let server = TestServer::start();
    let (ok, out, err) = cli(
        &server,
        &[
            "pool",
            "create",
            "notebooks",
            "--min-ready",
            "1",
            "--max",
            "3",
            "--label",
            "app=nb",
            "--grace",
            "120",
            "--",
            SPAWNER,
            "example-app",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("pool        notebooks"), "{out}");
    assert!(out.contains("min-ready 1, max 3"), "{out}");
    assert!(out.contains("grace 2 min"), "durations humanised: {out}");
    assert!(err.contains("spawner spawn --pool notebooks"), "{err}");
    // Refusals name the flag.
    let (ok, _, err) = cli(
        &server,
        &[
            "pool",
            "create",
            "nb2",
            "--min-ready",
            "3",
            "--max",
            "2",
            "--",
            "true",
        ],
    );
    assert!(
        !ok && err.contains("--min-ready: must be at most max"),
        "{err}"
    );
    let (ok, _, err) = cli(
        &server,
        &[
            "pool",
            "create",
            "Bad",
            "--min-ready",
            "0",
            "--max",
            "1",
            "--",
            "true",
        ],
    );
    assert!(!ok && err.contains("the pool's name:"), "{err}");

    // Refilled to min-ready: `pool get` shows it Ready.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (ok, out, _) = cli(&server, &["pool", "get", "notebooks"]);
        assert!(ok, "{out}");
        if out.contains("1 ready, 0 starting, 0 claimed") {
            assert!(
                out.contains("example-app") && out.contains("app=nb"),
                "{out}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never Ready: {out}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (ok, out, _) = cli(&server, &["pool", "ls"]);
    assert!(ok);
    assert!(
        out.lines().next().is_some_and(|h| h.contains("MIN-READY")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("notebooks") && l.contains("example-app")),
        "{out}"
    );

    // A claim: spawn --pool, with a key and a label, waits as a spawn does.
    let (ok, out, err) = cli(
        &server,
        &[
            "spawn",
            "--pool",
            "notebooks",
            "--key",
            "doc-1",
            "--label",
            "owner=u1",
            "--wait",
        ],
    );
    assert!(ok, "{err}");
    let id = id_of(out.trim());
    assert_eq!(out.lines().count(), 1, "only the URL: {out}");
    // The claim answered Ready: said once, no replay of its start-up as if it were now.
    assert_eq!(
        err.trim(),
        format!("claimed {id} from pool notebooks: Ready"),
        "{err}"
    );
    // Its key's claim again gets the same backend, Ready at once, no replay either.
    let (ok, again, err) = cli(
        &server,
        &["spawn", "--pool", "notebooks", "--key", "doc-1", "--wait"],
    );
    assert!(ok, "{err}");
    assert_eq!(again, out);
    assert_eq!(
        err.trim(),
        format!("key \"doc-1\" has a live backend: {id}\nbackend {id} is Ready"),
        "{err}"
    );
    // A claim takes no command: the template says what runs.
    let (ok, _, err) = cli(
        &server,
        &["spawn", "--pool", "notebooks", "--port", "9", "--", "x"],
    );
    assert!(!ok && err.contains("--pool"), "{err}");

    // The record says where it came from: its pool, its claim's time and event.
    let record: serde_json::Value = server
        .authed(
            server
                .api()
                .get(format!("{}/v1/backends/{id}", server.url())),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["pool"], "notebooks", "{record}");
    assert_eq!(record["key"], "doc-1", "{record}");
    assert_eq!(record["spec"]["labels"]["owner"], "u1", "{record}");
    let claimed_at = record["claimed_at"].as_str().expect("claimed_at");
    assert!(claimed_at >= record["created_at"].as_str().unwrap_or_default());
    assert!(
        reasons(&record).contains(&"claimed with key doc-1".to_string()),
        "{record}"
    );
    let last = record["events"].as_array().and_then(|e| e.last()).cloned();
    assert_eq!(last.map(|e| e["state"].clone()), Some("Ready".into()));
    // The list says it too, and the unclaimed refill has a pool and no claim.
    let list = server.client().list(&[("label", "app=nb")]).await.unwrap();
    let claimed = list.iter().find(|b| b.id == id).expect("listed");
    assert_eq!(claimed.pool.as_deref(), Some("notebooks"));
    assert!(claimed.claimed_at.is_some());
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let list = server.client().list(&[("label", "app=nb")]).await.unwrap();
        if let Some(spare) = list.iter().find(|b| b.id != id && !b.state.is_terminal()) {
            assert_eq!(spare.pool.as_deref(), Some("notebooks"));
            assert_eq!(spare.claimed_at, None);
            assert_eq!(spare.key, None);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no refill");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Resize (one size alone keeps the other), then remove: the claimed one runs on.
    let (ok, out, err) = cli(&server, &["pool", "resize", "notebooks", "--max", "5"]);
    assert!(ok, "{err}");
    assert!(out.contains("min-ready 1, max 5"), "{out}");
    let (ok, _, err) = cli(&server, &["pool", "resize", "notebooks"]);
    assert!(!ok && err.contains("--min-ready"), "{err}");
    let (ok, _, err) = cli(&server, &["pool", "rm", "notebooks"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("removed pool notebooks: stopping 1 unclaimed backend;"),
        "{err}"
    );
    let (ok, _, err) = cli(&server, &["pool", "get", "notebooks"]);
    assert!(!ok && err.contains("404"), "{err}");
    assert_eq!(
        server.client().get(&id).await.unwrap().state,
        State::Ready,
        "the claimed backend runs on"
    );
    server.client().terminate(&id, true).await.unwrap();
}

/// Runs `spawner spawn --wait` with `extra` until it says it waits for the port, then sends
/// it SIGINT; its exit code, stdout and stderr.
fn interrupt_spawn(server: &TestServer, extra: &[&str]) -> (Option<i32>, String, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut cmd = Command::new(SPAWNER);
    cmd.args(["spawn", "--wait", "--startup-timeout", "600"])
        .args(extra)
        .args(["--", "sh", "-c", "exec sleep 600"])
        .env("SPAWNER_URL", server.url())
        .env("SPAWNER_DATA_DIR", server.data_dir())
        .env_remove("SPAWNER_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the CLI");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    while !seen.contains("waiting for") {
        let mut line = String::new();
        if err.read_line(&mut line).expect("read stderr") == 0 {
            break;
        }
        seen.push_str(&line);
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let status = child.wait().expect("wait");
    err.read_to_string(&mut seen).expect("rest of stderr");
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out).expect("stdout");
    }
    (status.code(), out, seen)
}

/// The id in `... backend ID ...`.
fn id_after_backend(text: &str) -> String {
    text.split("backend ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn ctrl_c_during_spawn_wait_says_the_id_or_stops_it_with_rm() {
    let server = TestServer::start();
    let (code, out, err) = interrupt_spawn(&server, &[]);
    assert_eq!(code, Some(130), "{err}");
    assert!(out.is_empty(), "no URL after an interruption: {out}");
    let id = id_after_backend(&err);
    assert_eq!(id.len(), 26, "{err}");
    assert!(err.contains(&format!("spawner terminate {id}")), "{err}");
    // It goes on starting, as said.
    assert_eq!(
        server.client().get(&id).await.unwrap().state,
        State::Running
    );
    server.client().terminate(&id, true).await.unwrap();

    let (code, _, err) = interrupt_spawn(&server, &["--rm"]);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("terminating backend"), "{err}");
    let id = id_after_backend(&err);
    wait_state(&server.client(), &id, State::Terminated).await;
}

#[tokio::test]
async fn ls_label_with_a_bare_name_selects_any_value() {
    let server = TestServer::start();
    let client = server.client();
    let mut owned = shell("exec sleep 600");
    owned.labels.insert("owner".into(), "u1".into());
    let (a, _) = client.spawn(&owned).await.unwrap();
    owned.labels.insert("owner".into(), "u2".into());
    let (b, _) = client.spawn(&owned).await.unwrap();
    let (c, _) = client.spawn(&shell("exec sleep 600")).await.unwrap();
    let (ok, out, err) = cli(&server, &["ls", "--label", "owner"]);
    assert!(ok, "{err}");
    assert!(out.contains(&a.id) && out.contains(&b.id), "{out}");
    assert!(!out.contains(&c.id), "{out}");
    for id in [a.id, b.id, c.id] {
        client.terminate(&id, true).await.unwrap();
    }
}
