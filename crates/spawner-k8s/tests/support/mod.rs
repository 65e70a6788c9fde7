//! A small in-memory Kubernetes API server behind kube-rs's mocked service
//! (`tower_test::mock::pair`): it keeps objects, answers the requests the controller and
//! the API make (get, list, create, JSON merge patch, delete, watch, Events), honours
//! `resourceVersion` and uid preconditions, and logs every request so that tests assert
//! exactly what was sent.

#![allow(dead_code)] // Each test binary uses its own part of the fake.

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
}

impl Logged {
    /// `"GET pods/b1"`: the method and the path after the namespace, for compact asserts.
    pub fn short(&self) -> String {
        let rest = self
            .path
            .split_once("/namespaces/default/")
            .map_or(self.path.as_str(), |(_, r)| r);
        let rest = rest
            .strip_prefix("sessionlivedbackends")
            .map_or(rest.to_string(), |r| format!("slabs{r}"));
        format!("{} {rest}", self.method)
    }
}

#[derive(Default)]
struct Inner {
    /// Keyed by "{resource}/{name}", e.g. "pods/b1".
    objects: BTreeMap<String, Value>,
    log: Vec<Logged>,
    rv: u64,
    uid: u64,
    /// Answers to force, by "METHOD resource/name": status code and reason.
    failures: BTreeMap<String, (u16, String)>,
}

#[derive(Clone, Default)]
pub struct Fake {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

pub const NOW: &str = "2023-11-14T22:13:20Z";

impl Fake {
    /// A client whose every request this fake answers.
    pub fn start() -> (Fake, Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = Fake::default();
        let server = fake.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let resp = server.handle(req).await;
                    send.send_response(resp);
                });
            }
        });
        (fake, Client::new(service, "default"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake lock")
    }

    /// Stores an object as if it had been created, filling uid, resourceVersion and
    /// creationTimestamp when absent.
    pub fn put(&self, resource: &str, mut obj: Value) -> Value {
        let mut inner = self.lock();
        stamp(&mut inner, &mut obj, true);
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        inner
            .objects
            .insert(format!("{resource}/{name}"), obj.clone());
        drop(inner);
        self.changed.notify_waiters();
        obj
    }

    pub fn get(&self, resource: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&format!("{resource}/{name}"))
            .cloned()
    }

    pub fn remove(&self, resource: &str, name: &str) -> Option<Value> {
        let v = self.lock().objects.remove(&format!("{resource}/{name}"));
        self.changed.notify_waiters();
        v
    }

    /// Changes a stored object in place (as the kubelet or the scheduler would).
    pub fn update(&self, resource: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut inner = self.lock();
        inner.rv += 1;
        let rv = inner.rv.to_string();
        let obj = inner
            .objects
            .get_mut(&format!("{resource}/{name}"))
            .expect("object to update");
        f(obj);
        obj["metadata"]["resourceVersion"] = json!(rv);
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Makes the next `method` on `target` ("pods/b1", "sessionlivedbackends") fail.
    pub fn fail_next(&self, method: &str, target: &str, code: u16, reason: &str) {
        self.lock()
            .failures
            .insert(format!("{method} {target}"), (code, reason.to_string()));
    }

    /// Every request so far, emptied.
    pub fn take_log(&self) -> Vec<Logged> {
        std::mem::take(&mut self.lock().log)
    }

    pub fn take_short_log(&self) -> Vec<String> {
        self.take_log().iter().map(Logged::short).collect()
    }

    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        self.lock().log.push(Logged {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        let (status, value) = self.answer(&parts.method, &path, &query, body).await;
        let mut resp = Response::builder().status(status);
        if status == StatusCode::OK && query.contains("watch=true") {
            resp = resp.header("content-type", "application/json;stream=watch");
        }
        let bytes = match value {
            Value::String(s) => s.into_bytes(),
            v => serde_json::to_vec(&v).expect("json"),
        };
        resp.body(Body::from(bytes)).expect("response")
    }

    async fn answer(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        // "/api/v1/namespaces/default/pods/b1/status" -> ("pods", Some("b1"), Some("status"))
        let rest = path
            .split_once("/namespaces/default/")
            .map(|(_, r)| r.to_string())
            .or_else(|| path.rsplit('/').next().map(str::to_string))
            .unwrap_or_default();
        let mut segs = rest.split('/');
        let resource = segs.next().unwrap_or_default().to_string();
        let name = segs.next().map(str::to_string);
        let sub = segs.next().map(str::to_string);
        let target = match &name {
            Some(n) => format!("{resource}/{n}"),
            None => resource.clone(),
        };
        if let Some((code, reason)) = self.lock().failures.remove(&format!("{method} {target}")) {
            return status_error(code, &reason, "forced by the test");
        }
        let key = target.clone();
        match (method.as_str(), name, sub) {
            ("GET", None, _) if query.contains("watch=true") => self.watch(&resource, query).await,
            ("GET", None, _) => {
                let selector = query_param(query, "labelSelector");
                let field = query_param(query, "fieldSelector");
                let inner = self.lock();
                let items: Vec<Value> = inner
                    .objects
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("{resource}/")))
                    .map(|(_, v)| v.clone())
                    .filter(|v| selector.as_deref().is_none_or(|s| matches_labels(v, s)))
                    .filter(|v| field.as_deref().is_none_or(|f| matches_fields(v, f)))
                    .collect();
                let rv = inner.rv.to_string();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": rv}, "items": items}),
                )
            }
            ("GET", Some(n), Some(sub)) if sub == "log" => {
                match self.get(&resource, &n).and_then(|p| {
                    p["metadata"]["annotations"]["test/log"]
                        .as_str()
                        .map(str::to_string)
                }) {
                    Some(text) => (StatusCode::OK, Value::String(text)),
                    None => status_error(404, "NotFound", &format!("pods \"{n}\" not found")),
                }
            }
            ("GET", Some(n), _) => match self.get(&resource, &n) {
                Some(v) => (StatusCode::OK, v),
                None => status_error(404, "NotFound", &format!("{resource} \"{n}\" not found")),
            },
            ("POST", None, _) => {
                let mut obj = body.unwrap_or(Value::Null);
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let mut inner = self.lock();
                let key = format!("{resource}/{name}");
                if inner.objects.contains_key(&key) {
                    return status_error(
                        409,
                        "AlreadyExists",
                        &format!("{resource} \"{name}\" already exists"),
                    );
                }
                stamp(&mut inner, &mut obj, true);
                inner.objects.insert(key, obj.clone());
                drop(inner);
                self.changed.notify_waiters();
                (StatusCode::CREATED, obj)
            }
            ("PATCH", Some(_), sub) => {
                let patch = body.unwrap_or(Value::Null);
                let mut inner = self.lock();
                let Some(current) = inner.objects.get(&key).cloned() else {
                    return status_error(404, "NotFound", "not found");
                };
                if let Some(want) = patch["metadata"]["resourceVersion"].as_str() {
                    if current["metadata"]["resourceVersion"].as_str() != Some(want) {
                        return status_error(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again");
                    }
                }
                let mut next = current;
                if sub.as_deref() == Some("status") {
                    merge(&mut next["status"], &patch["status"]);
                } else {
                    let mut p = patch.clone();
                    if let Some(m) = p.as_object_mut() {
                        m.remove("status");
                    }
                    merge(&mut next, &p);
                }
                inner.rv += 1;
                next["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
                inner.objects.insert(key, next.clone());
                drop(inner);
                self.changed.notify_waiters();
                (StatusCode::OK, next)
            }
            ("DELETE", Some(n), _) => {
                let mut inner = self.lock();
                let Some(current) = inner.objects.get(&key).cloned() else {
                    return status_error(404, "NotFound", &format!("{resource} \"{n}\" not found"));
                };
                if let Some(uid) = body
                    .as_ref()
                    .and_then(|b| b["preconditions"]["uid"].as_str())
                {
                    if current["metadata"]["uid"].as_str() != Some(uid) {
                        return status_error(
                            409,
                            "Conflict",
                            "Precondition failed: UID in precondition does not match",
                        );
                    }
                }
                inner.objects.remove(&key);
                drop(inner);
                self.changed.notify_waiters();
                (StatusCode::OK, current)
            }
            _ => status_error(405, "MethodNotAllowed", "the fake does not do that"),
        }
    }

    /// A watch answered as a finite body: the events after the asked resourceVersion,
    /// waiting (up to 5 s) for the next change if there are none yet.
    async fn watch(&self, resource: &str, query: &str) -> (StatusCode, Value) {
        let since: u64 = query_param(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let field = query_param(query, "fieldSelector");
        let selector = query_param(query, "labelSelector");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.changed.notified();
            let (lines, gone) = {
                let inner = self.lock();
                let mut lines = String::new();
                let mut any = false;
                for (k, v) in &inner.objects {
                    if !k.starts_with(&format!("{resource}/")) {
                        continue;
                    }
                    if field.as_deref().is_some_and(|f| !matches_fields(v, f)) {
                        continue;
                    }
                    if selector.as_deref().is_some_and(|s| !matches_labels(v, s)) {
                        continue;
                    }
                    any = true;
                    let rv: u64 = v["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0);
                    if rv > since {
                        lines.push_str(&json!({"type": "MODIFIED", "object": v}).to_string());
                        lines.push('\n');
                    }
                }
                (lines, !any && field.is_some())
            };
            if !lines.is_empty() {
                return (StatusCode::OK, Value::String(lines));
            }
            if gone {
                // The watched object is gone: tell the watcher as the API server would.
                let name = field
                    .as_deref()
                    .and_then(|f| f.strip_prefix("metadata.name="))
                    .unwrap_or_default();
                let obj = json!({"apiVersion": "spawner.dev/v1", "kind": "SessionLivedBackend", "metadata": {"name": name, "resourceVersion": (since + 1).to_string()}, "spec": {"template": {"containers": []}}});
                return (
                    StatusCode::OK,
                    Value::String(format!("{}\n", json!({"type": "DELETED", "object": obj}))),
                );
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return (StatusCode::OK, Value::String(String::new()));
            }
        }
    }
}

fn stamp(inner: &mut Inner, obj: &mut Value, create: bool) {
    inner.rv += 1;
    inner.uid += 1;
    let meta = &mut obj["metadata"];
    if create && meta["uid"].is_null() {
        meta["uid"] = json!(format!("uid-{}", inner.uid));
    }
    if meta["creationTimestamp"].is_null() {
        meta["creationTimestamp"] = json!(NOW);
    }
    if meta["namespace"].is_null() {
        meta["namespace"] = json!("default");
    }
    meta["resourceVersion"] = json!(inner.rv.to_string());
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn status_error(code: u16, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(code).expect("status code"),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=b,c=d` equality selectors only: what Spawner uses.
fn matches_labels(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn matches_fields(obj: &Value, selector: &str) -> bool {
    selector.split(',').all(|term| match term.split_once('=') {
        Some(("metadata.name", v)) => obj["metadata"]["name"].as_str() == Some(v),
        Some(("metadata.namespace", v)) => obj["metadata"]["namespace"].as_str() == Some(v),
        _ => false,
    })
}

/// A backend's status as the controller leaves it once its Pod runs: Running on `node`,
/// its sidecar at `ip:port`.
pub fn running_status(node: &str, ip: &str, port: u16) -> spawner_k8s::SessionLivedBackendStatus {
    use spawner_core::State;
    let mut status = spawner_k8s::SessionLivedBackendStatus::default();
    let states = [
        State::Submitted,
        State::Constructed,
        State::Scheduled,
        State::Running,
    ];
    for (i, s) in (0..).zip(states) {
        status.enter(s, 1_700_000_000_000 + i * 1_000, None, None);
    }
    status.node_name = Some(node.into());
    status.ip = Some(ip.into());
    status.port = Some(port);
    status
}

/// A SessionLivedBackend object of one application container, labelled with its node.
pub fn slab_json(
    name: &str,
    node: &str,
    image: &str,
    grace_seconds: u64,
    status: &spawner_k8s::SessionLivedBackendStatus,
) -> Value {
    json!({
        "apiVersion": "spawner.dev/v1",
        "kind": "SessionLivedBackend",
        "metadata": {"name": name, "namespace": "default", "labels": {"spawner.dev/node": node}},
        "spec": {
            "template": {"containers": [{"name": "app", "image": image}]},
            "gracePeriodSeconds": grace_seconds,
            "httpPort": 8080
        },
        "status": status,
    })
}

/// Starts the whole sweeper of `node` (watch and followers) against this client; returns
/// its verdicts, its stop switch and its task.
pub fn start_sweeper(
    client: Client,
    node: &str,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<spawner_k8s::node::sweeper::Judged>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), spawner_k8s::node::sweeper::Error>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = spawner_k8s::node::sweeper::SweeperConfig {
        node_name: node.into(),
        namespace: Some("default".into()),
    };
    let task = tokio::spawn(spawner_k8s::node::sweeper::run(
        client,
        config,
        Some(tx),
        async move {
            let _ = stopped.await;
        },
    ));
    (rx, stop, task)
}
