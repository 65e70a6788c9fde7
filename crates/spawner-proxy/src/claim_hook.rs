//! The claim hook of a warm pool: Spawner POSTs the claim (key and labels) to the backend
//! before handing it out, in both modes (to the process or container, or to a Pod's sidecar).

use spawner_core::pool::ClaimNotice;
use std::time::Duration;

/// How long the backend may take to answer before it counts as refusing.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a refusal's body is quoted in its reason.
const QUOTED: usize = 200;

/// `: "..."` with the body's text (its start, on one line, trimmed), or nothing for an
/// empty body.
fn quote(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match text.trim() {
        "" => String::new(),
        t => format!(": {t:?}"),
    }
}

/// POSTs `notice` as JSON to `path` at `authority` (`host:port`) on a connection of its own;
/// `Err` says why the backend counts as refusing (no connection, an answer other than 2xx,
/// none within [`TIMEOUT`]).
pub async fn post(authority: &str, path: &str, notice: &ClaimNotice) -> Result<(), String> {
    let body = serde_json::to_vec(notice).map_err(|e| e.to_string())?;
    let call = async {
        let tcp = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::post(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        // The start of what it said, for the operator: why it refused, in its own words.
        let mut body = resp.into_body();
        let mut said = Vec::new();
        while said.len() < QUOTED {
            match http_body_util::BodyExt::frame(&mut body).await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        said.extend_from_slice(data);
                    }
                }
                _ => break,
            }
        }
        said.truncate(QUOTED);
        Err(format!("it answered {status}{}", quote(&said)))
    };
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
    }
}
