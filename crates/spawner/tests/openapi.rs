//! `GET /v1/openapi.json` against docs/api.md and against what a real server answers: every
//! route, field, default and error code of the docs is in the document, and the real
//! responses of a whole lifecycle validate against the schemas it gives for them (strictly:
//! a field the document does not name is an error).

mod common;

use common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use spawner_core::State;

fn api_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
    std::fs::read_to_string(path).expect("docs/api.md")
}

async fn document(server: &TestServer) -> Value {
    let resp = server
        .http()
        .get(format!("{}/v1/openapi.json", server.url()))
        .send()
        .await
        .expect("GET openapi.json");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

/// Object schemas refuse fields they do not name, so that an undocumented field fails.
fn strict(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(strict);
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

struct Contract {
    doc: Value,
    components: Value,
}

impl Contract {
    fn new(doc: Value) -> Self {
        let mut components = doc["components"].clone();
        strict(&mut components);
        Contract { doc, components }
    }

    /// The schema the document gives for `status` of `method path`, as `content_type`.
    fn response_schema(&self, method: &str, path: &str, status: u16, content_type: &str) -> Value {
        let op = &self.doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let schema = &op["responses"][status.to_string()]["content"][content_type]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} documents no {content_type} answer for {status}"
        );
        schema.clone()
    }

    /// The document's errors for `instance` against `schema` (none: it matches).
    fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let mut inline = schema.clone();
        strict(&mut inline);
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.components,
            "allOf": [inline],
        });
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .expect("a valid schema");
        validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    fn check(&self, schema: &Value, instance: &Value, what: &str) {
        let errors = self.errors(schema, instance);
        assert!(
            errors.is_empty(),
            "{what} does not match the document: {errors:#?}\n{instance:#}"
        );
    }

    /// Checks a real answer against the document's schema for it.
    async fn answer(&self, method: &str, path: &str, resp: reqwest::Response) -> Value {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("a JSON answer");
        let schema = self.response_schema(method, path, status, "application/json");
        self.check(&schema, &body, &format!("{method} {path} → {status}"));
        body
    }

    fn schema(&self, name: &str) -> Value {
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }
}

#[tokio::test]
async fn the_document_covers_every_route_field_default_and_error_code_of_the_docs() {
    let server = TestServer::start();
    let doc = document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let md = api_md();

    // Routes: every `METHOD /path` the page names (a query string is a parameter).
    let route = regex::Regex::new(r"`(GET|POST) (/[^`?\s]*)").expect("regex");
    let mut routes: Vec<(String, String)> = route
        .captures_iter(&md)
        .map(|c| (c[1].to_lowercase(), c[2].to_string()))
        .collect();
    // Listed by path only in the seed section.
    for p in ["/backend/{name}/status/stream", "/backend/{name}/ready"] {
        routes.push(("get".into(), p.into()));
    }
    assert!(routes.len() >= 12, "{routes:?}");
    for (method, path) in &routes {
        assert!(
            doc["paths"][path.as_str()][method.as_str()].is_object(),
            "{method} {path} of docs/api.md is not in the document"
        );
    }

    // Error codes: each one of the table is in the ErrorCode schema, and its status is
    // answered by some operation.
    let codes_doc: Vec<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let row = regex::Regex::new(r"(?m)^\| (\d{3}) \| ((?:`[a-z_]+`(?: / )?)+) \|").expect("regex");
    let mut rows = 0;
    for c in row.captures_iter(&md) {
        rows += 1;
        let status = &c[1];
        for code in c[2].split(" / ") {
            let code = code.trim_matches('`');
            assert!(
                codes_doc.iter().any(|d| d == code),
                "error code {code} is not in the document"
            );
        }
        let answered = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .any(|item| {
                item.as_object()
                    .expect("path item")
                    .values()
                    .any(|op| op["responses"][status].is_object())
            });
        assert!(answered, "no operation answers {status}");
    }
    assert!(rows >= 9, "the errors table was not found");

    // Fields of the spawn request, with their defaults.
    let schemas = &doc["components"]["schemas"];
    let field = regex::Regex::new(r"(?m)^\| ((?:`[a-z_.]+`(?:, )?)+) \| ").expect("regex");
    let mut fields = 0;
    for c in field.captures_iter(&md) {
        let mut parent = String::new();
        for name in c[1].split(", ") {
            let name = name.trim_matches('`');
            if name == "field" {
                continue;
            }
            let full = if name.contains('.') || parent.is_empty() {
                name.to_string()
            } else {
                format!("{parent}.{name}")
            };
            parent = full
                .rsplit_once('.')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            let mut schema = &schemas["BackendSpec"];
            for part in full.split('.') {
                let prop = &schema["properties"][part];
                assert!(
                    prop.is_object(),
                    "field {full} of docs/api.md is not in the document"
                );
                schema = match prop["$ref"].as_str().or_else(|| {
                    prop["oneOf"]
                        .as_array()
                        .and_then(|a| a.iter().find_map(|s| s["$ref"].as_str()))
                }) {
                    Some(r) => &schemas[r.rsplit('/').next().unwrap_or_default()],
                    None => prop,
                };
            }
            fields += 1;
        }
    }
    assert!(fields >= 14, "the fields table was not found ({fields})");
    let spec = &schemas["BackendSpec"]["properties"];
    assert_eq!(spec["grace_period_seconds"]["default"], 300);
    assert_eq!(spec["startup_timeout_seconds"]["default"], 300);
    assert_eq!(spec["strip_prefix"]["default"], true);
    assert_eq!(spec["lifetime_warning_seconds"]["default"], 60);
    assert_eq!(
        schemas["KeepaliveRequest"]["properties"]["seconds"]["maximum"],
        86400
    );
    assert!(schemas["Expiring"]["properties"]["at"].is_object());
    assert_eq!(spec["grace_period_seconds"]["maximum"], 604800);
    assert_eq!(
        schemas["TerminateRequest"]["properties"]["hard"]["default"],
        false
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn real_answers_of_a_lifecycle_match_the_document() {
    let server = TestServer::start();
    let c = Contract::new(document(&server).await);
    // The checks can fail: an unknown field, a wrong type and a bad time are each refused.
    let event = c.schema("Event");
    assert!(c
        .errors(
            &event,
            &json!({"state": "Ready", "time": "2026-11-23T20:14:05.465Z"})
        )
        .is_empty());
    for bad in [
        json!({"state": "Ready", "time": "2026-11-23T20:14:05.465Z", "extra": 1}),
        json!({"state": "Readyish", "time": "2026-11-23T20:14:05.465Z"}),
        json!({"state": "Ready", "time": "yesterday"}),
    ] {
        assert!(!c.errors(&event, &bad).is_empty(), "{bad} passed");
    }
    let http = server.api();
    let url = |p: &str| format!("{}{p}", server.url());
    let app = json!([SPAWNER, "example-app"]);

    // Spawn: 201, then 200 for the same key.
    let body = json!({"key": "doc-openapi", "executable": {"command": app, "env": {"MODE": "x"}},
                      "labels": {"owner": "user-7"}, "grace_period_seconds": 60});
    let resp = http
        .post(url("/v1/backends"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let spawned = c.answer("post", "/v1/backends", resp).await;
    let id = spawned["id"].as_str().expect("id").to_string();
    let resp = http
        .post(url("/v1/backends"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    c.answer("post", "/v1/backends", resp).await;

    // Bad input: 400, 404.
    let resp = http
        .post(url("/v1/backends"))
        .header("content-type", "application/json")
        .body("{\"executable\": 3}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    c.answer("post", "/v1/backends", resp).await;
    // A body not declared JSON: 415, and a foreign Host: 403.
    let resp = http
        .post(url("/v1/backends"))
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    c.answer("post", "/v1/backends", resp).await;
    let resp = http
        .post(url("/v1/backends"))
        .header("host", "rebound.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    c.answer("post", "/v1/backends", resp).await;
    let resp = http
        .get(url("/v1/backends?colour=red"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    c.answer("get", "/v1/backends", resp).await;
    let resp = http
        .get(url("/v1/backends/aaaaaaaaaaaaaaaaaaaaaaaaaa"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    c.answer("get", "/v1/backends/{id}", resp).await;

    // The list stream's snapshot is a BackendList.
    let resp = http.get(url("/v1/backends/stream")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut chunks = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = chunks.next().await.expect("a snapshot").expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: snapshot\n"), "{text}");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data");
    c.check(
        &c.schema("BackendList"),
        &serde_json::from_str(data).unwrap(),
        "the snapshot",
    );
    drop(chunks);

    wait_state(&server.client(), &id, State::Ready).await;
    let path = |tail: &str| format!("/v1/backends/{id}{tail}");
    let resp = http.get(url(&path(""))).send().await.unwrap();
    let record = c.answer("get", "/v1/backends/{id}", resp).await;
    assert!(record["events"].as_array().is_some_and(|e| e.len() >= 5));
    let resp = http
        .get(url("/v1/backends?label=owner=user-7"))
        .send()
        .await
        .unwrap();
    let list = c.answer("get", "/v1/backends", resp).await;
    assert_eq!(list["backends"].as_array().map(Vec::len), Some(1));
    let resp = http.get(url(&path("/status"))).send().await.unwrap();
    c.answer("get", "/v1/backends/{id}/status", resp).await;
    let resp = http
        .get(url(&format!("/backend/{id}/status")))
        .send()
        .await
        .unwrap();
    c.answer("get", "/backend/{name}/status", resp).await;
    let resp = http.get(url(&path("/ready"))).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert!(c.doc["paths"]["/v1/backends/{id}/ready"]["get"]["responses"]["302"].is_object());

    // The status stream's events are Events.
    let resp = http.get(url(&path("/status/stream"))).send().await.unwrap();
    let mut chunks = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("\"Ready\"") {
        let chunk = chunks.next().await.expect("events").expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(chunks);
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        c.check(
            &c.schema("Event"),
            &serde_json::from_str(data).unwrap(),
            "a status event",
        );
    }

    // Keepalive: 200, a bad body 400; the record shows busy_until, as documented.
    let resp = http
        .post(url(&path("/keepalive")))
        .json(&json!({"seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    c.answer("post", "/v1/backends/{id}/keepalive", resp).await;
    let resp = http
        .post(url(&path("/keepalive")))
        .json(&json!({"seconds": -1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    c.answer("post", "/v1/backends/{id}/keepalive", resp).await;
    let resp = http.get(url(&path(""))).send().await.unwrap();
    let record = c.answer("get", "/v1/backends/{id}", resp).await;
    assert!(record["busy_until"].is_string() && record["last_client_activity"].is_string());

    // Terminate: 202, a bad body 400; then /ready is 410.
    let resp = http
        .post(url(&path("/terminate")))
        .header("content-type", "application/json")
        .body("{\"hard\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    c.answer("post", "/v1/backends/{id}/terminate", resp).await;
    let resp = http
        .post(url(&path("/terminate")))
        .json(&json!({"hard": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let answer = c.answer("post", "/v1/backends/{id}/terminate", resp).await;
    assert_eq!(answer["state"], "Terminating");
    wait_state(&server.client(), &id, State::Terminated).await;
    let resp = http.get(url(&path("/ready"))).send().await.unwrap();
    assert_eq!(resp.status(), 410);
    c.answer("get", "/v1/backends/{id}/ready", resp).await;
    let resp = http.get(url(&path(""))).send().await.unwrap();
    c.answer("get", "/v1/backends/{id}", resp).await;

    // The seed's routes.
    let resp = http
        .post(url("/spawn"))
        .json(&json!({"command": ["sh", "-c", "exit 4"], "gracePeriodSeconds": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let seed = c.answer("post", "/spawn", resp).await;
    let name = seed["name"].as_str().expect("name").to_string();
    wait_state(&server.client(), &name, State::Failed).await;
    let resp = http
        .get(url(&format!("/backend/{name}/ready")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 410);
    c.answer("get", "/backend/{name}/ready", resp).await;
    let resp = http.get(url(&path("/status"))).send().await.unwrap();
    let last = c.answer("get", "/v1/backends/{id}/status", resp).await;
    assert_eq!(last["state"], "Terminated");
}

#[tokio::test]
async fn pool_answers_match_the_document() {
    let server = TestServer::start();
    let c = Contract::new(document(&server).await);
    let http = server.api();
    let url = |p: &str| format!("{}{p}", server.url());
    let pool = json!({
        "name": "docs",
        "template": {"executable": {"command": [SPAWNER, "example-app"]}, "claim_path": "/claim"},
        "min_ready": 1,
        "max": 3,
    });
    // The request bodies are the document's too.
    c.check(&c.schema("PoolSpec"), &pool, "a pool");
    let claim = json!({"pool": "docs", "key": "k", "labels": {"a": "b"}, "if_none_ready": "wait"});
    c.check(&c.schema("ClaimRequest"), &claim, "a claim");
    c.check(&c.schema("SpawnBody"), &claim, "a claim as a spawn body");
    let spawn = json!({"executable": {"command": ["app"]}});
    c.check(&c.schema("SpawnBody"), &spawn, "a spawn body");
    let schema = c.response_schema("post", "/v1/backends", 201, "application/json");
    assert!(schema.is_object());
    assert_eq!(
        c.doc["paths"]["/v1/backends"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/SpawnBody"
    );

    let resp = http
        .post(url("/v1/pools"))
        .json(&pool)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created = c.answer("post", "/v1/pools", resp).await;
    assert_eq!(created["template"]["claim_path"], "/claim");
    let resp = http
        .post(url("/v1/pools"))
        .json(&pool)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    c.answer("post", "/v1/pools", resp).await;

    let resp = http
        .post(url("/v1/backends"))
        .json(&claim)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let claimed = c.answer("post", "/v1/backends", resp).await;
    assert_eq!(claimed["state"], "Ready");
    // The claimed backend's record, with its pool and claim, is the document's (strictly).
    let id = claimed["id"].as_str().expect("id");
    let resp = http
        .get(url(&format!("/v1/backends/{id}")))
        .send()
        .await
        .unwrap();
    let record = c.answer("get", "/v1/backends/{id}", resp).await;
    assert_eq!(record["pool"], "docs", "{record}");
    assert!(record["claimed_at"].is_string(), "{record}");
    let fields = &c.doc["components"]["schemas"]["BackendRecord"]["properties"];
    assert!(fields["pool"].is_object() && fields["claimed_at"].is_object());
    let resp = http.get(url("/v1/pools")).send().await.unwrap();
    c.answer("get", "/v1/pools", resp).await;
    let resp = http.get(url("/v1/pools/docs")).send().await.unwrap();
    c.answer("get", "/v1/pools/{name}", resp).await;
    let resp = http
        .put(url("/v1/pools/docs"))
        .json(&json!({"min_ready": 0, "max": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    c.answer("put", "/v1/pools/{name}", resp).await;
    let resp = http.delete(url("/v1/pools/docs")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    c.answer("delete", "/v1/pools/{name}", resp).await;
    let resp = http.get(url("/v1/pools/docs")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    c.answer("get", "/v1/pools/{name}", resp).await;
    let resp = http
        .post(url("/v1/backends"))
        .json(&json!({"pool": "docs", "if_none_ready": "wait", "wait_seconds": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    c.answer("post", "/v1/backends", resp).await;
}
