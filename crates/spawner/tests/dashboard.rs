//! The dashboard in a real browser (headless Chromium) against a real `spawner serve`:
//! spawn from the form, watch it become Ready without a reload, see a WebSocket counted,
//! terminate it, see it end; and the token asked once and kept out of URLs.
//!
//! With SPAWNER_SCREENSHOTS=DIR the first test also writes the screenshots of docs/.

mod browser;
mod common;

use browser::Browser;
use common::*;
use serde_json::json;
use spawner_core::State;

#[tokio::test]
async fn spawn_from_the_form_follow_it_live_and_terminate_it() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let b = Browser::start().await;
    b.goto(&server.login_link().await).await;
    b.wait_text("#list-count", "0 shown of 0").await;
    // Set in the page: still there at the end means the page was never reloaded.
    b.js("window.__sameload = true; return true;", json!([]))
        .await;

    let screenshots = std::env::var_os("SPAWNER_SCREENSHOTS");
    if screenshots.is_some() {
        // A fuller list for the pictures.
        for (key, owner) in [("doc-7", "user-3"), ("doc-12", "user-9")] {
            let mut spec = example_app();
            spec.key = Some(key.into());
            spec.labels.insert("owner".into(), owner.into());
            server.client().spawn(&spec).await.expect("spawn");
        }
        let (failing, _) = server
            .client()
            .spawn(&shell("echo starting; exit 3"))
            .await
            .expect("spawn");
        wait_state(&server.client(), &failing.id, State::Failed).await;
    }

    b.click("#nav-spawn").await;
    b.type_into("#spawn-command", &format!("'{SPAWNER}' example-app"))
        .await;
    b.type_into("#spawn-key", "doc-42").await;
    b.type_into("#spawn-labels", "owner=user-7").await;
    b.type_into("#spawn-grace", "120").await;
    b.click("#spawn-submit").await;

    // The form leads to the new backend's page, which follows it to Ready.
    let id = b
        .wait_for(
            "the backend's page",
            "const m = location.hash.match(/^#\\/backends\\/(\\w+)$/); return m ? m[1] : null;",
            json!([]),
        )
        .await
        .as_str()
        .expect("id")
        .to_string();
    b.wait_text("#b-state", "Ready").await;
    let timeline = b.text("#b-event-rows").await;
    let timeline = timeline.as_str().unwrap_or_default();
    for state in ["Submitted", "Constructed", "Running", "Ready"] {
        assert!(timeline.contains(state), "timeline: {timeline}");
    }
    let record = server.client().get(&id).await.expect("record");
    assert_eq!(record.key.as_deref(), Some("doc-42"));
    assert_eq!(record.spec.grace_period_seconds, 120);
    assert_eq!(
        record.spec.labels.get("owner").map(String::as_str),
        Some("user-7")
    );
    assert_eq!(
        b.js("return document.getElementById('b-url').href;", json!([]))
            .await,
        record.url
    );
    // Its logs follow.
    b.wait_for(
        "the backend's logs",
        "return document.getElementById('b-logs').textContent.includes('example-app listening');",
        json!([]),
    )
    .await;

    // A WebSocket to the backend: the page counts it.
    b.wait_text("#b-conns", "0").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&format!("{}ws", record.url)))
        .await
        .expect("websocket");
    b.wait_text("#b-conns", "1").await;

    // The list shows it, live, with its label and connection.
    b.click("#nav-list").await;
    let row = format!("div.row[data-id='{id}']");
    b.wait_text(&format!("{row} .state .state"), "Ready").await;
    b.wait_text(&format!("{row} .conns"), "1").await;
    assert_eq!(b.text(&format!("{row} .key")).await, "doc-42");
    assert_eq!(b.text(&format!("{row} .labels")).await, "owner=user-7");
    if let Some(dir) = &screenshots {
        // With the failed one and its reason.
        b.click("#filter-ended").await;
        b.wait_text("#list-count", "4 shown of 4").await;
        std::fs::write(
            std::path::Path::new(dir).join("dashboard-list.png"),
            b.screenshot().await,
        )
        .expect("screenshot");
        b.click("#filter-ended").await;
    }

    b.click(&format!("{row} a")).await;
    b.wait_text("#b-conns", "1").await;
    if let Some(dir) = &screenshots {
        b.wait_for(
            "the timeline and the logs",
            "return document.getElementById('b-event-rows').textContent.includes('Ready') && document.getElementById('b-logs').textContent.includes('listening');",
            json!([]),
        )
        .await;
        std::fs::write(
            std::path::Path::new(dir).join("dashboard-backend.png"),
            b.screenshot().await,
        )
        .expect("screenshot");
    }
    b.click("#b-terminate").await;
    b.wait_text("#b-state", "Terminated").await;
    assert_eq!(
        server.client().status(&id).await.expect("status").state,
        State::Terminated
    );
    let _ = ws.close(None).await;
    wait_gone(&id).await;

    // Ended backends are hidden from the list unless asked for.
    b.click("#nav-list").await;
    b.wait_for(
        "the ended backend hidden",
        "const r = document.querySelector(arguments[0]); return !!r && r.hidden;",
        json!([row]),
    )
    .await;
    b.click("#filter-ended").await;
    b.wait_for(
        "the ended backend shown",
        "const r = document.querySelector(arguments[0]); return !!r && !r.hidden && r.dataset.state === 'Terminated';",
        json!([row]),
    )
    .await;
    // A state filter shows only that state.
    b.js(
        "const s = document.getElementById('filter-state'); s.value = 'Ready'; s.dispatchEvent(new Event('change')); return true;",
        json!([]),
    )
    .await;
    b.wait_for(
        "the Terminated backend filtered out",
        "return document.querySelector(arguments[0]).hidden;",
        json!([row]),
    )
    .await;
    assert_eq!(
        b.js("return window.__sameload === true;", json!([])).await,
        true,
        "the page was reloaded"
    );
}

/// The link `spawner serve` and `spawner dashboard` print logs a tab in once: the code
/// leaves the address at once, and the same link opens nothing a second time.
#[tokio::test]
async fn a_login_link_logs_one_tab_in_once_and_leaves_no_code_behind() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let b = Browser::start().await;
    let link = server.login_link().await;
    b.goto(&link).await;
    b.wait_text("#list-count", "0 shown of 0").await;
    let href = b.js("return location.href;", json!([])).await;
    assert_eq!(
        href,
        json!(format!("{}/#/", server.url())),
        "the code is gone"
    );
    let token = b
        .js("return sessionStorage.getItem('spawner-token');", json!([]))
        .await;
    assert_eq!(token, json!(server.token.clone()));

    // Forgotten, then the same link again: refused, and the form says what to do.
    b.click("#logout").await;
    b.goto(&link).await;
    b.wait_for(
        "the token form saying the link is spent",
        "return !document.getElementById('login').hidden \
            && document.getElementById('login-error').textContent.includes('spawner dashboard');",
        json!([]),
    )
    .await;
    let token = b
        .js("return sessionStorage.getItem('spawner-token');", json!([]))
        .await;
    assert_eq!(token, json!(null));

    // A fresh link in the same tab answers the prompt that is up.
    b.goto(&server.login_link().await).await;
    b.wait_text("#list-count", "0 shown of 0").await;
    let token = b
        .js("return sessionStorage.getItem('spawner-token');", json!([]))
        .await;
    assert_eq!(token, json!(server.token.clone()));
}

#[tokio::test]
async fn the_token_is_asked_once_kept_in_the_tab_and_never_put_in_a_url() {
    if !browser::available() {
        return;
    }
    const TOKEN: &str = "dashboard-token-0123456789";
    let server = TestServer::start_with(&[], Some(TOKEN));
    let b = Browser::start().await;
    b.goto(&format!("{}/", server.url())).await;
    b.wait_for(
        "the token form",
        "return !document.getElementById('login').hidden;",
        json!([]),
    )
    .await;
    b.type_into("#login-token", "wrong-token-wrong-token").await;
    b.click("#login-submit").await;
    b.wait_text("#login-error", "That token was refused; try again.")
        .await;
    b.type_into("#login-token", TOKEN).await;
    b.click("#login-submit").await;
    b.wait_text("#list-count", "0 shown of 0").await;

    // A backend spawned by someone else appears without a reload.
    let (resp, _) = server.client().spawn(&example_app()).await.expect("spawn");
    b.wait_text(
        &format!("div.row[data-id='{}'] .state .state", resp.id),
        "Ready",
    )
    .await;
    let kept = b
        .js("return sessionStorage.getItem('spawner-token');", json!([]))
        .await;
    assert_eq!(kept, TOKEN);
    let urls = b
        .js(
            "return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name)).join(' ');",
            json!([]),
        )
        .await;
    assert!(
        !urls.as_str().unwrap_or_default().contains(TOKEN),
        "the token is in a URL: {urls}"
    );
    server
        .client()
        .terminate(&resp.id, true)
        .await
        .expect("terminate");
    b.wait_for(
        "the backend ended",
        "const r = document.querySelector(arguments[0]); return !!r && r.dataset.state === 'Terminated';",
        json!([format!("div.row[data-id='{}']", resp.id)]),
    )
    .await;
}

#[tokio::test]
async fn the_pools_view_shows_each_pool_s_counts_live() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let http = server.api();
    let created = http
        .post(format!("{}/v1/pools", server.url()))
        .json(&json!({
            "name": "editors",
            "template": {"executable": {"command": [SPAWNER, "example-app"]}},
            "min_ready": 2,
            "max": 4,
        }))
        .send()
        .await
        .expect("create the pool");
    assert_eq!(created.status(), 201);
    let b = Browser::start().await;
    b.goto(&server.login_link().await).await;
    b.click("#nav-pools").await;
    let cells = "return [...document.querySelectorAll('#pool-rows [data-pool=\"editors\"] span')].map(s => s.textContent).join(' ');";
    // Name, ready, starting, claimed, min ready, max, claims, cold claims.
    b.wait_for(
        "the pool with 2 Ready",
        &format!(
            "{} return t === 'editors 2 0 0 2 4 0 0' ? t : null;",
            cells.replace("return ", "const t = ")
        ),
        json!([]),
    )
    .await;
    let claimed = http
        .post(format!("{}/v1/backends", server.url()))
        .json(&json!({"pool": "editors", "key": "k"}))
        .send()
        .await
        .expect("claim");
    assert_eq!(claimed.status(), 201);
    // Without a reload: one claimed, refilled to 2 Ready, one claim counted.
    b.wait_for(
        "the claim and the refill",
        &format!(
            "{} return t === 'editors 2 0 1 2 4 1 0' ? t : null;",
            cells.replace("return ", "const t = ")
        ),
        json!([]),
    )
    .await;
    assert!(b.text("#pools-empty").await.is_string());
    assert_eq!(b.text("#pools-error").await, json!(""));
}

/// The list stream's snapshot is the list's first page: the page reads the others, and
/// the pools view reads every page of the pools.
#[tokio::test]
async fn the_list_and_the_pools_view_read_every_page() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let client = server.client();
    for _ in 0..130 {
        let spec = spawner_core::BackendSpec::from_command(vec!["/nonexistent/program".into()]);
        client.spawn(&spec).await.expect("spawn");
    }
    // The control token: pools are control routes.
    let http = server.api();
    for n in 0..105 {
        let created = http
            .post(format!("{}/v1/pools", server.url()))
            .json(
                &json!({"name": format!("p{n:03}"), "min_ready": 0, "max": 1,
                          "template": {"executable": {"command": ["true"]}}}),
            )
            .send()
            .await
            .expect("create a pool");
        assert_eq!(created.status(), 201);
    }
    let b = Browser::start().await;
    // Logged in by a login link: the server has a token.
    b.goto(&server.login_link().await).await;
    // Ended backends are hidden by default; the count says how many the page holds.
    b.wait_text("#list-count", "0 shown of 130").await;
    b.click("#nav-pools").await;
    b.wait_for(
        "the last pool",
        "return document.querySelectorAll('#pool-rows [data-pool]').length === 105 || null;",
        json!([]),
    )
    .await;
}

#[tokio::test]
async fn the_backend_page_shows_who_has_access_shares_and_revokes() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let mut spec = example_app();
    spec.access = Some(spawner_core::access::Access {
        mode: spawner_core::access::AccessMode::Token,
        user: Some("alice".into()),
        ..Default::default()
    });
    let client = server.client();
    let (resp, _) = client.spawn(&spec).await.expect("spawn");
    let id = resp.id;
    wait_state(&client, &id, spawner_core::State::Ready).await;

    let b = Browser::start().await;
    b.goto(&server.login_link().await).await;
    b.wait_text("#list-count", "1 shown of 1").await;
    b.goto(&format!("{}/#/backends/{id}", server.url())).await;
    b.wait_text("#b-access-mode", "(token)").await;
    b.wait_text("#b-access-rows tr[data-user=alice] .user", "alice")
        .await;

    // Share with bob: a connect URL that works.
    b.type_into("#b-share-user", "bob").await;
    b.click("#b-share button").await;
    b.wait_text("#b-access-rows tr[data-user=bob] .user", "bob")
        .await;
    let link = b
        .wait_for(
            "the share link",
            "const l = document.getElementById('b-share-link'); return !l.hidden && l.value;",
            json!([]),
        )
        .await;
    let link = link.as_str().expect("a link").to_string();
    assert!(link.starts_with(&server.backend_url(&id)), "{link}");
    let exchanged = server.http().get(&link).send().await.expect("GET");
    assert_eq!(exchanged.status(), 303);
    let cookie = exchanged.headers()["set-cookie"]
        .to_str()
        .expect("text")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let ok = server
        .http()
        .get(server.backend_url(&id))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET");
    assert_eq!(ok.status(), 200);

    // Revoke bob: gone from the list, his cookie refused.
    b.click("#b-access-rows tr[data-user=bob] button.revoke")
        .await;
    b.wait_for(
        "bob's row to go",
        "return !document.querySelector('#b-access-rows tr[data-user=bob]') \
            && !!document.querySelector('#b-access-rows tr[data-user=alice]');",
        json!([]),
    )
    .await;
    let refused = server
        .http()
        .get(server.backend_url(&id))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status(), 401);
}
