//! A state change, as stored, streamed and returned by the status routes.

use crate::state::State;
use crate::time::{serde_rfc3339, Millis};
use serde::{Deserialize, Serialize};

/// One state change of one backend. `seq` numbers a backend's events from 1 upward; it is
/// the SSE `id:` that lets a stream resume without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    #[serde(skip)]
    pub seq: u64,
    pub state: State,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub time: Millis,
    /// Why: `pid N`, `idle`, `exited with code N`, … (docs/api.md lists them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With a terminal state, when the exit code is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Not a state change: a stop that is due soon (`lifetime_warning_seconds` ahead), sent on
/// the status stream as `event: expiring` so that the application can warn its user. It has
/// no sequence number (a resumed stream is sent it again if it is still due).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Expiring {
    /// Always `expiring`.
    pub event: String,
    /// When the stop is due.
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Millis,
    /// `lifetime limit` or `idle timeout`.
    pub reason: String,
}

impl Expiring {
    pub fn new(at: Millis, reason: &str) -> Self {
        Expiring {
            event: "expiring".to_string(),
            at,
            reason: reason.to_string(),
        }
    }
}
