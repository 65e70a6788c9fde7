//! The logs route: a backend's stdout and stderr, whole or followed.

use super::ApiError;
use crate::app::App;
use axum::body::{Body, Bytes};
use spawner_core::BackendId;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The backend's output file, whole, or followed until the backend has ended.
pub(super) async fn logs(app: &Arc<App>, id: &BackendId, follow: bool) -> Result<Body, ApiError> {
    if app
        .store
        .get(id.as_str())
        .map_err(ApiError::internal)?
        .is_none()
    {
        return Err(ApiError::not_found(id.as_str()));
    }
    let path = app.log_path(id.as_str());
    if !follow {
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(ApiError::internal(e)),
        };
        return Ok(Body::from(bytes));
    }
    // Follow: send what is there, then what is appended, until the backend has ended and
    // everything it wrote was sent.
    let app2 = Arc::clone(app);
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
    Ok(Body::from_stream(stream))
}
