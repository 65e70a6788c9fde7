//! The dashboard served by `spawner api` (Kubernetes mode) on a real API server, in headless
//! Chromium: the same page as the embedded server's (tests/dashboard.rs), against a
//! `/metrics` that reports less. No controller runs: the objects stay as the API made them.

mod browser;
mod common;
mod k8s;

use browser::Browser;
use k8s::TestNs;
use serde_json::json;

const TOKEN: &str = "dashboard-t0ken";

/// `spawner api` has no spawn-to-ready histogram and no sweep or transition counters
/// (docs/kubernetes.md): those charts say so instead of drawing a flat zero, and the
/// figures it has are drawn from its objects.
#[tokio::test]
async fn the_overview_says_what_spawner_api_does_not_report() {
    if !browser::available() {
        return;
    }
    let ns = TestNs::new("dash").await;
    let api = ns.api(TOKEN);
    let (status, link) = api.post("/v1/login-links", json!(null)).await;
    assert_eq!(status, 200, "{link}");
    let code = link["url"]
        .as_str()
        .and_then(|u| u.split("#login=").nth(1))
        .expect("a code")
        .to_string();
    let b = Browser::start().await;
    b.goto(&format!("{}/#login={code}", api.url)).await;
    b.wait_text("#list-count", "0 shown of 0").await;
    b.click("#nav-overview").await;
    b.wait_for(
        "the backends by state",
        "const v = document.querySelector(\"#chart-states .readout [data-series='starting']\"); \
         return !!v && v.textContent === 'starting 0';",
        json!([]),
    )
    .await;

    // A backend, as the API makes it (Submitted until a controller takes it): counted.
    let (status, created) = api
        .post(
            "/v1/backends",
            json!({"executable": {"image": "registry.example/app:1", "port": 8000}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    b.wait_for(
        "one backend starting",
        "const v = document.querySelector(\"#chart-states .readout [data-series='starting']\"); \
         return !!v && v.textContent === 'starting 1';",
        json!([]),
    )
    .await;
    let text = |chart: &str| format!("return document.querySelector('#{chart}').textContent;");
    let conns = b.js(&text("chart-conns"), json!([])).await;
    assert!(
        conns
            .as_str()
            .unwrap_or_default()
            .contains("Live connections 0"),
        "{conns}"
    );
    for chart in ["chart-spawns", "chart-latency"] {
        let shown = b.js(&text(chart), json!([])).await;
        assert!(
            shown
                .as_str()
                .unwrap_or_default()
                .contains("not reported by this server"),
            "{chart}: {shown}"
        );
        assert_eq!(
            b.js(
                &format!("return document.querySelectorAll('#{chart} svg').length;"),
                json!([])
            )
            .await,
            json!(0),
            "{chart} draws nothing"
        );
    }
    let metrics = api.get("/metrics").await.1;
    assert!(
        !metrics.contains("spawner_spawn_to_ready_seconds")
            && !metrics.contains("spawner_sweeps_total"),
        "{metrics}"
    );
}
