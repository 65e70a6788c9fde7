//! How large a request body the API reads: every body is read into memory before it is
//! parsed, so its size is bounded while it is read (a chunked body too, whose size nobody
//! declares), and a larger one is refused with `413 body_too_large` before any handler
//! sees it.

use crate::ApiError;
use crate::ErrorCode;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use std::time::Duration;

/// The largest body the API reads: 256 KiB, four times the largest spec the limits allow
/// (docs/api.md, "Limits"), and far below what would strain the server's memory.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// How much of a refused body is still read (and dropped) so that the client, which may
/// still be sending it, gets the answer instead of a reset connection; what is beyond it
/// is not read, and the connection is closed.
const DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Middleware (`axum::middleware::from_fn`): hands the handler the body read in full, or
/// answers `413` for one over [`MAX_BODY_BYTES`] (a declared `Content-Length` over it is
/// refused without being read).
pub async fn limit_body(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (parts, mut body) = req.into_parts();
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        drain(body).await;
        return too_large().into_response();
    }
    let mut read: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                return ApiError::bad_request(
                    ErrorCode::InvalidBody,
                    format!("the request body could not be read: {e}"),
                )
                .into_response()
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if read.len() + data.len() > MAX_BODY_BYTES {
            drain(body).await;
            return too_large().into_response();
        }
        read.extend_from_slice(&data);
    }
    next.run(Request::from_parts(parts, Body::from(read))).await
}

/// The answer to a body over the limit.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::BodyTooLarge,
        format!(
            "the request body is over {MAX_BODY_BYTES} bytes (256 KiB), the most Spawner reads: \
             a spec's executable.env holds at most 64 KiB and its command 64 KiB (docs/api.md, \"Limits\"); \
             pass larger data to the backend as a file"
        ),
    )
}

/// Reads what the client still sends of a refused body, within bounds, and drops it.
async fn drain(mut body: Body) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_BYTES {
                return;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    fn router() -> Router {
        Router::new()
            .route(
                "/",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            )
            .layer(axum::middleware::from_fn(limit_body))
    }

    async fn send(req: Request) -> (StatusCode, String) {
        let resp = router().oneshot(req).await.expect("answer");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_body_at_the_limit_passes_and_one_byte_more_is_refused() {
        let at = Request::post("/")
            .body(Body::from(vec![b'x'; MAX_BODY_BYTES]))
            .expect("request");
        assert_eq!(send(at).await, (StatusCode::OK, MAX_BODY_BYTES.to_string()));
        let over = Request::post("/")
            .body(Body::from(vec![b'x'; MAX_BODY_BYTES + 1]))
            .expect("request");
        let (status, body) = send(over).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let err: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(err["error"], "body_too_large");
        assert!(err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("262144"));
    }

    /// A body without a length, in many pieces: counted as it is read.
    #[tokio::test]
    async fn a_streamed_body_is_counted_while_it_is_read() {
        let chunks = (0..100).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 4096]));
        let streamed = Request::post("/")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .expect("request");
        assert_eq!(send(streamed).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 4096]));
        let small = Request::post("/")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .expect("request");
        assert_eq!(send(small).await, (StatusCode::OK, "40960".to_string()));
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_unread() {
        let declared = Request::post("/")
            .header(header::CONTENT_LENGTH, "10000000")
            .body(Body::empty())
            .expect("request");
        assert_eq!(send(declared).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
