//! Request and response heads as the relay reads and rewrites them: parsed with
//! `httparse`, copied header by header into the head sent on, less the hop-by-hop headers
//! (RFC 9110 §7.6.1) and plus the `X-Forwarded-*` ones (the client's own kept only from a
//! trusted peer: [`crate::forwarded`]); framing headers are checked by [`crate::framing`]
//! and written anew in canonical form. A response's headers get the target's
//! [`ResponsePolicy`] as they are copied.
//!
//! The relay takes HTTP/1.1 requests in origin form whose framing is certain (a body framed
//! by `Content-Length`, by `chunked` alone, or none), without `Expect`; it refuses those it
//! cannot frame with certainty or parse at all; anything else (HTTP/1.0, absolute and
//! asterisk forms, `Expect`, requests no backend takes) is left to the full HTTP stack,
//! which the caller falls back to.

use crate::access;
use crate::forwarded::{self, Kind, PeerTrust, ROUTER_PROOF};
use crate::framing::{self, Refusal, RequestBody, RequestFraming, ResponseCodings};
use crate::target::{ResponsePolicy, Target, SANDBOX};
use std::mem::MaybeUninit;
use std::net::IpAddr;

/// Most header lines a head may have, and its largest size; beyond either the relay
/// answers 431.
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEAD: usize = 64 * 1024;

/// What a router sees of a request to decide where it goes.
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The `Host` header, if it is text.
    pub host: Option<&'a str>,
    /// The `Sec-Fetch-Mode` header (`navigate`, `cors`, `websocket`, ...). Browsers send it
    /// with every request and pages cannot set it: without it, the client is no browser.
    pub fetch_mode: Option<&'a [u8]>,
    /// The [`ROUTER_PROOF`] header, if there is exactly one, for the sidecar to check.
    pub router_proof: Option<&'a [u8]>,
    /// The `Cookie` header, if there is exactly one (several: `None`, and
    /// [`RequestHead::cookies`] says so), for a token-mode backend's access cookie.
    pub cookie: Option<&'a [u8]>,
    /// How many `Cookie` headers the request has.
    pub cookies: u32,
    /// An `Authorization: Bearer` header holds a connect token ([`crate::access`]).
    pub connect_bearer: bool,
}

/// A request the relay forwards.
#[derive(Debug)]
pub struct Forward {
    pub target: Target,
    /// Bytes of the client's head, which the relay consumes.
    pub head_len: usize,
    /// How the request body is framed.
    pub body: RequestBody,
    /// A `HEAD` request: its response has no body whatever its headers say.
    pub head_method: bool,
    /// Safe to send again if a reused backend connection closed before answering.
    pub idempotent: bool,
    /// The client asked to switch protocols (WebSocket).
    pub upgrade: bool,
    /// ... to WebSocket (`Upgrade: websocket`): the tunnel follows its frames.
    pub websocket: bool,
    /// The client asked to close its connection after this response.
    pub close: bool,
}

/// The outcome of reading a request head.
#[derive(Debug)]
pub enum RequestParse {
    /// More bytes are needed.
    Partial,
    /// Not for the relay: the full HTTP stack answers it.
    Fallback,
    /// Not for anyone: the client gets this answer, its connection is closed, and no
    /// backend sees any of it.
    Refuse(Refusal),
    Forward(Forward),
}

/// Hop-by-hop headers of a request, which are never forwarded (`upgrade` is handled
/// apart).
const REQUEST_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "proxy-authorization",
];

/// What the `Connection` headers of a head say.
#[derive(Debug, Default)]
struct ConnectionTokens<'a> {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// Other tokens: headers that must not be forwarded (but see [`ConnectionTokens::lists`]).
    listed: Vec<&'a str>,
}

impl<'a> ConnectionTokens<'a> {
    /// Takes in the value of one `Connection` header.
    fn read(&mut self, value: &'a [u8]) {
        let Ok(value) = std::str::from_utf8(value) else {
            return;
        };
        for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if t.eq_ignore_ascii_case("close") {
                self.close = true;
            } else if t.eq_ignore_ascii_case("keep-alive") {
                self.keep_alive = true;
            } else if t.eq_ignore_ascii_case("upgrade") {
                self.upgrade = true;
            } else if !framing::never_hop_by_hop(t) {
                self.listed.push(t);
            }
        }
    }

    /// Whether `Connection` lists `name` as hop-by-hop; never true of the framing headers
    /// and `Host`, which a listing cannot remove.
    fn lists(&self, name: &str) -> bool {
        self.listed.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

/// Parses the request head at the start of `buf` and, if the relay can take it and
/// `route` gives it a target, writes the head for the backend into `out`.
pub fn parse_request(
    buf: &[u8],
    out: &mut Vec<u8>,
    route: impl FnOnce(&RequestHead) -> Option<Target>,
) -> RequestParse {
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return RequestParse::Partial,
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return RequestParse::Refuse(Refusal::TOO_LARGE)
        }
        Err(_) => return RequestParse::Refuse(Refusal::MALFORMED),
    };
    if head_len > MAX_HEAD {
        return RequestParse::Refuse(Refusal::TOO_LARGE);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return RequestParse::Refuse(Refusal::MALFORMED);
    };
    let headers = req.headers;

    // One pass for everything the decision and the rewriting need to know.
    let mut framing = RequestFraming::default();
    let mut tokens = ConnectionTokens::default();
    let (mut has_upgrade, mut has_forwarded_for, mut expect) = (false, false, false);
    let mut websocket = false;
    let (mut fetch_mode, mut router_proof, mut proofs) = (None, None, 0u32);
    let (mut cookie, mut cookies, mut connect_bearer) = (None, 0u32, false);
    for h in headers.iter() {
        let name = h.name;
        if framing.take(name, h.value) {
            continue;
        }
        if name.len() == 6 && name.eq_ignore_ascii_case("cookie") {
            cookies += 1;
            cookie = Some(h.value);
        } else if name.len() == 13 && name.eq_ignore_ascii_case("authorization") {
            connect_bearer |= access::bearer_token(h.value).is_some();
        } else if name.eq_ignore_ascii_case("connection") {
            tokens.read(h.value);
        } else if name.eq_ignore_ascii_case("expect") {
            expect = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            has_upgrade = true;
            websocket |= h.value.eq_ignore_ascii_case(b"websocket");
        } else if let Some(kind) = forwarded::kind(name) {
            match kind {
                Kind::For => has_forwarded_for = true,
                Kind::RouterProof => {
                    proofs += 1;
                    router_proof = Some(h.value);
                }
                _ => {}
            }
        } else if name.len() == 14 && name.eq_ignore_ascii_case("sec-fetch-mode") {
            fetch_mode.get_or_insert(h.value);
        }
    }
    let (body, host) = match framing.finish(version == 1) {
        Ok(pair) => pair,
        Err(refusal) => return RequestParse::Refuse(refusal),
    };
    if method == "CONNECT" {
        return RequestParse::Refuse(Refusal::CONNECT);
    }
    if version != 1 || expect || !target.starts_with('/') {
        return RequestParse::Fallback;
    }
    let host_text = host.and_then(|h| std::str::from_utf8(h).ok());
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Some(target_to) = route(&RequestHead {
        method,
        path,
        query,
        host: host_text,
        fetch_mode,
        // Two proofs are none: which one would count is anyone's guess.
        router_proof: router_proof.filter(|_| proofs == 1),
        cookie: cookie.filter(|_| cookies == 1),
        cookies,
        connect_bearer,
    }) else {
        return RequestParse::Fallback;
    };
    let Some(rest) = path.get(target_to.strip..) else {
        return RequestParse::Fallback;
    };
    let prefix = &path[..target_to.strip];
    let upgrade = has_upgrade && tokens.upgrade;
    let trusted = target_to.trust == PeerTrust::Trusted;

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(if rest.is_empty() { "/" } else { rest }.as_bytes());
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let (mut has_proto, mut has_fwd_host) = (false, false);
    for h in headers.iter() {
        let name = h.name;
        // Framing is written below, in one canonical form; `Host` stays where it was.
        if (name.len() == 14 || name.len() == 17)
            && (name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding"))
        {
            continue;
        }
        if REQUEST_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
            || (name.eq_ignore_ascii_case("upgrade") && !upgrade)
            || tokens.lists(name)
        {
            continue;
        }
        // The access rules (crate::access): no access cookie, connect token or client's
        // identity header reaches the backend.
        match name.len() {
            6 if name.eq_ignore_ascii_case("cookie") && access::mentions_access_cookie(h.value) => {
                let start = out.len();
                out.extend_from_slice(b"cookie: ");
                if access::strip_access_cookies(h.value, out) {
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.truncate(start);
                }
                continue;
            }
            13 if name.eq_ignore_ascii_case("authorization")
                && access::bearer_token(h.value).is_some() =>
            {
                continue
            }
            14 | 19 if access::is_identity_header(name) => continue,
            _ => {}
        }
        if let Some(kind) = forwarded::kind(name) {
            match kind {
                // Written below, on one line; the proof is never forwarded.
                Kind::For | Kind::RouterProof => continue,
                Kind::Prefix if !prefix.is_empty() => continue,
                _ if !trusted => continue,
                Kind::Proto => has_proto = true,
                Kind::Host => has_fwd_host = true,
                Kind::Prefix | Kind::Other => {}
            }
        }
        header_line(out, name, h.value);
    }
    match body {
        RequestBody::Length(0) => {}
        RequestBody::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        RequestBody::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    // A trusted peer's list of earlier proxies, then the peer's address, on one line.
    out.extend_from_slice(b"x-forwarded-for: ");
    if trusted && has_forwarded_for {
        for h in headers.iter() {
            if h.name.eq_ignore_ascii_case("x-forwarded-for") {
                out.extend_from_slice(h.value);
                out.extend_from_slice(b", ");
            }
        }
    }
    push_ip(out, target_to.client_ip);
    out.extend_from_slice(b"\r\n");
    if !has_proto {
        out.extend_from_slice(b"x-forwarded-proto: http\r\n");
    }
    match host {
        Some(host) if !has_fwd_host => header_line(out, "x-forwarded-host", host),
        Some(_) => {}
        None => header_line(out, "host", target_to.authority.as_str().as_bytes()),
    }
    if !prefix.is_empty() {
        header_line(out, "x-forwarded-prefix", prefix.as_bytes());
    }
    if let Some(proof) = &target_to.router_proof {
        header_line(out, ROUTER_PROOF, proof.as_bytes());
    }
    if let Some(grant) = &target_to.access {
        header_line(out, access::USER_HEADER, grant.user_header.as_bytes());
        if let Some(data) = &grant.data_header {
            header_line(out, access::USER_DATA_HEADER, data.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");

    RequestParse::Forward(Forward {
        target: target_to,
        head_len,
        body,
        head_method: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        upgrade,
        websocket: upgrade && websocket,
        close: tokens.close,
    })
}

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection (then the client's is closed too).
    UntilClose,
}

/// A backend's response head, rewritten for the client.
#[derive(Debug)]
pub struct ResponseHead {
    pub head_len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The backend connection can carry another request once the body is read.
    pub reusable: bool,
    /// The client connection must close after this response.
    pub close: bool,
}

/// A response head the relay cannot pass on (the client gets a 502).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed response head from the backend")]
pub struct BadResponse;

/// Parses the response head at the start of `buf`, for a request described by `req`, and
/// writes the head for the client into `out`; `None` while more bytes are needed.
pub fn parse_response(
    buf: &[u8],
    req: &Forward,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, BadResponse> {
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(_) | Err(_) => return Err(BadResponse),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(BadResponse);
    };
    let headers = resp.headers;
    let switching = status == 101;

    let mut tokens = ConnectionTokens::default();
    let mut codings = ResponseCodings::default();
    let mut length = None;
    let mut lengths = 0u32;
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            tokens.read(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            codings.take(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            match (framing::parse_length(h.value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Err(BadResponse),
            }
        }
    }
    let chunked = codings.chunked().map_err(|_| BadResponse)?;
    let bodiless = req.head_method || status == 204 || status == 304 || status < 200;
    let framing = if bodiless {
        Framing::None
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let backend_keeps = if version == 1 {
        !tokens.close
    } else {
        tokens.keep_alive && !tokens.close
    };
    // Both framings at once may be an attempt at response splitting (RFC 9112 §6.3): the
    // chunked coding frames the body, and the connection is not used again.
    let both = chunked.is_some() && lengths > 0;
    let close = framing == Framing::UntilClose || (req.close && status >= 200);

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&status_digits(status));
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut te_values: [&[u8]; 8] = [&[]; 8];
    let mut te_count = 0;
    let policy = req.target.response;
    for h in headers.iter() {
        let name = h.name;
        if !switching {
            if policy != ResponsePolicy::Pass
                && name.len() == 22
                && name.eq_ignore_ascii_case("service-worker-allowed")
            {
                continue;
            }
            if name.eq_ignore_ascii_case("transfer-encoding") {
                if let Some(slot) = te_values.get_mut(te_count) {
                    *slot = h.value;
                    te_count += 1;
                } else {
                    return Err(BadResponse);
                }
                continue;
            }
            if name.eq_ignore_ascii_case("content-length") {
                continue;
            }
            if name.eq_ignore_ascii_case("connection")
                || name.eq_ignore_ascii_case("keep-alive")
                || name.eq_ignore_ascii_case("proxy-connection")
                || name.eq_ignore_ascii_case("upgrade")
                || tokens.lists(name)
            {
                continue;
            }
        }
        header_line(out, name, h.value);
    }
    // The body's framing for the client, in one canonical form: the length as a number,
    // the codings with `chunked` last; none for a body read until close, which the
    // connection's end delimits.
    if !switching {
        match (chunked, length) {
            (Some(chunked), _) => {
                out.extend_from_slice(b"transfer-encoding: ");
                ResponseCodings::write_value(&te_values[..te_count], chunked, out);
                out.extend_from_slice(b"\r\n");
            }
            (None, Some(n)) => {
                out.extend_from_slice(b"content-length: ");
                push_decimal(out, n);
                out.extend_from_slice(b"\r\n");
            }
            (None, None) => {}
        }
        if policy == ResponsePolicy::Sandbox && status >= 200 {
            header_line(out, "content-security-policy", SANDBOX.as_bytes());
        }
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");

    Ok(Some(ResponseHead {
        head_len,
        status,
        framing,
        reusable: backend_keeps && framing != Framing::UntilClose && !switching && !both,
        close,
    }))
}

fn header_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A number in decimal, without allocating.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn status_digits(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

/// An address as text; IPv4 by hand, since the standard formatter costs more than all the
/// other header work of a request together.
pub fn ip_text(ip: IpAddr) -> String {
    let mut text = Vec::with_capacity(15);
    push_ip(&mut text, ip);
    String::from_utf8(text).unwrap_or_default()
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        out.extend_from_slice(ip.to_string().as_bytes());
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Monitor;
    use std::sync::Arc;

    fn target(strip: usize) -> Target {
        Target {
            authority: "127.0.0.1:9000".parse().unwrap(),
            monitor: Arc::new(Monitor::new(0)),
            strip,
            client_ip: "127.0.0.1".parse().unwrap(),
            trust: PeerTrust::Untrusted,
            response: ResponsePolicy::Pass,
            router_proof: None,
            access: None,
        }
    }

    /// The request as the relay would forward it to `to`, and the head it would send.
    fn forward_to(raw: &str, to: Target) -> (Forward, String) {
        let mut out = Vec::new();
        match parse_request(raw.as_bytes(), &mut out, |_| Some(to)) {
            RequestParse::Forward(f) => (f, String::from_utf8(out).unwrap()),
            other => panic!("not forwarded: {other:?}"),
        }
    }

    /// The request as the relay would forward it, and the head it would send.
    fn forward(raw: &str, strip: usize) -> (Forward, String) {
        forward_to(raw, target(strip))
    }

    #[test]
    fn rewrites_a_request_for_the_backend() {
        let raw = "GET /p/abc/x/y?q=1 HTTP/1.1\r\nHost: example.com\r\n\
                   Connection: keep-alive, x-secret\r\nx-secret: 1\r\n\
                   X-Forwarded-For: 10.0.0.1\r\nCookie: a=b\r\nTE: trailers\r\n\r\nNEXT";
        let (f, head) = forward(raw, 6);
        assert_eq!(f.head_len, raw.len() - 4);
        assert_eq!(
            head,
            "GET /x/y?q=1 HTTP/1.1\r\nHost: example.com\r\nCookie: a=b\r\n\
             x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: example.com\r\nx-forwarded-prefix: /p/abc\r\n\r\n"
        );
        assert!(f.idempotent && !f.upgrade && !f.close && !f.head_method);
        assert_eq!(f.body, RequestBody::Length(0));
    }

    /// Every forwarding header a client can send, twice for the list.
    const SPOOFED: &str = "GET /p/abc/x HTTP/1.1\r\nHost: example.com\r\n\
        X-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\nX-Forwarded-Proto: https\r\n\
        X-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 443\r\n\
        X-Forwarded-Prefix: /evil\r\nForwarded: for=6.6.6.6;proto=https\r\n\
        X-Real-IP: 6.6.6.6\r\nX-Spawner-Router-Proof: guess\r\nCookie: a=b\r\n\r\n";

    #[test]
    fn an_untrusted_peer_cannot_speak_through_the_forwarding_headers() {
        let (_, head) = forward(SPOOFED, 6);
        assert_eq!(
            head,
            "GET /x HTTP/1.1\r\nHost: example.com\r\nCookie: a=b\r\n\
             x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: example.com\r\nx-forwarded-prefix: /p/abc\r\n\r\n"
        );
        // Without a prefix stripped, the client's X-Forwarded-Prefix is dropped all the same.
        let (_, head) = forward(SPOOFED, 0);
        assert!(
            !head.contains("/evil") && !head.contains("prefix"),
            "{head}"
        );
    }

    #[test]
    fn a_trusted_peer_speaks_for_its_client() {
        let trusted = Target {
            trust: PeerTrust::Trusted,
            ..target(6)
        };
        let (_, head) = forward_to(SPOOFED, trusted);
        assert_eq!(
            head,
            "GET /x HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 443\r\n\
             Forwarded: for=6.6.6.6;proto=https\r\nX-Real-IP: 6.6.6.6\r\nCookie: a=b\r\n\
             x-forwarded-for: 6.6.6.6, 7.7.7.7, 127.0.0.1\r\n\
             x-forwarded-prefix: /p/abc\r\n\r\n"
        );
        // Its prefix passes when this proxy strips none; what it left out is set.
        let trusted = Target {
            trust: PeerTrust::Trusted,
            ..target(0)
        };
        let (_, head) = forward_to(
            "GET /x HTTP/1.1\r\nHost: h\r\nX-Forwarded-Prefix: /p/abc\r\n\r\n",
            trusted,
        );
        assert_eq!(
            head,
            "GET /x HTTP/1.1\r\nHost: h\r\nX-Forwarded-Prefix: /p/abc\r\n\
             x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: h\r\n\r\n"
        );
    }

    #[test]
    fn the_router_proof_is_replaced_never_passed_on() {
        let proven = Target {
            router_proof: Some(http::HeaderValue::from_static("c0ffee")),
            access: None,
            ..target(0)
        };
        let (_, head) = forward_to(SPOOFED, proven);
        assert!(!head.contains("guess"), "{head}");
        assert!(
            head.ends_with("x-spawner-router-proof: c0ffee\r\n\r\n"),
            "{head}"
        );
    }

    #[test]
    fn the_router_sees_the_fetch_mode_and_a_single_proof() {
        let seen = |raw: &str| {
            let mut seen = None;
            parse_request(raw.as_bytes(), &mut Vec::new(), |h| {
                seen = Some((
                    h.fetch_mode.map(<[u8]>::to_vec),
                    h.router_proof.map(<[u8]>::to_vec),
                ));
                None
            });
            seen.expect("routed")
        };
        assert_eq!(
            seen("GET / HTTP/1.1\r\nHost: h\r\nSec-Fetch-Mode: navigate\r\nX-Spawner-Router-Proof: p1\r\n\r\n"),
            (Some(b"navigate".to_vec()), Some(b"p1".to_vec()))
        );
        assert_eq!(seen("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), (None, None));
        assert_eq!(
            seen("GET / HTTP/1.1\r\nHost: h\r\nx-spawner-router-proof: p1\r\nx-spawner-router-proof: p2\r\n\r\n"),
            (None, None),
            "two proofs are none"
        );
    }

    #[test]
    fn applies_the_response_policy() {
        let raw = "HTTP/1.1 200 OK\r\nService-Worker-Allowed: /\r\n\
                   Content-Security-Policy: default-src 'self'\r\nContent-Length: 0\r\n\r\n";
        let policy = |response| {
            let (get, _) = forward_to(
                "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
                Target {
                    response,
                    ..target(0)
                },
            );
            response_of(raw, &get).1
        };
        assert_eq!(
            policy(ResponsePolicy::Pass),
            "HTTP/1.1 200 OK\r\nService-Worker-Allowed: /\r\n\
             Content-Security-Policy: default-src 'self'\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(
            policy(ResponsePolicy::SharedOrigin),
            "HTTP/1.1 200 OK\r\nContent-Security-Policy: default-src 'self'\r\n\
             content-length: 0\r\n\r\n"
        );
        // The backend's own policy stays: a browser enforces both.
        assert_eq!(
            policy(ResponsePolicy::Sandbox),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Security-Policy: default-src 'self'\r\n\
                 content-length: 0\r\ncontent-security-policy: {SANDBOX}\r\n\r\n"
            )
        );
    }

    #[test]
    fn keeps_the_root_and_writes_framing_canonically() {
        let (f, head) = forward(
            "POST /p/abc?x HTTP/1.1\r\nHost: h\r\nContent-Length: 005\r\n\r\n",
            6,
        );
        assert!(head.starts_with("POST /?x HTTP/1.1\r\nHost: h\r\ncontent-length: 5\r\n"));
        assert_eq!(f.body, RequestBody::Length(5));
        assert!(!f.idempotent);
        let (f, head) = forward(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n",
            0,
        );
        assert!(
            head.contains("\r\ntransfer-encoding: chunked\r\n"),
            "{head}"
        );
        assert!(!head.contains("Chunked"));
        assert_eq!(f.body, RequestBody::Chunked);
    }

    #[test]
    fn connection_cannot_remove_framing_or_host() {
        let (f, head) = forward(
            "POST / HTTP/1.1\r\nHost: h\r\nConnection: content-length, host, \
             transfer-encoding, x-a\r\nx-a: 1\r\nContent-Length: 74\r\n\r\n",
            0,
        );
        assert_eq!(f.body, RequestBody::Length(74));
        assert!(head.contains("\r\ncontent-length: 74\r\n"), "{head}");
        assert!(head.contains("\r\nHost: h\r\n"), "{head}");
        assert!(!head.contains("x-a"), "{head}");
    }

    #[test]
    fn keeps_upgrades_and_notes_close() {
        let (f, head) = forward(
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            0,
        );
        assert!(f.upgrade);
        assert!(
            head.contains("\r\nUpgrade: websocket\r\n") && head.contains("connection: upgrade\r\n")
        );
        let (f, head) = forward(
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n",
            0,
        );
        assert!(!f.upgrade && f.close);
        assert!(!head.to_ascii_lowercase().contains("upgrade"));
    }

    #[test]
    fn leaves_what_it_does_not_take_to_the_full_stack() {
        for raw in [
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        ] {
            let parsed = parse_request(raw.as_bytes(), &mut Vec::new(), |_| Some(target(0)));
            assert!(
                matches!(parsed, RequestParse::Fallback),
                "{raw:?}: {parsed:?}"
            );
        }
        let unrouted = parse_request(
            b"GET /v1/x HTTP/1.1\r\nHost: h\r\n\r\n",
            &mut Vec::new(),
            |_| None,
        );
        assert!(matches!(unrouted, RequestParse::Fallback));
        let partial = parse_request(b"GET / HTTP/1.1\r\nHo", &mut Vec::new(), |_| {
            Some(target(0))
        });
        assert!(matches!(partial, RequestParse::Partial));
    }

    #[test]
    fn refuses_what_cannot_be_framed_with_certainty() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX : 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX: 1\r\n folded\r\n\r\n",
        ] {
            let parsed = parse_request(raw.as_bytes(), &mut Vec::new(), |_| Some(target(0)));
            assert!(
                matches!(parsed, RequestParse::Refuse(r) if r.status == 400),
                "{raw:?}: {parsed:?}"
            );
        }
        let big = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n",
            "a".repeat(MAX_HEAD)
        );
        let parsed = parse_request(big.as_bytes(), &mut Vec::new(), |_| Some(target(0)));
        assert!(matches!(parsed, RequestParse::Refuse(r) if r.status == 431));
    }

    #[test]
    fn the_router_sees_path_query_and_host() {
        let mut seen = None;
        parse_request(
            b"GET /p/x/y?a=b HTTP/1.1\r\nHost: x.example\r\n\r\n",
            &mut Vec::new(),
            |h| {
                seen = Some((
                    h.method.to_string(),
                    h.path.to_string(),
                    h.query.map(str::to_string),
                    h.host.map(str::to_string),
                ));
                None
            },
        );
        assert_eq!(
            seen,
            Some((
                "GET".into(),
                "/p/x/y".into(),
                Some("a=b".into()),
                Some("x.example".into())
            ))
        );
    }

    fn response_of(raw: &str, req: &Forward) -> (ResponseHead, String) {
        response(raw, req)
    }

    /// The response head as parsed, and the head the client would get.
    fn response(raw: &str, req: &Forward) -> (ResponseHead, String) {
        let mut out = Vec::new();
        let head = parse_response(raw.as_bytes(), req, &mut out)
            .unwrap()
            .expect("a whole head");
        (head, String::from_utf8(out).unwrap())
    }

    #[test]
    fn frames_responses() {
        let (get, _) = forward("GET / HTTP/1.1\r\nHost: h\r\n\r\n", 0);
        let (r, out) = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nKeep-Alive: timeout=5\r\n\r\n",
            &get,
        );
        assert_eq!(r.framing, Framing::Length(12));
        assert!(r.reusable && !r.close);
        assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n");
        let (r, out) = response(
            "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\n",
            &get,
        );
        assert_eq!(r.framing, Framing::Length(2));
        assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n");

        let (r, out) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
            &get,
        );
        assert_eq!(r.framing, Framing::Chunked);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
        );
        assert!(
            !r.reusable,
            "both framings: the connection is not used again"
        );

        let (r, out) = response("HTTP/1.0 200 OK\r\n\r\n", &get);
        assert_eq!(r.framing, Framing::UntilClose);
        assert!(!r.reusable && r.close);
        assert!(out.ends_with("connection: close\r\n\r\n"));

        let (r, _) = response(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            &get,
        );
        assert!(r.reusable);
        let (r, out) = response(
            "HTTP/1.1 204 No Content\r\nConnection: close, x-a\r\nx-a: 1\r\n\r\n",
            &get,
        );
        assert_eq!(r.framing, Framing::None);
        assert!(!r.reusable && !r.close);
        assert_eq!(out, "HTTP/1.1 204 No Content\r\n\r\n");

        let (head, _) = forward("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", 0);
        assert_eq!(
            response("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", &head)
                .0
                .framing,
            Framing::None
        );

        let (closing, _) = forward("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 0);
        let (r, out) = response("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", &closing);
        assert!(r.close && r.reusable);
        assert!(out.ends_with("connection: close\r\n\r\n"));
    }

    #[test]
    fn passes_switching_protocols_whole() {
        let (ws, _) = forward(
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            0,
        );
        let raw =
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let (r, out) = response(raw, &ws);
        assert_eq!(out, raw);
        assert_eq!(r.status, 101);
        assert!(!r.reusable);
    }

    #[test]
    fn rejects_bad_responses() {
        let (get, _) = forward("GET / HTTP/1.1\r\nHost: h\r\n\r\n", 0);
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n",
            "HTTP/9 200 OK\r\n\r\n",
        ] {
            assert_eq!(
                parse_response(raw.as_bytes(), &get, &mut Vec::new()).err(),
                Some(BadResponse),
                "{raw:?}"
            );
        }
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\n", &get, &mut Vec::new())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn formats_addresses() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.255.9",
            "192.168.100.1",
            "::1",
            "fe80::1",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(parsed), parsed.to_string());
        }
    }
}
