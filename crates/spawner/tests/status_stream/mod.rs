//! Reading a backend's status stream (`GET /v1/backends/{id}/status/stream`), which the
//! embedded server and `spawner api` serve alike.

use futures_util::StreamExt;
use serde_json::Value;
use spawner_core::time::{now_millis, Millis};
use std::time::Duration;

/// The `expiring` announcements of a backend's status stream, with when each arrived,
/// until the stream ends (after a terminal state, within `patience`).
pub async fn expiring_events(base: String, id: String, patience: Duration) -> Vec<(Millis, Value)> {
    let resp = reqwest::Client::new()
        .get(format!("{base}/v1/backends/{id}/status/stream"))
        .send()
        .await
        .expect("status stream");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.expect("bytes")));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                if block.lines().any(|l| l == "event: expiring") {
                    let data = block
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .expect("data");
                    assert!(
                        !block.lines().any(|l| l.starts_with("id:")),
                        "an announcement has no id: {block}"
                    );
                    out.push((now_millis(), serde_json::from_str(data).expect("json")));
                }
            }
        }
    };
    tokio::time::timeout(patience, read)
        .await
        .expect("the status stream ends after a terminal state");
    out
}

/// A time of the API (RFC 3339) in milliseconds.
pub fn ms(v: &Value) -> Millis {
    #[derive(serde::Deserialize)]
    struct Time(#[serde(with = "spawner_core::time::serde_rfc3339")] Millis);
    serde_json::from_value::<Time>(v.clone())
        .unwrap_or_else(|e| panic!("{v} is not an RFC 3339 time: {e}"))
        .0
}
