//! Finding the end of a chunked body (RFC 9112 §7.1) without decoding it: the relay
//! passes chunked bodies through as they are and only needs to know where they stop.
//!
//! Strict, because what passes is read again by a backend whose parser may be lenient in
//! other ways: at most 15 hex digits of size; whitespace after the size only before a `;`;
//! extensions and trailer lines of visible ASCII, space and tab only (trailer lines as
//! `name: value`, no folding); every line ended by CRLF. Anything else is [`Malformed`].

/// A malformed chunked body.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct Malformed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Hex digits of a chunk size (`digits` so far).
    Size {
        digits: u8,
    },
    /// Whitespace after a chunk size, which only a `;` may follow.
    SizeWs,
    /// A chunk extension, up to its CR.
    Extension,
    /// The LF after a chunk size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// The start of a trailer line, or the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// The scanner's place in one chunked body.
#[derive(Debug, Clone)]
pub struct Chunked {
    step: Step,
    /// The current chunk's size while reading it, then the data bytes still to come.
    remaining: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            step: Step::Size { digits: 0 },
            remaining: 0,
        }
    }
}

impl Chunked {
    /// Whether the body has ended (the last chunk and the trailers were seen).
    pub fn done(&self) -> bool {
        self.step == Step::Done
    }

    /// Scans the next bytes of the body and returns how many of them belong to it: all of
    /// them, or fewer if the body ends inside `bytes`.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            self.step = match self.step {
                Step::Done => return Ok(i),
                Step::Data => {
                    let n = self.remaining.min((bytes.len() - i) as u64);
                    self.remaining -= n;
                    i += n as usize;
                    if self.remaining == 0 {
                        Step::DataCr
                    } else {
                        Step::Data
                    }
                }
                step => {
                    i += 1;
                    self.after(step, bytes[i - 1])?
                }
            };
        }
        Ok(i)
    }

    /// The step after byte `b` of a size line, a line end or a trailer line.
    fn after(&mut self, step: Step, b: u8) -> Result<Step, Malformed> {
        Ok(match step {
            Step::Size { digits } => match (b as char).to_digit(16) {
                Some(d) if digits < 15 => {
                    self.remaining = self.remaining * 16 + u64::from(d);
                    Step::Size { digits: digits + 1 }
                }
                None if digits > 0 && b == b';' => Step::Extension,
                None if digits > 0 && matches!(b, b' ' | b'\t') => Step::SizeWs,
                None if digits > 0 && b == b'\r' => Step::SizeLf,
                _ => return Err(Malformed),
            },
            Step::SizeWs => match b {
                b' ' | b'\t' => Step::SizeWs,
                b';' => Step::Extension,
                _ => return Err(Malformed),
            },
            Step::Extension if b == b'\r' => Step::SizeLf,
            Step::Extension if visible(b) => Step::Extension,
            Step::SizeLf if self.remaining == 0 => expect(b, b'\n', Step::TrailerStart)?,
            Step::SizeLf => expect(b, b'\n', Step::Data)?,
            Step::DataCr => expect(b, b'\r', Step::DataLf)?,
            Step::DataLf => expect(b, b'\n', Step::Size { digits: 0 })?,
            Step::TrailerStart if b == b'\r' => Step::EndLf,
            Step::TrailerStart | Step::TrailerName if token(b) => Step::TrailerName,
            Step::TrailerName if b == b':' => Step::TrailerValue,
            Step::TrailerValue if b == b'\r' => Step::TrailerLf,
            Step::TrailerValue if visible(b) => Step::TrailerValue,
            Step::TrailerLf => expect(b, b'\n', Step::TrailerStart)?,
            Step::EndLf => expect(b, b'\n', Step::Done)?,
            // `scan` handles these two itself.
            Step::Data | Step::Done => step,
            Step::Extension | Step::TrailerStart | Step::TrailerName | Step::TrailerValue => {
                return Err(Malformed)
            }
        })
    }
}

/// Visible ASCII, space or tab: what an extension or a trailer's value may hold.
fn visible(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | 0x21..=0x7e)
}

/// A character of a token (RFC 9110 §5.6.2): a trailer's name.
fn token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `next` if `got` is the byte wanted.
fn expect(got: u8, want: u8, next: Step) -> Result<Step, Malformed> {
    if got == want {
        Ok(next)
    } else {
        Err(Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `body` split at every possible point into two pieces, and returns how many
    /// bytes belonged to the body each time (they must all agree).
    fn scan_split(body: &[u8]) -> Result<usize, Malformed> {
        let mut whole = Chunked::default();
        let n = whole.scan(body)?;
        for cut in 0..=body.len() {
            let mut c = Chunked::default();
            let first = c.scan(&body[..cut])?;
            let second = if c.done() { 0 } else { c.scan(&body[cut..])? };
            assert_eq!(first + second, n, "split at {cut}");
            assert_eq!(c.done(), whole.done(), "split at {cut}");
        }
        Ok(n)
    }

    #[test]
    fn finds_the_end_of_a_body() {
        let body = b"5\r\nhello\r\n1a ; ext=\"1 2\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        assert_eq!(scan_split(body), Ok(body.len() - 4));
        let mut c = Chunked::default();
        c.scan(body).unwrap();
        assert!(c.done());
    }

    #[test]
    fn passes_trailers() {
        let body = b"3\r\nabc\r\n0\r\nx-sum: 1\r\nx-more: 2\r\n\r\n";
        assert_eq!(scan_split(body), Ok(body.len()));
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let mut c = Chunked::default();
        assert_eq!(c.scan(b"10\r\n0123456789"), Ok(14));
        assert!(!c.done());
        assert_eq!(c.scan(b"abcdef\r\n0\r\n"), Ok(11));
        assert!(!c.done());
        assert_eq!(c.scan(b"\r\n"), Ok(2));
        assert!(c.done());
    }

    #[test]
    fn rejects_malformed_bodies() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello",
            b"5\r\nhelloX",
            b"0\r\nbad\n",
            b"0\r\nbad\r\n",
            b"0\r\n x: 1\r\n",
            b"0\r\nx : 1\r\n",
            b"0\r\nx: \x01\r\n",
            b"fffffffffffffffff\r\n",
            b"5 \r\n",
            b"5\t\r\n",
            b"5;a\nb\r\n",
            b"5;a\x00\r\n",
            b"5;a\x7f\r\n",
            b"5;\xff\r\n",
            b"5\r\nhello\n",
            b"5\r\nhello\r\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b"\r\n5\r\n",
        ] {
            let mut c = Chunked::default();
            assert_eq!(
                c.scan(bad),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
