//! Running a case against a proxy, and the verdict on what happened.

use crate::backend::{Arrival, Log};
use crate::corpus::{Case, Part, ResponseWant, Want};
use crate::wire::{self, Parsed, Request, Response};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The address every proxy under test sees the client at.
pub const CLIENT_IP: &str = "127.0.0.1";
/// The prefix the proxy strips and must announce in `X-Forwarded-Prefix`.
pub const PREFIX: &str = "/p/b1";

/// What a proxy did with a case it handled correctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Every request the client sent reached the backend.
    Forwarded,
    /// None did: the client was refused (4xx) or its connection closed.
    Refused,
    /// The first ones did, then the rest was refused.
    Partly,
}

/// What happened in a case, as seen from both ends.
#[derive(Debug)]
pub struct Outcome {
    pub responses: Vec<Response>,
    /// Bytes the client could not read as a response.
    pub unreadable: Option<String>,
    /// The connection ended inside a response (after its head).
    pub cut_short: bool,
    pub arrivals: Vec<Arrival>,
    pub probe: Result<(), String>,
}

/// Sends `case` to `proxy`, reads what comes back, then sends a probe on a new connection
/// (`probe` names it), which must get its own answer: a pooled backend connection left
/// with something pending would hand it someone else's.
pub async fn run_case(proxy: SocketAddr, log: &Log, case: &Case, probe: usize) -> Outcome {
    let before = log.len();
    let (responses, unreadable, cut_short) = match TcpStream::connect(proxy).await {
        Ok(stream) => converse(stream, case).await,
        Err(e) => (Vec::new(), Some(format!("connect: {e}")), false),
    };
    let probe_target = format!("/probe-{probe}");
    let probe = probe_once(proxy, &probe_target).await;
    let arrivals = log
        .since(before)
        .into_iter()
        .filter(
            |a| !matches!(a, Arrival::Request { request, .. } if request.target == probe_target),
        )
        .collect();
    Outcome {
        responses,
        unreadable,
        cut_short,
        arrivals,
        probe,
    }
}

async fn converse(mut stream: TcpStream, case: &Case) -> (Vec<Response>, Option<String>, bool) {
    for part in &case.parts {
        match part {
            // The proxy may close the connection before all is sent: that is its answer.
            Part::Send(bytes) => {
                if stream.write_all(bytes).await.is_err() {
                    break;
                }
            }
            Part::Pause(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Part::HalfClose => {
                let _ = stream.shutdown().await;
            }
        }
    }
    let mut responses = Vec::new();
    let mut buf = Vec::new();
    let mut eof = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Interim responses (1xx but 101) are not answers.
        loop {
            let head = case
                .valid
                .get(responses.len())
                .is_some_and(|w| w.method == "HEAD");
            match wire::response(&buf, eof, head) {
                Parsed::Complete(resp, used) => {
                    buf.drain(..used);
                    if resp.status >= 200 || resp.status == 101 {
                        responses.push(resp);
                    }
                }
                Parsed::Partial if eof && !buf.is_empty() => return (responses, None, true),
                Parsed::Partial => break,
                Parsed::Invalid(why) => {
                    return (responses, Some(format!("{why}: {:?}", lossy(&buf))), false)
                }
            }
        }
        if eof {
            return (responses, None, false);
        }
        // Once every answer is in, a short wait shows whether anything more comes.
        let wait = if responses.len() >= case.valid.len() {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(3)
        };
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => eof = true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (responses, None, false),
        }
    }
}

async fn probe_once(proxy: SocketAddr, target: &str) -> Result<(), String> {
    let want = format!("GET {target} 0");
    let ask = async {
        let mut stream = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
        stream
            .write_all(format!("GET {PREFIX}{target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Parsed::Complete(resp, _) = wire::response(&buf, false, false) {
                return Ok(resp);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(format!("closed: {:?}", lossy(&buf))),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), ask).await {
        Err(_) => Err("no answer to the probe within 5 s".into()),
        Ok(Err(e)) => Err(format!("probe: {e}")),
        Ok(Ok(resp)) if resp.status == 200 && resp.body == want.as_bytes() => Ok(()),
        Ok(Ok(resp)) => Err(format!(
            "the probe got someone else's answer: {} {:?}",
            resp.status,
            lossy(&resp.body)
        )),
    }
}

fn lossy(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]);
    text.into_owned()
}

fn matches_want(got: &Request, want: &Want) -> bool {
    // An absolute-form target is the same request as its origin form (RFC 9112 §3.2.2).
    let target = match got.target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => &got.target,
    };
    got.method == want.method && target == want.target && got.body == want.body
}

/// A refusal: a 4xx, or one of the two 5xx that refuse a request as such (a transfer coding
/// or a version not implemented).
fn refusal(status: u16) -> bool {
    (400..500).contains(&status) || status == 501 || status == 505
}

fn describe(r: &Request) -> String {
    format!("{} {} ({} body bytes)", r.method, r.target, r.body.len())
}

/// Whether `got` carries the proxy's own forwarding headers and no client's: the proxy is
/// the edge, so `X-Forwarded-For` is the client's address alone, `X-Forwarded-Proto` (if
/// any) `http`, `X-Forwarded-Host` (if any) the request's `Host`, one `X-Forwarded-Prefix`
/// naming the stripped prefix, and no `X-Forwarded-Port`, `Forwarded` or `X-Real-IP`.
fn forwarded_headers(got: &Request) -> Result<(), String> {
    let fors: Vec<&[u8]> = got.header_values("x-forwarded-for").collect();
    if fors != [CLIENT_IP.as_bytes()] {
        return Err(format!(
            "{}: X-Forwarded-For is not the client's address alone: {:?}",
            describe(got),
            fors.iter().map(|v| lossy(v)).collect::<Vec<_>>()
        ));
    }
    let protos: Vec<&[u8]> = got.header_values("x-forwarded-proto").collect();
    if !(protos.is_empty() || protos == [b"http"]) {
        return Err(format!(
            "{}: X-Forwarded-Proto {:?} (a client's?)",
            describe(got),
            protos.iter().map(|v| lossy(v)).collect::<Vec<_>>()
        ));
    }
    let hosts: Vec<&[u8]> = got.header_values("x-forwarded-host").collect();
    let host: Vec<&[u8]> = got.header_values("host").collect();
    if !(hosts.is_empty() || hosts == host) {
        return Err(format!(
            "{}: X-Forwarded-Host {:?} is not the Host {:?}",
            describe(got),
            hosts.iter().map(|v| lossy(v)).collect::<Vec<_>>(),
            host.iter().map(|v| lossy(v)).collect::<Vec<_>>()
        ));
    }
    for name in [
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
        "x-spawner-router-proof",
    ] {
        if let Some(v) = got.header_values(name).next() {
            return Err(format!(
                "{}: a client's {name}: {:?} reached the backend",
                describe(got),
                lossy(v)
            ));
        }
    }
    let prefixes: Vec<&[u8]> = got.header_values("x-forwarded-prefix").collect();
    if prefixes != [PREFIX.as_bytes()] {
        return Err(format!(
            "{}: X-Forwarded-Prefix {:?}",
            describe(got),
            prefixes.iter().map(|p| lossy(p)).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// Whether the proxy handled `case` correctly, and how; or what went wrong.
pub fn verdict(case: &Case, outcome: &Outcome) -> Result<Class, String> {
    let mut got = Vec::new();
    for arrival in &outcome.arrivals {
        match arrival {
            Arrival::Request { request, .. } => got.push(request),
            Arrival::Invalid { why, bytes, .. } => {
                return Err(format!(
                    "the backend received bytes it cannot frame with certainty ({why}): {:?}",
                    lossy(bytes)
                ))
            }
        }
    }
    let k = got.len();
    if k > case.valid.len() || !got.iter().zip(&case.valid).all(|(g, w)| matches_want(g, w)) {
        return Err(format!(
            "the backend received [{}]; the client sent [{}]{}",
            got.iter()
                .map(|r| describe(r))
                .collect::<Vec<_>>()
                .join(", "),
            case.valid
                .iter()
                .map(|w| format!("{} {} ({} body bytes)", w.method, w.target, w.body.len()))
                .collect::<Vec<_>>()
                .join(", "),
            if case.invalid_tail {
                " and then something invalid"
            } else {
                ""
            }
        ));
    }
    for r in &got {
        forwarded_headers(r)?;
    }
    if let Some(why) = &outcome.unreadable {
        return Err(format!("the client could not read its answer: {why}"));
    }
    let responses = &outcome.responses;
    if let Some(want) = &case.response {
        // A response cut short is the end of the connection before a whole response.
        return response_verdict(want, responses, k)
            .and(outcome.probe.clone().map(|()| Class::Forwarded));
    }
    if outcome.cut_short {
        return Err("the connection ended inside a response".into());
    }
    for (i, (w, g)) in case.valid.iter().zip(&got).enumerate() {
        let Some(resp) = responses.get(i) else {
            return Err(format!(
                "no answer to {} {}, which the backend answered",
                w.method, w.target
            ));
        };
        // The backend names the request as it received it.
        let expected = format!("{} {} {}", g.method, g.target, g.body.len());
        if resp.status != 200 || (w.method != "HEAD" && resp.body != expected.as_bytes()) {
            return Err(format!(
                "answer {i} is {} {:?}, not the backend's answer to {expected:?}",
                resp.status,
                lossy(&resp.body)
            ));
        }
    }
    let rest = responses.get(k..).unwrap_or_default();
    if k < case.valid.len() || case.invalid_tail {
        match rest {
            [] => {}
            [r] if refusal(r.status) => {}
            _ => {
                return Err(format!(
                    "after {k} forwarded requests the client got [{}], not one refusal or the end of its connection",
                    rest.iter().map(|r| r.status.to_string()).collect::<Vec<_>>().join(", ")
                ))
            }
        }
    } else if !rest.is_empty() {
        return Err(format!("{} answers more than requests", rest.len()));
    }
    if case.must_forward && k < case.valid.len() {
        return Err(format!(
            "a valid request was refused ({})",
            rest.first()
                .map_or("connection closed".to_string(), |r| format!(
                    "{} {:?}",
                    r.status,
                    lossy(&r.body)
                ))
        ));
    }
    outcome.probe.clone()?;
    let refused = k < case.valid.len() || case.invalid_tail;
    Ok(if !refused {
        Class::Forwarded
    } else if k == 0 {
        Class::Refused
    } else {
        Class::Partly
    })
}

fn response_verdict(
    want: &ResponseWant,
    responses: &[Response],
    forwarded: usize,
) -> Result<(), String> {
    if forwarded != 1 {
        return Err("the request for a crafted response did not reach the backend".into());
    }
    let ok_body = |body: &[u8]| matches!(responses, [r] if ((200..300).contains(&r.status) || r.status == 304) && r.body == body);
    let refused = match responses {
        [] => true,
        [r] => r.status >= 500,
        _ => false,
    };
    let fine = match want {
        ResponseWant::Body(body) => ok_body(body),
        ResponseWant::Refused => refused,
        ResponseWant::BodyOrRefused(body) => refused || ok_body(body),
    };
    if fine {
        Ok(())
    } else {
        Err(format!(
            "the client got [{}]; wanted {want:?}",
            responses
                .iter()
                .map(|r| format!("{} {:?}", r.status, lossy(&r.body)))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}
