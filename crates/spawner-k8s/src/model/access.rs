//! Per-user access on Kubernetes: the access key, the grants an object carries, and the
//! router's view of them.
//!
//! One master key (the Secret `spawner-access`, key `key`: 64 hex digits) is given, as
//! `SPAWNER_ACCESS_KEY`, to the API (it mints connect tokens), the router (it verifies them
//! and the cookies) and the controller (it puts each token-mode backend's own derived key
//! into that backend's sidecar, `SPAWNER_BACKEND_ACCESS_KEY`: a compromised Pod holds one
//! backend's key, never the master key). The tokens, cookies and rules are
//! `spawner_proxy::access`'s, the embedded server's own.
//!
//! Who holds access is the object's `spec.access.grants`, written by the API alone (one
//! PATCH per grant or revocation, conditional on the version read). The router's watch
//! brings every change: it keeps a [`spawner_proxy::access::Grants`] per backend in step
//! with the object ([`RouterGrants::sync`]), and revokes in memory the users that
//! disappeared, which closes their WebSockets with 1008. Nothing on a request's path asks
//! the Kubernetes API.

use crate::model::crd::SessionLivedBackend;
use crate::model::read::{millis_of, state_of};
use kube::ResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use spawner_core::access::AccessMode;
use spawner_proxy::access::{BackendKey, Grant, Grants, MasterKey};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// The variable the API, the router and the controller read the master key from.
pub const ACCESS_KEY_ENV: &str = "SPAWNER_ACCESS_KEY";
/// The sidecar's variable holding its own backend's key (64 hex digits).
pub const BACKEND_ACCESS_KEY_ENV: &str = "SPAWNER_BACKEND_ACCESS_KEY";
/// The sidecar's variable naming its backend (the key is for that backend alone).
pub const BACKEND_ID_ENV: &str = "SPAWNER_BACKEND_ID";

/// `spec.access` of a SessionLivedBackend.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlabAccess {
    /// `open` (the URL is the key) or `token` (a connect URL per user; docs/api.md "Access").
    pub mode: SlabAccessMode,
    /// Who holds access to a token-mode backend, written by the API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<SlabGrant>,
}

/// The access mode, as the CRD spells it.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SlabAccessMode {
    #[default]
    Open,
    Token,
}

impl From<SlabAccessMode> for AccessMode {
    fn from(m: SlabAccessMode) -> Self {
        match m {
            SlabAccessMode::Open => AccessMode::Open,
            SlabAccessMode::Token => AccessMode::Token,
        }
    }
}

impl From<AccessMode> for SlabAccessMode {
    fn from(m: AccessMode) -> Self {
        match m {
            AccessMode::Open => SlabAccessMode::Open,
            AccessMode::Token => SlabAccessMode::Token,
        }
    }
}

/// One user's access. Its generation is in every cookie and token minted for it: a
/// revocation removes the entry, and a later grant of that user has a new generation.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlabGrant {
    pub user: String,
    /// The user's data as compact JSON (what `X-Spawner-User-Data` carries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Random, below 2^53 (exact in any JSON reader).
    pub generation: u64,
    /// RFC 3339.
    pub granted_at: String,
}

impl SlabGrant {
    pub fn user_data(&self) -> Option<serde_json::Value> {
        self.user_data
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
    }

    pub fn granted_at_millis(&self) -> i64 {
        millis_of(&self.granted_at).unwrap_or(0)
    }

    /// The proxy's grant for this entry; `None` if its user cannot be a header value (the
    /// API validates users; an object edited by hand may hold anything).
    pub fn grant(&self) -> Option<Grant> {
        Grant::new(
            &self.user,
            self.generation,
            self.user_data(),
            self.granted_at_millis(),
        )
    }
}

/// A new grant's generation: random, below 2^53.
pub fn new_generation() -> Result<u64, ring::error::Unspecified> {
    Ok(spawner_proxy::access::new_generation()? & ((1 << 53) - 1))
}

/// A key that is not 32 bytes in hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} must be 64 hex digits (32 bytes; e.g. `openssl rand -hex 32`)")]
pub struct BadAccessKey(pub &'static str);

fn from_hex(text: &str, what: &'static str) -> Result<[u8; 32], BadAccessKey> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return Err(BadAccessKey(what));
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).map_err(|_| BadAccessKey(what))?;
        out[i] = u8::from_str_radix(hex, 16).map_err(|_| BadAccessKey(what))?;
    }
    Ok(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The master key of `SPAWNER_ACCESS_KEY`'s text.
pub fn master_key(text: &str) -> Result<MasterKey, BadAccessKey> {
    let bytes = from_hex(text, ACCESS_KEY_ENV)?;
    MasterKey::from_bytes(&bytes).map_err(|_| BadAccessKey(ACCESS_KEY_ENV))
}

/// Backend `id`'s key as its sidecar is given it (hex).
pub fn backend_key_text(master: &MasterKey, id: &str) -> String {
    to_hex(master.backend_key(id).secret())
}

/// Backend `id`'s key from its sidecar's `SPAWNER_BACKEND_ACCESS_KEY`.
pub fn backend_key(id: &str, text: &str) -> Result<BackendKey, BadAccessKey> {
    let bytes = from_hex(text, BACKEND_ACCESS_KEY_ENV)?;
    BackendKey::from_secret(id, &bytes).map_err(|_| BadAccessKey(BACKEND_ACCESS_KEY_ENV))
}

/// The access mode of an object (`open` without `spec.access`).
pub fn mode_of(obj: &SessionLivedBackend) -> AccessMode {
    obj.spec
        .access
        .as_ref()
        .map_or(AccessMode::Open, |a| a.mode.into())
}

/// A token-mode backend's key and grants in the router, kept in step with its object.
pub struct BackendAccess {
    pub key: BackendKey,
    pub grants: Grants,
    /// Bumped on each sync: a request holding a token for a grant the router has not seen
    /// yet (the watch lags the API's write by a few milliseconds) waits for it.
    synced: watch::Sender<u64>,
    /// Generations this router saw revoked: a token of one is refused at once, not waited on.
    revoked: std::sync::Mutex<HashSet<u64>>,
}

impl BackendAccess {
    fn new(master: &MasterKey, name: &str) -> Arc<Self> {
        Arc::new(BackendAccess {
            key: master.backend_key(name),
            grants: Grants::default(),
            synced: watch::channel(0).0,
            revoked: Default::default(),
        })
    }

    /// Whether a connect token is for a grant this router has not seen yet: genuine, for
    /// this backend, unexpired, of a generation neither standing nor seen revoked.
    pub fn awaits_grant(&self, token: &[u8], now: i64) -> bool {
        let Ok(claims) = self.key.verify_token(token, now) else {
            return false;
        };
        self.grants.get(&claims.user, claims.generation).is_none()
            && !self
                .revoked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&claims.generation)
    }

    fn revoke(&self, user: &str) {
        if let Some(g) = self.grants.of(user) {
            self.revoked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(g.generation);
        }
        self.grants.revoke(user);
    }

    /// Waits until the next sync of this backend, at most `limit`.
    pub async fn next_sync(&self, limit: std::time::Duration) {
        let mut rx = self.synced.subscribe();
        rx.mark_unchanged();
        let _ = tokio::time::timeout(limit, rx.changed()).await;
    }
}

/// Every token-mode backend's access in the router, by object name.
#[derive(Default)]
pub struct RouterGrants {
    by_name: RwLock<HashMap<String, Arc<BackendAccess>>>,
}

impl RouterGrants {
    /// The access of backend `obj` (token mode), created from the object at first sight.
    pub fn of(&self, master: &MasterKey, obj: &SessionLivedBackend) -> Arc<BackendAccess> {
        let name = obj.name_any();
        if let Some(a) = self
            .by_name
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&name)
        {
            return a.clone();
        }
        self.sync(master, obj);
        self.by_name
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&name)
            .cloned()
            .unwrap_or_else(|| BackendAccess::new(master, &name))
    }

    /// Brings backend `obj`'s grants in step with the object: new grants added, users no
    /// longer in it revoked (their WebSockets close with 1008); every one of them once the
    /// backend stops or ends.
    pub fn sync(&self, master: &MasterKey, obj: &SessionLivedBackend) {
        let name = obj.name_any();
        let ending = state_of(obj) >= spawner_core::State::Terminating;
        if mode_of(obj) != AccessMode::Token {
            self.forget(&name);
            return;
        }
        let access = {
            let mut map = self
                .by_name
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.entry(name.clone())
                .or_insert_with(|| BackendAccess::new(master, &name))
                .clone()
        };
        let wanted: Vec<&SlabGrant> = if ending {
            Vec::new()
        } else {
            obj.spec
                .access
                .iter()
                .flat_map(|a| a.grants.iter())
                .collect()
        };
        let users: HashSet<&str> = wanted.iter().map(|g| g.user.as_str()).collect();
        for g in access.grants.list() {
            if !users.contains(g.user.as_str()) {
                access.revoke(&g.user);
            }
        }
        for g in wanted {
            if let Some(grant) = g.grant() {
                access.grants.insert(grant);
            }
        }
        access.synced.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Backend `name` is gone: every grant of it revoked, its entry dropped.
    pub fn forget(&self, name: &str) {
        let removed = self
            .by_name
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        if let Some(a) = removed {
            for g in a.grants.list() {
                a.revoke(&g.user);
            }
            a.synced.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Forgets every backend but those named in `live` (after a new list: deletions in a
    /// gap of the watch came as no event).
    pub fn retain(&self, live: &HashSet<String>) {
        let gone: Vec<String> = self
            .by_name
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .filter(|n| !live.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.forget(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_and_a_sidecars_key_is_its_backends_alone() {
        let text = "00".repeat(31) + "ff";
        let master = master_key(&text).expect("key");
        assert!(master_key("abc").is_err());
        assert!(master_key(&"zz".repeat(32)).is_err());
        let hex = backend_key_text(&master, "b1");
        assert_eq!(hex.len(), 64);
        let alone = backend_key("b1", &hex).expect("backend key");
        let cookie = master.backend_key("b1").mint_cookie("u", 1);
        assert!(alone.verify_cookie(cookie.as_bytes()).is_some());
        let other = master.backend_key("b2").mint_cookie("u", 1);
        assert!(alone.verify_cookie(other.as_bytes()).is_none());
        assert!(new_generation().expect("random") < (1 << 53));
    }
}
