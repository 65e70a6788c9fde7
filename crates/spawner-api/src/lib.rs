//! The HTTP contract (`docs/api.md`) as both API servers speak it: the embedded server
//! (`spawner-server`) and the Kubernetes API (`spawner-k8s`). What the two share — the error
//! shape, the bearer token, how large a body may be, how bodies, ids, filters, pages and `Last-Event-ID` are read, how
//! `/ready`, the event stream and the seed's routes answer, the OpenAPI document and the
//! dashboard — lives here, once; and the routes themselves, over the [`ControlPlane`] each
//! mode implements ([`control_plane`]).

pub mod auth;
pub mod bodies;
pub mod body_limit;
pub mod control_plane;
pub mod dashboard;
pub mod error;
pub mod guard;
pub mod login;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod parse;
pub mod respond;
pub mod seed;

pub use auth::{require_token, BearerToken};
pub use control_plane::{ControlPlane, ListWatch, Mount, SpawnRoute, Spawned, StatusItem};
pub use error::{ApiError, ErrorCode};
pub use guard::{Guard, OwnHosts};

/// The open routes that hold no data: the dashboard and the OpenAPI document.
pub fn public_routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    dashboard::routes().merge(openapi::routes())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get(path: &str) -> (StatusCode, String, String) {
        let resp = super::public_routes::<()>()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, ctype, String::from_utf8_lossy(&body).into_owned())
    }

    /// What both servers merge: the page, its assets, and the document.
    #[tokio::test]
    async fn the_public_routes_serve_the_dashboard_and_the_document() {
        let (status, ctype, page) = get("/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("text/html"), "{ctype}");
        assert!(page.contains("/ui/app.js") && page.contains("/ui/app.css"));
        let (status, ctype, script) = get("/ui/app.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("text/javascript"), "{ctype}");
        assert!(script.contains("sessionStorage") && !script.contains("EventSource("));
        let (status, _, _) = get("/ui/app.css").await;
        assert_eq!(status, StatusCode::OK);
        for icon in ["/favicon.svg", "/favicon.ico"] {
            let (status, ctype, body) = get(icon).await;
            assert_eq!(status, StatusCode::OK, "{icon}");
            assert_eq!(ctype, "image/svg+xml", "{icon}");
            assert!(body.starts_with("<svg"), "{icon}");
        }
        let (status, _, doc) = get("/v1/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        let doc: serde_json::Value = serde_json::from_str(&doc).expect("json");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/v1/backends/{id}/terminate"]["post"].is_object());
    }
}
