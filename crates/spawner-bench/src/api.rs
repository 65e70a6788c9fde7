//! A minimal client of Spawner's HTTP API, and a `spawner serve` started for one phase.

use crate::util::{self, Proc};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The control token of the servers a bench run starts.
pub const TOKEN: &str = "spawner-bench-control-token";
/// The `Authorization` header that carries it.
pub const AUTH: &str = "Bearer spawner-bench-control-token";

/// Keep-alive HTTP/1.1 client of one Spawner, with its control token.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    /// `Bearer {TOKEN}`.
    pub auth: http::HeaderValue,
}

/// One event of a status stream and when it arrived here.
#[derive(Debug, Clone)]
pub struct Seen {
    pub state: String,
    /// Spawner's timestamp of the event (ms since the epoch).
    pub time_ms: Option<i64>,
    /// When this client received it.
    pub at: Instant,
    pub wall_ms: i64,
    pub wall_us: i64,
}

const TERMINAL: [&str; 3] = ["Swept", "Failed", "Terminated"];

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(512)
            .build(connector);
        Api {
            addr,
            client,
            auth: http::HeaderValue::from_static(AUTH),
        }
    }

    /// Sends a request and reads the whole answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes)> {
        let body = match body {
            Some(v) => Full::new(Bytes::from(serde_json::to_vec(v)?)),
            None => Full::new(Bytes::new()),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, self.auth.clone())
            .body(body)?;
        let resp = self
            .client
            .request(req)
            .await
            .with_context(|| format!("calling {path}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let (status, body) = self.call(Method::GET, path, None).await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Every backend of `GET /v1/backends{query}` (`query` empty or `?…`), page after page.
    pub async fn list_all(&self, query: &str) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut path = format!("/v1/backends{query}");
        loop {
            let mut page = self.get_json(&path).await?;
            if let Some(items) = page["backends"].as_array_mut() {
                all.append(items);
            }
            match page["next"].as_str() {
                Some(next) => {
                    let sep = if query.is_empty() { '?' } else { '&' };
                    path = format!("/v1/backends{query}{sep}after={next}");
                }
                None => return Ok(all),
            }
        }
    }

    /// Spawns a backend and returns its id.
    pub async fn spawn(&self, spec: &Value) -> Result<String> {
        let (status, body) = self.call(Method::POST, "/v1/backends", Some(spec)).await?;
        if !status.is_success() {
            bail!(
                "spawn refused: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let v: Value = serde_json::from_slice(&body)?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("spawn answer without id: {v}"))
    }

    pub async fn terminate(&self, id: &str, hard: bool) -> Result<()> {
        let path = format!("/v1/backends/{id}/terminate");
        let (status, body) = self
            .call(Method::POST, &path, Some(&json!({ "hard": hard })))
            .await?;
        if !status.is_success() {
            bail!(
                "terminate {id}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// Follows the status stream until `until` or a terminal state; returns what was seen.
    pub async fn follow(&self, id: &str, until: &str, limit: Duration) -> Result<Vec<Seen>> {
        tokio::time::timeout(limit, self.follow_inner(id, until))
            .await
            .map_err(|_| anyhow!("backend {id} not {until} within {limit:?}"))?
    }

    async fn follow_inner(&self, id: &str, until: &str) -> Result<Vec<Seen>> {
        let req = Request::builder()
            .uri(format!(
                "http://{}/v1/backends/{id}/status/stream",
                self.addr
            ))
            .body(Full::new(Bytes::new()))?;
        let resp = self.client.request(req).await?;
        if !resp.status().is_success() {
            bail!("status stream of {id}: {}", resp.status());
        }
        let mut body = resp.into_body().into_data_stream();
        let mut buf = String::new();
        let mut seen = Vec::new();
        while let Some(chunk) = body.next().await {
            buf.push_str(std::str::from_utf8(&chunk?)?);
            while let Some(end) = buf.find("\n\n") {
                let message: String = buf.drain(..end + 2).collect();
                for data in message.lines().filter_map(|l| l.strip_prefix("data:")) {
                    let ev: Value = serde_json::from_str(data.trim())?;
                    let state = ev["state"].as_str().unwrap_or_default().to_string();
                    let done = state == until || TERMINAL.contains(&state.as_str());
                    seen.push(Seen {
                        time_ms: ev["time"].as_str().and_then(util::parse_rfc3339_ms),
                        state,
                        at: Instant::now(),
                        wall_ms: util::wall_ms(),
                        wall_us: util::wall_us(),
                    });
                    if done {
                        return Ok(seen);
                    }
                }
            }
        }
        bail!("the status stream of {id} ended before {until}")
    }

    /// Waits for `until` and fails if the backend ended another way.
    pub async fn wait_for(&self, id: &str, until: &str, limit: Duration) -> Result<Seen> {
        let seen = self.follow(id, until, limit).await?;
        match seen.last() {
            Some(s) if s.state == until => Ok(s.clone()),
            Some(s) => bail!("backend {id} became {} instead of {until}", s.state),
            None => bail!("no events for backend {id}"),
        }
    }

    /// Spawns `spec` and waits until it is Ready; its id.
    pub async fn spawn_ready(&self, spec: &Value, limit: Duration) -> Result<String> {
        let id = self.spawn(spec).await?;
        self.wait_for(&id, "Ready", limit).await?;
        Ok(id)
    }

    /// Terminates every backend that is not terminal, hard, and waits (bounded) until none is.
    pub async fn terminate_all(&self) -> Result<usize> {
        let ids: Vec<String> = self
            .list_all("")
            .await?
            .iter()
            .filter(|b| !TERMINAL.contains(&b["state"].as_str().unwrap_or_default()))
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect();
        let n = ids.len();
        futures_util::stream::iter(ids)
            .map(|id| async move { self.terminate(&id, true).await })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let live = self
                .list_all("")
                .await?
                .iter()
                .filter(|b| !TERMINAL.contains(&b["state"].as_str().unwrap_or_default()))
                .count();
            if live == 0 {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("backends still live 30 s after a hard terminate")
    }
}

/// A `spawner serve` of its own for one phase, with a fresh data directory.
pub struct Server {
    pub api: Api,
    pub proc: Proc,
    pub dir: PathBuf,
}

impl Server {
    /// Runs one phase against a fresh server in `{work dir}/{name}/spawner`, and stops the
    /// server whatever the phase's result; the phase gets its directory and the server.
    pub async fn phase(
        ctx: &crate::Ctx,
        name: &str,
        measure: impl AsyncFnOnce(&Path, &Server) -> Result<crate::report::Phase>,
    ) -> Result<crate::report::Phase> {
        let dir = ctx.dir.join(name);
        let server = Server::start(ctx, &dir.join("spawner"), &ctx.token).await?;
        let result = measure(&dir, &server).await;
        let stopped = server.stop().await;
        let phase = result?;
        stopped?;
        Ok(phase)
    }

    pub async fn start(ctx: &crate::Ctx, dir: &Path, token: &str) -> Result<Server> {
        Self::start_with(ctx, dir, token, &[]).await
    }

    /// [`Server::start`] with more environment, which wins over `--spawner-env`.
    pub async fn start_with(
        ctx: &crate::Ctx,
        dir: &Path,
        token: &str,
        env: &[(&str, &str)],
    ) -> Result<Server> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let port = util::free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let proc = Self::launch(ctx, dir, token, env, addr, "spawner.log").await?;
        Ok(Server {
            api: Api::new(addr),
            proc,
            dir: dir.to_path_buf(),
        })
    }

    /// Stops the server process alone (SIGTERM: its backends keep running, as in an
    /// upgrade) and starts it again on the same data directory and address.
    pub async fn restart(self, ctx: &crate::Ctx) -> Result<Server> {
        let Server { api, mut proc, dir } = self;
        proc.terminate_and_wait(Duration::from_secs(30)).await?;
        drop(proc);
        let proc = Self::launch(
            ctx,
            &dir,
            &ctx.token,
            &[],
            api.addr,
            "spawner-restarted.log",
        )
        .await?;
        Ok(Server { api, proc, dir })
    }

    async fn launch(
        ctx: &crate::Ctx,
        dir: &Path,
        token: &str,
        env: &[(&str, &str)],
        addr: SocketAddr,
        log: &str,
    ) -> Result<Proc> {
        let mut cmd = tokio::process::Command::new(&ctx.spawner);
        cmd.envs(ctx.spawner_env.iter().map(|(k, v)| (k, v)));
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--stop-grace")
            .arg("2")
            .arg("--token")
            .arg(TOKEN);
        let mut proc = Proc::start("spawner serve", cmd, token, &dir.join(log))?;
        proc.wait_port(addr, Duration::from_secs(60)).await?;
        Ok(proc)
    }

    pub fn rss_kib(&self) -> Result<u64> {
        util::rss_kib(self.proc.pid())
    }

    /// Stops every backend, then the server itself.
    pub async fn stop(self) -> Result<()> {
        let result = self.api.terminate_all().await;
        drop(self.proc);
        result.map(|_| ())
    }
}
