//! How long a message's body is, decided once, strictly, and in the same way on both of the
//! proxy's paths (the relay and hyper's stack). This is where request smuggling is stopped:
//! a proxy and a backend that disagree on where a request ends see different requests in
//! the same bytes. So a request whose end is not certain by RFC 9112 §6 is refused here,
//! not interpreted, and what is forwarded states its framing in one canonical form that any
//! backend reads the same way.
//!
//! Refused (400), with the client connection closed after the answer:
//! - `Transfer-Encoding` with anything but exactly one coding, `chunked` (any case, in one
//!   or several headers, empty list elements ignored); `Transfer-Encoding` in HTTP/1.0;
//! - `Transfer-Encoding` together with `Content-Length`;
//! - `Content-Length` that is not 1 to 18 decimal digits, or given more than once;
//! - no `Host` (HTTP/1.1), more than one, or one that is not a host and optional port.
//!
//! Whatever `Connection` lists, these headers are never dropped on its say: they are the
//! message's framing and routing, not hop-by-hop.

use std::fmt;

/// A request the proxy refuses, with the status and the text of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

impl Refusal {
    const fn bad(reason: &'static str) -> Self {
        Refusal {
            status: 400,
            reason,
        }
    }

    pub const MALFORMED: Refusal =
        Refusal::bad("malformed request head: check the request line and header syntax");
    pub const TOO_LARGE: Refusal = Refusal {
        status: 431,
        reason: "request head too large: at most 64 KiB and 100 header lines",
    };
    pub const CONNECT: Refusal = Refusal {
        status: 405,
        reason: "CONNECT is not supported: the proxy forwards HTTP requests, it opens no tunnels",
    };
    pub const BAD_CHUNKED: Refusal =
        Refusal::bad("malformed chunked request body: see RFC 9112 section 7.1");
    pub const CUT_SHORT: Refusal =
        Refusal::bad("the request body ended before the length it announced");

    /// The whole answer, which closes the connection.
    pub fn response(&self) -> Vec<u8> {
        let text = match self.status {
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        };
        format!(
            "HTTP/1.1 {} {text}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n{}\n",
            self.status,
            self.reason.len() + 1,
            self.reason
        )
        .into_bytes()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for Refusal {}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// `Content-Length` bytes (0: no body).
    Length(u64),
    Chunked,
}

/// The framing and routing headers of one request, taken in one header at a time.
#[derive(Debug, Default)]
pub struct RequestFraming<'a> {
    length: Option<u64>,
    lengths: u8,
    /// `Transfer-Encoding` seen, and how many codings it listed, and whether all were `chunked`.
    codings: Option<(u32, bool)>,
    host: Option<&'a [u8]>,
    hosts: u8,
}

impl<'a> RequestFraming<'a> {
    /// Takes in a header if it is one of framing or routing; false for any other.
    #[inline]
    pub fn take(&mut self, name: &str, value: &'a [u8]) -> bool {
        // Length first: every header name is compared against these three, so a quick
        // length test spares most of the comparisons.
        match name.len() {
            4 if name.eq_ignore_ascii_case("host") => {
                self.hosts = self.hosts.saturating_add(1);
                self.host = Some(value);
            }
            14 if name.eq_ignore_ascii_case("content-length") => {
                self.lengths = self.lengths.saturating_add(1);
                self.length = parse_length(value);
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                let (n, all_chunked) = self.codings.unwrap_or((0, true));
                let (m, chunked) = codings(value);
                self.codings = Some((n + m, all_chunked && chunked));
            }
            _ => return false,
        }
        true
    }

    /// The body's framing and the `Host` value, or why the request is refused. `http11`:
    /// HTTP/1.1 (else HTTP/1.0).
    pub fn finish(&self, http11: bool) -> Result<(RequestBody, Option<&'a [u8]>), Refusal> {
        if self.hosts > 1 {
            return Err(Refusal::bad("more than one Host header: send exactly one"));
        }
        match self.host {
            Some(host) if !valid_host(host) => {
                return Err(Refusal::bad(
                    "malformed Host header: it must be a host name or address and an optional port",
                ))
            }
            None if http11 => {
                return Err(Refusal::bad(
                    "missing Host header: HTTP/1.1 requests must have one",
                ))
            }
            _ => {}
        }
        let body = match (self.codings, self.lengths) {
            (Some(_), _) if !http11 => {
                return Err(Refusal::bad(
                    "Transfer-Encoding in an HTTP/1.0 request: use Content-Length",
                ))
            }
            (Some(_), n) if n > 0 => {
                return Err(Refusal::bad(
                    "both Transfer-Encoding and Content-Length: send only one of them",
                ))
            }
            (Some((1, true)), _) => RequestBody::Chunked,
            (Some(_), _) => return Err(Refusal::bad(
                "unsupported Transfer-Encoding: the only coding accepted is a single \"chunked\"",
            )),
            (None, 0) => RequestBody::Length(0),
            (None, 1) => match self.length {
                Some(n) => RequestBody::Length(n),
                None => return Err(Refusal::bad(
                    "malformed Content-Length: it must be a decimal number of at most 18 digits",
                )),
            },
            (None, _) => {
                return Err(Refusal::bad(
                    "more than one Content-Length header: send exactly one",
                ))
            }
        };
        Ok((body, self.host))
    }
}

/// The non-empty elements of a `Transfer-Encoding` value, and whether each is `chunked`.
fn codings(value: &[u8]) -> (u32, bool) {
    let mut n = 0;
    let mut all_chunked = true;
    for coding in value.split(|b| *b == b',').map(trim_ows) {
        if !coding.is_empty() {
            n += 1;
            all_chunked &= coding.eq_ignore_ascii_case(b"chunked");
        }
    }
    (n, all_chunked)
}

/// What a response's `Transfer-Encoding` headers say of its framing (RFC 9112 §6.3): chunked
/// if `chunked` is the last coding, until the connection closes if it is not, and no
/// certain framing at all if `chunked` was applied twice.
#[derive(Debug, Default)]
pub struct ResponseCodings {
    seen: bool,
    chunked_count: u32,
    /// Whether the last non-empty coding so far is `chunked`.
    last_chunked: bool,
}

impl ResponseCodings {
    pub fn take(&mut self, value: &[u8]) {
        self.seen = true;
        for coding in value.split(|b| *b == b',').map(trim_ows) {
            if !coding.is_empty() {
                let chunked = coding.eq_ignore_ascii_case(b"chunked");
                self.chunked_count += u32::from(chunked);
                self.last_chunked = chunked;
            }
        }
    }

    /// `None` without `Transfer-Encoding`; `Some(true)` for a chunked body, `Some(false)` for
    /// one read until the connection closes; an error when `chunked` is applied twice.
    pub fn chunked(&self) -> Result<Option<bool>, ChunkedTwice> {
        if !self.seen {
            return Ok(None);
        }
        if self.chunked_count > 1 {
            return Err(ChunkedTwice);
        }
        Ok(Some(self.last_chunked))
    }

    /// The codings of `values` as one `Transfer-Encoding` value for the client, without
    /// empty elements, `chunked` written last and in lower case when the body is chunked
    /// (`chunked`, `gzip, chunked`), else the codings as they were.
    pub fn write_value(values: &[&[u8]], chunked: bool, out: &mut Vec<u8>) {
        let mut first = true;
        for value in values {
            for coding in value.split(|b| *b == b',').map(trim_ows) {
                if coding.is_empty() || (chunked && coding.eq_ignore_ascii_case(b"chunked")) {
                    continue;
                }
                if !first {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(coding);
                first = false;
            }
        }
        if chunked {
            if !first {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(b"chunked");
        }
    }
}

/// A `Transfer-Encoding` that applies `chunked` more than once (RFC 9112 §6.1 forbids it).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("chunked coding applied more than once")]
pub struct ChunkedTwice;

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// A `Content-Length` value: decimal digits only, at most 18 of them (so it fits a `u64`
/// with room), optional whitespace around.
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = trim_ows(value);
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

/// A `Host` value: `uri-host [ ":" port ]` (RFC 9110 §7.2), with the host a name of
/// unreserved, sub-delims and percent characters, or an IP literal in brackets.
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.iter().rposition(|b| *b == b':') {
        // A colon inside brackets belongs to an IPv6 literal.
        Some(i) if !value[i..].contains(&b']') => (&value[..i], Some(&value[i + 1..])),
        _ => (value, None),
    };
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    let host_ok = match host {
        [b'[', inner @ .., b']'] => {
            !inner.is_empty()
                && inner
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        }
        _ => host.iter().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        }),
    };
    port_ok && host_ok
}

/// Headers a `Connection` listing can never remove: the message's framing and its host.
pub fn never_hop_by_hop(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("transfer-encoding")
        || name.eq_ignore_ascii_case("host")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(headers: &[(&str, &str)], http11: bool) -> Result<RequestBody, Refusal> {
        let mut f = RequestFraming::default();
        for (name, value) in headers {
            f.take(name, value.as_bytes());
        }
        f.finish(http11).map(|(body, _)| body)
    }

    #[test]
    fn frames_requests() {
        let h = ("Host", "a");
        assert_eq!(framing(&[h], true), Ok(RequestBody::Length(0)));
        assert_eq!(
            framing(&[h, ("content-length", " 12 ")], true),
            Ok(RequestBody::Length(12))
        );
        for te in [
            "chunked",
            "Chunked",
            "CHUNKED",
            " chunked ",
            "chunked,",
            ", chunked",
        ] {
            assert_eq!(
                framing(&[h, ("Transfer-Encoding", te)], true),
                Ok(RequestBody::Chunked),
                "{te:?}"
            );
        }
        assert_eq!(framing(&[], false), Ok(RequestBody::Length(0)));
    }

    #[test]
    fn refuses_uncertain_requests() {
        let h = ("Host", "a");
        let te = |v| ("Transfer-Encoding", v);
        for headers in [
            vec![],
            vec![h, h],
            vec![("Host", "a b")],
            vec![("Host", "a/b")],
            vec![("Host", "a:x")],
            vec![("Host", "a@b")],
            vec![h, te("chunked"), ("Content-Length", "3")],
            vec![h, ("Content-Length", "3"), te("chunked")],
            vec![h, te("gzip, chunked")],
            vec![h, te("chunked, gzip")],
            vec![h, te("chunked, chunked")],
            vec![h, te("chunked"), te("chunked")],
            vec![h, te("xchunked")],
            vec![h, te("chunked;q=1")],
            vec![h, te("identity")],
            vec![h, te("")],
            vec![h, ("Content-Length", "1"), ("Content-Length", "1")],
            vec![h, ("Content-Length", "1, 1")],
            vec![h, ("Content-Length", "+1")],
            vec![h, ("Content-Length", "0x10")],
            vec![h, ("Content-Length", "1 1")],
            vec![h, ("Content-Length", "")],
            vec![h, ("Content-Length", "1234567890123456789")],
        ] {
            assert!(framing(&headers, true).is_err(), "{headers:?}");
        }
        assert!(framing(&[te("chunked")], false).is_err());
    }

    #[test]
    fn hosts() {
        for ok in [
            "a",
            "example.com:8080",
            "127.0.0.1",
            "[::1]:80",
            "[fe80::1]",
            "x_y.z",
            "",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok:?}");
        }
        for bad in [
            "a b", "a/b", "a?b", "a#b", "a@b", "[::1", "a:123456", "\x01", "a\"b",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn response_codings() {
        let chunked = |values: &[&str]| {
            let mut c = ResponseCodings::default();
            for v in values {
                c.take(v.as_bytes());
            }
            c.chunked()
        };
        assert_eq!(chunked(&[]), Ok(None));
        assert_eq!(chunked(&["chunked"]), Ok(Some(true)));
        assert_eq!(chunked(&["gzip, chunked"]), Ok(Some(true)));
        assert_eq!(chunked(&["gzip", "chunked, "]), Ok(Some(true)));
        assert_eq!(chunked(&["chunked, gzip"]), Ok(Some(false)));
        assert_eq!(chunked(&["chunked", "chunked"]), Err(ChunkedTwice));
        let mut out = Vec::new();
        ResponseCodings::write_value(&[b"gzip, Chunked", b" ,"], true, &mut out);
        assert_eq!(out, b"gzip, chunked");
        out.clear();
        ResponseCodings::write_value(&[b"chunked, gzip"], false, &mut out);
        assert_eq!(out, b"chunked, gzip");
    }
}
