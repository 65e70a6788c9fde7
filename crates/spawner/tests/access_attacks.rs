//! Attacks on per-user access (docs/operations.md, "Security model of the control plane"),
//! against a real `spawner serve`, with raw HTTP and with real Chromium.

mod browser;
mod common;

use common::*;
use serde_json::{json, Value};
use spawner_core::access::{Access, AccessMode};
use spawner_core::State;

async fn token_backend(server: &TestServer, user: &str) -> (String, String) {
    let mut spec = example_app();
    spec.access = Some(Access {
        mode: AccessMode::Token,
        user: Some(user.to_string()),
        ..Access::default()
    });
    let client = server.client();
    let (resp, _) = client.spawn(&spec).await.expect("spawn");
    wait_state(&client, &resp.id, State::Ready).await;
    (resp.id, resp.connect_url.expect("a connect URL"))
}

async fn connect(server: &TestServer, id: &str, user: &str) -> String {
    let answer: Value = server
        .api()
        .post(format!("{}/v1/backends/{id}/connect", server.url()))
        .json(&json!({"user": user}))
        .send()
        .await
        .expect("connect")
        .json()
        .await
        .expect("json");
    answer["connect_url"].as_str().expect("url").to_string()
}

/// The cookie (`name=value`) a connect URL is exchanged for.
async fn cookie_of(server: &TestServer, url: &str) -> String {
    let resp = server.http().get(url).send().await.expect("GET");
    assert_eq!(resp.status(), 303);
    resp.headers()["set-cookie"]
        .to_str()
        .expect("text")
        .split(';')
        .next()
        .expect("pair")
        .to_string()
}

async fn as_who(
    server: &TestServer,
    id: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = server
        .http()
        .get(format!("{}{path}", server.backend_url(id)));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("GET");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn a_token_in_the_query_of_a_proxied_request_never_reaches_the_backend() {
    let server = TestServer::start();
    let (id, url) = token_backend(&server, "alice").await;
    let token = url
        .split("spawner_token=")
        .nth(1)
        .expect("token")
        .to_string();
    let cookie = cookie_of(&server, &url).await;
    let fresh = connect(&server, &id, "alice").await;
    let fresh_token = fresh
        .split("spawner_token=")
        .nth(1)
        .expect("token")
        .to_string();

    // With a valid cookie, a request carrying a token (used, forged, or percent-encoded
    // to look like another parameter) is answered by the proxy, never forwarded.
    for query in [
        format!("spawner_token={token}"),
        "spawner_token=sat1.x.y&a=1".to_string(),
        format!("a=1&spawner%5Ftoken={token}"),
        "spawner_token=".to_string(),
    ] {
        let (status, seen) = as_who(
            &server,
            &id,
            &format!("request?{query}"),
            &[("cookie", &cookie)],
        )
        .await;
        assert_eq!(status, 401, "{query}: {seen}");
    }
    // A genuine token: exchanged, and the redirect carries the rest of the query only.
    let resp = server
        .http()
        .get(format!(
            "{}request?spawner%5Ftoken={fresh_token}&a=1",
            server.backend_url(&id)
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/request?a=1");

    // By path (a client that is no browser): the same, its cookie scoped to the path.
    let again = connect(&server, &id, "alice").await;
    let t = again.split("spawner_token=").nth(1).expect("token");
    let resp = server
        .http()
        .get(format!("{}/p/{id}/request?spawner_token={t}", server.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], format!("/p/{id}/request"));
    let set = resp.headers()["set-cookie"].to_str().expect("text");
    assert!(set.contains(&format!("Path=/p/{id}/")), "{set}");
    let pair = set.split(';').next().expect("pair");
    let seen: Value = server
        .http()
        .get(format!("{}/p/{id}/request", server.url()))
        .header("cookie", pair)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(seen["headers"]["x-spawner-user"], "alice");
    assert_eq!(seen["uri"], "/request");
}

#[tokio::test]
async fn a_token_in_a_referer_admits_nothing_and_is_not_used_up() {
    let server = TestServer::start();
    let (id, url) = token_backend(&server, "alice").await;
    let (status, _) = as_who(&server, &id, "request", &[("referer", &url)]).await;
    assert_eq!(status, 401);
    // The token is still good for its own use.
    cookie_of(&server, &url).await;
}

#[tokio::test]
async fn cookies_of_other_backends_or_users_admit_nothing() {
    let server = TestServer::start();
    let (a, url_a) = token_backend(&server, "alice").await;
    let (b, url_b) = token_backend(&server, "mallory").await;
    let alice = cookie_of(&server, &url_a).await;
    let mallory_b = cookie_of(&server, &url_b).await;
    let mallory_a = cookie_of(&server, &connect(&server, &a, "mallory").await).await;

    // Raw requests with two cookies of the name: another backend's beside alice's is
    // ignored; another user's of this backend beside alice's admits nobody.
    for (cookies, want) in [
        (format!("{mallory_b}; {alice}"), (200, Some("alice"))),
        (format!("{alice}; {mallory_b}"), (200, Some("alice"))),
        (
            format!("spawner_access=sac1.e30.AAAA; {alice}"),
            (200, Some("alice")),
        ),
        (format!("{alice}; {mallory_a}"), (401, None)),
        (mallory_b.clone(), (401, None)),
    ] {
        let (status, seen) = as_who(&server, &a, "request", &[("cookie", &cookies)]).await;
        let user = seen["headers"]["x-spawner-user"]
            .as_str()
            .map(str::to_string);
        assert_eq!((status, user.as_deref()), want, "{cookies}");
    }
    // Two Cookie headers (what a proxy in front might make): the same rules.
    let resp = server
        .http()
        .get(format!("{}request", server.backend_url(&a)))
        .header("cookie", &alice)
        .header("cookie", &mallory_a)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 401);
    let _ = b;
}

#[tokio::test]
async fn cookie_tossing_from_a_sibling_subdomain_admits_nothing_in_a_browser() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let (a, url_a) = token_backend(&server, "alice").await;
    let (b, _) = token_backend(&server, "mallory").await;
    // What mallory has: a cookie of her own for a (she was given access too).
    let mallory_a = cookie_of(&server, &connect(&server, &a, "mallory").await).await;
    let value = mallory_a.split_once('=').expect("pair").1.to_string();

    let browser = browser::Browser::start().await;
    browser.goto(&url_a).await;
    // Mallory's page on b (a sibling of a under localhost) tosses her cookie up to the
    // parent domain, where a would receive it too; and a garbage one.
    browser.goto(&server.backend_url(&b)).await;
    browser
        .js(
            "document.cookie = 'spawner_access=' + arguments[0] + '; domain=localhost; path=/';
             document.cookie = 'spawner_access=sac1.junk.junk; domain=localhost; path=/request';",
            json!([value]),
        )
        .await;
    browser
        .goto(&format!("{}request", server.backend_url(&a)))
        .await;
    let text = browser
        .js("return document.body.innerText", json!([]))
        .await;
    let text = text.as_str().expect("text");
    // Either the browser kept the tossed cookie away, and alice is alice, or it sent it, and
    // the two users' cookies admit nobody: never mallory.
    match serde_json::from_str::<Value>(text) {
        Ok(seen) => {
            assert_eq!(seen["headers"]["x-spawner-user"], "alice", "{seen}");
            assert!(seen["headers"].get("cookie").is_none(), "{seen}");
        }
        Err(_) => assert!(text.contains("different users"), "{text}"),
    }
    eprintln!(
        "with a cookie tossed from a sibling: {}",
        &text[..text.len().min(80)]
    );

    // A browser that holds no access of its own gets nothing from b's own cookie for b
    // tossed to a (another backend's cookie is ignored).
    let fresh = browser::Browser::start().await;
    fresh.goto(&server.backend_url(&b)).await;
    let b_value = cookie_of(&server, &connect(&server, &b, "mallory").await).await;
    fresh
        .js(
            "document.cookie = arguments[0] + '; domain=localhost; path=/';",
            json!([b_value]),
        )
        .await;
    fresh
        .goto(&format!("{}request", server.backend_url(&a)))
        .await;
    let text = fresh.js("return document.body.innerText", json!([])).await;
    assert!(
        text.as_str().expect("text").contains("needs access"),
        "{text}"
    );
}

#[tokio::test]
async fn the_backends_pages_see_no_token_in_their_referer() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let (a, url) = token_backend(&server, "alice").await;
    let browser = browser::Browser::start().await;
    browser.goto(&url).await;
    let seen = browser
        .js_async(
            "const r = await fetch('/request'); return await r.json();",
            json!([]),
        )
        .await;
    let referer = seen["headers"]["referer"].as_str().unwrap_or_default();
    assert!(!referer.contains("spawner_token"), "{seen}");
    assert_eq!(seen["headers"]["x-spawner-user"], "alice");
    let _ = a;
}
