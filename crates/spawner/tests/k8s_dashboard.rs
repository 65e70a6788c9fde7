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

/// `spawner api` has no transition counter (docs/kubernetes.md): the spawns say so instead
/// of drawing a flat zero; the spawn-to-ready histogram and the sweeps it counts from its
/// objects, and the other figures, are drawn.
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
    let spawns = b.js(&text("chart-spawns"), json!([])).await;
    let spawns = spawns.as_str().unwrap_or_default();
    assert!(
        spawns.contains("sweeps 0") && !spawns.contains("not reported by this server"),
        "chart-spawns: {spawns}"
    );
    let latency = b.js(&text("chart-latency"), json!([])).await;
    assert!(
        !latency
            .as_str()
            .unwrap_or_default()
            .contains("not reported by this server"),
        "chart-latency: {latency}"
    );
    let metrics = api.get("/metrics").await.1;
    assert!(
        metrics.contains("spawner_spawn_to_ready_seconds")
            && metrics.contains("spawner_sweeps_total")
            && !metrics.contains("spawner_state_transitions_total"),
        "{metrics}"
    );
}
