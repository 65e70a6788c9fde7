//! The router's key, and the proof it derives for each backend's sidecar.
//!
//! A sidecar keeps the forwarding headers (`X-Forwarded-*`) of the router alone. The router
//! proves itself with [`spawner_proxy::forwarded::ROUTER_PROOF`], whose value is
//! HMAC-SHA256(key, backend name) in hex: the controller, which has the same key (the
//! Secret `spawner-router`), puts that value into the sidecar's environment
//! (`controller/pod.rs`, `add_router_proof`). One proof per backend, so that a proof read
//! from one Pod's spec vouches for requests to that backend only.

use ring::hmac;
use std::fmt;

/// The variable the router and the controller read the key from.
pub const ROUTER_KEY_ENV: &str = "SPAWNER_ROUTER_KEY";
/// Shortest key accepted: 16 characters, as the API's token.
const MIN_LEN: usize = 16;

/// The router's key (`SPAWNER_ROUTER_KEY`).
#[derive(Clone)]
pub struct RouterKey(hmac::Key);

/// A key too short to be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ROUTER_KEY_ENV} must be at least {MIN_LEN} characters (e.g. `openssl rand -hex 32`)")]
pub struct WeakKey;

impl RouterKey {
    pub fn new(secret: &str) -> Result<Self, WeakKey> {
        if secret.trim().len() < MIN_LEN {
            return Err(WeakKey);
        }
        Ok(RouterKey(hmac::Key::new(
            hmac::HMAC_SHA256,
            secret.as_bytes(),
        )))
    }

    /// The proof of the router to backend `name`'s sidecar: 64 hex digits.
    pub fn proof(&self, name: &str) -> String {
        let tag = hmac::sign(&self.0, name.as_bytes());
        let mut hex = String::with_capacity(64);
        for b in tag.as_ref() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        hex
    }
}

impl fmt::Debug for RouterKey {
    /// Never the key itself: configurations are logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouterKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_are_hmac_sha256_in_hex_per_backend() {
        let key = RouterKey::new("0123456789abcdef").expect("key");
        let p = key.proof("b1");
        assert_eq!(p.len(), 64);
        assert!(p
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(p, key.proof("b1"), "stable");
        assert_ne!(p, key.proof("b2"), "per backend");
        let other = RouterKey::new("0123456789abcdeF").expect("key");
        assert_ne!(p, other.proof("b1"), "per key");
        // RFC 4231's test case 2 (key "Jefe" is too short for a router key, so the value is
        // checked through ring directly): the hex encoding matches the published digest.
        let jefe = RouterKey(hmac::Key::new(hmac::HMAC_SHA256, b"Jefe"));
        assert_eq!(
            jefe.proof("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_short_key_is_refused_and_never_shown() {
        assert_eq!(RouterKey::new("short").err(), Some(WeakKey));
        assert_eq!(RouterKey::new("               x").err(), Some(WeakKey));
        let key = RouterKey::new("a-secret-of-16-chars").expect("key");
        assert!(!format!("{key:?}").contains("secret"));
    }
}
