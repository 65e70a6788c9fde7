//! Per-user access to a backend: connect tokens, access cookies, grants, and the identity
//! headers a backend receives. Both modes use these: the embedded server's proxy, and on
//! Kubernetes the router and the sidecar, which are given the same keys.
//!
//! # Keys
//!
//! One master key (32 random bytes: `access.key` in the embedded server's data directory; a
//! Secret on Kubernetes) derives a key per backend, HMAC-SHA256(master, "spawner access v1
//! " + id) ([`MasterKey::backend_key`]), so that a component that serves one backend (a
//! sidecar) can be given that backend's key alone ([`BackendKey::secret`],
//! [`BackendKey::from_secret`]). Replacing the master key invalidates every token and cookie.
//!
//! # Tokens and cookies
//!
//! Both are `prefix "." base64url(JSON claims) "." base64url(HMAC-SHA256)`, the MAC over
//! the prefix and the claims, so that neither can pass for the other:
//! - a **connect token** (`sat1.`) names the backend, the user, the grant's generation, its
//!   expiry (Unix seconds), a nonce and whether it may be used more than once; it travels
//!   in a connect URL (`?spawner_token=`) or as `Authorization: Bearer`;
//! - an **access cookie** (`sac1.`) names the backend, the user and the generation. It has
//!   no expiry of its own: it is good while its user's grant of that generation is, until a
//!   revocation or the backend's end.
//!
//! Verification is a MAC and a few comparisons in memory: no store is read on a request.
//!
//! # Grants and revocation
//!
//! [`Grants`] holds, per backend, who has access: user → [`Grant`] (its generation, its
//! identity headers, and the signal its WebSockets follow). A revocation removes the grant
//! (so cookies of its generation admit nothing, and a later grant of that user gets a new
//! generation) and signals its open tunnels, which close with 1008 (policy violation).
//!
//! # Rules on the request path (both proxy paths hold to them)
//!
//! 1. A token-mode backend admits a request only with a valid access cookie or connect
//!    token for it whose grant stands; several cookies that admit as different users
//!    admit none (a cookie tossed by a sibling origin cannot choose who one is).
//! 2. A request carrying `spawner_token` in its query is never forwarded: it is exchanged
//!    (303 to the same URL without it, with the cookie) or refused.
//! 3. The access cookie never reaches a backend (the `Cookie` header keeps the others), nor
//!    does an `Authorization: Bearer` connect token.
//! 4. `X-Spawner-User` and `X-Spawner-User-Data` from clients never reach a backend, in
//!    either mode; the proxy sets them from the grant that admitted the request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use http::HeaderValue;
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// The query parameter of a connect URL.
pub const TOKEN_PARAM: &str = "spawner_token";
/// The access cookie's name over plain HTTP; see [`cookie_name`].
pub const COOKIE: &str = "spawner_access";
/// The user the request is from, set by the proxy.
pub const USER_HEADER: &str = "x-spawner-user";
/// The user's `user_data` (JSON, non-ASCII escaped), set by the proxy.
pub const USER_DATA_HEADER: &str = "x-spawner-user-data";

const TOKEN_PREFIX: &str = "sat1";
const COOKIE_PREFIX: &str = "sac1";
/// The most single-use tokens remembered as used at once; beyond it, new single-use tokens
/// are refused until old ones expire (memory stays bounded whatever is thrown at it).
pub const MAX_USED_NONCES: usize = 100_000;

/// The master key that every backend's key derives from.
#[derive(Clone)]
pub struct MasterKey(hmac::Key);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// A key of the wrong size.
#[derive(Debug, thiserror::Error)]
#[error("an access key is 32 bytes; this one has {0}")]
pub struct BadKey(pub usize);

impl MasterKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BadKey> {
        if bytes.len() != Self::LEN {
            return Err(BadKey(bytes.len()));
        }
        Ok(MasterKey(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// 32 bytes from the operating system's generator.
    pub fn generate_bytes() -> Result<[u8; 32], ring::error::Unspecified> {
        random()
    }

    /// The key of backend `id`.
    pub fn backend_key(&self, id: &str) -> BackendKey {
        let mut input = b"spawner access v1 ".to_vec();
        input.extend_from_slice(id.as_bytes());
        let tag = hmac::sign(&self.0, &input);
        BackendKey::from_derived(id, tag.as_ref())
    }
}

/// The key of one backend: mints and checks its tokens and cookies.
#[derive(Clone)]
pub struct BackendKey {
    id: Arc<str>,
    secret: [u8; 32],
    key: hmac::Key,
}

impl std::fmt::Debug for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackendKey({}, ..)", self.id)
    }
}

/// What a connect token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    #[serde(rename = "b")]
    pub backend: String,
    #[serde(rename = "u")]
    pub user: String,
    #[serde(rename = "g")]
    pub generation: u64,
    /// Unix seconds after which it is refused.
    #[serde(rename = "e")]
    pub expires: i64,
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "r", default)]
    pub reusable: bool,
}

/// What an access cookie says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CookieClaims {
    #[serde(rename = "b")]
    pub backend: String,
    #[serde(rename = "u")]
    pub user: String,
    #[serde(rename = "g")]
    pub generation: u64,
}

/// Why a connect token is refused (the client is told only that it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a connect token")]
    Malformed,
    #[error("its signature does not match")]
    Forged,
    #[error("it is for another backend")]
    OtherBackend,
    #[error("it has expired")]
    Expired,
    #[error("it was used already")]
    Used,
    #[error("its user's access was revoked")]
    Revoked,
}

impl BackendKey {
    fn from_derived(id: &str, secret: &[u8]) -> Self {
        let mut s = [0u8; 32];
        s.copy_from_slice(&secret[..32]);
        BackendKey {
            id: id.into(),
            key: hmac::Key::new(hmac::HMAC_SHA256, &s),
            secret: s,
        }
    }

    /// The key of backend `id` given as its 32 bytes ([`BackendKey::secret`]), for a
    /// component that holds this backend's key and not the master key.
    pub fn from_secret(id: &str, secret: &[u8]) -> Result<Self, BadKey> {
        if secret.len() != 32 {
            return Err(BadKey(secret.len()));
        }
        Ok(Self::from_derived(id, secret))
    }

    /// The key's bytes, to hand to a component that serves this backend alone.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    pub fn backend(&self) -> &str {
        &self.id
    }

    /// A connect token for `user`'s grant of `generation`, good until `expires` (Unix s).
    pub fn mint_token(
        &self,
        user: &str,
        generation: u64,
        expires: i64,
        reusable: bool,
    ) -> Result<String, ring::error::Unspecified> {
        let nonce: [u8; 16] = random()?;
        let claims = TokenClaims {
            backend: self.id.to_string(),
            user: user.to_string(),
            generation,
            expires,
            nonce: B64.encode(nonce),
            reusable,
        };
        Ok(self.seal(TOKEN_PREFIX, &claims))
    }

    /// The claims of a connect token for this backend, if it is genuine and not expired at
    /// `now` (Unix s). Whether it was used, or its grant stands, is the caller's to ask
    /// ([`Nonces`], [`Grants`]).
    pub fn verify_token(&self, text: &[u8], now: i64) -> Result<TokenClaims, TokenError> {
        let claims: TokenClaims = self.open(TOKEN_PREFIX, text)?;
        if claims.backend != *self.id {
            return Err(TokenError::OtherBackend);
        }
        if now > claims.expires {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The access cookie's value for `user`'s grant of `generation`.
    pub fn mint_cookie(&self, user: &str, generation: u64) -> String {
        self.seal(
            COOKIE_PREFIX,
            &CookieClaims {
                backend: self.id.to_string(),
                user: user.to_string(),
                generation,
            },
        )
    }

    /// The claims of an access cookie's value, if it is genuine and for this backend.
    pub fn verify_cookie(&self, text: &[u8]) -> Option<CookieClaims> {
        let claims: CookieClaims = self.open(COOKIE_PREFIX, text).ok()?;
        (claims.backend == *self.id).then_some(claims)
    }

    fn seal<T: Serialize>(&self, prefix: &str, claims: &T) -> String {
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let mut text = String::with_capacity(prefix.len() + json.len() * 2 + 48);
        text.push_str(prefix);
        text.push('.');
        B64.encode_string(json, &mut text);
        let tag = hmac::sign(&self.key, text.as_bytes());
        text.push('.');
        B64.encode_string(tag.as_ref(), &mut text);
        text
    }

    fn open<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        text: &[u8],
    ) -> Result<T, TokenError> {
        // Bounded before any work: a claim holds a 256-byte user at most.
        if text.len() > 2048 {
            return Err(TokenError::Malformed);
        }
        let dot = text
            .iter()
            .rposition(|&b| b == b'.')
            .ok_or(TokenError::Malformed)?;
        let (signed, sig) = (&text[..dot], &text[dot + 1..]);
        let Some(body) = signed
            .strip_prefix(prefix.as_bytes())
            .and_then(|r| r.strip_prefix(b"."))
        else {
            return Err(TokenError::Malformed);
        };
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, signed, &sig).map_err(|_| TokenError::Forged)?;
        let json = B64.decode(body).map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
    }
}

fn random<const N: usize>() -> Result<[u8; N], ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(bytes)
}

/// A connect URL for `user`'s grant of `generation`: `backend_url` with a connect token good
/// for `ttl_seconds` from `now_ms`, and until when (milliseconds, whole seconds as the token
/// counts them). What every API that mints one answers (embedded and Kubernetes).
pub fn connect_url(
    key: &BackendKey,
    backend_url: &str,
    user: &str,
    generation: u64,
    ttl_seconds: u64,
    reusable: bool,
    now_ms: i64,
) -> Result<(String, i64), ring::error::Unspecified> {
    let ttl_ms = i64::try_from(ttl_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let expires_ms = now_ms.saturating_add(ttl_ms);
    let token = key.mint_token(user, generation, expires_ms / 1000, reusable)?;
    Ok((
        format!("{backend_url}?{TOKEN_PARAM}={token}"),
        expires_ms / 1000 * 1000,
    ))
}

/// A new grant generation: random, so that a generation revoked is never given again.
pub fn new_generation() -> Result<u64, ring::error::Unspecified> {
    Ok(u64::from_le_bytes(random()?))
}

/// The nonces of single-use tokens that were used, until those tokens expire.
#[derive(Debug, Default)]
pub struct Nonces {
    used: Mutex<HashMap<String, i64>>,
}

impl Nonces {
    /// Marks a token's nonce used; `false` if it was already (or if too many are held).
    pub fn consume(&self, claims: &TokenClaims, now: i64) -> bool {
        if claims.reusable {
            return true;
        }
        let Ok(mut used) = self.used.lock() else {
            return false;
        };
        if used.len() >= MAX_USED_NONCES {
            used.retain(|_, expires| *expires >= now);
            if used.len() >= MAX_USED_NONCES {
                return false;
            }
        }
        let key = format!("{}/{}", claims.backend, claims.nonce);
        match used.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(claims.expires);
                true
            }
        }
    }
}

/// One user's access to one backend.
#[derive(Debug)]
pub struct Grant {
    pub user: String,
    pub generation: u64,
    pub user_data: Option<serde_json::Value>,
    /// Milliseconds since the epoch.
    pub granted_at: i64,
    /// `X-Spawner-User`'s value.
    pub user_header: HeaderValue,
    /// `X-Spawner-User-Data`'s value, when the grant has data.
    pub data_header: Option<HeaderValue>,
    revoked: watch::Sender<bool>,
}

impl Grant {
    /// A grant; `None` if the user cannot be a header value (validated users always can).
    pub fn new(
        user: &str,
        generation: u64,
        user_data: Option<serde_json::Value>,
        granted_at: i64,
    ) -> Option<Grant> {
        let user_header = HeaderValue::from_str(user).ok()?;
        let data_header = match &user_data {
            Some(d) => Some(HeaderValue::from_str(&ascii_json(d)).ok()?),
            None => None,
        };
        Some(Grant {
            user: user.to_string(),
            generation,
            user_data,
            granted_at,
            user_header,
            data_header,
            revoked: watch::channel(false).0,
        })
    }

    /// Resolves once the grant is revoked (never, while it stands).
    pub fn revoked(&self) -> watch::Receiver<bool> {
        self.revoked.subscribe()
    }

    pub fn is_revoked(&self) -> bool {
        *self.revoked.borrow()
    }
}

/// Who has access to one backend, in memory: what the proxy asks on every request.
#[derive(Debug, Default)]
pub struct Grants {
    by_user: RwLock<HashMap<String, Arc<Grant>>>,
}

impl Grants {
    /// The grant of `user` if it stands and is of `generation`.
    pub fn get(&self, user: &str, generation: u64) -> Option<Arc<Grant>> {
        let map = self.by_user.read().ok()?;
        map.get(user)
            .filter(|g| g.generation == generation)
            .cloned()
    }

    /// The grant of `user`, whatever its generation.
    pub fn of(&self, user: &str) -> Option<Arc<Grant>> {
        self.by_user.read().ok()?.get(user).cloned()
    }

    /// Adds a grant; the standing one if its user holds one of the same generation (whose
    /// tunnels its revocation must reach). One of another generation is revoked.
    pub fn insert(&self, grant: Grant) -> Arc<Grant> {
        let Ok(mut map) = self.by_user.write() else {
            return Arc::new(grant);
        };
        if let Some(old) = map.get(&grant.user) {
            if old.generation == grant.generation {
                return old.clone();
            }
            old.revoked.send_replace(true);
        }
        let grant = Arc::new(grant);
        map.insert(grant.user.clone(), grant.clone());
        grant
    }

    /// Removes `user`'s grant and closes their WebSockets; whether there was one.
    pub fn revoke(&self, user: &str) -> bool {
        let removed = self.by_user.write().ok().and_then(|mut m| m.remove(user));
        match removed {
            Some(g) => {
                g.revoked.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Revokes every grant (the backend ended).
    pub fn revoke_all(&self) {
        let all: Vec<Arc<Grant>> = match self.by_user.write() {
            Ok(mut m) => m.drain().map(|(_, g)| g).collect(),
            Err(_) => return,
        };
        for g in all {
            g.revoked.send_replace(true);
        }
    }

    /// Every standing grant, by user.
    pub fn list(&self) -> Vec<Arc<Grant>> {
        let mut all: Vec<Arc<Grant>> = self
            .by_user
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.user.cmp(&b.user));
        all
    }
}

/// JSON with every non-ASCII character escaped (`\uXXXX`), so that it is a valid header
/// value as it is: serde_json escapes control characters, and non-ASCII can only appear
/// inside strings.
pub fn ascii_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Whether a cookie name is the access cookie's, under any of its names.
pub fn is_access_cookie(name: &[u8]) -> bool {
    name == COOKIE.as_bytes()
        || name == b"__Host-spawner_access"
        || name == b"__Secure-spawner_access"
}

/// The access cookie's name: `__Host-` behind TLS on a backend's own origin (the browser
/// then refuses it from any other origin, and over plain HTTP), `__Secure-` behind TLS by
/// path (a `__Host-` cookie must have `Path=/`), the plain name otherwise.
pub fn cookie_name(secure: bool, by_path: bool) -> &'static str {
    match (secure, by_path) {
        (true, false) => "__Host-spawner_access",
        (true, true) => "__Secure-spawner_access",
        (false, _) => COOKIE,
    }
}

/// The `Set-Cookie` of an exchange: host-only (no `Domain`), HttpOnly, SameSite=Lax, a
/// session cookie; `path` is `/` on a backend's own origin and `/p/{id}/` by path.
pub fn set_cookie(value: &str, secure: bool, path: &str) -> String {
    let name = cookie_name(secure, path != "/");
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax{secure}")
}

/// The `name=value` pairs of a `Cookie` header value.
fn cookie_pairs(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    value.split(|&b| b == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
    })
}

/// The values of the access cookies in a `Cookie` header value.
pub fn access_cookies(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    cookie_pairs(value).filter_map(|(name, v)| is_access_cookie(name).then_some(v))
}

/// Whether a `Cookie` header value may hold an access cookie (a cheap look first).
pub fn mentions_access_cookie(value: &[u8]) -> bool {
    value.windows(COOKIE.len()).any(|w| w == COOKIE.as_bytes())
}

/// Writes `value` less its access cookies into `out`; `false` if nothing is left (the
/// header is then dropped).
pub fn strip_access_cookies(value: &[u8], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    for pair in value.split(|&b| b == b';') {
        let trimmed = pair.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        let name = trimmed
            .iter()
            .position(|&b| b == b'=')
            .map_or(trimmed, |eq| trimmed[..eq].trim_ascii());
        if is_access_cookie(name) {
            continue;
        }
        if out.len() > start {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(trimmed);
    }
    out.len() > start
}

/// Why a request to a token-mode backend is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No access cookie or connect token that admits.
    Missing,
    /// Valid cookies of different users: a cookie was tossed in from another origin.
    Conflict,
}

/// Rule 1: the grant that the access cookies among `cookie_headers` admit as, for the
/// backend of `key`.
pub fn admit_by_cookies<'a>(
    key: &BackendKey,
    grants: &Grants,
    cookie_headers: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Arc<Grant>, Refused> {
    let mut admitted: Option<Arc<Grant>> = None;
    for header in cookie_headers {
        if !mentions_access_cookie(header) {
            continue;
        }
        for (name, value) in cookie_pairs(header) {
            if !is_access_cookie(name) {
                continue;
            }
            let Some(claims) = key.verify_cookie(value) else {
                continue;
            };
            let Some(grant) = grants.get(&claims.user, claims.generation) else {
                continue;
            };
            match &admitted {
                Some(a) if a.user != grant.user => return Err(Refused::Conflict),
                Some(_) => {}
                None => admitted = Some(grant),
            }
        }
    }
    admitted.ok_or(Refused::Missing)
}

/// The connect token of an `Authorization` header value (`Bearer sat1.…`), if it is one.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    if !value.get(..7)?.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    token.starts_with(b"sat1.").then_some(token)
}

/// Whether a query string may carry a connect token (a cheap look; [`split_token`] decides).
pub fn query_mentions_token(query: &str) -> bool {
    query.contains("token") || query.contains('%')
}

/// Rule 2: the connect tokens of a query and the query without them. A parameter counts
/// whatever its percent-encoding (the backend would decode it), so `spawner%5Ftoken=` is
/// one too. `None` when there is none.
pub fn split_token(query: &str) -> Option<(Vec<String>, String)> {
    let mut tokens = Vec::new();
    let mut rest = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(name).as_deref() == Some(TOKEN_PARAM) {
            tokens.push(percent_decode(value).unwrap_or_default());
        } else {
            rest.push(pair);
        }
    }
    (!tokens.is_empty()).then(|| (tokens, rest.join("&")))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a header name is one of the identity headers (rule 4), in any case.
pub fn is_identity_header(name: &str) -> bool {
    (name.len() == 14 && name.eq_ignore_ascii_case(USER_HEADER))
        || (name.len() == 19 && name.eq_ignore_ascii_case(USER_DATA_HEADER))
}

/// The 401 of a token-mode backend: a short page for a browser (it sent
/// `Sec-Fetch-Mode`), JSON for anything else.
pub fn refusal_body(browser: bool, why: Refused) -> (&'static str, String) {
    let message = match why {
        Refused::Missing => {
            "this backend needs access: open a connect link from the application that gave you this address"
        }
        Refused::Conflict => {
            "this backend received access cookies of different users; clear this site's cookies and open a connect link again"
        }
    };
    if browser {
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><meta charset=utf-8><title>Access needed</title>\
                 <h1>Access needed</h1><p>{message}.</p>\n"
            ),
        )
    } else {
        (
            "application/json",
            serde_json::json!({"error": "access_required", "message": message}).to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_bytes(&[7u8; 32]).expect("key")
    }

    #[test]
    fn tokens_verify_for_their_backend_until_they_expire() {
        let key = master().backend_key("abc");
        let token = key.mint_token("alice", 9, 100, false).expect("token");
        assert!(token.starts_with("sat1."));
        let claims = key.verify_token(token.as_bytes(), 100).expect("valid");
        assert_eq!((claims.user.as_str(), claims.generation), ("alice", 9));
        assert_eq!(
            key.verify_token(token.as_bytes(), 101),
            Err(TokenError::Expired)
        );
        let other = master().backend_key("abd");
        assert_eq!(
            other.verify_token(token.as_bytes(), 0),
            Err(TokenError::Forged)
        );
        // Another master key: forged.
        let stranger = MasterKey::from_bytes(&[8u8; 32]).expect("key");
        assert_eq!(
            stranger
                .backend_key("abc")
                .verify_token(token.as_bytes(), 0),
            Err(TokenError::Forged)
        );
        // A claim changed, signature kept: forged.
        let (head, sig) = token.rsplit_once('.').expect("dot");
        let body = B64.decode(head.trim_start_matches("sat1.")).expect("b64");
        let changed = String::from_utf8(body)
            .expect("utf8")
            .replace("alice", "mallo");
        let forged = format!("sat1.{}.{sig}", B64.encode(changed));
        assert_eq!(
            key.verify_token(forged.as_bytes(), 0),
            Err(TokenError::Forged)
        );
        for junk in ["", ".", "sat1.", "sat1..", "x.y.z", "sat1.!!.??"] {
            assert!(key.verify_token(junk.as_bytes(), 0).is_err(), "{junk}");
        }
        assert!(key.verify_token("a".repeat(5000).as_bytes(), 0).is_err());
    }

    #[test]
    fn a_token_is_no_cookie_and_a_cookie_no_token() {
        let key = master().backend_key("abc");
        let token = key.mint_token("alice", 1, i64::MAX, true).expect("token");
        let cookie = key.mint_cookie("alice", 1);
        assert!(key.verify_cookie(token.as_bytes()).is_none());
        assert!(key.verify_token(cookie.as_bytes(), 0).is_err());
        assert_eq!(
            key.verify_cookie(cookie.as_bytes()).map(|c| c.user),
            Some("alice".to_string())
        );
        // Swapping the prefix breaks the MAC, which covers it.
        let relabelled = cookie.replacen("sac1.", "sat1.", 1);
        assert_eq!(
            key.verify_token(relabelled.as_bytes(), 0),
            Err(TokenError::Forged)
        );
    }

    #[test]
    fn a_sidecar_holding_only_its_backends_key_verifies_the_same() {
        let key = master().backend_key("abc");
        let alone = BackendKey::from_secret("abc", key.secret()).expect("32 bytes");
        let cookie = key.mint_cookie("bob", 3);
        assert!(alone.verify_cookie(cookie.as_bytes()).is_some());
        assert!(BackendKey::from_secret("abc", &[0; 31]).is_err());
        assert_ne!(master().backend_key("abd").secret(), key.secret());
    }

    #[test]
    fn single_use_tokens_are_used_once() {
        let key = master().backend_key("abc");
        let nonces = Nonces::default();
        let once = key
            .verify_token(key.mint_token("a", 1, 50, false).expect("t").as_bytes(), 0)
            .expect("valid");
        assert!(nonces.consume(&once, 0));
        assert!(!nonces.consume(&once, 0));
        let many = key
            .verify_token(key.mint_token("a", 1, 50, true).expect("t").as_bytes(), 0)
            .expect("valid");
        assert!(nonces.consume(&many, 0) && nonces.consume(&many, 0));
    }

    #[test]
    fn cookies_admit_by_standing_grants_only() {
        let key = master().backend_key("abc");
        let grants = Grants::default();
        let alice = grants.insert(Grant::new("alice", 1, None, 0).expect("grant"));
        let good = format!("theme=dark; spawner_access={}", key.mint_cookie("alice", 1));
        let admitted = admit_by_cookies(&key, &grants, [good.as_bytes()]).expect("admitted");
        assert_eq!(admitted.user, "alice");
        // Another generation, another backend's cookie, a forged one, none: refused.
        let old = format!("spawner_access={}", key.mint_cookie("alice", 0));
        let other = format!(
            "spawner_access={}",
            master().backend_key("xyz").mint_cookie("alice", 1)
        );
        for refused in [
            old.as_str(),
            other.as_str(),
            "spawner_access=sac1.e30.AAAA",
            "a=b",
        ] {
            assert_eq!(
                admit_by_cookies(&key, &grants, [refused.as_bytes()]).map(|g| g.user.clone()),
                Err(Refused::Missing),
                "{refused}"
            );
        }
        // A tossed invalid cookie beside a valid one: the valid one admits, in any order.
        let both = format!("{other}; {good}");
        assert!(admit_by_cookies(&key, &grants, [both.as_bytes()]).is_ok());
        assert!(admit_by_cookies(&key, &grants, [other.as_bytes(), good.as_bytes()]).is_ok());
        // Valid cookies of two users: none admits.
        grants.insert(Grant::new("mallory", 2, None, 0).expect("grant"));
        let two = format!("{good}; spawner_access={}", key.mint_cookie("mallory", 2));
        assert_eq!(
            admit_by_cookies(&key, &grants, [two.as_bytes()]).map(|g| g.user.clone()),
            Err(Refused::Conflict)
        );
        // Revoked: refused, and the grant's WebSockets are told.
        let revoked = alice.revoked();
        assert!(grants.revoke("alice"));
        assert!(*revoked.borrow());
        assert!(admit_by_cookies(&key, &grants, [good.as_bytes()]).is_err());
        assert!(!grants.revoke("alice"));
    }

    #[test]
    fn access_cookies_are_taken_out_of_the_cookie_header() {
        for (value, want) in [
            ("a=1; spawner_access=x; b=2", Some("a=1; b=2")),
            ("spawner_access=x", None),
            ("__Host-spawner_access=x;__Secure-spawner_access=y", None),
            ("a=1;  b=2", Some("a=1; b=2")),
            ("my_spawner_access=1", Some("my_spawner_access=1")),
        ] {
            let mut out = Vec::new();
            let kept = strip_access_cookies(value.as_bytes(), &mut out);
            assert_eq!(
                kept.then(|| String::from_utf8(out).expect("utf8")),
                want.map(str::to_string),
                "{value}"
            );
        }
    }

    #[test]
    fn tokens_are_found_in_a_query_however_encoded() {
        assert_eq!(split_token("a=1&b=2"), None);
        assert_eq!(
            split_token("a=1&spawner_token=sat1.x.y&b=2"),
            Some((vec!["sat1.x.y".into()], "a=1&b=2".into()))
        );
        assert_eq!(
            split_token("spawner%5Ftoken=sat1.x.y"),
            Some((vec!["sat1.x.y".into()], String::new()))
        );
        assert_eq!(
            split_token("spawner_token=a&spawner_token=b").map(|(t, _)| t.len()),
            Some(2)
        );
        assert!(query_mentions_token("spawner%5Ftoken=1"));
        assert_eq!(bearer_token(b"Bearer sat1.a.b"), Some(&b"sat1.a.b"[..]));
        assert_eq!(bearer_token(b"bearer  sat1.a.b "), Some(&b"sat1.a.b"[..]));
        assert_eq!(bearer_token(b"Bearer app-token"), None);
        assert_eq!(bearer_token(b"Basic x"), None);
    }

    #[test]
    fn identity_headers_are_valid_header_values() {
        let data = serde_json::json!({"name": "Zoë 🚀", "line": "a\r\nb"});
        let text = ascii_json(&data);
        assert!(
            text.is_ascii() && HeaderValue::from_str(&text).is_ok(),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).expect("json"),
            data
        );
        assert!(is_identity_header("X-Spawner-User"));
        assert!(is_identity_header("x-spawner-user-data"));
        assert!(!is_identity_header("x-spawner-users"));
        assert_eq!(
            set_cookie("v", false, "/"),
            "spawner_access=v; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            set_cookie("v", true, "/"),
            "__Host-spawner_access=v; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
