//! The examples of examples/ (a Node app and a FastAPI app, each giving every document its
//! own backend) in a real browser (headless Chromium) against a real `spawner serve`: the
//! document's page follows its backend to Ready live, links to it, and the browser gets
//! there; the same document again is the same backend; a terminate shows on the page
//! without a reload; the page never holds the token.

mod browser;
mod common;

use browser::Browser;
use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// An example app, started with the server's URL and token, on a free port.
struct Example {
    child: Child,
    url: String,
}

impl Example {
    fn start(mut cmd: Command, server: &TestServer) -> Example {
        cmd.env("SPAWNER_URL", server.url())
            .env("SPAWNER_TOKEN", server.token.clone().expect("a token"))
            .env("PORT", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start the example");
        let stdout = child.stdout.take().expect("stdout");
        // Its first line says where it listens.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
            let _ = tx.send(first);
            for line in lines.map_while(Result::ok) {
                println!("example: {line}");
            }
        });
        let started = Instant::now();
        let first = rx.recv_timeout(PATIENCE).unwrap_or_default();
        let url = first
            .split("listening on ")
            .nth(1)
            .unwrap_or_else(|| {
                panic!(
                    "the example did not say where it listens within {:?}: {first:?}",
                    started.elapsed()
                )
            })
            .trim()
            .to_string();
        Example { child, url }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn document_follows_its_backend(cmd: Command) {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let example = Example::start(cmd, &server);
    let b = Browser::start().await;
    b.goto(&format!("{}/docs/42", example.url)).await;
    b.wait_text("#state", "Ready").await;
    let id = b.text("#backend").await.as_str().expect("id").to_string();
    let events = b.text("#events").await;
    let events = events.as_str().unwrap_or_default();
    for state in ["Submitted", "Running", "Ready"] {
        assert!(events.contains(state), "events shown: {events}");
    }
    let record = server.client().get(&id).await.expect("record");
    assert!(record.key.as_deref().is_some_and(|k| k.ends_with("/42")));
    let href = b
        .js("return document.getElementById('open').href;", json!([]))
        .await;
    assert_eq!(href, record.url);
    let html = b
        .js("return document.documentElement.outerHTML;", json!([]))
        .await;
    let token = server.token.clone().expect("token");
    assert!(
        !html.as_str().unwrap_or_default().contains(&token),
        "the page holds the token"
    );

    // The browser goes to the backend: the example app's page, on its own origin.
    b.click("#open").await;
    b.wait_for(
        "the backend's page",
        "return document.body && document.body.innerText.includes(arguments[0]) && location.href;",
        json!([id]),
    )
    .await;

    // The same document is the same backend; a stop shows live.
    b.goto(&format!("{}/docs/42", example.url)).await;
    b.wait_text("#state", "Ready").await;
    assert_eq!(b.text("#backend").await, json!(id));
    b.js("window.__sameload = true; return true;", json!([]))
        .await;
    server
        .client()
        .terminate(&id, false)
        .await
        .expect("terminate");
    b.wait_text("#state", "Terminated").await;
    assert_eq!(
        b.js("return window.__sameload === true;", json!([])).await,
        json!(true)
    );
    assert_eq!(
        b.js("return document.getElementById('open').hidden;", json!([]))
            .await,
        json!(true)
    );
}

#[tokio::test]
async fn node_example_gives_each_document_a_backend_and_shows_its_status_live() {
    let mut cmd = Command::new("node");
    cmd.arg("examples/node/server.js");
    document_follows_its_backend(cmd).await;
}

#[tokio::test]
async fn fastapi_example_gives_each_document_a_backend_and_shows_its_status_live() {
    let mut cmd = Command::new(venv_python());
    cmd.arg("examples/fastapi/app.py")
        .env("PYTHONPATH", repo_root().join("clients/python"));
    document_follows_its_backend(cmd).await;
}
