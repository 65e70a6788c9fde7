//! The command-line client against a real server.

mod common;

use common::*;
use spawner_core::State;
use std::process::Command;

fn cli(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    cli_with(server, None, args)
}

/// The CLI with `SPAWNER_TOKEN` set to `token`, or unset.
fn cli_with(server: &TestServer, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(SPAWNER);
    cmd.args(args).env("SPAWNER_URL", server.url());
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

/// The backend id at the end of a backend URL (`…/p/{id}/`).
fn id_of(url: &str) -> String {
    url.trim_end_matches('/')
        .rsplit('/')
        .next()
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
    assert_eq!(url, format!("{}/p/{id}/", server.url()));
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
            .any(|l| l.starts_with(&id) && l.contains("Ready") && l.contains("cli-doc")),
        "{out}"
    );
    let (ok, out, _) = cli(&server, &["status", &id]);
    assert!(ok && out.contains("\"Ready\""), "{out}");
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
    assert_eq!(
        server.client().status(&id).await.unwrap().state,
        State::Terminated
    );
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
    let out = Command::new(SPAWNER)
        .args(["ls"])
        .env("SPAWNER_URL", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach Spawner"));
}

#[tokio::test]
async fn a_token_from_the_environment_public_urls_env_logs_follow_and_a_hard_terminate() {
    const TOKEN: &str = "s3cret-token-of-the-test";
    let server = TestServer::start_with(
        &["--public-url", "https://apps.example.com/spawner"],
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
    // URLs are built on the public URL.
    let url = out.trim();
    assert!(
        url.starts_with("https://apps.example.com/spawner/p/"),
        "{url}"
    );
    let id = id_of(url);

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
