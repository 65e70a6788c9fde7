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
