//! Lists a page at a time (docs/api.md, "List and get"), through a real `spawner serve`:
//! `limit`, `next` and `after` for backends and pools, a page bounded in bytes whatever its
//! specs hold, the list stream's snapshot, and the typed client reading every page.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use spawner_core::BackendSpec;
use std::collections::HashSet;

async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = server
        .http()
        .request(method, format!("{}{path}", server.url()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(t) = &server.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    call(server, reqwest::Method::GET, path, None).await
}

/// A spec that fails at once (no process starts), labelled `n`.
fn failing(n: usize, env_bytes: usize) -> BackendSpec {
    let mut spec = BackendSpec::from_command(vec!["/nonexistent/spawner-test-program".into()]);
    spec.labels.insert("half".into(), (n % 2).to_string());
    for (i, part) in [env_bytes / 2, env_bytes - env_bytes / 2]
        .into_iter()
        .enumerate()
    {
        if part > 0 {
            spec.executable
                .env
                .insert(format!("FILL{i}"), "x".repeat(part));
        }
    }
    spec
}

fn ids(page: &Value) -> Vec<String> {
    page["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect()
}

/// Every page of `path` (which has a query) at `limit`: the ids, and the size of each page.
async fn every_page(server: &TestServer, path: &str) -> (Vec<String>, Vec<usize>) {
    let (mut all, mut sizes) = (Vec::new(), Vec::new());
    let (status, mut page) = get(server, path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    loop {
        let got = ids(&page);
        sizes.push(got.len());
        all.extend(got);
        let Some(next) = page["next"].as_str().map(str::to_string) else {
            return (all, sizes);
        };
        let (status, more) = get(server, &format!("{path}&after={next}")).await;
        assert_eq!(status, StatusCode::OK, "{more}");
        page = more;
    }
}

#[tokio::test]
async fn backends_are_listed_a_page_at_a_time_newest_first() {
    let server = TestServer::start();
    let client = server.client();
    let mut spawned = Vec::new();
    for n in 0..25 {
        let (resp, _) = client.spawn(&failing(n, 0)).await.expect("spawn");
        spawned.push(resp.id);
    }
    for id in &spawned {
        wait_for(&client, id, |e| e.state.is_terminal()).await;
    }
    // The whole list at once (under the default limit), newest first.
    let (status, whole) = get(&server, "/v1/backends").await;
    assert_eq!(status, StatusCode::OK);
    assert!(whole.get("next").is_none(), "{}", whole["next"]);
    let newest_first: Vec<String> = ids(&whole);
    assert_eq!(newest_first.len(), 25);
    // RFC 3339 times in UTC with milliseconds: in order as text.
    let times: Vec<&str> = whole["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["created_at"].as_str().expect("created_at"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // Pages of 10: the same backends in the same order, none twice, no empty last page.
    let (paged, sizes) = every_page(&server, "/v1/backends?limit=10").await;
    assert_eq!(paged, newest_first);
    assert_eq!(sizes, vec![10, 10, 5]);
    // With a filter: its backends only, paged alike.
    let (half, sizes) = every_page(&server, "/v1/backends?label=half=1&limit=4").await;
    let expected: Vec<String> = whole["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .filter(|b| b["spec"]["labels"]["half"] == "1")
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(half, expected);
    assert_eq!(sizes, vec![4, 4, 4]);
    let (failed, _) = every_page(&server, "/v1/backends?state=Failed&limit=7").await;
    assert_eq!(failed, newest_first);
    let (none, sizes) = every_page(&server, "/v1/backends?state=Ready&limit=7").await;
    assert!(none.is_empty() && sizes == vec![0]);

    // Out of range, or not a cursor of this list: 400 naming the parameter.
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "after=nonsense",
        "after=12.NOT-AN-ID",
    ] {
        let (status, err) = get(&server, &format!("/v1/backends?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
        assert_eq!(err["error"], "invalid_query");
        let param = bad.split('=').next().unwrap_or_default();
        assert!(
            err["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with(param),
            "{err}"
        );
    }
    // The typed client (and so `spawner ls`) reads every page.
    let listed: Vec<String> = client
        .list(&[])
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(listed, newest_first);
}

/// A page ends once its records hold about 4 MiB, whatever `limit` allows; the client
/// follows `next` past it.
#[tokio::test]
async fn a_page_stays_small_whatever_its_specs_hold() {
    let server = TestServer::start();
    let client = server.client();
    let mut spawned = HashSet::new();
    for n in 0..80 {
        let (resp, _) = client.spawn(&failing(n, 60_000)).await.expect("spawn");
        spawned.insert(resp.id);
    }
    let (status, first) = get(&server, "/v1/backends?limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    let n = ids(&first).len();
    assert!(
        (60..80).contains(&n),
        "{n} records of 60 kB in the first page"
    );
    assert!(first["next"].is_string());
    let (all, _) = every_page(&server, "/v1/backends?limit=1000").await;
    assert_eq!(all.iter().cloned().collect::<HashSet<_>>(), spawned);
    assert_eq!(all.len(), 80);
    let listed = client.list(&[]).await.expect("list");
    assert_eq!(listed.len(), 80);
}

#[tokio::test]
async fn the_list_stream_starts_with_the_first_page() {
    let server = TestServer::start();
    let client = server.client();
    for n in 0..6 {
        client.spawn(&failing(n, 0)).await.expect("spawn");
    }
    let mut req = server
        .http()
        .get(format!("{}/v1/backends/stream?limit=4", server.url()));
    if let Some(t) = &server.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("stream");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let snapshot = loop {
        use futures_util::StreamExt;
        let chunk = tokio::time::timeout(PATIENCE, body.next())
            .await
            .expect("a snapshot in time")
            .expect("the stream goes on")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(end) = text.find("\n\n") {
            let data = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data")
                .to_string();
            break serde_json::from_str::<Value>(&data).expect("json");
        }
    };
    assert_eq!(ids(&snapshot).len(), 4);
    let next = snapshot["next"].as_str().expect("next").to_string();
    let (status, rest) = get(&server, &format!("/v1/backends?after={next}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&rest).len(), 2);
}

#[tokio::test]
async fn pools_are_listed_a_page_at_a_time_by_name() {
    let server = TestServer::start();
    for name in ["cedar", "alder", "birch"] {
        let pool = json!({"name": name, "min_ready": 0, "max": 1,
                          "template": {"executable": {"command": ["true"]}}});
        let (status, err) = call(&server, reqwest::Method::POST, "/v1/pools", Some(pool)).await;
        assert_eq!(status, StatusCode::CREATED, "{err}");
    }
    let names = |page: &Value| -> Vec<String> {
        page["pools"]
            .as_array()
            .expect("pools")
            .iter()
            .map(|p| p["name"].as_str().expect("name").to_string())
            .collect()
    };
    let (_, all) = get(&server, "/v1/pools").await;
    assert_eq!(names(&all), ["alder", "birch", "cedar"]);
    assert!(all.get("next").is_none());
    let (_, first) = get(&server, "/v1/pools?limit=2").await;
    assert_eq!(names(&first), ["alder", "birch"]);
    let next = first["next"].as_str().expect("next");
    let (_, second) = get(&server, &format!("/v1/pools?limit=2&after={next}")).await;
    assert_eq!(names(&second), ["cedar"]);
    assert!(second.get("next").is_none());
    for bad in ["limit=0", "after=Not_A_Name", "colour=red"] {
        let (status, err) = get(&server, &format!("/v1/pools?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
        assert_eq!(err["error"], "invalid_query");
    }
}
