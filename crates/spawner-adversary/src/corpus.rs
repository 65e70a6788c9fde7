//! The corpus: crafted client inputs, each with what a correct proxy may do with it, and
//! crafted backend responses. Requests go to `/p/b1/…`, which the proxy under test routes
//! to the recording backend with `/p/b1` stripped; anything else must not reach it.
//!
//! A case lists the requests the client sent, as RFC 9112 reads its bytes (`valid`), and
//! whether bytes follow that must never reach the backend as a request (`invalid_tail`).
//! A proxy passes a case if the backend received a prefix of `valid` and nothing else, and
//! the client got their answers, then (if it stopped short) a 4xx or the end of its
//! connection. Refusing is always allowed except for the plainly valid cases
//! (`must_forward`).

use crate::wire::chunk;
use std::sync::OnceLock;

/// A step of a client's input.
#[derive(Debug, Clone)]
pub enum Part {
    Send(Vec<u8>),
    /// Wait this many milliseconds (the proxy then reads the input in several pieces).
    Pause(u64),
    /// Close the sending side (a half-close).
    HalfClose,
}

/// A request as the backend must receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub method: String,
    /// The target after the proxy stripped `/p/b1`.
    pub target: String,
    pub body: Vec<u8>,
}

/// What the client of a crafted response may get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseWant {
    /// Exactly this body, with status 200.
    Body(Vec<u8>),
    /// A 502, or the end of the connection before any whole response.
    Refused,
    /// Either of the above.
    BodyOrRefused(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub category: &'static str,
    pub parts: Vec<Part>,
    pub valid: Vec<Want>,
    pub invalid_tail: bool,
    pub must_forward: bool,
    /// For a crafted response: what the client may get.
    pub response: Option<ResponseWant>,
}

/// A crafted response, sent by the backend to `GET /resp/N`.
#[derive(Debug, Clone)]
pub struct Crafted {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    /// The backend closes its connection after sending it.
    pub close_after: bool,
    pub want: ResponseWant,
}

fn want(method: &str, target: &str, body: &[u8]) -> Want {
    Want {
        method: method.into(),
        target: target.into(),
        body: body.to_vec(),
    }
}

fn get(target: &str) -> Want {
    want("GET", target, b"")
}

/// The request that smuggling attempts try to slip past the proxy: another Host, a spoofed
/// `X-Forwarded-For`, and a target the backend answers slowly, so that a pooled connection
/// would still owe its answer when the next client takes it.
pub const SMUGGLED: &str =
    "GET /p/b1/slow-smuggled?smuggled=1 HTTP/1.1\r\nHost: evil\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";

struct Builder {
    cases: Vec<Case>,
    category: &'static str,
}

impl Builder {
    fn case(
        &mut self,
        name: impl Into<String>,
        bytes: impl AsRef<[u8]>,
        valid: Vec<Want>,
    ) -> &mut Case {
        self.cases.push(Case {
            name: name.into(),
            category: self.category,
            parts: vec![Part::Send(bytes.as_ref().to_vec())],
            valid,
            invalid_tail: false,
            must_forward: false,
            response: None,
        });
        self.cases.last_mut().expect("just pushed")
    }

    /// Plainly valid input: it must be forwarded as `valid`.
    fn ok(&mut self, name: impl Into<String>, bytes: impl AsRef<[u8]>, valid: Vec<Want>) {
        self.case(name, bytes, valid).must_forward = true;
    }

    /// Input that may be forwarded as `valid` or refused.
    fn either(&mut self, name: impl Into<String>, bytes: impl AsRef<[u8]>, valid: Vec<Want>) {
        self.case(name, bytes, valid);
    }

    /// Input after whose `valid` requests (often none) nothing may reach the backend.
    fn bad(&mut self, name: impl Into<String>, bytes: impl AsRef<[u8]>, valid: Vec<Want>) {
        self.case(name, bytes, valid).invalid_tail = true;
    }

    fn parts(&mut self, name: impl Into<String>, parts: Vec<Part>, valid: Vec<Want>, must: bool) {
        self.cases.push(Case {
            name: name.into(),
            category: self.category,
            parts,
            valid,
            invalid_tail: false,
            must_forward: must,
            response: None,
        });
    }
}

fn post(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("POST /p/b1/x HTTP/1.1\r\nHost: a\r\n{headers}\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Every client input of the suite.
pub fn cases() -> Vec<Case> {
    let mut b = Builder {
        cases: Vec::new(),
        category: "baseline",
    };
    baseline(&mut b);
    forwarding_headers(&mut b);
    connection_listing(&mut b);
    length_and_coding(&mut b);
    coding_obfuscation(&mut b);
    content_length(&mut b);
    chunk_sizes(&mut b);
    line_ends_and_bytes(&mut b);
    names_and_folding(&mut b);
    versions_and_forms(&mut b);
    pipelines_and_streams(&mut b);
    for (n, crafted) in crafted_responses().iter().enumerate() {
        b.cases.push(Case {
            name: format!("response: {}", crafted.name),
            category: "response",
            parts: vec![Part::Send(
                format!("GET /p/b1/resp/{n} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes(),
            )],
            valid: vec![get(&format!("/resp/{n}"))],
            invalid_tail: false,
            must_forward: true,
            response: Some(crafted.want.clone()),
        });
    }
    b.cases
}

fn baseline(b: &mut Builder) {
    b.category = "baseline";
    b.ok(
        "GET",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/x")],
    );
    b.ok(
        "GET with a query",
        "GET /p/b1/x?a=1&b=%20 HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/x?a=1&b=%20")],
    );
    b.ok(
        "GET of the prefix alone",
        "GET /p/b1/ HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/")],
    );
    b.ok(
        "HEAD",
        "HEAD /p/b1/x HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![want("HEAD", "/x", b"")],
    );
    b.ok(
        "POST with Content-Length",
        post("Content-Length: 5\r\n", b"hello"),
        vec![want("POST", "/x", b"hello")],
    );
    b.ok(
        "POST with an empty body",
        post("Content-Length: 0\r\n", b""),
        vec![want("POST", "/x", b"")],
    );
    b.ok(
        "POST chunked",
        post("Transfer-Encoding: chunked\r\n", &chunk(b"hello world", 4)),
        vec![want("POST", "/x", b"hello world")],
    );
    b.ok(
        "POST chunked with extensions and trailers",
        post(
            "Transfer-Encoding: chunked\r\n",
            b"5;a=b\r\nhello\r\n6 ; c=\"d e\"\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
        ),
        vec![want("POST", "/x", b"hello world")],
    );
    b.ok(
        "GET with a chunked empty body",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        vec![get("/x")],
    );
    b.ok(
        "99 header lines",
        format!(
            "GET /p/b1/x HTTP/1.1\r\nHost: a\r\n{}\r\n",
            "X-H: 1\r\n".repeat(97)
        ),
        vec![get("/x")],
    );
    b.ok(
        "a 60 KiB header",
        format!(
            "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(60 * 1024)
        ),
        vec![get("/x")],
    );
    b.ok(
        "a 1 MiB body",
        post("Content-Length: 1048576\r\n", &vec![b'z'; 1 << 20]),
        vec![want("POST", "/x", &vec![b'z'; 1 << 20])],
    );
    b.ok(
        "a 1 MiB chunked body",
        post(
            "Transfer-Encoding: chunked\r\n",
            &chunk(&vec![b'z'; 1 << 20], 10_000),
        ),
        vec![want("POST", "/x", &vec![b'z'; 1 << 20])],
    );
    b.ok(
        "lower-case method is passed as it is",
        "get /p/b1/x HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![want("get", "/x", b"")],
    );
    b.ok(
        "Host with a port",
        "GET /p/b1/x HTTP/1.1\r\nHost: a:8080\r\n\r\n",
        vec![get("/x")],
    );
    b.ok(
        "Host as an IPv6 literal",
        "GET /p/b1/x HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
        vec![get("/x")],
    );
    b.either(
        "empty Host",
        "GET /p/b1/x HTTP/1.1\r\nHost:\r\n\r\n",
        vec![get("/x")],
    );
    b.bad(
        "nothing routed outside the prefix",
        "GET /elsewhere HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![],
    );
}

/// A client's own forwarding headers, which an edge proxy must drop (apps build links and
/// log addresses from them): each alone, in any case, repeated, empty, and all together.
fn forwarding_headers(b: &mut Builder) {
    b.category = "forwarding";
    let spoofed = [
        "X-Forwarded-For: 6.6.6.6",
        "X-Forwarded-For: 6.6.6.6, 7.7.7.7",
        "x-forwarded-for: 127.0.0.1",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: evil.example",
        "X-FORWARDED-HOST: evil.example",
        "X-Forwarded-Port: 443",
        "X-Forwarded-Prefix: /evil",
        "X-Forwarded-Prefix: //evil.example",
        "Forwarded: for=6.6.6.6;proto=https;host=evil.example",
        "forwarded: for=\"[2001:db8::1]\"",
        "X-Real-IP: 6.6.6.6",
        "X-Spawner-Router-Proof: 0123456789abcdef",
        "X-Forwarded-For:",
    ];
    for line in spoofed {
        b.ok(
            format!("a client's {line:?} is dropped"),
            format!("GET /p/b1/x HTTP/1.1\r\nHost: a\r\n{line}\r\n\r\n"),
            vec![get("/x")],
        );
    }
    let all = spoofed.join("\r\n");
    b.ok(
        "every forwarding header at once, twice",
        format!("GET /p/b1/x HTTP/1.1\r\nHost: a\r\n{all}\r\n{all}\r\n\r\n"),
        vec![get("/x")],
    );
    b.ok(
        "forwarding headers on a body request, after a pipelined first",
        cat(&[
            b"GET /p/b1/first HTTP/1.1\r\nHost: a\r\n\r\n",
            &post(&format!("{all}\r\nContent-Length: 5\r\n"), b"hello"),
        ]),
        vec![get("/first"), want("POST", "/x", b"hello")],
    );
    // hyper's path (the relay hands over at `Expect` and HTTP/1.0) holds the same rule.
    b.ok(
        "forwarding headers with Expect: 100-continue",
        format!(
            "POST /p/b1/x HTTP/1.1\r\nHost: a\r\n{all}\r\nExpect: 100-continue\r\n\
             Content-Length: 5\r\n\r\nhello"
        ),
        vec![want("POST", "/x", b"hello")],
    );
    b.ok(
        "forwarding headers in HTTP/1.0",
        format!("GET /p/b1/x HTTP/1.0\r\nHost: a\r\n{all}\r\n\r\n"),
        vec![get("/x")],
    );
}

/// The reported attack and its kin: `Connection` naming the framing or routing headers.
fn connection_listing(b: &mut Builder) {
    b.category = "connection";
    let body = SMUGGLED.as_bytes();
    for listing in [
        "content-length",
        "Content-Length",
        "keep-alive, Content-Length",
        "close, content-length",
        "content-length, close",
        "upgrade, content-length",
        " content-length ",
        "CONTENT-LENGTH",
    ] {
        b.either(
            format!("Connection: {listing} with a request for a body"),
            post(
                &format!(
                    "Connection: {listing}\r\nContent-Length: {}\r\n",
                    body.len()
                ),
                body,
            ),
            vec![want("POST", "/x", body)],
        );
    }
    let chunked = chunk(body, 16);
    for listing in ["transfer-encoding", "Transfer-Encoding, keep-alive"] {
        b.either(
            format!("Connection: {listing} with a chunked request for a body"),
            post(
                &format!("Connection: {listing}\r\nTransfer-Encoding: chunked\r\n"),
                &chunked,
            ),
            vec![want("POST", "/x", body)],
        );
    }
    b.either(
        "Connection: host",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n",
        vec![get("/x")],
    );
    for listing in [
        "x-forwarded-for",
        "x-forwarded-prefix",
        "x-forwarded-host",
        "cookie",
        "te",
        "keep-alive, close",
        "upgrade",
    ] {
        b.either(
            format!("Connection: {listing}"),
            format!("GET /p/b1/x HTTP/1.1\r\nHost: a\r\nConnection: {listing}\r\nCookie: c=1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"),
            vec![get("/x")],
        );
    }
    // The same on a pipelined second request, after a first one the relay has taken.
    b.either(
        "Connection: content-length on a second pipelined request",
        cat(&[
            b"GET /p/b1/first HTTP/1.1\r\nHost: a\r\n\r\n",
            &post(
                &format!(
                    "Connection: content-length\r\nContent-Length: {}\r\n",
                    body.len()
                ),
                body,
            ),
        ]),
        vec![get("/first"), want("POST", "/x", body)],
    );
}

/// `Content-Length` and `Transfer-Encoding` together: the classic CL.TE and TE.CL.
fn length_and_coding(b: &mut Builder) {
    b.category = "cl+te";
    // Under chunked, an empty body and then the smuggled bytes; under Content-Length, one
    // body. RFC 9112 §6.3: refuse, or take the chunked framing and close after the answer.
    let tail = cat(&[b"0\r\n\r\n", SMUGGLED.as_bytes()]);
    for (name, headers) in [
        (
            "CL then TE",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                tail.len()
            ),
        ),
        (
            "TE then CL",
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                tail.len()
            ),
        ),
        (
            "CL.TE, short Content-Length",
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n".to_string(),
        ),
        (
            "TE with Content-Length: 0",
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n".to_string(),
        ),
    ] {
        b.bad(name, post(&headers, &tail), vec![want("POST", "/x", b"")]);
    }
    // TE.CL: under Content-Length the chunk size is the body and the chunk data a request.
    let te_cl = cat(&[
        format!("{:x}\r\n", SMUGGLED.len()).as_bytes(),
        SMUGGLED.as_bytes(),
        b"\r\n0\r\n\r\n",
    ]);
    b.bad(
        "TE.CL",
        post(
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            &te_cl,
        ),
        vec![want("POST", "/x", SMUGGLED.as_bytes())],
    );
    b.bad(
        "TE.CL with CL 0",
        post(
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
            &te_cl,
        ),
        vec![want("POST", "/x", SMUGGLED.as_bytes())],
    );
}

/// Obfuscated `Transfer-Encoding` headers, each with and without a `Content-Length` that
/// would frame the same bytes differently.
fn coding_obfuscation(b: &mut Builder) {
    b.category = "te-obfuscation";
    // Body under chunked: empty, then the smuggled request as a second, pipelined one.
    let tail = cat(&[b"0\r\n\r\n", SMUGGLED.as_bytes()]);
    let smuggled = get("/slow-smuggled?smuggled=1");
    #[derive(Clone, Copy)]
    enum Kind {
        /// A valid `Transfer-Encoding: chunked` by RFC 9112.
        Chunked,
        /// A `Transfer-Encoding` that no server may frame (400).
        Invalid,
        /// A malformed header line (400).
        Malformed,
        /// A folded line (obs-fold) that, unfolded (RFC 9112 §5.2 allows either), is a
        /// valid `Transfer-Encoding: chunked`.
        FoldedChunked,
        /// A folded line that, unfolded, is part of another header.
        FoldedOther,
        /// Not `Transfer-Encoding` at all.
        Other,
    }
    use Kind::*;
    for (name, line, kind) in [
        ("Chunked", "Transfer-Encoding: Chunked", Chunked),
        ("CHUNKED", "Transfer-Encoding: CHUNKED", Chunked),
        ("name in upper case", "TRANSFER-ENCODING: chunked", Chunked),
        (
            "leading space in value",
            "Transfer-Encoding:  chunked",
            Chunked,
        ),
        ("trailing space", "Transfer-Encoding: chunked ", Chunked),
        ("tab before value", "Transfer-Encoding:\tchunked", Chunked),
        ("trailing tab", "Transfer-Encoding: chunked\t", Chunked),
        (
            "empty list element after",
            "Transfer-Encoding: chunked,",
            Chunked,
        ),
        (
            "empty list element before",
            "Transfer-Encoding: , chunked",
            Chunked,
        ),
        ("no space after colon", "Transfer-Encoding:chunked", Chunked),
        (
            "chunked twice",
            "Transfer-Encoding: chunked, chunked",
            Invalid,
        ),
        (
            "identity then chunked",
            "Transfer-Encoding: identity, chunked",
            Invalid,
        ),
        (
            "chunked then identity",
            "Transfer-Encoding: chunked, identity",
            Invalid,
        ),
        (
            "gzip then chunked",
            "Transfer-Encoding: gzip, chunked",
            Invalid,
        ),
        ("xchunked", "Transfer-Encoding: xchunked", Invalid),
        ("chunkedx", "Transfer-Encoding: chunkedx", Invalid),
        ("chunk", "Transfer-Encoding: chunk", Invalid),
        ("quoted", "Transfer-Encoding: \"chunked\"", Invalid),
        (
            "with a parameter",
            "Transfer-Encoding: chunked;q=1",
            Invalid,
        ),
        ("space inside", "Transfer-Encoding: chun ked", Invalid),
        ("identity", "Transfer-Encoding: identity", Invalid),
        ("empty value", "Transfer-Encoding:", Invalid),
        (
            "vertical tab after",
            "Transfer-Encoding: chunked\x0b",
            Malformed,
        ),
        (
            "form feed before",
            "Transfer-Encoding: \x0cchunked",
            Malformed,
        ),
        ("NUL inside", "Transfer-Encoding: chun\x00ked", Malformed),
        (
            "non-ASCII after",
            "Transfer-Encoding: chunked\u{e9}",
            Invalid,
        ),
        (
            "space before colon",
            "Transfer-Encoding : chunked",
            Malformed,
        ),
        (
            "tab before colon",
            "Transfer-Encoding\t: chunked",
            Malformed,
        ),
        (
            "folded value",
            "Transfer-Encoding:\r\n chunked",
            FoldedChunked,
        ),
        (
            "folded onto another header",
            "X-A: 1\r\n Transfer-Encoding: chunked",
            FoldedOther,
        ),
        ("underscore in name", "Transfer_Encoding: chunked", Other),
        ("prefixed name", "X-Transfer-Encoding: chunked", Other),
        (
            "second header identity",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
            Invalid,
        ),
        (
            "first header identity",
            "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
            Invalid,
        ),
        (
            "two chunked headers",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            Invalid,
        ),
    ] {
        for with_length in [false, true] {
            let length = if with_length {
                format!("Content-Length: {}\r\n", tail.len())
            } else {
                String::new()
            };
            let bytes = post(&format!("{line}\r\n{length}"), &tail);
            let label = format!("TE {name}{}", if with_length { ", with CL" } else { "" });
            match (kind, with_length) {
                // Refused, or unfolded and read as the header it then is.
                (FoldedChunked, false) => b.bad(
                    label,
                    bytes,
                    vec![want("POST", "/x", b""), smuggled.clone()],
                ),
                (FoldedChunked, true) => b.bad(label, bytes, vec![want("POST", "/x", b"")]),
                (FoldedOther, true) => b.bad(label, bytes, vec![want("POST", "/x", &tail)]),
                (FoldedOther, false) => b.bad(label, bytes, vec![want("POST", "/x", b"")]),
                (Chunked, false) => b.either(
                    label,
                    bytes,
                    vec![want("POST", "/x", b""), smuggled.clone()],
                ),
                // Chunked wins, and the connection closes after the answer.
                (Chunked, true) => b.bad(label, bytes, vec![want("POST", "/x", b"")]),
                (Invalid | Malformed, _) => b.bad(label, bytes, vec![]),
                (Other, true) => b.either(label, bytes, vec![want("POST", "/x", &tail)]),
                // No body; then `0` is no request line.
                (Other, false) => b.bad(label, bytes, vec![want("POST", "/x", b"")]),
            }
        }
    }
    b.bad(
        "TE chunked in HTTP/1.0",
        cat(&[
            b"POST /p/b1/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            &tail,
        ]),
        vec![],
    );
}

fn content_length(b: &mut Builder) {
    b.category = "content-length";
    let body = SMUGGLED.as_bytes();
    let n = body.len();
    for (name, headers, valid) in [
        (
            "leading zeros",
            "Content-Length: 0005\r\n".to_string(),
            Some(5),
        ),
        (
            "spaces around",
            "Content-Length:  5 \r\n".to_string(),
            Some(5),
        ),
        (
            "two equal headers",
            "Content-Length: 5\r\nContent-Length: 5\r\n".to_string(),
            Some(5),
        ),
        (
            "an equal list",
            "Content-Length: 5, 5\r\n".to_string(),
            Some(5),
        ),
    ] {
        b.either(
            format!("CL {name}"),
            post(&headers, b"hello"),
            vec![want("POST", "/x", &b"hello"[..valid.unwrap_or(0)])],
        );
    }
    for (name, value) in [
        ("two different headers", format!("{n}\r\nContent-Length: 0")),
        ("a different list", format!("0, {n}")),
        ("plus sign", format!("+{n}")),
        ("minus sign", format!("-{n}")),
        ("hex", format!("0x{n:x}")),
        ("decimal point", format!("{n}.0")),
        ("inner space", format!("{} {}", n / 10, n % 10)),
        ("empty", String::new()),
        ("letters", "abc".to_string()),
        ("overflowing u64", "18446744073709551617".to_string()),
        ("NUL after", format!("{n}\x00")),
        ("vertical tab after", format!("{n}\x0b")),
        ("non-ASCII digit", "\u{661}".to_string()),
    ] {
        b.bad(
            format!("CL {name}"),
            post(&format!("Content-Length: {value}\r\n"), body),
            vec![],
        );
    }
    b.bad(
        "CL with space before colon",
        post(&format!("Content-Length : {n}\r\n"), body),
        vec![],
    );
    b.bad(
        "CL folded, refused or unfolded",
        post(&format!("Content-Length:\r\n {n}\r\n"), body),
        vec![want("POST", "/x", body)],
    );
    // Not Content-Length: no body, and the "body" is the client's second request.
    b.either(
        "Content_Length is not a length",
        post(&format!("Content_Length: {n}\r\n"), body),
        vec![want("POST", "/x", b""), get("/slow-smuggled?smuggled=1")],
    );
    b.either(
        "body longer than CL: the rest is the next request",
        post("Content-Length: 5\r\n", &cat(&[b"hello", body])),
        vec![
            want("POST", "/x", b"hello"),
            get("/slow-smuggled?smuggled=1"),
        ],
    );
    b.ok(
        "CL on a GET",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        vec![want("GET", "/x", b"hello")],
    );
}

fn chunk_sizes(b: &mut Builder) {
    b.category = "chunked";
    let post_chunked = |body: &[u8]| post("Transfer-Encoding: chunked\r\n", body);
    for (name, body, data) in [
        (
            "leading zeros in size",
            &b"0005\r\nhello\r\n0\r\n\r\n"[..],
            &b"hello"[..],
        ),
        (
            "upper-case hex",
            b"A\r\n0123456789\r\n0\r\n\r\n",
            b"0123456789",
        ),
        (
            "whitespace before extension",
            b"5 ;x=1\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        (
            "extension on the last chunk",
            b"5\r\nhello\r\n0;end\r\n\r\n",
            b"hello",
        ),
        (
            "quoted extension",
            b"5;x=\"a;b\"\r\nhello\r\n0\r\n\r\n",
            b"hello",
        ),
        ("one-byte chunks", b"1\r\nh\r\n1\r\ni\r\n0\r\n\r\n", b"hi"),
        ("a trailer", b"5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n", b"hello"),
        (
            "a Content-Length trailer",
            b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n",
            b"hello",
        ),
        (
            "a Host trailer",
            b"5\r\nhello\r\n0\r\nHost: evil\r\n\r\n",
            b"hello",
        ),
    ] {
        b.either(
            format!("chunked: {name}"),
            post_chunked(body),
            vec![want("POST", "/x", data)],
        );
    }
    for (name, body) in [
        ("size with trailing space", &b"5 \r\nhello\r\n0\r\n\r\n"[..]),
        ("size with trailing tab", b"5\t\r\nhello\r\n0\r\n\r\n"),
        ("size with plus sign", b"+5\r\nhello\r\n0\r\n\r\n"),
        ("size with minus sign", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("size with 0x", b"0x5\r\nhello\r\n0\r\n\r\n"),
        (
            "size overflowing 64 bits",
            b"10000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "size of 16 hex digits",
            b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("empty size", b"\r\nhello\r\n0\r\n\r\n"),
        ("size then bare LF", b"5\nhello\r\n0\r\n\r\n"),
        ("size then bare CR", b"5\rhello\r\n0\r\n\r\n"),
        ("data then bare LF", b"5\r\nhello\n0\r\n\r\n"),
        ("data longer than size", b"5\r\nhelloX\r\n0\r\n\r\n"),
        ("data without CRLF", b"5\r\nhello0\r\n\r\n"),
        ("extension with NUL", b"5;a\x00\r\nhello\r\n0\r\n\r\n"),
        ("extension with bare LF", b"5;a\nb\r\nhello\r\n0\r\n\r\n"),
        ("extension with bare CR", b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ("extension with DEL", b"5;a\x7f\r\nhello\r\n0\r\n\r\n"),
        ("last chunk then bare LF", b"5\r\nhello\r\n0\n\n"),
        (
            "last chunk without final CRLF, then a request",
            b"5\r\nhello\r\n0\r\nGET /p/b1/smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "folded trailer",
            b"5\r\nhello\r\n0\r\nx-t: 1\r\n folded\r\n\r\n",
        ),
        ("trailer without colon", b"5\r\nhello\r\n0\r\nx-t\r\n\r\n"),
        (
            "trailer with space before colon",
            b"5\r\nhello\r\n0\r\nx-t : 1\r\n\r\n",
        ),
        ("trailer with NUL", b"5\r\nhello\r\n0\r\nx-t: \x00\r\n\r\n"),
    ] {
        b.bad(format!("chunked: {name}"), post_chunked(body), vec![]);
    }
    // A size that runs into the next request: the proxy waits for data that never comes.
    b.bad(
        "chunked: size larger than what follows",
        post_chunked(format!("100\r\nhello\r\n0\r\n\r\n{SMUGGLED}").as_bytes()),
        vec![],
    );
    // An extra last chunk after the body: it is no request line.
    b.bad(
        "chunked: a second last chunk",
        post_chunked(b"5\r\nhello\r\n0\r\n\r\n0\r\n\r\n"),
        vec![want("POST", "/x", b"hello")],
    );
}

fn line_ends_and_bytes(b: &mut Builder) {
    b.category = "bytes";
    b.either(
        "bare LF line ends",
        "GET /p/b1/x HTTP/1.1\nHost: a\n\n",
        vec![get("/x")],
    );
    b.either(
        "bare LF after the request line",
        "GET /p/b1/x HTTP/1.1\nHost: a\r\n\r\n",
        vec![get("/x")],
    );
    b.either(
        "bare LF ending the head",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\n\n",
        vec![get("/x")],
    );
    // Read with bare LFs as line ends, these are two requests, both parsed by the proxy.
    b.either(
        "bare LF line ends with a body by CL",
        format!("POST /p/b1/x HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello{SMUGGLED}"),
        vec![
            want("POST", "/x", b"hello"),
            get("/slow-smuggled?smuggled=1"),
        ],
    );
    b.bad(
        "bare LF inside a value hides a second Host",
        "GET /p/b1/x HTTP/1.1\r\nX-A: 1\nHost: evil\r\nHost: a\r\n\r\n",
        vec![],
    );
    b.bad(
        "bare CR in a value",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n",
        vec![],
    );
    b.bad(
        "bare CR in the request line",
        "GET /p/b1/x\rHTTP/1.1\r\nHost: a\r\n\r\n",
        vec![],
    );
    b.bad(
        "bare CR ending a line",
        "GET /p/b1/x HTTP/1.1\rHost: a\r\r\n",
        vec![],
    );
    for (name, byte) in [
        ("NUL", 0u8),
        ("SOH", 1),
        ("BS", 8),
        ("VT", 0x0b),
        ("FF", 0x0c),
        ("ESC", 0x1b),
        ("DEL", 0x7f),
    ] {
        let mut value = b"GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX-A: a".to_vec();
        value.push(byte);
        value.extend_from_slice(b"b\r\n\r\n");
        b.bad(format!("{name} in a header value"), value, vec![]);
        let mut name_bytes = b"GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX-".to_vec();
        name_bytes.push(byte);
        name_bytes.extend_from_slice(b"A: 1\r\n\r\n");
        b.bad(format!("{name} in a header name"), name_bytes, vec![]);
        let mut target = b"GET /p/b1/x".to_vec();
        target.push(byte);
        target.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        b.bad(format!("{name} in the target"), target, vec![]);
    }
    b.either(
        "non-ASCII in a value",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX-A: caf\u{e9}\r\n\r\n",
        vec![get("/x")],
    );
    b.bad(
        "space in the target",
        "GET /p/b1/x y HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![],
    );
    b.either(
        "two spaces after the method",
        "GET  /p/b1/x HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/x")],
    );
    b.either(
        "tab as a separator",
        "GET\t/p/b1/x HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/x")],
    );
    b.either(
        "fragment in the target",
        "GET /p/b1/x#f HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/x#f")],
    );
    b.either(
        "empty lines before the request line",
        "\r\n\r\nGET /p/b1/x HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/x")],
    );
}

fn names_and_folding(b: &mut Builder) {
    b.category = "headers";
    b.bad("missing Host", "GET /p/b1/x HTTP/1.1\r\n\r\n", vec![]);
    b.bad(
        "two Host headers",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nHost: evil\r\n\r\n",
        vec![],
    );
    b.bad(
        "two Host headers, different case",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nhost: evil\r\n\r\n",
        vec![],
    );
    b.bad(
        "Host with a space",
        "GET /p/b1/x HTTP/1.1\r\nHost: a b\r\n\r\n",
        vec![],
    );
    b.bad(
        "Host with a path",
        "GET /p/b1/x HTTP/1.1\r\nHost: a/b\r\n\r\n",
        vec![],
    );
    b.bad(
        "Host with userinfo",
        "GET /p/b1/x HTTP/1.1\r\nHost: u@a\r\n\r\n",
        vec![],
    );
    b.bad(
        "Host with a bad port",
        "GET /p/b1/x HTTP/1.1\r\nHost: a:x\r\n\r\n",
        vec![],
    );
    b.bad(
        "Host with space before colon",
        "GET /p/b1/x HTTP/1.1\r\nHost : a\r\n\r\n",
        vec![],
    );
    b.bad(
        "folded Host",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\n evil\r\n\r\n",
        vec![],
    );
    b.either(
        "folded header",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n",
        vec![get("/x")],
    );
    b.either(
        "folded header with a tab",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n",
        vec![get("/x")],
    );
    b.bad(
        "whitespace before the first header",
        "GET /p/b1/x HTTP/1.1\r\n Host: a\r\n\r\n",
        vec![],
    );
    b.bad(
        "space inside a name",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX A: 1\r\n\r\n",
        vec![],
    );
    b.bad(
        "space before a colon",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n",
        vec![],
    );
    b.bad(
        "empty name",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n",
        vec![],
    );
    b.bad(
        "a line without a colon",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n",
        vec![],
    );
    b.either(
        "a colon in the value",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX-A:: 1\r\n\r\n",
        vec![get("/x")],
    );
    b.bad(
        "a name with a slash",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX/A: 1\r\n\r\n",
        vec![],
    );
    b.bad(
        "101 header lines",
        format!(
            "GET /p/b1/x HTTP/1.1\r\nHost: a\r\n{}\r\n",
            "X-H: 1\r\n".repeat(100)
        ),
        vec![],
    );
    b.bad(
        "a 70 KiB header",
        format!(
            "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(70 * 1024)
        ),
        vec![],
    );
    b.bad(
        "a 70 KiB target",
        format!(
            "GET /p/b1/{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "t".repeat(70 * 1024)
        ),
        vec![],
    );
    b.bad(
        "an endless head",
        format!(
            "GET /p/b1/x HTTP/1.1\r\nHost: a\r\n{}",
            "X-H: 1\r\n".repeat(20_000)
        ),
        vec![],
    );
}

fn versions_and_forms(b: &mut Builder) {
    b.category = "versions";
    b.either("HTTP/1.0", "GET /p/b1/x HTTP/1.0\r\n\r\n", vec![get("/x")]);
    b.either(
        "HTTP/1.0 keep-alive, pipelined",
        "GET /p/b1/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /p/b1/b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        vec![get("/a"), get("/b")],
    );
    b.bad(
        "HTTP/1.0 without keep-alive closes after one",
        "GET /p/b1/a HTTP/1.0\r\n\r\nGET /p/b1/b HTTP/1.0\r\n\r\n",
        vec![get("/a")],
    );
    b.either(
        "HTTP/1.0 POST by CL",
        "POST /p/b1/x HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
        vec![want("POST", "/x", b"hello")],
    );
    b.bad(
        "HTTP/1.0 with CL and TE",
        cat(&[b"POST /p/b1/x HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", SMUGGLED.as_bytes()]),
        vec![],
    );
    for version in [
        "HTTP/1.2",
        "HTTP/2.0",
        "HTTP/0.9",
        "HTTP/11",
        "http/1.1",
        "HTTP/1.1 ",
        "HTTP/1.01",
    ] {
        b.bad(
            format!("version {version:?}"),
            format!("GET /p/b1/x {version}\r\nHost: a\r\n\r\n"),
            vec![],
        );
    }
    b.bad("HTTP/0.9 request line", "GET /p/b1/x\r\n\r\n", vec![]);
    b.bad("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", vec![]);
    b.either(
        "absolute form",
        "GET http://a/p/b1/x HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/x")],
    );
    b.either(
        "absolute form with another Host",
        "GET http://a/p/b1/x HTTP/1.1\r\nHost: evil\r\n\r\n",
        vec![get("/x")],
    );
    b.either(
        "absolute form, https",
        "GET https://a/p/b1/x HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/x")],
    );
    b.bad(
        "absolute form without a path",
        "GET http://a HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![],
    );
    b.bad(
        "asterisk form",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![],
    );
    b.bad(
        "authority form",
        "CONNECT a:80 HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![],
    );
    b.bad(
        "CONNECT to the backend's path",
        "CONNECT /p/b1/x HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![],
    );
    b.either(
        "Upgrade without Connection: upgrade",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\nGET /p/b1/y HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/x"), get("/y")],
    );
    b.either(
        "Upgrade the backend declines",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\nGET /p/b1/y HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/x"), get("/y")],
    );
    b.either(
        "h2c upgrade the backend declines",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /p/b1/y HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/x"), get("/y")],
    );
    b.either(
        "websocket upgrade without a key, with a body",
        post(
            "Connection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n",
            b"hello",
        ),
        vec![want("POST", "/x", b"hello")],
    );
    b.either(
        "Expect: 100-continue, body sent at once",
        post("Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello"),
        vec![want("POST", "/x", b"hello")],
    );
    b.parts(
        "Expect: 100-continue, body sent later",
        vec![
            Part::Send(post("Expect: 100-continue\r\nContent-Length: 5\r\n", b"")),
            Part::Pause(100),
            Part::Send(b"hello".to_vec()),
        ],
        vec![want("POST", "/x", b"hello")],
        true,
    );
    b.either(
        "Expect: something else",
        post("Expect: teapot\r\nContent-Length: 5\r\n", b"hello"),
        vec![want("POST", "/x", b"hello")],
    );
}

fn pipelines_and_streams(b: &mut Builder) {
    b.category = "pipelines";
    b.ok(
        "three pipelined GETs",
        "GET /p/b1/1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p/b1/2 HTTP/1.1\r\nHost: a\r\n\r\nGET /p/b1/3 HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/1"), get("/2"), get("/3")],
    );
    b.ok(
        "GET, POST by CL, chunked POST, GET",
        cat(&[
            b"GET /p/b1/1 HTTP/1.1\r\nHost: a\r\n\r\n",
            &post("Content-Length: 3\r\n", b"abc"),
            &post("Transfer-Encoding: chunked\r\n", &chunk(b"defg", 3)),
            b"GET /p/b1/4 HTTP/1.1\r\nHost: a\r\n\r\n",
        ]),
        vec![
            get("/1"),
            want("POST", "/x", b"abc"),
            want("POST", "/x", b"defg"),
            get("/4"),
        ],
    );
    b.ok(
        "a slow answer, then a pipelined request",
        "GET /p/b1/slow HTTP/1.1\r\nHost: a\r\n\r\nGET /p/b1/after HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/slow"), get("/after")],
    );
    b.bad(
        "a valid request, then a malformed one, then a valid one",
        "GET /p/b1/1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p/b1/2 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET /p/b1/3 HTTP/1.1\r\nHost: a\r\n\r\n",
        vec![get("/1")],
    );
    b.parts(
        "a head sent a byte at a time",
        "GET /p/b1/x HTTP/1.1\r\nHost: a\r\n\r\n"
            .bytes()
            .flat_map(|c| [Part::Send(vec![c]), Part::Pause(1)])
            .collect(),
        vec![get("/x")],
        true,
    );
    b.parts(
        "a body sent in pieces",
        vec![
            Part::Send(post("Content-Length: 10\r\n", b"01")),
            Part::Pause(30),
            Part::Send(b"234".to_vec()),
            Part::Pause(30),
            Part::Send(b"56789".to_vec()),
        ],
        vec![want("POST", "/x", b"0123456789")],
        true,
    );
    b.parts(
        "a chunked body sent in pieces, split inside sizes and CRLFs",
        vec![
            Part::Send(post("Transfer-Encoding: chunked\r\n", b"5\r")),
            Part::Pause(30),
            Part::Send(b"\nhel".to_vec()),
            Part::Pause(30),
            Part::Send(b"lo\r\n1".to_vec()),
            Part::Pause(30),
            Part::Send(b"0\r\n0123456789abcdef\r\n0\r".to_vec()),
            Part::Pause(30),
            Part::Send(b"\n\r\n".to_vec()),
        ],
        vec![want("POST", "/x", b"hello0123456789abcdef")],
        true,
    );
    b.parts(
        "a malformed chunk after a pause",
        vec![
            Part::Send(post("Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n")),
            Part::Pause(50),
            Part::Send(cat(&[b"zz\r\n0\r\n\r\n", SMUGGLED.as_bytes()])),
        ],
        vec![],
        false,
    );
    b.cases.last_mut().expect("just pushed").invalid_tail = true;
    b.parts(
        "half-close after a request",
        vec![
            Part::Send(b"GET /p/b1/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
            Part::HalfClose,
        ],
        vec![get("/x")],
        true,
    );
    b.parts(
        "half-close after a slow request and a body",
        vec![
            Part::Send(post("Content-Length: 5\r\n", b"hello")),
            Part::Send(b"GET /p/b1/slow HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
            Part::HalfClose,
        ],
        vec![want("POST", "/x", b"hello"), get("/slow")],
        true,
    );
    b.parts(
        "half-close inside a body",
        vec![
            Part::Send(post("Content-Length: 10\r\n", b"hello")),
            Part::HalfClose,
        ],
        vec![],
        false,
    );
    b.parts(
        "half-close inside a head",
        vec![
            Part::Send(b"GET /p/b1/x HTTP/1.1\r\nHo".to_vec()),
            Part::HalfClose,
        ],
        vec![],
        false,
    );
}

/// The crafted responses, by number (`GET /resp/N`).
pub fn crafted_responses() -> &'static [Crafted] {
    static ALL: OnceLock<Vec<Crafted>> = OnceLock::new();
    ALL.get_or_init(|| {
        use ResponseWant::*;
        let c = |name, bytes: &str, close_after, want| Crafted {
            name,
            bytes: bytes.as_bytes().to_vec(),
            close_after,
            want,
        };
        let evil = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil";
        vec![
            c("plain", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, Body(b"hello".to_vec())),
            c("Connection lists Content-Length", "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello", false, Body(b"hello".to_vec())),
            c("Connection lists Transfer-Encoding", "HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false, Body(b"hello".to_vec())),
            c("a second response after the body", &format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello{evil}"), false, BodyOrRefused(b"hello".to_vec())),
            c("chunked and Content-Length", &format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n{evil}"), false, BodyOrRefused(b"hello".to_vec())),
            c("two different lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 4\r\n\r\nhello", false, Refused),
            c("a bad length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", false, Refused),
            c("chunked, then identity: until close", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\nhello", true, BodyOrRefused(b"hello".to_vec())),
            c("chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false, Refused),
            c("a malformed chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", false, Refused),
            c("bare LF in the head", "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", false, BodyOrRefused(b"hello".to_vec())),
            c("a folded header", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 5\r\n\r\nhello", false, BodyOrRefused(b"hello".to_vec())),
            c("space before a colon", "HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\nhello", false, Refused),
            c("NUL in a value", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello", false, Refused),
            c("a body on a 204", &format!("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello{evil}"), false, Body(Vec::new())),
            c("a 304 with a length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", false, Body(Vec::new())),
            c("100 Continue first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, Body(b"hello".to_vec())),
            c("101 to a request that asked for none", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nhello", false, Refused),
            c("HTTP/1.0 until close", "HTTP/1.0 200 OK\r\n\r\nhello", true, Body(b"hello".to_vec())),
            c("HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello", false, Body(b"hello".to_vec())),
            c("a status of four digits", "HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello", false, Refused),
            c("no reason phrase", "HTTP/1.1 200\r\nContent-Length: 5\r\n\r\nhello", false, Body(b"hello".to_vec())),
            c("short body then close", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", true, Refused),
            c("trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n", false, Body(b"hello".to_vec())),
            c("a head of 70 KiB", &format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 5\r\n\r\nhello", "b".repeat(70 * 1024)), false, Refused),
        ]
    })
}

/// Crafted response `n`, if there is one.
pub fn crafted_response(n: usize) -> Option<&'static Crafted> {
    crafted_responses().get(n)
}
