//! Bodies of the contract that are not the model's own types (those are in spawner-core).

use serde::{Deserialize, Serialize};
use spawner_core::lifecycle::MAX_KEEPALIVE_SECONDS;
use spawner_core::time::{serde_rfc3339, Millis};
use spawner_core::{BackendRecord, State, ValidationError};

/// `POST /v1/backends/{id}/terminate`; the body is optional.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminateRequest {
    /// SIGKILL at once instead of SIGTERM and the stop grace; escalates a soft stop.
    #[serde(default)]
    #[schema(default = false)]
    pub hard: bool,
}

/// The answer to a terminate.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TerminateResponse {
    pub id: String,
    /// `Terminating` while the stop is carried out; the terminal state of a backend that had
    /// already ended (a no-op).
    pub state: State,
    pub hard: bool,
}

impl TerminateResponse {
    /// The answer for a backend that was in `before` when the stop was asked for.
    pub fn new(id: &str, before: State, hard: bool) -> Self {
        TerminateResponse {
            id: id.to_string(),
            state: if before.is_terminal() {
                before
            } else {
                State::Terminating
            },
            hard,
        }
    }
}

/// The answer to a wake.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WakeResponse {
    pub id: String,
    /// `Waking` for a backend that was Sleeping; the state of one already awake or
    /// starting (a no-op).
    pub state: State,
}

/// `GET /v1/backends`: one page of the list, records without events.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackendList {
    pub backends: Vec<BackendRecord>,
    /// The cursor of the next page (pass it as `?after=`); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `POST /v1/backends/{id}/keepalive`: keep the backend from being swept for `seconds`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveRequest {
    /// From now; at most a day (86400). A later call replaces the time, also by a sooner one.
    #[schema(minimum = 1, maximum = 86400)]
    pub seconds: u64,
}

impl KeepaliveRequest {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.seconds == 0 || self.seconds > MAX_KEEPALIVE_SECONDS {
            return Err(ValidationError::new(
                "seconds",
                format!(
                    "must be between 1 and {MAX_KEEPALIVE_SECONDS}; call again to stay busy longer"
                ),
            ));
        }
        Ok(())
    }

    /// When the backend stops being busy, asked at `now`.
    pub fn until(&self, now: Millis) -> Millis {
        now.saturating_add(i64::try_from(self.seconds.saturating_mul(1000)).unwrap_or(i64::MAX))
    }
}

/// The answer to a keepalive.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeepaliveResponse {
    pub id: String,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub busy_until: Millis,
}
