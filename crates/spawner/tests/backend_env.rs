//! The environment a process backend gets (docs/configuration.md, "The backend's
//! environment"): of the server's own only an allow list and what `--env-keep` names, plus
//! the spec's `env` and Spawner's variables; and the example app does not show the
//! backend's keepalive secret. Read from the backend process's /proc/PID/environ.

mod common;

use common::*;
use serde_json::Value;
use spawner_core::State;

/// A Ready example app with `MODE=x` in its spec's env; its id.
async fn ready_with_env(server: &TestServer) -> String {
    let client = server.client();
    let mut spec = example_app();
    spec.executable.env.insert("MODE".into(), "collab".into());
    let (resp, _) = client.spawn(&spec).await.expect("spawn");
    wait_state(&client, &resp.id, State::Ready).await;
    resp.id
}

#[tokio::test]
async fn a_backend_gets_the_allow_list_and_not_the_servers_secrets() {
    let server = TestServer::start_with_env(
        &[],
        None,
        &[
            ("OPERATOR_SECRET", "x"),
            ("LC_TIME", "C"),
            ("HOME", "/home/op"),
        ],
    );
    let id = ready_with_env(&server).await;
    let env = backend_environ(&id);
    assert!(!env.contains_key("OPERATOR_SECRET"), "{env:?}");
    // The test runner's own variables are the server's too: none passes.
    assert!(!env.keys().any(|k| k.starts_with("CARGO")), "{env:?}");
    assert!(env.contains_key("PATH"), "{env:?}");
    assert_eq!(env.get("LC_TIME").map(String::as_str), Some("C"));
    assert_eq!(env.get("HOME").map(String::as_str), Some("/home/op"));
    assert_eq!(env.get("MODE").map(String::as_str), Some("collab"));
    assert_eq!(env.get("SPAWNER_BACKEND_ID"), Some(&id));
    for own in [
        "PORT",
        "SPAWNER_BASE_PATH",
        "SPAWNER_PUBLIC_URL",
        "SPAWNER_KEEPALIVE_URL",
        "SPAWNER_INSTANCE",
    ] {
        assert!(env.contains_key(own), "{own}: {env:?}");
    }
    // Nothing else: each variable is one of the allow list, the spec's, or Spawner's.
    let allowed = |k: &str| {
        spawner_core::env::inherited(k, &[])
            || k == "MODE"
            || k == "PORT"
            || k.starts_with("SPAWNER_")
    };
    assert!(env.keys().all(|k| allowed(k)), "{env:?}");
}

#[tokio::test]
async fn env_keep_passes_a_variable_and_refuses_spawners_own() {
    let server = TestServer::start_with_env(
        &["--env-keep", "OPERATOR_SECRET"],
        None,
        &[
            ("OPERATOR_SECRET", "x"),
            ("OPERATOR_CA", "pem"),
            ("OTHER", "y"),
        ],
    );
    let id = ready_with_env(&server).await;
    let env = backend_environ(&id);
    assert_eq!(env.get("OPERATOR_SECRET").map(String::as_str), Some("x"));
    assert!(
        !env.contains_key("OPERATOR_CA") && !env.contains_key("OTHER"),
        "{env:?}"
    );

    // The variable takes a comma-separated list.
    let listed = TestServer::start_with_env(
        &[],
        None,
        &[
            ("SPAWNER_ENV_KEEP", "OPERATOR_SECRET,OPERATOR_CA"),
            ("OPERATOR_SECRET", "x"),
            ("OPERATOR_CA", "pem"),
        ],
    );
    let id = ready_with_env(&listed).await;
    let env = backend_environ(&id);
    assert_eq!(env.get("OPERATOR_CA").map(String::as_str), Some("pem"));
    assert_eq!(env.get("OPERATOR_SECRET").map(String::as_str), Some("x"));

    // Spawner's own settings never pass: `serve` refuses to start and says why.
    let dir = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new(SPAWNER)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--env-keep",
            "SPAWNER_TOKEN",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--env-keep SPAWNER_TOKEN"), "{err}");
}

#[tokio::test]
async fn the_example_app_does_not_show_the_keepalive_secret() {
    let server = TestServer::start();
    let id = ready_with_env(&server).await;
    let url = backend_environ(&id)
        .remove("SPAWNER_KEEPALIVE_URL")
        .expect("SPAWNER_KEEPALIVE_URL");
    let (_, secret) = url.split_once("?token=").expect("a token in the URL");
    assert!(secret.len() >= 26, "{url}");
    for path in ["/request", "/", "/claim"] {
        let text = server
            .http()
            .get(format!("{}/p/{id}{path}", server.url()))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        assert!(
            !text.contains(secret),
            "{path} shows the keepalive token: {text}"
        );
    }
    let body: Value = server
        .http()
        .get(format!("{}/p/{id}/request", server.url()))
        .send()
        .await
        .expect("GET /request")
        .json()
        .await
        .expect("json");
    let shown = body["env"]["SPAWNER_KEEPALIVE_URL"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(shown, url.replace(secret, "REDACTED"));
}
