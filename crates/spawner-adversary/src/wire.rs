//! Strict HTTP/1.1 parsing (RFC 9112) for the suite's two ends: the backend splits the bytes
//! it receives into requests with it, and the client reads its responses with it. Written
//! apart from the proxy's own parsers on purpose: a shared mistake would hide itself.

/// One request as the backend read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// Header names lower-cased, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Request {
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// What the strict parser makes of the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes are needed.
    Partial,
    /// A whole message, and how many bytes it took.
    Complete(T, usize),
    /// Not a message that can be framed with certainty; why.
    Invalid(String),
}

fn trim(bytes: &[u8]) -> &[u8] {
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

/// The body framing that headers state, by RFC 9112 §6 without any leniency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Length(usize),
    Chunked,
    UntilClose,
}

fn framing(headers: &[httparse::Header<'_>], request: bool) -> Result<BodyFraming, String> {
    let mut te: Vec<Vec<u8>> = Vec::new();
    let mut lengths: Vec<&[u8]> = Vec::new();
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te.extend(
                h.value
                    .split(|b| *b == b',')
                    .map(trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| c.to_ascii_lowercase()),
            );
        } else if h.name.eq_ignore_ascii_case("content-length") {
            lengths.push(trim(h.value));
        }
    }
    if !te.is_empty()
        || headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        if !lengths.is_empty() {
            return Err("both Transfer-Encoding and Content-Length".into());
        }
        if te.last().map(Vec::as_slice) == Some(b"chunked")
            && te.iter().filter(|c| c.as_slice() == b"chunked").count() == 1
        {
            return Ok(BodyFraming::Chunked);
        }
        if request {
            return Err(format!("request Transfer-Encoding {te:?}"));
        }
        return Ok(BodyFraming::UntilClose);
    }
    match lengths.as_slice() {
        [] if request => Ok(BodyFraming::Length(0)),
        [] => Ok(BodyFraming::UntilClose),
        [one] => {
            if one.is_empty() || one.len() > 12 || !one.iter().all(u8::is_ascii_digit) {
                return Err(format!("Content-Length {:?}", String::from_utf8_lossy(one)));
            }
            let n = std::str::from_utf8(one)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("Content-Length")?;
            Ok(BodyFraming::Length(n))
        }
        _ => Err("more than one Content-Length".into()),
    }
}

/// Decodes a chunked body at the start of `buf`: the data, and the bytes it took.
pub fn dechunk(buf: &[u8]) -> Parsed<Vec<u8>> {
    let mut data = Vec::new();
    let mut i = 0;
    loop {
        let Some(eol) = find_crlf(&buf[i..]) else {
            return if buf[i..].contains(&b'\n') {
                Parsed::Invalid("bare LF in a chunk size line".into())
            } else {
                Parsed::Partial
            };
        };
        let line = &buf[i..i + eol];
        let size_text = match line.iter().position(|b| *b == b';') {
            Some(semi) => trim(&line[..semi]),
            None => line,
        };
        if size_text.is_empty()
            || size_text.len() > 15
            || !size_text.iter().all(u8::is_ascii_hexdigit)
            || line.iter().any(|b| *b < 0x20 && *b != b'\t' || *b == 0x7f)
        {
            return Parsed::Invalid(format!(
                "chunk size line {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_text).unwrap_or("x"), 16)
            .unwrap_or(usize::MAX);
        i += eol + 2;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let Some(eol) = find_crlf(&buf[i..]) else {
                    return Parsed::Partial;
                };
                let line = &buf[i..i + eol];
                i += eol + 2;
                if line.is_empty() {
                    return Parsed::Complete(data, i);
                }
                let colon = line.iter().position(|b| *b == b':');
                if matches!(line.first(), Some(b' ' | b'\t'))
                    || colon
                        .is_none_or(|c| c == 0 || line[..c].iter().any(|b| !b.is_ascii_graphic()))
                    || line.iter().any(|b| *b < 0x20 && *b != b'\t')
                {
                    return Parsed::Invalid(format!(
                        "trailer line {:?}",
                        String::from_utf8_lossy(line)
                    ));
                }
            }
        }
        if buf.len() < i.saturating_add(size).saturating_add(2) {
            return Parsed::Partial;
        }
        data.extend_from_slice(&buf[i..i + size]);
        i += size;
        if &buf[i..i + 2] != b"\r\n" {
            return Parsed::Invalid("chunk data not followed by CRLF".into());
        }
        i += 2;
    }
}

/// Where the first line of `bytes` ends in CRLF; `None` if it has not ended yet, or ends
/// in a bare LF (the callers look for that).
fn find_crlf(bytes: &[u8]) -> Option<usize> {
    let lf = bytes.iter().position(|b| *b == b'\n')?;
    (lf > 0 && bytes[lf - 1] == b'\r').then(|| lf - 1)
}

/// Splits the next request off the start of `buf`, strictly: CRLF line ends, one `Host`,
/// unambiguous framing.
pub fn request(buf: &[u8]) -> Parsed<Request> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(e) => return Parsed::Invalid(format!("request head: {e}")),
    };
    // httparse takes a bare LF as a line end; a backend in front of which a proxy lets one
    // through may not.
    let head = &buf[..head_len];
    if head
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        return Parsed::Invalid("bare LF in a request head".into());
    }
    let hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    // HTTP/1.0 needs no Host, and knows no Transfer-Encoding.
    let http11 = req.version == Some(1);
    if hosts > 1 || (http11 && hosts == 0) {
        return Parsed::Invalid(format!("{hosts} Host headers"));
    }
    if !http11
        && req
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        return Parsed::Invalid("Transfer-Encoding in HTTP/1.0".into());
    }
    let framing = match framing(req.headers, true) {
        Ok(f) => f,
        Err(e) => return Parsed::Invalid(e),
    };
    let (body, used) = match framing {
        BodyFraming::Length(n) if buf.len() - head_len >= n => {
            (buf[head_len..head_len + n].to_vec(), head_len + n)
        }
        BodyFraming::Length(_) => return Parsed::Partial,
        BodyFraming::Chunked => match dechunk(&buf[head_len..]) {
            Parsed::Complete(body, n) => (body, head_len + n),
            Parsed::Partial => return Parsed::Partial,
            Parsed::Invalid(e) => return Parsed::Invalid(e),
        },
        BodyFraming::UntilClose => return Parsed::Invalid("request read until close".into()),
    };
    Parsed::Complete(
        Request {
            method: req.method.unwrap_or_default().to_string(),
            target: req.path.unwrap_or_default().to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                .collect(),
            body,
        },
        used,
    )
}

/// One response as the client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Splits the next response off `buf` (`eof`: the connection has ended, which ends a body
/// read until close). `head_request`: it answers a HEAD (no body).
pub fn response(buf: &[u8], eof: bool, head_request: bool) -> Parsed<Response> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(e) => return Parsed::Invalid(format!("response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let bodiless = head_request || status < 200 || status == 204 || status == 304;
    let framing = if bodiless {
        BodyFraming::Length(0)
    } else {
        match framing(resp.headers, false) {
            Ok(f) => f,
            Err(e) => return Parsed::Invalid(e),
        }
    };
    let rest = &buf[head_len..];
    let (body, used) = match framing {
        BodyFraming::Length(n) if rest.len() >= n => (rest[..n].to_vec(), head_len + n),
        BodyFraming::Length(_) => return Parsed::Partial,
        BodyFraming::Chunked => match dechunk(rest) {
            Parsed::Complete(body, n) => (body, head_len + n),
            Parsed::Partial => return Parsed::Partial,
            Parsed::Invalid(e) => return Parsed::Invalid(e),
        },
        BodyFraming::UntilClose if eof => (rest.to_vec(), buf.len()),
        BodyFraming::UntilClose => return Parsed::Partial,
    };
    Parsed::Complete(
        Response {
            status,
            headers: resp
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                .collect(),
            body,
        },
        used,
    )
}

/// The chunked coding of `data` in chunks of `size` bytes.
pub fn chunk(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in data.chunks(size.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_requests_strictly() {
        let two = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
        let Parsed::Complete(first, n) = request(two) else {
            panic!("first")
        };
        assert_eq!(
            (first.target.as_str(), first.body.as_slice()),
            ("/a", &b"abc"[..])
        );
        let Parsed::Complete(second, _) = request(&two[n..]) else {
            panic!("second")
        };
        assert_eq!(second.target, "/b");
        let chunked = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n";
        assert!(
            matches!(request(chunked), Parsed::Complete(r, n) if r.body == b"abc" && n == chunked.len())
        );
        assert!(matches!(
            request(b"GET / HTTP/1.0\r\n\r\n"),
            Parsed::Complete(..)
        ));
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\nHost: h\n\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        ] {
            assert!(matches!(request(bad), Parsed::Invalid(_)), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            dechunk(&chunk(b"hello world", 4)),
            Parsed::Complete(b"hello world".to_vec(), 31)
        );
    }
}
