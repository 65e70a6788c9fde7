//! The proxy as the edge, through a real `spawner serve` and the example application: whose
//! forwarding headers reach a backend (`--trusted-proxy`), and browsers kept to each
//! backend's own origin.

mod common;

use common::{ready_example, TestServer, SPAWNER};
use serde_json::Value;
use std::process::Command;

/// Every forwarding header a client can send.
const SPOOFED: [(&str, &str); 6] = [
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-port", "443"),
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("x-real-ip", "6.6.6.6"),
];

/// The headers the example application saw for `GET {url}` sent with [`SPOOFED`].
async fn seen_with_spoofed(server: &TestServer, url: &str) -> Value {
    let mut req = server.http().get(url);
    for (k, v) in SPOOFED {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("GET through the proxy");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    body["headers"].clone()
}

#[tokio::test]
async fn a_clients_forwarding_headers_reach_a_backend_only_through_a_trusted_proxy() {
    // The edge: the client's headers are dropped, Spawner's own set.
    let edge = TestServer::start();
    let id = ready_example(&edge.client(), 60).await;
    let url = format!("{}/p/{id}/request", edge.url());
    let seen = seen_with_spoofed(&edge, &url).await;
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], format!("127.0.0.1:{}", edge.port));
    assert_eq!(seen["x-forwarded-prefix"], format!("/p/{id}"));
    for gone in ["x-forwarded-port", "forwarded", "x-real-ip"] {
        assert!(seen.get(gone).is_none(), "{gone}: {seen}");
    }

    // Behind a proxy on 127.0.0.1 (the test, playing it): its headers are kept and extended.
    let behind = TestServer::start_with(&["--trusted-proxy", "127.0.0.0/8"], None);
    let id = ready_example(&behind.client(), 60).await;
    let url = format!("{}/p/{id}/request", behind.url());
    let seen = seen_with_spoofed(&behind, &url).await;
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-forwarded-host"], "evil.example");
    assert_eq!(seen["x-forwarded-port"], "443");
    assert_eq!(seen["forwarded"], "for=6.6.6.6;proto=https");
    assert_eq!(seen["x-real-ip"], "6.6.6.6");

    // A block the peer is not in trusts nothing.
    let elsewhere = TestServer::start_with(&["--trusted-proxy", "10.0.0.0/8"], None);
    let id = ready_example(&elsewhere.client(), 60).await;
    let url = format!("{}/p/{id}/request", elsewhere.url());
    let seen = seen_with_spoofed(&elsewhere, &url).await;
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
}

#[test]
fn a_bad_trusted_proxy_is_refused_naming_the_flag_and_an_example() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (args, env) in [
        (&["--trusted-proxy", "10.1.2.3/8"][..], None),
        (&[][..], Some("10.0.0.0/8,proxy.example")),
    ] {
        let mut cmd = Command::new(SPAWNER);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .env_remove("SPAWNER_TRUSTED_PROXIES");
        if let Some(v) = env {
            cmd.env("SPAWNER_TRUSTED_PROXIES", v);
        }
        let out = cmd.output().expect("run spawner serve");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?}: started");
        assert!(
            err.contains("--trusted-proxy") && err.contains("10.0.0.0/8"),
            "{args:?} {env:?}: {err}"
        );
    }
}

#[tokio::test]
async fn browsers_asking_by_path_go_to_the_backends_own_origin() {
    let server = TestServer::start();
    let id = ready_example(&server.client(), 60).await;
    let http = server.http();
    let by_path = format!("{}/p/{id}/request?q=1", server.url());
    let own = format!("http://{id}.localhost:{}/", server.port);

    // A navigation: to the same resource at the backend's own origin.
    let r = http
        .get(&by_path)
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .expect("navigate");
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], format!("{own}request?q=1"));
    assert_eq!(r.text().await.expect("body"), "");

    // Anything else a browser sends by path: refused, naming the origin.
    for (method, mode) in [
        ("GET", "cors"),
        ("GET", "no-cors"),
        ("GET", "websocket"),
        ("POST", "navigate"),
    ] {
        let r = http
            .request(method.parse().expect("method"), &by_path)
            .header("sec-fetch-mode", mode)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 403, "{method} {mode}");
        let text = r.text().await.expect("body");
        assert!(text.contains(&own), "{method} {mode}: {text}");
    }

    // A client that is no browser is proxied by path, in a sandbox of its own.
    let r = http.get(&by_path).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-security-policy"],
        "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["uri"], "/request?q=1");

    // At its own origin (the redirect followed), the backend's answers pass as they are.
    let r = http
        .get(format!("{}/request?q=1", server.url()))
        .header("host", format!("{id}.localhost:{}", server.port))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .expect("GET at the own origin");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-security-policy").is_none());

    // `/p/{id}` still gets its slash first.
    let r = http
        .get(format!("{}/p/{id}", server.url()))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .expect("GET without the slash");
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("/p/{id}/"));
}
