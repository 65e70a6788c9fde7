//! Per-user access on Kubernetes (docs/api.md "Access", docs/kubernetes.md "Per-user
//! access"), on a real API server: `spawner api`, `spawner controller`, the sweeper and the
//! router each under its own service account's token, real sidecars and applications
//! (local processes) behind the router. The same behaviours as the embedded server's
//! (tests/access.rs, tests/access_attacks.rs), and a connect URL opened in real Chromium.

mod browser;
mod common;
mod k8s;

use futures_util::{SinkExt, StreamExt};
use k8s::TestNs;
use serde_json::{json, Value};
use spawner_core::State;
use spawner_k8s::controller::pod::SIDECAR_CONTAINER;
use spawner_k8s::model::access::{master_key, BACKEND_ACCESS_KEY_ENV};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const ACCESS_KEY: &str = "5e3c1f0a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e";
const ROUTER_KEY: &str = "the-router-key-of-this-test-0123";

/// A GET through `base` with `Host: host` and more headers; no redirects followed.
async fn get(
    base: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut req = client.get(format!("{base}{path}")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("GET");
    let code = r.status().as_u16();
    let headers = r.headers().clone();
    (code, headers, r.text().await.unwrap_or_default())
}

/// The path and query of a URL of `http://router.test`.
fn path_of(url: &str) -> &str {
    url.strip_prefix("http://router.test")
        .expect("a router URL")
}

/// `name=value` of a `Set-Cookie`.
fn cookie_of(headers: &reqwest::header::HeaderMap) -> String {
    let set = headers["set-cookie"].to_str().expect("text");
    set.split(';').next().expect("a pair").to_string()
}

async fn spawn_token_backend(api: &k8s::ApiProc, user: &str) -> (String, String) {
    let (code, body) = api
        .post(
            "/v1/backends",
            json!({"executable": {"image": "spawner:test"},
                   "access": {"user": user, "user_data": {"name": "Zoë"}}}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let url = body["connect_url"]
        .as_str()
        .expect("connect_url")
        .to_string();
    assert!(
        url.starts_with(&format!("http://router.test/p/{id}/?spawner_token=sat1.")),
        "{url}"
    );
    (id, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_backends_admit_their_users_only_through_router_and_sidecar() {
    let ns = TestNs::new("access").await;
    let env = [
        ("SPAWNER_ROUTER_KEY", ROUTER_KEY),
        ("SPAWNER_ACCESS_KEY", ACCESS_KEY),
    ];
    let mut controller = ns.controller(&[], &env);
    let _sweeper = ns.sweeper();
    let api = ns.api_env("api-token-0123456789abcdef", &[], &[env[1]]);
    let (mut router, base) = ns.router_env(&["--domain", "apps.test"], &env);

    // Bad input names the field; an open backend has no connect URL.
    let (code, body) = api
        .post(
            "/v1/backends",
            json!({"executable": {"image": "spawner:test"}, "access": {"mode": "token"}}),
        )
        .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (400, Some("invalid_field")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("access.user"),
        "{body}"
    );

    let (b1, connect1) = spawn_token_backend(&api, "alice").await;
    let (b2, connect2) = spawn_token_backend(&api, "alice").await;
    let (code, open) = api
        .post(
            "/v1/backends",
            json!({"executable": {"image": "spawner:test"}}),
        )
        .await;
    assert_eq!(code, 201);
    let open_id = open["id"].as_str().expect("id");
    let (code, body) = api
        .post(
            &format!("/v1/backends/{open_id}/connect"),
            json!({"user": "bob"}),
        )
        .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (409, Some("open_access")),
        "{body}"
    );

    // The controller gave each token-mode sidecar its own backend's key, the app none.
    let pod = ns.pod(&b1).await;
    let master = master_key(ACCESS_KEY).expect("key");
    let want = spawner_k8s::model::access::backend_key_text(&master, &b1);
    assert!(k8s::container_env(&pod, SIDECAR_CONTAINER)
        .contains(&(BACKEND_ACCESS_KEY_ENV.to_string(), want)));
    assert!(!k8s::container_env(&pod, "app")
        .iter()
        .any(|(k, v)| k.contains("ACCESS") || v.contains(ACCESS_KEY)));
    let ip1 = ns.run_pod(&b1).await;
    ns.run_pod(&b2).await;
    ns.wait_state(&b1, State::Ready).await;
    ns.wait_state(&b2, State::Ready).await;

    // The grant is in the object, the token is not.
    let obj = ns.slabs().get(&b1).await.expect("object");
    let text = serde_json::to_string(&obj.spec).expect("json");
    assert!(
        text.contains("\"user\":\"alice\"") && !text.contains("sat1."),
        "{text}"
    );
    let generation = obj.spec.access.as_ref().expect("access").grants[0].generation;

    // No cookie: 401.
    let host = "router.test";
    let (code, _, body) = get(&base, host, &format!("/p/{b1}/request"), &[]).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("access_required"), "{body}");

    // The connect URL: a 303 to the URL without the token, with a cookie for the backend.
    let (code, headers, _) = get(&base, host, path_of(&connect1), &[]).await;
    assert_eq!(code, 303, "{headers:?}");
    assert_eq!(headers["location"], format!("/p/{b1}/"));
    assert_eq!(headers["cache-control"], "no-store");
    let set = headers["set-cookie"].to_str().expect("text");
    assert!(
        set.contains(&format!("Path=/p/{b1}/")) && set.contains("HttpOnly"),
        "{set}"
    );
    let cookie1 = cookie_of(&headers);
    // Reused: refused (single use).
    assert_eq!(get(&base, host, path_of(&connect1), &[]).await.0, 401);

    // The cookie admits; the application gets the user from the grant, never the client's.
    let forged = [
        ("cookie", cookie1.as_str()),
        ("x-spawner-user", "mallory"),
        ("x-spawner-user-data", "{\"admin\":true}"),
    ];
    let (code, _, body) = get(&base, host, &format!("/p/{b1}/request"), &forged).await;
    assert_eq!(code, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(seen["headers"]["x-spawner-user"], "alice", "{seen}");
    assert_eq!(
        seen["headers"]["x-spawner-user-data"], "{\"name\":\"Zo\\u00eb\"}",
        "{seen}"
    );
    assert!(
        seen["headers"].get("cookie").is_none(),
        "the access cookie is not passed: {seen}"
    );

    // b2's cookie, b2's token, forged and expired tokens: refused on b1.
    let (_, h2, _) = get(&base, host, path_of(&connect2), &[]).await;
    let cookie2 = cookie_of(&h2);
    let on_b1 = |p: &str| format!("/p/{b1}/{p}");
    assert_eq!(
        get(&base, host, &on_b1("request"), &[("cookie", &cookie2)])
            .await
            .0,
        401
    );
    let key1 = master.backend_key(&b1);
    let expired = key1
        .mint_token(
            "alice",
            generation,
            spawner_core::time::now_millis() / 1000 - 5,
            true,
        )
        .expect("token");
    let other = master
        .backend_key(&b2)
        .mint_token("alice", generation, i64::MAX, true)
        .expect("token");
    let good = key1
        .mint_token("alice", generation, i64::MAX, true)
        .expect("token");
    // The last character changed (to one it is not: an unchanged token would be good).
    let last = if good.ends_with('A') { "B" } else { "A" };
    let forged_sig = format!("{}{last}", &good[..good.len() - 1]);
    for (what, token) in [
        ("expired", &expired),
        ("other backend's", &other),
        ("forged", &forged_sig),
    ] {
        let (code, _, _) = get(&base, host, &on_b1(&format!("?spawner_token={token}")), &[]).await;
        assert_eq!(code, 401, "{what} token");
        let bearer = format!("Bearer {token}");
        let (code, _, _) = get(
            &base,
            host,
            &on_b1("request"),
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(code, 401, "{what} bearer token");
    }
    // A bearer connect token of a standing grant admits.
    let bearer = format!("Bearer {good}");
    let (code, _, body) = get(
        &base,
        host,
        &on_b1("request"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(code, 200, "{body}");

    // Straight to the sidecar (another Pod bypassing the router): nothing, b2's cookie or a
    // forged identity are refused; b1's cookie admits, as its user.
    let sidecar = format!("http://{ip1}:{}", ns.sidecar_port);
    for (what, headers) in [
        ("nothing", vec![]),
        ("a forged identity", vec![("x-spawner-user", "alice")]),
        ("b2's cookie", vec![("cookie", cookie2.as_str())]),
    ] {
        let (code, _, body) = get(&sidecar, host, "/request", &headers).await;
        assert_eq!(code, 401, "{what}: {body}");
    }
    let (code, _, body) = get(&sidecar, host, "/request", &[("cookie", &cookie1)]).await;
    assert_eq!(code, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(seen["headers"]["x-spawner-user"], "alice", "{seen}");

    // The list; a second device of alice keeps her generation (her first cookie stays good).
    let list = api.get_json(&format!("/v1/backends/{b1}/access")).await;
    assert_eq!(list["mode"], "token");
    assert_eq!(list["users"][0]["user"], "alice");
    assert_eq!(list["users"][0]["user_data"], json!({"name": "Zoë"}));
    let (code, again) = api
        .post(
            &format!("/v1/backends/{b1}/connect"),
            json!({"user": "alice"}),
        )
        .await;
    assert_eq!(code, 200, "{again}");
    let (code, bob) = api
        .post(
            &format!("/v1/backends/{b1}/connect"),
            json!({"user": "bob", "ttl_seconds": 30}),
        )
        .await;
    assert_eq!(code, 200, "{bob}");
    let (code, h, _) = get(
        &base,
        host,
        path_of(bob["connect_url"].as_str().expect("url")),
        &[],
    )
    .await;
    assert_eq!(
        code, 303,
        "a fresh grant is exchanged at once (the router waits for its watch)"
    );
    let bob_cookie = cookie_of(&h);

    // Revocation: alice's WebSocket through the router closes with 1008, bob's stays.
    let ws_url = format!("ws{}/p/{b1}/ws", base.trim_start_matches("http"));
    let open_ws = |cookie: String| {
        let url = ws_url.clone();
        async move {
            let mut req = url.into_client_request().expect("request");
            req.headers_mut()
                .insert("cookie", cookie.parse().expect("value"));
            req.headers_mut()
                .insert("host", "router.test".parse().expect("value"));
            let (mut ws, _) = tokio_tungstenite::connect_async(req)
                .await
                .expect("WebSocket");
            ws.send(Message::Text("hi".into())).await.expect("send");
            loop {
                let m = ws.next().await.expect("a message").expect("ok");
                if m == Message::Text("echo: hi".into()) {
                    break;
                }
            }
            ws
        }
    };
    let mut alice_ws = open_ws(cookie1.clone()).await;
    let mut bob_ws = open_ws(bob_cookie.clone()).await;
    let revoked_at = Instant::now();
    let r = api
        .http()
        .delete(format!("{}/v1/backends/{b1}/access/alice", api.url))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 204);
    let answered = revoked_at.elapsed();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match alice_ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the revoked WebSocket was closed");
    let took = revoked_at.elapsed();
    println!(
        "revocation: DELETE answered in {} ms; WebSocket closed (1008) {} ms after the DELETE was sent",
        answered.as_millis(),
        took.as_millis()
    );
    assert_eq!(closed, Some(CloseCode::Policy));
    // Under load the watch may lag; the bound of the issue (1 s) is printed above.
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        get(&base, host, &on_b1("request"), &[("cookie", &cookie1)])
            .await
            .0,
        401
    );
    bob_ws
        .send(Message::Text("still".into()))
        .await
        .expect("bob's stays open");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = bob_ws.next().await.expect("a message").expect("ok");
        if m == Message::Text("echo: still".into()) {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    let (code, _) = api.get(&format!("/v1/backends/{b1}/access")).await;
    assert_eq!(code, 200);

    // Terminating the backend revokes everyone.
    let (code, _) = api
        .post(&format!("/v1/backends/{b1}/terminate"), json!({}))
        .await;
    assert_eq!(code, 202);
    let deadline = Instant::now() + k8s::PATIENCE;
    loop {
        let (code, _, _) = get(&base, host, &on_b1("request"), &[("cookie", &bob_cookie)]).await;
        if code != 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob kept access after the terminate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(bob_ws);
    assert!(router.stop().success(), "{}", router.log_text());
    assert!(controller.stop().success(), "{}", controller.log_text());
    assert!(
        !api.proc.log_text().contains("forbidden"),
        "{}",
        api.proc.log_text()
    );
}

/// Issue 26 in real Chromium, through the router serving backends by host
/// (`{id}.localhost:PORT`, which Chromium resolves to loopback): the connect URL opens the
/// backend, as its user, and leaves no token in the address bar or the history; the page
/// cannot read the HttpOnly cookie, its own requests are admitted by it; the connect URL
/// opened again in another browser is refused (single use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_url_through_the_router_opens_the_backend_in_a_browser_and_leaves_no_token_behind(
) {
    if !browser::available() {
        return;
    }
    let ns = TestNs::new("browser").await;
    let env = [
        ("SPAWNER_ROUTER_KEY", ROUTER_KEY),
        ("SPAWNER_ACCESS_KEY", ACCESS_KEY),
    ];
    // The router first: its port is part of the backends' origins. It takes the domain
    // without the port (it routes by the Host's name); the API and the controller put the
    // domain, port included, into the URLs they make.
    let (mut router, base) = ns.router_env(&["--domain", "localhost"], &env);
    let port = base.rsplit(':').next().expect("a port");
    let domain = format!("localhost:{port}");
    let mut controller = ns.controller(&["--domain", &domain], &env);
    let _sweeper = ns.sweeper();
    let api = ns.api_env(
        "api-token-0123456789abcdef",
        &["--domain", &domain],
        &[env[1]],
    );
    let (code, body) = api
        .post(
            "/v1/backends",
            json!({"executable": {"image": "spawner:test"}, "access": {"user": "alice"}}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let url = body["connect_url"]
        .as_str()
        .expect("connect_url")
        .to_string();
    let origin = format!("http://{id}.{domain}");
    assert!(
        url.starts_with(&format!("{origin}/?spawner_token=sat1.")),
        "{url}"
    );
    ns.run_pod(&id).await;
    ns.wait_state(&id, State::Ready).await;

    let b = browser::Browser::start().await;
    b.goto(&format!("{url}#top")).await;
    let href = b.js("return location.href", json!([])).await;
    assert_eq!(href, format!("{origin}/#top"));
    // The page is the backend's (the example app's); no entry of the history holds the token.
    let title = b.js("return document.title", json!([])).await;
    assert_eq!(title, "Spawner example");
    let heading = b.text("h1").await;
    assert_eq!(heading, "A session-lived backend");
    let length = b.js("return history.length", json!([])).await;
    assert!(length.as_u64().expect("n") <= 2, "{length}");
    b.js("history.back()", json!([])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = b.js("return location.href", json!([])).await;
    assert!(
        !back.as_str().expect("href").contains("spawner_token"),
        "{back}"
    );

    // What the backend received: no token, the user, no access cookie; and the cookie is
    // HttpOnly (the page cannot read it).
    b.goto(&format!("{origin}/request")).await;
    let text = b.js("return document.body.innerText", json!([])).await;
    let text = text.as_str().expect("text");
    assert!(
        !text.contains("spawner_token") && !text.contains("sat1."),
        "{text}"
    );
    let seen: Value = serde_json::from_str(text).expect("JSON");
    assert_eq!(seen["uri"], "/request");
    assert_eq!(seen["headers"]["x-spawner-user"], "alice", "{seen}");
    assert!(seen["headers"].get("cookie").is_none(), "{seen}");
    let cookies = b.js("return document.cookie", json!([])).await;
    assert_eq!(cookies, "");

    // The page's own requests are admitted by the cookie: a fetch, a WebSocket.
    let fetched = b
        .js_async(
            "const r = await fetch('/request?from=page');
             return {status: r.status, body: await r.json()};",
            json!([]),
        )
        .await;
    assert_eq!(fetched["status"], 200, "{fetched}");
    assert_eq!(fetched["body"]["uri"], "/request?from=page", "{fetched}");
    assert_eq!(
        fetched["body"]["headers"]["x-spawner-user"], "alice",
        "{fetched}"
    );
    let msg = b
        .js_async(
            "return await new Promise((done) => {
                 const ws = new WebSocket(location.origin.replace('http', 'ws') + '/ws');
                 ws.onopen = () => ws.send('hi');
                 ws.onmessage = (e) => { if (e.data === 'echo: hi') { done(e.data); ws.close(); } };
                 ws.onerror = () => done('error');
             });",
            json!([]),
        )
        .await;
    assert_eq!(msg, "echo: hi");
    drop(b);

    // The same connect URL in another browser (no cookie): refused, single use.
    let other = browser::Browser::start().await;
    other.goto(&url).await;
    let status = other
        .js(
            "return performance.getEntriesByType('navigation')[0].responseStatus",
            json!([]),
        )
        .await;
    assert_eq!(status, 401);
    let title = other.js("return document.title", json!([])).await;
    assert_eq!(title, "Access needed");
    // Nor does the backend's origin admit that browser without a cookie.
    other.goto(&format!("{origin}/")).await;
    let title = other.js("return document.title", json!([])).await;
    assert_eq!(title, "Access needed");
    drop(other);

    assert!(router.stop().success(), "{}", router.log_text());
    assert!(controller.stop().success(), "{}", controller.log_text());
    k8s::assert_no_forbidden(&[&api.proc]);
}

/// Without an access key, a token-mode spawn is refused, naming what to configure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_access_key_token_spawns_are_refused() {
    let ns = TestNs::new("noaccess").await;
    let api = ns.api("api-token-0123456789abcdef");
    let (code, body) = api
        .post(
            "/v1/backends",
            json!({"executable": {"image": "spawner:test"}, "access": {"user": "alice"}}),
        )
        .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (501, Some("access_not_configured")),
        "{body}"
    );
    assert!(body["message"]
        .as_str()
        .expect("message")
        .contains("SPAWNER_ACCESS_KEY"));
    let list = api.get_json("/v1/backends").await;
    assert_eq!(list["backends"], json!([]), "nothing was created");
}
