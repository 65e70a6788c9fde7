//! The TLS front of docs/operations.md ("TLS"): nginx from Debian running
//! `deploy/tls/nginx.conf` (only its names, ports and certificate paths changed) in front of
//! a real `spawner serve --public-url https://… --trusted-proxy 127.0.0.1`. Through it: the
//! API, the URLs Spawner hands out (https), a backend seeing `X-Forwarded-Proto: https`, a
//! WebSocket (wss) and the status stream's events as they happen (nothing buffered).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const NGINX: &str = "/usr/sbin/nginx";

/// nginx, stopped when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate for `spawner.localhost` and `*.spawner.localhost` (each
/// backend's own origin; a wildcard needs two labels after it):
/// `cert.pem`, `cert.der`, `key.pem` in `dir`.
fn certificate(dir: &Path) {
    run(Command::new("openssl").current_dir(dir).args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=spawner.localhost",
        "-addext",
        "subjectAltName=DNS:spawner.localhost,DNS:*.spawner.localhost",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "extendedKeyUsage=serverAuth",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
    ]));
    run(Command::new("openssl").current_dir(dir).args([
        "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
    ]));
}

/// `deploy/tls/nginx.conf` with this test's names, port, certificate and upstream.
fn site(dir: &Path, port: u16, upstream: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/tls/nginx.conf");
    let mut conf = std::fs::read_to_string(path).expect("deploy/tls/nginx.conf");
    for (from, to) in [
        (
            "listen 443 ssl;".to_string(),
            format!("listen 127.0.0.1:{port} ssl;"),
        ),
        (
            "server_name spawner.example.com *.spawner.example.com;".into(),
            "server_name spawner.localhost *.spawner.localhost;".into(),
        ),
        (
            "/etc/ssl/spawner/fullchain.pem".into(),
            dir.join("cert.pem").display().to_string(),
        ),
        (
            "/etc/ssl/spawner/privkey.pem".into(),
            dir.join("key.pem").display().to_string(),
        ),
        (
            "http://127.0.0.1:8080;".into(),
            format!("http://127.0.0.1:{upstream};"),
        ),
    ] {
        assert!(
            conf.contains(&from),
            "deploy/tls/nginx.conf no longer has {from:?}"
        );
        conf = conf.replace(&from, &to);
    }
    conf
}

fn start_nginx(dir: &Path, port: u16, upstream: u16) -> Nginx {
    assert!(
        Path::new(NGINX).exists(),
        "this test needs nginx ({NGINX}): scripts/test installs Debian's (scripts/test.d/k8s-manifests.sh)"
    );
    std::fs::write(dir.join("spawner.conf"), site(dir, port, upstream)).expect("write");
    let d = dir.display();
    let main = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
         scgi_temp_path {d}/scgi;\n  include {d}/spawner.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).expect("write");
    let child = Command::new(NGINX)
        .args(["-e", &format!("{d}/error.log"), "-c"])
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let nginx = Nginx {
        child,
        dir: dir.to_path_buf(),
    };
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            nginx.error_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx
}

/// A TLS connection to `127.0.0.1:port` for `name`, trusting only the test's certificate.
async fn tls(
    der: &[u8],
    port: u16,
    name: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
        .expect("the test's certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to nginx");
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("a name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

#[tokio::test]
async fn behind_nginx_with_tls_the_api_backends_websockets_and_streams_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    certificate(dir.path());
    let pem = std::fs::read(dir.path().join("cert.pem")).expect("cert");
    let der = std::fs::read(dir.path().join("cert.der")).expect("cert");
    let port = free_port();
    let public = format!("https://spawner.localhost:{port}");
    let server = TestServer::start_with(
        &[
            "--domain",
            "spawner.localhost",
            "--public-url",
            &public,
            "--trusted-proxy",
            "127.0.0.1",
        ],
        None,
    );
    let nginx = start_nginx(dir.path(), port, server.port);
    let token = server.token.clone().expect("a token");
    let https = http_builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .build()
        .expect("client");

    // The API through the front; the URL it answers is the front's, https.
    let spawned: Value = https
        .post(format!("{public}/v1/backends"))
        .bearer_auth(&token)
        .json(&example_app())
        .send()
        .await
        .expect("spawn through nginx")
        .json()
        .await
        .expect("json");
    let id = spawned["id"].as_str().expect("an id").to_string();
    let url = format!("https://{id}.spawner.localhost:{port}/");
    assert_eq!(spawned["url"], url, "{spawned}");
    wait_state(&server.client(), &id, spawner_core::State::Ready).await;

    // The backend, at its own https origin: it is told the scheme and host the browser used.
    let seen: Value = https
        .get(format!("{url}request"))
        .header("x-forwarded-proto", "gopher")
        .send()
        .await
        .expect("a backend through nginx")
        .json()
        .await
        .expect("json");
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-proto"], "https", "{seen}");
    assert_eq!(
        h["x-forwarded-host"],
        format!("{id}.spawner.localhost:{port}"),
        "{seen}"
    );

    // The status stream: its events arrive while it is open (a buffering front would hold
    // them until the stream ends).
    let mut stream = https
        .get(format!("{public}/v1/backends/{id}/status/stream"))
        .send()
        .await
        .expect("the status stream through nginx")
        .bytes_stream();
    let mut text = String::new();
    while !text.contains("Ready") {
        let chunk = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("the stream's events arrive while it is open")
            .expect("the stream goes on")
            .expect("a chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }

    // A WebSocket (wss) to the backend's own origin.
    let host = format!("{id}.spawner.localhost:{port}");
    let tls = tls(&der, port, &format!("{id}.spawner.localhost")).await;
    let request = http::Request::builder()
        .uri(format!("wss://{host}/ws"))
        .header("host", &host)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .expect("request");
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("a WebSocket through nginx");
    let first = ws.next().await.expect("a message").expect("ok");
    assert!(
        first.to_text().unwrap_or_default().starts_with("count "),
        "{first:?}"
    );
    ws.send(Message::Text("over tls".into()))
        .await
        .expect("send");
    let echo = ws.next().await.expect("a message").expect("ok");
    assert_eq!(echo.to_text().unwrap_or_default(), "echo: over tls");

    // A terminate reaches the open stream at once, and ends it.
    server
        .client()
        .terminate(&id, false)
        .await
        .expect("terminate");
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(PATIENCE, stream.next()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("Terminated"), "{text}");
    drop(ws);
    wait_gone(&id).await;
    assert!(
        !nginx.error_log().contains("[emerg]"),
        "{}",
        nginx.error_log()
    );
}
