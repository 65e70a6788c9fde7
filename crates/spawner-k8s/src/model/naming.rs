//! Object names and public URLs.
//!
//! A backend's object name is its id. A keyed spawn derives the name from the key, so that
//! two concurrent spawns with one key race on the API server's name uniqueness instead of
//! on a list-then-create; the derivation is keyed with a secret (HMAC-SHA256) so that the
//! id stays unguessable to whoever knows the key.

use ring::hmac;
use spawner_core::BackendId;

/// The id alphabet of spawner-core's ids.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The id of the backend for `key` in `namespace`: a letter then 25 base32 symbols taken
/// from HMAC-SHA256(secret, namespace NUL key), 129 bits, the same shape as a random id.
pub fn name_for_key(secret: &[u8], namespace: &str, key: &str) -> BackendId {
    let hkey = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&hkey);
    ctx.update(namespace.as_bytes());
    ctx.update(&[0]);
    ctx.update(key.as_bytes());
    let tag = ctx.sign();
    let bytes = tag.as_ref();
    let mut id = String::with_capacity(spawner_core::id::ID_LEN);
    id.push(ALPHABET[(bytes[0] as usize) % 26] as char);
    for b in &bytes[1..spawner_core::id::ID_LEN] {
        id.push(ALPHABET[(*b as usize) & 31] as char);
    }
    // Built from the id alphabet with a leading letter: always a valid id.
    BackendId::parse(&id).unwrap_or_else(|_| unreachable!("derived ids use the id alphabet"))
}

/// Where browsers reach backends: `{base}/p/{id}/` by path, or `{scheme}://{id}.{domain}/`
/// when a domain is configured for host routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    /// The router's public base URL, without a trailing slash, e.g. `https://spawner.example`.
    pub base: String,
    /// With a domain, backends are served at `{id}.{domain}`.
    pub domain: Option<String>,
}

impl Urls {
    pub fn new(base: &str, domain: Option<String>) -> Self {
        Urls {
            base: base.trim_end_matches('/').to_string(),
            domain,
        }
    }

    /// The path prefix the browser uses, passed to the backend as `SPAWNER_BASE_PATH`.
    pub fn base_path(&self, id: &str) -> String {
        match &self.domain {
            Some(_) => "/".to_string(),
            None => format!("/p/{id}/"),
        }
    }

    /// The backend's public URL, passed to it as `SPAWNER_PUBLIC_URL`.
    pub fn backend_url(&self, id: &str) -> String {
        match &self.domain {
            Some(domain) => {
                let scheme = self.base.split_once("://").map_or("http", |(s, _)| s);
                format!("{scheme}://{id}.{domain}/")
            }
            None => format!("{}/p/{id}/", self.base),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_stable_ids_that_depend_on_the_secret_and_namespace() {
        let a = name_for_key(b"s1", "default", "doc-42");
        assert_eq!(a, name_for_key(b"s1", "default", "doc-42"));
        assert_eq!(a.as_str().len(), spawner_core::id::ID_LEN);
        assert_ne!(a, name_for_key(b"s2", "default", "doc-42"));
        assert_ne!(a, name_for_key(b"s1", "other", "doc-42"));
        assert_ne!(a, name_for_key(b"s1", "default", "doc-43"));
        // NUL separates namespace and key: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(name_for_key(b"s", "ab", "c"), name_for_key(b"s", "a", "bc"));
    }

    #[test]
    fn urls_by_path_and_by_host() {
        let path = Urls::new("https://spawner.example/", None);
        assert_eq!(path.backend_url("abc"), "https://spawner.example/p/abc/");
        assert_eq!(path.base_path("abc"), "/p/abc/");
        let host = Urls::new("https://spawner.example", Some("apps.example".into()));
        assert_eq!(host.backend_url("abc"), "https://abc.apps.example/");
        assert_eq!(host.base_path("abc"), "/");
    }
}
