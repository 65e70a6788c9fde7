//! A typed client of Spawner's HTTP API (`docs/api.md`), used by the CLI and the tests.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use spawner_core::{BackendRecord, BackendSpec, Event, SpawnResponse};

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
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Deserialize)]
struct ApiErrorBody {
    error: String,
    message: String,
}

/// One page of `GET /v1/backends`.
#[derive(Deserialize)]
struct List {
    backends: Vec<BackendRecord>,
    /// The cursor of the next page; none on the last (and from servers without pages).
    #[serde(default)]
    next: Option<String>,
}

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
        let http = reqwest::Client::builder()
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
            let mut req = self.request(Method::GET, "/v1/backends").query(filters);
            if let Some(a) = &after {
                req = req.query(&[("after", a)]);
            }
            let page = self.json::<List>(self.send(req).await?).await?;
            all.extend(page.backends);
            match page.next {
                // A cursor that does not move would never end.
                Some(next) if after.as_ref() != Some(&next) => after = Some(next),
                _ => return Ok(all),
            }
        }
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
    /// ones, ending after a terminal state.
    pub async fn status_stream(
        &self,
        id: &str,
        last_event_id: Option<u64>,
    ) -> Result<impl Stream<Item = Result<(u64, Event)>>> {
        let mut req = self.request(Method::GET, &format!("/v1/backends/{id}/status/stream"));
        if let Some(last) = last_event_id {
            req = req.header("Last-Event-ID", last.to_string());
        }
        let resp = self.send(req).await?;
        Ok(sse_events(resp.bytes_stream()))
    }
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

/// Parses the `id:` and `data:` fields of a Server-Sent Events byte stream; named events
/// (`event: expiring`) are not state changes and are passed over.
fn sse_events(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Unpin,
) -> impl Stream<Item = Result<(u64, Event)>> {
    futures_util::stream::unfold((body, String::new()), |(mut body, mut buf)| async move {
        loop {
            if let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                let mut named = false;
                for line in block.lines() {
                    if line.starts_with("event:") {
                        named = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse::<u64>().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() || named {
                    continue; // a keep-alive comment, or an announcement
                }
                let item = serde_json::from_str::<Event>(&data)
                    .map_err(|e| Error::Protocol(format!("bad event {data:?}: {e}")))
                    .map(|mut ev| {
                        ev.seq = id.unwrap_or(0);
                        (ev.seq, ev)
                    });
                return Some((item, (body, buf)));
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    buf.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"))
                }
                Some(Err(e)) => {
                    return Some((
                        Err(Error::Protocol(format!("stream broke: {e}"))),
                        (body, buf),
                    ))
                }
                None => return None,
            }
        }
    })
}
