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
    b.type_into("#spawn-idle", "900").await;
    b.type_into("#spawn-lifetime", "7200").await;
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
    assert_eq!(record.spec.idle_timeout_seconds, Some(900));
    assert_eq!(record.spec.lifetime_limit_seconds, Some(7200));
    assert_eq!(record.spec.startup_timeout_seconds, 300);
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
    b.click("#b-terminate").await;
    b.click("#confirm-ok").await;
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

/// With SPAWNER_SCREENSHOTS=DIR, the viewport as DIR/`name` (the pictures of docs/).
async fn screenshot(b: &Browser, name: &str) {
    if let Some(dir) = std::env::var_os("SPAWNER_SCREENSHOTS") {
        std::fs::write(std::path::Path::new(&dir).join(name), b.screenshot().await)
            .expect("screenshot");
    }
}

/// The ids of the list's rows on view, top to bottom.
const ROW_IDS: &str = "return [...document.querySelectorAll('#backend-rows .row')].filter(r => !r.hidden).map(r => r.dataset.id);";

async fn row_ids(b: &Browser) -> Vec<String> {
    serde_json::from_value(b.js(ROW_IDS, json!([])).await).expect("ids")
}

/// Waits until the rows on view are `want`, in that order.
async fn wait_rows(b: &Browser, want: &[&String]) {
    b.wait_for(
        &format!("the rows {want:?}"),
        &format!(
            "const ids = (() => {{ {ROW_IDS} }})(); return JSON.stringify(ids) === arguments[0];"
        ),
        json!([serde_json::to_string(want).expect("json")]),
    )
    .await;
}

async fn spawn_keyed(server: &TestServer, key: &str) -> String {
    let mut spec = example_app();
    spec.key = Some(key.into());
    let (resp, _) = server.client().spawn(&spec).await.expect("spawn");
    wait_state(&server.client(), &resp.id, State::Ready).await;
    resp.id
}

#[tokio::test]
async fn the_list_sorts_searches_and_stops_a_row_only_after_asking() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    // Spawned one after the other: b, then a, then c.
    let b_id = spawn_keyed(&server, "doc-b").await;
    let a_id = spawn_keyed(&server, "doc-a").await;
    let c_id = spawn_keyed(&server, "doc-c").await;
    let b = Browser::start().await;
    b.goto(&server.login_link().await).await;
    b.wait_text("#list-count", "3 shown of 3").await;

    // The newest first, then by a column head's click, and back the other way.
    wait_rows(&b, &[&c_id, &a_id, &b_id]).await;
    b.click("#backends .head [data-sort=key]").await;
    wait_rows(&b, &[&a_id, &b_id, &c_id]).await;
    b.click("#backends .head [data-sort=key]").await;
    wait_rows(&b, &[&c_id, &b_id, &a_id]).await;
    b.click("#backends .head [data-sort=id]").await;
    let mut by_id = vec![&a_id, &b_id, &c_id];
    by_id.sort();
    wait_rows(&b, &by_id).await;
    b.click("#backends .head [data-sort=age]").await;
    wait_rows(&b, &[&c_id, &a_id, &b_id]).await;
    b.click("#backends .head [data-sort=age]").await;
    wait_rows(&b, &[&b_id, &a_id, &c_id]).await;
    // The most connections first: a WebSocket to doc-a puts it on top.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(ws_request(&format!("{}ws", server.backend_url(&a_id))))
            .await
            .expect("websocket");
    b.click("#backends .head [data-sort=conns]").await;
    b.wait_text(&format!("div.row[data-id='{a_id}'] .conns"), "1")
        .await;
    assert_eq!(row_ids(&b).await.first(), Some(&a_id));
    // The most recent activity first: doc-a's, since it was just used.
    b.click("#backends .head [data-sort=activity]").await;
    assert_eq!(row_ids(&b).await.first(), Some(&a_id));
    b.click("#backends .head [data-sort=state]").await;
    assert_eq!(row_ids(&b).await.len(), 3);
    let _ = ws.close(None).await;

    // Search by key, by a piece of an id, together with the state filter.
    b.type_into("#filter-search", "doc-c").await;
    b.wait_text("#list-count", "1 shown of 3").await;
    assert_eq!(row_ids(&b).await, vec![c_id.clone()]);
    b.type_into("#filter-search", &b_id[3..12]).await;
    b.wait_text("#list-count", "1 shown of 3").await;
    assert_eq!(row_ids(&b).await, vec![b_id.clone()]);
    b.js(
        "const s = document.getElementById('filter-state'); s.value = 'Failed'; s.dispatchEvent(new Event('change')); return true;",
        json!([]),
    )
    .await;
    b.wait_text("#list-count", "0 shown of 3").await;
    b.js(
        "const s = document.getElementById('filter-state'); s.value = ''; s.dispatchEvent(new Event('change')); return true;",
        json!([]),
    )
    .await;
    b.type_into("#filter-search", "DOC-").await;
    b.wait_text("#list-count", "3 shown of 3").await;
    b.type_into("#filter-search", "").await;

    // Each row opens its backend...
    let record = server.client().get(&b_id).await.expect("record");
    let row = format!("div.row[data-id='{b_id}']");
    assert_eq!(
        b.js(
            "return document.querySelector(arguments[0] + ' a.open').href;",
            json!([row])
        )
        .await,
        json!(record.url)
    );
    // ... and stops it, once asked: cancelled, nothing happens.
    b.click(&format!("{row} button.terminate")).await;
    b.wait_for(
        "the confirmation naming the backend",
        "const d = document.getElementById('confirm'); return d.open && d.textContent.includes(arguments[0]);",
        json!([b_id]),
    )
    .await;
    b.click("#confirm-cancel").await;
    b.wait_for(
        "the confirmation closed",
        "return !document.getElementById('confirm').open;",
        json!([]),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        server.client().status(&b_id).await.expect("status").state,
        State::Ready
    );
    b.click(&format!("{row} button.terminate")).await;
    b.click("#confirm-ok").await;
    wait_state(&server.client(), &b_id, State::Terminated).await;
    // The ended row leaves the list (ended ones are hidden); the others stay Ready.
    b.wait_text("#list-count", "2 shown of 3").await;
    for id in [&a_id, &c_id] {
        assert_eq!(
            server.client().status(id).await.expect("status").state,
            State::Ready
        );
    }

    // The icon the page links to is served.
    let icon = b
        .js_async(
            "const href = document.querySelector('link[rel=icon]').href; \
             const r = await fetch(href); const ico = await fetch('/favicon.ico'); \
             return [r.status, r.headers.get('content-type'), ico.status];",
            json!([]),
        )
        .await;
    assert_eq!(icon, json!([200, "image/svg+xml", 200]));
}

#[tokio::test]
async fn the_list_fits_a_narrow_window_and_a_phone() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let mut spec = example_app();
    spec.key = Some("a-rather-long-document-key-for-a-narrow-screen".into());
    spec.labels.insert("owner".into(), "user-7".into());
    spec.labels
        .insert("team".into(), "research-and-development".into());
    let (first, _) = server.client().spawn(&spec).await.expect("spawn");
    let second = spawn_keyed(&server, "doc-2").await;
    wait_state(&server.client(), &first.id, State::Ready).await;
    let b = Browser::start().await;
    b.goto(&server.login_link().await).await;
    b.wait_text("#list-count", "2 shown of 2").await;
    // The test's usual width (the columns), a small laptop's and a phone's (cards).
    for width in [1100, 780, 390] {
        let inner = b.set_window_size(width, 800).await;
        assert!(
            inner <= u64::from(width),
            "the window is {inner} px wide, not {width}"
        );
        // Laid out again at the new width.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let fits = b
            .js(
                "const s = document.scrollingElement; return [s.scrollWidth, s.clientWidth];",
                json!([]),
            )
            .await;
        assert!(
            fits[0].as_u64() <= fits[1].as_u64(),
            "at {width} px the page scrolls sideways: {fits}"
        );
        for id in [&first.id, &second] {
            // The id and the state are on screen, whole.
            let seen = b
                .js(
                    "const row = document.querySelector(`div.row[data-id='${arguments[0]}']`); \
                     const on = (e) => { const r = e.getBoundingClientRect(); \
                       return r.width > 0 && r.left >= 0 && r.right <= innerWidth && e.scrollWidth <= e.clientWidth + 1; }; \
                     const id = row.querySelector('.id'), st = row.querySelector('.state .state'); \
                     return [on(id), on(st), id.textContent, st.textContent];",
                    json!([id]),
                )
                .await;
            assert_eq!(
                seen,
                json!([true, true, id, "Ready"]),
                "at {width} px, row {id}"
            );
        }
        if width == 390 {
            screenshot(&b, "dashboard-phone.png").await;
        }
    }
    // The other views fit a phone too.
    let created = server
        .api()
        .post(format!("{}/v1/pools", server.url()))
        .json(&json!({
            "name": "a-pool-with-a-rather-long-name-for-a-phone",
            "template": {"executable": {"command": [SPAWNER, "example-app"]}},
            "min_ready": 1,
            "max": 2,
        }))
        .send()
        .await
        .expect("create the pool");
    assert_eq!(created.status(), 201);
    for (hash, shown) in [
        (format!("#/backends/{}", first.id), "#b-terminate"),
        ("#/pools".to_string(), "#pool-rows [data-pool] a"),
        (
            "#/pools/a-pool-with-a-rather-long-name-for-a-phone".to_string(),
            "#p-member-rows tr",
        ),
        ("#/overview".to_string(), "#chart-states svg"),
        ("#/spawn".to_string(), "#spawn-submit"),
    ] {
        b.js("location.hash = arguments[0]; return true;", json!([hash]))
            .await;
        b.wait_for(
            &format!("{shown} in {hash}"),
            "const e = document.querySelector(arguments[0]); return !!e && e.getClientRects().length > 0;",
            json!([shown]),
        )
        .await;
        let fits = b
            .js(
                "const s = document.scrollingElement; return [s.scrollWidth, s.clientWidth];",
                json!([]),
            )
            .await;
        assert!(
            fits[0].as_u64() <= fits[1].as_u64(),
            "at 390 px {hash} scrolls sideways: {fits}"
        );
    }
}

#[tokio::test]
async fn a_backend_page_shows_every_timing_live_and_asks_before_a_stop() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let client = server.client();
    let mut spec = example_app();
    spec.lifetime_limit_seconds = Some(3600);
    spec.idle_timeout_seconds = Some(1800);
    spec.grace_period_seconds = 300;
    let (resp, _) = client.spawn(&spec).await.expect("spawn");
    let id = resp.id;
    wait_state(&client, &id, State::Ready).await;
    client.keepalive(&id, 600).await.expect("keepalive");
    // A client request: last client activity.
    let hit = server
        .http()
        .get(server.backend_url(&id))
        .send()
        .await
        .expect("GET");
    assert_eq!(hit.status(), 200);

    let b = Browser::start().await;
    b.goto(&server.login_link().await).await;
    b.wait_text("#list-count", "1 shown of 1").await;
    b.goto(&format!("{}/#/backends/{id}", server.url())).await;
    b.wait_text("#b-state", "Ready").await;
    b.js("window.__sameload = true; return true;", json!([]))
        .await;
    for (fact, starts) in [
        ("#b-lifetime", "1 h · stops in 59 min"),
        ("#b-idle", "30 min of client silence · due in "),
        ("#b-grace", "5 min without a connection"),
        ("#b-busy", "in 9 min"),
    ] {
        b.wait_for(
            &format!("{fact} starting {starts:?}"),
            "return document.querySelector(arguments[0]).textContent.startsWith(arguments[1]);",
            json!([fact, starts]),
        )
        .await;
    }
    b.wait_for(
        "the last client activity",
        "return / s ago$/.test(document.getElementById('b-client-activity').textContent);",
        json!([]),
    )
    .await;
    // Relative times tick without a reload; the local time is their title, not UTC.
    let created = b.text("#b-created").await;
    assert!(
        created.as_str().unwrap_or_default().ends_with(" s ago"),
        "{created}"
    );
    b.wait_for(
        "the created time to move on",
        "return document.getElementById('b-created').textContent !== arguments[0];",
        json!([created]),
    )
    .await;
    let shown = b
        .js(
            "const t = document.querySelector('#b-created time'); \
             return [t.title, t.getAttribute('datetime'), \
               new Date(Number(t.dataset.at)).toLocaleString(undefined, {year: 'numeric', month: 'short', day: 'numeric', \
               hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short'})];",
            json!([]),
        )
        .await;
    assert_eq!(shown[0], shown[2], "the title is the local time: {shown}");
    // The timeline's times too: the local time of day, the local date and time as title.
    let first_event = b
        .js(
            "const td = document.querySelector('#b-event-rows td.mono'); return [td.textContent, td.title, td.dataset.utc];",
            json!([]),
        )
        .await;
    let utc = first_event[2].as_str().unwrap_or_default();
    assert!(
        utc.ends_with('Z')
            && first_event[0] != first_event[2]
            && !first_event[1].as_str().unwrap_or_default().contains('Z'),
        "{first_event}"
    );
    let title = shown[0].as_str().unwrap_or_default();
    assert!(
        !title.contains('Z') && shown[0] != shown[1],
        "not the raw UTC time: {shown}"
    );

    // Kill and Terminate ask first; cancelled, the backend runs on.
    for button in ["#b-kill", "#b-terminate"] {
        b.click(button).await;
        b.wait_for(
            "the confirmation",
            "const d = document.getElementById('confirm'); return d.open && d.textContent.includes(arguments[0]);",
            json!([id]),
        )
        .await;
        b.click("#confirm-cancel").await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        client.status(&id).await.expect("status").state,
        State::Ready
    );

    // A well-formed unknown id, then a malformed one: a not-found page, and nothing to
    // act with (the page must not act on the backend shown before).
    let unknown = format!("a{}", "b".repeat(25));
    for other in [unknown.as_str(), "unknown"] {
        b.goto(&format!("{}/#/backends/{id}", server.url())).await;
        b.wait_text("#b-state", "Ready").await;
        // The actions appear once the record has loaded (the state may come first, from
        // the status stream).
        b.wait_shown("#b-terminate").await;
        b.js(
            "location.hash = '#/backends/' + arguments[0]; return true;",
            json!([other]),
        )
        .await;
        b.wait_for(
            "the not-found page",
            "return !document.getElementById('view-notfound').hidden;",
            json!([]),
        )
        .await;
        let buttons = b
            .js(
                "return [...document.querySelectorAll('button')].filter(e => e.getClientRects().length && /Terminate|Kill/.test(e.textContent)).length;",
                json!([]),
            )
            .await;
        assert_eq!(buttons, json!(0), "no action on view for {other}");
        assert!(!b.shown("#b-terminate").await);
        assert!(!b.shown("#b-kill").await);
        let text = b.text("#notfound-text").await;
        assert!(text.as_str().unwrap_or_default().contains(other), "{text}");
        assert_eq!(
            client.status(&id).await.expect("status").state,
            State::Ready
        );
    }

    // Back to it: Terminate, confirmed; the state and the stop show without a reload.
    b.goto(&format!("{}/#/backends/{id}", server.url())).await;
    b.wait_text("#b-state", "Ready").await;
    b.js("window.__sameload = true; return true;", json!([]))
        .await;
    b.wait_for(
        "the timeline and the logs",
        "return document.getElementById('b-event-rows').textContent.includes('Ready') && document.getElementById('b-logs').textContent.includes('listening');",
        json!([]),
    )
    .await;
    screenshot(&b, "dashboard-backend.png").await;
    // Every text the state and the action's note take on, in order.
    b.js(
        "window.__seen = []; const watch = (id) => new MutationObserver(() => \
           __seen.push(id + ':' + document.getElementById(id).textContent)) \
           .observe(document.getElementById(id), {childList: true, characterData: true, subtree: true}); \
         watch('b-state'); watch('b-action-result'); return true;",
        json!([]),
    )
    .await;
    b.click("#b-terminate").await;
    b.click("#confirm-ok").await;
    b.wait_text("#b-state", "Terminated").await;
    b.wait_text("#b-action-result", "").await;
    let seen = b.js("return window.__seen;", json!([])).await;
    let seen: Vec<String> = serde_json::from_value(seen).expect("texts");
    let at = |t: &str| seen.iter().position(|s| s == t);
    assert!(
        at("b-state:Terminating").is_some()
            && at("b-state:Terminating") < at("b-state:Terminated")
            && at("b-action-result:terminating…").is_some()
            && seen.last().map(String::as_str) != Some("b-action-result:terminating…"),
        "the stop as the page showed it: {seen:?}"
    );
    let ended = client.get(&id).await.expect("record");
    assert_eq!(ended.state, State::Terminated);
    let exit = ended.exit_code.map_or("–".to_string(), |c| c.to_string());
    b.wait_text("#b-exit", &exit).await;
    assert_eq!(
        b.js(
            "return document.getElementById('b-terminate').disabled && document.getElementById('b-kill').disabled;",
            json!([])
        )
        .await,
        true
    );

    // A backend that ends by itself: state, reason and exit code arrive live.
    let (failing, _) = client
        .spawn(&shell("sleep 3; exit 3"))
        .await
        .expect("spawn");
    b.js(
        "location.hash = '#/backends/' + arguments[0]; return true;",
        json!([failing.id]),
    )
    .await;
    b.wait_text("#b-exit", "–").await;
    b.wait_text("#b-state", "Failed").await;
    b.wait_text("#b-exit", "3").await;
    assert_eq!(
        b.js("return window.__sameload === true;", json!([])).await,
        true,
        "the page was reloaded"
    );
}

#[tokio::test]
async fn pools_are_created_resized_and_deleted_from_the_page_with_their_members() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let client = server.client();
    let b = Browser::start().await;
    b.goto(&server.login_link().await).await;
    b.click("#nav-pools").await;
    b.wait_for(
        "no pools",
        "return !document.getElementById('pools-empty').hidden;",
        json!([]),
    )
    .await;
    b.click("#pool-create-box summary").await;
    b.type_into("#pool-name", "editors").await;
    b.type_into("#pool-min", "2").await;
    b.type_into("#pool-max", "4").await;
    b.type_into("#pool-command", &format!("'{SPAWNER}' example-app"))
        .await;
    b.type_into("#pool-grace", "120").await;
    b.type_into("#pool-idle", "900").await;
    b.type_into("#pool-labels", "app=editor").await;
    b.click("#pool-submit").await;
    b.wait_for(
        "the pool's page",
        "return location.hash === '#/pools/editors';",
        json!([]),
    )
    .await;
    let pool = client.get_pool("editors").await.expect("the pool");
    assert_eq!((pool.min_ready, pool.max), (2, 4));
    let template = &pool.template.spec;
    assert_eq!(template.grace_period_seconds, 120);
    assert_eq!(template.idle_timeout_seconds, Some(900));
    assert_eq!(
        template.labels.get("app").map(String::as_str),
        Some("editor")
    );
    assert_eq!(
        template.executable.command,
        Some(vec![SPAWNER.to_string(), "example-app".to_string()])
    );

    // A backend spawned alike (the template's program and labels) but not by the pool: the
    // records say which are the pool's, and this one is not.
    let mut alike = example_app();
    alike.labels.insert("app".into(), "editor".into());
    let (alike, _) = client.spawn(&alike).await.expect("spawn");
    let alike = alike.id;
    b.wait_for(
        "the look-alike in the list",
        "return !!document.querySelector(`#backend-rows [data-id='${arguments[0]}']`);",
        json!([alike]),
    )
    .await;

    // Its members, as the server lists them: its two Ready backends, each a link.
    b.wait_for(
        "2 Ready",
        "return document.getElementById('p-ready').textContent.startsWith('2 ');",
        json!([]),
    )
    .await;
    let live = || async {
        let mut ids: Vec<String> = client
            .list(&[])
            .await
            .expect("list")
            .into_iter()
            .filter(|r| !r.state.is_terminal() && r.pool.as_deref() == Some("editors"))
            .map(|r| r.id)
            .collect();
        ids.sort();
        ids
    };
    let members = live().await;
    assert_eq!(members.len(), 2);
    assert!(!members.contains(&alike));
    let shown = "return [...document.querySelectorAll('#p-member-rows tr')].map(r => r.dataset.id).sort().join(' ');";
    b.wait_for(
        "the members",
        &format!("const t = (() => {{ {shown} }})(); return t === arguments[0];"),
        json!([members.join(" ")]),
    )
    .await;
    screenshot(&b, "dashboard-pool.png").await;
    // The pools view lists it, its name a link to this page.
    b.click("#nav-pools").await;
    b.click("#pool-rows [data-pool='editors'] a").await;
    b.wait_for(
        "the pool's page again",
        "return location.hash === '#/pools/editors' && document.getElementById('p-members-count').textContent === '(2)';",
        json!([]),
    )
    .await;

    // A claim: the member says by whom.
    let claimed = server
        .api()
        .post(format!("{}/v1/backends", server.url()))
        .json(&json!({"pool": "editors", "key": "user-7"}))
        .send()
        .await
        .expect("claim");
    assert_eq!(claimed.status(), 201);
    let claimed: serde_json::Value = claimed.json().await.expect("json");
    let claimed_id = claimed["id"].as_str().expect("id").to_string();
    b.wait_for(
        "the claimed member",
        "const r = document.querySelector(`#p-member-rows tr[data-id='${arguments[0]}'] .claim`); \
         return !!r && r.textContent.startsWith('claimed by user-7');",
        json!([claimed_id]),
    )
    .await;
    // The list: the claimed one's key with its pool's badge; the look-alike has none.
    b.click("#nav-list").await;
    b.wait_for(
        "the claimed row's key and pool",
        "const r = document.querySelector(`#backend-rows [data-id='${arguments[0]}']`); \
         return !!r && r.querySelector('.key-text').textContent === 'user-7' \
           && !r.querySelector('.pool-badge').hidden && r.querySelector('.pool-badge').textContent === 'pool editors';",
        json!([claimed_id]),
    )
    .await;
    let badge = "return document.querySelector(`#backend-rows [data-id='${arguments[0]}'] .pool-badge`).hidden;";
    assert_eq!(b.js(badge, json!([alike])).await, json!(true));
    b.js("history.back(); return true;", json!([])).await;
    b.wait_for(
        "the pool's page, back",
        "return location.hash === '#/pools/editors' && !!document.querySelector(`#p-member-rows tr[data-id='${arguments[0]}'] a`);",
        json!([claimed_id]),
    )
    .await;
    b.click(&format!("#p-member-rows tr[data-id='{claimed_id}'] a"))
        .await;
    b.wait_text("#b-key", "user-7").await;
    b.wait_text("#b-state", "Ready").await;
    // Its page: the pool (a link to it), when it was claimed, and the claim in its timeline.
    let record = client.get(&claimed_id).await.expect("the record");
    let claimed_at = record.claimed_at.expect("claimed_at");
    b.wait_for(
        "the pool and the claim time",
        "const pool = document.getElementById('b-pool'), at = document.querySelector('#b-claimed time'); \
         return !pool.hidden && !document.getElementById('b-pool-term').hidden \
           && pool.textContent === 'editors' && pool.querySelector('a').getAttribute('href') === '#/pools/editors' \
           && !document.getElementById('b-claimed').hidden && !!at && Number(at.dataset.at) === arguments[0] \
           && at.textContent.endsWith('ago');",
        json!([claimed_at]),
    )
    .await;
    b.wait_for(
        "the claim's event",
        "return [...document.querySelectorAll('#b-event-rows tr')].some(r => \
           r.dataset.state === 'Ready' && r.querySelector('.reason-cell').textContent === 'claimed with key user-7');",
        json!([]),
    )
    .await;
    b.js("history.back(); return true;", json!([])).await;

    // Resize.
    b.wait_for(
        "the resize form",
        "return !document.getElementById('p-resize').hidden && location.hash === '#/pools/editors';",
        json!([]),
    )
    .await;
    b.type_into("#p-min", "1").await;
    b.type_into("#p-max", "3").await;
    b.click("#p-resize-submit").await;
    b.wait_text("#p-result", "resized").await;
    let pool = client.get_pool("editors").await.expect("the pool");
    assert_eq!((pool.min_ready, pool.max), (1, 3));

    // Delete: asked first; cancelled, the pool stays.
    b.click("#p-delete").await;
    b.wait_for(
        "the confirmation",
        "const d = document.getElementById('confirm'); return d.open && d.textContent.includes('editors');",
        json!([]),
    )
    .await;
    b.click("#confirm-cancel").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(client.get_pool("editors").await.is_ok());
    b.click("#p-delete").await;
    b.click("#confirm-ok").await;
    b.wait_for(
        "the pools view saying so",
        "return location.hash === '#/pools' && document.getElementById('pools-result').textContent.startsWith('Deleted pool editors');",
        json!([]),
    )
    .await;
    assert!(client.get_pool("editors").await.is_err());
    // The claimed backend runs on.
    assert_eq!(
        client.status(&claimed_id).await.expect("status").state,
        State::Ready
    );
    // An unknown pool's page says so.
    b.js("location.hash = '#/pools/editors'; return true;", json!([]))
        .await;
    b.wait_for(
        "the not-found page",
        "return !document.getElementById('view-notfound').hidden;",
        json!([]),
    )
    .await;
}

/// The number a chart's readout shows for `series` (its text after the name).
async fn readout(b: &Browser, chart: &str, series: &str) -> String {
    b.js(
        "const v = document.querySelector(`#${arguments[0]} .readout [data-series='${arguments[1]}']`); \
         return v ? v.textContent.slice(arguments[1].length).trim() : null;",
        json!([chart, series]),
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

async fn wait_readout(b: &Browser, chart: &str, series: &str, want: &str) {
    b.wait_for(
        &format!("{chart} {series} = {want}"),
        "const v = document.querySelector(`#${arguments[0]} .readout [data-series='${arguments[1]}']`); \
         return !!v && v.textContent.slice(arguments[1].length).trim() === arguments[2];",
        json!([chart, series, want]),
    )
    .await;
}

#[tokio::test]
async fn the_overview_charts_follow_the_server_s_own_figures() {
    if !browser::available() {
        return;
    }
    let server = TestServer::start();
    let client = server.client();
    let created = server
        .api()
        .post(format!("{}/v1/pools", server.url()))
        .json(&json!({
            "name": "warm",
            "template": {"executable": {"command": [SPAWNER, "example-app"]}},
            "min_ready": 1,
            "max": 2,
        }))
        .send()
        .await
        .expect("create the pool");
    assert_eq!(created.status(), 201);
    let b = Browser::start().await;
    b.goto(&server.login_link().await).await;
    b.click("#nav-overview").await;
    // Whatever the charts draw, the page's policy (default-src 'self') lets it.
    b.js(
        "window.__csp = []; document.addEventListener('securitypolicyviolation', \
         (e) => __csp.push(e.violatedDirective)); return true;",
        json!([]),
    )
    .await;
    wait_readout(&b, "chart-pools", "warm", "1").await;
    wait_readout(&b, "chart-states", "Ready", "1").await;
    wait_readout(&b, "chart-conns", "", "0").await;
    // Nothing spawned since the page opened.
    wait_readout(&b, "chart-spawns", "spawns", "0").await;
    assert!(b
        .text("#chart-latency .readout")
        .await
        .as_str()
        .unwrap_or_default()
        .contains("no backend became Ready"));

    // Three spawns while the page is open, and one swept for idleness (1 s of grace).
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(ready_example(&client, 300).await);
    }
    let swept = ready_example(&client, 1).await;
    wait_state(&client, &swept, State::Swept).await;
    wait_readout(&b, "chart-spawns", "spawns", "4").await;
    wait_readout(&b, "chart-spawns", "sweeps", "1").await;
    wait_readout(&b, "chart-states", "Ready", "4").await;
    let p50 = readout(&b, "chart-latency", "p50").await;
    let p99 = readout(&b, "chart-latency", "p99").await;
    let secs = |t: &str| -> f64 {
        if let Some(ms) = t.strip_suffix(" ms") {
            ms.parse::<f64>().expect("ms") / 1000.0
        } else {
            t.strip_suffix(" s").expect("s").parse().expect("s")
        }
    };
    // Four spawns of the example app: Ready within a few seconds each, as the server saw.
    let (p50, p99) = (secs(&p50), secs(&p99));
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= 10.0,
        "p50 {p50}, p99 {p99}"
    );

    // A WebSocket: a live connection.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(ws_request(&format!("{}ws", server.backend_url(&ids[0]))))
            .await
            .expect("websocket");
    wait_readout(&b, "chart-conns", "", "1").await;
    // Every chart has data: none says the server does not report it.
    assert_eq!(
        b.js(
            "return document.querySelectorAll('.chart .not-reported').length;",
            json!([])
        )
        .await,
        json!(0)
    );

    // The history stays with the tab across views: the same first reading, and more.
    let kept = "const s = JSON.parse(sessionStorage.getItem('spawner-metrics') || '[]'); return [s.length, s.length ? s[0].t : 0];";
    let before = b.js(kept, json!([])).await;
    assert!(before[0].as_u64() >= Some(3), "{before} samples kept");
    b.click("#nav-list").await;
    b.wait_text("#list-count", "4 shown of 5").await;
    b.click("#nav-overview").await;
    b.wait_for(
        "more readings",
        "const s = JSON.parse(sessionStorage.getItem('spawner-metrics') || '[]'); return s.length > arguments[0];",
        json!([before[0]]),
    )
    .await;
    let after = b.js(kept, json!([])).await;
    assert_eq!(after[1], before[1], "the first reading is kept");
    // Spawns and sweeps: two lines drawn through the readings.
    assert_eq!(
        b.js(
            "return [...document.querySelectorAll('#chart-spawns svg[role=img] path')].filter(p => p.getAttribute('d').includes('L')).length;",
            json!([])
        )
        .await,
        json!(2)
    );
    assert_eq!(b.js("return window.__csp;", json!([])).await, json!([]));
    if std::env::var_os("SPAWNER_SCREENSHOTS").is_some() {
        // For the picture: a minute of spawns, stops and claims, then the whole page.
        let mut running = ids.clone();
        for i in 0..16 {
            running.push(ready_example(&client, 300).await);
            if i % 3 == 2 {
                client
                    .terminate(&running.remove(0), false)
                    .await
                    .expect("terminate");
            }
            if i == 4 || i == 9 {
                // The pool's Ready one is taken (it holds at most 2): its depth moves.
                let claim: spawner_core::pool::ClaimRequest =
                    serde_json::from_value(json!({"pool": "warm"})).expect("a claim");
                client.claim(&claim).await.expect("claim");
            }
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        }
        b.set_window_size(1100, 1000).await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        screenshot(&b, "dashboard-overview.png").await;
    }
    let _ = ws.close(None).await;
}
