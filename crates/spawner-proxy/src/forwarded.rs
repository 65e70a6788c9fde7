//! The forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`): whose word they are.
//!
//! Applications build absolute links (password resets, OAuth callbacks) and log client
//! addresses from them, so a client must not be able to write them. A proxy that is the
//! edge drops every one a client sent and sets its own; only a peer known to be a proxy in
//! front of this one ([`PeerTrust::Trusted`]: inside `--trusted-proxy`, or the Kubernetes
//! router proven to its sidecar by [`ROUTER_PROOF`]) has its headers kept and extended.

/// Whether the peer that sent a request may speak for the client through the forwarding
/// headers. Decided per request by the route function that makes the [`crate::Target`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PeerTrust {
    /// The proxy is the edge (the default): the client's forwarding headers are dropped,
    /// and the backend gets Spawner's own: `X-Forwarded-For` = the peer's address,
    /// `X-Forwarded-Proto: http`, `X-Forwarded-Host` = the request's `Host`, and
    /// `X-Forwarded-Prefix` when a prefix was stripped.
    #[default]
    Untrusted,
    /// The peer is a proxy in front of this one: its `X-Forwarded-Proto`, `-Host`, `-Port`,
    /// `-Prefix` (unless this proxy strips a prefix of its own), `Forwarded` and
    /// `X-Real-IP` pass; the peer's address is appended to its `X-Forwarded-For`; `-Proto`
    /// and `-Host` are set when it sent none.
    Trusted,
}

/// The header by which the Kubernetes router proves itself to a backend's sidecar: a secret
/// per backend (the controller gives the sidecar the same value). Never forwarded to any
/// backend by any Spawner proxy, whatever the mode: it is stripped like a hop-by-hop header.
pub const ROUTER_PROOF: &str = "x-spawner-router-proof";

/// A forwarding header, or the router's proof, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    For,
    Proto,
    Host,
    Prefix,
    /// `X-Forwarded-Port`, `Forwarded`, `X-Real-IP`: passed from a trusted peer, dropped
    /// otherwise, never set.
    Other,
    RouterProof,
}

/// Which forwarding header `name` is, if any (any case). Cheap for the headers that are
/// none of them, which is nearly all: the relay asks this of every header of every request.
pub fn kind(name: &str) -> Option<Kind> {
    let b = name.as_bytes();
    // Every name here starts with `x` or `f`, and is 9 or 15 to 22 bytes long.
    match (b.len(), b.first().map(u8::to_ascii_lowercase)) {
        (9, Some(b'f')) if name.eq_ignore_ascii_case("forwarded") => Some(Kind::Other),
        (9, Some(b'x')) if name.eq_ignore_ascii_case("x-real-ip") => Some(Kind::Other),
        (15..=18, Some(b'x')) => {
            let (head, tail) = b.split_at(12);
            if !head.eq_ignore_ascii_case(b"x-forwarded-") {
                return None;
            }
            [
                (&b"for"[..], Kind::For),
                (b"proto", Kind::Proto),
                (b"host", Kind::Host),
                (b"prefix", Kind::Prefix),
                (b"port", Kind::Other),
            ]
            .into_iter()
            .find(|(t, _)| tail.eq_ignore_ascii_case(t))
            .map(|(_, k)| k)
        }
        (22, Some(b'x')) if name.eq_ignore_ascii_case(ROUTER_PROOF) => Some(Kind::RouterProof),
        _ => None,
    }
}

/// Whether `given` is `expected`, in time that depends on their lengths only: a proof
/// compared byte by byte with an early exit would tell a client how much of it is right.
pub fn proof_matches(expected: &[u8], given: &[u8]) -> bool {
    expected.len() == given.len()
        && expected
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_forwarding_headers_in_any_case() {
        for (name, want) in [
            ("X-Forwarded-For", Some(Kind::For)),
            ("x-forwarded-proto", Some(Kind::Proto)),
            ("X-FORWARDED-HOST", Some(Kind::Host)),
            ("x-forwarded-prefix", Some(Kind::Prefix)),
            ("X-Forwarded-Port", Some(Kind::Other)),
            ("Forwarded", Some(Kind::Other)),
            ("X-Real-IP", Some(Kind::Other)),
            ("X-Spawner-Router-Proof", Some(Kind::RouterProof)),
            ("Host", None),
            ("x-forwarded-fo", None),
            ("x-forwarded-form", None),
            ("x-forwardedXfor", None),
            ("forwarder", None),
            ("x-real-ipv6", None),
            ("content-length", None),
            ("", None),
        ] {
            assert_eq!(kind(name), want, "{name}");
        }
    }

    #[test]
    fn a_proof_matches_only_itself() {
        assert!(proof_matches(b"abc123", b"abc123"));
        assert!(!proof_matches(b"abc123", b"abc124"));
        assert!(!proof_matches(b"abc123", b"abc12"));
        assert!(!proof_matches(b"abc123", b""));
    }
}
