//! The proxies the corpus runs against: Spawner's own, in this process, wired as the
//! embedded server wires it (the relay first, hyper's stack for what it leaves); and nginx
//! and HAProxy from Debian as reverse proxies, for comparison.

use spawner_proxy::forward::message;
use spawner_proxy::{Forwarder, Monitor, PeerTrust, RequestHead, ResponsePolicy, Target};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Spawner's proxy, routing `/p/b1/…` to `backend` with the prefix stripped and answering
/// 404 to anything else, on one proxy thread (so that every client shares one pool).
pub async fn spawner(backend: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let monitor = Arc::new(Monitor::new(0));
    let authority: http::uri::Authority = backend
        .to_string()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let target = move |path: &str, peer: SocketAddr| {
        path.starts_with(crate::run::PREFIX).then(|| Target {
            authority: authority.clone(),
            monitor: monitor.clone(),
            strip: crate::run::PREFIX.len(),
            client_ip: peer.ip(),
            // As the embedded server: the proxy is the edge.
            trust: PeerTrust::Untrusted,
            response: ResponsePolicy::Pass,
            router_proof: None,
            access: None,
        })
    };
    let forwarder = Forwarder::new().with_threads(1);
    let relayed = target.clone();
    tokio::spawn(async move {
        let full = forwarder.clone();
        spawner_proxy::listen::serve(
            listener,
            std::future::pending(),
            forwarder,
            move |head: &RequestHead, peer| relayed(head.path, peer),
            move |req: http::Request<hyper::body::Incoming>, peer| {
                let forwarder = full.clone();
                let target = target(req.uri().path(), peer);
                async move {
                    match target {
                        Some(target) => forwarder.forward(req, target).await,
                        None => message(http::StatusCode::NOT_FOUND, "no such backend\n"),
                    }
                }
            },
        )
        .await
    });
    Ok(addr)
}

/// nginx's configuration as a reverse proxy in front of `backend`, listening on `port`; as
/// an edge, like Spawner: it sets the forwarding headers and drops the client's.
pub fn nginx_conf(dir: &Path, port: u16, backend: SocketAddr) -> String {
    let d = dir.display();
    let user = if is_root() { "user root root;\n" } else { "" };
    format!(
        "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  \
         upstream backend {{ server {backend}; keepalive 16; }}\n  \
         server {{\n    listen 127.0.0.1:{port};\n    \
         location /p/b1/ {{\n      proxy_pass http://backend/;\n      proxy_http_version 1.1;\n      \
         proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      \
         proxy_set_header X-Forwarded-For $remote_addr;\n      \
         proxy_set_header X-Forwarded-Proto $scheme;\n      \
         proxy_set_header X-Forwarded-Host $http_host;\n      \
         proxy_set_header X-Forwarded-Port \"\";\n      \
         proxy_set_header Forwarded \"\";\n      \
         proxy_set_header X-Real-IP \"\";\n      \
         proxy_set_header X-Spawner-Router-Proof \"\";\n      \
         proxy_set_header X-Forwarded-Prefix /p/b1;\n    }}\n    \
         location / {{ return 404; }}\n  }}\n}}\n"
    )
}

/// HAProxy's configuration as a reverse proxy in front of `backend`, listening on `port`;
/// an edge, as nginx's.
pub fn haproxy_conf(port: u16, backend: SocketAddr) -> String {
    format!(
        "global\n  maxconn 1000\n\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  \
         timeout server 30s\n  option http-keep-alive\n\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  option forwardfor\n  \
         http-request deny deny_status 404 unless {{ path_beg /p/b1/ }}\n  \
         http-request del-header X-Forwarded-For\n  http-request del-header X-Forwarded-Port\n  \
         http-request del-header Forwarded\n  http-request del-header X-Real-IP\n  \
         http-request del-header X-Spawner-Router-Proof\n  \
         http-request set-header X-Forwarded-Proto http\n  \
         http-request del-header X-Forwarded-Host\n  \
         http-request set-header X-Forwarded-Host %[req.hdr(host)] if {{ req.hdr(host) -m found }}\n  \
         default_backend be\n\n\
         backend be\n  http-request set-header X-Forwarded-Prefix /p/b1\n  \
         http-request replace-path /p/b1(/.*) \\1\n  server s1 {backend}\n"
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|l| l.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}
