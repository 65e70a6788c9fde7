//! Bodies of the contract that are not the model's own types (those are in spawner-core).

use serde::{Deserialize, Serialize};
use spawner_core::{BackendRecord, State};

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

/// `GET /v1/backends`: newest first, records without events.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackendList {
    pub backends: Vec<BackendRecord>,
}
