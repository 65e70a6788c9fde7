//! The logs route: a backend's stdout and stderr, whole or followed.

use super::ApiError;
use crate::app::App;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    #[serde(default)]
    follow: bool,
}

pub async fn logs(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(
            "invalid_query",
            format!("{e}; the only parameter is follow=true|false"),
        )
    })?;
    let id = spawner_api::parse::id(&id)?;
    if app
        .store
        .get(id.as_str())
        .map_err(ApiError::internal)?
        .is_none()
    {
        return Err(ApiError::not_found(id.as_str()));
    }
    let path = app.log_path(id.as_str());
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !query.follow {
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(ApiError::internal(e)),
        };
        return Ok((text_plain, bytes).into_response());
    }
    // Follow: send what is there, then what is appended, until the backend has ended and
    // everything it wrote was sent.
    let app2 = app.clone();
    let id = id.as_str().to_string();
    let stream = futures_util::stream::unfold(
        (None::<tokio::fs::File>, false),
        move |(mut file, mut last_round)| {
            let app = app2.clone();
            let id = id.clone();
            let path = path.clone();
            async move {
                loop {
                    if file.is_none() {
                        file = tokio::fs::File::open(&path).await.ok();
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    if let Some(f) = file.as_mut() {
                        match f.read(&mut buf).await {
                            Ok(n) if n > 0 => {
                                buf.truncate(n);
                                return Some((
                                    Ok::<_, std::io::Error>(Bytes::from(buf)),
                                    (file, last_round),
                                ));
                            }
                            Ok(_) => {}
                            Err(e) => return Some((Err(e), (None, true))),
                        }
                    }
                    if last_round {
                        return None;
                    }
                    if app.registry.get(&id).is_none() {
                        // Ended: one more read catches what was written last.
                        last_round = true;
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        },
    );
    Ok((text_plain, Body::from_stream(stream)).into_response())
}
