//! Per-user access to a backend: the shapes of the API (`"access"` on a spawn, a claim and a
//! pool template; `POST /v1/backends/{id}/connect`; `GET /v1/backends/{id}/access`) and
//! their rules. Both modes take these; the tokens and cookies themselves are
//! `spawner_proxy::access`'s.
//!
//! A backend is `open` (its URL is the key, as before) or `token`: its URL admits only a
//! browser holding a cookie minted for a user, which a short-lived connect URL gives. The
//! spec keeps the mode alone; who the connect URL is for (`user`, `user_data`) and how long
//! it lasts belong to the request that asks for it.

use crate::spec::ValidationError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How long a connect URL lasts unless asked otherwise.
pub const DEFAULT_TTL_SECONDS: u64 = 60;
/// The longest a connect URL may last: a link meant to be opened now, not a credential.
pub const MAX_TTL_SECONDS: u64 = 3600;
/// The longest user name, in bytes.
pub const MAX_USER_BYTES: usize = 256;
/// The most `user_data` may take, as compact JSON: it travels in a header of every request.
pub const MAX_USER_DATA_BYTES: usize = 4096;

/// Who may reach a backend through the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// Whoever holds the backend's URL (its unguessable id is the capability).
    #[default]
    Open,
    /// Only a browser holding a cookie minted for a user by a connect URL, or a client
    /// sending a connect token as `Authorization: Bearer`.
    Token,
}

/// `"access"` of a spawn, a claim or a pool template. A stored spec has `mode` alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// `token` unless given (an access object asks for per-user access); a spawn without
    /// `access` gets the server's default (`spawner serve --access`, `open` unless set).
    #[serde(default = "token_mode")]
    #[schema(default = "token")]
    pub mode: AccessMode,
    /// Who the connect URL in the answer is for; required with `token` on a spawn or a
    /// claim, refused in a pool template. An opaque id (printable ASCII, 1–256 bytes) the
    /// backend receives as `X-Spawner-User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub user: Option<String>,
    /// Any JSON (at most 4 KiB compact), passed to the backend as `X-Spawner-User-Data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<serde_json::Value>,
    /// How long the connect URL may be used: 1–3600, default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3600)]
    pub ttl_seconds: Option<u64>,
    /// The connect URL works more than once until it expires (default: once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(default = false)]
    pub reusable: bool,
}

fn token_mode() -> AccessMode {
    AccessMode::Token
}

/// `POST /v1/backends/{id}/connect`: a connect URL for a user of a token-mode backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// Printable ASCII, 1–256 bytes; passed to the backend as `X-Spawner-User`.
    #[schema(min_length = 1, max_length = 256)]
    pub user: String,
    /// Any JSON (at most 4 KiB compact), passed as `X-Spawner-User-Data`. A user who holds
    /// access keeps the data of their first grant until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<serde_json::Value>,
    /// 1–3600, default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3600)]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(default = false)]
    pub reusable: bool,
}

/// The answer to a connect: a secret, shown once, never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectResponse {
    /// The backend's URL with `spawner_token=`: opened in a browser, it leaves a cookie for
    /// the backend's origin and the URL without the token.
    pub connect_url: String,
    /// Until when the token in it is accepted.
    #[serde(with = "crate::time::serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: crate::time::Millis,
}

/// `GET /v1/backends/{id}/access`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccessList {
    pub mode: AccessMode,
    /// Who holds access (a connect URL was minted for them and they were not revoked).
    pub users: Vec<AccessGrant>,
}

/// One user's access to a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccessGrant {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<serde_json::Value>,
    #[serde(with = "crate::time::serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub granted_at: crate::time::Millis,
}

/// Who a connect URL is for and how long it lasts, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectAsk {
    pub user: String,
    pub user_data: Option<serde_json::Value>,
    pub ttl_seconds: u64,
    pub reusable: bool,
}

impl Access {
    /// The access a backend gets, given the server's default `default` when the request
    /// has no `access`: the mode to store, and the connect URL to mint.
    pub fn resolve(
        given: Option<&Access>,
        default: AccessMode,
    ) -> Result<(AccessMode, Option<ConnectAsk>), ValidationError> {
        let Some(a) = given else {
            if default == AccessMode::Token {
                return Err(ValidationError::new(
                    "access.user",
                    "required: this server gives backends token access by default (spawner \
                     serve --access token); send \"access\": {\"user\": \"...\"}, or \
                     \"access\": {\"mode\": \"open\"}",
                ));
            }
            return Ok((AccessMode::Open, None));
        };
        match a.mode {
            AccessMode::Open => {
                if a.user.is_some()
                    || a.user_data.is_some()
                    || a.ttl_seconds.is_some()
                    || a.reusable
                {
                    return Err(ValidationError::new(
                        "access",
                        "an open backend has no users: leave out user, user_data, \
                         ttl_seconds and reusable, or ask for \"mode\": \"token\"",
                    ));
                }
                Ok((AccessMode::Open, None))
            }
            AccessMode::Token => {
                let Some(user) = &a.user else {
                    return Err(ValidationError::new(
                        "access.user",
                        "required with mode token: who the connect URL is for",
                    ));
                };
                let ask = ConnectAsk::new(
                    "access.",
                    user,
                    a.user_data.as_ref(),
                    a.ttl_seconds,
                    a.reusable,
                )?;
                Ok((AccessMode::Token, Some(ask)))
            }
        }
    }

    /// Checks the fields it has (a stored spec has the mode alone, so `user` is not
    /// required here: [`Access::resolve`] requires it of a request).
    pub fn validate(&self) -> Result<(), ValidationError> {
        match (&self.user, self.mode) {
            (_, AccessMode::Open) => Access::resolve(Some(self), AccessMode::Open).map(drop),
            (user, AccessMode::Token) => ConnectAsk::new(
                "access.",
                user.as_deref().unwrap_or("-"),
                self.user_data.as_ref(),
                self.ttl_seconds,
                self.reusable,
            )
            .map(drop),
        }
    }

    /// Checks `access` of a pool template: the mode only (each claim names its user).
    pub fn validate_template(&self) -> Result<(), ValidationError> {
        if self.user.is_some()
            || self.user_data.is_some()
            || self.ttl_seconds.is_some()
            || self.reusable
        {
            return Err(ValidationError::new(
                "template.access",
                "a pool template gives the mode only; each claim names its user in its own \
                 \"access\"",
            ));
        }
        Ok(())
    }

    /// The connect URL a claim of a pool whose template has mode `template` asks for: its
    /// `access` must fit the template's mode (a token-mode pool's claims name their user; an
    /// open pool's name none).
    pub fn for_claim(
        template: AccessMode,
        given: Option<&Access>,
    ) -> Result<Option<ConnectAsk>, ValidationError> {
        match (template, given) {
            (AccessMode::Open, None) => Ok(None),
            (AccessMode::Open, Some(_)) => Err(ValidationError::new(
                "access",
                "this pool's backends are open (its template has no \"access\": {\"mode\": \"token\"}): leave access out, or make a token-mode pool",
            )),
            (AccessMode::Token, None) => Err(ValidationError::new(
                "access.user",
                "required: this pool's backends are token-mode; send \"access\": {\"user\": \"...\"}",
            )),
            (AccessMode::Token, Some(a)) => {
                let (mode, ask) = Access::resolve(Some(a), AccessMode::Token)?;
                if mode != AccessMode::Token {
                    return Err(ValidationError::new(
                        "access.mode",
                        "this pool's backends are token-mode: the mode is the template's",
                    ));
                }
                Ok(ask)
            }
        }
    }

    /// What a spec stores: the mode alone.
    pub fn stored(mode: AccessMode) -> Access {
        Access {
            mode,
            ..Access::default()
        }
    }
}

impl ConnectRequest {
    pub fn ask(&self) -> Result<ConnectAsk, ValidationError> {
        ConnectAsk::new(
            "",
            &self.user,
            self.user_data.as_ref(),
            self.ttl_seconds,
            self.reusable,
        )
    }
}

impl ConnectAsk {
    /// Checks the fields of a connect; `prefix` goes before field names (`access.`).
    pub fn new(
        prefix: &str,
        user: &str,
        user_data: Option<&serde_json::Value>,
        ttl_seconds: Option<u64>,
        reusable: bool,
    ) -> Result<ConnectAsk, ValidationError> {
        validate_user(user).map_err(|m| ValidationError::new(format!("{prefix}user"), m))?;
        if let Some(data) = user_data {
            let bytes = serde_json::to_string(data).map_or(usize::MAX, |s| s.len());
            if bytes > MAX_USER_DATA_BYTES {
                return Err(ValidationError::new(
                    format!("{prefix}user_data"),
                    format!(
                        "{bytes} bytes of JSON; at most {MAX_USER_DATA_BYTES}: it goes in a \
                         header of every request. Pass an id and let the backend look the \
                         rest up"
                    ),
                ));
            }
        }
        let ttl = ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
        if ttl == 0 || ttl > MAX_TTL_SECONDS {
            return Err(ValidationError::new(
                format!("{prefix}ttl_seconds"),
                format!(
                    "must be between 1 and {MAX_TTL_SECONDS}: a connect URL is opened now; \
                     mint another for later"
                ),
            ));
        }
        Ok(ConnectAsk {
            user: user.to_string(),
            user_data: user_data.filter(|d| !d.is_null()).cloned(),
            ttl_seconds: ttl,
            reusable,
        })
    }
}

/// A user name: 1–256 bytes of printable ASCII, no space at either end (it is a header
/// value as it is).
pub fn validate_user(user: &str) -> Result<(), String> {
    if user.is_empty()
        || user.len() > MAX_USER_BYTES
        || !user.bytes().all(|b| (0x20..0x7f).contains(&b))
        || user.starts_with(' ')
        || user.ends_with(' ')
    {
        return Err(format!(
            "must be 1 to {MAX_USER_BYTES} bytes of printable ASCII without a space at either \
             end (an opaque id; put a display name in user_data)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(json: &str) -> Access {
        serde_json::from_str(json).expect("access")
    }

    #[test]
    fn token_mode_needs_a_user_and_checks_it() {
        let err = Access::resolve(Some(&access(r#"{"mode":"token"}"#)), AccessMode::Open)
            .expect_err("no user");
        assert_eq!(err.field, "access.user");
        let err = Access::resolve(None, AccessMode::Token).expect_err("server default token");
        assert_eq!(err.field, "access.user");
        let (mode, ask) =
            Access::resolve(Some(&access(r#"{"user":"alice"}"#)), AccessMode::Open).expect("ok");
        assert_eq!(mode, AccessMode::Token);
        let ask = ask.expect("an ask");
        assert_eq!((ask.user.as_str(), ask.ttl_seconds), ("alice", 60));
        for (json, field) in [
            (r#"{"user":""}"#, "access.user"),
            (r#"{"user":" a"}"#, "access.user"),
            (r#"{"user":"é"}"#, "access.user"),
            (r#"{"user":"a\nb"}"#, "access.user"),
            (r#"{"user":"a","ttl_seconds":0}"#, "access.ttl_seconds"),
            (r#"{"user":"a","ttl_seconds":3601}"#, "access.ttl_seconds"),
            (r#"{"mode":"open","user":"a"}"#, "access"),
        ] {
            let err = Access::resolve(Some(&access(json)), AccessMode::Open).expect_err(json);
            assert_eq!(err.field, field, "{json}");
        }
        let big = format!(r#"{{"user":"a","user_data":"{}"}}"#, "x".repeat(4100));
        let err = Access::resolve(Some(&access(&big)), AccessMode::Open).expect_err("big");
        assert_eq!(err.field, "access.user_data");
        let long = format!(r#"{{"user":"{}"}}"#, "u".repeat(257));
        assert!(Access::resolve(Some(&access(&long)), AccessMode::Open).is_err());
    }

    #[test]
    fn open_is_the_default_and_stores_the_mode_alone() {
        assert_eq!(
            Access::resolve(None, AccessMode::Open).expect("ok"),
            (AccessMode::Open, None)
        );
        let stored = serde_json::to_value(Access::stored(AccessMode::Token)).expect("json");
        assert_eq!(stored, serde_json::json!({"mode": "token"}));
        assert!(serde_json::from_str::<Access>(r#"{"mode":"token","usr":"a"}"#).is_err());
        assert!(access(r#"{"mode":"token","user":"a"}"#)
            .validate_template()
            .is_err());
        assert!(access(r#"{"mode":"token"}"#).validate_template().is_ok());
    }
}
