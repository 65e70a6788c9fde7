//! What the API returns about a backend.

use crate::event::Event;
use crate::spec::BackendSpec;
use crate::state::State;
use crate::time::{serde_rfc3339, Millis};
use serde::{Deserialize, Serialize};

/// The answer to a spawn: where the backend will be, and where to watch it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SpawnResponse {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub state: State,
    pub url: String,
    pub ready_url: String,
    pub status_url: String,
    pub status_stream_url: String,
    /// A token-mode backend: its URL with a connect token for the request's `access.user`
    /// (docs/api.md, "Access"). A secret, in this answer only: never in a record or a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_url: Option<String>,
    /// Until when `connect_url`'s token is accepted.
    #[serde(
        default,
        with = "serde_rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub connect_expires_at: Option<Millis>,
}

/// The whole record of one backend (`GET /v1/backends/{id}`); lists leave `events` empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackendRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub state: State,
    /// The reason of its last event, if it has one (`pid N`, `idle`, `exited with code 3`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub url: String,
    pub spec: BackendSpec,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
    /// Every event, oldest first (`GET /v1/backends/{id}` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub live_connections: u64,
    #[serde(default, with = "serde_rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_activity: Option<Millis>,
    #[serde(default)]
    pub node: Option<String>,
    /// Where the proxy reaches it (`host:port`), once known.
    #[serde(default)]
    pub address: Option<String>,
    /// Which runtime runs it: `process` or `docker` (embedded), `kubernetes`.
    #[serde(default)]
    pub runtime: Option<String>,
    /// Kept from being swept until then by a `keepalive`, if one was asked for.
    #[serde(
        default,
        with = "serde_rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub busy_until: Option<Millis>,
    /// The last request or WebSocket data frame from a client (what `idle_timeout_seconds`
    /// counts from); while live.
    #[serde(
        default,
        with = "serde_rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_client_activity: Option<Millis>,
    /// The warm pool it was started for, if it was (docs/api.md, "Warm pools").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// When a claim took it from its pool; absent while it waits unclaimed.
    #[serde(
        default,
        with = "serde_rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub claimed_at: Option<Millis>,
}
