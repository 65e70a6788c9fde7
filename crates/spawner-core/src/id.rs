//! Backend ids: unguessable, DNS-label safe.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Letters and digits of the RFC 4648 base32 alphabet, lowercased: no ambiguous `0`/`1`.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// A leading letter (log2 26 = 4.7 bits) and 25 symbols of 5 bits: 129.7 random bits. The
/// letter makes the id a valid RFC 1035 label (a Kubernetes Service name must start with one).
pub const ID_LEN: usize = 26;

/// The id of a backend. The id is the capability for the status routes, so it carries at
/// least 128 bits from the operating system's random source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackendId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("a backend id is 1 to 40 lowercase letters and digits, starting with a letter")]
    Malformed,
}

impl BackendId {
    /// A fresh id. Fails only if the operating system's random source does.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; ID_LEN];
        getrandom::fill(&mut bytes)?;
        let mut id = String::with_capacity(ID_LEN);
        // The first character is a letter (26 of 32 symbols); take it from its own byte.
        id.push(ALPHABET[(bytes[0] as usize) % 26] as char);
        for b in &bytes[1..] {
            id.push(ALPHABET[(*b as usize) & 31] as char);
        }
        Ok(BackendId(id))
    }

    /// Parses an id from outside (a path segment, a host name), refusing anything that is
    /// not in the id alphabet, so that it is safe in SQL, paths, logs and DNS.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 40
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(BackendId(s.to_string()))
        } else {
            Err(IdError::Malformed)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = BackendId::generate().unwrap();
        let b = BackendId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), ID_LEN);
        assert_eq!(BackendId::parse(a.as_str()).unwrap(), a);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "Abc",
            "1abc",
            "ab-c",
            "ab/c",
            "a'; drop",
            &"a".repeat(41),
        ] {
            assert_eq!(BackendId::parse(bad), Err(IdError::Malformed), "{bad}");
        }
    }
}
