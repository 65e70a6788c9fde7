//! A typed client of Spawner's HTTP API (`docs/api.md`), used by the CLI, spawner-bench and
//! the tests, with the surface of the JavaScript and Python clients (clients/): spawn and
//! claim, list (every page, or one), the list stream, the status stream (resumed with
//! `Last-Event-ID` after a dropped connection, with `expiring` announcements), wait_ready,
//! keepalive, terminate, logs, pools, and the operations routes.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use spawner_core::pool::{ClaimRequest, PoolDrained, PoolList, PoolSize, PoolSpec, PoolStatus};
use spawner_core::time::{serde_rfc3339, Millis};
use spawner_core::{BackendRecord, BackendSpec, Event, Expiring, SpawnResponse};
use std::pin::Pin;
use std::time::Duration;

/// The routes this client calls: (operation id of the OpenAPI document, method, path).
/// crates/spawner/tests/clients.rs compares them with `GET /v1/openapi.json`.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("spawn", "POST", "/v1/backends"),
    ("list", "GET", "/v1/backends"),
    ("list_stream", "GET", "/v1/backends/stream"),
    ("get", "GET", "/v1/backends/{id}"),
    ("terminate", "POST", "/v1/backends/{id}/terminate"),
    ("wake", "POST", "/v1/backends/{id}/wake"),
    ("keepalive", "POST", "/v1/backends/{id}/keepalive"),
    ("connect", "POST", "/v1/backends/{id}/connect"),
    ("access", "GET", "/v1/backends/{id}/access"),
    ("revoke", "DELETE", "/v1/backends/{id}/access/{user}"),
    ("logs", "GET", "/v1/backends/{id}/logs"),
    ("status", "GET", "/v1/backends/{id}/status"),
    ("status_stream", "GET", "/v1/backends/{id}/status/stream"),
    ("ready", "GET", "/v1/backends/{id}/ready"),
    ("create_pool", "POST", "/v1/pools"),
    ("list_pools", "GET", "/v1/pools"),
    ("get_pool", "GET", "/v1/pools/{name}"),
    ("resize_pool", "PUT", "/v1/pools/{name}"),
    ("drain_pool", "DELETE", "/v1/pools/{name}"),
    ("login", "POST", "/v1/login"),
    ("login_links", "POST", "/v1/login-links"),
    ("healthz", "GET", "/healthz"),
    ("metrics", "GET", "/metrics"),
    ("openapi", "GET", "/v1/openapi.json"),
];

/// How many reconnections in a row a stream makes before it gives up.
const RETRIES: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer at all; `why` is the underlying cause alone (the full chain would repeat
    /// the URL and say the same thing three times).
    #[error("cannot reach Spawner at {url}: {why}; is `spawner serve` running there? (--url / SPAWNER_URL)")]
    Connect { url: String, why: String },
    /// Something answered, but not as Spawner does.
    #[error("{url} answered {answer}: that is not Spawner's API; is --url (SPAWNER_URL) the address of `spawner serve` or `spawner api`?")]
    NotSpawner { url: String, answer: String },
    #[error("{status}: {message} ({code})")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("unexpected answer from Spawner: {0}")]
    Protocol(String),
    /// `wait_ready` ran out of time.
    #[error("{0}")]
    Timeout(String),
    /// A stream dropped and could not be resumed.
    #[error("the stream broke and could not be resumed: {0}")]
    StreamBroken(String),
}

impl Error {
    /// The API's error code (`not_found`, `pool_exhausted`…), or the client's own for
    /// failures that are not the API's, as the JavaScript and Python clients name them:
    /// `unreachable`, `not_spawner`, `protocol`, `timeout`, `stream_broken`.
    pub fn code(&self) -> &str {
        match self {
            Error::Api { code, .. } => code,
            Error::Connect { .. } => "unreachable",
            Error::NotSpawner { .. } => "not_spawner",
            Error::Protocol(_) => "protocol",
            Error::Timeout(_) => "timeout",
            Error::StreamBroken(_) => "stream_broken",
        }
    }

    /// The HTTP status of an answer of the API; none for other failures.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether another try may succeed: no answer, or a stream that broke.
    fn transient(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Protocol(_))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Deserialize)]
struct ApiErrorBody {
    error: String,
    message: String,
}

/// One page of `GET /v1/backends`.
#[derive(Debug, Clone, Deserialize)]
pub struct BackendPage {
    pub backends: Vec<BackendRecord>,
    /// The cursor of the next page; none on the last (and from servers without pages).
    #[serde(default)]
    pub next: Option<String>,
}

/// What the list stream (`watch_list`) yields: the list's first page, then each change.
#[derive(Debug, Clone)]
pub enum ListChange {
    /// The first page of the list as it is (again after a reconnection).
    Snapshot(BackendPage),
    /// A backend that was created or changed.
    Backend(Box<BackendRecord>),
}

/// What the status stream (`status_updates`) yields.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusUpdate {
    /// One of the backend's events; `seq` is its number (the SSE `id:`).
    Event(Event),
    /// A stop due soon (`lifetime_warning_seconds` ahead).
    Expiring(Expiring),
}

/// The answer to a keepalive: the backend is not swept before `busy_until`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Keepalive {
    pub id: String,
    #[serde(with = "serde_rfc3339")]
    pub busy_until: Millis,
}

/// One Server-Sent Events message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseMessage {
    event: String,
    id: Option<String>,
    data: String,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send>>;

/// A connection to one Spawner (embedded server or Kubernetes API).
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// `base` is the server's URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str, token: Option<String>) -> Result<Self> {
        // No redirect is followed: `/ready` answers one to the backend's own origin, which is
        // for browsers (a `*.localhost` name the system's resolver may not know).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Protocol(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send(&self, req: RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| Error::Connect {
            url: self.base.clone(),
            why: root_cause(&e),
        })?;
        if resp.status().is_success() || resp.status().is_redirection() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ApiErrorBody>(&text) {
            Ok(b) => Error::Api {
                status,
                code: b.error,
                message: b.message,
            },
            Err(_) => Error::NotSpawner {
                url: self.base.clone(),
                answer: format!("{status} with {}", describe(&text)),
            },
        })
    }

    /// Reads a JSON answer; one that is not what Spawner sends says so.
    async fn json<T: serde::de::DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Error::Protocol(format!("reading the response: {}", root_cause(&e))))?;
        serde_json::from_str(&text).map_err(|_| Error::NotSpawner {
            url: self.base.clone(),
            answer: format!("{status} with {}", describe(&text)),
        })
    }

    /// Spawns a backend; `created` is false when a live backend with the key was returned.
    pub async fn spawn(&self, spec: &BackendSpec) -> Result<(SpawnResponse, bool)> {
        let resp = self
            .send(self.request(Method::POST, "/v1/backends").json(spec))
            .await?;
        let created = resp.status() == StatusCode::CREATED;
        Ok((self.json(resp).await?, created))
    }

    /// Lists backends, every page of them; `filters` are query pairs such as
    /// `("state", "Ready")`.
    pub async fn list(&self, filters: &[(&str, &str)]) -> Result<Vec<BackendRecord>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list_page(filters, None, after.as_deref()).await?;
            all.extend(page.backends);
            match page.next {
                // A cursor that does not move would never end.
                Some(next) if after.as_ref() != Some(&next) => after = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// One page of the list: pass its `next` as `after` for the next one.
    pub async fn list_page(
        &self,
        filters: &[(&str, &str)],
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<BackendPage> {
        let mut req = self.request(Method::GET, "/v1/backends").query(filters);
        if let Some(l) = limit {
            req = req.query(&[("limit", l)]);
        }
        if let Some(a) = after {
            req = req.query(&[("after", a)]);
        }
        self.json(self.send(req).await?).await
    }

    /// Claims a Ready backend of a warm pool (`req.pool`); `created` is false when the
    /// live backend with the claim's key was returned.
    pub async fn claim(&self, req: &ClaimRequest) -> Result<(SpawnResponse, bool)> {
        let resp = self
            .send(self.request(Method::POST, "/v1/backends").json(req))
            .await?;
        let created = resp.status() == StatusCode::CREATED;
        Ok((self.json(resp).await?, created))
    }

    pub async fn get(&self, id: &str) -> Result<BackendRecord> {
        let resp = self
            .send(self.request(Method::GET, &format!("/v1/backends/{id}")))
            .await?;
        self.json(resp).await
    }

    /// A one-time login link to the dashboard, and the seconds it works for.
    pub async fn login_link(&self) -> Result<(String, u64)> {
        #[derive(Deserialize)]
        struct Link {
            url: String,
            expires_in_seconds: u64,
        }
        let resp = self
            .send(self.request(Method::POST, "/v1/login-links"))
            .await?;
        let link: Link = self.json(resp).await?;
        Ok((link.url, link.expires_in_seconds))
    }

    /// Trades a login link's code for the token.
    pub async fn login(&self, code: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Token {
            token: String,
        }
        let req = self
            .request(Method::POST, "/v1/login")
            .json(&serde_json::json!({ "code": code }));
        Ok(self.json::<Token>(self.send(req).await?).await?.token)
    }

    /// `GET /healthz`: Ok when the server can serve.
    pub async fn health(&self) -> Result<()> {
        self.send(self.request(Method::GET, "/healthz")).await?;
        Ok(())
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let resp = self.send(self.request(Method::GET, "/metrics")).await?;
        resp.text()
            .await
            .map_err(|e| Error::Protocol(format!("reading metrics: {}", root_cause(&e))))
    }

    /// The server's OpenAPI document.
    pub async fn openapi(&self) -> Result<serde_json::Value> {
        let resp = self
            .send(self.request(Method::GET, "/v1/openapi.json"))
            .await?;
        self.json(resp).await
    }

    /// Keeps the backend from being swept for `seconds` from now.
    pub async fn keepalive(&self, id: &str, seconds: u64) -> Result<Keepalive> {
        let req = self
            .request(Method::POST, &format!("/v1/backends/{id}/keepalive"))
            .json(&serde_json::json!({ "seconds": seconds }));
        self.json(self.send(req).await?).await
    }

    /// Whether the backend is Ready (`GET .../ready`): false while it starts; an error
    /// `gone` (410) once it has ended or is stopping.
    pub async fn is_ready(&self, id: &str) -> Result<bool> {
        let req = self.request(Method::GET, &format!("/v1/backends/{id}/ready"));
        match self.send(req).await {
            Ok(_) => Ok(true),
            Err(Error::Api { status, .. }) if status == StatusCode::CONFLICT => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until the backend is Ready and returns its Ready event. One that ends first
    /// is `Error::Api` `gone` (410) with the ending's reason; `timeout` run out is
    /// `Error::Timeout`.
    pub async fn wait_ready(&self, id: &str, timeout: Option<Duration>) -> Result<Event> {
        let follow = async {
            let mut events = Box::pin(self.status_stream(id, None).await?);
            while let Some(item) = events.next().await {
                let (_, e) = item?;
                if e.state == spawner_core::State::Ready {
                    return Ok(e);
                }
                if e.state.is_terminal() {
                    let why = e.reason.map(|r| format!(": {r}")).unwrap_or_default();
                    return Err(Error::Api {
                        status: StatusCode::GONE,
                        code: "gone".into(),
                        message: format!("backend {id} ended {}{why} before it was Ready", e.state),
                    });
                }
            }
            Err(Error::StreamBroken("the status stream ended".into()))
        };
        match timeout {
            None => follow.await,
            Some(t) => tokio::time::timeout(t, follow).await.unwrap_or_else(|_| {
                Err(Error::Timeout(format!(
                    "backend {id} was not Ready within {t:?}"
                )))
            }),
        }
    }

    /// Creates a warm pool.
    pub async fn create_pool(&self, spec: &PoolSpec) -> Result<PoolStatus> {
        let req = self.request(Method::POST, "/v1/pools").json(spec);
        self.json(self.send(req).await?).await
    }

    pub async fn get_pool(&self, name: &str) -> Result<PoolStatus> {
        let req = self.request(Method::GET, &format!("/v1/pools/{name}"));
        self.json(self.send(req).await?).await
    }

    /// One page of the pools, by name.
    pub async fn list_pools_page(
        &self,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<PoolList> {
        let mut req = self.request(Method::GET, "/v1/pools");
        if let Some(l) = limit {
            req = req.query(&[("limit", l)]);
        }
        if let Some(a) = after {
            req = req.query(&[("after", a)]);
        }
        self.json(self.send(req).await?).await
    }

    /// Every pool, all pages read.
    pub async fn list_pools(&self) -> Result<Vec<PoolStatus>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list_pools_page(None, after.as_deref()).await?;
            all.extend(page.pools);
            match page.next {
                Some(next) if after.as_ref() != Some(&next) => after = Some(next),
                _ => return Ok(all),
            }
        }
    }

    pub async fn resize_pool(&self, name: &str, size: PoolSize) -> Result<PoolStatus> {
        let req = self
            .request(Method::PUT, &format!("/v1/pools/{name}"))
            .json(&size);
        self.json(self.send(req).await?).await
    }

    /// Removes the pool and stops its unclaimed backends (claimed ones run on).
    pub async fn delete_pool(&self, name: &str) -> Result<PoolDrained> {
        let req = self.request(Method::DELETE, &format!("/v1/pools/{name}"));
        self.json(self.send(req).await?).await
    }

    /// The list kept current (`GET /v1/backends/stream`): a snapshot, then every change;
    /// after a dropped connection, a fresh snapshot. It does not end by itself.
    pub async fn watch_list(
        &self,
        filters: &[(&str, &str)],
    ) -> Result<impl Stream<Item = Result<ListChange>>> {
        let query: Vec<(String, String)> = filters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let connect = {
            let client = self.clone();
            move || {
                let client = client.clone();
                let query = query.clone();
                async move {
                    let req = client
                        .request(Method::GET, "/v1/backends/stream")
                        .query(&query);
                    let resp = client.send(req).await?;
                    Ok::<BoxStream<Result<SseMessage>>, Error>(Box::pin(sse_messages(
                        resp.bytes_stream(),
                    )))
                }
            }
        };
        let first = connect().await?;
        let state = (Some(first), connect, 0u32);
        Ok(futures_util::stream::unfold(
            state,
            |(mut inner, connect, mut failures)| async move {
                loop {
                    let stream = match inner.as_mut() {
                        Some(s) => s,
                        None => match connect().await {
                            Ok(s) => inner.insert(s),
                            Err(e) if e.transient() && failures < RETRIES => {
                                failures += 1;
                                tokio::time::sleep(backoff(failures)).await;
                                continue;
                            }
                            Err(e) => {
                                let e = if e.transient() { broken(e) } else { e };
                                return Some((Err(e), (None, connect, RETRIES + 1)));
                            }
                        },
                    };
                    match stream.next().await {
                        Some(Ok(msg)) => {
                            failures = 0;
                            let change = match msg.event.as_str() {
                                "snapshot" => {
                                    serde_json::from_str(&msg.data).map(ListChange::Snapshot)
                                }
                                "backend" => serde_json::from_str(&msg.data)
                                    .map(|b| ListChange::Backend(Box::new(b))),
                                _ => continue,
                            };
                            let item = change
                                .map_err(|e| Error::Protocol(format!("bad list change: {e}")));
                            return Some((item, (inner, connect, failures)));
                        }
                        Some(Err(_)) | None => {
                            inner = None;
                            failures += 1;
                            if failures > RETRIES {
                                let e = Error::StreamBroken("the list stream kept dropping".into());
                                return Some((Err(e), (None, connect, failures)));
                            }
                            tokio::time::sleep(backoff(failures)).await;
                        }
                    }
                }
            },
        ))
    }

    /// The backend's last event.
    pub async fn status(&self, id: &str) -> Result<Event> {
        let resp = self
            .send(self.request(Method::GET, &format!("/v1/backends/{id}/status")))
            .await?;
        self.json(resp).await
    }

    /// Asks for a stop; returns the state the answer reports (`Terminating`, or the
    /// terminal state of a backend that had already ended).
    pub async fn terminate(&self, id: &str, hard: bool) -> Result<spawner_core::State> {
        #[derive(Deserialize)]
        struct Answer {
            state: spawner_core::State,
        }
        let resp = self
            .send(
                self.request(Method::POST, &format!("/v1/backends/{id}/terminate"))
                    .json(&serde_json::json!({ "hard": hard })),
            )
            .await?;
        Ok(self.json::<Answer>(resp).await?.state)
    }

    /// Wakes a Sleeping backend (`POST .../wake`); the state it is in from now: `Waking`,
    /// or the state of one that was awake or starting.
    pub async fn wake(&self, id: &str) -> Result<spawner_core::State> {
        #[derive(Deserialize)]
        struct Answer {
            state: spawner_core::State,
        }
        let resp = self
            .send(self.request(Method::POST, &format!("/v1/backends/{id}/wake")))
            .await?;
        Ok(self.json::<Answer>(resp).await?.state)
    }

    /// A connect URL for another user of a token-mode backend.
    pub async fn connect(
        &self,
        id: &str,
        req: &spawner_core::access::ConnectRequest,
    ) -> Result<spawner_core::access::ConnectResponse> {
        let resp = self
            .send(
                self.request(Method::POST, &format!("/v1/backends/{id}/connect"))
                    .json(req),
            )
            .await?;
        self.json(resp).await
    }

    /// The backend's access mode and who holds access.
    pub async fn access(&self, id: &str) -> Result<spawner_core::access::AccessList> {
        let resp = self
            .send(self.request(Method::GET, &format!("/v1/backends/{id}/access")))
            .await?;
        self.json(resp).await
    }

    /// Revokes a user's access to a backend.
    pub async fn revoke(&self, id: &str, user: &str) -> Result<()> {
        let mut url = reqwest::Url::parse(&format!("{}/v1/backends/{id}/access/", self.base))
            .map_err(|e| Error::Protocol(format!("the server's URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| Error::Protocol("the server's URL cannot take a path".into()))?
            .pop_if_empty()
            .push(user);
        let mut req = self.http.request(Method::DELETE, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        self.send(req).await?;
        Ok(())
    }

    /// The backend's output; with `follow`, a stream that ends when the backend has.
    pub async fn logs(&self, id: &str, follow: bool) -> Result<impl Stream<Item = Result<Bytes>>> {
        let resp = self
            .send(
                self.request(Method::GET, &format!("/v1/backends/{id}/logs"))
                    .query(&[("follow", follow)]),
            )
            .await?;
        Ok(resp
            .bytes_stream()
            .map(|r| r.map_err(|e| Error::Protocol(format!("reading logs: {e}")))))
    }

    /// The status stream: every event after `last_event_id` (all without it), then new
    /// ones, ending after a terminal state. A dropped connection is resumed with
    /// `Last-Event-ID`: no event is lost or repeated. `expiring` announcements are passed
    /// over (`status_updates` has them).
    pub async fn status_stream(
        &self,
        id: &str,
        last_event_id: Option<u64>,
    ) -> Result<impl Stream<Item = Result<(u64, Event)>>> {
        let updates = self.status_updates(id, last_event_id).await?;
        Ok(updates.filter_map(|u| async move {
            match u {
                Ok(StatusUpdate::Event(e)) => Some(Ok((e.seq, e))),
                Ok(StatusUpdate::Expiring(_)) => None,
                Err(e) => Some(Err(e)),
            }
        }))
    }

    /// The status stream with its `expiring` announcements: `StatusUpdate::Event` for each
    /// event after `last_event_id` (all without it), `StatusUpdate::Expiring` when a stop is
    /// near; resumed with `Last-Event-ID` after a dropped connection; ends after a terminal
    /// state. The first connection's failure (`not_found`…) is returned at once.
    pub async fn status_updates(
        &self,
        id: &str,
        last_event_id: Option<u64>,
    ) -> Result<impl Stream<Item = Result<StatusUpdate>>> {
        let connect = {
            let client = self.clone();
            let path = format!("/v1/backends/{id}/status/stream");
            move |last: Option<u64>| {
                let client = client.clone();
                let path = path.clone();
                async move {
                    let mut req = client.request(Method::GET, &path);
                    if let Some(last) = last {
                        req = req.header("Last-Event-ID", last.to_string());
                    }
                    let resp = client.send(req).await?;
                    Ok::<BoxStream<Result<SseMessage>>, Error>(Box::pin(sse_messages(
                        resp.bytes_stream(),
                    )))
                }
            }
        };
        let first = connect(last_event_id).await?;
        let state = Resume {
            inner: Some(first),
            last: last_event_id,
            failures: 0,
            done: false,
        };
        Ok(futures_util::stream::unfold(
            (state, connect),
            |(mut st, connect)| async move {
                if st.done {
                    return None;
                }
                loop {
                    let stream = match st.inner.as_mut() {
                        Some(s) => s,
                        None => match connect(st.last).await {
                            Ok(s) => st.inner.insert(s),
                            Err(e) if e.transient() && st.failures < RETRIES => {
                                st.failures += 1;
                                tokio::time::sleep(backoff(st.failures)).await;
                                continue;
                            }
                            Err(e) => {
                                st.done = true;
                                let e = if e.transient() { broken(e) } else { e };
                                return Some((Err(e), (st, connect)));
                            }
                        },
                    };
                    match stream.next().await {
                        Some(Ok(msg)) => {
                            if let Some(update) = st.update(msg) {
                                return Some((update, (st, connect)));
                            }
                        }
                        // A broken connection, or an end before a terminal state (the
                        // server ends the stream only after one): resume.
                        Some(Err(_)) | None => {
                            st.inner = None;
                            st.failures += 1;
                            if st.failures > RETRIES {
                                st.done = true;
                                let e =
                                    Error::StreamBroken("the status stream kept dropping".into());
                                return Some((Err(e), (st, connect)));
                            }
                            tokio::time::sleep(backoff(st.failures)).await;
                        }
                    }
                }
            },
        ))
    }
}

/// Where a status stream is: the last event it yielded, and whether it has ended.
struct Resume {
    inner: Option<BoxStream<Result<SseMessage>>>,
    last: Option<u64>,
    failures: u32,
    done: bool,
}

impl Resume {
    /// The update a message is, if it is one that was not yielded yet.
    fn update(&mut self, msg: SseMessage) -> Option<Result<StatusUpdate>> {
        if msg.event == "expiring" {
            let item = serde_json::from_str::<Expiring>(&msg.data)
                .map(StatusUpdate::Expiring)
                .map_err(|e| Error::Protocol(format!("bad announcement {:?}: {e}", msg.data)));
            return Some(item);
        }
        if msg.event != "message" {
            return None;
        }
        let seq = msg
            .id
            .as_deref()
            .and_then(|i| i.trim().parse::<u64>().ok())?;
        if self.last.is_some_and(|last| seq <= last) {
            return None; // never repeat one
        }
        self.failures = 0;
        self.last = Some(seq);
        let item = serde_json::from_str::<Event>(&msg.data)
            .map_err(|e| Error::Protocol(format!("bad event {:?}: {e}", msg.data)))
            .map(|mut ev| {
                ev.seq = seq;
                self.done = ev.state.is_terminal();
                StatusUpdate::Event(ev)
            });
        Some(item)
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.saturating_sub(1).min(5)).min(2000))
}

fn broken(e: Error) -> Error {
    Error::StreamBroken(e.to_string())
}

/// The innermost cause of an error: "Connection refused (os error 111)" rather than the
/// chain of wrappers around it.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    match cause.downcast_ref::<std::io::Error>().map(|io| io.kind()) {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_string(),
        _ => text,
    }
}

/// A short description of a body that is not Spawner's: its start, on one line.
fn describe(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(60) {
        None if line.is_empty() => "an empty body".to_string(),
        None => format!("{line:?}"),
        Some((at, _)) => format!("{:?}…", &line[..at]),
    }
}

/// Server-Sent Events (the WHATWG format) from a byte stream: one `SseMessage` per
/// message; comments (the server's keep-alives) are passed over. Lines are cut from the
/// bytes before they are decoded, so that a character split between chunks stays whole.
fn sse_messages(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<SseMessage>> + Send {
    let body = Box::pin(body);
    let state = (body, Vec::<u8>::new(), SseMessage::empty());
    futures_util::stream::unfold(state, |(mut body, mut buf, mut msg)| async move {
        loop {
            if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let raw: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    let done = std::mem::replace(&mut msg, SseMessage::empty());
                    if !done.data.is_empty() {
                        return Some((Ok(done), (body, buf, msg)));
                    }
                    continue;
                }
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "data" => {
                        if !msg.data.is_empty() {
                            msg.data.push('\n');
                        }
                        msg.data.push_str(value);
                    }
                    "event" => msg.event = value.to_string(),
                    "id" => msg.id = Some(value.to_string()),
                    _ => {}
                }
                continue;
            }
            match body.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    let e = Error::Protocol(format!("stream broke: {}", root_cause(&e)));
                    return Some((Err(e), (body, buf, msg)));
                }
                None => return None,
            }
        }
    })
}

impl SseMessage {
    fn empty() -> Self {
        SseMessage {
            event: "message".into(),
            id: None,
            data: String::new(),
        }
    }
}
